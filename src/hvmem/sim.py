"""The simulation: a scenario's host and guests, run tick by tick under a policy.

What happens each tick (``scenario.tick_ns``, 1 s by default)::

    scheduled events whose time has come (scenario/events.py, sim_events.py)
    power on VMs whose time has come (admission control), power off others
    every running VM: its workload's accesses for the tick, served by its guest
        kernel (faults, guest reclaim and swap) over the host's memory bus
        (first touch, swap-in, decompression, copy-on-write); a VM the policy
        blocked (LOW state, above target) makes no progress this tick
    once a second: balloon drivers move towards their targets; the host drains
        the balloon queues; every two seconds: free page reporting
    in HARD and LOW: the swapper moves each planned VM back to its swap
        target, at most one page per swap-device operation
    active-memory sampling (a new sample once a sampling period); the
        page-sharing scanner
    the host memory state (minFree thresholds, hysteresis); large pages broken by it
    once a balance period, and at once when free memory falls into a more
        severe state than the plans were made for (at most once a second):
        sample -> policy -> plans -> apply (balloon targets; share, compress
        and swap what a VM must give up beyond that)
    record one row of esxtop-named metrics per VM and one for the host

Work with a period of its own is checked once a tick at its place in this
order, and runs when its period has come (``core/period.py``).

A VM's *throughput* is the fraction of the tick it spent doing its own work:
the time its faults, disk reads, hypervisor services and balloon driver (each
page it inflates or deflates, ``balloon_page_ns``) stalled it is lost
(``throughput = max(0, 1 - stall / tick)``, ``slowdown = (tick + stall) / tick``).

Two fidelities (``scenario.fidelity``). In page fidelity each VM touches its
tick's distinct pages once (``GuestKernel.access``). In mmu fidelity every
reference goes through the VM's vCPU MMU, created on the VM's first tick with
the host's TLB and page-walk-cache sizes: TLB, then a 2-D walk (nested) or a
1-D walk of the shadow table with hidden faults (shadow), the hypervisor's
faults served and the reference retried, guest faults served by the guest
kernel (``GuestKernel.access_mmu``); the translation's cost is part of the
stall. Active-memory sampling then works by traps: each new sample's mappings
are taken away so that the next touch of each page exits to the hypervisor
[OSDI02 §5.3] (``HostVm.arm_sampling``); in page fidelity the sampler watches
the memory bus instead. Rows of mmu-fidelity runs carry ``TLBMISS/s``,
``WALKREF/s`` and ``HIDFLT/s`` as well.

Determinism: every random choice comes from a stream named after its user,
split from the scenario seed; the same scenario and seed give the same rows.

This module is the composition root: it builds the host, powers VMs on and off
and runs the tick. Its parts live beside it: ``sim_vm.py`` (one VM's parts),
``sim_batches.py`` (the workload batches, drawn ahead on a worker thread, the
next tick's first ones at the end of a tick that no event or power change
follows),
``sim_backend.py`` (the policy's view of the simulation, through a narrow view
of it) and ``sim_rows.py`` (each tick's rows and the per-VM sharing tally).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

import numpy as np

from hvmem.core.period import Period
from hvmem.core.rng import RngStreams
from hvmem.errors import GuestOutOfMemoryError
from hvmem.guest.balloon_driver import POLL_PERIOD_NS, REPORT_PERIOD_NS, BalloonDriver
from hvmem.guest.kernel import GuestKernel
from hvmem.hardware.mmu import Mmu
from hvmem.hardware.page_table import TableStore
from hvmem.hardware.tlb import Tlb
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.hardware.walker import PageWalkCache
from hvmem.hypervisor.host import Host
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.balloon import BalloonHost
from hvmem.hypervisor.sampling import ActiveMemorySampler
from hvmem.policy.controller import PolicyController
from hvmem.policy.minfree import thresholds
from hvmem.policy.policies import make_policy
from hvmem.policy.samples import SharingMode
from hvmem.policy.state_tracker import StateTracker, large_page_breaking
from hvmem.policy.states import MemState, actions
from hvmem.results import RunResult
from hvmem.scenario.events import EventConfig
from hvmem.scenario.schema import Scenario, VmConfig
from hvmem.sim_backend import SimulatedBackend
from hvmem.sim_batches import NextTick, main_thread_turns, tick_batches
from hvmem.sim_events import EventSchedule, describe
from hvmem.sim_rows import (
    SharingTally,
    TickRows,
    blocked_causes,
    stall_causes,
    stall_snapshot,
)
from hvmem.sim_vm import SimVm
from hvmem.units import MIB, ns_to_s, pages_to_mib
from hvmem.workloads.base import Fidelity
from hvmem.workloads.factory import make_workload


class Simulation:
    """A scenario, ready to run.

    Args:
        scenario: what to simulate.
        policy: a registered policy name overriding the scenario's.
        check_invariants: check every model invariant after every tick (slow).
    """

    def __new__(cls, scenario: Scenario, policy: str | None = None,
                check_invariants: bool = False):
        """A page- or mmu-fidelity simulation, or an aggregate one (``aggregate/sim.py``)."""
        if scenario.fidelity == "aggregate":  # the same run over masses of pages
            from hvmem.aggregate.sim import AggregateSimulation
            return AggregateSimulation(scenario, policy, check_invariants)
        return super().__new__(cls)

    def __init__(self, scenario: Scenario, policy: str | None = None,
                 check_invariants: bool = False):
        self.scenario = scenario
        self.mmu_fidelity = scenario.fidelity == Fidelity.MMU
        self.check = check_invariants
        hc = scenario.host
        self.streams = RngStreams(scenario.seed)
        self.host = Host(hc.memory_pages, hc.paging, scenario.timing, hc.swap_device,
                         hc.sharing.salting, large_pages=bool(hc.large_pages),
                         compression_max_frac=hc.compression.max_frac)
        self.host.swap_selection = hc.swap_selection
        total_mib = pages_to_mib(hc.memory_pages)
        self.thresholds = thresholds(total_mib, hc.profile, min_free_frac=hc.min_free_frac)
        self.tracker = StateTracker(self.thresholds)
        self.sharing_tally = SharingTally()
        self.state = self.tracker.state
        policy_config = scenario.policy.for_policy(policy)
        self.policy = make_policy(policy_config)
        self.backend = SimulatedBackend(self, hc, self.host.frames, self.thresholds,
                                        self.sharing_tally,
                                        self.streams.stream("hypervisor/reclaim"))
        self.controller = PolicyController(self.policy, self.backend,
                                           policy_config.balance_period_s)
        self.vms: dict[str, SimVm] = {}
        self.now_ns = 0
        self.result = RunResult(scenario)
        self.rows = TickRows(self.result, self.host.frames, self.thresholds.minfree_mib,
                             self.sharing_tally)
        self._share_rng = self.streams.stream("hypervisor/sharing")
        self._large_page_rng = self.streams.stream("hypervisor/large_pages")
        self.schedule = EventSchedule(scenario)
        # The balloon drivers poll, and report free pages, on the host's clock.
        self._balloon_poll = Period(POLL_PERIOD_NS)
        self._page_report = Period(REPORT_PERIOD_NS)
        self._next_tick = NextTick()  # its first batches, drawn at the end of a tick

    # -- VMs ---------------------------------------------------------------------------
    def _power_on(self, cfg: VmConfig) -> None:
        running = [v.config for v in self.vms.values()]
        need = sum(v.reservation_bytes + v.overhead_bytes for v in running)
        need += cfg.reservation_bytes + cfg.overhead_bytes
        if need > self.scenario.host.memory_bytes:
            self.event("admission_refused", cfg.name,
                       f"reservations plus overheads {need / MIB:.0f} MiB exceed the host's "
                       f"{self.scenario.host.memory_bytes / MIB:.0f} MiB")
            return
        n = cfg.memory_pages
        tables = TableStore(n, f"{cfg.name} guest-physical")
        host_vm = self.host.add_vm(cfg.name, n, tables)
        host_vm.cap_pages = cfg.cap_pages  # held in every state
        if self.host.salting == "explicit":
            self.host.explicit_salts[host_vm.vm_id] = cfg.salt or 0
        kernel = GuestKernel(cfg.guest_config(), host_vm, tables,
                             self.streams.stream(f"guest/{cfg.name}"), self.scenario.timing)
        g = cfg.guest
        device = VirtioBalloon(deflate_on_oom=g.deflate_on_oom,
                               free_page_reporting=g.free_page_reporting)
        driver = BalloonDriver(kernel, device, enabled=g.balloon_enabled)
        balloon = BalloonHost(host_vm, device, max_pages=cfg.balloon_max_pages)
        sampler = ActiveMemorySampler(n, self.streams.stream(f"sampling/{cfg.name}"),
                                      self.scenario.host.sampling)
        host_vm.sampler = sampler
        workload = make_workload(cfg.workload, self.streams.stream(f"workload/{cfg.name}"),
                                 name=cfg.name,
                                 content_key=self.streams.seed_for(f"content/{cfg.name}"))
        vm = SimVm(cfg, host_vm, kernel, device, driver, balloon, sampler, workload)
        self.vms[cfg.name] = vm
        for op in workload.setup():
            kernel.apply_op(op)
        self.event("power_on", cfg.name, f"{cfg.memory_bytes / MIB:.0f} MiB")

    def _power_off(self, vm: SimVm) -> None:
        """The VM's frames go back to the host free list, data kept until reused."""
        hv = vm.host_vm
        hv.release(np.arange(hv.n_ppns), Backing.UNBACKED)
        tables = hv.paging.table_frames()
        for frame in tables.tolist():
            self.host.tables.remove_table(frame)
        self.host.frames.free(tables)
        hv.paging = _PoweredOff()
        del self.vms[vm.config.name]
        self.event("power_off", vm.config.name, "")

    def _run_event(self, event: EventConfig) -> None:
        """Carry out a scheduled event (``sim_events.py``), before the tick's VMs run."""
        schedule = self.schedule
        self.event("scheduled", event.vm or "", describe(event, self.scenario))
        for path, value in event.changes:
            part = schedule.set(path, value)
            if part == "policy" and hasattr(self.policy, "params"):
                self.policy.params = schedule.policy.for_policy(self.policy.name).params
            elif part == "host":
                self.backend.host = schedule.host
            elif path[3:path.rindex(".")] in self.vms:  # vm.NAME.KEY; a name may hold dots
                vm = self.vms[path[3:path.rindex(".")]]
                vm.config = schedule.vm(vm.config.name)
                # A new limit holds from now on, as one set at power-on does: what the
                # VM holds above it is swapped at once, and its balloon then inflates
                # toward it so that the swapping stops (policy/planner.py).
                vm.host_vm.cap_pages = vm.config.cap_pages
                self.host.hold_to_cap(vm.host_vm, 0)
        running = self.vms.get(event.vm or "")
        if event.power == "off" and running is not None:
            self._power_off(running)
        elif event.power == "on" and running is None:
            cfg = schedule.vm(event.vm or "")
            if cfg.power_off_ns is not None and cfg.power_off_ns <= self.now_ns:
                schedule.replace_vm(replace(cfg, power_off_ns=None))  # on again for good
            self._power_on(schedule.vm(event.vm or ""))
        if event.phase is not None and running is not None:
            start_phase = getattr(running.workload, "start_phase", None)
            if start_phase is not None:
                start_phase(event.phase, self.now_ns)

    def event(self, kind: str, vm: str, detail: str) -> None:
        """Record an event of the run at the current time."""
        self.result.events.append({"time_s": ns_to_s(self.now_ns), "event": kind, "vm": vm,
                                   "detail": detail})

    # -- the run -------------------------------------------------------------------------
    def run(self, on_tick: Callable[[Simulation], None] | None = None) -> RunResult:
        """Run to the scenario's end (or until interrupted); returns the result."""
        sc = self.scenario
        tick = sc.tick_ns
        rows = self.result.host_rows, self.result.vm_rows
        # The ticks done and their host and VM rows, in one tuple stored at once: a
        # signal lands between two statements, and a count kept apart from the rows'
        # could name a tick whose rows the cut then drops (or the other way round).
        done = (self.result.ticks_done, len(rows[0]), len(rows[1]))
        try:
            with main_thread_turns():  # the main thread, serving, bounds the tick
                for k in range(sc.n_ticks):
                    self.now_ns = k * tick
                    self._tick(tick)
                    done = (k + 1, len(rows[0]), len(rows[1]))
                    self.result.ticks_done = k + 1
                    if on_tick is not None:
                        on_tick(self)
            self.result.complete = True
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM/SIGHUP as the CLI raises them
            # A signal can land while a tick's rows are appended: without the cut, a
            # host row and some of the VMs' rows of a tick not counted in ticks_done.
            self.result.keep_ticks(done)
            self.result.stop_reason = str(stop) or "interrupted"
            self.event("interrupted", "", f"{self.result.stop_reason}; results are partial")
        except BaseException:  # an error mid-tick: its caller keeps the whole ticks
            self.result.keep_ticks(done)
            raise
        return self.result

    def _tick(self, tick_ns: int) -> None:
        sc, host, now = self.scenario, self.host, self.now_ns
        host.now_ns = now
        for event in self.schedule.due(now):
            self._run_event(event)
        sharing = self.schedule.host.sharing
        for cfg in map(self.schedule.vm, (c.name for c in sc.vms)):
            if cfg.power_on_ns <= now < cfg.power_on_ns + tick_ns and cfg.name not in self.vms:
                self._power_on(cfg)
        for vm in list(self.vms.values()):
            off = vm.config.power_off_ns
            if off is not None and now >= off:
                self._power_off(vm)
        stall: dict[str, float] = {}
        causes: dict[str, dict[str, float]] = {}
        running = list(self.vms.items())
        # Each served VM's guest-only first steps run on the workload thread too,
        # while the VMs before it are served (sim_batches.py).
        ahead = [None if self.mmu_fidelity or self._blocked(vm)
                 else partial(vm.kernel.walk_ahead, now_ns=now) for _, vm in running]
        batches = tick_batches([vm.workload for _, vm in running], now, tick_ns, ahead,
                               self._next_tick, self._same_next(now + tick_ns, tick_ns))
        for (name, vm), (batch, walked) in zip(running, batches, strict=True):
            if self.mmu_fidelity and vm.kernel.mmu is None:  # the VM's vCPU, on its first tick
                hc = sc.host
                tlb = Tlb(hc.tlb_entries, hc.tlb_ways, f"{name} tlb")
                vm.kernel.mmu = Mmu(vm.host_vm.vm_id, tlb, PageWalkCache(hc.pwc_entries),
                                    sc.timing)
                vm.host_vm.paging.attach(vm.kernel.mmu)
            # A VM the plan blocked waits only while the host is still in LOW:
            # ESX lets it allocate again as soon as the host is back in hard
            # [OSDI02 §6.3], without waiting for the next balance period.
            if self._blocked(vm):
                stall[name] = float(tick_ns)  # descheduled until the host recovers
                causes[name] = blocked_causes(tick_ns)
                continue
            before = stall_snapshot(vm)
            with _in_guest(name):
                if self.mmu_fidelity:
                    result = vm.kernel.access_mmu(batch, now, vm.host_vm)
                else:
                    result = vm.kernel.access(batch, now, walked)
            stall[name] = result.time_ns
            causes[name] = stall_causes(before, stall_snapshot(vm), result.time_ns)
        if self._balloon_poll.due(now):
            self._balloon_poll.start(now)
            report = self._page_report.due(now)
            if report:
                self._page_report.start(now)
            for name, vm in self.vms.items():
                # The driver's work runs on the VM's vCPU: time it does not run its own.
                with _in_guest(name):
                    moved = vm.driver.poll(now)
                if moved:
                    stall[name] = stall.get(name, 0.0) + moved * sc.timing.balloon_page_ns
                if report:
                    vm.driver.report_free_pages()
                vm.balloon.collect(now)
        swapping = actions(self.state, sc.host.profile)
        for vm in self.vms.values():
            if vm.plan is not None and swapping.swap:  # HARD, LOW: keep VMs at target
                self.backend.swap_to_target(vm, vm.plan, refill_ns=tick_ns)
        for vm in self.vms.values():
            drawn = vm.sampler.advance(now)
            if drawn is not None and self.mmu_fidelity:
                vm.host_vm.arm_sampling(drawn)  # their next touch traps [OSDI02 §5.3]
        if sharing.enabled:  # as the latest plan has the scanner run
            mode, rate = self.backend.sharing(sharing.scan_rate_pages_per_s)
            if mode is SharingMode.RUN:
                host.scan_for_sharing(tick_ns, self._share_rng, rate,
                                      sharing.scan_total_pages_per_s)
            elif mode is SharingMode.UNMERGE:
                self.backend.unmerge()
        self.state = self.tracker.update(pages_to_mib(host.frames.n_free))
        # ESXi 6 breaks large pages by state: at the next scan below HIGH's threshold,
        # a bounded number per tick from CLEAR down (Host docs) [YB-STATES6][YB-LP6].
        host.break_large_pages_for_state(
            large_page_breaking(self.state, pages_to_mib(host.frames.n_free), self.thresholds),
            tick_ns, self._large_page_rng, share=sharing.enabled)
        plans = self.controller.step(ns_to_s(now))
        if plans is None:  # free memory crossed into a worse state: replan now
            plans = self.controller.react(ns_to_s(now), self.state)
            if plans is not None:
                self.event("rebalance", "", f"free memory fell into {self.state.label}")
        if plans is not None:
            for name, plan in plans.items():
                if name in self.vms:
                    self.vms[name].plan = plan
            # What the plans reclaimed counts at once: the row shows the state after
            # it, and a VM blocked in LOW runs again next tick if the host left LOW.
            self.state = self.tracker.update(pages_to_mib(host.frames.n_free))
        if self.check:
            host.check_invariants()
            for vm in self.vms.values():
                vm.kernel.check_invariants()
        self.rows.record(now, tick_ns, self.state, self.vms, stall, causes)


    def _same_next(self, next_ns: int, tick_ns: int) -> bool:
        """Whether the tick at ``next_ns`` runs the VMs running now, with no event first.

        Then the workload thread may draw its first batches at the end of this
        tick (``sim_batches.NextTick``): nothing in between changes a workload.
        """
        if next_ns >= self.scenario.n_ticks * tick_ns or self.schedule.quiet_until() <= next_ns:
            return False
        for cfg in map(self.schedule.vm, (c.name for c in self.scenario.vms)):
            if cfg.name in self.vms:
                if cfg.power_off_ns is not None and next_ns >= cfg.power_off_ns:
                    return False
            elif cfg.power_on_ns <= next_ns < cfg.power_on_ns + tick_ns:
                return False
        return True

    def _blocked(self, vm: SimVm) -> bool:
        """Whether the plan keeps ``vm`` from running this tick (decided before any runs)."""
        return vm.plan is not None and vm.plan.blocked and self.state == MemState.LOW


@contextmanager
def _in_guest(name: str) -> Iterator[None]:
    """Name the VM whose guest ran out of its own memory, which the guest cannot."""
    try:
        yield
    except GuestOutOfMemoryError as err:
        if err.vm is None:
            err.vm = name
        raise


class _PoweredOff:
    """Stands in for a powered-off VM's paging mode: nothing to map any more."""

    name = "off"

    def on_backing_changed(self, ppns: np.ndarray, had_frames: bool) -> None:
        """Nothing maps a powered-off VM's pages."""

    def table_frames(self) -> np.ndarray:
        """No tables left."""
        return np.zeros(0, dtype=np.int64)
