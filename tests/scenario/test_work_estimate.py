"""The RAM and work a run is estimated to take, and the checks on them."""

from __future__ import annotations

import pytest

from hvmem.errors import ConfigError, OutOfMemoryError
from hvmem.scenario.work_estimate import (
    BASE_BYTES,
    HOST_BYTES_PER_PAGE,
    TICK_UNITS,
    VM_BYTES_PER_PAGE,
    available_ram_bytes,
    check_run,
    estimate_run,
    host_memory_errors,
)
from hvmem.units import GIB, MIB


def test_ram_is_frames_and_guest_pages_at_their_measured_bytes(make_scenario):
    scenario = make_scenario()
    est = estimate_run(scenario)
    host_pages = scenario.host.memory_pages
    vm_pages = sum(vm.memory_pages for vm in scenario.vms)
    assert est.ram_bytes == (BASE_BYTES + host_pages * HOST_BYTES_PER_PAGE
                             + vm_pages * VM_BYTES_PER_PAGE["page"])


def test_work_is_ticks_times_vms_times_references(make_scenario):
    scenario = make_scenario("""
        duration = "10s"
        [host]
        memory = "256MiB"
        [[vm]]
        name = "a"
        memory = "64MiB"
        count = 2
        [vm.workload]
        kind = "uniform"
        region = "32MiB"
        refs_per_s = 1000
    """)
    # page fidelity: at most the region's 8192 pages a tick, here the 1000 references
    assert estimate_run(scenario).work_units == 10 * 2 * (TICK_UNITS + 1000)


def test_available_ram_is_memavailable_in_bytes(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  2048 kB\nMemAvailable:    1024 kB\n")
    assert available_ram_bytes(meminfo) == 1024 * 1024
    assert available_ram_bytes(tmp_path / "absent") is None
    meminfo.write_text("MemTotal:  2048 kB\n")
    assert available_ram_bytes(meminfo) is None


def test_too_little_ram_names_the_largest_part(make_scenario):
    scenario = make_scenario()
    with pytest.raises(ConfigError) as err:
        check_run(scenario, "s.toml", available=64 * MIB)
    assert str(err.value).startswith("s.toml: host.memory: the simulation would need about")
    assert check_run(scenario, "s.toml", available=64 * GIB).ram_bytes < 64 * GIB
    assert check_run(scenario, "s.toml", available=64 * MIB, force=True)


def test_running_out_of_frames_is_an_error_naming_host_memory(make_scenario):
    scenario = make_scenario()
    with pytest.raises(ConfigError) as err, host_memory_errors("s.toml", scenario):
        raise OutOfMemoryError("host memory exhausted: 3 frames needed, 1 free and nothing "
                               "left to swap (hypervisor overhead fills the rest)")
    assert str(err.value) == ("s.toml: host.memory: expected a host large enough for its VMs "
                              "and the hypervisor's own pages, found 256 MiB (3 frames needed, "
                              "1 free and nothing left to swap)")


def test_a_guest_too_small_for_its_page_tables_names_its_vm_memory(make_scenario):
    """The guest runs out of its own memory, not the host: the VM's field is named."""
    from hvmem.sim import Simulation

    scenario = make_scenario("""
        duration = "5s"
        [host]
        memory = "1GiB"
        [[vm]]
        name = "a"
        memory = "64MiB"
        [[vm]]
        name = "tiny"
        memory = "16KiB"
        [vm.workload]
        kind = "uniform"
        region = "8KiB"
    """)
    with pytest.raises(ConfigError) as err, host_memory_errors("s.toml", scenario):
        Simulation(scenario).run()
    assert str(err.value).startswith(
        "s.toml: vm[1].memory: expected a VM large enough for its guest kernel's page tables "
        "and its workload's pages, found 16 KiB (guest out of memory")
