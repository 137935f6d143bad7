"""Reclamation planner: split each VM's excess over its target among the mechanisms.

What is modelled
----------------
Given every VM's target (its entitlement, :mod:`hvmem.policy.entitlement`) and
the host memory state, ESX reclaims from each VM its *excess*::

    excess = consumed - target            (only VMs above their target give memory)

with the mechanisms the state allows (:func:`hvmem.policy.states.actions`;
[OSDI02 §6.3][YB-STATES6]):

==========  ==========================================================================
state       what the planner asks for
==========  ==========================================================================
HIGH/CLEAR  nothing is reclaimed (sharing runs always, a host-wide knob); balloons of
            VMs *below* their target deflate while free memory is above the free
            target ("no reclamation performed" [OSDI02 §6.3]; targets "drive the
            aggregate amount of free space above the high threshold" [OSDI02 §6.3])
SOFT        balloon the excess; swap what the balloon cannot take: the driver is
            stuck or missing, or the balloon would pass its maximum [OSDI02 §6.3]
            [VS-SWAPWHEN]
HARD        compress (ESX 4.1+) and swap the excess; ballooning stops, inflated
            balloons are held [YB-STATES6] [OSDI02 Fig. 8]; a balloon still short of
            the target an earlier plan gave it keeps that target, and only the
            excess it will not cover is swapped (**derived**: swapping is the
            fallback where the balloon cannot keep up [OSDI02 §3.3][VS-SWAPWHEN])
LOW         as HARD, and VMs above their target may not allocate [OSDI02 §6.3]
==========  ==========================================================================

Plans are absolute (the backend gets totals, not increments)::

    balloon_target = balloon + balloon part of the excess          (SOFT)
    swap_target    = swapped + compressed + swapped part of excess  (SOFT fallback, HARD, LOW)

so a plan made from a fresh sample is right however much of the previous plan
the backend managed to carry out. The balloon target never exceeds the VM's
``balloon_max_mib`` (``Mem.CtlMaxPercent`` 65 % of configured memory
[VS4-ATTR][LAMW], or ``sched.mem.maxmemctl`` [VS-BALLOON]).

Rate limits per balance period
------------------------------
The balance period is ``Mem.BalancePeriod`` = 15 s [VS4-ATTR][VS-ADV70]
(``PlannerParams.balance_period_s``, set from the scenario's ``[policy]
balance_period``, the controller's period).
Within one period a plan moves at most:

* balloon inflation: ``balloon_inflate_mib_s`` x period beyond the current
  balloon. Default 64 MiB/s: the Linux ``vmw_balloon`` driver allocates at most
  16 384 pages per 1-s cycle without sleeping (``VMW_BALLOON_NOSLEEP_ALLOC_MAX``,
  v1.2.1 [LINUX-BALLOON]) = 64 MiB/s, so a target further ahead than that cannot
  be met within the period anyway. **Assumption**: ESX's own host-side pacing is
  unpublished.
* balloon deflation: ``balloon_deflate_mib_s`` x period. Default 64 MiB/s, the
  driver's largest ``rate_free`` (16 384 pages per cycle, v1.2.1 [LINUX-BALLOON]).
  **Assumption** as above.
* hypervisor swapping: ``swap_out_mib_s`` x period, default None (unlimited): the
  swap daemon pages out asynchronously with clustering [OSDI02 §3.3] and no rate
  is published; hypervisor swapping is the mechanism that is "fast to reclaim".

A balloon that is merely rate-limited does not send its remainder to swap: ESX
swaps in SOFT only what ballooning *cannot* deliver (stuck driver or maximum
reached) [VS-SWAPWHEN]; the remainder waits for the next period.

Deflation (**derived**)
-----------------------
When the state allows no reclamation (HIGH, CLEAR), a VM whose consumed memory
is below its target gets balloon memory back: ``min(target - consumed,
balloon, deflate step)`` ("ESX reduces balloon targets as free memory
returns"). The sum handed back is capped by ``free - free_target`` (split in
proportion to what each VM asks), so deflation never pulls free memory below the
target the entitlement was computed for, and cannot drive the host straight back
into reclamation. Swapped pages are not read back proactively: they return when
touched (``swap_target`` is a ceiling, see :class:`~hvmem.policy.samples.VmPlan`).
Stuck drivers get no share of the budget.

Limits (every state)
--------------------
A VM never holds more machine memory than its limit, whatever the host's
state [VS-ALLOC]: the hypervisor holds it there between plans by swapping the
VM's own pages as it touches new ones (``hypervisor/reclaim/reclaimer.py``
``hold_to_cap``). In HIGH and CLEAR, where nothing else is reclaimed, the plan
balloons a VM whose wants pass its limit (held + swapped + compressed - limit,
at the inflation rate, up to the balloon's maximum) so that the guest gives
the memory up by its own choice and the host's swapping at the limit stops,
"ballooned, then swapped" as ESX reclaims; deflation never gives such a VM
back more than its limit leaves room for. In SOFT, HARD and LOW the target is
at most the limit, so the excess over it is reclaimed as any other.

Compression: in HARD and LOW per :func:`~hvmem.policy.states.actions`; when SOFT
falls back to swapping, swap candidates are compressed too wherever the profile
has compression ("only swap-candidate pages are compressed" [VI-41]; the
fallback case is **derived**).

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hvmem.errors import InvariantViolation
from hvmem.params import check, number, time
from hvmem.policy.samples import HostSample, VmPlan, VmSample
from hvmem.policy.states import actions, get_profile

__all__ = [
    "DEFAULT_BALANCE_PERIOD_S",
    "MAX_BALANCE_PERIOD_S",
    "MIN_BALANCE_PERIOD_S",
    "PlannerParams",
    "free_target_mib",
    "plan_vms",
]

#: ``Mem.BalancePeriod``: 15 s in ESX 2.5 through vSphere 7 [ESX25-p343][VS4-ATTR][VS-ADV70].
DEFAULT_BALANCE_PERIOD_S = 15.0
#: Bounds of a balance period a scenario may set. ESX publishes no range; below
#: 100 ms a plan could not be carried out before the next, and an hour between
#: plans is no longer memory management.
MIN_BALANCE_PERIOD_S = 0.1
MAX_BALANCE_PERIOD_S = 3600.0

#: 16 384 pages of 4 KiB per second = 64 MiB/s [LINUX-BALLOON] (see the module docs).
_VMW_BALLOON_MAX_MIB_S = 16384 * 4 / 1024
#: Largest rate limit a scenario may set: 100 GiB/s, beyond any memory bus.
_MAX_RATE_MIB_S = 100.0 * 1024

# Excesses smaller than this are rounding noise, not reclamation work.
_EPS_MIB = 1e-6


def _rate(default: float | None, doc: str, source: str) -> float | None:
    return number(default, doc, lo=0.0, hi=_MAX_RATE_MIB_S, unit="MiB/s", optional=True,
                  none="unlimited", none_word="unlimited", source=source)


@dataclass(frozen=True, slots=True)
class PlannerParams:
    """Knobs of :func:`plan_vms` (see the module docs for their sources).

    In a scenario they sit in ``[policy.params]`` of the ``esx`` policy, except
    ``balance_period_s``, which is ``[policy] balance_period`` (the controller's
    period: the rate limits are per period because plans are).
    """

    balance_period_s: float = time(DEFAULT_BALANCE_PERIOD_S, "time between plans "
                                   "(Mem.BalancePeriod)", unit="s", lo=MIN_BALANCE_PERIOD_S,
                                   hi=MAX_BALANCE_PERIOD_S, key=None,
                                   owner="policy.balance_period",
                                   source="[ESX25-p343][VS4-ATTR][VS-ADV70]")
    balloon_inflate_mib_s: float | None = _rate(
        _VMW_BALLOON_MAX_MIB_S, "largest balloon growth per second beyond the current balloon",
        "vmw_balloon's 16 384 pages per 1-s cycle [LINUX-BALLOON]; assumed")
    balloon_deflate_mib_s: float | None = _rate(
        _VMW_BALLOON_MAX_MIB_S, "largest balloon shrink per second",
        "vmw_balloon's largest rate_free [LINUX-BALLOON]; assumed")
    swap_out_mib_s: float | None = _rate(
        None, "largest swap-target growth per second",
        "none published: the swap daemon pages out asynchronously [OSDI02 §3.3]")
    free_target_frac: float = number(
        1.0, "free memory the host steers to, as a multiple of minFree", lo=0.0, hi=10.0,
        unit="x minFree", source="derived from [OSDI02 §6.3][YB-STATES6] (module docs)")

    def __post_init__(self) -> None:
        check(self)

    def step_mib(self, rate_mib_s: float | None) -> float:
        """What ``rate_mib_s`` allows in one balance period (inf for None)."""
        return math.inf if rate_mib_s is None else rate_mib_s * self.balance_period_s


def free_target_mib(host: HostSample, params: PlannerParams) -> float:
    """The free memory the host steers to: ``free_target_frac x minFree``."""
    return params.free_target_frac * host.minfree_mib


def plan_vms(
    host: HostSample,
    vms: Sequence[VmSample],
    targets_mib: Mapping[str, float],
    *,
    params: PlannerParams | None = None,
) -> dict[str, VmPlan]:
    """One plan per powered-on VM: balloon, compress and swap targets for this period.

    Args:
        host: the host sample (its ``state`` and ``profile`` pick the mechanisms).
        vms: the VM samples; powered-off VMs get no plan.
        targets_mib: every powered-on VM's target (entitlement).
        params: rate limits and the free target (defaults: :class:`PlannerParams`).

    Returns:
        VM name -> plan.

    Raises:
        InvariantViolation: a powered-on VM has no target.
    """
    params = params or PlannerParams()
    acts = actions(host.state, host.profile)
    has_compression = get_profile(host.profile).compression
    reclaiming = acts.balloon or acts.swap or acts.swap_fallback
    inflate_step = params.step_mib(params.balloon_inflate_mib_s)
    deflate_step = params.step_mib(params.balloon_deflate_mib_s)
    swap_step = params.step_mib(params.swap_out_mib_s)

    on = [vm for vm in vms if vm.powered_on]
    missing = [vm.name for vm in on if vm.name not in targets_mib]
    if missing:
        raise InvariantViolation(f"no target for powered-on VMs: {', '.join(missing)}")

    giveback = {} if reclaiming else _deflation(host, on, targets_mib, params, deflate_step)
    plans: dict[str, VmPlan] = {}
    for vm in on:
        target = float(targets_mib[vm.name])
        excess = vm.consumed_mib - target
        balloon_now = min(vm.balloon_mib, vm.balloon_max_mib)
        balloon = balloon_now
        swap_more = 0.0
        over_limit = _over_limit_mib(vm)
        if not reclaiming and over_limit > _EPS_MIB:
            # A limit holds in every state [VS-ALLOC]: balloon down to it; what the
            # balloon cannot take stays with the host's swapping at the limit.
            if not vm.balloon_stuck:
                room = max(0.0, vm.balloon_max_mib - balloon_now)
                balloon = balloon_now + min(over_limit, room, inflate_step)
        elif reclaiming and excess > _EPS_MIB:
            rest = excess
            if acts.balloon and not vm.balloon_stuck:
                room = max(0.0, vm.balloon_max_mib - balloon_now)
                balloon_part = min(excess, room)
                balloon = balloon_now + min(balloon_part, inflate_step)
                rest = excess - balloon_part  # beyond the maximum: swap fallback
            elif not acts.balloon and not vm.balloon_stuck:
                # No new inflation in HARD and LOW, but a balloon already asked
                # for keeps inflating, at the same rate limit: swap only what it
                # will not cover.
                pending = max(0.0, min(vm.balloon_target_mib, vm.balloon_max_mib) - balloon_now)
                balloon = balloon_now + min(pending, excess, inflate_step)
                rest = excess - min(pending, excess)
            if (acts.swap or acts.swap_fallback) and rest > _EPS_MIB:
                swap_more = min(rest, swap_step)
        elif not reclaiming:
            balloon = balloon_now - giveback.get(vm.name, 0.0)
        plans[vm.name] = VmPlan(
            target_mib=target,
            balloon_target_mib=max(0.0, min(balloon, vm.balloon_max_mib)),
            swap_target_mib=vm.swapped_mib + vm.compressed_mib + swap_more,
            compress=has_compression and (acts.compress or swap_more > 0),
            blocked=acts.block_allocations and excess > _EPS_MIB,
        )
    return plans


def _over_limit_mib(vm: VmSample) -> float:
    """What a VM with a limit wants beyond it: held, swapped and compressed, less the limit.

    Memory the host swapped or compressed to hold the VM at its limit is
    memory the VM wants; the balloon takes it instead (the guest chooses what
    to give up), so swapping at the limit stops once the balloon holds it.
    """
    if vm.limit_mib is None or vm.limit_mib >= vm.configured_mib:
        return -math.inf  # no limit: nothing is ever over it
    return vm.consumed_mib + vm.swapped_mib + vm.compressed_mib - vm.ceiling_mib


def _deflation(
    host: HostSample,
    vms: Sequence[VmSample],
    targets_mib: Mapping[str, float],
    params: PlannerParams,
    deflate_step: float,
) -> dict[str, float]:
    """Balloon MiB to give back per VM in a state without reclamation (module docs)."""
    wants = {}
    for vm in vms:
        # Never deflate a VM with a limit back over it (it would swap at once).
        headroom = min(targets_mib[vm.name] - vm.consumed_mib, -_over_limit_mib(vm))
        balloon_now = min(vm.balloon_mib, vm.balloon_max_mib)
        if vm.balloon_stuck or headroom <= _EPS_MIB or balloon_now <= 0:
            continue
        wants[vm.name] = min(headroom, balloon_now, deflate_step)
    asked = sum(wants.values())
    budget = max(0.0, host.free_mib - free_target_mib(host, params))
    if asked <= budget:
        return wants
    scale = budget / asked
    return {name: want * scale for name, want in wants.items()}
