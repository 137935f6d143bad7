"""The esxtop-style memory screen: a pure render of one tick's rows, and a live driver.

Layout, after esxtop's memory screen (``m``), whose summary lines name the
host's figures group by group::

    hvmem  <scenario>  policy esx   simulated 125 s of 480
    PMEM  /MB:    4096 total     812 free
    VMKMEM/MB:     246 minfree   state soft
    PSHARE/MB:     180 shared     40 common    140 saving
    SWAP  /MB:     380 curr      400 rclmtgt   2.0 r/s    3.5 w/s
    ZIP   /MB:      60 zipped     20 saved
    MEMCTL/MB:     620 curr      700 target   2400 max
     NAME   MEMSZ  GRANT  SZTGT  TCHD  ACTV  MCTLSZ  MCTLTGT  MCTLMAX  SWCUR ...

The summary lines and their sub-fields follow esxtop's (``curr``, ``target``
[VKR-BLOG]; the others as [TECHNICLOUD] lists the lines). Columns are the
esxtop names [TECHNICLOUD][TECHJOCKEY][MIQUEL][SLOWE-ESXTOP]: MEMSZ configured,
GRANT backed by machine memory, SZTGT the scheduler's target, TCHD/ACTV the
sampled working set, MCTL* the balloon, SW* hypervisor swapping (current,
target, read and write rates), ZIP/UNZIP compression rates, CACHEUSD the
cache's machine memory and ZIPPED the guest memory held in it (esxtop's "ZIP
zipped" host figure), SHRD/ZERO/SHRDSVD page sharing; THRU is the share of the
tick the VM ran its own work.

Which columns show
------------------
The columns come in groups (:data:`FIELD_GROUPS`), as on esxtop's field screen
(its ``f`` key): each group has a letter that shows or hides it, ``--fields``
picks them by letter or name, and by default the screen shows the groups that
fit the terminal's width, the most telling first (sizes, balloon, swapping,
throughput, then the working set, sharing and compression). A header is
never cut: a group that does not fit is left out whole.

The render reads only the rows a run records, so it works for a live run and
for a results directory alike, simulated or real (``ui/replay.py`` replays
one).

:class:`LiveTop` keeps the screen up to date on a terminal while a run goes
(Rich ``Live``, after Rich's ``top_lite_simulator``): ``hvmem run`` and ``hvmem
qemu control`` update it from their tick callbacks, with the run's own words
after the title on the first line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hvmem.errors import ConfigError

COLUMNS = ("MEMSZ", "GRANT", "SZTGT", "TCHD", "ACTV", "MCTLSZ", "MCTLTGT", "MCTLMAX", "SWCUR",
           "SWTGT", "SWR/s", "SWW/s", "ZIP/s", "UNZIP/s", "CACHEUSD", "SHRD", "ZERO", "SHRDSVD")

_STATE_STYLE = {"high": "green", "clear": "cyan", "soft": "yellow", "hard": "red",
                "low": "bold red"}


@dataclass(frozen=True)
class FieldGroup:
    """Columns shown or hidden together, with the letter that toggles them."""

    letter: str
    name: str
    columns: tuple[str, ...]


#: The VM columns by group, in screen order; NAME always shows.
FIELD_GROUPS = (
    FieldGroup("A", "SIZE", ("MEMSZ", "GRANT", "SZTGT")),
    FieldGroup("B", "ACTIVE", ("TCHD", "ACTV")),
    FieldGroup("C", "MEMCTL", ("MCTLSZ", "MCTLTGT", "MCTLMAX")),
    FieldGroup("D", "SWAP", ("SWCUR", "SWTGT", "SWR/s", "SWW/s")),
    FieldGroup("E", "ZIP", ("ZIP/s", "UNZIP/s", "CACHEUSD")),
    FieldGroup("F", "COW", ("SHRD", "ZERO", "SHRDSVD")),
    FieldGroup("G", "THRU", ("THRU",)),
)
GROUP_LETTERS = tuple(g.letter for g in FIELD_GROUPS)
#: Which groups stay when the terminal is narrow: the first ones that fit, in this order.
FIT_ORDER = ("A", "C", "D", "G", "B", "F", "E")
#: Columns between two others: Rich's cell padding of one space on each side.
_GAP = 2


def parse_fields(text: str) -> frozenset[str]:
    """Group letters from ``--fields``: letters (``ACD``) or names (``size,memctl,swap``).

    Raises:
        ConfigError: a letter or name that is no group.
    """
    by_name = {g.name.lower(): g.letter for g in FIELD_GROUPS}
    words = [w.strip() for w in text.replace(",", " ").split()]
    letters: set[str] = set()
    for word in words:
        if word.lower() in by_name:
            letters.add(by_name[word.lower()])
        elif word.isalpha() and all(c.upper() in GROUP_LETTERS for c in word):
            letters.update(c.upper() for c in word)
        else:
            choices = ", ".join(f"{g.letter} {g.name.lower()}" for g in FIELD_GROUPS)
            raise ConfigError(f"--fields {text!r}: {word!r} is no field group (one of {choices})")
    if not letters:
        raise ConfigError(f"--fields {text!r}: name at least one field group")
    return frozenset(letters)


def _cell(row: dict, column: str) -> str:
    if column == "THRU":
        value = row.get("throughput", math.nan)
        return "-" if value != value else f"{value:.0%}"  # NaN: a real host cannot tell
    value = row.get(column, math.nan)
    if value != value:
        return "-"
    return f"{value:.1f}" if column.endswith("/s") else f"{value:.0f}"


def _width(column: str, vm_rows: Sequence[dict]) -> int:
    return max([len(column), *(len(_cell(row, column)) for row in vm_rows)])


def fit_fields(width: int, vm_rows: Sequence[dict],
               wanted: Collection[str] = GROUP_LETTERS) -> frozenset[str]:
    """The wanted groups that fit ``width`` columns, the first of :data:`FIT_ORDER` first."""
    used = max([4, *(len(row["vm"]) for row in vm_rows)])
    chosen: set[str] = set()
    for letter in FIT_ORDER:
        if letter not in wanted:
            continue
        group = next(g for g in FIELD_GROUPS if g.letter == letter)
        extra = sum(_width(c, vm_rows) + _GAP for c in group.columns)
        if used + extra <= width:
            chosen.add(letter)
            used += extra
    return frozenset(chosen)


def _summary_lines(host_row: dict, vm_rows: list[dict]) -> list[Text]:
    """The summary lines of esxtop, one per figure group, each under 80 columns."""
    def total(key: str) -> float:
        return sum(row.get(key, 0.0) for row in vm_rows)

    state = host_row["state"]
    shared, saving = total("SHRD"), total("SHRDSVD")
    zipped = total("ZIPPED")
    return [
        Text(f"PMEM  /MB: {host_row['total_mib']:8.0f} total  {host_row['free_mib']:8.0f} free"),
        Text.assemble(f"VMKMEM/MB: {host_row['minfree_mib']:8.0f} minfree   state ",
                      (state, _STATE_STYLE.get(state, ""))),
        Text(f"PSHARE/MB: {shared:8.0f} shared {shared - saving:8.0f} common "
             f"{saving:8.0f} saving"),
        Text(f"SWAP  /MB: {total('SWCUR'):8.0f} curr   {total('SWTGT'):8.0f} rclmtgt "
             f"{total('SWR/s'):7.1f} r/s {total('SWW/s'):7.1f} w/s"),
        Text(f"ZIP   /MB: {zipped:8.0f} zipped {zipped - total('CACHEUSD'):8.0f} saved"),
        Text(f"MEMCTL/MB: {total('MCTLSZ'):8.0f} curr   {total('MCTLTGT'):8.0f} target "
             f"{total('MCTLMAX'):8.0f} max"),
    ]


def render_top(host_row: dict, vm_rows: list[dict], title: str, total_s: float,
               status: str | None = None, fields: Collection[str] | None = None,
               width: int | None = None) -> Group:
    """The screen for one tick: the host lines and one row per VM (sizes in MiB).

    ``status`` follows the title on the first line; by default, how much of
    ``total_s`` has been simulated. ``fields``: the group letters to show
    (default: those that fit ``width``, or every group without a width).
    """
    if status is None:
        status = f"   simulated {host_row['time_s'] + host_row['tick_s']:.0f} s of {total_s:.0f}"
    head = Text.assemble(("hvmem  ", "bold"), title, status)
    if fields is None:
        fields = GROUP_LETTERS if width is None else fit_fields(width, vm_rows)
    columns = [c for g in FIELD_GROUPS if g.letter in fields for c in g.columns]
    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold reverse")
    name_width = max([4, *(len(row["vm"]) for row in vm_rows)])
    table.add_column("NAME", no_wrap=True, min_width=name_width)
    for column in columns:
        # min_width keeps every header whole; the fit above keeps the sum within the screen.
        table.add_column(column, justify="right", no_wrap=True, min_width=_width(column, vm_rows))
    for row in vm_rows:
        table.add_row(row["vm"], *(_cell(row, c) for c in columns))
    natural = name_width + sum(_width(c, vm_rows) + _GAP for c in columns)
    body = table if width is None or natural <= width else _cropped(table, natural)
    return Group(head, *_summary_lines(host_row, vm_rows), Text(""), body)


def _cropped(table: Table, natural_width: int) -> Group:
    """The table laid out at its full width, each line cut at the screen's edge.

    Chosen columns wider than the screen run off its right edge, as on esxtop,
    rather than every column being squeezed and its header cut.
    """
    console = Console(width=natural_width, color_system="truecolor")
    lines = console.render_lines(table, console.options, pad=False)
    return Group(*(Text.assemble(*((seg.text, seg.style) for seg in line), no_wrap=True,
                                 overflow="crop") for line in lines))


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
        fields: the column groups to show (default: those that fit the terminal).
    """

    def __init__(self, console: Console, title: str, total_s: float = 0.0,
                 status: Callable[[dict], str] | None = None, *, enabled: bool = True,
                 fields: Collection[str] | None = None) -> None:
        self.console = console
        self.title = title
        self.total_s = total_s
        self.status = status
        self.enabled = enabled
        self.fields = fields
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
        screen = render_top(host_row, rows, self.title, self.total_s, status,
                            fields=self.fields, width=self.console.width)
        if self._live is None:
            self._live = Live(screen, console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.start()
        else:
            self._live.update(screen)
