"""The end-of-run summary: which mechanisms reclaimed how much, and what it cost each VM."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text


def render_summary(summary: dict) -> Group:
    """A table per VM and a line of time spent in each host memory state."""
    table = Table(title=f"{summary['scenario']}: reclamation and its cost", title_justify="left",
                  show_edge=False, pad_edge=False)
    for column in ("vm", "balloon peak MiB", "shared saved MiB", "compressed MiB",
                   "swapped peak MiB", "swap in MiB", "throughput"):
        table.add_column(column, justify="left" if column == "vm" else "right")
    for name, vm in summary["vms"].items():
        table.add_row(name, f"{vm['balloon_peak_mib']:.0f}", f"{vm['shared_saved_peak_mib']:.0f}",
                      f"{vm['compressed_peak_mib']:.0f}", f"{vm['swapped_peak_mib']:.0f}",
                      f"{vm['swap_in_mib']:.0f}", f"{vm['mean_throughput']:.1%}")
    states = ", ".join(f"{state} {seconds:.0f} s"
                       for state, seconds in summary["time_in_state_s"].items())
    return Group(table, Text(f"host memory states: {states}"))
