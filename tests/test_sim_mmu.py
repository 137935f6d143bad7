"""mmu-fidelity runs: every reference through TLB and page walk, end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import hvmem.sim
from hvmem.guest.pages import PTE_SWAP
from hvmem.hardware.page_table import PTE_FRAME_MASK, PTE_FRAME_SHIFT, PTE_PRESENT
from hvmem.scenario.loader import load_scenario, parse_scenario
from hvmem.sim import Simulation

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

#: Two VMs touching more than the host has, under the static policy: the host
#: swaps synchronously as memory runs out, and the references that come back
#: to swapped pages fault into the hypervisor through the MMU.
OVERCOMMITTED = {
    "name": "overcommitted-mmu",
    "duration": "6s",
    "seed": 5,
    "fidelity": "mmu",
    "host": {"memory": "80MiB", "profile": "esxi6", "large_pages": False},
    "policy": {"name": "static"},
    "vm": [
        {"name": "a", "memory": "48MiB", "overhead": "1MiB",
         "workload": {"kind": "zipf", "region": "44MiB", "refs_per_s": 100_000,
                      "write_frac": 0.5}},
        {"name": "b", "memory": "48MiB", "overhead": "1MiB",
         "workload": {"kind": "uniform", "region": "44MiB", "refs_per_s": 100_000,
                      "write_frac": 0.5}},
    ],
}


def mmu_small(paging: str = "nested", seconds: int = 8):
    scenario = load_scenario(SCENARIOS / "mmu-small.toml")
    return dataclasses.replace(scenario, duration_ns=seconds * scenario.tick_ns,
                               host=dataclasses.replace(scenario.host, paging=paging))


def guest_view(sim: Simulation) -> dict[str, np.ndarray]:
    """What each guest's processes read at every page they map: (process, vpn, content).

    Resident pages are read from the host (bringing swapped or compressed ones
    back), pages in the guest's swap from its swap device; pages never touched
    are left out.
    """
    view = {}
    for name, vm in sim.vms.items():
        kernel, rows = vm.kernel, []
        for proc in kernel.processes:
            for start, end in zip(proc.vma_start.tolist(), proc.vma_end.tolist(), strict=True):
                vpns = np.arange(start, end, dtype=np.int64)
                ptes = proc.space.page_table.leaf_entries(vpns)
                frame = ((ptes & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
                present = (ptes & PTE_PRESENT) != 0
                swapped = ~present & ((ptes & PTE_SWAP) != 0)
                content = np.zeros(vpns.size, dtype=np.uint64)
                content[present] = vm.host_vm.read_pages(frame[present])[0]
                content[swapped] = kernel.swap.content[frame[swapped]]
                keep = present | swapped
                rows.append(np.stack([np.full(int(keep.sum()), proc.index, dtype=np.uint64),
                                      vpns[keep].astype(np.uint64), content[keep]], axis=1))
        view[name] = np.concatenate(rows)
    return view


def test_mmu_small_runs_with_every_invariant_checked():
    result_sim = Simulation(mmu_small(seconds=6), check_invariants=True)
    result = result_sim.run()
    assert result.complete and result.ticks_done == 6
    rows = [r for r in result.vm_rows if r["time_s"] >= 1]
    assert {r["vm"] for r in rows} == {"web", "batch"}
    for row in rows:
        assert row["TLBMISS/s"] > 0
        assert row["WALKREF/s"] > 10 * row["TLBMISS/s"]  # 2-D walks read many entries
        assert row["HIDFLT/s"] == 0  # nested paging has no hidden faults
        assert 0 < row["throughput"] < 1  # translation costs stall the VM
    for vm in result_sim.vms.values():
        assert vm.host_vm.counters.sampling_traps > 0
        assert vm.kernel.counters.refs == 6 * 400_000


def test_nested_and_shadow_show_the_guests_the_same_data_at_different_costs():
    nested, shadow = Simulation(mmu_small("nested")), Simulation(mmu_small("shadow"))
    nested_result, shadow_result = nested.run(), shadow.run()
    for name in ("web", "batch"):
        n, s = nested.vms[name], shadow.vms[name]
        assert n.kernel.counters == dataclasses.replace(s.kernel.counters,
                                                        time_ns=n.kernel.counters.time_ns)
        assert n.host_vm.counters.sampling_traps == s.host_vm.counters.sampling_traps
        nm, sm = n.kernel.mmu.counters, s.kernel.mmu.counters
        assert nm.refs == sm.refs
        assert nm.walk_refs > 4 * sm.walk_refs  # 2-D walks against 1-D ones
        assert nm.hidden_faults == 0 < sm.hidden_faults
        assert n.kernel.counters.time_ns != s.kernel.counters.time_ns
    nested_view, shadow_view = guest_view(nested), guest_view(shadow)
    for name, rows in nested_view.items():
        assert rows.shape[0] > 1000
        assert np.array_equal(rows, shadow_view[name])
        assert np.any(rows[:, 2] != 0)  # the writes are there
    slow = {r["vm"]: r["throughput"] for r in nested_result.vm_rows[-2:]}
    fast = {r["vm"]: r["throughput"] for r in shadow_result.vm_rows[-2:]}
    assert all(slow[name] < fast[name] for name in slow)  # long walks cost more here


def test_overcommitted_mmu_run_swaps_and_loses_no_data(monkeypatch):
    written: dict[str, dict[tuple[int, int], int]] = {}
    make = hvmem.sim.make_workload

    def recording(params, rng, *, name=None, content_key=None):
        workload = make(params, rng, name=name, content_key=content_key)
        last = written.setdefault(name, {})
        next_batch = workload.next_batch

        def record(now_ns, tick_ns):
            batch = next_batch(now_ns, tick_ns)
            w = np.flatnonzero(batch.is_write)
            last.update(zip(zip(batch.process[w].tolist(), batch.vpn[w].tolist(), strict=True),
                            batch.content[w].tolist(), strict=True))
            return batch

        workload.next_batch = record
        return workload

    monkeypatch.setattr(hvmem.sim, "make_workload", recording)
    scenario = parse_scenario(json.loads(json.dumps(OVERCOMMITTED)), "overcommitted.toml")
    sim = Simulation(scenario, check_invariants=True)
    assert sim.run().complete
    for name, vm in sim.vms.items():
        c = vm.kernel.counters
        assert c.oom_events == 0 and c.invalid_accesses == 0
        assert vm.host_vm.counters.swap_in_faults > 100  # served on the MMU path
        rows = guest_view(sim)[name]
        got = {(int(p), int(v)): int(t) for p, v, t in rows}
        expect = written[name]
        assert len(expect) > 1000
        assert all(got[key] == token for key, token in expect.items())
        assert all(t == 0 for key, t in got.items() if key not in expect)


def test_rows_of_page_fidelity_runs_have_no_translation_columns():
    doc = json.loads(json.dumps(OVERCOMMITTED))
    doc.update(fidelity="page", duration="2s")
    result = Simulation(parse_scenario(doc, "page.toml")).run()
    assert all("TLBMISS/s" not in row for row in result.vm_rows)


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_mmu_runs_are_deterministic(paging):
    first = Simulation(mmu_small(paging, seconds=3)).run().vm_rows
    again = Simulation(mmu_small(paging, seconds=3)).run().vm_rows
    assert first == again
