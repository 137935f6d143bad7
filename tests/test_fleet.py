"""Fleets: the batched policy core runs each host as its own controller would; rows stream.

The batched esx path (``aggregate/fleet_policy.py``) and the per-host loop of
``PolicyController``s step the same hosts from the same seeds; every mass,
parameter and counter must come out the same, through HIGH into SOFT and
HARD, with decisions forced by crossings among them.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hvmem.aggregate import kernel as k
from hvmem.aggregate.fleet import fleet_scenarios, per_host_decider, run_batch
from hvmem.aggregate.fleet_policy import FleetPolicy
from hvmem.aggregate.model import HostBatch
from hvmem.ui.cli import app
from hvmem.units import NS_PER_S


def _fleet(seeds, duration_s, batched):
    scenarios = fleet_scenarios(seeds, duration_s)
    batch = HostBatch(scenarios)
    for h, sc in enumerate(scenarios):
        for v in range(len(sc.vms)):
            batch.power_on(h, v, 0)
    settled = None
    if batched:  # stepped as run_batch steps it
        settled = np.zeros(len(seeds), np.uint8)
        policy = FleetPolicy(batch, scenarios[0].policy, settled)
        decide = policy.tick
    else:
        policy, decide = None, per_host_decider(batch, scenarios)
    worst = np.zeros(len(seeds), np.int64)
    decisions = 0
    for i in range(duration_s):
        batch.step(i * NS_PER_S, True, lazy_running=batched, settled=settled)
        decisions += decide(i * NS_PER_S)
        worst = np.maximum(worst, batch.host[:, k.H_STATE].astype(np.int64))
    for h in range(len(seeds)):
        k.running_share(batch.m, batch.q, batch.vm, h)
    return batch, policy, decisions, worst


@pytest.mark.parametrize("seeds", [[1, 2, 3], [7, 11]])
def test_the_batched_policy_core_steps_hosts_as_their_controllers_do(seeds):
    per_host, _, n_per_host, worst = _fleet(seeds, 720, batched=False)
    batched, policy, n_batched, _ = _fleet(seeds, 720, batched=True)
    assert worst.max() >= 3, "the hosts should reach HARD within 12 minutes"
    assert policy.reactions > 0, "some decisions should be forced by a crossing"
    assert n_batched == n_per_host == policy.decisions
    for name in ("m", "vm", "cnt", "host", "q", "stall"):
        np.testing.assert_allclose(getattr(batched, name), getattr(per_host, name),
                                   rtol=1e-12, atol=1e-9, err_msg=name)


def test_a_task_streams_its_rows_to_parquet(tmp_path):
    out = run_batch([3, 4], 180, out=str(tmp_path))
    vm_rows = pd.read_parquet(tmp_path / "vm_rows")
    host_rows = pd.read_parquet(tmp_path / "host_rows")
    assert out["vm_rows"] == len(vm_rows) == 3 * 2 * 32
    assert out["host_rows"] == len(host_rows) == 3 * 2
    assert sorted(vm_rows["time_s"].unique()) == [0, 60, 120]
    assert sorted(vm_rows["host"].unique()) == [3, 4]
    assert vm_rows["GRANT"].mean() == pytest.approx(out["mean_grant_mib"], rel=1e-5)
    assert (host_rows["free_mib"] > 0).all()


def test_a_policy_without_arrays_runs_per_host_and_says_so(tmp_path):
    out = CliRunner().invoke(app, ["bench", "fleet", "--hosts", "2", "--duration", "1min",
                                   "--workers", "1", "--policy", "static", "--out",
                                   str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    assert result["policy"] == "static" and result["policy_path"] == "per-host"
    assert result["loop"] == "tick"
    assert result["vm_rows"] == 2 * 32 and result["host_ticks_per_cpu_second"] > 0
    assert len(pd.read_parquet(tmp_path / "vm_rows")) == 2 * 32


def test_an_unknown_fleet_policy_is_one_line():
    out = CliRunner().invoke(app, ["bench", "fleet", "--hosts", "2", "--policy", "esxx"])
    assert out.exit_code != 0
    assert "esxx" in out.output and "Traceback" not in out.output


def test_settled_flags_and_the_lazy_running_share_change_nothing():
    """A fleet's shortcuts (``kernel.step``'s ``settled`` and ``lazy_running``) against none.

    Every array, each simulated minute, with the running share worked out where the
    policy core would read it.
    """
    seeds, duration_s = [2, 5], 420
    runs = []
    for fast in (False, True):
        scenarios = fleet_scenarios(seeds, duration_s)
        batch = HostBatch(scenarios)
        for h, sc in enumerate(scenarios):
            for v in range(len(sc.vms)):
                batch.power_on(h, v, 0)
        settled = np.zeros(len(seeds), np.uint8) if fast else None
        policy = FleetPolicy(batch, scenarios[0].policy, settled)
        seen = []
        for i in range(duration_s):
            batch.step(i * NS_PER_S, True, lazy_running=fast, settled=settled)
            policy.tick(i * NS_PER_S)
            if i % 60 == 59:
                for h in range(len(seeds)):
                    k.running_share(batch.m, batch.q, batch.vm, h)
                seen.append([getattr(batch, n).copy() for n in ("m", "vm", "cnt", "host", "q")])
        runs.append((seen, policy.decisions))
    (slow, n_slow), (fast, n_fast) = runs
    assert n_slow == n_fast > 0
    for a, b in zip(slow, fast, strict=True):
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)


def test_a_host_whose_plan_is_applied_is_counted_again_at_its_next_step():
    """The policy core clears ``settled`` for each host it decides, and only for those.

    Applying a plan moves pages (balloon targets, swap to target), so the next
    step must count that host's frames and state afresh instead of trusting the
    counts its last step left.
    """
    seeds = [2, 5]
    scenarios = fleet_scenarios(seeds, 120)
    batch = HostBatch(scenarios)
    for h, sc in enumerate(scenarios):
        for v in range(len(sc.vms)):
            batch.power_on(h, v, 0)
    settled = np.zeros(len(seeds), np.uint8)
    policy = FleetPolicy(batch, scenarios[0].policy, settled)
    batch.step(0, True, lazy_running=True, settled=settled)
    assert settled.tolist() == [1, 1]
    policy.next_due_ns[1] = 10**18  # only host 0 is due
    batch.host[1, k.H_WORSENED] = 0.0
    assert policy.tick(0) == 1
    assert settled.tolist() == [0, 1]


def test_kernel_parts_step_as_the_kernel_does():
    """The per-part profile steps the hosts part by part; the arrays end as ``step`` leaves them."""
    from hvmem.aggregate import kernel_parts

    by_parts = kernel_parts.run(2, 90, by_parts=True)
    whole = kernel_parts.run(2, 90, by_parts=False)
    assert by_parts["digest"] == whole["digest"]
    assert set(by_parts["parts_us"]) == {*kernel_parts.PARTS, "after_step"}
    assert by_parts["parts_us"]["touches"] > 0.0
