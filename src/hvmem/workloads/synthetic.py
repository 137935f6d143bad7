"""Synthetic reference streams: what the programs of a guest touch, tick by tick.

What is modelled
----------------
A synthetic workload is one guest process touching one region of its virtual
address space at a steady rate. Each kind of workload is a class implementing
the :class:`~hvmem.workloads.base.Workload` protocol, configured by a frozen
dataclass whose fields carry their units (``refs_per_s``, ``region_pages``,
``duration_s``...) and which checks itself, raising
:class:`~hvmem.errors.ConfigError` that names the field::

    UniformParams    every page of the region equally likely
    ZipfParams       page of popularity rank k with probability ~ k**-alpha
    HotColdParams    hot_pages_frac of the pages get hot_refs_frac of the references
    ScanParams       a cyclic sequential sweep, pages per second or per tick
    IdleParams       a few references per second over a few pages (housekeeping)
    PhasesParams     a schedule of the above: the working set grows, shrinks, moves
    ChurnParams      mmap/munmap of chunks on a schedule, touching what is live

``setup()`` maps the region (one ``MAP``); churn maps and unmaps as it goes.
Every write stores a token from the workload's content model
(:mod:`hvmem.workloads.content`): zero, guest-image or private pages in the
proportions of ``params.content``.

Rates and time. A rate in references per second turns into a whole number of
references per tick; the fractional part is carried to the next tick, so a
rate of 5 refs/s with 1 ms ticks gives one reference every 200 ticks and the
long-run count is exact. Each reference is a write with probability
``write_frac`` (default 0.3: loads outnumber stores about two to one in
integer code; the Lackey generator in ``trace.py`` has a similar mix).

Fidelity (``params.fidelity``, see :class:`~hvmem.workloads.base.Fidelity`):

* ``"mmu"``: one entry per reference, in order, ``refs == 1``;
* ``"page"``: the tick's references are drawn one by one exactly as in mmu
  mode, then aggregated: one entry per distinct page, ``refs`` = its count,
  ``is_write`` if any of its references wrote (drawn as
  ``1 - (1 - write_frac) ** refs``, which is exact for independent writes).
  The total reference count is preserved and the batch never has more entries
  than the region has pages. Entries come in the sampler's index order: page
  order for uniform, idle and churn, popularity-rank order (hottest first) for
  Zipf, the hot set first for hot/cold, sweep order for scans.

Sampling
--------
Every popularity distribution here is a mixture of uniform ranges over an
index space, drawn with Walker's alias method (Vose's construction): one
64-bit random number picks a bucket (high 32 bits, by multiply-shift) and
decides between the bucket and its alias (low 32 bits), in O(1) whatever the
skew. Buckets are ranges of indices; a second number picks the index within
the range (with a single bucket, as for uniform and idle, the first number
does). Hot/cold has two buckets, churn one per live chunk. For Zipf over up to
2**17 pages each bucket is one popularity rank (8 bytes of table per page,
exact). Larger Zipf regions group the tail ranks into blocks whose ranks
differ in probability by at most 0.1 % (:func:`zipf_blocks`): 10**6 pages at
alpha 1 need 8 500 buckets, a table that stays in the L2 cache, where an exact
8 MiB table would cost a cache miss per draw (measured: twice as slow). A
seeded random permutation maps indices to pages, so Zipf ranks and the hot set
are scattered over the region as in a real heap, not packed at its start.

Draws run in Numba kernels with SplitMix64, seeded per call from the workload's
NumPy stream, so a run is reproducible from the scenario seed (pass a named
stream of :class:`~hvmem.core.rng.RngStreams`). Page mode counts references
per *index* (not per page) in a reused ``int32`` buffer: the increment's
address then depends on the random number alone, and for Zipf most increments
hit the hot low ranks, in cache. A second pass collects the non-zero counts,
maps them through the permutation and resets them. When a tick has far fewer
references than the index space (an idle VM with a huge region) the drawn
pages are sorted instead (``np.unique``), so nothing scales with the region.

Cost (measured on the development machine, a 2-vCPU AMD EPYC KVM guest,
NumPy 2, after JIT warm-up, CPU time, best of 21; the machine was shared and
medians ran up to 2x higher; ``tests/workloads`` time nothing): one
``next_batch`` of 10**6 references over a 10**6-page region, tokens included,
took (ms; entries in page mode)::

                     page fidelity            mmu fidelity
    uniform          9   (632 000 entries)    4
    zipf, alpha 1    8   (217 000 entries)   15
    hot/cold 20/80   8   (373 000 entries)   14

and Zipf over 10**5 pages, 4 ms (81 000 entries). A scan or an idle VM costs
well under a millisecond; churn with 1 000 live 1 MiB chunks about 11 ms.
Page mode pays for its output: 10**6 uniform references touch 630 000
distinct pages of 10**6, Zipf (alpha 1) 217 000. Building a Zipf sampler for
10**6 pages takes about 30 ms, once. Memory per workload: 4 bytes per page for
the permutation (Zipf, hot/cold), 8 per page for an exact Zipf table (at most
1 MiB), plus 4 bytes per page for the page-mode count buffer.

Choices
-------
* Deterministic per-tick counts (with carry) rather than Poisson counts: the
  rate is what a scenario states and totals are exact; randomness lies in
  which pages are touched.
* Phases switch at their exact boundary even inside a tick: the tick is split,
  each part drawn from its phase, and (page mode) the parts re-aggregated.
  The schedule's clock starts at the first ``next_batch``; after the last
  phase the schedule repeats (``loop``) or the last phase goes on.
* Churn allocates fixed-size chunks in slots of its region (a random free
  slot, as a fragmented heap reuses addresses), frees each after its lifetime
  (exponential or fixed) at the start of the first tick after it ends, and
  ``UNMAP``s come before ``MAP``s in a tick so a freed slot can be reused at
  once. A new chunk is written once page by page (``touch_on_alloc``, as
  ``calloc`` or a first ``memset``), then shares the tick's references evenly
  with the other live pages.

References: Breslau et al., "Web Caching and Zipf-like Distributions",
INFOCOM 1999 (Zipf popularity); A. J. Walker, "An Efficient Method for
Generating Discrete Random Variables with General Distributions", ACM TOMS
1977, and M. D. Vose, "A Linear Algorithm for Generating Random Numbers with a
Given Distribution", IEEE TSE 1991 (alias method); G. Steele et al., "Fast
Splittable Pseudorandom Number Generators", OOPSLA 2014 (SplitMix64); Denning,
"The Working Set Model for Program Behavior", CACM 1968 (phases).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numba import njit

from hvmem.errors import ConfigError
from hvmem.params import REQUIRED, check, choice, fail, flag, frac, number, size, table, time, whole
from hvmem.units import PAGE_SHIFT, size_text
from hvmem.workloads.base import AccessBatch, Fidelity, MemoryOp, MemoryOpKind, Workload
from hvmem.workloads.content import ContentModel, ContentParams

__all__ = [
    "DEFAULT_FIRST_VPN",
    "MAX_PROCESSES",
    "MAX_REFS_PER_S",
    "MAX_REGION_PAGES",
    "VPN_SPACE_PAGES",
    "ChurnParams",
    "ChurnWorkload",
    "GeneratorParams",
    "HotColdParams",
    "HotColdWorkload",
    "IdleParams",
    "IdleWorkload",
    "Phase",
    "PhasesParams",
    "PhasesWorkload",
    "RegionParams",
    "ScanParams",
    "ScanWorkload",
    "UniformParams",
    "UniformWorkload",
    "ZipfParams",
    "ZipfWorkload",
    "ZIPF_EXACT_MAX_PAGES",
    "ZIPF_MAX_ERROR_FRAC",
    "make_workload",
    "page_write_flags",
    "with_fidelity",
    "zipf_blocks",
    "zipf_cdf",
    "zipf_pages",
]

#: Default first page of a workload's region: VPN 0x400 is address 0x400000, where
#: x86-64 ELF executables traditionally start; any VPN will do.
DEFAULT_FIRST_VPN = 0x400
#: Pages in a 48-bit virtual address space (36-bit VPNs, four-level paging).
VPN_SPACE_PAGES = 1 << 36
#: The samplers pack page offsets in 32 bits.
MAX_REGION_PAGES = (1 << 31) - 1
#: Page mode sorts the drawn pages instead of counting into a region-sized
#: buffer when a tick has fewer than region_pages / this many references.
_SPARSE_FACTOR = 16
#: Counts are int32: no page can reach 2**31 references in a tick of fewer draws.
_MAX_DRAWS_PER_COUNT = (1 << 31) - 1
_NS_PER_S = 1_000_000_000
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
    :class:`ZipfWorkload` uses the faster alias tables.

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

_GOLDEN = np.uint64(0x9E37_79B9_7F4A_7C15)
_M1 = np.uint64(0xBF58_476D_1CE4_E5B9)
_M2 = np.uint64(0x94D0_49BB_1331_11EB)
_LOW32 = np.uint64(0xFFFF_FFFF)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)
_S32 = np.uint64(32)
_U0 = np.uint64(0)
_TWO_M53 = 1.0 / float(1 << 53)
_EMPTY_I64 = np.zeros(0, dtype=np.int64)


@njit(cache=True, inline="always")
def _next(state):
    """SplitMix64: advance the state, return (state, 64 random bits)."""
    state = state + _GOLDEN
    z = state
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return state, z ^ (z >> _S31)


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
    state, r = _next(state)
    if table.shape[0] == 1:  # one bucket (uniform, idle): no alias step, one number
        if ranged:
            return state, lo[0] + np.int64(((r >> _S32) * np.uint64(width[0])) >> _S32)
        return state, np.int64(0)
    b = ((r >> _S32) * np.uint64(table.shape[0])) >> _S32
    w = table[np.int64(b)]
    keep_mask = _U0 - np.uint64((r & _LOW32) < (w >> _S32))
    t = np.int64((w & _LOW32) ^ (((w & _LOW32) ^ b) & keep_mask))
    if ranged:
        state, r2 = _next(state)
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
        state, r = _next(state)
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
    wait for the table loads before it (about 1.5x faster).
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
    state, r = _next(state)
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


class _Sampler:
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
    def singleton(cls, weights: np.ndarray, perm: np.ndarray | None = None) -> _Sampler:
        """Index ``b`` (page offset ``perm[b]``) drawn with probability ~ ``weights[b]``."""
        n = int(np.asarray(weights).shape[0])
        return cls(cls._table(weights), n, perm=perm)

    @classmethod
    def ranges(cls, weights: np.ndarray, lo: np.ndarray, width: np.ndarray, n_offsets: int,
               perm: np.ndarray | None = None) -> _Sampler:
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


def _merge_sorted(
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


class _Rate:
    """Turns a per-second rate into whole counts per tick, carrying the fraction."""

    def __init__(self, per_s: float) -> None:
        self.per_s = float(per_s)
        self.carry = 0.0

    def take(self, tick_ns: int) -> int:
        if tick_ns < 0:
            raise ValueError(f"tick_ns must not be negative, got {tick_ns}")
        x = self.per_s * (tick_ns / _NS_PER_S) + self.carry
        n = math.floor(x)
        self.carry = x - n
        return int(n)


# -------------------------------------------------------------------- validation

#: Guest processes run as ASIDs 1..4094 (12-bit PCIDs, 0 reserved): index 0..4093.
MAX_PROCESSES = 4094
#: No vCPU makes more than a few 10**9 memory references a second; more is a unit slip.
MAX_REFS_PER_S = 1e10
#: Largest region a scenario may state: 4 TiB, more than any VM has (the samplers could
#: take MAX_REGION_PAGES).
_MAX_REGION_SIZE_PAGES = 1 << 30
#: Longest phase, churn lifetime or run a scenario may state: 30 days.
_MAX_SECONDS = 30 * 86400.0
_FIDELITIES = tuple(str(f) for f in Fidelity)


def _fail(owner: object, name: str, expected: str, found: object) -> ConfigError:
    """An error at ``owner.name``; ``owner`` is an object or the path before ``name``."""
    head = owner if isinstance(owner, tuple) else (type(owner).__name__,)
    return ConfigError(f"expected {expected}, found {found!r}", path=(*head, name))


def _check_int(owner: object, name: str, lo: int, hi: int) -> int:
    """A rule between fields: ``lo <= owner.name <= hi`` (the field's own bounds are declared)."""
    value = getattr(owner, name)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or value < lo or value > hi:
        raise _fail(owner, name, f"an integer in [{lo}, {hi}]", value)
    return int(value)


def _refs_per_s(default: float | None, doc: str = "memory references per simulated second",
                **kw: object) -> Any:
    return number(default, doc, lo=0.0, hi=MAX_REFS_PER_S, unit="1/s", **kw)


def _region(doc: str) -> Any:
    return size(REQUIRED, doc, unit="pages", lo=0, lo_open=True, hi=_MAX_REGION_SIZE_PAGES)


def _fidelity() -> Any:
    return choice(Fidelity.PAGE, _FIDELITIES, "'page' or 'mmu' (see the module essay)", key=None,
                  owner="fidelity")


def _content() -> Any:
    return table(ContentParams, "what writes store (zero, image and private pages)",
                 factory=ContentParams, key=None, owner="vm[].content")


def _process() -> Any:
    return whole(0, "the guest process that runs it (0 is the first)", lo=0,
                 hi=MAX_PROCESSES - 1)


# ----------------------------------------------------------------------- params


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionParams:
    """Fields every synthetic workload shares: where it works and how it writes."""

    region_pages: int = _region("the region the workload touches (mapped at setup)")
    first_vpn: int = whole(DEFAULT_FIRST_VPN, "first guest-virtual page of the region", lo=0,
                           hi=VPN_SPACE_PAGES - 1)
    process: int = _process()
    file_backed: bool = flag(False, "map the region as a file mapping (page cache) instead of "
                             "anonymous memory")
    write_frac: float = frac(0.3, "share of references that are writes",
                             source="assumed (module essay)")
    fidelity: str = _fidelity()
    content: ContentParams = _content()

    def __post_init__(self) -> None:
        check(self)
        self._validate()

    def _validate(self) -> None:
        if self.first_vpn + self.region_pages > VPN_SPACE_PAGES:
            raise _fail(self, "region_pages", f"a region ending at most at VPN "
                        f"{VPN_SPACE_PAGES:#x} (48-bit addresses)",
                        self.region_pages)

    @property
    def page_fidelity(self) -> bool:
        """True in page fidelity, False in mmu fidelity."""
        return self.fidelity == Fidelity.PAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class UniformParams(RegionParams):
    """Every page of the region equally likely."""

    refs_per_s: float = _refs_per_s(1e6)


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipfParams(RegionParams):
    """Zipf popularity: the page of rank k gets a share ~ k**-alpha."""

    refs_per_s: float = _refs_per_s(1e6)
    alpha: float = number(1.0, "the skew: 0 is uniform, about 1 web-like, larger more skewed",
                          lo=0.0, hi=20.0, source="Breslau et al., INFOCOM 1999")


@dataclass(frozen=True, slots=True, kw_only=True)
class HotColdParams(RegionParams):
    """A hot set: ``hot_pages_frac`` of the pages get ``hot_refs_frac`` of the references.

    Within the hot set and within the rest, pages are equally likely. The
    classic "80/20" rule is ``hot_pages_frac=0.2, hot_refs_frac=0.8``.
    """

    refs_per_s: float = _refs_per_s(1e6)
    hot_pages_frac: float = frac(0.2, "share of the region's pages that are hot", lo_open=True,
                                 hi_open=True)
    hot_refs_frac: float = frac(0.8, "share of the references that go to the hot pages")

    def _validate(self) -> None:
        RegionParams._validate(self)
        if self.region_pages < 2:
            raise _fail(self, "region_pages", "at least 2 pages (a hot and a cold one)",
                        self.region_pages)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanParams(RegionParams):
    """A cyclic sequential sweep over the region (a scan, a streaming copy, a GC mark).

    Set exactly one of the three rates.
    """

    pages_per_s: float | None = number(None, "pages visited per simulated second", lo=0.0,
                                       hi=1e8, unit="1/s", optional=True, none="another rate")
    pages_per_tick: int | None = whole(None, "pages visited per tick, whatever its length",
                                       lo=0, hi=MAX_REGION_PAGES, optional=True,
                                       none="another rate")
    refs_per_s: float | None = _refs_per_s(None, "references per second (pages per second = "
                                           "refs_per_s / refs_per_page)", optional=True,
                                           none="another rate")
    refs_per_page: int = whole(64, "references each visit makes (64: one per 64-byte line)",
                               lo=1, hi=1 << 20)
    start_page: int = whole(0, "offset in the region where the sweep starts", lo=0,
                            hi=MAX_REGION_PAGES - 1)

    def _validate(self) -> None:
        RegionParams._validate(self)
        given = [n for n in ("pages_per_s", "pages_per_tick", "refs_per_s")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            raise _fail(self, "pages_per_s",
                        "exactly one of pages_per_s, pages_per_tick, refs_per_s", given)
        _check_int(self, "start_page", 0, self.region_pages - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleParams(RegionParams):
    """An idle guest: a trickle of references over a few pages (timers, housekeeping).

    The region (all of it mapped) is what the idle guest once allocated; only
    ``housekeeping_pages`` random pages of it are touched, at ``refs_per_s``.
    """

    refs_per_s: float = _refs_per_s(8.0, "references per simulated second (a few)")
    housekeeping_pages: int = whole(16, "pages the housekeeping touches", lo=1,
                                    hi=MAX_REGION_PAGES)
    write_frac: float = frac(0.5, "share of references that are writes (timers and counters "
                             "write often)", source="assumed")

    def _validate(self) -> None:
        RegionParams._validate(self)
        _check_int(self, "housekeeping_pages", 1, self.region_pages)


#: Parameters of the workloads a phase may run.
GeneratorParams = UniformParams | ZipfParams | HotColdParams | ScanParams | IdleParams
_GENERATOR_TYPES = (UniformParams, ZipfParams, HotColdParams, ScanParams, IdleParams)
_GENERATOR_EXPECT = "uniform, zipf, hot/cold, scan or idle parameters"


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One phase of a schedule: a duration and what runs during it.

    Give either ``params`` (a full generator, whose region must lie inside the
    phased region) or ``working_set_pages`` (the schedule's ``base`` generator
    over that many pages starting ``offset_pages`` into the region).
    """

    duration_s: float = time(REQUIRED, "how long the phase lasts", unit="s", lo=0.0,
                             lo_open=True, hi=_MAX_SECONDS)
    params: GeneratorParams | None = table(
        _GENERATOR_TYPES, "the generator of this phase: a kind and its parameters", default=None,
        optional=True, flatten=True, none="the schedule's base over working_set",
        expect=_GENERATOR_EXPECT)
    working_set_pages: int | None = size(None, "or the working set the base generator runs "
                                         "over", unit="pages", lo=0, lo_open=True,
                                         hi=_MAX_REGION_SIZE_PAGES, optional=True,
                                         none="the phase's own generator")
    offset_pages: int = size(0, "where the phase's pages start within the phased region",
                             unit="pages", lo=0, hi=_MAX_REGION_SIZE_PAGES)

    def __post_init__(self) -> None:
        check(self, skip=("params",))  # the schedule checks it, knowing the phase's index


@dataclass(frozen=True, slots=True, kw_only=True)
class PhasesParams:
    """A schedule of generators over one region, so the working set changes over time.

    Every phase stays inside the region; ``fidelity`` applies to every phase
    (their own is overridden).
    """

    region_pages: int = _region("the phased region, mapped at setup")
    phases: tuple[Phase, ...] = table(Phase, "the schedule, in order", array=True)
    first_vpn: int = whole(DEFAULT_FIRST_VPN, "first guest-virtual page of the region", lo=0,
                           hi=VPN_SPACE_PAGES - 1)
    process: int = _process()
    file_backed: bool = flag(False, "map the region as a file mapping")
    base: GeneratorParams | None = table(
        _GENERATOR_TYPES, "the generator working-set phases resize: a kind and its parameters",
        default=None, optional=True, none="uniform at 10**6 references per second",
        expect=_GENERATOR_EXPECT)
    loop: bool = flag(False, "repeat the schedule; otherwise the last phase goes on for ever")
    fidelity: str = _fidelity()

    def __post_init__(self) -> None:
        check(self)
        if self.first_vpn + self.region_pages > VPN_SPACE_PAGES:
            raise _fail(self, "region_pages", "a region inside the 48-bit address space",
                        self.region_pages)
        if not self.phases:
            raise _fail(self, "phases", "a non-empty list of phases", self.phases)
        self.resolved()  # checks every phase

    def resolved(self) -> tuple[tuple[int, GeneratorParams], ...]:
        """Each phase as (duration in ns, the generator parameters it runs)."""
        out = []
        for i, phase in enumerate(self.phases):
            where = ("PhasesParams", "phases", i)
            if not isinstance(phase, Phase):
                raise _fail(where[:-1], i, "a Phase", type(phase).__name__)
            duration_ns = max(1, round(phase.duration_s * _NS_PER_S))
            if (phase.params is None) == (phase.working_set_pages is None):
                raise _fail(where, "params", "exactly one of params and working_set_pages",
                            (phase.params, phase.working_set_pages))
            if phase.params is not None:
                params = phase.params
                if not isinstance(params, _GENERATOR_TYPES):
                    raise _fail(where, "params", _GENERATOR_EXPECT, type(params).__name__)
                if params.process != self.process:
                    raise _fail((*where, "params"), "process",
                                f"{self.process} (the schedule's)", params.process)
                lo, hi = params.first_vpn, params.first_vpn + params.region_pages
                if lo < self.first_vpn or hi > self.first_vpn + self.region_pages:
                    raise _fail((*where, "params"), "first_vpn",
                                f"a range inside [{self.first_vpn:#x}, "
                                f"{self.first_vpn + self.region_pages:#x})",
                                f"[{lo:#x}, {hi:#x})")
            else:
                ws = _check_int(phase, "working_set_pages", 1, self.region_pages)
                off = _check_int(phase, "offset_pages", 0, self.region_pages - ws)
                base = self.base if self.base is not None else UniformParams(region_pages=ws)
                params = dataclasses.replace(base, region_pages=ws,
                                             first_vpn=self.first_vpn + off, process=self.process)
            if params.fidelity != self.fidelity:
                params = dataclasses.replace(params, fidelity=self.fidelity)
            out.append((duration_ns, params))
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChurnParams(RegionParams):
    """Allocation churn: chunks mapped, used and unmapped on a schedule.

    The region is an arena of ``region_pages // chunk_pages`` slots; nothing is
    mapped at setup.
    """

    chunk_pages: int = size(256, "pages per allocation", unit="pages", lo=0, lo_open=True,
                            hi=_MAX_REGION_SIZE_PAGES)
    allocs_per_s: float = number(10.0, "allocations per simulated second", lo=0.0, hi=1e6,
                                 unit="1/s")
    lifetime_s: float = time(5.0, "(mean) time from an allocation to its free", unit="s",
                             lo=0.0, lo_open=True, hi=_MAX_SECONDS)
    lifetime_dist: str = choice("exponential", ("exponential", "fixed"),
                                "how lifetimes are drawn around lifetime")
    refs_per_s: float = _refs_per_s(1e6, "references per second, spread evenly over the live "
                                    "pages")
    touch_on_alloc: bool = flag(True, "write every page of a new chunk once when it is mapped")

    def _validate(self) -> None:
        RegionParams._validate(self)
        if self.chunk_pages > self.region_pages:
            raise fail(self, "chunk_pages", f"at most the region "
                       f"({size_text(self.region_pages << PAGE_SHIFT)})")


_P = TypeVar("_P")


def with_fidelity(params: _P, fidelity: str) -> _P:
    """A copy of workload parameters with another fidelity (what a simulator sets)."""
    return dataclasses.replace(params, fidelity=fidelity)  # type: ignore[type-var]


# --------------------------------------------------------------------- workloads


class _RegionWorkload:
    """Shared machinery: the region, the content model, batch assembly."""

    kind = "region"

    def __init__(self, params: RegionParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(f"{type(self).__name__}: rng must be a numpy Generator "
                              f"(a named stream from RngStreams), found {type(rng).__name__}")
        self.params = params
        self.rng = rng
        self.name = name if name is not None else self.kind
        if content_key is None:
            content_key = int(rng.integers(0, 1 << 63))
        self.content = ContentModel(params.content, content_key)
        #: References generated so far.
        self.refs_total = 0

    def setup(self) -> tuple[MemoryOp, ...]:
        """Map the region."""
        p = self.params
        return (MemoryOp(MemoryOpKind.MAP, p.process, p.first_vpn, p.region_pages,
                         p.file_backed),)

    def _emit(self, offsets: np.ndarray, refs: np.ndarray | None, is_write: np.ndarray,
              ops: tuple[MemoryOp, ...] = ()) -> AccessBatch:
        """A batch from region offsets (``refs`` None: one reference each)."""
        n = offsets.shape[0]
        if n == 0:
            return AccessBatch.empty(ops)
        vpn = offsets  # the offsets are ours: turn them into VPNs in place
        vpn += self.params.first_vpn
        if refs is None:
            refs = np.ones(n, dtype=np.int64)
        self.refs_total += int(refs.sum())
        return AccessBatch(np.full(n, self.params.process, dtype=np.int32), vpn, is_write,
                           refs, self.content.tokens(vpn, is_write), ops)


class _SampledWorkload(_RegionWorkload):
    """A workload drawing ``refs_per_s`` references per second from a sampler."""

    def __init__(self, params: RegionParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        super().__init__(params, rng, name=name, content_key=content_key)
        self._rate = _Rate(params.refs_per_s)  # type: ignore[attr-defined]
        self.sampler = self._make_sampler()

    def _make_sampler(self) -> _Sampler:
        """The sampler of a concrete workload (each subclass provides its own)."""
        raise TypeError(f"{type(self).__name__} does not define its sampler")

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """The references of the tick ``[now_ns, now_ns + tick_ns)``."""
        n = self._rate.take(tick_ns)
        if n == 0:
            return AccessBatch.empty()
        if self.params.page_fidelity:
            off, refs, writes = self.sampler.draw_pages(self.rng, n, self.params.write_frac)
            return self._emit(off, refs, writes)
        off, writes = self.sampler.draw(self.rng, n, self.params.write_frac)
        return self._emit(off, None, writes)


class UniformWorkload(_SampledWorkload):
    """Every page of the region equally likely (:class:`UniformParams`)."""

    kind = "uniform"
    params: UniformParams

    def _make_sampler(self) -> _Sampler:
        n = self.params.region_pages
        return _Sampler.ranges(np.ones(1), np.zeros(1, np.int64), np.array([n]), n)


class ZipfWorkload(_SampledWorkload):
    """Zipf-popular pages (:class:`ZipfParams`); ranks scattered by a permutation."""

    kind = "zipf"
    params: ZipfParams

    def _make_sampler(self) -> _Sampler:
        n = self.params.region_pages
        page_of_rank = self.rng.permutation(n).astype(np.int32)
        if n <= ZIPF_EXACT_MAX_PAGES:  # one alias entry per rank: exact, table in L2
            weights = np.arange(1, n + 1, dtype=np.float64) ** -self.params.alpha
            return _Sampler.singleton(weights, page_of_rank)
        lo, width, weights = zipf_blocks(n, self.params.alpha)
        return _Sampler.ranges(weights, lo, width, n, page_of_rank)

    @property
    def page_of_rank(self) -> np.ndarray:
        """Region offset of the page of each popularity rank (index 0: the hottest)."""
        return self.sampler.perm.astype(np.int64)

    def rank_probabilities(self) -> np.ndarray:
        """The exact Zipf share of each rank (index 0: the hottest page).

        Above :data:`ZIPF_EXACT_MAX_PAGES` pages the sampler draws each rank
        within :data:`ZIPF_MAX_ERROR_FRAC` (relative) of this.
        """
        w = np.arange(1, self.params.region_pages + 1, dtype=np.float64) ** -self.params.alpha
        return w / w.sum()


class HotColdWorkload(_SampledWorkload):
    """A hot set receiving most references (:class:`HotColdParams`)."""

    kind = "hotcold"
    params: HotColdParams

    def _make_sampler(self) -> _Sampler:
        p = self.params
        n = p.region_pages
        self.n_hot_pages = min(n - 1, max(1, round(p.hot_pages_frac * n)))
        perm = self.rng.permutation(n).astype(np.int32)
        weights = np.array([p.hot_refs_frac, 1.0 - p.hot_refs_frac])
        return _Sampler.ranges(weights, np.array([0, self.n_hot_pages]),
                               np.array([self.n_hot_pages, n - self.n_hot_pages]), n, perm)

    @property
    def hot_pages(self) -> np.ndarray:
        """Region offsets of the hot pages (sorted)."""
        return np.sort(self.sampler.perm[: self.n_hot_pages].astype(np.int64))


class IdleWorkload(_SampledWorkload):
    """A trickle of housekeeping references (:class:`IdleParams`)."""

    kind = "idle"
    params: IdleParams

    def _make_sampler(self) -> _Sampler:
        p = self.params
        k = p.housekeeping_pages
        chosen = np.sort(self.rng.choice(p.region_pages, size=k, replace=False)).astype(np.int64)
        return _Sampler.ranges(np.ones(1), np.zeros(1, np.int64), np.array([k]),
                               p.region_pages, chosen)

    @property
    def housekeeping_pages(self) -> np.ndarray:
        """Region offsets of the pages the housekeeping touches (sorted)."""
        return self.sampler.perm.copy()


class ScanWorkload(_RegionWorkload):
    """A cyclic sequential sweep (:class:`ScanParams`)."""

    kind = "scan"
    params: ScanParams

    def __init__(self, params: ScanParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        super().__init__(params, rng, name=name, content_key=content_key)
        if params.pages_per_s is not None:
            self._rate: _Rate | None = _Rate(params.pages_per_s)
        elif params.refs_per_s is not None:
            self._rate = _Rate(params.refs_per_s / params.refs_per_page)
        else:
            self._rate = None
        #: Offset of the next page the sweep visits.
        self.cursor = params.start_page

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """The pages the sweep visits in this tick, in order."""
        p = self.params
        if self._rate is not None:
            k = self._rate.take(tick_ns)
        else:  # a fixed number per tick; a zero-length tick visits nothing
            k = int(p.pages_per_tick or 0) if tick_ns > 0 else 0
        if k == 0:
            return AccessBatch.empty()
        n = p.region_pages
        start = self.cursor
        self.cursor = (start + k) % n
        if not p.page_fidelity:
            pages = (start + np.arange(k, dtype=np.int64)) % n
            off = np.repeat(pages, p.refs_per_page)
            writes = self.rng.random(off.shape[0]) < p.write_frac
            return self._emit(off, None, writes)
        m = min(k, n)
        off = (start + np.arange(m, dtype=np.int64)) % n
        visits = np.full(m, k // n, dtype=np.int64)
        visits[: k % n] += 1  # the first k % n pages from the cursor get one more
        refs = visits * p.refs_per_page
        return self._emit(off, refs, page_write_flags(self.rng, refs, p.write_frac))


class PhasesWorkload:
    """A schedule of generators (:class:`PhasesParams`)."""

    kind = "phases"

    def __init__(self, params: PhasesParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        self.params = params
        self.rng = rng
        self.name = name if name is not None else self.kind
        if content_key is None:
            content_key = int(rng.integers(0, 1 << 63))
        resolved = params.resolved()
        self._bounds_ns = np.cumsum([d for d, _ in resolved]).astype(np.int64)
        self._cycle_ns = int(self._bounds_ns[-1])
        # Each phase keys its private tokens apart (same VM, distinct write counters).
        self.generators: list[Workload] = [
            make_workload(p, rng, name=f"{self.name}[{i}]",
                          content_key=(content_key + 0x9E37_79B9 * (i + 1)) % (1 << 63))
            for i, (_, p) in enumerate(resolved)
        ]
        self._start_ns: int | None = None
        #: Index of the phase the last tick ended in.
        self.current_phase = 0

    def setup(self) -> tuple[MemoryOp, ...]:
        """Map the whole phased region once."""
        p = self.params
        return (MemoryOp(MemoryOpKind.MAP, p.process, p.first_vpn, p.region_pages,
                         p.file_backed),)

    def phase_at(self, t_ns: int) -> tuple[int, int | None]:
        """(phase index, end of that phase) at ``t_ns`` after the schedule's start."""
        bounds = self._bounds_ns
        if t_ns >= self._cycle_ns and not self.params.loop:
            return len(bounds) - 1, None
        cycle, r = divmod(t_ns, self._cycle_ns)
        i = int(np.searchsorted(bounds, r, side="right"))
        return i, cycle * self._cycle_ns + int(bounds[i])

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """The tick's references, split at phase boundaries."""
        if self._start_ns is None:
            self._start_ns = now_ns
        t = now_ns - self._start_ns
        end = t + tick_ns
        parts = []
        while t < end:
            i, phase_end = self.phase_at(t)
            seg_end = end if phase_end is None else min(end, phase_end)
            parts.append(self.generators[i].next_batch(self._start_ns + t, seg_end - t))
            self.current_phase = i
            t = seg_end
        batch = AccessBatch.concat(parts)
        if len(parts) > 1 and self.params.fidelity == Fidelity.PAGE:
            batch = batch.aggregated()
        return batch


class ChurnWorkload(_RegionWorkload):
    """Allocation churn: MAP, touch, use, UNMAP (:class:`ChurnParams`)."""

    kind = "churn"
    params: ChurnParams

    def __init__(self, params: ChurnParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        super().__init__(params, rng, name=name, content_key=content_key)
        self.n_slots = params.region_pages // params.chunk_pages
        self.live = np.zeros(self.n_slots, dtype=np.bool_)
        self.expire_ns = np.zeros(self.n_slots, dtype=np.int64)
        self._allocs = _Rate(params.allocs_per_s)
        self._refs = _Rate(params.refs_per_s)
        self._counts = np.zeros(params.region_pages, dtype=np.int32)  # reused every tick
        #: Chunks mapped so far.
        self.n_allocs = 0
        #: Chunks unmapped so far.
        self.n_frees = 0
        #: Allocations not made because every slot was live.
        self.n_allocs_refused = 0

    def setup(self) -> tuple[MemoryOp, ...]:
        """Nothing is mapped at boot: chunks are mapped as they are allocated."""
        return ()

    @property
    def live_pages(self) -> int:
        """Pages currently mapped."""
        return int(self.live.sum()) * self.params.chunk_pages

    def _op(self, kind: MemoryOpKind, slot: int) -> MemoryOp:
        p = self.params
        return MemoryOp(kind, p.process, p.first_vpn + slot * p.chunk_pages, p.chunk_pages,
                        p.file_backed)

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """Free what expired, allocate what is due, touch new chunks, use live ones."""
        p = self.params
        chunk = p.chunk_pages
        freed = np.flatnonzero(self.live & (self.expire_ns <= now_ns))
        self.live[freed] = False
        self.n_frees += freed.shape[0]
        ops = [self._op(MemoryOpKind.UNMAP, int(s)) for s in freed.tolist()]

        k = self._allocs.take(tick_ns)
        free = np.flatnonzero(~self.live)
        if k > free.shape[0]:
            self.n_allocs_refused += k - free.shape[0]
            k = free.shape[0]
        new = self.rng.choice(free, size=k, replace=False) if k else _EMPTY_I64
        if k:
            born = now_ns + (np.arange(k) + 0.5) * (tick_ns / k)
            if p.lifetime_dist == "fixed":
                life = np.full(k, p.lifetime_s)
            else:
                life = self.rng.exponential(p.lifetime_s, size=k)
            self.expire_ns[new] = np.ceil(born + life * _NS_PER_S).astype(np.int64)
            self.live[new] = True
            self.n_allocs += k
            ops.extend(self._op(MemoryOpKind.MAP, int(s)) for s in new.tolist())

        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if k and p.touch_on_alloc:
            # In mmu mode in allocation order; in page mode sorted, for _merge_sorted.
            first = new if not p.page_fidelity else np.sort(new)
            off = (first[:, None] * chunk + np.arange(chunk)[None, :]).ravel().astype(np.int64)
            parts.append((off, np.ones(off.shape[0], np.int64), np.ones(off.shape[0], np.bool_)))
        n = self._refs.take(tick_ns)
        slots = np.flatnonzero(self.live)
        if n and slots.shape[0]:
            sampler = _Sampler.ranges(np.ones(slots.shape[0]), slots * chunk,
                                      np.full(slots.shape[0], chunk), p.region_pages)
            sampler._counts = self._counts  # all zero between ticks: _collect resets it
            if p.page_fidelity:
                parts.append(sampler.draw_pages(self.rng, n, p.write_frac))
            else:
                off, writes = sampler.draw(self.rng, n, p.write_frac)
                parts.append((off, np.ones(n, np.int64), writes))
        if not parts:
            return AccessBatch.empty(tuple(ops))
        if p.page_fidelity:
            # The few new-chunk pages go into the many drawn ones.
            off, refs, writes = parts[0] if len(parts) == 1 else _merge_sorted(parts[1], parts[0])
        else:
            off = np.concatenate([q[0] for q in parts])
            refs = np.concatenate([q[1] for q in parts])
            writes = np.concatenate([q[2] for q in parts])
        return self._emit(off, refs, writes, tuple(ops))


_WORKLOAD_OF = {
    UniformParams: UniformWorkload,
    ZipfParams: ZipfWorkload,
    HotColdParams: HotColdWorkload,
    ScanParams: ScanWorkload,
    IdleParams: IdleWorkload,
    PhasesParams: PhasesWorkload,
    ChurnParams: ChurnWorkload,
}


def make_workload(params: object, rng: np.random.Generator, *, name: str | None = None,
                  content_key: int | None = None) -> Workload:
    """The workload for a parameters object (synthetic or :class:`ReplayParams`).

    Args:
        params: one of the ``*Params`` classes of this module or of ``replay.py``.
        rng: the workload's random stream (a named stream of ``RngStreams``).
        name: the workload's name (defaults to its kind).
        content_key: keys the private page tokens; must differ between the
            workloads of a run (default: drawn from ``rng``, which is distinct
            for distinct stream names).

    Raises:
        ConfigError: ``params`` is not a workload's parameters.
    """
    cls = _WORKLOAD_OF.get(type(params))
    if cls is None:
        from hvmem.workloads.replay import ReplayParams, ReplayWorkload

        if isinstance(params, ReplayParams):
            return ReplayWorkload(params, rng, name=name, content_key=content_key)
        raise ConfigError(f"workload: unknown parameters {type(params).__name__}")
    return cls(params, rng, name=name, content_key=content_key)
