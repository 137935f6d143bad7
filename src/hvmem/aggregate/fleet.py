"""Fleets: thousands of ``bench-32vm`` hosts at aggregate fidelity, on a Dask cluster.

``hvmem bench fleet --hosts N --duration T`` runs N hosts shaped like
``bench-32vm`` (32 VMs of 4 GiB on 64 GiB, 2x overcommit), each with its own
seed (1..N), at aggregate fidelity with 1 s ticks, and keeps per-VM and
per-host rows every simulated minute (GRANT, ACTV, MCTLSZ, SWCUR, ZIPPED,
SHRDSVD, throughput; free memory and state).

How the work is laid out. Hosts are batched inside each task: a task is one
:class:`~hvmem.aggregate.model.HostBatch`, whose kernel steps all its hosts
in one call per tick, so Python's cost per tick is paid once per batch, not
per host. The policy core runs per host, at its balance period or when free
memory falls into a worse state (``PolicyController``, as in a single run):
that is the part of a fleet's time that grows with hosts x decisions, and
what ``host_seconds_per_wall_second`` is mostly made of (the README has the
measured split). Tasks go to a ``dask.distributed`` cluster: a
``LocalCluster`` of one single-threaded worker process per core by default,
or an existing scheduler (``--scheduler tcp://HOST:8786``) whose workers may
be on many machines; each task returns only its rows' sizes and its peak RSS,
so nothing large travels back.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import time
from dataclasses import replace

import numpy as np

from hvmem.units import NS_PER_S

ROW_PERIOD_S = 60
VM_COLUMNS = ("GRANT", "ACTV", "MCTLSZ", "SWCUR", "ZIPPED", "SHRDSVD", "throughput")


def fleet_scenarios(seeds: list[int], duration_s: int):
    """``bench-32vm`` at aggregate fidelity, one per seed, ``duration_s`` long."""
    from hvmem.scenario.loader import load_scenario
    from hvmem.scenarios import builtin_scenario_path

    base = load_scenario(builtin_scenario_path("bench-32vm"))
    base = replace(base, fidelity="aggregate", duration_ns=duration_s * NS_PER_S,
                   tick_ns=NS_PER_S)
    return [replace(base, seed=seed) for seed in seeds]


def run_batch(seeds: list[int], duration_s: int) -> dict:
    """One task: the hosts of ``seeds`` stepped together for ``duration_s``.

    Returns the rows kept (as counts and their mean GRANT, a check that they
    are real numbers), the time spent in the kernel and in the policy core,
    and the worker's peak RSS.
    """
    from hvmem.aggregate import kernel as k
    from hvmem.aggregate.backend import AggregateBackend
    from hvmem.aggregate.model import HostBatch
    from hvmem.guest.balloon_driver import POLL_PERIOD_NS
    from hvmem.policy.controller import PolicyController
    from hvmem.policy.policies import make_policy
    from hvmem.policy.states import MemState

    scenarios = fleet_scenarios(seeds, duration_s)
    batch = HostBatch(scenarios)
    clock = [0]
    controllers = []
    for h, sc in enumerate(scenarios):
        cfg = sc.policy.for_policy(None)
        backend = AggregateBackend(batch, h, lambda: clock[0])
        controllers.append(PolicyController(make_policy(cfg), backend, cfg.balance_period_s))
        for v in range(len(sc.vms)):
            batch.power_on(h, v, 0)
    n_h, n_v = len(scenarios), batch.m.shape[1]
    tick_ns = scenarios[0].tick_ns
    n_ticks = duration_s * NS_PER_S // tick_ns
    row_every = max(1, ROW_PERIOD_S * NS_PER_S // tick_ns)
    n_rows = math.ceil(n_ticks / row_every)
    vm_rows = np.zeros((n_rows, n_h, n_v, len(VM_COLUMNS)), np.float32)
    host_rows = np.zeros((n_rows, n_h, 2), np.float32)
    next_due = np.zeros(n_h)
    poll_every = max(1, POLL_PERIOD_NS // tick_ns)
    kernel_s = policy_s = 0.0
    for i in range(n_ticks):
        now = i * tick_ns
        clock[0] = now
        t0 = time.perf_counter()
        batch.step(now, i % poll_every == 0)
        t1 = time.perf_counter()
        now_s = now / NS_PER_S
        due = np.flatnonzero(next_due <= now_s)
        worse = np.flatnonzero(batch.host[:, k.H_WORSENED] > 0)
        for h in set(due.tolist()) | set(worse.tolist()):
            ctl = controllers[h]
            plans = ctl.step(now_s)
            if plans is None:
                plans = ctl.react(now_s, MemState(int(batch.host[h, k.H_STATE])))
            if plans is not None:
                batch.settle(h)
            next_due[h] = ctl.next_due_s
        policy_s += time.perf_counter() - t1
        kernel_s += t1 - t0
        if i % row_every == 0:
            r = i // row_every
            mib = 1.0 / k.PAGES_PER_MIB
            vm, m = batch.vm, batch.m
            vm_rows[r, :, :, 0] = (vm[..., k.V_KERNEL] + m[..., k.PRIV].sum(axis=2)
                                   + vm[..., k.V_SHARED]) * mib
            vm_rows[r, :, :, 1] = vm[..., k.V_SLOW] * vm[..., k.V_PAGES] * mib
            vm_rows[r, :, :, 2] = m[:, :, k.BALLOON_ROW, k.BALL] * mib
            vm_rows[r, :, :, 3] = m[..., k.SWP].sum(axis=2) * mib
            vm_rows[r, :, :, 4] = m[..., k.ZIP].sum(axis=2) * mib
            vm_rows[r, :, :, 5] = vm[..., k.V_SAVED] * mib
            vm_rows[r, :, :, 6] = np.maximum(0.0, 1.0 - batch.stall.sum(axis=2) / tick_ns)
            host_rows[r, :, 0] = batch.host[:, k.H_FREE] * mib
            host_rows[r, :, 1] = batch.host[:, k.H_STATE]
    return {"hosts": n_h, "vm_rows": int(n_rows * n_h * n_v), "host_rows": int(n_rows * n_h),
            "mean_grant_mib": float(vm_rows[..., 0].mean()), "kernel_s": kernel_s,
            "policy_s": policy_s,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_fleet(hosts: int, duration_s: int, *, workers: int | None = None,
              hosts_per_task: int | None = None, scheduler: str | None = None) -> dict:
    """Run a fleet on a Dask cluster; the JSON ``hvmem bench fleet`` prints.

    Args:
        hosts: how many hosts (seeds 1..hosts).
        duration_s: simulated seconds.
        workers: worker processes of the LocalCluster (default: this machine's cores).
        hosts_per_task: hosts batched in a task (default: hosts spread evenly, 4
            tasks per worker so that a slow task does not hold the others up).
        scheduler: an existing scheduler's address instead of a LocalCluster.
    """
    from dask.distributed import Client, LocalCluster

    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        client = Client(scheduler)
        workers = max(1, len(client.scheduler_info().get("workers", {})))
    try:
        per_task = hosts_per_task or max(1, math.ceil(hosts / (4 * workers)))
        seeds = list(range(1, hosts + 1))
        batches = [seeds[i:i + per_task] for i in range(0, hosts, per_task)]
        futures = client.map(run_batch, batches, duration_s=duration_s, pure=False)
        parts = client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    wall_s = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "hosts": hosts,
        "vms": hosts * 32,
        "simulated_s": float(duration_s),
        "wall_s": wall_s,
        "host_seconds_per_wall_second": hosts * duration_s / wall_s,
        "peak_rss_mib": max([own] + [p["peak_rss_mib"] for p in parts]),
        "tasks": len(parts),
        "workers": workers,
        "vm_rows": sum(p["vm_rows"] for p in parts),
        "host_rows": sum(p["host_rows"] for p in parts),
        "kernel_s": sum(p["kernel_s"] for p in parts),
        "policy_s": sum(p["policy_s"] for p in parts),
    }
