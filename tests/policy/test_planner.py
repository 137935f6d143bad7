"""Tests of policy.planner: the balloon / compress / swap split per host memory state."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvmem.errors import ConfigError, InvariantViolation
from hvmem.policy.planner import DEFAULT_BALANCE_PERIOD_S, PlannerParams, plan_vms
from hvmem.policy.samples import HostSample, VmSample
from hvmem.policy.states import PROFILES, MemState

UNLIMITED = PlannerParams(balloon_inflate_mib_s=None, balloon_deflate_mib_s=None)


def host(state: MemState, free_mib: float = 5000.0, profile: str = "esxi6") -> HostSample:
    return HostSample(
        time_s=0.0,
        total_mib=16384.0,
        free_mib=free_mib,
        state=state,
        minfree_mib=1000.0,
        profile=profile,
    )


def vm(name: str = "a", **overrides: object) -> VmSample:
    """4096 MiB VM, balloon max 0.65 x 4096 = 2662.4, consuming 3000 MiB."""
    fields: dict[str, object] = dict(
        name=name,
        configured_mib=4096.0,
        shares=40960,
        consumed_mib=3000.0,
        active_mib=500.0,
        balloon_max_mib=2662.4,
    )
    fields.update(overrides)
    return VmSample(**fields)  # type: ignore[arg-type]


def test_default_rates():
    params = PlannerParams()
    assert DEFAULT_BALANCE_PERIOD_S == 15.0
    # 16384 pages/s x 4 KiB = 64 MiB/s; x 15 s = 960 MiB per period
    assert params.balloon_inflate_mib_s == 64.0
    assert params.step_mib(params.balloon_inflate_mib_s) == 960.0
    assert params.step_mib(None) == float("inf")
    with pytest.raises(ConfigError, match="balance_period_s"):
        PlannerParams(balance_period_s=0.0)
    with pytest.raises(ConfigError, match="swap_out_mib_s"):
        PlannerParams(swap_out_mib_s=-1.0)


# -- SOFT: balloon, swap only what the balloon cannot take ---------------------------------


def test_soft_balloons_the_excess_within_the_rate_limit():
    # excess = 3000 - 2000 = 1000; the balloon may grow 960 MiB in 15 s
    plan = plan_vms(host(MemState.SOFT), [vm()], {"a": 2000.0})["a"]
    assert plan.target_mib == 2000.0
    assert plan.balloon_target_mib == 960.0
    # the 40 MiB the rate limit holds back waits for the next period: no swap
    assert plan.swap_target_mib == 0.0
    assert not plan.compress and not plan.blocked
    unlimited = plan_vms(host(MemState.SOFT), [vm()], {"a": 2000.0}, params=UNLIMITED)["a"]
    assert unlimited.balloon_target_mib == 1000.0


def test_soft_swaps_what_passes_the_balloon_maximum():
    # balloon 2500 of max 2662.4: room 162.4, the other 1000 - 162.4 = 837.6 is swapped
    # on top of what is held: 100 swapped + 50 compressed + 837.6 = 987.6
    sample = vm(balloon_mib=2500.0, swapped_mib=100.0, compressed_mib=50.0)
    plan = plan_vms(host(MemState.SOFT), [sample], {"a": 2000.0})["a"]
    assert plan.balloon_target_mib == pytest.approx(2662.4)
    assert plan.swap_target_mib == pytest.approx(987.6)
    assert plan.compress  # swap candidates are compressed where the profile can


def test_soft_swaps_everything_for_a_stuck_balloon():
    sample = vm(balloon_mib=300.0, balloon_target_mib=600.0, balloon_stuck=True)
    plan = plan_vms(host(MemState.SOFT), [sample], {"a": 2000.0})["a"]
    assert plan.balloon_target_mib == 300.0  # held where the driver is
    assert plan.swap_target_mib == 1000.0


def test_soft_leaves_vms_at_or_below_target_alone():
    sample = vm(consumed_mib=1500.0, balloon_mib=400.0, swapped_mib=20.0)
    plan = plan_vms(host(MemState.SOFT), [sample], {"a": 2000.0})["a"]
    assert (plan.balloon_target_mib, plan.swap_target_mib) == (400.0, 20.0)


# -- HARD and LOW: compress and swap --------------------------------------------------------


def test_hard_swaps_and_compresses_and_holds_the_balloon():
    sample = vm(balloon_mib=300.0, balloon_target_mib=300.0, swapped_mib=10.0)
    plan = plan_vms(host(MemState.HARD), [sample], {"a": 2000.0})["a"]
    assert plan.balloon_target_mib == 300.0  # "the balloon driver stops" [YB-STATES6]
    assert plan.swap_target_mib == 1010.0  # 10 held + 1000 excess
    assert plan.compress and not plan.blocked


def test_hard_lets_a_balloon_in_flight_finish_and_swaps_only_the_rest():
    # An earlier plan asked for 500 MiB; 300 are in: the 200 to come are not swapped.
    sample = vm(balloon_mib=300.0, balloon_target_mib=500.0, swapped_mib=10.0)
    plan = plan_vms(host(MemState.HARD), [sample], {"a": 2000.0})["a"]
    assert plan.balloon_target_mib == 500.0  # no new inflation beyond the earlier target
    assert plan.swap_target_mib == 810.0  # 10 held + 1000 excess - 200 still to balloon
    stuck = vm(balloon_mib=300.0, balloon_target_mib=500.0, swapped_mib=10.0,
               balloon_stuck=True)
    plan = plan_vms(host(MemState.HARD), [stuck], {"a": 2000.0})["a"]
    assert plan.balloon_target_mib == 300.0 and plan.swap_target_mib == 1010.0


def test_swap_rate_limit():
    params = PlannerParams(swap_out_mib_s=10.0)  # 10 MiB/s x 15 s = 150 MiB
    plan = plan_vms(host(MemState.HARD), [vm()], {"a": 2000.0}, params=params)["a"]
    assert plan.swap_target_mib == 150.0


def test_esx4_has_no_compression():
    plan = plan_vms(host(MemState.HARD, profile="esx4"), [vm()], {"a": 2000.0})["a"]
    assert plan.swap_target_mib == 1000.0 and not plan.compress


def test_low_blocks_vms_above_target_only():
    vms = [vm("over"), vm("under", consumed_mib=1000.0)]
    plans = plan_vms(host(MemState.LOW, free_mib=100.0), vms, {"over": 2000.0, "under": 2000.0})
    assert plans["over"].blocked and plans["over"].compress
    assert not plans["under"].blocked
    assert plans["under"].swap_target_mib == 0.0


# -- HIGH and CLEAR: no reclamation, balloons deflate as free memory returns ------------------


def test_high_deflates_balloons_of_vms_below_target():
    # headroom 1500 - 1000 = 500 <= balloon 800 and <= 960 step; budget 5000 - 1000 = 4000
    below = vm("below", consumed_mib=1000.0, balloon_mib=800.0)
    above = vm("above", consumed_mib=3000.0, balloon_mib=200.0, swapped_mib=30.0)
    plans = plan_vms(host(MemState.HIGH), [below, above], {"below": 1500.0, "above": 2000.0})
    assert plans["below"].balloon_target_mib == 300.0
    # above target in HIGH: nothing reclaimed, nothing given back
    assert plans["above"].balloon_target_mib == 200.0
    assert plans["above"].swap_target_mib == 30.0
    assert not plans["above"].compress


def test_deflation_is_capped_by_free_memory_above_the_target():
    # budget = 1200 free - 1000 minFree = 200, asked 500 + 300 = 800: each gets 1/4
    one = vm("one", consumed_mib=1000.0, balloon_mib=800.0)
    two = vm("two", consumed_mib=1000.0, balloon_mib=300.0)
    plans = plan_vms(
        host(MemState.HIGH, free_mib=1200.0), [one, two], {"one": 1500.0, "two": 1500.0}
    )
    assert plans["one"].balloon_target_mib == pytest.approx(800.0 - 125.0)
    assert plans["two"].balloon_target_mib == pytest.approx(300.0 - 75.0)


def test_clear_below_minfree_gives_nothing_back():
    below = vm(consumed_mib=1000.0, balloon_mib=800.0)
    plan = plan_vms(host(MemState.CLEAR, free_mib=900.0), [below], {"a": 1500.0})["a"]
    assert plan.balloon_target_mib == 800.0


def test_deflation_rate_limit_and_stuck_drivers():
    params = PlannerParams(balloon_deflate_mib_s=10.0)  # 150 MiB per period
    plans = plan_vms(
        host(MemState.HIGH),
        [
            vm("a", consumed_mib=1000.0, balloon_mib=800.0),
            vm("s", consumed_mib=1000.0, balloon_mib=800.0, balloon_stuck=True),
        ],
        {"a": 1500.0, "s": 1500.0},
        params=params,
    )
    assert plans["a"].balloon_target_mib == 650.0
    assert plans["s"].balloon_target_mib == 800.0


def test_powered_off_vms_get_no_plan_and_missing_targets_are_bugs():
    plans = plan_vms(host(MemState.SOFT), [vm(), vm("off", powered_on=False)], {"a": 2000.0})
    assert set(plans) == {"a"}
    with pytest.raises(InvariantViolation, match="b"):
        plan_vms(host(MemState.SOFT), [vm(), vm("b")], {"a": 2000.0})


# -- properties ---------------------------------------------------------------------------


@st.composite
def planner_cases(draw):
    profile = draw(st.sampled_from(sorted(PROFILES)))
    state = draw(st.sampled_from(PROFILES[profile].states))
    configured = draw(st.floats(64.0, 8192.0))
    balloon_max = draw(st.floats(0.0, configured))
    sample = VmSample(
        name="v",
        configured_mib=configured,
        shares=draw(st.integers(0, 10**5)),
        consumed_mib=draw(st.floats(0.0, configured)),
        active_mib=draw(st.floats(0.0, configured)),
        balloon_max_mib=balloon_max,
        balloon_mib=draw(st.floats(0.0, configured)),
        balloon_target_mib=draw(st.floats(0.0, configured)),
        balloon_stuck=draw(st.booleans()),
        swapped_mib=draw(st.floats(0.0, configured)),
        compressed_mib=draw(st.floats(0.0, configured)),
    )
    target = draw(st.floats(0.0, configured))
    free = draw(st.floats(0.0, 20000.0))
    hs = HostSample(
        time_s=0.0,
        total_mib=32768.0,
        free_mib=free,
        state=state,
        minfree_mib=1000.0,
        profile=profile,
    )
    params = draw(
        st.sampled_from(
            [PlannerParams(), UNLIMITED, PlannerParams(swap_out_mib_s=5.0, balance_period_s=1.0)]
        )
    )
    return hs, sample, target, params


@given(planner_cases())
def test_planner_invariants(case):
    hs, sample, target, params = case
    plan = plan_vms(hs, [sample], {"v": target}, params=params)["v"]
    held_swap = sample.swapped_mib + sample.compressed_mib
    balloon_now = min(sample.balloon_mib, sample.balloon_max_mib)
    excess = max(0.0, sample.consumed_mib - target)
    # never more balloon than the balloon maximum
    assert 0.0 <= plan.balloon_target_mib <= sample.balloon_max_mib
    # swap targets are totals that never ask to swap in
    assert plan.swap_target_mib >= held_swap
    # never reclaim more than the excess, and within the rate limits
    grown = max(0.0, plan.balloon_target_mib - balloon_now)
    assert grown + (plan.swap_target_mib - held_swap) <= excess + 1e-6
    assert grown <= params.step_mib(params.balloon_inflate_mib_s) + 1e-9
    assert plan.swap_target_mib - held_swap <= params.step_mib(params.swap_out_mib_s) + 1e-9
    assert (
        balloon_now - plan.balloon_target_mib
        <= params.step_mib(params.balloon_deflate_mib_s) + 1e-9
    )
    assert plan.blocked == (hs.state == MemState.LOW and excess > 1e-6)
    if hs.state in (MemState.HIGH, MemState.CLEAR):
        assert plan.swap_target_mib == held_swap and grown == 0.0
    else:
        assert plan.balloon_target_mib >= balloon_now  # no deflation under pressure
    if sample.balloon_stuck:
        assert grown == 0.0
    if not PROFILES[hs.profile].compression:
        assert not plan.compress
