"""FIFO: evict the page loaded longest ago.

Uses change nothing; only loads order the pages.

Reclaim
-------
The policy keeps one ``load_stamp`` per page (int32, ``base.py``); the
victims are the candidates least by (load stamp, page number), found by
counting stamps (``oldest.py``), which with the current stamp given keeps a
selection between calls.

Reference strings
-----------------
Frames are filled in order 0, 1, ..., N-1 and a victim's frame receives the new
page, so load order is frame order: FIFO is a hand that steps through the
frames cyclically, one frame per eviction. It shows Belady's anomaly (1, 2, 3,
4, 1, 2, 5, 1, 2, 3, 4, 5: 9 misses with 3 frames, 10 with 4).

Sources: L. A. Belady, R. A. Nelson, G. S. Shedler, "An anomaly in space-time
characteristics of certain programs running in a paging machine", CACM 12(6),
1969.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.replacement.base import HAND, HITS, USED, FrameReplay, ReplacementPolicy
from hvmem.replacement.oldest import OldestFirst, oldest_victims


class FifoPolicy(ReplacementPolicy):
    """FIFO victims among ``n_pages`` pages, by load stamp."""

    name = "fifo"
    __slots__ = ("_oldest",)

    def __init__(self, n_pages: int) -> None:
        super().__init__()
        self.load_stamp = np.zeros(n_pages, dtype=np.int32)
        self._oldest = OldestFirst()  # a selection kept between calls

    def victims(self, n_pages: int, kinds: np.ndarray, evictable: np.ndarray,
                now_stamp: int | None = None) -> np.ndarray:
        """The candidates loaded longest ago, oldest first (ties by page number)."""
        return oldest_victims(self._oldest, self.load_stamp, n_pages, kinds, evictable,
                              now_stamp)

    def keep(self, pages: np.ndarray) -> None:
        """Victims stay: the kept selection no longer holds."""
        self._oldest.forget()


@njit(cache=True)
def replay(ids, nframes, frame_of, page_in, st):
    """FIFO over ``ids``: a hand steps through the frames, one frame per eviction."""
    used = st[USED]
    hand = st[HAND]
    hits = st[HITS]
    for i in range(ids.shape[0]):
        p = ids[i]
        if frame_of[p] >= 0:
            hits += 1
            continue
        if used < nframes:
            f = used
            used += 1
        else:
            f = hand
            frame_of[page_in[f]] = -1
            hand += 1
            if hand == nframes:
                hand = 0
        page_in[f] = p
        frame_of[p] = f
    st[USED] = used
    st[HAND] = hand
    st[HITS] = hits


class FifoReplay(FrameReplay):
    """FIFO over a reference string: the hand alone, no per-frame data."""

    __slots__ = ()

    def run(self, ids: np.ndarray, n_frames: int, frame_of: np.ndarray, page_in: np.ndarray,
            state: np.ndarray) -> None:
        """Replay one chunk."""
        replay(ids, n_frames, frame_of, page_in, state)
