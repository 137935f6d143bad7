from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.core.rng import RngStreams
from hvmem.errors import ConfigError, TraceError
from hvmem.workloads.base import MemoryOpKind
from hvmem.workloads.factory import make_workload
from hvmem.workloads.replay import ReplayParams, ReplayWorkload, merge_runs, trace_page_runs
from hvmem.workloads.trace import read_page_numbers
from hvmem.workloads.trace_writer import generate_lackey

S = 1_000_000_000
N_LINES = 30_000


@pytest.fixture(scope="module")
def lackey(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "prog.lackey"
    generate_lackey(path, N_LINES, seed=5)
    return path


def replay(path, seed=1, **kw) -> ReplayWorkload:
    kw.setdefault("refs_per_s", 7_000)
    w = make_workload(ReplayParams(path=path, **kw), RngStreams(seed).stream("workload/vm1"))
    assert isinstance(w, ReplayWorkload)
    return w


def test_mmu_replay_reproduces_the_trace_in_order(lackey):
    vpn, writes = read_page_numbers(lackey)
    w = replay(lackey, fidelity="mmu", chunk_refs=1000, block_bytes=4096)
    w.setup()
    got = [w.next_batch(t * S, S) for t in range(6)]  # 6 x 7000 > 30000: the trace ends
    assert [len(b) for b in got] == [7000, 7000, 7000, 7000, 2000, 0]
    assert np.array_equal(np.concatenate([b.vpn for b in got]), vpn)
    assert np.array_equal(np.concatenate([b.is_write for b in got]), writes)
    assert all(np.all(b.refs == 1) for b in got)
    assert w.finished and w.passes_completed == 1 and w.refs_replayed == N_LINES
    assert len(w.next_batch(6 * S, S)) == 0


def test_looped_replay_starts_over(lackey):
    vpn, _ = read_page_numbers(lackey)
    w = replay(lackey, fidelity="mmu", loop=True, refs_per_s=25_000)
    seq = np.concatenate([w.next_batch(t * S, S).vpn for t in range(5)])  # 125000 refs
    assert seq.shape[0] == 125_000
    assert np.array_equal(seq, np.tile(vpn, 5)[:125_000])
    assert w.passes_completed == 4 and not w.finished


def test_page_replay_aggregates_each_tick(lackey):
    vpn, writes = read_page_numbers(lackey)
    w = replay(lackey, chunk_refs=999)
    for t in range(5):
        b = w.next_batch(t * S, S)
        lo, hi = 7000 * t, min(N_LINES, 7000 * (t + 1))
        pages, counts = np.unique(vpn[lo:hi], return_counts=True)
        assert np.array_equal(b.vpn, pages)
        assert np.array_equal(b.refs, counts)
        wrote = np.unique(vpn[lo:hi][writes[lo:hi]])
        assert np.array_equal(b.vpn[b.is_write], wrote)
        assert np.all(b.content[~b.is_write] == 0)


def test_time_scale_sets_the_pace(lackey):
    w = replay(lackey, refs_per_s=None, time_scale=250_000.0, trace_refs_per_s=1e9)
    assert w.params.effective_refs_per_s == 4000
    assert w.next_batch(0, S).n_refs == 4000
    assert w.next_batch(S, S // 4).n_refs == 1000


def test_first_pass_maps_every_touched_page(lackey):
    vpn, _ = read_page_numbers(lackey)
    w = replay(lackey, map_gap_pages=0)
    ops = w.setup()
    assert all(op.kind == MemoryOpKind.MAP and op.process == 0 for op in ops)
    assert w.footprint_pages == np.unique(vpn).shape[0] == w.mapped_pages
    starts = np.array([op.first_vpn for op in ops])
    ends = starts + np.array([op.n_pages for op in ops])
    assert np.all(starts[1:] > ends[:-1])  # sorted, disjoint, not touching
    slot = np.searchsorted(ends, vpn, side="right")
    assert np.all(starts[slot] <= vpn)
    # Coalescing gaps needs fewer mappings, and still covers everything.
    wide = replay(lackey, map_gap_pages=1 << 30)
    (op,) = wide.setup()
    assert op.first_vpn == vpn.min() and op.first_vpn + op.n_pages == vpn.max() + 1


def test_stated_range_maps_once_and_checks_pages(lackey):
    vpn, _ = read_page_numbers(lackey)
    lo, hi = int(vpn.min()), int(vpn.max())
    w = replay(lackey, map_first_vpn=lo, map_pages=hi - lo + 1)
    assert [(op.first_vpn, op.n_pages) for op in w.setup()] == [(lo, hi - lo + 1)]
    assert w.footprint_pages is None
    w.next_batch(0, S)
    narrow = replay(lackey, map_first_vpn=lo, map_pages=1)
    with pytest.raises(TraceError, match="outside the stated range"):
        narrow.next_batch(0, S)


def test_replay_is_deterministic(lackey):
    a = [replay(lackey, seed=3).next_batch(0, S) for _ in range(2)]
    assert np.array_equal(a[0].content, a[1].content) and np.array_equal(a[0].vpn, a[1].vpn)
    other = replay(lackey, seed=4).next_batch(0, S)
    assert np.array_equal(other.vpn, a[0].vpn)  # the trace decides the pages
    private = (a[0].content != 0) & ~(a[0].content >> np.uint64(63)).astype(bool)
    assert np.all(other.content[private] != a[0].content[private])  # another VM's data


def test_addr_and_pages_formats(tmp_path):
    addr = tmp_path / "a.txt"
    addr.write_text("0x1000\n0x1fff\n0x5000\n# comment\n8192\n")
    w = replay(addr, fidelity="mmu", refs_per_s=10)
    assert [(op.first_vpn, op.n_pages) for op in w.setup()] == [(1, 5)]
    assert w.next_batch(0, S).vpn.tolist() == [1, 1, 5, 2]
    pages = tmp_path / "p.txt"
    pages.write_text("3\n4\n3\n")
    w = replay(pages, fmt="pages", fidelity="mmu", refs_per_s=10, map_gap_pages=0)
    assert [(op.first_vpn, op.n_pages) for op in w.setup()] == [(3, 2)]
    assert w.next_batch(0, S).vpn.tolist() == [3, 4, 3]


def test_kernel_addresses_cannot_be_replayed(tmp_path):
    path = tmp_path / "k.txt"
    path.write_text("0xffffffff81000000\n")
    with pytest.raises(TraceError, match="48-bit"):
        replay(path).setup()


def test_merge_runs():
    s, e = merge_runs(np.array([10, 0, 5, 30]), np.array([12, 3, 10, 31]))
    assert s.tolist() == [0, 5, 30] and e.tolist() == [3, 12, 31]
    s, e = merge_runs(np.array([10, 0, 5, 30]), np.array([12, 3, 10, 31]), gap_pages=2)
    assert s.tolist() == [0, 30] and e.tolist() == [12, 31]
    s, e = merge_runs(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert s.size == 0 and e.size == 0


def test_trace_page_runs_across_chunks(lackey):
    vpn, _ = read_page_numbers(lackey)
    s, e = trace_page_runs(lackey, chunk_refs=100)
    covered = np.concatenate([np.arange(a, b) for a, b in zip(s, e, strict=True)])
    assert np.array_equal(covered, np.unique(vpn))


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"refs_per_s": 1.0, "time_scale": 2.0}, "refs_per_s"),
        ({"refs_per_s": None}, "refs_per_s"),
        ({"refs_per_s": -1.0}, "refs_per_s"),
        ({"refs_per_s": None, "time_scale": 0.0}, "time_scale"),
        ({"fmt": "csv"}, "fmt"),
        ({"fidelity": "cycle"}, "fidelity"),
        ({"map_first_vpn": 5}, "map_pages"),
        ({"map_first_vpn": 5, "map_pages": 0}, "map_pages"),
        ({"map_gap_pages": -1}, "map_gap_pages"),
        ({"chunk_refs": 0}, "chunk_refs"),
        ({"process": -2}, "process"),
        ({"loop": "yes"}, "loop"),
        ({"path": ""}, "path"),
        ({"path": "-"}, "map_first_vpn"),
        ({"path": "-", "map_first_vpn": 0, "map_pages": 10, "loop": True}, "loop"),
    ],
)
def test_bad_replay_parameters_name_the_field(kw, field):
    kw = {"path": "trace.txt", "refs_per_s": 10.0} | kw
    with pytest.raises(ConfigError, match=rf"ReplayParams\.{field}:"):
        ReplayParams(**kw)


def test_missing_trace_file_is_a_trace_error(tmp_path):
    with pytest.raises(TraceError, match="no such file"):
        replay(tmp_path / "nope.txt").setup()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 20)), max_size=30),
       st.integers(0, 5))
def test_merge_runs_property(ranges, gap):
    starts = np.array([r[0] for r in ranges], np.int64)
    ends = starts + np.array([r[1] for r in ranges], np.int64)
    s, e = merge_runs(starts, ends, gap_pages=gap)
    covered = {p for a, b in zip(s.tolist(), e.tolist(), strict=True) for p in range(a, b)}
    wanted = {p for a, b in zip(starts.tolist(), ends.tolist(), strict=True) for p in range(a, b)}
    assert wanted <= covered
    assert np.all(s[1:] > e[:-1] + gap)  # sorted, and further apart than the gap
    if gap == 0:
        assert covered == wanted


def test_page_table_matches_unique_through_rehashes():
    from hvmem.workloads.replay import _PageTable

    rng = np.random.default_rng(9)
    table = _PageTable()
    pieces = [rng.integers(0, 50_000, size) * 7 + 0x1FF_0000 for size in (10, 3000, 40_000, 5)]
    writes = [rng.random(p.shape[0]) < 0.3 for p in pieces]
    for vpn, w in zip(pieces, writes, strict=True):
        table.add(vpn, w)
    pages, refs, wrote = table.pages()
    vpn, w = np.concatenate(pieces), np.concatenate(writes)
    want_pages, want_refs = np.unique(vpn, return_counts=True)
    assert np.array_equal(pages, want_pages) and np.array_equal(refs, want_refs)
    assert np.array_equal(wrote, np.isin(want_pages, vpn[w]))
    assert table.n_used == want_pages.shape[0]
