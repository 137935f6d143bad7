"""The policy's view of one host of a batch: ``policy.ports.MemoryBackend`` over masses.

The same samples and plans as the page-level backend (``sim_backend.py``):
consumed memory is the VM's private frames (kernel, private pages, its
compression cache), a balloon's size is its mass, swapped and compressed
memory are the masses in those states, SHRDSVD the kernel's share of the
shared frames, a balloon stuck as the host judged it at the last poll
(``aggregate/balloon.py``). Applying a plan sets the balloon target and
takes what the VM must give up beyond it at once (compressed first where
allowed, then swapped), as the page-level backend does; the plan's host part
sets the sharing scanner's mode (run, stop, or unmerge: ``unmerge.py``) and
rate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from hvmem.aggregate import kernel as k
from hvmem.aggregate.model import HostBatch
from hvmem.policy.samples import HostPlan, HostSample, Plans, SharingMode, VmPlan, VmSample
from hvmem.policy.states import MemState
from hvmem.units import MIB, ns_to_s

_MODES = {SharingMode.RUN: k.SHARING_RUN, SharingMode.STOP: k.SHARING_STOP,
          SharingMode.UNMERGE: k.SHARING_UNMERGE}


class AggregateBackend:
    """Host ``h`` of ``batch`` as a policy sees it.

    Args:
        batch: the hosts' arrays.
        h: which host.
        clock: the simulated time, in ns.
        on_event: where what a plan reclaimed is recorded (kind, VM, detail).
    """

    def __init__(self, batch: HostBatch, h: int, clock: Callable[[], int],
                 on_event: Callable[[str, str, str], None] | None = None) -> None:
        self.batch = batch
        self.h = h
        self.clock = clock
        self.on_event = on_event
        self.host_plan: HostPlan | None = None
        self._psi_marks: dict[int, tuple[int, float]] = {}

    def running(self) -> list[int]:
        """The VM slots powered on."""
        b, h = self.batch, self.h
        return [v for v in range(len(b.slots[h])) if b.vm[h, v, k.V_ON] > 0]

    def sample(self) -> tuple[HostSample, list[VmSample]]:
        """Observe host ``h`` and its running VMs."""
        b, h = self.batch, self.h
        now = self.clock()
        vms = []
        running = self.running()
        mib = 1.0 / k.PAGES_PER_MIB
        by_state = b.m[h].sum(axis=1) * mib  # MiB by VM and state: one pass for all VMs
        free = (b.m[h, :, k.FREE_ROW].sum(axis=1) * mib).tolist()
        vmv = b.vm[h]
        consumed = ((vmv[:, k.V_KERNEL] + vmv[:, k.V_CACHE_FRAMES]) * mib
                    + by_state[:, k.PRIV] + by_state[:, k.FILL]).tolist()
        balloon, swapped, zipped = (by_state[:, s].tolist() for s in (k.BALL, k.SWP, k.ZIP))
        for v in running:
            cfg = b.slots[h][v].config
            vm = vmv[v]
            vms.append(VmSample(
                name=cfg.name, configured_mib=vm[k.V_PAGES] * mib, shares=cfg.shares,
                consumed_mib=consumed[v],
                active_mib=round(b.active_frac(h, v) * vm[k.V_PAGES]) * mib,
                balloon_max_mib=cfg.balloon_max_pages * mib,
                reservation_mib=cfg.reservation_bytes / MIB,
                limit_mib=None if cfg.limit_bytes is None else cfg.limit_bytes / MIB,
                balloon_mib=balloon[v],
                balloon_target_mib=int(vm[k.V_BAL_TARGET]) * mib,
                balloon_stuck=bool(vm[k.V_BAL_STUCK] > 0),
                swapped_mib=swapped[v],
                compressed_mib=zipped[v],
                shared_saved_mib=float(vm[k.V_SAVED]) * mib,
                overhead_mib=cfg.overhead_bytes / MIB,
                guest_free_mib=free[v],
                guest_available_mib=free[v],
                psi_some_frac=self._psi(v, now, float(b.cnt[h, v, k.K_RECLAIM_STALL_NS])),
            ))
        host = b.host[h]
        sample = HostSample(
            time_s=ns_to_s(now), total_mib=host[k.H_TOTAL] / k.PAGES_PER_MIB,
            free_mib=host[k.H_FREE] / k.PAGES_PER_MIB, state=MemState(int(host[k.H_STATE])),
            minfree_mib=b.thresholds[h].minfree_mib, profile=b.scenarios[h].host.profile,
            shared_saved_mib=sum(s.shared_saved_mib for s in vms),
            sharing_pages_to_scan=None if self.host_plan is None else self.host_plan.scan_pages,
        )
        return sample, vms

    def _psi(self, v: int, now: int, stall_ns: float) -> float | None:
        last = self._psi_marks.get(v)
        self._psi_marks[v] = (now, stall_ns)
        if last is None or now <= last[0]:
            return None
        return min(1.0, (stall_ns - last[1]) / (now - last[0]))

    def apply(self, plans: Mapping[str, VmPlan]) -> None:
        """Balloon targets, swap targets and the sharing scanner's mode."""
        b, h = self.batch, self.h
        if isinstance(plans, Plans):
            self.host_plan = plans.host
            self._sharing()
        by_name = {b.slots[h][v].config.name: v for v in self.running()}
        for name, plan in plans.items():
            v = by_name.get(name)
            if v is None:
                continue
            vm = b.vm[h, v]
            b.slots[h][v].plan = plan
            vm[k.V_BAL_TARGET] = int(plan.balloon_target_mib * k.PAGES_PER_MIB)
            vm[k.V_SWAP_TARGET] = plan.swap_target_mib
            vm[k.V_SZTGT], vm[k.V_SWTGT] = plan.target_mib, plan.swap_target_mib
            vm[k.V_COMPRESS] = float(plan.compress)
            vm[k.V_BLOCKED] = float(plan.blocked)
            vm[k.V_PLANNED] = 1.0
            zipped, swapped = b.cnt[h, v, k.K_ZIP], b.cnt[h, v, k.K_SWAP_OUT]
            took = k.swap_to_target(b.m, b.ck, b.vm, b.cnt, b.host, b.heat, b.rng, h, v,
                                    False, b.lru)
            if took and self.on_event is not None:
                done = {"compressed": int(b.cnt[h, v, k.K_ZIP] - zipped),
                        "swapped": int(b.cnt[h, v, k.K_SWAP_OUT] - swapped)}
                self.on_event("reclaim", name,
                              ", ".join(f"{key} {n}" for key, n in done.items() if n))

    def sharing_changed(self) -> None:
        """The host's sharing settings changed (a scheduled event): the scanner follows."""
        self._sharing()

    def _sharing(self) -> None:
        b, h, plan = self.batch, self.h, self.host_plan
        mode, rate = SharingMode.RUN, None
        if plan is not None and plan.sharing is not None:
            mode = plan.sharing
            running = self.running()
            if plan.scan_rate_pages_s is not None and running:
                rate = plan.scan_rate_pages_s / len(running)
        b.host[h, k.H_SHARING] = _MODES[mode]
        b.share_setup(h, rate)
