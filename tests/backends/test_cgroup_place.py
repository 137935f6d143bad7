"""Where launched guests go: a systemd scope, or a cgroup directory recorded in a state file
before it is made and removed by stop, or after a crash by restore (fake hierarchies)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hvmem.backends.qemu.cgroup_place import place, scope_prefix, settle, systemd_running
from hvmem.backends.qemu.launcher import LaunchedGuest, _guests_toml, read_guests_file, stop
from hvmem.backends.qemu.state_file import CgroupRecord, prune_launch_records, restore_stale
from hvmem.errors import BackendError


def v1_host(tmp_path: Path, unified: bool = True) -> tuple[Path, Path]:
    """A v1 memory hierarchy (hybrid with ``unified``) and a /proc whose self is in /ctl."""
    root = tmp_path / "cg"
    (root / "memory" / "ctl").mkdir(parents=True)
    (root / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    if unified:
        (root / "unified" / "ctl").mkdir(parents=True)
        (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("4:memory:/ctl\n0::/ctl\n")
    return root, proc


class WatchedRecord(CgroupRecord):
    """A record that notes whether each path already existed when it was recorded."""

    existed: list[bool]

    def add(self, path: Path) -> None:
        self.existed = [*getattr(self, "existed", []), Path(path).exists()]
        super().add(path)


def test_directory_placement_is_recorded_before_it_is_made(tmp_path):
    root, proc = v1_host(tmp_path)
    record = WatchedRecord(tmp_path / "state")
    where = place("hvmem-1-vm1", False, record, root, use_systemd=False, proc=proc)
    assert where.scope is None and where.prefix == []
    assert where.cgroup.path == root / "memory" / "ctl" / "hvmem-1-vm1"
    assert where.psi_cgroup == root / "unified" / "ctl" / "hvmem-1-vm1"
    assert where.cgroup.path.is_dir() and where.psi_cgroup.is_dir()
    assert record.existed == [False, False]  # recorded first, then made
    saved = json.loads(record.path.read_text())
    assert saved["cgroups"] == [str(where.cgroup.path), str(where.psi_cgroup)]
    assert record.path.name.startswith("launch-")


def test_a_guest_without_a_memory_controller(tmp_path):
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/\n")
    record = CgroupRecord(tmp_path / "state")
    where = place("hvmem-1-vm1", False, record, tmp_path / "none", use_systemd=False, proc=proc)
    assert where.cgroup is None and "no memory cgroup controller" in where.why
    assert not record.path.exists()  # nothing made, nothing recorded
    with pytest.raises(BackendError, match="no memory cgroup controller"):
        place("hvmem-1-vm2", True, record, tmp_path / "none", use_systemd=False, proc=proc)


def test_a_state_file_that_cannot_be_written_makes_nothing(tmp_path):
    root, proc = v1_host(tmp_path, unified=False)
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the state directory should be
    record = CgroupRecord(blocked / "state")
    with pytest.raises(BackendError, match="cannot write"):
        place("hvmem-1-vm1", True, record, root, use_systemd=False, proc=proc)
    assert not (root / "memory" / "ctl" / "hvmem-1-vm1").exists()
    where = place("hvmem-1-vm2", False, record, root, use_systemd=False, proc=proc)
    assert where.cgroup is None and "cannot write" in where.why


def test_systemd_scope_where_systemd_runs(tmp_path):
    assert not systemd_running(tmp_path / "missing")
    where = place("hvmem-1-vm1", True, None, use_systemd=True)
    assert where.scope == "hvmem-1-vm1.scope" and where.cgroup is None
    assert where.prefix == scope_prefix("hvmem-1-vm1.scope")
    assert where.prefix[:2] == ["systemd-run", "--scope"] and where.prefix[-1] == "--"
    assert "--unit=hvmem-1-vm1.scope" in where.prefix and "MemoryAccounting=yes" in where.prefix
    # Once QEMU runs, its memory cgroup is the scope's, read from /proc.
    root = tmp_path / "cg"
    (root / "system.slice" / "hvmem-1-vm1.scope").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("memory\n")
    proc = tmp_path / "proc"
    (proc / "4001").mkdir(parents=True)
    (proc / "4001" / "cgroup").write_text("0::/system.slice/hvmem-1-vm1.scope\n")
    assert settle(where, None, root, proc) is None  # QEMU not started
    found = settle(where, 4001, root, proc)
    assert (found.path, found.version) == (root / "system.slice" / "hvmem-1-vm1.scope", 2)


def test_scope_round_trips_through_the_guests_file_and_stop_leaves_it(tmp_path):
    scope_cg = tmp_path / "cg" / "system.slice" / "hvmem-1-vm1.scope"
    scope_cg.mkdir(parents=True)
    g = LaunchedGuest("vm1", tmp_path / "vm1.qmp", tmp_path / "vm1.pid", tmp_path / "vm1.log",
                      256, cgroup=scope_cg, scope="hvmem-1-vm1.scope")
    (tmp_path / "guests.toml").write_text(_guests_toml([g], "tcg", None))
    [back], _ = read_guests_file(tmp_path / "guests.toml")
    assert back.scope == "hvmem-1-vm1.scope" and back.cgroup == scope_cg
    assert stop([back]) == []
    assert scope_cg.is_dir()  # systemd's: it removes the scope when QEMU exits


def test_stop_removes_the_directories_and_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("HVMEM_STATE_DIR", str(tmp_path / "state"))
    root, proc = v1_host(tmp_path, unified=False)
    record = CgroupRecord(tmp_path / "state")
    where = place("hvmem-1-vm1", True, record, root, use_systemd=False, proc=proc)
    g = LaunchedGuest("vm1", tmp_path / "vm1.qmp", tmp_path / "vm1.pid", tmp_path / "vm1.log",
                      256, cgroup=where.cgroup.path)
    assert record.path.exists()
    assert stop([g]) == []
    assert not where.cgroup.path.exists() and not record.path.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_restore_after_a_crashed_launch_removes_empty_cgroups_only(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    empty = tmp_path / "cg" / "hvmem-1-vm1"
    busy = tmp_path / "cg" / "hvmem-1-vm2"
    gone = tmp_path / "cg" / "hvmem-1-vm3"
    empty.mkdir(parents=True)
    busy.mkdir()
    (busy / "cgroup.procs").write_text("4242\n")  # its QEMU still runs
    path = state / "launch-1.json"
    path.write_text(json.dumps({"pid": _dead_pid(), "pid_start": 1,
                                "cgroups": [str(empty), str(busy), str(gone)]}))
    done, problems = restore_stale(state)
    assert problems == [] and done == [f"cgroup {empty} removed (made by launch pid "
                                       f"{json.loads(path.read_text())['pid']})"]
    assert not empty.exists() and busy.is_dir()
    assert json.loads(path.read_text())["cgroups"] == [str(busy)]  # kept for stop
    (busy / "cgroup.procs").unlink()  # QEMU gone (a real cgroup empties itself)
    restore_stale(state)
    assert not busy.exists() and not path.exists()


def test_a_running_launch_is_left_alone(tmp_path):
    state = tmp_path / "state"
    record = CgroupRecord(state)
    made = tmp_path / "cg" / "hvmem-1-vm1"
    record.add(made)  # recorded, not made yet: this launch is under way
    done, problems = restore_stale(state)
    assert (done, problems) == ([], [])
    prune_launch_records(state)  # its own record: the path not made is dropped
    assert not record.path.exists()
    other = state / "launch-99.json"
    mine = json.loads(json.dumps({"pid": 1, "pid_start": None, "cgroups": [str(made)]}))
    other.write_text(json.dumps(mine))
    prune_launch_records(state)  # pid 1's start time never matches None: not running
    assert not other.exists()


def test_real_directory_placement_made_and_removed(tmp_path, monkeypatch):
    """On this host's own hierarchy: the cgroups made, a process in them, stop removes them."""
    import os

    from hvmem.backends.qemu import cgroup_v2

    found = cgroup_v2.hierarchy(Path("/sys/fs/cgroup"))
    if os.geteuid() != 0:
        pytest.skip("not root (creating memory cgroups needs root)")
    if found.memory is None:
        pytest.skip(f"no memory cgroup controller on this host: {found.why}")
    monkeypatch.setenv("HVMEM_STATE_DIR", str(tmp_path / "state"))
    record = CgroupRecord(tmp_path / "state")
    name = f"hvmem-test-{os.getpid()}-place"
    where = place(name, True, record, use_systemd=False)
    assert where.cgroup is not None and where.cgroup.path.is_dir()
    assert where.cgroup.version == (2 if found.kind == "v2" else 1)
    assert (where.psi_cgroup is not None) == (found.kind == "hybrid")
    child = subprocess.Popen(["sleep", "30"])
    try:
        where.cgroup.add(child.pid)
        assert where.cgroup.pids() == [child.pid]
    finally:
        child.kill()
        child.wait()
    g = LaunchedGuest("vm1", tmp_path / "vm1.qmp", tmp_path / "vm1.pid", tmp_path / "vm1.log",
                      256, cgroup=where.cgroup.path)
    assert stop([g]) == []
    if where.psi_cgroup is not None:
        where.psi_cgroup.rmdir()  # stop finds it from the live QEMU's /proc; this one is gone
    prune_launch_records(tmp_path / "state")
    assert not where.cgroup.path.exists() and not record.path.exists()


def test_launch_in_a_scope_and_without_one_when_systemd_run_fails(tmp_path, monkeypatch):
    """launch() with QEMU's start faked: the scope's command line, and the fall-back to a
    directory of hvmem's own when systemd-run cannot make the scope."""
    from hvmem.backends.qemu import launcher
    from hvmem.backends.qemu.guest_image import GuestImage

    monkeypatch.setenv("HVMEM_STATE_DIR", str(tmp_path / "state"))
    root, _ = v1_host(tmp_path, unified=False)
    runs: list[list[str]] = []

    def fake_start(argv, cgroup, guest, die_with_parent=False, psi_cgroup=None):
        runs.append(argv)
        if argv[0] == "systemd-run" and len(runs) > 1:
            raise BackendError(f"{guest.name}: QEMU failed to start: Failed to connect to bus")
        guest.pid_file.write_text("4242\n")

    monkeypatch.setattr(launcher, "_start", fake_start)
    image = GuestImage(tmp_path / "vmlinuz", tmp_path / "initrd", "6.1")
    [g] = launcher.launch(image, tmp_path / "run", count=1, accel="tcg", use_systemd=True,
                          cgroup_root=root)
    assert runs[0][:2] == ["systemd-run", "--scope"] and "qemu-system-x86_64" in runs[0]
    assert g.scope is not None and g.scope.endswith("-vm1.scope")
    assert 'scope = "' in (tmp_path / "run" / "guests.toml").read_text()
    [g] = launcher.launch(image, tmp_path / "run2", count=1, accel="tcg", use_systemd=True,
                          cgroup_root=root)
    assert runs[2][0] == "qemu-system-x86_64"  # started again, without the scope
    assert g.scope is None
