"""A workload phase's start: the old phase's masses split over the new phase's classes.

What a start does (``aggregate/classes.py``, Phases). Each phase has its own
classes inside each segment of the region, by content kind. When a phase
starts, the masses of the old phase's classes are pooled by (segment, content
kind), and each pool is split among the new phase's classes of the same
segment and kind in proportion to their size: a new random permutation puts
any page of the segment in any of those classes with the same odds. A pool
whose kind the new phase lacks in that segment goes to all the new phase's
classes of the segment; one whose segment the new phase does not describe
keeps its pages cold, in the new phase's first class. At power-on (the
*fresh* start) the pools are the new phase's own classes' pages, never
touched. The sampler's touched bits belong to pages, not to a phase: each
pool's pages seen touched this sampling period (its classes' masses times
their ``q``) are split with the same weights, and a new class's ``q`` is its
share of them over its mass.

The split of a pool's ``total`` pages of one backing state over weights
``w_t`` (the target classes' pages, normalised) is by largest remainder: each
class takes ``floor(w_t total)``, and the pages left over go one each to the
classes of the largest remainders ``w_t total - floor(w_t total)``, ties to the
earlier class (NumPy's stable argsort of the negated remainders, which the
kernel's insertion sort reproduces: it moves an entry before another only when
its key is strictly smaller, so equal keys keep their order). Every mass stays
an integer and a pool's pages are all placed.

How. What does not depend on the masses is worked out once per workload
(:class:`PhaseStarts`, built with its ``WorkloadClasses``) and per (old phase,
new phase) pair the first time that start happens: which pool each old
class's masses join, each pool's target classes and normalised weights, the
new phase's rows (touch and write chances, content kinds, sweep spans,
sub-blocks), its classes' heat order and its sweep. :func:`start_phase` then
does the rest over the arrays in one compiled call: pools, split, ``q`` and
the rows. The weights are NumPy's (``pages / pages.sum()``) and the kernel
does the same floating-point operations in the same order as the NumPy
routine it replaces, so the arrays it leaves are the same to the bit
(``tests/test_aggregate_phases.py`` keeps that routine as the reference).
A phase start cost about 0.5 ms of Python before; it is a few microseconds.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.aggregate.classes import PhaseClasses, WorkloadClasses
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout)

#: Columns of a phase's class rows (``PhaseStarts``): touch and write chance, content
#: kind, sweep span, then the sub-blocks' touch chances and page shares.
R_TOUCH, R_WRITE, R_CONTENT, R_SCAN_LO, R_SCAN_HI, R_SUB_PROB = range(6)
R_SUB_PAGES = R_SUB_PROB + FT_BINS
N_ROW = R_SUB_PAGES + FT_BINS
#: The start that is a power-on: no old phase, the new phase's pages never touched.
FRESH = -1


class PhaseStarts:
    """What a start of each phase of one workload writes, for :func:`start_phase`.

    Args:
        classes: the workload's classes.
    """

    def __init__(self, classes: WorkloadClasses) -> None:
        self.classes = classes
        self._rows = [_phase_rows(ph) for ph in classes.phases]
        self._starts: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

    def args(self, old: int, new: int) -> tuple[np.ndarray, ...]:
        """:func:`start_phase`'s arguments after ``h, v`` for phase ``old`` to ``new``.

        ``old`` is ``FRESH`` at power-on. Worked out the first time, then kept.
        """
        key = (old, new)
        found = self._starts.get(key)
        if found is None:
            phases = self.classes.phases
            pools = _pools(None if old == FRESH else phases[old], phases[new])
            found = self._starts[key] = self._rows[new] + pools
        return found


def _phase_rows(ph: PhaseClasses) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A phase's class rows (``R_*`` columns), heat order and sweep (pace, length, start)."""
    b = FT_BINS
    rows = np.empty((ph.pages.size, N_ROW))
    rows[:, R_TOUCH] = ph.touch_prob
    rows[:, R_WRITE] = ph.write_prob
    rows[:, R_CONTENT] = ph.content
    rows[:, R_SCAN_LO] = ph.scan_lo
    rows[:, R_SCAN_HI] = ph.scan_hi
    rows[:, R_SUB_PROB:R_SUB_PROB + b] = ph.sub_prob
    rows[:, R_SUB_PAGES:R_SUB_PAGES + b] = ph.sub_pages
    # Coldest first: never-touched classes, then by touch probability (sweeps
    # count as their pace over their length).
    pace = np.where(ph.scan_lo >= 0, ph.scan_pages_per_tick / max(1.0, ph.scan_len),
                    ph.touch_prob)
    heat = FIRST_CLASS + np.argsort(pace, kind="stable")
    sweep = np.array([ph.scan_pages_per_tick, max(1.0, ph.scan_len), ph.scan_start])
    return rows, heat.astype(np.int64), sweep


def _pools(old: PhaseClasses | None, ph: PhaseClasses) -> tuple[np.ndarray, ...]:
    """The pools of a start from ``old`` (None: fresh) to ``ph`` (module docs).

    Returns ``pool_of`` (each old class's pool; none when fresh), ``pool_pages``
    (each pool's never-touched pages when fresh, else 0), ``tgt_ptr`` (pool
    ``j``'s targets are ``tgt_ptr[j]:tgt_ptr[j + 1]``), ``tgt_class`` (their
    classes in ``ph``) and ``tgt_weight`` (their weights, summing to 1). Pools
    are numbered in the order their first class comes in the phase they are
    pooled from.
    """
    src = ph if old is None else old
    number: dict[tuple[int, int], int] = {}
    pool_of = np.array([number.setdefault(key, len(number)) for key in
                        zip(src.segment.tolist(), src.content.tolist(), strict=True)], np.int64)
    pool_pages = np.zeros(len(number), np.int64)
    if old is None:
        np.add.at(pool_pages, pool_of, ph.pages)
        pool_of = pool_of[:0]
    targets: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(ph.segment.tolist(), ph.content.tolist(), strict=True)):
        targets.setdefault(key, []).append(i)
    ptr, cls, weight = [0], [], []
    for seg, kind in number:
        idx = targets.get((seg, kind)) or [i for (s2, _), ids in targets.items()
                                           if s2 == seg for i in ids]
        if not idx:  # a segment the phase does not describe keeps its pages cold
            idx = [0]
        w = ph.pages[idx].astype(np.float64)
        w /= w.sum()
        cls += idx
        weight.append(w)
        ptr.append(len(cls))
    return (pool_of, pool_pages, np.array(ptr, np.int64), np.array(cls, np.int64),
            np.concatenate(weight))


@njit(cache=True, nogil=True)
def start_phase(m, tp, wp, ck, slo, shi, q, heat, ft, vm, h, v, rows, order, sweep,
                pool_of, pool_pages, tgt_ptr, tgt_class, tgt_weight):
    """VM ``v`` of host ``h`` starts a phase: its masses split, its class rows the phase's.

    ``rows`` .. ``tgt_weight``: ``PhaseStarts.args``. Rows 0 and 1 (free list,
    balloon) keep their masses, content kinds and ``q``.
    """
    n = rows.shape[0]
    n_c = m.shape[2]
    n_pools = pool_pages.size
    b = FT_BINS
    # Pool the old classes' masses and the pages this sampling period saw touched.
    pool = np.zeros((n_pools, N_STATES), np.int64)
    touched = np.zeros(n_pools)
    for j in range(n_pools):
        pool[j, NEVER] = pool_pages[j]
    for i in range(pool_of.size):
        j = pool_of[i]
        mass = 0
        for s in range(N_STATES):
            pool[j, s] += m[h, v, FIRST_CLASS + i, s]
            mass += m[h, v, FIRST_CLASS + i, s]
        touched[j] += float(mass) * q[h, v, FIRST_CLASS + i]
    for c in range(FIRST_CLASS, n_c):
        for s in range(N_STATES):
            m[h, v, c, s] = 0
    # Split each pool over its targets by largest remainder (module docs).
    longest = 0
    for j in range(n_pools):
        longest = max(longest, tgt_ptr[j + 1] - tgt_ptr[j])
    share = np.empty(longest, np.int64)
    key = np.empty(longest)
    rank = np.empty(longest, np.int64)
    seen = np.zeros(n)
    for j in range(n_pools):
        a = tgt_ptr[j]
        n_t = tgt_ptr[j + 1] - a
        for t in range(n_t):
            seen[tgt_class[a + t]] += tgt_weight[a + t] * touched[j]
        for s in range(N_STATES):
            total = pool[j, s]
            if total == 0:
                continue
            placed = 0
            for t in range(n_t):
                exact = tgt_weight[a + t] * float(total)
                share[t] = np.int64(np.floor(exact))
                placed += share[t]
                key[t] = -(exact - float(share[t]))
            # The order of a stable sort of the keys (largest remainder first).
            for t in range(n_t):
                r = t
                while r > 0 and key[rank[r - 1]] > key[t]:
                    rank[r] = rank[r - 1]
                    r -= 1
                rank[r] = t
            rest = total - placed
            # The first ``rest`` of that order, as a Python slice ``[:rest]`` takes them.
            extra = min(n_t, rest if rest >= 0 else max(0, n_t + rest))
            for t in range(extra):
                share[rank[t]] += 1
            for t in range(n_t):
                m[h, v, FIRST_CLASS + tgt_class[a + t], s] += share[t]
    # The phase's rows.
    for c in range(n_c):
        tp[h, v, c] = 0.0
        wp[h, v, c] = 0.0
        slo[h, v, c] = -1.0
        shi[h, v, c] = -1.0
        heat[h, v, c] = -1
        if c >= FIRST_CLASS:
            ck[h, v, c] = -1
        for x in range(ft.shape[3]):
            ft[h, v, c, x] = 0.0
    for i in range(n):
        c = FIRST_CLASS + i
        tp[h, v, c] = rows[i, R_TOUCH]
        wp[h, v, c] = rows[i, R_WRITE]
        ck[h, v, c] = np.int8(rows[i, R_CONTENT])
        slo[h, v, c] = rows[i, R_SCAN_LO]
        shi[h, v, c] = rows[i, R_SCAN_HI]
        mass = 0
        for s in range(N_STATES):
            mass += m[h, v, c, s]
        q[h, v, c] = min(1.0, seen[i] / float(max(mass, 1)))
        # A new phase's permutation puts any page in any sub-block.
        for x in range(b):
            ft[h, v, c, FT_PROB + x] = rows[i, R_SUB_PROB + x]
            ft[h, v, c, FT_NEVER + x] = rows[i, R_SUB_PAGES + x]
            ft[h, v, c, FT_PAGES + x] = rows[i, R_SUB_PAGES + x]
            ft[h, v, c, FT_SEEN + x] = q[h, v, c]
        heat[h, v, i] = order[i]
    vm[h, v, V_SCAN_RATE] = sweep[0]
    vm[h, v, V_SCAN_LEN] = sweep[1]
    vm[h, v, V_SCAN_POS] = sweep[2]
