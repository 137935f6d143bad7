"""A workload phase's start (``aggregate/phases.py``) against the NumPy routine it replaced.

``_reference`` is that routine, kept as it was: pools by (segment, content
kind), the split by floor and largest remainder over a stable argsort, the
touched pages carried over, the class rows copied from the phase. The
compiled start must leave every array equal to it to the bit, over a chain
of starts with masses moved between them: the fresh start, the same phase
again, a kind the new phase lacks in a segment, a segment it does not
describe, weights that tie, and the phases of the demo and bench-32vm
workloads.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hvmem.aggregate import kernel as k
from hvmem.aggregate.classes import (
    CONTENT_IMAGE,
    CONTENT_PRIVATE,
    CONTENT_ZERO,
    FIRST_TOUCH_BINS,
    PhaseClasses,
    WorkloadClasses,
    workload_classes,
)
from hvmem.aggregate.phases import FRESH, PhaseStarts, start_phase
from hvmem.scenario.loader import load_scenario
from hvmem.scenarios import builtin_scenario_path

ARRAYS = ("m", "tp", "wp", "ck", "slo", "shi", "q", "heat", "ft", "vm")


def _reference(a: dict, h: int, v: int, old: PhaseClasses | None, ph: PhaseClasses) -> None:
    """The phase start as ``HostBatch._enter_phase`` did it in NumPy (``old`` None: fresh)."""
    first, n = k.FIRST_CLASS, ph.pages.size
    m = a["m"][h, v]
    touched: dict[tuple[int, int], float] = {}
    pools = {}
    if old is None:
        for seg, kind, pages in zip(ph.segment.tolist(), ph.content.tolist(),
                                    ph.pages.tolist(), strict=True):
            pool = pools.setdefault((seg, kind), np.zeros(k.N_STATES, np.int64))
            pool[k.NEVER] += pages
    else:
        for i, (seg, kind) in enumerate(zip(old.segment.tolist(), old.content.tolist(),
                                            strict=True)):
            pool = pools.setdefault((seg, kind), np.zeros(k.N_STATES, np.int64))
            pool += m[first + i]
            key = (seg, kind)
            touched[key] = touched.get(key, 0.0) + float(m[first + i].sum()) * float(
                a["q"][h, v, first + i])
    m[first:] = 0
    seen = np.zeros(n)
    targets: dict[tuple[int, int], list[int]] = {}
    for i, key in enumerate(zip(ph.segment.tolist(), ph.content.tolist(), strict=True)):
        targets.setdefault(key, []).append(i)
    for (seg, kind), pool in pools.items():
        idx = targets.get((seg, kind)) or [i for (s2, _), ids in targets.items()
                                           if s2 == seg for i in ids]
        if not idx:
            idx = [0]
        weights = ph.pages[idx].astype(np.float64)
        weights /= weights.sum()
        seen[idx] += weights * touched.get((seg, kind), 0.0)
        for s in range(k.N_STATES):
            total = int(pool[s])
            if total:
                share = np.floor(weights * total).astype(np.int64)
                rest = total - int(share.sum())
                order = np.argsort(-(weights * total - share), kind="stable")
                share[order[:rest]] += 1
                m[first + np.array(idx), s] += share
    sl = slice(first, first + n)
    for name, col in (("tp", ph.touch_prob), ("wp", ph.write_prob)):
        a[name][h, v] = 0.0
        a[name][h, v, sl] = col
    a["ck"][h, v, 2:] = -1
    a["ck"][h, v, sl] = ph.content
    for name, col in (("slo", ph.scan_lo), ("shi", ph.scan_hi)):
        a[name][h, v] = -1.0
        a[name][h, v, sl] = col
    b = FIRST_TOUCH_BINS
    ft = a["ft"]
    ft[h, v] = 0.0
    ft[h, v, sl, :b] = ph.sub_prob
    ft[h, v, sl, b:2 * b] = ph.sub_pages
    ft[h, v, sl, 2 * b:3 * b] = ph.sub_pages
    mass = m[first:first + n].sum(axis=1)
    a["q"][h, v, sl] = np.minimum(1.0, seen / np.maximum(mass, 1))
    ft[h, v, sl, 3 * b:4 * b] = a["q"][h, v, sl, None]
    heat = a["heat"][h, v]
    heat[:] = -1
    pace = np.where(ph.scan_lo >= 0, ph.scan_pages_per_tick / max(1.0, ph.scan_len),
                    ph.touch_prob)
    heat[:n] = first + np.argsort(pace, kind="stable")
    vm = a["vm"][h, v]
    vm[k.V_SCAN_RATE] = ph.scan_pages_per_tick
    vm[k.V_SCAN_LEN] = max(1.0, ph.scan_len)
    vm[k.V_SCAN_POS] = ph.scan_start


def _phase(segment, content, pages, rng, scan=False) -> PhaseClasses:
    n = len(pages)
    sub_pages = rng.dirichlet(np.ones(FIRST_TOUCH_BINS), n)
    return PhaseClasses(
        duration_ns=60e9, segment=np.array(segment, np.int64), pages=np.array(pages, np.int64),
        touch_prob=rng.random(n), write_prob=rng.random(n),
        sub_prob=rng.random((n, FIRST_TOUCH_BINS)), sub_pages=sub_pages,
        content=np.array(content, np.int8),
        scan_lo=np.arange(n, dtype=np.float64) if scan else np.full(n, -1.0),
        scan_hi=np.arange(1, n + 1, dtype=np.float64) if scan else np.full(n, -1.0),
        scan_pages_per_tick=3.0 if scan else 0.0, scan_len=float(sum(pages)) if scan else 0.0,
        scan_start=1.0 if scan else 0.0)


def _made_up(rng) -> WorkloadClasses:
    """Phases over 3 segments: kinds missing, a segment left out, equal weights, a sweep."""
    z, i, p = CONTENT_ZERO, CONTENT_IMAGE, CONTENT_PRIVATE
    phases = (
        _phase([0, 0, 0, 1, 1, 2, 2, 2], [z, i, p, i, p, z, p, p],
               [100, 300, 700, 5, 5, 40, 1000, 1000], rng),
        # No zero pages in segment 2 and no image in 1; segment 0 not described.
        _phase([1, 1, 1, 2, 2, 2, 2], [p, p, p, p, p, i, i], [3, 3, 3, 7, 7, 7, 9], rng),
        _phase([0, 0, 1, 2, 2], [i, p, p, z, p], [1, 2, 3, 4, 5], rng, scan=True),
    )
    return WorkloadClasses(segment_pages=np.array([1100, 10, 2040]), phases=phases,
                           loop=True, image="made-up", compressible_frac=0.5,
                           compressed_frame_frac=0.5)


def _scenario_workloads(name: str) -> list[WorkloadClasses]:
    sc = load_scenario(builtin_scenario_path(name))
    found = [workload_classes(vm.workload, sc.tick_ns, vm.name) for vm in sc.vms]
    return [wc for wc in found if len(wc.phases) > 1]


def _arrays(n_c: int, rng) -> dict:
    shape = (2, 3, n_c)
    return {
        "m": rng.integers(0, 50, (*shape, k.N_STATES)),
        "tp": rng.random(shape), "wp": rng.random(shape),
        "ck": rng.integers(-1, 3, shape).astype(np.int8),
        "slo": rng.random(shape), "shi": rng.random(shape), "q": rng.random(shape),
        "heat": rng.integers(-1, n_c, shape), "ft": rng.random((*shape, k.N_FT)),
        "vm": rng.random((2, 3, k.N_VM + 4)),
    }


def _stir(a: dict, h: int, v: int, rng) -> None:
    """What ticks between two starts would do: masses moved among states, touches seen."""
    m = a["m"][h, v, k.FIRST_CLASS:]
    for _ in range(20):
        c = rng.integers(m.shape[0])
        s, t = rng.integers(k.N_STATES, size=2)
        moved = rng.integers(0, m[c, s] + 1)
        m[c, s] -= moved
        m[c, t] += moved
    a["q"][h, v, k.FIRST_CLASS:] = rng.random(m.shape[0]) * (rng.random(m.shape[0]) < 0.8)


def _same(a: dict, b: dict) -> None:
    for name in ARRAYS:
        assert a[name].dtype == b[name].dtype, name
        assert a[name].tobytes() == b[name].tobytes(), name


@pytest.mark.parametrize("source", ["made-up", "demo", "bench-32vm"])
def test_a_compiled_phase_start_leaves_the_arrays_of_the_numpy_one(source):
    rng = np.random.default_rng(7)
    workloads = [_made_up(rng)] if source == "made-up" else _scenario_workloads(source)
    assert workloads
    for wc in workloads:
        starts = PhaseStarts(wc)
        n_c = k.FIRST_CLASS + max(ph.pages.size for ph in wc.phases) + 1
        mine = _arrays(n_c, rng)
        ref = {name: x.copy() for name, x in mine.items()}
        h, v = 1, 2
        last = len(wc.phases) - 1
        # Through the phases twice, the same phase again, a jump, a power-on and on.
        chain, now = [(FRESH, 0)], 0
        for _ in range(2 * (last + 1)):
            chain.append((now, (now + 1) % (last + 1)))
            now = chain[-1][1]
        chain += [(now, now), (now, last), (FRESH, last), (last, min(1, last))]
        for j, (old, new) in enumerate(chain):
            before = mine["m"][h, v, k.FIRST_CLASS:].sum()
            _reference(ref, h, v, None if old == FRESH else wc.phases[old], wc.phases[new])
            start_phase(*(mine[name] for name in ARRAYS), h, v, *starts.args(old, new))
            _same(mine, ref)
            # A split moves pages among classes, never makes or drops one.
            placed = mine["m"][h, v, k.FIRST_CLASS:].sum()
            assert placed == (wc.phases[new].pages.sum() if old == FRESH else before)
            for arrays in (mine, ref):
                _stir(arrays, h, v, np.random.default_rng(j))
            _same(mine, ref)


def test_a_split_of_large_pools_over_tied_weights_matches_too():
    rng = np.random.default_rng(3)
    ph = _phase([0] * 6, [CONTENT_PRIVATE] * 6, [7] * 6, rng)
    wc = WorkloadClasses(segment_pages=np.array([42]), phases=(ph, replace(ph)), loop=False,
                         image="made-up", compressible_frac=0.5, compressed_frame_frac=0.5)
    starts = PhaseStarts(wc)
    mine = _arrays(k.FIRST_CLASS + 6, rng)
    mine["m"][0, 0, k.FIRST_CLASS:] = rng.integers(0, 2 ** 40, (6, k.N_STATES))
    ref = {name: x.copy() for name, x in mine.items()}
    before = mine["m"][0, 0, k.FIRST_CLASS:].sum(axis=0)
    _reference(ref, 0, 0, wc.phases[0], wc.phases[1])
    start_phase(*(mine[name] for name in ARRAYS), 0, 0, *starts.args(0, 1))
    _same(mine, ref)
    assert (mine["m"][0, 0, k.FIRST_CLASS:].sum(axis=0) == before).all()
