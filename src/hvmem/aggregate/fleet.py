"""Fleets: thousands of ``bench-32vm`` hosts at aggregate fidelity, on a Dask cluster.

``hvmem bench fleet --hosts N --duration T`` runs N hosts shaped like
``bench-32vm`` (32 VMs of 4 GiB on 64 GiB, 2x overcommit), each with its own
seed (1..N), at aggregate fidelity with 1 s ticks, and keeps per-VM and
per-host rows every simulated minute (GRANT, ACTV, MCTLSZ, SWCUR, ZIPPED,
SHRDSVD, throughput; free memory and state).

How the work is laid out. Hosts are batched inside each task: a task is one
:class:`~hvmem.aggregate.model.HostBatch`, and nothing in its loop is Python
per host. The task runs host by host (``fleet_loop.py``): one compiled call
runs each host in turn for a stretch of ticks, up to the next minute's rows
or a phase's end, each host-tick the kernel's step of that host
(``kernel.step_host``), the balloon's judging, and the policy core's decision
if its balance period has passed or its free memory fell into a worse state,
sampling, planning and applying over ``[hosts, VMs]`` arrays
(``fleet_policy.py``, the esx planner of ``policy/batched.py``); so a host's
rows stay in cache from one tick to the next. Each simulated minute, the
rows of every host and VM are read off the masses into a buffer that is
streamed to Parquet (``fleet_rows.py``), never kept whole. Hosts share
nothing, so this is bit for bit what stepping every host tick by tick gives
(``host_outer=False``: ``HostBatch.step`` then ``FleetPolicy.tick``, each
over all hosts). A policy other than esx
runs its :class:`~hvmem.policy.controller.PolicyController` per host, as a
single run does (``policy_path`` ``"per-host"`` in the JSON): correct, and
about 2.7 ms of Python per decision.

Tasks go to a ``dask.distributed`` cluster: a ``LocalCluster`` of one
single-threaded worker process per core by default, or an existing scheduler
(``--scheduler tcp://HOST:8786``) whose workers may be on many machines; each
task writes its own Parquet files (under ``--out``, which must then be a
directory every worker sees, or a temporary directory of the worker's that
is removed when the task ends) and returns only its counts and CPU times, so
nothing large travels back.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from hvmem.units import NS_PER_S

ROW_PERIOD_S = 60
#: The policy a fleet runs unless told otherwise (bench-32vm's).
DEFAULT_FLEET_POLICY = "esx"


def fleet_scenarios(seeds: list[int], duration_s: int, policy: str | None = None):
    """``bench-32vm`` at aggregate fidelity, one per seed, ``duration_s`` long.

    ``policy``: run this policy instead of the scenario's (its default parameters).
    """
    from hvmem.scenario.loader import load_scenario
    from hvmem.scenarios import builtin_scenario_path

    base = load_scenario(builtin_scenario_path("bench-32vm"))
    base = replace(base, fidelity="aggregate", duration_ns=duration_s * NS_PER_S,
                   tick_ns=NS_PER_S, policy=base.policy.for_policy(policy))
    return [replace(base, seed=seed) for seed in seeds]


def policy_path(policy: str) -> str:
    """``"batched"`` for a policy planned over arrays, ``"per-host"`` for the others."""
    from hvmem.aggregate.fleet_policy import BATCHED_POLICIES

    return "batched" if policy in BATCHED_POLICIES else "per-host"


def per_host_decider(batch, scenarios) -> Callable[[int], int]:
    """The policy loop of a single run, one controller per host: each tick's decider."""
    from hvmem.aggregate import kernel as k
    from hvmem.aggregate.backend import AggregateBackend
    from hvmem.policy.controller import PolicyController
    from hvmem.policy.policies import make_policy
    from hvmem.policy.states import MemState

    clock = [0]
    controllers = []
    for h, sc in enumerate(scenarios):
        cfg = sc.policy
        backend = AggregateBackend(batch, h, lambda: clock[0])
        controllers.append(PolicyController(make_policy(cfg), backend, cfg.balance_period_s))
    next_due = np.zeros(len(scenarios))

    def tick(now_ns: int) -> int:
        clock[0] = now_ns
        now_s = now_ns / NS_PER_S
        due = np.flatnonzero(next_due <= now_s)
        worse = np.flatnonzero(batch.host[:, k.H_WORSENED] > 0)
        decided = 0
        for h in sorted(set(due.tolist()) | set(worse.tolist())):
            ctl = controllers[h]
            plans = ctl.step(now_s)
            if plans is None:
                plans = ctl.react(now_s, MemState(int(batch.host[h, k.H_STATE])))
            if plans is not None:
                batch.settle(h)
                decided += 1
            next_due[h] = ctl.next_due_s
        return decided

    return tick


def run_batch(seeds: list[int], duration_s: int, policy: str | None = None,
              out: str | None = None, host_outer: bool = True) -> dict:
    """One task: the hosts of ``seeds`` stepped together for ``duration_s``.

    Rows go to ``out`` (a directory), or to a temporary directory removed at
    the end. Returns the rows written (and their mean GRANT, a check that they
    are real numbers), how many decisions the policy took, the CPU time in
    the kernel, the policy core and the rows, and the worker's peak RSS.

    ``host_outer``: a batched policy's hosts run a stretch of ticks each
    (``fleet_loop.py``); the kernel's CPU time then holds the policy's, and
    ``loop`` says ``"host-outer"``. False, or a policy run per host: tick by
    tick over every host (``"tick"``), the same results.
    """
    from hvmem.aggregate.fleet_rows import RowStream
    from hvmem.aggregate.model import HostBatch
    from hvmem.guest.balloon_driver import POLL_PERIOD_NS

    cpu0 = time.process_time()
    scenarios = fleet_scenarios(seeds, duration_s, policy)
    batch = HostBatch(scenarios)
    for h, sc in enumerate(scenarios):
        for v in range(len(sc.vms)):
            batch.power_on(h, v, 0)
    name = scenarios[0].policy.name
    # The batched policy core works out the running active share of the hosts it
    # decides (``kernel.running_share``); the per-host controllers read it as written.
    # It also clears the ``settled`` flag of each host it changes, so that a host
    # nothing changed since its last step is not counted again at the next one's start.
    lazy = policy_path(name) == "batched"
    settled = fleet_policy = None
    if lazy:
        from hvmem.aggregate.fleet_policy import FleetPolicy

        settled = np.zeros(len(scenarios), np.uint8)
        fleet_policy = FleetPolicy(batch, scenarios[0].policy, settled)
        decide = fleet_policy.tick
    else:
        decide = per_host_decider(batch, scenarios)
    n_h, n_v = len(scenarios), batch.m.shape[1]
    tick_ns = scenarios[0].tick_ns
    n_ticks = duration_s * NS_PER_S // tick_ns
    row_every = max(1, ROW_PERIOD_S * NS_PER_S // tick_ns)
    poll_every = max(1, POLL_PERIOD_NS // tick_ns)
    kernel_s = policy_s = rows_s = 0.0
    decisions = 0
    loop = None
    if fleet_policy is not None and host_outer:
        from hvmem.aggregate.fleet_loop import FleetLoop

        loop = FleetLoop(batch, fleet_policy, settled, poll_every)
    with tempfile.TemporaryDirectory(prefix="hvmem-fleet-") as scratch:
        rows = RowStream(Path(out or scratch), seeds, n_v)
        setup_s = time.process_time() - cpu0
        if loop is not None:
            i = 0
            while i < n_ticks:
                # A stretch ends at the next row's tick at the latest (the first is tick 0).
                t0 = time.process_time()
                end = loop.run(i, min(n_ticks - 1, -(-i // row_every) * row_every))
                t1 = time.process_time()
                kernel_s += t1 - t0
                if end % row_every == 0:
                    rows.add(end * tick_ns // NS_PER_S, batch, float(tick_ns))
                    rows_s += time.process_time() - t1
                i = end + 1
            decisions = fleet_policy.decisions
        else:
            for i in range(n_ticks):
                now = i * tick_ns
                t0 = time.process_time()
                batch.step(now, i % poll_every == 0, lazy, settled)
                t1 = time.process_time()
                decisions += decide(now)
                t2 = time.process_time()
                kernel_s += t1 - t0
                policy_s += t2 - t1
                if i % row_every == 0:
                    rows.add(now // NS_PER_S, batch, float(tick_ns))
                    rows_s += time.process_time() - t2
        t0 = time.process_time()
        rows.close()
        rows_s += time.process_time() - t0
    return {"hosts": n_h, "vm_rows": rows.vm_rows, "host_rows": rows.host_rows,
            "mean_grant_mib": rows.mean_grant_mib, "decisions": decisions,
            "setup_s": setup_s, "kernel_s": kernel_s, "policy_s": policy_s, "rows_s": rows_s,
            "loop": "tick" if loop is None else "host-outer",
            "cpu_s": time.process_time() - cpu0,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_fleet(hosts: int, duration_s: int, *, workers: int | None = None,
              hosts_per_task: int | None = None, scheduler: str | None = None,
              policy: str | None = None, out: str | None = None) -> dict:
    """Run a fleet on a Dask cluster; the JSON ``hvmem bench fleet`` prints.

    Args:
        hosts: how many hosts (seeds 1..hosts).
        duration_s: simulated seconds.
        workers: worker processes of the LocalCluster (default: this machine's cores).
        hosts_per_task: hosts batched in a task (default: hosts spread evenly, 4
            tasks per worker so that a slow task does not hold the others up).
        scheduler: an existing scheduler's address instead of a LocalCluster.
        policy: the policy every host runs (default esx, planned over arrays;
            the others run per host).
        out: where the rows go (``vm_rows/`` and ``host_rows/``); None: discarded.
    """
    from dask.distributed import Client, LocalCluster

    policy = policy or DEFAULT_FLEET_POLICY
    fleet_scenarios([1], 1, policy)  # an unknown policy fails here, before the cluster starts
    if out is not None:
        out = str(Path(out).resolve())
    workers = workers or os.cpu_count() or 1
    start = time.perf_counter()
    cpu0 = time.process_time()
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
        futures = client.map(run_batch, batches, duration_s=duration_s, policy=policy,
                             out=out, pure=False)
        parts = client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    wall_s = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu_s = sum(p["cpu_s"] for p in parts)
    host_ticks = hosts * duration_s  # 1 s ticks
    return {
        "hosts": hosts,
        "vms": hosts * 32,
        "simulated_s": float(duration_s),
        "wall_s": wall_s,
        "host_seconds_per_wall_second": hosts * duration_s / wall_s,
        "peak_rss_mib": max([own] + [p["peak_rss_mib"] for p in parts]),
        "policy": policy,
        "policy_path": policy_path(policy),
        "loop": parts[0]["loop"],  # "host-outer" (fleet_loop.py) or "tick"
        "tasks": len(parts),
        "workers": workers,
        "vm_rows": sum(p["vm_rows"] for p in parts),
        "host_rows": sum(p["host_rows"] for p in parts),
        "decisions": sum(p["decisions"] for p in parts),
        "tasks_cpu_s": cpu_s,
        "client_cpu_s": time.process_time() - cpu0,
        "host_ticks_per_cpu_second": host_ticks / cpu_s if cpu_s > 0 else 0.0,
        "setup_s": sum(p["setup_s"] for p in parts),
        "kernel_s": sum(p["kernel_s"] for p in parts),
        "policy_s": sum(p["policy_s"] for p in parts),
        "rows_s": sum(p["rows_s"] for p in parts),
        "out": out,
    }
