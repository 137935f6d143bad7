"""Samples of real guests and their host, built from QMP, /proc, cgroups and KSM.

What is modelled
----------------
The policy sees a QEMU guest as it sees a simulated VM, through a
:class:`~hvmem.policy.samples.VmSample`. Mapping ESX's terms onto what Linux
and QEMU expose:

=================  ==============================================================
sample field       where it comes from
=================  ==============================================================
configured_mib     QMP ``query-memory-size-summary`` (base memory)
balloon_mib        configured - QMP ``query-balloon`` ``actual``
consumed_mib       Rss of the guest-RAM mapping in ``/proc/PID/smaps``, less this
                   VM's share of KSM savings (procfs.py)
overhead_mib       QEMU's VmRSS less the guest RAM (TCG: about 83 MiB)
shared_saved_mib   ``ksm_merging_pages`` x ``pages_sharing / (pages_sharing +
                   pages_shared)``: each KSM page keeps one copy, so of the pages
                   merged into it all but one are saved; split across processes in
                   proportion to their merged pages (an estimate: exact per-VM
                   figures would need each KSM page's mappers)
swapped_mib        file-backed RAM: blocks of the RAM file on disk less its
                   resident part (pages written back and dropped; an estimate,
                   since pages resident *and* on disk count once); anonymous RAM
                   on a host with swap: VmSwap
psi_some_frac      the guest cgroup's ``memory.pressure`` (some, avg10), where its
                   QEMU has a cgroup of its own with one (cgroups.py); the host's
                   from ``/proc/pressure/memory``
guest_free_mib,    virtio-balloon ``guest-stats`` (``stat-free-memory``,
guest_available    ``stat-available-memory``), polled by QEMU every
                   ``stats_interval_s`` (``guest-stats-polling-interval``)
active_mib         what the guest uses: configured - balloon - available (from the
                   last stats), else consumed; ESX's sampled working set has no
                   QEMU equivalent
swap_in_rate       pages charged to the VM's cgroup per second x 4 KiB (v1 ``pgpgin``;
                   v2 ``workingset_refault_*``): with file-backed RAM at steady state,
                   pages read back from the RAM file. ``pgmajfault`` undercounts them:
                   one major fault reads a whole cluster ahead (a guest re-reading
                   100 MiB that the limit had pushed out showed 17 major faults and
                   13 303 pages in)
=================  ==============================================================

The host sample comes from ``/proc/meminfo`` and KSM. With a *host memory
budget* (``host_memory_mib``) the host is as large as the budget and its free
memory is the budget less what the VMs use (consumed + overhead), never more
than the real MemAvailable: a small test host can be put under pressure without
filling a 24 GiB machine.

``pressure`` sets the budget from the guests, at the first sample, as ESX
states overcommitment: the guests' configured memory is ``pressure`` times the
host memory left to them, and QEMU's own memory (measured, the VMs' overhead)
comes on top::

    budget = sum(configured) / pressure + sum(overhead)

Guests use only part of what they are configured with (two 384 MiB guests of
the launcher's default workload keep about 185 MiB of RAM resident each), so
reclamation starts once ``sum(configured) / pressure`` falls below what they
hold plus minFree; the state bands are then ESX's for a host of the budget's
size (policy/minfree.py). The memory state comes from
:class:`~hvmem.policy.state_tracker.StateTracker` on that free memory, as in the
simulator.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hvmem.backends.qemu.config import BackendOptions
from hvmem.backends.qemu.guest_state import GuestState
from hvmem.backends.qemu.ksm import KsmCounters
from hvmem.backends.qemu.procfs import HostMemInfo, read_pressure, read_process
from hvmem.errors import BackendError
from hvmem.policy.minfree import thresholds
from hvmem.policy.samples import HostSample, VmSample
from hvmem.policy.state_tracker import StateTracker
from hvmem.units import MIB

__all__ = ["HostSampler", "read_guest", "read_stalled", "update_rates", "vm_samples"]

_PAGE_MIB = 4 / 1024
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def read_guest(g: GuestState, proc_root: Path) -> None:
    """Refresh one guest's balloon, guest stats and /proc readings."""
    if g.balloon_path is not None:
        actual = g.client.call("query-balloon")["actual"] / MIB
        stats = g.client.call("qom-get", {"path": g.balloon_path, "property": "guest-stats"})
    else:
        actual, stats = g.configured_mib, {}
    g.proc = read_process(g.pid, g.configured_mib, g.ram_file, proc_root)
    g.balloon_mib = max(0.0, g.configured_mib - actual)
    _take_stats(g, stats)
    _take_pressure(g)


def _take_pressure(g: GuestState) -> None:
    if g.pressure_path is not None:
        reading = read_pressure(g.pressure_path)
        g.psi_some_frac = reading.some_frac if reading is not None else None


def read_stalled(g: GuestState, proc_root: Path) -> None:
    """Refresh a stalled guest's /proc readings; its balloon and stats keep their values.

    A stopped QEMU still has its /proc entry, so what it holds stays current while
    QMP cannot be asked.
    """
    g.proc = read_process(g.pid, g.configured_mib, g.ram_file, proc_root)
    _take_pressure(g)


def update_rates(g: GuestState, now: float) -> None:
    """The guest's CPU share, swap-out and swap-in rates since its last reading."""
    # CPU share of the QEMU process since the last reading.
    if g.last_cpu is not None and now > g.last_cpu[0]:
        g.cpu_frac = (g.proc.cpu_ticks - g.last_cpu[1]) / _TICKS_PER_S / (now - g.last_cpu[0])
    g.last_cpu = (now, g.proc.cpu_ticks)
    g.swapped_mib = _swapped_mib(g)
    if g.last_swapped is not None and now > g.last_swapped[0]:
        g.swap_out_mib_s = max(0.0, g.swapped_mib - g.last_swapped[1]) / (
            now - g.last_swapped[0])
    g.last_swapped = (now, g.swapped_mib)
    if g.cgroup is not None and g.cgroup_exclusive:
        try:
            stat = g.cgroup.stat()
            majflt = (stat.get("pgpgin", 0) if g.cgroup.version == 1 else
                      stat.get("workingset_refault_anon", 0)
                      + stat.get("workingset_refault_file", 0))
        except BackendError:
            majflt = 0
        if g.last_majflt is not None and now > g.last_majflt[0]:
            g.swap_in_mib_s = max(0, majflt - g.last_majflt[1]) * _PAGE_MIB / (
                now - g.last_majflt[0])
        g.last_majflt = (now, majflt)


def _take_stats(g: GuestState, stats: Mapping[str, Any]) -> None:
    update = stats.get("last-update") if stats else None
    values = stats.get("stats", {}) if stats else {}

    def mib(key: str) -> float | None:
        value = values.get(key)
        return None if value is None or value < 0 else value / MIB

    if not update or update == g.stats_update:
        return
    g.stats_update = update
    g.guest_free_mib = mib("stat-free-memory")
    g.guest_available_mib = mib("stat-available-memory")
    if g.guest_available_mib is None:
        g.guest_available_mib = g.guest_free_mib
    if g.guest_available_mib is not None:
        # What the guest uses besides the balloon (the balloon is neither free nor
        # available, whether or not it is subtracted from MemTotal).
        g.guest_used_mib = max(0.0, g.configured_mib - g.balloon_mib
                               - g.guest_available_mib)


def _swapped_mib(g: GuestState) -> float:
    proc = g.proc
    assert proc is not None
    if g.ram_file is not None:
        try:
            on_disk = os.stat(g.ram_file).st_blocks * 512 / MIB
        except OSError:
            return 0.0
        resident = proc.ram_rss_mib or 0.0
        return min(g.configured_mib, max(0.0, on_disk - resident))
    return min(g.configured_mib, proc.swap_mib)


def vm_samples(guests: Sequence[GuestState], ksm: KsmCounters | None) -> list[VmSample]:
    """The samples of guests just read, each with its share of KSM's savings."""
    merged_total = sum(g.proc.ksm_merging_pages for g in guests if g.proc)
    saved_frac = 0.0
    if ksm is not None and ksm.pages_sharing + ksm.pages_shared > 0:
        saved_frac = ksm.pages_sharing / (ksm.pages_sharing + ksm.pages_shared)
    vms = []
    for g in guests:
        assert g.proc is not None
        g.saved_mib = g.proc.ksm_merging_pages * saved_frac * _PAGE_MIB if merged_total else 0
        vms.append(_vm_sample(g))
    return vms


def _vm_sample(g: GuestState) -> VmSample:
    proc = g.proc
    assert proc is not None
    ram_rss = proc.ram_rss_mib if proc.ram_rss_mib is not None else proc.rss_mib
    consumed = max(0.0, ram_rss - g.saved_mib)
    # What the guest uses, from its stats; without them, what the host backs.
    active = min(g.configured_mib, g.guest_used_mib) if g.guest_used_mib is not None else consumed
    spec = g.spec
    return VmSample(
        name=g.name, configured_mib=g.configured_mib, shares=g.shares,
        consumed_mib=consumed, active_mib=active, balloon_max_mib=g.balloon_max_mib,
        reservation_mib=min(spec.reservation_mib, g.configured_mib),
        limit_mib=spec.limit_mib, balloon_mib=min(g.balloon_mib, g.configured_mib),
        balloon_target_mib=g.last_set_mib,
        balloon_stuck=g.stuck or g.stalled or g.balloon_path is None,
        swapped_mib=g.swapped_mib, shared_saved_mib=g.saved_mib,
        overhead_mib=proc.overhead_mib, guest_free_mib=g.guest_free_mib,
        guest_available_mib=g.guest_available_mib, swap_in_rate_mib_s=g.swap_in_mib_s,
        psi_some_frac=g.psi_some_frac)


class HostSampler:
    """The host's samples, with its memory state tracked from one to the next.

    Attributes:
        tracker: the state tracker, made again whenever the host's size changes.
    """

    def __init__(self) -> None:
        self.tracker: StateTracker | None = None
        self._tracker_total: float | None = None
        self.pressure_budget_mib: float | None = None

    def sample(self, now: float, opts: BackendOptions, mem: HostMemInfo,
               ksm: KsmCounters | None, vms: Sequence[VmSample],
               guests: Sequence[GuestState]) -> HostSample:
        """The host sample over ``vms``, as ``opts`` size the host (see the module docs)."""
        budget = opts.host_memory_mib
        if opts.pressure is not None:
            if self.pressure_budget_mib is None and vms:
                self.pressure_budget_mib = (sum(vm.configured_mib for vm in vms)
                                            / opts.pressure
                                            + sum(vm.overhead_mib for vm in vms))
            budget = self.pressure_budget_mib
        if budget is not None:
            total = budget
            used = sum(vm.consumed_mib + vm.overhead_mib for vm in vms)
            free = min(max(0.0, total - used), mem.available_mib)
            cache = 0.0
        else:
            total, free = mem.total_mib, mem.free_mib
            ram_files = sum((g.proc.ram_rss_mib or 0.0) for g in guests
                            if g.ram_file and g.proc is not None)
            cache = max(0.0, mem.buffers_mib + mem.cached_mib - mem.shmem_mib - ram_files)
        if self.tracker is None or self._tracker_total != total:
            self.tracker = StateTracker(thresholds(total, opts.profile))
            self._tracker_total = total
        state = self.tracker.update(free)
        psi = read_pressure(opts.proc_root / "pressure" / "memory")
        return HostSample(
            time_s=now, total_mib=total, free_mib=free, state=state,
            minfree_mib=self.tracker.thresholds.minfree_mib, profile=opts.profile,
            cache_mib=cache, shared_saved_mib=ksm.saved_mib if ksm else 0.0,
            sharing_pages_to_scan=ksm.pages_to_scan if ksm else None,
            swap_in_rate_mib_s=sum(vm.swap_in_rate_mib_s for vm in vms),
            swap_out_rate_mib_s=sum(g.swap_out_mib_s for g in guests),
            psi_some_frac=psi.some_frac if psi else None,
            psi_full_frac=psi.full_frac if psi else None)
