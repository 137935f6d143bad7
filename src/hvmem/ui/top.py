"""The esxtop-style memory screen: a pure render of one tick's rows, and a live driver.

Layout, after esxtop's memory screen (``m``)::

    hvmem  <scenario>  policy esx   simulated 125 s of 480
    PMEM  /MB:   4096 total    812 free    minFree 246    state soft
    VMs   /MB:  MEMCTL 620 curr / 700 tgt   SWAP 380 curr   ZIP 40   SHRDSVD 140
     NAME   MEMSZ  GRANT  SZTGT  TCHD  ACTV  MCTLSZ  MCTLTGT  MCTLMAX  SWCUR ...

Columns are the esxtop names (esx-memory.md §5.2): MEMSZ configured, GRANT
backed by machine memory, SZTGT the scheduler's target, TCHD/ACTV the sampled
working set, MCTL* the balloon, SW* hypervisor swapping (current, target, read
and write rates), ZIP/UNZIP compression rates, CACHEUSD the cache's machine memory and
ZIPPED the guest memory held in it (esxtop's "ZIP zipped" host figure), SHRD/ZERO/
SHRDSVD page sharing; THRU is the share of the tick the VM ran its own work.
The render reads only the rows a run records, so it works for a live run and
for a results directory alike.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

COLUMNS = ("MEMSZ", "GRANT", "SZTGT", "TCHD", "ACTV", "MCTLSZ", "MCTLTGT", "MCTLMAX", "SWCUR",
           "SWTGT", "SWR/s", "SWW/s", "ZIP/s", "UNZIP/s", "CACHEUSD", "SHRD", "ZERO", "SHRDSVD")

_STATE_STYLE = {"high": "green", "clear": "cyan", "soft": "yellow", "hard": "red",
                "low": "bold red"}


def render_top(host_row: dict, vm_rows: list[dict], title: str, total_s: float) -> Group:
    """The screen for one tick: the host lines and one row per VM (sizes in MiB)."""
    state = host_row["state"]
    head = Text.assemble(
        ("hvmem  ", "bold"), title, f"   simulated {host_row['time_s'] + host_row['tick_s']:.0f}"
        f" s of {total_s:.0f}")
    pmem = Text.assemble(
        f"PMEM  /MB: {host_row['total_mib']:8.0f} total {host_row['free_mib']:8.0f} free"
        f"   minFree {host_row['minfree_mib']:6.0f}   state ", (state, _STATE_STYLE.get(state, "")))

    def total(key: str) -> float:
        return sum(row[key] for row in vm_rows)

    vms_line = Text(
        f"VMs   /MB:  MEMCTL {total('MCTLSZ'):6.0f} curr / {total('MCTLTGT'):6.0f} tgt"
        f"   SWAP {total('SWCUR'):6.0f} curr   ZIP {total('ZIPPED'):5.0f} zipped "
        f"{total('ZIPPED') - total('CACHEUSD'):5.0f} saved"
        f"   SHRDSVD {total('SHRDSVD'):6.0f}")
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold reverse")
    table.add_column("NAME")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    table.add_column("THRU", justify="right")
    for row in vm_rows:
        cells = [f"{row[c]:.0f}" if not c.endswith("/s") else f"{row[c]:.1f}" for c in COLUMNS]
        table.add_row(row["vm"], *cells, f"{row['throughput']:.0%}")
    return Group(head, pmem, vms_line, Text(""), table)


def last_tick(host_rows: list[dict], vm_rows: list[dict]) -> tuple[dict, list[dict]]:
    """The newest host row and the VM rows of the same tick."""
    host = host_rows[-1]
    rows = []
    for row in reversed(vm_rows):
        if row["time_s"] != host["time_s"]:
            break
        rows.append(row)
    return host, rows[::-1]
