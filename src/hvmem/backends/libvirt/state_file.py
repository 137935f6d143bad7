"""What the libvirt controller changed, on disk before the change: undo after a crash.

As the QEMU controller's (backends/qemu/state_file.py, whose directory, pid
check and KSM restore this shares), ``hvmem libvirt control`` writes the
originals of everything it may change before it changes any of it: per domain
(by UUID, which a redefinition keeps and a new domain does not reuse) its live
memory (the balloon), its memtune ``hard_limit``, ``soft_limit`` and
``swap_hard_limit``, and its balloon stats period; and KSM's settings where it
drives KSM. The file is ``libvirt-PID.json`` in ``/run/hvmem`` (or
``$HVMEM_STATE_DIR``, or ``--state-dir``), beside the QEMU controller's
``control-PID.json``, which it never reads. A clean exit that undid everything
removes it.

:func:`restore_stale` undoes every such file whose controller is no longer
running: it connects to the file's URI, puts back each domain that is still
running, and KSM, then removes the file; ``hvmem libvirt control`` runs it
before it reads any original, ``hvmem libvirt restore`` on demand. Written to a
temporary name, flushed and renamed, so a crash while writing leaves the
previous version whole.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hvmem.backends.libvirt.connection import error_text, import_libvirt, open_connection
from hvmem.backends.libvirt.domain import KIB_PER_MIB, UNLIMITED_KIB
from hvmem.backends.qemu.ksm import Ksm
from hvmem.backends.qemu.state_file import default_state_dir, start_time
from hvmem.errors import BackendError

__all__ = ["SavedDomain", "StateFile", "restore_stale"]

PREFIX = "libvirt-"


@dataclass(frozen=True, slots=True)
class SavedDomain:
    """One domain's originals."""

    name: str
    uuid: str
    configured_mib: float
    live_kib: int  # its live memory: configured less the balloon
    memtune: dict[str, int]
    stats_period_s: int | None = None


@dataclass
class StateFile:
    """The state file of one libvirt controller process."""

    directory: Path
    uri: str
    ksm_root: Path | None = None
    ksm: dict[str, int] | None = None
    domains: list[SavedDomain] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.directory = Path(self.directory)
        self.pid = os.getpid()
        self.path = self.directory / f"{PREFIX}{self.pid}.json"

    def write(self) -> None:
        """Write the record atomically (temporary file, fsync, rename).

        Raises:
            BackendError: the directory cannot be made or written (one line).
        """
        record = {"pid": self.pid, "pid_start": start_time(self.pid), "uri": self.uri,
                  "ksm_root": str(self.ksm_root) if self.ksm_root else None,
                  "ksm": self.ksm, "domains": [asdict(d) for d in self.domains]}
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


def _stale(directory: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in Path(directory).glob(f"{PREFIX}*.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        pid, started = record.get("pid"), record.get("pid_start")
        if pid is not None and started is not None and start_time(pid) == started:
            continue  # its controller still runs
        out.append((path, record))
    # Newest first, so the oldest record's KSM settings (the host's own) are written last.
    out.sort(key=lambda pr: pr[0].stat().st_mtime, reverse=True)
    return out


def restore_stale(directory: Path | None = None, uri: str | None = None
                  ) -> tuple[list[str], list[str]]:
    """Undo every state file whose controller is gone (module docs).

    Args:
        directory: the state directory (default ``$HVMEM_STATE_DIR`` or ``/run/hvmem``).
        uri: only the files of this connection (None: all).

    Returns:
        (what was put back, one line each; what could not be, one line each).
        A file is removed only when nothing in it failed.
    """
    directory = Path(directory) if directory is not None else default_state_dir()
    done: list[str] = []
    problems: list[str] = []
    for path, record in _stale(directory):
        if uri is not None and record.get("uri") != uri:
            continue
        failed = [f"controller pid {record.get('pid')}: {p}" for p in _undo(record, done)]
        problems.extend(failed)
        if not failed:
            path.unlink(missing_ok=True)
    return done, problems


def _undo(record: dict, done: list[str]) -> list[str]:
    problems = []
    domains = [SavedDomain(**raw) for raw in record.get("domains", [])]
    if domains:
        try:
            conn = open_connection(record["uri"])
        except BackendError as err:
            return [str(err)]
        try:
            for saved in domains:
                problems.extend(undo_domain(conn, saved, done))
        finally:
            conn.close()
    if record.get("ksm") is not None:
        ksm = Ksm(Path(record.get("ksm_root") or "/sys/kernel/mm/ksm"))
        if ksm.available:
            ksm.original = {k: int(v) for k, v in record["ksm"].items()}
            try:
                ksm.restore()
                done.append("KSM back to " + ", ".join(f"{k}={v}" for k, v in
                                                       record["ksm"].items()))
            except BackendError as err:
                problems.append(str(err))
    return problems


def undo_domain(conn, saved: SavedDomain, done: list[str]) -> list[str]:
    """Put one domain's memtune, live memory and stats period back, if it still runs."""
    libvirt = import_libvirt()
    try:
        dom = conn.lookupByUUIDString(saved.uuid)
        if not dom.isActive():
            done.append(f"{saved.name}: not running; its live settings went with it")
            return []
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE
        now = dom.memoryParameters(live)
        changed = {k: v for k, v in saved.memtune.items() if int(now.get(k, v)) != v}
        if changed:
            dom.setMemoryParameters(changed, live)
            done.append(f"{saved.name}: memtune back to " + ", ".join(
                f"{k}={'unlimited' if v >= UNLIMITED_KIB else f'{v // KIB_PER_MIB} MiB'}"
                for k, v in changed.items()))
        if dom.info()[2] != saved.live_kib:
            dom.setMemoryFlags(saved.live_kib, live)
            done.append(f"{saved.name}: memory back to {saved.live_kib // KIB_PER_MIB} MiB "
                        "(balloon returned)")
        if saved.stats_period_s is not None:
            dom.setMemoryStatsPeriod(saved.stats_period_s, live)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            done.append(f"{saved.name}: domain gone; nothing to put back")
            return []
        return [f"{saved.name}: {error_text(err)}"]
    return []
