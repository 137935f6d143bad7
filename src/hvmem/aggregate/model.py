"""A batch of hosts as arrays: their VMs' masses, parameters and counters.

Layout. Every array's first axes are (host, VM slot); a VM's classes follow
(``aggregate/classes.py``: row 0 the guest's free list, row 1 its balloon,
then the workload's classes), then the backing state (``kernel.py``)::

    m      int64   [H, V, C, 9]   pages by class and state
    tp wp  float64 [H, V, C]      touch and write probability per tick
    ck     int8    [H, V, C]      content kind (zero, image, private; -1 none)
    slo shi float64 [H, V, C]     a swept class's span in sweep coordinates
    q      float64 [H, V, C]      chance of a touch since the sampling period began
    heat   int64   [H, V, C]      the classes, coldest first (-1 pads)
    ft     float64 [H, V, C, 4B]  B sub-blocks of each class: touch chances, shares of
                                  the never-touched pages, shares of all pages, chance
                                  of a touch since the sampling period began
    vm     float64 [H, V, 52]     per-VM parameters and state (kernel.V_*)
    cnt    float64 [H, V, 8]      per-VM counters (kernel.K_*)
    host   float64 [H, 46]        per-host parameters and state (kernel.H_*)

A host of 32 VMs with 20 classes each is 32 x 22 x 8 masses, 45 KiB: a
thousand hosts fit in 50 MiB. The kernel walks them host by host; Python
touches a VM only when its workload changes phase, it powers on or off, or
the policy decides (``aggregate/backend.py``), never per tick.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from hvmem.aggregate import kernel as k
from hvmem.aggregate.balloon import judge, report_free
from hvmem.aggregate.classes import WorkloadClasses, workload_classes
from hvmem.aggregate.phases import FRESH, PhaseStarts, start_phase
from hvmem.aggregate.unmerge import unmerge
from hvmem.core.period import Period
from hvmem.core.rng import RngStreams
from hvmem.guest.balloon_driver import REPORT_PERIOD_NS
from hvmem.guest.reclaim import linux_watermarks_pages
from hvmem.hypervisor.large_pages import LARGE_PAGE_BREAKS_PER_S
from hvmem.hypervisor.reclaim.sharing import default_scan_rate_pages_per_s
from hvmem.hypervisor.sampling import PROFILE_SAMPLING
from hvmem.policy.minfree import thresholds as make_thresholds
from hvmem.policy.state_tracker import DEFAULT_EXIT_MARGIN_FRAC
from hvmem.policy.states import ExitRule, MemState, actions, get_profile
from hvmem.scenario.schema import HostConfig, Scenario, VmConfig
from hvmem.units import NS_PER_S, PAGE_SHIFT, pages_to_mib


def salted_across(sc: Scenario) -> bool:
    """Whether every VM's pages share with every other's: one salt for all of them.

    ``across`` salting, or ``explicit`` salting where every VM has the same salt
    (``check_aggregate`` refuses salts neither all equal nor all different).
    """
    sh = sc.host.sharing
    if sh.salting == "explicit":
        return len({vm.salt or 0 for vm in sc.vms}) == 1
    return sh.salting == "across"


class VmSlot:
    """Python's side of one VM slot: its configuration, classes, phase starts and clock."""

    def __init__(self, cfg: VmConfig, starts: PhaseStarts) -> None:
        self.config = cfg
        self.starts = starts
        self.phase = -1
        self.phase_end_ns = 0.0
        self.started_ns = 0
        self.plan = None

    @property
    def classes(self) -> WorkloadClasses:
        """The workload's classes (those its phase starts are worked out from)."""
        return self.starts.classes


class HostBatch:
    """Hosts stepped together; each built from its own scenario (same tick and VM count).

    Args:
        scenarios: one per host, each with its own seed.
    """

    def __init__(self, scenarios: list[Scenario]) -> None:
        sc0 = scenarios[0]
        self.scenarios = scenarios
        self.tick_ns = sc0.tick_ns
        n_h = len(scenarios)
        n_v = max(len(s.vms) for s in scenarios)
        cache: dict[tuple, PhaseStarts] = {}
        self.slots: list[list[VmSlot]] = []
        n_c = 3
        for sc in scenarios:
            row = []
            for cfg in sc.vms:
                key = (repr(cfg.workload), sc.tick_ns)
                if key not in cache:
                    cache[key] = PhaseStarts(workload_classes(cfg.workload, sc.tick_ns,
                                                              cfg.name))
                starts = cache[key]
                n_c = max(n_c, k.FIRST_CLASS + max(p.pages.size for p in starts.classes.phases))
                row.append(VmSlot(cfg, starts))
            self.slots.append(row)
        shape = (n_h, n_v, n_c)
        self.m = np.zeros((*shape, k.N_STATES), np.int64)
        self.tp = np.zeros(shape)
        self.wp = np.zeros(shape)
        self.ck = np.full(shape, -1, np.int8)
        self.slo = np.full(shape, -1.0)
        self.shi = np.full(shape, -1.0)
        self.q = np.zeros(shape)
        self.heat = np.full(shape, -1, np.int64)
        # A class's sub-blocks and its LRU split's state (layout.py, FT_*).
        self.ft = np.zeros((*shape, k.N_FT))
        self.vm = np.zeros((n_h, n_v, k.N_VM + n_v + 1))
        self.cnt = np.zeros((n_h, n_v, k.N_CNT))
        self.stall = np.zeros((n_h, n_v, k.N_STALL))
        self.host = np.zeros((n_h, k.N_HOST))
        self.rng = np.array([RngStreams(s.seed).seed_for("aggregate") for s in scenarios],
                            dtype=np.uint64)
        t = sc0.timing
        # Per event, exits included (layout.py's costs).
        self.costs = np.array([t.guest_fault_ns, t.hypervisor_fault_ns, t.zero_page_ns,
                               t.cow_copy_ns + t.hypervisor_fault_ns,
                               t.decompress_ns + t.hypervisor_fault_ns, t.balloon_page_ns])
        self.lru = sc0.host.swap_selection == "lru"
        self.thresholds = []
        self._next_phase_ns = math.inf  # the soonest phase change of any running VM
        for h, sc in enumerate(scenarios):
            self._init_host(h, sc)
        self.minfree_pages = np.array([t.minfree_mib * k.PAGES_PER_MIB
                                       for t in self.thresholds])
        self._report = Period(REPORT_PERIOD_NS)  # free page reporting, checked at polls

    # -- set-up ---------------------------------------------------------------------
    def _init_host(self, h: int, sc: Scenario) -> None:
        hc = sc.host
        host = self.host[h]
        host[k.H_TOTAL] = hc.memory_pages
        host[k.H_FREE] = hc.memory_pages
        host[k.H_STATE] = int(MemState.HIGH)
        host[k.H_LARGE_PAGES] = float(bool(hc.large_pages) and hc.paging == "nested")
        host[k.H_SALT_ACROSS] = float(salted_across(sc))
        # A swap-in fault costs the device's read and the exit that serves it, as page
        # fidelity's fault.swap_in charges; the swapper's refill is paced by the device.
        device_ns = sc.timing.swap_in_ns(hc.swap_device)
        host[k.H_SWAP_NS] = device_ns + sc.timing.hypervisor_fault_ns
        host[k.H_REFILL] = max(1, int(sc.tick_ns // max(1.0, device_ns)))
        host[k.H_SHARE_ON] = float(hc.sharing.enabled)
        host[k.H_ZIP_ON] = float(bool(hc.compression.enabled))
        thr = make_thresholds(pages_to_mib(hc.memory_pages), hc.profile,
                              min_free_frac=hc.min_free_frac)
        self.thresholds.append(thr)
        host[k.H_HIGH_MIB] = thr.high_mib
        smp = hc.sampling
        period_ns = smp.period_ns or PROFILE_SAMPLING[hc.profile][0]
        host[k.H_FAST_GAIN] = smp.fast_gain
        host[k.H_SLOW_GAIN] = smp.slow_gain
        host[k.H_FLOOR] = smp.min_active_frac or 0.0
        host[k.H_SAMPLE_TICKS] = max(1, round(period_ns / sc.tick_ns))
        rule = get_profile(hc.profile).exit_rule
        for s in MemState:
            i = int(s)
            if s not in thr.states:
                continue
            lower = thr.lower(s)
            higher = thr.higher(s)
            host[k.H_LOWER + i] = int(lower)
            host[k.H_HIGHER + i] = int(higher)
            host[k.H_ENTER + i] = thr.level_mib(lower) if s != MemState.LOW else -math.inf
            if s == MemState.HIGH:
                host[k.H_EXIT + i] = math.inf
            else:
                base = s if ExitRule(rule) is ExitRule.OWN else higher
                host[k.H_EXIT + i] = thr.level_mib(base) * (1.0 + DEFAULT_EXIT_MARGIN_FRAC)
            act = actions(s, hc.profile)
            host[k.H_SWAP_OK + i] = float(act.swap)
            host[k.H_ZIP_OK + i] = float(act.compress)
            host[k.H_LP_ACTIVE + i] = float(act.break_large_pages)
        host[k.H_LP_LAZY] = float(get_profile(hc.profile).breaks_large_pages)
        host[k.H_LP_BREAK] = LARGE_PAGE_BREAKS_PER_S * k.LARGE_PAGE_PAGES * sc.tick_ns / NS_PER_S

    def power_on(self, h: int, v: int, now_ns: int) -> None:
        """VM slot ``v`` of host ``h`` boots: its kernel's memory backed, the rest free."""
        slot = self.slots[h][v]
        cfg, wc = slot.config, slot.classes
        sc = self.scenarios[h]
        n = cfg.memory_pages
        gc = cfg.guest_config()
        kernel_pages = (n * gc.kernel_bytes_per_page) >> PAGE_SHIFT
        wmin, low, high = linux_watermarks_pages(n)
        vm = self.vm[h, v]
        # The row also holds image group ``v``'s shared frames (``V_GROUP_FRAMES``, and
        # by sharers from ``V_FRAMES``), which other VMs may be sharing: those stay.
        vm[:k.V_GROUP_FRAMES] = 0.0
        self.cnt[h, v] = 0.0
        self.m[h, v] = 0
        self.q[h, v] = 0.0
        vm[k.V_ON] = 1.0
        vm[k.V_PAGES] = n
        vm[k.V_KERNEL] = kernel_pages
        vm[k.V_LOW], vm[k.V_HIGH] = low, high
        vm[k.V_MIN] = wmin
        vm[k.V_BAL_RATE] = k.RATE_ALLOC_MAX_PAGES  # the driver starts at its fastest
        vm[k.V_GSWAP_CAP] = gc.swap_pages
        vm[k.V_GSWAP_NS] = sc.timing.swap_in_ns(gc.swap_device)
        vm[k.V_BAL_MAX] = cfg.balloon_max_pages
        vm[k.V_BAL_ON] = float(cfg.guest.balloon_enabled)
        vm[k.V_DEFLATE_OOM] = float(cfg.guest.deflate_on_oom)
        vm[k.V_REPORTING] = float(cfg.guest.free_page_reporting)
        vm[k.V_GUEST_RANDOM] = float(gc.reclaim_policy == "random")
        self.set_cap(h, v)
        vm[k.V_COMP_FRAC] = wc.compressible_frac
        vm[k.V_FRAME_FRAC] = wc.compressed_frame_frac
        vm[k.V_CACHE_MAX] = int(n * sc.host.compression.max_frac)
        vm[k.V_SAMPLE_N] = min(sc.host.sampling.sample_pages, n)
        vm[k.V_SAMPLE_LEFT] = self.host[h, k.H_SAMPLE_TICKS]
        vm[k.V_SZTGT] = pages_to_mib(n)  # no plan yet: the VM's configured memory
        vm[k.V_NCLASS] = k.FIRST_CLASS + max(p.pages.size for p in wc.phases)
        # Backed by large pages at first, unless held to a limit: a 2 MiB page could
        # pass the limit at once (hypervisor/fault.py's fault_in backs those with 4 KiB).
        vm[k.V_LARGE_FRAC] = self.host[h, k.H_LARGE_PAGES] if vm[k.V_CAP] <= 0 else 0.0
        self.m[h, v, k.FREE_ROW, k.NEVER] = n - kernel_pages
        self.host[h, k.H_FREE] -= kernel_pages
        slot.phase = -1
        slot.started_ns = now_ns
        slot.plan = None
        self._enter_phase(h, v, 0, now_ns, fresh=True)
        self.share_setup(h)

    def set_cap(self, h: int, v: int) -> None:
        """Hold VM ``v`` of host ``h`` to its configured limit from the next step on.

        A limit is held in every state; one at or above the VM's memory holds nothing
        (0). Called at power-on and when a scheduled event changes the limit.
        """
        self.vm[h, v, k.V_CAP] = self.slots[h][v].config.cap_pages or 0

    def set_host(self, h: int, host: HostConfig) -> None:
        """Host ``h``'s settings as a scheduled event left them (its sharing scanner's)."""
        self.scenarios[h] = replace(self.scenarios[h], host=host)
        self.host[h, k.H_SHARE_ON] = float(host.sharing.enabled)

    def start_phase(self, h: int, v: int, index: int, now_ns: int) -> None:
        """VM ``v``'s phased workload runs phase ``index`` from now on (a scheduled event)."""
        self._enter_phase(h, v, index, now_ns)

    def power_off(self, h: int, v: int) -> None:
        """The VM's frames go back to the host."""
        self.vm[h, v, k.V_ON] = 0.0
        self.m[h, v] = 0
        self.vm[h, v, k.V_CACHE_FRAMES] = 0.0
        self.share_setup(h)

    def share_setup(self, h: int, rate_pages_per_s: float | None = None) -> None:
        """Each running VM's scan rate (``rate``: the plan's per-VM rate) and image group."""
        sc = self.scenarios[h]
        sh = sc.host.sharing
        on = [v for v in range(len(self.slots[h])) if self.vm[h, v, k.V_ON] > 0]
        tick_s = sc.tick_ns / NS_PER_S
        base = rate_pages_per_s if rate_pages_per_s is not None else sh.scan_rate_pages_per_s
        rates = [base or default_scan_rate_pages_per_s(int(self.vm[h, v, k.V_PAGES]))
                 for v in on]
        total = sum(rates)
        scale = 1.0
        cap = sh.scan_total_pages_per_s
        if cap is not None and total > cap:
            scale = cap / total
        images: dict[str, list[int]] = {}
        for v, rate in zip(on, rates, strict=True):
            self.vm[h, v, k.V_SHARE_RATE] = rate * scale * tick_s
            images.setdefault(self.slots[h][v].classes.image, []).append(v)
        across = salted_across(sc)
        # A group's number is its image's place among every slot's images, running or
        # not, so a VM powering on or off never moves another group's frames
        # (kept in the group's row, image_share.py).
        number: dict[str, int] = {}
        for slot in self.slots[h]:
            number.setdefault(slot.classes.image, len(number))
        for image, members in images.items():
            g = number[image]
            for v in members:
                ok = across and len(members) > 1
                self.vm[h, v, k.V_SHARE_IMAGE] = float(ok)
                self.vm[h, v, k.V_IMAGE_GROUP] = g if ok else -1

    # -- phases ---------------------------------------------------------------------
    def advance_phases(self, now_ns: int) -> None:
        """Start the phases whose time has come (Python, but only at phase changes)."""
        if now_ns < self._next_phase_ns:
            return
        soonest = math.inf
        for h, row in enumerate(self.slots):
            for v, slot in enumerate(row):
                if self.vm[h, v, k.V_ON] > 0 and now_ns >= slot.phase_end_ns:
                    phases = slot.classes.phases
                    nxt = slot.phase + 1
                    if nxt >= len(phases):
                        if not slot.classes.loop:
                            slot.phase_end_ns = math.inf
                            continue
                        nxt = 0
                    self._enter_phase(h, v, nxt, now_ns)
                if self.vm[h, v, k.V_ON] > 0:
                    soonest = min(soonest, slot.phase_end_ns)
        self._next_phase_ns = soonest

    def _enter_phase(self, h: int, v: int, index: int, now_ns: int, fresh: bool = False
                     ) -> None:
        """VM ``v`` of host ``h`` runs phase ``index`` (``fresh``: at power-on).

        Its masses are split over the phase's classes and its class rows become the
        phase's (``aggregate/phases.py``).
        """
        slot = self.slots[h][v]
        old = FRESH if fresh or slot.phase < 0 else slot.phase
        start_phase(self.m, self.tp, self.wp, self.ck, self.slo, self.shi, self.q, self.heat,
                    self.ft, self.vm, h, v, *slot.starts.args(old, index))
        slot.phase = index
        slot.phase_end_ns = now_ns + slot.classes.phases[index].duration_ns
        self._next_phase_ns = min(self._next_phase_ns, slot.phase_end_ns)

    # -- the tick -------------------------------------------------------------------
    def step(self, now_ns: int, poll: bool, lazy_running: bool = False,
             settled: np.ndarray | None = None) -> None:
        """One tick of every host (``lazy_running``, ``settled``: see ``kernel.step``).

        ``settled`` is the caller's to clear for a host whose arrays it changes
        between steps; a phase starting clears it here.
        """
        if settled is None:
            settled = np.zeros(self.m.shape[0], np.uint8)
        self.begin_tick(now_ns, settled)
        k.step(self.m, self.tp, self.wp, self.ck, self.slo, self.shi, self.q, self.heat,
               self.ft, self.vm, self.cnt, self.host, self.rng, self.costs, self.stall,
               float(self.tick_ns), poll, self.lru, lazy_running, settled)
        self._after_step(now_ns, poll, settled)

    def begin_tick(self, now_ns: int, settled: np.ndarray) -> None:
        """A tick's Python part before the kernel: the phases whose time has come start.

        A phase starting clears ``settled`` (its pages change class).
        """
        if now_ns >= self._next_phase_ns:
            settled[:] = 0
        self.advance_phases(now_ns)

    @property
    def next_phase_ns(self) -> float:
        """When the soonest running VM's phase ends (inf: none does)."""
        return self._next_phase_ns

    def report_due(self, now_ns: int) -> bool:
        """Whether the guests that report free pages report at this poll (every 2 s)."""
        if not self._report.due(now_ns):
            return False
        self._report.start(now_ns)
        return True

    def _after_step(self, now_ns: int, poll: bool, settled: np.ndarray) -> None:
        """What a tick does besides ``kernel.step`` (``aggregate/balloon.py``, ``unmerge.py``).

        At a poll the host judges each balloon, and every 2 s the guests that
        report free pages report them; each tick a host whose policy unmerges
        has its shared pages copied back. The host's free frames and state are
        then counted afresh, and counted again at the next step's start.
        """
        moved = set()
        if poll:
            judge(self.m, self.vm, float(now_ns))
            # The period runs whether or not any guest reports (the report is its start).
            if self.report_due(now_ns) and self.vm[:, :, k.V_REPORTING].any():
                for h in np.flatnonzero(self.vm[:, :, k.V_REPORTING].any(axis=1)).tolist():
                    report_free(self.m, self.vm, self.host, self.rng, h)
                    moved.add(h)
        if (self.host[:, k.H_SHARING] == k.SHARING_UNMERGE).any():
            unmerging = np.flatnonzero((self.host[:, k.H_SHARING] == k.SHARING_UNMERGE)
                                       & (self.host[:, k.H_SHARE_ON] > 0))
            for h in unmerging.tolist():
                if unmerge(self.m, self.ck, self.vm, self.host, self.rng, h,
                           self.minfree_pages[h]):
                    moved.add(h)
        for h in sorted(moved):
            k.image_backed(self.m, self.ck, self.vm, h)
            k.settle(self.m, self.vm, self.host, h)
            settled[h] = 0

    def settle(self, h: int) -> None:
        """Host ``h``'s free frames and state after a plan was applied."""
        k.settle(self.m, self.vm, self.host, h)

    # -- readings -------------------------------------------------------------------
    def state_pages(self, h: int, v: int, state: int) -> int:
        """Pages of VM ``v`` in a backing state, over every class."""
        return int(self.m[h, v, :, state].sum())

    def active_frac(self, h: int, v: int) -> float:
        """The sampler's estimate (max of slow, fast and current, floored)."""
        vm, host = self.vm[h, v], self.host[h]
        current = vm[k.V_FAST] + host[k.H_FAST_GAIN] * (vm[k.V_RUNNING] - vm[k.V_FAST])
        return max(vm[k.V_SLOW], vm[k.V_FAST], current, host[k.H_FLOOR])

    def current_frac(self, h: int, v: int) -> float:
        """%ACTVN: the fast average with the running period folded in."""
        vm, host = self.vm[h, v], self.host[h]
        return vm[k.V_FAST] + host[k.H_FAST_GAIN] * (vm[k.V_RUNNING] - vm[k.V_FAST])


