"""The esxtop-style memory screen: a pure render of one tick's rows, and a live driver.

Layout, after esxtop's memory screen (``m``)::

    hvmem  <scenario>  policy esx   simulated 125 s of 480
    PMEM  /MB:   4096 total    812 free    minFree 246    state soft
    VMs   /MB:  MEMCTL 620 curr / 700 tgt   SWAP 380 curr   ZIP 40   SHRDSVD 140
     NAME   MEMSZ  GRANT  SZTGT  TCHD  ACTV  MCTLSZ  MCTLTGT  MCTLMAX  SWCUR ...

Columns are the esxtop names [TECHNICLOUD][TECHJOCKEY][MIQUEL][SLOWE-ESXTOP]:
MEMSZ configured, GRANT backed by machine memory, SZTGT the scheduler's target,
TCHD/ACTV the sampled working set, MCTL* the balloon, SW* hypervisor swapping
(current, target, read and write rates), ZIP/UNZIP compression rates, CACHEUSD
the cache's machine memory and ZIPPED the guest memory held in it (esxtop's "ZIP
zipped" host figure), SHRD/ZERO/SHRDSVD page sharing; THRU is the share of the
tick the VM ran its own work.
The render reads only the rows a run records, so it works for a live run and
for a results directory alike, simulated or real.

:class:`LiveTop` keeps the screen up to date on a terminal while a run goes
(Rich ``Live``, after Rich's ``top_lite_simulator``): ``hvmem run`` and ``hvmem
qemu control`` update it from their tick callbacks, with the run's own words
after the title on the first line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

COLUMNS = ("MEMSZ", "GRANT", "SZTGT", "TCHD", "ACTV", "MCTLSZ", "MCTLTGT", "MCTLMAX", "SWCUR",
           "SWTGT", "SWR/s", "SWW/s", "ZIP/s", "UNZIP/s", "CACHEUSD", "SHRD", "ZERO", "SHRDSVD")

_STATE_STYLE = {"high": "green", "clear": "cyan", "soft": "yellow", "hard": "red",
                "low": "bold red"}


def render_top(host_row: dict, vm_rows: list[dict], title: str, total_s: float,
               status: str | None = None) -> Group:
    """The screen for one tick: the host lines and one row per VM (sizes in MiB).

    ``status`` follows the title on the first line; by default, how much of
    ``total_s`` has been simulated.
    """
    state = host_row["state"]
    if status is None:
        status = f"   simulated {host_row['time_s'] + host_row['tick_s']:.0f} s of {total_s:.0f}"
    head = Text.assemble(("hvmem  ", "bold"), title, status)
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


def last_tick(host_rows: Sequence[dict], vm_rows: Sequence[dict]) -> tuple[dict, list[dict]]:
    """The newest host row and the VM rows of the same tick."""
    host = host_rows[-1]
    rows = []
    for row in reversed(vm_rows):
        if row["time_s"] != host["time_s"]:
            break
        rows.append(row)
    return host, rows[::-1]


class LiveTop:
    """The esxtop-style screen, kept up to date on a terminal while a run goes.

    The screen appears with the first update, so nothing shows while real guests
    boot, and the last one stays on the terminal when the run ends. Use it as a
    context manager around the run.

    Args:
        console: the terminal.
        title: the run's name on the first line.
        total_s: the run's length, for the default status.
        status: the first line's text after the title, from the newest host row
            (default: simulated seconds of ``total_s``).
        enabled: False (not a terminal, ``--no-live``): updates do nothing.
    """

    def __init__(self, console: Console, title: str, total_s: float = 0.0,
                 status: Callable[[dict], str] | None = None, *, enabled: bool = True) -> None:
        self.console = console
        self.title = title
        self.total_s = total_s
        self.status = status
        self.enabled = enabled
        self._live: Live | None = None

    def __enter__(self) -> LiveTop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def update(self, host_rows: Sequence[dict], vm_rows: Sequence[dict]) -> None:
        """Show the newest tick of a run's rows."""
        if not self.enabled or not host_rows:
            return
        host_row, rows = last_tick(host_rows, vm_rows)
        status = self.status(host_row) if self.status is not None else None
        screen = render_top(host_row, rows, self.title, self.total_s, status)
        if self._live is None:
            self._live = Live(screen, console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.start()
        else:
            self._live.update(screen)
