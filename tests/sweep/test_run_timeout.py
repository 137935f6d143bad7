"""A sweep run's wall-clock budget: slow runs stop at a tick's end, stuck ticks inside it."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
from typer.testing import CliRunner

from hvmem.results import read_results
from hvmem.scenario.loader import parse_scenario
from hvmem.sim import Simulation
from hvmem.sweep import execute
from hvmem.sweep.execute import simulate
from hvmem.ui.cli import app

SLOW = {
    "name": "slow", "duration": "60s", "seed": 1,
    "host": {"memory": "320MiB"},
    "vm": [{"name": "a", "memory": "192MiB",
            "workload": {"kind": "zipf", "region": "176MiB", "refs_per_s": 50_000}}],
}


def test_a_run_over_its_budget_stops_at_a_ticks_end_with_what_it_simulated():
    sc = parse_scenario(SLOW, "slow.toml")
    finished = simulate(0, sc, timeout_s=0.05)
    assert finished.error is not None
    assert finished.error.startswith("run timed out: over its budget of 50 ms of wall time "
                                     "(--run-timeout), after ")
    result = finished.result
    assert not result.complete and 0 < result.ticks_done < sc.n_ticks
    assert len(result.host_rows) == result.ticks_done
    assert result.stop_reason == finished.error


def test_a_tick_that_never_ends_is_stopped_inside_it(monkeypatch):
    """A policy that loops (as proxmox's water-filling once did) holds no worker forever."""
    monkeypatch.setattr(execute, "STUCK_GRACE_S", 0.2)
    real_tick = Simulation._tick

    def tick(self, tick_ns):
        real_tick(self, tick_ns)
        if self.result.ticks_done >= 3:
            while True:  # the fourth tick never ends
                time.sleep(0.001)

    monkeypatch.setattr(Simulation, "_tick", tick)
    start = time.perf_counter()
    finished = simulate(0, parse_scenario(SLOW, "slow.toml"), timeout_s=1.0)
    assert time.perf_counter() - start < 30
    assert finished.error is not None and finished.error.startswith("run timed out")
    assert "after 3 of 60 simulated s" in finished.error
    assert finished.result.ticks_done == 3 and len(finished.result.host_rows) == 3


def test_no_budget_means_the_run_goes_to_its_end():
    sc = parse_scenario({**SLOW, "duration": "2s"}, "s.toml")
    finished = simulate(0, sc)
    assert finished.error is None and finished.result.complete


def test_the_sweep_records_a_timed_out_run_as_failed_and_goes_on(tmp_path):
    (tmp_path / "slow.toml").write_text(
        'duration = "60s"\n[host]\nmemory = "320MiB"\n[[vm]]\nname = "a"\nmemory = "192MiB"\n'
        'workload = { kind = "zipf", region = "176MiB", refs_per_s = 50000 }\n')
    exp = tmp_path / "exp.toml"
    exp.write_text('scenario = "slow.toml"\n[grid]\n"duration" = ["1s", "24h"]\n')
    out = tmp_path / "out"
    done = CliRunner().invoke(app, ["sweep", str(exp), "--out", str(out), "--workers", "1",
                                    "--run-timeout", "8s"])
    assert done.exit_code == 1, (done.stdout, done.stderr)
    assert "run timed out: over its budget of 8 s" in done.stderr.splitlines()[-1]
    table = pq.read_table(out / "summary.parquet").to_pandas().set_index("duration")
    assert table.loc["1s", "complete"]
    assert not table.loc["24h", "complete"]
    assert table.loc["24h", "error"].startswith("run timed out")
    kept = read_results(out / "runs" / "duration=24h" / "seed=1")
    assert not kept.complete and kept.summary["stop_reason"].startswith("run timed out")


def test_a_budget_that_is_not_a_time_is_refused():
    done = CliRunner().invoke(app, ["sweep", "x.toml", "--out", "o", "--run-timeout", "0s"])
    assert done.exit_code == 1
    assert done.stderr.strip() == ("hvmem: error: --run-timeout: expected a time such as "
                                   "'30min', more than 0, found '0s'")
