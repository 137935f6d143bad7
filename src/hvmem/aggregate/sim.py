"""A scenario run at aggregate fidelity: the same run, results and rows, over masses.

``Simulation(scenario)`` builds this when ``scenario.fidelity`` is
``"aggregate"`` (``sim.py``), so ``hvmem run``, ``compare``, ``demo`` and the
library take it alike. It keeps ``sim.py``'s order within a tick (events,
power on and off, the VMs' touches, the balloon poll, the swapper, sampling,
sharing, the host state, the policy controller, the rows) with one host of a
:class:`~hvmem.aggregate.model.HostBatch`; the policy, the controller, the
state thresholds and the results are the page-level run's own.

Rows carry the page-level run's columns: what masses cannot say is kept as
page fidelity would report it at rest (LPAGE 0: no host large pages are kept
apart; ``guest_swap_mib`` the pages the guest swapped out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from hvmem.aggregate import kernel as k
from hvmem.aggregate.backend import AggregateBackend
from hvmem.aggregate.model import HostBatch, VmSlot
from hvmem.core.period import Period
from hvmem.errors import ConfigError
from hvmem.guest.balloon_driver import POLL_PERIOD_NS
from hvmem.policy.controller import PolicyController
from hvmem.policy.policies import make_policy
from hvmem.policy.states import MemState
from hvmem.results import STALL_CAUSES, RunResult
from hvmem.scenario.events import EventConfig
from hvmem.scenario.schema import Scenario
from hvmem.sim_events import EventSchedule, describe
from hvmem.units import MIB, NS_PER_S, ns_to_s

AGGREGATE = "aggregate"


def check_aggregate(scenario: Scenario) -> None:
    """Refuse, in one line, what masses cannot hold (trace replay, demand, churn workloads)."""
    from hvmem.aggregate.classes import workload_classes

    for i, vm in enumerate(scenario.vms):
        try:
            workload_classes(vm.workload, scenario.tick_ns, vm.name)
        except ConfigError as err:
            raise ConfigError(f"vm[{i}] {err.args[0]}", path=("Scenario", "fidelity")) from None


class AggregateSimulation:
    """A scenario at aggregate fidelity, ready to run (``sim.Simulation``'s interface)."""

    def __init__(self, scenario: Scenario, policy: str | None = None,
                 check_invariants: bool = False) -> None:
        check_aggregate(scenario)
        self.scenario = scenario
        self.check = check_invariants
        self.batch = HostBatch([scenario])
        self.names = [cfg.name for cfg in scenario.vms]
        self.thresholds = self.batch.thresholds[0]
        policy_config = scenario.policy.for_policy(policy)
        self.policy = make_policy(policy_config)
        self.now_ns = 0
        self.backend = AggregateBackend(self.batch, 0, lambda: self.now_ns, self.event)
        self.controller = PolicyController(self.policy, self.backend,
                                           policy_config.balance_period_s)
        self.result = RunResult(scenario)
        self.schedule = EventSchedule(scenario)
        self._poll = Period(POLL_PERIOD_NS)
        self._last_cnt = np.zeros_like(self.batch.cnt[0])

    @property
    def state(self) -> MemState:
        """The host's memory state."""
        return MemState(int(self.batch.host[0, k.H_STATE]))

    @property
    def vms(self) -> dict[str, VmSlot]:
        """The running VMs by name: configuration, latest plan (as ``SimVm`` has them)."""
        slots = self.batch.slots[0]
        return {n: slots[v] for n, v in self._running().items()}

    def _running(self) -> dict[str, int]:
        """The running VMs' slot indices by name."""
        b = self.batch
        return {n: v for v, n in enumerate(self.names) if b.vm[0, v, k.V_ON] > 0}

    def event(self, kind: str, vm: str, detail: str) -> None:
        """Record an event of the run at the current time."""
        self.result.events.append({"time_s": ns_to_s(self.now_ns), "event": kind, "vm": vm,
                                   "detail": detail})

    def run(self, on_tick: Callable[[AggregateSimulation], None] | None = None) -> RunResult:
        """Run to the scenario's end (or until interrupted); returns the result."""
        sc = self.scenario
        try:
            for i in range(sc.n_ticks):
                self.now_ns = i * sc.tick_ns
                self._tick(sc.tick_ns)
                self.result.ticks_done = i + 1
                if on_tick is not None:
                    on_tick(self)
            self.result.complete = True
        except KeyboardInterrupt as stop:
            self.result.stop_reason = str(stop) or "interrupted"
            self.event("interrupted", "", f"{self.result.stop_reason}; results are partial")
        return self.result

    def _power_on(self, v: int) -> None:
        b = self.batch
        cfg = self.schedule.vm(self.names[v])
        running = [b.slots[0][u].config for u in self._running().values()]
        need = sum(c.reservation_bytes + c.overhead_bytes for c in running)
        need += cfg.reservation_bytes + cfg.overhead_bytes
        if need > self.scenario.host.memory_bytes:
            self.event("admission_refused", cfg.name,
                       f"reservations plus overheads {need / MIB:.0f} MiB exceed the host's "
                       f"{self.scenario.host.memory_bytes / MIB:.0f} MiB")
            return
        b.slots[0][v].config = cfg
        b.power_on(0, v, self.now_ns)
        self._last_cnt[v] = b.cnt[0, v]
        self.event("power_on", cfg.name, f"{cfg.memory_bytes / MIB:.0f} MiB")

    def _run_event(self, event: EventConfig) -> None:
        schedule, b = self.schedule, self.batch
        self.event("scheduled", event.vm or "", describe(event, self.scenario))
        for path, value in event.changes:
            part = schedule.set(path, value)
            if part == "policy" and hasattr(self.policy, "params"):
                self.policy.params = schedule.policy.for_policy(self.policy.name).params
            elif path[3:path.rindex(".")] in self._running():
                v = self._running()[path[3:path.rindex(".")]]
                b.slots[0][v].config = schedule.vm(self.names[v])
        running = self._running().get(event.vm or "")
        if event.power == "off" and running is not None:
            b.power_off(0, running)
            self.event("power_off", event.vm or "", "")
        elif event.power == "on" and running is None and event.vm in self.names:
            cfg = schedule.vm(event.vm or "")
            if cfg.power_off_ns is not None and cfg.power_off_ns <= self.now_ns:
                schedule.replace_vm(replace(cfg, power_off_ns=None))
            self._power_on(self.names.index(event.vm or ""))

    def _tick(self, tick_ns: int) -> None:
        b, now = self.batch, self.now_ns
        for event in self.schedule.due(now):
            self._run_event(event)
        for v, name in enumerate(self.names):
            cfg = self.schedule.vm(name)
            on = b.vm[0, v, k.V_ON] > 0
            if not on and cfg.power_on_ns <= now < cfg.power_on_ns + tick_ns:
                self._power_on(v)
            elif on and cfg.power_off_ns is not None and now >= cfg.power_off_ns:
                b.power_off(0, v)
                self.event("power_off", name, "")
        poll = self._poll.due(now)
        if poll:
            self._poll.start(now)
        b.step(now, poll)
        plans = self.controller.step(ns_to_s(now))
        if plans is None and b.host[0, k.H_WORSENED] > 0:
            plans = self.controller.react(ns_to_s(now), self.state)
            if plans is not None:
                self.event("rebalance", "", f"free memory fell into {self.state.label}")
        if plans is not None:
            b.settle(0)
        self._rows(now, tick_ns)

    def _rows(self, now_ns: int, tick_ns: int) -> None:
        """The tick's host row and VM rows, computed as arrays over the running VMs."""
        b, h = self.batch, 0
        tick_s = tick_ns / NS_PER_S
        now_s = ns_to_s(now_ns)
        host = b.host[h]
        mib = 1.0 / k.PAGES_PER_MIB
        self.result.host_rows.append({
            "time_s": now_s, "tick_s": tick_s, "total_mib": float(host[k.H_TOTAL] * mib),
            "free_mib": float(host[k.H_FREE] * mib), "minfree_mib": self.thresholds.minfree_mib,
            "state": MemState(int(host[k.H_STATE])).label,
        })
        running = self._running()
        if not running:
            return
        idx = np.fromiter(running.values(), np.int64)
        m, vm, cnt = b.m[h, idx], b.vm[h, idx], b.cnt[h, idx]
        last = self._last_cnt[idx]
        d = (cnt - last) * (mib / tick_s)
        by_state = m.sum(axis=1)  # [VM, state]
        stall_ns = b.stall[h, idx]
        stall = stall_ns.sum(axis=1)
        lost_frac = np.where(stall <= tick_ns, 1.0, tick_ns / np.maximum(stall, 1.0))
        pages = vm[:, k.V_PAGES]
        fast_gain, floor = host[k.H_FAST_GAIN], host[k.H_FLOOR]
        current = vm[:, k.V_FAST] + fast_gain * (vm[:, k.V_RUNNING] - vm[:, k.V_FAST])
        active = np.maximum.reduce([vm[:, k.V_SLOW], vm[:, k.V_FAST], current,
                                    np.full(idx.size, floor)])
        touched = np.maximum(vm[:, k.V_RUNNING], vm[:, k.V_LAST_FRAC])
        plans = [b.slots[h][v].plan for v in idx.tolist()]

        def frac_mib(frac: np.ndarray) -> np.ndarray:
            return np.round(frac * pages) * mib

        n = idx.size
        cols = {
            "time_s": [now_s] * n, "tick_s": [tick_s] * n, "vm": list(running),
            "MEMSZ": (pages * mib),
            "GRANT": ((vm[:, k.V_KERNEL] + by_state[:, k.PRIV] + vm[:, k.V_SHARED]) * mib
                      ),
            "SZTGT": [float(p.target_mib) if p else float(x * mib)
                      for p, x in zip(plans, pages.tolist(), strict=True)],
            "TCHD": frac_mib(touched), "ACTV": frac_mib(active),
            "ACTVS": frac_mib(vm[:, k.V_SLOW]), "ACTVF": frac_mib(vm[:, k.V_FAST]),
            "ACTVN": frac_mib(current),
            "MCTLSZ": (by_state[:, k.BALL] * mib),
            "MCTLTGT": (np.floor(vm[:, k.V_BAL_TARGET]) * mib),
            "MCTLMAX": (vm[:, k.V_BAL_MAX] * mib),
            "SWCUR": (by_state[:, k.SWP] * mib),
            "SWTGT": [float(p.swap_target_mib) if p else 0.0 for p in plans],
            "SWR/s": d[:, k.K_SWAP_IN], "SWW/s": d[:, k.K_SWAP_OUT],
            "ZIP/s": d[:, k.K_ZIP], "UNZIP/s": d[:, k.K_UNZIP],
            "CACHEUSD": (vm[:, k.V_CACHE_FRAMES] * mib),
            "ZIPPED": (by_state[:, k.ZIP] * mib),
            "SHRD": (vm[:, k.V_SHARED] * mib),
            "ZERO": (vm[:, k.V_ZERO_SHARED] * mib),
            "SHRDSVD": (vm[:, k.V_SAVED] * mib),
            "LPAGE": [0.0] * n,
            "guest_free_mib": (m[:, k.FREE_ROW].sum(axis=1) * mib),
            "guest_swap_mib": (by_state[:, k.GSWP] * mib),
            "guest_swap_in_mib_s": d[:, k.K_GSWAP_IN],
            "guest_swap_out_mib_s": d[:, k.K_GSWAP_OUT],
            "throughput": np.maximum(0.0, 1.0 - stall / tick_ns),
            "slowdown": ((tick_ns + stall) / tick_ns),
            **{f"stall_{cause}_s": (stall_ns[:, i] / NS_PER_S * lost_frac)
               for i, cause in enumerate(STALL_CAUSES)},
            "psi_some_frac": np.minimum(1.0, (cnt[:, k.K_RECLAIM_STALL_NS]
                                              - last[:, k.K_RECLAIM_STALL_NS]) / tick_ns
                                        ),
        }
        self.result.vm_rows.append_columns(cols, n)
        self._last_cnt[idx] = cnt
