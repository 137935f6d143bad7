"""Recency stamps: simulated time as an int32 counter for per-page "last used" arrays.

Reclaim policies compare when pages were mapped or last touched; they never
subtract those times. Kept as int64 nanoseconds, each such array costs 8 bytes
a page (8 MiB per GiB of guest memory). A :class:`StampClock` follows the
simulated time and hands out a *stamp* instead: the same time keeps its stamp,
each later time gets the next one. Stamps are ordered exactly as the times
they stand for, so every victim choice is the same, in an int32 per page.

Time never goes back (the order could not be kept), and a clock that would
pass 2**31 distinct times refuses rather than wrap; both are
:class:`~hvmem.errors.InvariantViolation`.
"""

from __future__ import annotations

import numpy as np

from hvmem.errors import InvariantViolation

#: The greatest stamp (stamps are int32).
STAMP_MAX = int(np.iinfo(np.int32).max)


class StampClock:
    """Simulated time and its stamp.

    Args:
        owner: who keeps the clock, for error messages ("host", "guest").
        first_stamp: the stamp of time 0, where the clock starts (a value below
            it can then mean "never").
    """

    __slots__ = ("owner", "now_ns", "stamp")

    def __init__(self, owner: str, first_stamp: int = 0):
        self.owner = owner
        self.now_ns = 0
        self.stamp = first_stamp

    def advance(self, now_ns: int) -> None:
        """Move to ``now_ns`` (the same time or a later one)."""
        now_ns = int(now_ns)
        if now_ns == self.now_ns:
            return
        if now_ns < self.now_ns:
            raise InvariantViolation(
                f"{self.owner} time went back from {self.now_ns} ns to {now_ns} ns")
        if self.stamp >= STAMP_MAX:
            raise InvariantViolation(f"{self.owner}: more than {STAMP_MAX + 1} distinct times; "
                                     "stamps would overflow int32 (use a longer tick)")
        self.now_ns = now_ns
        self.stamp += 1
