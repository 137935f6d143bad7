"""The libvirt backend: a connection's domains observed and controlled for the policy.

What is modelled
----------------
:class:`LibvirtBackend` implements :class:`~hvmem.policy.ports.MemoryBackend`
over the running domains of a libvirt connection, so the controller loop of
``hvmem qemu control`` (backends/qemu/control.py ``ControlLoop``) drives them
with the policy objects the simulator uses, and records the same rows, live
view, metrics and results directory. It takes from the QEMU backend what is not
about QMP: the knobs (``BackendOptions``), the host sampler with its memory
budget and ``--pressure`` (sampling.py), the balloon floor (balloon.py) and KSM
(ksm.py); what it reads and writes of each domain is domain.py's.

Applying a plan
---------------
* **Balloon** (balloon.py): the plan's balloon target as the domain's live
  memory, above the guest's floor; a balloon that stops moving, or that frees
  nothing on the host, is held and counts as stuck, so the planner swaps instead.
* **Swap** (``swap_target_mib``): memtune ``hard_limit`` = what the domain
  holds less its swap target, never below :data:`LIMIT_FLOOR_MIB`, with
  ``soft_limit`` at the policy's target, both while the host state allows
  swapping, and lifted (back to the originals) when it no longer does. A domain
  is limited only where the host has swap to page it to (a local host's
  /proc/meminfo; a remote host's swap is not visible through the connection, so
  there the limit is refused with a reason). The ``test`` driver's domains are
  not processes: their limits are applied, and kill nothing.
* **Sharing** (the host plan): KSM, where the connection's guests run on this
  machine (connection.py ``host_is_local``); over a remote URI, or for the
  ``test`` driver, KSM is out of reach: an event says so and the plans are made
  without sharing.

Undo: before anything changes, the originals are in a state file
(state_file.py), and a state file a crashed controller left for this URI is
undone first. :meth:`LibvirtBackend.close` puts back KSM, every domain's
memtune and stats period and, with ``deflate_on_exit``, its balloon (dropped
domains too, where they still run).

Faults: a paused domain is *stalled*: it keeps its last readings and its
balloon counts as stuck, nothing is asked of it, and it is taken back when it
runs again. A domain that is shut off, crashed or undefined is dropped, with an
event.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hvmem.backends.libvirt.balloon import apply_balloon, track_balloon
from hvmem.backends.libvirt.connection import (
    error_text,
    host_is_local,
    host_memory,
    import_libvirt,
    open_connection,
)
from hvmem.backends.libvirt.domain import (
    KIB_PER_MIB,
    UNLIMITED_KIB,
    DomainSpec,
    LibvirtGuest,
    balloon_info,
    read_memtune,
)
from hvmem.backends.libvirt.state_file import SavedDomain, StateFile, restore_stale, undo_domain
from hvmem.backends.qemu.backend import Observation
from hvmem.backends.qemu.config import BackendOptions
from hvmem.backends.qemu.ksm import Ksm, KsmCounters
from hvmem.backends.qemu.procfs import HostMemInfo, find_pid_by_arg, read_meminfo, read_process
from hvmem.backends.qemu.sampling import HostSampler
from hvmem.backends.qemu.state_file import default_state_dir
from hvmem.errors import BackendError, ConfigError
from hvmem.policy.samples import (
    HostPlan,
    HostSample,
    Plans,
    VmPlan,
    VmSample,
    balloon_max_for,
    shares_for,
)
from hvmem.policy.states import MemState, actions

__all__ = ["LIMIT_FLOOR_MIB", "LibvirtBackend", "ksm_reason"]

log = logging.getLogger("hvmem.libvirt")

#: The lowest memtune hard_limit hvmem sets: QEMU's own memory (about 92 MiB under TCG
#: [QEMU-PROBE]) with the QEMU backend's cgroup headroom (96 MiB) above it.
LIMIT_FLOOR_MIB = 192.0
TICKS_PER_S = os.sysconf("SC_CLK_TCK")
_PAGE_MIB = 4 / 1024


def _share_savings(guests: Sequence[LibvirtGuest], ksm: KsmCounters | None) -> None:
    """Each local domain's share of KSM's savings, as the QEMU backend splits them.

    Of the pages KSM merged into one, all but one are saved: a process's merged
    pages times ``pages_sharing / (pages_sharing + pages_shared)``.
    """
    frac = 0.0
    if ksm is not None and ksm.pages_sharing + ksm.pages_shared > 0:
        frac = ksm.pages_sharing / (ksm.pages_sharing + ksm.pages_shared)
    for g in guests:
        g.saved_mib = g.proc.ksm_merging_pages * frac * _PAGE_MIB if g.proc else 0.0


@dataclass
class _Host:
    """What the host is, for the connection (module docs)."""

    local: bool
    test_driver: bool
    ksm_reason: str | None  # why KSM is left alone (None: hvmem drives it)


def ksm_reason(uri: str, driver: str, *, manage: bool, available: bool) -> str | None:
    """Why KSM is left alone for a connection (None: hvmem drives it; module docs)."""
    if not manage:
        return "not managed (dry run)"
    if driver == "test":
        return ("the test driver's domains live in libvirt itself and share no host memory: "
                "KSM left alone, plans made without sharing")
    if not host_is_local(uri):
        return f"KSM is not reachable over the remote URI {uri}: plans made without sharing"
    if not available:
        return "this kernel has no KSM: plans made without sharing"
    return None


class LibvirtBackend:
    """The running domains of a libvirt connection as a ``MemoryBackend``.

    Args:
        uri: the connection (``qemu:///system``, ``qemu+ssh://host/system``,
            ``test:///default``).
        domains: the domains to control (None: every running one).
        options: the QEMU backend's knobs that apply (``BackendOptions``).

    Attributes:
        events: what happened (time_s, event, vm, detail).
        guests: the domains under control, by name.

    Raises:
        BackendError: the connection fails, or no domain could be attached.
        ConfigError: a named domain does not exist.
    """

    def __init__(self, uri: str, domains: Sequence[DomainSpec] | None = None,
                 options: BackendOptions | None = None) -> None:
        self.uri = uri
        self.options = options or BackendOptions()
        self._t0 = self.options.clock()
        self.events: list[dict[str, Any]] = []
        self.guests: dict[str, LibvirtGuest] = {}
        self.dropped: list[LibvirtGuest] = []
        self.decisions = 0
        self.host_plan: HostPlan | None = None
        self.ksm_setting: tuple[int, int, int] | None = None
        self._host = HostSampler()
        self._last: Observation | None = None
        opts = self.options
        state_dir = opts.state_dir if opts.state_dir is not None else default_state_dir()
        # A controller of this URI that crashed left its changes: undo them before
        # any original is read, or its settings would be saved as the domains' own.
        done, problems = restore_stale(state_dir, uri)
        for line in done:
            self._event("restored", "", line)
        for line in problems:
            self._event("restore_failed", "", line)
        self.conn = open_connection(uri)
        try:
            self._setup(uri, domains, state_dir)
        except BaseException:
            self.conn.close()
            raise

    def _setup(self, uri: str, domains: Sequence[DomainSpec] | None, state_dir) -> None:
        opts = self.options
        driver = self.conn.getType().lower()
        self.where = _Host(local=host_is_local(uri), test_driver=driver == "test",
                           ksm_reason=None)
        self.ksm = Ksm(opts.ksm_root)
        self.where.ksm_reason = ksm_reason(uri, driver, manage=opts.manage_ksm,
                                           available=self.ksm.available)
        if self.where.ksm_reason is not None and opts.manage_ksm:
            self._event("ksm_unreachable", "", self.where.ksm_reason)
        self._ksm_on = self.where.ksm_reason is None
        failed = []
        for spec in self._specs(domains):
            try:
                g = self._attach(spec)
            except BackendError as err:
                failed.append(str(err))
                self._event("attach_failed", spec.name, failed[-1])
                continue
            g.attached_s = self.now_s()
            self.guests[g.name] = g
            self._event("attach", g.name, f"uuid {g.uuid}, {g.configured_mib:.0f} MiB, "
                        f"balloon {'yes' if g.has_balloon else 'none'}")
        if not self.guests:
            raise BackendError(f"--uri {uri}: no domain could be attached"
                               + (": " + "; ".join(failed) if failed else
                                  " (no running domain)"))
        self.state = StateFile(state_dir, uri, ksm_root=opts.ksm_root)
        if self._ksm_on:
            self.ksm.save()
            self.state.ksm = dict(self.ksm.original or {})
        for g in self.guests.values():
            self.state.domains.append(SavedDomain(
                name=g.name, uuid=g.uuid, configured_mib=g.configured_mib,
                live_kib=int(round((g.configured_mib - g.original_balloon_mib)
                                   * KIB_PER_MIB)),
                memtune=dict(g.original_memtune),
                stats_period_s=g.original_stats_period_s))
        self.state.write()
        for g in self.guests.values():
            if g.has_balloon:
                try:
                    g.set_stats_period(opts.stats_interval_s)
                except BackendError as err:
                    self._event("stats_refused", g.name, str(err))

    def _specs(self, domains: Sequence[DomainSpec] | None) -> list[DomainSpec]:
        libvirt = import_libvirt()
        if domains:
            return list(domains)
        try:
            running = self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except libvirt.libvirtError as err:
            raise BackendError(f"--uri {self.uri}: cannot list domains "
                               f"({error_text(err)})") from None
        return [DomainSpec(name=d.name()) for d in sorted(running, key=lambda d: d.name())]

    def _attach(self, spec: DomainSpec) -> LibvirtGuest:
        libvirt = import_libvirt()
        try:
            dom = self.conn.lookupByName(spec.name)
        except libvirt.libvirtError:
            raise ConfigError(f"--domain: no domain {spec.name!r} on {self.uri}") from None
        try:
            if not dom.isActive():
                raise BackendError(f"{spec.name}: not running")
            configured = dom.maxMemory() / KIB_PER_MIB
            has_balloon, period = balloon_info(dom)
            memtune = read_memtune(dom)
            stats = dom.memoryStats() if has_balloon else {}
            actual = stats.get("actual", dom.info()[2])
            uuid = dom.UUIDString()
        except libvirt.libvirtError as err:
            raise BackendError(f"{spec.name}: {error_text(err)}") from None
        balloon = max(0.0, configured - actual / KIB_PER_MIB)
        pid = self._qemu_pid(spec.name) if self.where.local else None
        g = LibvirtGuest(
            spec=spec, dom=dom, uuid=uuid, configured_mib=configured,
            shares=shares_for(spec.shares, configured),
            balloon_max_mib=balloon_max_for(configured, maxmemctl_mib=spec.balloon_max_mib)
            if has_balloon else 0.0,
            has_balloon=has_balloon, original_balloon_mib=balloon,
            original_memtune=dict(memtune), original_stats_period_s=period or 0,
            memtune=dict(memtune), balloon_mib=balloon, last_set_mib=balloon, pid=pid)
        return g

    def _qemu_pid(self, name: str) -> int | None:
        """The QEMU process of a local domain: libvirt's pid file, else ``-name guest=NAME``."""
        for run_dir in (Path("/run/libvirt/qemu"),
                        Path(os.environ.get("XDG_RUNTIME_DIR", "/nonexistent"))
                        / "libvirt/qemu/run"):
            try:
                return int((run_dir / f"{name}.pid").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        try:
            return find_pid_by_arg(f"guest={name},", self.options.proc_root)
        except BackendError:
            return None

    def _read_process(self, g: LibvirtGuest, now: float) -> None:
        """The domain's QEMU process from /proc: resident RAM, overhead, KSM, CPU."""
        if g.pid is None:
            return
        try:
            g.proc = read_process(g.pid, g.configured_mib, None, self.options.proc_root)
        except (ProcessLookupError, BackendError):
            g.proc = None
            return
        if g.last_cpu is not None and now > g.last_cpu[0]:
            g.cpu_frac = (g.proc.cpu_ticks - g.last_cpu[1]) / TICKS_PER_S / (now - g.last_cpu[0])
        g.last_cpu = (now, g.proc.cpu_ticks)

    # -- bookkeeping ---------------------------------------------------------------------
    def now_s(self) -> float:
        """Seconds since the backend started."""
        return self.options.clock() - self._t0

    def _event(self, kind: str, vm: str, detail: str) -> None:
        self.events.append({"time_s": round(self.now_s(), 3), "event": kind, "vm": vm,
                            "detail": detail})
        log.info("%s %s %s", kind, vm, detail)

    # -- sampling ------------------------------------------------------------------------
    def sample(self) -> tuple[HostSample, list[VmSample]]:
        """Observe the host and every domain under control (MemoryBackend)."""
        obs = self.observe()
        return obs.host, list(obs.vms)

    def observe(self) -> Observation:
        """A fresh observation (or the last one, if younger than ``sample_cache_s``)."""
        now = self.now_s()
        if self._last is not None and now - self._last.time_s < self.options.sample_cache_s:
            return self._last
        ksm = self.ksm.counters() if self._ksm_on else None
        read = [g for g in list(self.guests.values()) if self._observe_guest(g, now)]
        _share_savings(read, ksm)
        vms = [self._vm_sample(g) for g in read]
        meminfo = self._meminfo()
        host = self._host.sample(now, self.options, meminfo, ksm, vms, [])
        if not self.where.local:
            # /proc/pressure is this machine's, not the connection's host's.
            host = replace(host, psi_some_frac=None, psi_full_frac=None)
        self._last = Observation(now, host, tuple(vms), meminfo, ksm)
        return self._last

    def _meminfo(self) -> HostMemInfo:
        if self.where.local:
            return read_meminfo(self.options.proc_root)
        mem = host_memory(self.conn)
        total, free = mem.total_mib, mem.free_mib
        if self.where.test_driver:
            # The test driver's node (3 GiB) is smaller than its domain (8 GiB) and its
            # free memory a fixed figure: the node counts as at least its domains'
            # configured memory, and what they hold is taken from that.
            guests = self.guests.values()
            total = max(total, sum(g.configured_mib for g in guests))
            free = max(0.0, total - sum(g.consumed_mib for g in guests))
        return HostMemInfo(total_mib=total, free_mib=free,
                           available_mib=free + mem.cache_mib, buffers_mib=0.0,
                           cached_mib=mem.cache_mib, shmem_mib=0.0, swap_total_mib=0.0)

    def _observe_guest(self, g: LibvirtGuest, now: float) -> bool:
        """Read one domain, or stall or drop it (module docs); True if it has a reading."""
        libvirt = import_libvirt()
        try:
            state = g.dom.state()[0]
            if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED,
                         libvirt.VIR_DOMAIN_SHUTDOWN):
                self._drop(g, "domain is no longer running")
                return False
            if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
                if g.paused_since_s is None:
                    g.paused_since_s = now
                    self._event("guest_stalled", g.name, "domain is paused; kept under "
                                "control, tried again")
                return True  # its memory still counts: the last reading, or its size
            g.read()
            g.update_rates(now)
            self._read_process(g, now)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                self._drop(g, "domain is gone")
                return False
            if "read" not in g.refused:  # once until it answers again
                self._event("read_failed", g.name, f"{error_text(err)}; its last reading "
                            "stands")
                g.refused.add("read")
            return True
        g.refused.discard("read")
        if g.paused_since_s is not None:
            self._event("guest_resumed", g.name, f"running again after "
                        f"{now - g.paused_since_s:.1f} s")
            g.paused_since_s = None
        track_balloon(g, now, self.options, self._event)
        return True

    def _vm_sample(self, g: LibvirtGuest) -> VmSample:
        consumed = g.consumed_mib
        active = (min(g.configured_mib, g.guest_used_mib) if g.guest_used_mib is not None
                  else consumed)
        spec = g.spec
        return VmSample(
            name=g.name, configured_mib=g.configured_mib, shares=g.shares,
            consumed_mib=consumed, active_mib=active, balloon_max_mib=g.balloon_max_mib,
            reservation_mib=min(spec.reservation_mib, g.configured_mib),
            limit_mib=spec.limit_mib, balloon_mib=min(g.balloon_mib, g.configured_mib),
            balloon_target_mib=g.last_set_mib,
            balloon_stuck=g.stuck or g.stalled or not g.has_balloon,
            shared_saved_mib=g.saved_mib,
            overhead_mib=g.proc.overhead_mib if g.proc is not None else 0.0,
            guest_free_mib=g.guest_free_mib, guest_available_mib=g.guest_available_mib)

    def set_host_memory(self, host_memory_mib: float | None) -> None:
        """Change the host memory budget (None: the real host) from the next sample on."""
        self.options = replace(self.options, host_memory_mib=host_memory_mib)
        self._last = None

    # -- applying ------------------------------------------------------------------------
    def apply(self, plans: Mapping[str, VmPlan]) -> None:
        """Carry out the plans (MemoryBackend): balloons, memtune limits, KSM."""
        self.decisions += 1
        now = self.now_s()
        host_plan = plans.host if isinstance(plans, Plans) else None
        state = (host_plan.state if host_plan is not None and host_plan.state is not None
                 else self._last.host.state if self._last is not None else MemState.HIGH)
        acts = actions(state, self.options.profile)
        for name, plan in plans.items():
            g = self.guests.get(name)
            if g is None:
                continue
            g.plan = plan
            try:
                if not g.stalled:
                    apply_balloon(g, plan, now, self.options, self._event)
                self._apply_limit(g, plan, acts.swap or acts.swap_fallback)
            except BackendError as err:
                self._event("apply_failed", name, str(err))
        if host_plan is not None:
            self.host_plan = host_plan
            if self._ksm_on:
                try:
                    self.ksm_setting = self.ksm.apply(host_plan, state)
                except BackendError as err:
                    self._ksm_on = False
                    self._event("ksm_refused", "", f"{err}; page sharing left as it is")

    def limit_refusal(self, g: LibvirtGuest) -> str | None:
        """None if the domain may be given a hard limit, else why not (one line)."""
        if self.where.test_driver:
            return None
        if not self.where.local:
            return (f"{g.name}: not limiting its memory: the swap of the host behind "
                    f"{self.uri} is not visible through libvirt, and without swap a "
                    "hard_limit gets QEMU OOM-killed")
        mem = self._last.meminfo if self._last is not None else read_meminfo(
            self.options.proc_root)
        if mem.swap_total_mib <= 0:
            return (f"{g.name}: refusing to limit its memory: the host has no swap, so a "
                    "memtune hard_limit would get QEMU OOM-killed")
        return None

    def _apply_limit(self, g: LibvirtGuest, plan: VmPlan, swapping: bool) -> None:
        if swapping and plan.swap_target_mib > 0:
            why = self.limit_refusal(g)
            if why is not None:
                if "limit" not in g.refused:
                    self._event("swap_refused", g.name, why)
                    g.refused.add("limit")
                return
            hard = max(LIMIT_FLOOR_MIB, g.consumed_mib - plan.swap_target_mib)
            soft = max(hard, plan.target_mib)
            g.set_memtune({"hard_limit": int(hard * KIB_PER_MIB),
                           "soft_limit": int(soft * KIB_PER_MIB)})
            if not g.limit_set:
                self._event("swap_limit", g.name, f"memtune hard_limit {hard:.0f} MiB "
                            f"(swap target {plan.swap_target_mib:.0f} MiB)")
            g.limit_set = True
        elif g.limit_set:
            self._lift_limit(g, "host out of swapping states")

    def _lift_limit(self, g: LibvirtGuest, why: str) -> None:
        back = {k: g.original_memtune.get(k, UNLIMITED_KIB)
                for k in ("hard_limit", "soft_limit")}
        g.set_memtune(back)
        g.limit_set = False
        self._event("swap_limit_lifted", g.name, why)

    # -- the end -------------------------------------------------------------------------
    def _drop(self, g: LibvirtGuest, why: str) -> None:
        self.guests.pop(g.name, None)
        self.dropped.append(g)
        self._event("guest_dropped", g.name, why)
        log.warning("%s dropped from control: %s", g.name, why)

    def close(self) -> None:
        """Undo what the backend changed: KSM, memtune, stats periods, balloons.

        Every domain this backend attached is put back where it still runs
        (dropped ones too); with ``deflate_on_exit`` its balloon returns to its
        size at attach. The state file is removed once nothing is left to undo,
        and the connection is closed.

        Raises:
            BackendError: something could not be put back (each reason is in the
                message; the state file stays for ``hvmem libvirt restore``).
        """
        problems: list[str] = []
        try:
            if self._ksm_on:
                try:
                    self.ksm.restore()
                    self._event("ksm_restored", "", f"{self.ksm.original}")
                except BackendError as err:
                    problems.append(str(err))
            for g in [*self.guests.values(), *self.dropped]:
                saved = SavedDomain(
                    name=g.name, uuid=g.uuid, configured_mib=g.configured_mib,
                    live_kib=int(round((g.configured_mib - (
                        g.original_balloon_mib if self.options.deflate_on_exit
                        else g.balloon_mib)) * KIB_PER_MIB)),
                    memtune=g.original_memtune, stats_period_s=g.original_stats_period_s)
                done: list[str] = []
                failed = undo_domain(self.conn, saved, done)
                problems.extend(failed)
                for line in done:
                    self._event("restored", g.name, line)
            if not problems:
                self.state.remove()
        finally:
            self.conn.close()
        if problems:
            raise BackendError("; ".join(problems))
