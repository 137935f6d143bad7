"""Same-instant ordering of engine events.

Simulated time is integer nanoseconds, and periodic work lines up often: the
balloon driver poll, the memory scheduler's balance period and the stats sampler
all fire on whole seconds. When two events fall on the same nanosecond the
engine runs them in :class:`Priority` order, lower first; events with equal time
and priority run in the order they were scheduled. The order is part of the
model, not an accident of the heap, so each value says why it sits where it does
(after gem5's ``Stat_Event_Pri`` and friends in ``src/sim/eventq.hh``).

The values are spaced out so that a new kind of work can slot in between two
existing ones without renumbering the rest.
"""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    """Order of events that fall on the same nanosecond; lower runs first."""

    # Device register writes, such as a balloon target, land before anyone reads them.
    DEVICE = 0
    # Guest execution: vCPU quanta run against the device state of this instant.
    VCPU = 50
    # Host background work (memory scheduler, sharing scan, active-memory sampling)
    # reacts to this instant's guest work within the same instant.
    DAEMON = 60
    # Stats sampling sees the state after all work of this instant.
    STATS = 90
    # The run-until boundary fires last, so nothing due at until_ns is left behind.
    STOP = 100
