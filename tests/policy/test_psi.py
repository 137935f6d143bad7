"""The psi policy: senpai's adjustment curve, and plans that follow each VM's pressure."""

from __future__ import annotations

import pytest

from hvmem.policy.policies import PolicyConfig, make_policy
from hvmem.policy.psi import TARGET_FRAC, psi_adjustment
from hvmem.policy.samples import HostSample, VmSample
from hvmem.policy.states import MemState


def test_adjustment_is_senpais_curve():
    assert psi_adjustment(0.0) == -0.01  # no stall at all: the full 1 % probe
    assert psi_adjustment(TARGET_FRAC / 5) == pytest.approx(-0.01 * (5 / 10) ** 2)
    assert psi_adjustment(TARGET_FRAC * 10) == pytest.approx((10 / 20) ** 2)
    assert psi_adjustment(TARGET_FRAC * 40) == 1.0  # capped: the whole squeeze back


def vm(name, psi, balloon=0.0, swapped=0.0, stuck=False):
    return VmSample(name=name, configured_mib=1000, shares=10000, consumed_mib=900,
                    active_mib=500, balloon_max_mib=650, balloon_mib=balloon,
                    swapped_mib=swapped, balloon_stuck=stuck, psi_some_frac=psi)


def test_plans_follow_each_vms_pressure():
    policy = make_policy(PolicyConfig(name="psi"))
    host = HostSample(time_s=0, total_mib=4096, free_mib=2000, state=MemState.HIGH,
                      minfree_mib=245)
    plans = policy.plan(host, [vm("calm", 0.0), vm("pressed", TARGET_FRAC * 10, balloon=200),
                               vm("stuck", 0.0, stuck=True), vm("blind", None, balloon=50),
                               vm("limited", TARGET_FRAC * 40, balloon=100, swapped=50)])
    assert plans["calm"].balloon_target_mib == pytest.approx(10.0)  # 1 % of 1000 MiB
    assert plans["pressed"].balloon_target_mib == pytest.approx(200 - 0.25 * 800)
    assert plans["stuck"].swap_target_mib == pytest.approx(10.0)  # the limit instead
    assert plans["blind"].balloon_target_mib == 50 and plans["blind"].swap_target_mib == 0
    limited = plans["limited"]  # grows by all 850 MiB: the limit goes first
    assert (limited.swap_target_mib, limited.balloon_target_mib) == (0.0, 0.0)


def test_psi_runs_in_the_simulator_and_probes_an_unpressed_vm(make_scenario):
    from hvmem.sim import Simulation

    text = ('duration = "30s"\n[policy]\nname = "psi"\nbalance_period = "5s"\n'
            '[host]\nmemory = "256MiB"\n[[vm]]\nname = "vm"\nmemory = "128MiB"\n')
    result = Simulation(make_scenario(text)).run()
    rows = result.vm_rows
    assert all(r["psi_some_frac"] == 0.0 for r in rows)  # nothing swapped, no stall
    # Each period the unpressed VM gives up 1 % of what it is allowed.
    assert 5 < rows[-1]["MCTLTGT"] < 10, rows[-1]["MCTLTGT"]
