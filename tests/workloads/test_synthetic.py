from __future__ import annotations

import math

import numpy as np
import pytest

from hvmem.core.rng import RngStreams
from hvmem.errors import ConfigError
from hvmem.workloads.base import AccessBatch, Fidelity, MemoryOpKind
from hvmem.workloads.content import ContentParams, GuestImage, PageClass
from hvmem.workloads.factory import make_workload
from hvmem.workloads.samplers import zipf_cdf, zipf_pages
from hvmem.workloads.synthetic import (
    DEFAULT_FIRST_VPN,
    ChurnParams,
    HotColdParams,
    IdleParams,
    Phase,
    PhasesParams,
    ScanParams,
    UniformParams,
    ZipfParams,
    with_fidelity,
)

S = 1_000_000_000  # one second in ns
BASE = DEFAULT_FIRST_VPN


def stream(seed=7, name="workload/vm1"):
    return RngStreams(seed).stream(name)


def batches(params, n_ticks=3, tick_ns=S, seed=7, name="workload/vm1"):
    w = make_workload(params, stream(seed, name))
    w.setup()
    return [w.next_batch(t * tick_ns, tick_ns) for t in range(n_ticks)]


def same(a: AccessBatch, b: AccessBatch) -> bool:
    return (a.ops == b.ops and np.array_equal(a.process, b.process)
            and np.array_equal(a.vpn, b.vpn) and np.array_equal(a.is_write, b.is_write)
            and np.array_equal(a.refs, b.refs) and np.array_equal(a.content, b.content))


def page_counts(batch: AccessBatch, region_pages: int, first_vpn: int = BASE) -> np.ndarray:
    return np.bincount(batch.vpn - first_vpn, weights=batch.refs, minlength=region_pages)


ALL_KINDS = [
    UniformParams(region_pages=5000, refs_per_s=20_000),
    ZipfParams(region_pages=5000, refs_per_s=20_000, alpha=0.9),
    HotColdParams(region_pages=5000, refs_per_s=20_000),
    ScanParams(region_pages=5000, pages_per_s=700.5, refs_per_page=3),
    IdleParams(region_pages=5000, refs_per_s=40.0),
    PhasesParams(region_pages=5000, phases=(
        Phase(duration_s=1.5, working_set_pages=1000),
        Phase(duration_s=1.0, params=ZipfParams(region_pages=2000, first_vpn=BASE + 3000,
                                                refs_per_s=9000)),
    ), base=UniformParams(region_pages=1, refs_per_s=10_000), loop=True),
    ChurnParams(region_pages=5000, chunk_pages=100, allocs_per_s=6, lifetime_s=2,
                refs_per_s=20_000),
]
IDS = ["uniform", "zipf", "hotcold", "scan", "idle", "phases", "churn"]


# ------------------------------------------------------------------ common behaviour


@pytest.mark.parametrize("params", ALL_KINDS, ids=IDS)
@pytest.mark.parametrize("fidelity", ["page", "mmu"])
def test_same_seed_same_batches_and_other_seed_differs(params, fidelity):
    params = with_fidelity(params, fidelity)
    a = batches(params, n_ticks=4)
    b = batches(params, n_ticks=4)
    assert all(same(x, y) for x, y in zip(a, b, strict=True))
    c = batches(params, n_ticks=4, seed=8)
    d = batches(params, n_ticks=4, name="workload/vm2")
    assert not all(same(x, y) for x, y in zip(a, c, strict=True))
    assert not all(same(x, y) for x, y in zip(a, d, strict=True))


@pytest.mark.parametrize("params", ALL_KINDS, ids=IDS)
def test_page_mode_entries_are_distinct_pages_inside_the_region(params):
    for batch in batches(params, n_ticks=4):
        assert len(np.unique(batch.vpn)) == len(batch)
        if len(batch):
            assert batch.vpn.min() >= BASE and batch.vpn.max() < BASE + 5000
            assert batch.refs.min() >= 1
        assert batch.process.dtype == np.int32 and batch.vpn.dtype == np.int64
        assert batch.refs.dtype == np.int64 and batch.content.dtype == np.uint64
        assert np.all(batch.content[~batch.is_write] == 0)


@pytest.mark.parametrize("params", ALL_KINDS, ids=IDS)
def test_mmu_mode_one_reference_per_entry(params):
    for batch in batches(with_fidelity(params, "mmu"), n_ticks=3):
        assert np.all(batch.refs == 1)


@pytest.mark.parametrize(
    "params",
    [UniformParams(region_pages=1000, refs_per_s=123_456.5),
     ZipfParams(region_pages=1000, refs_per_s=123_456.5, alpha=1.2),
     HotColdParams(region_pages=1000, refs_per_s=123_456.5),
     IdleParams(region_pages=1 << 20, refs_per_s=123_456.5, housekeeping_pages=64)],
    ids=["uniform", "zipf", "hotcold", "idle"],
)
def test_page_mode_draws_the_reference_count_on_average(params):
    page = batches(params, n_ticks=4)
    mmu = batches(with_fidelity(params, "mmu"), n_ticks=4)
    # 123456.5 refs/s over 1 s ticks: 123456 and 123457 alternate (the fraction carries).
    assert [len(b) for b in mmu] == [123456, 123457, 123456, 123457]
    # Page mode draws each page's count (Poisson), so a tick's total is n on
    # average, with a spread of sqrt(n): 5 of those is a bound no seed passes.
    for b, n in zip(page, [123456, 123457, 123456, 123457], strict=True):
        assert abs(b.n_refs - n) <= 5 * np.sqrt(n)
    assert all(len(b) <= min(b.n_refs, 1000 if not isinstance(params, IdleParams) else 64)
               for b in page)


def test_low_rates_carry_fractions_across_ticks():
    # In mmu fidelity a batch is the references themselves, so it counts them exactly.
    w = make_workload(UniformParams(region_pages=100, refs_per_s=5.0, fidelity="mmu"), stream())
    total = sum(w.next_batch(t * 1_000_000, 1_000_000).n_refs for t in range(1000))  # 1 s
    assert total == 5
    assert w.next_batch(0, 0).n_refs == 0


def test_a_big_tick_over_a_small_region_produces_at_most_one_entry_per_page():
    w = make_workload(UniformParams(region_pages=100_000, refs_per_s=1e6), stream())
    b = w.next_batch(0, S)
    assert abs(b.n_refs - 1_000_000) <= 5 * 1000 and len(b) <= 100_000
    assert len(b) > 99_000  # 10 references per page: nearly all pages touched


def test_setup_maps_the_region():
    p = UniformParams(region_pages=64, first_vpn=0x9000, process=2, file_backed=True)
    (op,) = make_workload(p, stream()).setup()
    assert (op.kind, op.process, op.first_vpn, op.n_pages, op.file_backed) == (
        MemoryOpKind.MAP, 2, 0x9000, 64, True)


@pytest.mark.parametrize("fidelity", ["page", "mmu"])
def test_write_fraction(fidelity):
    w = 0.2
    (b,) = batches(UniformParams(region_pages=50_000, refs_per_s=200_000, write_frac=w,
                                 fidelity=fidelity), n_ticks=1)
    if fidelity == "mmu":
        assert b.is_write.mean() == pytest.approx(w, abs=0.005)
    else:  # an entry of r references is written with probability 1 - (1 - w)**r
        expected = np.sum(1 - (1 - w) ** b.refs)
        assert b.is_write.sum() == pytest.approx(expected, rel=0.03)
    for frac, want in ((0.0, False), (1.0, True)):
        (b,) = batches(UniformParams(region_pages=500, refs_per_s=5000, write_frac=frac,
                                     fidelity=fidelity), n_ticks=1)
        assert np.all(b.is_write == want)


def test_writes_carry_tokens_from_the_content_model():
    content = ContentParams(image=GuestImage(name="centos"), image_frac=0.4, zero_frac=0.2)
    params = UniformParams(region_pages=4000, refs_per_s=200_000, write_frac=1.0,
                           content=content)
    a = make_workload(params, stream(name="workload/vm1"))
    b = make_workload(params, stream(name="workload/vm2"))
    ba, bb = a.next_batch(0, S), b.next_batch(0, S)
    assert np.array_equal(ba.vpn, np.arange(BASE, BASE + 4000))  # every page touched
    cls = a.content.page_class(ba.vpn)
    image, zero = cls == PageClass.IMAGE, cls == PageClass.ZERO
    assert np.all(ba.content[zero] == 0)
    assert np.all(ba.content[~zero] != 0)
    assert np.array_equal(ba.content[image], bb.content[image])  # sharable across VMs
    assert np.all(ba.content[cls == PageClass.PRIVATE] != bb.content[cls == PageClass.PRIVATE])


# ---------------------------------------------------------------- distributions


def test_uniform_spreads_references_evenly():
    (b,) = batches(UniformParams(region_pages=10_000, refs_per_s=500_000), n_ticks=1)
    share = page_counts(b, 10_000).reshape(10, 1000).sum(axis=1) / b.n_refs
    assert np.allclose(share, 0.1, atol=0.004)


@pytest.mark.parametrize("alpha", [0.8, 1.0, 1.4])
def test_zipf_head_frequency(alpha):
    n = 20_000
    w = make_workload(ZipfParams(region_pages=n, refs_per_s=400_000, alpha=alpha), stream())
    b = w.next_batch(0, S)
    counts = page_counts(b, n)
    prob = w.rank_probabilities()
    assert prob[0] == pytest.approx(1 / np.sum(np.arange(1, n + 1) ** -alpha))
    by_rank = counts[w.page_of_rank]
    top1 = by_rank[0] / b.n_refs
    top10 = by_rank[:10].sum() / b.n_refs
    assert top1 == pytest.approx(prob[0], rel=0.03)
    assert top10 == pytest.approx(prob[:10].sum(), rel=0.02)
    # Popularity is scattered over the region, not packed at its start.
    assert np.sort(w.page_of_rank).tolist() == list(range(n))
    assert w.page_of_rank[:100].max() > n // 2


def test_zipf_alpha_zero_is_uniform():
    (b,) = batches(ZipfParams(region_pages=1000, refs_per_s=200_000, alpha=0.0), n_ticks=1)
    counts = page_counts(b, 1000)
    assert counts.max() < 200 * 1.5 and counts.min() > 200 * 0.5


@pytest.mark.parametrize(("pages_frac", "refs_frac"), [(0.2, 0.8), (0.05, 0.95), (0.5, 0.1)])
@pytest.mark.parametrize("fidelity", ["page", "mmu"])
def test_hot_cold_shares(pages_frac, refs_frac, fidelity):
    n = 10_000
    w = make_workload(HotColdParams(region_pages=n, refs_per_s=300_000, fidelity=fidelity,
                                    hot_pages_frac=pages_frac, hot_refs_frac=refs_frac),
                      stream())
    b = w.next_batch(0, S)
    hot = w.hot_pages
    assert hot.shape[0] == round(pages_frac * n)
    counts = page_counts(b, n)
    assert counts[hot].sum() / b.n_refs == pytest.approx(refs_frac, abs=0.006)
    # Within the hot set pages are equally likely: counts are binomial, so their
    # variance is about their mean (a dispersion index near 1).
    per_hot = counts[hot]
    assert per_hot.var() / per_hot.mean() == pytest.approx(1.0, abs=0.15)


def test_scan_order_wraps_and_repeats_per_page_in_mmu_mode():
    w = make_workload(ScanParams(region_pages=10, pages_per_tick=4, refs_per_page=2,
                                 start_page=7, fidelity="mmu"), stream())
    seq = np.concatenate([w.next_batch(t, 1).vpn - BASE for t in range(3)])
    assert seq.tolist() == [7, 7, 8, 8, 9, 9, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8]


def test_scan_page_mode_keeps_scan_order_and_counts_laps():
    w = make_workload(ScanParams(region_pages=10, pages_per_tick=23, refs_per_page=5), stream())
    b = w.next_batch(0, S)
    assert (b.vpn - BASE).tolist() == list(range(10))
    assert b.refs.tolist() == [15, 15, 15] + [10] * 7  # two laps, then three more pages
    assert w.cursor == 3
    b = w.next_batch(S, S)
    assert (b.vpn - BASE).tolist() == [3, 4, 5, 6, 7, 8, 9, 0, 1, 2]


def test_scan_rates_per_second():
    w = make_workload(ScanParams(region_pages=1000, pages_per_s=2.5, refs_per_page=4), stream())
    got = [len(w.next_batch(t * S, S)) for t in range(4)]
    assert got == [2, 3, 2, 3]
    w = make_workload(ScanParams(region_pages=1000, refs_per_s=400.0, refs_per_page=4), stream())
    b = w.next_batch(0, S)
    assert len(b) == 100 and b.n_refs == 400


def test_idle_touches_only_its_housekeeping_pages_at_a_trickle():
    w = make_workload(IdleParams(region_pages=1 << 20, refs_per_s=4.0, housekeeping_pages=8),
                      stream())
    (op,) = w.setup()
    assert op.n_pages == 1 << 20
    got = [w.next_batch(t * 250_000_000, 250_000_000) for t in range(40)]  # 10 s
    assert sum(b.n_refs for b in got) == 40
    touched = np.unique(np.concatenate([b.vpn for b in got])) - BASE
    assert set(touched.tolist()) <= set(w.housekeeping_pages.tolist())
    assert w.housekeeping_pages.shape[0] == 8


# ---------------------------------------------------------------------- phases


def test_phases_grow_shrink_and_move_the_working_set():
    p = PhasesParams(region_pages=1000, phases=(
        Phase(duration_s=2, working_set_pages=100),
        Phase(duration_s=2, working_set_pages=400),
        Phase(duration_s=2, working_set_pages=100, offset_pages=900),
    ), base=UniformParams(region_pages=1, refs_per_s=50_000))
    w = make_workload(p, stream())
    assert [(op.first_vpn, op.n_pages) for op in w.setup()] == [(BASE, 1000)]
    spans = []
    for t in range(8):
        b = w.next_batch(t * S, S)
        spans.append((int(b.vpn.min()) - BASE, int(b.vpn.max()) - BASE, len(b), w.current_phase))
    assert spans[0][:2] == (0, 99) and spans[0][2] == 100
    assert spans[2][1] > 300 and spans[2][2] == 400
    assert spans[4][0] >= 900
    assert spans[7][0] >= 900 and spans[7][3] == 2  # the last phase goes on


def test_phase_boundary_inside_a_tick_splits_and_reaggregates():
    p = PhasesParams(region_pages=1000, phases=(
        Phase(duration_s=0.5, working_set_pages=100),
        Phase(duration_s=0.5, working_set_pages=100, offset_pages=50),
    ), base=UniformParams(region_pages=1, refs_per_s=100_000), loop=True)
    w = make_workload(p, stream())
    b = w.next_batch(0, S)
    assert abs(b.n_refs - 100_000) <= 5 * np.sqrt(100_000)
    assert len(np.unique(b.vpn)) == len(b) == 150  # pages 50..99 touched in both halves
    mmu = make_workload(with_fidelity(p, "mmu"), stream()).next_batch(0, S)
    assert len(mmu) == 100_000
    assert mmu.vpn[:50_000].max() < BASE + 100 and mmu.vpn[50_000:].min() >= BASE + 50


def test_phases_loop():
    p = PhasesParams(region_pages=200, phases=(
        Phase(duration_s=1, working_set_pages=10),
        Phase(duration_s=1, working_set_pages=10, offset_pages=100),
    ), base=UniformParams(region_pages=1, refs_per_s=1000), loop=True)
    w = make_workload(p, stream())
    lows = [int(w.next_batch(t * S, S).vpn.min()) - BASE for t in range(5)]
    assert [lo >= 100 for lo in lows] == [False, True, False, True, False]


# ----------------------------------------------------------------------- churn


@pytest.mark.parametrize("fidelity", ["page", "mmu"])
def test_churn_maps_touches_uses_and_unmaps(fidelity):
    p = ChurnParams(region_pages=2000, chunk_pages=100, allocs_per_s=4, lifetime_s=1.5,
                    lifetime_dist="fixed", refs_per_s=5000, fidelity=fidelity)
    w = make_workload(p, stream())
    assert w.setup() == ()
    live: set[int] = set()
    for t in range(10):
        b = w.next_batch(t * S, S)
        kinds = [op.kind for op in b.ops]
        # Unmaps come before maps.
        assert kinds == sorted(kinds, key=lambda k: k == MemoryOpKind.MAP)
        for op in b.ops:
            assert op.n_pages == 100 and (op.first_vpn - BASE) % 100 == 0
            assert op.first_vpn >= BASE and op.first_vpn + op.n_pages <= BASE + 2000
            if op.kind == MemoryOpKind.MAP:
                assert op.first_vpn not in live
                live.add(op.first_vpn)
            else:
                live.remove(op.first_vpn)
        chunks = set(((b.vpn - BASE) // 100 * 100 + BASE).tolist())
        assert chunks <= live  # only live chunks are touched
        new = [op.first_vpn for op in b.ops if op.kind == MemoryOpKind.MAP]
        for first in new:  # a new chunk is written page by page
            inside = (b.vpn >= first) & (b.vpn < first + 100)
            assert set(b.vpn[inside].tolist()) == set(range(first, first + 100))
            assert b.is_write[inside].any()
        assert w.live_pages == 100 * len(live)
    # Tick t allocates at t + 0.125, 0.375, 0.625, 0.875 s; living 1.5 s, the first
    # two are freed at the start of tick t + 2, the others at t + 3. After tick 9:
    # 4 from tick 9, 4 from tick 8 and 2 from tick 7 are live.
    assert len(live) == 10
    assert w.n_allocs == 40 and w.n_frees == 30 and w.n_allocs_refused == 0


def test_churn_refuses_allocations_when_the_arena_is_full():
    p = ChurnParams(region_pages=500, chunk_pages=100, allocs_per_s=3, lifetime_s=100,
                    refs_per_s=0)
    w = make_workload(p, stream())
    for t in range(4):
        w.next_batch(t * S, S)
    assert w.live_pages == 500 and w.n_allocs == 5 and w.n_allocs_refused == 7


# ----------------------------------------------------------------- big regions


def test_million_page_region_in_page_mode():
    w = make_workload(ZipfParams(region_pages=1 << 20, refs_per_s=1e6), stream())
    b = w.next_batch(0, S)
    assert abs(b.n_refs - 1_000_000) <= 5 * 1000 and len(b) < 400_000
    assert len(np.unique(b.vpn)) == len(b)


# ------------------------------------------------------------------ helpers


def test_zipf_cdf_and_pages_still_work():
    cdf = zipf_cdf(100, 1.0)
    assert cdf[-1] == 1.0 and np.all(np.diff(cdf) > 0)
    pages = zipf_pages(stream(), 100, 1000, 1.0, first_page=50)
    assert pages.min() >= 50 and pages.max() < 150
    with pytest.raises(ConfigError):
        zipf_cdf(0, 1.0)


def test_with_fidelity_and_make_workload_errors():
    p = with_fidelity(UniformParams(region_pages=10), Fidelity.MMU)
    assert p.fidelity == "mmu" and not p.page_fidelity
    with pytest.raises(ConfigError, match="unknown parameters"):
        make_workload(object(), stream())
    with pytest.raises(ConfigError, match="rng"):
        make_workload(UniformParams(region_pages=10), np.random.default_rng)


# ------------------------------------------------------------------ bad parameters


def phases_with(*phases, **kw):
    return lambda: PhasesParams(region_pages=100, phases=phases, **kw)


BAD = [
    (lambda: UniformParams(region_pages=0), r"UniformParams\.region_pages"),
    (lambda: UniformParams(region_pages=True), r"UniformParams\.region_pages"),
    (lambda: UniformParams(region_pages=10, first_vpn=-1), r"UniformParams\.first_vpn"),
    (lambda: UniformParams(region_pages=10, first_vpn=(1 << 36) - 5),
     r"UniformParams\.region_pages"),
    (lambda: UniformParams(region_pages=10, process=-1), r"UniformParams\.process"),
    (lambda: UniformParams(region_pages=10, refs_per_s=-1), r"UniformParams\.refs_per_s"),
    (lambda: UniformParams(region_pages=10, refs_per_s=math.nan), r"UniformParams\.refs_per_s"),
    (lambda: UniformParams(region_pages=10, write_frac=1.5), r"UniformParams\.write_frac"),
    (lambda: UniformParams(region_pages=10, fidelity="exact"), r"UniformParams\.fidelity"),
    (lambda: UniformParams(region_pages=10, content="lots"), r"UniformParams\.content"),
    (lambda: UniformParams(region_pages=10, file_backed=1), r"UniformParams\.file_backed"),
    (lambda: ZipfParams(region_pages=10, alpha=-0.5), r"ZipfParams\.alpha"),
    (lambda: HotColdParams(region_pages=10, hot_pages_frac=1.0), r"\.hot_pages_frac"),
    (lambda: HotColdParams(region_pages=10, hot_pages_frac=0.0), r"\.hot_pages_frac"),
    (lambda: HotColdParams(region_pages=10, hot_refs_frac=1.2), r"\.hot_refs_frac"),
    (lambda: HotColdParams(region_pages=1), r"HotColdParams\.region_pages"),
    (lambda: ScanParams(region_pages=10), r"ScanParams\.pages_per_s"),
    (lambda: ScanParams(region_pages=10, pages_per_s=1, pages_per_tick=1),
     r"ScanParams\.pages_per_s"),
    (lambda: ScanParams(region_pages=10, pages_per_tick=-1), r"ScanParams\.pages_per_tick"),
    (lambda: ScanParams(region_pages=10, pages_per_s=1, refs_per_page=0),
     r"ScanParams\.refs_per_page"),
    (lambda: ScanParams(region_pages=10, pages_per_s=1, start_page=10), r"ScanParams\.start_page"),
    (lambda: IdleParams(region_pages=10, housekeeping_pages=11),
     r"IdleParams\.housekeeping_pages"),
    (lambda: ChurnParams(region_pages=10, chunk_pages=11), r"ChurnParams\.chunk_pages"),
    (lambda: ChurnParams(region_pages=10, chunk_pages=1, lifetime_s=0), r"ChurnParams\.lifetime_s"),
    (lambda: ChurnParams(region_pages=10, chunk_pages=1, lifetime_dist="pareto"),
     r"ChurnParams\.lifetime_dist"),
    (lambda: ChurnParams(region_pages=10, chunk_pages=1, allocs_per_s=-1),
     r"ChurnParams\.allocs_per_s"),
    (lambda: Phase(duration_s=0, working_set_pages=1), r"Phase\.duration_s"),
    (phases_with(), r"PhasesParams\.phases"),
    (phases_with(Phase(duration_s=1)), r"PhasesParams\.phases\[0\]\.params"),
    (phases_with(Phase(duration_s=1, working_set_pages=10),
                 Phase(duration_s=1, working_set_pages=101)),
     r"Phase\.working_set_pages"),
    (phases_with(Phase(duration_s=1, working_set_pages=50, offset_pages=60)),
     r"Phase\.offset_pages"),
    (phases_with(Phase(duration_s=1, params=UniformParams(region_pages=10, first_vpn=0))),
     r"PhasesParams\.phases\[0\]\.params\.first_vpn"),
    (phases_with(Phase(duration_s=1, params=UniformParams(region_pages=10, process=3))),
     r"PhasesParams\.phases\[0\]\.params\.process"),
    (phases_with(Phase(duration_s=1, params=ChurnParams(region_pages=10, chunk_pages=1))),
     r"PhasesParams\.phases\[0\]\.params"),
    (phases_with(Phase(duration_s=1, working_set_pages=10), fidelity="fast"),
     r"PhasesParams\.fidelity"),
]


@pytest.mark.parametrize(("make", "pattern"), BAD)
def test_bad_parameters_raise_config_error_naming_the_field(make, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        make()
    assert "expected" in str(info.value) and "\n" not in str(info.value)


def test_sorted_merge_matches_the_general_merge():
    from hvmem.workloads.samplers import merge_sorted as _merge_sorted

    rng = np.random.default_rng(3)
    parts = []
    for size in (500, 80):
        off = np.unique(rng.integers(0, 1000, size))
        parts.append((off, rng.integers(1, 9, off.shape[0]), rng.random(off.shape[0]) < 0.4))
    got = _merge_sorted(parts[0], parts[1])
    off = np.concatenate([p[0] for p in parts])
    pages, inverse = np.unique(off, return_inverse=True)
    refs = np.bincount(inverse, weights=np.concatenate([p[1] for p in parts]))
    writes = np.bincount(inverse, weights=np.concatenate([p[2] for p in parts])) > 0
    want = (pages, np.rint(refs).astype(np.int64), writes)
    assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 3.0])
def test_zipf_blocks_stay_within_the_error_bound(alpha):
    from hvmem.workloads.samplers import ZIPF_MAX_ERROR_FRAC, zipf_blocks

    n = 300_000
    lo, width, weights = zipf_blocks(n, alpha)
    assert lo[0] == 0 and np.all(lo[1:] == lo[:-1] + width[:-1]) and lo[-1] + width[-1] == n
    exact = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    assert weights.sum() == pytest.approx(exact.sum())
    block = np.repeat(np.arange(lo.shape[0]), width)
    approx = (weights / width)[block]  # every rank gets its block's average
    assert np.max(np.abs(approx / exact - 1)) <= ZIPF_MAX_ERROR_FRAC * 1.01
    if alpha >= 0.6:
        assert lo.shape[0] < n // 10


def test_zipf_head_frequency_on_a_blocked_region():
    n = 1 << 18  # above ZIPF_EXACT_MAX_PAGES: blocked tail, exact head
    w = make_workload(ZipfParams(region_pages=n, refs_per_s=1e6, alpha=1.0), stream())
    b = w.next_batch(0, S)
    counts = page_counts(b, n)[w.page_of_rank]
    prob = w.rank_probabilities()
    assert counts[0] / b.n_refs == pytest.approx(prob[0], rel=0.02)
    assert counts[:1000].sum() / b.n_refs == pytest.approx(prob[:1000].sum(), rel=0.01)
    tail = slice(n // 2, n)
    assert counts[tail].sum() / b.n_refs == pytest.approx(prob[tail].sum(), rel=0.02)
