"""Where a fleet's kernel time goes: ``kernel.step`` cut into its parts, each timed.

``kernel.step`` walks its hosts one by one, each through the tick's parts in
a fixed order (settle if needed, touches, the balloon, the swapper, sampling,
sharing, settle). Hosts share nothing, so running one part over every host,
then the next part over every host, leaves each host's arrays exactly as the
step does: ``step_parts`` does that, one compiled call per part, and times
each call in CPU seconds (``time.thread_time``). ``check_same`` confirms the
arrays end the same, byte for byte, as ``HostBatch.step`` leaves them.

Run ``python -m hvmem.aggregate.kernel_parts --hosts 32 --duration 600``: it
prints the µs of CPU a host-tick in each part, the fleet policy's and the
total. Only for measuring: fleets run host by host (``fleet_loop.py``,
``kernel.step_host`` for a stretch of ticks each), which leaves each host as
``kernel.step`` does.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time

import numpy as np
from numba import njit

from hvmem.aggregate import kernel as k
from hvmem.aggregate.image_share import age_hints
from hvmem.aggregate.kernel import _balloon, _sample, _share, _touch_vm
from hvmem.aggregate.reclaim import hold_to_cap, make_room, swap_to_target
from hvmem.aggregate.settle import settle_tick

#: The parts, in the order a tick runs them.
PARTS = ("settle_start", "touches", "balloon", "swapper", "sampling", "sharing", "settle_end")


@njit(cache=True)
def _part(part, m, tp, wp, ck, slo, shi, q, heat, ft, vm, cnt, host, rng, costs, stall,
          tick_ns, poll, lru, lazy_running, settled):
    """Part ``part`` (an index of ``PARTS``) of ``kernel.step`` over every host."""
    n_h, n_v = m.shape[0], m.shape[1]
    t = np.zeros((m.shape[2], k.N_STATES), np.int64)
    busy = np.zeros(m.shape[2], np.int64)
    scratch = np.empty((k.SETTLE_SCRATCH_ROWS, n_v + 1))
    for h in range(n_h):
        state = int(host[h, k.H_STATE])
        if part == 0:
            stall[h] = 0.0
            if not settled[h]:
                settle_tick(m, ck, vm, host, h, scratch)
            host[h, k.H_WORSENED] = 0.0
        elif part == 1:
            for v in range(n_v):
                if vm[h, v, k.V_ON] <= 0:
                    continue
                if vm[h, v, k.V_BLOCKED] > 0 and state == k.LOW_STATE:
                    stall[h, v, k.S_BLOCKED] = tick_ns
                    continue
                _touch_vm(m, tp, wp, slo, shi, q, ft, vm, cnt, host, heat, rng, costs, stall, h,
                          v, lru, t, busy)
                if vm[h, v, k.V_CAP] > 0:
                    hold_to_cap(m, vm, cnt, host, heat, rng, h, v, lru)
                if host[h, k.H_FREE] < 0:
                    make_room(m, vm, cnt, host, heat, rng, h, lru)
        elif part == 2:
            if poll:
                for v in range(n_v):
                    if vm[h, v, k.V_ON] > 0 and vm[h, v, k.V_BAL_ON] > 0:
                        _balloon(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v,
                                 lru)
                        if vm[h, v, k.V_CAP] > 0:
                            hold_to_cap(m, vm, cnt, host, heat, rng, h, v, lru)
                        if host[h, k.H_FREE] < 0:
                            make_room(m, vm, cnt, host, heat, rng, h, lru)
        elif part == 3:
            if host[h, k.H_SWAP_OK + state] > 0:
                for v in range(n_v):
                    if vm[h, v, k.V_ON] > 0 and vm[h, v, k.V_PLANNED] > 0:
                        swap_to_target(m, ck, vm, cnt, host, heat, rng, h, v, True, lru)
        elif part == 4:
            for v in range(n_v):
                if vm[h, v, k.V_ON] > 0:
                    _sample(m, q, ft, vm, host, rng, h, v, lazy_running)
        elif part == 5:
            scan = host[h, k.H_SHARE_ON] > 0 and host[h, k.H_SHARING] == k.SHARING_RUN
            breaking = 0
            if host[h, k.H_LP_ACTIVE + state] > 0:
                breaking = 2
            elif (host[h, k.H_LP_LAZY] > 0
                  and host[h, k.H_FREE] / k.PAGES_PER_MIB < host[h, k.H_HIGH_MIB]):
                breaking = 1
            if host[h, k.H_SHARE_ON] > 0:
                for v in range(n_v):
                    if vm[h, v, k.V_ON] > 0:
                        age_hints(m, vm, h, v)
                for v in range(n_v):
                    if vm[h, v, k.V_ON] > 0:
                        _share(m, ck, vm, host, rng, h, v, scan, breaking)
        else:
            settle_tick(m, ck, vm, host, h, scratch)
            settled[h] = 1


def step_parts(batch, now_ns: int, poll: bool, lazy_running: bool, settled: np.ndarray,
               cpu_s: np.ndarray) -> None:
    """``HostBatch.step`` part by part over every host; each part's CPU seconds into ``cpu_s``."""
    b = batch
    if now_ns >= b._next_phase_ns:
        settled[:] = 0
    b.advance_phases(now_ns)
    for p in range(len(PARTS)):
        t0 = time.thread_time()
        _part(p, b.m, b.tp, b.wp, b.ck, b.slo, b.shi, b.q, b.heat, b.ft, b.vm, b.cnt, b.host,
              b.rng, b.costs, b.stall, float(b.tick_ns), poll, b.lru, lazy_running, settled)
        cpu_s[p] += time.thread_time() - t0
    t0 = time.thread_time()
    b._after_step(now_ns, poll, settled)
    cpu_s[len(PARTS)] += time.thread_time() - t0


def _fleet(hosts: int, duration_s: int):
    from hvmem.aggregate.fleet import fleet_scenarios
    from hvmem.aggregate.fleet_policy import FleetPolicy
    from hvmem.aggregate.model import HostBatch

    scenarios = fleet_scenarios(list(range(1, hosts + 1)), duration_s)
    batch = HostBatch(scenarios)
    for h, sc in enumerate(scenarios):
        for v in range(len(sc.vms)):
            batch.power_on(h, v, 0)
    settled = np.zeros(hosts, np.uint8)
    return batch, FleetPolicy(batch, scenarios[0].policy, settled), settled


def digest(batch) -> str:
    """A digest of a batch's state: masses, per-VM and per-host state, counters, streams."""
    d = hashlib.sha256()
    for a in (batch.m, batch.vm, batch.cnt, batch.host, batch.q, batch.ft, batch.rng,
              batch.stall):
        d.update(np.ascontiguousarray(a).tobytes())
    return d.hexdigest()[:16]


def run(hosts: int, duration_s: int, by_parts: bool = True) -> dict:
    """A fleet of ``hosts`` stepped ``duration_s`` 1 s ticks; µs of CPU a host-tick per part.

    The first tick is not timed: its calls load the compiled kernels (about
    0.2 s from Numba's cache, minutes after an edit).
    """
    from hvmem.guest.balloon_driver import POLL_PERIOD_NS
    from hvmem.units import NS_PER_S

    batch, policy, settled = _fleet(hosts, duration_s)
    poll_every = max(1, POLL_PERIOD_NS // NS_PER_S)
    cpu_s = np.zeros(len(PARTS) + 3)  # the parts, after-step, the whole step, the policy
    warm = np.zeros_like(cpu_s)
    for i in range(duration_s):
        now = i * NS_PER_S
        poll = i % poll_every == 0
        if i == 1:
            warm[:] = cpu_s
        t0 = time.thread_time()
        if by_parts:
            step_parts(batch, now, poll, True, settled, cpu_s)
        else:
            batch.step(now, poll, True, settled)
        t1 = time.thread_time()
        policy.tick(now)
        cpu_s[-2] += t1 - t0
        cpu_s[-1] += time.thread_time() - t1
    us = (cpu_s - warm) * 1e6 / (hosts * max(1, duration_s - 1))
    out = {"hosts": hosts, "duration_s": duration_s, "digest": digest(batch),
           "kernel_us": round(float(us[-2]), 2), "policy_us": round(float(us[-1]), 2)}
    if by_parts:
        out["parts_us"] = {name: round(float(x), 2)
                           for name, x in zip((*PARTS, "after_step"), us, strict=False)}
    return out


def check_same(hosts: int = 4, duration_s: int = 120) -> bool:
    """Whether stepping part by part leaves the arrays as ``HostBatch.step`` does."""
    return run(hosts, duration_s, True)["digest"] == run(hosts, duration_s, False)["digest"]


def main(argv: list[str] | None = None) -> None:
    """``python -m hvmem.aggregate.kernel_parts``: the split as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=32)
    ap.add_argument("--duration", type=int, default=600, help="simulated seconds")
    ap.add_argument("--whole", action="store_true", help="time kernel.step whole instead")
    a = ap.parse_args(argv)
    print(json.dumps(run(a.hosts, a.duration, not a.whole)))


if __name__ == "__main__":
    main()
