"""``hvmem report``: one self-contained HTML file of one run or several side by side.

The file needs nothing but itself: the charts are inline SVG
(``report_charts.py``), the style sheet is inline, and the one script, inline
too, only counts the charts the browser drew (``data-charts`` on ``<body>``,
which the browser test reads). It opens from disk with no network, and can be
mailed, archived or attached to a paper's artifact.

What it shows, top to bottom: the summary tables ``hvmem run`` prints (for
several runs, one table with a column per run); host free memory against the
minFree thresholds with the memory state as bands; each VM's memory by where it
is; SZTGT against GRANT and ACTV; throughput and slowdown; the events on the
timeline; then, per run, its events and the effective scenario. Several runs
share every axis, so a policy that swaps more shows it in the same place.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from hvmem import __version__
from hvmem.errors import ConfigError
from hvmem.ui.report_charts import CHARTS
from hvmem.ui.report_data import RunData
from hvmem.ui.summary_view import CAUSE_LABELS

#: At most this many events are listed per run (all are drawn on the timeline).
MAX_EVENT_ROWS = 500

#: Summary keys of a VM -> (column heading, format). Keys not listed are shown as they are.
VM_COLUMNS = {
    "balloon_peak_mib": ("balloon peak MiB", "{:.0f}"),
    "shared_saved_peak_mib": ("shared saved peak MiB", "{:.0f}"),
    "compressed_peak_mib": ("compressed peak MiB", "{:.0f}"),
    "swapped_peak_mib": ("swapped peak MiB", "{:.0f}"),
    "swap_in_mib": ("swap-in MiB", "{:.0f}"),
    "swap_out_mib": ("swap-out MiB", "{:.0f}"),
    "compress_mib": ("compressed MiB", "{:.0f}"),
    "decompress_mib": ("decompressed MiB", "{:.0f}"),
    "mean_throughput": ("mean throughput", "{:.1%}"),
    "worst_slowdown": ("worst slowdown", "{:.2f}x"),
    "stall_s": ("work lost (s)", "{:.1f}"),
    "guest_swap_in_mib": ("guest swap-in MiB", "{:.0f}"),
    "guest_swap_out_mib": ("guest swap-out MiB", "{:.0f}"),
    **{f"stall_{cause}_s": (f"lost to {label} (s)", "{:.1f}")
       for cause, label in CAUSE_LABELS.items()},
    "ticks": ("ticks", "{:.0f}"),
}

#: Up to this many VMs, the per-VM table has a column per VM (it fits a page); more, a row each.
VMS_AS_COLUMNS = 8

#: Mechanism -> what its MiB are.
MECHANISMS = {
    "sharing": "saved by sharing identical pages",
    "ballooning": "guest memory inside balloons",
    "compression": "compressed, net of the cache",
    "swapping": "in host swap files",
}

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       margin: 0 auto; max-width: 1400px; padding: 1em 2em 3em; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 2em; }
p.note, header p { color: #555; margin-top: .2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { padding: .2em .7em; border-bottom: 1px solid #e3e3e3; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { border-bottom: 2px solid #bbb; vertical-align: bottom; max-width: 7em; }
div.table { overflow-x: auto; }  /* a table wider than the page scrolls in its own box */
figure { margin: .5em 0; } figure svg { width: 100%; height: auto; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: 12px; }
.incomplete { color: #c92a2a; font-weight: bold; }
details { margin: .5em 0; } summary { cursor: pointer; }
"""

#: Counts the charts the browser parsed into SVG; the only script, and it fetches nothing.
_SCRIPT = """
document.body.dataset.charts = String(
  document.querySelectorAll("section.chart figure > svg").length);
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _fmt(key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    default = "{:.0f}" if abs(value) >= 1000 else "{:.4g}"  # no exponents in a table
    return _e(VM_COLUMNS.get(key, (None, default))[1].format(value))


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """A table; cells are HTML already (escaped by the caller)."""
    cap = f"<caption>{_e(caption)}</caption>" if caption else ""
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (f'<div class="table"><table>{cap}<thead><tr>{header}</tr></thead><tbody>{body}'
            "</tbody></table></div>")


def _vm_keys(runs: Sequence[RunData]) -> list[str]:
    keys = dict.fromkeys(k for k in VM_COLUMNS if k != "ticks")
    for run in runs:
        for vm in run.summary.get("vms", {}).values():
            keys.update(dict.fromkeys(k for k, v in vm.items()
                                      if k not in keys and k != "ticks"
                                      and isinstance(v, int | float)))
    return [k for k in keys if any(k in vm for run in runs
                                   for vm in run.summary.get("vms", {}).values())]


def _label(key: str) -> str:
    return VM_COLUMNS.get(key, (key,))[0]


def run_summary_html(run: RunData) -> str:
    """The tables ``hvmem run`` prints: mechanisms, each VM's cost, time in each state."""
    summary = run.summary
    mechanisms = [[_e(name), _fmt("", held.get("peak_mib", 0)), _fmt("", held.get("end_mib", 0)),
                   _e(MECHANISMS.get(name, ""))]
                  for name, held in summary.get("mechanisms", {}).items()]
    keys = _vm_keys([run])
    per_vm = summary.get("vms", {})
    if len(per_vm) <= VMS_AS_COLUMNS:  # a few VMs: a column each, a row per metric
        vm_table = _table(["metric", *per_vm],
                          [[_e(_label(k))] + [_fmt(k, vm.get(k, "")) for vm in per_vm.values()]
                           for k in keys], "what it cost each VM")
    else:  # many: a row each, in a box that scrolls sideways
        vm_table = _table(["vm"] + [_label(k) for k in keys],
                          [[_e(name)] + [_fmt(k, vm.get(k, "")) for k in keys]
                           for name, vm in per_vm.items()], "what it cost each VM")
    states = ", ".join(f"{_e(state)} {seconds:.0f} s"
                       for state, seconds in summary.get("time_in_state_s", {}).items())
    return (_table(["mechanism", "peak MiB", "end MiB", "what"], mechanisms,
                   "what each mechanism reclaimed")
            + vm_table
            + f"<p>host memory states: {states or 'none'}</p>")


def comparison_html(runs: Sequence[RunData]) -> str:
    """One row per summary metric, one column per run."""
    rows: list[list[str]] = []

    def row(label: str, cell) -> None:
        rows.append([_e(label)] + [cell(run.summary) for run in runs])

    mechanisms = dict.fromkeys(m for run in runs for m in run.summary.get("mechanisms", {}))
    for name in mechanisms:
        row(f"{name} peak MiB",
            lambda s, n=name: _fmt("", s.get("mechanisms", {}).get(n, {}).get("peak_mib", "")))
    states = dict.fromkeys(st for run in runs for st in run.summary.get("time_in_state_s", {}))
    for state in states:
        row(f"time in {state} (s)",
            lambda s, st=state: _fmt("", round(s.get("time_in_state_s", {}).get(st, 0.0))))
    vms = dict.fromkeys(vm for run in runs for vm in run.summary.get("vms", {}))
    for vm in vms:
        for key in _vm_keys(runs):
            row(f"{vm}: {_label(key)}",
                lambda s, vm=vm, key=key: _fmt(key, s.get("vms", {}).get(vm, {}).get(key, "")))
    row("complete", lambda s: "yes" if s.get("complete") else
        '<span class="incomplete">no</span>')
    return _table(["metric"] + [run.name for run in runs], rows, "summary metrics side by side")


def _events_html(run: RunData) -> str:
    rows = [[_fmt("", e.get("time_s", "")), _e(e.get("event", "")), _e(e.get("vm", "host")),
             _e(e.get("detail", ""))] for e in run.events[:MAX_EVENT_ROWS]]
    more = len(run.events) - MAX_EVENT_ROWS
    tail = f"<p class='note'>and {more} more in events.jsonl</p>" if more > 0 else ""
    return _table(["time (s)", "event", "vm", "detail"], rows) + tail


def _run_details(run: RunData, open_: bool) -> str:
    state = "" if run.summary.get("complete") else (
        ' <span class="incomplete">(incomplete: interrupted)</span>')
    scenario = _e(json.dumps(run.scenario, indent=2, default=str))
    attr = " open" if open_ else ""
    return (f"<details{attr} class='run'><summary><b>{_e(run.name)}</b>{state}</summary>"
            + ("" if open_ else run_summary_html(run))
            + f"<h3>Events ({len(run.events)})</h3>{_events_html(run)}"
            + f"<h3>Effective scenario</h3><pre class='scenario'>{scenario}</pre></details>")


def render_report(runs: Sequence[RunData]) -> str:
    """The whole HTML page of ``runs`` (one run, or several side by side)."""
    if not runs:
        raise ConfigError("hvmem report: no results to show")
    single = len(runs) == 1
    title = runs[0].name if single else f"{len(runs)} runs side by side"
    names = ", ".join(run.name for run in runs)
    scenarios = ", ".join(dict.fromkeys(str(run.summary.get("scenario", "?")) for run in runs))
    parts = [f"<header><h1>hvmem report: {_e(title)}</h1>",
             f"<p>scenario {_e(scenarios)}; runs: {_e(names)}; drawn by hvmem "
             f"{_e(__version__)}</p></header>"]
    nav = ["<a href='#summary'>summary</a>"]
    nav += [f"<a href='#chart-{key}'>{_e(key)}</a>" for key in CHARTS]
    nav.append("<a href='#runs'>events and scenario</a>")
    parts.append("<nav>" + "".join(nav) + "</nav>")
    parts.append("<section id='summary'><h2>Summary</h2>")
    if single:
        incomplete = "" if runs[0].summary.get("complete") else (
            "<p class='incomplete'>This run was interrupted: it shows what was simulated.</p>")
        parts.append(incomplete + run_summary_html(runs[0]))
    else:
        parts.append(comparison_html(runs))
    parts.append("</section>")
    for index, (key, (heading, note, draw)) in enumerate(CHARTS.items()):
        svg = draw(runs, f"hvmem-report-{index}-{key}")
        parts.append(f"<section class='chart' id='chart-{key}'><h2>{_e(heading)}</h2>"
                     f"<p class='note'>{_e(note)}</p><figure>{svg}</figure></section>")
    parts.append("<section id='runs'><h2>Events and effective scenario</h2>")
    parts.extend(_run_details(run, open_=single) for run in runs)
    parts.append("</section>")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>hvmem report: {_e(title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}\n<script>{_SCRIPT}</script>\n</body></html>\n")


def write_report(runs: Sequence[RunData], out: str | Path) -> Path:
    """Write the report of ``runs`` to ``out`` (an .html file); returns its path.

    Raises:
        ConfigError: ``out`` cannot be written.
    """
    path = Path(out)
    page = render_report(runs)
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        raise ConfigError(f"{path}: cannot write the report ({err.strerror})") from None
    return path
