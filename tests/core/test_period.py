"""Tests of core.period: periodic work checked once a tick, in integer nanoseconds."""

import pytest

from hvmem.core.period import Period


def ticks(period: Period, tick_ns: int, n: int) -> list[int]:
    """The tick starts at which the work ran, starting it whenever it was due."""
    ran = []
    for k in range(n):
        now = k * tick_ns
        if period.due(now):
            period.start(now)
            ran.append(now)
    return ran


def test_due_at_the_first_check():
    """Work starts with the run (or the VM): the first check finds it due."""
    period = Period(60)
    assert period.next_ns is None and period.due(17)
    period.start(17)
    assert period.next_ns == 77 and not period.due(76) and period.due(77)


def test_a_tick_that_divides_the_period_runs_it_exactly_every_period():
    assert ticks(Period(2), 1, 9) == [0, 2, 4, 6, 8]
    assert ticks(Period(15), 5, 10) == [0, 15, 30, 45]


def test_a_tick_as_long_as_the_period_or_longer_runs_it_every_tick():
    assert ticks(Period(2), 2, 4) == [0, 2, 4, 6]
    assert ticks(Period(2), 3, 4) == [0, 3, 6, 9]


def test_otherwise_at_the_first_tick_a_period_after_it_last_ran():
    """Re-armed from when it ran, as a driver re-arms its timer: 0, 16, 32 for 15 s and 2 s."""
    assert ticks(Period(15), 2, 20) == [0, 16, 32]


def test_starting_early_moves_the_next_one():
    """A forced run (the controller's ``force``) starts a new period."""
    period = Period(10)
    period.start(0)
    period.start(4)
    assert not period.due(13) and period.due(14)


@pytest.mark.parametrize(("period_ns", "error"), [(0, ValueError), (-1, ValueError),
                                                  (1.5, TypeError)])
def test_a_period_is_a_positive_integer(period_ns, error):
    with pytest.raises(error):
        Period(period_ns)
