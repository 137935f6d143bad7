"""The guest's page faults: demand-zero, swap-in and file pages.

What is modelled
----------------
A touch of a mapped page that has no page-table entry is a fault::

    entry holds a swap slot           -> major fault: read it back (swap-in)
    file mapping                      -> major fault: read the file page from disk
    anonymous mapping, never touched  -> minor fault: allocate a page, zero it
    outside every mapping             -> invalid access (counted, dropped)

A fault takes its page from the allocator, which may reclaim first
(``reclaim.py``); a page that cannot be had is an out-of-memory event and its
access is dropped. The page's content is written over the memory bus: zeroes,
the swap slot's data (the slot is freed; the page is dirty, having no copy on
disk now) or the file's data. The reclaim policy is told the page was loaded.

Fault-around (mmu fidelity): a fault brings in with it the other unmapped pages
the next few thousand references touch, so faults are served in batches; only
into free memory above the high watermark, so it never makes the guest
reclaim, and only pages inside a mapping (or in swap), so a bad access is
never counted twice.

References: Linux ``mm/memory.c`` (do_anonymous_page, do_swap_page,
do_fault_around); OSTEP ch. 21.
"""

from __future__ import annotations

import numpy as np

from hvmem.core.mix import mix64
from hvmem.guest.kernel_state import KernelState
from hvmem.guest.pages import PTE_SWAP, PageKind, pte_frames
from hvmem.guest.process import Process
from hvmem.guest.reclaim import alloc_pages
from hvmem.hardware.page_table import PTE_PRESENT

#: mmu fidelity: references a guest fault looks ahead over for other unmapped
#: pages to fault in with it (fault-around), so faults are served in batches.
FAULT_AROUND_REFS = 4096


def file_page_token(vpn: np.ndarray) -> np.ndarray:
    """Content of a file page: a function of its place, so equal files are equal pages."""
    return mix64(np.asarray(vpn, dtype=np.uint64) + np.uint64(0xF11E_0000_0000_0000)) | np.uint64(1)


def fault_in(kernel: KernelState, proc: Process, vpns: np.ndarray) -> np.ndarray:
    """Handle faults on distinct ``vpns`` of ``proc``; returns the VPNs that failed."""
    c = kernel.counters
    table = proc.space.page_table
    ptes = table.leaf_entries(vpns)
    swapped = (ptes & PTE_SWAP) != 0
    slot, inside = proc.find_vma(vpns)
    inside |= swapped
    is_file = np.zeros(vpns.size, dtype=np.bool_)
    is_file[inside & ~swapped] = proc.vma_file[slot[inside & ~swapped]]
    invalid = ~inside
    c.invalid_accesses += int(invalid.sum())
    wanted = vpns[inside]
    # Page-table pages first: their allocation may reclaim, and reclaim must
    # not meet data pages that are allocated but not mapped yet.
    proc.space.page_table.ensure_tables(wanted)
    ppns = alloc_pages(kernel, wanted.size, PageKind.ANON)
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
        slots = pte_frames(ptes[inside][: ppns.size][kinds_swapped])
        contents[kinds_swapped] = kernel.swap.swap_in(slots)
        c.swap_ins += int(kinds_swapped.sum())
        c.time_ns += kinds_swapped.sum() * kernel.swap.op_ns
    if np.any(kinds_file):
        contents[kinds_file] = file_page_token(wanted[kinds_file])
        c.file_reads += int(kinds_file.sum())
        c.time_ns += kinds_file.sum() * kernel.swap.op_ns
    c.minor_faults += int(minor.sum())
    c.major_faults += int((~minor).sum())
    c.time_ns += ppns.size * kernel.costs.guest_fault_ns
    c.time_ns += kernel.memory.write_pages(ppns, contents)
    kernel.set_kind(ppns[kinds_file], PageKind.FILE)
    kernel.proc[ppns] = proc.index
    kernel.vpn[ppns] = wanted
    kernel.replacement.reset(ppns, kernel.now_stamp)
    kernel.dirty[ppns] = kinds_swapped  # a page read back from swap has no copy there now
    proc.space.map(wanted, ppns, writable=True)
    return np.concatenate([vpns[invalid], failed])


def fault_around(kernel: KernelState, proc: Process, window: np.ndarray) -> bool:
    """Fault ``window[0]`` in, with the window's other unmapped pages that have room.

    The others are pages inside a mapping (or in swap), faulted in only into
    free memory above the high watermark: fault-around never makes the guest
    reclaim, nor counts a bad access twice. Returns whether ``window[0]`` is mapped.
    """
    vpn = window[:1]
    ptes = proc.space.page_table.leaf_entries(window)
    others = np.unique(window[(ptes & PTE_PRESENT) == 0])
    others = others[others != vpn[0]]
    room = kernel.allocator.n_free - kernel.high_pages
    if others.size and room > 0:
        swapped = (proc.space.page_table.leaf_entries(others) & PTE_SWAP) != 0
        _, inside = proc.find_vma(others)
        others = others[inside | swapped][:room]
    else:
        others = others[:0]
    failed = fault_in(kernel, proc, np.concatenate([vpn, others]))
    return not np.any(failed == vpn[0])
