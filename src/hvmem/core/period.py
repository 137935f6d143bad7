"""Periodic work on the simulated clock: one small integer-nanosecond timer.

The simulation advances in ticks (``scenario.tick_ns``, 1 s by default) and
runs each tick's work in one fixed order (``sim.py``): workloads, balloon
drivers, the swapper, sampling, sharing, the host state, the policy, the rows.
Some of that work recurs on a period of its own, and checks a :class:`Period`
once a tick, at its place in that order::

    balloon driver poll        1 s   guest/balloon_driver.py  POLL_PERIOD_NS [OSDI02 §3.2]
    free page reporting        2 s   guest/balloon_driver.py  REPORT_PERIOD_NS
    active-memory sampling    60 s   hypervisor/sampling.py   SAMPLE_PERIOD_NS [VS4-ATTR]
    balance period            15 s   policy/controller.py     [policy] balance_period

A period is due at its first check (the work starts with the run, or with the
VM), and then once ``period_ns`` has passed since it last started: it is
re-armed from the time it ran, as a driver re-arms its timer when its work is
done (vmw_balloon's delayed work, free page reporting's delay). With a tick
that divides the period (1 s ticks: every shipped scenario) the work runs
exactly every ``period_ns``; with a tick as long as the period or longer, every
tick; otherwise at the first tick at least a period after it last ran.

Why no event heap. A heap of (time, priority, seq, callback), as SimPy's core
keeps, would have to rebuild the tick's fixed order out of priorities, and
would add nothing the tick loop lacks: nothing in the model happens between
two ticks. The order stays where it is read, in ``Simulation._tick``.

Times are integers, so "a period has passed" is exact: no float epsilon. A
caller whose clock is in seconds (the policy controller, which also runs on a
real host's wall clock) rounds to whole nanoseconds once, at its boundary.
"""

from __future__ import annotations

import operator


class Period:
    """Work due every ``period_ns`` of simulated time, checked when the caller chooses.

    Args:
        period_ns: the period in nanoseconds; positive.

    Attributes:
        next_ns: when the work is next due; None until it first starts.

    Raises:
        ValueError: a period that is not positive.
        TypeError: a period that is not an integer.
    """

    __slots__ = ("next_ns", "period_ns")

    def __init__(self, period_ns: int) -> None:
        period_ns = operator.index(period_ns)
        if period_ns <= 0:
            raise ValueError(f"period_ns must be positive, found {period_ns}")
        self.period_ns = period_ns
        self.next_ns: int | None = None

    def due(self, now_ns: int) -> bool:
        """Whether the work should start at ``now_ns``: it never has, or a period has passed."""
        return self.next_ns is None or now_ns >= self.next_ns

    def start(self, now_ns: int) -> None:
        """The work starts (runs) at ``now_ns``: it is due again one period later."""
        self.next_ns = now_ns + self.period_ns
