"""Aggregate-fidelity sweeps through the process pool and a LocalCluster, and their re-runs.

An aggregate run of a short demo is a fraction of a second, so these sweeps
cost little more than their workers' start; a run that never ends (as
proxmox's water-filling did on seed 2, at 150 s of demo) fails the test at its
deadline instead of holding the suite.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from hvmem.results import read_results
from hvmem.scenarios import builtin_scenario_path
from hvmem.sim import Simulation
from hvmem.sweep.experiment import load_experiment
from hvmem.ui.cli import app

#: Wall seconds a sweep of these may take on a loaded machine before it counts as hung.
DEADLINE_S = 180.0


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """A TimeoutError in the main thread if the block is not done in ``seconds``."""

    def late(*_: object) -> None:
        raise TimeoutError(f"the sweep took more than {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, late)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous)


def sweep(*args: object):
    with deadline(DEADLINE_S):
        return CliRunner().invoke(app, ["sweep", *(str(a) for a in args)])


def short_demo_experiment(tmp_path: Path, policies: list[str], seeds: int) -> Path:
    """Demo's first 3 minutes (its ballooning starts within them) at aggregate fidelity."""
    demo = builtin_scenario_path("demo").read_text()
    assert 'duration = "8min"' in demo
    (tmp_path / "demo-short.toml").write_text(demo.replace('duration = "8min"',
                                                           'duration = "3min"'))
    exp = tmp_path / "exp.toml"
    exp.write_text(f'scenario = "demo-short.toml"\nseeds = {seeds}\n[grid]\n'
                   f'"policy.name" = {json.dumps(policies)}\n"fidelity" = ["aggregate"]\n')
    return exp


@pytest.fixture
def compiled(tmp_path: Path) -> None:
    """The aggregate kernels compiled in this process before any worker starts.

    A sweep's workers share this process's Numba cache (``tests/numba_cache.py``);
    on a fresh checkout, without this, each worker compiled every kernel itself
    (about a minute of CPU each, two at once), which is the worker start the
    deadline must not count: the deadline is for runs that never end.
    """
    warm = tmp_path / "warm"
    warm.mkdir()
    exp = short_demo_experiment(warm, ["esx", "proxmox"], seeds=1)
    for spec in load_experiment(exp).runs:
        Simulation(spec.scenario).run()


def summary_mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for p in out.glob("runs/*/*/summary.json")}


def test_an_aggregate_sweep_in_the_process_pool_writes_its_rows_and_runs_once(tmp_path, compiled):
    exp = short_demo_experiment(tmp_path, ["esx", "proxmox"], seeds=2)
    out = tmp_path / "out"
    done = sweep(exp, "--out", out)  # the default runner: a pool of this machine's cores
    assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
    assert "4 runs, 0 complete already, 4 to run on " in done.stderr
    assert " worker process" in done.stderr
    table = pq.read_table(out / "summary.parquet").to_pandas()
    assert len(table) == 4 and table["complete"].all() and table["error"].isna().all()
    assert sorted(zip(table["policy.name"], table["seed"], strict=True)) == [
        ("esx", 1), ("esx", 2), ("proxmox", 1), ("proxmox", 2)]
    assert (table["fidelity"] == "aggregate").all() and (table["ticks"] == 180).all()
    assert (table["wall_s"] > 0).all()
    # A run's directory holds what the run alone would have written.
    spec = next(r for r in load_experiment(exp).runs
                if r.params["policy.name"] == "proxmox" and r.seed == 2)
    back = read_results(out / spec.rel_dir)
    assert back.complete
    assert back.summary == json.loads(json.dumps(Simulation(spec.scenario).run().summary()))
    # Again: every run is complete, so no worker starts and no file is rewritten.
    before = summary_mtimes(out)
    again = sweep(exp, "--out", out)
    assert again.exit_code == 0, (again.stdout, again.stderr, again.exception)
    assert "4 runs, all complete already" in again.stderr
    assert "4 runs: 4 complete" in again.stdout
    assert summary_mtimes(out) == before and len(before) == 4
    rows = pq.read_table(out / "summary.parquet").to_pandas()
    assert len(rows) == 4 and rows["complete"].all()
    assert list(rows["wall_s"]) == list(table["wall_s"])


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_aggregate_sweep_on_a_one_worker_local_cluster(tmp_path, compiled):
    exp = short_demo_experiment(tmp_path, ["proxmox"], seeds=2)
    out = tmp_path / "out"
    done = sweep(exp, "--out", out, "--dask", "local", "--workers", "1")
    assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
    assert "on a Dask LocalCluster of 1 worker\n" in done.stderr
    table = pq.read_table(out / "summary.parquet").to_pandas()
    assert list(table["seed"]) == [1, 2] and table["complete"].all()
    assert (table["fidelity"] == "aggregate").all()
