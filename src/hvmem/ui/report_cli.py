"""``hvmem report`` and ``hvmem plot``, and the report ``run``, ``compare`` and ``demo`` write.

matplotlib is imported only when a report or a plot is drawn, so the other
commands start as fast as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hvmem.errors import ConfigError
from hvmem.ui.exits import user_errors

#: The report a results directory gets from ``hvmem run --report`` and ``hvmem demo``.
REPORT_NAME = "report.html"


def results_dirs(paths: list[Path]) -> list[Path]:
    """``paths``, each directory that holds no results replaced by the results dirs in it.

    So the folder of a sweep, or of a comparison written as one directory per run,
    stands for its runs (in name order).
    """
    found: list[Path] = []
    for path in paths:
        runs = ([] if (path / "summary.json").exists() or not path.is_dir() else
                sorted(p for p in path.iterdir() if (p / "summary.json").is_file()))
        found.extend(runs or [path])
    return found


@user_errors
def report_command(
    results: Annotated[list[Path], typer.Argument(
        help="Results directories (of hvmem run, hvmem qemu control, ...), or folders of "
             "them (a sweep's).")],
    out: Annotated[Path | None, typer.Option(
        help="The HTML file [default: RESULTS/report.html for one directory, "
             "report.html for several].")] = None,
) -> None:
    """Write one self-contained HTML report of results: charts, summary tables, scenario.

    One directory: host free memory against the minFree thresholds with the
    memory states as bands, each VM's memory by where it is, SZTGT against
    GRANT and ACTV, throughput and slowdown, the events, the summary tables and
    the effective scenario. Several: the same charts side by side on the same
    axes, and a table of the summary metrics. The file opens from disk with no
    network (inline SVG and styles).
    """
    from hvmem.ui.report import write_report
    from hvmem.ui.report_data import load_run

    dirs = results_dirs(results)
    runs = [load_run(path) for path in dirs]
    if out is None:
        out = dirs[0] / REPORT_NAME if len(dirs) == 1 else Path(REPORT_NAME)
    typer.echo(f"report: {write_report(runs, out)}")


@user_errors
def plot_command(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    metric: Annotated[str, typer.Option(
        help="A column of the results (esxtop names: MCTLSZ, SWCUR, GRANT, ...; free_mib).")],
    out: Annotated[Path, typer.Option(help="The figure: a .png, .svg or .pdf file.")],
    vm: Annotated[str | None, typer.Option(help="Only this VM [default: every VM].")] = None,
) -> None:
    """Draw one metric over time as a static figure for papers and slides (matplotlib)."""
    from hvmem.ui.plot import plot_metric
    from hvmem.ui.report_data import load_run

    typer.echo(f"plot: {plot_metric(load_run(results), metric, out, vm)}")


def report_of_directory(results: Path) -> Path:
    """Write ``results/report.html`` for a results directory just written; returns its path."""
    from hvmem.ui.report import write_report
    from hvmem.ui.report_data import load_run

    return write_report([load_run(results)], results / REPORT_NAME)


def report_of_runs(runs: dict, out: Path) -> Path:
    """Write the report of runs kept in memory (name -> ``RunResult``) to ``out``."""
    from hvmem.ui.report import write_report
    from hvmem.ui.report_data import run_from_result

    if out.parent and not out.parent.exists():
        try:
            out.parent.mkdir(parents=True)
        except OSError as err:
            raise ConfigError(f"{out.parent}: cannot create ({err.strerror})") from None
    return write_report([run_from_result(name, result) for name, result in runs.items()], out)
