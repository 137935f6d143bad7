"""A batch served after ``GuestKernel.walk_ahead`` leaves every state as one served without.

Two guests built alike, each on a host of its own, are given the same ticks:
one serves each batch at once, the other walks it ahead first, as the
simulator's workload thread does. Batches mix reads and writes over more
pages than the guest holds (faults, guest reclaim, swap-ins, several chunks a
batch), with resident ticks between; after every tick the results, the
guest's pages, stamps, dirty bits and counters, and the host's pmap and frame
contents must be equal.

The same comparison checks the walk after a chunk's faults: ``_serve_chunk``
walks the whole chunk's page table again after a fault made the guest reclaim
only when the reclaim may have evicted a page used at the current stamp
(``KernelState.young_evictions``); every page of the chunk mapped so far is
one, and other evictions change none of its entries. A guest for which every
reclaim counts as such an eviction walks the whole chunk again after every
reclaim, and must end in the same state.
"""

from __future__ import annotations

import numpy as np
import pytest

import hvmem.guest.reclaim as guest_reclaim
from hvmem.guest.kernel import GuestConfig, GuestKernel
from hvmem.guest.pages import pte_frames
from hvmem.hardware.page_table import TableStore
from hvmem.hypervisor.host import Host
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind

GUEST_PAGES = 256
MAPPED_PAGES = 400  # more than the guest holds: reclaim and swap
TICK_NS = 1_000_000_000


def make_guest(policy: str) -> tuple[GuestKernel, Host]:
    host = Host(4096, "nested")
    tables = TableStore(GUEST_PAGES, "g")
    vm = host.add_vm("g", GUEST_PAGES, tables)
    kernel = GuestKernel(GuestConfig(GUEST_PAGES, 1024, "ssd", policy, 2), vm, tables,
                         np.random.default_rng(7))
    return kernel, host


def batch(vpns, writes, process=0, ops=()):
    vpns = np.asarray(vpns, dtype=np.int64)
    return AccessBatch(np.full(vpns.size, process, np.int32), vpns, np.asarray(writes, bool),
                       np.arange(1, vpns.size + 1, dtype=np.int64),
                       vpns.astype(np.uint64) * np.uint64(3) + np.uint64(1), tuple(ops))


def state(kernel: GuestKernel, host: Host) -> dict:
    vm = host.vms[0]
    rp = kernel.replacement
    return {
        "kind": kernel.kind.copy(), "dirty": kernel.dirty.copy(), "vpn": kernel.vpn.copy(),
        "use_stamp": rp.use_stamp.copy(), "use_bit": rp.use_bit.copy(),
        "counters": repr(kernel.counters), "pmap_state": vm.pmap.state.copy(),
        "pmap_mpn": vm.pmap.mpn.copy(), "content": host.frames.content.copy(),
        "leaves": [p.space.page_table.leaf_entries(np.arange(MAPPED_PAGES))
                   for p in kernel.processes],
    }


def assert_same(a: dict, b: dict) -> None:
    for key in a:
        if key == "leaves":
            for x, y in zip(a[key], b[key], strict=True):
                np.testing.assert_array_equal(x, y)
        elif isinstance(a[key], str):
            assert a[key] == b[key], key
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("policy", ["lru", "fifo", "clock", "random"])
def test_walking_ahead_changes_nothing(policy):
    plain, plain_host = make_guest(policy)
    ahead, ahead_host = make_guest(policy)
    ops = tuple(MemoryOp(MemoryOpKind.MAP, p, 0, MAPPED_PAGES, False) for p in (0, 1))
    rng = np.random.default_rng(3)
    walked_some = 0
    last = np.arange(40)
    for tick in range(40):
        now = tick * TICK_NS
        if tick == 0:
            b = batch([], [], ops=ops)
        elif tick % 7 == 3:  # two processes: not walked ahead
            v = rng.choice(MAPPED_PAGES, 60, replace=False)
            b = AccessBatch(np.repeat(np.array([0, 1], np.int32), 30), v,
                            rng.random(60) < 0.5, np.ones(60, np.int64),
                            v.astype(np.uint64) + np.uint64(5), ())
        elif tick % 3 == 0:  # resident: the last pages the tick before touched, again
            again = rng.permutation(last[-40:])
            b = batch(again, rng.random(again.size) < 0.4)
        else:  # more pages than the guest holds, in several chunks
            n = int(rng.integers(50, 300))
            last = rng.choice(MAPPED_PAGES, n, replace=False)
            b = batch(last, rng.random(n) < 0.4)
        r1 = plain.access(b, now)
        walked = ahead.walk_ahead(b, now)
        walked_some += walked is not None and walked.split is not None
        r2 = ahead.access(b, now, walked)
        assert (r1.refs, r1.time_ns, r1.minor_faults, r1.major_faults, r1.dropped) == \
            (r2.refs, r2.time_ns, r2.minor_faults, r2.major_faults, r2.dropped)
        np.testing.assert_array_equal(r1.dropped_mask, r2.dropped_mask)
        assert_same(state(plain, plain_host), state(ahead, ahead_host))
    assert walked_some >= 4  # resident first chunks, split ahead
    assert plain.counters.swap_outs > 0 and plain.counters.reclaim_runs > 0
    ahead.check_invariants()


def test_batches_with_mappings_to_change_are_not_walked():
    kernel, _ = make_guest("lru")
    ops = (MemoryOp(MemoryOpKind.MAP, 0, 0, 16, False),)
    assert kernel.walk_ahead(batch([1, 2], [True, False], ops=ops), 0) is None


@pytest.mark.parametrize("policy", ["lru", "fifo", "clock", "random"])
def test_walking_only_the_faulted_entries_changes_nothing(policy, monkeypatch):
    short, short_host = make_guest(policy)
    whole, whole_host = make_guest(policy)
    reclaim = guest_reclaim.reclaim

    def every_eviction_young(kernel, n_pages):
        freed = reclaim(kernel, n_pages)
        if kernel is whole:
            kernel.young_evictions += 1
        return freed

    monkeypatch.setattr(guest_reclaim, "reclaim", every_eviction_young)
    ops = tuple(MemoryOp(MemoryOpKind.MAP, p, 0, MAPPED_PAGES, False) for p in (0, 1))
    rng = np.random.default_rng(11)
    last = np.arange(40)
    for tick in range(60):
        now = tick * TICK_NS
        if tick == 0:
            b = batch([], [], ops=ops)
        elif tick % 4 == 2:  # mostly resident: the last tick's pages again, and a few more
            again = np.union1d(last[-60:], rng.choice(MAPPED_PAGES, 20, replace=False))
            b = batch(rng.permutation(again), rng.random(again.size) < 0.4)
        else:  # more pages than the guest holds, in several chunks
            n = int(rng.integers(30, 320))
            last = rng.choice(MAPPED_PAGES, n, replace=False)
            b = batch(last, rng.random(n) < 0.4)
        r1 = short.access(b, now, short.walk_ahead(b, now))
        r2 = whole.access(b, now, whole.walk_ahead(b, now))
        assert (r1.refs, r1.time_ns, r1.minor_faults, r1.major_faults, r1.dropped) == \
            (r2.refs, r2.time_ns, r2.minor_faults, r2.major_faults, r2.dropped)
        np.testing.assert_array_equal(r1.dropped_mask, r2.dropped_mask)
        assert_same(state(short, short_host), state(whole, whole_host))
    runs = short.counters.reclaim_runs
    assert runs > 10 and whole.young_evictions > runs
    if policy == "lru":  # both ways taken: only older pages evicted, and pages used now too
        assert 0 < short.young_evictions < runs
    else:  # no use stamps to tell by: every reclaim walks the whole chunk again
        assert short.young_evictions == runs
    short.check_invariants()


@pytest.mark.parametrize("write_frac", [0.0, 0.4, 1.0])
def test_a_split_chunk_waits_with_its_lists_alone(write_frac):
    kernel, _ = make_guest("lru")
    ops = (MemoryOp(MemoryOpKind.MAP, 0, 0, 40, False),)
    kernel.access(batch(np.arange(40), np.zeros(40, bool), ops=ops), 0)  # all resident now
    rng = np.random.default_rng(5)
    vpns = rng.permutation(40)  # one chunk: all walked ahead
    writes = rng.random(40) < write_frac if 0 < write_frac < 1 else np.full(40, write_frac > 0)
    b = batch(vpns, writes)
    walked = kernel.walk_ahead(b, TICK_NS)
    assert walked is not None and walked.split is not None
    # The entries and the missing list are not kept; each list holds one slot beyond
    # its pages (the split stores every page to both).
    assert walked.ptes.size == 0 and walked.idx.size == 0 and walked.n_missing == 0
    w_ppns, w_tokens, r_ppns, refs = walked.split
    ppns = pte_frames(kernel.processes[0].space.page_table.leaf_entries(vpns))
    np.testing.assert_array_equal(w_ppns, ppns[writes])
    np.testing.assert_array_equal(w_tokens, b.content[writes])
    np.testing.assert_array_equal(r_ppns, ppns[~writes])
    assert refs == int(b.refs.sum())
    for listed in (w_ppns, w_tokens, r_ppns):
        assert listed.base is not None and listed.base.size == listed.size + 1
    assert kernel.dirty[ppns[writes]].all()
