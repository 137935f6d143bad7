r"""Page replacement policies over a reference string: FIFO, LRU, CLOCK, random and OPT.

What is modelled
----------------
A demand-paged memory of ``frames`` page frames, as a guest OS manages its
guest-physical memory (or as any cache of pages is managed). A reference string
of page numbers is replayed in order. A reference to a resident page is a
**hit**; any other reference is a **miss**: the page is loaded, into a free
frame while there is one, otherwise into the frame of a victim chosen by the
policy, which is **evicted**. Pages are only ever loaded on demand (no
prefetching), and reads and writes are treated alike (no dirty-page cost). This
is the model of OSTEP chapter 22 and of its homework simulator
``paging-policy.py``; hvmem replays the same ``-f`` page-number files and
Valgrind Lackey traces (see ``workloads/trace.py``).

The policies, exactly:

``fifo``
    Evict the page loaded longest ago; hits change nothing. Frames are filled in
    order 0, 1, ..., N-1 and a victim's frame receives the new page, so load
    order is frame order: FIFO is a hand that steps through the frames
    cyclically, one frame per eviction.
``lru``
    Evict the page whose last reference is oldest. Frames sit in a doubly linked
    recency list (two ``int32`` arrays ``prev``/``next`` indexed by frame, with a
    head and a tail); a hit moves the frame to the head, a miss takes the tail.
    O(1) per reference.
``clock``
    Second chance with one reference bit per frame and a circular hand, the
    clock of Corbató (1968) as OSTEP §22.8 describes it. The bit is set on every
    reference, the load included. While frames are free, pages fill them in
    order and the hand stays on frame 0. On a miss with memory full, the hand
    looks at its frame: if the bit is set, it clears it and moves on; the first
    frame found with a clear bit is the victim. The new page goes there with its
    bit set, and the hand moves one past it. (This is not the CLOCK of OSTEP's
    ``paging-policy.py``, which probes frames in *random* order and keeps
    ``-b`` bits of counter per page; its answers are random too.)
``random``
    Evict a frame chosen uniformly at random. The generator is a splitmix64
    stream inside the kernel, seeded from ``RngStreams(seed).seed_for(
    "guest/replacement/random")``, and it draws once per eviction only, so a
    seed gives the same result however the trace is split into chunks.
``opt``
    Belady's MIN (1966): evict the resident page whose next reference is
    farthest in the future; a page never referenced again is farther than any.
    The next-use time of every reference is computed in one backward pass.
    Resident frames sit in a binary max-heap keyed by next use, with each
    frame's heap position kept (an indexed heap): a hit raises the key of its
    frame (from now to its next use) and sifts it up, a miss replaces the root.
    O(log N) per reference. Tie-break: the next uses of distinct resident pages
    are distinct references, so only pages never used again can tie; among
    them the one with the **largest page number** is evicted first (the key of
    "never" is ``len(trace) + rank of the page number``). Which of those pages
    goes cannot change any later hit or miss, only which idle page stays
    resident. OSTEP's Figure 22.1 evicts 3 from {0, 1, 3} at the tenth
    reference, as this rule does. ``paging-policy.py`` instead takes the last
    such page in its memory list (``>=`` in its scan).

Invariants (checked by the tests): ``hits + misses == accesses``; at most
``frames`` pages are resident and each resident page sits in exactly one frame;
``evictions == misses - resident`` at the end; with at least as many frames as
distinct pages every policy misses exactly once per distinct page; with one
frame every policy hits exactly on immediate repeats; OPT misses no more than
any other demand-paging policy; LRU and OPT are stack algorithms (Mattson et al.
1970), so their misses never grow with more frames, whereas FIFO shows Belady's
anomaly (1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5: 9 misses with 3 frames, 10 with 4).

Data layout and speed
---------------------
Page numbers may be anything in int64 (addresses shifted right by 12 on a 64-bit
machine; uint64 input is reinterpreted, not wrapped), so they are first mapped
to dense ``int32`` ids 0..D-1 in first-seen order, and every per-page array is
indexed by id. Each policy is one Numba kernel over the id array; Python runs
once per chunk, never once per reference. Frame arrays are sized
``min(frames, D)`` and grow as new pages appear, so a huge ``frames`` costs
nothing.

The id map is an open-addressing hash table in Numba (linear probing,
Fibonacci hashing, load factor at most 1/2) that doubles when half full. It is
O(1) per reference: on 5 million Zipf references it takes about 0.09 s, where
``numpy.unique(..., return_inverse=True)`` takes about 1.9 s (it sorts all the
references, not just the distinct pages), far more than the replacement itself.

* :class:`ReplacementSimulator` (FIFO, LRU, CLOCK, random) takes the trace in
  chunks and carries all state between them: the frame arrays, the hand or
  list ends, the counters, the generator and the id map. Memory is therefore
  O(distinct pages + frames + one chunk), whatever the length of the trace: a
  multi-GB Lackey trace streams through :func:`simulate_chunks` in bounded
  memory. (A dict per chunk would cost a Python step per distinct page per
  chunk; a sorted array with ``searchsorted`` would re-merge the whole map every
  chunk.) :func:`simulate` is one :meth:`~ReplacementSimulator.feed` of the
  whole array, so chunked and one-shot runs run the same code and agree exactly.
* OPT needs the future. :func:`simulate` maps the whole array, computes the next
  uses backwards, sorts only the D distinct page numbers for the tie-break
  ranks, and runs the heap kernel. :func:`simulate_chunks` concatenates the
  chunks first (memory O(trace length): about 30 bytes per reference).

Sources
-------
* L. A. Belady, "A study of replacement algorithms for a virtual-storage
  computer", IBM Systems Journal 5(2), 1966 (MIN/OPT).
* L. A. Belady, R. A. Nelson, G. S. Shedler, "An anomaly in space-time
  characteristics of certain programs running in a paging machine", CACM
  12(6), 1969 (FIFO's anomaly).
* F. J. Corbató, "A paging experiment with the Multics system", MIT Project MAC
  MAC-M-384, 1968 (the clock algorithm).
* R. L. Mattson, J. Gecsei, D. R. Slutz, I. L. Traiger, "Evaluation techniques
  for storage hierarchies", IBM Systems Journal 9(2), 1970 (stack algorithms).
* R. H. and A. C. Arpaci-Dusseau, *Operating Systems: Three Easy Pieces*,
  ch. 22 "Beyond Physical Memory: Policies" (Figures 22.1, 22.2 and 22.5 are
  test cases here), and its homework ``vm-beyondphys-policy/paging-policy.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.core.mix import GOLDEN_GAMMA, splitmix64_next
from hvmem.core.rng import RngStreams
from hvmem.errors import ConfigError

__all__ = [
    "POLICIES",
    "STREAMING_POLICIES",
    "PagingResult",
    "ReplacementSimulator",
    "simulate",
    "simulate_chunks",
]

#: Every policy name :func:`simulate` accepts.
POLICIES = ("fifo", "lru", "clock", "random", "opt")
#: Policies that can run chunk by chunk (OPT needs the whole future).
STREAMING_POLICIES = ("fifo", "lru", "clock", "random")

#: Name of the random stream the ``random`` policy's kernel seed comes from.
RANDOM_STREAM = "guest/replacement/random"

_MAX_IDS = 1 << 30  # ids are int32; the table would hold 2**31 slots by then
_HASH_MUL = GOLDEN_GAMMA  # 2**64 / golden ratio (Fibonacci hashing)
_INITIAL_TABLE_BITS = 12

# Slots of the per-run state array carried between chunks.
_USED = 0  # frames holding a page
_HAND = 1  # clock/FIFO hand; LRU head (most recent frame)
_TAIL = 2  # LRU tail (least recent frame)
_HITS = 3
_RNG = 4  # splitmix64 state (bits of a uint64) for the random policy
_STATE_SLOTS = 5


@dataclass(frozen=True, slots=True)
class PagingResult:
    """Outcome of replaying a reference string.

    Attributes:
        policy: the policy name, one of :data:`POLICIES`.
        frames: page frames of the memory.
        accesses: references replayed.
        hits: references to a resident page.
        misses: references that loaded their page (``accesses - hits``).
        evictions: misses that had to evict a page (the others filled a free frame).
        distinct_pages: distinct page numbers referenced (the footprint).
    """

    policy: str
    frames: int
    accesses: int
    hits: int
    misses: int
    evictions: int
    distinct_pages: int

    @property
    def hit_rate(self) -> float:
        """Hits per access (0.0 for an empty reference string)."""
        return self.hits / self.accesses if self.accesses else 0.0


# --------------------------------------------------------------------------- kernels


@njit(cache=True)
def _fifo_run(ids, nframes, frame_of, page_in, st):
    """FIFO over ``ids``: a hand steps through the frames, one frame per eviction."""
    used = st[_USED]
    hand = st[_HAND]
    hits = st[_HITS]
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
    st[_USED] = used
    st[_HAND] = hand
    st[_HITS] = hits


@njit(cache=True)
def _clock_run(ids, nframes, frame_of, page_in, ref, st):
    """CLOCK (second chance): a bit per frame set on each use, cleared by the passing hand."""
    used = st[_USED]
    hand = st[_HAND]
    hits = st[_HITS]
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
    st[_USED] = used
    st[_HAND] = hand
    st[_HITS] = hits


@njit(cache=True)
def _lru_run(ids, nframes, frame_of, page_in, prev, nxt, st):
    """LRU over ``ids`` with a doubly linked recency list of frames (head = most recent)."""
    used = st[_USED]
    head = np.int32(st[_HAND])
    tail = np.int32(st[_TAIL])
    hits = st[_HITS]
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
    st[_USED] = used
    st[_HAND] = head
    st[_TAIL] = tail
    st[_HITS] = hits


@njit(cache=True)
def _random_run(ids, nframes, frame_of, page_in, st):
    """Random eviction: a uniform frame from a splitmix64 stream, one draw per eviction."""
    used = st[_USED]
    hits = st[_HITS]
    state = np.uint64(st[_RNG])
    n = np.uint64(nframes)
    for i in range(ids.shape[0]):
        p = ids[i]
        if frame_of[p] >= 0:
            hits += 1
            continue
        if used < nframes:
            f = used
            used += 1
        else:
            state, z = splitmix64_next(state)
            f = np.int64(z % n)  # bias at most frames / 2**64
            frame_of[page_in[f]] = -1
        page_in[f] = p
        frame_of[p] = f
    st[_USED] = used
    st[_HITS] = hits
    st[_RNG] = np.int64(state)


@njit(cache=True)
def _next_uses(ids, rank):
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
def _opt_run(ids, next_use, nframes, n_ids):
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


@njit(cache=True)
def _map_ids(pages, keys, vals, n_ids, shift, out, start):
    """Map ``pages[start:]`` to dense ids through a linear-probing hash table.

    New pages get the next id. Stops early, before inserting, when the table is
    half full, so Python can double it.

    Returns:
        (index reached, number of ids).
    """
    mask = keys.shape[0] - 1
    limit = keys.shape[0] >> 1
    sh = np.uint64(shift)
    for i in range(start, pages.shape[0]):
        key = pages[i]
        h = np.int64((np.uint64(key) * _HASH_MUL) >> sh)
        while True:
            v = vals[h]
            if v < 0:
                if n_ids >= limit:
                    return i, n_ids
                keys[h] = key
                vals[h] = n_ids
                out[i] = n_ids
                n_ids += 1
                break
            if keys[h] == key:
                out[i] = v
                break
            h = (h + 1) & mask
    return pages.shape[0], n_ids


@njit(cache=True)
def _rehash(keys, vals, new_keys, new_vals, shift):
    mask = new_keys.shape[0] - 1
    sh = np.uint64(shift)
    for j in range(keys.shape[0]):
        v = vals[j]
        if v < 0:
            continue
        key = keys[j]
        h = np.int64((np.uint64(key) * _HASH_MUL) >> sh)
        while new_vals[h] >= 0:
            h = (h + 1) & mask
        new_keys[h] = key
        new_vals[h] = v


# ------------------------------------------------------------------------ validation


def _check_policy(policy: str) -> str:
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ConfigError(f"unknown replacement policy {policy!r}; "
                          f"expected one of {', '.join(POLICIES)}")
    return policy


def _check_frames(frames: int) -> int:
    if isinstance(frames, bool) or not isinstance(frames, int | np.integer):
        raise ConfigError(f"frames must be an integer, found {frames!r}")
    if frames <= 0:
        raise ConfigError(f"frames must be positive, found {frames}")
    return int(frames)


def _kernel_seed(seed: int) -> int:
    try:
        streams = RngStreams(seed)
    except (TypeError, ValueError):
        raise ConfigError(f"seed must be a non-negative integer, found {seed!r}") from None
    return streams.seed_for(RANDOM_STREAM)


def _as_pages(pages: np.ndarray) -> np.ndarray:
    """Page numbers as a 1-D int64 array (uint64 is reinterpreted, not wrapped)."""
    arr = np.asarray(pages)
    if arr.ndim != 1:
        raise ConfigError(f"pages must be a 1-D array of page numbers, found shape {arr.shape}")
    if arr.dtype == np.uint64:
        return arr.view(np.int64)
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind not in "iub":
        raise ConfigError(f"pages must be integers, found dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _grow(arr: np.ndarray, size: int, fill: int) -> np.ndarray:
    out = np.full(size, fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out


# -------------------------------------------------------------------------- id map


class _IdMap:
    """Page number -> dense id (first-seen order), a growable hash table over Numba kernels."""

    def __init__(self) -> None:
        self.bits = _INITIAL_TABLE_BITS
        self.keys = np.zeros(1 << self.bits, dtype=np.int64)
        self.vals = np.full(1 << self.bits, -1, dtype=np.int32)
        self.n_ids = 0

    def map(self, pages: np.ndarray) -> np.ndarray:
        """Ids of ``pages`` (int64), giving new pages the next ids."""
        out = np.empty(pages.shape[0], dtype=np.int32)
        start = 0
        while True:
            start, self.n_ids = _map_ids(pages, self.keys, self.vals, self.n_ids,
                                         64 - self.bits, out, start)
            if start == pages.shape[0]:
                return out
            if self.n_ids >= _MAX_IDS:
                raise ConfigError(f"more than {_MAX_IDS} distinct pages: too many to simulate")
            bits = self.bits + 1
            keys = np.zeros(1 << bits, dtype=np.int64)
            vals = np.full(1 << bits, -1, dtype=np.int32)
            _rehash(self.keys, self.vals, keys, vals, 64 - bits)
            self.keys, self.vals, self.bits = keys, vals, bits

    def ranks(self) -> np.ndarray:
        """Rank of each id's page number among all pages seen (0 = smallest)."""
        used = self.vals >= 0
        page_of = np.empty(self.n_ids, dtype=np.int64)
        page_of[self.vals[used]] = self.keys[used]
        rank = np.empty(self.n_ids, dtype=np.int64)
        rank[np.argsort(page_of, kind="stable")] = np.arange(self.n_ids)
        return rank


# ------------------------------------------------------------------------ public API


class ReplacementSimulator:
    """A FIFO, LRU, CLOCK or random memory of ``frames`` page frames, fed in chunks.

    All state (resident pages, hand or recency list, random generator, counters and
    the page-number -> id map) is kept between :meth:`feed` calls, so feeding a trace
    in any number of chunks gives exactly the result of feeding it at once.

    Args:
        frames: page frames of the memory, at least 1.
        policy: one of :data:`STREAMING_POLICIES`.
        seed: seed of the ``random`` policy (ignored by the others), at least 0.

    Raises:
        ConfigError: an unknown policy (OPT too: it needs the whole trace, use
            :func:`simulate` or :func:`simulate_chunks`), ``frames <= 0`` or a
            negative seed.
    """

    def __init__(self, frames: int, policy: str, seed: int = 0) -> None:
        _check_policy(policy)
        if policy not in STREAMING_POLICIES:
            raise ConfigError(f"policy {policy!r} needs the whole trace; "
                              "use simulate() or simulate_chunks()")
        self.policy = policy
        self.frames = _check_frames(frames)
        self.accesses = 0
        self._state = np.zeros(_STATE_SLOTS, dtype=np.int64)
        self._state[_HAND] = 0 if policy != "lru" else -1
        self._state[_TAIL] = -1
        self._state[_RNG] = np.uint64(_kernel_seed(seed)).view(np.int64)
        self._ids = _IdMap()
        self._frame_of = np.empty(0, dtype=np.int32)  # id -> frame, or -1
        self._page_in = np.empty(0, dtype=np.int32)  # frame -> id
        self._prev = np.empty(0, dtype=np.int32)  # LRU: frame -> more recent frame
        self._next = np.empty(0, dtype=np.int32)  # LRU: frame -> less recent frame
        self._ref = np.empty(0, dtype=np.uint8)  # CLOCK reference bits

    @property
    def distinct_pages(self) -> int:
        """Distinct page numbers seen so far."""
        return self._ids.n_ids

    def feed(self, pages: np.ndarray) -> None:
        """Replay the next chunk of the reference string.

        Args:
            pages: page numbers (any integer dtype; int64 range, uint64 reinterpreted).

        Raises:
            ConfigError: ``pages`` is not a 1-D integer array.
        """
        arr = _as_pages(pages)
        if arr.shape[0] == 0:
            return
        ids = self._ids.map(arr)
        self._ensure_capacity()
        self._run(ids)
        self.accesses += int(arr.shape[0])

    def result(self) -> PagingResult:
        """Counts of everything fed so far."""
        return _result(self.policy, self.frames, self.accesses, int(self._state[_HITS]),
                       int(self._state[_USED]), self._ids.n_ids)

    def _ensure_capacity(self) -> None:
        n = self._ids.n_ids
        if self._frame_of.shape[0] < n:
            size = max(n, 2 * self._frame_of.shape[0])
            self._frame_of = _grow(self._frame_of, size, -1)
        want = min(self.frames, self._frame_of.shape[0])
        if self._page_in.shape[0] < want:
            self._page_in = _grow(self._page_in, want, -1)
            if self.policy == "lru":
                self._prev = _grow(self._prev, want, -1)
                self._next = _grow(self._next, want, -1)
            elif self.policy == "clock":
                self._ref = _grow(self._ref, want, 0)

    def _run(self, ids: np.ndarray) -> None:
        st = self._state
        if self.policy == "lru":
            _lru_run(ids, self.frames, self._frame_of, self._page_in, self._prev, self._next, st)
        elif self.policy == "fifo":
            _fifo_run(ids, self.frames, self._frame_of, self._page_in, st)
        elif self.policy == "clock":
            _clock_run(ids, self.frames, self._frame_of, self._page_in, self._ref, st)
        else:
            _random_run(ids, self.frames, self._frame_of, self._page_in, st)


def _result(policy: str, frames: int, accesses: int, hits: int, resident: int,
            distinct: int) -> PagingResult:
    misses = accesses - hits
    return PagingResult(policy=policy, frames=frames, accesses=accesses, hits=hits,
                        misses=misses, evictions=misses - resident, distinct_pages=distinct)


def simulate(pages: np.ndarray, frames: int, policy: str, seed: int = 0) -> PagingResult:
    """Replay a whole reference string through a memory of ``frames`` page frames.

    Args:
        pages: page numbers in reference order (1-D, any integer dtype; uint64 values
            are reinterpreted as int64, so every 64-bit value is its own page).
        frames: page frames of the memory, at least 1.
        policy: one of :data:`POLICIES`.
        seed: seed of the ``random`` policy (ignored by the others), at least 0.

    Returns:
        The counts; an empty ``pages`` gives zero accesses.

    Raises:
        ConfigError: an unknown policy, ``frames <= 0``, a negative seed, or ``pages``
            not a 1-D integer array.
    """
    _check_policy(policy)
    frames = _check_frames(frames)
    arr = _as_pages(pages)
    if policy != "opt":
        sim = ReplacementSimulator(frames, policy, seed)
        sim.feed(arr)
        return sim.result()
    n = int(arr.shape[0])
    if n == 0:
        return _result(policy, frames, 0, 0, 0, 0)
    id_map = _IdMap()
    ids = id_map.map(arr)
    n_ids = id_map.n_ids
    hits, resident = _opt_run(ids, _next_uses(ids, id_map.ranks()), frames, n_ids)
    return _result(policy, frames, n, int(hits), int(resident), n_ids)


def simulate_chunks(chunks: Iterable[np.ndarray], frames: int, policy: str,
                    seed: int = 0) -> PagingResult:
    """Replay a reference string given as consecutive chunks of page numbers.

    FIFO, LRU, CLOCK and random run in memory bounded by the footprint and one chunk,
    however long the stream; OPT concatenates the chunks first (it needs the future).

    Args:
        chunks: page-number arrays, in order (for example the page arrays of
            :func:`hvmem.workloads.trace.iter_page_numbers`).
        frames: page frames of the memory, at least 1.
        policy: one of :data:`POLICIES`.
        seed: seed of the ``random`` policy, at least 0.

    Returns:
        The same result as :func:`simulate` on the concatenated chunks.

    Raises:
        ConfigError: as for :func:`simulate`.
    """
    _check_policy(policy)
    frames = _check_frames(frames)
    if policy == "opt":
        parts = [_as_pages(c) for c in chunks]
        whole = np.concatenate(parts) if parts else np.empty(0, np.int64)
        return simulate(whole, frames, policy, seed)
    sim = ReplacementSimulator(frames, policy, seed)
    for chunk in chunks:
        sim.feed(chunk)
    return sim.result()
