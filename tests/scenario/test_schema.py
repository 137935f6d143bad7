"""Tests of scenario/schema.py: the typed config classes built directly in code."""

from __future__ import annotations

import dataclasses

import pytest

from hvmem.errors import ConfigError
from hvmem.guest.kernel import GuestConfig
from hvmem.params import declared
from hvmem.policy.planner import PlannerParams
from hvmem.policy.policies import EsxParams, MomParams
from hvmem.scenario import schema
from hvmem.scenario.schema import (
    CompressionConfig,
    GuestSettings,
    HostConfig,
    PolicyConfig,
    Scenario,
    SharingConfig,
    VmConfig,
    default_overhead_bytes,
    shares_for,
)
from hvmem.units import GIB, MIB
from hvmem.workloads.synthetic import IdleParams, Phase, PhasesParams, ZipfParams

S = 1_000_000_000
CLASSES = [Scenario, HostConfig, SharingConfig, CompressionConfig, PolicyConfig, VmConfig,
           GuestSettings]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_declared_with_a_default_and_a_description(cls):
    for f in dataclasses.fields(cls):
        assert (f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING), f.name
        d = declared(cls, f.name)
        assert d.param.doc and "\n" not in d.param.doc, f.name


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_classes_are_frozen_with_slots(cls):
    obj = cls()
    assert not hasattr(obj, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, dataclasses.fields(cls)[0].name, None)


def test_share_levels_are_5_10_20_per_mib():
    assert shares_for("low", 256 * MIB) == 1280
    assert shares_for("normal", 256 * MIB) == 2560  # ESX 2.5: a 256 MB VM has 2560 shares
    assert shares_for("high", 256 * MIB) == 5120
    assert shares_for(77, 256 * MIB) == 77
    with pytest.raises(ConfigError):
        shares_for("medium", GIB)


def test_default_overhead_is_32_mib_plus_one_percent_in_whole_pages():
    assert default_overhead_bytes(2 * GIB) % 4096 == 0
    assert 32 * MIB + 0.01 * 2 * GIB <= default_overhead_bytes(2 * GIB) < (
        32 * MIB + 0.01 * 2 * GIB + 4096)
    assert default_overhead_bytes(0) == 32 * MIB


def test_vm_defaults_are_resolved_on_construction():
    vm = VmConfig(name="a", memory_bytes=2 * GIB)
    assert vm.shares == 20480
    assert vm.overhead_bytes == default_overhead_bytes(2 * GIB)
    assert vm.guest.swap_bytes == 2 * GIB
    assert isinstance(vm.workload, IdleParams) and vm.workload.region_pages == 64 * MIB // 4096
    assert vm.balloon_max_pages == int(0.65 * vm.memory_pages)
    big = VmConfig(name="b", memory_bytes=2 * GIB,
                   guest=GuestSettings(balloon_max_bytes=GIB))
    assert big.balloon_max_pages == GIB // 4096


def test_guest_config_matches_the_settings():
    vm = VmConfig(name="a", memory_bytes=GIB,
                  guest=GuestSettings(swap_bytes=256 * MIB, swap_device="hdd",
                                      reclaim_policy="clock", n_processes=3))
    assert vm.guest_config() == GuestConfig(memory_pages=GIB // 4096,
                                            swap_pages=256 * MIB // 4096, swap_device="hdd",
                                            reclaim_policy="clock", n_processes=3,
                                            kernel_bytes_per_page=64)


def test_running_at():
    vm = VmConfig(power_on_ns=10 * S, power_off_ns=20 * S)
    assert [vm.running_at(t * S) for t in (0, 10, 19, 20)] == [False, True, True, False]
    assert VmConfig().running_at(10**15)


def test_compression_follows_the_profile():
    assert HostConfig(profile="esx4").compression.enabled is False
    assert HostConfig(profile="esxi5").compression.enabled is True
    off = HostConfig(compression=CompressionConfig(enabled=False))
    assert off.compression.enabled is False


def test_scenario_applies_its_fidelity_to_every_workload():
    phases = PhasesParams(region_pages=64, phases=(Phase(duration_s=1, working_set_pages=8),))
    s = Scenario(fidelity="mmu", vms=(
        VmConfig(name="a", workload=ZipfParams(region_pages=32)),
        VmConfig(name="b", workload=phases),
    ))
    assert [vm.workload.fidelity for vm in s.vms] == ["mmu", "mmu"]
    assert all(p.fidelity == "mmu" for _, p in s.vm("b").workload.resolved())
    assert s.n_ticks == 600
    with pytest.raises(KeyError):
        s.vm("c")


@pytest.mark.parametrize(("build", "prefix"), [
    (lambda: VmConfig(memory_bytes=GIB, reservation_bytes=2 * GIB),
     "VmConfig.reservation_bytes: expected at most the VM's memory (1 GiB), found 2 GiB"),
    (lambda: VmConfig(reservation_bytes=GIB // 2, limit_bytes=GIB // 4),
     "VmConfig.limit_bytes: expected at least the reservation"),
    (lambda: VmConfig(memory_bytes=1000), "VmConfig.memory_bytes: expected a whole number"),
    (lambda: VmConfig(power_on_ns=5, power_off_ns=5), "VmConfig.power_off_ns: expected a time"),
    (lambda: VmConfig(workload=ZipfParams(region_pages=1 << 20)),
     "VmConfig.workload.region_pages: expected at most the VM's memory plus its guest swap"),
    (lambda: Scenario(vms=(VmConfig(name="a"), VmConfig(name="a"))),
     "Scenario.vms[1].name: expected a name no other VM has"),
    (lambda: Scenario(duration_ns=3 * S, tick_ns=2 * S),
     "Scenario.duration_ns: expected a whole number of ticks"),
    (lambda: Scenario(host=HostConfig(memory_bytes=GIB),
                      vms=(VmConfig(name="a", reservation_bytes=GIB),)),
     "Scenario.vms[0].reservation_bytes: expected the reservations plus overheads"),
    (lambda: Scenario(vms=()), "Scenario.vms: expected at least one VM"),
    (lambda: PolicyConfig(idle_tax_frac=-0.1), "PolicyConfig.idle_tax_frac: expected"),
    (lambda: HostConfig(tlb_entries=64, tlb_ways=5), "HostConfig.tlb_ways: expected a divisor"),
    (lambda: SharingConfig(salting="never"), "SharingConfig.salting: expected"),
    (lambda: GuestSettings(n_processes=0), "GuestSettings.n_processes: expected"),
])
def test_schema_errors_name_class_and_field(build, prefix):
    with pytest.raises(ConfigError) as info:
        build()
    assert str(info.value).startswith(prefix), str(info.value)
    assert "\n" not in str(info.value)


def test_policy_params_from_a_table_are_the_named_policys_typed_params():
    raw = {"history_len": 4}
    p = PolicyConfig(name="mom", params=raw)
    raw["history_len"] = 5
    assert p.params == MomParams(history_len=4)
    assert PolicyConfig(name="static").params is None
    assert PolicyConfig().params == EsxParams()
    with pytest.raises(ConfigError, match=r"^PolicyConfig\.params\.history: unknown field"):
        PolicyConfig(name="mom", params={"history": 4})


def test_policy_config_owns_the_idle_tax_and_the_balance_period():
    p = PolicyConfig(idle_tax_frac=0.25, balance_period_ns=5 * S,
                     params=EsxParams(planner=PlannerParams(swap_out_mib_s=7.0)))
    assert p.params.tax_frac == 0.25
    assert p.params.planner == PlannerParams(balance_period_s=5.0, swap_out_mib_s=7.0)
    assert p.for_policy(None) is p and p.for_policy("esx") is p
    mom = p.for_policy("mom")
    assert (mom.name, mom.balance_period_ns, mom.params) == ("mom", 5 * S, MomParams())


def test_public_names_exist():
    for name in schema.__all__:
        assert hasattr(schema, name), name


@pytest.mark.parametrize(("limit_bytes", "pages"), [
    (None, None),            # unlimited
    (GIB, None),             # at the VM's memory: binds nothing
    (2 * GIB, None),         # above it
    (GIB // 2, 131072),      # 512 MiB of 4 KiB pages
    (GIB - 4096, 262143),
])
def test_cap_pages_is_the_limit_that_binds(limit_bytes, pages):
    """Both fidelities read a VM's cap from this one rule."""
    assert VmConfig(memory_bytes=GIB, limit_bytes=limit_bytes).cap_pages == pages
