"""The event engine: the simulated clock and the heap of coarse, periodic work.

What it is. A SimPy-like discrete-event core cut down to one heap of
``(time_ns, priority, seq, handle)`` entries. :meth:`Engine.step` pops the
smallest entry, moves the clock to its time and calls its callback;
:meth:`Engine.run` steps until the next entry lies beyond ``until_ns``. Ties are
broken deterministically: first by :class:`~hvmem.core.priority.Priority` (lower
first), then by ``seq``, a counter that grows with every scheduling call, so
events of equal time and priority run in the order they were scheduled. Nothing
else takes part in the order (no object identity, no set or dict order, no wall
clock), so the same calls always give the same run.

What is an event and what is not. Memory references are NOT events: a simulated
second holds millions of them, and a heap push per reference would cost more
than the model itself. A vCPU quantum or a workload tick runs a tight loop (a
Numba kernel) over a batch of references and adds up their cost. Coarse periodic
work IS an event: the balloon driver poll, the memory scheduler's balance
period, the sharing scanner, active-memory sampling, the stats sampler, the
policy controller. A simulated minute is a few hundred events, not billions.

The tick loop. :meth:`Engine.run_ticks` drives workloads in fixed steps of
simulated time while the periodic work stays on the heap::

          t (a tick start)                       t + tick_ns (the next)
    ──────┬──────────────────────────────────────┬─────────────────────
          │ 1. run(t): every event due <= t,     │ 1. run(t + tick_ns)
          │    in (time, priority, seq) order    │ 2. on_tick(t + tick_ns, ...)
          │ 2. on_tick(t, tick_ns): workloads    │
          │    advance over [t, t + tick_ns)     │

so a sampler due at ``t`` sees the state after the tick that ended at ``t``, and
a balloon target written at ``t`` is in place before the guests run from ``t``.
An event that falls strictly inside a tick runs at the start of the next tick,
just before its ``on_tick``: the tick is the resolution at which workloads and
daemons interact. After the last tick, ``run(until_ns)`` runs what is due at the
end, so a final sample sees the whole run.

Periodic events. :meth:`Engine.call_every` keeps one handle for the whole
series. The next occurrence is scheduled just before the callback is called
(at ``time_ns + period_ns``, so periods never drift), which gives it a lower
``seq`` than anything the callback itself schedules for the same instant, and
lets the callback stop the series by cancelling its own handle. Callbacks take
no arguments: a component passes a bound method and reads ``engine.now_ns``.

Cancellation is lazy: :meth:`Engine.cancel` marks the handle and the heap drops
the entry when it reaches the top (or when dead entries outnumber live ones).

Errors. Scheduling in the past, a non-positive period or tick, and running the
clock backwards raise :class:`ValueError`; a time that is not an integer raises
:class:`TypeError`. These are bugs in the calling code, not user input: times a
user writes ("15s") are parsed and checked at the configuration boundary
(:func:`hvmem.units.parse_time_ns`, scenario loading), which raises
:class:`~hvmem.errors.ConfigError` naming the field. The engine never sees raw
configuration. Exceptions raised by a callback propagate out of ``step``/``run``
with the engine left consistent (the event consumed, the clock at its time).

Invariants:

* ``now_ns`` never decreases;
* every live heap entry has ``time_ns >= now_ns``;
* a pending handle has exactly one entry in the heap; a periodic handle stays
  pending until cancelled.

Extension point: the clock only moves in :meth:`Engine._advance_to`, so a
wall-clock-paced engine for the QEMU controller can subclass :class:`Engine` and
override that one method (SimPy's ``RealtimeEnvironment`` idea). This module
itself never reads the wall clock and never prints.

References: SimPy 4 ``core.py`` (heap of (time, priority, eid, event)); gem5
``src/sim/eventq.hh`` (named same-tick priorities).
"""

from __future__ import annotations

import heapq
import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass

from hvmem.core.priority import Priority

__all__ = ["Callback", "Engine", "EventHandle", "TickCallback"]

#: An event callback: takes nothing, returns nothing; reads ``engine.now_ns`` if needed.
Callback = Callable[[], None]
#: A tick callback: ``on_tick(tick_start_ns, tick_ns)``.
TickCallback = Callable[[int, int], None]

# Rebuild the heap once dead (cancelled) entries outnumber live ones, and it is
# big enough for the rebuild to matter; keeps mass cancellation O(n log n).
_COMPACT_MIN_ENTRIES = 64


@dataclass(eq=False, slots=True)
class EventHandle:
    """A scheduled event, as returned by the ``call_*`` methods; pass it to ``cancel``.

    The engine owns the fields; callers only read them.

    Attributes:
        time_ns: when the event is (next) due, in simulated nanoseconds.
        priority: its same-instant order.
        seq: tie-breaker among equal (time, priority); grows with every scheduling.
        callback: what runs.
        period_ns: the period of a periodic event; ``None`` for a one-shot event.
        pending: True while the event is scheduled to run again.
        cancelled: True once ``Engine.cancel`` was called on a pending event.
    """

    time_ns: int
    priority: Priority
    seq: int
    callback: Callback
    period_ns: int | None = None
    pending: bool = True
    cancelled: bool = False


# A heap entry; ``seq`` is unique, so tuples never compare their handles.
_Entry = tuple[int, int, int, EventHandle]


class Engine:
    """Simulated clock plus a heap of timed callbacks with deterministic tie-breaking.

    Args:
        start_ns: the initial value of the clock, in nanoseconds.
    """

    def __init__(self, start_ns: int = 0) -> None:
        start_ns = operator.index(start_ns)
        if start_ns < 0:
            raise ValueError(f"start_ns must be >= 0, got {start_ns}")
        self._now_ns = start_ns
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._dead_entries = 0
        self._in_callback = False

    @property
    def now_ns(self) -> int:
        """The simulated time in nanoseconds; moves only forward."""
        return self._now_ns

    @property
    def pending_events(self) -> int:
        """How many events are scheduled (cancelled ones not counted)."""
        return len(self._heap) - self._dead_entries

    # -- scheduling ---------------------------------------------------------------

    def call_at(
        self, time_ns: int, callback: Callback, priority: Priority = Priority.DAEMON
    ) -> EventHandle:
        """Schedule ``callback()`` at an absolute time.

        Args:
            time_ns: when to run, in nanoseconds; ``now_ns`` itself is allowed.
            callback: called with no arguments.
            priority: the order among events due on the same nanosecond.

        Returns:
            The handle, for :meth:`cancel`.

        Raises:
            ValueError: ``time_ns`` is in the past, or ``priority`` is not a Priority.
            TypeError: ``time_ns`` is not an integer.
        """
        time_ns = self._check_time(time_ns, "time_ns")
        handle = EventHandle(time_ns, Priority(priority), -1, callback)
        self._push(handle, time_ns)
        return handle

    def call_after(
        self, delay_ns: int, callback: Callback, priority: Priority = Priority.DAEMON
    ) -> EventHandle:
        """Schedule ``callback()`` after a delay from now.

        Args:
            delay_ns: how long from ``now_ns``, in nanoseconds; 0 means this instant.
            callback: called with no arguments.
            priority: the order among events due on the same nanosecond.

        Returns:
            The handle, for :meth:`cancel`.

        Raises:
            ValueError: ``delay_ns`` is negative.
            TypeError: ``delay_ns`` is not an integer.
        """
        delay_ns = operator.index(delay_ns)
        if delay_ns < 0:
            raise ValueError(f"delay_ns must be >= 0, got {delay_ns}")
        return self.call_at(self._now_ns + delay_ns, callback, priority)

    def call_every(
        self,
        period_ns: int,
        callback: Callback,
        priority: Priority = Priority.DAEMON,
        start_ns: int | None = None,
    ) -> EventHandle:
        """Schedule ``callback()`` every ``period_ns``, until the handle is cancelled.

        Occurrences fall at ``start_ns + k * period_ns`` exactly (no drift). The
        callback may cancel its own handle to end the series.

        Args:
            period_ns: the period in nanoseconds; must be positive.
            callback: called with no arguments at every occurrence.
            priority: the order among events due on the same nanosecond.
            start_ns: the first occurrence; default ``now_ns + period_ns`` (one
                period from now, as a timer would); pass ``now_ns`` to start at once.

        Returns:
            One handle for the whole series.

        Raises:
            ValueError: the period is not positive or ``start_ns`` is in the past.
            TypeError: ``period_ns`` or ``start_ns`` is not an integer.
        """
        period_ns = operator.index(period_ns)
        if period_ns <= 0:
            raise ValueError(f"period_ns must be positive, got {period_ns}")
        if start_ns is None:
            start_ns = self._now_ns + period_ns
        start_ns = self._check_time(start_ns, "start_ns")
        handle = EventHandle(start_ns, Priority(priority), -1, callback, period_ns=period_ns)
        self._push(handle, start_ns)
        return handle

    def cancel(self, handle: EventHandle) -> None:
        """Stop a scheduled event (or a periodic series) from running again.

        Cancelling an event that already ran, or was already cancelled, does nothing.

        Args:
            handle: as returned by one of the ``call_*`` methods of this engine.
        """
        if not handle.pending:
            return
        handle.pending = False
        handle.cancelled = True
        # Its one heap entry is now dead; it is dropped when it surfaces.
        self._dead_entries += 1
        if self._dead_entries * 2 > len(self._heap) >= _COMPACT_MIN_ENTRIES:
            self._heap = [entry for entry in self._heap if not entry[3].cancelled]
            heapq.heapify(self._heap)
            self._dead_entries = 0

    # -- running ------------------------------------------------------------------

    def peek_ns(self) -> int | None:
        """Return when the next event is due, in nanoseconds, or ``None`` if none is."""
        self._drop_dead_top()
        return self._heap[0][0] if self._heap else None

    def step(self) -> bool:
        """Run the next event: advance the clock to its time and call its callback.

        Returns:
            True if an event ran; False if none was scheduled.

        Raises:
            RuntimeError: called from inside an event callback.
        """
        if self._in_callback:
            raise RuntimeError("Engine.step() called from inside an event callback")
        self._drop_dead_top()
        if not self._heap:
            return False
        time_ns, _priority, _seq, handle = heapq.heappop(self._heap)
        self._advance_to(time_ns)
        if handle.period_ns is None:
            handle.pending = False
        else:
            # Re-arm before the call, so the callback can cancel the series and the
            # next occurrence precedes what the callback schedules for that instant.
            self._push(handle, time_ns + handle.period_ns)
        self._in_callback = True
        try:
            handle.callback()
        finally:
            self._in_callback = False
        return True

    def run(self, until_ns: int) -> None:
        """Run every event due at or before ``until_ns``, then set the clock to it.

        Events that callbacks schedule on the way run too if they are due by
        ``until_ns``; all priorities at ``until_ns`` itself run (``Priority.STOP``
        is the boundary).

        Args:
            until_ns: the time to run to, in nanoseconds; not before ``now_ns``.

        Raises:
            ValueError: ``until_ns`` is before ``now_ns``.
            TypeError: ``until_ns`` is not an integer.
        """
        until_ns = self._check_time(until_ns, "until_ns")
        while (next_ns := self.peek_ns()) is not None and next_ns <= until_ns:
            self.step()
        self._advance_to(until_ns)

    def run_ticks(self, tick_ns: int, until_ns: int, on_tick: TickCallback) -> None:
        """Advance to ``until_ns`` in ticks, interleaving heap events and ``on_tick``.

        For each tick start ``t`` (``now_ns``, ``now_ns + tick_ns``, ... below
        ``until_ns``), in this order:

        1. ``run(t)``: every event due at or before ``t``, all priorities;
        2. ``on_tick(t, length_ns)``: the caller advances its workloads over
           ``[t, t + length_ns)``, with ``now_ns == t``. ``length_ns`` is
           ``tick_ns`` except for a final partial tick that ends at ``until_ns``.

        Finally ``run(until_ns)``: what is due at the end runs too. ``on_tick`` may
        schedule events but must not run the engine itself.

        Args:
            tick_ns: the tick length in nanoseconds; must be positive.
            until_ns: the end of the run, in nanoseconds; not before ``now_ns``.
            on_tick: called once per tick as ``on_tick(tick_start_ns, tick_ns)``.

        Raises:
            ValueError: ``tick_ns`` is not positive or ``until_ns`` is in the past.
            TypeError: ``tick_ns`` or ``until_ns`` is not an integer.
        """
        tick_ns = operator.index(tick_ns)
        if tick_ns <= 0:
            raise ValueError(f"tick_ns must be positive, got {tick_ns}")
        until_ns = self._check_time(until_ns, "until_ns")
        tick_start_ns = self._now_ns
        while tick_start_ns < until_ns:
            self.run(tick_start_ns)
            length_ns = min(tick_ns, until_ns - tick_start_ns)
            on_tick(tick_start_ns, length_ns)
            tick_start_ns += length_ns
        self.run(until_ns)

    # -- internals ----------------------------------------------------------------

    def _advance_to(self, time_ns: int) -> None:
        """Move the clock forward to ``time_ns``; the only place the clock moves."""
        self._now_ns = time_ns

    def _check_time(self, time_ns: int, what: str) -> int:
        time_ns = operator.index(time_ns)
        if time_ns < self._now_ns:
            raise ValueError(f"{what}={time_ns} is in the past (now_ns={self._now_ns})")
        return time_ns

    def _push(self, handle: EventHandle, time_ns: int) -> None:
        handle.time_ns = time_ns
        handle.seq = next(self._seq)
        heapq.heappush(self._heap, (time_ns, int(handle.priority), handle.seq, handle))

    def _drop_dead_top(self) -> None:
        while self._heap and self._heap[0][3].cancelled:
            heapq.heappop(self._heap)
            self._dead_entries -= 1
