"""The KVM baselines: oVirt MOM's rules and Proxmox VE auto-ballooning.

* ``mom`` (:class:`MomPolicy`): oVirt MOM's balloon and KSM rules, ported from
  ``oVirt/vdsm:static/etc/vdsm/mom.d/02-balloon.policy`` and ``03-ksm.policy``
  [MOM].
* ``proxmox`` (:class:`ProxmoxPolicy`): Proxmox VE auto-ballooning,
  ``PVE::AutoBalloon::compute_alg1`` driven as ``pvestatd`` does [PVE-BALLOON].

Vocabulary, mapped onto the samples: their "balloon" is the *guest memory size*
the balloon leaves the guest (libvirt ``balloon_cur``, QMP ``actual``), i.e.
``configured_mib - balloon_mib``; their balloon target is a guest size too,
which the port turns back into ``balloon_target_mib = configured - size``.
Their "free host memory" counts page cache as free (``MemFree + Buffers +
Cached``), i.e. ``free_mib + cache_mib``. Neither drives hypervisor swapping or
compression: their plans hold ``swap_target_mib`` at what is already swapped
and never block. Balloon targets stay within ``[0, balloon_max_mib]`` (the
backend's physical limit), which the rules never approach in practice because
they floor guest memory at its used size.

Parameters are declared with the sources' defaults (:mod:`hvmem.params`); a
scenario sets them in ``[policy.params]``. The baselines cite ``owner/repo:path``
at the commits read (line numbers refer to those commits).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from hvmem.params import check, fail, flag, frac, number, time, whole
from hvmem.policy.samples import (
    HostPlan,
    HostSample,
    Plans,
    SharingMode,
    VmPlan,
    VmSample,
    powered_on,
)

__all__ = ["MomParams", "MomPolicy", "ProxmoxParams", "ProxmoxPolicy"]

_BALLOON = "oVirt/vdsm:static/etc/vdsm/mom.d/02-balloon.policy (3fa92bb)"
_KSM = "oVirt/vdsm:static/etc/vdsm/mom.d/03-ksm.policy (3efdb54)"
_PVESTATD = "proxmox/pve-manager:PVE/Service/pvestatd.pm"
_AUTOBALLOON = "proxmox/pve-manager:PVE/AutoBalloon.pm"
# Bounds of KSM's page counts: the kernel takes any pages_to_scan; a million pages a
# wake-up is already far beyond what MOM's rules reach (1250).
_MAX_KSM_PAGES = 1_000_000
# compute_alg1 counts whole bytes (int() in AutoBalloon.pm line 44), so a round that
# moves no VM by a byte is no progress and ends its loop; sizes here are not truncated,
# and float rounding alone can move a VM back and forth by 2e-13 MiB for ever (demo at
# aggregate fidelity, seed 2: web between 1935.31328125 and 1935.3132812499998 MiB).
_BYTE_MIB = 1.0 / (1 << 20)


def _held_swap(vm: VmSample) -> float:
    return vm.swapped_mib + vm.compressed_mib


def _clamp_balloon(vm: VmSample, balloon_mib: float) -> float:
    return max(0.0, min(balloon_mib, vm.balloon_max_mib))


# -- mom -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MomParams:
    """Constants of oVirt MOM's vdsm policy files (defaults as shipped).

    Balloon rules, ``02-balloon.policy`` lines 6-21; KSM rules, ``03-ksm.policy``
    lines 8-26; ``balloon_enabled`` and ``ksm_enabled`` are the engine's switches
    ``balloonEnabled`` and ``ksmEnabled`` (vdsm's 00-defines.policy ships 0 and
    oVirt engine turns them on per cluster; on here, or the baseline would never
    shrink a guest).
    """

    pressure_threshold_frac: float = frac(
        0.20, "host free fraction below which guests shrink (pressure_threshold)", lo=0.0,
        lo_open=True, source=f"{_BALLOON} line 6")
    pressure_critical_frac: float = frac(
        0.05, "critical pressure (pressure_critical)", lo=0.0, lo_open=True, hi_open=True,
        source=f"{_BALLOON} line 10")
    min_guest_free_frac: float = frac(
        0.20, "free fraction an unconstrained guest keeps (min_guest_free_percent)",
        source=f"{_BALLOON} line 14")
    max_balloon_change_frac: float = frac(
        0.05, "largest change per step, of the current size (max_balloon_change_percent)",
        source=f"{_BALLOON} line 17")
    min_balloon_change_frac: float = frac(
        0.0025, "deadband: smaller changes are not made (min_balloon_change_percent)",
        source=f"{_BALLOON} line 21")
    balloon_enabled: bool = flag(True, "the engine switch balloonEnabled: shrink guests at all",
                                 source="oVirt engine, per cluster")
    ksm_enabled: bool = flag(True, "the engine switch ksmEnabled: run KSM at all",
                             source="oVirt engine, per cluster")
    ksm_free_frac: float = frac(0.20, "host free fraction below which KSM scans harder "
                                "(ksm_free_percent)", source=f"{_KSM} line 26")
    ksm_pages_boost: int = whole(300, "pages_to_scan added under pressure (ksm_pages_boost)",
                                 lo=0, hi=_MAX_KSM_PAGES, source=f"{_KSM} line 8")
    ksm_pages_decay: int = whole(-50, "pages_to_scan added without pressure (ksm_pages_decay)",
                                 lo=-_MAX_KSM_PAGES, hi=0, source=f"{_KSM} line 11")
    ksm_npages_min: int = whole(64, "least pages_to_scan (ksm_npages_min)", lo=0,
                                hi=_MAX_KSM_PAGES, source=f"{_KSM} line 14")
    ksm_npages_max: int = whole(1250, "most pages_to_scan (ksm_npages_max)", lo=0,
                                hi=_MAX_KSM_PAGES, source=f"{_KSM} line 15")
    ksm_sleep_ms_baseline: float = time(
        10.0, "KSM's sleep between scans on a 16 GiB host (ksm_sleep_ms_baseline)", unit="ms",
        lo=0.0, lo_open=True, hi=10_000.0, key="ksm_sleep_baseline", source=f"{_KSM} line 19")
    ksm_pages_to_scan_initial: int = whole(
        100, "pages_to_scan before MOM's first change when the backend reports none (the "
        "kernel's default)", lo=0, hi=_MAX_KSM_PAGES,
        source="[LINUX-KSM]")
    history_len: int = whole(10, "samples StatAvg averages over (sample-history-length)", lo=1,
                             hi=10_000, source="oVirt/mom:mom/Entity.py")

    def __post_init__(self) -> None:
        check(self)
        if self.pressure_critical_frac >= self.pressure_threshold_frac:
            raise fail(self, "pressure_critical_frac", f"less than pressure_threshold_frac "
                       f"({self.pressure_threshold_frac})")
        if self.ksm_npages_min > self.ksm_npages_max:
            raise fail(self, "ksm_npages_min", f"at most ksm_npages_max ({self.ksm_npages_max})")


class MomPolicy:
    """oVirt MOM's balloon and KSM rules [MOM], in Python.

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
        on = powered_on(vms)
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
    """Parameters of Proxmox VE auto-ballooning [PVE-BALLOON]."""

    target_frac: float = frac(0.80, "host memory use to steer to (node option "
                              "ballooning-target)", source=_PVESTATD)
    max_change_mib: float = number(100.0, "largest change of one VM's balloon per round "
                                   "($maxchange)", lo=0.0, hi=1024.0 * 1024, unit="MiB",
                                   source=_PVESTATD)
    deadband_mib: float = number(10.0, "do nothing while |goal| is at most this", lo=0.0,
                                 hi=1024.0 * 1024, unit="MiB",
                                 source=f"{_AUTOBALLOON} lines 119, 129")
    interval_s: float = time(10.0, "time between rounds ($updatetime); plans asked for sooner "
                             "hold the previous balloon targets", unit="s", lo=0.0,
                             lo_open=True, hi=3600.0, source=_PVESTATD)
    default_shares: int = whole(1000, "shares of a VM with none set", lo=0, hi=1_000_000,
                                source=f"{_AUTOBALLOON} lines 31, 43")
    comfortable_free_frac: float = frac(0.25, "a VM whose guest reports more free memory than "
                                        "this fraction of its minimum is comfortable",
                                        source=f"{_AUTOBALLOON} line 106")

    def __post_init__(self) -> None:
        check(self)


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
    truncated to whole bytes (``int()`` in line 44), but a round that moves no
    VM by a byte ends the loop, as it does there. VMs ``compute_alg1`` leaves
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
        on = powered_on(vms)
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
        # KSM is ksmtuned's business on Proxmox, not pvestatd's [PVE-BALLOON].
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
                    if abs(change) >= _BYTE_MIB:
                        changes += change
                        progress = repeat = True
            rest -= changes
        return rest
