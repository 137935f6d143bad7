"""CLOCK (second chance): one reference bit per page and a circular hand.

The clock of Corbató (1968) as OSTEP §22.8 describes it. The bit is set on
every use, the load included, and cleared when the page leaves memory.

Reclaim
-------
The policy keeps a ``use_bit`` per page (``base.py``) and a hand over the page
numbers. A sweep starts at the hand: a candidate with its bit set has it
cleared and is passed over, the first candidates found with a clear bit are
the victims, in sweep order; the hand stays one past the last page looked at.
A sweep looks at every page at most twice (a second lap finds every
candidate's bit cleared by the first), so it ends with fewer victims only when
there are fewer candidates; a page is taken once even if the hand laps.

Reference strings
-----------------
While frames are free, pages fill them in order and the hand stays on frame 0.
On a miss with memory full, the hand looks at its frame: if the bit is set, it
clears it and moves on; the first frame found with a clear bit is the victim.
The new page goes there with its bit set, and the hand moves one past it.
(This is not the CLOCK of OSTEP's ``paging-policy.py``, which probes frames in
*random* order and keeps ``-b`` bits of counter per page; its answers are
random too.)

Sources: F. J. Corbató, "A paging experiment with the Multics system", MIT
Project MAC MAC-M-384, 1968; R. H. and A. C. Arpaci-Dusseau, *Operating
Systems: Three Easy Pieces*, ch. 22.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.replacement.base import HAND, HITS, USED, FrameReplay, ReplacementPolicy, grow


@njit(cache=True)
def sweep(kinds, evictable, ref, hand, n_wanted):
    """Second chance: sweep from ``hand``, clearing reference bits, taking clear candidates."""
    n = kinds.size
    out = np.empty(n_wanted, dtype=np.int64)
    taken = np.zeros(n, dtype=np.bool_)  # a page is chosen once, even if the hand laps
    found = 0
    steps = 0
    while found < n_wanted and steps < 2 * n:
        if evictable[kinds[hand]] and not taken[hand]:
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


class ClockPolicy(ReplacementPolicy):
    """CLOCK victims among ``n_pages`` pages, by reference bit and hand."""

    name = "clock"
    __slots__ = ("hand",)

    def __init__(self, n_pages: int) -> None:
        super().__init__()
        self.use_bit = np.zeros(n_pages, dtype=np.bool_)
        self.hand = 0  # the next page the sweep looks at

    def victims(self, n_pages: int, kinds: np.ndarray, evictable: np.ndarray,
                now_stamp: int | None = None) -> np.ndarray:
        """The first candidates with a clear bit from the hand on, in sweep order."""
        chosen, self.hand = sweep(kinds, evictable, self.use_bit, self.hand, max(0, n_pages))
        return chosen


@njit(cache=True)
def replay(ids, nframes, frame_of, page_in, ref, st):
    """CLOCK (second chance): a bit per frame set on each use, cleared by the passing hand."""
    used = st[USED]
    hand = st[HAND]
    hits = st[HITS]
    for i in range(ids.shape[0]):
        p = ids[i]
        f = frame_of[p]
        if f >= 0:
            hits += 1
            ref[f] = 1
            continue
        if used < nframes:
            f = used
            used += 1
        else:
            while ref[hand]:
                ref[hand] = 0
                hand += 1
                if hand == nframes:
                    hand = 0
            f = hand
            frame_of[page_in[f]] = -1
            hand += 1
            if hand == nframes:
                hand = 0
        page_in[f] = p
        frame_of[p] = f
        ref[f] = 1
    st[USED] = used
    st[HAND] = hand
    st[HITS] = hits


class ClockReplay(FrameReplay):
    """CLOCK over a reference string: a reference bit per frame."""

    __slots__ = ("ref",)

    def __init__(self) -> None:
        self.ref = np.empty(0, dtype=np.uint8)

    def grow(self, n_frames: int) -> None:
        """Room for ``n_frames`` frames."""
        self.ref = grow(self.ref, n_frames, 0)

    def run(self, ids: np.ndarray, n_frames: int, frame_of: np.ndarray, page_in: np.ndarray,
            state: np.ndarray) -> None:
        """Replay one chunk."""
        replay(ids, n_frames, frame_of, page_in, self.ref, state)
