"""``hvmem plot``: one metric of one run as a static figure for papers and slides.

The metric is a column of the results' Parquet files, by the same name (MCTLSZ,
SWCUR, free_mib, ...): a VM metric draws a line per VM (or the one ``--vm``
names), a host metric one line. The figure's format follows the file's suffix
(PNG at 200 dpi, SVG or PDF), drawn with matplotlib like the report's charts.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from hvmem.errors import ConfigError
from hvmem.ui.report_data import RunData, metric_names

#: File suffixes ``hvmem plot`` writes, and matplotlib's name of each format.
FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

#: Resolution of a PNG: sharp on a slide, small enough to mail.
PNG_DPI = 200

#: What a metric's numbers are, for the axis label (others: the metric's own name).
UNITS = {"throughput": "share of demand served", "slowdown": "x", "cpu_frac": "share of a CPU"}


def _unit(metric: str) -> str:
    if metric in UNITS:
        return UNITS[metric]
    if metric.endswith("/s"):
        return "MiB/s"
    if metric.endswith("_mib") or metric.isupper():
        return "MiB"
    return ""


def plot_metric(run: RunData, metric: str, out: str | Path, vm: str | None = None) -> Path:
    """Draw ``metric`` of ``run`` over time into ``out`` (.png, .svg or .pdf).

    Raises:
        ConfigError: an unknown metric (the message lists the real ones), an unknown
            VM, ``vm`` with a host metric, or a file suffix other than .png/.svg/.pdf.
    """
    path = Path(out)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--out {path}: expected a .png, .svg or .pdf file")
    host_metrics, vm_metrics = metric_names(run)
    if metric not in host_metrics and metric not in vm_metrics:
        raise ConfigError(f"--metric {metric!r}: no such column in {run.name}; VM metrics: "
                          f"{', '.join(vm_metrics)}; host metrics: {', '.join(host_metrics)}")
    if metric in vm_metrics:
        if vm is not None and vm not in run.vms:
            raise ConfigError(f"--vm {vm!r}: no such VM in {run.name}; VMs: "
                              f"{', '.join(run.vm_names)}")
        series = {name: (cols["time_s"], cols[metric]) for name, cols in run.vms.items()
                  if vm is None or name == vm}
    else:
        if vm is not None:
            raise ConfigError(f"--vm {vm!r}: {metric} is a host metric, not a VM's")
        series = {"host": (run.host["time_s"], run.host[metric])}
    style = {"font.family": "sans-serif", "font.size": 10, "axes.spines.top": False,
             "axes.spines.right": False, "svg.fonttype": "none"}
    with mpl.rc_context(style):
        fig = Figure(figsize=(6.4, 3.6), layout="constrained")
        ax = fig.subplots()
        for name, (times, values) in series.items():
            ax.plot(times, values, linewidth=1.4, label=name)
        unit = _unit(metric)
        ax.set_xlabel("time (s)")
        ax.set_ylabel(f"{metric} ({unit})" if unit else metric)
        ax.set_title(f"{run.summary.get('scenario', run.name)}: {metric}", loc="left")
        ax.grid(True, color="#e8e8e8", linewidth=0.6)
        ax.set_xlim(left=0)
        if len(series) > 1:
            ax.legend(frameon=False)
        try:
            fig.savefig(path, format=fmt, dpi=PNG_DPI)
        except OSError as err:
            raise ConfigError(f"--out {path}: cannot write ({err.strerror})") from None
    return path
