r"""Replaying a reference string through a memory of page frames (``hvmem paging``).

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

Every policy of :data:`~hvmem.replacement.names.REPLAY_POLICIES` runs, each as
its own Numba kernel in its own module, whose essay says exactly what it does:
``fifo.py`` (a hand stepping through the frames), ``lru.py`` (a recency list),
``clock.py`` (second chance), ``random.py`` (a seeded splitmix64 stream, one
draw per eviction) and ``opt.py`` (Belady's MIN over the whole string).

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
Page numbers are first mapped to dense ``int32`` ids (``ids.py``), and every
per-page array is indexed by id. Each policy is one Numba kernel over the id
array; Python runs once per chunk, never once per reference. Frame arrays are
sized ``min(frames, D)`` for D distinct pages and grow as new pages appear, so
a huge ``frames`` costs nothing.

* :class:`ReplacementSimulator` (every policy but OPT) takes the trace in
  chunks and carries all state between them: the frame arrays, the hand or
  list ends, the counters, the generator and the id map. Memory is therefore
  O(distinct pages + frames + one chunk), whatever the length of the trace: a
  multi-GB Lackey trace streams through :func:`simulate_chunks` in bounded
  memory. :func:`simulate` is one :meth:`~ReplacementSimulator.feed` of the
  whole array, so chunked and one-shot runs run the same code and agree exactly.
* OPT needs the future. :func:`simulate` maps the whole array, computes the next
  uses backwards, sorts only the D distinct page numbers for the tie-break
  ranks, and runs the heap kernel. :func:`simulate_chunks` concatenates the
  chunks first (memory O(trace length): about 30 bytes per reference).

Sources
-------
* R. H. and A. C. Arpaci-Dusseau, *Operating Systems: Three Easy Pieces*,
  ch. 22 "Beyond Physical Memory: Policies" (Figures 22.1, 22.2 and 22.5 are
  test cases here), and its homework ``vm-beyondphys-policy/paging-policy.py``.
* The policies' own sources are in their modules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from hvmem.core.rng import RngStreams
from hvmem.errors import ConfigError
from hvmem.replacement import opt
from hvmem.replacement.base import HITS, STATE_SLOTS, TAIL, USED, FrameReplay, grow
from hvmem.replacement.clock import ClockReplay
from hvmem.replacement.fifo import FifoReplay
from hvmem.replacement.ids import IdMap
from hvmem.replacement.lru import LruReplay
from hvmem.replacement.names import REPLAY_POLICIES, STREAMING_POLICIES, check_policy
from hvmem.replacement.random import RANDOM_STREAM, RandomReplay

__all__ = [
    "PagingResult",
    "ReplacementSimulator",
    "simulate",
    "simulate_chunks",
]

#: The per-frame side of each policy that replays chunk by chunk.
FRAME_REPLAYS: dict[str, type[FrameReplay]] = {
    "fifo": FifoReplay, "lru": LruReplay, "clock": ClockReplay, "random": RandomReplay,
}


@dataclass(frozen=True, slots=True)
class PagingResult:
    """Outcome of replaying a reference string.

    Attributes:
        policy: the policy name, one of :data:`~hvmem.replacement.names.REPLAY_POLICIES`.
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


# ------------------------------------------------------------------------ validation


def _check_policy(policy: str) -> str:
    return check_policy(policy, REPLAY_POLICIES, "trace replay")


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


# ------------------------------------------------------------------------ public API


class ReplacementSimulator:
    """A memory of ``frames`` page frames under a streaming policy, fed in chunks.

    All state (resident pages, hand or recency list, random generator, counters and
    the page-number -> id map) is kept between :meth:`feed` calls, so feeding a trace
    in any number of chunks gives exactly the result of feeding it at once.

    Args:
        frames: page frames of the memory, at least 1.
        policy: one of :data:`~hvmem.replacement.names.STREAMING_POLICIES`.
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
        self._state = np.zeros(STATE_SLOTS, dtype=np.int64)
        self._state[TAIL] = -1
        self._replay = FRAME_REPLAYS[policy]()
        self._replay.start(self._state, _kernel_seed(seed))
        self._ids = IdMap()
        self._frame_of = np.empty(0, dtype=np.int32)  # id -> frame, or -1
        self._page_in = np.empty(0, dtype=np.int32)  # frame -> id

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
        self._replay.run(ids, self.frames, self._frame_of, self._page_in, self._state)
        self.accesses += int(arr.shape[0])

    def result(self) -> PagingResult:
        """Counts of everything fed so far."""
        return _result(self.policy, self.frames, self.accesses, int(self._state[HITS]),
                       int(self._state[USED]), self._ids.n_ids)

    def _ensure_capacity(self) -> None:
        n = self._ids.n_ids
        if self._frame_of.shape[0] < n:
            size = max(n, 2 * self._frame_of.shape[0])
            self._frame_of = grow(self._frame_of, size, -1)
        want = min(self.frames, self._frame_of.shape[0])
        if self._page_in.shape[0] < want:
            self._page_in = grow(self._page_in, want, -1)
            self._replay.grow(want)


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
        policy: one of :data:`~hvmem.replacement.names.REPLAY_POLICIES`.
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
    id_map = IdMap()
    ids = id_map.map(arr)
    n_ids = id_map.n_ids
    hits, resident = opt.replay(ids, opt.next_uses(ids, id_map.ranks()), frames, n_ids)
    return _result(policy, frames, n, int(hits), int(resident), n_ids)


def simulate_chunks(chunks: Iterable[np.ndarray], frames: int, policy: str,
                    seed: int = 0) -> PagingResult:
    """Replay a reference string given as consecutive chunks of page numbers.

    Every policy but OPT runs in memory bounded by the footprint and one chunk,
    however long the stream; OPT concatenates the chunks first (it needs the future).

    Args:
        chunks: page-number arrays, in order (for example the page arrays of
            :func:`hvmem.workloads.trace.iter_page_numbers`).
        frames: page frames of the memory, at least 1.
        policy: one of :data:`~hvmem.replacement.names.REPLAY_POLICIES`.
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
