"""The QEMU backend: real guests observed and controlled for the policy the simulator runs.

What is modelled
----------------
:class:`QemuBackend` implements :class:`~hvmem.policy.ports.MemoryBackend` over
QEMU processes reached through their QMP sockets, so
:class:`~hvmem.policy.controller.PolicyController` drives real guests with
exactly the policy objects the simulator uses. Mapping ESX's terms onto what
Linux and QEMU expose:

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
filling a 24 GiB machine. The memory state comes from
:class:`~hvmem.policy.state_tracker.StateTracker` on that free memory, as in the
simulator.

Applying a plan
---------------
* **Balloon** (best effort). The target goes to QEMU as ``balloon`` (the guest
  size = configured - balloon target), never below a *floor*: the guest keeps
  what it uses plus a reserve, ``used = configured - balloon - available`` from
  its last stats and ``reserve = max(guest_reserve_mib, guest_reserve_frac x
  configured)``. Without stats, a balloon may deflate but not grow.
  Over-inflating a tiny guest panics it, or with ``deflate-on-oom`` stalls the
  balloon ("Out of puff!" [QEMU-PROBE]). Progress is checked at every
  sample: a balloon that has not moved for ``balloon_stuck_after_s`` (squeezed
  declares a driver stuck after 5 s [SQUEEZED]), or has not reached its target
  within ``balloon_timeout_s``, is *stuck*: its target is set back to where it
  is, the sample says ``balloon_stuck`` (so the planner swaps instead
  [VS-SWAPWHEN]) and ballooning is tried again after ``balloon_retry_s``. A
  guest that has sent no balloon stats ``balloon_stuck_after_s`` after it was
  attached has no running driver (the driver sends its first stats as soon as
  it starts [QEMU-PROBE]) and is stuck too.
* **Swap** (``swap_target_mib``): a memory-cgroup limit on the QEMU process
  (cgroups.py), lowered by what the plan wants swapped beyond what is swapped
  already, never below QEMU's anonymous memory plus a headroom. Only for a VM
  in a cgroup of its own whose RAM is a file on disk, or anonymous on a host
  with swap; otherwise the backend refuses, once per reason, with a message
  saying why (an anonymous-RAM QEMU under a limit on a host without swap is
  OOM-killed). When the host is back in a state without reclamation the limit
  is lifted, and the pages come back as the guest touches them (ESX does not
  swap in proactively either).
* **Sharing** (the host plan): KSM run/scan rate (ksm.py); original settings
  are restored by :meth:`QemuBackend.close`.

Faults: a guest whose QMP socket is gone or whose process died is dropped from
control with an event; a QMP call that times out is retried once on a fresh
connection (qmp.py), and a guest that fails ``max_failures`` samples in a row
is dropped; a sample never waits longer than the QMP timeouts allow.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hvmem.backends.qemu.cgroups import (
    DEFAULT_CGROUP_ROOT,
    DEFAULT_HEADROOM_MIB,
    MemoryCgroup,
    exclusive_to,
    memory_cgroup_of,
    on_tmpfs,
)
from hvmem.backends.qemu.ksm import DEFAULT_KSM_DIR, Ksm, KsmCounters
from hvmem.backends.qemu.procfs import (
    HostMemInfo,
    ProcessMemory,
    find_pid_by_arg,
    read_meminfo,
    read_process,
)
from hvmem.backends.qemu.qmp import (
    DEFAULT_TIMEOUT_S,
    QmpClient,
    QmpCommandError,
    QmpGone,
    QmpTimeout,
)
from hvmem.errors import BackendError, ConfigError
from hvmem.policy.minfree import thresholds
from hvmem.policy.samples import (
    HostPlan,
    HostSample,
    Plans,
    VmPlan,
    VmSample,
    balloon_max_for,
    shares_for,
)
from hvmem.policy.state_tracker import StateTracker
from hvmem.policy.states import DEFAULT_PROFILE, MemState, actions

__all__ = ["BackendOptions", "GuestSpec", "QemuBackend"]

log = logging.getLogger("hvmem.qemu")

MIB = 1 << 20
_PAGE_MIB = 4 / 1024
_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """One guest to control, as a config file or the command line names it.

    Attributes:
        name: the VM's name (unique).
        qmp: its QMP unix socket.
        pid: its QEMU process, if known.
        pid_file: a file holding that pid (QEMU's ``-pidfile``).
        shares: ``low``/``normal``/``high`` or a number.
        reservation_mib: guaranteed memory [VS-ALLOC].
        limit_mib: ceiling, None = unlimited.
        balloon_max_mib: largest balloon; None = 65 % of configured
            (``Mem.CtlMaxPercent``).
    """

    name: str
    qmp: Path
    pid: int | None = None
    pid_file: Path | None = None
    shares: str | int = "normal"
    reservation_mib: float = 0.0
    limit_mib: float | None = None
    balloon_max_mib: float | None = None


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Knobs of :class:`QemuBackend` (see the module docs for each rule).

    Attributes:
        host_memory_mib: the host memory budget; None = the real MemTotal.
        profile: memory-state profile (``esx4``, ``esxi5``, ``esxi6``).
        qmp_timeout_s: bound on every QMP call.
        stats_interval_s: ``guest-stats-polling-interval`` set on each balloon.
        balloon_stuck_after_s: no balloon progress for this long = stuck.
        balloon_timeout_s: target not reached within this long = stuck.
        balloon_retry_s: a stuck balloon is tried again after this long.
        guest_reserve_mib: memory a guest keeps above what it uses, at least.
        guest_reserve_frac: ... or this fraction of its configured memory.
        swap_headroom_mib: kept above QEMU's anonymous memory under a limit.
        max_failures: samples in a row a guest may fail before it is dropped.
        manage_ksm: tune KSM from the host plan (and restore it on close).
        sample_cache_s: a sample younger than this is reused.
        proc_root: /proc.
        ksm_root: /sys/kernel/mm/ksm.
        cgroup_root: /sys/fs/cgroup.
        clock: monotonic seconds (tests pass a fake clock).
    """

    host_memory_mib: float | None = None
    profile: str = DEFAULT_PROFILE
    qmp_timeout_s: float = DEFAULT_TIMEOUT_S
    stats_interval_s: int = 2
    balloon_stuck_after_s: float = 10.0
    balloon_timeout_s: float = 30.0
    balloon_retry_s: float = 60.0
    guest_reserve_mib: float = 64.0
    guest_reserve_frac: float = 0.05
    swap_headroom_mib: float = DEFAULT_HEADROOM_MIB
    max_failures: int = 3
    manage_ksm: bool = True
    sample_cache_s: float = 0.5
    proc_root: Path = Path("/proc")
    ksm_root: Path = DEFAULT_KSM_DIR
    cgroup_root: Path = DEFAULT_CGROUP_ROOT
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.host_memory_mib is not None and not (
                math.isfinite(self.host_memory_mib) and self.host_memory_mib > 0):
            raise ConfigError(f"host memory budget: expected a positive size, found "
                              f"{self.host_memory_mib} MiB")
        for name in ("qmp_timeout_s", "balloon_stuck_after_s", "balloon_timeout_s",
                     "balloon_retry_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: expected a positive time, found {value}")
        if not 1 <= self.stats_interval_s <= 3600:
            raise ConfigError(f"stats_interval_s: expected 1-3600 s, found "
                              f"{self.stats_interval_s}")
        if self.max_failures < 1:
            raise ConfigError(f"max_failures: expected at least 1, found {self.max_failures}")


@dataclass
class _Guest:
    """Everything the backend knows and tracks about one controlled guest."""

    spec: GuestSpec
    client: QmpClient
    pid: int
    configured_mib: float
    shares: int
    balloon_max_mib: float
    balloon_path: str | None
    ram_file: str | None
    ram_on_disk: bool
    cgroup: MemoryCgroup | None
    cgroup_exclusive: bool
    original_limit_mib: float | None = None
    limit_set: bool = False
    failures: int = 0
    attached_s: float = 0.0
    # balloon tracking (MiB, seconds)
    balloon_mib: float = 0.0
    target_mib: float | None = None  # balloon target outstanding (None: none)
    target_set_s: float = 0.0
    progress_mark_mib: float = 0.0
    progress_s: float = 0.0
    stuck_since_s: float | None = None
    last_set_mib: float = 0.0  # balloon size last asked of QEMU
    # guest stats
    stats_update: float | None = None
    guest_free_mib: float | None = None
    guest_available_mib: float | None = None
    guest_used_mib: float | None = None
    # rates
    last_cpu: tuple[float, int] | None = None
    cpu_frac: float = 0.0
    last_majflt: tuple[float, int] | None = None
    swap_in_mib_s: float = 0.0
    last_swapped: tuple[float, float] | None = None
    swap_out_mib_s: float = 0.0
    refused: set[str] = field(default_factory=set)
    plan: VmPlan | None = None
    # last reading
    proc: ProcessMemory | None = None
    swapped_mib: float = 0.0
    saved_mib: float = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def stuck(self) -> bool:
        return self.stuck_since_s is not None


@dataclass(frozen=True, slots=True)
class Observation:
    """One sample of the whole host, with what the rows and metrics need besides."""

    time_s: float
    host: HostSample
    vms: tuple[VmSample, ...]
    meminfo: HostMemInfo
    ksm: KsmCounters | None


class QemuBackend:
    """Real QEMU guests as a :class:`~hvmem.policy.ports.MemoryBackend`.

    Args:
        guests: the guests to control.
        options: knobs (:class:`BackendOptions`).

    Attributes:
        events: what happened, as the simulator records it (time_s, event, vm, detail).
        guests: the guests under control, by name.

    Raises:
        BackendError: no guest could be attached (each reason is in the message).
        ConfigError: duplicate names.
    """

    def __init__(self, guests: Sequence[GuestSpec], options: BackendOptions | None = None):
        self.options = options or BackendOptions()
        names = [g.name for g in guests]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"guest names must be unique: {', '.join(dup)} appear twice")
        if not guests:
            raise ConfigError("no guests to control (name at least one QMP socket)")
        self._t0 = self.options.clock()
        self.events: list[dict[str, Any]] = []
        self.guests: dict[str, _Guest] = {}
        self.ksm = Ksm(self.options.ksm_root)
        self._ksm_on = self.options.manage_ksm and self.ksm.available
        self._tracker: StateTracker | None = None
        self._tracker_total: float | None = None
        self._last: Observation | None = None
        self.host_plan: HostPlan | None = None
        self.decisions = 0
        self.ksm_setting: tuple[int, int, int] | None = None
        failed = []
        for spec in guests:
            try:
                self.guests[spec.name] = self._attach(spec)
                self.guests[spec.name].attached_s = self.now_s()
                self._event("attach", spec.name, self._describe(self.guests[spec.name]))
            except (BackendError, ProcessLookupError) as err:
                failed.append(str(err) if isinstance(err, BackendError)
                              else f"{spec.name}: QEMU process gone")
                self._event("attach_failed", spec.name, failed[-1])
        if not self.guests:
            raise BackendError("no guest could be attached: " + "; ".join(failed))

    # -- bookkeeping ---------------------------------------------------------------------
    def now_s(self) -> float:
        """Seconds since the backend started."""
        return self.options.clock() - self._t0

    def _event(self, kind: str, vm: str, detail: str) -> None:
        self.events.append({"time_s": round(self.now_s(), 3), "event": kind, "vm": vm,
                            "detail": detail})
        log.info("%s %s %s", kind, vm, detail)

    @staticmethod
    def _describe(g: _Guest) -> str:
        ram = f"file {g.ram_file}" if g.ram_file else "anonymous"
        cg = f", cgroup {g.cgroup.path}" if g.cgroup else ""
        balloon = "balloon" if g.balloon_path else "no balloon"
        return f"pid {g.pid}, {g.configured_mib:.0f} MiB, RAM {ram}{cg}, {balloon}"

    # -- attaching -----------------------------------------------------------------------
    def _find_pid(self, spec: GuestSpec) -> int:
        if spec.pid is not None:
            return spec.pid
        if spec.pid_file is not None:
            try:
                return int(Path(spec.pid_file).read_text().split()[0])
            except (OSError, ValueError, IndexError):
                raise BackendError(f"{spec.name}: cannot read a pid from "
                                   f"{spec.pid_file}") from None
        pid = find_pid_by_arg(str(spec.qmp), self.options.proc_root)
        if pid is None:
            raise BackendError(f"{spec.name}: no QEMU process uses QMP socket {spec.qmp} "
                               "(give its pid file)")
        return pid

    def _attach(self, spec: GuestSpec) -> _Guest:
        opts = self.options
        if not Path(spec.qmp).exists():
            raise BackendError(f"{spec.name}: QMP socket {spec.qmp} does not exist")
        client = QmpClient(spec.qmp, opts.qmp_timeout_s, name=spec.name)
        try:
            pid = self._find_pid(spec)
            if not (opts.proc_root / str(pid)).exists():
                raise BackendError(f"{spec.name}: QEMU process {pid} does not exist")
            summary = client.call("query-memory-size-summary")
            configured = summary["base-memory"] / MIB
            balloon_path = self._find_balloon(client)
            if balloon_path is not None:
                client.call("qom-set", {"path": balloon_path,
                                        "property": "guest-stats-polling-interval",
                                        "value": opts.stats_interval_s})
            ram_file = self._find_ram_file(client)
        except BaseException:
            client.close()
            raise
        ram_on_disk = ram_file is not None and not on_tmpfs(Path(ram_file))
        cgroup = memory_cgroup_of(pid, opts.cgroup_root, opts.proc_root)
        exclusive = cgroup is not None and exclusive_to(cgroup, pid)
        cap = spec.balloon_max_mib
        if balloon_path is None:
            balloon_max = 0.0
        else:
            balloon_max = balloon_max_for(configured, maxmemctl_mib=cap)
        return _Guest(spec=spec, client=client, pid=pid, configured_mib=configured,
                      shares=shares_for(spec.shares, configured), balloon_max_mib=balloon_max,
                      balloon_path=balloon_path, ram_file=ram_file, ram_on_disk=ram_on_disk,
                      cgroup=cgroup, cgroup_exclusive=exclusive)

    @staticmethod
    def _find_balloon(client: QmpClient) -> str | None:
        for parent in ("/machine/peripheral", "/machine/peripheral-anon"):
            try:
                children = client.call("qom-list", {"path": parent})
            except QmpCommandError:
                continue
            for child in children:
                if "virtio-balloon" in child.get("type", ""):
                    return f"{parent}/{child['name']}"
        return None

    @staticmethod
    def _find_ram_file(client: QmpClient) -> str | None:
        try:
            objects = client.call("qom-list", {"path": "/objects"})
        except QmpCommandError:
            return None
        for obj in objects:
            if obj.get("type") == "child<memory-backend-file>":
                return client.call("qom-get", {"path": f"/objects/{obj['name']}",
                                               "property": "mem-path"})
        return None

    # -- sampling ------------------------------------------------------------------------
    def sample(self) -> tuple[HostSample, list[VmSample]]:
        """Observe the host and every guest under control (MemoryBackend)."""
        obs = self.observe()
        return obs.host, list(obs.vms)

    def observe(self) -> Observation:
        """A fresh observation (or the last one, if younger than ``sample_cache_s``)."""
        now = self.now_s()
        if self._last is not None and now - self._last.time_s < self.options.sample_cache_s:
            return self._last
        ksm = self.ksm.counters() if self.ksm.available else None
        meminfo = read_meminfo(self.options.proc_root)
        readings: list[tuple[_Guest, float]] = []
        for g in list(self.guests.values()):
            try:
                balloon = self._read_guest(g, now)
            except (QmpGone, ProcessLookupError) as err:
                why = str(err) if isinstance(err, QmpGone) else "QEMU process is gone"
                self._drop(g, f"guest died: {why}")
                continue
            except QmpTimeout as err:
                g.failures += 1
                self._event("qmp_timeout", g.name, f"{err} (failure {g.failures} of "
                            f"{self.options.max_failures})")
                if g.failures >= self.options.max_failures:
                    self._drop(g, f"QMP did not answer {g.failures} samples in a row")
                continue
            g.failures = 0
            readings.append((g, balloon))
        merged_total = sum(g.proc.ksm_merging_pages for g, _ in readings if g.proc)
        saved_frac = 0.0
        if ksm is not None and ksm.pages_sharing + ksm.pages_shared > 0:
            saved_frac = ksm.pages_sharing / (ksm.pages_sharing + ksm.pages_shared)
        vms = []
        for g, _ in readings:
            assert g.proc is not None
            g.saved_mib = g.proc.ksm_merging_pages * saved_frac * _PAGE_MIB if merged_total else 0
            vms.append(self._vm_sample(g))
        host = self._host_sample(now, meminfo, ksm, vms)
        self._last = Observation(now, host, tuple(vms), meminfo, ksm)
        return self._last

    def _read_guest(self, g: _Guest, now: float) -> float:
        """Refresh one guest's readings; returns its balloon size (MiB)."""
        if g.balloon_path is not None:
            actual = g.client.call("query-balloon")["actual"] / MIB
            stats = g.client.call("qom-get", {"path": g.balloon_path, "property": "guest-stats"})
        else:
            actual, stats = g.configured_mib, {}
        g.proc = read_process(g.pid, g.configured_mib, g.ram_file, self.options.proc_root)
        g.balloon_mib = max(0.0, g.configured_mib - actual)
        self._take_stats(g, stats)
        self._track_balloon(g, now)
        # CPU share of the QEMU process since the last reading.
        if g.last_cpu is not None and now > g.last_cpu[0]:
            g.cpu_frac = (g.proc.cpu_ticks - g.last_cpu[1]) / _TICKS_PER_S / (now - g.last_cpu[0])
        g.last_cpu = (now, g.proc.cpu_ticks)
        g.swapped_mib = self._swapped(g)
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
        return g.balloon_mib

    def _take_stats(self, g: _Guest, stats: Mapping[str, Any]) -> None:
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

    def _swapped(self, g: _Guest) -> float:
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

    def _vm_sample(self, g: _Guest) -> VmSample:
        proc = g.proc
        assert proc is not None
        ram_rss = proc.ram_rss_mib if proc.ram_rss_mib is not None else proc.rss_mib
        consumed = max(0.0, ram_rss - g.saved_mib)
        if g.guest_used_mib is not None:
            active = min(g.configured_mib, g.guest_used_mib)
        else:
            active = consumed
        spec = g.spec
        return VmSample(
            name=g.name, configured_mib=g.configured_mib, shares=g.shares,
            consumed_mib=consumed, active_mib=active, balloon_max_mib=g.balloon_max_mib,
            reservation_mib=min(spec.reservation_mib, g.configured_mib),
            limit_mib=spec.limit_mib, balloon_mib=min(g.balloon_mib, g.configured_mib),
            balloon_target_mib=g.last_set_mib, balloon_stuck=g.stuck or g.balloon_path is None,
            swapped_mib=g.swapped_mib, shared_saved_mib=g.saved_mib,
            overhead_mib=proc.overhead_mib, guest_free_mib=g.guest_free_mib,
            guest_available_mib=g.guest_available_mib, swap_in_rate_mib_s=g.swap_in_mib_s)

    def _host_sample(self, now: float, mem: HostMemInfo, ksm: KsmCounters | None,
                     vms: Sequence[VmSample]) -> HostSample:
        opts = self.options
        if opts.host_memory_mib is not None:
            total = opts.host_memory_mib
            used = sum(vm.consumed_mib + vm.overhead_mib for vm in vms)
            free = min(max(0.0, total - used), mem.available_mib)
            cache = 0.0
        else:
            total, free = mem.total_mib, mem.free_mib
            ram_files = sum((g.proc.ram_rss_mib or 0.0) for g in self.guests.values()
                            if g.ram_file and g.proc is not None)
            cache = max(0.0, mem.buffers_mib + mem.cached_mib - mem.shmem_mib - ram_files)
        if self._tracker is None or self._tracker_total != total:
            self._tracker = StateTracker(thresholds(total, opts.profile))
            self._tracker_total = total
        state = self._tracker.update(free)
        return HostSample(
            time_s=now, total_mib=total, free_mib=free, state=state,
            minfree_mib=self._tracker.thresholds.minfree_mib, profile=opts.profile,
            cache_mib=cache, shared_saved_mib=ksm.saved_mib if ksm else 0.0,
            sharing_pages_to_scan=ksm.pages_to_scan if ksm else None,
            swap_in_rate_mib_s=sum(vm.swap_in_rate_mib_s for vm in vms),
            swap_out_rate_mib_s=sum(g.swap_out_mib_s for g in self.guests.values()))

    def set_host_memory(self, host_memory_mib: float | None) -> None:
        """Change the host memory budget (None: the real host) from the next sample on."""
        from dataclasses import replace

        self.options = replace(self.options, host_memory_mib=host_memory_mib)
        self._last = None

    # -- balloon tracking ----------------------------------------------------------------
    def _tolerance(self, g: _Guest) -> float:
        return max(2.0, 0.01 * g.configured_mib)

    def _track_balloon(self, g: _Guest, now: float) -> None:
        opts = self.options
        if g.stuck_since_s is not None and now - g.stuck_since_s >= opts.balloon_retry_s:
            g.stuck_since_s = None
            self._event("balloon_retry", g.name, "trying the balloon again")
        if (g.stats_update is None and g.stuck_since_s is None and g.balloon_path is not None
                and now - g.attached_s >= opts.balloon_stuck_after_s):
            # The driver sends its first stats as soon as it starts: none means no driver.
            self._event("balloon_stuck", g.name, f"no balloon stats from the guest in "
                        f"{now - g.attached_s:.0f} s: its balloon driver is not running")
            g.stuck_since_s = now
            g.target_mib = None
            return
        if g.target_mib is None:
            return
        if abs(g.balloon_mib - g.target_mib) <= self._tolerance(g):
            self._event("balloon_reached", g.name, f"{g.balloon_mib:.0f} MiB after "
                        f"{now - g.target_set_s:.1f} s")
            g.target_mib = None
            return
        toward = (g.balloon_mib - g.progress_mark_mib) * (
            1 if g.target_mib > g.progress_mark_mib else -1)
        if toward >= 1.0:
            g.progress_mark_mib, g.progress_s = g.balloon_mib, now
        why = None
        if now - g.progress_s >= opts.balloon_stuck_after_s:
            why = f"no progress for {now - g.progress_s:.0f} s"
        elif now - g.target_set_s >= opts.balloon_timeout_s:
            why = f"target not reached within {opts.balloon_timeout_s:g} s"
        if why is None:
            return
        self._event("balloon_stuck", g.name, f"{why}: at {g.balloon_mib:.0f} MiB of a "
                    f"{g.target_mib:.0f} MiB target; holding it there")
        g.stuck_since_s = now
        g.target_mib = None
        with contextlib.suppress(QmpTimeout):
            self._set_balloon(g, g.balloon_mib)

    def _set_balloon(self, g: _Guest, balloon_mib: float) -> None:
        size = int(round(g.configured_mib - balloon_mib)) * MIB
        g.client.call("balloon", {"value": size})
        g.last_set_mib = balloon_mib

    def balloon_ceiling_mib(self, g: _Guest) -> float:
        """The largest balloon the guest's floor allows now (see the module docs)."""
        if g.guest_used_mib is None:
            return g.balloon_mib  # no stats: never grow the balloon blind
        reserve = max(self.options.guest_reserve_mib,
                      self.options.guest_reserve_frac * g.configured_mib)
        return max(0.0, g.configured_mib - g.guest_used_mib - reserve)

    # -- applying ------------------------------------------------------------------------
    def apply(self, plans: Mapping[str, VmPlan]) -> None:
        """Carry out the plans (MemoryBackend): balloons, cgroup limits, KSM."""
        self.decisions += 1
        now = self.now_s()
        host_plan = plans.host if isinstance(plans, Plans) else None
        state = (host_plan.state if host_plan is not None and host_plan.state is not None
                 else self._last.host.state if self._last is not None else MemState.HIGH)
        for name, plan in plans.items():
            g = self.guests.get(name)
            if g is None:
                continue
            g.plan = plan
            try:
                self._apply_balloon(g, plan, now)
                self._apply_swap(g, plan, state)
            except (QmpGone, ProcessLookupError) as err:
                self._drop(g, f"guest died: {err}")
            except QmpTimeout as err:
                self._event("qmp_timeout", name, f"{err} (plan not applied)")
        if host_plan is not None:
            self.host_plan = host_plan
            if self._ksm_on:
                try:
                    run, pages, sleep = self.ksm.apply(host_plan, state)
                except BackendError as err:
                    self._ksm_on = False
                    self._event("ksm_refused", "", f"{err}; page sharing left as it is")
                else:
                    self.ksm_setting = (run, pages, sleep)

    def _apply_balloon(self, g: _Guest, plan: VmPlan, now: float) -> None:
        if g.balloon_path is None:
            return
        want = max(0.0, min(plan.balloon_target_mib, g.balloon_max_mib))
        if want > g.balloon_mib:
            if g.stuck:
                return  # do not push a stuck driver; the planner swaps instead
            ceiling = self.balloon_ceiling_mib(g)
            if want > ceiling:
                if "floor" not in g.refused:
                    used = ("unknown (no guest stats yet)" if g.guest_used_mib is None
                            else f"{g.guest_used_mib:.0f} MiB")
                    self._event("balloon_floor", g.name,
                                f"target {want:.0f} MiB limited to {ceiling:.0f} MiB: the "
                                f"guest uses {used} and keeps a reserve")
                    g.refused.add("floor")
                want = max(g.balloon_mib, ceiling)
            else:
                g.refused.discard("floor")
        want = float(round(want))
        if abs(want - g.last_set_mib) < 1.0 and (g.target_mib is not None
                                                 or abs(want - g.balloon_mib) < 1.0):
            return
        self._set_balloon(g, want)
        if abs(want - g.balloon_mib) > self._tolerance(g):
            g.target_mib = want
            g.target_set_s = g.progress_s = now
            g.progress_mark_mib = g.balloon_mib
        else:
            g.target_mib = None

    def can_swap(self, g: _Guest, meminfo: HostMemInfo | None = None) -> str | None:
        """None if the VM may be put under a memory limit, else why not (one line)."""
        if g.ram_file is None:
            mem = meminfo or read_meminfo(self.options.proc_root)
            if mem.swap_total_mib <= 0:
                return (f"{g.name}: refusing to limit its memory: its RAM is anonymous and "
                        "the host has no swap, so a memory-cgroup limit would get QEMU "
                        "OOM-killed (launch it with file-backed RAM: hvmem qemu launch "
                        "--file-backed)")
        elif not g.ram_on_disk:
            return (f"{g.name}: not limiting its memory: its RAM file {g.ram_file} is on "
                    "tmpfs, so there is no disk to page it to")
        if g.cgroup is None:
            return (f"{g.name}: not limiting its memory: QEMU (pid {g.pid}) is not in a memory "
                    "cgroup of its own (hvmem qemu launch --file-backed puts it in one)")
        if not g.cgroup_exclusive:
            # A launcher may still have been in it at attach time: look again.
            g.cgroup_exclusive = exclusive_to(g.cgroup, g.pid)
        if not g.cgroup_exclusive:
            return (f"{g.name}: not limiting its memory: cgroup {g.cgroup.path} holds other "
                    "processes too")
        return None

    def _apply_swap(self, g: _Guest, plan: VmPlan, state: MemState) -> None:
        acts = actions(state, self.options.profile)
        reclaiming = acts.balloon or acts.swap or acts.swap_fallback
        more = plan.swap_target_mib - g.swapped_mib
        if not reclaiming:
            if g.limit_set and g.cgroup is not None:
                g.cgroup.set_limit_mib(g.original_limit_mib)
                g.limit_set = False
                self._event("swap_limit_lifted", g.name,
                            f"host {state.label}: limit back to "
                            f"{'none' if g.original_limit_mib is None else g.original_limit_mib}")
            return
        if more < 1.0:
            return
        meminfo = self._last.meminfo if self._last is not None else None
        why = self.can_swap(g, meminfo)
        if why is not None:
            if why not in g.refused:
                g.refused.add(why)
                self._event("swap_refused", g.name, why)
            return
        assert g.cgroup is not None and g.proc is not None
        usage = g.cgroup.usage_mib()
        floor = g.proc.overhead_mib + self.options.swap_headroom_mib
        limit = max(floor, usage - more)
        current = g.cgroup.limit_mib()
        if current is not None and limit >= current - 1.0:
            return  # at the floor already, or the limit is already that low
        if not g.limit_set:
            g.original_limit_mib = current  # what close() and HIGH restore
        try:
            g.cgroup.set_limit_mib(limit)
        except BackendError as err:
            self._event("swap_failed", g.name, str(err))
            return
        g.limit_set = True
        self._event("swap_limit", g.name, f"memory limit {limit:.0f} MiB (usage was "
                    f"{usage:.0f} MiB, plan swaps {more:.0f} MiB more; floor {floor:.0f} MiB)")

    # -- the end -------------------------------------------------------------------------
    def _drop(self, g: _Guest, why: str) -> None:
        self.guests.pop(g.name, None)
        g.client.close()
        self._event("guest_dropped", g.name, why)
        log.warning("%s dropped from control: %s", g.name, why)

    def close(self) -> None:
        """Restore what the backend changed on the host: KSM settings and cgroup limits.

        Guests keep running with their balloons where they are.
        """
        errors = []
        if self._ksm_on:
            try:
                self.ksm.restore()
                self._event("ksm_restored", "", f"{self.ksm.original}")
            except BackendError as err:
                errors.append(str(err))
        for g in list(self.guests.values()):
            if g.limit_set and g.cgroup is not None:
                try:
                    g.cgroup.set_limit_mib(g.original_limit_mib)
                    g.limit_set = False
                    self._event("swap_limit_lifted", g.name, "controller stopped")
                except BackendError as err:
                    errors.append(str(err))
            g.client.close()
        if errors:
            raise BackendError("; ".join(errors))
