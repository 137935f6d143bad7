"""Samplers: the page offsets a synthetic workload touches, drawn in Numba kernels.

What is drawn
-------------
Every popularity distribution of the synthetic workloads is a mixture of
uniform ranges over an index space, drawn with Walker's alias method (Vose's
construction): one 64-bit random number picks a bucket (high 32 bits, by
multiply-shift) and decides between the bucket and its alias (low 32 bits),
in O(1) whatever the skew. Buckets are ranges of indices; a second number
picks the index within the range (with a single bucket, as for uniform and
idle, the first number does). Hot/cold has two buckets, churn one per live
chunk. For Zipf over up to 2**17 pages (:data:`ZIPF_EXACT_MAX_PAGES`) each
bucket is one popularity rank (8 bytes of table per page, exact). Larger Zipf
regions group the tail ranks into blocks whose ranks differ in probability by
at most 0.1 % (:func:`zipf_blocks`): 10**6 pages at alpha 1 need 8 500
buckets, a table that stays in the L2 cache, where an exact 8 MiB table would
cost a cache miss per draw. A seeded random permutation maps indices to pages,
so Zipf ranks and the hot set are scattered over the region as in a real heap,
not packed at its start.

Draws run in Numba kernels with SplitMix64 (:mod:`hvmem.core.mix`), seeded per
call from the workload's NumPy stream, so a run is reproducible from the
scenario seed (pass a named stream of :class:`~hvmem.core.rng.RngStreams`).

The two fidelities
------------------
:meth:`Sampler.draw` gives the references one by one, in order (mmu
fidelity). :meth:`Sampler.draw_pages` draws them exactly so and aggregates
them (page fidelity): one entry per distinct page, ``refs`` its count,
``is_write`` whether any of its references wrote, drawn as
``1 - (1 - write_frac) ** refs``, which is exact for independent writes. It
counts references per *index* (not per page) in a reused ``int32`` buffer:
the increment's address then depends on the random number alone, and for Zipf
most increments hit the hot low ranks, in cache. A second pass collects the
non-zero counts, maps them through the permutation and resets them. When a
tick has far fewer references than the index space (an idle VM with a huge
region) the drawn pages are sorted instead (``np.unique``), so nothing scales
with the region.

Memory per sampler: 4 bytes per page for the permutation (Zipf, hot/cold),
8 per page for an exact Zipf table (at most 1 MiB), plus 4 bytes per page for
the page-mode count buffer. What these choices cost and what was measured
against them: ``docs/design/workload-generation.md``.

References: A. J. Walker, "An Efficient Method for Generating Discrete Random
Variables with General Distributions", ACM TOMS 1977, and M. D. Vose, "A
Linear Algorithm for Generating Random Numbers with a Given Distribution",
IEEE TSE 1991 (alias method); Breslau et al., "Web Caching and Zipf-like
Distributions", INFOCOM 1999 (Zipf popularity).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from hvmem.core.mix import splitmix64_next
from hvmem.errors import ConfigError

__all__ = [
    "ZIPF_EXACT_MAX_PAGES",
    "ZIPF_MAX_ERROR_FRAC",
    "Sampler",
    "merge_sorted",
    "page_write_flags",
    "zipf_blocks",
    "zipf_cdf",
    "zipf_pages",
]

#: Page mode sorts the drawn pages instead of counting into a region-sized
#: buffer when a tick has fewer than region_pages / this many references.
_SPARSE_FACTOR = 16
#: Counts are int32: no page can reach 2**31 references in a tick of fewer draws.
_MAX_DRAWS_PER_COUNT = (1 << 31) - 1
#: Draws per block in the counting kernel (the block buffer stays in L1/L2).
_DRAW_BLOCK = 4096
#: Output arrays are allocated in multiples of this many entries.
_ALLOC_QUANTUM = 1 << 16
#: Zipf ranks sharing a block differ in probability by at most this fraction.
ZIPF_MAX_ERROR_FRAC = 1e-3
#: Regions up to this many pages get an exact Zipf table (one 8-byte alias entry
#: per rank, 1 MiB at most); larger ones get blocks (see :func:`zipf_blocks`).
ZIPF_EXACT_MAX_PAGES = 1 << 17


# ------------------------------------------------------------------ Zipf helpers


def zipf_cdf(n_pages: int, alpha: float) -> np.ndarray:
    """Cumulative Zipf weights over ranks 1..n_pages (last element exactly 1)."""
    if n_pages <= 0:
        raise ConfigError(f"zipf: the page count must be positive, found {n_pages}")
    if not alpha >= 0:
        raise ConfigError(f"zipf: alpha must be >= 0, found {alpha}")
    weights = np.arange(1, n_pages + 1, dtype=np.float64) ** -alpha
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def zipf_pages(rng: np.random.Generator, n_pages: int, n_refs: int, alpha: float,
               first_page: int = 0) -> np.ndarray:
    """``n_refs`` page numbers in ``first_page .. first_page + n_pages - 1``, Zipf-popular.

    A one-shot inverse-CDF draw (``searchsorted``), kept for ``hvmem bench``;
    :class:`~hvmem.workloads.generators.ZipfWorkload` uses the faster alias tables.

    Args:
        rng: the random stream to draw from.
        n_pages: pages in the region.
        n_refs: references to draw.
        alpha: the skew (0 is uniform).
        first_page: page number of the region's first page.

    Returns:
        int64 page numbers.
    """
    cdf = zipf_cdf(n_pages, alpha)
    ranks = np.searchsorted(cdf, rng.random(n_refs), side="right")
    np.minimum(ranks, n_pages - 1, out=ranks)
    page_of_rank = rng.permutation(n_pages).astype(np.int64)
    return page_of_rank[ranks] + first_page


def zipf_blocks(n_pages: int, alpha: float,
                max_error_frac: float = ZIPF_MAX_ERROR_FRAC) -> tuple[np.ndarray, ...]:
    """Zipf ranks grouped into blocks of nearly equal popularity, for the sampler.

    Rank ``k`` (1-based) has weight ``k**-alpha``. A block of ``g`` ranks from
    ``k`` spans weights that differ by a factor ``(1 + (g - 1) / k)**alpha``;
    blocks grow with ``k`` as ``g = max(1, floor(k * max_error_frac / alpha))``,
    so every rank's probability, taken as its block's average, is within about
    ``max_error_frac`` (relative) of the exact Zipf value. The head (the first
    ``alpha / max_error_frac`` ranks, where most references go) stays exact.
    For 10**6 pages and alpha 1 that is about 8 000 blocks instead of 10**6
    alias entries: a table that stays in the L2 cache.

    Returns:
        ``(lo, width, weights)``: each block's first rank index (0-based), its
        number of ranks and its total weight.
    """
    if alpha == 0:
        return np.zeros(1, np.int64), np.array([n_pages], np.int64), np.array([float(n_pages)])
    step = max_error_frac / alpha
    starts = []
    k = 0
    while k < n_pages:  # one iteration per block (thousands), at construction only
        starts.append(k)
        k += max(1, int((k + 1) * step))
    lo = np.array(starts, dtype=np.int64)
    width = np.diff(np.append(lo, n_pages))
    # Sum each block directly: differences of a cumulative sum would cancel to 0
    # for the tiny tail weights of a large alpha.
    weights = np.add.reduceat(np.arange(1, n_pages + 1, dtype=np.float64) ** -alpha, lo)
    return lo, width, weights


# ----------------------------------------------------------------------- kernels

_LOW32 = np.uint64(0xFFFF_FFFF)
_S11 = np.uint64(11)
_S32 = np.uint64(32)
_U0 = np.uint64(0)
_TWO_M53 = 1.0 / float(1 << 53)
_EMPTY_I64 = np.zeros(0, dtype=np.int64)


@njit(cache=True, inline="always")
def _pick(state, table, lo, width, ranged):
    """One draw: (state, index) from an alias table.

    ``table[b] = (threshold << 32) | alias``: bucket ``b`` yields itself if 32
    random bits fall below the threshold, else its alias (a select, not a
    branch: the coin is random and a branch would mispredict). Without
    ``ranged`` the bucket is the index (a Zipf rank); with it, bucket ``t``
    stands for the indices ``[lo[t], lo[t] + width[t])`` and a second number
    picks one of them.
    """
    state, r = splitmix64_next(state)
    if table.shape[0] == 1:  # one bucket (uniform, idle): no alias step, one number
        if ranged:
            return state, lo[0] + np.int64(((r >> _S32) * np.uint64(width[0])) >> _S32)
        return state, np.int64(0)
    b = ((r >> _S32) * np.uint64(table.shape[0])) >> _S32
    w = table[np.int64(b)]
    keep_mask = _U0 - np.uint64((r & _LOW32) < (w >> _S32))
    t = np.int64((w & _LOW32) ^ (((w & _LOW32) ^ b) & keep_mask))
    if ranged:
        state, r2 = splitmix64_next(state)
        return state, lo[t] + np.int64(((r2 >> _S32) * np.uint64(width[t])) >> _S32)
    return state, t


@njit(cache=True, nogil=True)
def _draw_ordered(n, seed, table, lo, width, perm, ranged, write_thr, out_off, out_write):
    """``n`` references in order: page offsets (``perm[index]``) and write flags.

    Indices are mapped through ``perm`` in a second pass: there the gather's
    addresses are all known up front, so the cache misses overlap, where in the
    first pass each would wait for the table load before it.
    """
    state = seed
    for i in range(n):
        state, index = _pick(state, table, lo, width, ranged)
        out_off[i] = index
        state, r = splitmix64_next(state)
        out_write[i] = r < write_thr
    if perm.shape[0] > 0:
        for i in range(n):
            out_off[i] = perm[out_off[i]]
    return state


@njit(cache=True, nogil=True)
def _draw_counts(n, seed, table, lo, width, ranged, counts):
    """Add ``n`` draws to ``counts[index]``.

    Counting by index, not by page, keeps the increment's address a function of
    the random number alone (no dependent load through ``perm``), and for Zipf
    keeps most increments on the hot low ranks, in cache. Draws go through a
    small buffer, a block at a time: increments whose addresses are all known
    overlap their cache misses, where interleaved with the draws each would
    wait for the table loads before it.
    """
    state = seed
    buf = np.empty(_DRAW_BLOCK, dtype=np.int64)
    done = 0
    while done < n:
        m = min(_DRAW_BLOCK, n - done)
        for i in range(m):
            state, buf[i] = _pick(state, table, lo, width, ranged)
        for i in range(m):
            counts[buf[i]] += 1
        done += m
    return state


@njit(cache=True, inline="always")
def _write_flag(state, c, nowrite, log_nowrite):
    """Whether any of ``c`` references wrote: ``u >= (1 - w) ** c``."""
    p = nowrite[c] if c < nowrite.shape[0] else math.exp(np.float64(c) * log_nowrite)
    state, r = splitmix64_next(state)
    return state, (r >> _S11) * _TWO_M53 >= p


@njit(cache=True, nogil=True)
def _collect(counts, perm, seed, nowrite, log_nowrite, out_off, out_refs, out_write):
    """Move the non-zero counts out as pages (resetting them); returns how many.

    The scan is branch-free: every index is written to slot ``k`` and ``k``
    advances only when its count is non-zero, because a test on the count
    mispredicts on about every other page of a half-touched region. The output
    arrays need one spare slot. Write flags are drawn in a second pass over the
    entries found only.
    """
    mapped = perm.shape[0] > 0
    k = 0
    last = out_off.shape[0] - 1
    for i in range(counts.shape[0]):
        c = counts[i]
        counts[i] = 0
        j = min(k, last)
        out_off[j] = perm[i] if mapped else i
        out_refs[j] = c
        k += c != 0
    state = seed
    for j in range(k):
        state, out_write[j] = _write_flag(state, out_refs[j], nowrite, log_nowrite)
    return k


@njit(cache=True, nogil=True)
def _write_flags(refs, seed, nowrite, log_nowrite, out):
    state = seed
    for i in range(refs.shape[0]):
        state, out[i] = _write_flag(state, refs[i], nowrite, log_nowrite)


@njit(cache=True)
def _build_alias(weights):
    """Vose's alias tables for ``weights`` (non-negative, positive sum)."""
    n = weights.shape[0]
    scaled = weights * (n / weights.sum())
    prob = np.ones(n, dtype=np.float64)
    alias = np.arange(n)
    small = np.empty(n, dtype=np.int64)
    large = np.empty(n, dtype=np.int64)
    ns = 0
    nl = 0
    for i in range(n):
        if scaled[i] < 1.0:
            small[ns] = i
            ns += 1
        else:
            large[nl] = i
            nl += 1
    while ns > 0 and nl > 0:
        ns -= 1
        s = small[ns]
        nl -= 1
        g = large[nl]
        prob[s] = scaled[s]
        alias[s] = g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        if scaled[g] < 1.0:
            small[ns] = g
            ns += 1
        else:
            large[nl] = g
            nl += 1
    # Leftovers (from rounding) keep prob 1 and alias themselves.
    return prob, alias


def _nowrite_table(write_frac: float) -> tuple[np.ndarray, float]:
    """(1 - w) ** c for small c, and log(1 - w) for the rest."""
    c = np.arange(64, dtype=np.float64)
    if write_frac >= 1.0:
        table = np.zeros(64)
        table[0] = 1.0
        return table, -math.inf
    return (1.0 - write_frac) ** c, math.log1p(-write_frac)


def _seed(rng: np.random.Generator) -> np.uint64:
    return rng.integers(0, 1 << 64, dtype=np.uint64, endpoint=False)


def _write_threshold(write_frac: float) -> np.uint64:
    return np.uint64(min((1 << 64) - 1, int(write_frac * 2.0**64)))


def page_write_flags(rng: np.random.Generator, refs: np.ndarray, write_frac: float) -> np.ndarray:
    """For entries standing for ``refs`` references each: did any write? (page mode)."""
    refs = np.ascontiguousarray(refs, dtype=np.int64)
    table, log_nowrite = _nowrite_table(write_frac)
    out = np.empty(refs.shape[0], dtype=np.bool_)
    _write_flags(refs, _seed(rng), table, log_nowrite, out)
    return out


class Sampler:
    """Draws page offsets from an alias table over an index space (see the module essay).

    Args:
        table: ``uint64`` per bucket, ``(threshold << 32) | alias``.
        n_offsets: pages in the region.
        lo, width: for a ranged sampler, the index range of each bucket.
        perm: maps an index to a page offset (``None``: the index is the offset).
    """

    def __init__(self, table: np.ndarray, n_offsets: int, lo: np.ndarray | None = None,
                 width: np.ndarray | None = None, perm: np.ndarray | None = None) -> None:
        self.table = table
        self.n_offsets = n_offsets
        self.ranged = lo is not None
        self.lo = _EMPTY_I64 if lo is None else np.ascontiguousarray(lo, dtype=np.int64)
        self.width = _EMPTY_I64 if width is None else np.ascontiguousarray(width, dtype=np.int64)
        self.perm = _EMPTY_I64 if perm is None else np.ascontiguousarray(perm)
        if self.ranged:
            self.n_index = int((self.lo + self.width).max()) if self.lo.shape[0] else 0
        else:
            self.n_index = int(table.shape[0])
        self._counts: np.ndarray | None = None

    @staticmethod
    def _table(weights: np.ndarray) -> np.ndarray:
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        prob, alias = _build_alias(weights)
        thr = np.minimum(np.floor(prob * 2.0**32), 2.0**32 - 1).astype(np.uint64)
        return (thr << np.uint64(32)) | alias.astype(np.uint64)

    @classmethod
    def singleton(cls, weights: np.ndarray, perm: np.ndarray | None = None) -> Sampler:
        """Index ``b`` (page offset ``perm[b]``) drawn with probability ~ ``weights[b]``."""
        n = int(np.asarray(weights).shape[0])
        return cls(cls._table(weights), n, perm=perm)

    @classmethod
    def ranges(cls, weights: np.ndarray, lo: np.ndarray, width: np.ndarray, n_offsets: int,
               perm: np.ndarray | None = None) -> Sampler:
        """Range ``i`` = indices ``[lo[i], lo[i] + width[i])``, chosen with ``weights[i]``."""
        return cls(cls._table(weights), n_offsets, lo, width, perm)

    def draw(self, rng: np.random.Generator, n: int,
             write_frac: float) -> tuple[np.ndarray, np.ndarray]:
        """``n`` references in order: (page offsets int64, write flags)."""
        off = np.empty(n, dtype=np.int64)
        writes = np.empty(n, dtype=np.bool_)
        if n:
            _draw_ordered(n, _seed(rng), self.table, self.lo, self.width, self.perm,
                          self.ranged, _write_threshold(write_frac), off, writes)
        return off, writes

    def draw_pages(self, rng: np.random.Generator, n: int,
                   write_frac: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` references aggregated: (distinct page offsets, refs, write flags).

        Entries come in index order: page order for uniform and churn, popularity
        rank order for Zipf, permuted order for hot/cold.
        """
        if n * _SPARSE_FACTOR < self.n_index:
            off, _ = self.draw(rng, n, 0.0)
            pages, refs = np.unique(off, return_counts=True)
            refs = refs.astype(np.int64, copy=False)
            return pages, refs, page_write_flags(rng, refs, write_frac)
        if self._counts is None:
            self._counts = np.zeros(self.n_index, dtype=np.int32)
        parts = []
        left = n
        nowrite, log_nowrite = _nowrite_table(write_frac)
        while left > 0:
            k = min(left, _MAX_DRAWS_PER_COUNT)
            _draw_counts(k, _seed(rng), self.table, self.lo, self.width, self.ranged,
                         self._counts)
            # Outputs sized by a vectorised count (plus _collect's spare slot),
            # rounded up so that successive ticks ask malloc for equal sizes:
            # glibc then reuses the memory freed by the last tick instead of
            # mapping (and zero-filling) fresh pages every time.
            cap = _round_up(int(np.count_nonzero(self._counts)) + 1)
            off = np.empty(cap, dtype=np.int64)
            refs = np.empty(cap, dtype=np.int64)
            writes = np.empty(cap, dtype=np.bool_)
            m = _collect(self._counts, self.perm, _seed(rng), nowrite, log_nowrite,
                         off, refs, writes)
            parts.append((off[:m], refs[:m], writes[:m]))
            left -= k
        if len(parts) == 1:
            return parts[0]
        return _merge_pages(parts)


def merge_sorted(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge two page-mode parts whose offsets are sorted and distinct, keeping order.

    O(len(a) + len(b) log len(a)) by ``searchsorted`` and ``np.insert``, where a
    sort of the concatenation would cost O(n log n) with a large constant.
    """
    a_off, a_refs, a_writes = a
    b_off, b_refs, b_writes = b
    pos = np.searchsorted(a_off, b_off)
    hit = pos < a_off.shape[0]
    hit[hit] = a_off[pos[hit]] == b_off[hit]
    refs = a_refs.copy()
    writes = a_writes.copy()
    refs[pos[hit]] += b_refs[hit]
    writes[pos[hit]] |= b_writes[hit]
    miss = ~hit
    at = pos[miss]
    return (np.insert(a_off, at, b_off[miss]), np.insert(refs, at, b_refs[miss]),
            np.insert(writes, at, b_writes[miss]))


def _round_up(n: int) -> int:
    """``n`` rounded up to a multiple of 2**16 (allocation sizes that repeat)."""
    return -(-n // _ALLOC_QUANTUM) * _ALLOC_QUANTUM


def _merge_pages(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregate (offsets, refs, writes) parts into distinct sorted offsets."""
    parts = [p for p in parts if p[0].shape[0]]
    if not parts:
        return _EMPTY_I64.copy(), _EMPTY_I64.copy(), np.zeros(0, dtype=np.bool_)
    if len(parts) == 1:
        return parts[0]
    off = np.concatenate([p[0] for p in parts])
    refs = np.concatenate([p[1] for p in parts])
    writes = np.concatenate([p[2] for p in parts])
    pages, inverse = np.unique(off, return_inverse=True)
    total = np.bincount(inverse, weights=refs, minlength=pages.shape[0])
    any_write = np.bincount(inverse, weights=writes, minlength=pages.shape[0]) > 0
    return pages, np.rint(total).astype(np.int64), any_write


