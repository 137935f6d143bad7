"""Results directories never destroy what hvmem did not write, and never mix two runs.

In-process checks of ``outdir.py`` and the results writer; the command line and
real concurrent processes are in ``tests/ui/test_run_safety.py``.
"""

from __future__ import annotations

import json
import math
import os
import tomllib

import pytest

from hvmem.errors import ConfigError
from hvmem.outdir import MANIFEST_NAME, OutputDir, results_files
from hvmem.results import RunResult, read_results, strict_json, write_results
from hvmem.scenario.loader import parse_scenario


@pytest.fixture
def result() -> RunResult:
    scenario = parse_scenario(tomllib.loads("""
name = "tiny"
duration = "2s"
[host]
memory = "320MiB"
[[vm]]
name = "a"
memory = "192MiB"
workload = { kind = "uniform", region = "16MiB", refs_per_s = 1000 }
"""))
    return RunResult(scenario, complete=True, ticks_done=0)


def tree(path) -> dict[str, str]:
    """Every file under ``path`` with its text (bytes as their length), for before/after."""
    found = {}
    for root, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(root, name)
            found[os.path.relpath(p, path)] = str(os.path.getsize(p))
    return found


def test_a_users_directory_is_refused_and_left_alone(tmp_path, result):
    mine = tmp_path / "mydata"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="not an hvmem results directory"):
        write_results(result, mine, overwrite=True)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("name", [".", "..", "", "/", "sub/..", "~"])
def test_here_its_parents_root_and_home_are_refused(tmp_path, monkeypatch, result, name):
    (tmp_path / "sub").mkdir()
    work = tmp_path / "sub" / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "sub"))
    target = str(tmp_path / "sub") if name == "~" else name
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="--out .*: (names no|is the|holds the|an empty)"):
        OutputDir(target, replace=True, label="--out").open()
    assert tree(tmp_path) == before


def test_a_file_and_a_symlink_are_refused(tmp_path, result):
    (tmp_path / "f").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="not a directory"):
        write_results(result, tmp_path / "f", overwrite=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_results(result, tmp_path / "link", overwrite=True)
    assert (tmp_path / "f").read_text() == "x"


def test_earlier_results_need_replace_and_only_hvmems_files_go(tmp_path, result):
    out = write_results(result, tmp_path / "r")
    assert results_files(out) == {MANIFEST_NAME, "scenario.json", "host.parquet",
                                  "vms.parquet", "events.jsonl", "summary.json"}
    with pytest.raises(ConfigError, match="exists already"):
        write_results(result, out)
    result.ticks_done = 7
    write_results(result, out, overwrite=True)  # nothing of the user's: renamed into place
    assert read_results(out).summary["ticks"] == 7
    (out / "notes.md").write_text("mine")
    (out / "summary.json.bak").write_text("mine too")
    result.ticks_done = 9
    write_results(result, out, overwrite=True)  # replaced file by file around the user's
    assert read_results(out).summary["ticks"] == 9
    assert (out / "notes.md").read_text() == "mine"
    assert (out / "summary.json.bak").read_text() == "mine too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging or lock left


def test_a_results_directory_from_before_the_manifest_is_recognised(tmp_path, result):
    old = tmp_path / "old"
    old.mkdir()
    for name in ("summary.json", "scenario.json", "events.jsonl"):
        (old / name).write_text("{}")
    assert results_files(old) == {"summary.json", "scenario.json", "events.jsonl"}
    write_results(result, old, overwrite=True)
    assert read_results(old).complete
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "summary.json").write_text("{}")
    (tmp_path / "other" / "data.csv").write_text("1,2")
    assert results_files(tmp_path / "other") is None


def test_a_manifest_that_is_not_hvmems_does_not_make_a_results_directory(tmp_path):
    for text in ("[]", "{", json.dumps({"format": "npm", "files": ["a"]}),
                 json.dumps({"format": "hvmem-results", "files": ["../x"]})):
        (tmp_path / MANIFEST_NAME).write_text(text)
        assert results_files(tmp_path) is None


def test_an_empty_directory_is_taken_as_new(tmp_path, result):
    (tmp_path / "empty").mkdir()
    assert read_results(write_results(result, tmp_path / "empty")).complete


def test_a_second_writer_is_refused_naming_the_first(tmp_path, result):
    with OutputDir(tmp_path / "r", label="--out") as first:
        assert first.staging is not None and first.staging.parent == tmp_path
        with pytest.raises(ConfigError, match=rf"--out .* is being written by process "
                                              rf"{os.getpid()}"):
            OutputDir(tmp_path / "r", replace=True, label="--out").open()
        write_results(result, first)
    assert read_results(tmp_path / "r").complete
    with OutputDir(tmp_path / "r", replace=True):  # released: the next one may write
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_the_place_is_checked_writable_before_the_run(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot write results there"):
        OutputDir(tmp_path / "file" / "r", label="--out").open()
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(ConfigError, match="cannot write results there"):
            OutputDir(locked / "r", label="--out").open()
    finally:
        locked.chmod(0o700)


def test_results_changed_under_the_run_are_kept_in_the_staging_directory(tmp_path, result):
    target = OutputDir(tmp_path / "r")
    target.open()
    try:
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "data.csv").write_text("1")
        with pytest.raises(ConfigError, match="the results are in"):
            write_results(result, target)
    finally:
        target.close()
    kept = [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert len(kept) == 1 and (kept[0] / "summary.json").is_file()
    assert (tmp_path / "r" / "data.csv").read_text() == "1"


def test_json_files_are_strict(tmp_path, result):
    result.events.append({"time_s": math.nan, "event": "x", "vm": "", "detail": ""})
    result.complete = False
    result.stop_reason = "stopped by SIGTERM"
    out = write_results(result, tmp_path / "r")

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    for name in ("summary.json", "scenario.json", "events.jsonl"):
        for line in (out / name).read_text().splitlines() if name.endswith("l") else [
                (out / name).read_text()]:
            json.loads(line, parse_constant=refuse)
    assert json.loads((out / "events.jsonl").read_text())["time_s"] is None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["stop_reason"] == "stopped by SIGTERM"
    assert strict_json({"a": [math.inf, -math.inf, 1.5]}) == '{"a": [null, null, 1.5]}'


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, result):
    (tmp_path / ".r.lock").write_text("999999\n")  # its holder died: the kernel dropped the flock
    assert read_results(write_results(result, tmp_path / "r")).complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_the_staging_left_by_a_killed_run_goes_with_the_next_run_and_nothing_else(
        tmp_path, result):
    """SIGKILL leaves ``.r.XXXXXXXX.partial``; the next run on ``r`` removes it, and only it."""
    killed = tmp_path / ".r.k7_q2zx9.partial"
    killed.mkdir()
    (killed / "host.parquet").write_bytes(b"PAR1 cut short")
    empty = tmp_path / ".r.a1b2c3d4.partial"
    empty.mkdir()
    theirs = tmp_path / ".r.notes123.partial"  # the name, but a file hvmem never writes
    theirs.mkdir()
    (theirs / "notes.txt").write_text("precious")
    other = tmp_path / ".r.b.a1b2c3d4.partial"  # staging of the results directory 'r.b'
    other.mkdir()
    old = tmp_path / ".r.x9y8z7w6.old"  # a kill mid-commit: the earlier results
    (old / "results").mkdir(parents=True)
    (old / "results" / "summary.json").write_text("{}")
    assert read_results(write_results(result, tmp_path / "r")).complete
    assert not killed.exists() and not empty.exists()
    assert (theirs / "notes.txt").read_text() == "precious"
    assert other.is_dir() and (old / "results" / "summary.json").is_file()
