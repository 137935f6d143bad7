"""The QEMU backend: real guests observed and controlled for the policy the simulator runs.

What is modelled
----------------
:class:`QemuBackend` implements :class:`~hvmem.policy.ports.MemoryBackend` over
QEMU processes reached through their QMP sockets, so
:class:`~hvmem.policy.controller.PolicyController` drives real guests with
exactly the policy objects the simulator uses. It attaches each guest (its QEMU
process, memory size, balloon device, RAM file and memory cgroup, found from QMP
and /proc) and composes the parts, one module each:

* sampling.py: the samples, ESX's terms mapped onto what Linux and QEMU expose,
  and the host's memory state on a real host or a host memory budget;
* balloon.py: balloon targets above the guest's floor, progress, stuck drivers;
* swap_limit.py: hypervisor swapping as a memory-cgroup limit on QEMU;
* ksm.py: page sharing.

What each guest's parts read and write is a
:class:`~hvmem.backends.qemu.guest_state.GuestState`; the backend's knobs are
:class:`~hvmem.backends.qemu.config.BackendOptions`.

Applying a plan
---------------
* **Balloon** (best effort, balloon.py): the target goes to QEMU, never below
  the guest's floor; a balloon that stops moving is *stuck*, so the planner
  swaps instead.
* **Swap** (``swap_target_mib``, swap_limit.py): a memory-cgroup limit on the
  QEMU process where that is safe, refused with a reason otherwise, lifted when
  the host is back in a state without reclamation.
* **Sharing** (the host plan): KSM run/scan rate (ksm.py); original settings
  are restored by :meth:`QemuBackend.close`.

Undo: before anything is changed, the originals (KSM's settings, each guest's
balloon and cgroup limit) are in a state file (state_file.py), and a state file
a crashed controller left is undone first. :meth:`QemuBackend.close` puts back
KSM, every cgroup limit it set (of dropped guests too) and, with
``deflate_on_exit``, every balloon it moved; it removes the state file only if
nothing was left (a guest stopped at exit keeps its balloon until ``hvmem qemu
restore`` finds it running).

Faults: only a guest whose QEMU process has exited (no ``/proc/PID``, or a
zombie), or whose QMP socket file is gone, is dropped from control, with an
event. A QEMU that is stopped (``kill -STOP``: state ``T``) or does not answer
is *stalled*, not dead: it stays under control with its last balloon and stats
and its current /proc readings (its memory still counts on the host), its
balloon counts as stuck (the planner does not rely on it) and nothing is asked
of it over QMP. A stopped process is not even connected to (qmp.py: its socket
queues one connection and then refuses); a silent one that is running is
stalled after ``max_failures`` timed-out samples in a row and tried again every
``stall_retry_s``. The first answer ends the stall (``guest_resumed``). A QMP
call that times out is retried once on a fresh connection (qmp.py); a sample
never waits longer than the QMP timeouts allow.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvmem.backends.qemu.balloon import (
    apply_balloon,
    balloon_ceiling_mib,
    set_balloon,
    track_balloon,
)
from hvmem.backends.qemu.cgroups import exclusive_to, memory_cgroup_of, on_tmpfs, pressure_file
from hvmem.backends.qemu.config import BackendOptions, GuestSpec
from hvmem.backends.qemu.guest_state import GuestState
from hvmem.backends.qemu.ksm import Ksm, KsmCounters
from hvmem.backends.qemu.procfs import (
    DEAD_STATES,
    STOPPED_STATES,
    HostMemInfo,
    find_pid_by_arg,
    process_state,
    read_meminfo,
)
from hvmem.backends.qemu.qmp import QmpClient, QmpCommandError, QmpGone, QmpTimeout
from hvmem.backends.qemu.sampling import (
    HostSampler,
    read_guest,
    read_stalled,
    update_rates,
    vm_samples,
)
from hvmem.backends.qemu.state_file import (
    SavedGuest,
    StateFile,
    default_state_dir,
    restore_stale,
    start_time,
)
from hvmem.backends.qemu.swap_limit import apply_swap_limit, lift_limit, swap_note, swap_refusal
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

__all__ = ["Observation", "QemuBackend"]

log = logging.getLogger("hvmem.qemu")

MIB = 1 << 20


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
        self.guests: dict[str, GuestState] = {}
        self.dropped: list[GuestState] = []
        opts = self.options
        state_dir = opts.state_dir if opts.state_dir is not None else default_state_dir()
        # A controller that crashed left its changes behind: undo them before any
        # original is read, or its settings would be saved as the host's.
        done, problems = restore_stale(state_dir, opts.proc_root)
        for line in done:
            self._event("restored", "", line)
        for line in problems:
            self._event("restore_failed", "", line)
        self.state = StateFile(state_dir, opts.proc_root, opts.ksm_root)
        self.ksm = Ksm(self.options.ksm_root)
        self._ksm_on = self.options.manage_ksm and self.ksm.available
        self._host = HostSampler()
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
        if self._ksm_on and all(g.ram_file is not None for g in self.guests.values()):
            # KSM does not merge file-backed shared RAM: scanning it would only cost CPU.
            self._ksm_on = False
            self._event("ksm_left_alone", "", "every guest's RAM is file-backed, which KSM "
                        "does not merge")
        self._save_originals()

    def _save_originals(self) -> None:
        """Write the originals to the state file, before anything is changed."""
        if self._ksm_on:
            self.ksm.save()
            self.state.ksm = dict(self.ksm.original or {})
        for g in self.guests.values():
            cgroup = g.cgroup if g.cgroup is not None and g.cgroup_exclusive else None
            limit = high = None
            if cgroup is not None:
                try:
                    limit, high = cgroup.saved_limits()
                except BackendError:
                    cgroup = None
            g.original_limit_mib, g.original_high_mib = limit, high
            self.state.guests.append(SavedGuest(
                name=g.name, qmp=str(g.spec.qmp), pid=g.pid,
                pid_start=start_time(g.pid, self.options.proc_root),
                configured_mib=g.configured_mib,
                balloon_mib=g.original_balloon_mib if g.balloon_path else None,
                cgroup=str(cgroup.path) if cgroup else None,
                cgroup_version=cgroup.version if cgroup else 1, limit_mib=limit,
                high_mib=high))
        try:
            self.state.write()
        except BackendError:
            for g in self.guests.values():
                g.client.close()
            raise

    # -- bookkeeping ---------------------------------------------------------------------
    def now_s(self) -> float:
        """Seconds since the backend started."""
        return self.options.clock() - self._t0

    def _event(self, kind: str, vm: str, detail: str) -> None:
        self.events.append({"time_s": round(self.now_s(), 3), "event": kind, "vm": vm,
                            "detail": detail})
        log.info("%s %s %s", kind, vm, detail)

    @staticmethod
    def _describe(g: GuestState) -> str:
        ram = f"file {g.ram_file}" if g.ram_file else "anonymous"
        cg = f", cgroup v{g.cgroup.version} {g.cgroup.path}" if g.cgroup else ""
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

    def _attach(self, spec: GuestSpec) -> GuestState:
        opts = self.options
        if not Path(spec.qmp).exists():
            raise BackendError(f"{spec.name}: QMP socket {spec.qmp} does not exist")
        pid = self._find_pid(spec)
        if not (opts.proc_root / str(pid)).exists():
            raise BackendError(f"{spec.name}: QEMU process {pid} does not exist")
        proc_root = opts.proc_root
        client = QmpClient(spec.qmp, opts.qmp_timeout_s, name=spec.name,
                           stalled=lambda: process_state(pid, proc_root) in STOPPED_STATES)
        try:
            summary = client.call("query-memory-size-summary")
            configured = summary["base-memory"] / MIB
            balloon_path = self._find_balloon(client)
            if balloon_path is not None:
                client.call("qom-set", {"path": balloon_path,
                                        "property": "guest-stats-polling-interval",
                                        "value": opts.stats_interval_s})
            ram_file = self._find_ram_file(client)
            original_balloon = (max(0.0, configured - client.call("query-balloon")["actual"]
                                    / MIB) if balloon_path is not None else 0.0)
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
        return GuestState(spec=spec, client=client, pid=pid, configured_mib=configured,
                          shares=shares_for(spec.shares, configured),
                          balloon_max_mib=balloon_max, balloon_path=balloon_path,
                          ram_file=ram_file, ram_on_disk=ram_on_disk, cgroup=cgroup,
                          cgroup_exclusive=exclusive, original_balloon_mib=original_balloon,
                          last_set_mib=original_balloon,
                          pressure_path=pressure_file(pid, cgroup if exclusive else None,
                                                      opts.cgroup_root, opts.proc_root))

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
        readings: list[GuestState] = []
        for g in list(self.guests.values()):
            if self._observe_guest(g, now):
                readings.append(g)
        vms = vm_samples(readings, ksm)
        host = self._host_sample(now, meminfo, ksm, vms)
        self._last = Observation(now, host, tuple(vms), meminfo, ksm)
        return self._last

    def _observe_guest(self, g: GuestState, now: float) -> bool:
        """Read one guest, or stall or drop it (module docs); True if it has a reading."""
        opts = self.options
        state = process_state(g.pid, opts.proc_root)
        if state is None or state in DEAD_STATES:
            self._drop(g, "guest died: QEMU process is gone")
            return False
        if state in STOPPED_STATES:
            self._stall(g, now, f"QEMU (pid {g.pid}) is stopped (state {state})")
            g.qmp_retry_s = 0.0  # ask again as soon as it runs
            return self._read_stalled(g, now)
        if g.stalled and now < g.qmp_retry_s:
            return self._read_stalled(g, now)
        try:
            self._read_guest(g, now)
        except ProcessLookupError:
            self._drop(g, "guest died: QEMU process is gone")
            return False
        except QmpGone as err:
            if not Path(g.spec.qmp).exists() or process_state(
                    g.pid, opts.proc_root) in (None, *DEAD_STATES):
                self._drop(g, f"guest died: {err}")
                return False
            self._stall(g, now, str(err))  # refused, but QEMU runs: try again later
            g.qmp_retry_s = now + opts.stall_retry_s
            return self._read_stalled(g, now)
        except QmpTimeout as err:
            g.failures += 1
            if not g.stalled:
                self._event("qmp_timeout", g.name, f"{err} (failure {g.failures} of "
                            f"{opts.max_failures})")
                if g.failures >= opts.max_failures:
                    self._stall(g, now, f"QMP did not answer {g.failures} samples in a row")
            if g.stalled:
                g.qmp_retry_s = now + opts.stall_retry_s
            return self._read_stalled(g, now)
        if g.stalled:
            self._event("guest_resumed", g.name, f"answers again after "
                        f"{now - g.stalled_since_s:.1f} s")
            g.stalled_since_s = None
        g.failures = 0
        return True

    def _stall(self, g: GuestState, now: float, why: str) -> None:
        if g.stalled:
            return
        g.stalled_since_s = now
        self._event("guest_stalled", g.name, f"{why}; kept under control, tried again")

    def _read_stalled(self, g: GuestState, now: float) -> bool:
        """A stalled guest's /proc readings (True), or False with no reading yet."""
        if g.proc is None:
            return False
        try:
            read_stalled(g, self.options.proc_root)
        except ProcessLookupError:
            self._drop(g, "guest died: QEMU process is gone")
            return False
        except BackendError:
            return True  # the last reading stands
        update_rates(g, now)
        return True

    def _read_guest(self, g: GuestState, now: float) -> None:
        """Refresh one guest's readings, its balloon's progress and its rates."""
        read_guest(g, self.options.proc_root)
        track_balloon(g, now, self.options, self._event)
        update_rates(g, now)

    def _host_sample(self, now: float, mem: HostMemInfo, ksm: KsmCounters | None,
                     vms: Sequence[VmSample]) -> HostSample:
        return self._host.sample(now, self.options, mem, ksm, vms, list(self.guests.values()))

    def set_host_memory(self, host_memory_mib: float | None) -> None:
        """Change the host memory budget (None: the real host) from the next sample on."""
        from dataclasses import replace

        self.options = replace(self.options, host_memory_mib=host_memory_mib)
        self._last = None

    # -- applying ------------------------------------------------------------------------
    def apply(self, plans: Mapping[str, VmPlan]) -> None:
        """Carry out the plans (MemoryBackend): balloons, cgroup limits, KSM."""
        self.decisions += 1
        now = self.now_s()
        host_plan = plans.host if isinstance(plans, Plans) else None
        state = (host_plan.state if host_plan is not None and host_plan.state is not None
                 else self._last.host.state if self._last is not None else MemState.HIGH)
        acts = actions(state, self.options.profile)
        reclaiming = acts.balloon or acts.swap or acts.swap_fallback
        for name, plan in plans.items():
            g = self.guests.get(name)
            if g is None:
                continue
            g.plan = plan
            if g.no_gain and not reclaiming:
                # Held because inflating freed nothing; with the host out of reclamation
                # it may deflate again (the planner gives stuck balloons nothing back).
                g.no_gain, g.stuck_since_s = False, None
                self._event("balloon_retry", name, f"host {state.label}: the balloon that "
                            "gained nothing may deflate")
            try:
                if not g.stalled:  # a stopped QEMU cannot be asked; its limit still can
                    apply_balloon(g, plan, now, self.options, self._event)
                meminfo = self._last.meminfo if self._last is not None else None
                apply_swap_limit(g, plan, state, self.options, meminfo, self._event)
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

    def plan_notes(self, plans: Mapping[str, VmPlan]) -> dict[str, str]:
        """What each plan's line must add: swapping that ``memory.swap.max`` caps."""
        notes = {}
        for name, plan in plans.items():
            g = self.guests.get(name)
            note = swap_note(g, plan) if g is not None else None
            if note is not None:
                notes[name] = note
        return notes

    def balloon_ceiling_mib(self, g: GuestState) -> float:
        """The largest balloon the guest's floor allows now (balloon.py)."""
        return balloon_ceiling_mib(g, self.options)

    def can_swap(self, g: GuestState, meminfo: HostMemInfo | None = None) -> str | None:
        """None if the VM may be put under a memory limit, else why not (one line)."""
        return swap_refusal(g, self.options.proc_root, meminfo, self.options.file_backed_hint)

    # -- the end -------------------------------------------------------------------------
    def _drop(self, g: GuestState, why: str) -> None:
        self.guests.pop(g.name, None)
        self.dropped.append(g)
        g.client.close()
        self._event("guest_dropped", g.name, why)
        log.warning("%s dropped from control: %s", g.name, why)
        try:
            self._lift_limit(g, "guest dropped")
        except BackendError as err:
            self._event("restore_failed", g.name, f"{err} (tried again at exit)")

    def _lift_limit(self, g: GuestState, why: str) -> None:
        """Put a limit this backend set back to the original (a removed cgroup needs none)."""
        if not (g.limit_set and g.cgroup is not None):
            return
        if g.cgroup.path.is_dir():
            lift_limit(g)
            self._event("swap_limit_lifted", g.name, why)
        g.limit_set = False

    def close(self) -> None:
        """Undo what the backend changed: KSM settings, cgroup limits, balloons.

        Cgroup limits are lifted for every guest this backend limited, dropped ones
        too; with ``deflate_on_exit`` the balloons it moved go back to where they
        were when it attached. Guests keep running. The state file is removed
        once nothing is left to undo.

        Raises:
            BackendError: something could not be put back (each reason is in the
                message; the state file stays for ``hvmem qemu restore``).
        """
        errors = []
        pending = []
        if self._ksm_on:
            try:
                self.ksm.restore()
                self._event("ksm_restored", "", f"{self.ksm.original}")
            except BackendError as err:
                errors.append(str(err))
        for g in [*self.guests.values(), *self.dropped]:
            try:
                self._lift_limit(g, "controller stopped")
            except BackendError as err:
                errors.append(str(err))
            if g.name in self.guests and self.options.deflate_on_exit and g.balloon_set:
                if g.stalled:
                    pending.append(g.name)
                    self._event("restore_pending", g.name,
                                f"QEMU does not answer: its balloon stays at "
                                f"{g.balloon_mib:.0f} MiB until hvmem qemu restore")
                else:
                    try:
                        set_balloon(g, g.original_balloon_mib)
                        self._event("balloon_returned", g.name,
                                    f"balloon back to {g.original_balloon_mib:.0f} MiB")
                    except BackendError as err:
                        pending.append(g.name)
                        self._event("restore_pending", g.name, f"{err}")
            g.client.close()
        if not errors and not pending:
            self.state.remove()
        if errors:
            raise BackendError("; ".join(errors))
