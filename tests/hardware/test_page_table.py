"""Tests of hardware/page_table.py: entry bits, table stores, write tracing, radix trees."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError, OutOfMemoryError
from hvmem.hardware import page_table as pt
from hvmem.hardware.page_table import (
    PTE_ACCESSED,
    PTE_DIRTY,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_USER,
    PTE_WRITABLE,
    TABLE_LINK_FLAGS,
    RadixPageTable,
    TableStore,
    describe_pte,
    make_pte,
    pte_frame,
    table_index,
    tree_tables,
)


class Counter:
    """A frame allocator handing out 0, 1, 2, ... and remembering what it gave."""

    def __init__(self, start: int = 0):
        self._it = itertools.count(start)
        self.given: list[int] = []

    def __call__(self) -> int:
        frame = next(self._it)
        self.given.append(frame)
        return frame


def new_tree(n_frames: int = 64, start: int = 0) -> tuple[TableStore, RadixPageTable, Counter]:
    store = TableStore(n_frames, "test store")
    alloc = Counter(start)
    return store, RadixPageTable(store, alloc), alloc


# --- entry layout -----------------------------------------------------------------------------


def test_pte_bits_match_x86():
    assert int(PTE_PRESENT) == 1 << 0
    assert int(PTE_WRITABLE) == 1 << 1
    assert int(PTE_USER) == 1 << 2
    assert int(PTE_ACCESSED) == 1 << 5
    assert int(PTE_DIRTY) == 1 << 6
    assert int(PTE_LARGE) == 1 << 7
    assert pt.PTE_FRAME_SHIFT == 12
    assert int(pt.PTE_FRAME_MASK) == sum(1 << b for b in range(12, 52))
    assert int(pt.PTE_FLAGS_MASK) == 0xFFF
    assert int(TABLE_LINK_FLAGS) == 0b111
    assert (pt.LEVELS, pt.ENTRIES_PER_TABLE, pt.INDEX_BITS, pt.VPN_BITS) == (4, 512, 9, 36)


def test_make_pte_and_pte_frame_round_trip():
    pte = make_pte(0x1A3, PTE_PRESENT | PTE_DIRTY)
    assert int(pte) == (0x1A3 << 12) | 0x41
    assert pte_frame(pte) == 0x1A3
    top = (1 << 40) - 1
    assert pte_frame(make_pte(top, 0xFFF)) == top
    # Bits above 51 (NX, available) are not part of the frame.
    assert pte_frame(np.uint64((1 << 63) | (5 << 12) | 1)) == 5


def test_table_index_splits_vpn_in_nine_bit_groups():
    vpn = (3 << 27) | (5 << 18) | (7 << 9) | 11
    assert [table_index(vpn, level) for level in (3, 2, 1, 0)] == [3, 5, 7, 11]
    assert table_index((1 << 36) - 1, 3) == 511


def test_describe_pte():
    assert describe_pte(0) == "not present"
    assert describe_pte(int(make_pte(0x1A3, PTE_WRITABLE))) == "not present"  # P clear
    full = PTE_PRESENT | PTE_WRITABLE | PTE_USER | PTE_ACCESSED | PTE_DIRTY
    assert describe_pte(int(make_pte(0x1A3, full))) == "frame 0x1a3 P W U A D"
    assert describe_pte(int(make_pte(0x200, PTE_PRESENT | PTE_LARGE))) == "frame 0x200 P PS"
    assert describe_pte(np.uint64(make_pte(0, PTE_PRESENT))) == "frame 0x0 P"


# --- TableStore ---------------------------------------------------------------------------------


def test_store_add_read_write_remove():
    store = TableStore(8, "s")
    assert store.n_tables == 0
    store.add_table(3)
    store.add_table(5)
    assert store.n_tables == 2
    assert store.is_table(3)
    assert not store.is_table(4)
    assert store.table_frames().tolist() == [3, 5]
    assert store.read(3, 17) == 0
    store.write(3, 17, 0xABC1)
    assert store.read(3, 17) == 0xABC1
    assert store.entries[3, 17] == 0xABC1
    assert store.read(5, 17) == 0
    store.remove_table(3)
    assert store.n_tables == 1
    assert store.table_frames().tolist() == [5]
    assert store.entries[3, 17] == 0  # cleared
    # A table page added again starts zeroed.
    store.add_table(3)
    assert store.read(3, 17) == 0


def test_store_errors():
    with pytest.raises(ConfigError):
        TableStore(0, "empty")
    store = TableStore(4, "small store")
    with pytest.raises(OutOfMemoryError, match="small store"):
        store.add_table(4)
    with pytest.raises(OutOfMemoryError):
        store.add_table(-1)
    store.add_table(1)
    with pytest.raises(ValueError):
        store.add_table(1)
    with pytest.raises(ValueError):
        store.read(2, 0)
    with pytest.raises(ValueError):
        store.write(2, 0, 1)
    with pytest.raises(ValueError):
        store.remove_table(2)
    with pytest.raises(ValueError):
        store.write_many(np.array([1, 2]), np.array([0, 0]), np.array([1, 1], dtype=np.uint64))
    assert store.entries[1, 0] == 0  # the batch with a bad frame wrote nothing


def test_write_many_writes_a_batch():
    store = TableStore(4, "s")
    store.add_table(0)
    store.add_table(2)
    store.write_many(np.array([0, 2, 0]), np.array([1, 1, 511]),
                     np.array([10, 20, 30], dtype=np.uint64))
    assert store.entries[0, 1] == 10
    assert store.entries[2, 1] == 20
    assert store.entries[0, 511] == 30


def test_write_hook_sees_old_and_new_before_the_write_lands():
    store = TableStore(4, "s")
    store.add_table(1)
    store.add_table(2)
    store.write(1, 7, 0x1001)
    calls = []

    def hook(frames, indices, old, new):
        # Still the old contents when the hook runs.
        calls.append((frames.tolist(), indices.tolist(), old.tolist(), new.tolist(),
                      store.entries[frames, indices].tolist()))

    assert not store.write_protected
    store.write_protect(hook)
    assert store.write_protected
    store.write_many(np.array([1, 2]), np.array([7, 9]), np.array([0x2003, 0x3003],
                                                                  dtype=np.uint64))
    assert calls == [([1, 2], [7, 9], [0x1001, 0], [0x2003, 0x3003], [0x1001, 0])]
    assert store.entries[1, 7] == 0x2003
    assert store.entries[2, 9] == 0x3003
    store.write(2, 9, 0)
    assert calls[-1][:4] == ([2], [9], [0x3003], [0])
    store.write_protect(None)
    assert not store.write_protected
    store.write(1, 0, 5)
    assert len(calls) == 2


def test_lazy_store_spans_a_large_address_space_cheaply():
    store = TableStore(1 << 20, "4 GiB of frames")  # 4 GiB of entries if committed
    store.add_table((1 << 20) - 1)
    store.write((1 << 20) - 1, 511, 7)
    assert store.read((1 << 20) - 1, 511) == 7
    assert store.entries.shape == (1 << 20, 512)


# --- RadixPageTable -------------------------------------------------------------------------------


def test_new_tree_allocates_a_root():
    store, table, alloc = new_tree(start=5)
    assert table.root_frame == 5
    assert store.is_table(5)
    assert store.n_tables == 1
    assert alloc.given == [5]


def test_adopt_existing_root():
    store = TableStore(8, "s")
    store.add_table(2)
    alloc = Counter(3)
    table = RadixPageTable(store, alloc, root_frame=2)
    assert table.root_frame == 2
    assert alloc.given == []
    with pytest.raises(ValueError):
        RadixPageTable(store, alloc, root_frame=4)


def test_map_lookup_unmap_one_page():
    store, table, _ = new_tree()
    vpn = 0x12345
    assert table.lookup(vpn) == 0
    table.map(vpn, 0x77)
    leaf = table.lookup(vpn)
    assert pte_frame(leaf) == 0x77
    assert int(leaf) & 0xFFF == int(TABLE_LINK_FLAGS)
    assert table.lookup(vpn + 1) == 0
    old = table.unmap(vpn)
    assert old == leaf
    assert table.lookup(vpn) == 0
    assert table.unmap(vpn) == 0  # nothing there any more
    assert table.unmap(1 << 30) == 0  # a path that never existed
    assert store.n_tables == 4  # unmapping keeps the table pages


def test_map_flags_present_always_set():
    _, table, _ = new_tree()
    table.map(1, 9, flags=0)
    assert int(table.lookup(1)) == (9 << 12) | 1
    table.map(2, 9, flags=PTE_PRESENT | PTE_USER)
    assert int(table.lookup(2)) & int(PTE_WRITABLE) == 0
    table.map(1, 10)  # remapping overwrites
    assert pte_frame(table.lookup(1)) == 10


def test_intermediate_tables_created_once_per_prefix():
    store, table, alloc = new_tree()
    table.map(0, 100)
    assert store.n_tables == 4  # root + PDPT + PD + PT
    table.map(1, 101)  # same leaf table
    table.map(511, 102)
    assert store.n_tables == 4
    table.map(512, 103)  # next PT under the same PD
    assert store.n_tables == 5
    table.map(1 << 18, 104)  # new PD and PT under the same PDPT
    assert store.n_tables == 7
    table.map(1 << 27, 105)  # new PDPT, PD and PT
    assert store.n_tables == 10
    table.map((1 << 27) + 5, 106)
    assert store.n_tables == 10
    assert alloc.given == list(range(10))
    assert sorted(table.table_frames().tolist()) == list(range(10))


def test_map_many_creates_one_table_per_distinct_prefix():
    store, table, _ = new_tree()
    # Two PTs under one PD, plus one page in another PDPT: 1 + (1+1+2) + (1+1+1) = 8.
    vpns = np.array([0, 1, 2, 600, 601, (1 << 27) | 3])
    frames = np.array([10, 11, 12, 13, 14, 15])
    table.map_many(vpns, frames)
    assert store.n_tables == 8
    assert [pte_frame(p) for p in table.lookup_many(vpns)] == frames.tolist()
    assert table.lookup_many(np.array([3, 599, 1 << 27])).tolist() == [0, 0, 0]


def test_map_many_argument_errors():
    _, table, _ = new_tree()
    with pytest.raises(ValueError):
        table.map_many(np.array([1, 2]), np.array([1]))
    with pytest.raises(ConfigError):
        table.map(1 << 36, 1)
    with pytest.raises(ConfigError):
        table.map(-1, 1)
    table.map_many(np.array([], dtype=np.int64), np.array([], dtype=np.int64))


def test_unmap_many_returns_old_entries():
    _, table, _ = new_tree()
    table.map_many(np.array([4, 5, 6]), np.array([40, 50, 60]))
    old = table.unmap_many(np.array([5, 7, 1 << 20, 4]))
    assert [pte_frame(p) if p else 0 for p in old] == [50, 0, 0, 40]
    assert table.lookup_many(np.array([4, 5, 6])).tolist()[:2] == [0, 0]
    assert pte_frame(table.lookup(6)) == 60


def test_mapping_is_traced_through_the_store():
    store, table, _ = new_tree()
    writes = []
    store.write_protect(lambda f, i, o, n: writes.append((f.tolist(), i.tolist())))
    table.map(3, 30)
    # Three links (PML4, PDPT, PD entries) then the leaf.
    assert [len(f) for f, _ in writes] == [1, 1, 1, 1]
    assert writes[-1][1] == [3]
    writes.clear()
    table.map(4, 40)
    assert writes == [([3], [4])]  # the leaf table is frame 3 (root 0, then 1, 2, 3)
    writes.clear()
    table.unmap(4)
    assert writes == [([3], [4])]


def test_two_trees_share_a_store_without_interfering():
    store = TableStore(32, "s")
    alloc = Counter()
    a = RadixPageTable(store, alloc)
    b = RadixPageTable(store, alloc)
    a.map(7, 70)
    b.map(7, 71)
    assert pte_frame(a.lookup(7)) == 70
    assert pte_frame(b.lookup(7)) == 71
    assert set(a.table_frames().tolist()).isdisjoint(b.table_frames().tolist())
    assert store.n_tables == 8


def test_tree_tables_levels_and_bases():
    store, table, _ = new_tree()
    table.map(0, 100)  # frames 1 (PDPT), 2 (PD), 3 (PT)
    table.map(512 + 3, 101)  # frame 4: PT for vpns 512..1023
    table.map((1 << 27) | (2 << 18) | 5, 102)  # frames 5, 6, 7
    frames, levels, bases = tree_tables(store, table.root_frame)
    got = sorted(zip(frames.tolist(), levels.tolist(), bases.tolist(), strict=True))
    assert got == [
        (0, 3, 0),
        (1, 2, 0),
        (2, 1, 0),
        (3, 0, 0),
        (4, 0, 512),
        (5, 2, 1 << 27),
        (6, 1, (1 << 27) | (2 << 18)),
        (7, 0, (1 << 27) | (2 << 18)),
    ]
    assert frames[0] == table.root_frame  # root first
    assert list(levels) == sorted(levels, reverse=True)  # level by level
    assert np.array_equal(table.table_frames(), frames)


def test_tree_tables_skips_large_page_leaves():
    store, table, _ = new_tree()
    table.map(0, 100)  # root 0, PDPT 1, PD 2, PT 3
    # A 2 MiB leaf in the PD, at index 1 (vpns 512..1023).
    store.write(2, 1, make_pte(0x400, PTE_PRESENT | PTE_LARGE))
    frames, levels, _ = tree_tables(store, table.root_frame)
    assert sorted(frames.tolist()) == [0, 1, 2, 3]
    assert 0x400 not in frames.tolist()
    assert sorted(levels.tolist()) == [0, 1, 2, 3]


def test_lookup_of_a_large_page_returns_its_leaf_entry():
    # PS is interpreted at level 1 (module doc): a 2 MiB mapping's leaf is the PD entry,
    # and frame 0x20 is a data page, not a table to descend into.
    store, table, _ = new_tree()
    table.map(0, 100)  # root 0, PDPT 1, PD 2, PT 3
    large = make_pte(0x20, PTE_PRESENT | PTE_WRITABLE | PTE_LARGE)
    store.write(2, 1, large)  # vpns 512..1023
    assert int(table.lookup(512 + 7)) == int(large)
    assert table.lookup_many(np.array([512, 1023])).tolist() == [int(large)] * 2
    assert pte_frame(table.lookup(0)) == 100


@settings(max_examples=40, deadline=None)
@given(
    mapping=st.dictionaries(st.integers(0, (1 << 36) - 1), st.integers(0, (1 << 40) - 1),
                            min_size=1, max_size=30),
    batch=st.booleans(),
)
def test_lookup_returns_what_was_mapped(mapping, batch):
    store = TableStore(200, "s")
    table = RadixPageTable(store, Counter())
    vpns = np.array(list(mapping), dtype=np.int64)
    frames = np.array(list(mapping.values()), dtype=np.int64)
    if batch:
        table.map_many(vpns, frames)
    else:
        for v, f in mapping.items():
            table.map(v, f)
    got = table.lookup_many(vpns)
    assert [pte_frame(p) for p in got] == frames.tolist()
    # Table pages: one root plus one per distinct prefix at each level.
    expected = 1 + sum(len({v >> (9 * level) for v in mapping}) for level in (1, 2, 3))
    assert store.n_tables == expected
    f, lv, bases = tree_tables(store, table.root_frame)
    assert f.size == expected
    leaf_bases = sorted(bases[lv == 0].tolist())
    assert leaf_bases == sorted({(v >> 9) << 9 for v in mapping})
