"""Tests of policy.controller and policy.ports: the sample -> plan -> apply loop."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from hvmem.errors import ConfigError, InvariantViolation
from hvmem.policy.controller import DEFAULT_HISTORY_LEN, Decision, PolicyController
from hvmem.policy.minfree import thresholds
from hvmem.policy.policies import EsxPolicy, StaticPolicy
from hvmem.policy.ports import MemoryBackend
from hvmem.policy.samples import HostSample, Plans, VmPlan, VmSample
from hvmem.policy.state_tracker import StateTracker
from hvmem.policy.states import MemState


class FakeBackend:
    """A host whose VMs give up exactly what their balloon targets ask, at once."""

    def __init__(self) -> None:
        self.time_s = 0.0
        self.total_mib = 16384.0
        self.vms = {
            "web": dict(
                configured_mib=8192.0, consumed_mib=8000.0, active_mib=7000.0, balloon_mib=0.0
            ),
            "batch": dict(
                configured_mib=8192.0, consumed_mib=7800.0, active_mib=400.0, balloon_mib=0.0
            ),
        }
        self.tracker = StateTracker(thresholds(self.total_mib, "esxi6"))
        self.samples = 0
        self.applied: list[Mapping[str, VmPlan]] = []

    def free_mib(self) -> float:
        return self.total_mib - sum(v["consumed_mib"] for v in self.vms.values())

    def sample(self) -> tuple[HostSample, Sequence[VmSample]]:
        self.samples += 1
        free = self.free_mib()
        state = self.tracker.update(free)
        hs = HostSample(
            time_s=self.time_s,
            total_mib=self.total_mib,
            free_mib=free,
            state=state,
            minfree_mib=self.tracker.thresholds.minfree_mib,
        )
        vms = [
            VmSample(
                name=name,
                configured_mib=v["configured_mib"],
                shares=int(10 * v["configured_mib"]),
                consumed_mib=v["consumed_mib"],
                active_mib=v["active_mib"],
                balloon_mib=v["balloon_mib"],
                balloon_target_mib=v["balloon_mib"],
                balloon_max_mib=0.65 * v["configured_mib"],
            )
            for name, v in self.vms.items()
        ]
        return hs, vms

    def apply(self, plans: Mapping[str, VmPlan]) -> None:
        self.applied.append(plans)
        for name, plan in plans.items():
            v = self.vms[name]
            grown = plan.balloon_target_mib - v["balloon_mib"]
            v["balloon_mib"] = plan.balloon_target_mib
            v["consumed_mib"] -= grown


def test_fake_backend_is_a_memory_backend():
    assert isinstance(FakeBackend(), MemoryBackend)


def test_steps_once_per_balance_period():
    backend = FakeBackend()
    controller = PolicyController(StaticPolicy(), backend)
    decided = [t for t in range(0, 61) if controller.step(float(t)) is not None]
    assert decided == [0, 15, 30, 45, 60]
    assert backend.samples == 5 and len(backend.applied) == 5
    assert controller.steps == 5 and controller.next_due_s == 75.0
    assert [d.time_s for d in controller.history] == [0.0, 15.0, 30.0, 45.0, 60.0]


def test_force_and_due():
    controller = PolicyController(StaticPolicy(), FakeBackend(), balance_period_s=10.0)
    assert controller.due(0.0)
    controller.step(0.0)
    assert not controller.due(9.0) and controller.due(10.0)
    assert controller.step(3.0) is None
    assert controller.step(4.0, force=True) is not None
    assert controller.next_due_s == 14.0


def test_history_is_bounded_and_records_samples_and_plans():
    controller = PolicyController(StaticPolicy(), FakeBackend(), 1.0, history_len=3)
    for t in range(10):
        controller.step(float(t))
    assert len(controller.history) == 3
    assert [d.time_s for d in controller.history] == [7.0, 8.0, 9.0]
    last = controller.last
    assert isinstance(last, Decision)
    assert {vm.name for vm in last.vms} == {"web", "batch"}
    assert isinstance(last.plans, Plans) and set(last.plans) == {"web", "batch"}
    assert PolicyController(StaticPolicy(), FakeBackend()).history.maxlen == DEFAULT_HISTORY_LEN


def test_esx_loop_reclaims_until_the_host_recovers():
    # 16384 - 15800 = 584 MiB free on an esxi6 host (minFree 16 GiB: 245.76 + 327.68 +
    # 0.02 x 4096 = 655.36; SOFT below 0.64 x 655.36 = 419.4): starts in CLEAR, nothing
    # to balloon until the batch VM grows.
    backend = FakeBackend()
    controller = PolicyController(EsxPolicy(), backend)
    controller.step(0.0)
    assert controller.last is not None and controller.last.host.state is MemState.CLEAR
    assert backend.vms["batch"]["balloon_mib"] == 0.0
    backend.vms["batch"]["consumed_mib"] = 8100.0  # free 284 < 419.4 -> SOFT
    for t in range(15, 121, 15):
        controller.step(float(t))
    states = [d.host.state for d in controller.history]
    assert MemState.SOFT in states
    # the idle VM was ballooned, the busy one kept its memory, free memory came back
    assert backend.vms["batch"]["balloon_mib"] > 0.0
    assert backend.vms["web"]["balloon_mib"] == 0.0
    assert backend.free_mib() >= backend.tracker.thresholds.soft_mib


def test_time_must_not_go_backwards():
    controller = PolicyController(StaticPolicy(), FakeBackend())
    controller.step(30.0)
    with pytest.raises(InvariantViolation, match="backwards"):
        controller.step(29.0)


def test_plans_for_unknown_vms_are_rejected():
    class Rogue:
        name = "rogue"

        def plan(self, host, vms):
            return {"ghost": VmPlan(target_mib=0.0, balloon_target_mib=0.0, swap_target_mib=0.0)}

    backend = FakeBackend()
    with pytest.raises(InvariantViolation, match="ghost"):
        PolicyController(Rogue(), backend).step(0.0)
    assert backend.applied == []


@pytest.mark.parametrize(("period", "history"), [(0.0, 10), (-1.0, 10), (15.0, 0)])
def test_bad_controller_config(period, history):
    with pytest.raises(ConfigError):
        PolicyController(StaticPolicy(), FakeBackend(), period, history_len=history)


def test_react_replans_only_on_a_fall_into_a_worse_state_and_not_too_soon():
    backend = FakeBackend()  # 16 GiB host, 15.8 GiB consumed: SOFT at the first sample
    ctl = PolicyController(EsxPolicy(), backend, 15.0)
    assert ctl.react(0.0, MemState.HARD) is None  # no decision yet: the period's first comes
    ctl.step(0.0)
    seen = ctl.last.host.state
    assert ctl.react(0.5, MemState.LOW) is None  # worse, but within a second of the decision
    assert ctl.react(2.0, seen) is None  # not worse than the plans were made for
    assert ctl.react(3.0, MemState.HIGH) is None  # better: the plans hold until the period
    backend.vms["web"]["consumed_mib"] += 300.0
    assert ctl.react(4.0, MemState.LOW) is not None  # worse, a second later: replan now
    assert ctl.reactions == 1 and ctl.steps == 2
    assert not ctl.due(5.0) and ctl.due(19.0)  # the forced decision started a new period


def test_react_is_only_for_policies_that_rebalance_on_crossings():
    ctl = PolicyController(StaticPolicy(), FakeBackend(), 15.0)
    ctl.step(0.0)
    assert ctl.react(5.0, MemState.LOW) is None
    assert ctl.reactions == 0
