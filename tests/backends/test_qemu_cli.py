import gc
import json
import stat

import pytest
from typer.testing import CliRunner

from hvmem.backends.qemu.config import load_guests_config, specs_from_sockets
from hvmem.backends.qemu.guest_image import WorkloadParams, write_cpio
from hvmem.backends.qemu.launcher import choose_accel, qemu_command, read_guests_file
from hvmem.errors import ConfigError
from hvmem.ui.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, ["qemu", *args])
    return result.exit_code, result.output


def one_line_error(output):
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hvmem: error: "), output
    assert "Traceback" not in output
    return lines[0]


def test_control_needs_exactly_one_way_to_name_guests():
    code, out = run("control")
    assert code == 1
    assert "either --config FILE or --qmp SOCKET" in one_line_error(out)


def test_control_missing_socket_is_one_line(tmp_path):
    code, out = run("control", "--qmp", str(tmp_path / "vm1.qmp"), "--duration", "1s")
    assert code == 1
    assert "vm1: QMP socket" in one_line_error(out)


def test_control_bad_values_are_one_line(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[guest]]\nname = "a"\nqmp = "/x.qmp"\n')
    code, out = run("control", "--config", str(cfg), "--interval", "fast")
    assert code == 1 and "--interval" in one_line_error(out)
    code, out = run("control", "--config", str(cfg), "--policy", "nope")
    assert code == 1 and "--policy: unknown policy 'nope'" in one_line_error(out)
    code, out = run("control", "--config", str(cfg), "--host-memory", "lots")
    assert code == 1 and "--host-memory" in one_line_error(out)


def test_control_runs_over_fake_guests_and_writes_results(fake_host, tmp_path, monkeypatch):
    """The CLI end to end over fake guests (the real /proc is swapped for the fake one)."""
    from hvmem.backends.qemu import config as config_module
    from hvmem.results import read_results

    fake_host.add_guest("g1", 4001)
    opts = fake_host.options()
    real = config_module.BackendOptions

    def fake_options(**kw):
        return real(proc_root=opts.proc_root, ksm_root=opts.ksm_root,
                    cgroup_root=opts.cgroup_root, **kw)

    monkeypatch.setattr(config_module, "BackendOptions", fake_options)
    out_dir = tmp_path / "res"
    code, out = run("control", "--qmp", str(fake_host.spec("g1").qmp), "--interval", "1s",
                    "--duration", "2s", "--host-memory", "600MiB", "--dry-run", "--no-live",
                    "--out", str(out_dir))
    assert code == 0, out
    assert "g1: target" in out and "(host " in out
    assert "duration reached; guests left running" in out
    assert read_results(out_dir).summary["complete"]
    assert not [c for c, _ in fake_host.guests["g1"].commands if c == "balloon"]


def test_guests_file_errors_name_file_and_field(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[[guest]]\nname = "a"\nqmp = "/x.qmp"\nshares = "lots"\n')
    with pytest.raises(ConfigError, match=r"g.toml: guest\[0\].shares: expected low, normal, "
                                          r"high or a number >= 0, found 'lots'"):
        load_guests_config(cfg)
    cfg.write_text('[[guest]]\nname = "a"\nqmp = "/x.qmp"\nreservation = "12 parsecs"\n')
    with pytest.raises(ConfigError, match=r"guest\[0\].reservation"):
        load_guests_config(cfg)
    cfg.write_text('[[guest]]\nname = "a"\nqmp = "/x.qmp"\ncolour = "red"\n')
    with pytest.raises(ConfigError, match=r"guest\[0\].colour: unknown key"):
        load_guests_config(cfg)
    cfg.write_text('[host]\nmemory = "1GiB"\nprofile = "esx9"\n[[guest]]\nname="a"\nqmp="/q"\n')
    with pytest.raises(ConfigError, match="host.profile: expected one of"):
        load_guests_config(cfg)
    cfg.write_text('[[guest]]\nname = "a"\nqmp = "/a"\n[[guest]]\nname = "a"\nqmp = "/b"\n')
    with pytest.raises(ConfigError, match=r"guest\[1\].name: 'a' is used by guest\[0\] too"):
        load_guests_config(cfg)
    cfg.write_text("[[guest]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_guests_config(cfg)
    with pytest.raises(ConfigError, match="would both be called 'vm1'"):
        specs_from_sockets([tmp_path / "a" / "vm1.qmp", tmp_path / "b" / "vm1.qmp"])


@pytest.mark.parametrize("read", [load_guests_config, read_guests_file],
                         ids=["load_guests_config", "read_guests_file"])
@pytest.mark.parametrize(("content", "message"), [
    (b'[[guest]]\nname = "caf\xe9"\nqmp = "/x.qmp"\n',
     r"g.toml: not UTF-8 text \(byte 0xe9 at line 2, column 12\)"),
    ('[[guest]]\nname = "a"\n'.encode("utf-16"), "g.toml: is UTF-16 text"),
    (b"\x00\xff\xfe\x80" * 8, "g.toml: not UTF-8 text"),
    (b"x = " + b"[" * 5000 + b"]" * 5000, "g.toml: not valid TOML: nested too deeply"),
])
def test_guests_file_bytes_are_one_error_line(tmp_path, read, content, message):
    # The guests file is read as scenario files are: whatever its bytes, one line
    # naming the file, never a UnicodeDecodeError's traceback.
    cfg = tmp_path / "g.toml"
    cfg.write_bytes(content)
    # Garbage left by earlier tests is collected here, not at the parser's recursion
    # limit, where a finalizer's exception cannot even be reported.
    gc.collect()
    with pytest.raises(ConfigError, match=message) as err:
        read(cfg)
    assert "\n" not in str(err.value)


def test_guests_file_with_byte_order_mark_or_directory(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_bytes(b'\xef\xbb\xbf[[guest]]\nname = "vm1"\nqmp = "/r/vm1.qmp"\n')
    assert load_guests_config(cfg).guests[0].name == "vm1"
    with pytest.raises(ConfigError, match="is a directory, not a guests file"):
        load_guests_config(tmp_path)


def test_non_utf8_guests_file_from_the_command_line(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_bytes(b'[[guest]]\nname = "caf\xe9"\nqmp = "/x.qmp"\n')
    for args in (["control", "--config", str(cfg), "--dry-run", "--no-live", "--duration", "1s"],
                 ["stop", "--config", str(cfg)]):
        code, out = run(*args)
        assert code == 1 and "Traceback" not in out, out
        assert "g.toml: not UTF-8 text" in out


def test_guests_file_round_trip(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[host]\nmemory = "2GiB"\n\n[[guest]]\nname = "vm1"\nqmp = "/r/vm1.qmp"\n'
                   'pid_file = "/r/vm1.pid"\nshares = "high"\nreservation = "128MiB"\n'
                   'limit = "512MiB"\nmemory = "384MiB"\nserial_log = "/r/vm1.log"\n')
    loaded = load_guests_config(cfg)
    assert loaded.host_memory_mib == 2048
    (g,) = loaded.guests
    assert (g.name, g.shares, g.reservation_mib, g.limit_mib) == ("vm1", "high", 128, 512)
    guests, _ = read_guests_file(cfg)
    assert guests[0].serial_log.name == "vm1.log" and guests[0].memory_mib == 384


def test_kvm_only_with_hardware_virtualization(tmp_path):
    dev = tmp_path / "kvm"
    dev.write_text("")
    mods = tmp_path / "module"
    (mods / "kvm_pvm").mkdir(parents=True)
    cpu = tmp_path / "cpuinfo"
    cpu.write_text("flags\t\t: fpu sse2 hypervisor\n")
    accel, why = choose_accel(dev, mods, cpu)
    assert accel == "tcg" and "kvm_pvm is not hardware KVM" in why
    (mods / "kvm_intel").mkdir()
    assert choose_accel(dev, mods, cpu)[0] == "kvm"
    (mods / "kvm_intel").rmdir()
    cpu.write_text("flags\t\t: fpu svm\n")
    assert choose_accel(dev, mods, cpu) == ("kvm", "the CPU has svm")
    assert choose_accel(tmp_path / "none", mods, cpu)[0] == "tcg"


def test_qemu_command_line(tmp_path):
    from hvmem.backends.qemu.guest_image import GuestImage

    image = GuestImage(tmp_path / "vmlinuz", tmp_path / "initrd", "6.1")
    argv = qemu_command("vm1", image, 384, tmp_path, WorkloadParams(balloon=False), "tcg",
                        ram_file=tmp_path / "vm1.vswp")
    line = " ".join(argv)
    assert "-accel tcg" in line and "-m 384M" in line and "-no-reboot" in line
    assert "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on" in line
    assert f"memory-backend-file,id=m0,size=384M,mem-path={tmp_path}/vm1.vswp,share=on" in line
    assert "-machine pc,memory-backend=m0" in line
    assert "panic=-1" in line and "hv.balloon=0" in line
    anon = " ".join(qemu_command("vm1", image, 384, tmp_path, WorkloadParams()))
    assert "mem-merge=on" in anon and "memory-backend-file" not in anon


def test_launch_rejects_bad_requests(tmp_path):
    from hvmem.backends.qemu.guest_image import GuestImage
    from hvmem.backends.qemu.launcher import launch

    image = GuestImage(tmp_path / "vmlinuz", tmp_path / "initrd", "6.1")
    with pytest.raises(ConfigError, match="--count"):
        launch(image, tmp_path, count=0)
    with pytest.raises(ConfigError, match="does not fit"):
        launch(image, tmp_path, memory_mib=128, workload=WorkloadParams(shared_mib=200))
    with pytest.raises(ConfigError, match="too long for a unix socket"):
        launch(image, tmp_path / ("x" * 120), count=1)
    with pytest.raises(ConfigError, match="hold_s"):
        WorkloadParams(hold_s=-1)


def test_cpio_archive_is_newc():
    data = write_cpio([("init", stat.S_IFREG | 0o755, b"#!/bin/sh\n", 0),
                       ("dev", stat.S_IFDIR | 0o755, b"", 0),
                       ("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1)])
    assert data.startswith(b"070701") and len(data) % 4 == 0
    assert b"init\0" in data and b"#!/bin/sh\n" in data and b"TRAILER!!!\0" in data
    # the console's rdev major/minor fields (5, 1)
    header = data[data.index(b"dev/console") - 110:data.index(b"dev/console")]
    assert header[78:86] == b"00000005" and header[86:94] == b"00000001"


def test_image_json_shape(monkeypatch, tmp_path):
    from hvmem.backends.qemu import guest_image

    fake = guest_image.GuestImage(tmp_path / "k", tmp_path / "i", "6.1.0-test")
    monkeypatch.setattr(guest_image, "build_image", lambda cache_dir=None, force=False: fake)
    code, out = run("image", "--json")
    assert code == 0 and json.loads(out)["kernel_version"] == "6.1.0-test"


def test_launch_without_qemu_says_what_to_install(monkeypatch):
    from hvmem.backends.qemu import launcher

    monkeypatch.setattr(launcher, "missing_tools", lambda: "qemu-system-x86_64 not found")
    code, out = run("launch", "--count", "1")
    assert code == 1
    assert "apt-get install qemu-system-x86 busybox-static" in one_line_error(out)


def control_over_fake_guest(fake_host, monkeypatch, *args):
    """``hvmem qemu control`` over one fake guest, as above; returns the CliRunner result."""
    from hvmem.backends.qemu import config as config_module

    fake_host.add_guest("g1", 4001)
    opts = fake_host.options()
    real = config_module.BackendOptions

    def fake_options(**kw):
        return real(proc_root=opts.proc_root, ksm_root=opts.ksm_root,
                    cgroup_root=opts.cgroup_root, **kw)

    monkeypatch.setattr(config_module, "BackendOptions", fake_options)
    return runner.invoke(app, ["qemu", "control", "--qmp", str(fake_host.spec("g1").qmp),
                               "--interval", "1s", "--host-memory", "600MiB", "--dry-run",
                               "--no-live", *map(str, args)])


def test_control_refuses_a_users_directory_before_touching_a_guest(fake_host, tmp_path,
                                                                   monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "data.csv").write_text("1,2")
    done = control_over_fake_guest(fake_host, monkeypatch, "--duration", "2s", "--out", mine)
    assert done.exit_code == 1
    assert one_line_error(done.output) == (
        f"hvmem: error: --out '{mine}': exists and is not an hvmem results directory (no "
        "hvmem-manifest.json); nothing in it was touched; name a new directory")
    assert fake_host.guests["g1"].commands == []
    assert [p.name for p in mine.iterdir()] == ["data.csv"]


def test_control_cut_short_by_sigterm_keeps_results_and_exits_143(fake_host, tmp_path,
                                                                  monkeypatch):
    import os
    import signal

    from hvmem.backends.qemu.control import ControlLoop
    from hvmem.results import read_results

    real_tick = ControlLoop.tick

    def tick_then_sigterm(self):
        plans = real_tick(self)
        if len(self.result.host_rows) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's own handler takes it
        return plans

    monkeypatch.setattr(ControlLoop, "tick", tick_then_sigterm)
    out = tmp_path / "res"
    done = control_over_fake_guest(fake_host, monkeypatch, "--duration", "30s", "--out", out)
    assert done.exit_code == 143, done.output
    assert done.stderr.strip() == f"hvmem: stopped by SIGTERM; results kept in {out}, incomplete"
    back = read_results(out)
    assert not back.complete and back.summary["stop_reason"] == "stopped by SIGTERM"
    assert back.host.num_rows == 2


def test_control_error_mid_run_keeps_results_and_exits_1(fake_host, tmp_path, monkeypatch):
    from hvmem.backends.qemu.control import ControlLoop
    from hvmem.errors import BackendError
    from hvmem.results import read_results

    real_tick = ControlLoop.tick

    def tick_then_fail(self):
        if len(self.result.host_rows) == 2:
            raise BackendError("g1: QMP socket closed")
        return real_tick(self)

    monkeypatch.setattr(ControlLoop, "tick", tick_then_fail)
    out = tmp_path / "res"
    done = control_over_fake_guest(fake_host, monkeypatch, "--duration", "30s", "--out", out)
    assert done.exit_code == 1, done.output
    assert done.stderr.strip() == "hvmem: error: g1: QMP socket closed"
    back = read_results(out)
    assert not back.complete and back.summary["stop_reason"] == "g1: QMP socket closed"
    assert back.host.num_rows == 2 and back.events[-1]["event"] == "error"


def test_small_cli_matters(tmp_path, fake_host, monkeypatch):
    # A size without a unit says so.
    code, out = run("launch", "--memory", "384")
    assert code == 1 and "--memory: '384' has no unit" in one_line_error(out)
    # A second QMP monitor for operators, beside the controller's.
    from hvmem.backends.qemu.guest_image import GuestImage

    image = GuestImage(tmp_path / "vmlinuz", tmp_path / "initrd", "6.1")
    line = " ".join(qemu_command("vm1", image, 384, tmp_path, WorkloadParams()))
    assert f"-qmp unix:{tmp_path}/vm1.op.qmp,server=on,wait=off" in line
    # Stop removes the run directory it leaves empty.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "guests.toml").write_text('[[guest]]\nname = "a"\nqmp = "/nonexistent/a.qmp"\n')
    code, out = run("stop", "--config", str(run_dir / "guests.toml"))
    assert code == 0, out
    assert not run_dir.exists()
    # Guests that failed to attach are on the screen; the others are controlled.
    from hvmem.backends.qemu import config as config_module

    fake_host.add_guest("g1", 4001)
    opts = fake_host.options()
    real = config_module.BackendOptions
    monkeypatch.setattr(config_module, "BackendOptions", lambda **kw: real(
        proc_root=opts.proc_root, ksm_root=opts.ksm_root, cgroup_root=opts.cgroup_root, **kw))
    code, out = run("control", "--qmp", str(fake_host.spec("g1").qmp), "--qmp",
                    str(tmp_path / "gone.qmp"), "--duration", "1s", "--dry-run", "--no-live",
                    "--out", str(tmp_path / "res"))
    assert code == 0, out
    assert "attach_failed gone: gone: QMP socket" in out
