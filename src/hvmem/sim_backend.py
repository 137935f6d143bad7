"""The simulator as the policy sees it: ``policy.ports.MemoryBackend`` over a running simulation.

The policy controller samples the host and its VMs and hands plans back
(``policy/controller.py``); :class:`SimulatedBackend` is the simulator's side of
that loop, as ``backends/qemu/backend.py`` is a real host's. It sees the
simulation through :class:`SimulationView`: the clock, the host's memory state,
the running VMs and where its events go. What does not change over a run (the
host's configuration and machine memory, the state thresholds, the sharing
tally and the swapper's random stream) it is given when it is made.

Applying a plan sets each VM's balloon target and takes what the VM must give
up beyond its balloon at once: shared first, then compressed, then swapped, as
the host's memory state allows (:meth:`SimulatedBackend.swap_to_target`).

The plan's host part drives the sharing scanner as it drives KSM on a real host
(:meth:`SimulatedBackend.sharing`): run, stop, or unmerge, at the policy's
``pages_to_scan`` per ``sleep_millisecs`` where it sets them. KSM's rate is
host-wide, the scanner's per VM, so a host-wide rate is split evenly among the
running VMs [LINUX-KSM]. A policy that leaves sharing alone (``sharing=None``)
and one that sets no rate leave the scenario's ``[host.sharing]`` rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from hvmem.guest.pages import PageKind
from hvmem.hardware.frames import MachineMemory
from hvmem.hypervisor.pmap import Backing
from hvmem.policy.minfree import Thresholds
from hvmem.policy.samples import HostPlan, HostSample, Plans, SharingMode, VmPlan, VmSample
from hvmem.policy.states import MemState, actions
from hvmem.scenario.schema import HostConfig
from hvmem.sim_rows import SharingTally
from hvmem.sim_vm import SimVm
from hvmem.units import MIB, PAGE_SIZE_BYTES, ns_to_s, pages_to_mib

PAGES_PER_MIB = MIB // PAGE_SIZE_BYTES


def refill_pages(tick_ns: int, device_op_ns: float) -> int:
    """Pages the swapper may write in a tick between plans: one per device operation.

    The cost table's swap latency is a random 4 KiB read; ESX's swapper
    writes asynchronously and in clusters [OSDI02 §3.3], so one page per
    operation is the least it manages: the rate that bounds it, not a cost.
    """
    return max(1, int(tick_ns // max(1.0, device_op_ns)))


class SimulationView(Protocol):
    """What the backend reads of a running simulation, and the one thing it writes."""

    @property
    def now_ns(self) -> int:
        """The simulated time."""

    @property
    def state(self) -> MemState:
        """The host's memory state."""

    @property
    def vms(self) -> Mapping[str, SimVm]:
        """The running VMs by name."""

    def event(self, kind: str, vm: str, detail: str) -> None:
        """Record an event of the run (what a plan reclaimed)."""


class SimulatedBackend:
    """The policy's view of the simulation (``policy.ports.MemoryBackend``).

    Args:
        sim: the running simulation.
        host: the host's configuration (profile, reclamation switches).
        frames: the host's machine memory.
        thresholds: the host's memory-state thresholds.
        tally: the per-VM sharing figures.
        reclaim_rng: the stream the swapper picks pages from.
    """

    def __init__(self, sim: SimulationView, host: HostConfig, frames: MachineMemory,
                 thresholds: Thresholds, tally: SharingTally,
                 reclaim_rng: np.random.Generator) -> None:
        self.sim = sim
        self.host = host
        self.frames = frames
        self.thresholds = thresholds
        self.tally = tally
        self.reclaim_rng = reclaim_rng
        self.host_plan: HostPlan | None = None  # the latest plan's host part
        self._psi_marks: dict[str, tuple[int, float]] = {}  # VM -> (time, stall) at sample

    def sample(self) -> tuple[HostSample, list[VmSample]]:
        """Observe the simulated host and its running VMs."""
        sim, frames = self.sim, self.frames
        vms = []
        tallies = self.tally.many([vm.host_vm.pmap for vm in sim.vms.values()], frames)
        for vm, (_, saved, n_private, _) in zip(sim.vms.values(), tallies, strict=True):
            hv, cfg = vm.host_vm, vm.config
            vms.append(VmSample(
                name=cfg.name, configured_mib=pages_to_mib(hv.n_ppns), shares=cfg.shares,
                consumed_mib=pages_to_mib(n_private + hv.zip.frames.size),
                active_mib=pages_to_mib(vm.sampler.active_pages),
                balloon_max_mib=pages_to_mib(vm.balloon.max_pages),
                reservation_mib=cfg.reservation_bytes / MIB,
                limit_mib=None if cfg.limit_bytes is None else cfg.limit_bytes / MIB,
                balloon_mib=pages_to_mib(vm.balloon.size_pages),
                balloon_target_mib=pages_to_mib(vm.balloon.target_pages),
                balloon_stuck=vm.balloon.stuck,
                swapped_mib=pages_to_mib(hv.swapfile.n_used),
                compressed_mib=pages_to_mib(vm.host_vm.zip.n_pages),
                shared_saved_mib=pages_to_mib(saved),
                overhead_mib=cfg.overhead_bytes / MIB,
                guest_free_mib=pages_to_mib(vm.kernel.allocator.n_free),
                guest_available_mib=pages_to_mib(vm.kernel.allocator.n_free
                                                 + vm.kernel.count(PageKind.FILE)),
                psi_some_frac=self._psi_some_frac(cfg.name, hv.counters.reclaim_stall_ns),
            ))
        # The host's sharing savings are the VMs' (one tally pass over each pmap).
        host = HostSample(
            time_s=ns_to_s(sim.now_ns), total_mib=pages_to_mib(frames.n_frames),
            free_mib=pages_to_mib(frames.n_free), state=sim.state,
            minfree_mib=self.thresholds.minfree_mib, profile=self.host.profile,
            shared_saved_mib=sum(vm.shared_saved_mib for vm in vms),
            sharing_pages_to_scan=None if self.host_plan is None else self.host_plan.scan_pages,
        )
        return host, vms

    def _psi_some_frac(self, name: str, stall_ns: float) -> float | None:
        """A VM's stall share on swap-in and decompression since its last sample.

        A PSI ``some`` reading (policy/psi.py); None at the VM's first sample.
        """
        marks = self._psi_marks
        now = self.sim.now_ns
        last = marks.get(name)
        marks[name] = (now, stall_ns)
        if last is None or now <= last[0]:
            return None
        return min(1.0, (stall_ns - last[1]) / (now - last[0]))

    def apply(self, plans: Mapping[str, VmPlan]) -> None:
        """Balloon targets to the devices; take what must go beyond that."""
        sim = self.sim
        if isinstance(plans, Plans):
            self.host_plan = plans.host
        for name, plan in plans.items():
            vm = sim.vms.get(name)
            if vm is None:
                continue
            vm.balloon.set_target(int(plan.balloon_target_mib * PAGES_PER_MIB))
            done = self.swap_to_target(vm, plan)
            if done:
                sim.event("reclaim", name, ", ".join(f"{k} {v}" for k, v in done.items()))

    def sharing(self, default_rate_pages_per_s: float | None
                ) -> tuple[SharingMode, float | None]:
        """What the sharing scanner does now: its mode and per-VM rate (None: the default)."""
        plan = self.host_plan
        if plan is None or plan.sharing is None:
            return SharingMode.RUN, default_rate_pages_per_s
        rate = plan.scan_rate_pages_s
        if rate is None or not self.sim.vms:
            return plan.sharing, default_rate_pages_per_s
        return plan.sharing, rate / len(self.sim.vms)

    def unmerge(self) -> int:
        """KSM ``run=2``: give shared pages private copies again, as free frames allow.

        Returns the pages unshared. Copies are made from free frames only, never by
        reclaiming others (the kernel's unmerge fails on memory it cannot get).
        """
        done = 0
        for vm in self.sim.vms.values():
            hv = vm.host_vm
            shared = np.flatnonzero(hv.pmap.state == Backing.SHARED)
            room = self.frames.n_free - int(self.thresholds.minfree_mib * PAGES_PER_MIB)
            take = shared[: max(0, min(shared.size, room))]
            if take.size:
                hv.break_cow(take)
                done += int(take.size)
        return done

    def swap_to_target(self, vm: SimVm, plan: VmPlan, *, refill_ns: int | None = None
                       ) -> dict[str, int]:
        """Share, compress or swap ``vm``'s pages up to ``plan``'s swap target.

        When a plan is applied, the whole difference between the target and
        what the host holds swapped or compressed is taken. Between balance
        periods (``refill_ns``, the tick, every tick while the host is in HARD
        or LOW), pages the guest touched back in are replaced by others, as far
        as the VM is still short of the target, at a bounded rate: ESX's
        swapper works asynchronously towards the target [OSDI02 §3.3], and
        it writes no faster than the swap device takes pages, one 4 KiB page
        per device operation (:func:`refill_pages`). A VM whose working set is
        larger than its target then pays each page it touches back in with the
        device's latency, and the swapper cannot take pages back faster than
        the device gives them: the VM's throughput falls with its target as
        its stall grows, never in a loop that replaces at once every page the
        VM touches, whatever the rate. Only returned pages are replaced, not
        pages the target was short by because they were shared instead
        (share-before-swap frees them without adding to what is held): that
        would take more from the VM every tick.

        Returns:
            Pages reclaimed by each mechanism, empty if nothing was wanted.
        """
        hv = vm.host_vm
        returned = hv.swapfile.counters.swap_ins + hv.zip.counters.decompressed
        want = int(plan.swap_target_mib * PAGES_PER_MIB) - (hv.swapfile.n_used + hv.zip.n_pages)
        if refill_ns is not None:
            want = min(want, returned - vm.returned_seen,
                       refill_pages(refill_ns, hv.swapfile.op_ns))
        vm.returned_seen = returned
        if want <= 0:
            return {}
        allowed = actions(self.sim.state, self.host.profile)
        host = self.host
        return hv.reclaim(want, host.swap_selection, self.reclaim_rng,
                          compress=plan.compress and allowed.compress and host.compression.enabled,
                          share_first=host.sharing.enabled)
