"""A run that writes a results directory, guarded from its first line to its exit status.

``hvmem run``, ``hvmem demo`` and the QEMU controller's commands share the
same shape: check and lock the results directory before anything runs
(``outdir.py``), run, write whatever was simulated however the run ended, and
only then end the command the way it has to end::

    with RunGuard(out_dir, replace=force, label="--out") as guard:   # checked, locked
        with guard.running(result, now_s):     # SIGINT/SIGTERM/SIGHUP, errors kept
            ...run...
        path = guard.write(result)             # further signals held back meanwhile
        ...print the summary...
    guard.finish()                             # the error's line (1), or 128 + signal

An error in the middle of a run (a malformed trace line, the simulated host out
of memory, an invariant violated under ``--check-invariants``, a QEMU guest
that fails) marks the run incomplete with the error's line as the reason and an
``error`` event; a signal marks it ``stopped by SIG...`` (the run itself records
that, as it does for Ctrl-C).
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
from hvmem.ui.exits import Stopped, StopSignals, error_line, status_of_stop


class RunGuard:
    """The results directory of one run (opened on entering) and how the run ended.

    Args:
        out_dir: the results directory.
        replace: earlier results there may be replaced (``--force``).
        label: the flag that named it, for messages (None: hvmem chose the name).
    """

    def __init__(self, out_dir: Path, *, replace: bool, label: str | None = "--out"):
        self.target = OutputDir(out_dir, replace=replace, label=label)
        self.signals = StopSignals()
        self.error: HvmemError | OSError | None = None
        self.stop_status: int | None = None
        self.stop_line = ""

    def __enter__(self) -> RunGuard:
        self.target.open()
        try:
            self.signals.__enter__()
        except BaseException:
            self.target.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.signals.__exit__()
        finally:
            self.target.close()

    @contextlib.contextmanager
    def running(self, result: RunResult, now_s: Callable[[], float]) -> Iterator[None]:
        """Keep ``result`` however the block ends: an error or a signal marks it incomplete."""
        with kept(result, now_s) as outcome:
            yield
        self.error = outcome.error

    def write(self, result: RunResult) -> Path:
        """Write ``result`` into the checked directory; signals wait until it is done."""
        with self.signals.held():
            path = write_results(result, self.target)
        if not result.complete and self.error is None:
            self.stop_status = status_of_stop(result.stop_reason)
            self.stop_line = f"hvmem: {result.stop_reason}; results kept in {path}, incomplete"
        return path

    @staticmethod
    def state(result: RunResult) -> str:
        """``complete``, or ``INCOMPLETE (why)`` for the results line."""
        return "complete" if result.complete else f"INCOMPLETE ({result.stop_reason})"

    def finish(self) -> None:
        """End the command as the run ended: the error's line and 1, or 128 + the signal."""
        if self.error is not None:
            raise self.error
        status = self.stop_status
        if status is None and self.signals.received is not None:  # while results were written
            status = 128 + self.signals.received
            self.stop_line = f"hvmem: {Stopped(self.signals.received)} after the run ended"
        if status is not None:
            typer.echo(self.stop_line, err=True)
            raise typer.Exit(status)


class Outcome:
    """How a block under :func:`kept` ended: the error that ended it, if one did."""

    error: HvmemError | OSError | None = None


@contextlib.contextmanager
def kept(result: RunResult, now_s: Callable[[], float]) -> Iterator[Outcome]:
    """Keep ``result`` however the block ends: an error or a signal marks it incomplete.

    The error is caught and left in the outcome, for the caller to raise once
    the results are written; a signal outside the run's own loop is taken as
    the run takes one inside it.
    """
    outcome = Outcome()
    try:
        yield outcome
    except (HvmemError, OSError) as err:
        outcome.error = err
        mark_incomplete(result, error_line(err).removeprefix("hvmem: error: "), now_s(), "error")
    except KeyboardInterrupt as stop:
        mark_incomplete(result, str(stop) or "interrupted", now_s(), "interrupted")


def mark_incomplete(result: RunResult, reason: str, time_s: float, kind: str) -> None:
    """``result`` did not finish, for ``reason``: recorded with an event ``kind`` at ``time_s``."""
    result.complete = False
    result.stop_reason = reason
    result.events.append({"time_s": time_s, "event": kind, "vm": "",
                          "detail": f"{reason}; results are partial"})


def run_policies(scenario: Scenario, names: list[str]
                 ) -> tuple[dict[str, dict], HvmemError | OSError | None]:
    """``hvmem compare``'s runs: each policy's summary, until one does not finish.

    A run stopped by a signal (under :class:`~hvmem.ui.exits.StopSignals`) or an
    error ends the comparison there; its summary is kept, incomplete, with its
    ``stop_reason``. Returns the summaries and the error, if one ended it.
    """
    from hvmem.sim import Simulation

    summaries: dict[str, dict] = {}
    for name in names:
        sim = Simulation(scenario, policy=name)
        with kept(sim.result, lambda s=sim: s.now_ns / 10**9) as outcome:
            sim.run()
        summaries[name] = summary_with_stop(sim.result)
        if outcome.error is not None:
            return summaries, outcome.error
        if not sim.result.complete:
            break
    return summaries, None
