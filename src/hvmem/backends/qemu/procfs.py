"""What Linux tells about its memory and about one QEMU process: /proc, read-only.

What is read, and why
---------------------
* ``/proc/meminfo``: the host's MemTotal, MemFree, MemAvailable, Buffers,
  Cached, Shmem and SwapTotal. MOM's host collector reads the same file
  ([MOM]: ``mem_free`` = MemFree + Buffers + Cached); SwapTotal decides
  whether an anonymous-RAM guest may be put under a memory limit at all.
* ``/proc/<pid>/status``: VmRSS and its split RssAnon / RssFile / RssShmem,
  and VmSwap.
* ``/proc/<pid>/smaps``: the one mapping that is the guest's RAM. With
  file-backed RAM it is the mapping of the ``mem-path`` file; with anonymous
  RAM it is the anonymous mapping whose size is the guest's RAM (plus QEMU's
  alignment slack). Its ``Rss`` is the guest memory the host backs now (ESX's
  *consumed* before sharing); the rest of VmRSS is QEMU's own memory (about
  83 MiB under TCG [QEMU-PROBE]), the VM's *overhead*. The TCG
  translation buffer is another large mapping, which is why the RAM mapping is
  matched by size and not taken as the largest one.
* ``/proc/<pid>/ksm_merging_pages``: pages of this process that KSM merged
  ([QEMU-PROBE]: 42-44k per guest for two identical guests). VmRSS
  does not drop when KSM merges, so sharing is accounted from these counters.
* ``/proc/<pid>/stat``: utime + stime, for the QEMU process's CPU share, and
  the process state: ``T`` (stopped by SIGSTOP) or ``t`` (traced) is a QEMU
  that will answer again once continued, ``Z``/``X`` or no entry a dead one.

* ``/proc/pressure/memory`` and a cgroup's ``memory.pressure``: pressure stall
  information [LINUX-PSI], two lines ``some avg10=0.12 avg60=... total=US``
  and ``full ...``: the share of the last 10 s in which some task (or every
  non-idle task) waited for memory, and the total stall in microseconds.

Every reader takes the ``/proc`` root as an argument so tests can point it at a
directory of fixture files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hvmem.errors import BackendError

__all__ = [
    "HostMemInfo",
    "Pressure",
    "ProcessMemory",
    "find_pid_by_arg",
    "process_state",
    "read_pressure",
    "read_meminfo",
    "read_process",
]

KIB_PER_MIB = 1024
# QEMU aligns anonymous guest RAM to 2 MiB and may reserve the alignment on top.
_RAM_SLACK_KIB = 4 * 1024


@dataclass(frozen=True, slots=True)
class HostMemInfo:
    """The host's memory figures (MiB) from /proc/meminfo."""

    total_mib: float
    free_mib: float
    available_mib: float
    buffers_mib: float
    cached_mib: float
    shmem_mib: float
    swap_total_mib: float


def _kib_fields(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0])
    return out


def read_meminfo(proc: Path = Path("/proc")) -> HostMemInfo:
    """Parse /proc/meminfo (MiB).

    Raises:
        BackendError: the file cannot be read or lacks MemTotal/MemFree.
    """
    try:
        fields = _kib_fields((proc / "meminfo").read_text())
    except OSError as err:
        raise BackendError(f"{proc / 'meminfo'}: cannot read ({err.strerror})") from None
    if "MemTotal" not in fields or "MemFree" not in fields:
        raise BackendError(f"{proc / 'meminfo'}: no MemTotal/MemFree lines")

    def mib(key: str, default: int = 0) -> float:
        return fields.get(key, default) / KIB_PER_MIB

    return HostMemInfo(
        total_mib=mib("MemTotal"), free_mib=mib("MemFree"),
        available_mib=mib("MemAvailable", fields["MemFree"]), buffers_mib=mib("Buffers"),
        cached_mib=mib("Cached"), shmem_mib=mib("Shmem"), swap_total_mib=mib("SwapTotal"))


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    """One QEMU process's memory (MiB) and CPU time.

    Attributes:
        rss_mib: VmRSS.
        rss_anon_mib: RssAnon (QEMU's own heap, plus anonymous guest RAM).
        swap_mib: VmSwap (anonymous pages in host swap).
        ram_rss_mib: resident part of the guest-RAM mapping (None: not found).
        ram_size_mib: size of that mapping.
        ram_file: the file behind the guest-RAM mapping (None: anonymous).
        ksm_merging_pages: pages KSM merged for this process (0 without KSM files).
        cpu_ticks: utime + stime in clock ticks.
    """

    rss_mib: float
    rss_anon_mib: float
    swap_mib: float
    ram_rss_mib: float | None
    ram_size_mib: float
    ram_file: str | None
    ksm_merging_pages: int
    cpu_ticks: int

    @property
    def overhead_mib(self) -> float:
        """QEMU's own resident memory: VmRSS less the guest RAM (never negative)."""
        return max(0.0, self.rss_mib - (self.ram_rss_mib or 0.0))


def _ram_mapping(smaps: str, ram_kib: int, ram_file: str | None) -> tuple[float | None, float]:
    """(Rss, size) in MiB of the guest-RAM mapping in an smaps text."""
    best: tuple[int, int] | None = None  # (rss_kib, size_kib)
    size_kib = 0
    candidate = False
    for line in smaps.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            start, _, end = head[0].partition("-")
            try:
                size_kib = (int(end, 16) - int(start, 16)) // 1024
            except ValueError:
                candidate = False
                continue
            path = head[5].strip() if len(head) > 5 else ""
            if ram_file is not None:
                candidate = path == ram_file or path == f"{ram_file} (deleted)"
            else:
                candidate = path == "" and ram_kib <= size_kib <= ram_kib + _RAM_SLACK_KIB
            continue
        if candidate and line.startswith("Rss:"):
            rss = int(line.split()[1])
            # Several mappings can qualify (QEMU may split one): keep the largest.
            if best is None or size_kib > best[1]:
                best = (rss, size_kib)
            candidate = False
    if best is None:
        return None, ram_kib / KIB_PER_MIB
    return best[0] / KIB_PER_MIB, best[1] / KIB_PER_MIB


def read_process(pid: int, ram_mib: float, ram_file: str | None = None,
                 proc: Path = Path("/proc")) -> ProcessMemory:
    """Read one QEMU process's memory and CPU counters.

    Args:
        pid: the QEMU process.
        ram_mib: the guest's RAM size (to recognise an anonymous RAM mapping).
        ram_file: the ``mem-path`` of file-backed RAM, None for anonymous RAM.
        proc: the /proc root.

    Raises:
        ProcessLookupError: the process is gone.
    """
    base = proc / str(pid)
    try:
        status = _kib_fields((base / "status").read_text())
        smaps = (base / "smaps").read_text()
        stat = (base / "stat").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    except ProcessLookupError:
        raise
    except OSError as err:
        raise BackendError(f"{base}: cannot read ({err.strerror})") from None
    try:
        merging = int((base / "ksm_merging_pages").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        merging = 0
    # Fields after the command name (which may hold spaces): state is field 3,
    # utime and stime are fields 14 and 15.
    after = stat.rpartition(")")[2].split()
    cpu = int(after[11]) + int(after[12]) if len(after) > 12 else 0
    ram_rss, ram_size = _ram_mapping(smaps, int(ram_mib * KIB_PER_MIB), ram_file)
    return ProcessMemory(
        rss_mib=status.get("VmRSS", 0) / KIB_PER_MIB,
        rss_anon_mib=status.get("RssAnon", 0) / KIB_PER_MIB,
        swap_mib=status.get("VmSwap", 0) / KIB_PER_MIB,
        ram_rss_mib=ram_rss, ram_size_mib=ram_size, ram_file=ram_file,
        ksm_merging_pages=merging, cpu_ticks=cpu)


@dataclass(frozen=True, slots=True)
class Pressure:
    """One reading of a PSI file: avg10 shares (0-1) and the total stall (µs)."""

    some_frac: float
    full_frac: float
    some_total_us: int


def read_pressure(path: Path) -> Pressure | None:
    """Parse a PSI file (``/proc/pressure/memory``, ``memory.pressure``); None: absent."""
    try:
        text = path.read_text()
    except OSError:
        return None
    values: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        kind, *fields = line.split()
        values[kind] = dict(f.split("=", 1) for f in fields if "=" in f)
    try:
        some = values["some"]
        full = values.get("full", {"avg10": "0"})
        return Pressure(float(some["avg10"]) / 100, float(full["avg10"]) / 100,
                        int(some.get("total", 0)))
    except (KeyError, ValueError):
        return None


#: Process states of a QEMU that is alive but cannot answer until continued.
STOPPED_STATES = frozenset("Tt")
#: Process states of a QEMU that has exited (a zombie waits only to be reaped).
DEAD_STATES = frozenset("ZX")


def process_state(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The state letter of ``/proc/PID/stat`` (``R``, ``S``, ``T``, ``Z``...); None: gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    after = stat.rpartition(")")[2].split()
    return after[0] if after else None


def find_pid_by_arg(needle: str, proc: Path = Path("/proc")) -> int | None:
    """The pid of the one process whose command line contains ``needle`` (None: none).

    Used to find the QEMU behind a QMP socket when no pid file names it: the
    socket path appears in QEMU's ``-qmp unix:PATH,...`` argument.

    Raises:
        BackendError: more than one process matches.
    """
    found = []
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        args = cmdline.split(b"\0")
        if any(needle.encode() in arg for arg in args[1:]) and b"qemu" in args[0]:
            found.append(int(entry.name))
    if len(found) > 1:
        raise BackendError(f"several QEMU processes mention {needle}: "
                           f"{', '.join(map(str, sorted(found)))}")
    return found[0] if found else None
