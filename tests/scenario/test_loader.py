"""Tests of scenario/loader.py: TOML to Scenario, defaults, and one-line path-qualified errors."""

from __future__ import annotations

import copy
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError
from hvmem.hardware.timing import DEFAULT_COSTS
from hvmem.policy.planner import PlannerParams
from hvmem.policy.policies import EsxParams, MomParams, ProxmoxParams
from hvmem.scenario.loader import dump_scenario, load_scenario, parse_scenario
from hvmem.scenario.schema import SHARES_PER_MIB
from hvmem.units import GIB, MIB
from hvmem.workloads.content import ContentParams
from hvmem.workloads.replay import ReplayParams
from hvmem.workloads.synthetic import (
    ChurnParams,
    IdleParams,
    PhasesParams,
    ScanParams,
    UniformParams,
    ZipfParams,
)

FILE = "case.toml"
S = 1_000_000_000

BASE = """\
duration = "1min"

[host]
memory = "4GiB"

[[vm]]
name = "web"
memory = "1GiB"
[vm.workload]
kind = "zipf"
region = "512MiB"

[[vm]]
name = "db"
memory = "1GiB"

[[vm]]
name = "batch"
memory = "1GiB"
[vm.workload]
kind = "phases"
region = "512MiB"
[[vm.workload.phases]]
duration = "10s"
working_set = "64MiB"
"""


def base_doc():
    return tomllib.loads(BASE)


def parse(doc):
    return parse_scenario(doc, FILE)


def patched(*changes):
    """The base document with changes applied: (path, value), value DELETE removes the key."""
    doc = base_doc()
    for path, value in changes:
        node = doc
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        last = int(keys[-1]) if keys[-1].isdigit() else keys[-1]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


DELETE = object()


def test_base_document_loads():
    s = parse(base_doc())
    assert [vm.name for vm in s.vms] == ["web", "db", "batch"]
    assert s.name == "case"  # from the file name


# ------------------------------------------------------------------ errors

ERROR_CASES = [
    # (id, changes, path, fragment of the message)
    ("bad-size", [("vm.0.memory", "lots")], "vm[0].memory", "expected a size"),
    ("bad-size-unit", [("host.memory", "4 parsecs")], "host.memory", "unknown size unit"),
    ("size-not-pages", [("vm.1.memory", "1000B")], "vm[1].memory", "4 KiB pages"),
    ("size-float", [("vm.1.memory", 1.5)], "vm[1].memory", "expected a positive size"),
    ("size-zero", [("host.memory", "0GiB")], "host.memory", "expected a positive size"),
    ("bad-time", [("duration", "soon")], "duration", "expected a time"),
    ("time-no-unit", [("tick", 5)], "tick", "needs a unit"),
    ("bad-time-unit", [("vm.0.power_on", "3 fortnights")], "vm[0].power_on", "time unit"),
    ("unknown-top", [("colour", "red")], "colour", "unknown field"),
    ("unknown-host", [("host.memroy", "4GiB")], "host.memroy", "did you mean 'memory'"),
    ("unknown-sharing", [("host.sharing.rate", 5)], "host.sharing.rate", "known here"),
    ("unknown-tlb", [("host.tlb.sets", 5)], "host.tlb.sets", "known here: entries, ways"),
    ("unknown-vm", [("vm.1.cpus", 4)], "vm[1].cpus", "unknown field"),
    ("unknown-guest", [("vm.1.guest.swapiness", 60)], "vm[1].guest.swapiness", "unknown field"),
    ("unknown-content", [("vm.1.content.kind", "x")], "vm[1].content.kind", "unknown field"),
    ("unknown-workload", [("vm.0.workload.alpah", 1.0)], "vm[0].workload.alpah",
     "did you mean 'alpha'"),
    ("unknown-for-kind", [("vm.0.workload.hot_pages_frac", 0.2)],
     "vm[0].workload.hot_pages_frac", "unknown field"),
    ("unknown-phase", [("vm.2.workload.phases.0.speed", 3)], "vm[2].workload.phases[0].speed",
     "unknown field"),
    ("unknown-policy", [("policy.tax", 0.5)], "policy.tax", "known here: balance_period"),
    ("unknown-cost", [("timing.walk_ns", 5)], "timing.walk_ns", "walk_ref_ns"),
    ("bad-cost", [("timing.walk_ref_ns", -1)], "timing.walk_ref_ns", "non-negative"),
    ("bad-cost-time", [("timing.swap_ssd_ns", "fast")], "timing.swap_ssd_ns", "expected a time"),
    ("wrong-type-alpha", [("vm.0.workload.alpha", "high")], "vm[0].workload.alpha",
     "expected a number"),
    ("alpha-range", [("vm.0.workload.alpha", 30)], "vm[0].workload.alpha", "found 30"),
    ("wrong-type-bool", [("host.large_pages", "yes")], "host.large_pages", "true or false"),
    ("wrong-type-table", [("vm.1.guest", 3)], "vm[1].guest", "expected a table, found 3"),
    ("vm-not-array", [("vm", {"name": "x"})], "vm", "array of tables"),
    ("host-not-table", [("host", "big")], "host", "expected a table"),
    ("unknown-kind", [("vm.0.workload.kind", "zipff")], "vm[0].workload.kind",
     "expected one of 'uniform', 'zipf', 'hotcold', 'scan', 'idle', 'phases', 'churn', "
     "'replay', 'demand', found 'zipff'"),
    ("phase-kind", [("vm.2.workload.phases.0", {"duration": "1s", "kind": "churn"})],
     "vm[2].workload.phases[0].kind", "expected one of 'uniform', 'zipf'"),
    ("bad-shares-word", [("vm.0.shares", "medium")], "vm[0].shares",
     "one of 'low', 'normal', 'high' or a whole number"),
    ("negative-shares", [("vm.0.shares", -1)], "vm[0].shares", "found -1"),
    ("float-shares", [("vm.0.shares", 2.5)], "vm[0].shares", "whole number"),
    ("reservation-over-memory", [("vm.0.reservation", "2GiB")], "vm[0].reservation",
     "at most the VM's memory (1 GiB), found 2 GiB"),
    ("limit-under-reservation", [("vm.0.reservation", "512MiB"), ("vm.0.limit", "256MiB")],
     "vm[0].limit", "at least the reservation"),
    ("limit-word", [("vm.0.limit", "unlimitted")], "vm[0].limit", "'unlimited'"),
    ("duplicate-names", [("vm.1.name", "web")], "vm[1].name", "a name no other VM has"),
    ("duplicate-after-count", [("vm.0.count", 2), ("vm.1.name", "web-2")], "vm[1].name",
     "'web-2'"),
    ("bad-name", [("vm.0.name", "web server")], "vm[0].name", "letters, digits"),
    ("bad-count", [("vm.0.count", 0)], "vm[0].count", "whole number in 1.."),
    ("admission", [("host.memory", "2GiB"), ("vm.0.reservation", "1GiB"),
                   ("vm.1.reservation", "1GiB")], "vm[1].reservation",
     "admission control would refuse to power it on"),
    ("power-off-before-on", [("vm.0.power_on", "20s"), ("vm.0.power_off", "10s")],
     "vm[0].power_off", "a time after power-on (20 s)"),
    ("power-off-word", [("vm.0.power_off", "later")], "vm[0].power_off", "'never'"),
    ("power-on-after-end", [("vm.1.power_on", "2min")], "vm[1].power_on",
     "before the end of the run"),
    ("duration-not-ticks", [("duration", "90500ms")], "duration", "a whole number of ticks"),
    ("duration-under-tick", [("tick", "2s"), ("duration", "1s")], "duration",
     "a whole number of ticks"),
    ("missing-duration", [("duration", DELETE)], "duration", "found nothing"),
    ("missing-host", [("host", DELETE)], "host", "found nothing"),
    ("missing-host-memory", [("host.memory", DELETE)], "host.memory", "found nothing"),
    ("missing-vms", [("vm", DELETE)], "vm", "found nothing"),
    ("empty-vms", [("vm", [])], "vm", "at least one"),
    ("missing-vm-name", [("vm.1.name", DELETE)], "vm[1].name", "found nothing"),
    ("missing-vm-memory", [("vm.1.memory", DELETE)], "vm[1].memory", "found nothing"),
    ("missing-kind", [("vm.0.workload.kind", DELETE)], "vm[0].workload.kind", "found nothing"),
    ("missing-region", [("vm.0.workload.region", DELETE)], "vm[0].workload.region",
     "found nothing"),
    ("missing-phases", [("vm.2.workload.phases", DELETE)], "vm[2].workload.phases",
     "found nothing"),
    ("missing-phase-duration", [("vm.2.workload.phases.0.duration", DELETE)],
     "vm[2].workload.phases[0].duration", "found nothing"),
    ("phase-both", [("vm.2.workload.phases.0.kind", "zipf")], "vm[2].workload.phases[0]",
     "found both"),
    ("phase-neither", [("vm.2.workload.phases.0.working_set", DELETE)],
     "vm[2].workload.phases[0]", "found neither"),
    ("phase-zero-duration", [("vm.2.workload.phases.0.duration", "0s")],
     "vm[2].workload.phases[0].duration", "positive time"),
    ("phase-too-big", [("vm.2.workload.phases.0.working_set", "1GiB")],
     "vm[2].workload.phases[0].working_set", "inside the phased region"),
    ("phase-offset", [("vm.2.workload.phases.0.offset", "480MiB")],
     "vm[2].workload.phases[0].working_set", "at most 32MiB from offset 480MiB"),
    ("phase-offset-outside", [("vm.2.workload.phases.0.offset", "1GiB")],
     "vm[2].workload.phases[0].offset", "inside the phased region (512MiB)"),
    ("phase-outside", [("vm.2.workload.phases.0", {"duration": "1s", "kind": "uniform",
                                                   "offset": "256MiB", "region": "512MiB"})],
     "vm[2].workload.phases[0].region", "inside the phased region"),
    ("region-never-resident", [("vm.0.workload.region", "3GiB")], "vm[0].workload.region",
     "could never be resident"),
    ("region-no-swap", [("vm.0.guest.swap", "0B"), ("vm.0.workload.region", "1028MiB")],
     "vm[0].workload.region", "(1 GiB + 0 B = 1 GiB; a larger region could never be "
     "resident), found 1028 MiB"),
    ("content-sum", [("vm.0.content.image_frac", 0.8), ("vm.0.content.zero_frac", 0.5)],
     "vm[0].content.zero_frac", "at most 1"),
    ("compressibility", [("vm.0.content.private_compressibility", {"to_1kib_frac": 2})],
     "vm[0].content.private_compressibility.to_1kib_frac", "fraction"),
    ("image-name", [("vm.0.content.image", "")], "vm[0].content.image", "non-empty"),
    ("idle-tax", [("policy.idle_tax_frac", 1.0)], "policy.idle_tax_frac", "<= 0.99"),
    ("policy-name", [("policy.name", "vmware")], "policy.name", "'esx'"),
    ("policy-params", [("policy.params", [1, 2])], "policy.params", "expected a table"),
    ("balance-period", [("policy.balance_period", "0s")], "policy.balance_period",
     "expected a time from 100ms to 1h, found '0s'"),
    ("unknown-policy-param", [("policy.name", "mom"), ("policy.params", {"ballon_enabled": 0})],
     "policy.params.ballon_enabled", "unknown field (did you mean 'balloon_enabled'?)"),
    ("policy-param-range", [("policy.name", "mom"), ("policy.params", {"history_len": 0})],
     "policy.params.history_len", "expected a whole number in 1..10000, found 0"),
    ("policy-param-time", [("policy.name", "proxmox"), ("policy.params", {"interval": 10})],
     "policy.params.interval", "needs a unit"),
    ("esx-planner-param", [("policy.params", {"swap_out_mib_s": -1})],
     "policy.params.swap_out_mib_s", "or 'unlimited', found -1"),
    ("tax-in-params", [("policy.params", {"tax_frac": 0.5})], "policy.params.tax_frac",
     "policy.idle_tax_frac sets it"),
    ("period-in-params", [("policy.params", {"balance_period": "5s"})],
     "policy.params.balance_period", "policy.balance_period sets it"),
    ("static-params", [("policy.name", "static"), ("policy.params", {"x": 1})],
     "policy.params.x", "the static policy has no parameters"),
    ("tick-absurd", [("tick", "1ns"), ("duration", "1ms")], "tick", "a time from 1ms to 1h"),
    ("refs-absurd", [("vm.0.workload.refs_per_s", 1e15)], "vm[0].workload.refs_per_s",
     "<= 1e10, found 1000000000000000.0"),
    ("tlb-ways", [("host.tlb.ways", 3)], "host.tlb.ways", "a divisor of the 64"),
    ("profile", [("host.profile", "esxi7")], "host.profile", "'esxi6'"),
    ("esx4-compression", [("host.profile", "esx4"), ("host.compression.enabled", True)],
     "host.compression.enabled", "ESX 4.1"),
    ("esx4-min-free", [("host.profile", "esx4"), ("host.min_free_frac", 0.1)],
     "host.min_free_frac", "expected 0"),
    ("salting", [("host.sharing.salting", "none")], "host.sharing.salting", "'within'"),
    ("scan-rate", [("host.sharing.scan_rate_pages_per_s", 0)],
     "host.sharing.scan_rate_pages_per_s", "> 0"),
    ("compression-frac", [("host.compression.max_frac", 0)], "host.compression.max_frac", "> 0"),
    ("paging", [("host.paging", "ept")], "host.paging", "'nested'"),
    ("swap-device", [("host.swap_device", "tape")], "host.swap_device", "'nvme'"),
    ("process", [("vm.0.workload.process", 1)], "vm[0].workload.process", "0..0"),
    ("processes", [("vm.0.guest.processes", 0)], "vm[0].guest.processes", "1..4094"),
    ("salt", [("vm.0.salt", "abc")], "vm[0].salt", "whole number"),
    ("guest-swap", [("vm.0.guest.swap", "x")], "vm[0].guest.swap", "expected a size"),
    ("reclaim-policy", [("vm.0.guest.reclaim_policy", "lfu")], "vm[0].guest.reclaim_policy",
     "'lru'"),
    ("balloon-max", [("vm.0.guest.balloon_max", "2GiB")], "vm[0].guest.balloon_max",
     "at most the VM's memory"),
    ("fidelity", [("fidelity", "cycle")], "fidelity",
     "expected one of 'page', 'mmu', 'aggregate', found 'cycle'"),
    ("seed", [("seed", -1)], "seed", "found -1"),
    ("description", [("description", 5)], "description", "a string"),
    ("hotcold", [("vm.0.workload", {"kind": "hotcold", "region": "64MiB",
                                    "hot_pages_frac": 1.5})],
     "vm[0].workload.hot_pages_frac", "found 1.5"),
    ("scan-rates", [("vm.0.workload", {"kind": "scan", "region": "64MiB", "pages_per_s": 5,
                                       "refs_per_s": 5})],
     "vm[0].workload.pages_per_s", "exactly one of"),
    ("churn-lifetime", [("vm.0.workload", {"kind": "churn", "region": "64MiB",
                                           "lifetime": 5})],
     "vm[0].workload.lifetime", "needs a unit"),
    ("churn-chunk", [("vm.0.workload", {"kind": "churn", "region": "64MiB",
                                        "chunk": "128MiB"})],
     "vm[0].workload.chunk", "at most the region (64MiB), found '128MiB'"),
    ("idle-housekeeping", [("vm.0.workload", {"kind": "idle", "region": "4KiB"})],
     "vm[0].workload.housekeeping_pages", "found 16"),
    ("replay-missing-file", [("vm.0.workload", {"kind": "replay", "path": "nope.trace",
                                                "refs_per_s": 10})],
     "vm[0].workload.path", "an existing trace file"),
    ("base-kind", [("vm.2.workload.base", {"kind": "phases"})], "vm[2].workload.base.kind",
     "expected one of"),
    ("base-region", [("vm.2.workload.base", {"kind": "zipf", "region": "1GiB"})],
     "vm[2].workload.base.region", "unknown field"),
]


@pytest.mark.parametrize(("changes", "path", "fragment"),
                         [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_each_wrong_field_gives_one_line_naming_file_and_path(changes, path, fragment):
    with pytest.raises(ConfigError) as info:
        parse(patched(*changes))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{FILE}: {path}: "), message
    assert fragment in message, message


def test_type_and_value_errors_say_expected_and_found():
    with pytest.raises(ConfigError, match=r"expected .*, found 'medium'"):
        parse(patched(("vm.0.shares", "medium")))
    with pytest.raises(ConfigError, match=r"expected .*, found nothing"):
        parse(patched(("vm.0.memory", DELETE)))


def test_admission_names_the_vm_it_would_refuse():
    doc = patched(("host.memory", "2GiB"), ("vm.0.reservation", "1GiB"),
                  ("vm.1.reservation", "1GiB"))
    with pytest.raises(ConfigError, match=r"found 2132\.\d\d MiB once 'db' is added"):
        parse(doc)


def test_admission_counts_only_vms_powered_on_at_time_zero():
    doc = patched(("host.memory", "2GiB"), ("vm.0.reservation", "1GiB"),
                  ("vm.1.reservation", "1GiB"), ("vm.1.power_on", "10s"))
    s = parse(doc)
    assert s.vm("db").power_on_ns == 10 * S


def test_admission_of_expanded_vms_points_at_their_table():
    doc = patched(("host.memory", "3GiB"), ("vm.1.count", 3), ("vm.1.reservation", "1GiB"))
    with pytest.raises(ConfigError, match=r"^case\.toml: vm\[1\]\.reservation: .*'db-3'"):
        parse(doc)


def test_a_region_larger_than_memory_but_within_memory_plus_swap_is_allowed():
    s = parse(patched(("vm.0.workload.region", "2GiB")))  # 1 GiB memory + 1 GiB swap
    assert s.vms[0].workload.region_pages == 2 * GIB // 4096


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_scenario(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("duration = \n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="is a directory"):
        load_scenario(tmp_path)


# ------------------------------------------------------------------ count, defaults


def test_count_expands_to_numbered_vms_that_differ_only_in_name():
    s = parse(patched(("vm.0.count", 3)))
    assert [vm.name for vm in s.vms] == ["web-1", "web-2", "web-3", "db", "batch"]
    first = s.vms[0]
    for vm in s.vms[1:3]:
        assert vm.workload == first.workload
        assert vm.memory_bytes == first.memory_bytes and vm.shares == first.shares


def test_count_one_keeps_the_name():
    s = parse(patched(("vm.0.count", 1)))
    assert s.vms[0].name == "web"


def test_defaults():
    doc = {"duration": "1min", "host": {"memory": "4GiB"},
           "vm": [{"name": "vm", "memory": "2GiB"}]}
    s = parse_scenario(doc, "/somewhere/my-run.toml")
    assert s.name == "my-run" and s.description == ""
    assert (s.tick_ns, s.seed, s.fidelity) == (S, 0, "page")
    h = s.host
    assert (h.profile, h.paging, h.swap_device, h.large_pages) == ("esxi6", "nested", "ssd",
                                                                   True)
    assert (h.sharing.enabled, h.sharing.salting, h.sharing.scan_rate_pages_per_s) == (
        True, "within", None)
    assert (h.compression.enabled, h.compression.max_frac) == (True, 0.10)
    assert (h.tlb_entries, h.tlb_ways, h.pwc_entries, h.min_free_frac) == (64, 4, 0, 0.0)
    p = s.policy
    assert (p.name, p.balance_period_ns, p.idle_tax_frac, p.params) == (
        "esx", 15 * S, 0.75, EsxParams())
    vm = s.vms[0]
    assert (vm.reservation_bytes, vm.limit_bytes, vm.power_on_ns, vm.power_off_ns, vm.salt) == (
        0, None, 0, None, None)
    assert vm.shares == 10 * 2048  # normal: 10 shares per MiB
    assert vm.overhead_bytes == 32 * MIB + round(0.01 * 2 * GIB / 4096 + 0.5) * 4096
    g = vm.guest
    assert g.swap_bytes == 2 * GIB
    assert (g.swap_device, g.reclaim_policy, g.n_processes) == ("ssd", "lru", 1)
    assert (g.balloon_enabled, g.deflate_on_oom, g.free_page_reporting) == (True, True, False)
    assert g.balloon_max_bytes is None and vm.balloon_max_pages == int(0.65 * 2 * GIB / 4096)
    assert vm.content == ContentParams()
    assert isinstance(vm.workload, IdleParams)
    assert vm.workload.region_pages == 64 * MIB // 4096
    assert s.timing == DEFAULT_COSTS


@pytest.mark.parametrize("level", ["low", "normal", "high"])
def test_share_levels_scale_with_memory(level):
    s = parse(patched(("vm.0.shares", level), ("vm.0.memory", "3GiB")))
    assert s.vms[0].shares == SHARES_PER_MIB[level] * 3 * 1024


def test_shares_as_a_number_and_limit_as_a_size():
    s = parse(patched(("vm.0.shares", 1234), ("vm.0.limit", "768MiB"),
                      ("vm.1.limit", "unlimited"), ("vm.1.power_off", "never")))
    assert s.vms[0].shares == 1234 and s.vms[0].limit_bytes == 768 * MIB
    assert s.vms[1].limit_bytes is None and s.vms[1].power_off_ns is None


def test_esx4_has_no_compression_by_default():
    s = parse(patched(("host.profile", "esx4")))
    assert s.host.compression.enabled is False


def test_mmu_fidelity_reaches_every_workload():
    s = parse(patched(("fidelity", "mmu")))
    assert {vm.workload.fidelity for vm in s.vms} == {"mmu"}
    phased = s.vm("batch").workload
    assert all(p.fidelity == "mmu" for _, p in phased.resolved())


def test_content_reaches_the_workload_and_its_phases():
    s = parse(patched(("vm.0.content.image", "ubuntu"), ("vm.0.content.image_frac", 0.4),
                      ("vm.2.content.image", "debian")))
    web = s.vm("web")
    assert web.workload.content == web.content
    assert web.content.image.name == "ubuntu" and web.content.image_frac == 0.4
    batch = s.vm("batch")
    assert all(p.content.image.name == "debian" for _, p in batch.workload.resolved())


def test_compressibility_tables():
    s = parse(patched(("vm.0.content.image_compressibility",
                       {"to_1kib_frac": 0.5, "to_2kib_frac": 0.2}),
                      ("vm.0.content.private_compressibility", {"to_1kib_frac": 0.1})))
    c = s.vms[0].content
    assert c.image.compressibility.to_1kib_frac == 0.5
    assert c.private_compressibility.to_1kib_frac == 0.1


def test_every_workload_kind_maps_its_parameters():
    kinds = {
        "uniform": ({"refs_per_s": 5e5}, UniformParams),
        "zipf": ({"alpha": 1.2, "refs_per_s": 1000}, ZipfParams),
        "scan": ({"pages_per_tick": 7, "refs_per_page": 8, "start_page": 3}, ScanParams),
        "churn": ({"chunk": "1MiB", "lifetime": "2min", "allocs_per_s": 3,
                   "lifetime_dist": "fixed", "touch_on_alloc": False}, ChurnParams),
    }
    for kind, (params, cls) in kinds.items():
        table = {"kind": kind, "region": "64MiB", "first_vpn": 0x1000, "write_frac": 0.5,
                 "file_backed": True, **params}
        w = parse(patched(("vm.0.workload", table))).vms[0].workload
        assert type(w) is cls
        assert (w.region_pages, w.first_vpn, w.write_frac, w.file_backed) == (
            16384, 0x1000, 0.5, True)
    churn = parse(patched(("vm.0.workload", {"kind": "churn", "region": "64MiB",
                                             "chunk": "1MiB", "lifetime": "2min"})))
    assert churn.vms[0].workload.chunk_pages == 256
    assert churn.vms[0].workload.lifetime_s == 120.0


def test_phases_with_a_base_and_own_kinds():
    workload = {
        "kind": "phases", "region": "512MiB", "loop": True, "first_vpn": 0x800,
        "base": {"kind": "zipf", "alpha": 1.1, "refs_per_s": 1000},
        "phases": [
            {"duration": "1min", "working_set": "64MiB", "offset": "128MiB"},
            {"duration": "30s", "kind": "scan", "pages_per_s": 100, "offset": "256MiB"},
        ],
    }
    w = parse(patched(("vm.2.workload", workload))).vm("batch").workload
    assert isinstance(w, PhasesParams) and w.loop and w.first_vpn == 0x800
    (d0, p0), (d1, p1) = w.resolved()
    assert (d0, d1) == (60 * S, 30 * S)
    assert isinstance(p0, ZipfParams) and p0.alpha == 1.1
    assert p0.region_pages == 64 * MIB // 4096
    assert p0.first_vpn == 0x800 + 128 * MIB // 4096
    assert isinstance(p1, ScanParams)
    assert p1.first_vpn == 0x800 + 256 * MIB // 4096
    assert p1.region_pages == 256 * MIB // 4096  # the rest of the phased region


def test_replay_path_is_relative_to_the_scenario_file(tmp_path):
    trace = tmp_path / "traces" / "t.pages"
    trace.parent.mkdir()
    trace.write_text("1024\n1025\n")
    doc = patched(("vm.0.workload", {"kind": "replay", "path": "traces/t.pages",
                                     "format": "pages", "time_scale": 1000.0,
                                     "first_vpn": 1024, "region": "64KiB", "loop": True}))
    s = parse_scenario(doc, str(tmp_path / "run.toml"))
    w = s.vms[0].workload
    assert isinstance(w, ReplayParams)
    assert w.path == str(trace) and w.fmt == "pages" and w.loop
    assert (w.map_first_vpn, w.map_pages, w.time_scale) == (1024, 16, 1000.0)
    assert parse_scenario(dump_scenario(s), str(tmp_path / "run.toml")) == s


def test_policy_params_are_the_named_policys_own_and_typed():
    s = parse(patched(("policy.name", "mom"),
                      ("policy.params", {"balloon_enabled": False, "history_len": 3,
                                         "ksm_sleep_baseline": "20ms"})))
    params = s.policy.params
    assert params == MomParams(balloon_enabled=False, history_len=3, ksm_sleep_ms_baseline=20.0)
    esx = parse(patched(("policy.balance_period", "5s"), ("policy.idle_tax_frac", 0.5),
                        ("policy.params", {"swap_out_mib_s": 50,
                                           "balloon_inflate_mib_s": "unlimited"})))
    assert esx.policy.params == EsxParams(
        tax_frac=0.5, planner=PlannerParams(balance_period_s=5.0, swap_out_mib_s=50,
                                            balloon_inflate_mib_s=None))
    assert parse(dump_scenario(esx)) == esx
    proxmox = parse(patched(("policy.name", "proxmox"), ("policy.params", {"interval": "30s"})))
    assert proxmox.policy.params == ProxmoxParams(interval_s=30.0)
    assert parse(dump_scenario(proxmox)) == proxmox
    static = parse(patched(("policy.name", "static")))
    assert static.policy.params is None and "params" not in dump_scenario(static)["policy"]


def test_unknown_policy_param_is_one_line_naming_the_file():
    with pytest.raises(ConfigError) as info:
        parse_scenario(patched(("policy.name", "mom"),
                               ("policy.params", {"ballon_enabled": False})), "demo.toml")
    assert str(info.value) == ("demo.toml: policy.params.ballon_enabled: unknown field (did you "
                               "mean 'balloon_enabled'?)")


def test_timing_overrides_in_ns_or_with_units():
    s = parse(patched(("timing.swap_ssd_ns", "80us"), ("timing.walk_ref_ns", 15)))
    assert s.timing.swap_ssd_ns == 80_000.0 and s.timing.walk_ref_ns == 15.0
    assert s.timing.tlb_hit_ns == DEFAULT_COSTS.tlb_hit_ns


def test_scenario_is_frozen():
    s = parse(base_doc())
    with pytest.raises(AttributeError):
        s.seed = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.vms[0].memory_bytes = 1  # type: ignore[misc]


def test_parse_does_not_modify_the_document():
    doc = patched(("vm.0.count", 2))
    before = copy.deepcopy(doc)
    parse(doc)
    assert doc == before


# ------------------------------------------------------------------ round trips

UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "K": 1 << 10, "M": 1 << 20,
         "G": 1 << 30, "kib": 1 << 10, "mb": 1 << 20, "gb": 1 << 30}


@st.composite
def size_texts(draw, max_pages):
    """(text, bytes) for a whole number of pages written in some unit that divides it."""
    pages = draw(st.integers(1, max_pages))
    size = pages * 4096
    units = [u for u, scale in UNITS.items() if size % scale == 0]
    unit = draw(st.sampled_from(units))
    space = draw(st.sampled_from(["", " "]))
    number = size // UNITS[unit]
    text = draw(st.sampled_from([f"{number}{space}{unit}", str(size) if unit == "B" else
                                 f"{number}{unit}"]))
    return text, size


@settings(max_examples=60, deadline=None)
@given(memory=size_texts(1 << 20), data=st.data())
def test_sizes_round_trip_through_scenario_fields(memory, data):
    memory_text, memory_bytes = memory
    memory_pages = memory_bytes // 4096
    reservation_text, reservation_bytes = data.draw(size_texts(memory_pages))
    region_text, region_bytes = data.draw(size_texts(memory_pages))
    swap_text, swap_bytes = data.draw(size_texts(1 << 20))
    doc = {
        "duration": "10s",
        "host": {"memory": "8TiB"},
        "vm": [{"name": "vm", "memory": memory_text, "reservation": reservation_text,
                "limit": memory_text, "guest": {"swap": swap_text},
                "workload": {"kind": "uniform", "region": region_text}}],
    }
    s = parse(doc)
    vm = s.vms[0]
    assert vm.memory_bytes == memory_bytes == vm.limit_bytes
    assert vm.reservation_bytes == reservation_bytes
    assert vm.guest.swap_bytes == swap_bytes
    assert vm.workload.region_pages * 4096 == region_bytes
    assert parse(dump_scenario(s)) == s


@settings(max_examples=40, deadline=None)
@given(tick_ms=st.integers(1, 5000), n_ticks=st.integers(1, 10_000),
       on_ticks=st.integers(0, 9_999))
def test_times_round_trip(tick_ms, n_ticks, on_ticks):
    on_ns = min(on_ticks, n_ticks - 1) * tick_ms * 1_000_000
    doc = {"duration": f"{tick_ms * n_ticks}ms", "tick": f"{tick_ms}ms",
           "host": {"memory": "4GiB"},
           "vm": [{"name": "vm", "memory": "1GiB", "power_on": f"{on_ns}ns"}]}
    s = parse(doc)
    assert s.n_ticks == n_ticks and s.vms[0].power_on_ns == on_ns
    assert parse(dump_scenario(s)) == s
