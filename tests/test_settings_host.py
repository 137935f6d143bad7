"""End to end, setting by setting: the host, the run, the VMs, their guests and content.

Each case changes one field (or the few that only act together) of a small scenario in
``settings_runs`` and checks the documented direction of the difference. Fields that act
only together are claimed together: ``image`` and ``image_frac`` show only when VMs
share across salts, so the salting case holds them.
"""

from __future__ import annotations

import pytest

from hvmem.errors import ConfigError
from hvmem.guest.pages import PageKind
from settings_runs import MMU, ONE, _all, _peak, _stall_s, covers, run

W = "vm.0.workload"


def _guest(r, vm: str):
    return r.sim.vms[vm].kernel


def np_count(mask) -> int:
    return int(mask.sum())


# -- the run --------------------------------------------------------------------------------
@covers("seed")
def test_seed_draws_another_run_and_the_same_seed_the_same():
    """One seed: the same rows, run twice; another seed: other draws, the same story."""
    a, again, other = run(), run(("seed", 7)), run(("seed", 8))
    assert a.vm_rows == again.vm_rows  # seed 7 is BASE's own: a separate run, equal rows
    assert a is not again
    assert other.vm_rows["busy"] != a.vm_rows["busy"]
    assert other.summary["time_in_state_s"]["soft"] > 0


@covers("fidelity")
def test_mmu_fidelity_runs_every_reference_through_the_mmu():
    """mmu: TLB and walk counters, and translation's cost in the stall; page: neither."""
    mmu, page = run(base=MMU), run(("fidelity", "page"), base=MMU)
    assert sum(mmu.column("web", "TLBMISS/s")) > 0
    assert "TLBMISS/s" not in page.vm_rows["web"][0]
    assert _stall_s(mmu) > _stall_s(page)


# -- host: paging and the TLB (mmu fidelity) --------------------------------------------------
@covers("host.paging")
def test_shadow_paging_has_hidden_faults_and_nested_two_dimensional_walks():
    """Shadow: hidden faults, 1-D walks; nested: none, and longer walks [BHARGAVA08]."""
    shadow, nested = run(base=MMU), run(("host.paging", "nested"), base=MMU)
    assert sum(shadow.column("web", "HIDFLT/s")) > 0 == sum(nested.column("web", "HIDFLT/s"))
    walk = {r: sum(x.column("web", "WALKREF/s")) / sum(x.column("web", "TLBMISS/s"))
            for r, x in (("shadow", shadow), ("nested", nested))}
    assert walk["nested"] > 2 * walk["shadow"]


#: A hot/cold workload of 256 pages, a hot eighth taking 90 % of references: it fits a
#: 64-entry TLB only where the cold pages do not evict hot ones from their sets.
HOTCOLD = {"kind": "hotcold", "region": "1MiB", "hot_pages_frac": 0.125,
           "hot_refs_frac": 0.9, "refs_per_s": 200_000}


@covers("host.tlb.entries")
def test_more_tlb_entries_fewer_misses():
    small, large = run(base=MMU), run(("host.tlb.entries", 512), base=MMU)
    assert sum(large.column("web", "TLBMISS/s")) < sum(small.column("web", "TLBMISS/s"))


@covers("host.tlb.ways")
def test_more_tlb_ways_fewer_conflict_misses():
    """Direct-mapped, 4-way, fully associative: each step loses fewer hot entries."""
    misses = [sum(run((W, HOTCOLD), ("host.tlb.ways", ways), base=MMU).column("web", "TLBMISS/s"))
              for ways in (1, 4, 64)]
    assert misses[0] > misses[1] > misses[2]


@covers("host.pwc_entries")
def test_a_page_walk_cache_saves_walk_references():
    """Under nested paging, cached upper levels cut the references per walk."""
    nested = (("host.paging", "nested"),)
    none, cached = run(*nested, base=MMU), run(*nested, ("host.pwc_entries", 64), base=MMU)
    assert (sum(cached.column("web", "WALKREF/s"))
            < 0.5 * sum(none.column("web", "WALKREF/s")))
    assert _stall_s(cached) < _stall_s(none)


@covers("host.large_pages")
def test_large_pages_back_guest_memory_in_2mib_frames():
    """On: LPAGE counts 2 MiB-backed memory and GRANT rounds up to whole large pages."""
    spec = {"kind": "uniform", "region": "64MiB", "refs_per_s": 200}
    small = run((W, spec), ("host.large_pages", False), base=ONE)
    large = run((W, spec), ("host.large_pages", True), base=ONE)
    assert _all(small.column("vm", "LPAGE")) == 0.0
    assert large.last("vm")["LPAGE"] > 0.0
    assert large.last("vm")["LPAGE"] % 2.0 == 0.0
    assert large.last("vm")["GRANT"] >= small.last("vm")["GRANT"]


@covers("vm[].guest.processes", ("vm[].workload.process", 'kind = "churn"'))
def test_the_workload_runs_in_the_process_it_names():
    """Two processes, the workload in the second: its pages are that process's, and the
    CR3 switches between address spaces cost shadow paging exits."""
    one = run(base=MMU)
    two = run(("vm.0.workload.process", 1), base=MMU)
    k = _guest(two, "web")
    in_use = (k.kind == PageKind.ANON) | (k.kind == PageKind.FILE)
    assert np_count(in_use & (k.proc == 1)) > 0
    assert np_count(in_use & (k.proc == 0)) == 0
    k1 = _guest(one, "web")
    assert np_count(((k1.kind == PageKind.ANON) | (k1.kind == PageKind.FILE)) & (k1.proc == 1)) == 0
    with pytest.raises(ConfigError, match="process"):
        run(("vm.0.workload.process", 1), ("vm.0.guest.processes", 1), base=MMU)


# -- host: sharing, swapping, compression, profile ---------------------------------------------
@covers("host.sharing.enabled")
def test_sharing_off_shares_nothing():
    off, on = run(("host.sharing.enabled", False)), run()
    assert max(off.column("idle", "SHRD")) == 0.0 < max(on.column("idle", "SHRD"))


@covers("host.sharing.scan_rate_pages_per_s")
def test_a_faster_scan_shares_sooner():
    fast, slow = run(("host.sharing.scan_rate_pages_per_s", 4096)), run()
    assert _peak(fast, "idle", "SHRDSVD") > _peak(slow, "idle", "SHRDSVD")


#: Both VMs booted from one image, most of their content from it.
SAME_IMAGE = (("vm.0.content.image_frac", 0.6), ("vm.1.content.image_frac", 0.6))


@covers("host.sharing.salting", "vm[].content.image", "vm[].content.image_frac")
def test_salting_across_shares_image_pages_between_vms():
    """Within (a salt per VM): only zero pages merge. Across: image pages merge between
    VMs of one image (SHRD above ZERO), and not between VMs of different images; a larger
    image share, more of it [KB2097593]."""
    within = run(*SAME_IMAGE)
    across = run(*SAME_IMAGE, ("host.sharing.salting", "across"))
    other = run(*SAME_IMAGE, ("host.sharing.salting", "across"), ("vm.1.content.image", "other"))
    less = run(("host.sharing.salting", "across"))  # the default image_frac, 0.15
    non_zero = {name: max(s - z for s, z in zip(r.column("busy", "SHRD"), r.column("busy", "ZERO"),
                                                strict=True))
                for name, r in (("within", within), ("across", across), ("other", other),
                                ("less", less))}
    assert non_zero["within"] < 0.1
    assert non_zero["across"] > 5.0
    assert non_zero["other"] < 0.1
    assert non_zero["across"] > non_zero["less"]


@covers("vm[].salt")
def test_explicit_salts_share_between_equal_salts_only():
    salted = (("host.sharing.salting", "explicit"), *SAME_IMAGE)
    equal = run(*salted, ("vm.0.salt", 3), ("vm.1.salt", 3))
    apart = run(*salted, ("vm.0.salt", 3), ("vm.1.salt", 4))

    def non_zero(r):
        return max(s - z for s, z in zip(r.column("busy", "SHRD"), r.column("busy", "ZERO"),
                                         strict=True))
    assert non_zero(equal) > 5.0 > 0.1 > non_zero(apart)


@covers("host.swap_selection")
def test_lru_swap_selection_spares_the_idle_vms_working_set():
    """LRU picks pages not touched lately; random picks any [OSDI02 §3.3]. The idle VM,
    which keeps touching its 8 MiB, reads back less of what was swapped under LRU."""
    lru, rand = run(("host.swap_selection", "lru")), run()
    assert (lru.summary["vms"]["idle"]["stall_s"] < rand.summary["vms"]["idle"]["stall_s"])


@covers("host.compression.max_frac")
def test_a_smaller_compression_cache_holds_fewer_pages():
    small, default = run(("host.compression.max_frac", 0.02)), run()
    cache_cap_mib = 0.02 * 192
    assert max(small.column("idle", "CACHEUSD")) <= cache_cap_mib + 1e-6
    assert max(default.column("idle", "CACHEUSD")) > cache_cap_mib
    assert _peak(small, "idle", "ZIPPED") < _peak(default, "idle", "ZIPPED")


@covers("host.profile")
def test_profile_sets_the_states_and_mechanisms():
    """esx4 has no clear state and no compression; esxi5 no clear state; esxi6 has both
    [OSDI02 §6.3][YB-STATES6][VI-41]."""
    sliding = (("host.min_free_frac", 0.0),)
    esx4 = run(*sliding, ("host.profile", "esx4"))
    esxi5, esxi6 = run(("host.profile", "esxi5")), run()
    assert "clear" not in {r["state"] for r in esx4.host_rows}
    assert "clear" not in {r["state"] for r in esxi5.host_rows}
    assert "clear" in {r["state"] for r in esxi6.host_rows}
    assert _peak(esx4, "idle", "ZIPPED") == 0.0 < _peak(esxi6, "idle", "ZIPPED")


# -- the policy and its period --------------------------------------------------------------
@covers("policy.name")
def test_static_policy_never_balloons():
    """static keeps every VM at its configured size: no balloon, more time in low."""
    static, esx = run(("policy.name", "static")), run()
    assert max(static.column("busy", "MCTLSZ")) == 0.0 < max(esx.column("busy", "MCTLSZ"))
    assert (static.summary["time_in_state_s"].get("low", 0)
            > esx.summary["time_in_state_s"].get("low", 0))


@covers("policy.balance_period")
def test_a_shorter_balance_period_plans_more_often():
    """Plans come every balance period, besides those a threshold crossing forces (which
    start a new period): over 150 s, up to 30 periodic decisions at 5 s, 10 at 15 s."""
    def periodic(r):
        c = r.sim.controller
        return c.steps - c.reactions
    short, default = periodic(run(("policy.balance_period", "5s"))), periodic(run())
    assert 25 <= short <= 30 and 8 <= default <= 10


# -- VMs ----------------------------------------------------------------------------------
@covers("vm[].count")
def test_count_makes_that_many_vms():
    r = run(("vm.0.count", 2))
    assert set(r.vm_rows) == {"idle-1", "idle-2", "busy"}
    # a third VM on the same host: more of the run in hard and low
    def pressed(x):
        return sum(x.summary["time_in_state_s"].get(s, 0) for s in ("hard", "low"))
    assert pressed(r) > pressed(run())


@covers("vm[].memory")
def test_memory_sets_memsz():
    r = run(("vm.0.memory", "256MiB"))
    assert _all(r.column("idle", "MEMSZ")) == 256.0
    assert _all(run().column("idle", "MEMSZ")) == 192.0


@covers("vm[].power_off")
def test_power_off_ends_the_vms_rows_and_frees_its_memory():
    r = run(("vm.1.power_off", "60s"))
    assert r.vm_rows["busy"][-1]["time_s"] == 59.0
    assert len(r.vm_rows["busy"]) == 50
    assert r.host_rows[61]["free_mib"] > r.host_rows[58]["free_mib"]


@covers("vm[].overhead")
def test_overhead_is_reserved_at_power_on():
    """Admission control counts reservation plus overhead [OSDI02 §6.2]: an overhead the
    host cannot hold beside the running VMs' refuses the power-on, as an event."""
    refused, admitted = run(("vm.1.overhead", "300MiB")), run(("vm.1.overhead", "16MiB"))
    assert "busy" not in refused.vm_rows
    assert [e["vm"] for e in refused.sim.result.events if e["event"] == "admission_refused"] == [
        "busy"]
    assert admitted.vm_rows["busy"]
    assert not [e for e in admitted.sim.result.events if e["event"] == "admission_refused"]


# -- guests ---------------------------------------------------------------------------------
@covers("vm[].guest.balloon")
def test_no_balloon_driver_no_balloon():
    off, on = run(("vm.0.guest.balloon", False)), run()
    assert _all(off.column("idle", "MCTLSZ")) == 0.0 < max(on.column("idle", "MCTLSZ"))


@covers("vm[].guest.swap")
def test_without_guest_swap_the_balloon_takes_less():
    """A balloon takes free pages, then what the guest can page out; no swap, no page-out."""
    none, default = run(("vm.0.guest.swap", "0B")), run()
    assert _all(none.column("idle", "guest_swap_mib")) == 0.0
    assert _peak(none, "idle", "MCTLSZ") < _peak(default, "idle", "MCTLSZ")


@covers("vm[].guest.swap_device")
def test_a_slower_guest_swap_device_stalls_the_guest_more():
    hdd, ssd = run(("vm.1.guest.swap_device", "hdd")), run()
    assert hdd.summary["vms"]["busy"]["stall_s"] > 3 * ssd.summary["vms"]["busy"]["stall_s"]


@covers("vm[].guest.reclaim_policy")
def test_lru_is_the_worst_policy_for_a_looping_scan():
    """busy sweeps 160 MiB in a loop larger than what it keeps: LRU evicts each page just
    before its next use, random keeps some [OSTEP]."""
    lru, rand = run(), run(("vm.1.guest.reclaim_policy", "random"))
    assert (_guest(rand, "busy").counters.swap_ins < _guest(lru, "busy").counters.swap_ins)
    assert rand.summary["vms"]["busy"]["stall_s"] < lru.summary["vms"]["busy"]["stall_s"]


# -- page content -----------------------------------------------------------------------------
@covers("vm[].content.zero_frac")
def test_more_zero_pages_more_zero_sharing():
    more, default = run(("vm.0.content.zero_frac", 0.5)), run()
    assert _peak(more, "idle", "ZERO") > 1.5 * _peak(default, "idle", "ZERO")


@covers("vm[].content.private_compressibility.to_1kib_frac",
        "vm[].content.private_compressibility.to_2kib_frac")
def test_compressible_private_pages_go_to_the_cache_instead_of_swap():
    """Pages that compress to at most 2 KiB are kept compressed [VI-41]; none: they go to swap."""
    good = run(("vm.0.content.private_compressibility.to_1kib_frac", 0.9),
               ("vm.0.content.private_compressibility.to_2kib_frac", 0.1))
    bad = run(("vm.0.content.private_compressibility.to_1kib_frac", 0.0),
              ("vm.0.content.private_compressibility.to_2kib_frac", 0.0))
    half = run(("vm.0.content.private_compressibility.to_1kib_frac", 0.0),
               ("vm.0.content.private_compressibility.to_2kib_frac", 0.9))
    assert _peak(good, "idle", "ZIPPED") > 3 * _peak(bad, "idle", "ZIPPED")
    assert _peak(bad, "idle", "SWCUR") > _peak(good, "idle", "SWCUR")
    assert _peak(half, "idle", "ZIPPED") > 3 * _peak(bad, "idle", "ZIPPED")


@covers("vm[].content.image_compressibility.to_1kib_frac",
        "vm[].content.image_compressibility.to_2kib_frac")
def test_compressible_image_pages_go_to_the_cache_instead_of_swap():
    image = (("vm.0.content.image_frac", 0.9),)
    good = run(*image, ("vm.0.content.image_compressibility.to_1kib_frac", 0.9),
               ("vm.0.content.image_compressibility.to_2kib_frac", 0.1))
    bad = run(*image, ("vm.0.content.image_compressibility.to_1kib_frac", 0.0),
              ("vm.0.content.image_compressibility.to_2kib_frac", 0.0))
    half = run(*image, ("vm.0.content.image_compressibility.to_1kib_frac", 0.0),
               ("vm.0.content.image_compressibility.to_2kib_frac", 0.9))
    assert _peak(good, "idle", "ZIPPED") > 3 * _peak(bad, "idle", "ZIPPED")
    assert _peak(half, "idle", "ZIPPED") > 3 * _peak(bad, "idle", "ZIPPED")


# -- [timing] costs beyond the ones test_scenario_settings raises --------------------------------
@covers("timing.cow_copy_ns")
def test_copy_on_write_breaks_cost_cow_copy_ns():
    """Shared zero pages written again break copy-on-write: each copy costs the VM."""
    dear = run(("timing.cow_copy_ns", 600_000))
    assert _stall_s(dear) > _stall_s(run()) + 0.05


@covers("timing.balloon_page_ns")
def test_balloon_operations_cost_the_guest():
    """Each page the driver inflates or deflates at its poll costs balloon_page_ns of the
    VM's time (pages the guest takes back on out-of-memory are its allocator's work)."""
    base, dear = run(), run(("timing.balloon_page_ns", 200_000))
    drivers = [base.sim.vms[vm].driver.counters for vm in ("idle", "busy")]
    pages = sum(c.inflated + c.deflated - c.oom_deflated for c in drivers)
    assert pages > 0
    # the unclipped stall, (slowdown - 1) x tick: summary's stall_s stops at a whole tick
    def lost_s(r):
        return sum((row["slowdown"] - 1.0) * row["tick_s"]
                   for rows in r.vm_rows.values() for row in rows)
    assert lost_s(dear) - lost_s(base) == pytest.approx(pages * (200_000 - 2000) / 1e9,
                                                        rel=1e-6)


@covers("timing.vmexit_ns")
def test_sampling_traps_cost_an_exit_each():
    """Under mmu fidelity a sampled page's next touch exits [OSDI02 §5.3]: vmexit_ns each."""
    base, dear = run(base=MMU), run(("timing.vmexit_ns", 50_000), base=MMU)
    traps = base.sim.vms["web"].host_vm.counters.sampling_traps
    assert traps > 0
    assert _stall_s(dear) - _stall_s(base) == pytest.approx(traps * (50_000 - 500) / 1e9,
                                                            rel=0.01)


@covers("timing.tlb_hit_ns")
def test_a_tlb_hit_is_part_of_the_reference_not_stall():
    """Documented: the lookup overlaps the L1 access, so no stall or throughput moves with
    it; the counters of the run are the same."""
    base, dear = run(base=MMU), run(("timing.tlb_hit_ns", 10), base=MMU)
    assert _stall_s(dear) == pytest.approx(_stall_s(base))
    assert dear.vm_rows == base.vm_rows

