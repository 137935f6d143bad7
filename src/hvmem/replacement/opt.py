"""OPT: Belady's MIN, evicting the page whose next use is farthest in the future.

Only a whole reference string has the future, so OPT is a policy of trace
replay alone (``names.py``): no user that evicts as it goes can run it. OPT
misses no more than any other demand-paging policy on the same string, which
makes it the yardstick of the others; like LRU it is a stack algorithm.

Reference strings
-----------------
A page never referenced again is farther than any. The next-use time of every
reference is computed in one backward pass (:func:`next_uses`). Resident
frames sit in a binary max-heap keyed by next use, with each frame's heap
position kept (an indexed heap): a hit raises the key of its frame (from now
to its next use) and sifts it up, a miss replaces the root. O(log N) per
reference.

Tie-break: the next uses of distinct resident pages are distinct references,
so only pages never used again can tie; among them the one with the **largest
page number** is evicted first (the key of "never" is ``len(trace) + rank of
the page number``). Which of those pages goes cannot change any later hit or
miss, only which idle page stays resident. OSTEP's Figure 22.1 evicts 3 from
{0, 1, 3} at the tenth reference, as this rule does. ``paging-policy.py``
instead takes the last such page in its memory list (``>=`` in its scan).

Sources: L. A. Belady, "A study of replacement algorithms for a virtual-storage
computer", IBM Systems Journal 5(2), 1966.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def next_uses(ids, rank):
    """Index of each reference's next use of its page; ``n + rank`` if never again."""
    n = ids.shape[0]
    out = np.empty(n, np.int64)
    last = np.empty(rank.shape[0], np.int64)
    for p in range(rank.shape[0]):
        last[p] = n + rank[p]
    for i in range(n - 1, -1, -1):
        p = ids[i]
        out[i] = last[p]
        last[p] = i
    return out


@njit(cache=True, inline="always")
def _sift_up(hkey, hframe, pos, k):
    key = hkey[k]
    f = hframe[k]
    while k > 0:
        parent = (k - 1) >> 1
        if hkey[parent] >= key:
            break
        hkey[k] = hkey[parent]
        hframe[k] = hframe[parent]
        pos[hframe[k]] = k
        k = parent
    hkey[k] = key
    hframe[k] = f
    pos[f] = k


@njit(cache=True, inline="always")
def _sift_down(hkey, hframe, pos, k, size):
    key = hkey[k]
    f = hframe[k]
    while True:
        child = 2 * k + 1
        if child >= size:
            break
        if child + 1 < size and hkey[child + 1] > hkey[child]:
            child += 1
        if hkey[child] <= key:
            break
        hkey[k] = hkey[child]
        hframe[k] = hframe[child]
        pos[hframe[k]] = k
        k = child
    hkey[k] = key
    hframe[k] = f
    pos[f] = k


@njit(cache=True)
def replay(ids, next_use, nframes, n_ids):
    """Belady's OPT with an indexed max-heap of frames keyed by next use; returns hits."""
    cap = min(nframes, n_ids)
    frame_of = np.full(n_ids, -1, np.int32)
    page_in = np.empty(cap, np.int32)
    hkey = np.empty(cap, np.int64)  # heap position -> next use of the page there
    hframe = np.empty(cap, np.int32)  # heap position -> frame
    pos = np.empty(cap, np.int32)  # frame -> heap position
    used = 0
    hits = 0
    for i in range(ids.shape[0]):
        p = ids[i]
        key = next_use[i]
        f = frame_of[p]
        if f >= 0:
            hits += 1
            k = pos[f]
            hkey[k] = key  # was i: the key only grows, so the frame moves up
            _sift_up(hkey, hframe, pos, k)
            continue
        if used < cap:
            f = used
            hkey[used] = key
            hframe[used] = f
            used += 1
            _sift_up(hkey, hframe, pos, used - 1)
        else:
            f = hframe[0]
            frame_of[page_in[f]] = -1
            hkey[0] = key  # the root was the maximum, so the new key can only sink
            _sift_down(hkey, hframe, pos, 0, used)
        page_in[f] = p
        frame_of[p] = f
    return hits, used
