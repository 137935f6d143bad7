"""A free list of numbered things (pages, swap slots) as a stack written only where used.

What is modelled
----------------
The guest's page allocator and its swap device keep their free numbers
``0 .. n-1`` on a stack: the next one handed out is the one freed last (LIFO),
and a fresh stack hands out the lowest first, as if position ``j`` held
``n-1-j``. Written out in full at creation that is ``n`` entries in memory for
every guest, most of them never used: a guest of 1 Mi pages that never empties
its free list, or never swaps, still pays 4 MiB for each stack.

This stack is allocated with ``np.empty`` (the OS commits no memory until it is
written) and holds the fresh order implicitly: positions below the *low-water
mark* were never written since creation and hold ``n-1-j`` by definition.
The top only comes down to the mark by pops, which then read the implicit
values as a computation (an ``arange``) and lower the mark; pushes only write
at or above the top, so at or above the mark. What is ever written is the band
between the lowest the top went and the highest: a guest that keeps most of
its memory allocated, or a swap device it barely uses, commits a few pages of
its stack instead of all of them. The numbers handed out, and their order, are
exactly those of a stack filled with ``arange(n-1, -1, -1)`` at creation.

Invariants: ``0 <= low_water <= size <= n``; the numbers on the stack are
distinct and below ``n`` (their owners check that what they push is theirs).

References: Linux ``mm/page_alloc.c`` (free lists as stacks, per-CPU lists).
"""

from __future__ import annotations

import numpy as np

from hvmem.errors import InvariantViolation
from hvmem.hardware.frames import index_dtype


class LazyFreeStack:
    """A LIFO stack of the free numbers below ``n``, all free and lowest on top at first.

    Args:
        n: how many numbers (pages or slots); the stack never holds more.
    """

    __slots__ = ("n", "size", "low_water", "_stack")

    def __init__(self, n: int):
        self.n = n
        self.size = n  # entries on the stack; the top is position size - 1
        # Positions below it were never written: position j holds n - 1 - j.
        self.low_water = n
        # int32 where numbers fit; np.empty: a page of it costs memory once written.
        self._stack = np.empty(n, dtype=index_dtype(n))

    @property
    def written_bytes(self) -> int:
        """Bytes of the stack written at most since creation (those from the low-water mark up).

        An upper bound on the memory the stack has committed.
        """
        return (self.n - self.low_water) * self._stack.itemsize

    def pop(self, k: int, top_first: bool = False) -> np.ndarray:
        """Take the top ``k`` numbers off (a new int64 array).

        In stack order (the top one last), or the top one first if ``top_first``.
        The caller checks that there are ``k`` (and raises its own error).
        """
        hi = self.size
        lo = hi - k
        if lo < 0 or k < 0:
            raise InvariantViolation(f"free stack: {k} numbers asked, {hi} on the stack")
        low = self.low_water
        self.size = lo
        if lo >= low:  # all of them written since creation: a slice
            part = self._stack[lo:hi]
            return (part[::-1] if top_first else part).astype(np.int64)
        # Partly or wholly below the low-water mark: those values are known.
        mid = min(hi, low)
        out = np.empty(k, dtype=np.int64)
        out[: mid - lo] = np.arange(self.n - 1 - lo, self.n - 1 - mid, -1, dtype=np.int64)
        out[mid - lo :] = self._stack[mid:hi]
        self.low_water = lo
        return out[::-1].copy() if top_first else out

    def push(self, numbers: np.ndarray) -> None:
        """Put ``numbers`` on, in order: the last one on top.

        The caller checks that they are free numbers not on the stack already.
        """
        k = numbers.size
        self._stack[self.size : self.size + k] = numbers
        self.size += k

    def contents(self) -> np.ndarray:
        """Every number on the stack, bottom first (a new array: for checks, not hot paths)."""
        out = np.empty(self.size, dtype=self._stack.dtype)
        low = self.low_water
        out[:low] = np.arange(self.n - 1, self.n - 1 - low, -1, dtype=self._stack.dtype)
        out[low:] = self._stack[low : self.size]
        return out
