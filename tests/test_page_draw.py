"""Page fidelity's distinct pages drawn directly, against drawing every reference.

A page-fidelity tick was once drawn reference by reference and counted; now
each tick's distinct pages are drawn directly (``workloads/samplers.py``), the
same distribution to first order but not the same draws. Two checks:

* per workload, exact and cheap: the pages a tick touches, their references
  and their writes, against their expectations under ``n`` independent draws;
* per scenario, over seeds: ``tests/data/page_draw_reference.json`` holds the
  summary metrics of page-fidelity runs made the old way (14 seeds of
  ``demo``, 8 of ``idle-tax`` and ``sharing``, 3 of the first 420 s of
  ``bench-32vm``), and the mean of two seeds drawn the new way must lie
  within ``max(2 sd, floor)`` of the old mean (the aggregate fidelity's
  bounds, ``aggregate/validate.py``). At 2 sd about one metric in 20 lies
  outside by chance, so up to 5 % of a scenario's metrics may (``bench-32vm``
  has 237). ``sharing`` (20 simulated minutes)
  and ``bench-32vm`` take minutes of CPU a seed, so they run only with
  ``HVMEM_PAGE_DRAW_SLOW=1``.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hvmem.aggregate.validate import metrics
from hvmem.core.rng import RngStreams
from hvmem.scenario.loader import load_scenario
from hvmem.scenarios import builtin_scenario_path
from hvmem.sim import Simulation
from hvmem.units import MIB, NS_PER_S
from hvmem.workloads.factory import make_workload
from hvmem.workloads.synthetic import HotColdParams, UniformParams, ZipfParams

REFERENCE = Path(__file__).parent / "data" / "page_draw_reference.json"
S = NS_PER_S

# -- per workload --------------------------------------------------------------------------


def _probabilities(w, params) -> np.ndarray:
    """Each region page's chance per reference."""
    n = params.region_pages
    if isinstance(params, ZipfParams):
        p = np.empty(n)
        p[w.page_of_rank] = w.rank_probabilities()
        return p
    if isinstance(params, HotColdParams):
        p = np.full(n, (1 - params.hot_refs_frac) / (n - w.n_hot_pages))
        p[w.hot_pages] = params.hot_refs_frac / w.n_hot_pages
        return p
    return np.full(n, 1.0 / n)


@pytest.mark.parametrize("params", [
    ZipfParams(region_pages=100_000, refs_per_s=50_000, alpha=1.1),
    ZipfParams(region_pages=300_000, refs_per_s=200_000, alpha=0.9),  # blocked tail
    HotColdParams(region_pages=200_000, refs_per_s=100_000, hot_pages_frac=0.2,
                  hot_refs_frac=0.8, write_frac=0.4),
    UniformParams(region_pages=200_000, refs_per_s=50_000),
], ids=["zipf-exact", "zipf-blocked", "hotcold", "uniform"])
def test_a_tick_touches_the_pages_n_independent_draws_would(params):
    w = make_workload(params, RngStreams(5).stream("workload/vm"))
    p = _probabilities(w, params)
    n = int(params.refs_per_s)
    ticks = [w.next_batch(t * S, S) for t in range(20)]
    # Pages touched: sum of Bernoulli(1 - (1 - p)^n); its spread is below sqrt(mean).
    hit = -np.expm1(n * np.log1p(-p))
    mean_pages = hit.sum()
    pages = np.array([len(b) for b in ticks], dtype=np.float64)
    assert abs(pages.mean() - mean_pages) <= 4 * np.sqrt(mean_pages / len(ticks))
    assert all(len(np.unique(b.vpn)) == len(b) for b in ticks)
    # References: n per tick on average.
    refs = np.array([b.n_refs for b in ticks], dtype=np.float64)
    assert abs(refs.mean() - n) <= 4 * np.sqrt(n / len(ticks))
    # Written pages: 1 - (1 - p w)^n each.
    wf = params.write_frac
    mean_written = (-np.expm1(n * np.log1p(-p * wf))).sum()
    written = np.array([b.is_write.sum() for b in ticks], dtype=np.float64)
    assert abs(written.mean() - mean_written) <= 4 * np.sqrt(mean_written / len(ticks)) + 1
    # Where the references go: the hottest hundredth of the pages gets its share.
    top = np.argsort(p)[::-1][: params.region_pages // 100]
    counts = np.zeros(params.region_pages)
    for b in ticks:
        np.add.at(counts, b.vpn - params.first_vpn, b.refs)
    share = p[top].sum()
    got = counts[top].sum() / counts.sum()
    assert abs(got - share) <= 4 * np.sqrt(share * (1 - share) / (n * len(ticks))) + 1e-3


# -- per scenario, over seeds ----------------------------------------------------------------


def _bound(key: str, values: list[float], vm_mib: float, duration_s: float) -> float:
    sd = float(np.std(values, ddof=1))
    if key.endswith("mean_throughput"):
        floor = 0.02
    elif key.startswith("state."):
        floor = 0.10 * duration_s
    else:
        floor = 0.05 * vm_mib
    return max(2.0 * sd, floor)


def _outside(name: str, seeds: list[int]) -> list[str]:
    ref = json.loads(REFERENCE.read_text())["scenarios"][name]
    sc = load_scenario(builtin_scenario_path(name))
    sc = replace(sc, duration_ns=int(ref["duration_s"] * NS_PER_S))
    runs = [metrics(Simulation(replace(sc, seed=seed)).run()) for seed in seeds]
    vm_mib = float(np.mean([vm.memory_bytes / MIB for vm in sc.vms]))
    assert vm_mib == ref["vm_mib"]
    out = []
    for key, old in ref["metrics"].items():
        new = float(np.mean([r.get(key, 0.0) for r in runs]))
        bound = _bound(key, old, vm_mib, ref["duration_s"])
        if abs(new - float(np.mean(old))) > bound:
            out.append(f"{key}: {new:.2f} against {np.mean(old):.2f} +- {bound:.2f}")
    return out


def _check(name: str) -> None:
    outside = _outside(name, [1, 2])
    n_metrics = len(json.loads(REFERENCE.read_text())["scenarios"][name]["metrics"])
    assert len(outside) <= int(0.05 * n_metrics), outside


@pytest.mark.parametrize("name", ["demo", "idle-tax"])
def test_two_seeds_lie_within_the_spread_of_the_reference_draws(name):
    _check(name)


@pytest.mark.skipif(not os.environ.get("HVMEM_PAGE_DRAW_SLOW"),
                    reason="minutes of CPU a seed: set HVMEM_PAGE_DRAW_SLOW=1")
@pytest.mark.parametrize("name", ["sharing", "bench-32vm"])
def test_two_seeds_of_the_long_runs_lie_within_the_spread_of_the_reference_draws(name):
    _check(name)
