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

The file is JSON, written to a temporary name, flushed to disk and renamed
over the old one, so a crash while writing leaves the previous version whole.
``HVMEM_STATE_DIR`` moves the directory (tests use a temporary one).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hvmem.backends.qemu.cgroups import MemoryCgroup
from hvmem.backends.qemu.ksm import Ksm
from hvmem.backends.qemu.qmp import QmpClient
from hvmem.errors import BackendError
from hvmem.units import MIB

__all__ = ["SavedGuest", "StateFile", "default_state_dir", "restore_stale", "start_time"]

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
        tmp = self.path.with_suffix(".tmp")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(tmp, "w") as f:
                json.dump(record, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        except OSError as err:
            raise BackendError(f"{self.directory}: cannot write the controller's state file "
                               f"({err.strerror}); --state-dir names another") from None

    def remove(self) -> None:
        """Remove the record (everything it lists was undone)."""
        self.path.unlink(missing_ok=True)


def _records(directory: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(Path(directory).glob("control-*.json")):
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
    return done, problems


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
