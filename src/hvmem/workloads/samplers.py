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
fidelity). :meth:`Sampler.draw_pages` gives a tick's distinct pages directly
(page fidelity): one entry per page touched, ``refs`` its count, ``is_write``
whether any of its references wrote, without drawing the references one by
one. The tick's ``n`` references are taken as a Poisson process over the
index space: index ``i`` of bucket ``t`` receives a Poisson number of
references with mean ``lambda_t = n * P(bucket t) / width_t``, independently
of the others. Its count is then what the ``n`` draws would give to first
order (the draws' counts are binomial, ``n * p`` and ``n * p * (1 - p)``;
these are Poisson, ``n * p`` both, a difference of ``p``, at most 1e-5 of a
count on every bench workload's page); what is lost is only that the total
over the tick is ``n`` on average instead of exactly ``n``, a spread of
``sqrt(n)`` (0.2 % at 200 000 references). Two regimes, per bucket:

* dense (``lambda_t >= 0.5``: Zipf's head, a hot set): every index gets a
  Poisson count by inversion, one random number per index (a normal
  approximation above a mean of 30, where inversion would walk too far);
* sparse (Zipf's tail, a cold set, an idle region): the process jumps from
  one reference to the next, an exponential gap in units of hazard (a
  reference's worth per ``1 / lambda_t`` indices), carried across bucket
  boundaries, so a bucket nothing falls in costs one subtraction and a
  reference one random number and one logarithm.

A tick thus costs the buckets plus the pages it touches, where drawing and
counting every reference cost the references plus a pass over a count per
index (786 432 of them for a 3 GiB region, for about 90 000 pages touched).
Whether a page was written is drawn from its count, ``1 - (1 - write_frac)
** refs``, which is exact for independent writes. Entries come in index
order (bucket by bucket, and ascending within one), mapped through the
permutation.

Memory per sampler: 4 bytes per page for the permutation (Zipf, hot/cold),
8 per page for an exact Zipf table (at most 1 MiB) and 8 per bucket for the
page-mode rates; nothing per page is kept from tick to tick. What these
choices cost and what was measured against them:
``docs/design/workload-generation.md``.

References: A. J. Walker, "An Efficient Method for Generating Discrete Random
Variables with General Distributions", ACM TOMS 1977, and M. D. Vose, "A
Linear Algorithm for Generating Random Numbers with a Given Distribution",
IEEE TSE 1991 (alias method); Breslau et al., "Web Caching and Zipf-like
Distributions", INFOCOM 1999 (Zipf popularity).
"""

from __future__ import annotations

import math
import threading

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

#: Page mode: a bucket whose indices get at least this many references each on
#: average counts uniform draws over its indices; below, it jumps from reference
#: to reference (a logarithm each: about 5 times a draw and a count, so counting
#: wins once a bucket's references outnumber a fifth of its indices... with the
#: pass that collects the counts, about from here).
_DENSE_MEAN = 0.125
#: Page mode: Poisson counts by inversion up to this mean, a normal
#: approximation above (its relative error in the mean's tails is below 1 %).
_INVERSION_MAX_MEAN = 30.0
#: Draws per block when counting a dense bucket (the block buffer stays in L1/L2).
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
_INVERSION_STEPS = 4 * int(_INVERSION_MAX_MEAN) + 64
_INV_K = 1.0 / np.maximum(np.arange(_INVERSION_STEPS + 1, dtype=np.float64), 1.0)
_EMPTY_I64 = np.zeros(0, dtype=np.int64)
_EMPTY_I32 = np.zeros(0, dtype=np.int32)


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


@njit(cache=True, inline="always")
def _write_flag(state, c, nowrite, log_nowrite):
    """Whether any of ``c`` references wrote: ``u >= (1 - w) ** c``."""
    p = nowrite[c] if c < nowrite.shape[0] else math.exp(np.float64(c) * log_nowrite)
    state, r = splitmix64_next(state)
    return state, (r >> _S11) * _TWO_M53 >= p


@njit(cache=True, inline="always")
def _uniform(state):
    """(state, a uniform double in [0, 1))."""
    state, r = splitmix64_next(state)
    return state, (r >> _S11) * _TWO_M53


@njit(cache=True, inline="always")
def _poisson(state, mean):
    """(state, a Poisson count of ``mean``).

    Inversion (one random number, about ``1 + mean`` steps) up to
    _INVERSION_MAX_MEAN; above, Numba's PTRS draw, from its own stream, which
    ``_draw_distinct`` seeds from this one.
    """
    if mean > _INVERSION_MAX_MEAN:
        return state, np.int64(np.random.poisson(mean))
    state, u = _uniform(state)
    k = 0
    p = math.exp(-mean)
    cdf = p
    while u > cdf and k < _INVERSION_STEPS:  # the bound only stops rounding from looping
        k += 1
        p *= mean * _INV_K[k]  # a multiply: a division would be the loop's latency
        cdf += p
    return state, np.int64(k)


@njit(cache=True, nogil=True)
def _draw_distinct(n, seed, rate, lo, width, ranged, perm, nowrite, log_nowrite, counts,
                   out_off, out_refs, out_write):
    """A tick's distinct pages for ``n`` references, drawn directly; returns how many.

    ``rate[t]`` is the share of the references one index of bucket ``t``
    gets, so ``n * rate[t]`` is its mean count. A dense bucket draws its
    Poisson total and counts that many uniform draws over its indices in
    ``counts`` (all zero before and after); a sparse one walks the Poisson
    process, carrying the hazard left of an exponential gap from one bucket
    to the next (see the module essay). Returns -1 if the output arrays fill
    up (the caller retries larger).
    """
    state = seed
    state, r = splitmix64_next(state)
    np.random.seed(np.uint32(r >> _S32))  # Numba's stream, for the large Poisson totals
    mapped = perm.shape[0] > 0
    cap = out_off.shape[0]
    buf = np.empty(_DRAW_BLOCK, dtype=np.int64)
    k = 0
    gap = -1.0  # hazard left before the next reference of the sparse walk (-1: draw one)
    for t in range(rate.shape[0]):
        lam = n * rate[t]
        if lam <= 0.0:
            continue
        base = lo[t] if ranged else t
        g = width[t] if ranged else 1
        if lam >= _DENSE_MEAN:
            gap = -1.0
            state, total = _poisson(state, lam * g)
            if total == 0:
                continue
            if g == 1:
                if k == cap:
                    return -1
                out_off[k] = perm[base] if mapped else base
                out_refs[k] = total
                state, out_write[k] = _write_flag(state, total, nowrite, log_nowrite)
                k += 1
                continue
            # Draws go through a small buffer a block at a time: increments whose
            # addresses are all known overlap their cache misses.
            done = 0
            while done < total:
                m = min(_DRAW_BLOCK, total - done)
                for i in range(m):
                    state, r = splitmix64_next(state)
                    buf[i] = np.int64(((r >> _S32) * np.uint64(g)) >> _S32)
                for i in range(m):
                    counts[buf[i]] += 1
                done += m
            # Branch-free: every index is stored at slot k, which advances only
            # when its count is not 0 (a test mispredicts on a third of them).
            k0 = k
            last = cap - 1
            for j in range(g):
                c = counts[j]
                counts[j] = 0
                i = base + j
                slot = min(k, last)  # past the end only if the outputs are too short
                out_off[slot] = perm[i] if mapped else i
                out_refs[slot] = c
                k += c != 0
            if k >= cap:
                return -1
            for j in range(k0, k):
                state, out_write[j] = _write_flag(state, out_refs[j], nowrite, log_nowrite)
            continue
        if gap < 0.0:
            state, u = _uniform(state)
            gap = -math.log(1.0 - u)
        span = lam * g
        if gap >= span:  # no reference falls in this bucket
            gap -= span
            continue
        inv_lam = 1.0 / lam
        x = gap * inv_lam  # position of the next reference, in indices from the bucket's start
        while x < g:
            j = np.int64(x)
            c = 0
            while x < j + 1:  # every reference inside index j's unit
                c += 1
                state, u = _uniform(state)
                x -= math.log(1.0 - u) * inv_lam
            if k == cap:
                return -1
            i = base + j
            out_off[k] = perm[i] if mapped else i
            out_refs[k] = c
            state, out_write[k] = _write_flag(state, c, nowrite, log_nowrite)
            k += 1
        gap = (x - g) * lam  # the hazard left over, into the next bucket
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
        weights: each bucket's weight (non-negative, positive sum).
        n_offsets: pages in the region.
        lo, width: for a ranged sampler, the index range of each bucket.
        perm: maps an index to a page offset (``None``: the index is the offset).
    """

    def __init__(self, weights: np.ndarray, n_offsets: int, lo: np.ndarray | None = None,
                 width: np.ndarray | None = None, perm: np.ndarray | None = None) -> None:
        weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.table = self._table(weights)
        self.n_offsets = n_offsets
        self.ranged = lo is not None
        self.lo = _EMPTY_I64 if lo is None else np.ascontiguousarray(lo, dtype=np.int64)
        self.width = _EMPTY_I64 if width is None else np.ascontiguousarray(width, dtype=np.int64)
        self.perm = _EMPTY_I64 if perm is None else np.ascontiguousarray(perm)
        if self.ranged:
            self.n_index = int((self.lo + self.width).max()) if self.lo.shape[0] else 0
            #: Share of the references one index of each bucket gets (page mode).
            self.rate = weights / (weights.sum() * self.width)
        else:
            self.n_index = int(weights.shape[0])
            self.rate = weights / weights.sum()
        self._expected: tuple[int, int] = (-1, 0)  # (n, output capacity for n references)

    @staticmethod
    def _table(weights: np.ndarray) -> np.ndarray:
        prob, alias = _build_alias(weights)
        thr = np.minimum(np.floor(prob * 2.0**32), 2.0**32 - 1).astype(np.uint64)
        return (thr << np.uint64(32)) | alias.astype(np.uint64)

    @classmethod
    def singleton(cls, weights: np.ndarray, perm: np.ndarray | None = None) -> Sampler:
        """Index ``b`` (page offset ``perm[b]``) drawn with probability ~ ``weights[b]``."""
        return cls(weights, int(np.asarray(weights).shape[0]), perm=perm)

    @classmethod
    def ranges(cls, weights: np.ndarray, lo: np.ndarray, width: np.ndarray, n_offsets: int,
               perm: np.ndarray | None = None) -> Sampler:
        """Range ``i`` = indices ``[lo[i], lo[i] + width[i])``, chosen with ``weights[i]``."""
        return cls(weights, n_offsets, lo, width, perm)

    def draw(self, rng: np.random.Generator, n: int,
             write_frac: float) -> tuple[np.ndarray, np.ndarray]:
        """``n`` references in order: (page offsets int64, write flags)."""
        off = np.empty(n, dtype=np.int64)
        writes = np.empty(n, dtype=np.bool_)
        if n:
            _draw_ordered(n, _seed(rng), self.table, self.lo, self.width, self.perm,
                          self.ranged, _write_threshold(write_frac), off, writes)
        return off, writes

    def _capacity(self, n: int) -> tuple[int, int]:
        """(output entries, count scratch) for ``n`` references.

        The pages touched are a sum of independent Bernoulli trials, whose
        spread is below the square root of their mean: 8 of those and the
        rounding up (to sizes that repeat from tick to tick, which glibc then
        serves from the memory the last tick freed) almost never fall short;
        when they do, the draw is repeated with room for every index. A dense
        bucket of several indices needs scratch counts for each.
        """
        if self._expected[0] != n:
            width = self.width if self.ranged else np.ones(self.rate.shape[0], np.int64)
            lam = n * self.rate
            mean = float(np.sum(-np.expm1(-lam) * width))
            cap = _round_up(int(mean + 8.0 * math.sqrt(mean) + 16.0))
            dense = (lam >= _DENSE_MEAN) & (width > 1)
            scratch = int(width[dense].max()) if dense.any() else 0
            self._expected = (n, (min(self.n_index + 1, cap), scratch))
        return self._expected[1]

    def draw_pages(self, rng: np.random.Generator, n: int,
                   write_frac: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The distinct pages ``n`` references touch: (page offsets, refs, write flags).

        Drawn directly, not reference by reference (see the module essay); the
        refs add up to ``n`` on average. Entries come in index order: page order
        for uniform and churn, popularity rank order for Zipf, permuted order
        for hot/cold.
        """
        if n <= 0:
            return _EMPTY_I64.copy(), _EMPTY_I64.copy(), np.zeros(0, dtype=np.bool_)
        nowrite, log_nowrite = _nowrite_table(write_frac)
        seed = _seed(rng)
        cap, scratch = self._capacity(n)
        counts = _scratch_counts(scratch)
        while True:
            off = np.empty(cap, dtype=np.int64)
            refs = np.empty(cap, dtype=np.int64)
            writes = np.empty(cap, dtype=np.bool_)
            k = _draw_distinct(n, seed, self.rate, self.lo, self.width, self.ranged, self.perm,
                               nowrite, log_nowrite, counts, off, refs, writes)
            if k >= 0:
                return off[:k], refs[:k], writes[:k]
            cap = self.n_index + 1  # the same draw again, with room for every index


#: Each thread's scratch counts for dense buckets (all zero between draws): workload
#: batches are drawn on a worker thread, or on the main one for a single VM.
_SCRATCH = threading.local()


def _scratch_counts(n: int) -> np.ndarray:
    """This thread's zeroed scratch of at least ``n`` int32 counts."""
    counts = getattr(_SCRATCH, "counts", _EMPTY_I32)
    if counts.shape[0] < n:
        counts = np.zeros(n, dtype=np.int32)
        _SCRATCH.counts = counts
    return counts


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
