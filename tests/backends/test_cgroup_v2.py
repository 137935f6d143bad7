"""cgroup v2 hypervisor swapping on a fake hierarchy that answers writes as the kernel does,
and the hierarchy detection; the real hierarchies are tried where this host has them."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hvmem.backends.qemu import cgroup_v2
from hvmem.backends.qemu.backend import QemuBackend
from hvmem.backends.qemu.cgroups import MemoryCgroup, create_cgroup, memory_cgroup_of
from hvmem.backends.qemu.control import plans_lines
from hvmem.backends.qemu.state_file import restore_stale
from hvmem.policy.samples import HostPlan, Plans, VmPlan
from hvmem.policy.states import MemState

MIB = 1 << 20
REAL_ROOT = Path("/sys/fs/cgroup")


def plans(state, **vms):
    return Plans({n: VmPlan(target_mib=0, balloon_target_mib=b, swap_target_mib=s)
                  for n, (b, s) in vms.items()}, HostPlan(state=state))


class FakeMemcg:
    """One cgroup v2 directory with the files the kernel shows, and the kernel's answers.

    ``reclaimable_mib`` is what reclaim can take from it (file pages written back,
    anonymous pages within ``memory.swap.max``). Writes, through :data:`cgroup_v2.write`:
    ``memory.reclaim`` takes up to the bytes asked and fails with EAGAIN when it took
    less; ``memory.high`` reclaims down to it (never an OOM kill) and counts a ``high``
    event; ``memory.max`` reclaims down to it and, where it cannot, counts ``max``,
    ``oom`` and ``oom_kill``; a value that is neither ``max`` nor bytes is EINVAL.
    """

    def __init__(self, path: Path, pid: int, usage_mib: float, reclaimable_mib: float,
                 swap_max: str = "max", reclaim: bool = True, high: str = "max"):
        self.path = path
        self.current_mib = usage_mib
        self.reclaimable_mib = reclaimable_mib
        self.counts = dict.fromkeys(("low", "high", "max", "oom", "oom_kill"), 0)
        self.writes: list[tuple[str, str]] = []
        path.mkdir(parents=True, exist_ok=True)
        for name, text in (("cgroup.procs", f"{pid}"), ("memory.high", high),
                           ("memory.max", "max"), ("memory.swap.max", swap_max),
                           ("memory.swap.current", "0"), ("memory.low", "0"),
                           ("memory.stat", "anon 1000\nfile 2000\nworkingset_refault_anon 0\n"
                                           "workingset_refault_file 0\n"),
                           ("memory.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 "
                                               "total=0\nfull avg10=0.00 avg60=0.00 "
                                               "avg300=0.00 total=0")):
            (path / name).write_text(text + "\n")
        if reclaim:
            (path / "memory.reclaim").write_text("")  # write-only: reads as nothing
        self._show()

    def _show(self) -> None:
        (self.path / "memory.current").write_text(f"{int(self.current_mib * MIB)}\n")
        (self.path / "memory.events").write_text(
            "".join(f"{k} {v}\n" for k, v in self.counts.items()))

    def _take(self, mib: float) -> float:
        freed = max(0.0, min(mib, self.reclaimable_mib))
        self.current_mib -= freed
        self.reclaimable_mib -= freed
        return freed

    def write(self, path: Path, text: str) -> None:
        if path.parent != self.path:
            raise AssertionError(f"write outside the fake cgroup: {path}")
        self.writes.append((path.name, text))
        if not (text == "max" or text.isdigit()):
            raise OSError(errno.EINVAL, "Invalid argument")
        value = None if text == "max" else int(text) / MIB
        if path.name == "memory.reclaim":
            assert value is not None
            if self._take(value) < value:
                self._show()
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        elif path.name in ("memory.high", "memory.max"):
            path.write_text(text + "\n")
            if value is not None and self.current_mib > value:
                self._take(self.current_mib - value)
                if self.current_mib > value:
                    self.counts["high" if path.name == "memory.high" else "max"] += 1
                    if path.name == "memory.max":
                        self.counts["oom"] += 1
                        self.counts["oom_kill"] += 1
        else:
            path.write_text(text + "\n")
        self._show()


@pytest.fixture
def v2_guest(fake_host, clock, tmp_path, monkeypatch):
    """A file-backed guest g1 (pid 4001) whose QEMU is in a cgroup v2 of its own."""

    def make(usage_mib=480.0, reclaimable_mib=1000.0, ram_file=True, **kw):
        root = fake_host.root / "cg2"
        (root).mkdir(exist_ok=True)
        (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        ram = None
        if ram_file:
            ram = tmp_path / "g1.vswp"
            ram.write_bytes(b"")
        fake_host.add_guest("g1", 4001, ram_file=str(ram) if ram else None)
        (fake_host.proc / "4001" / "cgroup").write_text("0::/hvmem-test/g1\n")
        memcg = FakeMemcg(root / "hvmem-test" / "g1", 4001, usage_mib, reclaimable_mib, **kw)
        monkeypatch.setattr(cgroup_v2, "write", memcg.write)
        fake_host.cgroup = root
        backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
        backend.sample()
        return backend, memcg

    return make


def read(memcg: FakeMemcg, name: str) -> str:
    return (memcg.path / name).read_text().strip()


# -- detection -----------------------------------------------------------------------------------

def test_hierarchy_v1_hybrid_v2_and_none(tmp_path):
    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_v2.hierarchy(v1).kind == "v1"
    (v1 / "unified").mkdir()
    (v1 / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    found = cgroup_v2.hierarchy(v1)
    assert (found.kind, found.memory, found.unified) == ("hybrid", v1 / "memory", v1 / "unified")
    assert "cgroup v2 at" in found.why and "hugetlb" in found.why
    for where in ("", "unified"):
        v2 = tmp_path / f"v2{where}"
        (v2 / where).mkdir(parents=True, exist_ok=True)
        (v2 / where / "cgroup.controllers").write_text("cpu io memory pids\n")
        found = cgroup_v2.hierarchy(v2)
        assert (found.kind, found.memory) == ("v2", v2 / where if where else v2)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "cgroup.controllers").write_text("cpu pids\n")
    assert cgroup_v2.hierarchy(bare).kind == "none"
    assert cgroup_v2.hierarchy(tmp_path / "missing").kind == "none"


def test_v2_cgroup_of_a_process_and_its_limits(tmp_path, monkeypatch):
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.controllers").write_text("memory\n")
    memcg = FakeMemcg(root / "hv" / "vm1", 321, usage_mib=300, reclaimable_mib=100)
    monkeypatch.setattr(cgroup_v2, "write", memcg.write)
    (tmp_path / "proc" / "321").mkdir(parents=True)
    (tmp_path / "proc" / "321" / "cgroup").write_text("0::/hv/vm1\n")
    cg = memory_cgroup_of(321, root, tmp_path / "proc")
    assert cg == MemoryCgroup(memcg.path, 2)
    assert cg.saved_limits() == (None, None) and cg.limit_mib() is None
    (memcg.path / "memory.high").write_text(f"{400 * MIB}\n")  # an operator's own
    assert cg.saved_limits() == (None, 400) and cg.limit_mib() == 400
    assert cg.events() == {"low": 0, "high": 0, "max": 0, "oom": 0, "oom_kill": 0}
    cg.restore_limits(512, None)
    assert read(memcg, "memory.max") == str(512 * MIB) and read(memcg, "memory.high") == "max"
    assert [w[0] for w in memcg.writes] == ["memory.max", "memory.high"]  # max first


# -- hold: memory.reclaim, memory.high, memory.max ------------------------------------------------

def test_hold_reclaims_then_sets_high_and_max_above_it(tmp_path, monkeypatch):
    memcg = FakeMemcg(tmp_path / "vm", 1, usage_mib=480, reclaimable_mib=1000)
    monkeypatch.setattr(cgroup_v2, "write", memcg.write)
    held = cgroup_v2.hold(memcg.path, limit_mib=380, reclaim_mib=100)
    assert [w[0] for w in memcg.writes] == ["memory.reclaim", "memory.high", "memory.max"]
    assert memcg.writes[0][1] == str(100 * MIB)
    assert read(memcg, "memory.high") == str(380 * MIB)
    assert read(memcg, "memory.max") == str(int(380 + cgroup_v2.MAX_ABOVE_HIGH_MIB) * MIB)
    assert (held.reclaimed, held.usage_before_mib, held.usage_after_mib) == ("all", 480, 380)
    assert "memory.reclaim freed it" in held.describe()


def test_hold_where_reclaim_falls_short_or_is_missing(tmp_path, monkeypatch):
    memcg = FakeMemcg(tmp_path / "a", 1, usage_mib=480, reclaimable_mib=30)
    monkeypatch.setattr(cgroup_v2, "write", memcg.write)
    held = cgroup_v2.hold(memcg.path, limit_mib=380, reclaim_mib=100)
    # EAGAIN: 30 MiB freed; memory.high then throttles instead of OOM-killing...
    assert held.reclaimed == "less" and held.usage_after_mib == 450
    assert memcg.counts["high"] == 1
    # ... and memory.max goes the margin above what is left, not above high: a max
    # under the usage is the OOM killer.
    assert read(memcg, "memory.max") == str(int(450 + cgroup_v2.MAX_ABOVE_HIGH_MIB) * MIB)
    assert memcg.counts["oom_kill"] == 0 and held.max_mib == 514
    assert MemoryCgroup(memcg.path, 2).events()["high"] == 1
    old = FakeMemcg(tmp_path / "b", 1, usage_mib=480, reclaimable_mib=1000, reclaim=False)
    monkeypatch.setattr(cgroup_v2, "write", old.write)
    held = cgroup_v2.hold(old.path, limit_mib=380, reclaim_mib=100, max_cap_mib=400)
    assert held.reclaimed == "none" and [w[0] for w in old.writes] == ["memory.high",
                                                                         "memory.max"]
    assert read(old, "memory.max") == str(400 * MIB)  # never above the cgroup's own max
    assert held.usage_after_mib == 380


def test_swap_room_from_swap_max_less_swap_current(tmp_path):
    cg = tmp_path / "cg"
    cg.mkdir()
    assert cgroup_v2.swap_room_mib(cg) is None  # no swap accounting: not capped
    (cg / "memory.swap.max").write_text("max\n")
    assert cgroup_v2.swap_room_mib(cg) is None
    (cg / "memory.swap.max").write_text(f"{64 * MIB}\n")
    (cg / "memory.swap.current").write_text(f"{24 * MIB}\n")
    assert cgroup_v2.swap_room_mib(cg) == 40


# -- the backend on v2 --------------------------------------------------------------------------

def test_v2_guest_swapped_held_lifted_and_restored_on_close(v2_guest, fake_host):
    backend, memcg = v2_guest(high=str(900 * MIB))  # an operator's high, put back later
    attach = next(e["detail"] for e in backend.events if e["event"] == "attach")
    assert f"cgroup v2 {memcg.path}" in attach
    record = json.loads(backend.state.path.read_text())
    assert record["guests"][0]["cgroup_version"] == 2
    assert (record["guests"][0]["limit_mib"], record["guests"][0]["high_mib"]) == (None, 900)
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0)))
    assert read(memcg, "memory.high") == str(380 * MIB)
    assert read(memcg, "memory.max") == str(444 * MIB)
    assert memcg.current_mib == 380
    event = next(e for e in backend.events if e["event"] == "swap_limit")
    assert "memory.high 380 MiB, memory.max 444 MiB" in event["detail"]
    assert backend.guests["g1"].cgroup.limit_mib() == 380
    backend.apply(plans(MemState.HIGH, g1=(0.0, 0.0)))  # lifted: the originals back
    assert read(memcg, "memory.high") == str(900 * MIB) and read(memcg, "memory.max") == "max"
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0)))
    backend.close()
    assert read(memcg, "memory.high") == str(900 * MIB) and read(memcg, "memory.max") == "max"
    assert not backend.state.path.exists()


def test_v2_limits_come_back_after_a_crash(v2_guest, fake_host):
    backend, memcg = v2_guest()
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0)))
    assert read(memcg, "memory.high") == str(380 * MIB)
    proc = subprocess.Popen(["true"])  # as after a SIGKILL: the owner is gone
    proc.wait()
    record = json.loads(backend.state.path.read_text())
    record["pid"] = proc.pid
    backend.state.path.write_text(json.dumps(record))
    for g in backend.guests.values():
        g.client.close()
    done, problems = restore_stale(backend.state.directory, fake_host.proc)
    assert problems == []
    assert any("memory.high none" in line for line in done)
    assert read(memcg, "memory.high") == "max" and read(memcg, "memory.max") == "max"


def test_v2_anonymous_guest_swap_capped_by_swap_max(v2_guest, fake_host):
    fake_host.set_meminfo(total_mib=24000, free_mib=20000, swap_mib=4096)
    backend, memcg = v2_guest(ram_file=False, swap_max=str(40 * MIB))
    want = plans(MemState.HARD, g1=(0.0, 100.0))
    # The plan's line says what memory.swap.max does not allow.
    line = plans_lines(1.0, want, notes=backend.plan_notes(want))[0]
    assert "swap capped at 40 MiB more by memory.swap.max" in line
    backend.apply(want)
    capped = [e for e in backend.events if e["event"] == "swap_capped"]
    assert len(capped) == 1 and "allows 40 MiB" in capped[0]["detail"]
    assert read(memcg, "memory.high") == str(440 * MIB)  # 480 - 40, not 480 - 100
    backend.close()


def test_v2_anonymous_guest_without_swap_room_is_refused(v2_guest, fake_host):
    fake_host.set_meminfo(total_mib=24000, free_mib=20000, swap_mib=4096)
    backend, memcg = v2_guest(ram_file=False, swap_max="0")
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0)))
    refused = [e["detail"] for e in backend.events if e["event"] == "swap_refused"]
    assert len(refused) == 1 and "memory.swap.max leaves it no swap" in refused[0]
    assert memcg.writes == [] and read(memcg, "memory.high") == "max"
    backend.close()


def test_v2_oom_kill_in_the_guest_cgroup_is_reported(v2_guest):
    backend, memcg = v2_guest(reclaimable_mib=20)
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0)))
    memcg.counts["oom_kill"] += 1  # the kernel killed something at memory.max
    memcg._show()
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0)))
    oom = [e["detail"] for e in backend.events if e["event"] == "cgroup_oom"]
    assert oom == [f"1 OOM kill(s) in {memcg.path} (memory.events oom_kill)"]
    backend.close()


# -- the real hierarchies -----------------------------------------------------------------------

def _real_reason(kind: str) -> str | None:
    if sys.platform != "linux":
        return "not Linux"
    if os.geteuid() != 0:
        return "not root (creating memory cgroups needs root)"
    found = cgroup_v2.hierarchy(REAL_ROOT)
    wanted = ("v1", "hybrid") if kind == "v1" else ("v2",)
    if found.kind not in wanted:
        return f"no cgroup {kind} memory controller on this host: {found.why}"
    return None


def _real_hold(kind: str) -> None:
    """A real cgroup of this process's own, a sleeping child in it, a limit set and undone."""
    cg = create_cgroup(f"hvmem-test-{kind}-{os.getpid()}", REAL_ROOT)
    child = subprocess.Popen(["sleep", "30"])
    try:
        cg.add(child.pid)
        assert cg.pids() == [child.pid] and cg.usage_mib() >= 0
        before = cg.saved_limits()
        if cg.version == 2:
            held = cgroup_v2.hold(cg.path, limit_mib=64, reclaim_mib=1)
            assert cg.limit_mib() == 64 and held.max_mib == 64 + cgroup_v2.MAX_ABOVE_HIGH_MIB
            assert set(cg.events()) >= {"high", "max", "oom", "oom_kill"}
        else:
            cg.set_limit_mib(64)
            assert cg.limit_mib() == 64
        cg.restore_limits(*before)
        assert cg.saved_limits() == before
    finally:
        child.kill()
        child.wait()
        for _ in range(50):
            try:
                cg.remove()
                break
            except Exception:  # an exited process leaves its cgroup a moment later
                import time

                time.sleep(0.1)
    assert not cg.path.exists()


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_real_hierarchy_limit_and_undo(kind):
    why = _real_reason(kind)
    if why is not None:
        pytest.skip(why)
    _real_hold(kind)


def test_this_hosts_hierarchy_is_described():
    found = cgroup_v2.hierarchy(REAL_ROOT)
    assert found.kind in ("v1", "hybrid", "v2", "none")
    assert re.search(r"cgroup|hierarchy", found.why)
