"""The aggregate fidelity checked against page fidelity, over seeds.

For each scenario (``demo``, ``idle-tax``, ``sharing`` and the first 10
minutes of ``bench-32vm``), page-fidelity runs over seeds give each summary
metric's mean and standard deviation; an aggregate run's metric must lie
within ``max(2 sd, floor)`` of that mean, the floor 5 % of the scenario's VM
memory for sizes, 0.02 for mean throughput and 10 % of the duration for the
time in each memory state. The time series of GRANT, ACTV, MCTLSZ and SWCUR
(per VM, every 10 s, averaged over seeds) must be within an RMSE of 5 % of VM
memory. The metrics:

* each mechanism's peak and end MiB (``RunResult.summary()["mechanisms"]``);
* each VM's balloon, swapped and compressed peaks, SHRDSVD peak, swap-in and
  swap-out MiB and mean throughput;
* seconds in each memory state.

``python -m hvmem.aggregate.validate`` (``make validate``) runs both
fidelities over 8 seeds and prints every metric, its bound and the
aggregate value (``--first-seed N``: the aggregate runs at seeds N, N + 1, ...
against the same statistics, to tell a change from the luck of seeds 1-8;
``--fidelity page --first-seed 9``: page fidelity's own seeds 9-16 against its
seeds 1-8, how often the reference itself falls outside the bounds, so the
criterion's strictness is measured beside the aggregate's distance);
``--regenerate`` first rewrites the page-fidelity statistics
that ``tests/test_aggregate.py`` checks two aggregate seeds against
(``tests/data/aggregate_validation.json``), with each scenario's fingerprint
so a test knows the statistics are of the scenarios as they are now.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from hvmem.results import RunResult
from hvmem.scenario.loader import dump_scenario, load_scenario
from hvmem.scenario.schema import Scenario
from hvmem.scenarios import builtin_scenario_path
from hvmem.units import MIB, NS_PER_S

#: (scenario, duration in s or None for its own).
SCENARIOS: tuple[tuple[str, int | None], ...] = (
    ("demo", None), ("idle-tax", None), ("sharing", None), ("bench-32vm", 600))
SERIES = ("GRANT", "ACTV", "MCTLSZ", "SWCUR")
SERIES_STEP_S = 10
SIZE_FLOOR_FRAC = 0.05
THROUGHPUT_FLOOR = 0.02
STATE_FLOOR_FRAC = 0.10
FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "data" / "aggregate_validation.json"


def scenario_of(name: str, duration_s: int | None, seed: int, fidelity: str) -> Scenario:
    """A shipped scenario at a seed and fidelity (cut to ``duration_s``)."""
    sc = load_scenario(builtin_scenario_path(name))
    if duration_s is not None:
        sc = replace(sc, duration_ns=duration_s * NS_PER_S)
    return replace(sc, seed=seed, fidelity=fidelity)


def fingerprint(name: str, duration_s: int | None) -> str:
    """A hash of the scenario as it is now (seed and fidelity aside)."""
    doc = dump_scenario(scenario_of(name, duration_s, 0, "page"))
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def metrics(result: RunResult) -> dict[str, float]:
    """The validated metrics of one run, by name."""
    s = result.summary()
    out: dict[str, float] = {}
    for mech, v in s["mechanisms"].items():
        out[f"{mech}.peak_mib"] = v["peak_mib"]
        out[f"{mech}.end_mib"] = v["end_mib"]
    for vm, v in s["vms"].items():
        for key in ("balloon_peak_mib", "swapped_peak_mib", "compressed_peak_mib",
                    "shared_saved_peak_mib", "swap_in_mib", "swap_out_mib",
                    "mean_throughput"):
            out[f"{vm}.{key}"] = v[key]
    for state in ("high", "clear", "soft", "hard", "low"):
        out[f"state.{state}_s"] = s["time_in_state_s"].get(state, 0.0)
    return out


def series(result: RunResult) -> dict[str, dict[str, list[float]]]:
    """Per VM, each of SERIES every SERIES_STEP_S seconds."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in result.vm_rows:
        if int(row["time_s"]) % SERIES_STEP_S:
            continue
        vm = out.setdefault(row["vm"], {c: [] for c in SERIES})
        for c in SERIES:
            vm[c].append(float(row[c]))
    return out


def run(name: str, duration_s: int | None, seed: int, fidelity: str) -> RunResult:
    """One run (imported late: the simulator's kernels compile on first use)."""
    from hvmem.sim import Simulation

    return Simulation(scenario_of(name, duration_s, seed, fidelity)).run()


def page_run(name: str, duration_s: int | None, seed: int, cache: Path | None = None
             ) -> dict:
    """One page-fidelity run's metrics and series (kept in ``cache``, if given, by seed)."""
    path = None if cache is None else cache / f"{name}-seed{seed}.json"
    if path is not None and path.exists():
        return json.loads(path.read_text())
    result = run(name, duration_s, seed, "page")
    out = {"metrics": metrics(result), "series": series(result),
           "vm_mib": float(np.mean([vm.memory_bytes / MIB for vm in result.scenario.vms])),
           "duration_s": result.scenario.duration_ns / NS_PER_S}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out))
    return out


def page_statistics(seeds: list[int], names: list[str] | None = None,
                    cache: Path | None = None) -> dict:
    """Page-fidelity statistics of every scenario (or of ``names``) over ``seeds``."""
    out = {}
    for name, duration_s in SCENARIOS:
        if names and name not in names:
            continue
        runs = [page_run(name, duration_s, seed, cache) for seed in seeds]
        per = [r["metrics"] for r in runs]
        keys = sorted(set().union(*per))
        all_series = [r["series"] for r in runs]
        mean_series = {vm: {c: np.mean([s[vm][c] for s in all_series if vm in s], axis=0
                                       ).tolist() for c in SERIES}
                       for vm in all_series[0]}
        out[name] = {"duration_s": runs[0]["duration_s"], "vm_mib": runs[0]["vm_mib"],
                     "seeds": seeds, "fingerprint": fingerprint(name, duration_s),
                     "metrics": {k: [p.get(k, 0.0) for p in per] for k in keys},
                     "series": mean_series}
        print(f"page {name}: {len(seeds)} seeds", file=sys.stderr)
    return out


def bound(key: str, values: list[float], vm_mib: float, duration_s: float) -> float:
    """A metric's allowed distance from the page-fidelity mean."""
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    if key.endswith("mean_throughput"):
        floor = THROUGHPUT_FLOOR
    elif key.startswith("state."):
        floor = STATE_FLOOR_FRAC * duration_s
    else:
        floor = SIZE_FLOOR_FRAC * vm_mib
    return max(2.0 * sd, floor)


def compare(stats: dict, name: str, results: list[RunResult]) -> list[dict]:
    """Every metric of ``results`` (the checked runs) against ``stats[name]``: table rows.

    A row's ``aggregate`` and ``worst`` are the checked runs' mean and farthest
    value, whichever fidelity ran them (``--fidelity``).
    """
    st = stats[name]
    per = [metrics(r) for r in results]
    rows = []
    for key, values in st["metrics"].items():
        page_mean = float(np.mean(values))
        agg = [p.get(key, 0.0) for p in per]
        b = bound(key, values, st["vm_mib"], st["duration_s"])
        worst = max(agg, key=lambda a: abs(a - page_mean))
        rows.append({"scenario": name, "metric": key, "page_mean": page_mean, "bound": b,
                     "aggregate": float(np.mean(agg)), "worst": worst,
                     "ok": all(abs(a - page_mean) <= b for a in agg)})
    agg_series = [series(r) for r in results]
    limit = SIZE_FLOOR_FRAC * st["vm_mib"]
    for vm, cols in st["series"].items():
        for c, page in cols.items():
            runs = [s[vm][c] for s in agg_series if vm in s]
            n = min(len(page), *(len(r) for r in runs)) if runs else 0
            if not n:
                continue
            agg_mean = np.mean([r[:n] for r in runs], axis=0)
            rmse = float(math.sqrt(np.mean((agg_mean - np.asarray(page[:n])) ** 2)))
            rows.append({"scenario": name, "metric": f"{vm}.{c}.rmse", "page_mean": 0.0,
                         "bound": limit, "aggregate": rmse, "worst": rmse,
                         "ok": rmse <= limit})
    return rows


def checked_runs(name: str, seeds: list[int], fidelity: str = "aggregate") -> list[RunResult]:
    """Runs of a validated scenario to check against the statistics (aggregate, or page)."""
    duration_s = dict(SCENARIOS)[name]
    return [run(name, duration_s, seed, fidelity) for seed in seeds]


def main(argv: list[str] | None = None) -> int:
    """``make validate``: the table of every metric; exit 1 if any is out of bounds."""
    ap = argparse.ArgumentParser(prog="python -m hvmem.aggregate.validate")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--regenerate", action="store_true",
                    help="run page fidelity too and rewrite the statistics file")
    ap.add_argument("--first-seed", type=int, default=1,
                    help="the checked runs' first seed (the page statistics keep theirs)")
    ap.add_argument("--fidelity", choices=("aggregate", "page"), default="aggregate",
                    help="the fidelity checked against the statistics (page: the reference "
                         "against itself; give it other seeds with --first-seed)")
    ap.add_argument("--fixture", type=Path, default=FIXTURE)
    ap.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    ap.add_argument("--cache", type=Path, default=None,
                    help="keep each page-fidelity run here, reused by the next invocation")
    args = ap.parse_args(argv)
    seeds = list(range(1, args.seeds + 1))
    if args.regenerate or not args.fixture.exists():
        stats = json.loads(args.fixture.read_text()) if args.fixture.exists() else {}
        stats.update(page_statistics(seeds, args.scenario, args.cache))
        args.fixture.parent.mkdir(parents=True, exist_ok=True)
        args.fixture.write_text(json.dumps(stats, separators=(",", ":")) + "\n")
    stats = json.loads(args.fixture.read_text())
    failed = 0
    print(f"{'scenario':<11} {'metric':<40} {'page mean':>10} {'bound':>9} {args.fidelity:>10}  ok")
    for name, _ in SCENARIOS:
        if name not in stats or (args.scenario and name not in args.scenario):
            continue
        checked = [args.first_seed + i for i in range(args.seeds)]
        for row in compare(stats, name, checked_runs(name, checked, args.fidelity)):
            failed += not row["ok"]
            print(f"{row['scenario']:<11} {row['metric']:<40} {row['page_mean']:>10.1f} "
                  f"{row['bound']:>9.1f} {row['aggregate']:>10.2f}  "
                  f"{'yes' if row['ok'] else 'NO'}")
    print(f"{failed} metric(s) out of bounds")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
