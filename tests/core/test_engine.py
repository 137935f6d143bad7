"""Tests of the event engine: ordering, periodic events, cancellation, the tick loop."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.core.engine import Engine
from hvmem.core.priority import Priority


@pytest.fixture
def engine() -> Engine:
    return Engine()


@pytest.fixture
def log() -> list:
    return []


def recorder(engine: Engine, log: list, label: object):
    """A callback that appends (now_ns, label) to log."""
    return lambda: log.append((engine.now_ns, label))


# -- priorities -----------------------------------------------------------------


def test_priorities_are_ordered_as_documented():
    assert Priority.DEVICE < Priority.VCPU < Priority.DAEMON < Priority.STATS < Priority.STOP
    assert [int(p) for p in Priority] == [0, 50, 60, 90, 100]


# -- one-shot events ------------------------------------------------------------


def test_new_engine_starts_at_zero_and_empty(engine):
    assert engine.now_ns == 0
    assert engine.peek_ns() is None
    assert engine.step() is False
    assert engine.pending_events == 0


def test_start_ns(log):
    engine = Engine(start_ns=500)
    engine.call_after(10, recorder(engine, log, "a"))
    engine.run(1_000)
    assert log == [(510, "a")]


def test_events_run_in_time_order_and_advance_the_clock(engine, log):
    engine.call_at(30, recorder(engine, log, "c"))
    engine.call_at(10, recorder(engine, log, "a"))
    engine.call_after(20, recorder(engine, log, "b"))
    assert engine.peek_ns() == 10
    engine.run(100)
    assert log == [(10, "a"), (20, "b"), (30, "c")]
    assert engine.now_ns == 100


def test_same_instant_runs_by_priority_then_insertion(engine, log):
    engine.call_at(5, recorder(engine, log, "stats"), Priority.STATS)
    engine.call_at(5, recorder(engine, log, "daemon-1"), Priority.DAEMON)
    engine.call_at(5, recorder(engine, log, "device"), Priority.DEVICE)
    engine.call_at(5, recorder(engine, log, "daemon-2"), Priority.DAEMON)
    engine.call_at(5, recorder(engine, log, "vcpu"), Priority.VCPU)
    engine.run(5)
    assert [label for _, label in log] == ["device", "vcpu", "daemon-1", "daemon-2", "stats"]


def test_default_priority_is_daemon(engine):
    assert engine.call_at(1, lambda: None).priority is Priority.DAEMON


def test_run_includes_events_at_until_and_stops_before_later_ones(engine, log):
    engine.call_at(10, recorder(engine, log, "at-end"), Priority.STOP)
    engine.call_at(11, recorder(engine, log, "later"))
    engine.run(10)
    assert log == [(10, "at-end")]
    assert engine.now_ns == 10
    assert engine.peek_ns() == 11


def test_run_sets_clock_even_without_events(engine):
    engine.run(1_000)
    assert engine.now_ns == 1_000
    engine.run(1_000)  # running to now is allowed and does nothing
    assert engine.now_ns == 1_000


def test_callbacks_may_schedule_events_due_within_the_run(engine, log):
    def first():
        log.append((engine.now_ns, "first"))
        engine.call_after(0, recorder(engine, log, "same-instant"))
        engine.call_after(5, recorder(engine, log, "later"))
        engine.call_after(100, recorder(engine, log, "beyond"))

    engine.call_at(10, first)
    engine.run(50)
    assert log == [(10, "first"), (10, "same-instant"), (15, "later")]
    assert engine.peek_ns() == 110


def test_lower_priority_scheduled_at_now_runs_next(engine, log):
    def daemon():
        log.append("daemon")
        engine.call_after(0, lambda: log.append("device"), Priority.DEVICE)

    engine.call_at(1, daemon, Priority.DAEMON)
    engine.call_at(1, lambda: log.append("stats"), Priority.STATS)
    engine.run(1)
    assert log == ["daemon", "device", "stats"]


def test_step_runs_one_event(engine, log):
    engine.call_at(3, recorder(engine, log, "a"))
    engine.call_at(7, recorder(engine, log, "b"))
    assert engine.step() is True
    assert log == [(3, "a")]
    assert engine.now_ns == 3
    assert engine.step() is True
    assert engine.step() is False
    assert engine.now_ns == 7


def test_step_from_inside_a_callback_is_refused(engine):
    engine.call_at(1, engine.step)
    with pytest.raises(RuntimeError):
        engine.run(1)


def test_exception_in_callback_propagates_and_leaves_engine_usable(engine, log):
    def boom():
        raise KeyError("boom")

    engine.call_at(1, boom)
    engine.call_at(2, recorder(engine, log, "after"))
    with pytest.raises(KeyError):
        engine.run(10)
    assert engine.now_ns == 1
    engine.run(10)
    assert log == [(2, "after")]


# -- errors ---------------------------------------------------------------------


def test_scheduling_in_the_past_is_refused(engine):
    engine.run(100)
    with pytest.raises(ValueError, match="past"):
        engine.call_at(99, lambda: None)
    with pytest.raises(ValueError):
        engine.call_after(-1, lambda: None)
    with pytest.raises(ValueError):
        engine.call_every(10, lambda: None, start_ns=50)
    with pytest.raises(ValueError):
        engine.run(99)


@pytest.mark.parametrize("period_ns", [0, -5])
def test_non_positive_period_is_refused(engine, period_ns):
    with pytest.raises(ValueError, match="period_ns"):
        engine.call_every(period_ns, lambda: None)


def test_non_integer_times_are_refused(engine):
    with pytest.raises(TypeError):
        engine.call_at(1.5, lambda: None)
    with pytest.raises(TypeError):
        engine.run(10.0)


def test_unknown_priority_is_refused(engine):
    with pytest.raises(ValueError):
        engine.call_at(1, lambda: None, priority=7)


def test_numpy_integers_are_accepted(engine, log):
    np = pytest.importorskip("numpy")
    engine.call_at(np.int64(4), recorder(engine, log, "a"))
    engine.run(np.int64(4))
    assert log == [(4, "a")]
    assert type(engine.now_ns) is int


# -- periodic events ------------------------------------------------------------


def test_call_every_fires_one_period_from_now_by_default(engine, log):
    engine.run(5)
    engine.call_every(10, recorder(engine, log, "p"))
    engine.run(40)
    assert [t for t, _ in log] == [15, 25, 35]


def test_call_every_with_start_ns(engine, log):
    engine.call_every(10, recorder(engine, log, "p"), start_ns=0)
    engine.run(20)
    assert [t for t, _ in log] == [0, 10, 20]


def test_periodic_handle_tracks_next_due_time(engine):
    handle = engine.call_every(10, lambda: None)
    engine.run(25)
    assert handle.time_ns == 30
    assert handle.pending
    assert handle.period_ns == 10


def test_periodic_event_can_cancel_itself(engine, log):
    def tick():
        log.append(engine.now_ns)
        if len(log) == 3:
            engine.cancel(handle)

    handle = engine.call_every(7, tick)
    engine.run(1_000)
    assert log == [7, 14, 21]
    assert engine.pending_events == 0


def test_next_occurrence_precedes_what_the_callback_schedules_for_that_instant(engine, log):
    def periodic():
        log.append((engine.now_ns, "periodic"))
        if engine.now_ns == 10:
            engine.call_at(20, recorder(engine, log, "one-shot"))

    engine.call_every(10, periodic)
    engine.run(20)
    assert log == [(10, "periodic"), (20, "periodic"), (20, "one-shot")]


# -- cancellation ---------------------------------------------------------------


def test_cancel_one_shot(engine, log):
    handle = engine.call_at(5, recorder(engine, log, "x"))
    engine.call_at(6, recorder(engine, log, "y"))
    engine.cancel(handle)
    assert handle.cancelled and not handle.pending
    assert engine.pending_events == 1
    assert engine.peek_ns() == 6
    engine.run(10)
    assert log == [(6, "y")]


def test_cancel_is_idempotent_and_ignores_fired_events(engine):
    handle = engine.call_at(1, lambda: None)
    engine.run(1)
    engine.cancel(handle)
    assert not handle.cancelled
    other = engine.call_at(2, lambda: None)
    engine.cancel(other)
    engine.cancel(other)
    assert engine.pending_events == 0


def test_mass_cancellation_keeps_the_heap_consistent(engine, log):
    handles = [engine.call_at(t, recorder(engine, log, t)) for t in range(1, 301)]
    for handle in handles:
        if handle.time_ns % 3:
            engine.cancel(handle)
    assert engine.pending_events == 100
    engine.run(1_000)
    assert [label for _, label in log] == list(range(3, 301, 3))
    assert engine.pending_events == 0


# -- tick loop ------------------------------------------------------------------


def test_run_ticks_order_of_events_and_ticks(engine, log):
    engine.call_every(20, recorder(engine, log, "sample"), Priority.STATS, start_ns=0)
    engine.call_at(15, recorder(engine, log, "mid-tick"))

    def on_tick(tick_start_ns, tick_ns):
        assert engine.now_ns == tick_start_ns
        log.append((tick_start_ns, f"tick+{tick_ns}"))

    engine.run_ticks(10, 40, on_tick)
    assert log == [
        (0, "sample"),
        (0, "tick+10"),
        (10, "tick+10"),
        (15, "mid-tick"),
        (20, "sample"),
        (20, "tick+10"),
        (30, "tick+10"),
        (40, "sample"),  # the final run(until_ns) lets the end-of-run sample see it all
    ]
    assert engine.now_ns == 40


def test_run_ticks_last_tick_is_partial(engine):
    ticks = []
    engine.run_ticks(10, 25, lambda start, length: ticks.append((start, length)))
    assert ticks == [(0, 10), (10, 10), (20, 5)]
    assert engine.now_ns == 25


def test_run_ticks_starts_at_now(engine):
    engine.run(3)
    ticks = []
    engine.run_ticks(10, 23, lambda start, length: ticks.append((start, length)))
    assert ticks == [(3, 10), (13, 10)]


def test_run_ticks_refuses_bad_arguments(engine):
    with pytest.raises(ValueError):
        engine.run_ticks(0, 10, lambda s, n: None)
    engine.run(10)
    with pytest.raises(ValueError):
        engine.run_ticks(1, 5, lambda s, n: None)


def test_on_tick_may_schedule_events(engine, log):
    def on_tick(tick_start_ns, tick_ns):
        engine.call_after(tick_ns // 2, recorder(engine, log, "from-tick"))

    engine.run_ticks(10, 20, on_tick)
    assert log == [(5, "from-tick"), (15, "from-tick")]


# -- properties -----------------------------------------------------------------

_priorities = st.sampled_from(list(Priority))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), _priorities), max_size=40))
def test_events_run_in_time_priority_insertion_order(events):
    engine = Engine()
    ran = []
    for index, (time_ns, priority) in enumerate(events):
        engine.call_at(time_ns, lambda i=index: ran.append(i), priority)
    engine.run(50)
    expected = sorted(range(len(events)), key=lambda i: (events[i][0], events[i][1], i))
    assert ran == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), _priorities), min_size=1, max_size=20),
    st.lists(st.tuples(st.integers(0, 10), _priorities, st.booleans()), max_size=60),
)
def test_each_step_runs_the_smallest_pending_event(initial, spawns):
    """Model check with nesting and cancels: every event that runs is the minimum
    (time, priority, seq) among events pending at that moment."""
    engine = Engine()
    pending: dict[int, tuple[int, int, int]] = {}  # seq -> key
    handles = {}
    spawn_plan = iter(spawns)
    ran = []

    def schedule(time_ns, priority):
        handle = engine.call_at(time_ns, lambda: fire(handle), priority)
        pending[handle.seq] = (handle.time_ns, int(handle.priority), handle.seq)
        handles[handle.seq] = handle

    def fire(handle):
        key = (engine.now_ns, int(handle.priority), handle.seq)
        assert key == min(pending.values())
        del pending[handle.seq]
        ran.append(key)
        spawn = next(spawn_plan, None)
        if spawn is None:
            return
        delay_ns, priority, cancel_one = spawn
        schedule(engine.now_ns + delay_ns, priority)
        if cancel_one and pending:
            victim = max(pending)  # the most recently scheduled pending event
            engine.cancel(handles[victim])
            del pending[victim]

    for time_ns, priority in initial:
        schedule(time_ns, priority)
    engine.run(10_000)
    assert not pending
    assert ran == sorted(ran, key=lambda key: (key[0],))  # time never goes backward
    assert engine.pending_events == 0
