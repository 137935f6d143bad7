"""The ESX policy, and the static policy it is compared against.

* ``esx`` (:class:`EsxPolicy`): share-based entitlement with the idle memory tax
  and min-funding revocation (:mod:`hvmem.policy.entitlement`, [OSDI02 §5]),
  the host memory states (:mod:`hvmem.policy.states`) and the reclamation
  planner (:mod:`hvmem.policy.planner`, [OSDI02 §6.3][YB-STATES6]).
* ``static`` (:class:`StaticPolicy`): no reclamation at all, to show what
  happens without it: balloons deflated, nothing swapped, no sharing.

Parameters (:class:`EsxParams`) are declared with their sources
(:mod:`hvmem.params`); a scenario sets them in ``[policy.params]``, except the
idle tax and the balance period, which are ``[policy]``'s own
(:class:`~hvmem.policy.policies.PolicyConfig`).

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hvmem.params import check, number, table
from hvmem.policy.entitlement import (
    DEFAULT_TAX_FRAC,
    MAX_TAX_FRAC,
    EntitlementResult,
    available_for_vms_mib,
    compute_targets,
)
from hvmem.policy.planner import PlannerParams, free_target_mib, plan_vms
from hvmem.policy.samples import (
    HostPlan,
    HostSample,
    Plans,
    SharingMode,
    VmPlan,
    VmSample,
    powered_on,
)
from hvmem.policy.states import actions

__all__ = ["EsxParams", "EsxPolicy", "StaticPolicy"]


@dataclass(frozen=True, slots=True)
class EsxParams:
    """Parameters of :class:`EsxPolicy`: the idle tax and the planner's knobs.

    In a scenario the planner's fields sit directly in ``[policy.params]``
    (``swap_out_mib_s = 50``); the tax is ``[policy] idle_tax_frac``.
    """

    tax_frac: float = number(DEFAULT_TAX_FRAC, "idle memory tax rate tau (Mem.IdleTax)",
                             lo=0.0, hi=MAX_TAX_FRAC, unit="frac", key=None,
                             owner="policy.idle_tax_frac",
                             source="75 %, 0-99 %: [OSDI02 §5.2][LAMW]")
    planner: PlannerParams = table(PlannerParams, "rate limits, balance period and free target",
                                   factory=PlannerParams, flatten=True)

    def __post_init__(self) -> None:
        check(self)


class EsxPolicy:
    """ESX memory management: entitlement, memory states, balloon/compress/swap split.

    Per balance period [OSDI02 §5.1-5.2, §6.3][YB-STATES6]:

    1. ``available = sum(consumed) + free - free_target`` with ``free_target =
       free_target_frac x minFree`` (:func:`~hvmem.policy.entitlement.available_for_vms_mib`);
    2. targets by min-funding revocation with the idle tax
       (:func:`~hvmem.policy.entitlement.compute_targets`);
    3. per VM, the excess over target goes to balloon / compression / swap as the
       host state allows (:func:`~hvmem.policy.planner.plan_vms`);
    4. sharing always runs; large pages are broken from CLEAR down (esxi6).

    Attributes:
        last_entitlement: the entitlement of the latest plan (for reports).
    """

    name = "esx"
    params_type: type = EsxParams
    #: Replan at once when free memory falls into a more severe state [OSDI02 §6.3]
    #: (``PolicyController.react``).
    rebalances_on_crossing = True

    def __init__(self, params: EsxParams | None = None) -> None:
        self.params = params or EsxParams()
        self.last_entitlement: EntitlementResult | None = None

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Plans:
        """Plan one balance period (see the class docs)."""
        on = powered_on(vms)
        planner = self.params.planner
        available = available_for_vms_mib(host, on, free_target_mib(host, planner))
        entitlement = compute_targets(on, available, tax_frac=self.params.tax_frac)
        self.last_entitlement = entitlement
        vm_plans = plan_vms(host, on, entitlement.targets_mib, params=planner)
        acts = actions(host.state, host.profile)
        host_plan = HostPlan(
            sharing=SharingMode.RUN,  # "TPS always" [YB-MINFREE][DISABLE-BALLOON]
            break_large_pages=acts.break_large_pages,
            state=host.state,
            available_mib=available,
        )
        return Plans(vm_plans, host_plan)


# -- static ----------------------------------------------------------------------------


class StaticPolicy:
    """No memory management: what a host does with reclamation switched off.

    Every VM is entitled to its ceiling ``min(configured, limit)``; balloons are
    deflated (target 0), nothing more is swapped (swap target 0: a ceiling, so
    what is swapped already stays until touched), nothing is compressed or
    blocked, and page sharing is stopped. Its purpose is the control run of a
    comparison: every baseline on the same trace.
    """

    name = "static"
    params_type: type = type(None)

    def __init__(self, params: None = None) -> None:
        self.params = params

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Plans:
        """Plan one balance period: nothing reclaimed."""
        vm_plans = {
            vm.name: VmPlan(target_mib=vm.ceiling_mib, balloon_target_mib=0.0, swap_target_mib=0.0)
            for vm in powered_on(vms)
        }
        return Plans(vm_plans, HostPlan(sharing=SharingMode.STOP, state=host.state))
