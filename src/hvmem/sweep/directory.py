"""A sweep's directory: its runs, one row per run in ``summary.parquet``, and how it resumes.

Layout::

    DIR/experiment.json                   the expanded parameters, the hvmem version
    DIR/summary.parquet                   one row per run: the grid values, seed,
                                          complete, error, the summary's metrics
    DIR/runs/<combination>/seed=<n>/      each run's results directory (results.py)

``DIR`` gets the guarantees of a run's ``--out`` (``outdir.py``): ``/``, the
home directory, the current directory and its parents are refused, and so is
a directory that is neither new, empty nor a sweep's (one whose
``experiment.json`` says ``"format": "hvmem-sweep"``); ``.DIR.lock`` beside it
keeps a second sweep out while one writes. Each run's directory is written as
a run's is, staged and renamed into place the moment the run ends, so a sweep
stopped at any point keeps every run that finished.

A second invocation with the same ``DIR`` resumes: a run whose directory holds
a complete run of the same scenario (its ``scenario.json`` equal to the one
this run would record) is not run again; one that stopped, failed or never
started is. A run directory that holds another scenario's run (an earlier
experiment written to the same ``DIR``) is refused before anything runs, and
replaced only with ``--force``; a directory there that hvmem did not write is
never touched. ``summary.parquet`` and ``experiment.json`` are replaced whole
(written beside and renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from hvmem.errors import ConfigError
from hvmem.outdir import OutputDir, results_files
from hvmem.results import strict_json, summary_with_stop, write_results
from hvmem.scenario.loader import dump_scenario
from hvmem.sweep.execute import Finished, Runner
from hvmem.sweep.experiment import Experiment, RunSpec, value_text

__all__ = ["EXPERIMENT_NAME", "SUMMARY_NAME", "SweepDir", "SweepState", "plan", "record_run",
           "run_sweep"]

#: The sweep's record of what it runs; its ``format`` marks a sweep's directory.
EXPERIMENT_NAME = "experiment.json"
#: One row per run.
SUMMARY_NAME = "summary.parquet"
SWEEP_FORMAT = "hvmem-sweep"


class SweepDir(OutputDir):
    """A sweep's directory, checked and locked (not staged: runs land in it as they end)."""

    def open(self) -> None:
        """Check the name and the directory, take its lock, create it."""
        self._check_name()
        self._check_target()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            self._check_target()  # again, now that nobody else may change it
            self.path.mkdir(exist_ok=True)
        except OSError as err:
            self.close()
            raise self._refuse(f"cannot write a sweep there ({err.strerror})") from None
        except BaseException:
            self.close()
            raise

    def _check_target(self) -> None:
        path = self.path
        if path.is_symlink():
            raise self._refuse("is a symbolic link; name the directory itself")
        if not path.exists():
            return
        if not path.is_dir():
            raise self._refuse("exists and is not a directory")
        try:
            empty = not any(os.scandir(path))
        except OSError as err:
            raise self._refuse(f"cannot read it ({err.strerror})") from None
        try:
            record = json.loads((path / EXPERIMENT_NAME).read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            record = None  # no record, or not one of a sweep's: refused below unless empty
        if empty or (isinstance(record, dict) and record.get("format") == SWEEP_FORMAT):
            return
        raise self._refuse(f"exists and is not an hvmem sweep directory (no {EXPERIMENT_NAME} "
                           "of a sweep); nothing in it was touched; name a new directory")


class SweepState:
    """What the sweep knows of each run: its summary and error, as the rows will show them."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self.summaries: list[dict | None] = [None] * len(experiment.runs)
        self.errors: list[str | None] = [None] * len(experiment.runs)
        self.wall_s: list[float | None] = [None] * len(experiment.runs)

    @property
    def complete(self) -> int:
        """Runs complete, earlier ones included."""
        return sum(1 for s in self.summaries if s is not None and s.get("complete"))

    @property
    def failed(self) -> int:
        """Runs that ended in an error in this invocation."""
        return sum(1 for e in self.errors if e is not None)

    def rows(self) -> list[dict[str, Any]]:
        """One row per run: grid values, seed, complete, error, run_dir, the metrics."""
        rows = []
        for spec, summary, error, wall in zip(self.experiment.runs, self.summaries,
                                              self.errors, self.wall_s, strict=True):
            row: dict[str, Any] = dict(spec.params)
            row.update(seed=spec.seed, complete=bool(summary and summary.get("complete")),
                       error=error, run_dir=spec.rel_dir, wall_s=wall)
            if summary is not None:
                row["stop_reason"] = summary.get("stop_reason")
                _flatten(summary, "", row, skip=("scenario", "complete", "stop_reason"))
            rows.append(row)
        return rows

    def table(self) -> pa.Table:
        """:meth:`rows` as an Arrow table; a grid column of mixed types as text."""
        rows = self.rows()
        columns: dict[str, list] = {}
        for row in rows:
            for key in row:
                columns.setdefault(key, [])
        for key, values in columns.items():
            values.extend(row.get(key) for row in rows)
        for key, values in columns.items():  # a state a run never entered: 0 s in it
            if key.startswith("time_in_state_s."):
                values[:] = [0.0 if v is None and r.get("ticks") is not None else v
                             for v, r in zip(values, rows, strict=True)]
        for key in self.experiment.grid:
            kinds = {type(v) for v in columns[key] if v is not None}
            if kinds - {int, float} and len(kinds) > 1 or kinds & {list, dict}:
                columns[key] = [value_text(v) for v in columns[key]]
        if "stop_reason" not in columns:
            columns["stop_reason"] = [None] * len(rows)
        return pa.table({key: pa.array(values, type=pa.string() if key in
                                       ("error", "stop_reason") else None)
                         for key, values in columns.items()})


def _flatten(value: dict, prefix: str, row: dict, skip: tuple[str, ...] = ()) -> None:
    for key, inner in value.items():
        if key in skip:
            continue
        name = f"{prefix}{key}"
        if isinstance(inner, dict):
            _flatten(inner, f"{name}.", row)
        else:
            row[name] = inner


def _recorded(spec: RunSpec) -> Any:
    """The ``scenario.json`` a run of ``spec`` writes, as JSON reads it back."""
    return json.loads(strict_json(dump_scenario(spec.scenario), default=str))


def plan(experiment: Experiment, path: Path, state: SweepState, *, force: bool) -> list[int]:
    """The runs still to do (their indices); completed ones' summaries go into ``state``.

    Raises:
        ConfigError: a run's directory is not an hvmem results directory, or holds
            another scenario's run (without ``force``). Nothing has run then.
    """
    todo = []
    earlier_wall_s = _earlier_wall_s(path)
    for index, spec in enumerate(experiment.runs):
        run_dir = path / spec.rel_dir
        shown = f"--out {str(path)!r}: {spec.rel_dir}"
        if run_dir.is_symlink() or (run_dir.exists() and not run_dir.is_dir()):
            raise ConfigError(f"{shown}: is not a directory hvmem wrote; nothing was touched")
        if not run_dir.exists() or not any(os.scandir(run_dir)):
            todo.append(index)
            continue
        if results_files(run_dir) is None:
            raise ConfigError(f"{shown}: exists and is not an hvmem results directory; nothing "
                              "was touched; move it away")
        try:
            summary = json.loads((run_dir / "summary.json").read_text())
            recorded = json.loads((run_dir / "scenario.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            todo.append(index)  # an earlier run's files half there: run it again
            continue
        if recorded != _recorded(spec):
            if not force:
                raise ConfigError(f"{shown}: holds a run of another scenario than this "
                                  "experiment's (an earlier experiment?); --force runs it again "
                                  "and replaces it")
            todo.append(index)
        elif isinstance(summary, dict) and summary.get("complete") is True:
            state.summaries[index] = summary
            state.wall_s[index] = earlier_wall_s.get(spec.rel_dir)
        else:
            todo.append(index)
    return todo


def _earlier_wall_s(path: Path) -> dict[str, float]:
    """Each run's wall time as the last summary recorded it (a run skipped keeps its own)."""
    try:
        table = pq.read_table(path / SUMMARY_NAME, columns=["run_dir", "wall_s"])
    except (OSError, ValueError, pa.ArrowException):
        return {}
    return {d: w for d, w in zip(table["run_dir"].to_pylist(), table["wall_s"].to_pylist(),
                                 strict=True) if isinstance(w, float)}


def write_record(path: Path, experiment: Experiment, version: str) -> None:
    """``experiment.json``, replaced whole."""
    _replace_file(path / EXPERIMENT_NAME, lambda tmp: tmp.write_text(
        strict_json(experiment.record(version), indent=2, default=str) + "\n"))


def write_summary(path: Path, state: SweepState) -> Path:
    """``summary.parquet``, replaced whole; returns its path."""
    target = path / SUMMARY_NAME
    _replace_file(target, lambda tmp: pq.write_table(state.table(), tmp))
    return target


def _replace_file(target: Path, write: Callable[[Path], Any]) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def run_sweep(experiment: Experiment, path: Path, state: SweepState, todo: list[int],
              runner: Runner, *, held: Callable[[], contextlib.AbstractContextManager],
              check: Callable[[], None] | None = None,
              on_finished: Callable[[Finished], None] | None = None) -> None:
    """Run ``todo`` on ``runner``, writing each run's directory as it ends.

    ``held()`` is the block in which a stop signal waits (a run's files being
    written); a signal outside it (``KeyboardInterrupt``) ends the loop, after
    which the caller closes the runner and writes the summary. ``check()``,
    called between polls, raises for a signal that came while one was held.
    """
    for index in todo:
        runner.submit(index, experiment.runs[index].scenario)
    while runner.pending:
        if check is not None:
            check()
        for finished in runner.poll():
            with held():
                record_run(experiment, path, state, finished)
            if on_finished is not None:
                on_finished(finished)


def record_run(experiment: Experiment, path: Path, state: SweepState, finished: Finished) -> None:
    """One finished run: its directory written, its summary and error kept for the rows."""
    spec = experiment.runs[finished.index]
    state.errors[finished.index] = finished.error
    state.wall_s[finished.index] = finished.wall_s
    if finished.result is None:
        return
    state.summaries[finished.index] = summary_with_stop(finished.result)
    try:
        with OutputDir(path / spec.rel_dir, replace=True) as target:
            write_results(finished.result, target)
    except ConfigError as err:  # a disk that fills: the run is recorded as failed
        state.errors[finished.index] = str(err)
        state.summaries[finished.index] = None


@contextlib.contextmanager
def nothing_held() -> Iterator[None]:
    """For :func:`run_sweep` outside a command: nothing to hold."""
    yield
