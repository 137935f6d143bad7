"""The QEMU backend against real guests (TCG where KVM does not really work).

Two anonymous-RAM guests share a module: the esx policy balloons them under a
host budget that keeps the host in SOFT, KSM merges their identical pages, and
the balloons deflate once the budget is lifted; the command line then runs over
them with a metrics endpoint and stops on SIGTERM. A file-backed guest without
a balloon driver is swapped through its memory cgroup while its data checksum
stays the same. Every guest, cgroup and file is removed afterwards, and KSM is
restored (conftest.py).
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hvmem.backends.qemu.backend import QemuBackend
from hvmem.backends.qemu.config import BackendOptions, GuestSpec
from hvmem.backends.qemu.control import ControlLoop
from hvmem.backends.qemu.guest_image import WorkloadParams
from hvmem.backends.qemu.ksm import Ksm
from hvmem.backends.qemu.launcher import launch, read_guests_file, stop, wait_for_marker
from hvmem.policy.minfree import thresholds
from hvmem.policy.states import MemState

pytestmark = pytest.mark.integration


def _unavailable() -> str | None:
    from hvmem.backends.qemu.launcher import missing_tools

    if os.environ.get("HVMEM_QEMU_TESTS") == "0":
        return "HVMEM_QEMU_TESTS=0"
    if (why := missing_tools()) is not None:
        return why
    if os.geteuid() != 0:
        return "not root (KSM and memory cgroups need root)"
    if not Path("/sys/kernel/mm/ksm/run").is_file():
        return "the kernel has no KSM"
    return None


# One line in the summary for the whole suite, naming the reason and the remedy.
if (_why := _unavailable()) is not None:
    pytest.skip(f"QEMU integration suite skipped: {_why}; to run it: apt-get install "
                "qemu-system-x86 busybox-static (as root; the guest kernel is fetched with "
                "apt-get download), then make test", allow_module_level=True)

BOOT_TIMEOUT_S = 150.0


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def qemu_named(name: str) -> bool:
    """Whether a QEMU process with ``-name NAME`` runs."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            data = cmdline.read_bytes()
        except OSError:
            continue
        if data.startswith(b"qemu") and b"-name\0" + name.encode() + b"\0" in data:
            return True
    return False


def checks(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines()
            if line.startswith("HVMEM-CHECK")]


def soft_budget(vms, profile="esxi6") -> float:
    """A host budget that leaves free memory at about half of minFree: the SOFT state."""
    used = sum(vm.consumed_mib + vm.overhead_mib for vm in vms)
    budget = used / (1 - 0.48 * 0.06)
    assert thresholds(budget, profile).minfree_mib == pytest.approx(0.06 * budget)
    return budget


class PressedBackend(QemuBackend):
    """A host where someone else holds all but half of minFree, while ``pressed``.

    The budget follows the guests' use at every sample, so the host stays in
    SOFT however much the balloons or KSM give back; unpressed, it is 4 GiB.
    """

    pressed = True

    def _host_sample(self, now, mem, ksm, vms):
        budget = soft_budget(vms) if self.pressed else 4096.0
        self.options = dataclasses.replace(self.options, host_memory_mib=budget)
        return super()._host_sample(now, mem, ksm, vms)


@pytest.fixture(scope="module")
def anon_guests(qemu_image, qemu_dirs):
    run, _ = qemu_dirs
    workload = WorkloadParams(shared_mib=48, private_mib=8, touch_s=10)
    guests = launch(qemu_image, run / "anon", count=2, memory_mib=384, workload=workload,
                    die_with_parent=True)
    try:
        for g in guests:
            wait_for_marker(g.serial_log, "HVMEM-READY", BOOT_TIMEOUT_S, g.pid)
        yield guests
    finally:
        problems = stop(guests, remove_files=False)
        assert not problems


def keep(result):
    """Write the run's results under $HVMEM_QEMU_RESULTS, if set (for a look afterwards)."""
    if os.environ.get("HVMEM_QEMU_RESULTS"):
        from hvmem.results import write_results

        write_results(result, Path(os.environ["HVMEM_QEMU_RESULTS"]) / result.scenario.name,
                      overwrite=True)


def specs(guests):
    return [GuestSpec(g.name, g.qmp, pid_file=g.pid_file) for g in guests]


def test_esx_balloons_to_plan_under_pressure_shares_and_deflates_after(anon_guests):
    ksm_before = Ksm().counters()
    backend = PressedBackend(specs(anon_guests), BackendOptions(stats_interval_s=1))
    loop = ControlLoop(backend, "esx", interval_s=2.0, tick_s=1.0, name="it-balloon")
    pressure_s, relief_s = 14.0, 10.0
    start = time.monotonic()
    marks = {}

    def on_tick(lp: ControlLoop) -> None:
        if time.monotonic() - start >= pressure_s and "relief" not in marks:
            marks["relief"] = lp.backend.now_s()
            lp.backend.pressed = False

    result = loop.run(duration_s=pressure_s + relief_s, on_tick=on_tick)
    keep(result)
    relief = marks["relief"]
    decisions = list(loop.controller.history)
    soft = [d for d in decisions if d.time_s < relief and d.host.state == MemState.SOFT]
    assert len(soft) >= 5, [d.host.state for d in decisions]
    names = [g.name for g in anon_guests]
    events = result.events
    floors = {e["vm"] for e in events if e["event"] == "balloon_floor"}
    for name in names:
        asked = [d.plans[name].balloon_target_mib for d in soft]
        assert max(asked) >= 4, asked  # the esx policy inflated the balloon
        rows = [r for r in result.vm_rows if r["vm"] == name and r["time_s"] < relief]
        reached = [r for r in rows if r["MCTLTGT"] >= 4 and abs(r["MCTLSZ"] - r["MCTLTGT"]) <= 2]
        assert reached, [(r["MCTLSZ"], r["MCTLTGT"]) for r in rows]
        if name not in floors:  # the target set in QEMU is the plan's
            planned = {round(d.plans[name].balloon_target_mib) for d in decisions}
            assert {round(r["MCTLTGT"]) for r in reached} <= planned | {0}
        after = [r for r in result.vm_rows if r["vm"] == name]
        assert after[-1]["MCTLSZ"] <= 2, after[-1]  # deflated once the pressure went
        assert max(r["MCTLSZ"] for r in after) >= 4
    assert not [e for e in events if e["event"] in ("balloon_stuck", "guest_dropped")]
    assert [d.host.state for d in decisions if d.time_s > relief + 3][-1] == MemState.HIGH
    # KSM merged the guests' identical pages, and the samples show it.
    saved = max(r["shared_saved_mib"] for r in result.host_rows)
    assert saved >= 40, saved
    for name in names:
        assert max(r["SHRDSVD"] for r in result.vm_rows if r["vm"] == name) >= 15
    # The host is as it was, the guests run, their data is intact.
    after = Ksm().counters()
    assert (after.run, after.pages_to_scan, after.sleep_millisecs) == (
        ksm_before.run, ksm_before.pages_to_scan, ksm_before.sleep_millisecs)
    for g in anon_guests:
        assert alive(g.pid)
        lines = checks(g.serial_log)
        assert lines and all(" ok " in line + " " for line in lines), lines[-3:]


def test_cli_control_serves_metrics_and_stops_on_sigterm(anon_guests, qemu_dirs, tmp_path):
    config = anon_guests[0].qmp.parent / "guests.toml"
    out = tmp_path / "res"
    ksm_before = Ksm().counters()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hvmem", "qemu", "control", "--config", str(config),
         "--interval", "2s", "--metrics-port", "0", "--no-live", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        first = proc.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)/metrics", first).group(1))
        time.sleep(4)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                      timeout=5).read().decode()
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest
    assert "stopped by SIGTERM; guests left running" in rest
    for g in anon_guests:
        assert f'hvmem_vm_memsz_bytes{{vm="{g.name}"}} 4.02653184e+08' in text  # 384 MiB
        assert alive(g.pid)
    assert "hvmem_host_free_bytes" in text and "hvmem_decisions_total" in text
    assert (out / "summary.json").is_file()
    ksm = Ksm().counters()  # restored by the command's backend on SIGTERM
    assert (ksm.run, ksm.pages_to_scan, ksm.sleep_millisecs) == (
        ksm_before.run, ksm_before.pages_to_scan, ksm_before.sleep_millisecs)


def test_stuck_balloon_falls_back_to_cgroup_swapping_and_data_survives(qemu_image, qemu_dirs):
    run, swap = qemu_dirs
    run_dir = run / "fb"
    env = dict(os.environ)
    launched = subprocess.run(
        [sys.executable, "-m", "hvmem", "qemu", "launch", "--count", "1", "--memory", "384MiB",
         "--file-backed", "--no-balloon-driver", "--shared", "64MiB", "--private", "32MiB",
         "--touch", "3s", "--dir", str(run_dir), "--swap-dir", str(swap), "--prefix", "fb"],
        capture_output=True, text=True, timeout=BOOT_TIMEOUT_S + 30, env=env)
    guests, _ = read_guests_file(run_dir / "guests.toml") if (
        run_dir / "guests.toml").is_file() else ([], {})
    try:
        assert launched.returncode == 0, launched.stdout + launched.stderr
        (g,) = guests
        pid = g.pid
        assert g.ram_file is not None and g.cgroup is not None and g.cgroup.is_dir()
        backend = PressedBackend(specs(guests), BackendOptions(balloon_stuck_after_s=4,
                                                              stats_interval_s=1))
        loop = ControlLoop(backend, "esx", interval_s=2.0, tick_s=1.0, name="it-swap")
        limited = {}

        def on_tick(lp: ControlLoop) -> None:
            if "t" not in limited and any(e["event"] == "swap_limit" for e in lp.backend.events):
                limited["t"] = time.monotonic()
                limited["checks"] = len(checks(g.serial_log))

        result = loop.run(duration_s=30, on_tick=on_tick)
        keep(result)
        kinds = [e["event"] for e in result.events]
        assert "balloon_stuck" in kinds, result.events
        assert "swap_limit" in kinds, result.events
        assert kinds.index("balloon_stuck") < kinds.index("swap_limit")
        rows = result.vm_rows
        before = max(r["GRANT"] for r in rows[:5])
        least = min(r["GRANT"] for r in rows)
        assert least <= 0.7 * before, (before, least)  # resident guest memory dropped
        assert max(r["SWCUR"] for r in rows) >= 20
        assert max(r["SWR/s"] for r in rows) > 0  # pages came back as the guest re-read them
        # The guest kept checking its data while the host paged it: unchanged.
        time.sleep(4)
        lines = checks(g.serial_log)
        assert len(lines) > limited["checks"], lines
        assert all(" ok " in line + " " for line in lines), lines
        assert alive(g.pid)
        assert backend.guests[g.name].cgroup.limit_mib() is None  # lifted on exit
    finally:
        done = subprocess.run([sys.executable, "-m", "hvmem", "qemu", "stop", "--config",
                               str(run_dir / "guests.toml")], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0 or not guests, done.stdout + done.stderr
    for g in guests:
        assert not alive(pid)
        assert not g.cgroup.exists() and not g.ram_file.exists()


def test_scenario_with_qemu_backend_runs_real_guests_and_reads_like_a_simulation(
        qemu_image, tmp_path):
    from hvmem.results import read_results, write_results
    from hvmem.scenario.loader import load_scenario
    from hvmem.sim import Simulation

    path = tmp_path / "qemu-small.toml"
    path.write_text('name = "qemu-small"\nduration = "12s"\n[host]\nmemory = "600MiB"\n'
                    '[policy]\nbalance_period = "3s"\n[backend]\nkind = "qemu"\n'
                    'shared = "32MiB"\nprivate = "8MiB"\ntouch = "4s"\n'
                    '[[vm]]\nname = "web"\nmemory = "256MiB"\n')
    real_dir = tmp_path / "real"
    done = subprocess.run([sys.executable, "-m", "hvmem", "run", str(path), "--no-live",
                           "--out", str(real_dir)], capture_output=True, text=True,
                          timeout=BOOT_TIMEOUT_S + 60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "real guests, stopped" in done.stdout
    real = read_results(real_dir)
    scenario = load_scenario(path)
    simulated = read_results(write_results(Simulation(scenario).run(), tmp_path / "sim"))
    assert real.complete and real.summary["scenario"] == simulated.summary["scenario"]
    assert set(simulated.vms.column_names) <= set(real.vms.column_names)
    assert set(simulated.summary) == set(real.summary)
    rows = real.vms.to_pylist()
    assert len(rows) >= 10 and {r["vm"] for r in rows} == {"web"}
    assert rows[-1]["MEMSZ"] == 256 and rows[-1]["GRANT"] > 32
    assert not qemu_named("web")  # the run stopped its guest


def test_kvm_that_does_not_boot_the_guest_falls_back_to_tcg(qemu_image, qemu_dirs):
    """Forcing KVM: where it is not hardware KVM (kvm_pvm here) the guest never reaches
    its init (or QEMU cannot start), and the launch starts it again under TCG."""
    from hvmem.backends.qemu.launcher import choose_accel

    run, _ = qemu_dirs
    guests = launch(qemu_image, run / "kvm", count=1, memory_mib=256, accel="kvm",
                    kvm_boot_timeout_s=8, workload=WorkloadParams(shared_mib=16, private_mib=0),
                    die_with_parent=True)
    try:
        (g,) = guests
        if choose_accel()[0] == "kvm":
            assert g.accel == "kvm" and g.fallback is None
        else:
            assert g.accel == "tcg" and g.fallback is not None
            assert 'accel = "tcg"' in (run / "kvm" / "guests.toml").read_text()
        wait_for_marker(g.serial_log, "HVMEM-READY", BOOT_TIMEOUT_S, g.pid)
    finally:
        assert not stop(guests)
