"""A run that writes a results directory, guarded from its first line to its exit status.

``hvmem run``, ``hvmem demo`` and the QEMU controller's commands share the
same shape: check and lock the results directory before anything runs
(``outdir.py``), run, write whatever was simulated however the run ended, and
only then end the command the way it has to end::

    with RunGuard(out_dir, replace=force, label="--out") as guard:   # checked, locked
        with guard.running():                  # SIGINT/SIGTERM/SIGHUP and errors caught
            ...build, run...
        path = guard.write(result, now_s)      # marked incomplete if stopped; signals held
        ...print the summary...
    guard.finish()                             # the error's line (1), or 128 + signal

An error in the middle of a run (a malformed trace line, the simulated host out
of memory, an invariant violated under ``--check-invariants``, a QEMU guest
that fails) marks the run incomplete with the error's line as the reason and an
``error`` event; a signal marks it ``stopped by SIG...`` (inside its tick loop
the run records that itself, as it does for Ctrl-C). A signal that comes while
the run is still being built leaves a results directory with no ticks, marked
incomplete all the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import typer

from hvmem.errors import HvmemError
from hvmem.outdir import OutputDir
from hvmem.results import RunResult, summary_with_stop, write_results
from hvmem.scenario.schema import Scenario
from hvmem.ui.exits import STOPS, Stopped, StopSignals, error_line, status_of_stop


class Outcome:
    """How a block under :func:`kept` ended: the error or the signal that ended it, if any."""

    def __init__(self) -> None:
        self.error: HvmemError | OSError | None = None
        self.reason = ""  # "stopped by SIGTERM", or the error's line; empty: it ran through

    def fail(self, err: HvmemError | OSError) -> None:
        """The run ended with ``err``: the reason is its one line."""
        self.error = err
        self.reason = error_line(err).removeprefix("hvmem: error: ")

    def apply(self, result: RunResult, time_s: float) -> None:
        """Mark ``result`` incomplete with the reason (and an event at ``time_s``), if any."""
        if not self.reason or result.stop_reason == self.reason:
            return  # ran through, or the run recorded this stop itself
        result.complete = False
        result.stop_reason = self.reason
        result.events.append({"time_s": time_s,
                              "event": "error" if self.error else "interrupted", "vm": "",
                              "detail": f"{self.reason}; results are partial"})


@contextlib.contextmanager
def kept(outcome: Outcome) -> Iterator[Outcome]:
    """Catch what ends a run early into ``outcome``: hvmem's and the OS's errors, signals.

    The error is raised by the caller once the results are written; a signal
    (``KeyboardInterrupt``, :class:`~hvmem.ui.exits.Stopped`) becomes the reason.
    """
    try:
        yield outcome
    except (HvmemError, OSError) as err:
        outcome.fail(err)
    except KeyboardInterrupt as stop:
        outcome.reason = str(stop) or "interrupted"


class RunGuard:
    """The results directory of one run (opened on entering) and how the run ended.

    Args:
        out_dir: the results directory.
        replace: earlier results there may be replaced (``--force``).
        label: the flag that named it, for messages (None: hvmem chose the name).
    """

    def __init__(self, out_dir: Path, *, replace: bool, label: str | None = "--out"):
        self.target = OutputDir(out_dir, replace=replace, label=label)
        # The process's, when hvmem's entry point installed them; else (in process) its own.
        self._own_signals = not STOPS.installed
        self.signals = StopSignals() if self._own_signals else STOPS
        self.outcome = Outcome()
        self.stop_status: int | None = None
        self.stop_line = ""

    def __enter__(self) -> RunGuard:
        self.target.open()
        try:
            if self._own_signals:
                self.signals.__enter__()
        except BaseException:
            self.target.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._own_signals:
                self.signals.__exit__()
            else:
                self.signals.release()
        finally:
            self.target.close()

    @contextlib.contextmanager
    def running(self) -> Iterator[Outcome]:
        """The run's block: whatever ends it early is kept in :attr:`outcome`.

        From its end until the results are written (:meth:`write`) a signal
        waits, so a second Ctrl-C cannot lose what the first one kept.
        """
        with kept(self.outcome):
            self.signals.release()  # held while the run was prepared: see raise_if_stopped
            yield self.outcome
        self.signals.hold()

    def raise_if_stopped(self) -> None:
        """Stop a held run here if a signal came while it was prepared.

        The first line of the block of :meth:`running`: a with-block cannot be
        skipped from its context manager.
        """
        self.signals.raise_if_stopped()

    def write(self, result: RunResult, time_s: float = 0.0) -> Path:
        """Write ``result`` (marked as the run ended) into the checked directory.

        ``time_s`` is when the run stopped, for the event that records an error.
        Signals wait until the files are in place.
        """
        with self.signals.held():  # held already since the run's block ended
            self.outcome.apply(result, time_s)
            path = write_results(result, self.target)
        if not result.complete and self.outcome.error is None:
            self.stop_status = status_of_stop(result.stop_reason)
            self.stop_line = f"hvmem: {result.stop_reason}; results kept in {path}, incomplete"
        return path

    @staticmethod
    def state(result: RunResult) -> str:
        """``complete``, or ``INCOMPLETE (why)`` for the results line."""
        return "complete" if result.complete else f"INCOMPLETE ({result.stop_reason})"

    def finish(self) -> None:
        """End the command as the run ended: the error's line and 1, or 128 + the signal."""
        if self.outcome.error is not None:
            raise self.outcome.error
        status = self.stop_status
        if status is None and self.signals.received is not None:  # while results were written
            status = 128 + self.signals.received
            self.stop_line = f"hvmem: {Stopped(self.signals.received)} after the run ended"
        if status is not None:
            typer.echo(self.stop_line, err=True)
            raise typer.Exit(status)


def run_policies(scenario: Scenario, names: list[str], *,
                 runs: dict[str, RunResult] | None = None,
                 on_tick: Callable[[str], Callable | None] | None = None,
                 signals: StopSignals | None = None,
                 on_result: Callable[[str, RunResult, str | None], None] | None = None,
                 ) -> tuple[dict[str, dict], Outcome]:
    """``hvmem compare``'s runs: each policy's summary, until one does not finish.

    A run stopped by a signal (under :class:`~hvmem.ui.exits.StopSignals`) or an
    error ends the comparison there; its summary is kept, incomplete, with its
    ``stop_reason`` (a run stopped before it began has none). Returns the
    summaries and how the last run ended; ``runs``, when given, receives each
    policy's result (for a report), ``on_tick(name)`` a tick callback per run;
    ``signals``, the handlers installed, are checked every tick; ``on_result(name,
    result, error)`` gets each run as it ends (its error's line, or None), with a
    signal held off while it runs.
    """
    from hvmem.sim import Simulation
    from hvmem.sweep.experiment import policy_runs

    summaries: dict[str, dict] = {}
    outcome = Outcome()
    for spec in policy_runs(scenario, names):  # a one-seed sweep over the policies
        name = spec.params["policy.name"]
        sim = None
        with kept(outcome):
            sim = Simulation(spec.scenario)
            sim.run(on_tick=_checked(on_tick(name) if on_tick is not None else None, signals))
        if sim is None:
            break
        outcome.apply(sim.result, sim.now_ns / 10**9)
        summaries[name] = summary_with_stop(sim.result)
        if runs is not None:
            runs[name] = sim.result
        if on_result is not None:
            with signals.held() if signals is not None else contextlib.nullcontext():
                on_result(name, sim.result, outcome.reason if outcome.error else None)
        if not sim.result.complete:
            break
    return summaries, outcome


def _checked(on_tick: Callable | None, signals: StopSignals | None) -> Callable | None:
    """``on_tick`` after the check of ``signals`` (see :meth:`StopSignals.check`)."""
    if signals is None:
        return on_tick

    def tick(sim) -> None:
        signals.check()
        if on_tick is not None:
            on_tick(sim)
    return tick
