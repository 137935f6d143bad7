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
from pathlib import Path

import pytest

from hvmem.errors import ConfigError, TraceError
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
    cap_mib = 4.0
    capped = run(("vm.0.guest.balloon_max", "4MiB"))
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


# -- demand workloads: a working set that follows a usage trace ---------------------------
# plain.csv: time_s 0..120 every 10 s, mem_mib 16 32 64 96 128 96 64 32 16 16 64 64 64.
# time_scale 4 plays its 120 s in 30 simulated seconds; GRANT counts what was allocated.
TRACES = Path(__file__).parent / "data" / "traces"
DEMAND = copy.deepcopy(ONE)
DEMAND["vm"][0]["memory"] = "192MiB"  # room beside the guest's own pages for the peak
# No guest kernel memory, so that GRANT counts the workload's pages alone.
DEMAND["vm"][0]["guest"] = {"kernel_bytes_per_page": 0}
DEMAND["vm"][0]["workload"] = {"kind": "demand", "path": str(TRACES / "plain.csv"),
                               "time_scale": 4, "refs_per_s": 1_000}
D = "vm.0.workload"


def _demand(*changes: tuple[str, object], base: dict = DEMAND) -> Run:
    return run(*((f"{D}.{k}" if not k.startswith(("vm.", "duration", "host")) else k, v)
                 for k, v in changes), base=base)


def _grant(r: Run) -> list[float]:
    return r.column("vm", "GRANT")


def _demand_field(key: str) -> tuple[str, str]:
    return (f"vm[].workload.{key}", 'kind = "demand"')


@covers(*(_demand_field(k) for k in ("path", "time_scale", "offset", "interpolate")))
def test_demand_follows_the_trace_in_time():
    """GRANT rises with the curve and stays at its peak (a guest keeps what it used).

    At 4x the curve peaks (128 MiB) at trace time 40 s, simulated 10 s; at 2x the
    5th second reads trace time 10 s (32 MiB) instead of 20 s (64 MiB); an offset of
    40 s starts at the peak; held samples lag interpolated ones on the way up; another
    file (a slow Bitbrains ramp from 24 MiB) is another curve.
    """
    base = _grant(_demand())
    assert base[0] == pytest.approx(16.0, abs=0.5)
    assert max(base) == pytest.approx(128.0, abs=0.5) and base[-1] == max(base)
    assert base.index(max(base)) == 10
    assert _grant(_demand(("time_scale", 2)))[5] < base[5]
    assert _grant(_demand(("offset", "40s")))[0] == pytest.approx(128.0, abs=0.5)
    assert _grant(_demand(("interpolate", "step")))[1] < base[1]
    ramp = _grant(_demand(("path", str(TRACES / "bitbrains" / "2.csv"))))
    assert max(ramp) < 30.0 < max(base)


@covers(*(_demand_field(k) for k in ("format", "time_column", "usage_column", "usage_unit",
                                     "trace_memory", "trace_id")))
def test_demand_reads_each_format_and_column_mapping():
    """A format named reads as detected, a wrong one fails; columns, units and sizes scale.

    columns.csv holds the same curve as plain.csv to 112 MiB, as MiB (``rss``) and as a
    percentage (``rss_percent``: 87.5 at the peak, of the VM's memory unless trace_memory
    says otherwise); the Alibaba file's two machines use 60-89 %
    and 20-22 % of their memory, which the trace gives only normalised.
    """
    plain = _grant(_demand(("format", "csv")))
    assert plain == _grant(_demand())
    with pytest.raises(TraceError, match="no column 'Timestamp"):
        _demand(("format", "bitbrains"))
    cols = [("path", str(TRACES / "columns.csv")), ("time_column", "clock")]
    mib = _grant(_demand(*cols, ("usage_column", "rss"), ("usage_unit", "MiB")))
    assert max(mib) == pytest.approx(112.0, abs=0.5)
    kib = _grant(_demand(*cols, ("usage_column", "rss"), ("usage_unit", "KiB")))
    assert max(kib) < 1.0
    share = _grant(_demand(*cols, ("usage_column", "rss_percent")))  # of the VM's memory
    assert max(share) == pytest.approx(0.875 * 192, abs=0.5)
    half = _grant(_demand(*cols, ("usage_column", "rss_percent"), ("trace_memory", "64MiB")))
    assert max(half) == pytest.approx(56.0, abs=0.5)
    ali = [("path", str(TRACES / "alibaba_machine_usage.csv")), ("trace_memory", "128MiB"),
           ("time_scale", 10)]
    first = _grant(_demand(*ali))
    other = _grant(_demand(*ali, ("trace_id", "m_1933")))
    assert max(first) == pytest.approx(0.89 * 128, abs=0.5)
    assert max(other) == pytest.approx(0.22 * 128, abs=0.5)


@covers(*(_demand_field(k) for k in ("over", "region", "free_frac", "shape_min_frac",
                                     "shape_max_frac", "shape_span")))
def test_demand_size_limits_frees_and_shape():
    """Above the region: an error naming file and line, or clipped; frees go back; reshaping.

    With free page reporting, a free_frac of 1 gives back what the fall (128 to 16 MiB)
    leaves, so GRANT ends near the curve's end (64 MiB) instead of at its peak; a shape
    maps the curve's lowest and highest samples to those shares of the region (192 MiB).
    """
    with pytest.raises(ConfigError, match=r"plain\.csv:6: usage 128MiB is above"):
        _demand(("region", "96MiB"))
    clipped = _grant(_demand(("region", "96MiB"), ("over", "clip")))
    assert max(clipped) == pytest.approx(96.0, abs=0.5)
    fpr = ("vm.0.guest.free_page_reporting", True)
    kept = _grant(_demand(fpr))
    freed = _grant(_demand(fpr, ("free_frac", 1.0)))
    assert kept[-1] == pytest.approx(128.0, abs=0.5)
    assert freed[-1] < 80.0 and max(freed) == pytest.approx(128.0, abs=0.5)
    wide = _grant(_demand(("shape_min_frac", 0.25), ("shape_max_frac", 0.75)))
    assert wide[0] == pytest.approx(48.0, abs=0.5) and max(wide) == pytest.approx(144.0, abs=0.5)
    high_floor = _grant(_demand(("shape_min_frac", 0.5), ("shape_max_frac", 0.75)))
    assert high_floor[0] == pytest.approx(96.0, abs=0.5)
    low_top = _grant(_demand(("shape_min_frac", 0.25), ("shape_max_frac", 0.5)))
    assert max(low_top) == pytest.approx(96.0, abs=0.5)
    # the shape over the first 20 s only (16 to 64 MiB): 64 MiB is the top at 5 s
    span = _grant(_demand(("shape_min_frac", 0.25), ("shape_max_frac", 0.75),
                          ("shape_span", "20s")))
    assert span[5] == pytest.approx(144.0, abs=0.5)
    assert span[5] > wide[5] + 20.0


# A flat working set of 96 MiB (a shape of one level), sampled for three minutes: what
# the references touch inside it moves the sampled active memory.
FLAT = copy.deepcopy(DEMAND)
FLAT["duration"] = "190s"
FLAT["vm"][0]["workload"].update({"shape_min_frac": 0.5, "shape_max_frac": 0.5,
                                  "refs_per_s": 100})
#: (key, low, high, direction of ACTV at the end from low to high, other changes).
ACTIVE_EFFECTS = [
    ("refs_per_s", 20, 500, +1, ()),
    ("popularity", "zipf", "uniform", +1, (("alpha", 1.5),)),
    ("alpha", 0.5, 2.0, -1, (("popularity", "zipf"),)),
    ("hot_pages_frac", 0.02, 0.5, +1, (("popularity", "hotcold"), ("hot_refs_frac", 1.0))),
    ("hot_refs_frac", 0.5, 1.0, -1, (("popularity", "hotcold"), ("hot_pages_frac", 0.02))),
]


@covers(*(_demand_field(e[0]) for e in ACTIVE_EFFECTS))
@pytest.mark.parametrize(("key", "low", "high", "sign", "other"), ACTIVE_EFFECTS,
                         ids=[e[0] for e in ACTIVE_EFFECTS])
def test_demand_popularity_moves_active_memory(key, low, high, sign, other):
    lo = _demand(*other, (key, low), base=FLAT).last("vm")
    hi = _demand(*other, (key, high), base=FLAT).last("vm")
    assert lo["GRANT"] == pytest.approx(96.0, abs=0.5)
    assert (hi["ACTV"] - lo["ACTV"]) * sign > 0, (lo["ACTV"], hi["ACTV"])
# -- sampling, scan caps, page content, events -------------------------------------------
def _first(r: Run, vm: str, column: str) -> float:
    """The time of the first row of ``vm`` whose ``column`` is above zero."""
    return next(row["time_s"] for row in r.vm_rows[vm] if row[column] > 0)


@covers("host.sampling.period")
def test_sampling_period_sets_when_the_averages_move():
    """A period ends, and the slow average (%ACTVS) first moves, at 30 s instead of 60 s."""
    assert _first(run(("host.sampling.period", "30s")), "idle", "ACTVS") == 30.0
    assert _first(run(), "idle", "ACTVS") == 60.0


@covers("host.sampling.sample_pages")
def test_sample_pages_sets_the_estimates_resolution():
    """One page a period: the touched fraction is 0 or 1, so TCHD is 0 or all of memory."""
    coarse = {row["TCHD"] for row in run(("host.sampling.sample_pages", 1)).vm_rows["busy"]}
    assert coarse <= {0.0, 192.0}
    assert len({row["TCHD"] for row in run().vm_rows["busy"]}) > 2


@covers("host.sampling.fast_time_constant", "host.sampling.slow_time_constant")
def test_time_constants_set_how_fast_the_averages_move():
    """Longer time constants: smaller steps, so lower averages while the busy VM grows."""
    base = run()
    slow = run(("host.sampling.fast_time_constant", "10min"),
               ("host.sampling.slow_time_constant", "30min"))
    assert slow.last("busy")["ACTVF"] < base.last("busy")["ACTVF"] - 5.0
    assert slow.last("busy")["ACTVS"] < base.last("busy")["ACTVS"] - 5.0


@covers("host.sampling.min_active_frac")
def test_min_active_frac_floors_the_estimate():
    """ACTV never below the floor: 10 % of 192 MiB, against the profile's 1 %."""
    floored = run(("host.sampling.min_active_frac", 0.1))
    assert min(floored.column("busy", "ACTV")) == pytest.approx(19.2, abs=0.01)
    assert min(run().column("busy", "ACTV")) == pytest.approx(1.92, abs=0.01)


# The scanner at 2000 pages/s per VM goes over each VM's 192 MiB in 25 s, so what sharing
# finds shows within the run (by default it takes an hour per VM).
FAST_SCAN = ("host.sharing.scan_rate_pages_per_s", 2000.0)


@covers("host.sharing.scan_total_pages_per_s", "host.sharing.cpu_ghz")
def test_host_scan_cap_limits_what_sharing_finds():
    """A host cap of 1 page/s (set, or as Mem.ShareScanGHz of a 1 MHz host) shares less.

    Seen at 9 s, while the scanner alone shares: later, share-before-swap shares too.
    """
    base = at_time(run(FAST_SCAN), "idle", 9.0)["SHRD"]
    assert base > 2.0
    for change in (("host.sharing.scan_total_pages_per_s", 1.0),
                   ("host.sharing.cpu_ghz", 0.001)):
        assert at_time(run(FAST_SCAN, change), "idle", 9.0)["SHRD"] < 0.1 * base


@covers("vm[].content.dup_frac")
def test_dup_frac_makes_a_vm_share_with_itself():
    """Pages held twice share within the VM (salting within): SHRD up."""
    assert run(FAST_SCAN, ("vm.0.content.dup_frac", 0.5)).last("idle")["SHRD"] > (
        run(FAST_SCAN).last("idle")["SHRD"] + 20.0)


@covers("vm[].guest.kernel_bytes_per_page")
def test_kernel_memory_is_taken_at_boot():
    """64 B per 4 KiB page of a 192 MiB guest: 3 MiB the guest's programs never get."""
    none = run(("vm.0.guest.kernel_bytes_per_page", 0))
    assert none.vm_rows["idle"][0]["guest_free_mib"] == pytest.approx(
        run().vm_rows["idle"][0]["guest_free_mib"] + 3.0)


@covers(("vm[].workload.phases[].content", 'kind = "phases"'))
def test_a_phase_sets_its_content():
    """The idle VM's first phase writes zeroes (a guest zeroing memory at boot): ZERO up."""
    zeroed = run(FAST_SCAN, ("vm.0.workload.phases.0.content",
                             {"zero_frac": 1.0, "image_frac": 0.0}))
    assert zeroed.last("idle")["ZERO"] > run(FAST_SCAN).last("idle")["ZERO"] + 50.0


def at_time(r: Run, vm: str, time_s: float) -> dict:
    return next(row for row in r.vm_rows[vm] if row["time_s"] == time_s)


def _events(*events: dict) -> dict:
    doc = copy.deepcopy(BASE)
    doc["event"] = list(events)
    return doc


TAX_OFF_AT_60S = _events({"at": "60s", "set": {"policy.idle_tax_frac": 0.0}})
BUSY_OFF_AT_60S = _events({"at": "60s", "vm": "busy", "power": "off"})
IDLE_PHASE_1_AT_4S = _events({"at": "4s", "vm": "idle", "phase": 1})


@covers("event[].at", "event[].set")
def test_an_event_sets_a_field_at_its_time():
    """The tax switched off at 60 s: the idle VM ends with a higher target than taxed."""
    r = run(base=TAX_OFF_AT_60S)
    assert r.last("idle")["SZTGT"] > run().last("idle")["SZTGT"] + 10.0
    assert at_time(r, "idle", 45.0)["SZTGT"] == at_time(run(), "idle", 45.0)["SZTGT"]


@covers("event[].vm", "event[].power")
def test_an_event_powers_a_vm_off():
    """busy powered off at 60 s: its last row is the tick before."""
    assert run(base=BUSY_OFF_AT_60S).vm_rows["busy"][-1]["time_s"] == 59.0
    assert run().vm_rows["busy"][-1]["time_s"] == 149.0


@covers("event[].phase")
def test_an_event_starts_a_phase():
    """The idle VM's scan stops at 4 s instead of 8 s: about half the memory written by 9 s."""
    assert at_time(run(base=IDLE_PHASE_1_AT_4S), "idle", 9.0)["GRANT"] < (
        at_time(run(), "idle", 9.0)["GRANT"] - 40.0)



@covers("fidelity")
def test_aggregate_fidelity_runs_the_same_scenario_over_masses_of_pages():
    """aggregate: the same rows, summary and policy as page fidelity, over masses of pages.

    The scenario switches fidelity and nothing else: the same columns and summary
    keys, the same VMs planned by the same policy (the idle tax still gives the idle
    VM the lower target), the host under pressure too; no page is kept.
    """
    page, agg = run(), run(("fidelity", "aggregate"))
    assert type(agg.sim).__name__ == "AggregateSimulation"
    assert type(page.sim).__name__ == "Simulation"
    assert agg.vm_rows.keys() == page.vm_rows.keys()
    assert agg.last("busy").keys() == page.last("busy").keys()
    assert agg.summary.keys() == page.summary.keys()
    assert agg.plans.keys() == page.plans.keys()
    assert any(r["state"] != "high" for r in agg.host_rows)
    assert agg.last("idle")["SZTGT"] < agg.last("busy")["SZTGT"]
    busy_grant = agg.last("busy")["GRANT"]
    assert abs(busy_grant - page.last("busy")["GRANT"]) < 0.25 * page.last("busy")["MEMSZ"]
    # idle wrote 160 MiB in its first phase (0-8 s): the sampling period that saw it
    # keeps it active after the phase changes, at both fidelities.
    idle_actv = [at_time(r, "idle", 20.0)["ACTV"] for r in (page, agg)]
    assert abs(idle_actv[1] - idle_actv[0]) < 0.25 * page.last("idle")["MEMSZ"], idle_actv

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
