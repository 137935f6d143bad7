"""``hvmem compare SCENARIO``: one scenario under several policies, same seed, side by side.

A comparison is a one-seed sweep over ``policy.name``
(``sweep/experiment.policy_runs``), run in this process one policy after the
other, its table on the screen (``ui/summary_view.render_comparison``) or as
JSON. With ``--out DIR`` its runs are kept as a sweep keeps them
(``DIR/runs/policy.name=esx/seed=N/``, ``summary.parquet``, ``experiment.json``),
each run's directory written the moment it ends; the same command again shows
the table without running the policies already complete there. ``--report``
writes the runs of this invocation side by side as HTML.

A signal or an error stops it after printing the policies run so far (the last
one incomplete, with the reason), then exits 128 + the signal or 1; with
``--out`` the runs that ended are kept and ``summary.parquet`` is written.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from hvmem.errors import HvmemError
from hvmem.ui.aggregate_cli import FIDELITY_HELP
from hvmem.ui.exits import user_errors

__all__ = ["compare_command"]


@user_errors
def compare_command(
    scenario_file: Annotated[
        Path, typer.Argument(help="A scenario TOML file or a shipped scenario name.")
    ],
    policies: Annotated[str, typer.Option(help="Comma-separated policies.")] = (
        "esx,mom,proxmox,static"
    ),
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    fidelity: Annotated[str | None, typer.Option(help=FIDELITY_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    out: Annotated[Path | None, typer.Option(
        help="Keep the runs in this directory, as hvmem sweep does (new, or an earlier "
             "comparison's: the policies complete there are not run again).")] = None,
    report: Annotated[Path | None, typer.Option(
        help="Also write an HTML report of the runs side by side to this file.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Run even beyond the work ceiling or the RAM this machine has; with "
                        "--out, replace runs of another scenario there.")] = False,
) -> None:
    """Run one scenario under several policies, same seed, and compare them side by side.

    A signal or an error stops it after printing the policies run so far (the
    last one incomplete, with the reason), then exits 128 + the signal or 1.
    """
    from hvmem.policy.policies import POLICIES
    from hvmem.scenario.work_estimate import check_run, host_memory_errors
    from hvmem.ui.exits import StopSignals
    from hvmem.ui.options import scenario_of_flags

    names = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown or not names:
        raise HvmemError(f"--policies: unknown {', '.join(unknown) or 'empty list'}; "
                         f"choose from {', '.join(POLICIES)}")
    if len(set(names)) != len(names):
        raise HvmemError(f"--policies: {policies!r} names a policy twice")
    file, scenario = scenario_of_flags(scenario_file, seed, fidelity)
    check_run(scenario, str(file), force=force)

    with host_memory_errors(str(file), scenario), StopSignals() as signals:
        if out is None:
            _compare(scenario, names, signals, as_json, report)
        else:
            _compare_into(out, file, scenario, names, signals, as_json, report, force)
    signals.exit_if_stopped()


def _compare(scenario, names: list[str], signals, as_json: bool, report: Path | None,
             on_result=None, earlier: dict[str, dict] | None = None,
             order: list[str] | None = None) -> None:
    """Run ``names`` in turn and print the table, ``earlier`` runs in it, in ``order``."""
    from rich.console import Console

    from hvmem.results import strict_json
    from hvmem.ui.progress import tick_progress
    from hvmem.ui.report_cli import report_of_runs
    from hvmem.ui.run_guard import run_policies
    from hvmem.ui.summary_view import render_comparison

    runs: dict = {}
    summaries, outcome = run_policies(
        scenario, names, runs=runs, on_tick=lambda name: tick_progress(
            f"{scenario.name}-{name}", scenario.tick_ns, scenario.n_ticks),
        signals=signals, on_result=on_result)
    done = {**(earlier or {}), **summaries}
    summaries = {name: done[name] for name in order or done if name in done}
    with signals.held():  # a signal now waits until the comparison is printed
        if as_json:
            typer.echo(strict_json(summaries))
        elif summaries:
            Console(highlight=False, soft_wrap=False).print(render_comparison(summaries))
        if report is not None and runs:
            typer.echo(f"report: {report_of_runs(runs, report)}", err=as_json)
    if outcome.error is not None:
        raise outcome.error


def _compare_into(out: Path, file: Path, scenario, names: list[str], signals, as_json: bool,
                  report: Path | None, force: bool) -> None:
    """:func:`_compare` with each run kept in the sweep directory ``out``."""
    from hvmem import __version__
    from hvmem.sweep.directory import (
        SweepDir,
        SweepState,
        plan,
        record_run,
        write_record,
        write_summary,
    )
    from hvmem.sweep.execute import Finished
    from hvmem.sweep.experiment import policy_experiment

    experiment = policy_experiment(file, scenario, names)
    index = {name: i for i, name in enumerate(names)}
    with SweepDir(out, replace=force, label="--out") as target:
        state = SweepState(experiment)
        todo = plan(experiment, target.path, state, force=force)
        write_record(target.path, experiment, __version__)
        earlier = {names[i]: state.summaries[i] for i in range(len(names)) if i not in todo}
        if earlier:
            typer.echo(f"hvmem: {', '.join(earlier)} complete already in {target.path}",
                       err=True)

        last = [time.perf_counter()]

        def keep(name: str, result, error: str | None) -> None:
            now = time.perf_counter()  # runs follow one another: this one's wall time
            record_run(experiment, target.path, state,
                       Finished(index[name], result, error, now - last[0]))
            last[0] = now

        try:
            _compare(scenario, [names[i] for i in todo], signals, as_json, report,
                     on_result=keep, earlier=earlier, order=names)
        finally:
            with signals.held():
                summary = write_summary(target.path, state)
            typer.echo(f"summary: {summary} ({state.complete} of {len(names)} runs complete)",
                       err=True)
