"""Undo: what the controller changed goes back on exit, for dropped guests too, and
after a crash through the state file (fake QEMU; the real ones are in
test_qemu_faults.py)."""

from __future__ import annotations

import json
import shutil
import subprocess

from hvmem.backends.qemu.backend import QemuBackend
from hvmem.backends.qemu.state_file import restore_stale
from hvmem.policy.samples import HostPlan, Plans, SharingMode, VmPlan
from hvmem.policy.states import MemState

MIB = 1 << 20


def plans(state, sharing=None, **vms):
    return Plans({n: VmPlan(target_mib=0, balloon_target_mib=b, swap_target_mib=s)
                  for n, (b, s) in vms.items()}, HostPlan(state=state, sharing=sharing))


def limited_guest(fake_host, clock, tmp_path):
    ram = tmp_path / "g1.vswp"
    ram.write_bytes(b"")
    guest = fake_host.add_guest("g1", 4001, ram_file=str(ram))
    cg = fake_host.add_cgroup(guest, usage_mib=480)
    fake_host.add_guest("g2", 4002)
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                          fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.HARD, SharingMode.RUN, g1=(0.0, 100.0), g2=(60.0, 0.0)))
    assert int((cg / "memory.limit_in_bytes").read_text()) == 380 * MIB
    assert (fake_host.ksm / "pages_to_scan").read_text().strip() == "5000"
    return backend, cg


def test_dropped_guest_has_its_limit_lifted(fake_host, clock, tmp_path):
    backend, cg = limited_guest(fake_host, clock, tmp_path)
    fake_host.server("g1").kill()
    shutil.rmtree(fake_host.proc / "4001")
    clock.advance(1)
    backend.sample()
    assert "g1" not in backend.guests
    assert (cg / "memory.limit_in_bytes").read_text().strip() == "-1"
    backend.close()
    assert (cg / "memory.limit_in_bytes").read_text().strip() == "-1"


def test_close_returns_balloons_and_removes_the_state_file(fake_host, clock, tmp_path):
    backend, _ = limited_guest(fake_host, clock, tmp_path)
    state = backend.state.path
    record = json.loads(state.read_text())
    assert record["ksm"] == {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20}
    assert [g["name"] for g in record["guests"]] == ["g1", "g2"]
    backend.close()
    sizes = [a["value"] / MIB for c, a in fake_host.guests["g2"].commands if c == "balloon"]
    assert sizes == [452, 512]  # inflated by 60 MiB, then given back at exit
    assert not state.exists()
    assert (fake_host.ksm / "pages_to_scan").read_text().strip() == "100"


def test_no_deflate_on_exit_leaves_the_balloons(fake_host, clock, tmp_path):
    fake_host.add_guest("g2", 4002)
    backend = QemuBackend([fake_host.spec("g2")],
                          fake_host.options(clock=clock, deflate_on_exit=False))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g2=(60.0, 0.0)))
    backend.close()
    sizes = [a["value"] / MIB for c, a in fake_host.guests["g2"].commands if c == "balloon"]
    assert sizes == [452]


def _crash(backend) -> None:
    """As after a SIGKILL: nothing closed, the state file names a controller now gone."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    record = json.loads(backend.state.path.read_text())
    record["pid"] = proc.pid
    backend.state.path.write_text(json.dumps(record))
    for g in backend.guests.values():
        g.client.close()


def test_state_file_of_a_crashed_controller_is_undone(fake_host, clock, tmp_path):
    backend, cg = limited_guest(fake_host, clock, tmp_path)
    _crash(backend)
    done, problems = restore_stale(backend.state.directory, fake_host.proc)
    assert not problems
    assert any("KSM back to run=0, pages_to_scan=100" in line for line in done)
    assert (fake_host.ksm / "pages_to_scan").read_text().strip() == "100"
    assert (fake_host.ksm / "run").read_text().strip() == "0"
    assert (cg / "memory.limit_in_bytes").read_text().strip() == "-1"
    assert not list(backend.state.directory.glob("control-*.json"))


def test_next_controller_undoes_first_and_saves_the_real_originals(fake_host, clock,
                                                                   tmp_path):
    backend, cg = limited_guest(fake_host, clock, tmp_path)
    _crash(backend)
    again = QemuBackend([fake_host.spec("g2")], fake_host.options(clock=clock))
    assert [e["event"] for e in again.events][:1] == ["restored"]
    assert again.ksm.original == {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20}
    assert (cg / "memory.limit_in_bytes").read_text().strip() == "-1"
    again.close()


def test_a_running_controllers_state_file_is_left_alone(fake_host, clock, tmp_path):
    backend, cg = limited_guest(fake_host, clock, tmp_path)
    done, _ = restore_stale(backend.state.directory, fake_host.proc)
    assert done == [] and backend.state.path.exists()
    assert int((cg / "memory.limit_in_bytes").read_text()) == 380 * MIB
    backend.close()


def test_balloon_that_frees_nothing_is_held_and_counts_as_stuck(fake_host, clock):
    guest = fake_host.add_guest("g2", 4002, ram_rss_mib=200, balloon_frees=False)
    backend = QemuBackend([fake_host.spec("g2")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g2=(60.0, 0.0)))
    clock.advance(1)
    _, (vm,) = backend.sample()  # the balloon is at 60 MiB, resident RAM still 200
    assert vm.balloon_stuck
    assert [e["event"] for e in backend.events][-1] == "balloon_no_gain"
    backend.apply(plans(MemState.SOFT, g2=(120.0, 0.0)))  # not pushed further
    sizes = [a["value"] / MIB for c, a in guest.commands if c == "balloon"]
    assert sizes == [452, 452]
    backend.close()


def test_balloon_that_frees_memory_goes_on(fake_host, clock):
    fake_host.add_guest("g2", 4002, ram_rss_mib=200)
    backend = QemuBackend([fake_host.spec("g2")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g2=(60.0, 0.0)))
    assert fake_host.ram_rss["g2"] == 140  # the fake's RAM follows its balloon
    clock.advance(1)
    _, (vm,) = backend.sample()
    assert not vm.balloon_stuck
    assert "balloon_no_gain" not in [e["event"] for e in backend.events]
    backend.close()


def test_pressure_sets_the_budget_from_the_guests(fake_host, clock):
    fake_host.add_guest("g1", 4001)
    fake_host.add_guest("g2", 4002)
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                          fake_host.options(clock=clock, pressure=2.0))
    host, _ = backend.sample()
    assert host.total_mib == 1024 / 2 + 2 * 80  # configured / pressure + QEMU's own
    assert host.free_mib == 0 and host.state == MemState.LOW  # 2 x 480 MiB used
    clock.advance(1)
    assert backend.sample()[0].total_mib == 672  # fixed for the run
    backend.close()


def test_pressure_and_a_budget_are_one_too_many(fake_host):
    import pytest

    from hvmem.errors import ConfigError

    with pytest.raises(ConfigError, match="give one"):
        fake_host.options(pressure=2.0, host_memory_mib=1024)
    with pytest.raises(ConfigError, match="--pressure: expected a factor"):
        fake_host.options(pressure=0.5)


def test_pressure_stall_information_reaches_samples_rows_and_metrics(fake_host, tmp_path):
    import urllib.request

    from hvmem.backends.qemu.control import COLUMNS, ControlLoop
    from hvmem.backends.qemu.metrics import Metrics

    (fake_host.proc / "pressure").mkdir()
    (fake_host.proc / "pressure" / "memory").write_text(
        "some avg10=12.50 avg60=3.00 avg300=1.00 total=99\n"
        "full avg10=2.00 avg60=0.50 avg300=0.10 total=9\n")
    ram = tmp_path / "g1.vswp"
    ram.write_bytes(b"")
    guest = fake_host.add_guest("g1", 4001, ram_file=str(ram))
    cg = fake_host.add_cgroup(guest, usage_mib=480)
    (cg / "memory.pressure").write_text("some avg10=4.00 avg60=1.00 avg300=0.00 total=7\n"
                                        "full avg10=1.00 avg60=0.00 avg300=0.00 total=2\n")
    fake_host.add_guest("g2", 4002)
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")], fake_host.options())
    host, vms = backend.sample()
    assert (host.psi_some_frac, host.psi_full_frac) == (0.125, 0.02)
    assert vms[0].psi_some_frac == 0.04 and vms[1].psi_some_frac is None
    metrics = Metrics(COLUMNS)
    metrics.serve(0)
    try:
        loop = ControlLoop(backend, "esx", interval_s=0.2, tick_s=0.1, metrics=metrics)
        fake_host.server("g2").kill()
        result = loop.run(duration_s=0.9)  # past the cached first sample
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics",
                                      timeout=5).read().decode()
    finally:
        metrics.close()
    assert result.vm_rows[0]["psi_some_frac"] == 0.04
    assert result.host_rows[0]["psi_full_frac"] == 0.02
    assert 'hvmem_vm_up{vm="g1"} 1.0' in text and 'hvmem_vm_up{vm="g2"} 0.0' in text
    assert 'hvmem_vm_memory_pressure_some_ratio{vm="g1"} 0.04' in text
    assert "hvmem_host_memory_pressure_some_ratio 0.125" in text
    assert 'hvmem_vm_cgroup_limit_bytes{vm="g1"} NaN' in text  # no limit set
    assert ("hvmem_host_ksm_pages_to_scan" in text
            and "hvmem_host_ksm_sleep_seconds 0.02" in text)


def test_balloon_held_for_no_gain_deflates_once_the_host_is_out_of_reclamation(fake_host,
                                                                               clock):
    from hvmem.policy.controller import PolicyController
    from hvmem.policy.policies import make_policy

    fake_host.add_guest("g2", 4002, ram_rss_mib=200, balloon_frees=False)
    backend = QemuBackend([fake_host.spec("g2")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g2=(60.0, 0.0)))
    clock.advance(1)
    assert backend.sample()[1][0].balloon_stuck  # held: it freed nothing
    backend.apply(plans(MemState.HIGH, g2=(60.0, 0.0)))
    clock.advance(1)
    assert not backend.sample()[1][0].balloon_stuck
    controller = PolicyController(make_policy("esx"), backend, balance_period_s=1)
    controller.step(10.0)  # a roomy host: the esx planner gives the balloon back
    sizes = [a["value"] / MIB for c, a in fake_host.guests["g2"].commands if c == "balloon"]
    assert sizes[-1] > 452
    backend.close()
