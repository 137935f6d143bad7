"""The host memory state tracker at its exact entry and exit levels, per state and profile.

Each state is entered when free memory is *below* its threshold and left upward
when free memory *exceeds* its exit level (policy/state_tracker.py). Here every state
of every profile is fed free memory exactly at those levels and one float step
either side of them (``math.nextafter``), so that turning any ``<`` into ``<=``
or ``>`` into ``>=`` (or moving a level) fails a test. The levels themselves are
worked out by hand for a 4 GiB host:

* esx4: 6/4/2/1 % of 4096 MiB;
* esxi5, esxi6: minFree = 6 % of the first 4 GiB = 245.76 MiB, levels
  100/64/32/16 % of it, and esxi6's HIGH at 400 % of it;
* exit levels 5 % above the state's own threshold (esxi5, esxi6) or the
  threshold of the state above it (esx4).
"""

from __future__ import annotations

import math

import pytest

from hvmem.policy.minfree import thresholds
from hvmem.policy.state_tracker import StateTracker, classify, large_page_breaking
from hvmem.policy.states import ExitRule, MemState

HIGH, CLEAR, SOFT, HARD, LOW = MemState
HOST_MIB = 4096
MARGIN = 0.05

#: Entry thresholds by hand (MiB) for a 4096 MiB host.
LEVELS = {
    "esx4": {HIGH: 245.76, SOFT: 163.84, HARD: 81.92, LOW: 40.96},
    "esxi5": {HIGH: 245.76, SOFT: 157.2864, HARD: 78.6432, LOW: 39.3216},
    "esxi6": {HIGH: 983.04, CLEAR: 245.76, SOFT: 157.2864, HARD: 78.6432, LOW: 39.3216},
}
#: Exit levels by hand under each profile's default rule and a 5 % margin.
EXITS = {
    # next: 1.05 x the threshold of the state above
    "esx4": {SOFT: 258.048, HARD: 172.032, LOW: 86.016},
    # own: 1.05 x the state's own threshold
    "esxi5": {SOFT: 165.15072, HARD: 82.57536, LOW: 41.28768},
    "esxi6": {CLEAR: 258.048, SOFT: 165.15072, HARD: 82.57536, LOW: 41.28768},
}
DEFAULT_RULE = {"esx4": ExitRule.NEXT, "esxi5": ExitRule.OWN, "esxi6": ExitRule.OWN}


def below(x: float) -> float:
    return math.nextafter(x, -math.inf)


def above(x: float) -> float:
    return math.nextafter(x, math.inf)


def states_of(profile: str) -> list[MemState]:
    return list(LEVELS[profile])


def above_state(profile: str, state: MemState) -> MemState:
    """The state just above ``state`` in the profile (more free memory)."""
    order = states_of(profile)
    return order[order.index(state) - 1]


def tracker(profile: str, initial: MemState, *, margin: float = MARGIN,
            rule: ExitRule | None = None) -> StateTracker:
    return StateTracker(thresholds(HOST_MIB, profile), exit_margin_frac=margin,
                        exit_rule=rule, initial=initial)


ENTRY_CASES = [(p, s) for p in LEVELS for s in states_of(p)[1:]]
ENTRY_IDS = [f"{p}-{s.label}" for p, s in ENTRY_CASES]
# Every (profile, state entered, state it is entered from): each state above it.
FALL_CASES = [(p, s, t) for p, s in ENTRY_CASES
              for t in states_of(p)[: states_of(p).index(s)]]
FALL_IDS = [f"{p}-{t.label}-to-{s.label}" for p, s, t in FALL_CASES]


def test_hand_levels_are_the_profiles_thresholds():
    for profile, levels in LEVELS.items():
        thr = thresholds(HOST_MIB, profile)
        assert {state: thr.level_mib(state) for state in thr.states} == levels, profile


@pytest.mark.parametrize(("profile", "state"), ENTRY_CASES, ids=ENTRY_IDS)
def test_hand_exit_levels_are_the_trackers(profile, state):
    t = tracker(profile, state)
    assert t.exit_rule is DEFAULT_RULE[profile]
    assert t.exit_level_mib(state) == pytest.approx(EXITS[profile][state], rel=1e-12)
    assert t.exit_level_mib(HIGH) == math.inf


# -- entry: below the threshold, not at it ----------------------------------------------


@pytest.mark.parametrize(("profile", "state", "start"), FALL_CASES, ids=FALL_IDS)
def test_entered_just_below_its_threshold_from_every_state_above(profile, state, start):
    level = LEVELS[profile][state]
    t = tracker(profile, start)
    assert t.update(below(level)) == state
    assert t.transitions == 1  # one transition, however many states it crossed


@pytest.mark.parametrize(("profile", "state", "start"), FALL_CASES, ids=FALL_IDS)
def test_not_entered_exactly_at_its_threshold(profile, state, start):
    # Exactly at the threshold the host falls only as far as the state above it.
    level = LEVELS[profile][state]
    t = tracker(profile, start)
    expected = above_state(profile, state)
    assert t.update(level) == expected
    assert t.transitions == (expected != start)


@pytest.mark.parametrize(("profile", "state"), ENTRY_CASES, ids=ENTRY_IDS)
def test_not_entered_just_above_its_threshold(profile, state):
    start = above_state(profile, state)
    t = tracker(profile, start)
    assert t.update(above(LEVELS[profile][state])) == start
    assert t.transitions == 0


# -- exit: above the exit level, not at it ----------------------------------------------


@pytest.mark.parametrize(("profile", "state"), ENTRY_CASES, ids=ENTRY_IDS)
def test_left_just_above_its_exit_level_for_the_state_above_only(profile, state):
    t = tracker(profile, state)
    assert t.update(above(t.exit_level_mib(state))) == above_state(profile, state)
    assert t.transitions == 1


@pytest.mark.parametrize(("profile", "state"), ENTRY_CASES, ids=ENTRY_IDS)
def test_not_left_exactly_at_its_exit_level(profile, state):
    t = tracker(profile, state)
    assert t.update(t.exit_level_mib(state)) == state
    assert t.transitions == 0


@pytest.mark.parametrize(("profile", "state"), ENTRY_CASES, ids=ENTRY_IDS)
def test_not_left_just_below_its_exit_level(profile, state):
    t = tracker(profile, state)
    assert t.update(below(t.exit_level_mib(state))) == state
    assert t.transitions == 0


@pytest.mark.parametrize(("profile", "state"), ENTRY_CASES, ids=ENTRY_IDS)
def test_hysteresis_holds_the_state_between_threshold_and_exit(profile, state):
    # Back at (or just above) the entry threshold, where classify already says the
    # state above, the tracker stays: it leaves only past the exit level.
    level = LEVELS[profile][state]
    t = tracker(profile, above_state(profile, state))
    assert t.update(below(level)) == state
    for free in (level, above(level), below(t.exit_level_mib(state)), t.exit_level_mib(state)):
        assert classify(free, t.thresholds) < state
        assert t.update(free) == state
    assert t.update(above(t.exit_level_mib(state))) == above_state(profile, state)
    assert t.transitions == 2


@pytest.mark.parametrize("rule", list(ExitRule))
@pytest.mark.parametrize(("profile", "state"), ENTRY_CASES, ids=ENTRY_IDS)
def test_either_rule_with_no_margin_leaves_exactly_past_its_base(profile, state, rule):
    # With a zero margin the exit level is the base threshold itself: own, or the
    # state above's. At it the state holds; one step above it the state is left.
    base = state if rule is ExitRule.OWN else above_state(profile, state)
    exit_mib = LEVELS[profile][base]
    t = tracker(profile, state, margin=0.0, rule=rule)
    assert t.exit_level_mib(state) == exit_mib
    assert t.update(exit_mib) == state
    assert t.update(above(exit_mib)) == above_state(profile, state)


@pytest.mark.parametrize("profile", list(LEVELS))
def test_a_climb_stops_where_the_next_exit_level_is_not_exceeded(profile):
    # From LOW, free memory just above each exit level in turn climbs one state per
    # level; at a level exactly it stays. Upward moves repeat within one update.
    states = states_of(profile)
    t = tracker(profile, LOW)
    for state in reversed(states[1:]):  # LOW, HARD, ... up to the state below HIGH
        exit_mib = t.exit_level_mib(state)
        assert t.update(exit_mib) == state
        assert t.update(above(exit_mib)) == above_state(profile, state)
    assert t.state == HIGH
    assert t.transitions == len(states) - 1
    # All the way up in one update: above every exit level at once.
    t = tracker(profile, LOW)
    assert t.update(above(max(EXITS[profile].values()))) == HIGH
    assert t.transitions == 1


# -- classify and large-page breaking at the same levels --------------------------------


@pytest.mark.parametrize(("profile", "state"), ENTRY_CASES, ids=ENTRY_IDS)
def test_classify_at_each_threshold(profile, state):
    thr = thresholds(HOST_MIB, profile)
    level = LEVELS[profile][state]
    assert classify(below(level), thr) == state
    assert classify(level, thr) == above_state(profile, state)
    assert classify(above(level), thr) == above_state(profile, state)


def test_lazy_large_page_breaking_starts_just_below_esxi6_high():
    thr = thresholds(HOST_MIB, "esxi6")
    high = LEVELS["esxi6"][HIGH]
    assert large_page_breaking(HIGH, above(high), thr) == "off"
    assert large_page_breaking(HIGH, high, thr) == "off"
    assert large_page_breaking(HIGH, below(high), thr) == "lazy"
    for state in (CLEAR, SOFT, HARD, LOW):
        assert large_page_breaking(state, high, thr) == "active"
    for profile in ("esx4", "esxi5"):
        low_thr = thresholds(HOST_MIB, profile)
        assert large_page_breaking(HIGH, below(LEVELS[profile][HIGH]), low_thr) == "off"
