"""Tests of hardware/walker.py: 1-D and 2-D walks, A/D bits, faults, the page-walk cache.

The kernels are called directly; every call goes through ``walk1``/``walk2`` below, so
a change of kernel signature needs adapting in one place only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.hardware.page_table import (
    PTE_ACCESSED,
    PTE_DIRTY,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_USER,
    PTE_WRITABLE,
    RadixPageTable,
    TableStore,
    make_pte,
    pte_frame,
    table_index,
)
from hvmem.hardware.walker import (
    DIM_NESTED,
    DIM_ONE,
    KIND_PWC_HIT,
    KIND_READ,
    STEP_DIM,
    STEP_FRAME,
    STEP_INDEX,
    STEP_KIND,
    STEP_LEVEL,
    STEP_PTE,
    FaultKind,
    PageWalkCache,
    new_steps,
    walk_1d,
    walk_2d,
)

A = int(PTE_ACCESSED)
D = int(PTE_DIRTY)
AD = A | D
READ_ONLY = PTE_PRESENT | PTE_USER


@dataclass
class Walk:
    status: FaultKind
    frame: int
    refs: int
    steps: np.ndarray  # the recorded rows only
    writable: bool
    fault_ppn: int = -1


def _pwc_args(pwc: PageWalkCache | None):
    if pwc is None:
        pwc = PageWalkCache(0)
    return pwc.cache, pwc.clock, pwc.n_sets, pwc.set_mask, pwc.enabled


def walk1(table: RadixPageTable, vpn: int, write: bool = False,
          pwc: PageWalkCache | None = None, vm: int = 0, asid: int = 1) -> Walk:
    steps = new_steps()
    status, frame, refs, n_steps, writable = walk_1d(
        table.store.entries, table.root_frame, vpn, write, *_pwc_args(pwc),
        vm, asid, DIM_ONE, steps, 0, True,
    )
    return Walk(FaultKind(int(status)), int(frame), int(refs), steps[:n_steps].copy(),
                bool(writable))


def walk2(guest: RadixPageTable, nested: RadixPageTable, vpn: int, write: bool = False,
          pwc: PageWalkCache | None = None, vm: int = 0, asid: int = 1) -> Walk:
    steps = new_steps()
    status, mpn, refs, n_steps, writable, fault_ppn = walk_2d(
        guest.store.entries, guest.root_frame, nested.store.entries, nested.root_frame,
        vpn, write, *_pwc_args(pwc), vm, asid, steps, 0, True,
    )
    return Walk(FaultKind(int(status)), int(mpn), int(refs), steps[:n_steps].copy(),
                bool(writable), int(fault_ppn))


def counter(start: int = 0):
    it = itertools.count(start)
    return lambda: next(it)


def one_d(n_frames: int = 64) -> RadixPageTable:
    return RadixPageTable(TableStore(n_frames, "machine"), counter())


def path_entries(table: RadixPageTable, vpn: int) -> list[int]:
    """The entries on ``vpn``'s path, root first (stops at a non-present entry)."""
    out = []
    frame = table.root_frame
    for level in (3, 2, 1, 0):
        pte = int(table.store.entries[frame, table_index(vpn, level)])
        out.append(pte)
        if not pte & 1:
            break
        frame = int(pte_frame(np.uint64(pte)))
    return out


VPN = (1 << 27) | (2 << 18) | (3 << 9) | 4  # a different index at every level


# --- 1-D walks ------------------------------------------------------------------------------


def test_1d_walk_makes_four_references_and_returns_the_frame():
    table = one_d()
    table.map(VPN, 0x5A5)
    w = walk1(table, VPN)
    assert w.status == FaultKind.NONE
    assert w.frame == 0x5A5
    assert w.refs == 4
    assert w.steps.shape[0] == 4
    assert w.steps[:, STEP_KIND].tolist() == [KIND_READ] * 4
    assert w.steps[:, STEP_DIM].tolist() == [DIM_ONE] * 4
    assert w.steps[:, STEP_LEVEL].tolist() == [3, 2, 1, 0]
    assert w.steps[:, STEP_INDEX].tolist() == [1, 2, 3, 4]
    assert w.steps[0, STEP_FRAME] == table.root_frame
    # Each step's frame is the one the previous entry pointed to.
    for k in range(1, 4):
        assert w.steps[k, STEP_FRAME] == pte_frame(np.uint64(w.steps[k - 1, STEP_PTE]))
    # The recorded leaf entry is the entry after the walk (A set).
    assert w.steps[3, STEP_PTE] == int(table.lookup(VPN))


def test_1d_walk_without_record_records_nothing():
    table = one_d()
    table.map(VPN, 9)
    steps = new_steps()
    status, frame, refs, _n, _w = walk_1d(
        table.store.entries, table.root_frame, VPN, False, *_pwc_args(None),
        0, 1, DIM_ONE, steps, 0, False,
    )
    assert (int(status), int(frame), int(refs)) == (FaultKind.NONE, 9, 4)
    assert not steps.any()


def test_1d_read_sets_accessed_on_every_level_and_no_dirty():
    table = one_d()
    table.map(VPN, 7)
    before = path_entries(table, VPN)
    assert all(not (p & AD) for p in before)
    w = walk1(table, VPN)
    assert not w.writable  # writable but not dirty: a write must walk again
    after = path_entries(table, VPN)
    assert [p & AD for p in after] == [A, A, A, A]
    assert [p & ~AD for p in after] == before  # nothing else changed


def test_1d_write_sets_dirty_on_the_leaf_only():
    table = one_d()
    table.map(VPN, 7)
    w = walk1(table, VPN, write=True)
    assert w.status == FaultKind.NONE
    assert w.writable
    after = path_entries(table, VPN)
    assert [p & AD for p in after] == [A, A, A, AD]
    # Once dirty, even a read reports the entry usable for writes.
    assert walk1(table, VPN).writable


def test_1d_not_present_at_leaf_and_at_root():
    table = one_d()
    table.map(VPN, 7)
    w = walk1(table, VPN + 1)  # same leaf table, empty entry
    assert w.status == FaultKind.NOT_PRESENT
    assert w.refs == 4
    assert w.frame == -1
    assert w.steps[-1, STEP_PTE] == 0
    w = walk1(table, 5 << 27)  # nothing under this PML4 entry
    assert w.status == FaultKind.NOT_PRESENT
    assert w.refs == 1
    assert w.steps.shape[0] == 1
    w = walk1(table, (1 << 27) | (9 << 18))  # PDPT present, PD entry missing
    assert (w.status, w.refs) == (FaultKind.NOT_PRESENT, 2)


def test_1d_write_through_read_only_leaf_is_a_protection_fault():
    table = one_d()
    table.map(VPN, 7, flags=READ_ONLY)
    before = path_entries(table, VPN)
    w = walk1(table, VPN, write=True)
    assert w.status == FaultKind.PROTECTION
    assert w.refs == 4
    assert w.frame == -1
    after = path_entries(table, VPN)
    assert not after[3] & D  # no dirty bit on a refused write
    assert after[3] & ~A == before[3]
    r = walk1(table, VPN)  # reading is fine
    assert (r.status, r.frame, r.writable) == (FaultKind.NONE, 7, False)


def test_1d_read_only_upper_level_forbids_writes():
    table = one_d()
    table.map(VPN, 7)
    # Clear W in the PD entry (level 1) on the path.
    root = table.root_frame
    pdpt = pte_frame(table.store.entries[root, 1])
    pd = pte_frame(table.store.entries[pdpt, 2])
    table.store.entries[pd, 3] &= ~PTE_WRITABLE
    assert walk1(table, VPN, write=True).status == FaultKind.PROTECTION
    assert walk1(table, VPN).status == FaultKind.NONE


def test_1d_large_page_leaf_at_level_one():
    table = one_d()
    table.map(VPN, 7)  # builds the path; the PD is then at a known frame
    root = table.root_frame
    pdpt = pte_frame(table.store.entries[root, 1])
    pd = pte_frame(table.store.entries[pdpt, 2])
    table.store.entries[pd, 5] = make_pte(0x400, PTE_PRESENT | PTE_WRITABLE | PTE_LARGE)
    vpn = (1 << 27) | (2 << 18) | (5 << 9) | 37
    w = walk1(table, vpn, write=True)
    assert w.status == FaultKind.NONE
    assert w.frame == 0x400 + 37
    assert w.refs == 3
    assert w.steps[:, STEP_LEVEL].tolist() == [3, 2, 1]
    assert int(table.store.entries[pd, 5]) & AD == AD  # the large leaf got A and D
    assert walk1(table, vpn - 37 + 511).frame == 0x400 + 511


# --- 2-D walks ------------------------------------------------------------------------------

N_PPNS = 64
MPN_OFFSET = 1000


@dataclass
class Nested:
    guest: RadixPageTable
    nested: RadixPageTable
    guest_ppns: list[int]  # guest table pages, root first

    def ppn_of(self, vpn: int) -> int:
        return int(pte_frame(self.guest.lookup(vpn)))

    def mpn_of(self, ppn: int) -> int:
        return int(pte_frame(self.nested.lookup(ppn)))


def two_d(data: dict[int, int] | None = None, guest_flags=None) -> Nested:
    """A guest table mapping ``data`` (vpn -> ppn); every guest-physical page it uses is
    backed in the nested table at MPN = ppn + MPN_OFFSET."""
    data = {VPN: 40} if data is None else data
    guest_store = TableStore(N_PPNS, "guest-physical")
    guest = RadixPageTable(guest_store, counter())
    for vpn, ppn in data.items():
        if guest_flags is None:
            guest.map(vpn, ppn)
        else:
            guest.map(vpn, ppn, flags=guest_flags)
    nested = RadixPageTable(TableStore(2048, "machine"), counter(1500))
    table_ppns = guest_store.table_frames()
    backed = np.union1d(table_ppns, np.array(list(data.values())))
    nested.map_many(backed, backed + MPN_OFFSET)
    return Nested(guest, nested, table_ppns.tolist())


def test_2d_walk_makes_24_references_and_composes_the_tables():
    n = two_d()
    w = walk2(n.guest, n.nested, VPN)
    assert w.status == FaultKind.NONE
    assert w.refs == 24
    assert w.frame == n.mpn_of(n.ppn_of(VPN)) == 40 + MPN_OFFSET
    assert w.fault_ppn == -1
    assert w.steps.shape[0] == 24
    assert np.all(w.steps[:, STEP_KIND] == KIND_READ)
    dims = w.steps[:, STEP_DIM].tolist()
    assert dims == ([DIM_NESTED] * 4 + [DIM_ONE]) * 4 + [DIM_NESTED] * 4
    guest_rows = w.steps[w.steps[:, STEP_DIM] == DIM_ONE]
    assert guest_rows[:, STEP_LEVEL].tolist() == [3, 2, 1, 0]
    # Guest rows name guest-physical table pages, root first.
    assert guest_rows[:, STEP_FRAME].tolist() == n.guest_ppns
    # Each nested walk translates the guest page read next.
    for k in range(4):
        nested_rows = w.steps[5 * k : 5 * k + 4]
        assert nested_rows[:, STEP_LEVEL].tolist() == [3, 2, 1, 0]
        assert pte_frame(np.uint64(nested_rows[3, STEP_PTE])) == n.guest_ppns[k] + MPN_OFFSET


def test_2d_sets_accessed_bits_in_both_dimensions_and_dirty_on_leaves_of_a_write():
    n = two_d()
    w = walk2(n.guest, n.nested, VPN, write=True)
    assert w.status == FaultKind.NONE
    assert w.writable
    assert [p & AD for p in path_entries(n.guest, VPN)] == [A, A, A, AD]
    data_ppn = n.ppn_of(VPN)
    assert [p & AD for p in path_entries(n.nested, data_ppn)] == [A, A, A, AD]
    # Nested leaves of guest table pages were only read.
    for ppn in n.guest_ppns:
        assert path_entries(n.nested, ppn)[-1] & AD == A


def test_2d_read_sets_no_dirty_bits():
    n = two_d()
    w = walk2(n.guest, n.nested, VPN)
    assert not w.writable
    assert all(p & D == 0 for p in path_entries(n.guest, VPN))
    assert all(p & D == 0 for p in path_entries(n.nested, n.ppn_of(VPN)))


def test_2d_guest_not_present_and_guest_protection():
    n = two_d()
    w = walk2(n.guest, n.nested, VPN + 1)
    assert w.status == FaultKind.GUEST_NOT_PRESENT
    assert w.refs == 20  # four guest levels, each after a 4-reference nested walk
    assert w.fault_ppn == -1
    ro = two_d(guest_flags=READ_ONLY)
    w = walk2(ro.guest, ro.nested, VPN, write=True)
    assert w.status == FaultKind.GUEST_PROTECTION
    assert w.refs == 20
    assert walk2(ro.guest, ro.nested, VPN).status == FaultKind.NONE


@pytest.mark.parametrize("level", [3, 2, 1, 0])
def test_2d_backing_missing_names_the_guest_table_page(level):
    n = two_d()
    table_ppn = n.guest_ppns[3 - level]  # the guest table page read at this level
    n.nested.unmap(table_ppn)
    w = walk2(n.guest, n.nested, VPN)
    assert w.status == FaultKind.BACKING_MISSING
    assert w.fault_ppn == table_ppn
    assert w.frame == -1
    assert w.refs == (3 - level) * 5 + 4


def test_2d_backing_missing_names_the_data_page():
    n = two_d()
    n.nested.unmap(40)
    w = walk2(n.guest, n.nested, VPN, write=True)
    assert w.status == FaultKind.BACKING_MISSING
    assert w.fault_ppn == 40
    assert w.refs == 24


def test_2d_write_to_read_only_backing():
    n = two_d()
    n.nested.map(40, 40 + MPN_OFFSET, flags=READ_ONLY)  # e.g. a shared page
    w = walk2(n.guest, n.nested, VPN, write=True)
    assert w.status == FaultKind.BACKING_READ_ONLY
    assert w.fault_ppn == 40
    r = walk2(n.guest, n.nested, VPN)
    assert (r.status, r.frame, r.writable) == (FaultKind.NONE, 40 + MPN_OFFSET, False)


def test_2d_large_guest_page():
    n = two_d()
    pd_ppn = n.guest_ppns[2]
    n.guest.store.entries[pd_ppn, 6] = make_pte(0, PTE_PRESENT | PTE_WRITABLE | PTE_LARGE)
    vpn = (1 << 27) | (2 << 18) | (6 << 9) | 33
    n.nested.map(33, 33 + MPN_OFFSET)
    w = walk2(n.guest, n.nested, vpn)
    assert w.status == FaultKind.NONE
    assert w.frame == 33 + MPN_OFFSET
    assert w.refs == 3 * 5 + 4


# --- page-walk cache ---------------------------------------------------------------------------


def test_pwc_shortens_a_repeated_1d_walk():
    table = one_d()
    table.map(VPN, 7)
    pwc = PageWalkCache(32, 4)
    first = walk1(table, VPN, pwc=pwc)
    assert (first.status, first.frame, first.refs) == (FaultKind.NONE, 7, 4)
    again = walk1(table, VPN, pwc=pwc)
    assert (again.status, again.frame) == (FaultKind.NONE, 7)
    assert again.refs == 1  # the PD entry was cached: only the leaf is read
    assert again.steps[0, STEP_KIND] == KIND_PWC_HIT
    assert again.steps[0, STEP_LEVEL] == 1
    # A neighbour in the same leaf table also starts at the leaf.
    table.map(VPN + 1, 8)
    assert walk1(table, VPN + 1, pwc=pwc).refs == 1
    # Another address space does not see these entries.
    assert walk1(table, VPN, pwc=pwc, asid=2).refs == 4
    pwc.flush_asid(0, 1)
    assert walk1(table, VPN, pwc=pwc).refs == 4


def test_pwc_shortens_a_repeated_2d_walk():
    n = two_d()
    pwc = PageWalkCache(32, 4)
    first = walk2(n.guest, n.nested, VPN, pwc=pwc)
    assert first.status == FaultKind.NONE
    assert first.refs <= 24
    again = walk2(n.guest, n.nested, VPN, pwc=pwc)
    assert again.status == FaultKind.NONE
    assert again.frame == first.frame == 40 + MPN_OFFSET
    assert again.refs < first.refs
    assert KIND_PWC_HIT in again.steps[:, STEP_KIND].tolist()
    pwc.flush_vm(0)
    assert walk2(n.guest, n.nested, VPN, pwc=pwc).refs == first.refs


def test_disabled_pwc():
    pwc = PageWalkCache(0)
    assert not pwc.enabled
    table = one_d()
    table.map(VPN, 7)
    assert walk1(table, VPN, pwc=pwc).refs == 4
    assert walk1(table, VPN, pwc=pwc).refs == 4


# --- properties --------------------------------------------------------------------------------

VPNS = st.integers(0, (1 << 36) - 1)


@settings(max_examples=40, deadline=None)
@given(
    mapping=st.dictionaries(VPNS, st.integers(0, (1 << 40) - 1), min_size=1, max_size=12),
    probe=VPNS,
    use_pwc=st.booleans(),
)
def test_1d_walk_agrees_with_software_walk(mapping, probe, use_pwc):
    table = one_d(128)
    for vpn, frame in mapping.items():
        table.map(vpn, frame)
    pwc = PageWalkCache(16, 4) if use_pwc else None
    for vpn in [*mapping, probe, *mapping]:
        w = walk1(table, vpn, pwc=pwc)
        if vpn in mapping:
            assert (w.status, w.frame) == (FaultKind.NONE, mapping[vpn])
            assert 1 <= w.refs <= 4
        else:
            assert w.status == FaultKind.NOT_PRESENT


@settings(max_examples=30, deadline=None)
@given(
    vpns=st.lists(VPNS, min_size=1, max_size=6, unique=True),
    use_pwc=st.booleans(),
    write=st.booleans(),
)
def test_2d_walk_returns_nested_of_guest(vpns, use_pwc, write):
    data = {vpn: N_PPNS - 1 - i for i, vpn in enumerate(vpns)}
    n = two_d(data)
    pwc = PageWalkCache(16, 4) if use_pwc else None
    for vpn in vpns + vpns:
        w = walk2(n.guest, n.nested, vpn, write=write, pwc=pwc)
        assert w.status == FaultKind.NONE
        assert w.frame == n.mpn_of(n.ppn_of(vpn)) == data[vpn] + MPN_OFFSET
        assert w.refs <= 24
        if pwc is None:
            assert w.refs == 24
