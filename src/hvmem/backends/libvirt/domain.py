"""One libvirt domain under control: its stats, its balloon and its memtune limits.

What is read
------------
``virDomainMemoryStats`` (KiB) gives what QEMU's balloon device and process
report, mapped onto a :class:`~hvmem.policy.samples.VmSample` as the QEMU
backend maps QMP and /proc (backends/qemu/sampling.py):

=================  ==============================================================
sample field       memoryStats (libvirt's names)
=================  ==============================================================
configured_mib     ``virDomainGetMaxMemory`` (``<memory>``)
balloon_mib        configured - ``actual`` (the balloon's current guest size;
                   without it, ``virDomainGetInfo``'s current memory)
consumed_mib       on this machine, the resident guest RAM of the QEMU process
                   (/proc/PID/smaps, as for QEMU) less its share of KSM's savings;
                   else ``rss`` (QEMU's resident memory, its own included), else
                   configured less the balloon
overhead_mib       on this machine, QEMU's resident memory besides guest RAM; else 0
guest_free_mib     ``unused`` (the guest's MemFree)
guest_available    ``usable`` (MemAvailable: what the balloon can take without the
                   guest swapping); libvirt's ``available`` is the guest's MemTotal
active_mib         configured - balloon - usable, as the QEMU backend's
=================  ==============================================================

The guest's own ``swap_in``, ``swap_out`` and ``major_fault`` are its paging,
not the host's: they are kept on the guest (``guest_*``) and not passed off as
hypervisor swapping. Guest stats arrive only when the balloon driver sends them,
every ``stats_interval_s`` once the period is set
(``virDomainSetMemoryStatsPeriod``, live; its original value, from the domain's
``<memballoon><stats period=.../>``, is put back on exit).

What is written
---------------
* the balloon by ``virDomainSetMemoryFlags(AFFECT_LIVE)``: the guest's new
  size, configured less the balloon target, never below the floor the QEMU
  backend keeps (the guest's used memory plus a reserve:
  ``balloon_ceiling_mib`` of backends/qemu/balloon.py); without guest stats a
  balloon may deflate but never grow;
* memtune by ``virDomainSetMemoryParameters(AFFECT_LIVE)``: ``hard_limit`` is
  the domain cgroup's limit (``memory.limit_in_bytes``, v2 ``memory.max``),
  which makes the host swap the guest's memory, the ESX swap target;
  ``soft_limit`` (v1 ``memory.soft_limit_in_bytes``, v2 ``memory.high``) holds
  the policy's target, what the kernel reclaims the domain toward first under
  host pressure; ``swap_hard_limit`` is recorded and restored with the other
  two, since libvirt checks the three together (``hard_limit`` may not exceed
  it). libvirt reports "unlimited" as :data:`UNLIMITED_KIB`.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from hvmem.backends.libvirt.connection import error_text, import_libvirt
from hvmem.backends.qemu.procfs import ProcessMemory
from hvmem.errors import BackendError
from hvmem.policy.samples import VmPlan

__all__ = ["MEMTUNE_KEYS", "UNLIMITED_KIB", "DomainSpec", "LibvirtGuest"]

KIB_PER_MIB = 1024
#: libvirt's "unlimited" for a memtune value (VIR_DOMAIN_MEMORY_PARAM_UNLIMITED, KiB).
UNLIMITED_KIB = 9007199254740991
MEMTUNE_KEYS = ("hard_limit", "soft_limit", "swap_hard_limit")


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """A domain to control, as the command line names it (the policy's settings)."""

    name: str
    shares: str | int = "normal"
    reservation_mib: float = 0.0
    limit_mib: float | None = None
    balloon_max_mib: float | None = None


class HardLimit:
    """The domain's memtune ``hard_limit``, where the QEMU backend has its cgroup limit."""

    def __init__(self, guest: LibvirtGuest) -> None:
        self._guest = guest

    def limit_mib(self) -> float | None:
        """The hard limit hvmem set (None: unlimited)."""
        kib = self._guest.memtune.get("hard_limit", UNLIMITED_KIB)
        return None if kib >= UNLIMITED_KIB else kib / KIB_PER_MIB


@dataclass
class LibvirtGuest:
    """Everything the backend knows and tracks about one controlled domain (MiB, seconds).

    The attributes the controller's rows read (``proc``, ``cgroup``,
    ``limit_set``, ``cpu_frac``, ``swap_out_mib_s``, ``stalled``) are those of the
    QEMU backend's guests, so one control loop records both.
    """

    spec: DomainSpec
    dom: Any
    uuid: str
    configured_mib: float
    shares: int
    balloon_max_mib: float
    has_balloon: bool
    original_balloon_mib: float
    original_memtune: dict[str, int]
    original_stats_period_s: int | None
    memtune: dict[str, int] = field(default_factory=dict)
    attached_s: float = 0.0
    # balloon tracking
    balloon_mib: float = 0.0
    last_set_mib: float = 0.0
    target_mib: float | None = None
    target_set_s: float = 0.0
    progress_mark_mib: float = 0.0
    progress_s: float = 0.0
    stuck_since_s: float | None = None
    gain_mark: tuple[float, float] | None = None  # (balloon, resident RAM) at an inflation
    balloon_set: bool = False
    refused: set[str] = field(default_factory=set)
    # readings
    stats_update: int | None = None
    rss_mib: float | None = None
    guest_free_mib: float | None = None
    guest_available_mib: float | None = None
    guest_used_mib: float | None = None
    guest_swap_in_mib: float = 0.0  # cumulative, as memoryStats counts
    guest_swap_out_mib: float = 0.0
    major_faults: int = 0
    guest_swap_in_mib_s: float = 0.0
    guest_swap_out_mib_s: float = 0.0
    last_swap: tuple[float, float, float] | None = None  # (time, in, out)
    paused_since_s: float | None = None
    limit_set: bool = False
    plan: VmPlan | None = None
    # the QEMU process, where the domain runs on this machine (backend.py); the rows
    # read it as they read a QEMU guest's
    pid: int | None = None
    proc: ProcessMemory | None = None
    saved_mib: float = 0.0  # this domain's share of KSM's savings
    last_cpu: tuple[float, int] | None = None
    cpu_frac: float = math.nan
    swap_out_mib_s: float = 0.0

    @property
    def name(self) -> str:
        """The domain's name."""
        return self.spec.name

    @property
    def stalled(self) -> bool:
        """The domain is paused: its readings are stale and its balloon is left alone."""
        return self.paused_since_s is not None

    @property
    def stuck(self) -> bool:
        """The balloon is held as stuck until its retry."""
        return self.stuck_since_s is not None

    @property
    def cgroup(self) -> HardLimit:
        """The hard limit, read as the QEMU backend's rows read a cgroup's limit."""
        return HardLimit(self)

    # -- reading ---------------------------------------------------------------------
    def read(self) -> None:
        """Refresh the balloon and the guest's stats from ``memoryStats``.

        Raises:
            libvirt.libvirtError: the domain is gone or does not answer.
        """
        stats = self.dom.memoryStats()
        actual = stats.get("actual")
        if actual is None:
            actual = self.dom.info()[2]
        self.balloon_mib = max(0.0, self.configured_mib - actual / KIB_PER_MIB)
        rss = stats.get("rss")
        self.rss_mib = rss / KIB_PER_MIB if rss is not None else None
        self.guest_swap_in_mib = stats.get("swap_in", 0) / KIB_PER_MIB
        self.guest_swap_out_mib = stats.get("swap_out", 0) / KIB_PER_MIB
        self.major_faults = stats.get("major_fault", 0)
        update = stats.get("last_update")
        if "usable" not in stats and "unused" not in stats:
            return  # no guest stats (yet): the driver has not sent any
        if update is not None and update == self.stats_update:
            return
        self.stats_update = update if update is not None else -1
        unused, usable = stats.get("unused"), stats.get("usable", stats.get("unused"))
        self.guest_free_mib = unused / KIB_PER_MIB if unused is not None else None
        self.guest_available_mib = usable / KIB_PER_MIB if usable is not None else None
        if self.guest_available_mib is not None:
            self.guest_used_mib = max(0.0, self.configured_mib - self.balloon_mib
                                      - self.guest_available_mib)

    def update_rates(self, now: float) -> None:
        """The guest's own swap-in and swap-out rates since the last reading (MiB/s)."""
        last = self.last_swap
        if last is not None and now > last[0]:
            self.guest_swap_in_mib_s = max(0.0, self.guest_swap_in_mib - last[1]) / (now - last[0])
            self.guest_swap_out_mib_s = max(0.0, self.guest_swap_out_mib - last[2]) / (
                now - last[0])
        self.last_swap = (now, self.guest_swap_in_mib, self.guest_swap_out_mib)

    @property
    def consumed_mib(self) -> float:
        """Machine memory backing the domain (module docs), less its KSM savings."""
        if self.proc is not None and self.proc.ram_rss_mib is not None:
            return max(0.0, self.proc.ram_rss_mib - self.saved_mib)
        if self.rss_mib is not None:
            return min(self.rss_mib, self.configured_mib)
        return max(0.0, self.configured_mib - self.balloon_mib)

    # -- writing ---------------------------------------------------------------------
    def set_balloon(self, balloon_mib: float) -> None:
        """Give the domain a balloon of ``balloon_mib`` (its live size is what is left).

        Raises:
            BackendError: libvirt refused (one line).
        """
        libvirt = import_libvirt()
        size_kib = int(round(self.configured_mib - balloon_mib)) * KIB_PER_MIB
        self.balloon_set = True  # before the call: a call that fails late may still land
        try:
            self.dom.setMemoryFlags(size_kib, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as err:
            raise BackendError(f"{self.name}: cannot set its memory to {size_kib // 1024} "
                               f"MiB ({error_text(err)})") from None
        self.last_set_mib = balloon_mib

    def set_memtune(self, values_kib: dict[str, int]) -> None:
        """Set memtune values (KiB), the others kept, in one call.

        Raises:
            BackendError: libvirt refused (one line).
        """
        libvirt = import_libvirt()
        # Only what changes: a driver without swap accounting refuses swap_hard_limit
        # even unchanged, and libvirt checks a new hard_limit against the current rest.
        changed = {k: v for k, v in values_kib.items() if self.memtune.get(k) != v}
        if not changed:
            return
        try:
            self.dom.setMemoryParameters(changed, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as err:
            raise BackendError(f"{self.name}: cannot set memtune "
                               f"{_describe(values_kib)} ({error_text(err)})") from None
        self.memtune = {**self.memtune, **changed}

    def set_stats_period(self, period_s: int) -> None:
        """Ask the balloon driver for stats every ``period_s`` (0: never), live."""
        libvirt = import_libvirt()
        try:
            self.dom.setMemoryStatsPeriod(int(period_s), libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as err:
            raise BackendError(f"{self.name}: cannot set the balloon stats period "
                               f"({error_text(err)})") from None


def _describe(values_kib: dict[str, int]) -> str:
    return ", ".join(f"{k}={'unlimited' if v >= UNLIMITED_KIB else f'{v // 1024} MiB'}"
                     for k, v in values_kib.items())


def read_memtune(dom: Any) -> dict[str, int]:
    """The domain's hard_limit, soft_limit and swap_hard_limit (KiB; unlimited as such).

    Raises:
        BackendError: libvirt cannot read them (one line).
    """
    libvirt = import_libvirt()
    try:
        params = dom.memoryParameters(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    except libvirt.libvirtError as err:
        raise BackendError(f"{dom.name()}: cannot read memtune ({error_text(err)})") from None
    return {k: int(params[k]) for k in MEMTUNE_KEYS if k in params}


def balloon_info(dom: Any) -> tuple[bool, int | None]:
    """Whether the domain has a virtio balloon, and its stats period (None: unset)."""
    root = ET.fromstring(dom.XMLDesc(0))
    balloon = root.find("./devices/memballoon")
    if balloon is None or balloon.get("model") in (None, "none"):
        return False, None
    stats = balloon.find("stats")
    period = stats.get("period") if stats is not None else None
    return True, int(period) if period is not None and period.isdigit() else None
