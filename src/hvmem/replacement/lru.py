"""LRU: evict the page whose last use is oldest.

Reclaim
-------
The policy keeps one ``use_stamp`` per page (int32, ``base.py``), written on
every load and use; the victims are the candidates least by (use stamp, page
number), found by counting stamps (``oldest.py``), which with the current
stamp given keeps a selection between calls. The host's swap selection hands
in its own touch stamps (``use_stamp=``), which its memory bus writes.

Reference strings
-----------------
Frames sit in a doubly linked recency list (two ``int32`` arrays
``prev``/``next`` indexed by frame, with a head and a tail); a hit moves the
frame to the head, a miss takes the tail. O(1) per reference. LRU is a stack
algorithm (Mattson et al. 1970): its misses never grow with more frames.

Sources: R. L. Mattson, J. Gecsei, D. R. Slutz, I. L. Traiger, "Evaluation
techniques for storage hierarchies", IBM Systems Journal 9(2), 1970.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.replacement.base import HAND, HITS, TAIL, USED, FrameReplay, ReplacementPolicy, grow
from hvmem.replacement.oldest import OldestFirst, oldest_victims


class LruPolicy(ReplacementPolicy):
    """LRU victims among ``n_pages`` pages, by use stamp.

    Args:
        n_pages: pages of the memory.
        use_stamp: the stamps to read, kept by the caller; None: the policy's own.
    """

    name = "lru"
    __slots__ = ("_oldest",)

    def __init__(self, n_pages: int, use_stamp: np.ndarray | None = None) -> None:
        super().__init__()
        self.use_stamp = np.zeros(n_pages, dtype=np.int32) if use_stamp is None else use_stamp
        self._oldest = OldestFirst()  # a selection kept between calls

    def victims(self, n_pages: int, kinds: np.ndarray, evictable: np.ndarray,
                now_stamp: int | None = None) -> np.ndarray:
        """The candidates used longest ago, oldest first (ties by page number)."""
        return oldest_victims(self._oldest, self.use_stamp, n_pages, kinds, evictable,
                              now_stamp)

    def keep(self, pages: np.ndarray) -> None:
        """Victims stay: the kept selection no longer holds."""
        self._oldest.forget()


@njit(cache=True)
def replay(ids, nframes, frame_of, page_in, prev, nxt, st):
    """LRU over ``ids`` with a doubly linked recency list of frames (head = most recent)."""
    used = st[USED]
    head = np.int32(st[HAND])
    tail = np.int32(st[TAIL])
    hits = st[HITS]
    for i in range(ids.shape[0]):
        p = ids[i]
        f = frame_of[p]
        if f >= 0:
            hits += 1
            if f != head:
                a = prev[f]
                b = nxt[f]
                nxt[a] = b
                if b >= 0:
                    prev[b] = a
                else:
                    tail = a
                prev[f] = -1
                nxt[f] = head
                prev[head] = f
                head = f
            continue
        if used < nframes:
            f = np.int32(used)
            used += 1
            prev[f] = -1
            nxt[f] = head
            if head >= 0:
                prev[head] = f
            else:
                tail = f
            head = f
        else:
            f = tail
            frame_of[page_in[f]] = -1
            if f != head:
                a = prev[f]
                nxt[a] = -1
                tail = a
                prev[f] = -1
                nxt[f] = head
                prev[head] = f
                head = f
        page_in[f] = p
        frame_of[p] = f
    st[USED] = used
    st[HAND] = head
    st[TAIL] = tail
    st[HITS] = hits


class LruReplay(FrameReplay):
    """LRU over a reference string: the recency list, by frame."""

    __slots__ = ("prev", "next")

    def __init__(self) -> None:
        self.prev = np.empty(0, dtype=np.int32)  # frame -> more recent frame
        self.next = np.empty(0, dtype=np.int32)  # frame -> less recent frame

    def start(self, state: np.ndarray, kernel_seed: int) -> None:
        """An empty list: no head."""
        state[HAND] = -1

    def grow(self, n_frames: int) -> None:
        """Room for ``n_frames`` frames."""
        self.prev = grow(self.prev, n_frames, -1)
        self.next = grow(self.next, n_frames, -1)

    def run(self, ids: np.ndarray, n_frames: int, frame_of: np.ndarray, page_in: np.ndarray,
            state: np.ndarray) -> None:
        """Replay one chunk."""
        replay(ids, n_frames, frame_of, page_in, self.prev, self.next, state)
