"""What a guest-physical page is used for, and what a page-table entry says of a page.

Every part of the guest kernel speaks of pages in these terms: per PPN the
kernel keeps a ``PageKind`` (free, process memory, page cache, page table or
balloon; ``kernel_state.py`` has the other per-page arrays), and what a process's
leaf entry for a virtual page holds tells where that page is.

The three kinds of leaf entry::

    present       P=1, frame field = the PPN
    swap entry    P=0, PTE_SWAP set, frame field = the slot on the swap device
    empty         zero: never touched, or unmapped (or dropped from the page cache)

Linux keeps swap entries in non-present PTEs the same way, so a fault finds
the slot without a search.

References: Linux ``include/linux/page-flags.h``, ``include/linux/swapops.h``.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from hvmem.hardware.page_table import PTE_FRAME_MASK, PTE_FRAME_SHIFT

#: A non-present entry with this bit holds a swap slot in its frame field.
PTE_SWAP = np.uint64(1 << 62)


class PageKind(IntEnum):
    """What a guest-physical page is used for."""

    FREE = 0
    ANON = 1  # process memory; evicted to swap
    FILE = 2  # page cache of a file mapping; dropped (or written back) on eviction
    TABLE = 3  # a page-table page; never evicted
    BALLOON = 4  # pinned by the balloon driver
    KERNEL = 5  # the kernel's own, sized by configured memory (struct page); never freed


def pte_frames(ptes: np.ndarray) -> np.ndarray:
    """The frame field of each entry: the PPN of a present one, the slot of a swap entry."""
    return ((ptes & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
