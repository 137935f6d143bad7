"""``hvmem run`` and ``hvmem demo`` of a simulated scenario: the run on screen, its results kept.

The run is shown on the esxtop-style screen (a terminal), a progress bar, or a line on
stderr every 10 s (no terminal). Its results directory is checked and locked before the
simulation is built, and written however the run ends (``ui/run_guard.py``); a report
follows on request (``ui/report_cli.py``).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console


def simulate(console: Console, scenario, policy: str | None, out: Path | None,
             check_invariants: bool, no_live: bool, force: bool = False, *,
             report: bool = False) -> None:
    """Run ``scenario`` with a live view or a progress bar, write results, print the summary.

    The results directory is checked and locked before the run (``ui/run_guard.py``).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from hvmem.results import RunResult
    from hvmem.sim import Simulation
    from hvmem.ui.run_guard import RunGuard
    from hvmem.ui.summary_view import render_summary

    name = f"{scenario.name}-{scenario.policy.for_policy(policy).name}-seed{scenario.seed}"
    out_dir = out if out is not None else Path("results") / name
    # hvmem's own default place is replaced freely; a named one only with --force.
    with RunGuard(out_dir, replace=force or out is None,
                  label="--out" if out is not None else None) as guard:
        sim = None
        total_s = scenario.n_ticks * scenario.tick_ns / 10**9
        with guard.running():
            guard.raise_if_stopped()
            sim = Simulation(scenario, policy=policy, check_invariants=check_invariants)
            if console.is_terminal and not no_live:
                # The esxtop-style screen, refreshed as simulated time passes.
                from hvmem.sim_events import latest_note
                from hvmem.ui.top import LiveTop

                def status(row: dict) -> str:  # the default, and the latest scheduled event
                    done_s = row["time_s"] + row["tick_s"]
                    return (f"   simulated {done_s:.0f} s of {total_s:.0f}"
                            f"{latest_note(sim.result.events)}")

                with LiveTop(console, f"{scenario.name}  policy {sim.policy.name}", total_s,
                             status) as view:
                    def update(s) -> None:
                        guard.signals.check()
                        view.update(s.result.host_rows, s.result.vm_rows)

                    sim.run(on_tick=update)
            else:
                columns = (TextColumn("{task.description}"), BarColumn(),
                           TextColumn("{task.completed}/{task.total} s simulated"),
                           TimeRemainingColumn())
                from hvmem.ui.progress import ProgressLine

                line = None if console.is_terminal else ProgressLine(name, total_s)

                def on_tick(s) -> None:
                    guard.signals.check()
                    done_s = (s.now_ns + scenario.tick_ns) / 10**9
                    progress.update(task, completed=done_s)
                    if line is not None:  # nobody sees the bar: a line on stderr now and then
                        line.update(done_s)

                with Progress(*columns, console=console, transient=True,
                              disable=not console.is_terminal) as progress:
                    task = progress.add_task(name, total=total_s)
                    sim.run(on_tick=on_tick)
        if sim is None and guard.outcome.error is not None:
            raise guard.outcome.error  # the simulation could not be built: nothing ran
        # Stopped before the simulation was built: an empty run, kept all the same.
        result = sim.result if sim is not None else RunResult(scenario)
        path = guard.write(result, sim.now_ns / 10**9 if sim is not None else 0.0)
        console.print(render_summary(result.summary()))
        console.print(f"results: {path} ({guard.state(result)})")
        if report:
            from hvmem.ui.report_cli import report_of_directory

            typer.echo(f"report: {report_of_directory(path)}")
    guard.finish()
