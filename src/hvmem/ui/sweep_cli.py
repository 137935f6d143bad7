"""``hvmem sweep EXPERIMENT.toml --out DIR``: every combination of a grid x every seed.

The experiment file (``sweep/experiment.py``) is read and every combination
checked before anything runs (its size too, as ``hvmem run`` checks a run's, and
the RAM of the runs that share this machine at a time); then ``DIR`` is checked
and locked like a run's ``--out`` (``sweep/directory.py``), runs completed by an
earlier invocation are left as they are, and the rest go to a process pool
(``--workers N``, this machine's cores by default, fewer if its RAM holds fewer
runs) or a Dask cluster (``--dask local`` starts a LocalCluster and prints its
dashboard's address; ``--dask tcp://HOST:PORT`` uses a running scheduler). Each
run's directory is written the moment it ends; ``summary.parquet`` at the end,
however the sweep ends.

A progress bar covers the runs on a terminal; without one a line on stderr
every 10 s (as ``ui/progress.py`` does for a run). SIGINT, SIGTERM and SIGHUP
stop the sweep: the runs still going are dropped, the completed ones kept and
the summary written, and the command exits 128 + the signal's number; the same
command resumes. A run that fails is recorded (its ``error`` in the summary,
its results marked incomplete) while the others go on; the sweep then exits 1
naming the first failure.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from hvmem.errors import ConfigError
from hvmem.ui.exits import STOPS, Stopped, StopSignals, user_errors

__all__ = ["sweep_command"]

#: The most worker processes ``--workers`` starts.
MAX_WORKERS = 1024


@user_errors
def sweep_command(
    experiment_file: Annotated[Path, typer.Argument(help="The experiment TOML file.")],
    out: Annotated[Path, typer.Option(help="The sweep's directory (new, or an earlier "
                                           "sweep's to resume).")],
    workers: Annotated[int | None, typer.Option(
        help="Runs at a time (processes) [default: this machine's cores].")] = None,
    dask: Annotated[str | None, typer.Option(
        help="'local' (a Dask LocalCluster of --workers processes) or a scheduler's address, "
             "tcp://HOST:PORT.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace runs of another scenario in --out, and run beyond the work "
                        "ceiling or the RAM this machine has.")] = False,
    run_timeout: Annotated[str | None, typer.Option(
        help="Each run's wall-clock budget, such as 30min: a run past it is recorded as failed "
             "with what it simulated, and the others go on [default: none].")] = None,
) -> None:
    """Run a scenario over a grid of values and seeds; one results directory per run.

    EXPERIMENT_FILE names a base scenario (`scenario = "demo"`, or a path relative
    to it), `seeds` (a count N meaning 1..N, or a list) and a [grid] table of dotted
    scenario paths to lists of values. The --out directory gets
    runs/<combination>/seed=<n>/ for each run, summary.parquet (one row per run)
    and experiment.json. Running it again with the same --out skips the runs
    already complete.
    """
    STOPS.hold()  # a signal while the sweep is prepared waits for it
    from hvmem import __version__
    from hvmem.scenario.work_estimate import check_run
    from hvmem.sweep.directory import SweepDir, SweepState, plan, write_record
    from hvmem.sweep.experiment import load_experiment

    cores = os.cpu_count() or 1
    if workers is not None and not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers: expected a whole number in 1..{MAX_WORKERS}, found "
                          f"{workers}")
    if dask is not None and dask != "local" and "://" not in dask:
        raise ConfigError(f"--dask: expected 'local' or a scheduler's address such as "
                          f"tcp://HOST:8786, found {dask!r}")
    run_timeout_s = None
    if run_timeout is not None:
        from hvmem.units import parse_time_ns
        run_timeout_ns = parse_time_ns(run_timeout, what="--run-timeout")
        if run_timeout_ns <= 0:
            raise ConfigError(f"--run-timeout: expected a time such as '30min', more than 0, "
                              f"found {run_timeout!r}")
        run_timeout_s = run_timeout_ns / 1e9
    experiment = load_experiment(experiment_file)
    need_bytes = 0  # the RAM of the largest run
    checked: set[str] = set()
    for spec in experiment.runs:  # each combination's size, once
        if spec.combination not in checked:
            checked.add(spec.combination)
            estimate = check_run(spec.scenario, f"{experiment.file}: {spec.combination}",
                                 force=force)
            need_bytes = max(need_bytes, estimate.ram_bytes)
    if dask is None or dask == "local":  # the runs share this machine's RAM
        workers = _workers_in_ram(workers, cores, need_bytes, force)
    own = not STOPS.installed
    signals = StopSignals() if own else STOPS
    with SweepDir(out, replace=force, label="--out") as target:
        if own:
            signals.__enter__()
        try:
            state = SweepState(experiment)
            todo = plan(experiment, target.path, state, force=force)
            write_record(target.path, experiment, __version__)
            _sweep(experiment, target.path, state, todo, signals,
                   min(workers or cores, max(1, len(todo))), dask, run_timeout_s)
        finally:
            if own:
                signals.__exit__()


def _workers_in_ram(workers: int | None, cores: int, need_bytes: int, force: bool) -> int:
    """Runs at a time on this machine: ``--workers``, or as many cores as the RAM has room for.

    ``--workers`` beyond the available RAM is refused (``--force`` runs them anyway).
    """
    from hvmem.scenario.work_estimate import available_ram_bytes
    from hvmem.units import format_size

    have = available_ram_bytes()
    room = cores if have is None or need_bytes <= 0 else max(1, have // need_bytes)
    if workers is None:
        return min(cores, room)
    if workers > room and not force:
        raise ConfigError(f"--workers: {workers} runs at a time would need about "
                          f"{format_size(workers * need_bytes)} of RAM and this machine has "
                          f"{format_size(have or 0)} available; use at most {room}, or --force "
                          "to try anyway")
    return workers


def _sweep(experiment, path: Path, state, todo: list[int], signals: StopSignals,
           workers: int, dask: str | None, run_timeout_s: float | None = None) -> None:
    """Run ``todo``, write the summary however it ends, then exit as it ended."""
    from hvmem.sweep.directory import run_sweep, write_summary
    from hvmem.sweep.execute import open_runner

    total = len(experiment.runs)
    earlier = total - len(todo)
    runner = None
    stop: Stopped | None = None
    progress = _Progress(experiment.name, total, earlier)
    try:
        if not todo:
            typer.echo(f"hvmem: sweep {experiment.name}: {total} runs, all complete already",
                       err=True)
        else:
            try:
                runner = open_runner(dask, workers, run_timeout_s)
            except OSError as err:  # no scheduler there, or it does not answer in time
                raise ConfigError(f"--dask {dask}: cannot reach the scheduler ({err})") from None
            typer.echo(f"hvmem: sweep {experiment.name}: {total} runs, {earlier} complete "
                       f"already, {len(todo)} to run on {runner.where}", err=True)
            if getattr(runner, "dashboard", None):
                typer.echo(f"hvmem: Dask dashboard at {runner.dashboard}", err=True)
            signals.raise_if_stopped()  # a signal while it was prepared stops it here
            with progress:
                run_sweep(experiment, path, state, todo, runner, held=signals.held,
                          check=signals.check, on_finished=progress.advance)
    except Stopped as stopped:
        stop = stopped
    except KeyboardInterrupt:
        stop = Stopped(signal.SIGINT)
    finally:
        signals.hold()  # the summary is written whatever comes now
        if runner is not None:
            runner.close()
        summary = write_summary(path, state)
    complete, failed = state.complete, state.failed
    typer.echo(f"summary: {summary} ({total} runs: {complete} complete"
               f"{f', {failed} failed' if failed else ''})")
    if stop is not None:
        typer.echo(f"hvmem: {stop}; {complete} of {total} runs complete in {path}; the same "
                   "command resumes", err=True)
        raise typer.Exit(stop.exit_status)
    if signals.received is not None:
        typer.echo(f"hvmem: {Stopped(signals.received)} after the sweep ended", err=True)
        raise typer.Exit(128 + signals.received)
    if failed:
        first = next(i for i, e in enumerate(state.errors) if e is not None)
        raise ConfigError(f"{failed} of {total} runs failed, the first "
                          f"{experiment.runs[first].rel_dir}: {state.errors[first]} (each "
                          f"run's error is in {summary.name})")


class _Progress:
    """A progress bar over the runs on a terminal; a line every 10 s on stderr without one."""

    def __init__(self, name: str, total: int, done: int) -> None:
        from hvmem.ui.progress import INTERVAL_S

        self.name, self.total, self.done, self.failed = name, total, done, 0
        self.interval_s = INTERVAL_S
        self.start_s = self.last_s = time.monotonic()
        self.first = done
        self._bar = None
        self._task = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn(f"sweep {name}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("runs"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True))

    def __enter__(self) -> _Progress:
        if self._bar is not None:
            self._bar.__enter__()
            self._task = self._bar.add_task("runs", total=self.total, completed=self.done)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def advance(self, finished) -> None:
        """One run more has ended (``finished``: its :class:`~hvmem.sweep.execute.Finished`)."""
        self.done += 1
        self.failed += finished.error is not None
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if now - self.last_s < self.interval_s and self.done < self.total:
            return
        self.last_s = now
        elapsed = now - self.start_s
        ran = self.done - self.first
        left = self.total - self.done
        eta = f", about {elapsed / ran * left:.0f} s left" if ran and left else ""
        failed = f" ({self.failed} failed)" if self.failed else ""
        print(f"hvmem: sweep {self.name}: {self.done} of {self.total} runs done{failed}, "
              f"{elapsed:.0f} s elapsed{eta}", file=sys.stderr, flush=True)
