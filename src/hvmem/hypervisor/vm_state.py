r"""What the hypervisor keeps for one VM, and all a VM may reach beyond it.

What is modelled
----------------
Per VM the hypervisor keeps arrays indexed by guest-physical page (PPN): the
pmap (backing state and frame), the host's touch stamp of each page (for LRU
swap selection), the sampled pages still armed, and one bool per 2 MiB region
backed by a host large page with one more per page hashed inside one. Beside
them: the paging mode that keeps the hardware's view of the guest's
translations in step with the pmap, the swap file and the compression cache
(which share one array of put-aside page data: a page is swapped or
compressed, never both), and the VM's event tallies (``VmCounters``).

What a VM may reach, and why
----------------------------
A VM's own mechanisms (first touch, the memory bus, reclaim, large pages,
sampling traps) work on its state above and on three things of the host's::

    frames     MachineMemory   take and give back frames, store page data
    costs      CostTable       charge each fault its time
    clock      StampClock      the host's time, read to stamp touched pages

Everything else that crosses VMs goes through ``services`` (``HostServices``),
because only the host can do it:

* ``make_room``: when free frames run short, the host swaps pages out of the
  VM consuming the most, which may be another VM [OSDI02 §6.3];
* ``share``: the sharing table is host-wide, and promoting a hint remaps a
  page of whichever VM the hint came from [OSDI02 §4.2];
* ``leave_shared``: a shared frame whose last sharer leaves takes its entry
  out of that table and goes back to the free list;
* ``large_pages`` and ``large_page_breaking``: the host's settings, the
  latter changed by the host memory state each tick [YB-STATES6].

A VM never holds another VM, and it reaches the host only through these
calls (the host binds them to itself): what a VM can do beyond its own pages
is exactly the list above, so each mechanism module can be read for one VM.

Invariants: every per-page array has ``n_ppns`` entries and ``large`` one per
region (a partial last region included); ``n_armed`` is the number of pages
whose ``paging.trap`` is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hvmem.core.stamps import StampClock
from hvmem.hardware.frames import MachineMemory
from hvmem.hardware.mmu import Mmu
from hvmem.hardware.page_table import ENTRIES_PER_TABLE, INDEX_BITS, TableStore
from hvmem.hardware.timing import CostTable
from hvmem.hypervisor.pmap import Pmap
from hvmem.hypervisor.reclaim.compression import CompressionCache
from hvmem.hypervisor.reclaim.swap import HostSwapFile

#: Pages of a host large page (2 MiB) and the shift from a PPN to its region.
LARGE_PAGE_PAGES = ENTRIES_PER_TABLE
LARGE_PAGE_SHIFT = INDEX_BITS
#: Frames kept free beyond a request, for the table pages that mapping it may take.
EMERGENCY_SLACK_FRAMES = 64


class PagingMode(Protocol):
    """What the host needs of shadow and nested paging alike."""

    name: str

    def attach(self, mmu: Mmu) -> None:
        """Run ``mmu`` under this paging mode."""
        ...

    def on_backing_changed(self, ppns: np.ndarray, had_frames: bool) -> None:
        """Make the hardware's view follow pmap changes of ``ppns``.

        ``had_frames``: whether the pages had machine pages before, so some
        translation of them may be cached (never the case for pages backed
        for the first time, or brought back from swap or compression).
        """
        ...

    def table_frames(self) -> np.ndarray:
        """Machine frames this mode uses for its tables."""
        ...

    trap: np.ndarray  # per PPN: armed, its next access exits to the hypervisor

    def arm_traps(self, ppns: np.ndarray) -> None:
        """Take the hardware's mappings of ``ppns`` away so that their next access exits."""
        ...

    def clear_traps(self, ppns: np.ndarray) -> None:
        """Disarm ``ppns``; their mappings come back as the pmap says."""
        ...

    def run(self, mmu: Mmu, vpns: np.ndarray, is_write: np.ndarray, start: int,
            mpns_out: np.ndarray, counts: np.ndarray, steps: np.ndarray, record: bool
            ) -> tuple[int, int, int, int]:
        """Translate from ``start`` until done or a fault; (stop, status, ppn, n_steps)."""
        ...


class TouchSampler(Protocol):
    """What a VM reports its touched pages to (``sampling.ActiveMemorySampler``)."""

    sample: np.ndarray  # this period's sampled PPNs (empty before the first)
    slot_of_ppn: np.ndarray  # per PPN: its index in the sample, or -1
    touched: np.ndarray  # per sample slot: touched this period

    def observe(self, ppns: np.ndarray) -> None:
        """The guest touched ``ppns`` (any order, repeats allowed)."""
        ...


@dataclass(slots=True)
class HostServices:
    """What a VM may ask of the host it runs on (see the module essay).

    The host builds one and hands it to each of its VMs.
    """

    # Make sure n_frames (plus EMERGENCY_SLACK_FRAMES and table slack) are free,
    # swapping synchronously if not; never the requester's busy_ppns.
    make_room: Callable[[int, VmState | None, np.ndarray | None], None]
    # Offer distinct pages of a VM to page sharing; returns frames freed.
    share: Callable[[VmState, np.ndarray], int]
    # A VM's pages left these shared frames (copied: by a copy-on-write break).
    leave_shared: Callable[[VmState, np.ndarray, bool], None]
    # A VM with a cap (its limit) is about to back n_frames more: swap its own
    # pages first so it stays within the cap; never the busy_ppns.
    hold_to_cap: Callable[[VmState, int, np.ndarray | None], None] | None = None
    # Back guest memory with 2 MiB host pages where a whole region is touched first.
    large_pages: bool = False
    # How large pages are broken by memory state: "off", "lazy" or "active".
    large_page_breaking: str = "off"
    # Stamp touched pages (``VmState.last_touch_stamp``): only LRU swap selection
    # reads the stamps, and under random selection they were a scattered store
    # per touched page that nothing read (``Host.swap_selection`` sets it).
    touch_stamps: bool = True


@dataclass(slots=True)
class VmCounters:
    """Event tallies of the hypervisor for one VM."""

    emergency_swaps: int = 0  # pages swapped synchronously because the host ran out
    limit_swaps: int = 0  # pages swapped synchronously to keep the VM within its limit
    first_touch_faults: int = 0  # first touches served (a 4 KiB page each, or a large page)
    large_pages_backed: int = 0  # 2 MiB regions backed by one large page on first touch
    large_page_fallbacks: int = 0  # regions that qualified but got 4 KiB pages (no 2 MiB run)
    large_pages_broken: int = 0  # large pages split into 512 small ones, for any reason
    large_pages_broken_reclaim: int = 0  # ... because swap or compression chose a page of one
    large_pages_broken_state: int = 0  # ... by the host memory state (ESXi 6)
    large_pages_broken_release: int = 0  # ... because the guest gave part of one back
    large_pages_broken_other: int = 0  # ... by a remap or a matching stale sharing hint
    large_pages_released: int = 0  # large pages given back whole (balloon, power-off)
    zeroed_frames: int = 0  # frames zeroed on the way to this VM
    swap_in_faults: int = 0  # touches of pages in the swap file
    sampling_traps: int = 0  # first touches of sampled pages, trapped (mmu fidelity)
    fault_time_ns: float = 0.0  # time charged for hypervisor faults
    # ... of which, by cause (the rest is first touches and sampling traps):
    swap_in_time_ns: float = 0.0  # reading swapped pages back (device and exit)
    decompress_time_ns: float = 0.0  # decompressing pages (codec and exit)
    cow_time_ns: float = 0.0  # copy-on-write breaks (exit and copy)
    zero_time_ns: float = 0.0  # zeroing frames that came from another owner

    @property
    def reclaim_stall_ns(self) -> float:
        """Time spent bringing back swapped and compressed pages (what PSI counts)."""
        return self.swap_in_time_ns + self.decompress_time_ns


@dataclass
class VmState:
    """The hypervisor's state of one VM and the host things it reaches."""

    vm_id: int
    name: str
    n_ppns: int
    pmap: Pmap
    guest_tables: TableStore
    paging: PagingMode
    frames: MachineMemory
    costs: CostTable
    clock: StampClock  # the host's: stamp 0 means "never touched"
    services: HostServices
    swapfile: HostSwapFile
    zip: CompressionCache
    counters: VmCounters = field(default_factory=VmCounters)
    # When the host last saw each page touched (bus accesses and faults), for
    # LRU swap selection, as the host's touch stamp then (``clock.stamp``:
    # ordered as the times are, half the memory of nanoseconds); 0 for never.
    last_touch_stamp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    sampler: TouchSampler | None = None
    # The most machine memory the VM may hold, in pages (its limit), or None.
    cap_pages: int | None = None
    n_armed: int = 0  # sampled pages whose mappings still trap (mmu fidelity)
    # Per 2 MiB guest-physical region (ppn >> 9, a partial last one included):
    # backed by one host large page.
    large: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    # Per PPN: hashed by the scanner while inside its large page (meaningful
    # only while the region is large; cleared when a large page is made).
    lp_hashed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))

    def __post_init__(self) -> None:
        if self.last_touch_stamp.size != self.n_ppns:
            self.last_touch_stamp = np.zeros(self.n_ppns, dtype=np.int32)
        n_regions = -(-self.n_ppns // LARGE_PAGE_PAGES)
        if self.large.size != n_regions:
            self.large = np.zeros(n_regions, dtype=np.bool_)
        if self.lp_hashed.size != self.n_ppns:
            self.lp_hashed = np.zeros(self.n_ppns, dtype=np.bool_)

    @property
    def large_page_ppns(self) -> int:
        """Guest pages backed by large pages."""
        return int(np.count_nonzero(self.large)) * LARGE_PAGE_PAGES
