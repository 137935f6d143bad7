"""The guest kernel: processes, page faults, its own reclaim and swap.

What is modelled
----------------
A guest OS owns its "physical" memory (PPNs) and decides everything about it;
the hypervisor sees only which guest-physical pages are touched. Per PPN the
kernel keeps (arrays, never an object per page)::

    kind[ppn]        FREE, ANON (process memory), FILE (page cache), TABLE
                     (a page-table page) or BALLOON (pinned by the balloon driver)
    proc[ppn]/vpn[ppn]   the process and virtual page that map it (reverse map;
                     meaningful while the page is ANON or FILE)
    loaded_stamp[ppn]    when it was mapped (FIFO); last_stamp[ppn] last access (LRU)
    ref[ppn]         referenced since the clock hand passed (CLOCK); dirty[ppn]

Times are kept per page as *stamps*, not nanoseconds: an int32 counter the
kernel advances each time it is given a later ``now_ns`` (the same time keeps
its stamp), so stamps order pages exactly as their times did and every victim
choice is the same, in half the memory of int64 nanoseconds (1 MiB per array
and GiB of guest memory instead of 2). Time never goes back, and more than
2**31 distinct times are refused rather than wrapped: see ``core/stamps.py``.

Processes map ranges (``mmap``: anonymous or file-backed) and unmap them
(``munmap``). A touch of a mapped page that has no page-table entry is a fault::

    entry holds a swap slot           -> major fault: read it back (swap-in)
    file mapping                      -> major fault: read the file page from disk
    anonymous mapping, never touched  -> minor fault: allocate a page, zero it
    outside every mapping             -> invalid access (counted, dropped)

Faults allocate from the free list (``allocator.py``). When free pages fall
below the *low* watermark, the kernel reclaims until they reach *high*, as
kswapd does: clean file pages are dropped, anonymous pages written to the swap
device (their entries then hold the slot), dirty file pages written back. The
victim policy is ``fifo``, ``lru``, ``clock`` (second chance) or ``random``
(FIFO and LRU take the oldest by stamp, found as ``oldest.py`` describes);
OPT needs the future and lives in the trace replayer (``replacement.py``).
If nothing can be reclaimed (swap full, everything pinned) an allocation fails:
with deflate-on-oom the balloon driver gives pages back first; otherwise the
access is dropped and counted as an out-of-memory event.

All page contents go through the guest-physical memory bus
(``hardware/guest_memory.py``): zeroing a fresh page, reading a page to swap it
out and writing a swapped-in page are touches the hypervisor sees and may have
to serve (first touch, its own swap-in: double paging).

Two ways to serve a tick's accesses, one per fidelity:

* ``access`` (page fidelity): the tick's distinct pages in chunks; missing ones
  are faulted in, then every page is touched once over the memory bus.
* ``access_mmu`` (mmu fidelity): every reference, in program order, through the
  vCPU's MMU (``hardware/mmu.py``) and whatever stands behind it (the
  hypervisor's ``translate``: TLB, 1-D or 2-D walks, hidden faults, its own
  faults, the stores writes make). A batch kernel runs until a fault the guest
  must take; the kernel faults the page in, together with the other unmapped
  pages the next few thousand references touch (fault-around, into free memory
  only, so it never makes the guest reclaim), and resumes. Pages the references
  used are marked for reclaim (last use, referenced, dirty) before each fault
  and at the end, so reclaim sees the same recency as in page fidelity. The
  time charged is the faults' and the translation's beyond the TLB lookup each
  reference makes anyway (page fidelity charges nothing per reference).

Watermarks follow Linux: ``min_free_kbytes = sqrt(16 * memory_kbytes)`` clamped
to [128 KiB, 256 MiB]; ``low = 5/4 min``; ``high = 3/2 min``
(``mm/page_alloc.c``: ``calculate_min_free_kbytes``, ``__setup_per_zone_wmarks``).

Invariants: free + anon + file + table + balloon = configured pages; every
mapped page's reverse map names the entry that maps it, and every present entry
is one of those; a swap slot is held by exactly one swap entry; the TABLE pages
are the page-table pages.

Counters (pages or events): minor_faults, major_faults, swap_ins, swap_outs,
file_reads, file_drops, writebacks, invalid_accesses, oom_events, reclaim_runs.

References: Linux ``mm/memory.c`` (do_anonymous_page, do_swap_page),
``mm/vmscan.c`` (kswapd, watermarks), ``mm/page_alloc.c``; OSTEP ch. 21-22.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
from numba import njit

from hvmem.core.sets import sorted_unique
from hvmem.core.stamps import StampClock
from hvmem.errors import ConfigError, InvariantViolation, OutOfMemoryError
from hvmem.guest.address_space import AddressSpace
from hvmem.guest.allocator import PageAllocator
from hvmem.guest.oldest import OldestFirst
from hvmem.guest.swap import SwapDevice
from hvmem.hardware.guest_memory import GuestPhysicalMemory
from hvmem.hardware.mmu import Mmu, TranslationPath
from hvmem.hardware.page_table import (
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_PRESENT,
    TableStore,
    pte_frame,
)
from hvmem.hardware.prefetch import host_prefetch
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hardware.virtio_balloon import GuestMemoryStats
from hvmem.hardware.walker import FaultKind
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind

#: A non-present entry with this bit holds a swap slot in its frame field
#: (Linux keeps swap entries in non-present PTEs the same way).
PTE_SWAP = np.uint64(1 << 62)

RECLAIM_POLICIES = ("fifo", "lru", "clock", "random")
#: Pages reclaimed per step, Linux's SWAP_CLUSTER_MAX.
SWAP_CLUSTER_PAGES = 32
#: mmu fidelity: references a guest fault looks ahead over for other unmapped
#: pages to fault in with it (fault-around), so faults are served in batches.
FAULT_AROUND_REFS = 4096
#: mmu fidelity: references handed to one translation call at most (its buffers).
TRANSLATE_WINDOW_REFS = 1 << 16


class PageKind(IntEnum):
    """What a guest-physical page is used for."""

    FREE = 0
    ANON = 1  # process memory; evicted to swap
    FILE = 2  # page cache of a file mapping; dropped (or written back) on eviction
    TABLE = 3  # a page-table page; never evicted
    BALLOON = 4  # pinned by the balloon driver


def linux_watermarks_pages(memory_pages: int) -> tuple[int, int, int]:
    """(min, low, high) free-page watermarks Linux would set for this much memory.

    Linux never goes below 128 KiB; for toy guests of a few hundred KiB that
    would keep most of memory free, so min is also capped at 1/32 of memory.
    """
    memory_kib = memory_pages * 4
    min_kib = min(max(int(math.isqrt(memory_kib * 16)), 128), 262_144)
    min_pages = max(1, min(min_kib // 4, memory_pages // 32))
    return min_pages, min_pages + max(1, min_pages // 4), min_pages + max(2, min_pages // 2)


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """Settings of one guest kernel."""

    memory_pages: int  # configured guest-physical memory
    swap_pages: int | None = None  # guest swap; None: as large as memory
    swap_device: str = "ssd"  # "hdd", "ssd" or "nvme"
    reclaim_policy: str = "lru"  # fifo, lru, clock or random
    n_processes: int = 1  # guest processes (ASIDs 1..n)

    def __post_init__(self) -> None:
        if self.memory_pages <= 0:
            raise ConfigError(f"guest memory: expected a positive size, found {self.memory_pages}")
        if self.reclaim_policy not in RECLAIM_POLICIES:
            raise ConfigError(
                f"reclaim policy: expected {', '.join(RECLAIM_POLICIES)}, "
                f"found {self.reclaim_policy!r}"
            )
        if self.n_processes < 1 or self.n_processes > 4094:
            raise ConfigError(f"processes: expected 1..4094, found {self.n_processes}")


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


@dataclass
class Process:
    """A guest process: an address space and its mappings."""

    index: int
    space: AddressSpace
    # Mappings as sorted, non-overlapping [start, end) VPN ranges.
    vma_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vma_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vma_file: np.ndarray = field(default_factory=lambda: np.zeros(0, np.bool_))


@dataclass(frozen=True, slots=True)
class AccessResult:
    """What serving one access batch cost and caused."""

    refs: int  # references served
    time_ns: float  # time charged beyond the references themselves
    minor_faults: int
    major_faults: int
    dropped: int  # entries dropped (invalid or out of memory)
    dropped_mask: np.ndarray | None = None  # per batch entry, whether it was dropped


def file_page_token(vpn: np.ndarray) -> np.ndarray:
    """Content of a file page: a function of its place, so equal files are equal pages."""
    x = (np.asarray(vpn, dtype=np.uint64) + np.uint64(0xF11E_0000_0000_0000))
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (x ^ (x >> np.uint64(31))) | np.uint64(1)


STAMP_AHEAD = 8  # pages ahead whose stamp and reference bit _stamp_present prefetches


@njit(cache=True, nogil=True)
def _stamp_present(ptes, stamp, last_stamp, ref, missing_idx):
    """Mark the page behind every present entry of ``ptes`` used at ``stamp``.

    Returns how many entries are not present; the first ``missing_idx.size``
    of their indices go to ``missing_idx``, in order. The entries come from a
    walk of a batch (``leaf_entries_of``), whose pages are scattered over
    stamps much larger than the caches: each page's stamp and reference bit
    are fetched STAMP_AHEAD entries early, so the misses overlap.
    """
    n = ptes.size
    missing = 0
    for i in range(n):
        if i + STAMP_AHEAD < n:
            ahead = ptes[i + STAMP_AHEAD]
            if ahead & PTE_PRESENT:
                host_prefetch(last_stamp, pte_frame(ahead))
                host_prefetch(ref, pte_frame(ahead))
        pte = ptes[i]
        if pte & PTE_PRESENT:
            ppn = pte_frame(pte)
            last_stamp[ppn] = stamp
            ref[ppn] = True
        else:
            if missing < missing_idx.size:
                missing_idx[missing] = i
            missing += 1
    return missing


_NO_INDICES = np.zeros(0, dtype=np.int64)


@njit(cache=True, nogil=True)
def _split_touches(ptes, writes, tokens, refs, dirty, w_ppns, w_tokens, r_ppns):
    """Split present entries into written pages (marked dirty) and read pages.

    Both in batch order, the written ones with their tokens; returns (written,
    read, references).
    """
    n_w = 0
    n_r = 0
    served = 0
    for i in range(ptes.size):
        ppn = pte_frame(ptes[i])
        served += refs[i]
        if writes[i]:
            dirty[ppn] = True
            w_ppns[n_w] = ppn
            w_tokens[n_w] = tokens[i]
            n_w += 1
        else:
            r_ppns[n_r] = ppn
            n_r += 1
    return n_w, n_r, served


@njit(cache=True, nogil=True)
def _count_kind(kinds, kind):
    """Entries of ``kinds`` equal to ``kind`` (one pass, no temporary)."""
    n = 0
    for i in range(kinds.size):
        n += kinds[i] == kind
    return n


@njit(cache=True)
def _mark_used(ptes, writes, stamp, last_stamp, ref, dirty):
    """Stamp the page behind every present entry as used at ``stamp``; written ones as dirty."""
    for i in range(ptes.size):
        pte = ptes[i]
        if pte & PTE_PRESENT:
            ppn = np.int64((pte & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT))
            last_stamp[ppn] = stamp
            ref[ppn] = True
            if writes[i]:
                dirty[ppn] = True


@njit(cache=True)
def _clock_victims(kinds, ref, hand, n_wanted, evictable_anon, evictable_file):
    """Second chance: sweep from ``hand``, clearing reference bits, taking clear pages."""
    n = kinds.size
    out = np.empty(n_wanted, dtype=np.int64)
    taken = np.zeros(n, dtype=np.bool_)  # a page is chosen once, even if the hand laps
    found = 0
    steps = 0
    while found < n_wanted and steps < 2 * n:
        k = kinds[hand]
        if ((k == 1 and evictable_anon) or (k == 2 and evictable_file)) and not taken[hand]:
            if ref[hand]:
                ref[hand] = False
            else:
                out[found] = hand
                taken[hand] = True
                found += 1
        hand += 1
        if hand == n:
            hand = 0
        steps += 1
    return out[:found], hand


class GuestKernel:
    """One guest's kernel.

    Args:
        config: its settings.
        memory: the guest-physical memory bus (the hypervisor behind it).
        tables: the store holding its page tables (its guest-physical memory).
        rng: the random stream for the random reclaim policy.
        costs: the cost table.
        mmu: the vCPU's MMU when references go through it (mmu fidelity), for
            TLB shootdowns; None in page fidelity.
    """

    def __init__(self, config: GuestConfig, memory: GuestPhysicalMemory, tables: TableStore,
                 rng: np.random.Generator, costs: CostTable = DEFAULT_COSTS,
                 mmu: Mmu | None = None):
        n = config.memory_pages
        if memory.n_ppns != n or tables.n_frames != n:
            raise ConfigError("guest kernel: memory, tables and config disagree on the size")
        self.config = config
        self.memory = memory
        self.tables = tables
        self.rng = rng
        self.costs = costs
        self.mmu = mmu
        self.allocator = PageAllocator(n)
        self.swap = SwapDevice(n if config.swap_pages is None else config.swap_pages,
                               config.swap_device, costs)
        self.kind = np.zeros(n, dtype=np.uint8)
        # The reverse map, meaningful while a page is ANON or FILE; zeroes elsewhere
        # (or whatever a freed page last held), so that pages never mapped cost nothing.
        self.proc = np.zeros(n, dtype=np.int16)  # up to 4094 processes
        self.vpn = np.zeros(n, dtype=np.int64)
        # Stamps of the times pages were mapped and last used (see now_ns); zeroes
        # are stamp 0, time 0, and cost nothing until written.
        self.loaded_stamp = np.zeros(n, dtype=np.int32)
        self.last_stamp = np.zeros(n, dtype=np.int32)
        self.ref = np.zeros(n, dtype=np.bool_)
        self.dirty = np.zeros(n, dtype=np.bool_)
        self.clock_hand = 0
        self.oldest = OldestFirst()  # FIFO and LRU victims, kept between reclaims
        self.min_pages, self.low_pages, self.high_pages = linux_watermarks_pages(n)
        self.counters = GuestCounters()
        self.clock = StampClock("guest")  # time as each access gives it, see now_ns
        #: Called with a page count when an allocation fails; returns pages given
        #: back (the balloon driver's deflate-on-oom hook).
        self.oom_notifier: Callable[[int], int] | None = None
        self.processes = [
            Process(i, AddressSpace(i + 1, tables, self._alloc_table_page))
            for i in range(config.n_processes)
        ]

    @property
    def now_ns(self) -> int:
        """Simulated time of the accesses being served; it never goes back.

        Each later time gets the next ``now_stamp`` (the same time keeps its
        stamp); pages are stamped with it when mapped (``loaded_stamp``) and
        used (``last_stamp``), so the order of stamps is the order of times and
        FIFO and LRU choose the same victims as with times in nanoseconds. Time 0,
        where the kernel starts, is stamp 0, as are pages never stamped.

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

    # -- allocation ------------------------------------------------------------------
    def _alloc_table_page(self) -> int:
        if self.allocator.n_free <= self.min_pages // 2:
            self.reclaim(SWAP_CLUSTER_PAGES)
        if self.allocator.n_free == 0:
            raise OutOfMemoryError("guest out of memory: no page left for a page table")
        ppn = self.allocator.alloc_one()
        self.kind[ppn] = PageKind.TABLE
        self.counters.time_ns += self.memory.write_pages(np.array([ppn]), np.zeros(1, np.uint64))
        return ppn

    def alloc_pages(self, n: int, kind: PageKind, allow_reclaim: bool = True) -> np.ndarray:
        """Take ``n`` pages for ``kind``, reclaiming first if free pages run low.

        Returns fewer than ``n`` pages (possibly none) when memory cannot be found.
        """
        # User allocations leave half the min watermark to the kernel's own
        # (page-table pages), as Linux's reserves do.
        reserve = self.min_pages // 2 + 1
        if allow_reclaim and self.allocator.n_free - n < self.low_pages:
            self.reclaim(n + self.high_pages - self.allocator.n_free)
        if self.allocator.n_free - reserve < n and allow_reclaim and self.oom_notifier:
            self.oom_notifier(n + reserve - self.allocator.n_free)
        got = max(0, min(n, self.allocator.n_free - reserve))
        ppns = self.allocator.alloc(got)
        self.kind[ppns] = kind
        return ppns

    def free_pages(self, ppns: np.ndarray) -> None:
        """Return pages to the free list; they keep their contents (and host backing)."""
        self.kind[ppns] = PageKind.FREE  # proc and vpn no longer mean anything
        self.ref[ppns] = False
        self.dirty[ppns] = False
        self.allocator.free(ppns)

    # -- address spaces ----------------------------------------------------------------
    def apply_op(self, op: MemoryOp) -> None:
        """Carry out one ``mmap``/``munmap``."""
        proc = self._process(op.process)
        start, end = op.first_vpn, op.first_vpn + op.n_pages
        if op.n_pages <= 0 or start < 0 or end > (1 << 36):
            raise ConfigError(f"process {op.process}: bad range {start:#x}+{op.n_pages}")
        if op.kind == MemoryOpKind.MAP:
            overlap = (proc.vma_start < end) & (proc.vma_end > start)
            if np.any(overlap):
                raise ConfigError(
                    f"process {op.process}: mmap at vpn {start:#x} overlaps a mapping"
                )
            order = np.searchsorted(proc.vma_start, start)
            proc.vma_start = np.insert(proc.vma_start, order, start)
            proc.vma_end = np.insert(proc.vma_end, order, end)
            proc.vma_file = np.insert(proc.vma_file, order, op.file_backed)
        else:
            self._unmap_range(proc, start, end)

    def _unmap_range(self, proc: Process, start: int, end: int) -> None:
        vpns = np.arange(start, end, dtype=np.int64)
        ptes = proc.space.page_table.leaf_entries(vpns)
        present = (ptes & PTE_PRESENT) != 0
        swapped = ~present & ((ptes & PTE_SWAP) != 0)
        touched = present | swapped
        if np.any(touched):
            proc.space.page_table.set_leaf_entries(vpns[touched], np.zeros(int(touched.sum()),
                                                                          np.uint64))
            proc.space.flush_tlb(vpns[present], self.mmu)
        if np.any(swapped):
            self.swap.discard(_pte_frame(ptes[swapped]))
        if np.any(present):
            self.free_pages(_pte_frame(ptes[present]))
        # Trim, split or drop the mappings that overlap [start, end).
        keep_s, keep_e, keep_f = [], [], []
        for s, e, f in zip(proc.vma_start.tolist(), proc.vma_end.tolist(),
                           proc.vma_file.tolist(), strict=True):
            if e <= start or s >= end:
                keep_s.append(s), keep_e.append(e), keep_f.append(f)
                continue
            if s < start:
                keep_s.append(s), keep_e.append(start), keep_f.append(f)
            if e > end:
                keep_s.append(end), keep_e.append(e), keep_f.append(f)
        proc.vma_start = np.array(keep_s, np.int64)
        proc.vma_end = np.array(keep_e, np.int64)
        proc.vma_file = np.array(keep_f, np.bool_)

    def _process(self, index: int) -> Process:
        if not 0 <= index < len(self.processes):
            raise ConfigError(f"no guest process {index} (have 0..{len(self.processes) - 1})")
        return self.processes[index]

    # -- accesses ----------------------------------------------------------------------
    def access(self, batch: AccessBatch, now_ns: int) -> AccessResult:
        """Serve one tick's accesses (page fidelity): faults first, then the touches."""
        self.now_ns = now_ns
        c = self.counters
        before = (c.minor_faults, c.major_faults, c.time_ns)
        for op in batch.ops:
            self.apply_op(op)
        dropped_mask = np.zeros(len(batch), dtype=np.bool_)
        served_refs = 0
        procs = batch.process
        if procs.size and procs[0] == procs.min() == procs.max():  # one process: no selection
            dropped_mask, served_refs = self._access_process(
                self._process(int(procs[0])), batch.vpn, batch.is_write, batch.refs,
                batch.content)
            procs = procs[:0]
        for index in np.unique(procs).tolist():
            sel = np.flatnonzero(batch.process == index)
            d, r = self._access_process(self._process(index), batch.vpn[sel],
                                        batch.is_write[sel], batch.refs[sel],
                                        batch.content[sel])
            dropped_mask[sel] = d
            served_refs += r
        c.refs += served_refs
        return AccessResult(served_refs, c.time_ns - before[2], c.minor_faults - before[0],
                            c.major_faults - before[1], int(dropped_mask.sum()), dropped_mask)

    def _access_process(self, proc: Process, vpns: np.ndarray, writes: np.ndarray,
                        refs: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, int]:
        # Accesses happen in order: in chunks small enough that a chunk's faults
        # fit in memory, so pages touched earlier in the tick may be reclaimed
        # for later ones (a tick touching more than memory holds thrashes).
        chunk = max(1, (self.config.memory_pages - self.high_pages) // 4)
        dropped = np.zeros(vpns.size, dtype=np.bool_)
        served = 0
        for lo in range(0, vpns.size, chunk):
            hi = lo + chunk
            dropped[lo:hi], r = self._access_chunk(proc, vpns[lo:hi], writes[lo:hi],
                                                   refs[lo:hi], tokens[lo:hi])
            served += r
        return dropped, served

    def _access_chunk(self, proc: Process, vpns: np.ndarray, writes: np.ndarray,
                      refs: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, int]:
        table = proc.space.page_table
        stamp = self.now_stamp
        # Mark what is resident as used now, so reclaim for this chunk's faults
        # prefers pages it does not touch.
        n = vpns.size
        vpns = np.ascontiguousarray(vpns, dtype=np.int64)
        ptes = table.leaf_entries(vpns)
        idx = np.empty(n, dtype=np.int64)
        n_missing = _stamp_present(ptes, stamp, self.last_stamp, self.ref, idx)
        if n_missing == 0:  # the common case: every page resident, no fault to take
            return self._touch_resident(ptes, writes, refs, tokens)
        # ``idx``: the entries that may be missing. Without guest reclaim in between,
        # faulting pages in changes no other entry, so only those are walked again.
        idx = idx[:n_missing]
        dropped = np.zeros(n, dtype=np.bool_)
        c = self.counters
        reclaimed = False
        for _ in range(4):  # reclaim may evict a page of this very chunk: fault it back
            idx = idx[((ptes[idx] & PTE_PRESENT) == 0) & ~dropped[idx]]
            if idx.size == 0:
                break
            runs = c.reclaim_runs
            failed = self.fault_in(proc, sorted_unique(vpns[idx]))
            if failed.size:
                dropped |= np.isin(vpns, failed)
            if c.reclaim_runs == runs:
                ptes[idx] = table.leaf_entries(vpns[idx])
            else:
                reclaimed = True
                ptes = table.leaf_entries(vpns)
                idx = np.flatnonzero((ptes & PTE_PRESENT) == 0)
        if not dropped.any() and (not idx.size or np.all(ptes & PTE_PRESENT)):
            # Every page mapped and stamped (the faulted ones by the fault); after a
            # reclaim the refaulted pages are stamped again, as below. Serve them.
            if reclaimed:
                _stamp_present(ptes, stamp, self.last_stamp, self.ref, _NO_INDICES)
            return self._touch_resident(ptes, writes, refs, tokens)
        dropped |= (ptes & PTE_PRESENT) == 0
        ok = ~dropped
        ppns = _pte_frame(ptes[ok])
        if ok.all():  # the common case: every page of the chunk was resident already
            _stamp_present(ptes, stamp, self.last_stamp, self.ref, _NO_INDICES)
        else:
            self.last_stamp[ppns] = stamp
            self.ref[ppns] = True
        w = writes[ok]
        if np.any(w):
            self.dirty[ppns[w]] = True
            self.counters.time_ns += self.memory.write_pages(ppns[w], tokens[ok][w])
        if np.any(~w):
            self.counters.time_ns += self.memory.touch_pages(ppns[~w])
        return dropped, int(refs[ok].sum())

    def _touch_resident(self, ptes: np.ndarray, writes: np.ndarray, refs: np.ndarray,
                        tokens: np.ndarray) -> tuple[np.ndarray, int]:
        """Serve a chunk whose pages are all mapped (and stamped as used already).

        The written pages are marked dirty, then the writes and the reads go
        over the bus.
        """
        n = ptes.size
        w_ppns = np.empty(n, dtype=np.int64)
        w_tokens = np.empty(n, dtype=np.uint64)
        r_ppns = np.empty(n, dtype=np.int64)
        n_w, n_r, served = _split_touches(ptes, np.ascontiguousarray(writes, dtype=np.bool_),
                                          np.ascontiguousarray(tokens, dtype=np.uint64),
                                          np.ascontiguousarray(refs, dtype=np.int64),
                                          self.dirty, w_ppns, w_tokens, r_ppns)
        if n_w:
            self.counters.time_ns += self.memory.write_pages(w_ppns[:n_w], w_tokens[:n_w])
        if n_r:
            self.counters.time_ns += self.memory.touch_pages(r_ppns[:n_r])
        return np.zeros(n, dtype=np.bool_), int(served)

    def access_mmu(self, batch: AccessBatch, now_ns: int, path: TranslationPath
                   ) -> AccessResult:
        """Serve one tick's references (mmu fidelity): each through the vCPU's MMU, in order.

        ``path`` is what stands behind the MMU (the hypervisor's side of
        translation). The kernel's ``mmu`` must be set: its TLB and walks are used.
        """
        mmu = self.mmu
        if mmu is None:
            raise ConfigError("guest kernel: mmu fidelity needs the vCPU's MMU")
        self.now_ns = now_ns
        c, m = self.counters, mmu.counters
        before = (c.minor_faults, c.major_faults, c.time_ns)
        mmu_before = (m.time_ns, m.refs)
        for op in batch.ops:
            self.apply_op(op)
        n = len(batch)
        dropped = np.zeros(n, dtype=np.bool_)
        host_ns = 0.0
        if n:
            # Runs of one process each, in batch order: a switch is a CR3 load.
            procs = batch.process
            cuts = [0, *(np.flatnonzero(procs[1:] != procs[:-1]) + 1).tolist(), n]
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
                host_ns += self._run_mmu(self._process(int(procs[lo])), batch.vpn[lo:hi],
                                         batch.is_write[lo:hi], batch.content[lo:hi],
                                         dropped[lo:hi], path)
        served = int(batch.refs[~dropped].sum())
        c.refs += served
        # Translation beyond the TLB lookup every reference makes, exits included.
        c.time_ns += host_ns + (m.time_ns - mmu_before[0]) - (m.refs - mmu_before[1]) * (
            mmu.costs.tlb_hit_ns)
        return AccessResult(served, c.time_ns - before[2], c.minor_faults - before[0],
                            c.major_faults - before[1], int(dropped.sum()), dropped)

    def _run_mmu(self, proc: Process, vpns: np.ndarray, writes: np.ndarray,
                 tokens: np.ndarray, dropped: np.ndarray, path: TranslationPath) -> float:
        """One process's run of references; returns the hypervisor's fault time."""
        mmu = self.mmu
        space = proc.space
        if mmu.asid != space.asid or mmu.hw_root < 0:
            mmu.load_cr3(space.asid, space.root_ppn)
        vpns = np.ascontiguousarray(vpns, dtype=np.int64)
        writes = np.ascontiguousarray(writes, dtype=np.bool_)
        tokens = np.ascontiguousarray(tokens, dtype=np.uint64)
        table = space.page_table
        n = vpns.size
        start = marked = 0  # next reference to run; references before ``marked`` are marked
        host_ns = 0.0
        while start < n:
            end = min(n, start + TRANSLATE_WINDOW_REFS)
            mmu_ns = mmu.counters.time_ns
            tb = path.translate(mmu, vpns[start:end], writes[start:end], tokens=tokens[start:end])
            host_ns += tb.time_ns - (mmu.counters.time_ns - mmu_ns)
            stop = start + tb.done
            if tb.fault is None:
                start = stop
                continue
            self._mark_used(table, vpns[marked:stop], writes[marked:stop])
            if tb.fault.kind == FaultKind.GUEST_NOT_PRESENT:
                if self._fault_around(proc, vpns[stop:stop + FAULT_AROUND_REFS]):
                    start = marked = stop
                    continue
            elif tb.fault.kind == FaultKind.GUEST_PROTECTION:
                # The guest maps nothing read-only: a write there is a bad access.
                self.counters.invalid_accesses += 1
            else:
                raise InvariantViolation(f"guest kernel: unexpected {tb.fault.kind.name} "
                                         "from the MMU path")
            dropped[stop] = True
            start = marked = stop + 1
        self._mark_used(table, vpns[marked:n], writes[marked:n])
        return host_ns

    def _fault_around(self, proc: Process, window: np.ndarray) -> bool:
        """Fault ``window[0]`` in, with the window's other unmapped pages that have room.

        The others are pages inside a mapping (or in swap), faulted in only into
        free memory above the high watermark: fault-around never makes the guest
        reclaim, nor counts a bad access twice. Returns whether ``window[0]`` is mapped.
        """
        vpn = window[:1]
        ptes = proc.space.page_table.leaf_entries(window)
        others = np.unique(window[(ptes & PTE_PRESENT) == 0])
        others = others[others != vpn[0]]
        room = self.allocator.n_free - self.high_pages
        if others.size and room > 0:
            swapped = (proc.space.page_table.leaf_entries(others) & PTE_SWAP) != 0
            slot = np.searchsorted(proc.vma_end, others, side="right")
            inside = slot < proc.vma_start.size
            inside[inside] = proc.vma_start[slot[inside]] <= others[inside]
            others = others[inside | swapped][:room]
        else:
            others = others[:0]
        failed = self.fault_in(proc, np.concatenate([vpn, others]))
        return not np.any(failed == vpn[0])

    def _mark_used(self, table, vpns: np.ndarray, writes: np.ndarray) -> None:
        if vpns.size:
            _mark_used(table.leaf_entries(vpns), writes, self.now_stamp, self.last_stamp,
                       self.ref, self.dirty)

    def fault_in(self, proc: Process, vpns: np.ndarray) -> np.ndarray:
        """Handle faults on distinct ``vpns`` of ``proc``; returns the VPNs that failed."""
        c = self.counters
        table = proc.space.page_table
        ptes = table.leaf_entries(vpns)
        swapped = (ptes & PTE_SWAP) != 0
        slot = np.searchsorted(proc.vma_end, vpns, side="right")
        inside = slot < proc.vma_start.size
        inside[inside] = proc.vma_start[slot[inside]] <= vpns[inside]
        inside |= swapped
        is_file = np.zeros(vpns.size, dtype=np.bool_)
        is_file[inside & ~swapped] = proc.vma_file[slot[inside & ~swapped]]
        invalid = ~inside
        c.invalid_accesses += int(invalid.sum())
        wanted = vpns[inside]
        # Page-table pages first: their allocation may reclaim, and reclaim must
        # not meet data pages that are allocated but not mapped yet.
        proc.space.page_table.ensure_tables(wanted)
        ppns = self.alloc_pages(wanted.size, PageKind.ANON)
        failed = wanted[ppns.size:]
        if failed.size:
            c.oom_events += int(failed.size)
        wanted = wanted[: ppns.size]
        kinds_swapped = swapped[inside][: ppns.size]
        kinds_file = is_file[inside][: ppns.size]
        minor = ~kinds_swapped & ~kinds_file
        # Contents: zeroes for demand-zero pages, the swap slot's data, the file's data.
        contents = np.zeros(ppns.size, dtype=np.uint64)
        if np.any(kinds_swapped):
            slots = _pte_frame(ptes[inside][: ppns.size][kinds_swapped])
            contents[kinds_swapped] = self.swap.swap_in(slots)
            c.swap_ins += int(kinds_swapped.sum())
            c.time_ns += kinds_swapped.sum() * self.swap.op_ns
        if np.any(kinds_file):
            contents[kinds_file] = file_page_token(wanted[kinds_file])
            c.file_reads += int(kinds_file.sum())
            c.time_ns += kinds_file.sum() * self.swap.op_ns
        c.minor_faults += int(minor.sum())
        c.major_faults += int((~minor).sum())
        c.time_ns += ppns.size * self.costs.guest_fault_ns
        c.time_ns += self.memory.write_pages(ppns, contents)
        self.kind[ppns[kinds_file]] = PageKind.FILE
        self.proc[ppns] = proc.index
        self.vpn[ppns] = wanted
        self.loaded_stamp[ppns] = self.now_stamp
        self.last_stamp[ppns] = self.now_stamp
        self.ref[ppns] = True
        self.dirty[ppns] = kinds_swapped  # a page read back from swap has no copy there now
        proc.space.map(wanted, ppns, writable=True)
        return np.concatenate([vpns[invalid], failed])

    # -- reclaim -----------------------------------------------------------------------
    def reclaim(self, n_pages: int) -> int:
        """Free up to ``n_pages`` by evicting process and cache pages; returns pages freed."""
        if n_pages <= 0:
            return 0
        c = self.counters
        c.reclaim_runs += 1
        evict_anon = self.swap.n_free > 0
        victims = self._choose_victims(n_pages, evict_anon)
        if victims.size == 0:
            return 0
        anon = victims[self.kind[victims] == PageKind.ANON]
        if anon.size > self.swap.n_free:
            self.oldest.forget()  # some of the oldest stay: the kept choice no longer holds
            keep = self.swap.n_free
            victims = np.concatenate([victims[self.kind[victims] != PageKind.ANON], anon[:keep]])
            anon = anon[:keep]
        files = victims[self.kind[victims] == PageKind.FILE]
        dirty_files = files[self.dirty[files]]
        c.file_drops += int(files.size - dirty_files.size)
        c.writebacks += int(dirty_files.size)
        c.time_ns += dirty_files.size * self.swap.op_ns
        # Replace each victim's entry: a swap entry for anonymous pages, nothing for files.
        new_ptes = np.zeros(victims.size, dtype=np.uint64)
        is_anon = self.kind[victims] == PageKind.ANON
        if anon.size:
            # Reading them may make the host fetch them back first (double paging).
            tokens, cost = self.memory.read_pages(anon, for_swap_out=True)
            c.time_ns += cost
            slots = self.swap.swap_out(tokens)
            c.swap_outs += int(anon.size)
            new_ptes[is_anon] = (slots.astype(np.uint64) << np.uint64(PTE_FRAME_SHIFT)) | PTE_SWAP
        for index in np.unique(self.proc[victims]).tolist():
            sel = self.proc[victims] == index
            proc = self.processes[index]
            vpns = self.vpn[victims[sel]]
            proc.space.page_table.set_leaf_entries(vpns, new_ptes[sel])
            proc.space.flush_tlb(vpns, self.mmu)
        self.free_pages(victims)
        return int(victims.size)

    def _choose_victims(self, n_pages: int, evict_anon: bool) -> np.ndarray:
        kinds = self.kind
        policy = self.config.reclaim_policy
        if policy == "clock":
            victims, self.clock_hand = _clock_victims(kinds, self.ref, self.clock_hand, n_pages,
                                                      evict_anon, True)
            return victims
        if policy != "random":
            if n_pages <= 0:
                return np.zeros(0, dtype=np.int64)
            # Oldest first; ties (same tick) broken by PPN for determinism.
            age = self.loaded_stamp if policy == "fifo" else self.last_stamp
            chosen = self.oldest.choose(kinds, age, evict_anon, n_pages, self.now_stamp)
            if chosen is not None:
                return chosen
        evictable = (kinds == PageKind.FILE) | ((kinds == PageKind.ANON) & evict_anon)
        candidates = np.flatnonzero(evictable)
        if candidates.size <= n_pages:  # all of them, in PPN order
            return candidates
        return np.sort(self.rng.choice(candidates, n_pages, replace=False))  # policy random

    # -- reports -----------------------------------------------------------------------
    def count(self, kind: PageKind) -> int:
        """Pages of ``kind``."""
        return int(_count_kind(self.kind, np.uint8(kind)))

    def stats(self) -> GuestMemoryStats:
        """What the guest would put on the balloon's stats queue."""
        free = self.allocator.n_free
        cached = self.count(PageKind.FILE)
        c = self.counters
        return GuestMemoryStats(
            free_pages=free, available_pages=free + cached, cached_pages=cached,
            total_pages=self.config.memory_pages, swap_ins=c.swap_ins, swap_outs=c.swap_outs,
            major_faults=c.major_faults, minor_faults=c.minor_faults,
        )

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` unless page kinds, lists and maps agree."""
        self.allocator.check_invariants()
        self.swap.check_invariants()
        free = self.kind == PageKind.FREE
        if not np.array_equal(free, ~self.allocator.allocated):
            raise InvariantViolation("guest: page kinds and the free list disagree")
        if not np.array_equal(self.kind == PageKind.TABLE, self.tables.is_table_frame):
            raise InvariantViolation("guest: page-table pages and page kinds disagree")
        in_use = (self.kind == PageKind.ANON) | (self.kind == PageKind.FILE)
        n_mapped = []
        for proc in self.processes:
            mapped = np.flatnonzero((self.proc == proc.index) & in_use)
            ptes = proc.space.page_table.leaf_entries(self.vpn[mapped])
            if np.any((ptes & PTE_PRESENT) == 0) or np.any(_pte_frame(ptes) != mapped):
                raise InvariantViolation(f"guest: process {proc.index} reverse map is stale")
            n_mapped.append(mapped.size)
        # Every present entry is one the reverse map names (no page mapped twice or
        # mapped free), and every swap entry holds a slot of its own.
        slots = [np.zeros(0, dtype=np.int64)]
        for proc in self.processes:
            n_present = 0
            for start, end in zip(proc.vma_start.tolist(), proc.vma_end.tolist(), strict=True):
                ptes = proc.space.page_table.leaf_entries(np.arange(start, end))
                present = (ptes & PTE_PRESENT) != 0
                n_present += int(np.count_nonzero(present))
                slots.append(_pte_frame(ptes[((ptes & PTE_SWAP) != 0) & ~present]))
            if n_present != n_mapped[proc.index]:
                raise InvariantViolation(f"guest: process {proc.index} has {n_present} pages "
                                         f"mapped, its reverse map names {n_mapped[proc.index]}")
        held = np.concatenate(slots)
        if held.size != self.swap.n_used:
            raise InvariantViolation(
                f"guest: {held.size} swap entries but {self.swap.n_used} slots in use"
            )
        if not np.array_equal(np.sort(held), np.flatnonzero(self.swap.used)):
            raise InvariantViolation("guest: swap entries and the slots in use disagree")


def _pte_frame(ptes: np.ndarray) -> np.ndarray:
    return ((ptes & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
