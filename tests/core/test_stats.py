"""Tests of stats: counters (tallies), levels (time-weighted) and groups."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvmem.core.stats import Counter, Level, StatsGroup


@pytest.fixture
def host() -> StatsGroup:
    group = StatsGroup("host", "the simulated host")
    faults = group.group("faults", "page faults handled by the hypervisor")
    faults.counter("minor", "faults served by zero-fill", "count")
    faults.counter("major", "faults served from swap", "count")
    group.level("free_pages", "machine pages on the free list", "pages", initial=100)
    return group


# -- counters -------------------------------------------------------------------


def test_counter_counts():
    counter = Counter("faults", "faults taken", "count")
    assert counter.value == 0
    counter.add()
    counter.add(4)
    counter.add(np.int64(5))
    assert counter.value == 10
    assert type(counter.value) is int
    counter.reset()
    assert counter.value == 0


def test_counter_refuses_negative_and_fractional_counts():
    counter = Counter("faults", "faults taken", "count")
    with pytest.raises(ValueError):
        counter.add(-1)
    with pytest.raises(TypeError):
        counter.add(1.5)


def test_stats_need_a_description_and_a_unit():
    with pytest.raises(ValueError, match="description"):
        Counter("faults", "", "count")
    with pytest.raises(ValueError, match="unit"):
        Level("free", "free pages", "")


@pytest.mark.parametrize("name", ["", "a.b", "has space", "-lead"])
def test_names_are_single_segments(name):
    with pytest.raises(ValueError):
        Counter(name, "x", "count")


# -- levels ---------------------------------------------------------------------


def test_level_time_average_is_time_weighted():
    level = Level("free", "free pages", "pages", initial=1000)
    level.set(0, now_ns=9)  # 1000 for 9 ns
    # then 0 for 1 ns, whatever the number of updates
    level.set(0, now_ns=9)
    level.set(0, now_ns=10)
    assert level.time_average(10) == pytest.approx(900.0)
    assert level.value == 0
    assert level.minimum == 0
    assert level.maximum == 1000


def test_level_average_extends_the_current_value_to_now():
    level = Level("balloon", "balloon size", "pages", start_ns=100)
    level.set(50, now_ns=100)
    assert level.time_average(100) == 50  # empty window: the current value
    assert level.time_average(200) == 50
    level.set(150, now_ns=200)
    assert level.time_average(300) == pytest.approx(100.0)


def test_level_extremes_include_zero_duration_values():
    level = Level("free", "free pages", "pages", initial=10)
    level.set(3, now_ns=5)
    level.set(7, now_ns=5)
    assert (level.minimum, level.maximum) == (3, 10)


def test_level_refuses_time_going_backward():
    level = Level("free", "free pages", "pages")
    level.set(1, now_ns=10)
    with pytest.raises(ValueError, match="backward"):
        level.set(2, now_ns=9)
    with pytest.raises(ValueError):
        level.time_average(9)


def test_level_reset_starts_a_new_window_and_keeps_the_value():
    level = Level("free", "free pages", "pages", initial=10)
    level.set(20, now_ns=10)
    level.reset(now_ns=30)
    assert level.value == 20
    assert (level.minimum, level.maximum) == (20, 20)
    level.set(40, now_ns=40)
    assert level.time_average(50) == pytest.approx(30.0)


@given(
    st.floats(-1e6, 1e6),
    st.lists(st.tuples(st.integers(0, 1000), st.floats(-1e6, 1e6)), max_size=30),
    st.integers(0, 1000),
)
def test_level_average_lies_between_extremes(initial, changes, tail_ns):
    level = Level("x", "a quantity", "units", initial=initial)
    now_ns = 0
    for gap_ns, value in changes:
        now_ns += gap_ns
        level.set(value, now_ns)
    average = level.time_average(now_ns + tail_ns)
    tolerance = 1e-9 * max(1.0, abs(level.minimum), abs(level.maximum))
    assert level.minimum - tolerance <= average <= level.maximum + tolerance
    assert level.minimum <= level.value <= level.maximum


# -- groups ---------------------------------------------------------------------


def test_snapshot_uses_dotted_paths_in_registration_order(host):
    host.get("faults.minor").add(3)
    host.get("free_pages").set(42, now_ns=5)
    snapshot = host.snapshot()
    assert snapshot == {"faults.minor": 3.0, "faults.major": 0.0, "free_pages": 42.0}
    assert list(snapshot) == ["faults.minor", "faults.major", "free_pages"]
    assert all(type(value) is float for value in snapshot.values())


def test_walk_gives_stats_with_descriptions_and_units(host):
    described = {path: (stat.description, stat.unit) for path, stat in host.walk()}
    assert described["faults.major"] == ("faults served from swap", "count")
    assert described["free_pages"] == ("machine pages on the free list", "pages")


def test_attach_a_components_own_group(host):
    tlb = StatsGroup("tlb", "translation lookaside buffer")
    tlb.counter("misses", "lookups that missed", "count").add(2)
    assert host.attach(tlb) is tlb
    assert host.snapshot()["tlb.misses"] == 2.0
    assert host.get("tlb") is tlb


def test_duplicate_names_are_refused(host):
    with pytest.raises(ValueError, match="already"):
        host.counter("free_pages", "again", "count")
    with pytest.raises(ValueError, match="already"):
        host.attach(StatsGroup("faults", "another faults group"))


def test_get_unknown_path_raises_key_error(host):
    with pytest.raises(KeyError):
        host.get("faults.nope")
    with pytest.raises(KeyError):
        host.get("free_pages.deeper")


def test_group_reset(host):
    host.get("faults.minor").add(5)
    free = host.get("free_pages")
    free.set(10, now_ns=10)
    host.reset(now_ns=20)
    assert host.snapshot() == {"faults.minor": 0.0, "faults.major": 0.0, "free_pages": 10.0}
    assert free.time_average(20) == 10.0
    assert (free.minimum, free.maximum) == (10, 10)


def test_counter_default_unit_is_count():
    group = StatsGroup("g", "a group")
    assert group.counter("hits", "hits").unit == "count"
