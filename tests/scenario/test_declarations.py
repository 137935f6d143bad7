"""Every scenario field is declared once, and the docs, the checks and the loader follow."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest

from hvmem.errors import ConfigError
from hvmem.hardware.timing import CostTable
from hvmem.params import REQUIRED, Kind, declarations
from hvmem.policy.planner import PlannerParams
from hvmem.policy.policies import EsxParams, MomParams, PolicyConfig, ProxmoxParams
from hvmem.scenario.docs import render
from hvmem.scenario.fields import scenario_fields
from hvmem.scenario.loader import dump_scenario, parse_scenario
from hvmem.scenario.schema import (
    BackendConfig,
    CompressionConfig,
    GuestSettings,
    HostConfig,
    Scenario,
    SharingConfig,
    VmConfig,
)
from hvmem.workloads.content import Compressibility, ContentParams, GuestImage
from hvmem.workloads.replay import ReplayParams
from hvmem.workloads.synthetic import (
    ChurnParams,
    HotColdParams,
    IdleParams,
    Phase,
    PhasesParams,
    ScanParams,
    UniformParams,
    ZipfParams,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "scenario.md"
CLASSES = [Scenario, HostConfig, SharingConfig, CompressionConfig, PolicyConfig, BackendConfig,
           VmConfig, GuestSettings, ContentParams, GuestImage, Compressibility, CostTable,
           UniformParams, ZipfParams, HotColdParams, ScanParams, IdleParams, Phase, PhasesParams,
           ChurnParams, ReplayParams, EsxParams, PlannerParams, MomParams, ProxmoxParams]
NUMERIC = (Kind.WHOLE, Kind.NUMBER, Kind.SIZE, Kind.TIME, Kind.COST)


def test_docs_scenario_md_is_generated_from_the_declarations():
    assert DOCS.read_text() == render(), (
        "docs/scenario.md is stale; regenerate it with "
        "`.venv/bin/python -m hvmem.scenario.docs > docs/scenario.md`")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_is_declared_with_a_description(cls):
    names = {d.name for d in declarations(cls)}
    assert names == {f.name for f in dataclasses.fields(cls)}
    for d in declarations(cls):
        assert d.param.doc and "\n" not in d.param.doc, d.name
        if d.param.kind in NUMERIC:
            assert d.param.lo is not None and d.param.hi is not None, d.name
        if d.key is None:  # not in a file: the code or another key sets it
            assert d.param.owner, d.name


def test_every_field_in_a_file_is_listed_once_per_table():
    listed = {(f.owner, f.name) for f in scenario_fields() if f.owner is not None}
    for cls in CLASSES:
        for d in declarations(cls):
            if d.key and d.param.kind is not Kind.TABLE:
                assert (cls, d.name) in listed or any(
                    issubclass(owner, cls) and name == d.name for owner, name in listed
                ), f"{cls.__name__}.{d.name}"
    paths = [(f.path, f.when) for f in scenario_fields()]
    assert len(paths) == len(set(paths))


def test_defaults_are_within_their_own_bounds():
    for f in scenario_fields():
        p = f.param
        if p.default is not REQUIRED and p.default is not None and p.kind is not Kind.TABLE:
            assert p.problem(p.default) is None, f.path


BASE = {"duration": "10s", "host": {"memory": "1GiB"},
        "vm": [{"name": "a", "memory": "256MiB", "workload": {"kind": "zipf", "region": "1MiB"}}]}


def with_key(path: tuple[str | int, ...], key: str) -> dict:
    doc = copy.deepcopy(BASE)
    node: dict = doc
    for part in path:
        node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    node[key] = 1
    return doc


@pytest.mark.parametrize("table", [(), ("host",), ("host", "sharing"), ("host", "compression"),
                                   ("host", "tlb"), ("policy",), ("policy", "params"),
                                   ("backend",), ("timing",), ("vm", 0), ("vm", 0, "guest"),
                                   ("vm", 0, "content"), ("vm", 0, "content",
                                                          "image_compressibility"),
                                   ("vm", 0, "workload")],
                         ids=lambda t: ".".join(map(str, t)) or "top")
def test_an_unknown_key_in_any_table_is_one_line_at_its_path(table):
    with pytest.raises(ConfigError) as info:
        parse_scenario(with_key(table, "bogus_key"), "s.toml")
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in table).lstrip(".")
    expected = f"s.toml: {where + '.' if where else ''}bogus_key: unknown field ("
    assert str(info.value).startswith(expected), str(info.value)


def test_every_field_written_reads_back_the_same():
    doc = {"duration": "1min", "tick": "500ms", "seed": 3, "fidelity": "mmu",
           "host": {"memory": "2GiB", "profile": "esxi5", "min_free_frac": 0.02,
                    "paging": "shadow", "swap_device": "nvme", "swap_selection": "lru",
                    "tlb": {"entries": 32, "ways": 8}, "pwc_entries": 16,
                    "sharing": {"salting": "explicit", "scan_rate_pages_per_s": 10.5},
                    "compression": {"enabled": False, "max_frac": 0.2}},
           "policy": {"name": "mom", "balance_period": "3s", "idle_tax_frac": 0.1,
                      "params": {"ksm_sleep_baseline": "5ms", "history_len": 4}},
           "timing": {"swap_ssd_ns": "80us", "walk_ref_ns": 15},
           "backend": {"kind": "qemu", "touch": "2s", "shared": "8MiB"},
           "vm": [{"name": "w", "count": 2, "memory": "512MiB", "reservation": "64MiB",
                   "limit": "256MiB", "shares": "high", "overhead": "40MiB", "power_on": "2s",
                   "power_off": "50s", "salt": 9,
                   "guest": {"swap": "128MiB", "processes": 2, "balloon": False,
                             "balloon_max": "100MiB"},
                   "content": {"image": "debian", "image_frac": 0.3,
                               "private_compressibility": {"to_1kib_frac": 0.5}},
                   "workload": {"kind": "churn", "region": "64MiB", "process": 1,
                                "chunk": "1MiB", "lifetime": "1500ms", "write_frac": 0.7}}]}
    s = parse_scenario(doc, "all.toml")
    assert parse_scenario(dump_scenario(s), "all.toml") == s
    assert s.vms[1].name == "w-2" and s.vms[0].workload.lifetime_s == 1.5
    assert s.policy.params == MomParams(ksm_sleep_ms_baseline=5.0, history_len=4)
    assert s.timing.swap_ssd_ns == 80_000.0
