"""Tests of hardware/tlb.py: set-associative LRU, tagging, flushes, pycachesim agreement."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError
from hvmem.hardware.tlb import INVALID, TAG, VALUE, Tlb, tlb_key


def lookup_or_fill(tlb: Tlb, vm: int, asid: int, vpn: int, mpn: int | None = None) -> bool:
    """Look a page up; on a miss insert it (as a walk would). Returns whether it hit."""
    if tlb.lookup(vm, asid, vpn) is not None:
        return True
    tlb.insert(vm, asid, vpn, vpn + 1000 if mpn is None else mpn)
    return False


def pycachesim_hits(n_sets: int, ways: int, pages: list[int]) -> int:
    from cachesim import Cache, CacheSimulator, MainMemory

    mem = MainMemory()
    cache = Cache("T", n_sets, ways, 4096, "LRU")
    mem.load_to(cache)
    mem.store_from(cache)
    sim = CacheSimulator(cache, mem)
    sim.loadstore([([p * 4096 for p in pages], [])], length=1)
    return int(cache.backend.HIT_count)


def sets_holding(tlb: Tlb, key: int) -> list[int]:
    return sorted({int(s) for s, _ in zip(*np.nonzero(tlb.cache[:, :, TAG] == key), strict=True)})


# --- geometry -----------------------------------------------------------------------------


def test_geometry_derived_from_entries_and_ways():
    tlb = Tlb(64, 4)
    assert (tlb.entries, tlb.ways, tlb.n_sets) == (64, 4, 16)
    assert tlb.set_mask == 15
    odd = Tlb(12, 2)
    assert odd.n_sets == 6
    assert odd.set_mask == -1
    assert tlb.occupancy() == 0


@pytest.mark.parametrize(("entries", "ways"), [(0, 1), (4, 0), (-4, 2), (6, 4), (10, 3)])
def test_bad_geometry_raises_config_error(entries, ways):
    with pytest.raises(ConfigError) as info:
        Tlb(entries, ways, name="itlb")
    assert "itlb" in str(info.value)


# --- hand-checked LRU -----------------------------------------------------------------------


def test_two_entry_fully_associative_lru_by_hand():
    # 1 miss, 2 miss, 1 hit, 3 miss (evicts 2, the LRU), 2 miss (evicts 1).
    tlb = Tlb(2, 2)
    outcomes = [lookup_or_fill(tlb, 0, 0, p) for p in (1, 2, 1, 3, 2)]
    assert outcomes == [False, False, True, False, False]
    assert (tlb.counters.hits, tlb.counters.misses) == (1, 4)
    # Now 3 and 2 are cached, 1 is not.
    assert tlb.lookup(0, 0, 3) is not None
    assert tlb.lookup(0, 0, 2) is not None
    assert tlb.lookup(0, 0, 1) is None


def test_run_pages_same_hand_example():
    tlb = Tlb(2, 2)
    assert tlb.run_pages(np.array([1, 2, 1, 3, 2])) == 1
    assert (tlb.counters.hits, tlb.counters.misses) == (1, 4)
    assert tlb.occupancy() == 2


def test_hit_refreshes_recency():
    # 1, 2, then 1 again makes 2 the LRU; 3 evicts 2, so 1 still hits.
    tlb = Tlb(2, 2)
    assert tlb.run_pages(np.array([1, 2, 1, 3, 1])) == 2
    assert tlb.lookup(0, 0, 2) is None


def test_lookup_returns_value_and_perm():
    tlb = Tlb(8, 2)
    tlb.insert(3, 7, 0x1234, 0xABC, perm=1)
    assert tlb.lookup(3, 7, 0x1234) == (0xABC, 1)
    tlb.insert(3, 7, 0x1234, 0xDEF, perm=0)  # refresh in place, no second copy
    assert tlb.lookup(3, 7, 0x1234) == (0xDEF, 0)
    assert tlb.occupancy() == 1


def test_empty_slots_fill_before_eviction():
    tlb = Tlb(4, 4)
    tlb.run_pages(np.array([10, 20, 30, 40]))
    assert tlb.occupancy() == 4
    assert tlb.run_pages(np.array([40, 30, 20, 10])) == 4


# --- set mapping ---------------------------------------------------------------------------


def test_page_maps_to_vpn_mod_sets_power_of_two():
    tlb = Tlb(8, 2)  # 4 sets
    for vpn in (0, 1, 5, 6, 11):
        tlb.insert(0, 0, vpn, vpn)
        assert sets_holding(tlb, tlb_key(0, 0, vpn)) == [vpn % 4]


def test_page_maps_to_vpn_mod_sets_non_power_of_two():
    tlb = Tlb(6, 2)  # 3 sets
    for vpn in (0, 1, 2, 3, 5, 7, 100):
        tlb.insert(0, 0, vpn, vpn)
        assert sets_holding(tlb, tlb_key(0, 0, vpn)) == [vpn % 3]


def test_direct_mapped_conflicts_only_within_a_set():
    tlb = Tlb(4, 1)  # 4 sets of one way
    # 0 and 4 share set 0 and evict each other; 1 sits alone in set 1.
    assert tlb.run_pages(np.array([0, 1, 4, 1, 0, 1])) == 2
    tlb3 = Tlb(3, 1)  # 3 sets: 0 and 3 conflict, 0 and 4 do not
    assert tlb3.run_pages(np.array([0, 4, 0, 4])) == 2
    assert Tlb(3, 1).run_pages(np.array([0, 3, 0, 3])) == 0


# --- tagging --------------------------------------------------------------------------------


def test_same_vpn_different_asid_or_vm_misses():
    tlb = Tlb(16, 4)
    tlb.insert(0, 1, 0x40, 111)
    assert tlb.lookup(0, 2, 0x40) is None
    assert tlb.lookup(1, 1, 0x40) is None
    assert tlb.lookup(0, 1, 0x40) == (111, 0)
    tlb.insert(0, 2, 0x40, 222)
    tlb.insert(1, 1, 0x40, 333)
    assert tlb.lookup(0, 1, 0x40)[0] == 111
    assert tlb.lookup(0, 2, 0x40)[0] == 222
    assert tlb.lookup(1, 1, 0x40)[0] == 333
    assert tlb.occupancy() == 3


def test_key_layout():
    assert tlb_key(0, 0, 5) == 5
    assert tlb_key(1, 0, 0) == 1 << 48
    assert tlb_key(0, 1, 0) == 1 << 36
    assert tlb_key(3, 2, 7) == (3 << 48) | (2 << 36) | 7


# --- maintenance ------------------------------------------------------------------------------


def populated() -> Tlb:
    tlb = Tlb(32, 4)
    for vm, asid, vpn in [(0, 1, 1), (0, 1, 2), (0, 2, 1), (0, 2, 3), (1, 1, 1), (1, 3, 9)]:
        tlb.insert(vm, asid, vpn, 100 * vm + 10 * asid + vpn)
    assert tlb.occupancy() == 6
    return tlb


def test_flush_all_drops_everything_and_counts():
    tlb = populated()
    tlb.flush_all()
    assert tlb.occupancy() == 0
    assert tlb.counters.flushes_all == 1
    assert tlb.counters.entries_dropped == 6
    assert np.all(tlb.cache[:, :, TAG] == INVALID)
    assert tlb.lookup(0, 1, 1) is None
    tlb.flush_all()  # nothing left to drop
    assert tlb.counters.entries_dropped == 6
    assert tlb.counters.flushes_all == 2


def test_flush_asid_keeps_other_address_spaces():
    tlb = populated()
    tlb.flush_asid(0, 1)
    assert tlb.counters.entries_dropped == 2
    assert tlb.counters.flushes_asid == 1
    assert tlb.lookup(0, 1, 1) is None
    assert tlb.lookup(0, 1, 2) is None
    # The same ASID in another VM, and other ASIDs of this VM, survive.
    assert tlb.lookup(0, 2, 1) == (21, 0)
    assert tlb.lookup(0, 2, 3) == (23, 0)
    assert tlb.lookup(1, 1, 1) == (111, 0)
    assert tlb.lookup(1, 3, 9) == (139, 0)
    assert tlb.occupancy() == 4


def test_flush_vm_drops_all_its_address_spaces_only():
    tlb = populated()
    tlb.flush_vm(0)
    assert tlb.counters.entries_dropped == 4
    assert tlb.occupancy() == 2
    assert tlb.lookup(0, 2, 3) is None
    assert tlb.lookup(1, 1, 1) == (111, 0)
    tlb.flush_vm(1)
    assert tlb.occupancy() == 0
    assert tlb.counters.entries_dropped == 6


def test_invalidate_one_page():
    tlb = populated()
    tlb.invalidate(0, 2, 3)
    assert tlb.counters.invalidations == 1
    assert tlb.counters.entries_dropped == 1
    assert tlb.lookup(0, 2, 3) is None
    assert tlb.lookup(0, 2, 1) == (21, 0)
    assert tlb.occupancy() == 5
    # Invalidating something absent counts the operation but drops nothing.
    tlb.invalidate(0, 2, 3)
    tlb.invalidate(5, 5, 5)
    assert tlb.counters.invalidations == 3
    assert tlb.counters.entries_dropped == 1


def test_invalidated_slot_is_reused_before_evicting():
    tlb = Tlb(2, 2)
    tlb.run_pages(np.array([1, 2]))
    tlb.invalidate(0, 0, 2)
    tlb.run_pages(np.array([3]))  # takes the freed slot, so 1 survives
    assert tlb.run_pages(np.array([1, 3])) == 2


# --- reference model ---------------------------------------------------------------------------

GEOMETRY = st.tuples(st.sampled_from([1, 2, 3, 4, 6, 8, 16]), st.integers(1, 8))


@settings(max_examples=60, deadline=None)
@given(
    geometry=GEOMETRY,
    pages=st.lists(st.integers(0, 40), min_size=1, max_size=300),
)
def test_run_pages_matches_pycachesim(geometry, pages):
    n_sets, ways = geometry
    tlb = Tlb(n_sets * ways, ways)
    hits = tlb.run_pages(np.array(pages, dtype=np.int64))
    assert hits == pycachesim_hits(n_sets, ways, pages)
    assert tlb.counters.hits == hits
    assert tlb.counters.misses == len(pages) - hits


@settings(max_examples=40, deadline=None)
@given(
    geometry=GEOMETRY,
    pages=st.lists(st.integers(0, 40), min_size=1, max_size=200),
    cuts=st.lists(st.integers(0, 200), max_size=5),
)
def test_run_pages_in_chunks_equals_one_call(geometry, pages, cuts):
    n_sets, ways = geometry
    stream = np.array(pages, dtype=np.int64)
    whole = Tlb(n_sets * ways, ways)
    whole.run_pages(stream)
    chunked = Tlb(n_sets * ways, ways)
    bounds = [0, *sorted(min(c, len(pages)) for c in cuts), len(pages)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        chunked.run_pages(stream[lo:hi])
    assert (chunked.counters.hits, chunked.counters.misses) == (
        whole.counters.hits,
        whole.counters.misses,
    )
    assert np.array_equal(np.sort(chunked.cache[:, :, TAG], axis=1),
                          np.sort(whole.cache[:, :, TAG], axis=1))


@settings(max_examples=30, deadline=None)
@given(geometry=GEOMETRY, pages=st.lists(st.integers(0, 30), min_size=1, max_size=150))
def test_lookup_insert_path_equals_run_pages(geometry, pages):
    n_sets, ways = geometry
    fast = Tlb(n_sets * ways, ways)
    fast.run_pages(np.array(pages, dtype=np.int64))
    slow = Tlb(n_sets * ways, ways)
    for p in pages:
        lookup_or_fill(slow, 0, 0, p, mpn=p)
    assert (slow.counters.hits, slow.counters.misses) == (fast.counters.hits, fast.counters.misses)
    # run_pages caches each page as its own value.
    valid = fast.cache[:, :, TAG] != INVALID
    assert np.array_equal(fast.cache[:, :, VALUE][valid], fast.cache[:, :, TAG][valid])
