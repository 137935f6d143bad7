"""What one guest kernel keeps: its pages, its processes, its time, its tallies.

What is modelled
----------------
A guest OS owns its "physical" memory (PPNs) and decides everything about it;
the hypervisor sees only which guest-physical pages are touched. Per PPN the
kernel keeps (arrays, never an object per page)::

    kind[ppn]        what the page is used for (``pages.PageKind``); how many
                     pages are of each kind is kept beside it (``kind_counts``,
                     ``core/counted.py``): every change of kind goes through
                     ``set_kind``
    proc[ppn]/vpn[ppn]   the process and virtual page that map it (reverse map;
                     meaningful while the page is ANON or FILE)
    dirty[ppn]       no clean copy on disk (written since loaded, or read back from swap)

and the reclaim policy (``hvmem.replacement``) keeps what it needs per page:
when it was mapped (FIFO), last used (LRU), or referenced since the clock hand
passed (CLOCK); random keeps nothing.

Times are kept per page as *stamps*, not nanoseconds: an int32 counter the
kernel advances each time it is given a later ``now_ns`` (the same time keeps
its stamp), so stamps order pages exactly as their times did and every victim
choice is the same, in half the memory of int64 nanoseconds (1 MiB per array
and GiB of guest memory instead of 2). Time never goes back, and more than
2**31 distinct times are refused rather than wrapped: see ``core/stamps.py``.

Beside them: the allocator's free and allocated lists (``allocator.py``), the
swap device (``swap.py``), the free-page watermarks (``reclaim.py``), the
processes (``process.py``), the memory bus and page-table store it was given,
and the vCPU's MMU under mmu fidelity. The kernel's parts (``fault.py``,
``reclaim.py``, ``access.py``) work on this state; ``GuestKernel``
(``kernel.py``) builds it and is the one the rest of hvmem calls.

Counters (pages or events): minor_faults, major_faults, swap_ins, swap_outs,
file_reads, file_drops, writebacks, invalid_accesses, oom_events, reclaim_runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hvmem.core.counted import assign_counted, counts_of
from hvmem.core.stamps import StampClock
from hvmem.guest.allocator import PageAllocator
from hvmem.guest.config import GuestConfig
from hvmem.guest.pages import PageKind
from hvmem.guest.process import Process
from hvmem.guest.swap import SwapDevice
from hvmem.hardware.guest_memory import GuestPhysicalMemory
from hvmem.hardware.mmu import Mmu
from hvmem.hardware.page_table import TableStore
from hvmem.hardware.timing import CostTable
from hvmem.replacement.base import ReplacementPolicy


@dataclass(slots=True)
class GuestCounters:
    """Event tallies of one guest kernel."""

    minor_faults: int = 0  # demand-zero faults
    major_faults: int = 0  # faults that read from disk (swap or file)
    swap_ins: int = 0  # pages read back from swap
    swap_outs: int = 0  # pages written to swap
    file_reads: int = 0  # file pages read from disk
    file_drops: int = 0  # clean file pages dropped by reclaim
    writebacks: int = 0  # dirty file pages written back by reclaim
    invalid_accesses: int = 0  # touches outside every mapping (dropped)
    oom_events: int = 0  # allocations that failed even after reclaim
    reclaim_runs: int = 0  # times reclaim ran
    refs: int = 0  # memory references served
    time_ns: float = 0.0  # time charged to the guest (faults, disk, host)


@dataclass(eq=False, repr=False)
class KernelState:
    """The state of one guest kernel (see the module essay); ``GuestKernel`` builds it."""

    config: GuestConfig
    memory: GuestPhysicalMemory  # the guest-physical memory bus (the hypervisor behind it)
    tables: TableStore  # holds the page tables (in guest-physical memory)
    rng: np.random.Generator  # the random reclaim policy's stream
    costs: CostTable
    # The vCPU's MMU when references go through it (mmu fidelity), for TLB
    # shootdowns; None in page fidelity.
    mmu: Mmu | None
    allocator: PageAllocator
    swap: SwapDevice
    kind: np.ndarray  # uint8 PageKind per page
    # The reverse map, meaningful while a page is ANON or FILE; zeroes elsewhere
    # (or whatever a freed page last held), so that pages never mapped cost nothing.
    proc: np.ndarray  # int16: up to 4094 processes
    vpn: np.ndarray  # int32, widened to int64 by a mapping above 2**31 pages (kernel.py)
    dirty: np.ndarray  # bool
    # The victim policy and its data by page: stamps (see now_ns) or reference
    # bits; zeroes are stamp 0, time 0, and cost nothing until written.
    replacement: ReplacementPolicy
    # Free-page watermarks (reclaim.linux_watermarks_pages).
    min_pages: int
    low_pages: int
    high_pages: int
    counters: GuestCounters = field(default_factory=GuestCounters)
    # Time as each access gives it, see now_ns.
    clock: StampClock = field(default_factory=lambda: StampClock("guest"))
    #: Called with a page count when an allocation fails; returns pages given
    #: back (the balloon driver's deflate-on-oom hook).
    oom_notifier: Callable[[int], int] | None = None
    processes: list[Process] = field(default_factory=list)
    # Pages of each kind, kept by set_kind (counted from ``kind`` when built).
    kind_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # Reclaims that may have evicted a page used at the current stamp (every
    # reclaim, when the policy keeps no use stamps): while it stays the same,
    # no page stamped as used now has left memory (``access.py``).
    young_evictions: int = 0

    def __post_init__(self) -> None:
        self.kind_counts = counts_of(self.kind, len(PageKind))

    def set_kind(self, ppns: np.ndarray, kind: PageKind) -> None:
        """Make ``ppns`` (indices) pages of ``kind``, the kept counts with them."""
        if ppns.size:
            assign_counted(self.kind, self.kind_counts, ppns, np.uint8(kind))

    @property
    def now_ns(self) -> int:
        """Simulated time of the accesses being served; it never goes back.

        Each later time gets the next ``now_stamp`` (the same time keeps its
        stamp); the reclaim policy stamps pages with it when they are mapped
        and used, so the order of stamps is the order of times and FIFO and
        LRU choose the same victims as with times in nanoseconds. Time 0, where
        the kernel starts, is stamp 0, as are pages never stamped.

        Raises:
            InvariantViolation: time going back, or more than 2**31 distinct
                times (see ``core/stamps.py``).
        """
        return self.clock.now_ns

    @now_ns.setter
    def now_ns(self, value: int) -> None:
        self.clock.advance(value)

    @property
    def now_stamp(self) -> int:
        """The stamp of ``now_ns``."""
        return self.clock.stamp
