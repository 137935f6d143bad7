r"""The host: machine memory, the VMs on it, and the hypervisor's fault path.

What is modelled
----------------
The host owns machine memory (``hardware/frames.py``) and, per VM, a pmap and a
paging mode (shadow or nested) that keeps the hardware's view of the guest's
translations coherent with the guest's tables and the pmap. A VM gets no
machine memory up front: the first touch of a guest-physical page faults into
the hypervisor, which takes a frame off the host free list (zeroed first if it
last belonged to someone else), records it in the pmap and retries the
reference::

    guest reference --MMU--> TLB hit ............................... MPN
                          \-> walk --> BACKING_MISSING (ppn) --> host: first touch,
                                                                  pmap[ppn] = new MPN, retry
                               \-> GUEST_NOT_PRESENT -------------> back to the guest

Counters per VM: ``first_touch_faults`` (pages backed lazily), ``zeroed_frames``
(of those, frames zeroed because they came from another owner).

Active-memory sampling by traps
-------------------------------
Under mmu fidelity the sampler learns of touches as ESX does [OSDI02 §5.3]:
when a period starts, the sampled pages' mappings are taken from the hardware
(``arm_sampling``: nested leaves cleared and INVEPT, or shadow leaves zapped),
so the next access to each exits to the hypervisor, whether it comes through
the MMU or from the guest's own touches of the page over the memory bus. The
exit is counted (``sampling_traps``), charged as a hypervisor fault, reported
to the sampler, and the mapping comes back before the access is retried. Under
page fidelity nothing is armed and the sampler watches the memory bus.
(A sampled page inside a host large page keeps its 2 MiB leaf, so it traps
only from the bus, or once the large page is broken.)

A batch of references through the MMU may carry the data its writes store
(``translate(tokens=...)``): each stretch the kernel translated is stored
before the next fault is served, since serving it may move or reclaim pages.

Host large pages
----------------
With hardware-assisted paging ESX prefers to back guest memory with 2 MiB host
pages (``Mem.AllocGuestLargePage`` = 1): fewer nested-table levels to walk and
more reach per TLB entry, paid for in memory, because a large page is never
shared and is backed whole [KB1021095]. With shadow paging ESX backs with
4 KiB pages, so the host refuses large pages there. The model, per VM:

* ``HostVm.large[region]``, one bool per aligned 512-page (2 MiB) guest-physical
  region (``ppn >> 9``): the region is backed by one large page. Its 512 pages
  are PRIVATE and page ``i`` of it sits in frame ``base + i`` of a 2 MiB-aligned
  run; the nested table maps it with one PS leaf (``paging/nested.py``).
* First touch: a touched page whose whole region is UNBACKED (nothing backed,
  ballooned, compressed or swapped there; a partial region at the end of memory
  never qualifies) gets the whole region at once: one fault, 512 frames, 2 MiB
  more consumed, whether the guest uses the rest or not.
* Contiguity: a large page needs a 2 MiB-aligned block of 512 free frames
  (``MachineMemory.alloc_runs``, taken from the top of memory while 4 KiB pages
  come off the free list's low end). Nothing is swapped to make room for one:
  with no such block, or not enough free memory beside it, the region is backed
  with 4 KiB pages and counted in ``large_page_fallbacks``. Freed and shared
  frames fragment memory over time, so fallbacks rise as a host fills up.
  Large pages are never formed again from small ones (no promotion).
* Sharing: the scanner still visits the pages of a large page and hashes them
  (ESX keeps the 4 KiB sub-pages' hashes; here ``lp_hashed``, one bit per page)
  but shares none of them; they are counted as ``large_pages`` in the sharing
  counters.
* Breaking (``break_large_pages``): the region becomes 512 ordinary private
  pages, no data moves, the nested table maps them at 4 KiB again. ESX breaks
  (a) when the swap or compression path picks a page of a large page, and then
  first offers to sharing the sub-pages it has hashes for [KB1021095]; (b) in
  ESXi 6 by memory state: below the HIGH threshold a large page the scanner
  visits is broken and the visited page (and the hashed ones) offered, the rest
  waiting for the scanner ("wait for the next TPS run"); in CLEAR and below
  large pages are broken actively, ``LARGE_PAGE_BREAKS_PER_S`` per VM, and TPS
  is called on all their pages at once [YB-STATES6][YB-LP6]
  (``Host.break_large_pages_for_state``); (c) when the guest gives part of one
  back (balloon, free page reporting); a large page given back whole (d: a VM
  powered off) is dropped whole and counted in ``large_pages_released``.
  Remapping a page, or a stale sharing hint that still names a frame now inside
  a large page and matches, breaks it too (``large_pages_broken_other``).

Invariants (``check_invariants``): every frame is free, owned by exactly one VM
through exactly one PRIVATE pmap entry, or a hypervisor table page; no VM's pmap
names a frame another VM owns; a shared frame's refcount is its sharers and the
sharing table holds it once, any other frame's is 1; only private frames name a
guest page; every page of a large region is PRIVATE in the aligned frames of its
run, which the nested table maps with one PS leaf.

References: Waldspurger, OSDI 2002 §2 (pmap), footnote 2 (zeroing); VMware KB
1021095 (TPS and large pages); [YB-STATES6][YB-LP6] (ESXi 6 states), keys of
esx-memory.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
from numba import njit

from hvmem.core.sets import sorted_unique
from hvmem.core.stamps import StampClock
from hvmem.errors import ConfigError, InvariantViolation, OutOfMemoryError
from hvmem.hardware.frames import FREE, HYPERVISOR, MAX_OWNERS, MachineMemory
from hvmem.hardware.mmu import Fault, Mmu, TranslationBatch, new_counters
from hvmem.hardware.page_table import (
    ENTRIES_PER_TABLE,
    INDEX_BITS,
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_PRESENT,
    TableStore,
    leaf_entries_of,
)
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hardware.walker import FaultKind
from hvmem.hypervisor.paging.nested import NestedPaging
from hvmem.hypervisor.paging.shadow import ShadowPaging
from hvmem.hypervisor.pmap import STATE_PRIVATE, STATE_SHARED, Backing, Pmap
from hvmem.hypervisor.reclaim.compression import CompressionCache
from hvmem.hypervisor.reclaim.sharing import (
    A_ALREADY,
    A_FALSE,
    A_HINT,
    A_NOT_BACKED,
    A_PAGE_TABLE,
    A_PROMOTE,
    A_SHARE,
    A_STALE,
    N_ACTIONS,
    SALTING_MODES,
    SHARED_OWNER,
    SharingTable,
    default_scan_rate_pages_per_s,
    scan_kernel,
)
from hvmem.hypervisor.reclaim.swap import HostSwapFile
from hvmem.hypervisor.sampling import ActiveMemorySampler

PagingName = Literal["shadow", "nested"]
#: Frames kept free beyond a request, for the table pages that mapping it may take.
EMERGENCY_SLACK_FRAMES = 64
PAGING_MODES = ("shadow", "nested")
#: A backing fault met in a batch of references is served together with those
#: the next SERVE_AHEAD_REFS references would take, up to SERVE_AHEAD_PAGES
#: pages (Linux's SWAP_CLUSTER_MAX): one exit to Python per cluster, not per page.
SERVE_AHEAD_REFS = 4096
SERVE_AHEAD_PAGES = 32
#: Pages of a host large page (2 MiB) and the shift from a PPN to its region.
LARGE_PAGE_PAGES = ENTRIES_PER_TABLE
LARGE_PAGE_SHIFT = INDEX_BITS
#: Large pages broken per VM and second in CLEAR and below. No rate is published;
#: 64 (128 MiB/s per VM) splits a 4 GiB VM in about half a minute, well before a
#: host that keeps falling reaches SOFT at 64 % of minFree.
LARGE_PAGE_BREAKS_PER_S = 64
#: Free frames a split leaves alone: splitting a large page takes a nested table page,
#: so under pressure only as many are split at once as free frames allow.
LARGE_PAGE_SPLIT_RESERVE = 8
#: How a host breaks large pages by memory state: not at all, when the scanner
#: visits them (ESXi 6 below HIGH), or actively as well (ESXi 6 CLEAR and below).
LARGE_PAGE_BREAKING = ("off", "lazy", "active")


class PagingMode(Protocol):
    """What the host needs of shadow and nested paging alike."""

    name: str

    def attach(self, mmu: Mmu) -> None:
        """Run ``mmu`` under this paging mode."""
        ...

    def on_backing_changed(self, ppns: np.ndarray, old_had_mpn: np.ndarray) -> None:
        """Make the hardware's view follow pmap changes of ``ppns``."""
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


@dataclass(slots=True)
class VmCounters:
    """Event tallies of the hypervisor for one VM."""

    emergency_swaps: int = 0  # pages swapped synchronously because the host ran out
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


@dataclass
class HostVm:
    """The hypervisor's side of one VM."""

    vm_id: int
    name: str
    n_ppns: int
    pmap: Pmap
    guest_tables: TableStore
    paging: PagingMode
    host: Host
    swapfile: HostSwapFile
    zip: CompressionCache
    counters: VmCounters = field(default_factory=VmCounters)
    # When the host last saw each page touched (bus accesses and faults), for
    # LRU swap selection, as the host's touch stamp then (``Host.touch_stamp``:
    # ordered as the times are, half the memory of nanoseconds); 0 for never.
    last_touch_stamp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    sampler: ActiveMemorySampler | None = None
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

    def back_pages(self, ppns: np.ndarray) -> np.ndarray:
        """Touch ``ppns``: back the ones without a frame; returns their MPNs, in order.

        ``ppns`` may repeat and come in any order. Most touches find their
        pages backed already, so that case costs two gathers; only pages with
        no frame are sorted out and served (first touch, swap-in, decompression).
        """
        ppns = np.asarray(ppns, dtype=np.int64)
        self._back(ppns)
        return self.pmap.mpn[ppns]

    def _back(self, ppns: np.ndarray) -> None:
        """:meth:`back_pages` without gathering the MPNs (``ppns`` int64)."""
        missing = np.empty(ppns.size, dtype=np.int64)
        n_missing = _select_pages(ppns, self.pmap.state, False, missing)
        if n_missing < 0:
            raise ConfigError(f"{self.name}: guest-physical page outside 0..{self.n_ppns - 1}")
        if n_missing:
            self._back_missing(sorted_unique(missing[:n_missing]), busy_ppns=ppns)

    def _back_missing(self, ppns: np.ndarray, busy_ppns: np.ndarray) -> None:
        """Give distinct, sorted, frameless ``ppns`` a frame each (never evicting ``busy_ppns``)."""
        state = self.pmap.state[ppns]
        self.host.make_room(ppns.size, self, busy_ppns)
        swapped = ppns[state == Backing.SWAPPED]
        if swapped.size:
            self._swap_in(swapped)
        compressed = ppns[state == Backing.COMPRESSED]
        if compressed.size:
            self._decompress(compressed)
        todo = ppns[(state == Backing.UNBACKED) | (state == Backing.BALLOONED)]
        if todo.size and self.host.large_pages:
            todo = self._back_large(todo)
        if todo.size:
            frames = self.host.frames
            zeroed_before = frames.counters.zeroings
            mpns = frames.alloc(self.vm_id, todo.size)
            zeroed = frames.counters.zeroings - zeroed_before
            frames.ppn[mpns] = todo
            self.pmap.back(todo, mpns, Backing.PRIVATE)
            self.paging.on_backing_changed(todo, np.zeros(todo.size, dtype=bool))
            costs = self.host.costs
            self.counters.first_touch_faults += todo.size
            self.counters.zeroed_frames += zeroed
            self.counters.fault_time_ns += (
                todo.size * costs.hypervisor_fault_ns + zeroed * costs.zero_page_ns
            )

    def _back_large(self, todo: np.ndarray) -> np.ndarray:
        """Back the wholly unbacked regions of first-touched ``todo`` with large pages.

        Returns the pages still to back with 4 KiB frames.
        """
        whole = self.n_ppns >> LARGE_PAGE_SHIFT
        regions = sorted_unique(todo >> LARGE_PAGE_SHIFT)
        regions = regions[regions < whole]
        if regions.size == 0:
            return todo
        states = self.pmap.state[: whole << LARGE_PAGE_SHIFT].reshape(whole, LARGE_PAGE_PAGES)
        regions = regions[(states[regions] == Backing.UNBACKED).all(axis=1)]
        if regions.size == 0:
            return todo
        frames, costs = self.host.frames, self.host.costs
        # Only what is free beyond the small pages still to back and make_room's slack:
        # a large page is a preference, never a reason to swap.
        spare = frames.n_free - todo.size - EMERGENCY_SLACK_FRAMES - todo.size // 256
        zeroed_before = frames.counters.zeroings
        bases = frames.alloc_runs(self.vm_id, min(regions.size, max(0, spare) // LARGE_PAGE_PAGES),
                                  LARGE_PAGE_PAGES)
        zeroed = frames.counters.zeroings - zeroed_before
        self.counters.large_page_fallbacks += int(regions.size - bases.size)
        if bases.size == 0:
            return todo
        got = regions[: bases.size]
        pages = self._pages_of(got)
        mpns = (bases[:, None] + np.arange(LARGE_PAGE_PAGES)).ravel()
        frames.ppn[mpns] = pages
        self.pmap.back(pages, mpns, Backing.PRIVATE)
        self.large[got] = True
        self.lp_hashed[pages] = False
        self._nested().map_large(got, bases)
        self.counters.large_pages_backed += int(got.size)
        self.counters.first_touch_faults += int(got.size)
        self.counters.zeroed_frames += zeroed
        self.counters.fault_time_ns += got.size * costs.hypervisor_fault_ns + zeroed * (
            costs.zero_page_ns)
        return todo[~self.large[todo >> LARGE_PAGE_SHIFT]]

    @staticmethod
    def _pages_of(regions: np.ndarray) -> np.ndarray:
        """Every page of 2 MiB ``regions``, in order."""
        return (regions[:, None] * LARGE_PAGE_PAGES + np.arange(LARGE_PAGE_PAGES)).ravel()

    def _hashed_pages(self, regions: np.ndarray) -> np.ndarray:
        """The pages of just-broken ``regions`` the scanner hashed while they were large."""
        pages = self._pages_of(regions)
        return pages[self.lp_hashed[pages]]

    def _nested(self) -> NestedPaging:
        """The nested paging mode: large pages exist only under it."""
        if not isinstance(self.paging, NestedPaging):
            raise InvariantViolation(f"{self.name}: large pages need nested paging")
        return self.paging

    def break_large_pages(self, regions: np.ndarray, reason: str = "other",
                          bounded: bool = False) -> int:
        """Split large pages into 512 private 4 KiB pages each; returns how many were split.

        ``regions`` are 2 MiB region numbers (``ppn >> 9``); those not backed by a
        large page are ignored. No data moves: each page keeps its frame, the
        nested table maps the pages one by one again (a table page each), and
        from now on each is an ordinary page that can be shared, compressed,
        swapped or released. ``reason`` ("reclaim", "state", "release" or
        "other") picks the counter. ``bounded``: split only the first ones that
        the free frames (less ``LARGE_PAGE_SPLIT_RESERVE``) have table pages for,
        so that reclaiming under pressure never fails for want of one.
        """
        regions = np.unique(np.asarray(regions, dtype=np.int64))
        regions = regions[self.large[regions]]
        if bounded:
            regions = regions[: max(0, self.host.frames.n_free - LARGE_PAGE_SPLIT_RESERVE)]
        if regions.size == 0:
            return 0
        self.large[regions] = False
        self._nested().split_large(regions)
        n = int(regions.size)
        c = self.counters
        c.large_pages_broken += n
        if reason == "reclaim":
            c.large_pages_broken_reclaim += n
        elif reason == "state":
            c.large_pages_broken_state += n
        elif reason == "release":
            c.large_pages_broken_release += n
        else:
            c.large_pages_broken_other += n
        return n

    def _break_covering(self, ppns: np.ndarray, reason: str, bounded: bool = False
                        ) -> np.ndarray:
        """Break the large pages holding any of ``ppns``; returns the regions broken.

        ``bounded`` as in :meth:`break_large_pages`: some may stay whole.
        """
        if ppns.size == 0 or not self.large.any():
            return np.zeros(0, dtype=np.int64)
        regions = sorted_unique(ppns >> LARGE_PAGE_SHIFT)
        regions = regions[self.large[regions]]
        self.break_large_pages(regions, reason, bounded)
        return regions[~self.large[regions]]

    def _swap_in(self, ppns: np.ndarray) -> None:
        """Bring swapped pages back into fresh frames (the guest touched them)."""
        frames = self.host.frames
        zeroed_before = frames.counters.zeroings
        mpns = frames.alloc(self.vm_id, ppns.size)
        # A frame from another VM is scrubbed before the page's data lands in it.
        self.counters.zeroed_frames += frames.counters.zeroings - zeroed_before
        before = self.swapfile.counters.time_ns
        frames.content[mpns] = self.swapfile.load(ppns)
        frames.ppn[mpns] = ppns
        self.pmap.back(ppns, mpns, Backing.PRIVATE)
        self.paging.on_backing_changed(ppns, np.zeros(ppns.size, dtype=bool))
        self.counters.swap_in_faults += int(ppns.size)
        device_ns = self.swapfile.counters.time_ns - before
        self.counters.fault_time_ns += device_ns + ppns.size * self.host.costs.hypervisor_fault_ns

    def choose_victims(self, n_pages: int, selection: str, rng: np.random.Generator
                       ) -> np.ndarray:
        """Up to ``n_pages`` private pages to take away: "random" (as ESX) or "lru"."""
        candidates = np.flatnonzero(self.pmap.state == Backing.PRIVATE)
        if n_pages <= 0 or candidates.size == 0:
            return np.zeros(0, dtype=np.int64)
        if candidates.size > n_pages:
            if selection == "random":
                # A mask keeps PPN order without sorting the draw.
                chosen = np.zeros(candidates.size, dtype=np.bool_)
                chosen[rng.choice(candidates.size, n_pages, replace=False)] = True
                candidates = candidates[chosen]
            else:
                order = np.argsort(self.last_touch_stamp[candidates], kind="stable")
                candidates = np.sort(candidates[order[:n_pages]])
        return candidates

    def swap_out(self, n_pages: int, selection: str, rng: np.random.Generator) -> int:
        """Page out up to ``n_pages`` private pages to the swap file; returns pages freed."""
        victims = self.choose_victims(n_pages, selection, rng)
        self._swap_pages(victims)
        return int(victims.size)

    def _swap_pages(self, ppns: np.ndarray) -> None:
        """Write pages to the swap file and drop their frames.

        A shared frame goes back to the free list only once its last sharer has left.
        """
        if ppns.size == 0:
            return
        if self.large.any():
            # A large page is never swapped whole: split the ones holding victims as
            # free frames allow (a table page each), swap their victims (at least a
            # frame back each) and go on; small-page victims go first.
            in_large = self.large[ppns >> LARGE_PAGE_SHIFT]
            if np.any(in_large):
                self._swap_pages(ppns[~in_large])
                rest = ppns[in_large]
                while rest.size:
                    broken = self._break_covering(rest, "reclaim", bounded=True)
                    if broken.size == 0:
                        return  # no frame left even for a table page: these stay
                    done = np.isin(rest >> LARGE_PAGE_SHIFT, broken)
                    self._swap_pages(rest[done])
                    rest = rest[~done]
                return
        frames = self.host.frames
        shared = self.pmap.state[ppns] == Backing.SHARED
        old = self.pmap.mpn[ppns]
        self.swapfile.store(ppns, frames.content[old])
        self.pmap.unback(ppns, Backing.SWAPPED)
        self.paging.on_backing_changed(ppns, np.ones(ppns.size, dtype=bool))
        if np.any(shared):
            self._drop_sharers(old[shared])
        frames.free(old[~shared])

    def reclaim(self, n_pages: int, selection: str, rng: np.random.Generator,
                compress: bool = True, share_first: bool = True) -> dict[str, int]:
        """Take up to ``n_pages`` away the ESX way: share, else compress, else swap.

        Victims are chosen as for swapping; a victim inside a large page breaks
        it, and the sub-pages the scanner had hashed are offered to sharing
        with the victims [KB1021095]. Each victim is first offered to page
        sharing (share-before-swap), then kept compressed if it compresses to
        2 KiB or less and the cache has room (evicting its oldest pages to swap
        if not), else written to the swap file.

        Returns:
            Pages reclaimed by each mechanism: {"shared", "compressed", "swapped"}
            (frames returned; compression's own frames are netted out).
        """
        victims = self.choose_victims(n_pages, selection, rng)
        done = {"shared": 0, "compressed": 0, "swapped": 0}
        if victims.size == 0:
            return done
        broken = self._break_covering(victims, "reclaim", bounded=True)
        # Victims in large pages there was no table page to split for wait for next time.
        victims = victims[~self.large[victims >> LARGE_PAGE_SHIFT]]
        if share_first:
            offer = victims if broken.size == 0 else np.union1d(victims,
                                                                 self._hashed_pages(broken))
            done["shared"] = self.share_scan(offer)
            victims = victims[self.pmap.state[victims] == Backing.PRIVATE]
        if compress and victims.size:
            frames, zip_cache = self.host.frames, self.zip
            tokens = frames.content[self.pmap.mpn[victims]]
            slots = zip_cache.slot_for(tokens)
            keep = slots > 0
            zip_cache.counters.rejected += int(np.count_nonzero(~keep))
            kept = victims[keep]
            if kept.size:
                # Room: evict the cache's oldest pages to swap.
                evict = zip_cache.victims_for_room(int(slots[keep].sum()))
                if evict.size:
                    self._zip_to_swap(evict)
                fits = np.cumsum(slots[keep]) <= zip_cache.capacity_bytes - zip_cache.used_bytes
                kept = kept[fits]
                old = self.pmap.mpn[kept]
                zip_cache.store(kept, frames.content[old], slots[keep][fits])
                self.pmap.unback(kept, Backing.COMPRESSED)
                self.paging.on_backing_changed(kept, np.ones(kept.size, dtype=bool))
                frames.free(old)
                before = zip_cache.frames.size
                self._fit_zip_frames()
                done["compressed"] = int(kept.size) - (zip_cache.frames.size - before)
            victims = victims[self.pmap.state[victims] == Backing.PRIVATE]
        self._swap_pages(victims)
        done["swapped"] = int(victims.size)
        return done

    def _zip_to_swap(self, ppns: np.ndarray) -> None:
        """Move compressed pages to the swap file (cache eviction)."""
        self.swapfile.store(ppns, self.zip.take(ppns))
        self.pmap.state[ppns] = Backing.SWAPPED
        self.zip.counters.evicted += int(ppns.size)
        self._fit_zip_frames()

    def _fit_zip_frames(self) -> None:
        """Hold exactly the frames the compression cache's slots need."""
        zip_cache, frames = self.zip, self.host.frames
        need = zip_cache.frames_needed
        have = zip_cache.frames.size
        if need > have:
            zip_cache.frames = np.concatenate([zip_cache.frames,
                                               frames.alloc(self.vm_id, need - have)])
        elif need < have:
            frames.free(zip_cache.frames[need:])
            zip_cache.frames = zip_cache.frames[:need]

    def _decompress(self, ppns: np.ndarray) -> None:
        """Touched compressed pages come back into fresh frames."""
        frames = self.host.frames
        tokens = self.zip.take(ppns)
        self._fit_zip_frames()
        zeroed_before = frames.counters.zeroings
        mpns = frames.alloc(self.vm_id, ppns.size)
        self.counters.zeroed_frames += frames.counters.zeroings - zeroed_before
        frames.content[mpns] = tokens
        frames.ppn[mpns] = ppns
        self.pmap.back(ppns, mpns, Backing.PRIVATE)
        self.paging.on_backing_changed(ppns, np.zeros(ppns.size, dtype=bool))
        self.zip.counters.decompressed += int(ppns.size)
        costs = self.host.costs
        self.counters.fault_time_ns += ppns.size * (costs.decompress_ns
                                                    + costs.hypervisor_fault_ns)

    # -- the guest's memory bus (hardware.guest_memory.GuestPhysicalMemory) ---------
    def read_pages(self, ppns: np.ndarray, for_swap_out: bool = False
                   ) -> tuple[np.ndarray, float]:
        """Contents of guest pages, bringing back any the host had taken away.

        An unbacked page is backed first (it reads zeroes); a swapped one is
        read back from the swap file. ``for_swap_out`` says the guest reads the
        pages to write them to its own swap: a swapped one is double paging.
        """
        ppns = np.asarray(ppns, dtype=np.int64)
        if for_swap_out:
            self.swapfile.counters.double_paging += int(
                np.count_nonzero(self.pmap.state[ppns] == Backing.SWAPPED)
            )
        before = self.counters.fault_time_ns
        mpns = self.back_pages(ppns)
        self._touched(ppns)
        return self.host.frames.content[mpns].copy(), self.counters.fault_time_ns - before

    def write_pages(self, ppns: np.ndarray, tokens: np.ndarray) -> float:
        """Store contents into guest pages, backing unbacked ones first."""
        ppns = np.asarray(ppns, dtype=np.int64)
        before = self.counters.fault_time_ns
        if not self._bus_fast(ppns, writes=True):
            shared = np.empty(ppns.size, dtype=np.int64)
            n_shared = _select_pages(ppns, self.pmap.state, True, shared)
            if n_shared > 0:
                self.break_cow(sorted_unique(shared[:n_shared]))
            self._back(ppns)
        self._touch_backed(ppns, np.ascontiguousarray(tokens, dtype=np.uint64), True)
        return self.counters.fault_time_ns - before

    def touch_pages(self, ppns: np.ndarray) -> float:
        """Read guest pages for their own sake (the contents are not wanted).

        The same as :meth:`read_pages` without gathering the tokens; returns
        the time charged.
        """
        ppns = np.asarray(ppns, dtype=np.int64)
        before = self.counters.fault_time_ns
        if not self._bus_fast(ppns, writes=False):
            self._back(ppns)
        self._touch_backed(ppns, _NO_TOKENS, False)
        return self.counters.fault_time_ns - before

    def _touch_backed(self, ppns: np.ndarray, tokens: np.ndarray, store: bool) -> None:
        """Touch ``ppns``, all backed (private, if ``store``): store ``tokens``, observe."""
        if self.n_armed:  # some touches trap (mmu fidelity's sampling)
            if store:
                self.host.frames.content[self.pmap.mpn[ppns]] = tokens
            self._touched(ppns)
        else:
            self._bus_touch(ppns, tokens, store)

    def _bus_fast(self, ppns: np.ndarray, writes: bool) -> bool:
        """Whether touching ``ppns`` needs no service.

        That is: all in range and backed (private, if ``writes``), none armed.
        """
        if self.n_armed or ppns.size == 0:
            return False
        n_shared, n_missing = _bus_check(ppns, self.pmap.state)
        if n_shared < 0 or n_missing:
            return False
        return n_shared == 0 or not writes

    def _bus_touch(self, ppns: np.ndarray, tokens: np.ndarray, store: bool) -> None:
        """Touch backed ``ppns`` (nothing armed) in one pass.

        Stores ``tokens`` if ``store``, stamps the pages for LRU and reports
        them to the sampler.
        """
        sampler = self.sampler
        if sampler is not None and sampler.sample.size:
            slot_of_ppn, touched = sampler.slot_of_ppn, sampler.touched
        else:
            slot_of_ppn, touched = _NO_SLOTS, _NO_TOUCHED
        _bus_touch_kernel(ppns, tokens, store, self.pmap.mpn, self.host.frames.content,
                          self.last_touch_stamp, self.host.touch_stamp, slot_of_ppn, touched)

    def _serve_ahead(self, mmu: Mmu, vpns: np.ndarray, at: int, ppn: int) -> None:
        """Serve the backing fault of ``vpns[at]`` (on ``ppn``) with those just ahead of it.

        The guest's table (read at its CR3, as the shadow pager reads it) names
        the pages the next references touch; those without a machine page and
        not armed by sampling are served now, in the order they come, up to a
        cluster. Each is counted and charged as it would be alone.
        """
        window = vpns[at + 1:at + SERVE_AHEAD_REFS]
        ptes = leaf_entries_of(self.guest_tables.entries, mmu.guest_root, window)
        ptes = ptes[(ptes & PTE_PRESENT) != 0]
        ahead = ((ptes & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
        ahead = ahead[(ahead < self.n_ppns) & (ahead != ppn)]
        state = self.pmap.state[ahead]
        ahead = ahead[(state != Backing.PRIVATE) & (state != Backing.SHARED)
                      & ~self.paging.trap[ahead]]
        _, first = np.unique(ahead, return_index=True)
        ahead = ahead[np.sort(first)][:SERVE_AHEAD_PAGES]
        self.back_pages(np.concatenate([np.array([ppn], dtype=np.int64), ahead]))

    # -- active-memory sampling by traps (mmu fidelity) ------------------------------
    def arm_sampling(self, ppns: np.ndarray) -> None:
        """A sampling period starts: make the next touch of each of ``ppns`` trap.

        Pages of the previous sample never touched are disarmed first (their
        mappings come back), so only this period's sample traps.
        """
        if self.n_armed:
            self.paging.clear_traps(np.flatnonzero(self.paging.trap))
        ppns = sorted_unique(np.asarray(ppns, dtype=np.int64))
        self.paging.arm_traps(ppns)
        self.n_armed = int(ppns.size)

    def _sampling_trap(self, ppns: np.ndarray) -> None:
        """Armed ``ppns`` (distinct) were touched: count, charge, report, restore."""
        self.paging.clear_traps(ppns)
        self.n_armed -= int(ppns.size)
        self.counters.sampling_traps += int(ppns.size)
        self.counters.fault_time_ns += ppns.size * self.host.costs.hypervisor_fault_ns
        self.last_touch_stamp[ppns] = self.host.touch_stamp
        if self.sampler is not None:
            self.sampler.observe(ppns)

    def _touched(self, ppns: np.ndarray) -> None:
        if self.n_armed:  # the guest's own touch of an armed page traps as well
            armed = ppns[self.paging.trap[ppns]]
            if armed.size:
                self._sampling_trap(np.unique(armed))
        self.last_touch_stamp[ppns] = self.host.touch_stamp
        if self.sampler is not None:
            self.sampler.observe(ppns)

    def release(self, ppns: np.ndarray, state: Backing = Backing.UNBACKED) -> int:
        """Drop the machine pages behind ``ppns`` (the guest gave them up); returns frames freed.

        ``state`` records why: BALLOONED for pages in the balloon, UNBACKED for
        free pages the guest reported. The next touch backs them afresh (zeroed
        only if the frame comes from another VM, as any first touch).
        """
        ppns = sorted_unique(np.asarray(ppns, dtype=np.int64))
        if self.large.any():
            self._release_large(ppns)
        shared = ppns[self.pmap.state[ppns] == Backing.SHARED]
        if shared.size:
            self._unshare(shared, state)
        current = self.pmap.state[ppns]
        backed = ppns[current == Backing.PRIVATE]
        swapped = ppns[current == Backing.SWAPPED]
        self.swapfile.discard(swapped)  # its data is garbage now: the guest gave it up
        compressed = ppns[current == Backing.COMPRESSED]
        if compressed.size:
            self.zip.take(compressed)
            self._fit_zip_frames()
        others = ppns[(current != Backing.PRIVATE) & (current != Backing.SHARED)]
        old = self.pmap.unback(backed, state)
        self.pmap.state[others] = state
        if backed.size:
            self.paging.on_backing_changed(backed, np.ones(backed.size, dtype=bool))
            self.host.frames.free(old)
        return int(backed.size)

    def _release_large(self, ppns: np.ndarray) -> None:
        """Large pages among distinct ``ppns`` given back: dropped whole, or broken.

        A large page all of whose pages go (a powered-off VM) is dropped whole;
        one the guest gives part of back (balloon, free page reporting) breaks.
        """
        regions, counts = np.unique(ppns >> LARGE_PAGE_SHIFT, return_counts=True)
        large = self.large[regions]
        whole = regions[large & (counts == LARGE_PAGE_PAGES)]
        partial = regions[large & (counts < LARGE_PAGE_PAGES)]
        if partial.size:
            # The guest does not wait: the table pages the splits take are found
            # now, by swapping elsewhere if memory is that tight.
            self.host.make_room(partial.size, self, ppns)
            self.break_large_pages(partial, "release")
        if whole.size:
            # The caller unbacks the pages and frees their frames; the nested
            # table's 4 KiB path is empty already once the PS leaves are gone.
            self.large[whole] = False
            self._nested().unmap_large(whole)
            self.counters.large_pages_released += int(whole.size)

    # -- page sharing ------------------------------------------------------------------
    def share_scan(self, ppns: np.ndarray) -> int:
        """Offer ``ppns`` (distinct) to the page-sharing scanner; returns frames freed.

        Guest page-table pages are not candidates: the model keeps their entries
        in the table store rather than as a content token. Pages of a large page
        are hashed but not shared (counted as ``large_pages``), unless the host
        breaks large pages by memory state: then a visited large page is broken
        and its hashed pages are offered with the rest [KB1021095][YB-STATES6].
        """
        ppns = np.asarray(ppns, dtype=np.int64)
        host, frames, table = self.host, self.host.frames, self.host.sharing
        if ppns.size and self.large.any():
            in_large = self.large[ppns >> LARGE_PAGE_SHIFT]
            if np.any(in_large):
                if host.large_page_breaking != "off":
                    broken = self._break_covering(ppns[in_large], "state", bounded=True)
                    ppns = np.union1d(ppns, self._hashed_pages(broken))
                    in_large = self.large[ppns >> LARGE_PAGE_SHIFT]  # left whole: skipped
                if np.any(in_large):
                    self.lp_hashed[ppns[in_large]] = True
                    skipped = int(np.count_nonzero(in_large))
                    table.counters.scanned += skipped
                    table.counters.large_pages += skipped
                    ppns = ppns[~in_large]
        n = ppns.size
        table.reserve(n, frames, host.salts)
        keys, mpns, action, joined, old, promoted_vm, promoted_ppn = table.scratch(n)
        counts = np.zeros(N_ACTIONS + 1, dtype=np.int64)
        n_promoted = scan_kernel(
            ppns, self.pmap.state, self.pmap.mpn, self.guest_tables.is_table_frame,
            host.salt_of(self.vm_id), frames.content, frames.owner, frames.ppn,
            frames.refcount, table.table, table.t_used, table.shift, keys, mpns, action,
            joined, old, promoted_vm, promoted_ppn, counts)
        c = table.counters
        c.scanned += n
        c.hints_inserted += int(counts[A_HINT])
        c.stale_hints += int(counts[A_STALE])
        c.already_shared += int(counts[A_ALREADY])
        c.page_tables += int(counts[A_PAGE_TABLE])
        c.not_backed += int(counts[A_NOT_BACKED])
        c.false_matches += int(counts[A_FALSE])
        c.hint_promotions += int(n_promoted)
        # Pages whose hinted twin became a shared frame: read-only from now on.
        if n_promoted:
            promoted_vm, promoted_ppn = promoted_vm[:n_promoted], promoted_ppn[:n_promoted]
            first = int(promoted_vm[0])
            vm_ids = ([first] if np.all(promoted_vm == first)
                      else np.unique(promoted_vm).tolist())
            for vm_id in vm_ids:
                owner_vm = host.vms[vm_id]
                pages = promoted_ppn if len(vm_ids) == 1 else promoted_ppn[promoted_vm == vm_id]
                pages = pages.copy()  # the scratch arrays are reused by the next scan
                # A hint made before its frame became part of a large page can still
                # match: that large page is broken first, as its page now shares.
                owner_vm._break_covering(pages, "other")
                owner_vm.pmap.state[pages] = Backing.SHARED
                owner_vm.paging.on_backing_changed(pages, np.ones(pages.size, dtype=bool))
        # This VM's pages that now map a shared frame (the kernel remapped them
        # in the pmap) give their own frame back.
        n_joined = int(counts[A_SHARE] + counts[A_PROMOTE])
        if n_joined == 0:
            return 0
        # Used before any other scan can reuse the work arrays: no copies.
        sharers, old = joined[:n_joined], old[:n_joined]
        self.paging.on_backing_changed(sharers, np.ones(n_joined, dtype=bool))
        frames.free(old)
        c.shared += n_joined + int(n_promoted)
        c.frames_freed += n_joined
        return n_joined

    def break_cow(self, ppns: np.ndarray) -> None:
        """A write to shared pages: give each a private copy (copy-on-write)."""
        ppns = np.asarray(ppns, dtype=np.int64)
        frames = self.host.frames
        self.host.make_room(ppns.size, self, ppns)
        shared_mpns = self.pmap.mpn[ppns]
        new = frames.alloc(self.vm_id, ppns.size)
        frames.content[new] = frames.content[shared_mpns]
        frames.ppn[new] = ppns
        self._drop_sharers(shared_mpns)
        self.pmap.back(ppns, new, Backing.PRIVATE)
        self.paging.on_backing_changed(ppns, np.ones(ppns.size, dtype=bool))
        self.host.sharing.counters.cow_breaks += int(ppns.size)
        costs = self.host.costs
        self.counters.fault_time_ns += ppns.size * (costs.hypervisor_fault_ns + costs.cow_copy_ns)

    def _unshare(self, ppns: np.ndarray, state: Backing) -> None:
        """Drop shared mappings of ``ppns`` without copying (their data is not needed)."""
        shared_mpns = self.pmap.unback(ppns, state)
        self.paging.on_backing_changed(ppns, np.ones(ppns.size, dtype=bool))
        self._drop_sharers(shared_mpns)

    def _drop_sharers(self, shared_mpns: np.ndarray) -> None:
        """One sharer fewer per entry; frames left with none go back to the free list."""
        frames, table = self.host.frames, self.host.sharing
        np.subtract.at(frames.refcount, shared_mpns, 1)
        empty = np.unique(shared_mpns[frames.refcount[shared_mpns] == 0])
        salt = self.host.salt_of(self.vm_id)
        for mpn in empty.tolist():
            table.forget(int(frames.content[mpn]), salt, mpn)
        if empty.size:
            frames.refcount[empty] = 1  # free() expects a held frame
            frames.free(empty)

    def remap(self, ppns: np.ndarray) -> np.ndarray:
        """Move backed pages to fresh frames, copying their data; returns the new MPNs.

        This is the hypervisor's basic remapping move (OSDI 2002 §7 remaps hot
        I/O pages this way; sharing, swapping and migration build on it). The
        guest notices nothing: its translations follow the pmap.
        """
        ppns = sorted_unique(np.asarray(ppns, dtype=np.int64))
        ppns = ppns[self.pmap.state[ppns] == Backing.PRIVATE]
        if ppns.size == 0:
            return np.zeros(0, dtype=np.int64)
        self._break_covering(ppns, "other")  # the moved pages leave their 2 MiB run
        frames = self.host.frames
        old = self.pmap.mpn[ppns].copy()
        new = frames.alloc(self.vm_id, ppns.size)
        frames.content[new] = frames.content[old]
        frames.ppn[new] = ppns
        self.pmap.back(ppns, new, Backing.PRIVATE)
        self.paging.on_backing_changed(ppns, np.ones(ppns.size, dtype=bool))
        frames.free(old)
        return new

    def translate(self, mmu: Mmu, vpns: np.ndarray, is_write: np.ndarray | None = None,
                  steps: np.ndarray | None = None, events: list | None = None,
                  tokens: np.ndarray | None = None) -> TranslationBatch:
        """Translate a batch of the current address space, resolving hypervisor faults.

        Faults the guest must handle (``GUEST_*``) stop the batch and are
        returned; backing faults and sampling traps are resolved here and the
        reference retried. The time returned is the MMU's (TLB, walks, hidden
        faults) plus every hypervisor fault served on the way.

        Args:
            mmu: the vCPU's MMU, with the guest's CR3 loaded.
            vpns: guest-virtual page numbers.
            is_write: per reference, a write; all reads if omitted.
            steps: when given, the walk steps are recorded into it (one-reference
                batches, for ``hvmem translate``).
            events: when given, hypervisor actions are appended as (kind, ppn, mpn).
            tokens: when given, the data each write stores (the CPU's stores):
                each translated stretch is stored before the next fault is served.
        """
        vpns = np.ascontiguousarray(vpns, dtype=np.int64)
        if is_write is None:
            is_write = np.zeros(vpns.size, dtype=np.bool_)
        is_write = np.ascontiguousarray(is_write, dtype=np.bool_)
        content = self.host.frames.content
        fault_before = self.counters.fault_time_ns
        record = steps is not None
        steps_buf = steps if steps is not None else _NO_STEPS
        mpns = np.full(vpns.size, -1, dtype=np.int64)
        counts = new_counters()
        start = 0
        n_steps = 0
        time_ns = 0.0
        fault = None
        while True:
            stop, status, ppn, used = self.paging.run(
                mmu, vpns, is_write, start, mpns, counts, steps_buf[n_steps:], record)
            n_steps += used
            if tokens is not None:
                _store_writes(content, mpns, is_write, tokens, start, stop)
            if status == FaultKind.NONE:
                break
            if status == FaultKind.BACKING_MISSING and self.paging.trap[ppn]:
                # A sampled page: the exit sampling armed. A page with no
                # backing is served on the retry.
                self._sampling_trap(np.array([ppn], dtype=np.int64))
                if events is not None:
                    events.append(("sampling_trap", ppn, int(self.pmap.mpn[ppn]), n_steps))
                start = stop
                continue
            if status == FaultKind.BACKING_READ_ONLY:
                self.break_cow(np.array([ppn]))
                if events is not None:
                    events.append(("cow_break", ppn, int(self.pmap.mpn[ppn]), n_steps))
                start = stop
                continue
            if status == FaultKind.BACKING_MISSING:
                if record:
                    self.back_pages(np.array([ppn]))
                else:
                    self._serve_ahead(mmu, vpns, stop, ppn)
                mpn = int(self.pmap.mpn[ppn])
                if events is not None:
                    events.append(("first_touch", ppn, mpn, n_steps))
                start = stop
                continue
            fault = Fault(FaultKind(status), stop, int(vpns[stop]), ppn)
            break
        time_ns += self.counters.fault_time_ns - fault_before  # first touch, COW, traps
        time_ns += mmu.charge(counts)
        return TranslationBatch(mpns, fault.index if fault else vpns.size, fault, time_ns,
                                n_steps)


_NO_STEPS = np.zeros((1, 6), dtype=np.int64)
_NO_TOKENS = np.zeros(0, dtype=np.uint64)
_NO_SLOTS = np.zeros(0, dtype=np.int32)
_NO_TOUCHED = np.zeros(0, dtype=np.bool_)


@njit(cache=True, nogil=True)
def _bus_check(ppns, state):
    """(shared, frameless) among ``ppns``; (-1, -1) if one lies outside the VM."""
    n = state.size
    n_shared = 0
    n_missing = 0
    for i in range(ppns.size):
        p = ppns[i]
        if p < 0 or p >= n:
            return -1, -1
        s = state[p]
        if s == STATE_SHARED:
            n_shared += 1
        elif s != STATE_PRIVATE:
            n_missing += 1
    return n_shared, n_missing


@njit(cache=True, nogil=True)
def _select_pages(ppns, state, shared, out):
    """Entries of ``ppns`` that are SHARED (``shared``) or else have no frame.

    They go to ``out`` in order; returns how many, or -1 if a page lies outside the VM.
    """
    n = state.size
    k = 0
    for i in range(ppns.size):
        p = ppns[i]
        if p < 0 or p >= n:
            return -1
        s = state[p]
        if (s == STATE_SHARED) if shared else (s != STATE_PRIVATE and s != STATE_SHARED):
            out[k] = p
            k += 1
    return k


@njit(cache=True, nogil=True)
def _bus_touch_kernel(ppns, tokens, store, mpn, content, last_touch_stamp, stamp, slot_of_ppn,
                      touched):
    """Backed pages touched over the bus: stores (in order), LRU stamps, sampled touches."""
    sampled = slot_of_ppn.size > 0
    for i in range(ppns.size):
        p = ppns[i]
        if store:
            content[mpn[p]] = tokens[i]
        last_touch_stamp[p] = stamp
        if sampled:
            slot = slot_of_ppn[p]
            if slot >= 0:
                touched[slot] = True


@njit(cache=True)
def _store_writes(content, mpns, is_write, tokens, start, stop):
    """The stores of references ``start:stop``, in program order (the last write wins)."""
    for i in range(start, stop):
        if is_write[i]:
            content[mpns[i]] = tokens[i]


class Host:
    """Machine memory and the VMs running on it.

    Args:
        memory_pages: machine memory in 4 KiB frames.
        paging: "shadow" or "nested".
        costs: the cost table.
        swap_device: device of the host swap files.
        salting: page-sharing salting mode.
        large_pages: back guest memory with 2 MiB host pages where a whole
            region is touched first (nested paging only, as ESX [KB1021095]).
    """

    def __init__(self, memory_pages: int, paging: PagingName = "nested",
                 costs: CostTable = DEFAULT_COSTS, swap_device: str = "ssd",
                 salting: str = "within", large_pages: bool = False):
        if paging not in PAGING_MODES:
            raise ConfigError(f"paging: expected shadow or nested, found {paging!r}")
        if large_pages and paging != "nested":
            raise ConfigError("large pages: ESX backs guests with 2 MiB pages only under "
                              "nested paging; shadow paging backs with 4 KiB pages")
        self.paging = paging
        self.large_pages = large_pages
        self.large_page_breaking = "off"  # set by the memory state: see LARGE_PAGE_BREAKING
        self.costs = costs
        self.frames = MachineMemory(memory_pages)
        self.tables = TableStore(memory_pages, "machine")  # nested and shadow tables
        self.vms: list[HostVm] = []
        self.swap_device = swap_device
        # Time, set by whoever drives it (the simulator); stamp 0 means "never touched".
        self.clock = StampClock("host", first_stamp=1)
        self._emergency_rng = np.random.default_rng(0x5EED)
        # Sized for a hint per frame at load 1/2.
        self.sharing = SharingTable(max(1 << 16, 1 << memory_pages.bit_length()))
        if salting not in SALTING_MODES:
            raise ConfigError(f"sharing salting: expected {', '.join(SALTING_MODES)}, "
                              f"found {salting!r}")
        self.salting = salting
        self.explicit_salts: dict[int, int] = {}  # vm id -> configured salt ("explicit")

    @property
    def now_ns(self) -> int:
        """Simulated time, set by whoever drives it (the simulator); it never goes back.

        Each later time gets the next ``touch_stamp``: pages are stamped with
        it when touched, so LRU order by stamp is order by time, in an int32
        per page instead of nanoseconds in an int64 (see ``core/stamps.py``).
        """
        return self.clock.now_ns

    @now_ns.setter
    def now_ns(self, value: int) -> None:
        self.clock.advance(value)

    @property
    def touch_stamp(self) -> int:
        """The stamp of ``now_ns``."""
        return self.clock.stamp

    def add_vm(self, name: str, n_ppns: int, guest_tables: TableStore) -> HostVm:
        """Power on a VM of ``n_ppns`` pages; it consumes nothing until it touches memory."""
        if n_ppns >= 2**31:  # the frame table's reverse map holds PPNs in int32
            raise ConfigError(f"{name}: {n_ppns} pages is more than a VM may have (8 TiB)")
        vm_id = len(self.vms)
        if vm_id >= MAX_OWNERS:  # frame owners are int16
            raise ConfigError(f"{name}: a host runs at most {MAX_OWNERS} VMs")
        pmap = Pmap(n_ppns, self.frames.n_frames)
        mode: PagingMode
        if self.paging == "nested":
            mode = NestedPaging(vm_id, self.frames, self.tables, guest_tables, pmap)
        else:
            mode = ShadowPaging(vm_id, self.frames, self.tables, guest_tables, pmap, self.costs)
        # The data of pages put aside: a page is swapped or compressed, never both.
        aside = np.zeros(n_ppns, dtype=np.uint64)
        vm = HostVm(vm_id, name, n_ppns, pmap, guest_tables, mode, self,
                    HostSwapFile(n_ppns, self.swap_device, self.costs, content=aside),
                    CompressionCache(n_ppns, content=aside))
        self.vms.append(vm)
        return vm

    def scan_for_sharing(self, elapsed_ns: int, rng: np.random.Generator,
                         rate_pages_per_s: float | None = None) -> int:
        """Run the page-sharing scanner for ``elapsed_ns``: random pages of every VM.

        Each VM is scanned at ``rate_pages_per_s`` (by default a whole VM per
        Mem.ShareScanTime, capped at Mem.ShareRateMax). Returns frames freed.
        """
        freed = 0
        for vm in self.vms:
            rate = rate_pages_per_s or default_scan_rate_pages_per_s(vm.n_ppns)
            n = min(vm.n_ppns, int(rate * elapsed_ns / 1e9 + rng.random()))
            if n:
                freed += vm.share_scan(np.sort(rng.choice(vm.n_ppns, n, replace=False)))
        return freed

    def break_large_pages_for_state(self, breaking: str, elapsed_ns: int,
                                    rng: np.random.Generator, share: bool = True) -> int:
        """Break large pages as the host memory state asks; returns how many were broken.

        ``breaking`` is "off", "lazy" (ESXi 6 below the HIGH threshold: the
        scanner breaks the large pages it visits, at its next run) or "active"
        (CLEAR and below: besides, up to ``LARGE_PAGE_BREAKS_PER_S`` random large
        pages per VM and second are broken now and their pages offered to
        sharing at once when ``share``) [YB-STATES6][YB-LP6].
        """
        if breaking not in LARGE_PAGE_BREAKING:
            raise ConfigError(f"large page breaking: expected {', '.join(LARGE_PAGE_BREAKING)},"
                              f" found {breaking!r}")
        self.large_page_breaking = breaking
        if breaking != "active":
            return 0
        budget = int(LARGE_PAGE_BREAKS_PER_S * elapsed_ns / 1e9 + rng.random())
        broken = 0
        for vm in self.vms:
            regions = np.flatnonzero(vm.large)
            if regions.size == 0 or budget == 0:
                continue
            if regions.size > budget:
                regions = np.sort(rng.choice(regions, budget, replace=False))
            broken += vm.break_large_pages(regions, "state", bounded=True)
            if share:
                vm.share_scan(vm._pages_of(regions[~vm.large[regions]]))
        return broken

    def make_room(self, n_frames: int, requester: HostVm | None = None,
                  busy_ppns: np.ndarray | None = None) -> None:
        """Make sure ``n_frames`` (plus slack for table pages) are free, swapping if not.

        When a VM touches memory and the free list is empty, the hypervisor
        cannot wait for a balance period: it swaps pages out on the spot, from
        the VM consuming the most, never the pages being served right now. This
        is the synchronous path behind ESX's LOW state [OSDI02 §6.3]; it costs
        the VMs whose pages go, and is counted as ``emergency_swaps``.
        """
        frames = self.frames
        # Slack for the table pages that mapping the new frames may need (one
        # page-table page per 512 pages when dense, plus a fixed margin).
        want = n_frames + EMERGENCY_SLACK_FRAMES + n_frames // 256
        if frames.n_free >= want:
            return
        # Private pages first, then shared ones (a shared frame is freed once its
        # last sharer is swapped), then the compression caches.
        for state in (Backing.PRIVATE, Backing.SHARED):
            for vm in sorted(self.vms, key=lambda v: -v.pmap.count(state)):
                while True:
                    need = want - frames.n_free
                    if need <= 0:
                        return
                    victims = np.flatnonzero(vm.pmap.state == state)
                    if vm is requester and busy_ppns is not None and victims.size:
                        victims = victims[~np.isin(victims, busy_ppns)]
                    if victims.size == 0:
                        break
                    victims = victims[np.sort(self._emergency_rng.choice(
                        victims.size, min(need, victims.size), replace=False))]
                    split_before = vm.counters.large_pages_broken
                    vm._swap_pages(victims)
                    vm.counters.emergency_swaps += int(victims.size)
                    # Splitting large pages took table pages: the same VM goes again.
                    if vm.counters.large_pages_broken == split_before:
                        break
        for vm in self.vms:
            if frames.n_free >= want:
                return
            cached = np.flatnonzero(vm.zip.slot_bytes)
            if cached.size:
                vm._zip_to_swap(cached)
        if frames.n_free < n_frames + EMERGENCY_SLACK_FRAMES:
            raise OutOfMemoryError(
                f"host memory exhausted: {n_frames} frames needed, {frames.n_free} free and "
                "nothing left to swap (hypervisor overhead fills the rest)"
            )

    def salts(self) -> np.ndarray:
        """Every VM's sharing salt, indexed by VM id."""
        return np.array([self.salt_of(vm.vm_id) for vm in self.vms], dtype=np.int64)

    def salt_of(self, vm_id: int) -> int:
        """The sharing salt of a VM under the host's salting mode."""
        if self.salting == "across":
            return 0
        if self.salting == "within":
            return vm_id + 1
        return self.explicit_salts.get(vm_id, 0)

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` unless every frame is accounted for exactly once."""
        frames = self.frames
        frames.check_invariants()
        claimed = np.zeros(frames.n_frames, dtype=np.int64)
        sharers = np.zeros(frames.n_frames, dtype=np.int64)
        n_private = 0
        for vm in self.vms:
            np.add.at(sharers, vm.pmap.mpn[vm.pmap.state == Backing.SHARED], 1)
            vm.pmap.check_invariants()
            if not np.array_equal(vm.swapfile.used, vm.pmap.state == Backing.SWAPPED):
                raise InvariantViolation(f"{vm.name}: swap file and pmap disagree")
            if not np.array_equal(vm.zip.slot_bytes > 0, vm.pmap.state == Backing.COMPRESSED):
                raise InvariantViolation(f"{vm.name}: compression cache and pmap disagree")
            if vm.zip.frames.size != vm.zip.frames_needed or np.any(
                frames.owner[vm.zip.frames] != vm.vm_id
            ):
                raise InvariantViolation(f"{vm.name}: compression cache frames are off")
            np.add.at(claimed, vm.zip.frames, 1)
            # Consumed memory never exceeds configured memory: one frame at most
            # per guest page, the compression cache holding fewer than it saves.
            consumed = vm.pmap.count(Backing.PRIVATE) + vm.zip.frames.size
            if consumed > vm.n_ppns:
                raise InvariantViolation(
                    f"{vm.name}: consumes {consumed} frames for {vm.n_ppns} guest pages"
                )
            mpns = vm.pmap.mpn[vm.pmap.state == Backing.PRIVATE]
            if np.any(frames.owner[mpns] != vm.vm_id):
                raise InvariantViolation(f"{vm.name}: pmap names a frame the VM does not own")
            np.add.at(claimed, mpns, 1)
            n_private += mpns.size
            if np.any(frames.ppn[mpns] != np.flatnonzero(vm.pmap.state == Backing.PRIVATE)):
                raise InvariantViolation(f"{vm.name}: frame reverse map is stale")
            _check_large_pages(vm)
            tables = vm.paging.table_frames()
            if np.any(frames.owner[tables] != HYPERVISOR):
                raise InvariantViolation(f"{vm.name}: a table page is not a hypervisor frame")
            np.add.at(claimed, tables, 1)
        is_shared = frames.owner == SHARED_OWNER
        if np.any(sharers[is_shared] != frames.refcount[is_shared]) or np.any(
            sharers[~is_shared] != 0
        ):
            raise InvariantViolation("a shared frame's refcount differs from its sharers")
        claimed[is_shared & (sharers > 0)] = 1
        if np.any(claimed > 1):
            raise InvariantViolation(f"frame {int(np.flatnonzero(claimed > 1)[0])} mapped twice")
        owned = frames.owner != FREE
        leaked = np.flatnonzero(owned & (claimed == 0))
        if leaked.size:
            raise InvariantViolation(f"frame {int(leaked[0])} is owned but mapped by nobody")
        # A frame of one holder (page, table, cache) has one mapping; only a private
        # frame names a guest page, or a stale sharing hint on it could hold.
        if np.any(frames.refcount[owned & ~is_shared] != 1):
            raise InvariantViolation("an unshared frame's refcount is not 1")
        if np.count_nonzero(frames.ppn >= 0) != n_private:
            raise InvariantViolation("a frame that backs no private page has a reverse map")
        # Each shared frame is in the sharing table once, or a later scan would map a
        # page onto whatever frame a leftover entry names.
        if not np.array_equal(self.sharing.shared_frames(), np.flatnonzero(is_shared)):
            raise InvariantViolation("the sharing table and the shared frames disagree")


def _check_large_pages(vm: HostVm) -> None:
    """Every page of a large region is PRIVATE, in order in one aligned run, PS-mapped."""
    regions = np.flatnonzero(vm.large)
    if vm.large.size != -(-vm.n_ppns // LARGE_PAGE_PAGES):
        raise InvariantViolation(f"{vm.name}: large-page map has the wrong size")
    if isinstance(vm.paging, NestedPaging) and not np.array_equal(vm.paging.large, vm.large):
        raise InvariantViolation(f"{vm.name}: nested table and host disagree on large pages")
    if regions.size == 0:
        return
    if regions[-1] >= vm.n_ppns >> LARGE_PAGE_SHIFT:
        raise InvariantViolation(f"{vm.name}: a partial region is a large page")
    pages = vm._pages_of(regions).reshape(regions.size, LARGE_PAGE_PAGES)
    if np.any(vm.pmap.state[pages] != Backing.PRIVATE):
        raise InvariantViolation(f"{vm.name}: a page of a large page is not private")
    bases = vm.pmap.mpn[pages[:, 0]]
    if np.any(bases % LARGE_PAGE_PAGES) or np.any(
        vm.pmap.mpn[pages] != bases[:, None] + np.arange(LARGE_PAGE_PAGES)
    ):
        raise InvariantViolation(f"{vm.name}: a large page is not one aligned run of frames")
    if not np.array_equal(vm._nested().large_leaves(regions), bases):
        raise InvariantViolation(f"{vm.name}: a large page is not one PS leaf in the EPT")
