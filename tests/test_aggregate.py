"""The aggregate fidelity: masses conserved, the page-level run's results, fleets on Dask.

The statistical check against page fidelity runs two aggregate seeds per validated
scenario against the page-fidelity statistics of ``tests/data/aggregate_validation.json``
(8 seeds, written by ``make validate``); the full comparison, 8 seeds at both
fidelities, is ``make validate``. Metrics that are out of bounds today are listed in
``KNOWN_GAPS``: the test fails on any other, and on a gap that has closed (so the list
only shrinks).
"""

from __future__ import annotations

import collections
import functools
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hvmem.aggregate import kernel as k
from hvmem.aggregate import validate
from hvmem.aggregate.sim import AggregateSimulation
from hvmem.errors import ConfigError
from hvmem.scenario.loader import load_scenario
from hvmem.scenarios import builtin_scenario_path
from hvmem.sim import Simulation
from hvmem.ui.cli import app
from hvmem.units import NS_PER_S

#: (scenario, metric) out of bounds today (``tests/data/aggregate_known_gaps.json``, kept
#: by hand): what the aggregate model does not yet reproduce.
KNOWN_GAPS: set[tuple[str, str]] = {
    (name, metric)
    for name, metrics in json.loads((Path(__file__).parent / "data" / "aggregate_known_gaps.json"
                                     ).read_text())["gaps"].items()
    for metric in metrics
}


def _aggregate(name: str, seconds: int | None = None, seed: int | None = None):
    sc = load_scenario(builtin_scenario_path(name))
    sc = replace(sc, fidelity="aggregate")
    if seconds is not None:
        sc = replace(sc, duration_ns=seconds * NS_PER_S)
    if seed is not None:
        sc = replace(sc, seed=seed)
    return sc


def test_simulation_builds_the_aggregate_model_for_an_aggregate_scenario():
    sim = Simulation(_aggregate("demo", 5))
    assert isinstance(sim, AggregateSimulation)
    result = sim.run()
    assert result.complete and result.ticks_done == 5
    assert {r["vm"] for r in result.vm_rows} == {"web", "db", "batch"}


def test_masses_are_conserved_and_never_negative():
    """Each VM's workload pages and guest pages add up at every tick; no mass below zero."""
    sim = AggregateSimulation(_aggregate("demo", 300))
    b = sim.batch
    region = {}

    def check(s: AggregateSimulation) -> None:
        assert (b.m >= 0).all()
        for name, v in s._running().items():
            m, vm = b.m[0, v], b.vm[0, v]
            workload = int(m[k.FIRST_CLASS:].sum())
            assert region.setdefault(name, workload) == workload
            guest = (m[k.FREE_ROW].sum() + m[k.BALLOON_ROW, k.BALL]
                     + m[k.FIRST_CLASS:, k.PRIV:k.GSWP].sum() + m[k.FIRST_CLASS:, k.FILL].sum()
                     + vm[k.V_KERNEL] + m[k.KERNEL_ROW, k.SWP])  # the kernel's, backed or not
            assert guest == vm[k.V_PAGES]
        assert b.host[0, k.H_FREE] <= b.host[0, k.H_TOTAL]

    sim.run(on_tick=check)
    assert sim.result.complete


def test_same_seed_same_rows_other_seed_other_rows():
    a = AggregateSimulation(_aggregate("demo", 300, seed=3)).run()
    b = AggregateSimulation(_aggregate("demo", 300, seed=3)).run()
    c = AggregateSimulation(_aggregate("demo", 300, seed=4)).run()
    assert list(a.vm_rows) == list(b.vm_rows)
    assert [r["GRANT"] for r in a.vm_rows] != [r["GRANT"] for r in c.vm_rows]


def test_binomial_draws_have_the_right_mean_and_spread():
    rng = np.array([12345], dtype=np.uint64)
    for n, p in ((10, 0.3), (1000, 0.002), (100_000, 0.25), (50, 0.97)):
        draws = np.array([k.binomial(rng, 0, n, p) for _ in range(4000)])
        assert draws.min() >= 0 and draws.max() <= n
        assert abs(draws.mean() - n * p) < 4 * np.sqrt(n * p * (1 - p) / 4000) + 0.05
        assert draws.std() == pytest.approx(np.sqrt(n * p * (1 - p)), rel=0.15)


def test_pages_touched_then_reclaimed_within_a_period_were_found_active():
    """The sampler found a page touched before the guest swapped it out in the same period.

    One class of 1,000 pages, all touched this period, now all in the guest's swap:
    they count as active when they were resident at the period's start, and not when
    they were out all period (the bound is the more of the resident pages then and now).
    """
    m = np.zeros((1, 1, k.FIRST_CLASS + 1, k.N_STATES))
    q = np.zeros((1, 1, k.FIRST_CLASS + 1))
    vm = np.zeros((1, 1, k.N_VM))
    vm[0, 0, k.V_PAGES], vm[0, 0, k.V_NCLASS] = 2000, k.FIRST_CLASS + 1
    m[0, 0, k.FIRST_CLASS, k.GSWP], q[0, 0, k.FIRST_CLASS] = 1000, 1.0
    vm[0, 0, k.V_RESIDENT_START] = 1000
    assert k._running(m, q, vm, 0, 0) == pytest.approx(0.5)
    vm[0, 0, k.V_RESIDENT_START] = 0
    assert k._running(m, q, vm, 0, 0) == 0.0
    m[0, 0, k.FIRST_CLASS, k.GSWP], m[0, 0, k.FIRST_CLASS, k.PRIV] = 400, 600
    assert k._running(m, q, vm, 0, 0) == pytest.approx(0.3)


def test_an_lru_guest_has_out_the_colder_pages_of_a_class():
    """Che's approximation over a class's sub-blocks: the pages out are the colder ones.

    ``T`` found apart by bisection; the chances out and kept average back to the
    class's mean; a class of alike pages, or none out, keeps its mean. Each
    solve starts from the ``T`` the last one kept, and lands where a cold start does.
    """
    from hvmem.aggregate.classes import _heat_blocks
    from hvmem.aggregate.guest_paging import lru_split
    from hvmem.aggregate.layout import FT_AGE, FT_LOG, FT_PAGES, FT_PROB, N_FT
    from hvmem.workloads.synthetic import ZipfParams

    g = ZipfParams(region_pages=229_376, refs_per_s=100_000, alpha=0.7, write_frac=0.02)
    _, touch, _, sub_p, sub_n = _heat_blocks(g, NS_PER_S)
    b = sub_p.shape[1]
    ft = np.zeros((1, 1, 1, N_FT))
    ft[0, 0, 0, FT_PROB:FT_PROB + b], ft[0, 0, 0, FT_PAGES:FT_PAGES + b] = sub_p[-1], sub_n[-1]
    p = float(touch[-1])
    for out in (0.01, 0.2, 0.5, 0.95):
        lo, hi = 0.0, 1e4
        for _ in range(200):
            age = (lo + hi) / 2
            lo, hi = (age, hi) if (sub_n[-1] * (1 - sub_p[-1]) ** age).sum() > out else (lo, age)
        x = sub_n[-1] * (1 - sub_p[-1]) ** age
        p_out, p_in = lru_split(ft, 0, 0, 0, p, out)
        assert p_out == pytest.approx((x * sub_p[-1]).sum() / x.sum(), rel=1e-6)
        assert sub_p[-1].min() < p_out < p < p_in < sub_p[-1].max()
        assert out * p_out + (1 - out) * p_in == pytest.approx(p, rel=1e-9)
        assert ft[0, 0, 0, FT_AGE] == pytest.approx(age, rel=1e-6)
        # The sub-blocks' log(1 - p_j), kept from the first solve.
        assert ft[0, 0, 0, FT_LOG:FT_LOG + b] == pytest.approx(np.log1p(-sub_p[-1]), rel=1e-15)
        ft[0, 0, 0, FT_AGE] = 0.0  # cold
        assert lru_split(ft, 0, 0, 0, p, out)[0] == pytest.approx(p_out, rel=1e-12)
    assert lru_split(ft, 0, 0, 0, p, 0.0) == (p, p)
    ft[0, 0, 0, FT_PROB:FT_PROB + b] = 0.3
    ft[0, 0, 0, FT_PAGES:FT_PAGES + b] = (1.0, 0.0, 0.0, 0.0)
    assert lru_split(ft, 0, 0, 0, 0.3, 0.4) == (0.3, 0.3)


def test_the_free_list_hands_out_what_reclaim_freed_last_in_proportion():
    """Backed free pages come off in proportion to their states, never-used ones after.

    The guest's LIFO list hands out the pages its reclaim freed last, private
    and shared mixed as reclaim took them: of 3,001 private and 1,000 shared
    free pages, 400 taken are 300.025 private on average (each draw 300 or
    301), each shared one copied into a frame of the host's; the never-used
    pages wait until the backed ones are gone. For the balloon, only the
    private ones free a frame.
    """
    from hvmem.aggregate.guest_paging import _take_free

    sim = AggregateSimulation(_aggregate("demo", 1))
    sim.run()
    b = sim.batch
    v = 0
    free = np.zeros(k.N_STATES, dtype=b.m.dtype)
    free[k.PRIV], free[k.SHR], free[k.NEVER] = 3001, 1000, 5000
    private, trials = [], 2000
    for _ in range(trials):
        b.m[0, v, k.FREE_ROW] = free
        b.host[0, k.H_FREE] = 1_000_000
        assert _take_free(b.m, b.vm, b.cnt, b.host, b.heat, b.rng, b.costs, b.stall, 0, v,
                          400, False, b.lru) == 400
        taken = free - b.m[0, v, k.FREE_ROW]
        assert taken[k.PRIV] in (300, 301) and taken[k.SHR] == 400 - taken[k.PRIV]
        assert taken[k.NEVER] == 0
        # Each shared page written takes a frame: the host's free frames fall by as many.
        assert b.host[0, k.H_FREE] == 1_000_000 - taken[k.SHR]
        private.append(taken[k.PRIV])
    # Rounded up with the chance of the fraction: not always down, not always up.
    expected = 400 * 3001 / 4001
    f = expected - 300
    assert abs(np.mean(private) - expected) < 4 * np.sqrt(f * (1 - f) / trials)
    # More than the backed pages: all of them, then never-used ones.
    b.m[0, v, k.FREE_ROW] = free
    assert _take_free(b.m, b.vm, b.cnt, b.host, b.heat, b.rng, b.costs, b.stall, 0, v,
                      4501, False, b.lru) == 4501
    assert list(b.m[0, v, k.FREE_ROW, [k.PRIV, k.SHR, k.NEVER]]) == [0, 0, 4500]
    # The balloon: a private page's frame goes back to the host, a shared one's does not.
    b.m[0, v, k.FREE_ROW] = free
    b.host[0, k.H_FREE] = 0
    assert _take_free(b.m, b.vm, b.cnt, b.host, b.heat, b.rng, b.costs, b.stall, 0, v,
                      400, True, b.lru) == 400
    assert b.host[0, k.H_FREE] == 3001 - b.m[0, v, k.FREE_ROW, k.PRIV]


def test_the_none_drawn_bound_never_exceeds_the_chance_of_none():
    """Below the bound an inversion draws none without the power; above it, as before.

    The bound must lie under ``(1 - q) ** n`` wherever the inversion is used (a
    mean under 12), or a draw would change.
    """
    from hvmem.aggregate.draws import _none_bound

    bound = _none_bound.py_func
    for n in (1, 2, 3, 4, 7, 20, 100, 1000, 10**5, 10**7):
        for mean in (1e-9, 1e-4, 0.01, 0.1, 0.5, 0.8, 1.0, 2.0, 5.0, 11.9):
            for q in (min(0.5, mean / n), np.nextafter(min(0.5, mean / n), 1.0)):
                assert bound(n, q) < (1.0 - q) ** n, (n, q)
    gen = np.random.default_rng(7)
    n = np.exp(gen.uniform(0.0, np.log(1e7), 20_000)).astype(np.int64) + 1
    q = np.minimum(0.5, np.exp(gen.uniform(np.log(1e-12), np.log(12.0), 20_000)) / n)
    below = [bound(int(a), float(b)) < (1.0 - b) ** int(a) for a, b in zip(n, q, strict=True)]
    assert all(below)
    assert bound(1, 0.3) == pytest.approx(0.7) and bound(2, 0.3) == pytest.approx(0.49)


def test_trace_demand_and_churn_workloads_are_refused_in_one_line():
    sc = replace(load_scenario(builtin_scenario_path("trace-day")), fidelity="aggregate")
    with pytest.raises(ConfigError, match="needs page fidelity"):
        Simulation(sc)


def test_fidelity_flag_switches_and_refuses_in_one_line(tmp_path):
    runner = CliRunner()
    out = runner.invoke(app, ["run", "mmu-small", "--fidelity", "aggregate", "--no-live",
                              "--out", str(tmp_path / "r")])
    assert out.exit_code == 1 and "mmu-fidelity scenario" in out.output
    out = runner.invoke(app, ["run", "demo", "--fidelity", "coarse"])
    assert out.exit_code == 1 and "--fidelity: expected one of" in out.output


# -- against page fidelity ------------------------------------------------------------------
def _fixture() -> dict:
    return json.loads(validate.FIXTURE.read_text())


def test_fixture_was_made_from_the_scenarios_as_they_are():
    stats = _fixture()
    for name, duration_s in validate.SCENARIOS:
        assert name in stats, f"{name}: no page-fidelity statistics; run make validate"
        assert stats[name]["fingerprint"] == validate.fingerprint(name, duration_s), (
            f"{name} changed since its statistics were made: run make validate")
        assert len(stats[name]["seeds"]) >= 2


@pytest.mark.parametrize("name", [n for n, _ in validate.SCENARIOS])
def test_two_aggregate_seeds_lie_within_the_page_fidelity_bounds(name):
    stats = _fixture()
    rows = validate.compare(stats, name, validate.checked_runs(name, [1, 2]))
    failed = {(name, r["metric"]) for r in rows if not r["ok"]}
    assert not failed - KNOWN_GAPS, sorted(failed - KNOWN_GAPS)
    known = {m for s, m in KNOWN_GAPS if s == name}
    closed = known - {m for _, m in failed}
    assert not closed, f"closed, drop from KNOWN_GAPS: {sorted(closed)}"


def test_page_fidelity_checked_against_its_statistics_gives_back_its_own_runs(capsys):
    """``--fidelity page``: the reference checked against itself.

    Seed 1 is one of the runs the statistics were made from, so each of its
    metrics comes back as stored, and the table marks and counts the same rows.
    """
    stats = _fixture()["demo"]
    (result,) = validate.checked_runs("demo", [1], "page")
    got = validate.metrics(result)
    assert set(got) == set(stats["metrics"])
    for key, values in stats["metrics"].items():
        assert got[key] == values[0], key
    code = validate.main(["--fidelity", "page", "--scenario", "demo", "--seeds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-2] == "page"
    rows = [line for line in lines[1:-1] if line.startswith("demo")]
    assert len(rows) == len(stats["metrics"]) + len(stats["series"]) * len(validate.SERIES)
    out = sum(line.endswith("NO") for line in rows)
    assert lines[-1] == f"{out} metric(s) out of bounds" and code == (1 if out else 0)


def test_a_limited_vm_holds_no_more_than_its_limit_as_at_page_fidelity():
    """Hold-to-cap: the VM swaps its own pages at its limit, then the balloon takes the rest.

    ``tests/fidelity/limit.toml`` (a 256 MiB VM capped at 128 MiB, its working set
    240 MiB, the host in HIGH) at both fidelities: the aggregate run never holds
    more than the limit and ends where the page-level run ends, within the
    validation's floor of 5 % of the VM's memory.
    """
    sc = load_scenario(Path(__file__).parent / "fidelity" / "limit.toml")
    runs = {}
    for fidelity in ("page", "aggregate"):
        result = Simulation(replace(sc, fidelity=fidelity)).run()
        runs[fidelity] = ([r for r in result.vm_rows if r["vm"] == "capped"],
                          result.summary()["vms"]["capped"])
    (page, page_sum), (agg, agg_sum) = runs["page"], runs["aggregate"]
    assert max(r["GRANT"] for r in agg) <= 128.0
    floor_mib = 0.05 * 256
    for col in ("GRANT", "MCTLSZ", "SWCUR"):
        assert abs(agg[-1][col] - page[-1][col]) <= floor_mib, (col, agg[-1][col], page[-1][col])
    assert abs(agg_sum["balloon_peak_mib"] - page_sum["balloon_peak_mib"]) <= floor_mib
    assert abs(agg_sum["mean_throughput"] - page_sum["mean_throughput"]) <= 0.05
    # A 2 MiB page could pass the limit at once: a limited VM gets none (38 MiB, before).
    assert all(r["LPAGE"] == 0.0 for r in page + agg)



def _both(toml: str, vm: str):
    """A scenario of ``tests/fidelity`` at both fidelities: ``{fidelity: (rows, summary)}``."""
    sc = load_scenario(Path(__file__).parent / "fidelity" / toml)
    out = {}
    for fidelity in ("page", "aggregate"):
        result = Simulation(replace(sc, fidelity=fidelity)).run()
        out[fidelity] = ([r for r in result.vm_rows if r["vm"] == vm],
                         result.summary()["vms"][vm])
    return out


@functools.cache
def _shipped_both(name: str, seconds: int) -> dict:
    """A shipped scenario's first ``seconds`` at both fidelities: ``{fidelity: vm_rows}``.

    Kept for the session: tests that read the same runs make them once (none
    changes the rows).
    """
    sc = replace(load_scenario(builtin_scenario_path(name)), duration_ns=seconds * NS_PER_S)
    return {fidelity: Simulation(replace(sc, fidelity=fidelity)).run().vm_rows
            for fidelity in ("page", "aggregate")}


def test_pages_first_read_hold_zeroes_and_share_as_at_page_fidelity():
    """Demand-zero: a page the workload first reads holds zeroes until written (``FILL``).

    ``tests/fidelity/zero_fill.toml``: a read-mostly VM with no zero or image
    content of its own, 4 KiB backing and sharing on. Page fidelity shares
    about 120 MiB of zero-filled pages by the end; the aggregate model shares
    as many, every 20 s within the validation's floor (5 % of the VM's memory).
    Without the state it shared none.
    """
    runs = _both("zero_fill.toml", "reader")
    (page, _), (agg, _) = runs["page"], runs["aggregate"]
    floor_mib = 0.05 * 256
    assert page[-1]["ZERO"] > 100.0
    for p, a in zip(page[::20], agg[::20], strict=True):
        assert abs(a["ZERO"] - p["ZERO"]) <= floor_mib, (p["time_s"], a["ZERO"], p["ZERO"])


def test_pages_in_large_pages_are_reported_as_at_page_fidelity():
    """LPAGE: the guest pages in live host large pages, as esxtop's column at page fidelity.

    ``demo``'s first 4 minutes: every VM is backed by large pages while it fills
    (web 1,130 MiB at 120 s), then the host falls below HIGH's threshold and
    the scanner breaks them within a minute. The aggregate reports its share of
    pages in large pages; every 10 s, each VM within the validation's floor.
    """
    lpage = {fidelity: {(r["vm"], r["time_s"]): r["LPAGE"] for r in rows
                        if r["time_s"] % 10 == 0}
             for fidelity, rows in _shipped_both("demo", 240).items()}
    page, agg = lpage["page"], lpage["aggregate"]
    assert page[("web", 120.0)] > 1000.0 and page[("web", 200.0)] < 50.0
    floor_mib = 0.05 * 2048
    assert page.keys() == agg.keys()
    for key, mib in page.items():
        assert abs(agg[key] - mib) <= floor_mib, (key, agg[key], mib)


def test_host_reclaim_breaks_the_large_pages_its_victims_sit_in():
    """A victim inside a host large page splits it first, as at page fidelity.

    ``idle-tax``'s first 140 s: at 60 s the host swaps and compresses about
    a sixth of the idle VM, which breaks every one of its large pages at
    once, and only the sub-pages the scanner had hashed are offered to
    sharing. Each 5 s from 65 s, the idle VM's LPAGE lies within the
    validation's floor of page fidelity's; its zero pages shared by the end
    agree within 20 MiB, and LOW keeps it blocked as long, within half a
    balance period. Before, the aggregate left its large pages whole until
    active breaking split them, 64 a second (736 MiB still at 65 s against
    0), and offered all their pages at once: it shared 126 MiB of zero pages
    against 99, its consumed memory fell below its target early, and it ran
    15 s before page fidelity's did.
    """
    rows, blocked_s = {}, {}
    for fidelity, all_rows in _shipped_both("idle-tax", 140).items():
        vm_rows = [r for r in all_rows if r["vm"] == "idle"]
        rows[fidelity] = {r["time_s"]: r for r in vm_rows if r["time_s"] % 5 == 0}
        blocked_s[fidelity] = sum(r["stall_blocked_s"] for r in vm_rows)
    page, agg = rows["page"], rows["aggregate"]
    floor_mib = 0.05 * 3072
    assert page[55.0]["LPAGE"] > 2000.0 and page[65.0]["LPAGE"] == 0.0
    assert page.keys() == agg.keys()
    for t in (t for t in page if t >= 65.0):  # from the reclaim on
        assert abs(agg[t]["LPAGE"] - page[t]["LPAGE"]) <= floor_mib, (
            t, agg[t]["LPAGE"], page[t]["LPAGE"])
    # Zero pages shared by the end: 91 against 99 MiB (27 MiB above, before).
    end = max(page)
    assert abs(agg[end]["ZERO"] - page[end]["ZERO"]) <= 20.0
    # Blocked 48 s at both fidelities; before, 15 s (a balance period) less.
    assert blocked_s["page"] > 30.0
    assert abs(blocked_s["aggregate"] - blocked_s["page"]) <= 7.5, blocked_s


def test_faults_the_host_serves_cost_what_they_cost_at_page_fidelity():
    """A host swap-in, a decompression and a copy-on-write break each take an exit.

    Page fidelity charges each fault the host serves its own work and the
    exit that serves it (``hypervisor/fault.py``: the swap device's read,
    the decompression or the copy, plus ``hypervisor_fault_ns``), and one
    exit for the 512 pages of a large page backed at a first touch. The
    aggregate charged the work alone: 100 of 102 us a swap-in, 10 of 12 us a
    decompression, and 0.6 of 2.6 us a copy-on-write break, so in
    ``sharing``'s first 700 s its copy-on-write stall was a quarter of page
    fidelity's for as many breaks.
    """
    sc = load_scenario(builtin_scenario_path("idle-tax"))
    t, exit_ns = sc.timing, sc.timing.hypervisor_fault_ns
    device_ns = t.swap_in_ns(sc.host.swap_device)
    for fidelity, rows in _shipped_both("idle-tax", 140).items():
        swapped_in = sum(r["SWR/s"] * r["tick_s"] for r in rows) * 256
        unzipped = sum(r["UNZIP/s"] * r["tick_s"] for r in rows) * 256
        assert swapped_in > 10_000 and unzipped > 10_000, (fidelity, swapped_in, unzipped)
        swap_ns = sum(r["stall_host_swap_in_s"] for r in rows) * NS_PER_S / swapped_in
        unzip_ns = sum(r["stall_decompress_s"] for r in rows) * NS_PER_S / unzipped
        assert swap_ns == pytest.approx(device_ns + exit_ns, rel=1e-3), (fidelity, swap_ns)
        assert unzip_ns == pytest.approx(t.decompress_ns + exit_ns, rel=1e-3), (fidelity, unzip_ns)
    # A first touch in a large page: one exit backs all 512 of its pages, so
    # demo's VMs filling their memory in large pages stall on the guest's
    # faults alone (the aggregate charged an exit a page: 1.07 s against
    # 0.46 for db's 1,234 MiB by 120 s).
    other_s = {fidelity: collections.Counter() for fidelity in ("page", "aggregate")}
    for fidelity, rows in _shipped_both("demo", 240).items():
        for r in (r for r in rows if r["time_s"] <= 120.0):
            other_s[fidelity][r["vm"]] += r["stall_other_s"]
    assert other_s["page"]["db"] > 0.3, other_s
    for vm, page_s in other_s["page"].items():
        assert other_s["aggregate"][vm] == pytest.approx(page_s, rel=0.1), (vm, other_s)
    # Copy-on-write breaks are not counted in the rows: the two fidelities break
    # about as many pages here (within 5 %), so their stalls agree.
    cow_s = {fidelity: sum(r["stall_cow_s"] for r in rows)
             for fidelity, rows in _shipped_both("sharing", 700).items()}
    assert cow_s["page"] > 0.1, cow_s
    assert cow_s["aggregate"] == pytest.approx(cow_s["page"], rel=0.15), cow_s


def test_zero_victims_share_before_they_swap_as_at_page_fidelity():
    """Share-before-swap: the host offers its victims to sharing first.

    ``tests/fidelity/share_before_swap.toml``: a 768 MiB read-mostly VM on a
    512 MiB host, no balloon, no compression, a scanner too slow to matter.
    At page fidelity most victims are zero-filled pages that join the zero
    page (about 160 MiB saved, 22 MiB swapped out); the aggregate model
    swapped 900 MiB before it offered them. Both within the validation's floor.
    """
    runs = _both("share_before_swap.toml", "reader")
    (_, page), (_, agg) = runs["page"], runs["aggregate"]
    floor_mib = 0.05 * 768
    for key in ("shared_saved_peak_mib", "swapped_peak_mib", "swap_out_mib", "swap_in_mib"):
        assert abs(agg[key] - page[key]) <= floor_mib, (key, agg[key], page[key])
    assert page["shared_saved_peak_mib"] > 100.0

# -- fleets -----------------------------------------------------------------------------------
def test_a_tiny_fleet_runs_on_a_local_dask_cluster():
    """Four hosts on two LocalCluster workers write their rows and report the figures.

    The fleet's kernels are compiled here first: the workers share this
    process's Numba cache (``tests/numba_cache.py``), and on a fresh checkout
    each of them compiled every kernel itself, about a minute of CPU each.
    """
    from hvmem.aggregate.fleet import run_batch

    run_batch([1], 120)  # what a worker runs: the 2 minutes, rows, plans
    runner = CliRunner()
    out = runner.invoke(app, ["bench", "fleet", "--hosts", "4", "--duration", "2min",
                              "--workers", "2", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.output.strip().splitlines()[-1])
    for key in ("hosts", "vms", "simulated_s", "wall_s", "host_seconds_per_wall_second",
                "peak_rss_mib"):
        assert key in result
    assert result["hosts"] == 4 and result["vms"] == 128 and result["simulated_s"] == 120.0
    assert result["vm_rows"] == 4 * 32 * 2 and result["host_rows"] == 4 * 2
    assert result["host_seconds_per_wall_second"] > 0 and result["peak_rss_mib"] > 0
