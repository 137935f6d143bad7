"""A scenario run at aggregate fidelity: the same run, results and rows, over masses.

``Simulation(scenario)`` builds this when ``scenario.fidelity`` is
``"aggregate"`` (``sim.py``), so ``hvmem run``, ``compare``, ``demo`` and the
library take it alike. It keeps ``sim.py``'s order within a tick (events,
power on and off, the VMs' touches, the balloon poll, the swapper, sampling,
sharing, the host state, the policy controller, the rows) with one host of a
:class:`~hvmem.aggregate.model.HostBatch`; the policy, the controller, the
state thresholds and the results are the page-level run's own.

Rows carry the page-level run's columns: what masses cannot say is kept as
page fidelity would report it at rest (LPAGE the VM's share of pages in large
pages, ``V_LARGE_FRAC``, of its private pages, in whole 2 MiB pages;
``guest_swap_mib`` the pages the guest swapped out).

Every scenario field at this fidelity
-------------------------------------
A user switches fidelity and nothing else changes: each field of the
scenario (``scenario/schema.py``) is held by the masses, is irrelevant to
them, or is refused by :func:`check_aggregate` in one line. Modelled:

=================================  ==============================================
field                              how the masses hold it
=================================  ==============================================
duration, tick, seed               the tick loop; a SplitMix64 stream per host
host.memory                        ``H_TOTAL``, free frames counted by ``settle``
host.profile, min_free_frac        the states' thresholds and actions (``H_*``)
host.paging, large_pages           ``H_LARGE_PAGES``: large pages broken to share
host.swap_device                   ``H_SWAP_NS``: swap-in stall, swapper's refill
host.swap_selection                random victims in proportion, or LRU's coldest
host.sharing.enabled, scan rates,  ``H_SHARE_ON``, each VM's ``V_SHARE_RATE``
cpu_ghz                            (capped by the host's total); events change them
host.sharing.salting, vm.salt      image groups and zero frames, one salt or each
                                   VM its own (explicit: all equal or all apart)
host.compression                   ``H_ZIP_ON``, ``V_CACHE_MAX``
host.sampling                      sampled share, fast and slow averages, floor
vm.memory, kernel_bytes_per_page   ``V_PAGES``, ``V_KERNEL``
vm.reservation, shares, overhead   admission at power-on, the policy's samples
vm.limit (and its events)          ``V_CAP``: ``hold_to_cap``
vm.power_on, power_off, events     ``V_ON``; masses freed at power-off
guest.swap, swap_device            ``V_GSWAP_CAP``, ``V_GSWAP_NS``
guest.reclaim_policy lru, random   coldest classes first, or all in proportion
guest.balloon, balloon_max         ``V_BAL_ON``, ``V_BAL_MAX``; stuck (``balloon.py``)
guest.deflate_on_oom               ``V_DEFLATE_OOM`` (``balloon.py``)
guest.free_page_reporting          ``V_REPORTING`` (``balloon.py``)
workload (uniform, zipf, hotcold,  heat classes (``classes.py``); phase events
scan, idle, phases)                enter the phase's classes
content image, image_frac,         content kinds of the classes; compressible share
zero_frac, compressibility
policy (name, params, period)      the same policy core; UNMERGE: ``unmerge.py``
timing: guest, hypervisor fault,   each served page's stall
zero, COW, decompress, balloon,
swap costs
=================================  ==============================================

Irrelevant to masses: ``description``, ``name``; ``host.tlb_entries``,
``tlb_ways``, ``pwc_entries`` and the MMU's costs (``tlb_hit_ns``,
``walk_ref_ns``, ``vmexit_ns``, ``hidden_fault_ns``, ``pte_trace_ns``,
``cr3_switch_ns``, ``tlb_flush_exit_ns``): mmu fidelity's alone, which the
aggregate fidelity refuses; ``guest.processes`` and a workload's
``process``, ``first_vpn``: which address space and where in it, not how
many pages are touched; the qemu backend's ``file_backed``,
``shared_bytes``, ``private_bytes``, ``touch_ns``.

Refused (one line naming the field and value): trace replay, demand and
churn workloads; ``backend.kind = "qemu"``; guest ``reclaim_policy``
``fifo`` and ``clock``; a ``file_backed`` workload; ``dup_frac`` above 0;
``private_compressibility`` other than the image's; explicit salts some
equal and some not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from hvmem.aggregate import kernel as k
from hvmem.aggregate.backend import AggregateBackend
from hvmem.aggregate.model import HostBatch, VmSlot
from hvmem.aggregate.rows import VmRowBuffer, fill_vm_rows
from hvmem.core.period import Period
from hvmem.errors import ConfigError
from hvmem.guest.balloon_driver import POLL_PERIOD_NS
from hvmem.policy.controller import PolicyController
from hvmem.policy.policies import make_policy
from hvmem.policy.states import MemState
from hvmem.results import RunResult
from hvmem.scenario.events import EventConfig
from hvmem.scenario.schema import Scenario
from hvmem.sim_events import EventSchedule, describe
from hvmem.units import MIB, NS_PER_S, ns_to_s
from hvmem.workloads.synthetic import PhasesParams

AGGREGATE = "aggregate"


def check_aggregate(scenario: Scenario) -> None:
    """Refuse, in one line, what masses cannot hold (the table in the module essay)."""
    from hvmem.aggregate.classes import workload_classes

    def refuse(where: str, what: str) -> None:
        raise ConfigError(f"{where}: {what}; the aggregate fidelity does not model it, run "
                          "at page fidelity", path=("Scenario", "fidelity"))

    if scenario.backend.kind != "simulated":
        refuse(f"backend.kind = {scenario.backend.kind!r}",
               "the VMs are real guests, not simulated at any fidelity")
    for i, vm in enumerate(scenario.vms):
        try:
            workload_classes(vm.workload, scenario.tick_ns, vm.name)
        except ConfigError as err:
            raise ConfigError(f"vm[{i}] {err.args[0]}", path=("Scenario", "fidelity")) from None
        where = f"vm[{i}] {vm.name}"
        if vm.guest.reclaim_policy not in ("lru", "random"):
            refuse(f"{where}: guest.reclaim_policy = {vm.guest.reclaim_policy!r}",
                   "guest reclaim takes the coldest classes first (lru) or any in "
                   "proportion (random)")
        for g in _generators(vm.workload):
            if g.file_backed:
                refuse(f"{where}: workload file_backed = true",
                       "page-cache pages the guest drops instead of swapping")
            content = g.content
            if content.dup_frac > 0:
                refuse(f"{where}: content.dup_frac = {content.dup_frac}",
                       "pages a VM holds twice")
            if content.private_compressibility != content.image.compressibility:
                refuse(f"{where}: content.private_compressibility",
                       "private pages compressing unlike the image's (one compressibility "
                       "a VM)")
    if _mixed_salts(scenario):
        refuse("host.sharing.salting = \"explicit\" with VMs of different salts, some "
               "equal", "sharing between some VMs and not others")


def _generators(workload: object) -> list:
    """A workload's generators: a phased one's phases', or itself."""
    if isinstance(workload, PhasesParams):
        return [g for _, g in workload.resolved()]
    return [workload]


def _mixed_salts(scenario: Scenario) -> bool:
    """Explicit salting whose salts are neither all one (across) nor all apart (within)."""
    if scenario.host.sharing.salting != "explicit":
        return False
    salts = [vm.salt or 0 for vm in scenario.vms]
    return 1 < len(set(salts)) < len(salts)


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
        self._buffer = VmRowBuffer(len(self.names))

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
        host_rows, vm_rows, buf = self.result.host_rows, self.result.vm_rows, self._buffer
        # The ticks done and their host and VM rows, in one tuple stored at once, so a
        # signal between two statements never pairs a count with another tick's rows.
        done = (self.result.ticks_done, len(host_rows), len(vm_rows) + buf.n)
        try:
            for i in range(sc.n_ticks):
                self.now_ns = i * sc.tick_ns
                self._tick(sc.tick_ns)
                done = (i + 1, len(host_rows), len(vm_rows) + buf.n)
                self.result.ticks_done = i + 1
                if on_tick is not None:
                    buf.flush(vm_rows)  # a watcher reads the rows now
                    on_tick(self)
            self.result.complete = True
        except KeyboardInterrupt as stop:
            # A signal can land while a tick's rows are appended: keep whole ticks only.
            self._cut_rows(done)
            self.result.stop_reason = str(stop) or "interrupted"
            self.event("interrupted", "", f"{self.result.stop_reason}; results are partial")
        except BaseException:  # an error mid-tick: its caller keeps the whole ticks
            self._cut_rows(done)
            raise
        finally:
            self._buffer.flush(self.result.vm_rows)
        return self.result

    def _cut_rows(self, done: tuple[int, int, int]) -> None:
        """``RunResult.keep_ticks``, once the buffered VM rows of the ticks kept are in."""
        vm_rows, buf = self.result.vm_rows, self._buffer
        buf.n = keep = max(0, min(done[2] - len(vm_rows), buf.n))
        del buf.times[keep:], buf.tick_s[keep:], buf.names[keep:]
        buf.flush(vm_rows)
        self.result.keep_ticks(done)

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
            elif part == "host":  # the sharing scanner's settings, from this tick on
                b.set_host(0, schedule.host)
                self.backend.sharing_changed()
            elif path[3:path.rindex(".")] in self._running():
                v = self._running()[path[3:path.rindex(".")]]
                b.slots[0][v].config = schedule.vm(self.names[v])
                b.set_cap(0, v)  # a new limit holds from the next tick, as at page fidelity
        running = self._running().get(event.vm or "")
        if event.power == "off" and running is not None:
            b.power_off(0, running)
            self.event("power_off", event.vm or "", "")
        elif event.power == "on" and running is None and event.vm in self.names:
            cfg = schedule.vm(event.vm or "")
            if cfg.power_off_ns is not None and cfg.power_off_ns <= self.now_ns:
                schedule.replace_vm(replace(cfg, power_off_ns=None))
            self._power_on(self.names.index(event.vm or ""))
        if event.phase is not None and running is not None:
            b.start_phase(0, running, event.phase, self.now_ns)

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
        """The tick's host row, and its VM rows into the buffer (``rows.py``)."""
        b, h = self.batch, 0
        host = b.host[h]
        mib = 1.0 / k.PAGES_PER_MIB
        now_s, tick_s = ns_to_s(now_ns), tick_ns / NS_PER_S
        self.result.host_rows.append({
            "time_s": now_s, "tick_s": tick_s, "total_mib": float(host[k.H_TOTAL] * mib),
            "free_mib": float(host[k.H_FREE] * mib), "minfree_mib": self.thresholds.minfree_mib,
            "state": MemState(int(host[k.H_STATE])).label,
        })
        running = self._running()
        if not running:
            return
        buf = self._buffer
        if not buf.room(len(running)):
            buf.flush(self.result.vm_rows)
        idx = np.fromiter(running.values(), np.int64, len(running))
        fill_vm_rows(b.m, b.vm, b.cnt, self._last_cnt, b.stall, b.host, h, idx,
                     float(tick_ns), buf.out, buf.n)
        buf.n += idx.size
        buf.times.extend([now_s] * idx.size)
        buf.tick_s.extend([tick_s] * idx.size)
        buf.names.extend(running)
