"""``hvmem top RESULTS``: a results directory replayed on the esxtop-style screen.

The screen is the live view's (``ui/top.py``), fed one recorded tick at a time
instead of by a running simulation, so a run can be watched again, paused and
stepped through, simulated or real alike. The keys:

    space   pause or play (at the end: play again from the start)
    left    one tick back (and pause)      right   one tick on (and pause)
    + / -   faster / slower (simulated seconds per second of replay)
    A-G     show or hide a column group (``ui/top.py`` FIELD_GROUPS), as
            esxtop's field screen (``f``) does
    q       quit

How it is built: :class:`ReplayState` is the whole state of a replay (which
tick, playing or paused, how fast, which columns) and changes only through
:meth:`ReplayState.press` (one key) and :meth:`ReplayState.advance` (wall
time passing), so a test drives it with key names and a clock of its own.
:func:`replay` is the loop that ties it to a terminal: it reads keys through
a ``keys(timeout_s)`` callable and redraws with Rich ``Live``;
:class:`TerminalKeys` is that callable on a real terminal (cbreak mode, arrow
keys decoded from their escape sequences by :func:`parse_keys`).

Without a terminal (a pipe, a file), ``hvmem top`` prints one screen, the last
tick's or that of ``--at``, and ends.
"""

from __future__ import annotations

import bisect
import os
import select
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from hvmem.errors import ConfigError
from hvmem.ui.exits import user_errors
from hvmem.ui.top import FIELD_GROUPS, GROUP_LETTERS, fit_fields, parse_fields, render_top

#: Replay speeds, simulated seconds per second of replay; + and - move along them.
SPEEDS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0)
#: A replay started without --speed takes about this long from end to end.
DEFAULT_REPLAY_S = 30.0
#: How often the loop looks at the keyboard and redraws.
FRAME_S = 0.1
HELP = "space pause  \u2190/\u2192 step  +/- speed  A-G columns  q quit"

Tick = tuple[dict, list[dict]]


def ticks_of(host_rows: Sequence[dict], vm_rows: Sequence[dict]) -> list[Tick]:
    """Each host row with the VM rows of its tick, in time order."""
    by_time: dict[float, list[dict]] = {}
    for row in vm_rows:
        by_time.setdefault(row["time_s"], []).append(row)
    return [(host, by_time.get(host["time_s"], [])) for host in host_rows]


def default_speed(total_s: float) -> float:
    """The slowest speed that replays ``total_s`` within about :data:`DEFAULT_REPLAY_S`."""
    return next((s for s in SPEEDS if total_s / s <= DEFAULT_REPLAY_S), SPEEDS[-1])


@dataclass
class ReplayState:
    """Where a replay is and how it goes on.

    Attributes:
        n_ticks: recorded ticks; ``index`` runs from 0 to ``n_ticks - 1``.
        tick_s: simulated seconds per tick.
        speed: simulated seconds per second of replay.
        fields: the column groups chosen (None: those that fit the terminal).
        playing: False while paused; a replay pauses on its last tick.
        done: True once ``q`` was pressed.
    """

    n_ticks: int
    tick_s: float
    speed: float = 1.0
    index: int = 0
    playing: bool = True
    fields: frozenset[str] | None = None
    done: bool = False
    _owed_s: float = 0.0

    def press(self, key: str, shown: frozenset[str] = frozenset(GROUP_LETTERS)) -> None:
        """Act on one key (a character, or ``left``/``right``); others are ignored.

        ``shown``: the groups on screen now, which a letter toggles when no
        groups have been chosen yet (the screen shows those that fit).
        """
        if key == " ":
            if not self.playing and self.index == self.n_ticks - 1:
                self.index = 0  # at the end, space plays the run again
            self.playing = not self.playing
            self._owed_s = 0.0
        elif key in ("left", "right"):
            self.playing = False
            step = -1 if key == "left" else 1
            self.index = min(max(self.index + step, 0), self.n_ticks - 1)
        elif key in ("+", "="):  # = is + without shift
            self.speed = next((s for s in SPEEDS if s > self.speed), self.speed)
        elif key in ("-", "_"):
            self.speed = next((s for s in reversed(SPEEDS) if s < self.speed), self.speed)
        elif key in ("q", "Q"):
            self.done = True
        elif key.upper() in GROUP_LETTERS and len(key) == 1:
            current = self.fields if self.fields is not None else shown
            self.fields = current ^ {key.upper()}

    def advance(self, wall_s: float) -> None:
        """Let ``wall_s`` seconds of replay pass: move on as many ticks as the speed makes."""
        if not self.playing:
            return
        self._owed_s += wall_s * self.speed
        steps = int(self._owed_s / self.tick_s)
        if steps:
            self._owed_s -= steps * self.tick_s
            self.index = min(self.index + steps, self.n_ticks - 1)
        if self.index == self.n_ticks - 1:
            self.playing = False


def parse_keys(data: str) -> list[str]:
    """Key names from what a terminal in cbreak mode sent: arrows become ``left``/``right``."""
    arrows = {"\x1b[C": "right", "\x1b[D": "left", "\x1bOC": "right", "\x1bOD": "left"}
    keys, i = [], 0
    while i < len(data):
        if data[i] == "\x1b":
            seq = data[i:i + 3]
            if seq in arrows:
                keys.append(arrows[seq])
            i += 3 if seq[1:2] in ("[", "O") else 1  # other escapes (up, down, Esc) are dropped
            continue
        keys.append(data[i])
        i += 1
    return keys


class TerminalKeys:
    """Keys from the terminal, without echo or line buffering, while in use.

    A context manager: the terminal's settings come back on exit, however the
    replay ends. Calling it waits up to ``timeout_s`` for keys and returns them.
    """

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stdin
        self._saved = None

    def __enter__(self) -> TerminalKeys:
        import termios
        import tty

        fd = self.stream.fileno()
        self._saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)
        return self

    def __exit__(self, *exc_info: object) -> None:
        import termios

        if self._saved is not None:
            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved)
            self._saved = None

    def __call__(self, timeout_s: float) -> list[str]:
        """The keys pressed within ``timeout_s`` (none: an empty list)."""
        fd = self.stream.fileno()
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            return []
        return parse_keys(os.read(fd, 64).decode(errors="replace"))


def screen(ticks: Sequence[Tick], state: ReplayState, title: str, width: int,
           interactive: bool = True) -> Group:
    """The esxtop-style screen of the state's tick; ``interactive``: with the replay's keys."""
    host, rows = ticks[state.index]
    at_s = host["time_s"] + host["tick_s"]
    total_s = ticks[-1][0]["time_s"] + ticks[-1][0]["tick_s"]
    status = f"   {at_s:.0f} s of {total_s:.0f}"
    fields = state.fields if state.fields is not None else fit_fields(width, rows)
    top = render_top(host, rows, title, total_s, status, fields=fields, width=width)
    if not interactive:
        return top
    mode = "playing" if state.playing else "paused"
    return Group(top, Text(f"{mode} {state.speed:g}x   {HELP}", style="dim"))


def replay(console: Console, ticks: Sequence[Tick], title: str, state: ReplayState,
           keys: Callable[[float], list[str]], clock: Callable[[], float] = time.monotonic,
           frame_s: float = FRAME_S) -> ReplayState:
    """Play ``ticks`` on ``console`` until ``q``; the last screen stays. Returns the state."""
    def shown() -> frozenset[str]:
        if state.fields is not None:
            return state.fields
        return fit_fields(console.width, ticks[state.index][1])

    with Live(screen(ticks, state, title, console.width), console=console,
              auto_refresh=False, transient=False) as live:
        last = clock()
        while not state.done:
            for key in keys(frame_s):
                state.press(key, shown())
            now = clock()
            state.advance(now - last)
            last = now
            live.update(screen(ticks, state, title, console.width), refresh=True)
    return state


@user_errors
def top_command(
    results_dir: Annotated[Path, typer.Argument(
        help="A results directory (hvmem run --out, hvmem qemu control --out).")],
    fields: Annotated[str | None, typer.Option(
        help="Column groups by letter or name (ACD, size,memctl,swap): "
             + ", ".join(f"{g.letter} {g.name.lower()}" for g in FIELD_GROUPS)
             + ". Default: those that fit the terminal.")] = None,
    speed: Annotated[float | None, typer.Option(
        help="Simulated seconds per second of replay (default: the whole run in about 30 s).")
    ] = None,
    at: Annotated[float | None, typer.Option(
        help="Start at this simulated second (without a terminal: the one screen printed).")
    ] = None,
) -> None:
    """Replay a results directory on the esxtop-style memory screen.

    Keys: space pauses, the left and right arrows step a tick, + and - change
    the speed, A-G show or hide column groups, q quits. Without a terminal, the
    screen of the last tick (or of --at) is printed once.
    """
    from hvmem.results import read_results

    chosen = parse_fields(fields) if fields is not None else None
    if speed is not None and not (speed > 0 and speed < float("inf")):
        raise ConfigError(f"--speed {speed}: expected a positive number of seconds per second")
    results = read_results(results_dir)
    ticks = ticks_of(results.host.to_pylist(), results.vms.to_pylist())
    if not ticks:
        raise ConfigError(f"{results_dir}: the results directory holds no ticks")
    total_s = ticks[-1][0]["time_s"] + ticks[-1][0]["tick_s"]
    # A real host's ticks are about, not exactly, its interval apart: play at their mean.
    tick_s = total_s / len(ticks)
    index = len(ticks) - 1
    if at is not None:
        if not 0 <= at <= total_s:
            raise ConfigError(f"--at {at}: outside the run (0 to {total_s:g} s)")
        index = max(bisect.bisect_right([host["time_s"] for host, _ in ticks], at) - 1, 0)
    title = f"{results.summary.get('scenario', results_dir.name)}  replay"
    console = Console(highlight=False, soft_wrap=False)
    if not (console.is_terminal and sys.stdin.isatty()):
        state = ReplayState(len(ticks), tick_s, index=index, playing=False, fields=chosen)
        console.print(screen(ticks, state, title, console.width, interactive=False))
        return
    state = ReplayState(len(ticks), tick_s, speed=speed or default_speed(total_s),
                        index=index if at is not None else 0, fields=chosen)
    with TerminalKeys() as keys:
        replay(console, ticks, title, state, keys)
