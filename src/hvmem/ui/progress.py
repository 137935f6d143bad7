"""A run's progress as a line on stderr when nobody watches a terminal.

On a terminal ``hvmem run`` shows the esxtop-style screen or a progress bar;
under a scheduler, in CI or behind a pipe neither shows, and a long run would
look hung. :class:`ProgressLine` is the ``on_tick`` callback for that case: at
most every :data:`INTERVAL_S` seconds of wall time (and never more often) it
prints one line::

    hvmem: demo-esx-seed42: 37% (180 of 480 s simulated), 12 s elapsed, about 20 s left

The clock is the caller's (``time.monotonic`` by default), so a test drives it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["INTERVAL_S", "ProgressLine"]

#: Wall-clock seconds between two progress lines.
INTERVAL_S = 10.0


class ProgressLine:
    """Prints ``NAME: P% (S of T s simulated), E s elapsed, about R s left`` now and then.

    Args:
        name: what runs (the results' name).
        total_s: simulated seconds of the whole run.
        stream: where lines go (stderr).
        clock: wall-clock seconds, monotonic.
        interval_s: the least wall time between lines.
    """

    def __init__(self, name: str, total_s: float, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 interval_s: float = INTERVAL_S) -> None:
        self.name = name
        self.total_s = total_s
        self.stream = stream
        self.clock = clock
        self.interval_s = interval_s
        self.start_s = clock()
        self.last_s = self.start_s

    def update(self, done_s: float) -> None:
        """Simulated seconds done so far; prints a line if the interval has passed."""
        now = self.clock()
        if now - self.last_s < self.interval_s:
            return
        self.last_s = now
        elapsed = now - self.start_s
        frac = done_s / self.total_s if self.total_s > 0 else 1.0
        left = f", about {elapsed * (1 - frac) / frac:.0f} s left" if frac > 0 else ""
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"hvmem: {self.name}: {frac:.0%} ({done_s:g} of {self.total_s:g} s simulated), "
              f"{elapsed:.0f} s elapsed{left}", file=stream, flush=True)


def tick_progress(name: str, tick_ns: int, n_ticks: int, *, stream: TextIO | None = None,
                  clock: Callable[[], float] = time.monotonic
                  ) -> Callable[[object], None] | None:
    """A simulation's ``on_tick`` printing a :class:`ProgressLine`, or None on a terminal.

    The callback reads the simulation's ``now_ns``; where stderr is a terminal
    something else shows progress (or the caller chose quiet), so there is none.
    """
    out = stream if stream is not None else sys.stderr
    if stream is None and out.isatty():
        return None
    line = ProgressLine(name, n_ticks * tick_ns / 1e9, stream=out, clock=clock)

    def on_tick(sim: object) -> None:
        line.update((sim.now_ns + tick_ns) / 1e9)  # type: ignore[attr-defined]

    return on_tick
