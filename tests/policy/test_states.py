"""Tests of policy.states, minfree and state_tracker: minFree, thresholds, hysteresis, actions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvmem.errors import ConfigError, InvariantViolation
from hvmem.policy.minfree import Thresholds, minfree_mib, minfree_report, thresholds
from hvmem.policy.state_tracker import DEFAULT_EXIT_MARGIN_FRAC, StateTracker, classify
from hvmem.policy.states import (
    PROFILES,
    ExitRule,
    MemState,
    StateActions,
    actions,
    get_profile,
)
from hvmem.units import GIB, TIB

GIB_MIB = 1024

# -- minFree ------------------------------------------------------------------------------

# Sliding scale (esxi5/esxi6): 6 % of the first 4096 MiB, 4 % of the next 8192,
# 2 % of the next 16384, 1 % of the rest. Per band:
#   6 % x 4096  = 245.76
#   4 % x 8192  = 327.68   (cumulative 573.44 at 12 GiB)
#   2 % x 16384 = 327.68   (cumulative 901.12 at 28 GiB = 28672 MiB)
SLIDING_CASES = [
    # 1 GiB: 0.06 x 1024 = 61.44
    (1 * GIB_MIB, 61.44),
    # 4 GiB: 0.06 x 4096 = 245.76
    (4 * GIB_MIB, 245.76),
    # 12 GiB: 245.76 + 0.04 x 8192 = 245.76 + 327.68 = 573.44
    (12 * GIB_MIB, 573.44),
    # 28 GiB: 573.44 + 0.02 x 16384 = 573.44 + 327.68 = 901.12
    (28 * GIB_MIB, 901.12),
    # 64 GiB = 65536 MiB: 901.12 + 0.01 x (65536 - 28672 = 36864) = 901.12 + 368.64 = 1269.76
    (64 * GIB_MIB, 1269.76),
    # 96 GiB = 98304 MiB: 901.12 + 0.01 x 69632 = 901.12 + 696.32 = 1597.44 ([PLAINVIRT])
    (96 * GIB_MIB, 1597.44),
    # 128 GiB = 131072 MiB: 901.12 + 0.01 x 102400 = 901.12 + 1024.00 = 1925.12
    (128 * GIB_MIB, 1925.12),
    # 1 TiB = 1048576 MiB: 901.12 + 0.01 x 1019904 = 901.12 + 10199.04 = 11100.16
    (1024 * GIB_MIB, 11100.16),
    # VMkernel-managed 130607 MiB: 901.12 + 0.01 x 101935 = 901.12 + 1019.35 = 1920.47,
    # esxtop's "minfree 1920" [VMWAREBITS]
    (130607, 1920.47),
    # 2 GiB, inside the first band: 0.06 x 2048 = 122.88
    (2 * GIB_MIB, 122.88),
    # 20 GiB = 20480 MiB, inside the 2 % band: 573.44 + 0.02 x 8192 = 573.44 + 163.84 = 737.28
    (20 * GIB_MIB, 737.28),
]


@pytest.mark.parametrize(("total_mib", "expected_mib"), SLIDING_CASES)
@pytest.mark.parametrize("profile", ["esxi5", "esxi6"])
def test_sliding_scale_minfree_by_hand(profile, total_mib, expected_mib):
    assert minfree_mib(total_mib, profile) == pytest.approx(expected_mib, abs=1e-9)


def test_sliding_scale_is_exact_to_the_decimal():
    # Computed in exact fractions and rounded once: no 1925.1200000000001.
    assert minfree_mib(128 * GIB_MIB, "esxi5") == 1925.12
    assert thresholds(128 * GIB_MIB, "esxi5").soft_mib == 1232.0768


def test_esx4_minfree_is_six_percent_of_memory():
    # 0.06 x 131072 = 7864.32; 0.06 x 4096 = 245.76
    assert minfree_mib(128 * GIB_MIB, "esx4") == pytest.approx(7864.32)
    assert minfree_mib(4 * GIB_MIB, "esx4") == pytest.approx(245.76)


def test_min_free_pct_override_replaces_the_sliding_scale():
    # Mem.MemMinFreePct = 6 on 128 GiB: 0.06 x 131072 = 7864.32
    assert minfree_mib(128 * GIB_MIB, "esxi5", min_free_frac=0.06) == pytest.approx(7864.32)
    assert minfree_mib(128 * GIB_MIB, "esxi6", min_free_frac=0.0) == pytest.approx(1925.12)


@given(st.floats(min_value=1.0, max_value=float(1 << 24)), st.floats(0.0, float(1 << 24)))
def test_minfree_grows_with_memory(a_mib, b_mib):
    small, large = sorted((a_mib, a_mib + b_mib))
    assert minfree_mib(small, "esxi5") <= minfree_mib(large, "esxi5")


# -- thresholds ----------------------------------------------------------------------------


def test_esx4_thresholds_are_fractions_of_memory():
    # 6/4/2/1 % of 131072 MiB
    thr = thresholds(128 * GIB_MIB, "esx4")
    assert thr.high_mib == pytest.approx(7864.32)
    assert thr.soft_mib == pytest.approx(5242.88)
    assert thr.hard_mib == pytest.approx(2621.44)
    assert thr.low_mib == pytest.approx(1310.72)
    assert thr.clear_mib is None
    assert thr.states == (MemState.HIGH, MemState.SOFT, MemState.HARD, MemState.LOW)


def test_esxi5_thresholds_are_fractions_of_minfree():
    # minFree 1925.12: 100/64/32/16 % -> 1925.12, 1232.0768, 616.0384, 308.0192
    thr = thresholds(128 * GIB_MIB, "esxi5")
    assert thr.minfree_mib == pytest.approx(1925.12)
    assert thr.high_mib == pytest.approx(1925.12)
    assert thr.soft_mib == pytest.approx(1232.0768)
    assert thr.hard_mib == pytest.approx(616.0384)
    assert thr.low_mib == pytest.approx(308.0192)
    assert thr.clear_mib is None


def test_esxi6_adds_clear_and_raises_high():
    # 400 % of 1925.12 = 7700.48; CLEAR at 100 % = 1925.12; the rest as esxi5
    thr = thresholds(128 * GIB_MIB, "esxi6")
    assert thr.high_mib == pytest.approx(7700.48)
    assert thr.clear_mib == pytest.approx(1925.12)
    assert thr.soft_mib == pytest.approx(1232.0768)
    assert thr.hard_mib == pytest.approx(616.0384)
    assert thr.low_mib == pytest.approx(308.0192)
    assert thr.states == tuple(MemState)


def test_esxi6_high_threshold_is_a_parameter():
    # [CODEFUNDA]'s 300 %: 3 x 1925.12 = 5775.36
    thr = thresholds(128 * GIB_MIB, "esxi6", high_frac=3.0)
    assert thr.high_mib == pytest.approx(5775.36)
    assert thr.clear_mib == pytest.approx(1925.12)


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("total_mib", [256, 4 * GIB_MIB, 28 * GIB_MIB, 1024 * GIB_MIB])
def test_thresholds_strictly_decrease_from_high_to_low(profile, total_mib):
    thr = thresholds(total_mib, profile)
    levels = [thr.level_mib(state) for state in thr.states]
    assert levels == sorted(levels, reverse=True)
    assert len(set(levels)) == len(levels)
    assert all(level > 0 for level in levels)
    assert thr.states[0] is MemState.HIGH and thr.states[-1] is MemState.LOW


def test_neighbours_skip_missing_clear():
    thr = thresholds(64 * GIB_MIB, "esxi5")
    assert thr.higher(MemState.SOFT) is MemState.HIGH
    assert thr.lower(MemState.HIGH) is MemState.SOFT
    assert thr.higher(MemState.HIGH) is MemState.HIGH
    assert thr.lower(MemState.LOW) is MemState.LOW
    six = thresholds(64 * GIB_MIB, "esxi6")
    assert six.higher(MemState.SOFT) is MemState.CLEAR


def test_thresholds_reject_a_high_below_clear():
    with pytest.raises(ConfigError, match="high .* must be above clear"):
        thresholds(128 * GIB_MIB, "esxi6", high_frac=0.5)


def test_thresholds_dataclass_validates_direct_construction():
    with pytest.raises(ConfigError, match="must be above"):
        Thresholds("esxi5", 1000.0, 60.0, 60.0, None, 70.0, 20.0, 10.0)


# -- report --------------------------------------------------------------------------------


def test_minfree_report_esxi5_128gib():
    report = minfree_report(128 * GIB, "esxi5")
    assert json.loads(json.dumps(report)) == report
    assert report == {
        "memory_mib": 131072.0,
        "profile": "esxi5",
        "minfree_mib": 1925.12,
        "thresholds_mib": {
            "high": 1925.12,
            "soft": 1232.0768,
            "hard": 616.0384,
            "low": 308.0192,
        },
    }


def test_minfree_report_lists_clear_only_for_esxi6():
    assert list(minfree_report(TIB, "esxi6")["thresholds_mib"]) == [
        "high",
        "clear",
        "soft",
        "hard",
        "low",
    ]
    assert "clear" not in minfree_report(TIB, "esx4")["thresholds_mib"]
    assert minfree_report(TIB, "esxi6")["minfree_mib"] == pytest.approx(11100.16)


# -- classification without hysteresis ----------------------------------------------------


def test_classify_bands_esxi6():
    thr = thresholds(128 * GIB_MIB, "esxi6")
    assert classify(100_000, thr) is MemState.HIGH
    assert classify(5000, thr) is MemState.HIGH  # below the 400 % high threshold: still HIGH
    assert classify(1925.12, thr) is MemState.HIGH  # not below the clear threshold
    assert classify(1925.0, thr) is MemState.CLEAR
    assert classify(1232.0, thr) is MemState.SOFT
    assert classify(616.0, thr) is MemState.HARD
    assert classify(308.0, thr) is MemState.LOW
    assert classify(0, thr) is MemState.LOW
    assert classify(-5, thr) is MemState.LOW


def test_classify_bands_esx4():
    thr = thresholds(100 * 1024, "esx4")  # 6/4/2/1 % of 102400: 6144, 4096, 2048, 1024
    assert classify(5000, thr) is MemState.HIGH
    assert classify(4095, thr) is MemState.SOFT
    assert classify(2047, thr) is MemState.HARD
    assert classify(1023, thr) is MemState.LOW


@given(
    profile=st.sampled_from(sorted(PROFILES)),
    total_mib=st.floats(min_value=64.0, max_value=float(1 << 22)),
    a_frac=st.floats(min_value=-0.1, max_value=1.0),
    b_frac=st.floats(min_value=-0.1, max_value=1.0),
)
def test_classify_is_non_increasing_in_free_memory(profile, total_mib, a_frac, b_frac):
    thr = thresholds(total_mib, profile)
    less, more = sorted((a_frac * total_mib, b_frac * total_mib))
    assert classify(less, thr) >= classify(more, thr)
    assert classify(less, thr) in thr.states


def test_classify_rejects_nan():
    with pytest.raises(InvariantViolation, match="NaN"):
        classify(float("nan"), thresholds(4096, "esxi5"))


# -- hysteresis ----------------------------------------------------------------------------


def test_oscillation_around_a_threshold_does_not_flap():
    thr = thresholds(128 * GIB_MIB, "esxi5")
    delta = thr.soft_mib * DEFAULT_EXIT_MARGIN_FRAC / 2
    samples = [thr.soft_mib + (delta if i % 2 else -delta) for i in range(40)]
    tracker = StateTracker(thr)
    states = [tracker.update(free) for free in samples]
    assert states == [MemState.SOFT] * 40
    assert tracker.transitions == 1
    plain = [classify(free, thr) for free in samples]
    assert sum(a != b for a, b in zip(plain, plain[1:], strict=False)) == 39


def test_own_rule_leaves_upward_only_past_the_margin():
    thr = thresholds(128 * GIB_MIB, "esxi6")  # soft 1232.0768, exit at x 1.05 = 1293.68064
    tracker = StateTracker(thr, exit_margin_frac=0.05)
    assert tracker.exit_rule is ExitRule.OWN
    assert tracker.update(1200) is MemState.SOFT
    assert tracker.update(1290) is MemState.SOFT
    assert tracker.exit_level_mib(MemState.SOFT) == pytest.approx(1293.68064)
    assert tracker.update(1294) is MemState.CLEAR
    assert tracker.update(1294) is MemState.CLEAR  # fixed point
    assert tracker.update(1925.12 * 1.05 + 1) is MemState.HIGH


def test_esx4_defaults_to_the_next_threshold_rule():
    # [OSDI02 §6.3]: back to HIGH only after exceeding the high threshold (6 %).
    thr = thresholds(100 * 1024, "esx4")  # high 6144, soft 4096
    tracker = StateTracker(thr, exit_margin_frac=0.0)
    assert tracker.exit_rule is ExitRule.NEXT
    assert tracker.update(4000) is MemState.SOFT
    assert tracker.update(6000) is MemState.SOFT  # well above soft, below high
    assert tracker.update(6145) is MemState.HIGH


def test_downward_moves_are_immediate_and_may_skip_states():
    thr = thresholds(128 * GIB_MIB, "esxi6")
    tracker = StateTracker(thr)
    assert tracker.update(10) is MemState.LOW
    assert tracker.transitions == 1


def test_upward_moves_climb_several_states_when_memory_frees_at_once():
    thr = thresholds(128 * GIB_MIB, "esxi6")
    tracker = StateTracker(thr, initial=MemState.LOW)
    assert tracker.update(50_000) is MemState.HIGH
    assert tracker.transitions == 1


def test_low_is_left_for_hard_not_further():
    thr = thresholds(128 * GIB_MIB, "esxi5")  # low 308.0192, hard 616.0384
    tracker = StateTracker(thr, initial=MemState.LOW)
    assert tracker.update(400) is MemState.HARD


@given(
    profile=st.sampled_from(sorted(PROFILES)),
    margin=st.floats(min_value=0.0, max_value=0.5),
    rule=st.sampled_from(list(ExitRule)),
    walk=st.lists(st.floats(min_value=-0.01, max_value=0.1), min_size=1, max_size=40),
)
def test_tracker_is_never_less_severe_than_classify(profile, margin, rule, walk):
    thr = thresholds(64 * GIB_MIB, profile)
    tracker = StateTracker(thr, exit_margin_frac=margin, exit_rule=rule)
    for frac in walk:
        free = frac * thr.total_mib
        state = tracker.update(free)
        assert state >= classify(free, thr)
        assert state in thr.states
        assert tracker.update(free) is state  # a fixed point


def test_tracker_rejects_bad_arguments():
    thr = thresholds(4096, "esxi5")
    with pytest.raises(ConfigError, match="exit_margin_frac"):
        StateTracker(thr, exit_margin_frac=-0.1)
    with pytest.raises(ConfigError, match="exit_rule"):
        StateTracker(thr, exit_rule="sideways")
    with pytest.raises(ConfigError, match="no clear state"):
        StateTracker(thr, initial=MemState.CLEAR)


# -- actions -------------------------------------------------------------------------------

#            share  break_lp balloon compress swap  fallback block
ESXI6_TABLE = {
    MemState.HIGH: (True, False, False, False, False, False, False),
    MemState.CLEAR: (True, True, False, False, False, False, False),
    MemState.SOFT: (True, True, True, False, False, True, False),
    MemState.HARD: (True, True, False, True, True, True, False),
    MemState.LOW: (True, True, False, True, True, True, True),
}


@pytest.mark.parametrize("state", list(MemState))
def test_actions_table_esxi6(state):
    assert actions(state, "esxi6") == StateActions(*ESXI6_TABLE[state])


def test_actions_default_profile_is_esxi6():
    assert actions(MemState.CLEAR) == StateActions(*ESXI6_TABLE[MemState.CLEAR])


def test_actions_esxi5_and_esx4_differences():
    for state in PROFILES["esxi5"].states:
        acts = actions(state, "esxi5")
        assert not acts.break_large_pages
        assert acts.compress == (state >= MemState.HARD)
    for state in PROFILES["esx4"].states:
        assert not actions(state, "esx4").compress  # compression is ESX 4.1+
    assert actions(MemState.HARD, "esx4").swap


def test_actions_invariants():
    for profile in PROFILES.values():
        for state in profile.states:
            acts = actions(state, profile)
            assert acts.share
            assert acts.balloon == (state is MemState.SOFT)
            assert acts.block_allocations == (state is MemState.LOW)
            assert acts.swap == (state >= MemState.HARD)


def test_actions_reject_clear_before_esxi6():
    with pytest.raises(ConfigError, match="esxi5 has no clear state"):
        actions(MemState.CLEAR, "esxi5")


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["esx7", "ESXI5", "", None])
def test_unknown_profile(bad):
    with pytest.raises(ConfigError, match="unknown memory-state profile") as info:
        thresholds(4096, bad)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="unknown memory-state profile"):
        get_profile(bad)


@pytest.mark.parametrize("bad", [0, -1, 0.0, -4096.0, float("nan"), float("inf")])
def test_non_positive_memory(bad):
    with pytest.raises(ConfigError, match="host memory") as info:
        minfree_mib(bad, "esxi5")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="host memory"):
        thresholds(bad, "esx4")


@pytest.mark.parametrize("bad", [0, -GIB, True, "128GiB"])
def test_minfree_report_rejects_bad_memory(bad):
    with pytest.raises(ConfigError, match="host memory"):
        minfree_report(bad, "esxi5")


def test_overrides_rejected_where_they_do_not_apply():
    with pytest.raises(ConfigError, match="min_free_frac"):
        minfree_mib(4096, "esx4", min_free_frac=0.06)
    with pytest.raises(ConfigError, match="min_free_frac"):
        minfree_mib(4096, "esxi5", min_free_frac=0.6)  # Mem.MemMinFreePct max 50
    with pytest.raises(ConfigError, match="high_frac"):
        thresholds(4096, "esx4", high_frac=2.0)
