"""The guest's physical page allocator: its own free and allocated lists.

What is modelled
----------------
A guest OS manages its "physical" memory (PPNs ``0 .. n_ppns-1``) with a free
list of its own, invisible to the hypervisor: the hypervisor sees only which
PPNs are touched. Pages freed by the guest go back on this list with their data
(and their machine backing) intact, so the guest reusing its own memory never
makes the VM consume more: the next allocation hands the most recently freed
page out again (LIFO, as Linux's per-CPU page lists prefer cache-hot pages).
A fresh guest fills its memory upward, lowest PPN first. The free list is a
stack written only where used (``free_stack.py``): its part never used since
boot is known without being stored, so a guest that keeps most of its memory
allocated commits little of it.

Invariants: every PPN is either free or allocated, never both; ``free +
allocated == n_ppns``; a PPN is never handed out twice without a free between.

Counters (pages): ``allocations``, ``frees``.

References: Linux ``mm/page_alloc.c`` (free lists, per-CPU lists); OSTEP ch. 17.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.errors import ConfigError, GuestOutOfMemoryError, InvariantViolation
from hvmem.guest.free_stack import LazyFreeStack


@dataclass(slots=True)
class AllocatorCounters:
    """Event tallies of the guest page allocator, in pages."""

    allocations: int = 0  # pages handed out
    frees: int = 0  # pages returned


class PageAllocator:
    """Free and allocated lists of one guest's physical pages.

    Args:
        n_ppns: the guest's physical memory in 4 KiB pages.
    """

    def __init__(self, n_ppns: int):
        if n_ppns <= 0:
            raise ConfigError(f"guest memory must hold at least one page, found {n_ppns}")
        self.n_ppns = n_ppns
        self.allocated = np.zeros(n_ppns, dtype=bool)
        # Free list as a stack, lowest PPNs on top so a fresh guest fills memory upward
        # (int32 where PPNs fit, and written only where used: see free_stack.py).
        self.free_stack = LazyFreeStack(n_ppns)
        # Free pages already reported to the host (free page reporting); taking a
        # page off the free list clears it, as Linux clears PG_reported.
        self.reported = np.zeros(n_ppns, dtype=bool)
        self.counters = AllocatorCounters()

    @property
    def n_free(self) -> int:
        """Pages on the free list."""
        return self.free_stack.size

    @property
    def n_allocated(self) -> int:
        """Pages on the allocated list."""
        return self.n_ppns - self.n_free

    def alloc(self, n: int) -> np.ndarray:
        """Take ``n`` pages off the free list (most recently freed first)."""
        if n > self.n_free:
            raise GuestOutOfMemoryError(
                f"guest memory exhausted: {n} pages asked, {self.n_free} free")
        ppns = self.free_stack.pop(n, top_first=True)
        self.allocated[ppns] = True
        self.reported[ppns] = False
        self.counters.allocations += n
        return ppns

    def alloc_one(self) -> int:
        """Take one page off the free list."""
        return int(self.alloc(1)[0])

    def free(self, ppns: np.ndarray | int) -> None:
        """Return pages to the free list."""
        ppns = np.atleast_1d(np.asarray(ppns, dtype=np.int64))
        if ppns.size and (ppns.min() < 0 or ppns.max() >= self.n_ppns):
            self.allocated[ppns]  # noqa: B018 -- raises IndexError, as indexing always did
        if not _release(ppns, self.allocated):
            raise InvariantViolation("guest allocator: freeing a page that is not allocated")
        self.free_stack.push(ppns)
        self.counters.frees += ppns.size

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` unless the two lists partition the pages."""
        on_list = self.free_stack.contents()
        if np.unique(on_list).size != on_list.size or np.any(self.allocated[on_list]):
            raise InvariantViolation("guest allocator: free list corrupt")
        if self.n_free + int(np.count_nonzero(self.allocated)) != self.n_ppns:
            raise InvariantViolation("guest allocator: pages neither free nor allocated")


@njit(cache=True, nogil=True)
def _release(ppns, allocated):
    """Clear ``allocated`` for distinct, allocated ``ppns``; False (nothing changed) if not.

    A page repeated in ``ppns`` is caught when it is found cleared the second time.
    """
    for i in range(ppns.size):
        p = ppns[i]
        if not allocated[p]:
            for j in range(i):
                allocated[ppns[j]] = True
            return False
        allocated[p] = False
    return True
