"""Policies: the ESX policy and the baselines it is compared against, by name.

What is modelled
----------------
A policy turns one host sample and the VM samples into :class:`Plans`
(DESIGN.md §4). Four are registered in :data:`POLICIES`:

* ``esx`` (default, :class:`EsxPolicy`): share-based entitlement with the idle
  memory tax and min-funding revocation (:mod:`hvmem.policy.entitlement`,
  [OSDI02 §5]), the host memory states (:mod:`hvmem.policy.states`) and the
  reclamation planner (:mod:`hvmem.policy.planner`, [OSDI02 §6.3][YB-STATES6]).
* ``static`` (:class:`StaticPolicy`): no reclamation at all, to show what happens
  without it: balloons deflated, nothing swapped, no sharing.
* ``mom`` (:class:`MomPolicy`): oVirt MOM's balloon and KSM rules, ported from
  ``oVirt/vdsm:static/etc/vdsm/mom.d/02-balloon.policy`` and ``03-ksm.policy``
  (peers.md §1.1-1.2).
* ``proxmox`` (:class:`ProxmoxPolicy`): Proxmox VE auto-ballooning,
  ``PVE::AutoBalloon::compute_alg1`` driven as ``pvestatd`` does (peers.md §3).

Vocabulary of the KVM baselines, mapped onto the samples: their "balloon" is the
*guest memory size* the balloon leaves the guest (libvirt ``balloon_cur``, QMP
``actual``), i.e. ``configured_mib - balloon_mib``; their balloon target is a
guest size too, which the port turns back into ``balloon_target_mib =
configured - size``. Their "free host memory" counts page cache as free
(``MemFree + Buffers + Cached``), i.e. ``free_mib + cache_mib``. Neither drives
hypervisor swapping or compression: their plans hold ``swap_target_mib`` at what
is already swapped and never block. Every policy keeps balloon targets within
``[0, balloon_max_mib]`` (the backend's physical limit), which the KVM rules
never approach in practice because they floor guest memory at its used size.

:func:`make_policy` builds one by name; an unknown name raises
:class:`~hvmem.errors.ConfigError` listing the known ones. Parameters are frozen
dataclasses with the sources' defaults.

Sources: ESX keys resolve in ``reference/esx-memory.md`` §9; the baselines cite
``owner/repo:path`` at the commits read (line numbers refer to those commits).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from hvmem.errors import ConfigError
from hvmem.policy.entitlement import (
    DEFAULT_TAX_FRAC,
    EntitlementResult,
    available_for_vms_mib,
    compute_targets,
    idle_cost,
)
from hvmem.policy.planner import PlannerParams, free_target_mib, plan_vms
from hvmem.policy.samples import HostPlan, HostSample, Plans, SharingMode, VmPlan, VmSample
from hvmem.policy.states import actions

__all__ = [
    "DEFAULT_POLICY",
    "POLICIES",
    "EsxParams",
    "EsxPolicy",
    "MomParams",
    "MomPolicy",
    "Policy",
    "ProxmoxParams",
    "ProxmoxPolicy",
    "StaticPolicy",
    "make_policy",
]


@runtime_checkable
class Policy(Protocol):
    """Pure decision logic: samples in, plans out (DESIGN.md §4).

    Attributes:
        name: the registry name (``"esx"``, ``"static"``, ``"mom"``, ``"proxmox"``).
    """

    name: str

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Mapping[str, VmPlan]:
        """Decide one balance period: one plan per powered-on VM."""
        ...


def _powered_on(vms: Sequence[VmSample]) -> list[VmSample]:
    return [vm for vm in vms if vm.powered_on]


def _held_swap(vm: VmSample) -> float:
    return vm.swapped_mib + vm.compressed_mib


def _clamp_balloon(vm: VmSample, balloon_mib: float) -> float:
    return max(0.0, min(balloon_mib, vm.balloon_max_mib))


# -- esx -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EsxParams:
    """Parameters of :class:`EsxPolicy`.

    Attributes:
        tax_frac: idle memory tax rate tau (``Mem.IdleTax`` = 75 % [OSDI02 §5.2][LAMW]).
        planner: rate limits, balance period and free target (:class:`PlannerParams`).
    """

    tax_frac: float = DEFAULT_TAX_FRAC
    planner: PlannerParams = field(default_factory=PlannerParams)

    def __post_init__(self) -> None:
        idle_cost(self.tax_frac)  # ConfigError for a bad rate


class EsxPolicy:
    """ESX memory management: entitlement, memory states, balloon/compress/swap split.

    Per balance period [OSDI02 §6.3] (esx-memory.md §1.9, §3.1, §3.4):

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

    def __init__(self, params: EsxParams | None = None) -> None:
        self.params = params or EsxParams()
        self.last_entitlement: EntitlementResult | None = None

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Plans:
        """Plan one balance period (see the class docs)."""
        on = _powered_on(vms)
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
    comparison (peers.md §8: every baseline on the same trace).
    """

    name = "static"
    params_type: type = type(None)

    def __init__(self, params: None = None) -> None:
        self.params = params

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Plans:
        """Plan one balance period: nothing reclaimed."""
        vm_plans = {
            vm.name: VmPlan(target_mib=vm.ceiling_mib, balloon_target_mib=0.0, swap_target_mib=0.0)
            for vm in _powered_on(vms)
        }
        return Plans(vm_plans, HostPlan(sharing=SharingMode.STOP, state=host.state))


# -- mom -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MomParams:
    """Constants of oVirt MOM's vdsm policy files (defaults as shipped).

    Balloon rules, ``oVirt/vdsm:static/etc/vdsm/mom.d/02-balloon.policy`` (commit
    3fa92bb), lines 6-21; KSM rules, ``03-ksm.policy`` (commit 3efdb54), lines 8-26.

    Attributes:
        pressure_threshold_frac: host free fraction below which guests shrink
            (``pressure_threshold`` 0.20, line 6).
        pressure_critical_frac: critical pressure (``pressure_critical`` 0.05, line 10).
        min_guest_free_frac: free fraction an unconstrained guest keeps
            (``min_guest_free_percent`` 0.20, line 14).
        max_balloon_change_frac: largest change per step, of the current size
            (``max_balloon_change_percent`` 0.05, line 17).
        min_balloon_change_frac: deadband (``min_balloon_change_percent`` 0.0025,
            line 21).
        balloon_enabled: the engine switch ``balloonEnabled`` (vdsm's
            00-defines.policy ships 0 and oVirt engine turns it on per cluster;
            True here, or the baseline would never shrink a guest).
        ksm_enabled: the engine switch ``ksmEnabled``.
        ksm_free_frac: ``ksm_free_percent`` 0.20 (03-ksm.policy line 26).
        ksm_pages_boost: ``ksm_pages_boost`` 300 (line 8).
        ksm_pages_decay: ``ksm_pages_decay`` -50 (line 11).
        ksm_npages_min: ``ksm_npages_min`` 64 (line 14).
        ksm_npages_max: ``ksm_npages_max`` 1250 (line 15).
        ksm_sleep_ms_baseline: ``ksm_sleep_ms_baseline`` 10 ms for a 16 GiB host (line 19).
        ksm_pages_to_scan_initial: ``pages_to_scan`` before MOM's first change
            when the backend reports none (the kernel's default, 100:
            torvalds/linux:Documentation/admin-guide/mm/ksm.rst, peers.md §5.1).
        history_len: samples ``StatAvg`` averages over (``sample-history-length``
            10, oVirt/mom:mom/Entity.py).
    """

    pressure_threshold_frac: float = 0.20
    pressure_critical_frac: float = 0.05
    min_guest_free_frac: float = 0.20
    max_balloon_change_frac: float = 0.05
    min_balloon_change_frac: float = 0.0025
    balloon_enabled: bool = True
    ksm_enabled: bool = True
    ksm_free_frac: float = 0.20
    ksm_pages_boost: int = 300
    ksm_pages_decay: int = -50
    ksm_npages_min: int = 64
    ksm_npages_max: int = 1250
    ksm_sleep_ms_baseline: float = 10.0
    ksm_pages_to_scan_initial: int = 100
    history_len: int = 10

    def __post_init__(self) -> None:
        if not 0 < self.pressure_critical_frac < self.pressure_threshold_frac <= 1:
            raise ConfigError(
                "mom: need 0 < pressure_critical_frac < pressure_threshold_frac <= 1, found "
                f"{self.pressure_critical_frac} and {self.pressure_threshold_frac}"
            )
        if self.history_len < 1:
            raise ConfigError(f"mom: history_len must be at least 1, found {self.history_len}")
        if not self.ksm_npages_min <= self.ksm_npages_max:
            raise ConfigError("mom: ksm_npages_min must not exceed ksm_npages_max")


class MomPolicy:
    """oVirt MOM's balloon and KSM rules (peers.md §1.1, §1.2), in Python.

    Balloon rules, ``02-balloon.policy`` (sizes are guest memory: ``cur =
    configured - balloon``; ``StatAvg`` is the mean over the last ``history_len``
    plans, which MOM takes over its monitor samples)::

        host_free = StatAvg(free + cache) / total                        # line 110
        per guest with guest_free known (line 118-121):
          if host_free < 0.20 and balloon_enabled: shrink else grow       # lines 112-116
          guest_free_frac = host_free - 0.05       if host_free <= 0.05   # lines 37-44, 68-75
                          = 0.20 * host_free / 0.20 otherwise
          floor = max(reservation, StatAvg(cur) - StatAvg(guest_free)
                      + guest_free_frac * cur)                           # lines 47-50, 80-83
          shrink: size = max(cur * 0.95, floor); set if size <= cur      # lines 52-62
          grow (only if cur < configured):
                  size = min(max(cur * 1.05, floor), configured)          # lines 85-95
          set only if |size - cur| > 0.0025 * cur                        # lines 27-32
        QoS: if cur < reservation: set reservation                        # lines 127-133

    KSM rules, ``03-ksm.policy``::

        thresh = 0.20 * total; committed = sum(configured + overhead)    # lines 86-87
        action = unmerge if shared > 0 and not ksm_enabled else none     # lines 59-77
        if (thresh + committed < total and StatAvg(free + cache) > thresh)
           or not ksm_enabled or action: run = action (stop / unmerge)    # lines 104-108
        else: run; sleep_ms = max(10, 10 * 16 GiB / total)               # lines 109-113
              pages_to_scan += 300 if StatAvg(free + cache) < thresh else -50,
              clamped to [64, 1250]                                       # lines 29-35, 114-116

    Differences from MOM, all forced by the model: ``committed`` is the VMs'
    configured memory plus overhead (MOM sums ``ps -ovsz`` of qemu processes,
    oVirt/mom:mom/Collectors/HostKSM.py); the NUMA ``merge_across_nodes`` rule has
    nothing to act on; a guest that reports no free memory is skipped, as MOM
    does (line 119); plans hold balloon targets that MOM would leave alone.
    """

    name = "mom"
    params_type: type = MomParams

    def __init__(self, params: MomParams | None = None) -> None:
        self.params = params or MomParams()
        self._host_free: deque[float] = deque(maxlen=self.params.history_len)
        self._cur: dict[str, deque[float]] = {}
        self._unused: dict[str, deque[float]] = {}
        self._pages_to_scan: int | None = None

    def _average(self, store: dict[str, deque[float]], name: str, value: float) -> float:
        history = store.setdefault(name, deque(maxlen=self.params.history_len))
        history.append(value)
        return sum(history) / len(history)

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Plans:
        """Plan one policy interval with MOM's rules (see the class docs)."""
        on = _powered_on(vms)
        names = {vm.name for vm in on}
        for store in (self._cur, self._unused):
            for gone in set(store) - names:
                del store[gone]
        self._host_free.append(host.free_mib + host.cache_mib)
        avg_free = sum(self._host_free) / len(self._host_free)
        host_free_frac = avg_free / host.total_mib

        vm_plans = {}
        for vm in on:
            size = self._guest_size(vm, host_free_frac)
            balloon = vm.balloon_target_mib if size is None else vm.configured_mib - size
            balloon = _clamp_balloon(vm, balloon)
            vm_plans[vm.name] = VmPlan(
                target_mib=vm.configured_mib - balloon,
                balloon_target_mib=balloon,
                swap_target_mib=_held_swap(vm),
            )
        return Plans(vm_plans, self._ksm(host, on, avg_free))

    def _guest_size(self, vm: VmSample, host_free_frac: float) -> float | None:
        """New guest memory size for ``vm``, or None to leave its balloon alone."""
        cur = vm.configured_mib - vm.balloon_mib  # balloon_cur
        size: float | None = None
        if vm.guest_free_mib is None:  # "Memory information is missing" (line 121)
            self._cur.pop(vm.name, None)
            self._unused.pop(vm.name, None)
        else:
            size = self._balloon_rule(vm, cur, vm.guest_free_mib, host_free_frac)
        if cur < vm.reservation_mib:  # guest_qos runs for every guest (lines 127-133)
            size = vm.reservation_mib
        return size

    def _balloon_rule(
        self, vm: VmSample, cur: float, guest_free_mib: float, host_free_frac: float
    ) -> float | None:
        """``balloon_logic``: shrink_guest or grow_guest (lines 34-97, 112-116)."""
        p = self.params
        avg_cur = self._average(self._cur, vm.name, cur)
        avg_unused = self._average(self._unused, vm.name, guest_free_mib)
        if host_free_frac <= p.pressure_critical_frac:
            guest_free_frac = host_free_frac - p.pressure_critical_frac
        else:
            guest_free_frac = p.min_guest_free_frac * host_free_frac / p.pressure_threshold_frac
        floor = max(vm.reservation_mib, avg_cur - avg_unused + guest_free_frac * cur)
        if host_free_frac < p.pressure_threshold_frac and p.balloon_enabled:
            candidate = max(cur * (1 - p.max_balloon_change_frac), floor)
            if candidate <= cur and self._big_enough(candidate, cur):
                return candidate
        elif cur < vm.configured_mib:
            candidate = max(cur * (1 + p.max_balloon_change_frac), floor)
            candidate = min(candidate, vm.configured_mib)
            if self._big_enough(candidate, cur):
                return candidate
        return None

    def _big_enough(self, size: float, cur: float) -> bool:
        return abs(size - cur) > self.params.min_balloon_change_frac * cur

    def _ksm(self, host: HostSample, on: Sequence[VmSample], avg_free: float) -> HostPlan:
        p = self.params
        thresh = host.total_mib * p.ksm_free_frac
        committed = sum(vm.configured_mib + vm.overhead_mib for vm in on)
        action = (
            SharingMode.UNMERGE
            if host.shared_saved_mib > 0 and not p.ksm_enabled
            else SharingMode.STOP
        )
        # MOM reads the kernel's pages_to_scan each time (line 31); remember our own
        # last setting for backends that do not report it.
        current = host.sharing_pages_to_scan
        if current is None:
            current = self._pages_to_scan or p.ksm_pages_to_scan_initial
        if (
            (thresh + committed < host.total_mib and avg_free > thresh)
            or not p.ksm_enabled
            or action is SharingMode.UNMERGE
        ):
            return HostPlan(sharing=action, scan_pages=current, state=host.state)
        # 10 ms for a 16 GiB (16384 MiB) host, less on bigger hosts (line 111-113).
        sleep_ms = max(10.0, p.ksm_sleep_ms_baseline * 16384 / host.total_mib)
        delta = p.ksm_pages_boost if avg_free < thresh else p.ksm_pages_decay
        pages = min(p.ksm_npages_max, max(p.ksm_npages_min, current + delta))
        self._pages_to_scan = pages
        return HostPlan(
            sharing=SharingMode.RUN, scan_pages=pages, scan_sleep_ms=sleep_ms, state=host.state
        )


# -- proxmox ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProxmoxParams:
    """Parameters of Proxmox VE auto-ballooning (peers.md §3).

    Attributes:
        target_frac: host memory use to steer to (node option ``ballooning-target``,
            default 80 %; proxmox/pve-manager:PVE/Service/pvestatd.pm).
        max_change_mib: largest change of one VM's balloon per round
            (``$maxchange = 100*1024*1024``, pvestatd.pm).
        deadband_mib: do nothing while ``|goal|`` is at most this (``10 * 1024 * 1024``,
            PVE/AutoBalloon.pm lines 119, 129).
        interval_s: time between rounds (``$updatetime = 10``, pvestatd.pm); plans
            asked for sooner hold the previous balloon targets.
        default_shares: shares of a VM with none set (``$d->{shares} || 1000``,
            AutoBalloon.pm lines 31, 43).
        comfortable_free_frac: a VM whose guest reports more free memory than this
            fraction of its minimum is "comfortable" (0.25, AutoBalloon.pm line 106).
    """

    target_frac: float = 0.80
    max_change_mib: float = 100.0
    deadband_mib: float = 10.0
    interval_s: float = 10.0
    default_shares: int = 1000
    comfortable_free_frac: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_frac <= 1.0:
            raise ConfigError(f"proxmox: target_frac must be in [0, 1], found {self.target_frac}")
        for what in ("max_change_mib", "deadband_mib", "interval_s"):
            value = getattr(self, what)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"proxmox: {what} must be non-negative, found {value}")


@dataclass(slots=True)
class _PveVm:
    """One VM as ``compute_alg1`` sees it (MiB; ``balloon`` is the guest size)."""

    name: str
    balloon: float
    balloon_min: float
    maxmem: float
    shares: int
    freemem: float


class ProxmoxPolicy:
    """Proxmox VE auto-ballooning: ``pvestatd`` + ``PVE::AutoBalloon::compute_alg1``.

    Every ``interval_s`` (10 s)::

        goal = total * 0.80 - used            # used = total - free - cache (pvestatd.pm)
        if goal > 10 MiB: grow VMs under pressure first, then all    # AutoBalloon.pm 119-128
        if goal < -10 MiB: shrink comfortable VMs first, then all    # AutoBalloon.pm 129-138
        water-filling (lines 11-87): desired = balloon_min
            + alloc_new / shares_total * shares, clamped to [balloon_min, maxmem];
            each VM moves from its current size toward desired by <= 100 MiB;
            repeat while memory is left, something was clamped and progress was made

    Eligibility (lines 93-100): the balloon driver works (not ``balloon_stuck``,
    ``balloon_max_mib > 0``), a minimum is set, shares are not 0. Comfortable
    (line 104-113): guest free > 0.25 x minimum and size >= minimum.

    Mapping onto the samples: ``balloon`` (guest size) = ``configured -
    balloon_mib``; ``maxmem`` = ``configured``; ``balloon_min`` (the ``balloon:``
    config value) = ``max(reservation, configured - balloon_max_mib)``, the
    smallest size the balloon can reach; ``freemem`` = ``guest_free_mib`` (0 when
    unknown); shares as sampled (0 opts out, as in Proxmox). Sizes are not
    truncated to whole bytes (``int()`` in line 44). VMs ``compute_alg1`` leaves
    alone keep their balloon target.
    """

    name = "proxmox"
    params_type: type = ProxmoxParams

    def __init__(self, params: ProxmoxParams | None = None) -> None:
        self.params = params or ProxmoxParams()
        self._last_round_s: float | None = None
        self._last_balloon: dict[str, float] = {}
        self.last_goal_mib: float | None = None

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Plans:
        """Plan one round (or hold the last one if ``interval_s`` has not passed)."""
        p = self.params
        on = _powered_on(vms)
        due = self._last_round_s is None or host.time_s - self._last_round_s >= p.interval_s
        sizes: dict[str, float] = {}
        if due:
            self._last_round_s = host.time_s
            goal = host.total_mib * p.target_frac - host.used_mib
            self.last_goal_mib = goal
            sizes = self._compute_alg1(on, goal)
        vm_plans = {}
        for vm in on:
            if vm.name in sizes:
                balloon = vm.configured_mib - sizes[vm.name]
            elif not due and vm.name in self._last_balloon:
                balloon = self._last_balloon[vm.name]
            else:
                balloon = vm.balloon_target_mib
            balloon = _clamp_balloon(vm, balloon)
            self._last_balloon[vm.name] = balloon
            vm_plans[vm.name] = VmPlan(
                target_mib=vm.configured_mib - balloon,
                balloon_target_mib=balloon,
                swap_target_mib=_held_swap(vm),
            )
        for gone in set(self._last_balloon) - {vm.name for vm in on}:
            del self._last_balloon[gone]
        # KSM is ksmtuned's business on Proxmox, not pvestatd's (peers.md §3).
        return Plans(vm_plans, HostPlan(sharing=None, state=host.state))

    def _compute_alg1(self, on: Sequence[VmSample], goal: float) -> dict[str, float]:
        """``compute_alg1($vmstatus, $goal, $maxchange)``: new guest sizes of the VMs it moves."""
        p = self.params
        eligible: list[_PveVm] = []
        pressured: list[_PveVm] = []  # idlist1
        comfortable: list[_PveVm] = []  # idlist2
        for vm in on:
            if vm.balloon_stuck or vm.balloon_max_mib <= 0 or vm.shares == 0:
                continue
            d = _PveVm(
                name=vm.name,
                balloon=vm.configured_mib - vm.balloon_mib,
                balloon_min=max(vm.reservation_mib, vm.configured_mib - vm.balloon_max_mib),
                maxmem=vm.configured_mib,
                shares=vm.shares or p.default_shares,
                freemem=vm.guest_free_mib or 0.0,
            )
            if d.balloon_min <= 0:  # "skip if balloon value not set in config"
                continue
            eligible.append(d)
            if (
                d.freemem
                and d.freemem > d.balloon_min * p.comfortable_free_frac
                and d.balloon >= d.balloon_min
            ):
                comfortable.append(d)
            else:
                pressured.append(d)
        res: dict[str, float] = {}
        if goal > p.deadband_mib:
            rest = self._change(res, pressured, goal)
            if rest >= goal:  # no progress ==> consider all VMs
                self._change(res, eligible, rest)
        elif goal < -p.deadband_mib:
            rest = self._change(res, comfortable, goal)
            if rest <= goal:
                self._change(res, eligible, rest)
        return res

    def _change(self, res: dict[str, float], vms: Sequence[_PveVm], amount: float) -> float:
        """``$change_func`` (AutoBalloon.pm lines 11-87); returns the amount not placed."""
        maxchange = self.params.max_change_mib
        rest, repeat, progress = amount, True, True
        done: set[str] = set()
        while rest and repeat and progress:
            repeat = progress = False
            live = [d for d in vms if d.name not in done]
            alloc_old = sum(res.get(d.name, d.balloon) - d.balloon_min for d in live)
            shares_total = sum(d.shares for d in live)
            alloc_new = alloc_old + rest
            changes = 0.0
            for d in live:
                desired = d.balloon_min + alloc_new / shares_total * d.shares
                if desired > d.maxmem:
                    desired, repeat = d.maxmem, True
                elif desired < d.balloon_min:
                    desired, repeat = d.balloon_min, True
                if amount > 0 and desired - d.balloon > 0:  # grow
                    balloon = min(d.balloon + maxchange, desired)
                elif desired - d.balloon < 0:  # shrink
                    balloon = max(d.balloon - maxchange, desired)
                else:
                    done.add(d.name)
                    continue
                if balloon != d.balloon:
                    change = balloon - res.get(d.name, d.balloon)
                    res[d.name] = balloon
                    if change != 0:
                        changes += change
                        progress = repeat = True
            rest -= changes
        return rest


# -- registry --------------------------------------------------------------------------

#: The policy used when none is named.
DEFAULT_POLICY = "esx"

#: Name -> policy class; each takes its ``params_type`` instance (or None for defaults).
POLICIES: Mapping[str, type[EsxPolicy | StaticPolicy | MomPolicy | ProxmoxPolicy]] = (
    MappingProxyType(
        {
            "esx": EsxPolicy,
            "static": StaticPolicy,
            "mom": MomPolicy,
            "proxmox": ProxmoxPolicy,
        }
    )
)


def make_policy(name: str = DEFAULT_POLICY, params: Any = None) -> Policy:
    """Build a registered policy by name.

    Args:
        name: one of :data:`POLICIES` (``esx``, ``static``, ``mom``, ``proxmox``).
        params: the policy's parameter dataclass, or None for the defaults.

    Raises:
        ConfigError: an unknown name (the message lists the known ones), or
            parameters of the wrong type.
    """
    cls = POLICIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")
    if params is not None and not isinstance(params, cls.params_type):
        raise ConfigError(
            f"policy {name}: expected {cls.params_type.__name__} parameters, "
            f"found {type(params).__name__}"
        )
    return cls(params)
