"""``hvmem run``, ``demo`` and ``compare`` never lose a user's files or a run's results.

The refusals of ``--out`` and errors in the middle of a run are checked in
process; signals and concurrent runs with real processes (``python -m hvmem``),
since that is where they happen.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hvmem.errors import InvariantViolation, OutOfMemoryError
from hvmem.results import read_results
from hvmem.sim import Simulation
from hvmem.ui.cli import app

TINY = """
name = "tiny"
duration = "{duration}"
[host]
memory = "320MiB"
[[vm]]
name = "a"
memory = "192MiB"
workload = {{ kind = "zipf", region = "176MiB", refs_per_s = {refs_per_s} }}
"""


def scenario(tmp_path: Path, duration: str = "6s", refs_per_s: int = 100_000) -> Path:
    """The tiny scenario; a long one with many references per second runs for minutes."""
    path = tmp_path / f"tiny-{duration}.toml"
    path.write_text(TINY.format(duration=duration, refs_per_s=refs_per_s))
    return path


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def one_error_line(result) -> str:
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    err = result.stderr
    assert err.startswith("hvmem: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err + result.stdout
    return err.strip()


def files_under(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


# -- --out never destroys what hvmem did not write ------------------------------------------

def test_run_demo_into_a_users_directory_leaves_it_and_fails(tmp_path):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    line = one_error_line(cli("run", "demo", "--no-live", "--force", "--out", mine))
    assert line == (f"hvmem: error: --out '{mine}': exists and is not an hvmem results "
                    "directory (no hvmem-manifest.json); nothing in it was touched; name a new "
                    "directory")
    assert files_under(tmp_path) == {"mydata/notes.txt": b"mine"}


@pytest.mark.parametrize(("out", "message"), [
    (".", "--out '.': names no directory of its own"),
    ("..", "--out '..': names no directory of its own"),
    ("", "--out '.': names no directory of its own"),
    ("/", "--out '/': names no directory of its own"),
])
def test_out_refuses_here_parents_and_root(tmp_path, monkeypatch, out, message):
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    before = files_under(tmp_path)
    assert message in one_error_line(cli("run", "demo", "--force", "--out", out))
    assert files_under(tmp_path) == before


def test_earlier_results_are_replaced_only_with_force(tmp_path):
    out = tmp_path / "r"
    toml = scenario(tmp_path)
    assert cli("run", toml, "--no-live", "--out", out).exit_code == 0
    line = one_error_line(cli("run", toml, "--no-live", "--out", out, "--seed", "5"))
    assert line == f"hvmem: error: --out '{out}': exists already, with earlier results " \
                   "(--force replaces them)"
    (out / "my-notes.md").write_text("mine")
    done = cli("run", toml, "--no-live", "--out", out, "--seed", "5", "--force")
    assert done.exit_code == 0, done.output
    assert json.loads((out / "scenario.json").read_text())["seed"] == 5
    assert (out / "my-notes.md").read_text() == "mine"


# -- an error in the middle of a run keeps what was simulated ----------------------------------

def test_a_malformed_trace_line_mid_run_keeps_the_results(tmp_path):
    trace = tmp_path / "pages.txt"
    good = "\n".join(str(page) for page in range(64)) + "\n"
    trace.write_text(good * 50 + "not-a-page\n" + good)
    toml = tmp_path / "replay.toml"
    toml.write_text("""
name = "replay"
duration = "30s"
[host]
memory = "320MiB"
[[vm]]
name = "a"
memory = "64MiB"
[vm.workload]
kind = "replay"
path = "pages.txt"
format = "pages"
refs_per_s = 1000
first_vpn = 0
region = "256KiB"
chunk_refs = 64
block = 256
""")
    out = tmp_path / "r"
    line = one_error_line(cli("run", toml, "--no-live", "--out", out))
    assert "not-a-page" in line or "line 3201" in line, line
    back = read_results(out)
    assert not back.complete and back.summary["ticks"] == 3
    assert back.summary["stop_reason"] == line.removeprefix("hvmem: error: ")
    assert back.events[-1]["event"] == "error"


@pytest.mark.parametrize("error", [OutOfMemoryError("host: no free frame for vm a"),
                                   InvariantViolation("a: swap file and pmap disagree")])
def test_an_error_mid_run_keeps_the_results_and_exits_1(tmp_path, monkeypatch, error):
    real_tick = Simulation._tick

    def failing_tick(self, tick_ns):
        if self.now_ns >= 3 * tick_ns:
            raise error
        real_tick(self, tick_ns)

    monkeypatch.setattr(Simulation, "_tick", failing_tick)
    out = tmp_path / "r"
    line = one_error_line(cli("run", scenario(tmp_path), "--no-live", "--check-invariants",
                              "--out", out))
    if isinstance(error, OutOfMemoryError):  # named as the field that falls short
        assert "host.memory" in line and line.endswith(f"({error})"), line
    else:
        assert line == f"hvmem: error: {error}"
    back = read_results(out)
    assert not back.complete and back.summary["ticks"] == 3 and back.host.num_rows == 3
    assert back.summary["stop_reason"] == str(error)
    compared = cli("compare", scenario(tmp_path), "--policies", "static,esx", "--json")
    assert compared.exit_code == 1 and compared.stderr.strip() == line
    summaries = json.loads(compared.stdout)
    assert list(summaries) == ["static"] and summaries["static"]["ticks"] == 3
    assert summaries["static"]["stop_reason"] == str(error)


def test_a_signal_before_the_run_began_leaves_an_empty_incomplete_run(tmp_path, monkeypatch):
    from hvmem.ui.exits import Stopped

    def stopped_while_building(self, *args, **kwargs):
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(Simulation, "__init__", stopped_while_building)
    out = tmp_path / "r"
    done = cli("run", scenario(tmp_path), "--no-live", "--out", out)
    assert done.exit_code == 143, done.output
    back = read_results(out)
    assert not back.complete and back.summary["ticks"] == 0
    assert back.summary["stop_reason"] == "stopped by SIGTERM"


# -- signals and concurrent runs: real processes ----------------------------------------------

def hvmem(*args: object, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.Popen([sys.executable, "-m", "hvmem", *map(str, args)], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout_s: float = 120.0) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def lock_of(out: Path) -> Path:
    return out.parent / f".{out.name}.lock"


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129),
                                             (signal.SIGINT, 130)])
def test_a_signal_keeps_what_was_simulated_marked_incomplete(tmp_path, sig, status):
    out = tmp_path / "r"
    child = hvmem("run", scenario(tmp_path, "2h", 2_000_000), "--no-live", "--out", out,
                  cwd=tmp_path)
    wait_for(lambda: lock_of(out).exists())  # checked and locked: the run is starting
    time.sleep(10.0)  # some ticks (a tick of the tiny host is milliseconds)
    child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=300)
    name = signal.Signals(sig).name
    assert child.returncode == status, stderr
    # before it, progress lines (no terminal: a line on stderr every 10 s)
    assert stderr.strip().splitlines()[-1] == (
        f"hvmem: stopped by {name}; results kept in {out}, incomplete")
    assert f"(INCOMPLETE (stopped by {name}))" in stdout
    back = read_results(out)
    assert not back.complete and back.summary["stop_reason"] == f"stopped by {name}"
    assert back.summary["ticks"] > 0
    assert back.host.num_rows >= back.summary["ticks"]
    assert back.events[-1]["detail"] == f"stopped by {name}; results are partial"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "tiny-2h.toml"]


def test_sigterm_while_the_run_is_prepared_still_leaves_results(tmp_path):
    """``timeout -s TERM`` early: the signal waits for the run, which keeps zero or more ticks."""
    out = tmp_path / "r"
    child = hvmem("run", "demo", "--no-live", "--out", out, cwd=tmp_path)
    wait_for(lambda: lock_of(out).exists())
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 143, stderr
    back = read_results(out)
    assert not back.complete and back.summary["stop_reason"] == "stopped by SIGTERM"
    assert back.host.num_rows >= back.summary["ticks"] >= 0


def test_compare_stopped_by_sigterm_prints_what_ran_and_exits_143(tmp_path):
    child = hvmem("compare", scenario(tmp_path, "2h", 2_000_000), "--policies", "static,esx",
                  "--json", cwd=tmp_path)
    time.sleep(12.0)
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=300)
    assert child.returncode == 143, stderr
    summaries = json.loads(stdout)
    assert list(summaries) == ["static"]
    assert summaries["static"]["stop_reason"] == "stopped by SIGTERM"
    assert not summaries["static"]["complete"]


def same_run(out: Path) -> None:
    """The directory is one run's: its scenario's seed gives exactly its summary."""
    import dataclasses

    from hvmem.scenario.loader import load_scenario

    seed = json.loads((out / "scenario.json").read_text())["seed"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True
    scenario_ = load_scenario(out.parent / "tiny-20s.toml")
    expected = Simulation(dataclasses.replace(scenario_, seed=seed)).run().summary()
    assert json.loads(json.dumps(expected)) == summary


def test_a_second_run_into_the_same_out_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "r"
    first = hvmem("run", scenario(tmp_path, "2h", 2_000_000), "--no-live", "--out", out,
                  "--seed", "1", cwd=tmp_path)
    wait_for(lambda: lock_of(out).exists())
    second = hvmem("run", scenario(tmp_path, "20s"), "--no-live", "--out", out, "--seed", "2",
                   "--force", cwd=tmp_path)
    _, err2 = second.communicate(timeout=300)
    first.send_signal(signal.SIGTERM)
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 143, err1
    assert second.returncode == 1
    assert err2.strip() == (f"hvmem: error: --out '{out}' is being written by process "
                            f"{first.pid}")
    assert json.loads((out / "scenario.json").read_text())["seed"] == 1
    assert read_results(out).summary["stop_reason"] == "stopped by SIGTERM"


def test_two_runs_started_together_never_mix(tmp_path):
    out = tmp_path / "r"
    toml = scenario(tmp_path, "20s")
    runs = [hvmem("run", toml, "--no-live", "--out", out, "--seed", seed, "--force",
                  cwd=tmp_path) for seed in (1, 2)]
    ends = [run.communicate(timeout=300) for run in runs]
    codes = sorted(run.returncode for run in runs)
    assert codes in ([0, 0], [0, 1]), ends
    for run, (_, err) in zip(runs, ends, strict=True):
        if run.returncode == 1:
            assert "is being written by process" in err, err
    same_run(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "tiny-20s.toml"]


def test_a_signal_whose_exception_was_lost_still_stops_the_run_at_the_next_tick(tmp_path):
    """A handler's exception raised inside a finalizer is only printed ("Exception ignored");
    the flag it set stops the run at the next tick all the same."""
    from hvmem.scenario.loader import load_scenario
    from hvmem.ui.exits import StopSignals
    from hvmem.ui.run_guard import run_policies

    signals = StopSignals()
    signals.received = signal.SIGTERM  # what the handler leaves when its exception is lost
    summaries, outcome = run_policies(load_scenario(scenario(tmp_path)), ["esx", "static"],
                                      signals=signals)
    assert list(summaries) == ["esx"]  # the comparison ends with the stopped run
    assert summaries["esx"]["stop_reason"] == "stopped by SIGTERM"
    assert summaries["esx"]["ticks"] == 1 and outcome.error is None  # checked after a tick
