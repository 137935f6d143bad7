"""End-to-end runs: invariants, determinism, results directories, the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hvmem.errors import ConfigError
from hvmem.hypervisor.pmap import Backing
from hvmem.policy.states import MemState
from hvmem.results import read_results, write_results
from hvmem.scenario.loader import load_scenario, parse_scenario
from hvmem.sim import Simulation
from hvmem.ui.cli import app

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"

TINY = {
    "name": "tiny",
    "duration": "40s",
    "seed": 3,
    "host": {"memory": "320MiB", "profile": "esxi6"},
    "vm": [
        {"name": "a", "memory": "192MiB",
         "workload": {"kind": "zipf", "region": "176MiB", "refs_per_s": 200_000}},
        {"name": "b", "memory": "192MiB",
         "workload": {"kind": "uniform", "region": "176MiB", "refs_per_s": 200_000}},
    ],
}


def tiny(**changes):
    doc = json.loads(json.dumps(TINY))
    doc.update(changes)
    return parse_scenario(doc, "tiny.toml")


def test_overcommitted_run_reclaims_and_keeps_every_invariant():
    result = Simulation(tiny(), check_invariants=True).run()
    assert result.complete and result.ticks_done == 40
    summary = result.summary()
    assert set(summary["vms"]) == {"a", "b"}
    reclaimed = sum(vm["balloon_peak_mib"] + vm["swapped_peak_mib"] + vm["compressed_peak_mib"]
                    for vm in summary["vms"].values())
    assert reclaimed > 0  # 384 MiB of guests on a 320 MiB host
    assert any(row["state"] != "high" for row in result.host_rows)


def test_swapper_holds_targets_between_balance_periods():
    """In HARD and LOW, pages the guest touches back in are swapped out again at once.

    Small pages and no sharing, so that applying a plan reaches its target
    exactly (no victim waits inside a large page, none is shared instead).
    """
    host = dict(TINY["host"], large_pages=False, sharing={"enabled": False})
    sim = Simulation(tiny(host=host, policy={"balance_period": "15s"}), check_invariants=True)
    checked = []
    began_in = [sim.state]

    def after_tick(s: Simulation) -> None:
        balance_tick = s.now_ns % (15 * 10**9) == 0
        if began_in[0] in (MemState.HARD, MemState.LOW) and not balance_tick:
            for vm in s.vms.values():
                if vm.plan is not None:
                    held = vm.host_vm.swapfile.n_used + vm.host_vm.zip.n_pages
                    checked.append((held, int(vm.plan.swap_target_mib * 256)))
        began_in[0] = s.state

    sim.run(on_tick=after_tick)
    assert checked, "the host never swapped between balance periods"
    assert any(target > 0 for _, target in checked)
    short = [(held, target) for held, target in checked if held < target]
    assert not short, short


def test_shrdsvd_adds_up_to_the_hosts_saving_across_vms():
    """Pages shared across VMs count in SHRDSVD, split among the VMs mapping them."""
    doc = {
        "name": "twins", "duration": "30s", "seed": 5,
        "host": {"memory": "512MiB", "large_pages": False,
                 "sharing": {"enabled": True, "salting": "across",
                             "scan_rate_pages_per_s": 4096}},
        "vm": [{"name": "twin", "count": 2, "memory": "128MiB",
                "content": {"image": "ubuntu-22.04", "image_frac": 0.6, "zero_frac": 0.0},
                "workload": {"kind": "phases", "region": "96MiB", "phases": [
                    {"duration": "4s", "kind": "scan", "pages_per_s": 8192, "write_frac": 1.0},
                    {"duration": "26s", "kind": "idle"}]}}],
    }
    sim = Simulation(parse_scenario(doc, "twins.toml"), check_invariants=True)
    result = sim.run()
    frames = sim.host.frames
    mappings = np.concatenate([vm.host_vm.pmap.mpn[vm.host_vm.pmap.state == Backing.SHARED]
                               for vm in sim.vms.values()])
    host_saving_mib = (mappings.size - np.unique(mappings).size) / 256
    last = [row for row in result.vm_rows if row["time_s"] == result.vm_rows[-1]["time_s"]]
    assert sum(row["SHRDSVD"] for row in last) == pytest.approx(host_saving_mib)
    # No zero pages here: the saving is image pages shared across the two VMs.
    assert host_saving_mib > 40  # of 57.6 MiB of image pages in each VM
    assert all(np.unique(vm.host_vm.pmap.mpn[vm.host_vm.pmap.state == Backing.SHARED]).size
               == np.count_nonzero(vm.host_vm.pmap.state == Backing.SHARED)
               for vm in sim.vms.values())
    assert frames.refcount[np.unique(mappings)].max() == 2


@pytest.mark.parametrize("selection", ["random", "lru"])
def test_swap_selection_is_a_host_setting(selection):
    host = dict(TINY["host"], swap_selection=selection)
    result = Simulation(tiny(host=host), check_invariants=True).run()
    assert result.summary()["mechanisms"]["swapping"]["peak_mib"] > 0
    assert result.scenario.host.swap_selection == selection


def test_swap_selection_outside_the_choices_is_refused():
    host = dict(TINY["host"], swap_selection="clock")
    with pytest.raises(ConfigError, match="swap_selection"):
        tiny(host=host)


def test_static_policy_never_reclaims_by_plan():
    result = Simulation(tiny(), policy="static").run()
    assert all(row["MCTLTGT"] == 0 for row in result.vm_rows)


def test_same_seed_same_rows_other_seed_other_rows():
    first = Simulation(tiny()).run().vm_rows
    again = Simulation(tiny()).run().vm_rows
    other = Simulation(tiny(seed=4)).run().vm_rows
    assert first == again
    assert first != other


def test_results_round_trip_and_refuse_to_clobber(tmp_path):
    result = Simulation(tiny(duration="5s")).run()
    out = write_results(result, tmp_path / "r")
    back = read_results(out)
    assert back.complete and back.vms.num_rows == 10 and back.host.num_rows == 5
    assert {"MEMSZ", "GRANT", "SZTGT", "MCTLSZ", "SWCUR", "SHRDSVD", "throughput"} <= set(
        back.vms.column_names)
    with pytest.raises(ConfigError, match="exists already"):
        write_results(result, tmp_path / "r")
    with pytest.raises(ConfigError, match="not a results directory"):
        read_results(tmp_path)


@pytest.mark.parametrize("name", ["demo", "idle-tax", "sharing"])
def test_shipped_scenarios_run(name):
    scenario = load_scenario(SCENARIOS / f"{name}.toml")
    # Long enough for every VM to power on, and a little beyond.
    last_on = max(vm.power_on_ns for vm in scenario.vms)
    short = dataclasses.replace(scenario, duration_ns=last_on + 20 * scenario.tick_ns)
    result = Simulation(short, check_invariants=True).run()
    assert result.complete and result.ticks_done == short.n_ticks


def test_cli_run_writes_results(tmp_path):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text("""
name = "tiny"
duration = "6s"
[host]
memory = "320MiB"
[[vm]]
name = "a"
memory = "192MiB"
workload = { kind = "zipf", region = "176MiB", refs_per_s = 100000 }
""")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", str(scenario), "--out", str(out), "--no-live"])
    assert result.exit_code == 0, result.output
    assert read_results(out).complete
    bad = CliRunner().invoke(app, ["run", str(scenario), "--policy", "drs"])
    assert bad.exit_code == 1 and "drs" in bad.output


def test_cli_compare_runs_each_policy(tmp_path):
    scenario = tmp_path / "tiny.toml"
    scenario.write_text("""
name = "tiny"
duration = "5s"
[host]
memory = "320MiB"
[[vm]]
name = "a"
memory = "192MiB"
workload = { kind = "uniform", region = "176MiB", refs_per_s = 100000 }
""")
    result = CliRunner().invoke(app, ["compare", str(scenario), "--policies", "esx,static",
                                      "--json"])
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.output)
    assert set(summaries) == {"esx", "static"}
    assert all(s["complete"] and s["ticks"] == 5 for s in summaries.values())
    bad = CliRunner().invoke(app, ["compare", str(scenario), "--policies", "esx,drs"])
    assert bad.exit_code == 1 and "drs" in bad.output
