"""Every scenario under scenarios/ loads, and says what it claims to show."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmem.scenario.loader import dump_scenario, load_scenario, parse_scenario
from hvmem.units import GIB, MIB
from hvmem.workloads.synthetic import PhasesParams

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
SHIPPED = sorted(SCENARIOS.glob("*.toml"))


def test_the_four_scenarios_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"demo", "idle-tax", "sharing", "bench-32vm"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_loads_and_round_trips(path):
    scenario = load_scenario(path)
    assert scenario.name == path.stem
    assert scenario.description
    assert scenario.duration_ns % scenario.tick_ns == 0
    assert parse_scenario(dump_scenario(scenario), str(path)) == scenario


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_scenario_opens_with_comments(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#")


def overcommit(scenario):
    return sum(vm.memory_bytes for vm in scenario.vms) / scenario.host.memory_bytes


def test_demo_is_a_small_overcommitted_host_with_a_growing_vm():
    s = load_scenario(SCENARIOS / "demo.toml")
    assert s.host.memory_bytes == 4 * GIB
    assert [vm.memory_bytes for vm in s.vms] == [2 * GIB] * 3
    assert overcommit(s) == pytest.approx(1.5)
    assert s.fidelity == "page" and s.tick_ns == 1_000_000_000
    assert 5 * 60 <= s.duration_ns / 1e9 <= 10 * 60
    phased = [vm.workload for vm in s.vms if isinstance(vm.workload, PhasesParams)]
    assert len(phased) == 1
    sizes = [p.region_pages for _, p in phased[0].resolved()]
    assert sizes[:3] == sorted(sizes[:3]) and sizes[0] < sizes[2]
    # What the VMs touch exceeds what the host has left after overheads.
    wanted = sum(vm.workload.region_pages * 4096 + vm.overhead_bytes for vm in s.vms)
    assert wanted > s.host.memory_bytes


def test_idle_tax_has_equal_shares_and_a_switchable_tax():
    path = SCENARIOS / "idle-tax.toml"
    s = load_scenario(path)
    assert len(s.vms) == 2
    assert s.vms[0].shares == s.vms[1].shares
    assert s.policy.idle_tax_frac == 0.0  # off at first, switched on by an event mid-run
    [event] = s.events
    assert event.changes == (("policy.idle_tax_frac", 0.75),)
    assert 0 < event.at_ns < s.duration_ns


def test_sharing_guests_share_an_image_across_vms():
    s = load_scenario(SCENARIOS / "sharing.toml")
    assert s.host.sharing.salting == "across"
    assert len(s.vms) >= 2
    images = {vm.content.image for vm in s.vms}
    assert len(images) == 1
    assert all(vm.content.image_frac > 0 for vm in s.vms)
    assert len({vm.workload for vm in s.vms}) == 1  # same regions: image pages line up


def test_bench_is_32_vms_of_4_gib_on_64_gib_for_an_hour():
    s = load_scenario(SCENARIOS / "bench-32vm.toml")
    assert s.host.memory_bytes == 64 * GIB
    assert len(s.vms) == 32
    assert {vm.memory_bytes for vm in s.vms} == {4 * GIB}
    assert overcommit(s) == 2.0
    assert s.duration_ns == 3600 * 1_000_000_000 and s.tick_ns == 1_000_000_000
    assert s.fidelity == "page"
    kinds = {type(vm.workload).__name__ for vm in s.vms}
    assert {"ZipfParams", "HotColdParams", "ScanParams", "IdleParams", "PhasesParams"} <= kinds
    assert sum(vm.overhead_bytes for vm in s.vms) < 3 * GIB
    assert all(vm.overhead_bytes > 32 * MIB for vm in s.vms)
