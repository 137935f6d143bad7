"""``hvmem sweep``: a grid x seeds into one directory, resumed, failures and signals kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from typer.testing import CliRunner

from hvmem import __version__
from hvmem.results import read_results
from hvmem.scenarios import builtin_scenario_path
from hvmem.sim import Simulation
from hvmem.sweep.experiment import load_experiment
from hvmem.ui.cli import app

TINY = """
name = "tiny"
duration = "2s"
[host]
memory = "320MiB"
[[vm]]
name = "a"
memory = "192MiB"
workload = {{ kind = "zipf", region = "176MiB", refs_per_s = {refs_per_s} }}
"""


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def write(tmp_path: Path, experiment: str, refs_per_s: int = 20_000) -> Path:
    (tmp_path / "tiny.toml").write_text(TINY.format(refs_per_s=refs_per_s))
    path = tmp_path / "exp.toml"
    path.write_text(experiment)
    return path


def summary_mtimes(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns
            for p in out.glob("runs/*/*/summary.json")}


def test_four_policies_by_three_seeds_of_a_short_demo_make_12_rows_and_run_once(tmp_path):
    demo = builtin_scenario_path("demo").read_text()
    assert 'duration = "8min"' in demo
    (tmp_path / "demo-short.toml").write_text(demo.replace('duration = "8min"', 'duration = "3s"'))
    exp = tmp_path / "policies.toml"
    exp.write_text('scenario = "demo-short.toml"\nseeds = 3\n[grid]\n'
                   '"policy.name" = ["esx", "mom", "proxmox", "static"]\n"fidelity" = ["page"]\n')
    out = tmp_path / "sweep"
    done = cli("sweep", exp, "--out", out, "--workers", "2")
    assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
    assert "12 runs, 0 complete already, 12 to run on 2 worker processes" in done.stderr
    table = pq.read_table(out / "summary.parquet").to_pandas()
    assert len(table) == 12 and table["complete"].all() and table["error"].isna().all()
    assert sorted(set(zip(table["policy.name"], table["seed"], strict=True))) == sorted(
        (p, s) for p in ("esx", "mom", "proxmox", "static") for s in (1, 2, 3))
    assert (table["fidelity"] == "page").all()
    assert {"mechanisms.ballooning.peak_mib", "vms.web.mean_throughput", "ticks"} <= set(table)
    record = json.loads((out / "experiment.json").read_text())
    assert record["hvmem_version"] == __version__ and len(record["runs"]) == 12
    # Each run's directory is the run of its scenario, as a run of its own would be.
    spec = load_experiment(exp).runs[5]
    back = read_results(out / spec.rel_dir)
    assert back.complete and back.summary["ticks"] == 3
    expected = Simulation(spec.scenario).run().summary()
    assert json.loads(json.dumps(expected)) == back.summary
    row = table[(table["policy.name"] == spec.params["policy.name"])
                & (table["seed"] == spec.seed)].iloc[0]
    assert row["vms.web.mean_throughput"] == expected["vms"]["web"]["mean_throughput"]
    # Again: nothing is run twice.
    before = summary_mtimes(out)
    again = cli("sweep", exp, "--out", out)
    assert again.exit_code == 0, (again.stdout, again.stderr)
    assert summary_mtimes(out) == before and len(before) == 12
    assert "12 runs: 12 complete" in again.stdout
    rows = pq.read_table(out / "summary.parquet").to_pandas()
    assert len(rows) == 12 and rows["complete"].all()
    assert list(rows["wall_s"]) == list(table["wall_s"])  # each run's own, kept


def test_a_failed_run_is_recorded_while_the_others_go_on(tmp_path):
    good = [hex(0x400000 + (i * 7919 % 2000) * 4096) for i in range(4000)]
    (tmp_path / "good.trace").write_text("\n".join(good) + "\n")
    (tmp_path / "bad.trace").write_text("\n".join(good[:3000] + ["garbage!"] + good) + "\n")
    (tmp_path / "rep.toml").write_text(
        'duration = "2s"\n[host]\nmemory = "320MiB"\n[[vm]]\nname = "a"\nmemory = "192MiB"\n'
        'workload = { kind = "replay", path = "good.trace", refs_per_s = 2000 }\n')
    exp = tmp_path / "exp.toml"
    exp.write_text('scenario = "rep.toml"\n[grid]\n'
                   '"vm.a.workload.path" = ["bad.trace", "good.trace"]\n')
    out = tmp_path / "out"
    done = cli("sweep", exp, "--out", out, "--workers", "1")
    assert done.exit_code == 1
    assert done.stderr.splitlines()[-1].startswith(
        "hvmem: error: 1 of 2 runs failed, the first runs/vm.a.workload.path=bad.trace/seed=1: ")
    assert "cannot read 'garbage!'" in done.stderr
    table = pq.read_table(out / "summary.parquet").to_pandas().set_index("vm.a.workload.path")
    assert table.loc["good.trace", "complete"] and pd.isna(table.loc["good.trace", "error"])
    assert not table.loc["bad.trace", "complete"]
    assert "cannot read 'garbage!'" in table.loc["bad.trace", "error"]
    kept = read_results(out / "runs" / "vm.a.workload.path=bad.trace" / "seed=1")
    assert not kept.complete and "garbage" in kept.summary["stop_reason"]


def test_a_local_dask_cluster_runs_the_sweep(tmp_path):
    exp = write(tmp_path, 'scenario = "tiny.toml"\nseeds = 2\n[grid]\n'
                          '"policy.name" = ["esx"]\n"fidelity" = ["page"]\n')
    out = tmp_path / "out"
    done = cli("sweep", exp, "--out", out, "--dask", "local", "--workers", "1")
    assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
    assert "on a Dask LocalCluster of 1 worker\n" in done.stderr
    assert "hvmem: Dask dashboard at http://" in done.stderr
    table = pq.read_table(out / "summary.parquet").to_pandas()
    assert list(table["seed"]) == [1, 2] and table["complete"].all()
    for spec in load_experiment(exp).runs:  # the same runs as anywhere else
        summary = json.loads((out / spec.rel_dir / "summary.json").read_text())
        assert summary == json.loads(json.dumps(Simulation(spec.scenario).run().summary()))


def test_out_is_checked_and_a_run_of_another_scenario_is_replaced_only_with_force(tmp_path):
    exp = write(tmp_path, 'scenario = "tiny.toml"\n[grid]\n"policy.name" = ["static"]\n')
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = cli("sweep", exp, "--out", mine)
    assert refused.exit_code == 1 and "is not an hvmem sweep directory" in refused.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    out = tmp_path / "out"
    assert cli("sweep", exp, "--out", out).exit_code == 0
    (out / "notes.txt").write_text("mine too")
    write(tmp_path, exp.read_text(), refs_per_s=30_000)  # the base scenario changed
    other = cli("sweep", exp, "--out", out)
    assert other.exit_code == 1
    assert "runs/policy.name=static/seed=1: holds a run of another scenario" in other.stderr
    forced = cli("sweep", exp, "--out", out, "--force")
    assert forced.exit_code == 0, forced.stderr
    recorded = json.loads((out / "runs/policy.name=static/seed=1/scenario.json").read_text())
    assert recorded["vm"][0]["workload"]["refs_per_s"] == 30_000
    assert (out / "notes.txt").read_text() == "mine too"


def test_workers_are_as_many_as_the_ram_holds(tmp_path, monkeypatch):
    from hvmem.scenario import work_estimate

    exp = write(tmp_path, 'scenario = "tiny.toml"\n')
    need = work_estimate.estimate_run(load_experiment(exp).runs[0].scenario).ram_bytes
    monkeypatch.setattr(work_estimate, "available_ram_bytes", lambda: 2 * need + 1)
    refused = cli("sweep", exp, "--out", tmp_path / "out", "--workers", "3")
    assert refused.exit_code == 1 and not (tmp_path / "out").exists()
    assert refused.stderr.startswith("hvmem: error: --workers: 3 runs at a time would need ")
    assert refused.stderr.endswith("use at most 2, or --force to try anyway\n")


def test_sigterm_stops_the_sweep_keeping_the_completed_runs_and_the_next_resumes(tmp_path):
    exp = write(tmp_path, 'scenario = "tiny.toml"\nseeds = 2\n[grid]\n'
                          '"duration" = ["2s", "2h"]\n', refs_per_s=2_000_000)
    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "120"}
    child = subprocess.Popen([sys.executable, "-m", "hvmem", "sweep", str(exp), "--out", str(out),
                              "--workers", "2"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    short = [out / "runs" / "duration=2s" / f"seed={s}" / "summary.json" for s in (1, 2)]
    end = time.monotonic() + 240
    while not all(p.exists() for p in short):
        assert time.monotonic() < end and child.poll() is None, child.communicate()
        time.sleep(0.1)
    time.sleep(1.0)  # the long runs are under way
    second = cli("sweep", exp, "--out", out)  # locked as a run's --out is
    assert second.exit_code == 1
    assert second.stderr == f"hvmem: error: --out '{out}' is being written by process {child.pid}\n"
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr
    assert stderr.splitlines()[-1] == (f"hvmem: stopped by SIGTERM; 2 of 4 runs complete in "
                                       f"{out}; the same command resumes")
    table = pq.read_table(out / "summary.parquet").to_pandas()
    assert list(table["complete"]) == [True, True, False, False]
    assert not (out / "runs" / "duration=2h").exists()  # a run cut short is not kept
    exp.write_text('scenario = "tiny.toml"\nseeds = 2\n[grid]\n"duration" = ["2s"]\n')
    before = summary_mtimes(out)
    again = cli("sweep", exp, "--out", out)
    assert again.exit_code == 0 and summary_mtimes(out) == before
    assert "2 runs: 2 complete" in again.stdout


def test_compare_out_keeps_each_policys_run_as_a_sweep_and_resumes(tmp_path):
    """``compare --out`` is a one-seed sweep's directory; again, it runs only what is new."""
    (tmp_path / "tiny.toml").write_text(TINY.format(refs_per_s=20_000))
    out = tmp_path / "cmp"
    done = cli("compare", tmp_path / "tiny.toml", "--policies", "esx,static", "--json",
               "--out", out)
    assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
    first = json.loads(done.stdout)
    assert list(first) == ["esx", "static"]
    table = pq.read_table(out / "summary.parquet").to_pandas()
    assert list(table["policy.name"]) == ["esx", "static"] and table["complete"].all()
    for name, summary in first.items():
        (run_dir,) = (out / "runs" / f"policy.name={name}").iterdir()  # seed=<its seed>
        kept = read_results(run_dir)
        assert kept.complete and json.loads(json.dumps(kept.summary)) == summary
    # The same (and one more policy): esx and static are read back, only mom runs.
    mtimes = summary_mtimes(out)
    again = cli("compare", tmp_path / "tiny.toml", "--policies", "esx,mom,static", "--json",
                "--out", out)
    assert again.exit_code == 0, (again.stdout, again.stderr, again.exception)
    assert "esx, static complete already in" in again.stderr
    second = json.loads(again.stdout)
    assert list(second) == ["esx", "mom", "static"]
    assert {k: second[k] for k in first} == json.loads(json.dumps(first))
    assert {k: v for k, v in summary_mtimes(out).items() if k in mtimes} == mtimes
    table = pq.read_table(out / "summary.parquet").to_pandas()
    assert sorted(table["policy.name"]) == ["esx", "mom", "static"]
    # A directory that is not a sweep's is refused, untouched.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    refused = cli("compare", tmp_path / "tiny.toml", "--out", mine)
    assert refused.exit_code == 1 and "not an hvmem sweep directory" in refused.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_compare_out_keeps_the_runs_that_ended_when_one_fails(tmp_path):
    good = [hex(0x400000 + (i * 7919 % 2000) * 4096) for i in range(4000)]
    (tmp_path / "bad.trace").write_text("\n".join(good[:3000] + ["garbage!"] + good) + "\n")
    (tmp_path / "rep.toml").write_text(
        'duration = "2s"\n[host]\nmemory = "320MiB"\n[[vm]]\nname = "a"\nmemory = "192MiB"\n'
        'workload = { kind = "replay", path = "bad.trace", refs_per_s = 2000 }\n')
    out = tmp_path / "cmp"
    done = cli("compare", tmp_path / "rep.toml", "--policies", "static,esx", "--out", out)
    assert done.exit_code == 1
    assert "cannot read 'garbage!'" in done.stderr
    table = pq.read_table(out / "summary.parquet").to_pandas().set_index("policy.name")
    assert not table.loc["static", "complete"]
    assert "cannot read 'garbage!'" in table.loc["static", "error"]
    (run_dir,) = (out / "runs" / "policy.name=static").iterdir()
    kept = read_results(run_dir)
    assert not kept.complete and "garbage" in kept.summary["stop_reason"]
