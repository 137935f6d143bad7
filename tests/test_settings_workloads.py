"""End to end, setting by setting: the keys every workload kind shares, and each kind's own.

One VM with room to spare (``settings_runs.ONE``); a case changes one workload key and
checks where the guest's pages end up (which process, which addresses, file or anonymous,
dirty or clean) or how many were touched, in the guest kernel the run leaves behind.
Replay runs read a seeded Lackey trace written once for the module.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from hvmem.errors import ConfigError, HvmemError
from hvmem.guest.pages import PageKind
from hvmem.workloads.trace_writer import generate_lackey
from settings_runs import ONE, covers, run

W = "vm.0.workload"

#: One workload of each synthetic kind, small enough that GRANT counts what it touched.
KINDS: dict[str, dict] = {
    "uniform": {"kind": "uniform", "region": "16MiB", "refs_per_s": 2_000},
    "zipf": {"kind": "zipf", "region": "16MiB", "refs_per_s": 5_000},
    "hotcold": {"kind": "hotcold", "region": "16MiB", "refs_per_s": 5_000},
    "scan": {"kind": "scan", "region": "16MiB", "pages_per_s": 256},
    "idle": {"kind": "idle", "region": "16MiB", "housekeeping_pages": 256, "refs_per_s": 200},
    "churn": {"kind": "churn", "region": "16MiB", "chunk": "256KiB", "allocs_per_s": 2,
              "lifetime": "60s", "refs_per_s": 1_000},
    "phases": {"kind": "phases", "region": "16MiB",
               "base": {"kind": "uniform", "refs_per_s": 5_000},
               "phases": [{"duration": "30s", "working_set": "8MiB"}]},
}
WRITING = [k for k in KINDS if k != "phases"]  # phases take write_frac in their base

_TRACE: dict[str, str] = {}


def trace_path(tmp_path_factory) -> str:
    if "lackey" not in _TRACE:
        path = tmp_path_factory.mktemp("settings-traces") / "prog.lackey"
        generate_lackey(path, 40_000, seed=3)
        _TRACE["lackey"] = str(path)
    return _TRACE["lackey"]


@pytest.fixture(scope="module")
def lackey(tmp_path_factory) -> str:
    return trace_path(tmp_path_factory)


@pytest.fixture(scope="module")
def page_list(tmp_path_factory) -> str:
    """A ``pages`` trace: 40,000 references to two clusters of 1000 pages, 3000 apart."""
    rng = np.random.default_rng(9)
    pages = rng.integers(0, 1000, 40_000) + np.where(rng.random(40_000) < 0.5, 5000, 9000)
    path = tmp_path_factory.mktemp("settings-pages") / "two-clusters.pages"
    path.write_text("\n".join(map(str, pages.tolist())) + "\n")
    return str(path)


def replay_spec(path: str, **keys) -> dict:
    return {"kind": "replay", "path": path, "refs_per_s": 2_000, **keys}


def wrun(spec: dict, *changes) -> object:
    return run((W, copy.deepcopy(spec)), *changes, base=ONE)


def used(r, vm: str = "vm") -> np.ndarray:
    """The guest pages the workload holds (anonymous or file pages)."""
    k = r.sim.vms[vm].kernel
    return np.flatnonzero((k.kind == PageKind.ANON) | (k.kind == PageKind.FILE))


def kernel(r, vm: str = "vm"):
    return r.sim.vms[vm].kernel


def field_of(key: str, kind: str) -> tuple[str, str]:
    return (f"vm[].workload.{key}", f'kind = "{kind}"')


# -- keys every kind has --------------------------------------------------------------------
@covers(*(field_of("file_backed", k) for k in KINDS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_file_backed_maps_page_cache_instead_of_anonymous_memory(kind):
    anon, file = wrun(KINDS[kind]), wrun({**KINDS[kind], "file_backed": True})
    ka, kf = kernel(anon), kernel(file)
    assert used(anon).size > 0 and used(file).size > 0
    assert np.all(ka.kind[used(anon)] == PageKind.ANON)
    assert np.all(kf.kind[used(file)] == PageKind.FILE)


@covers(*(field_of("first_vpn", k) for k in KINDS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_first_vpn_places_the_region(kind):
    first = 1 << 24
    r = wrun({**KINDS[kind], "first_vpn": first})
    vpns = kernel(r).vpn[used(r)]
    assert vpns.min() >= first
    assert vpns.max() < first + (16 << 8)  # 16 MiB of 4 KiB pages
    default = wrun(KINDS[kind])
    assert kernel(default).vpn[used(default)].max() < first


@covers(*(field_of("process", k) for k in KINDS if k != "churn"))
@pytest.mark.parametrize("kind", sorted(k for k in KINDS if k != "churn"))
def test_process_runs_the_workload_in_that_address_space(kind):
    r = wrun({**KINDS[kind], "process": 2}, ("vm.0.guest.processes", 3))
    owners = set(kernel(r).proc[used(r)].tolist())
    assert owners == {2}


@covers(*(field_of("write_frac", k) for k in WRITING))
@pytest.mark.parametrize("kind", WRITING)
def test_write_frac_dirties_pages(kind):
    """Reads leave a page clean; writes dirty it: more writes, more dirty pages."""
    spec = {k: v for k, v in KINDS[kind].items() if k != "touch_on_alloc"}
    if kind == "churn":
        spec["touch_on_alloc"] = False  # the first touch of a chunk would write it
    clean, dirty = wrun({**spec, "write_frac": 0.0}), wrun({**spec, "write_frac": 1.0})
    n_dirty = [int(kernel(r).dirty[used(r)].sum()) for r in (clean, dirty)]
    assert n_dirty[0] < n_dirty[1]
    assert n_dirty[1] > 0.5 * used(dirty).size


@covers("vm[].workload.kind")
def test_kind_chooses_the_generator():
    """idle touches its housekeeping pages; uniform its whole region, at one region."""
    idle = wrun({"kind": "idle", "region": "16MiB", "housekeeping_pages": 16, "refs_per_s": 50})
    busy = wrun({"kind": "uniform", "region": "16MiB", "refs_per_s": 5_000})
    assert used(idle).size <= 16 + 8  # its housekeeping pages, and a page table or two
    assert used(busy).size > 2_000


# -- scan -----------------------------------------------------------------------------------
@covers(field_of("start_page", "scan"))
def test_scan_starts_at_start_page():
    """A 4096-page region swept at 64 pages a second from page 2048: 30 s reach page 4000."""
    spec = {"kind": "scan", "region": "16MiB", "pages_per_s": 64, "first_vpn": 1 << 20}
    r = wrun({**spec, "start_page": 2048})
    offsets = kernel(r).vpn[used(r)] - (1 << 20)
    assert offsets.min() >= 2048 - 64  # the sweep begins there (a tick's slack)
    assert offsets.min() < 2048 + 64
    assert wrun(spec).sim is not None
    zero = wrun(spec)
    assert (kernel(zero).vpn[used(zero)] - (1 << 20)).min() == 0


# -- churn ----------------------------------------------------------------------------------
CHURN = {"kind": "churn", "region": "64MiB", "chunk": "512KiB", "allocs_per_s": 4,
         "lifetime": "4s", "refs_per_s": 1_000}


@covers(field_of("lifetime", "churn"))
def test_longer_lifetimes_hold_more_pages():
    short, long = wrun(CHURN), wrun({**CHURN, "lifetime": "20s"})
    assert used(long).size > 2 * used(short).size


@covers(field_of("lifetime_dist", "churn"))
def test_fixed_lifetimes_keep_a_steady_live_set():
    """Fixed: each chunk lives exactly ``lifetime``, so the live set settles at
    allocs_per_s x lifetime chunks; exponential lifetimes make it wander around that."""
    def live_mib(r):
        return [row["GRANT"] for row in r.vm_rows["vm"][10:]]
    fixed = live_mib(wrun({**CHURN, "lifetime_dist": "fixed"}))
    exp = live_mib(wrun(CHURN))
    assert np.std(fixed) < np.std(exp)


@covers(field_of("touch_on_alloc", "churn"))
def test_touch_on_alloc_writes_each_new_chunk():
    touch = wrun({**CHURN, "refs_per_s": 0})
    lazy = wrun({**CHURN, "refs_per_s": 0, "touch_on_alloc": False})
    assert used(touch).size > 100
    assert used(lazy).size < 0.1 * used(touch).size


@covers(field_of("refs_per_s", "churn"))
def test_churn_references_touch_live_pages():
    lazy = {**CHURN, "touch_on_alloc": False, "lifetime": "20s"}
    few, many = wrun({**lazy, "refs_per_s": 100}), wrun({**lazy, "refs_per_s": 20_000})
    assert used(many).size > used(few).size


@covers(field_of("region", "churn"))
def test_churn_allocates_within_its_region():
    """A region too small for allocs_per_s x lifetime chunks caps the live set."""
    small = wrun({**CHURN, "region": "4MiB", "lifetime": "20s"})
    large = wrun({**CHURN, "lifetime": "20s"})
    assert used(small).size <= (4 << 8) + 16
    assert used(large).size > used(small).size


# -- phases ---------------------------------------------------------------------------------
PHASED = {"kind": "phases", "region": "64MiB",
          "base": {"kind": "uniform", "refs_per_s": 20_000},
          "phases": [{"duration": "10s", "working_set": "4MiB"},
                     {"duration": "10s", "working_set": "32MiB"}]}


def grant(r) -> list[float]:
    return [row["GRANT"] for row in r.vm_rows["vm"]]


@covers(field_of("phases[].duration", "phases"))
def test_phase_duration_sets_when_the_next_phase_starts():
    """The second, larger working set starts after the first phase: GRANT jumps then."""
    early, late = wrun(PHASED), wrun(PHASED, (f"{W}.phases.0.duration", "20s"))
    assert grant(early)[15] > grant(late)[15] + 8.0
    assert grant(late)[25] > grant(late)[15] + 8.0


@covers(field_of("loop", "phases"))
def test_looped_phases_start_over():
    """A busy 5 s, then a phase of no references: without loop the quiet phase goes on
    for ever; with loop the busy one comes back every 10 s."""
    spec = {**PHASED, "phases": [{"duration": "5s", "working_set": "1MiB"},
                                 {"duration": "5s", "kind": "idle", "refs_per_s": 0}]}
    once, looped = wrun(spec), wrun({**spec, "loop": True})
    assert kernel(looped).counters.refs > 2 * kernel(once).counters.refs


@covers(field_of("phases[].kind", "phases"), field_of("base", "phases"))
def test_a_phase_runs_its_own_generator_or_the_base():
    """A phase with a kind runs that generator; one with a working set runs the base."""
    own = wrun({**PHASED, "phases": [{"duration": "30s", "kind": "scan", "pages_per_s": 64}]})
    base = wrun({**PHASED, "phases": [{"duration": "30s", "working_set": "32MiB"}]})
    assert used(own).size < 30 * 64 + 64  # a sweep: at most 64 new pages a second
    assert used(base).size > 4_000  # 20,000 uniform refs a second over 8192 pages
    idle_base = wrun({**PHASED, "base": {"kind": "idle", "housekeeping_pages": 16},
                      "phases": [{"duration": "30s", "working_set": "32MiB"}]})
    assert used(idle_base).size < 64


@covers(field_of("phases[].offset", "phases"), field_of("region", "phases"))
def test_phase_offset_and_region_place_the_pages():
    spec = {**PHASED, "first_vpn": 1 << 20,
            "phases": [{"duration": "30s", "working_set": "4MiB", "offset": "32MiB"}]}
    r = wrun(spec)
    offsets = kernel(r).vpn[used(r)] - (1 << 20)
    assert offsets.min() >= 32 << 8 and offsets.max() < 36 << 8
    with pytest.raises(ConfigError):
        wrun({**spec, "region": "16MiB"})  # the phase no longer fits the region


# -- replay ---------------------------------------------------------------------------------
@covers(field_of("path", "replay"), field_of("format", "replay"))
def test_replay_reads_the_trace_it_is_given(lackey, page_list, tmp_path_factory):
    """Another trace, other pages. A page list read as such touches its page numbers; left
    to auto, the same lines read as byte addresses, 4096 to a page."""
    other = tmp_path_factory.mktemp("other") / "other.lackey"
    generate_lackey(other, 40_000, seed=4)
    a, b = wrun(replay_spec(lackey)), wrun(replay_spec(str(other)))
    assert used(a).size > 0 and not np.array_equal(kernel(a).vpn[used(a)],
                                                    kernel(b).vpn[used(b)])
    assert wrun(replay_spec(lackey, format="lackey")).vm_rows == a.vm_rows  # auto: lackey
    as_pages = wrun(replay_spec(page_list, format="pages"))
    as_addresses = wrun(replay_spec(page_list))
    assert kernel(as_pages).vpn[used(as_pages)].min() >= 5000
    assert kernel(as_addresses).vpn[used(as_addresses)].max() <= 10_000 // 4096


@covers(field_of("refs_per_s", "replay"), field_of("time_scale", "replay"),
        field_of("trace_refs_per_s", "replay"))
def test_replay_pace(lackey):
    """The pace is refs_per_s, or trace_refs_per_s / time_scale: faster, more of the
    trace by the end of the run."""
    def refs(r):
        return kernel(r).counters.refs
    slow, fast = wrun(replay_spec(lackey, refs_per_s=200)), wrun(replay_spec(lackey))
    assert refs(fast) > refs(slow)
    paced = {k: v for k, v in replay_spec(lackey).items() if k != "refs_per_s"}
    assert refs(wrun({**paced, "time_scale": 5e6})) < refs(wrun({**paced, "time_scale": 5e5}))
    assert (refs(wrun({**paced, "time_scale": 5e6, "trace_refs_per_s": 1e10}))
            > refs(wrun({**paced, "time_scale": 5e6})))


@covers(field_of("loop", "replay"))
def test_replay_loop_starts_the_trace_over(lackey):
    """40,000 references at 2,000 a second end after 20 s; looped, they go on to 30 s."""
    once, looped = wrun(replay_spec(lackey)), wrun(replay_spec(lackey, loop=True))
    assert kernel(looped).counters.refs > kernel(once).counters.refs


@covers(field_of("first_vpn", "replay"), field_of("region", "replay"),
        field_of("map_gap_pages", "replay"))
def test_replay_maps_the_range_it_is_told_or_the_ranges_it_finds(page_list):
    """A given range is mapped whole, as one mapping, and a trace page outside it is an
    error; without one, a first pass finds ranges: a gap smaller than the 3000 pages
    between the clusters keeps them apart, a larger one maps them as one."""
    def n_maps(r):
        return kernel(r).processes[0].vma_start.size
    fmt = {"format": "pages"}
    stated = wrun(replay_spec(page_list, first_vpn=5000, region="20MiB", **fmt))
    assert n_maps(stated) == 1 and used(stated).size > 1500
    with pytest.raises(HvmemError, match="outside the stated range"):
        wrun(replay_spec(page_list, first_vpn=5000, region="4MiB", **fmt))
    assert n_maps(wrun(replay_spec(page_list, map_gap_pages=16, **fmt))) == 2
    assert n_maps(wrun(replay_spec(page_list, map_gap_pages=4096, **fmt))) == 1


@covers(field_of("chunk_refs", "replay"), field_of("block", "replay"))
def test_replay_buffering_changes_nothing_but_memory(lackey):
    """chunk_refs and block size how much of the file is held at once; the run is the same."""
    base = wrun(replay_spec(lackey))
    small = wrun(replay_spec(lackey, chunk_refs=100, block="4KiB"))
    assert small.vm_rows == base.vm_rows


# -- guests: reporting free pages and deflating on OOM ------------------------------------------
@covers("vm[].guest.free_page_reporting")
def test_free_page_reporting_returns_freed_pages_to_the_host():
    """Churn frees 4 MiB chunks; pages that stay free for a report period are reported and
    lose their frames, so the VM holds less on average (the peaks are the same)."""
    spec = {**CHURN, "chunk": "4MiB", "allocs_per_s": 0.5, "lifetime": "3s"}
    kept = grant(wrun(spec))
    reported = grant(wrun(spec, ("vm.0.guest.free_page_reporting", True)))
    assert np.mean(reported) < np.mean(kept) - 0.5


@covers("vm[].guest.deflate_on_oom")
def test_deflate_on_oom_gives_balloon_pages_back_to_a_starving_guest():
    """BASE's busy VM is ballooned while it sweeps: on OOM it takes pages back, or not."""
    on, off = run(("vm.1.guest.swap", "0B")), run(("vm.1.guest.swap", "0B"),
                                                   ("vm.1.guest.deflate_on_oom", False))
    on_c, off_c = on.sim.vms["busy"].driver.counters, off.sim.vms["busy"].driver.counters
    assert on_c.oom_deflated > 0
    assert off_c.oom_deflated == 0





@covers(field_of("file_backed", "replay"), field_of("process", "replay"))
def test_replay_maps_file_pages_in_the_process_it_names(lackey):
    """As for the synthetic kinds: page cache instead of anonymous memory, and the pages
    in the named process's address space."""
    r = wrun(replay_spec(lackey, file_backed=True, process=1), ("vm.0.guest.processes", 2))
    k = kernel(r)
    assert used(r).size > 0
    assert np.all(k.kind[used(r)] == PageKind.FILE)
    assert set(k.proc[used(r)].tolist()) == {1}
    plain = wrun(replay_spec(lackey))
    assert np.all(kernel(plain).kind[used(plain)] == PageKind.ANON)
