"""End to end, setting by setting: changing a scenario field changes the run as documented.

Each case runs small scenarios (``settings_runs``: a 256 MiB host, two-minute runs, one
seed) that differ in one field and checks the direction of the difference its
declaration documents: the idle memory tax lowers an idle VM's target, ``min_free_frac``
sets minFree, a balloon never passes ``balloon_max`` and the policy is told so, the
policy is told active memory (not consumed memory), and so on. Runs are cached for the
session, so each serves several assertions. More cases live in
``test_settings_host.py`` (host, VMs, guests, content, costs),
``test_settings_workloads.py``, ``test_settings_policies.py`` and
``backends/test_settings_backend.py``.

:func:`test_every_field_is_exercised` holds the list honest: every ``(path, when)``
of :func:`hvmem.scenario.fields.scenario_fields` is claimed by a case (``@covers``),
or is in ``OUTPUT_ONLY`` (it names or describes the run and changes nothing in it),
or in ``NOT_YET``, which the test prints and which may only shrink: a field in it
that a case covers fails the test.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable

import pytest

from hvmem.scenario.fields import scenario_fields
from hvmem.scenario.loader import parse_scenario
from settings_runs import (
    BASE,
    COVERED,
    MIB_EPS,
    MMU,
    ONE,
    Run,
    _all,
    _peak,
    _stall_s,
    covers,
    run,
)


# -- the four cases every change must keep ------------------------------------------------
@covers("policy.idle_tax_frac")
def test_idle_tax_lowers_the_idle_vms_target():
    """Equal shares, one VM busy and one idle, under pressure: the tax moves target.

    With the tax on (0.75) the idle VM's target (SZTGT) ends lower than with it off,
    and lower than the busy VM's; off, equal shares give them equal targets.
    [OSDI02 §5.2]
    """
    taxed, untaxed = run(), run(("policy.idle_tax_frac", 0.0))
    assert any(r["state"] != "high" for r in taxed.host_rows)
    assert taxed.last("idle")["SZTGT"] < untaxed.last("idle")["SZTGT"] - 10.0
    assert taxed.last("idle")["SZTGT"] < taxed.last("busy")["SZTGT"]
    assert untaxed.last("idle")["SZTGT"] == pytest.approx(untaxed.last("busy")["SZTGT"])
    assert taxed.last("busy")["SZTGT"] > untaxed.last("busy")["SZTGT"]


@covers("host.min_free_frac")
def test_min_free_frac_sets_min_free():
    """minFree is Mem.MemMinFreePct of host memory; 0 is the sliding scale, another value.

    By hand: 20 % of 256 MiB is 51.2 MiB; the sliding scale gives 6 % of a host
    below 4 GiB, 15.36 MiB [FD-MINFREE].
    """
    fixed, sliding = run(), run(("host.min_free_frac", 0.0))
    assert _all(r["minfree_mib"] for r in fixed.host_rows) == pytest.approx(0.2 * 256)
    assert _all(r["minfree_mib"] for r in sliding.host_rows) == pytest.approx(0.06 * 256)
    # a higher minFree puts the host under pressure sooner: more time out of high
    assert (sum(r["state"] != "high" for r in fixed.host_rows)
            > sum(r["state"] != "high" for r in sliding.host_rows))


@covers("vm[].guest.balloon_max")
def test_balloon_max_caps_the_balloon_and_the_plan():
    """MCTLMAX is balloon_max, MCTLSZ never passes it, nor does the plan's balloon target.

    The uncapped run shows the policy would balloon the idle VM further, so the cap
    is what holds both the balloon and the plan.
    """
    cap_mib = 8.0
    capped = run(("vm.0.guest.balloon_max", "8MiB"))
    uncapped = run()
    assert _all(capped.column("idle", "MCTLMAX")) == pytest.approx(cap_mib)
    assert max(capped.column("idle", "MCTLSZ")) <= cap_mib + MIB_EPS
    assert max(capped.column("idle", "MCTLSZ")) == pytest.approx(cap_mib)
    assert max(p.balloon_target_mib for p in capped.plans["idle"]) <= cap_mib + MIB_EPS
    # without the cap: the host's, 65 % of memory, and the policy asks for more than 8 MiB
    assert _all(uncapped.column("idle", "MCTLMAX")) == pytest.approx(0.65 * 192, abs=0.01)
    assert max(p.balloon_target_mib for p in uncapped.plans["idle"]) > 2 * cap_mib


def test_policy_is_told_active_memory_not_consumed():
    """A small working set in a large region: ACTV well below GRANT, and the tax takes.

    "idle" holds what it wrote in its first seconds but then touches 8 MiB: its
    sampled active memory falls to well under half of what backs it (the tax-free
    run, where nothing takes it away), and the idle tax, which charges idle memory
    only, gives it a target below what it holds [OSDI02 §5.2, §5.3].
    """
    untaxed, taxed = run(("policy.idle_tax_frac", 0.0)), run()
    end = untaxed.last("idle")
    assert end["ACTV"] < 0.5 * end["GRANT"]
    assert max(untaxed.column("idle", "ACTV")) > end["ACTV"] + 20.0  # it fell after the scan
    # taxed: target below the untaxed target, and below what the VM held when planned
    assert taxed.last("idle")["SZTGT"] < untaxed.last("idle")["SZTGT"]
    assert taxed.last("idle")["GRANT"] < untaxed.last("idle")["GRANT"]


# -- [timing]: each cost, raised, raises the stall of a run that takes that path ----------

#: cost -> the scenario changes that make a run pay it (on top of BASE, or MMU).
TIMING_PATHS: dict[str, tuple[dict, tuple]] = {
    "guest_fault_ns": (BASE, ()),
    "hypervisor_fault_ns": (BASE, ()),
    "zero_page_ns": (BASE, ()),
    "decompress_ns": (BASE, ()),
    "swap_ssd_ns": (BASE, ()),
    "swap_hdd_ns": (BASE, (("host.swap_device", "hdd"),)),
    "swap_nvme_ns": (BASE, (("host.swap_device", "nvme"),)),
    "walk_ref_ns": (MMU, ()),
    "hidden_fault_ns": (MMU, ()),
    "pte_trace_ns": (MMU, ()),
    "cr3_switch_ns": (MMU, ()),
    "tlb_flush_exit_ns": (MMU, ()),
}



@covers(*(f"timing.{name}" for name in TIMING_PATHS))
@pytest.mark.parametrize("cost", sorted(TIMING_PATHS))
def test_raising_a_cost_raises_the_stall(cost):
    base, changes = TIMING_PATHS[cost]
    cheap = run(*changes, base=base)
    default_ns = getattr(parse_scenario(base, "settings.toml").timing, cost)
    dear = run(*changes, (f"timing.{cost}", 10 * default_ns), base=base)
    assert _stall_s(dear) > _stall_s(cheap)


# -- workload parameters: their effect on touched memory ----------------------------------

W = "vm.0.workload"

#: Each kind's workload, the rest of which a case in GRANT_EFFECTS changes one key of.
WORKLOADS: dict[str, dict] = {
    "uniform": {"kind": "uniform", "region": "64MiB", "refs_per_s": 2_000},
    "zipf": {"kind": "zipf", "region": "64MiB", "refs_per_s": 5_000},
    "hotcold": {"kind": "hotcold", "region": "64MiB", "refs_per_s": 5_000},
    "scan": {"kind": "scan", "region": "96MiB", "pages_per_s": 256},
    "idle": {"kind": "idle", "region": "64MiB", "housekeeping_pages": 1024, "refs_per_s": 50},
    "churn": {"kind": "churn", "region": "96MiB", "allocs_per_s": 1, "lifetime": "60s",
              "refs_per_s": 1_000},
    "phases": {"kind": "phases", "region": "96MiB",
               "base": {"kind": "uniform", "refs_per_s": 50_000},
               "phases": [{"duration": "30s", "working_set": "8MiB"}]},
}
#: (kind, key, low value, high value, direction of GRANT at the end when the key goes
#: from low to high: +1 more, -1 less).
GRANT_EFFECTS = [
    ("uniform", "region", "16MiB", "64MiB", +1),
    ("uniform", "refs_per_s", 500, 5_000, +1),
    ("zipf", "region", "16MiB", "64MiB", +1),
    ("zipf", "refs_per_s", 500, 5_000, +1),
    ("zipf", "alpha", 0.5, 2.0, -1),
    ("hotcold", "region", "16MiB", "64MiB", +1),
    ("hotcold", "refs_per_s", 500, 5_000, +1),
    ("hotcold", "hot_refs_frac", 0.2, 1.0, -1),
    ("hotcold", "hot_pages_frac", 0.01, 0.5, +1),
    ("scan", "region", "16MiB", "96MiB", +1),
    ("scan", "pages_per_s", 64, 512, +1),
    ("scan", "pages_per_tick", 64, 512, +1),
    ("scan", "refs_per_s", 64 * 64, 64 * 512, +1),
    ("scan", "refs_per_page", 1, 64, -1),  # at one refs_per_s: fewer pages a second
    ("idle", "region", "4MiB", "64MiB", +1),
    ("idle", "housekeeping_pages", 16, 1024, +1),
    ("idle", "refs_per_s", 8, 200, +1),
    ("churn", "allocs_per_s", 0.5, 2, +1),
    ("churn", "chunk", "256KiB", "2MiB", +1),
    ("phases", "phases.0.working_set", "4MiB", "32MiB", +1),
]


def _workload_run(kind: str, key: str, value) -> Run:
    spec = copy.deepcopy(WORKLOADS[kind])
    if kind == "scan" and key in ("pages_per_tick", "refs_per_s"):
        del spec["pages_per_s"]
    if key == "refs_per_page":
        del spec["pages_per_s"]
        spec["refs_per_s"] = 64 * 512
    changes = [(W, spec), (f"{W}.{key}", value)]
    return run(*changes, base=ONE)


def _workload_field(kind: str, key: str) -> tuple[str, str]:
    if key.startswith("phases.0."):
        return (f"vm[].workload.phases[].{key.split('.')[-1]}", f'kind = "{kind}"')
    return (f"vm[].workload.{key}", f'kind = "{kind}"')


@covers(*(_workload_field(kind, key) for kind, key, *_ in GRANT_EFFECTS))
@pytest.mark.parametrize(("kind", "key", "low", "high", "sign"), GRANT_EFFECTS,
                         ids=[f"{e[0]}.{e[1]}" for e in GRANT_EFFECTS])
def test_workload_parameter_moves_touched_memory(kind, key, low, high, sign):
    lo = _workload_run(kind, key, low).last("vm")["GRANT"]
    hi = _workload_run(kind, key, high).last("vm")["GRANT"]
    assert (hi - lo) * sign > 0, (lo, hi)


# -- host, VM and run settings on the base scenario -------------------------------------


#: field -> (changes to BASE, a check of the changed run against the base run).
BASE_EFFECTS: dict[str, tuple[tuple, Callable[[Run, Run], bool]]] = {
    "host.memory": ((("host.memory", "512MiB"),),  # room for both: no reclaim at all
                    lambda r, b: all(x["state"] == "high" for x in r.host_rows)
                    and not all(x["state"] == "high" for x in b.host_rows)),
    "host.swap_device": ((("host.swap_device", "hdd"),),
                         lambda r, b: _stall_s(r) > _stall_s(b)),
    "host.compression.enabled": ((("host.compression.enabled", False),),
                                 lambda r, b: _peak(r, "idle", "ZIPPED") == 0.0
                                 < _peak(b, "idle", "ZIPPED")),
    "vm[].reservation": ((("vm.0.reservation", "150MiB"),),
                         lambda r, b: min(r.column("idle", "SZTGT")) >= 150.0
                         > min(b.column("idle", "SZTGT"))),
    "vm[].limit": ((("vm.1.limit", "100MiB"),),
                   lambda r, b: max(p.target_mib for p in r.plans["busy"]) <= 100.0
                   < max(p.target_mib for p in b.plans["busy"])),
    "vm[].power_on": ((("vm.1.power_on", "30s"),),
                      lambda r, b: r.vm_rows["busy"][0]["time_s"] == 30.0
                      and b.vm_rows["busy"][0]["time_s"] == 10.0),
    "duration": ((("duration", "60s"),),
                 lambda r, b: len(r.host_rows) == 60 and len(b.host_rows) == 150),
    "tick": ((("tick", "2s"),),
             lambda r, b: {x["tick_s"] for x in r.host_rows} == {2.0}
             and len(r.host_rows) == 75),
}


@covers(*BASE_EFFECTS)
@pytest.mark.parametrize("path", sorted(BASE_EFFECTS))
def test_setting_changes_the_base_run(path):
    changes, check = BASE_EFFECTS[path]
    assert check(run(*changes), run())


@covers("vm[].shares")
def test_shares_weigh_targets():
    """Without the tax, targets follow shares: high shares, higher target [OSDI02 §3]."""
    r = run(("policy.idle_tax_frac", 0.0), ("vm.1.shares", "high"))
    assert r.last("busy")["SZTGT"] > r.last("idle")["SZTGT"] + 10.0


# -- coverage -------------------------------------------------------------------------------
#: Fields that name or describe a run and change nothing in it.
OUTPUT_ONLY: dict[tuple[str, str], str] = {
    ("name", ""): "names the run and its results directory",
    ("description", ""): "a text for reports",
    ("vm[].name", ""): "names the VM's rows, events and results",
}

#: Fields no case shows yet; may only shrink. proxmox's default_shares weighs a VM with
#: no shares set, and every simulated VM has shares (default "normal").
NOT_YET: set[tuple[str, str]] = {
    ('policy.params.default_shares', 'name = "proxmox"'),
}


#: The other modules of cases (``tests/test_settings_*.py``): imported here, so that this
#: test sees their claims when it runs alone.
CASE_MODULES = ("test_settings_host", "test_settings_policies", "test_settings_workloads",
                "backends.test_settings_backend")


def test_every_field_is_exercised():
    for name in CASE_MODULES:
        importlib.import_module(name)
    every = {(f.path, f.when) for f in scenario_fields()}
    claimed = set(COVERED) | set(OUTPUT_ONLY)
    unknown = (claimed | NOT_YET) - every
    assert not unknown, f"not scenario fields: {sorted(unknown)}"
    stale = NOT_YET & claimed
    assert not stale, f"covered now, drop from NOT_YET: {sorted(stale)}"
    missing = every - claimed - NOT_YET
    assert not missing, f"neither covered, OUTPUT_ONLY nor NOT_YET: {sorted(missing)}"
    print(f"\n{len(NOT_YET)} of {len(every)} fields not yet shown end to end:")
    for path, when in sorted(NOT_YET):
        print(f"  {path}" + (f"  ({when})" if when else ""))
