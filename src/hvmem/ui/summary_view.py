"""The end-of-run summary: which mechanisms reclaimed how much, and what it cost each VM."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

#: Mechanism -> what its MiB mean, for the summary table.
_HOLDS = {
    "sharing": "saved by sharing identical pages",
    "ballooning": "guest memory inside balloons",
    "compression": "compressed, net of the cache",
    "swapping": "in host swap files",
}


def render_summary(summary: dict) -> Group:
    """The mechanisms' host-wide holdings, then a table of each VM's share and cost."""
    mechanisms = Table(title=f"{summary['scenario']}: what each mechanism reclaimed",
                       title_justify="left", show_edge=False, pad_edge=False)
    for column in ("mechanism", "peak MiB", "end MiB", "what"):
        mechanisms.add_column(column, justify="right" if "MiB" in column else "left")
    for name, held in summary.get("mechanisms", {}).items():
        mechanisms.add_row(name, f"{held['peak_mib']:.0f}", f"{held['end_mib']:.0f}",
                           _HOLDS.get(name, ""))
    # One-word headers keep the table within 80 columns; the caption says what they are.
    table = Table(title="what it cost each VM", title_justify="left",
                  caption="balloon, shared (saved), zipped, swapped: peak MiB; swapin: MiB "
                          "read back; thru: mean throughput; worst: slowdown; "
                          "lost: seconds of work",
                  caption_justify="left", show_edge=False, pad_edge=False)
    for column in ("vm", "balloon", "shared", "zipped", "swapped", "swapin", "thru",
                   "worst", "lost"):
        table.add_column(column, justify="left" if column == "vm" else "right",
                         no_wrap=column == "vm")
    for name, vm in summary["vms"].items():
        table.add_row(name, f"{vm['balloon_peak_mib']:.0f}", f"{vm['shared_saved_peak_mib']:.0f}",
                      f"{vm['compressed_peak_mib']:.0f}", f"{vm['swapped_peak_mib']:.0f}",
                      f"{vm['swap_in_mib']:.0f}", f"{vm['mean_throughput']:.1%}",
                      f"{vm['worst_slowdown']:.2f}x", f"{vm['stall_s']:.1f}")
    states = ", ".join(f"{state} {seconds:.0f} s"
                       for state, seconds in summary["time_in_state_s"].items())
    return Group(mechanisms, Text(""), table, Text(""), _stall_table(summary),
                 Text(f"host memory states: {states}"))


#: Stall cause -> its column header in the summary (one word each, within 80 columns).
_CAUSES = {"guest_paging": "gpaging", "host_swap_in": "hswapin", "decompress": "unzip",
           "cow": "cow", "zeroing": "zero", "blocked": "blocked", "other": "other"}


def _stall_table(summary: dict) -> Table:
    """Each VM's guest paging (MiB) and its lost seconds by cause."""
    table = Table(title="where each VM's time went", title_justify="left",
                  caption="gswapin/gswapout: MiB the guest paged in/out itself; then seconds "
                          "of work lost to guest paging, host swap-ins, decompression, "
                          "copy-on-write, zeroing, blocked in low, the rest",
                  caption_justify="left", show_edge=False, pad_edge=False)
    table.add_column("vm", no_wrap=True)
    for column in ("gswapin", "gswapout", *_CAUSES.values()):
        table.add_column(column, justify="right")
    for name, vm in summary["vms"].items():
        table.add_row(name, f"{vm.get('guest_swap_in_mib', 0.0):.0f}",
                      f"{vm.get('guest_swap_out_mib', 0.0):.0f}",
                      *(f"{vm.get(f'stall_{cause}_s', 0.0):.1f}" for cause in _CAUSES))
    return table


#: Stall cause -> how the comparison names it.
#: Each stall cause (results.STALL_CAUSES) as the tables name it.
CAUSE_LABELS = {"guest_paging": "guest paging", "host_swap_in": "host swap-in",
                 "decompress": "decompression", "cow": "copy-on-write", "zeroing": "zeroing",
                 "blocked": "blocked in low", "other": "other"}


def _lost_to(summary: dict, cause: str) -> float:
    """Seconds of work all VMs of a run lost to ``cause``."""
    return sum(vm.get(f"stall_{cause}_s", 0.0) for vm in summary["vms"].values())


def render_comparison(summaries: dict[str, dict]) -> Group:
    """Per policy: each VM's throughput, reclamation, paging, lost time by cause, states.

    Host and guest paging are MiB moved; the causes are summed over the VMs.
    """
    policies = list(summaries)
    vms = list(next(iter(summaries.values()))["vms"]) if summaries else []
    table = Table(title="policies side by side (same scenario, same seed)", title_justify="left",
                  show_edge=False, pad_edge=False)
    table.add_column("")
    for name in policies:
        table.add_column(name, justify="right")

    def row(label: str, cell) -> None:
        table.add_row(label, *[cell(summaries[p]) for p in policies])

    for vm in vms:
        row(f"{vm} throughput", lambda s, vm=vm: f"{s['vms'][vm]['mean_throughput']:.1%}")
    for key, label in (("balloon_peak_mib", "balloon peak MiB"),
                       ("shared_saved_peak_mib", "shared saved MiB"),
                       ("compressed_peak_mib", "compressed peak MiB"),
                       ("swapped_peak_mib", "swapped peak MiB"),
                       ("swap_in_mib", "swap-in I/O MiB"),
                       ("swap_out_mib", "swap-out I/O MiB"),
                       ("guest_swap_in_mib", "guest swap-in MiB"),
                       ("guest_swap_out_mib", "guest swap-out MiB")):
        row(label, lambda s, key=key: f"{sum(v.get(key, 0.0) for v in s['vms'].values()):.0f}")
    for vm in vms:
        row(f"{vm} lost (s)", lambda s, vm=vm: f"{s['vms'][vm]['stall_s']:.1f}")
    for cause, label in CAUSE_LABELS.items():
        row(f"lost to {label} (s)", lambda s, cause=cause: f"{_lost_to(s, cause):.1f}")
    states = sorted({st for s in summaries.values() for st in s["time_in_state_s"]})
    for state in states:
        row(f"time in {state} (s)",
            lambda s, state=state: f"{s['time_in_state_s'].get(state, 0):.0f}")
    return Group(table)
