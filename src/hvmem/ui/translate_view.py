"""Rendering of translation walkthroughs: pure functions from reports to Rich renderables.

The model produces plain-dict reports (``Machine.explain``); this module only
draws them, so the same report serves the terminal and ``--json``.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

_EVENT_STYLE = {
    "TLB hit": "green",
    "TLB miss": "yellow",
    "PWC hit": "green",
    "hidden fault: shadow fill": "magenta",
    "hypervisor fault: first touch": "magenta",
}


def render_walk(report: dict) -> Group:
    """One translation: a table of steps and a summary line."""
    title = (f"{report['access']} {report['gva']} in {report['vm']} asid {report['asid']} "
             f"({report['paging']} paging)")
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("#", justify="right", style="dim")
    table.add_column("step")
    table.add_column("table")
    table.add_column("level")
    table.add_column("what")
    table.add_column("ns", justify="right")
    for k, step in enumerate(report["steps"], 1):
        event = step["event"]
        style = "red" if event.startswith("fault") else _EVENT_STYLE.get(event, "")
        table.add_row(str(k), Text(event, style=style), step.get("table", ""),
                      step.get("level", ""), step["detail"], f"{step['cost_ns']:g}")
    if "fault" in report:
        summary = Text(f"{report['gva']} -> {report['fault']}: {report['fault_meaning']}",
                       style="bold red")
    else:
        summary = Text.assemble(
            ("GVA ", "dim"), report["gva"], (" -> GPA ", "dim"), report["gpa"],
            (" -> HPA ", "dim"), report["hpa"],
            (f"   {report['walk_refs']} walk references, {report['cost_ns']:g} ns", "dim"),
        )
    return Group(table, summary, Text(""))


def render_comparison(rows: list[tuple[str, dict, dict]]) -> Table:
    """Cost of the same accesses under nested and shadow paging, side by side."""
    table = Table(title="the same accesses under both paging modes", title_justify="left",
                  show_edge=False, pad_edge=False)
    table.add_column("access")
    table.add_column("nested: refs", justify="right")
    table.add_column("nested: ns", justify="right")
    table.add_column("shadow: refs", justify="right")
    table.add_column("shadow: ns", justify="right")
    for label, nested, shadow in rows:
        def cells(r: dict) -> tuple[str, str]:
            refs = str(r.get("walk_refs", "-")) if "fault" not in r else r["fault"]
            return refs, f"{r['cost_ns']:g}"

        table.add_row(label, *cells(nested), *cells(shadow))
    return table
