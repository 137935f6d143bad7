"""Faults against real guests: a QEMU stopped and continued stays under control, and
a controller killed with SIGKILL is undone by ``hvmem qemu restore``.

One guest with anonymous RAM and a balloon driver, one with file-backed RAM and
no driver (so the esx policy limits its cgroup). State files go to a temporary
directory (conftest.py), and KSM is restored when the session ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hvmem.backends.qemu.backend import QemuBackend
from hvmem.backends.qemu.cgroups import MemoryCgroup
from hvmem.backends.qemu.config import BackendOptions, GuestSpec
from hvmem.backends.qemu.control import ControlLoop
from hvmem.backends.qemu.guest_image import WorkloadParams
from hvmem.backends.qemu.ksm import Ksm
from hvmem.backends.qemu.launcher import launch, stop, wait_for_marker
from hvmem.backends.qemu.qmp import QmpClient

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


if (_why := _unavailable()) is not None:
    pytest.skip(f"QEMU fault tests skipped: {_why}", allow_module_level=True)

BOOT_TIMEOUT_S = 300.0  # TCG boots in seconds, but a busy two-core host may take minutes


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def two_kinds(qemu_image, qemu_dirs):
    run, swap = qemu_dirs
    workload = WorkloadParams(shared_mib=32, private_mib=16, touch_s=3)
    anon = launch(qemu_image, run / "fa", count=1, memory_mib=256, workload=workload,
                  prefix="fa", die_with_parent=True)
    guests = list(anon)
    try:
        guests += launch(qemu_image, run / "fb", count=1, memory_mib=256, prefix="fb",
                         workload=WorkloadParams(shared_mib=32, private_mib=16, touch_s=3,
                                                 balloon=False),
                         file_backed=True, swap_dir=swap, die_with_parent=True)
        for g in guests:
            wait_for_marker(g.serial_log, "HVMEM-READY", BOOT_TIMEOUT_S, g.pid)
        yield guests
    finally:
        assert not stop(guests)


def _sockets() -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return n


def test_stopped_and_continued_guest_stays_under_control(two_kinds):
    g = two_kinds[0]
    backend = QemuBackend([GuestSpec(g.name, g.qmp, pid_file=g.pid_file)],
                          BackendOptions(manage_ksm=False, qmp_timeout_s=1.0))
    loop = ControlLoop(backend, "esx", interval_s=2.0, tick_s=1.0, name="it-stall")
    start = time.monotonic()
    marks: dict[str, float] = {}
    sockets = []

    def on_tick(lp: ControlLoop) -> None:
        t = time.monotonic() - start
        if t >= 3 and "stop" not in marks:
            marks["stop"] = lp.backend.now_s()
            os.kill(g.pid, signal.SIGSTOP)
        elif t >= 12 and "cont" not in marks:
            marks["cont"] = lp.backend.now_s()
            os.kill(g.pid, signal.SIGCONT)
        elif "stop" in marks and "cont" not in marks:
            sockets.append(_sockets())

    try:
        result = loop.run(duration_s=20, on_tick=on_tick)
    finally:
        os.kill(g.pid, signal.SIGCONT)
    kinds = [e["event"] for e in result.events]
    assert "guest_dropped" not in kinds, result.events
    assert kinds.count("guest_stalled") == 1 and kinds.count("guest_resumed") == 1
    rows = [r for r in result.vm_rows if r["vm"] == g.name]
    stopped = [r for r in rows if marks["stop"] + 1 < r["time_s"] < marks["cont"]]
    assert len(stopped) >= 6 and all(r["balloon_stuck"] for r in stopped)
    after = [r for r in rows if r["time_s"] > marks["cont"] + 2]
    assert after and not after[-1]["balloon_stuck"]
    # No connection piled up while QEMU was stopped, and QMP works afterwards.
    assert max(sockets) - min(sockets) <= 1, sockets
    with QmpClient(g.qmp, 2.0) as qmp:
        assert qmp.call("query-balloon")["actual"] == 256 << 20
    assert alive(g.pid)


CHILD = """
import dataclasses, sys, time
from pathlib import Path
from hvmem.backends.qemu.backend import QemuBackend
from hvmem.backends.qemu.config import BackendOptions, GuestSpec
from hvmem.backends.qemu.control import ControlLoop

class Pressed(QemuBackend):
    def _host_sample(self, now, mem, ksm, vms):
        used = sum(vm.consumed_mib + vm.overhead_mib for vm in vms)
        self.options = dataclasses.replace(self.options, host_memory_mib=used / (1 - 0.03))
        return super()._host_sample(now, mem, ksm, vms)

specs = [GuestSpec(n, Path(q), pid_file=Path(p)) for n, q, p in {guests!r}]
backend = Pressed(specs, BackendOptions(balloon_stuck_after_s=3, stats_interval_s=1))
loop = ControlLoop(backend, "esx", interval_s=2.0, tick_s=1.0)
said = []

def on_tick(lp):
    kinds = {{e["event"] for e in lp.backend.events}}
    if not said and "swap_limit" in kinds and lp.backend.guests[{anon!r}].balloon_mib > 4:
        said.append(1)
        print("CHANGED", flush=True)

loop.run(120, on_tick=on_tick)
"""


def test_sigkilled_controller_is_undone_by_restore(two_kinds, tmp_path):
    anon, fb = two_kinds
    ksm_before = Ksm().counters()
    cgroup = MemoryCgroup(fb.cgroup, 1)
    assert cgroup.limit_mib() is None
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(
        guests=[(g.name, str(g.qmp), str(g.pid_file)) for g in two_kinds], anon=anon.name)))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "CHANGED", line + child.stdout.read()
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # What the killed controller changed is still there...
    state_dir = Path(os.environ["HVMEM_STATE_DIR"])
    (state,) = state_dir.glob("control-*.json")
    record = json.loads(state.read_text())
    assert record["ksm"]["run"] == ksm_before.run
    ksm = Ksm().counters()
    assert (ksm.run, ksm.pages_to_scan) != (ksm_before.run, ksm_before.pages_to_scan)
    assert cgroup.limit_mib() is not None
    with QmpClient(anon.qmp, 2.0) as qmp:
        assert qmp.call("query-balloon")["actual"] < 252 << 20
    # ... until hvmem qemu restore puts it back.
    done = subprocess.run([sys.executable, "-m", "hvmem", "qemu", "restore"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "KSM back to" in done.stdout and f"{fb.name}: cgroup" in done.stdout
    ksm = Ksm().counters()
    assert (ksm.run, ksm.pages_to_scan, ksm.sleep_millisecs) == (
        ksm_before.run, ksm_before.pages_to_scan, ksm_before.sleep_millisecs)
    assert cgroup.limit_mib() is None
    deadline = time.monotonic() + 20
    with QmpClient(anon.qmp, 2.0) as qmp:
        while qmp.call("query-balloon")["actual"] != 256 << 20:
            assert time.monotonic() < deadline, "balloon not returned"
            time.sleep(0.5)
    assert not list(state_dir.glob("control-*.json"))
    again = subprocess.run([sys.executable, "-m", "hvmem", "qemu", "restore"],
                           capture_output=True, text=True, timeout=60)
    assert "nothing to restore" in again.stdout
    for g in two_kinds:
        assert alive(g.pid)


def test_operators_have_a_monitor_of_their_own_while_the_controller_holds_qmp(two_kinds):
    g = two_kinds[0]
    with QmpClient(g.qmp, 2.0) as controller, QmpClient(g.operator_qmp, 2.0) as operator:
        controller.call("query-balloon")  # the controller's connection stays open
        assert operator.call("query-status")["status"] == "running"
        assert controller.call("query-status")["status"] == "running"
