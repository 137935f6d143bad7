"""The simulation: a scenario's host and guests, run tick by tick under a policy.

What happens each tick (``scenario.tick_ns``, 1 s by default)::

    power on VMs whose time has come (admission control), power off others
    every running VM: its workload's accesses for the tick, served by its guest
        kernel (faults, guest reclaim and swap) over the host's memory bus
        (first touch, swap-in, decompression, copy-on-write); a VM the policy
        blocked (LOW state, above target) makes no progress this tick
    once a second: balloon drivers move towards their targets; the host drains
        the balloon queues; every two seconds: free page reporting
    the page-sharing scanner; active-memory sampling
    the host memory state (minFree thresholds, hysteresis); large pages broken by it
    once a balance period: sample -> policy -> plans -> apply (balloon
        targets; share, compress and swap what a VM must give up beyond that)
    record one row of esxtop-named metrics per VM and one for the host

A VM's *throughput* is the fraction of the tick it spent doing its own work:
the time its faults, disk reads and hypervisor services stalled it is lost
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
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from hvmem.core.rng import RngStreams
from hvmem.core.rows import RowLog
from hvmem.guest.balloon_driver import BalloonDriver
from hvmem.guest.kernel import GuestKernel, PageKind
from hvmem.hardware.mmu import Mmu
from hvmem.hardware.page_table import TableStore
from hvmem.hardware.tlb import Tlb
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.hardware.walker import PageWalkCache
from hvmem.hypervisor.host import Host
from hvmem.hypervisor.pmap import STATE_PRIVATE, STATE_SHARED, Backing
from hvmem.hypervisor.reclaim.balloon import BalloonHost
from hvmem.hypervisor.sampling import ActiveMemorySampler
from hvmem.hypervisor.vm import HostVm
from hvmem.policy.controller import PolicyController
from hvmem.policy.policies import make_policy
from hvmem.policy.samples import HostSample, VmPlan, VmSample
from hvmem.policy.states import (
    MemState,
    StateTracker,
    actions,
    large_page_breaking,
    thresholds,
)
from hvmem.scenario.schema import Scenario, VmConfig
from hvmem.units import MIB, NS_PER_S, PAGE_SIZE_BYTES
from hvmem.workloads.base import AccessBatch, Fidelity
from hvmem.workloads.factory import make_workload

PAGES_PER_MIB = MIB // PAGE_SIZE_BYTES
BALLOON_POLL_NS = NS_PER_S  # the driver polls once a second [OSDI02 §3.2]
REPORT_PERIOD_NS = 2 * NS_PER_S  # free page reporting delay


def _mib(pages: int | float) -> float:
    return pages / PAGES_PER_MIB


class SharingTally:
    """Each VM's shared pages, what sharing saves it (SHRDSVD), its private and zero pages.

    A frame mapped ``r`` times (by this VM and others) saves ``r - 1`` pages in
    all; each mapping is credited ``1 - 1/r`` of that, so the VMs' SHRDSVD add
    up to the host's saving whether pages are shared within a VM or across VMs.
    One pass over the pmap counts private and shared pages and reads each
    shared frame's mappings and data; the credits go to a scratch array kept
    from one VM to the next, not a temporary the size of each VM every tick.
    """

    def __init__(self) -> None:
        self._inv_refs = np.empty(0, dtype=np.float64)

    def __call__(self, pmap, frames) -> tuple[int, float, int, int]:
        """(shared pages, pages saved, private pages, shared pages of zeroes) of one VM."""
        if self._inv_refs.size < pmap.state.size:
            self._inv_refs = np.empty(pmap.state.size, dtype=np.float64)
        n_private, n_shared, n_zero = _sharing_tally(pmap.state, pmap.mpn, frames.refcount,
                                                     frames.content, self._inv_refs)
        saved = float(n_shared - np.sum(self._inv_refs[:n_shared])) if n_shared else 0.0
        return n_shared, saved, n_private, n_zero


@njit(cache=True, nogil=True)
def _sharing_tally(state, mpn, refcount, content, inv_refs):
    """(PRIVATE pages, SHARED pages, SHARED pages of zeroes) of a pmap.

    ``1 / refcount`` of each SHARED page's frame goes to ``inv_refs``, in PPN order.
    """
    n_private = 0
    n_shared = 0
    n_zero = 0
    for i in range(state.size):
        s = state[i]
        n_private += s == STATE_PRIVATE
        if s == STATE_SHARED:
            m = mpn[i]
            inv_refs[n_shared] = 1.0 / refcount[m]
            n_zero += content[m] == 0
            n_shared += 1
    return n_private, n_shared, n_zero


@dataclass
class SimVm:
    """One VM in the simulation: its configuration and every part of it."""

    config: VmConfig
    host_vm: HostVm
    kernel: GuestKernel
    device: VirtioBalloon
    driver: BalloonDriver
    balloon: BalloonHost
    sampler: ActiveMemorySampler
    workload: object
    plan: VmPlan | None = None
    # Per-tick tallies for rates.
    last_swap_outs: int = 0
    last_swap_ins: int = 0
    last_zips: int = 0
    last_unzips: int = 0
    returned_seen: int = 0  # swap-ins + decompressions the swapper has answered
    work_frac_sum: float = 0.0
    ticks_run: int = 0


@dataclass
class RunResult:
    """What a run produced: rows of time series, events and a summary."""

    scenario: Scenario
    # Sequences of dicts, kept by column (an hour of 32 VMs is 115,200 rows).
    host_rows: RowLog = field(default_factory=RowLog)
    vm_rows: RowLog = field(default_factory=RowLog)
    events: list[dict] = field(default_factory=list)
    complete: bool = False
    ticks_done: int = 0

    def summary(self) -> dict:
        """What reclaimed how much, and what it cost each VM: JSON-ready totals.

        Per VM: the peak of each mechanism's holding (balloon, compressed and
        swapped MiB, MiB saved by sharing), swap and compression traffic, and
        the cost: mean throughput, worst tick's slowdown and the seconds of
        work lost to stalls. ``mechanisms``: machine memory each mechanism
        holds back, summed over the VMs each tick (compression net of its
        cache's frames), at its host-wide peak and at the end of the run.
        """
        vms: dict[str, dict] = {}
        totals: dict[float, dict[str, float]] = {}
        for row in self.vm_rows:
            s = vms.setdefault(row["vm"], {
                "ticks": 0, "throughput_sum": 0.0, "balloon_peak_mib": 0.0,
                "swapped_peak_mib": 0.0, "compressed_peak_mib": 0.0,
                "shared_saved_peak_mib": 0.0, "swap_in_mib": 0.0, "swap_out_mib": 0.0,
                "compress_mib": 0.0, "decompress_mib": 0.0, "stall_s": 0.0,
                "worst_slowdown": 1.0})
            tick_s = row["tick_s"]
            s["ticks"] += 1
            s["throughput_sum"] += row["throughput"]
            s["balloon_peak_mib"] = max(s["balloon_peak_mib"], row["MCTLSZ"])
            s["swapped_peak_mib"] = max(s["swapped_peak_mib"], row["SWCUR"])
            s["compressed_peak_mib"] = max(s["compressed_peak_mib"], row["ZIPPED"])
            s["shared_saved_peak_mib"] = max(s["shared_saved_peak_mib"], row["SHRDSVD"])
            s["swap_in_mib"] += row["SWR/s"] * tick_s
            s["swap_out_mib"] += row["SWW/s"] * tick_s
            s["compress_mib"] += row["ZIP/s"] * tick_s
            s["decompress_mib"] += row["UNZIP/s"] * tick_s
            s["stall_s"] += (1.0 - row["throughput"]) * tick_s
            s["worst_slowdown"] = max(s["worst_slowdown"], row["slowdown"])
            t = totals.setdefault(row["time_s"], dict.fromkeys(_MECHANISMS, 0.0))
            t["ballooning"] += row["MCTLSZ"]
            t["sharing"] += row["SHRDSVD"]
            t["compression"] += row["ZIPPED"] - row["CACHEUSD"]  # net of the cache's frames
            t["swapping"] += row["SWCUR"]
        for s in vms.values():
            s["mean_throughput"] = s.pop("throughput_sum") / max(1, s["ticks"])
        held = list(totals.values())
        mechanisms = {
            name: {"peak_mib": max((t[name] for t in held), default=0.0),
                   "end_mib": held[-1][name] if held else 0.0}
            for name in _MECHANISMS
        }
        states: dict[str, float] = {}
        for row in self.host_rows:
            states[row["state"]] = states.get(row["state"], 0.0) + row["tick_s"]
        return {
            "scenario": self.scenario.name,
            "complete": self.complete,
            "ticks": self.ticks_done,
            "time_in_state_s": states,
            "mechanisms": mechanisms,
            "vms": vms,
        }


#: The reclamation mechanisms, in the order ESX turns to them.
_MECHANISMS = ("sharing", "ballooning", "compression", "swapping")


class Simulation:
    """A scenario, ready to run.

    Args:
        scenario: what to simulate.
        policy: a registered policy name overriding the scenario's.
        check_invariants: check every model invariant after every tick (slow).
    """

    def __init__(self, scenario: Scenario, policy: str | None = None,
                 check_invariants: bool = False):
        self.scenario = scenario
        self.mmu_fidelity = scenario.fidelity == Fidelity.MMU
        self.check = check_invariants
        hc = scenario.host
        self.streams = RngStreams(scenario.seed)
        self.host = Host(hc.memory_pages, hc.paging, scenario.timing, hc.swap_device,
                         hc.sharing.salting, large_pages=bool(hc.large_pages))
        total_mib = _mib(hc.memory_pages)
        self.thresholds = thresholds(total_mib, hc.profile, min_free_frac=hc.min_free_frac)
        self.tracker = StateTracker(self.thresholds)
        self.sharing_tally = SharingTally()
        self.state = self.tracker.state
        policy_config = scenario.policy.for_policy(policy)
        self.policy = make_policy(policy_config)
        self.backend = SimulatedBackend(self)
        self.controller = PolicyController(self.policy, self.backend,
                                           policy_config.balance_period_s)
        self.vms: dict[str, SimVm] = {}
        self.now_ns = 0
        self.result = RunResult(scenario)
        self._reclaim_rng = self.streams.stream("hypervisor/reclaim")
        self._share_rng = self.streams.stream("hypervisor/sharing")
        self._large_page_rng = self.streams.stream("hypervisor/large_pages")

    # -- VMs ---------------------------------------------------------------------------
    def _power_on(self, cfg: VmConfig) -> None:
        running = [v.config for v in self.vms.values()]
        need = sum(v.reservation_bytes + v.overhead_bytes for v in running)
        need += cfg.reservation_bytes + cfg.overhead_bytes
        if need > self.scenario.host.memory_bytes:
            self._event("admission_refused", cfg.name,
                        f"reservations plus overheads {need / MIB:.0f} MiB exceed the host's "
                        f"{self.scenario.host.memory_bytes / MIB:.0f} MiB")
            return
        n = cfg.memory_pages
        tables = TableStore(n, f"{cfg.name} guest-physical")
        host_vm = self.host.add_vm(cfg.name, n, tables)
        if self.host.salting == "explicit":
            self.host.explicit_salts[host_vm.vm_id] = cfg.salt or 0
        kernel = GuestKernel(cfg.guest_config(), host_vm, tables,
                             self.streams.stream(f"guest/{cfg.name}"), self.scenario.timing)
        g = cfg.guest
        device = VirtioBalloon(deflate_on_oom=g.deflate_on_oom,
                               free_page_reporting=g.free_page_reporting)
        driver = BalloonDriver(kernel, device, enabled=g.balloon_enabled)
        balloon = BalloonHost(host_vm, device, max_pages=cfg.balloon_max_pages)
        sampler = ActiveMemorySampler(n, self.streams.stream(f"sampling/{cfg.name}"))
        host_vm.sampler = sampler
        workload = make_workload(cfg.workload, self.streams.stream(f"workload/{cfg.name}"),
                                 name=cfg.name,
                                 content_key=self.streams.seed_for(f"content/{cfg.name}"))
        vm = SimVm(cfg, host_vm, kernel, device, driver, balloon, sampler, workload)
        self.vms[cfg.name] = vm
        for op in workload.setup():
            kernel.apply_op(op)
        self._event("power_on", cfg.name, f"{cfg.memory_bytes / MIB:.0f} MiB")

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
        self._event("power_off", vm.config.name, "")

    def _event(self, kind: str, vm: str, detail: str) -> None:
        self.result.events.append({"time_s": self.now_ns / NS_PER_S, "event": kind, "vm": vm,
                                   "detail": detail})

    # -- the run -------------------------------------------------------------------------
    def run(self, on_tick: Callable[[Simulation], None] | None = None) -> RunResult:
        """Run to the scenario's end (or until interrupted); returns the result."""
        sc = self.scenario
        tick = sc.tick_ns
        try:
            for k in range(sc.n_ticks):
                self.now_ns = k * tick
                self._tick(tick)
                self.result.ticks_done = k + 1
                if on_tick is not None:
                    on_tick(self)
            self.result.complete = True
        except KeyboardInterrupt:
            self._event("interrupted", "", "the run was stopped; results are partial")
        return self.result

    def _tick(self, tick_ns: int) -> None:
        sc, host, now = self.scenario, self.host, self.now_ns
        host.now_ns = now
        for cfg in sc.vms:
            if cfg.power_on_ns <= now < cfg.power_on_ns + tick_ns and cfg.name not in self.vms:
                self._power_on(cfg)
        for vm in list(self.vms.values()):
            off = vm.config.power_off_ns
            if off is not None and now >= off:
                self._power_off(vm)
        stall: dict[str, float] = {}
        running = list(self.vms.items())
        batches = _tick_batches([vm.workload for _, vm in running], now, tick_ns)
        for (name, vm), batch in zip(running, batches, strict=True):
            if self.mmu_fidelity and vm.kernel.mmu is None:  # the VM's vCPU, on its first tick
                hc = sc.host
                tlb = Tlb(hc.tlb_entries, hc.tlb_ways, f"{name} tlb")
                vm.kernel.mmu = Mmu(vm.host_vm.vm_id, tlb, PageWalkCache(hc.pwc_entries),
                                    sc.timing)
                vm.host_vm.paging.attach(vm.kernel.mmu)
            # A VM the plan blocked waits only while the host is still in LOW:
            # ESX lets it allocate again as soon as the host is back in hard
            # [OSDI02 §6.3], without waiting for the next balance period.
            if vm.plan is not None and vm.plan.blocked and self.state == MemState.LOW:
                stall[name] = float(tick_ns)  # descheduled until the host recovers
                continue
            if self.mmu_fidelity:
                result = vm.kernel.access_mmu(batch, now, vm.host_vm)
            else:
                result = vm.kernel.access(batch, now)
            stall[name] = result.time_ns
        if now % BALLOON_POLL_NS < tick_ns:
            for vm in self.vms.values():
                vm.driver.poll(now)
                if now % REPORT_PERIOD_NS < tick_ns:
                    vm.driver.report_free_pages()
                vm.balloon.collect(now)
        swapping = actions(self.state, sc.host.profile)
        for vm in self.vms.values():
            if vm.plan is not None and swapping.swap:  # HARD, LOW: keep VMs at target
                self.backend.swap_to_target(vm, vm.plan, refill=True)
        for vm in self.vms.values():
            drawn = vm.sampler.advance(now)
            if drawn is not None and self.mmu_fidelity:
                vm.host_vm.arm_sampling(drawn)  # their next touch traps [OSDI02 §5.3]
        if sc.host.sharing.enabled:
            host.scan_for_sharing(tick_ns, self._share_rng, sc.host.sharing.scan_rate_pages_per_s)
        self.state = self.tracker.update(_mib(host.frames.n_free))
        # ESXi 6 breaks large pages by state: at the next scan below HIGH's threshold,
        # a bounded number per tick from CLEAR down (Host docs) [YB-STATES6][YB-LP6].
        host.break_large_pages_for_state(
            large_page_breaking(self.state, _mib(host.frames.n_free), self.thresholds),
            tick_ns, self._large_page_rng, share=sc.host.sharing.enabled)
        plans = self.controller.step(now / NS_PER_S)
        if plans is not None:
            for name, plan in plans.items():
                if name in self.vms:
                    self.vms[name].plan = plan
            # What the plans reclaimed counts at once: the row shows the state after
            # it, and a VM blocked in LOW runs again next tick if the host left LOW.
            self.state = self.tracker.update(_mib(host.frames.n_free))
        if self.check:
            host.check_invariants()
            for vm in self.vms.values():
                vm.kernel.check_invariants()
        self._record(tick_ns, stall)

    def _record(self, tick_ns: int, stall: dict[str, float]) -> None:
        tick_s = tick_ns / NS_PER_S
        now_s = self.now_ns / NS_PER_S
        frames = self.host.frames
        self.result.host_rows.append({
            "time_s": now_s, "tick_s": tick_s, "total_mib": _mib(frames.n_frames),
            "free_mib": _mib(frames.n_free), "minfree_mib": self.thresholds.minfree_mib,
            "state": MemState(self.state).label,
        })
        for name, vm in self.vms.items():
            hv, pmap = vm.host_vm, vm.host_vm.pmap
            n_shared, saved, n_private, zero = self.sharing_tally(pmap, frames)
            sw, z = hv.swapfile.counters, hv.zip.counters
            stall_ns = stall.get(name, 0.0)
            throughput = max(0.0, 1.0 - stall_ns / tick_ns)
            plan = vm.plan
            self.result.vm_rows.append({
                "time_s": now_s, "tick_s": tick_s, "vm": name,
                "MEMSZ": _mib(hv.n_ppns),
                "GRANT": _mib(n_private + n_shared),
                "SZTGT": plan.target_mib if plan else _mib(hv.n_ppns),
                "TCHD": _mib(vm.sampler.active_pages),
                "ACTV": _mib(vm.sampler.active_pages),
                "MCTLSZ": _mib(vm.balloon.size_pages),
                "MCTLTGT": _mib(vm.balloon.target_pages),
                "MCTLMAX": _mib(vm.balloon.max_pages),
                "SWCUR": _mib(hv.swapfile.n_used),
                "SWTGT": plan.swap_target_mib if plan else 0.0,
                "SWR/s": _mib(sw.swap_ins - vm.last_swap_ins) / tick_s,
                "SWW/s": _mib(sw.swap_outs - vm.last_swap_outs) / tick_s,
                "ZIP/s": _mib(z.compressed - vm.last_zips) / tick_s,
                "UNZIP/s": _mib(z.decompressed - vm.last_unzips) / tick_s,
                "CACHEUSD": _mib(hv.zip.frames.size),
                "ZIPPED": _mib(hv.zip.n_pages),
                "SHRD": _mib(n_shared),
                "ZERO": _mib(zero),
                "SHRDSVD": _mib(saved),
                "LPAGE": _mib(hv.large_page_ppns),
                "guest_free_mib": _mib(vm.kernel.allocator.n_free),
                "guest_swap_mib": _mib(vm.kernel.swap.n_used),
                "throughput": throughput,
                "slowdown": (tick_ns + stall_ns) / tick_ns,
                **(vm.kernel.mmu.rate_columns(tick_s) if vm.kernel.mmu else {}),
            })
            vm.last_swap_ins, vm.last_swap_outs = sw.swap_ins, sw.swap_outs
            vm.last_zips, vm.last_unzips = z.compressed, z.decompressed


#: The thread that draws workload batches while the main thread serves them.
_workload_thread: ThreadPoolExecutor | None = None


def _tick_batches(workloads: list, now_ns: int, tick_ns: int) -> Iterator[AccessBatch]:
    """Each workload's batch for the tick, in order, drawn ahead on a worker thread.

    A workload depends on nothing but its own state and random stream, so
    drawing VM ``i + 1``'s batch while VM ``i``'s is served changes no result;
    the draws run in GIL-free kernels, so on a second core they overlap the
    serving. Every batch of the tick has been drawn when the iteration ends.
    """
    global _workload_thread
    if len(workloads) < 2:
        for w in workloads:
            yield w.next_batch(now_ns, tick_ns)
        return
    if _workload_thread is None:
        _workload_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hvmem-workload")
    futures = [_workload_thread.submit(w.next_batch, now_ns, tick_ns) for w in workloads]
    try:
        for f in futures:
            yield f.result()
    finally:
        for f in futures:
            f.cancel()


class _PoweredOff:
    """Stands in for a powered-off VM's paging mode: nothing to map any more."""

    name = "off"

    def on_backing_changed(self, ppns: np.ndarray, old_had_mpn: np.ndarray) -> None:
        """Nothing maps a powered-off VM's pages."""

    def table_frames(self) -> np.ndarray:
        """No tables left."""
        return np.zeros(0, dtype=np.int64)


class SimulatedBackend:
    """The policy's view of the simulation (``policy.ports.MemoryBackend``)."""

    def __init__(self, sim: Simulation):
        self.sim = sim

    def sample(self) -> tuple[HostSample, list[VmSample]]:
        """Observe the simulated host and its running VMs."""
        sim = self.sim
        frames = sim.host.frames
        host = HostSample(
            time_s=sim.now_ns / NS_PER_S, total_mib=_mib(frames.n_frames),
            free_mib=_mib(frames.n_free), state=sim.state,
            minfree_mib=sim.thresholds.minfree_mib, profile=sim.scenario.host.profile,
        )
        vms = []
        for vm in sim.vms.values():
            hv, pmap, cfg = vm.host_vm, vm.host_vm.pmap, vm.config
            _, saved, n_private, _ = sim.sharing_tally(pmap, frames)
            vms.append(VmSample(
                name=cfg.name, configured_mib=_mib(hv.n_ppns), shares=cfg.shares,
                consumed_mib=_mib(n_private + hv.zip.frames.size),
                active_mib=_mib(vm.sampler.active_pages),
                balloon_max_mib=_mib(vm.balloon.max_pages),
                reservation_mib=cfg.reservation_bytes / MIB,
                limit_mib=None if cfg.limit_bytes is None else cfg.limit_bytes / MIB,
                balloon_mib=_mib(vm.balloon.size_pages),
                balloon_target_mib=_mib(vm.balloon.target_pages),
                balloon_stuck=vm.balloon.stuck,
                swapped_mib=_mib(hv.swapfile.n_used),
                compressed_mib=_mib(vm.host_vm.zip.n_pages),
                shared_saved_mib=_mib(saved),
                overhead_mib=cfg.overhead_bytes / MIB,
                guest_free_mib=_mib(vm.kernel.allocator.n_free),
                guest_available_mib=_mib(vm.kernel.allocator.n_free
                                         + vm.kernel.count(PageKind.FILE)),
            ))
        return host, vms

    def apply(self, plans) -> None:
        """Balloon targets to the devices; take what must go beyond that."""
        sim = self.sim
        for name, plan in plans.items():
            vm = sim.vms.get(name)
            if vm is None:
                continue
            vm.balloon.set_target(int(plan.balloon_target_mib * PAGES_PER_MIB))
            done = self.swap_to_target(vm, plan)
            if done:
                sim._event("reclaim", name, ", ".join(f"{k} {v}" for k, v in done.items()))

    def swap_to_target(self, vm: SimVm, plan: VmPlan, *, refill: bool = False
                       ) -> dict[str, int]:
        """Share, compress or swap ``vm``'s pages up to ``plan``'s swap target.

        When a plan is applied, the whole difference between the target and
        what the host holds swapped or compressed is taken. Between balance
        periods (``refill``, every tick while the host is in HARD or LOW), a
        page the guest touched back in is replaced by another, as far as the
        VM is still short of the target, so the VM stays where the plan put it
        instead of faulting its way back up until the next plan; ESX's swapper
        likewise works asynchronously towards the target [OSDI02 §3.3]. Only
        returned pages are replaced, not pages the target was short by because
        they were shared instead (share-before-swap frees them without adding
        to what is held): that would take more from the VM every tick.

        Returns:
            Pages reclaimed by each mechanism, empty if nothing was wanted.
        """
        sim = self.sim
        hv = vm.host_vm
        returned = hv.swapfile.counters.swap_ins + hv.zip.counters.decompressed
        want = int(plan.swap_target_mib * PAGES_PER_MIB) - (hv.swapfile.n_used + hv.zip.n_pages)
        if refill:
            want = min(want, returned - vm.returned_seen)
        vm.returned_seen = returned
        if want <= 0:
            return {}
        allowed = actions(sim.state, sim.scenario.host.profile)
        host = sim.scenario.host
        return hv.reclaim(want, host.swap_selection, sim._reclaim_rng,
                          compress=plan.compress and allowed.compress and host.compression.enabled,
                          share_first=host.sharing.enabled)
