"""The esx planner over arrays gives the plans EsxPolicy.plan gives, host by host.

Random hosts (hypothesis) of random VMs: reservations, limits, 0 shares, stuck
and full balloons, every state of every profile, rate limits on and off, the
idle tax from 0 to 0.9. Several hosts are planned in one call, some left out,
so a host's plan cannot lean on its neighbours'.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError
from hvmem.policy.batched import (
    PlanArrays,
    SampleArrays,
    action_table,
    check_batched,
    plan_hosts,
)
from hvmem.policy.esx import EsxParams, EsxPolicy
from hvmem.policy.planner import PlannerParams
from hvmem.policy.samples import HostSample, VmSample
from hvmem.policy.states import PROFILES

N_V = 6


@st.composite
def vm_samples(draw, name: str) -> VmSample:
    configured = draw(st.integers(64, 4096)) * 1.0
    reservation = draw(st.floats(0.0, configured)) if draw(st.booleans()) else 0.0
    limit = draw(st.one_of(st.none(), st.floats(reservation, configured * 1.5)))
    balloon_max = draw(st.sampled_from([0.0, 0.65 * configured, configured]))
    balloon = draw(st.floats(0.0, balloon_max))
    return VmSample(
        name=name, configured_mib=configured, shares=draw(st.integers(0, 100_000)),
        consumed_mib=draw(st.floats(0.0, configured)),
        active_mib=draw(st.floats(0.0, configured)),
        reservation_mib=reservation, limit_mib=limit, balloon_max_mib=balloon_max,
        balloon_mib=balloon, balloon_target_mib=draw(st.floats(0.0, configured)),
        balloon_stuck=draw(st.booleans()),
        swapped_mib=draw(st.floats(0.0, configured)),
        compressed_mib=draw(st.floats(0.0, configured / 4)),
        powered_on=draw(st.integers(0, 5)) > 0,
    )


@st.composite
def hosts(draw):
    profile = draw(st.sampled_from(sorted(PROFILES)))
    state = draw(st.sampled_from(PROFILES[profile].states))
    vms = [draw(vm_samples(f"vm{i}")) for i in range(draw(st.integers(0, N_V)))]
    host = HostSample(time_s=0.0, total_mib=65536.0, free_mib=draw(st.floats(0.0, 8192.0)),
                      state=state, minfree_mib=draw(st.floats(0.0, 2048.0)), profile=profile)
    return host, vms


rates = st.one_of(st.none(), st.floats(0.0, 512.0))
params = st.builds(
    lambda tax, inflate, deflate, swap, frac, period: EsxParams(
        tax_frac=tax, planner=PlannerParams(
            balance_period_s=period, balloon_inflate_mib_s=inflate,
            balloon_deflate_mib_s=deflate, swap_out_mib_s=swap, free_target_frac=frac)),
    st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9]), rates, rates, rates, st.floats(0.0, 4.0),
    st.sampled_from([1.0, 15.0, 60.0]))


def _arrays(samples):
    s = SampleArrays(len(samples), N_V)
    for h, (host, vms) in enumerate(samples):
        s.free[h], s.minfree[h], s.state[h] = host.free_mib, host.minfree_mib, int(host.state)
        for v, vm in enumerate(vms):
            s.on[h, v], s.stuck[h, v] = vm.powered_on, vm.balloon_stuck
            s.shares[h, v], s.configured[h, v] = vm.shares, vm.configured_mib
            s.reservation[h, v] = vm.reservation_mib
            s.limit[h, v] = math.inf if vm.limit_mib is None else vm.limit_mib
            s.consumed[h, v], s.active[h, v] = vm.consumed_mib, vm.active_mib
            s.balloon[h, v], s.balloon_target[h, v] = vm.balloon_mib, vm.balloon_target_mib
            s.balloon_max[h, v] = vm.balloon_max_mib
            s.swapped[h, v], s.compressed[h, v] = vm.swapped_mib, vm.compressed_mib
    return s


@settings(max_examples=300, deadline=None)
@given(samples=st.lists(hosts(), min_size=1, max_size=5), p=params, data=st.data())
def test_the_batched_planner_gives_esx_plans(samples, p, data):
    chosen = data.draw(st.lists(st.integers(0, len(samples) - 1), unique=True, min_size=1))
    s = _arrays(samples)
    acts, compression = action_table([host.profile for host, _ in samples])
    out = PlanArrays(len(samples), N_V)
    plan_hosts(np.array(sorted(chosen)), s, acts, compression, p.tax_frac, p.planner, out)
    policy = EsxPolicy(p)
    for h in chosen:
        host, vms = samples[h]
        plans = policy.plan(host, vms)
        assert out.available[h] == pytest.approx(plans.host.available_mib, rel=1e-12, abs=1e-9)
        assert set(plans) == {vm.name for vm in vms if vm.powered_on}
        for v, vm in enumerate(vms):
            if not vm.powered_on:
                continue
            plan = plans[vm.name]
            for field, got in (("target_mib", out.target), ("balloon_target_mib",
                                                           out.balloon_target),
                               ("swap_target_mib", out.swap_target)):
                assert got[h, v] == pytest.approx(getattr(plan, field), rel=1e-9, abs=1e-6), \
                    (field, h, v)
            assert out.compress[h, v] == plan.compress
            assert out.blocked[h, v] == plan.blocked


def test_only_esx_is_planned_over_arrays():
    check_batched("esx")
    with pytest.raises(ConfigError, match="only esx"):
        check_batched("mom")
