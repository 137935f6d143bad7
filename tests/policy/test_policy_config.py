"""One policy configuration, built once: [policy] reaches the policy wherever it runs."""

from __future__ import annotations

import dataclasses

import pytest

from hvmem.policy.planner import PlannerParams
from hvmem.policy.policies import (
    POLICIES,
    EsxParams,
    MomParams,
    PolicyConfig,
    ProxmoxParams,
    make_policy,
)
from hvmem.policy.samples import HostSample, VmSample
from hvmem.policy.states import MemState
from hvmem.scenario.loader import load_scenario, parse_scenario
from hvmem.scenarios import builtin_scenario_path
from hvmem.sim import Simulation

S = 1_000_000_000


def soft_host() -> HostSample:
    return HostSample(time_s=0.0, total_mib=16384.0, free_mib=500.0, minfree_mib=1000.0,
                      state=MemState.SOFT)


def vms() -> list[VmSample]:
    # idle's excess over its target is 692 MiB (worked in test_policies.test_esx_plan_by_hand)
    return [VmSample(name=name, configured_mib=8192.0, shares=81920, consumed_mib=consumed,
                     active_mib=active, balloon_max_mib=5324.8)
            for name, consumed, active in (("busy", 8000.0, 7000.0), ("idle", 7000.0, 500.0))]


def test_the_balance_period_sets_the_planners_rate_caps():
    # 64 MiB/s of inflation: 960 MiB a 15 s period takes all 692; a 5 s period only 320.
    for period_s, balloon in ((15, 692.0), (5, 320.0)):
        config = PolicyConfig(balance_period_ns=period_s * S)
        policy = make_policy(config)
        assert policy.params.planner.balance_period_s == period_s
        plans = policy.plan(soft_host(), vms())
        assert plans["idle"].balloon_target_mib == pytest.approx(balloon)


def test_the_simulator_runs_the_scenarios_policy_configuration():
    doc = {"duration": "10s", "host": {"memory": "1GiB"},
           "policy": {"balance_period": "5s", "idle_tax_frac": 0.5,
                      "params": {"swap_out_mib_s": 20}},
           "vm": [{"name": "a", "memory": "256MiB"}]}
    sim = Simulation(parse_scenario(doc, "p.toml"))
    assert sim.policy.params == EsxParams(
        tax_frac=0.5, planner=PlannerParams(balance_period_s=5.0, swap_out_mib_s=20.0))
    assert sim.controller.balance_period_s == 5.0
    other = Simulation(parse_scenario(doc, "p.toml"), policy="proxmox")
    assert other.policy.params == ProxmoxParams()  # esx's parameters stay with esx
    assert other.controller.balance_period_s == 5.0


def test_every_parameter_of_every_policy_can_be_set_from_a_table():
    changed = {"esx": {"balloon_inflate_mib_s": 1.0, "balloon_deflate_mib_s": "unlimited",
                       "swap_out_mib_s": 2.0, "free_target_frac": 0.5},
               "mom": {"pressure_threshold_frac": 0.3, "pressure_critical_frac": 0.1,
                       "min_guest_free_frac": 0.1, "max_balloon_change_frac": 0.1,
                       "min_balloon_change_frac": 0.01, "balloon_enabled": False,
                       "ksm_enabled": False, "ksm_free_frac": 0.1, "ksm_pages_boost": 1,
                       "ksm_pages_decay": -1, "ksm_npages_min": 1, "ksm_npages_max": 2,
                       "ksm_sleep_baseline": "1ms", "ksm_pages_to_scan_initial": 1,
                       "history_len": 1},
               "proxmox": {"target_frac": 0.5, "max_change_mib": 1.0, "deadband_mib": 1.0,
                           "interval": "1s", "default_shares": 1,
                           "comfortable_free_frac": 0.5}}
    owned = {"tax_frac", "planner"}  # [policy] idle_tax_frac and balance_period set these
    for name, table in changed.items():
        params = PolicyConfig(name=name, params=table).params
        kind = POLICIES[name].params_type
        default = kind()
        fields = [f.name for f in dataclasses.fields(kind) if f.name not in owned]
        if name == "esx":
            fields = [f.name for f in dataclasses.fields(PlannerParams)
                      if f.name != "balance_period_s"]
            params, default = params.planner, default.planner
        assert all(getattr(params, f) != getattr(default, f) for f in fields), name


def test_mom_without_ballooning_never_balloons_on_demo():
    """[policy.params] balloon_enabled = false reaches MOM: no VM of demo ever balloons.

    With ballooning on, MOM inflates the first balloon at 241 s of demo, so the
    first five minutes show the difference.
    """
    demo = load_scenario(builtin_scenario_path("demo"))
    config = PolicyConfig(name="mom", params={"balloon_enabled": False})
    scenario = dataclasses.replace(demo, policy=config, duration_ns=300 * S)
    sim = Simulation(scenario)
    assert sim.policy.params == MomParams(balloon_enabled=False)
    result = sim.run()
    assert result.complete and len(result.vm_rows) == 300 * len(demo.vms)
    assert all(row["MCTLSZ"] == 0 for row in result.vm_rows)
