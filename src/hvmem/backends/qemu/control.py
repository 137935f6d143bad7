"""The controller loop over real guests: sample, decide, apply, record; stop cleanly.

What happens each tick (1 s by default, wall clock)::

    observe every guest (QMP, /proc, KSM, cgroups; backend.py); drop dead ones
    once a balance period (--interval, 15 s as ESX's Mem.BalancePeriod):
        PolicyController.step: sample -> the same policy object the simulator
        uses -> plans -> apply (balloons, cgroup limits, KSM) -- or, dry run,
        print the plans and apply nothing
    record one host row and one row per VM with the esxtop-named columns of a
        simulated run (sim.py), for the live view, the metrics endpoint and the
        results directory

Rows of a real run use the simulator's column names with these meanings:
MEMSZ configured memory; GRANT the resident guest RAM (pages the guest touched
that the host backs); SZTGT the policy's target; TCHD and ACTV what the guest
uses (configured - balloon - MemAvailable from its balloon stats); MCTL* the
balloon (size, the target set in QEMU, its maximum); SWCUR the estimated
swapped memory and SWTGT the plan's swap target; SWR/s the pages read back into
the VM's cgroup per second (sampling.py); SWW/s the growth of SWCUR per second; SHRD the pages
KSM merged for the VM and SHRDSVD its share of the savings. There is no
compression cache (ZIP/s, UNZIP/s, ZIPPED, CACHEUSD are 0), no large pages are
tracked (LPAGE 0), and KSM does not tell zero pages per process (ZERO is 0).
``throughput`` and ``slowdown`` are NaN: the simulator knows how much work each
VM did per tick, but from outside a real guest its lost work is not observable
(the share of CPU its QEMU process used is, and is recorded as ``cpu_frac``);
so are the stall by cause (``stall_<cause>_s``), the guest's own paging rates
(``guest_swap_in_mib_s``, ``guest_swap_out_mib_s``) and the sampler's averages
(ACTVS, ACTVF, ACTVN), which a real host has no sampler for.
Extra columns: ``cpu_frac``, ``qemu_rss_mib``, ``overhead_mib``,
``guest_available_mib``, ``cgroup_limit_mib`` (NaN when unlimited),
``balloon_stuck``, ``stalled`` (QEMU stopped or silent, backend.py).
``psi_some_frac`` is the guest cgroup's memory pressure (PSI some, avg10; NaN
where its QEMU has no cgroup of its own with a ``memory.pressure``), the
simulator's column of the same name; the host rows add the host's
(``psi_some_frac``, ``psi_full_frac``) and KSM's settings.

The results directory is the simulator's (results.py: scenario.json, Parquet
rows, events.jsonl, summary.json), so ``read_results`` and every tool built on
it read a real run as they read a simulated one. Its scenario describes the
real host: the memory budget (or the real memory), the policy and one VM per
guest with its configured memory; the VMs' workloads are the guests' own and
the scenario's default stands in for them.

Decisions fall on the tick grid (the sample's time rounded to a whole tick), so
a 15 s balance period with 1 s ticks decides every 15 s, not every 16 s when a
sample ends a few hundred milliseconds after its tick.

Stopping: SIGINT and SIGTERM set a flag that the loop checks between ticks (a
tick never blocks longer than the QMP timeouts), then the backend restores the
host (KSM settings, cgroup limits) and the guests are left running.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from hvmem.backends.qemu.backend import Observation, QemuBackend
from hvmem.backends.qemu.metrics import Metrics
from hvmem.errors import ConfigError
from hvmem.policy.controller import PolicyController
from hvmem.policy.policies import POLICIES, PolicyConfig, make_policy
from hvmem.policy.samples import HostSample, Plans, VmPlan, VmSample
from hvmem.policy.states import MemState
from hvmem.results import STALL_CAUSES, RunResult
from hvmem.scenario.schema import HostConfig, Scenario, VmConfig
from hvmem.units import MIB, NS_PER_S, PAGE_SIZE_BYTES

__all__ = ["ControlLoop", "DryRunBackend"]

COLUMNS = ("MEMSZ", "GRANT", "SZTGT", "TCHD", "ACTV", "MCTLSZ", "MCTLTGT", "MCTLMAX", "SWCUR",
           "SWTGT", "SWR/s", "SWW/s", "ZIP/s", "UNZIP/s", "CACHEUSD", "SHRD", "ZERO", "SHRDSVD")


def _policy_config(policy: str | PolicyConfig, interval_s: float) -> PolicyConfig:
    """The configuration a controller runs: the given one, or a name's defaults.

    Its balance period is the controller's interval; everything else (idle tax,
    the policy's own parameters) is as given.

    Raises:
        ConfigError: an unknown policy name, or an interval no balance period may be.
    """
    if isinstance(policy, str) and policy not in POLICIES:
        raise ConfigError(f"--policy: unknown policy {policy!r}; choose one of "
                          f"{', '.join(POLICIES)}")
    config = PolicyConfig(name=policy) if isinstance(policy, str) else policy
    try:
        return replace(config, balance_period_ns=round(interval_s * NS_PER_S))
    except ConfigError as err:
        raise ConfigError(err.message, path=("--interval",)) from None


@dataclass
class DryRunBackend:
    """Passes samples through and keeps the plans instead of applying them."""

    backend: QemuBackend
    plans: list[tuple[float, Mapping[str, VmPlan]]] = field(default_factory=list)

    def sample(self) -> tuple[HostSample, list[VmSample]]:
        """The real backend's sample."""
        return self.backend.sample()

    def apply(self, plans: Mapping[str, VmPlan]) -> None:
        """Record the plans; nothing is changed on the host."""
        self.plans.append((self.backend.now_s(), plans))


class ControlLoop:
    """Runs a policy over a :class:`QemuBackend` tick by tick and records the run.

    Args:
        backend: the guests.
        policy: a policy configuration (a scenario's ``[policy]``: its idle tax and
            parameters apply), or a policy name (``esx``, ``mom``, ``proxmox``,
            ``static``) with its defaults.
        interval_s: the balance period.
        dry_run: decide but apply nothing.
        tick_s: how often rows are recorded (and the live view refreshed).
        name: the run's name (results and scenario).
        metrics: publish each tick here, if given.
        scenario: the scenario the guests were launched from (``[backend] kind =
            "qemu"``); the results record it instead of one describing the guests.

    Attributes:
        result: the run so far (:class:`~hvmem.results.RunResult` rows and events).
        stop_requested: set by :meth:`request_stop` (or a signal) to end the loop.
    """

    def __init__(self, backend: QemuBackend, policy: str | PolicyConfig = "esx",
                 interval_s: float = 15.0, *, dry_run: bool = False, tick_s: float = 1.0,
                 name: str = "qemu", metrics: Metrics | None = None,
                 scenario: Scenario | None = None) -> None:
        if not (math.isfinite(interval_s) and interval_s > 0):
            raise ConfigError(f"--interval: expected a positive time, found {interval_s} s")
        if not (math.isfinite(tick_s) and 0 < tick_s <= interval_s):
            raise ConfigError(f"tick: expected a positive time no longer than the interval, "
                              f"found {tick_s} s")
        self.backend = backend
        self.policy_config = _policy_config(policy, interval_s)
        self.policy = make_policy(self.policy_config)
        self.interval_s = float(interval_s)
        self.tick_s = float(tick_s)
        self.dry_run = dry_run
        self.name = name
        self.port: DryRunBackend | QemuBackend = DryRunBackend(backend) if dry_run else backend
        self.controller = PolicyController(self.policy, self.port, interval_s)
        self.metrics = metrics
        # Every guest attached at the start, as the results' scenario lists them.
        self._vm_configs = tuple(
            # overhead 0: QEMU's real overhead is measured (overhead_mib), not assumed
            VmConfig(name=g.name, memory_bytes=int(g.configured_mib) * MIB, shares=g.shares,
                     overhead_bytes=0,
                     reservation_bytes=int(g.spec.reservation_mib) * MIB,
                     limit_bytes=None if g.spec.limit_mib is None
                     else max(int(g.spec.limit_mib), int(g.spec.reservation_mib)) * MIB)
            for g in backend.guests.values())
        self._given_scenario = scenario
        self.result = RunResult(self._scenario(1))
        self.stop_requested = threading.Event()
        self.stop_reason = ""
        self.plans: dict[str, VmPlan] = {}
        self._events_seen = 0
        self._last_time: float | None = None

    # -- the scenario a results directory describes ---------------------------------------
    def _scenario(self, ticks: int) -> Scenario:
        if self._given_scenario is not None:
            return self._given_scenario
        b = self.backend
        total = b.options.host_memory_mib
        if total is None and b.options.pressure is not None:
            total = b._host.pressure_budget_mib
        if total is None and b._last is not None:
            total = b._last.host.total_mib
        if total is None:
            from hvmem.backends.qemu.procfs import read_meminfo

            total = read_meminfo(b.options.proc_root).total_mib
        page_mib = PAGE_SIZE_BYTES / MIB
        memory_bytes = int(total // page_mib) * PAGE_SIZE_BYTES
        tick_ns = int(round(self.tick_s * NS_PER_S))
        return Scenario(
            name=self.name,
            description=("real QEMU guests under hvmem qemu control"
                         + (" (dry run: plans not applied)" if self.dry_run else "")),
            duration_ns=max(1, ticks) * tick_ns, tick_ns=tick_ns,
            host=HostConfig(memory_bytes=memory_bytes, profile=b.options.profile),
            policy=self.policy_config,
            vms=self._vm_configs)

    # -- the loop ---------------------------------------------------------------------------
    def request_stop(self, reason: str = "stopped") -> None:
        """End the loop after the current tick."""
        self.stop_reason = reason
        self.stop_requested.set()

    def install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT, SIGTERM and SIGHUP stop the loop; returns what restores the old handlers."""
        old = {}

        def handler(signum: int, _frame: object) -> None:
            self.request_stop(f"stopped by {signal.Signals(signum).name}")

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, handler)

        def restore() -> None:
            for sig, h in old.items():
                signal.signal(sig, h)

        return restore

    def tick(self) -> Mapping[str, VmPlan] | None:
        """One tick: observe, decide if due, record. Returns the plans if any were made."""
        b = self.backend
        obs = b.observe()
        # Decide on the tick grid: a sample that ends a little late (QMP answers take
        # a few hundred ms) must not push every later decision back by a tick.
        plans = self.controller.step(round(obs.time_s / self.tick_s) * self.tick_s)
        if plans is not None:
            self.plans = dict(plans.items())
            if self.dry_run:
                b.decisions += 1
        self._record(obs)
        return plans

    def run(self, duration_s: float | None = None,
            on_tick: Callable[[ControlLoop], None] | None = None) -> RunResult:
        """Tick until ``duration_s`` passes, a stop is requested, or no guest is left.

        Always closes the backend (restoring KSM and cgroup limits).
        """
        start = time.monotonic()
        k = 0
        try:
            while not self.stop_requested.is_set():
                self.tick()
                k += 1
                if on_tick is not None:
                    on_tick(self)
                if not self.backend.guests:
                    self.request_stop("no guest left under control")
                    break
                if duration_s is not None and time.monotonic() - start >= duration_s:
                    self.request_stop("duration reached")
                    break
                self.stop_requested.wait(max(0.0, start + k * self.tick_s - time.monotonic()))
            if self.backend.guests:
                self.result.complete = True
        finally:
            try:
                self.backend.close()
            finally:
                self._drain_events()
                self.result.events.append(self._event("stopped", self.stop_reason or "stopped"))
                self.result.ticks_done = k
                self.result.scenario = self._scenario(k)
        return self.result

    # -- rows -------------------------------------------------------------------------------
    def _event(self, kind: str, detail: str) -> dict[str, Any]:
        return {"time_s": round(self.backend.now_s(), 3), "event": kind, "vm": "",
                "detail": detail}

    def _drain_events(self) -> list[dict]:
        new = self.backend.events[self._events_seen:]
        self._events_seen = len(self.backend.events)
        self.result.events.extend(new)
        return new

    def _record(self, obs: Observation) -> None:
        host = obs.host
        tick_s = self.tick_s if self._last_time is None else max(1e-3, obs.time_s
                                                                  - self._last_time)
        self._last_time = obs.time_s
        ksm = obs.ksm
        host_row = {
            "time_s": obs.time_s, "tick_s": tick_s, "total_mib": host.total_mib,
            "free_mib": host.free_mib, "minfree_mib": host.minfree_mib,
            "state": MemState(host.state).label, "host_free_mib": obs.meminfo.free_mib,
            "host_available_mib": obs.meminfo.available_mib,
            "shared_saved_mib": host.shared_saved_mib,
            "ksm_run": ksm.run if ksm else -1,
            "ksm_pages_to_scan": ksm.pages_to_scan if ksm else -1,
            "ksm_pages_sharing": ksm.pages_sharing if ksm else -1,
            "ksm_sleep_ms": ksm.sleep_millisecs if ksm else -1,
            "psi_some_frac": _nan(host.psi_some_frac),
            "psi_full_frac": _nan(host.psi_full_frac),
        }
        self.result.host_rows.append(host_row)
        vm_rows = []
        for vm in obs.vms:
            g = self.backend.guests.get(vm.name)
            plan = self.plans.get(vm.name)
            proc = g.proc if g is not None else None
            limit = g.cgroup.limit_mib() if g is not None and g.limit_set and g.cgroup else None
            row = {
                "time_s": obs.time_s, "tick_s": tick_s, "vm": vm.name,
                "MEMSZ": vm.configured_mib,
                "GRANT": proc.ram_rss_mib if proc and proc.ram_rss_mib is not None
                else vm.consumed_mib,
                "SZTGT": plan.target_mib if plan else vm.configured_mib,
                "TCHD": vm.active_mib, "ACTV": vm.active_mib,
                "MCTLSZ": vm.balloon_mib, "MCTLTGT": vm.balloon_target_mib,
                "MCTLMAX": vm.balloon_max_mib, "SWCUR": vm.swapped_mib,
                "SWTGT": plan.swap_target_mib if plan else 0.0,
                "SWR/s": vm.swap_in_rate_mib_s,
                "SWW/s": g.swap_out_mib_s if g is not None else 0.0,
                "ZIP/s": 0.0, "UNZIP/s": 0.0, "CACHEUSD": 0.0, "ZIPPED": 0.0, "LPAGE": 0.0,
                "SHRD": (proc.ksm_merging_pages * 4 / 1024) if proc else 0.0,
                "ZERO": 0.0, "SHRDSVD": vm.shared_saved_mib,
                "guest_free_mib": vm.guest_free_mib if vm.guest_free_mib is not None
                else math.nan,
                "guest_swap_mib": math.nan,
                "throughput": math.nan, "slowdown": math.nan,
                # Not observable from outside a real guest (module docs): NaN.
                "ACTVS": math.nan, "ACTVF": math.nan, "ACTVN": math.nan,
                "guest_swap_in_mib_s": math.nan, "guest_swap_out_mib_s": math.nan,
                **{f"stall_{cause}_s": math.nan for cause in STALL_CAUSES},
                "cpu_frac": g.cpu_frac if g is not None else math.nan,
                "qemu_rss_mib": proc.rss_mib if proc else math.nan,
                "overhead_mib": vm.overhead_mib,
                "guest_available_mib": vm.guest_available_mib
                if vm.guest_available_mib is not None else math.nan,
                "cgroup_limit_mib": limit if limit is not None else math.nan,
                "balloon_stuck": vm.balloon_stuck,
                "psi_some_frac": _nan(vm.psi_some_frac),
                "stalled": g.stalled if g is not None else False,
            }
            vm_rows.append(row)
        self.result.vm_rows.extend(vm_rows)
        new = self._drain_events()
        if self.metrics is not None:
            self.metrics.update(host_row, vm_rows, self.backend.decisions, new)


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def plans_lines(time_s: float, plans: Mapping[str, VmPlan], *, can_compress: bool = False,
                can_block: bool = False, notes: Mapping[str, str] | None = None) -> list[str]:
    """One line per VM plan, for ``--dry-run`` output.

    A real host has no compression cache and QEMU cannot hold a guest's
    allocations, so ``compress`` and ``BLOCKED`` are printed only for a backend
    that can (``can_compress``, ``can_block``). ``notes`` ends a VM's line with
    what the backend cannot carry out as planned (``QemuBackend.plan_notes``).
    """
    notes = notes or {}
    state = ""
    if isinstance(plans, Plans) and plans.host.state is not None:
        state = f" (host {plans.host.state.label})"
    return [f"t={time_s:7.1f}s {name}: target {p.target_mib:7.1f} MiB  balloon "
            f"{p.balloon_target_mib:7.1f} MiB  swap {p.swap_target_mib:7.1f} MiB"
            f"{'  compress' if p.compress and can_compress else ''}"
            f"{'  BLOCKED' if p.blocked and can_block else ''}{state}"
            f"{'  (' + notes[name] + ')' if name in notes else ''}"
            for name, p in plans.items()]
