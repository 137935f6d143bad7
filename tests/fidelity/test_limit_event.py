"""A limit changed by a scheduled event holds from the tick of the event, as one set at power-on.

``[[event]] set = { "vm.NAME.limit" = ... }`` changed the VM's configuration and the
policy's targets, but not the hypervisor's cap, which stayed at the power-on limit:
on ``demo`` with the batch VM's limit lowered from 1 GiB to 512 MiB at 5 min, batch
held 676 MiB to the end of the run, its balloon at its maximum, and web was above its
own new limit for 28 s [VS-ALLOC].
"""

from __future__ import annotations

import pytest

from hvmem.scenario.loader import parse_scenario
from hvmem.sim import Simulation

CAPPED = {
    "name": "limit-event", "duration": "40s", "tick": "1s", "seed": 5, "fidelity": "page",
    "host": {"memory": "1GiB", "profile": "esxi6", "swap_device": "ssd"},
    "policy": {"name": "esx", "balance_period": "15s"},
    "vm": [{"name": "capped", "memory": "256MiB", "limit": "224MiB",
            "workload": {"kind": "uniform", "region": "200MiB", "refs_per_s": 20_000}}],
}


def _run(new_limit: str):
    doc = {**CAPPED, "event": [{"at": "20s", "set": {"vm.capped.limit": new_limit}}]}
    sim = Simulation(parse_scenario(doc, "limit-event.toml"), check_invariants=True)
    return sim, sim.run()


def test_a_lowered_limit_holds_from_the_tick_of_the_event():
    sim, result = _run("96MiB")
    rows = [row for row in result.vm_rows if row["vm"] == "capped"]
    before = [row for row in rows if row["time_s"] < 20]
    after = [row for row in rows if row["time_s"] >= 20]
    assert max(row["GRANT"] for row in before) > 150  # the working set was backed
    over = [(row["time_s"], row["GRANT"]) for row in after if row["GRANT"] > 96.0]
    assert not over, over[:5]
    assert sim.vms["capped"].host_vm.cap_pages == 96 * 256
    assert rows[-1]["MCTLSZ"] > 0  # and the balloon takes over from the swapping


@pytest.mark.parametrize("new_limit", ["unlimited", "256MiB"])
def test_a_limit_lifted_by_an_event_no_longer_caps(new_limit):
    sim, result = _run(new_limit)
    assert sim.vms["capped"].host_vm.cap_pages is None
    assert result.complete


def test_a_lowered_limit_holds_at_aggregate_fidelity_too():
    doc = {**CAPPED, "fidelity": "aggregate",
           "event": [{"at": "20s", "set": {"vm.capped.limit": "96MiB"}}]}
    result = Simulation(parse_scenario(doc, "limit-event.toml")).run()
    rows = [row for row in result.vm_rows if row["vm"] == "capped"]
    assert max(row["GRANT"] for row in rows if row["time_s"] < 20) > 150
    over = [(row["time_s"], row["GRANT"]) for row in rows
            if row["time_s"] >= 20 and row["GRANT"] > 96.0]
    assert not over, over[:5]
