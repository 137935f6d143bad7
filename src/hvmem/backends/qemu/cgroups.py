"""Memory cgroups: hypervisor swapping for QEMU guests whose RAM is a file.

What is modelled
----------------
ESX swaps a VM's pages to its ``.vswp`` file behind the guest's back. On Linux
the same happens when a QEMU process whose guest RAM is a file on disk
(``-object memory-backend-file,mem-path=VM.vswp,share=on``) runs in a memory
cgroup and the cgroup's limit is lowered: the kernel writes the file's dirty
pages back and drops them from memory, and brings them back on the next touch
(a major fault, ESX's swap-in). [QEMU-PROBE] measured it here: a
512 MiB guest with 400 MiB touched, limit 256 MiB set after the fill, usage
dropped to 254 MiB within 0.38-0.52 s, the guest's data checksum stayed the
same, and nothing was OOM-killed.

Three cases where a limit must not be set, each refused with a reason:

* anonymous guest RAM on a host without swap: the kernel cannot reclaim it,
  and the memory cgroup's OOM killer kills QEMU (measured: rc -9, ``Memory
  cgroup out of memory: Killed process ... (qemu-system-x86)``), or with cgroup
  v1 the write fails with EBUSY if the usage is already above the new limit;
* a cgroup that holds other processes than the guest's QEMU (the limit would
  squeeze them too);
* the root cgroup, or no memory controller.

The limit also covers QEMU's own memory (about 85 MiB under TCG), so it is never
set below QEMU's anonymous memory plus a headroom (:data:`DEFAULT_HEADROOM_MIB`;
[QEMU-PROBE] advises "at least about 100 MiB of headroom" above the guest
data for QEMU/TCG itself).

Hierarchies (cgroup_v2.py ``hierarchy`` tells which a host has): cgroup v1
(``memory.limit_in_bytes``, ``memory.usage_in_bytes``, ``memory.stat``,
``memory.failcnt``), the one this kind of machine has, with or without a
unified hierarchy beside it; and cgroup v2 where ``memory`` is listed in the
unified hierarchy's ``cgroup.controllers``: ``memory.current``, ``memory.stat``,
``memory.events``, and as the limit ``memory.high`` with ``memory.max`` above
it (cgroup_v2.py says why and how). New cgroups are created as children of the
creating process's own memory cgroup, read from ``/proc/self/cgroup``
[QEMU-PROBE], so they stay inside its accounting.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from hvmem.backends.qemu import cgroup_v2
from hvmem.errors import BackendError

__all__ = [
    "DEFAULT_CGROUP_ROOT",
    "DEFAULT_HEADROOM_MIB",
    "MemoryCgroup",
    "create_cgroup",
    "create_pressure_cgroup",
    "memory_cgroup_of",
    "new_cgroup_path",
    "new_pressure_path",
    "pressure_file",
]

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
#: Memory kept above QEMU's anonymous memory when limiting (MiB).
DEFAULT_HEADROOM_MIB = 96.0
# cgroup v1 reports "no limit" as a huge page-aligned number.
_V1_UNLIMITED = 1 << 62
MIB = 1 << 20


@dataclass(frozen=True)
class MemoryCgroup:
    """One memory cgroup, v1 or v2.

    Attributes:
        path: its directory.
        version: 1 or 2.
    """

    path: Path
    version: int

    def _file(self, v1: str, v2: str) -> Path:
        return self.path / (v1 if self.version == 1 else v2)

    def _read(self, v1: str, v2: str) -> str:
        try:
            return self._file(v1, v2).read_text().strip()
        except OSError as err:
            raise BackendError(f"{self._file(v1, v2)}: cannot read ({err.strerror})") from None

    def pids(self) -> list[int]:
        """Processes in the cgroup."""
        return [int(p) for p in self._read("cgroup.procs", "cgroup.procs").split()]

    def usage_mib(self) -> float:
        """Memory charged to the cgroup now (page cache included)."""
        return int(self._read("memory.usage_in_bytes", "memory.current")) / MIB

    def limit_mib(self) -> float | None:
        """The limit, None when unlimited (v2: the lower of ``memory.high`` and ``memory.max``)."""
        if self.version == 2:
            found = [v for v in self.saved_limits() if v is not None]
            return min(found) if found else None
        value = int(self._read("memory.limit_in_bytes", "memory.max"))
        return None if value >= _V1_UNLIMITED else value / MIB

    def saved_limits(self) -> tuple[float | None, float | None]:
        """What undoing a limit puts back: (v1 limit or v2 ``memory.max``, v2 ``memory.high``).

        None stands for unlimited; v1 has no second value.
        """
        if self.version == 1:
            return self.limit_mib(), None
        try:
            return cgroup_v2.limits(self.path)
        except (OSError, ValueError) as err:
            raise BackendError(f"{self.path}: cannot read memory.max/memory.high "
                               f"({getattr(err, 'strerror', None) or err})") from None

    def restore_limits(self, limit_mib: float | None, high_mib: float | None = None) -> None:
        """Put back what :meth:`saved_limits` read (v2: ``memory.max``, then ``memory.high``).

        Raises:
            BackendError: the kernel refused.
        """
        if self.version == 1:
            self.set_limit_mib(limit_mib)
            return
        try:
            cgroup_v2.set_limits(self.path, limit_mib, high_mib)
        except OSError as err:
            raise BackendError(f"{self.path}: cannot put memory.max/memory.high back "
                               f"({err.strerror})") from None

    def events(self) -> dict[str, int]:
        """Limit and OOM events: v2 ``memory.events``; v1 ``max`` from ``memory.failcnt``.

        Raises:
            BackendError: the file cannot be read.
        """
        if self.version == 1:
            return {"max": self.failcnt()}
        try:
            return cgroup_v2.events(self.path)
        except OSError as err:
            raise BackendError(f"{self.path}/memory.events: cannot read "
                               f"({err.strerror})") from None

    def stat(self) -> dict[str, int]:
        """``memory.stat`` as a dict (v1 ``pgpgin``, ``total_*``...; v2 ``workingset_*``...)."""
        out = {}
        for line in self._read("memory.stat", "memory.stat").splitlines():
            key, _, value = line.partition(" ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
        return out

    def failcnt(self) -> int:
        """Times the limit was hit (v1 ``memory.failcnt``; v2 ``max`` in memory.events)."""
        if self.version == 1:
            return int(self._read("memory.failcnt", "memory.failcnt"))
        for line in self._read("memory.events", "memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max":
                return int(value)
        return 0

    def set_limit_mib(self, limit_mib: float | None) -> None:
        """Set the limit (None: unlimited). v1 reclaims inside the write.

        Raises:
            BackendError: the kernel refused (EBUSY: the usage cannot be brought
                under the new limit).
        """
        if limit_mib is None:
            text = "-1" if self.version == 1 else "max"
        else:
            text = str(int(limit_mib * MIB) // 4096 * 4096)
        target = self._file("memory.limit_in_bytes", "memory.max")
        try:
            if self.version == 1:
                target.write_text(text + "\n")
            else:
                cgroup_v2.write(target, text)
        except OSError as err:
            why = ("the kernel could not reclaim enough to meet it"
                   if err.errno == errno.EBUSY else err.strerror)
            raise BackendError(f"{target}: cannot set {text} ({why})") from None

    def add(self, pid: int) -> None:
        """Move a process into the cgroup."""
        try:
            (self.path / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as err:
            raise BackendError(f"{self.path}/cgroup.procs: cannot add pid {pid} "
                               f"({err.strerror})") from None

    def remove(self) -> None:
        """Delete the (empty) cgroup directory; a missing one is fine."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError as err:
            raise BackendError(f"{self.path}: cannot remove cgroup ({err.strerror})") from None


def _memory_hierarchy(root: Path) -> tuple[Path, int] | None:
    """(mount point, version) of the memory controller, None if there is none."""
    found = cgroup_v2.hierarchy(root)
    if found.memory is None:
        return None
    return found.memory, 2 if found.kind == "v2" else 1


def _own_path(pid: int | str, version: int, proc: Path) -> str | None:
    """The cgroup path of a process in the memory hierarchy (from /proc/PID/cgroup)."""
    try:
        lines = (proc / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if (version == 1 and "memory" in controllers.split(",")) or (
                version == 2 and controllers == ""):
            return path
    return None


def memory_cgroup_of(pid: int, root: Path = DEFAULT_CGROUP_ROOT,
                     proc: Path = Path("/proc")) -> MemoryCgroup | None:
    """The memory cgroup a process is in (None: no memory controller, or the root)."""
    found = _memory_hierarchy(root)
    if found is None:
        return None
    mount, version = found
    rel = _own_path(pid, version, proc)
    if rel is None or rel.strip("/") == "" or not (mount / rel.strip("/")).is_dir():
        return None
    return MemoryCgroup(mount / rel.strip("/"), version)


def create_cgroup(name: str, root: Path = DEFAULT_CGROUP_ROOT,
                  proc: Path = Path("/proc")) -> MemoryCgroup:
    """Create a memory cgroup ``name`` under this process's own memory cgroup.

    Raises:
        BackendError: no usable memory controller, or the directory cannot be made.
    """
    path, version = new_cgroup_path(name, root, proc)
    try:
        path.mkdir(exist_ok=True)
    except OSError as err:
        raise BackendError(f"{path}: cannot create cgroup ({err.strerror})") from None
    return MemoryCgroup(path, version)


def new_cgroup_path(name: str, root: Path = DEFAULT_CGROUP_ROOT,
                    proc: Path = Path("/proc")) -> tuple[Path, int]:
    """Where :func:`create_cgroup` makes cgroup ``name``, and the hierarchy's version.

    Raises:
        BackendError: no usable memory controller.
    """
    found = _memory_hierarchy(root)
    if found is None:
        raise BackendError(f"{root}: no memory cgroup controller (neither v1 'memory' nor "
                           "'memory' in the v2 cgroup.controllers)")
    mount, version = found
    rel = (_own_path("self", version, proc) or "/").strip("/")
    return (mount / rel / name if rel else mount / name), version


def pressure_file(pid: int, cgroup: MemoryCgroup | None, root: Path = DEFAULT_CGROUP_ROOT,
                  proc: Path = Path("/proc")) -> Path | None:
    """The ``memory.pressure`` that describes ``pid``'s own cgroup, None if there is none.

    Its memory cgroup's file where the kernel has one there (v2, or v1 with PSI for
    cgroup v1), else the one of its cgroup in the unified hierarchy; never the
    root's, which is the whole host's (``/proc/pressure/memory`` says that).
    """
    if cgroup is not None and (cgroup.path / "memory.pressure").is_file():
        return cgroup.path / "memory.pressure"
    for unified in (root / "unified", root):
        if (unified / "cgroup.controllers").is_file():
            rel = (_own_path(pid, 2, proc) or "/").strip("/")
            if rel and (unified / rel / "memory.pressure").is_file():
                return unified / rel / "memory.pressure"
            return None
    return None


def create_pressure_cgroup(name: str, root: Path = DEFAULT_CGROUP_ROOT,
                           proc: Path = Path("/proc")) -> Path | None:
    """A cgroup ``name`` in a unified hierarchy mounted beside v1 controllers, for PSI.

    Every cgroup of the unified hierarchy has a ``memory.pressure``, whichever
    controllers it has, so a QEMU placed in one of its own has its memory stalls
    counted apart from the host's [LINUX-PSI]. Only where the memory controller is
    v1 and the unified hierarchy is a second mount (``root/unified``): where memory
    is v2, the QEMU's memory cgroup is that cgroup already. None where there is
    none to make (or it cannot be made): the guest's pressure is then not read.
    """
    path = new_pressure_path(name, root, proc)
    if path is None:
        return None
    try:
        path.mkdir(exist_ok=True)
    except OSError:
        return None
    return path


def new_pressure_path(name: str, root: Path = DEFAULT_CGROUP_ROOT,
                      proc: Path = Path("/proc")) -> Path | None:
    """Where :func:`create_pressure_cgroup` makes cgroup ``name`` (None: it makes none)."""
    unified = root / "unified"
    found = _memory_hierarchy(root)
    if not (unified / "cgroup.controllers").is_file() or (found and found[1] == 2):
        return None
    rel = (_own_path("self", 2, proc) or "/").strip("/")
    return unified / rel / name if rel else unified / name


def exclusive_to(cgroup: MemoryCgroup, pid: int) -> bool:
    """Whether ``pid`` is the only process in ``cgroup`` (so a limit squeezes only it)."""
    try:
        return set(cgroup.pids()) == {pid}
    except BackendError:
        return False


def on_tmpfs(path: Path) -> bool:
    """Whether ``path`` lives on tmpfs/ramfs (no disk for file-backed RAM to page to)."""
    best = ("", "")
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    target = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best[0]):
            best = (mnt, parts[2])
    return best[1] in ("tmpfs", "ramfs")
