"""What the controller changed on the host, on disk before the change: undo after a crash.

Why
---
``hvmem qemu control`` changes things that outlive it: KSM's ``run``,
``pages_to_scan`` and ``sleep_millisecs`` (host-wide), a memory-cgroup limit
per file-backed guest, and each guest's balloon target. A clean exit puts them
back (backend.py ``close``). A SIGKILL, an OOM kill or a crash does not, and
the next controller would then read KSM at ``run=1`` and ``pages_to_scan=5000``
and save *those* as the host's originals. So before the first change, the
controller writes the originals to a state file, one per controller process:
``/run/hvmem/control-PID.json`` (``/run`` is a tmpfs: a reboot, which resets
KSM and cgroups anyway, clears it too). A clean exit that undid everything
removes the file.

Undo
----
:func:`restore_stale` undoes every state file whose controller is no longer
running (its pid is gone, or now belongs to a process started at another time):
KSM's settings, each cgroup's limit (if the cgroup still exists) and each
guest's balloon (if the same QEMU still runs: pid and start time match), then
removes the file. ``hvmem qemu control`` runs it before it reads any original,
and ``hvmem qemu restore`` runs it on demand. Files are undone newest first, so
where two crashed controllers recorded KSM, the oldest record, the host's real
settings, is written last.

Cgroups a launch made
---------------------
``hvmem qemu launch`` makes a cgroup directory per guest where no systemd
scope holds it (cgroup_place.py), and writes each path to its own record,
``/run/hvmem/launch-PID.json`` (:class:`CgroupRecord`), before the directory
is made. The guests outlive the launch, and so do their cgroups: ``hvmem qemu
stop`` removes them and drops them from the record (:func:`prune_launch_records`).
After a crash, :func:`restore_stale` removes every recorded cgroup of a launch no
longer running that is empty (its QEMU gone); one that still holds its QEMU is
left, with its record, for the ``stop`` to come.

The file is JSON, written to a temporary name, flushed to disk and renamed
over the old one, so a crash while writing leaves the previous version whole.
``HVMEM_STATE_DIR`` moves the directory (tests use a temporary one).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hvmem.backends.qemu.cgroups import MemoryCgroup
from hvmem.backends.qemu.ksm import Ksm
from hvmem.backends.qemu.qmp import QmpClient
from hvmem.errors import BackendError
from hvmem.units import MIB

__all__ = [
    "CgroupRecord",
    "SavedGuest",
    "StateFile",
    "default_state_dir",
    "prune_launch_records",
    "restore_stale",
    "start_time",
]

#: Where state files go unless HVMEM_STATE_DIR says otherwise.
DEFAULT_STATE_DIR = Path("/run/hvmem")


def default_state_dir() -> Path:
    """``$HVMEM_STATE_DIR``, else ``/run/hvmem``."""
    env = os.environ.get("HVMEM_STATE_DIR")
    return Path(env) if env else DEFAULT_STATE_DIR


def start_time(pid: int | str, proc: Path = Path("/proc")) -> int | None:
    """A process's start time in clock ticks (field 22 of its stat); None: gone.

    With the pid it names one process for good: a pid may be reused, the pair not.
    """
    try:
        after = (proc / str(pid) / "stat").read_text().rpartition(")")[2].split()
        return int(after[19])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True, slots=True)
class SavedGuest:
    """One guest's originals: its balloon and, if it has one of its own, its cgroup limit."""

    name: str
    qmp: str
    pid: int
    pid_start: int | None
    configured_mib: float
    balloon_mib: float | None = None  # None: no balloon device
    cgroup: str | None = None
    cgroup_version: int = 1
    limit_mib: float | None = None  # the original v1 limit or v2 memory.max (None: unlimited)
    high_mib: float | None = None  # the original v2 memory.high (None: unlimited)


@dataclass
class StateFile:
    """The state file of one controller process.

    Args:
        directory: where state files live (:func:`default_state_dir`).
        proc: the /proc root.
    """

    directory: Path
    proc: Path = Path("/proc")
    ksm_root: Path | None = None
    ksm: dict[str, int] | None = None
    guests: list[SavedGuest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.pid = os.getpid()
        self.path = self.directory / f"control-{self.pid}.json"

    def write(self) -> None:
        """Write the record atomically (temporary file, fsync, rename).

        Raises:
            BackendError: the directory cannot be made or written (one line).
        """
        record = {"pid": self.pid, "pid_start": start_time(self.pid),
                  "ksm_root": str(self.ksm_root) if self.ksm_root else None,
                  "ksm": self.ksm, "guests": [asdict(g) for g in self.guests]}
        _write_atomic(self.directory, self.path, record, "the controller's state file")

    def remove(self) -> None:
        """Remove the record (everything it lists was undone)."""
        self.path.unlink(missing_ok=True)


def _write_atomic(directory: Path, path: Path, record: dict, what: str,
                  other: str = "--state-dir") -> None:
    tmp = path.with_suffix(".tmp")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(record, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as err:
        raise BackendError(f"{directory}: cannot write {what} ({err.strerror}); "
                           f"{other} names another") from None


@dataclass
class CgroupRecord:
    """The cgroup directories one launch made: ``launch-PID.json`` (module docs).

    Args:
        directory: where state files live (:func:`default_state_dir`).
    """

    directory: Path
    cgroups: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.pid = os.getpid()
        self.path = self.directory / f"launch-{self.pid}.json"

    def add(self, path: Path) -> None:
        """Record ``path``; call before making it.

        Raises:
            BackendError: the record cannot be written.
        """
        new = str(path) not in self.cgroups  # made again (a KVM launch retried under TCG)
        if new:
            self.cgroups.append(str(path))
        try:
            self._write()
        except BackendError:
            if new:
                self.cgroups.pop()
            raise

    def forget(self, path: Path) -> None:
        """Drop ``path`` (it was not made after all, or was removed)."""
        if str(path) in self.cgroups:
            self.cgroups.remove(str(path))
            self._write()

    def _write(self) -> None:
        if not self.cgroups:
            self.path.unlink(missing_ok=True)
            return
        _write_atomic(self.directory, self.path, {"pid": self.pid,
                      "pid_start": start_time(self.pid), "cgroups": self.cgroups},
                      "the launch's record of its cgroups", "HVMEM_STATE_DIR")


def _records(directory: Path, kind: str = "control") -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(Path(directory).glob(f"{kind}-*.json")):
        try:
            out.append((path, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # not ours, or torn: the atomic rename makes that someone else's
    return out


def _owner_alive(record: dict, proc: Path) -> bool:
    pid = record.get("pid")
    return pid is not None and start_time(pid, proc) == record.get("pid_start") and (
        record.get("pid_start") is not None)


def restore_stale(directory: Path | None = None, proc: Path = Path("/proc"),
                  ksm_root: Path | None = None) -> tuple[list[str], list[str]]:
    """Undo every state file whose controller is gone (module docs).

    Returns:
        (what was put back, one line each; what could not be, one line each).
        A file is removed only when nothing in it failed.
    """
    directory = Path(directory) if directory is not None else default_state_dir()
    done: list[str] = []
    problems: list[str] = []
    # The controllers are processes of this host (the real /proc), the guests
    # whatever ``proc`` describes.
    stale = [(p, r) for p, r in _records(directory) if not _owner_alive(r, Path("/proc"))]
    # Newest first, so the oldest record's KSM settings (the host's own) are written last.
    stale.sort(key=lambda pr: pr[0].stat().st_mtime, reverse=True)
    for path, record in stale:
        failed = _undo(record, proc, ksm_root, done)
        problems.extend(failed)
        if not failed:
            path.unlink(missing_ok=True)
    for path, record in _records(directory, "launch"):
        if not _owner_alive(record, Path("/proc")):
            _remove_made(path, record, done, problems)
    return done, problems


def prune_launch_records(directory: Path | None = None) -> None:
    """Drop cgroups that no longer exist from the records of finished launches.

    Records of launches no longer running, and of this process; a record left
    with none is removed.
    """
    directory = Path(directory) if directory is not None else default_state_dir()
    for path, record in _records(directory, "launch"):
        if record.get("pid") != os.getpid() and _owner_alive(record, Path("/proc")):
            continue  # a launch under way: its cgroups are recorded before they exist
        left = [c for c in record.get("cgroups", []) if Path(c).is_dir()]
        if left == record.get("cgroups"):
            continue
        if not left:
            path.unlink(missing_ok=True)
        else:
            record["cgroups"] = left
            with contextlib.suppress(BackendError):
                _write_atomic(directory, path, record, "the launch's record of its cgroups")


def _remove_made(path: Path, record: dict, done: list[str], problems: list[str]) -> None:
    """Remove each empty cgroup a crashed launch recorded; keep the ones a QEMU is in."""
    left = []
    for raw in record.get("cgroups", []):
        cgroup = Path(raw)
        if not cgroup.is_dir():
            continue
        try:
            busy = (cgroup / "cgroup.procs").read_text().split()
        except OSError:
            busy = []
        if busy:
            left.append(raw)  # its guest still runs: removed by hvmem qemu stop
            continue
        try:
            cgroup.rmdir()
            done.append(f"cgroup {cgroup} removed (made by launch pid {record.get('pid')})")
        except OSError as err:
            left.append(raw)
            problems.append(f"launch pid {record.get('pid')}: {cgroup}: cannot remove "
                            f"cgroup ({err.strerror})")
    if not left:
        path.unlink(missing_ok=True)
    elif left != record.get("cgroups"):
        record["cgroups"] = left
        with contextlib.suppress(BackendError):
            _write_atomic(path.parent, path, record, "the launch's record of its cgroups")


def _undo(record: dict, proc: Path, ksm_root: Path | None, done: list[str]) -> list[str]:
    problems = []
    owner = f"controller pid {record.get('pid')}"
    for raw in record.get("guests", []):
        g = SavedGuest(**raw)
        if g.cgroup is not None and Path(g.cgroup).is_dir():
            try:
                MemoryCgroup(Path(g.cgroup), g.cgroup_version).restore_limits(g.limit_mib,
                                                                              g.high_mib)
                high = "" if g.cgroup_version == 1 else (
                    f", memory.high {'none' if g.high_mib is None else f'{g.high_mib:.0f} MiB'}")
                done.append(f"{g.name}: cgroup {g.cgroup} limit back to "
                            f"{'none' if g.limit_mib is None else f'{g.limit_mib:.0f} MiB'}"
                            f"{high}")
            except BackendError as err:
                problems.append(str(err))
        alive = g.pid_start is not None and start_time(g.pid, proc) == g.pid_start
        if g.balloon_mib is not None and alive and Path(g.qmp).exists():
            try:
                with QmpClient(g.qmp, 2.0, g.name) as qmp:
                    size = int(round(g.configured_mib - g.balloon_mib)) * MIB
                    qmp.call("balloon", {"value": size})
                done.append(f"{g.name}: balloon back to {g.balloon_mib:.0f} MiB")
            except BackendError as err:
                problems.append(f"{err} (balloon not put back)")
    if record.get("ksm") is not None:
        ksm = Ksm(ksm_root or Path(record.get("ksm_root") or "/sys/kernel/mm/ksm"))
        if ksm.available:
            ksm.original = {k: int(v) for k, v in record["ksm"].items()}
            try:
                ksm.restore()
                done.append("KSM back to " + ", ".join(f"{k}={v}" for k, v in
                                                       record["ksm"].items()))
            except BackendError as err:
                problems.append(str(err))
    return [f"{owner}: {p}" for p in problems]
