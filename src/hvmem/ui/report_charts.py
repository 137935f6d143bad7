"""The report's charts: matplotlib figures rendered to inline SVG.

Why static SVG from matplotlib
------------------------------
A report must open from disk years later with no network, in any browser, and
print. An SVG drawn once needs no runtime at all: no script to inline, no
library version to keep in step with a browser, and the text stays searchable.
matplotlib is also what ``hvmem plot`` draws papers' figures with, so the report
and a figure of the same metric look alike and the project carries one plotting
library. Interactive libraries (Vega-Lite, Plotly) would add hover and zoom at the
price of a megabyte-sized script in every file and a JavaScript runtime to test.

Layout
------
Every chart is a grid: one column per run, one row per VM (or one row for the
host), with the same x axis (simulated seconds) everywhere and the same y axis
along a row, so runs side by side compare at a glance. Series longer than
:data:`MAX_POINTS` are thinned by a stride before drawing: the SVG of an hour of
32 VMs stays a few megabytes, and a stride keeps every plotted point a real one.

Each function returns one ``<svg>`` element as text. Figures are
:class:`matplotlib.figure.Figure` objects, never pyplot's global state, so
drawing is safe from any thread and leaves no window behind.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hvmem.errors import ConfigError
from hvmem.policy.minfree import thresholds
from hvmem.ui.report_data import RunData

#: Longest series drawn point by point; longer ones are thinned by a stride.
MAX_POINTS = 1500

#: Host memory states, most free first, with the colour of their band.
STATE_COLOURS = {"high": "#d8f3dc", "clear": "#cfe8f3", "soft": "#fff3bf",
                 "hard": "#ffd8a8", "low": "#ffc9c9"}

#: One VM's memory, bottom to top of the stack: label -> colour. Together they
#: add up to its configured memory (MEMSZ).
COMPOSITION = {"private": "#4c78a8", "shared": "#9ecae9", "shared (saved)": "#72b7b2",
               "balloon": "#f58518", "compressed": "#b279a2", "swapped": "#e45756",
               "not backed": "#e6e6e6"}

_WIDTH_ONE_IN = 10.0   # a single run's charts span the page
_WIDTH_COLUMN_IN = 4.6  # each of several runs side by side
_STYLE = {"font.family": "sans-serif", "font.size": 8, "axes.titlesize": 9,
          "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"}


def _thin(*series: np.ndarray) -> list[np.ndarray]:
    step = max(1, -(-len(series[0]) // MAX_POINTS))
    return [s[::step] for s in series]


def _svg(fig: Figure, salt: str) -> str:
    """``fig`` as one ``<svg>`` element; ``salt`` keeps element ids unique in a page."""
    buf = io.StringIO()
    with mpl.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _grid(n_rows: int, n_cols: int, row_height_in: float, *, sharey: str | bool = "row"):
    width = _WIDTH_ONE_IN if n_cols == 1 else _WIDTH_COLUMN_IN * n_cols
    with mpl.rc_context(_STYLE):
        fig = Figure(figsize=(width, 0.6 + row_height_in * n_rows), layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False, sharex=True, sharey=sharey)
    return fig, axes


def _label_grid(axes, runs: Sequence[RunData], rows: Sequence[str], ylabel: str) -> None:
    for col, run in enumerate(runs):
        if len(runs) > 1:
            axes[0][col].set_title(run.name, fontweight="bold")
        axes[-1][col].set_xlabel("time (s)")
    for r, row in enumerate(rows):
        axes[r][0].set_ylabel(f"{row}\n{ylabel}" if row else ylabel)
    end = max((run.end_s for run in runs), default=0.0)
    for row in axes:
        for ax in row:
            ax.set_xlim(0, max(end, 1.0))
            ax.grid(True, color="#eeeeee", linewidth=0.6)
            ax.set_axisbelow(True)


def _missing(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888888")


def _state_runs(times: np.ndarray, states: np.ndarray, tick_s: np.ndarray):
    """(state, start, end) of each stretch of ticks in one state."""
    if not len(times):
        return []
    ends = times + tick_s
    cuts = np.flatnonzero(states[1:] != states[:-1]) + 1
    starts = np.concatenate(([0], cuts))
    stops = np.concatenate((cuts, [len(times)]))
    return [(str(states[a]), float(times[a]), float(ends[b - 1])) for a, b in zip(starts, stops,
                                                                                   strict=True)]


def _levels(run: RunData) -> dict[str, float]:
    """The free-memory threshold of each state for this run's host, where it is known."""
    host = run.scenario.get("host", {})
    total = run.host.get("total_mib")
    if total is None or not len(total):
        return {}
    try:
        return thresholds(float(total[0]), host.get("profile", "esxi6"),
                          min_free_frac=float(host.get("min_free_frac", 0.0))).thresholds_mib()
    except (ConfigError, TypeError, ValueError):  # a host the model cannot place
        return {}


def host_chart(runs: Sequence[RunData], salt: str) -> str:
    """Free host memory against minFree and the state thresholds, states as bands."""
    fig, axes = _grid(1, len(runs), 2.8)
    for col, run in enumerate(runs):
        ax = axes[0][col]
        h = run.host
        if "free_mib" not in h or not len(h["free_mib"]):
            _missing(ax, "no host rows")
            continue
        for state, start, end in _state_runs(h["time_s"], h["state"], h["tick_s"]):
            ax.axvspan(start, end, color=STATE_COLOURS.get(state, "#f0f0f0"), linewidth=0)
        levels = _levels(run)
        for state, level in levels.items():
            ax.axhline(level, color="#666666", linewidth=0.6, linestyle=(0, (3, 3)))
            ax.annotate(state, (1.0, level), xycoords=("axes fraction", "data"), fontsize=6,
                        color="#555555", ha="left", va="center", xytext=(2, 0),
                        textcoords="offset points")
        t, free, minfree = _thin(h["time_s"], h["free_mib"], h["minfree_mib"])
        ax.plot(t, free, color="#1f3b57", linewidth=1.2, label="free")
        ax.plot(t, minfree, color="#c92a2a", linewidth=0.9, linestyle="--", label="minFree")
        if levels:
            # Linear up to the HIGH threshold, where the states are, compressed above it:
            # a host that starts with most of its memory free still shows minFree's band.
            top = max(float(np.nanmax(free)), max(levels.values())) * 1.08
            high = max(levels.values())
            ax.set_yscale("symlog", linthresh=high, linscale=2.0)
            ax.set_ylim(0, top)
            ticks = list(mpl.ticker.MaxNLocator(5).tick_values(0, high))
            while ticks[-1] * 2 < top:
                ticks.append(ticks[-1] * 2)
            ax.yaxis.set_major_locator(mpl.ticker.FixedLocator([t for t in ticks if t <= top]))
            ax.yaxis.set_minor_locator(mpl.ticker.NullLocator())
            ax.yaxis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    _label_grid(axes, runs, [""], "free host memory (MiB)")
    present = sorted({str(s) for run in runs for s in run.host.get("state", [])},
                     key=list(STATE_COLOURS).index)
    handles = [Patch(color=STATE_COLOURS[s], label=s) for s in present if s in STATE_COLOURS]
    line_handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(line_handles + handles, labels + [h.get_label() for h in handles],
               loc="outside upper center", ncols=len(labels) + len(handles), frameon=False)
    return _svg(fig, salt)


def _vm_rows(runs: Sequence[RunData]) -> list[str]:
    return list(dict.fromkeys(name for run in runs for name in run.vm_names))


def composition_layers(cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One VM's memory by where it is, in MiB per tick (the keys of :data:`COMPOSITION`).

    GRANT is what machine memory backs, private and shared pages; SHRD the pages
    mapped to shared frames, SHRDSVD what sharing saves of them; balloon (MCTLSZ),
    compressed (ZIPPED) and swapped (SWCUR) pages are backed by no frame of the VM's
    own; what is left of MEMSZ the guest has never touched or has freed.
    """
    shared = np.clip(cols["SHRD"], 0, None)
    saved = np.clip(np.minimum(cols["SHRDSVD"], shared), 0, None)
    layers = {"private": np.clip(cols["GRANT"] - shared, 0, None), "shared": shared - saved,
              "shared (saved)": saved, "balloon": cols["MCTLSZ"],
              "compressed": cols["ZIPPED"], "swapped": cols["SWCUR"]}
    held = sum(layers.values())
    layers["not backed"] = np.clip(cols["MEMSZ"] - held, 0, None)
    return layers


def composition_chart(runs: Sequence[RunData], salt: str) -> str:
    """Each VM's memory over time, stacked: private, shared, balloon, compressed, swapped."""
    rows = _vm_rows(runs)
    fig, axes = _grid(len(rows), len(runs), 1.9, sharey=True)
    for col, run in enumerate(runs):
        for r, vm in enumerate(rows):
            cols = run.vms.get(vm)
            if cols is None or not len(cols["time_s"]):
                _missing(axes[r][col], f"no {vm} in this run")
                continue
            layers = composition_layers(cols)
            t, *values = _thin(cols["time_s"], *layers.values())
            axes[r][col].stackplot(t, *values, colors=list(COMPOSITION.values()),
                                   labels=list(COMPOSITION), linewidth=0)
    _label_grid(axes, runs, rows, "MiB")
    handles = [Patch(color=colour, label=label) for label, colour in COMPOSITION.items()]
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
    return _svg(fig, salt)


#: The targets chart: column -> (label, colour, line style).
TARGET_LINES = {"SZTGT": ("SZTGT (target)", "#e8590c", "-"),
                "GRANT": ("GRANT (backed)", "#1c7ed6", "-"),
                "ACTV": ("ACTV (active estimate)", "#2b8a3e", "--")}


def targets_chart(runs: Sequence[RunData], salt: str) -> str:
    """SZTGT (what the policy allots) against GRANT (what is backed) and ACTV (active)."""
    rows = _vm_rows(runs)
    fig, axes = _grid(len(rows), len(runs), 1.7, sharey=True)
    for col, run in enumerate(runs):
        for r, vm in enumerate(rows):
            cols = run.vms.get(vm)
            if cols is None or not len(cols["time_s"]):
                _missing(axes[r][col], f"no {vm} in this run")
                continue
            t, *values = _thin(cols["time_s"], *(cols[k] for k in TARGET_LINES))
            for (label, colour, style), v in zip(TARGET_LINES.values(), values, strict=True):
                axes[r][col].plot(t, v, color=colour, linestyle=style, linewidth=1.1, label=label)
    _label_grid(axes, runs, rows, "MiB")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=3, frameon=False)
    return _svg(fig, salt)


def performance_chart(runs: Sequence[RunData], salt: str) -> str:
    """Each VM's throughput (share of its demand served) and its slowdown, per tick."""
    rows = _vm_rows(runs)
    fig, axes = _grid(len(rows), len(runs), 1.6, sharey=True)
    worst = max((float(np.nanmax(c["slowdown"])) for run in runs for c in run.vms.values()
                 if len(c["slowdown"]) and not np.isnan(c["slowdown"]).all()), default=1.0)
    twins = []
    for col, run in enumerate(runs):
        for r, vm in enumerate(rows):
            ax = axes[r][col]
            cols = run.vms.get(vm)
            if cols is None or not len(cols["time_s"]):
                _missing(ax, f"no {vm} in this run")
                continue
            if np.isnan(cols["throughput"]).all():
                _missing(ax, "not observed on real guests")
                continue
            t, thru, slow = _thin(cols["time_s"], cols["throughput"], cols["slowdown"])
            ax.plot(t, thru * 100, color="#1c7ed6", linewidth=1.1, label="throughput (%)")
            twin = ax.twinx()
            twin.plot(t, slow, color="#c92a2a", linewidth=0.9, label="slowdown (x)")
            twin.set_ylim(1.0, max(worst * 1.05, 1.1))
            twin.spines["right"].set_visible(True)
            twin.tick_params(axis="y", colors="#c92a2a", labelsize=7)
            twins.append(twin)
            ax.set_ylim(0, 105)
    _label_grid(axes, runs, rows, "throughput %")
    handles = [Patch(color="#1c7ed6", label="throughput (% of demand served)"),
               Patch(color="#c92a2a", label="slowdown (x, right axis)")]
    fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False)
    return _svg(fig, salt)


def state_changes(run: RunData) -> list[dict]:
    """The host's memory state changes as events (``host state`` -> the state entered)."""
    h = run.host
    if "state" not in h or not len(h["state"]):
        return []
    return [{"time_s": start, "event": "host state", "detail": state}
            for state, start, _ in _state_runs(h["time_s"], h["state"], h["tick_s"])[1:]]


def events_chart(runs: Sequence[RunData], salt: str) -> str:
    """Events and decisions as marks on the timeline, one row a kind; host state changes too."""
    timelines = [state_changes(run) + run.events for run in runs]
    kinds = list(dict.fromkeys(str(e.get("event", "?")) for events in timelines for e in events))
    fig, axes = _grid(1, len(runs), 0.35 + 0.28 * max(1, len(kinds)))
    vms = _vm_rows(runs)
    palette = mpl.colormaps["tab10"]
    colour = {vm: palette(i % 10) for i, vm in enumerate(vms)}
    for col, events in enumerate(timelines):
        ax = axes[0][col]
        if not events:
            _missing(ax, "no events")
        for event in events:
            kind = str(event.get("event", "?"))
            at = ([float(event.get("time_s", 0.0))], [kinds.index(kind)])
            state = STATE_COLOURS.get(str(event.get("detail"))) if kind == "host state" else None
            # Not clipped: events at time 0 (power on) sit on the axis.
            if state:  # a square in the band's colour: the state entered
                ax.plot(*at, marker="s", markersize=7, markerfacecolor=state,
                        markeredgecolor="#555555", markeredgewidth=0.6, clip_on=False)
            else:
                ax.plot(*at, marker="|", markersize=12, markeredgewidth=1.6, clip_on=False,
                        color=colour.get(event.get("vm"), "#333333"))
        ax.set_yticks(range(len(kinds)), kinds)
        ax.set_ylim(-0.6, max(0, len(kinds) - 1) + 0.6)
    _label_grid(axes, runs, [""], "")
    handles = [Patch(color=colour[vm], label=vm) for vm in vms]
    handles.append(Patch(color="#333333", label="host"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), frameon=False)
    return _svg(fig, salt)


#: The charts of a report, in order: id -> (heading, what it shows, drawing function).
CHARTS = {
    "host": ("Host free memory and memory states",
             "Free machine memory against minFree and each state's threshold (dashed); the "
             "bands are the state the host was in.", host_chart),
    "composition": ("Memory of each VM",
                    "Where each VM's configured memory is, stacked: backed by private or shared "
                    "frames, saved by sharing, inside the balloon, compressed, swapped by the "
                    "host, or never backed.", composition_chart),
    "targets": ("Targets, backing and activity",
                "SZTGT is what the policy allots each VM; GRANT what machine memory backs; ACTV "
                "the sampled estimate of what it uses.", targets_chart),
    "performance": ("Throughput and slowdown",
                    "The share of each VM's demand served in a tick, and how much longer its "
                    "work took than without reclamation.", performance_chart),
    "events": ("Events and decisions",
               "Power on and off, reclamation and the controller's decisions (events.jsonl), "
               "coloured by VM; the host's state changes coloured as the bands above.",
               events_chart),
}
