"""The guest's memory under pressure: watermarks, allocation, reclaim, out of memory.

What is modelled
----------------
Faults allocate from the free list (``allocator.py``). When free pages fall
below the *low* watermark, the kernel reclaims until they reach *high*, as
kswapd does: clean file pages are dropped, anonymous pages written to the swap
device (their entries then hold the slot, ``pages.py``), dirty file pages
written back. The victims are chosen by the policy named in
``reclaim_policy``, one of ``RECLAIM_POLICIES`` (``replacement/names.py``:
``fifo``, ``lru``, ``clock`` or ``random``; OPT needs the future and is trace
replay's alone), among the file pages and, while there is swap space, the
anonymous ones. If nothing can be reclaimed (swap full, everything pinned) an
allocation fails: with deflate-on-oom the balloon driver gives pages back
first; otherwise the access is dropped and counted as an out-of-memory event.

Watermarks follow Linux: ``min_free_kbytes = sqrt(16 * memory_kbytes)`` clamped
to [128 KiB, 256 MiB]; ``low = 5/4 min``; ``high = 3/2 min``
(``mm/page_alloc.c``: ``calculate_min_free_kbytes``, ``__setup_per_zone_wmarks``).

References: Linux ``mm/vmscan.c`` (kswapd, watermarks), ``mm/page_alloc.c``;
OSTEP ch. 22.
"""

from __future__ import annotations

import math

import numpy as np

from hvmem.errors import GuestOutOfMemoryError
from hvmem.guest.kernel_state import KernelState
from hvmem.guest.pages import PTE_SWAP, PageKind
from hvmem.hardware.page_table import PTE_FRAME_SHIFT

#: Pages reclaimed per step, Linux's SWAP_CLUSTER_MAX.
SWAP_CLUSTER_PAGES = 32

#: The kinds reclaim may evict, by whether there is swap space: file pages always,
#: anonymous ones only with a slot to go to (``ReplacementPolicy.victims``' table).
_EVICTABLE = {
    False: np.array([kind == PageKind.FILE for kind in PageKind]),
    True: np.array([kind in (PageKind.ANON, PageKind.FILE) for kind in PageKind]),
}


def linux_watermarks_pages(memory_pages: int) -> tuple[int, int, int]:
    """(min, low, high) free-page watermarks Linux would set for this much memory.

    Linux never goes below 128 KiB; for toy guests of a few hundred KiB that
    would keep most of memory free, so min is also capped at 1/32 of memory.
    """
    memory_kib = memory_pages * 4
    min_kib = min(max(int(math.isqrt(memory_kib * 16)), 128), 262_144)
    min_pages = max(1, min(min_kib // 4, memory_pages // 32))
    return min_pages, min_pages + max(1, min_pages // 4), min_pages + max(2, min_pages // 2)


# -- allocation ------------------------------------------------------------------------
def alloc_table_page(kernel: KernelState) -> int:
    """One page for a page table, zeroed; reclaims first if free pages run very low."""
    if kernel.allocator.n_free <= kernel.min_pages // 2:
        reclaim(kernel, SWAP_CLUSTER_PAGES)
    if kernel.allocator.n_free == 0:
        raise GuestOutOfMemoryError("guest out of memory: no page left for a page table")
    ppn = kernel.allocator.alloc_one()
    kernel.set_kind(np.array([ppn]), PageKind.TABLE)
    kernel.counters.time_ns += kernel.memory.write_pages(np.array([ppn]),
                                                         np.zeros(1, np.uint64))
    return ppn


def alloc_pages(kernel: KernelState, n: int, kind: PageKind,
                allow_reclaim: bool = True) -> np.ndarray:
    """Take ``n`` pages for ``kind``, reclaiming first if free pages run low.

    Returns fewer than ``n`` pages (possibly none) when memory cannot be found.
    """
    # User allocations leave half the min watermark to the kernel's own
    # (page-table pages), as Linux's reserves do.
    reserve = kernel.min_pages // 2 + 1
    if allow_reclaim and kernel.allocator.n_free - n < kernel.low_pages:
        reclaim(kernel, n + kernel.high_pages - kernel.allocator.n_free)
    if kernel.allocator.n_free - reserve < n and allow_reclaim and kernel.oom_notifier:
        kernel.oom_notifier(n + reserve - kernel.allocator.n_free)
    got = max(0, min(n, kernel.allocator.n_free - reserve))
    ppns = kernel.allocator.alloc(got)
    kernel.set_kind(ppns, kind)
    return ppns


def free_pages(kernel: KernelState, ppns: np.ndarray) -> None:
    """Return pages to the free list; they keep their contents (and host backing)."""
    kernel.set_kind(ppns, PageKind.FREE)  # proc and vpn no longer mean anything
    kernel.replacement.invalidate(ppns)
    kernel.dirty[ppns] = False
    kernel.allocator.free(ppns)


# -- reclaim ---------------------------------------------------------------------------
def reclaim(kernel: KernelState, n_pages: int) -> int:
    """Free up to ``n_pages`` by evicting process and cache pages; returns pages freed."""
    if n_pages <= 0:
        return 0
    c = kernel.counters
    c.reclaim_runs += 1
    evict_anon = kernel.swap.n_free > 0
    victims = choose_victims(kernel, n_pages, evict_anon)
    if victims.size == 0:
        return 0
    anon = victims[kernel.kind[victims] == PageKind.ANON]
    if anon.size > kernel.swap.n_free:
        keep = kernel.swap.n_free
        kernel.replacement.keep(anon[keep:])  # no swap slot for them: they stay
        victims = np.concatenate([victims[kernel.kind[victims] != PageKind.ANON],
                                  anon[:keep]])
        anon = anon[:keep]
    files = victims[kernel.kind[victims] == PageKind.FILE]
    dirty_files = files[kernel.dirty[files]]
    c.file_drops += int(files.size - dirty_files.size)
    c.writebacks += int(dirty_files.size)
    c.time_ns += dirty_files.size * kernel.swap.op_ns
    # Replace each victim's entry: a swap entry for anonymous pages, nothing for files.
    new_ptes = np.zeros(victims.size, dtype=np.uint64)
    is_anon = kernel.kind[victims] == PageKind.ANON
    if anon.size:
        # Reading them may make the host fetch them back first (double paging).
        tokens, cost = kernel.memory.read_pages(anon, for_swap_out=True)
        c.time_ns += cost
        slots = kernel.swap.swap_out(tokens)
        c.swap_outs += int(anon.size)
        new_ptes[is_anon] = (slots.astype(np.uint64) << np.uint64(PTE_FRAME_SHIFT)) | PTE_SWAP
    for index in np.unique(kernel.proc[victims]).tolist():
        sel = kernel.proc[victims] == index
        proc = kernel.processes[index]
        vpns = kernel.vpn[victims[sel]].astype(np.int64)
        proc.space.page_table.set_leaf_entries(vpns, new_ptes[sel])
        proc.space.flush_tlb(vpns, kernel.mmu)
    use_stamp = kernel.replacement.use_stamp
    if not use_stamp.size or np.any(use_stamp[victims] >= kernel.now_stamp):
        kernel.young_evictions += 1
    free_pages(kernel, victims)
    return int(victims.size)


def choose_victims(kernel: KernelState, n_pages: int, evict_anon: bool) -> np.ndarray:
    """Up to ``n_pages`` pages to evict, in order: file pages, anonymous ones if ``evict_anon``."""
    return kernel.replacement.victims(n_pages, kernel.kind, _EVICTABLE[evict_anon],
                                      kernel.now_stamp)
