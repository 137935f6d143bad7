"""The fleet's host-outer loop (``aggregate/fleet_loop.py``) against tick by tick.

Each host runs a stretch of ticks before the next; hosts share nothing, so
every array and every row must come out bit for bit as ``HostBatch.step``
and ``FleetPolicy.tick`` over all hosts each tick leave them: through HIGH
into SOFT and HARD, with decisions inside stretches and some forced by
crossings, phases starting between stretches, free page reporting, and the
sharing mode changed mid-run.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from hvmem.aggregate import kernel as k
from hvmem.aggregate.fleet import fleet_scenarios, run_batch
from hvmem.aggregate.fleet_loop import FleetLoop
from hvmem.aggregate.fleet_policy import FleetPolicy
from hvmem.aggregate.fleet_rows import RowStream
from hvmem.aggregate.model import HostBatch
from hvmem.units import NS_PER_S

ARRAYS = ("m", "tp", "wp", "ck", "slo", "shi", "q", "heat", "ft", "vm", "cnt", "host", "rng",
          "stall")
ROW_EVERY = 60


def _digest(batch: HostBatch) -> str:
    d = hashlib.sha256()
    for name in ARRAYS:
        d.update(np.ascontiguousarray(getattr(batch, name)).tobytes())
    return d.hexdigest()


def _batch(seeds, duration_s, reporting):
    scenarios = fleet_scenarios(seeds, duration_s)
    if reporting:  # every other VM's guest reports its free pages
        scenarios = [replace(sc, vms=[replace(vm, guest=replace(vm.guest,
                                                               free_page_reporting=i % 2 == 0))
                                      for i, vm in enumerate(sc.vms)])
                     for sc in scenarios]
    batch = HostBatch(scenarios)
    for h, sc in enumerate(scenarios):
        for v in range(len(sc.vms)):
            batch.power_on(h, v, 0)
    settled = np.zeros(len(seeds), np.uint8)
    return batch, FleetPolicy(batch, scenarios[0].policy, settled), settled


def _run(seeds, duration_s, host_outer, out, reporting=False, unmerge_at=None):
    """Ticks as ``run_batch`` steps them: the batch, the policy, the arrays' digest at every
    row and at the end, and (tick by tick) the most severe state any host reached.

    ``unmerge_at``: after that tick's rows, every host's sharing mode is set to
    unmerge (the next decision sets it back to run).
    """
    batch, policy, settled = _batch(seeds, duration_s, reporting)
    rows = RowStream(out, seeds, batch.m.shape[1])
    seen = []
    worst = -1

    def at_row(tick):
        rows.add(tick, batch, float(NS_PER_S))
        seen.append(_digest(batch))
        if tick == unmerge_at:
            batch.host[:, k.H_SHARING] = k.SHARING_UNMERGE

    if host_outer:
        loop = FleetLoop(batch, policy, settled, poll_every=1)
        i = 0
        while i < duration_s:
            end = loop.run(i, min(duration_s - 1, -(-i // ROW_EVERY) * ROW_EVERY))
            assert end >= i
            if end % ROW_EVERY == 0:
                at_row(end)
            i = end + 1
    else:
        for i in range(duration_s):
            batch.step(i * NS_PER_S, True, True, settled)
            policy.tick(i * NS_PER_S)
            worst = max(worst, int(batch.host[:, k.H_STATE].max()))
            if i % ROW_EVERY == 0:
                at_row(i)
    rows.close()
    seen.append(_digest(batch))
    return batch, policy, seen, worst


@pytest.mark.parametrize("seeds", [[2, 5], [1, 3, 4, 6, 7, 8]])
def test_host_by_host_stretches_leave_every_array_and_row_as_tick_by_tick(seeds, tmp_path):
    duration_s = 781  # not a whole number of rows: the last stretch is short
    tick_batch, tick_policy, tick_seen, worst = _run(seeds, duration_s, False, tmp_path / "tick")
    loop_batch, loop_policy, loop_seen, _ = _run(seeds, duration_s, True, tmp_path / "loop")
    assert worst >= 3, "the hosts should reach HARD"
    assert loop_policy.reactions > 0, "some decisions should be forced by a crossing"
    assert loop_policy.decisions == tick_policy.decisions >= len(seeds) * duration_s // 15
    assert loop_policy.reactions == tick_policy.reactions
    assert loop_seen == tick_seen
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(loop_batch, name), getattr(tick_batch, name),
                                      err_msg=name)
    for part in ("vm_rows", "host_rows"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "loop" / part),
                                      pd.read_parquet(tmp_path / "tick" / part))


def test_reporting_and_unmerging_hosts_run_as_tick_by_tick(tmp_path):
    """The after-step work the esx fleet does not need, run in the stretch all the same.

    Each of the two changes the run (so the comparison covers it).
    """
    seeds, duration_s = [3, 4], 300
    digests = {}
    for outer, reporting, unmerge_at in ((False, True, 120), (True, True, 120),
                                         (True, False, 120), (True, True, None)):
        key = (outer, reporting, unmerge_at)
        digests[key] = _run(seeds, duration_s, outer, tmp_path / str(len(digests)),
                            reporting=reporting, unmerge_at=unmerge_at)[2]
    both = digests[True, True, 120]
    assert both == digests[False, True, 120]
    assert both[-1] != digests[True, False, 120][-1]
    assert both[-1] != digests[True, True, None][-1]
    assert both[:3] == digests[True, True, None][:3]  # the same until the mode changes


def test_stretches_end_before_a_phase_ends():
    batch, policy, settled = _batch([1], 600, False)
    loop = FleetLoop(batch, policy, settled, poll_every=1)
    batch.begin_tick(0, settled)
    nxt = batch.next_phase_ns
    assert nxt < 600 * NS_PER_S, "bench-32vm's phased VMs change phase within 10 minutes"
    first_phase_tick = -(-int(nxt) // NS_PER_S)
    assert loop.stretch_end(0, 10**6) == first_phase_tick - 1
    assert loop.stretch_end(0, 5) == min(5, first_phase_tick - 1)
    assert loop.stretch_end(first_phase_tick, 10**6) == first_phase_tick


def test_a_task_runs_the_same_rows_host_by_host_or_tick_by_tick(tmp_path):
    outs = {outer: run_batch([6, 9, 10], 200, out=str(tmp_path / str(outer)), host_outer=outer)
            for outer in (False, True)}
    assert outs[True]["loop"] == "host-outer" and outs[False]["loop"] == "tick"
    assert outs[True]["decisions"] == outs[False]["decisions"] > 0
    assert outs[True]["mean_grant_mib"] == outs[False]["mean_grant_mib"]
    for part in ("vm_rows", "host_rows"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "True" / part),
                                      pd.read_parquet(tmp_path / "False" / part))
