"""A guest's reclaim of a sweep's blocks: the one-pass walk takes what the search takes.

``guest_paging._reclaim_sweep`` finds the blocks in the cursor's order by a search
over the sweep's classes, whatever their order in heat; when heat lists them
in block order, as ``model.py`` does, ``_sweep_in_order`` walks them once.
Both must take the same pages with the same draws: listed out of block order
(each block's classes kept in their order), the search runs, and every array
must come out as the walk leaves it.
"""

from __future__ import annotations

import numpy as np
import pytest

from hvmem.aggregate import kernel as k
from hvmem.aggregate.guest_paging import _reclaim_sweep

BLOCKS, KINDS = 16, 3
BLOCK_PAGES = 1000.0


def _arrays(seed: int, pos: float):
    """One VM whose sweep has 16 blocks of 3 classes, random masses in every state."""
    gen = np.random.default_rng(seed)
    n_c = k.FIRST_CLASS + BLOCKS * KINDS
    m = np.zeros((1, 1, n_c, k.N_STATES), np.int64)
    slo = np.full((1, 1, n_c), -1.0)
    for b in range(BLOCKS):
        for kind in range(KINDS):
            c = k.FIRST_CLASS + b * KINDS + kind
            slo[0, 0, c] = b * BLOCK_PAGES
            for s in (k.PRIV, k.SHR, k.ZERO, k.ZIP, k.SWP, k.GSWP, k.FILL, k.NEVER):
                # Many cells empty, as most are in a sweep under way.
                m[0, 0, c, s] = gen.integers(0, 400) if gen.random() < 0.5 else 0
    vm = np.zeros((1, 1, k.N_VM))
    vm[0, 0, k.V_NCLASS] = n_c
    vm[0, 0, k.V_SCAN_LEN] = BLOCKS * BLOCK_PAGES
    vm[0, 0, k.V_SCAN_POS] = pos
    vm[0, 0, k.V_FRAME_FRAC] = 0.4
    vm[0, 0, k.V_CACHE_FRAMES] = 5000.0
    host = np.zeros((1, k.N_HOST))
    host[0, k.H_FREE] = 1e6
    host[0, k.H_SWAP_NS] = 1e5
    rng = np.array([seed * 7919 + 1], np.uint64)
    costs = np.arange(1.0, 7.0) * 100.0
    return m, slo, vm, np.zeros((1, 1, k.N_CNT)), host, rng, costs, np.zeros((1, 1, k.N_STALL))


def _reclaim(seed: int, pos: float, n: int, in_order: bool):
    m, slo, vm, cnt, host, rng, costs, stall = _arrays(seed, pos)
    order = list(range(BLOCKS)) if in_order else list(range(BLOCKS))[::-1]
    classes = [k.FIRST_CLASS + b * KINDS + kind for b in order for kind in range(KINDS)]
    heat = np.full((1, 1, m.shape[2]), -1, np.int64)
    heat[0, 0, :len(classes)] = classes
    freed = _reclaim_sweep(m, slo, vm, cnt, host, heat, rng, costs, stall, 0, 0, 0,
                           len(classes), n, True)
    return freed, (m, vm, cnt, host, rng, stall)


@pytest.mark.parametrize("pos", [0.0, 500.0, 999.5, 1000.0, 7321.25, 15999.0])
@pytest.mark.parametrize("n", [1, 37, 900, 6000, 10**6])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_walk_in_block_order_takes_what_the_search_takes(seed, pos, n):
    walked, after_walk = _reclaim(seed, pos, n, in_order=True)
    searched, after_search = _reclaim(seed, pos, n, in_order=False)
    assert walked == searched
    assert walked > 0
    for a, b in zip(after_walk, after_search, strict=True):
        np.testing.assert_array_equal(a, b)
