"""Properties of address translation under shadow and nested paging.

Random sequences of guest actions (map, unmap, reads and writes from several
processes of two VMs) and hypervisor actions (remapping pages to new frames)
run on a small machine. After every step:

* every translated reference lands on the MPN that composing the guest's page
  table with the pmap gives (shadow tables and TLBs never go stale);
* a read returns the last value written to that guest page, whatever
  remapping, sharing and hypervisor swapping happened in between; a page never
  written reads zeroes or data of its own VM (a frame is zeroed only when it
  changes VM): no VM ever sees another VM's data;
* every machine frame is free, backs exactly one guest page of its owner, or is
  a hypervisor table page (no leak, no double mapping).

And across modes: the same sequence leaves the guests' page tables, accessed
and dirty bits included, identical under shadow and nested paging.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.hardware.page_table import PTE_FRAME_MASK, PTE_FRAME_SHIFT, PTE_PRESENT
from hvmem.hardware.walker import FaultKind
from hvmem.hypervisor.pmap import Backing
from hvmem.machine import Machine, MachineConfig
from hvmem.units import MIB

# Regions of 4 pages whose starts differ at each table level: same PT, other PD
# entry, other PDPT entry, other PML4 entry. Operations name a region and a page
# in it, so accesses often land on mapped pages.
BASES = (0x0, 0x200, 0x4_0000, 0x800_0000)
REGIONS = BASES
REGION_PAGES = 4
VMS = ("a", "b")
ASIDS = (1, 2)

region_st = st.sampled_from(REGIONS)
op_st = st.one_of(
    st.tuples(st.just("map"), st.sampled_from(VMS), st.sampled_from(ASIDS), region_st,
              st.booleans()),
    st.tuples(st.just("unmap"), st.sampled_from(VMS), st.sampled_from(ASIDS), region_st,
              st.integers(0, REGION_PAGES - 1)),
    st.tuples(st.just("access"), st.sampled_from(VMS), st.sampled_from(ASIDS),
              st.lists(st.tuples(region_st, st.integers(0, REGION_PAGES - 1), st.booleans()),
                       min_size=1, max_size=12)),
    # Indices into the VM's backed pages, so remaps hit pages in use.
    st.tuples(st.just("remap"), st.sampled_from(VMS),
              st.lists(st.integers(0, 1 << 16), min_size=1, max_size=6)),
    # The hypervisor swaps pages out (random or LRU selection).
    st.tuples(st.just("swap"), st.sampled_from(VMS), st.integers(1, 12),
              st.sampled_from(["random", "lru"])),
    # The page-sharing scanner looks at some pages (many hold zeroes or equal data).
    st.tuples(st.just("share"), st.sampled_from(VMS)),  # scans all its data pages
    # ESX-style reclamation: share, else compress, else swap.
    st.tuples(st.just("reclaim"), st.sampled_from(VMS), st.integers(1, 16)),
)


def build(paging: str, pwc: int) -> Machine:
    machine = Machine(MachineConfig(host_memory_bytes=4 * MIB, paging=paging, tlb_entries=8,
                                    tlb_ways=2, pwc_entries=pwc, salting="across"))
    for name in VMS:
        machine.add_vm(name, MIB // 2)  # 128 guest pages each
        for asid in ASIDS:
            machine.add_process(name, asid)
    return machine


def leaf_ppn(machine: Machine, vm: str, asid: int, vpn: int) -> tuple[int, bool]:
    """(ppn, writable) of the guest mapping, or (-1, False)."""
    pte = int(machine.vm(vm).processes[asid].page_table.lookup(vpn))
    if not pte & int(PTE_PRESENT):
        return -1, False
    return (pte & int(PTE_FRAME_MASK)) >> PTE_FRAME_SHIFT, bool(pte & 2)


def run(paging: str, pwc: int, ops: list) -> Machine:
    machine = build(paging, pwc)
    expected: dict[tuple[str, int], int] = {}  # (vm, ppn) -> last value written
    written_by: dict[int, set[str]] = {0: set(VMS)}  # value -> VMs that ever wrote it
    stamp = 0
    content = machine.host.frames.content
    for op in ops:
        kind, vm = op[0], op[1]
        mvm = machine.vm(vm)
        if kind == "map":
            _, _, asid, vpn, writable = op
            vpns = np.arange(vpn, vpn + REGION_PAGES)
            mapped = mvm.processes[asid].page_table.lookup_many(vpns) != 0
            if mvm.allocator.n_free - 8 >= REGION_PAGES and not mapped.any():  # room for tables
                machine.guest_map(vm, asid, vpn, REGION_PAGES, writable)
        elif kind == "unmap":
            _, _, asid, vpn, page = op
            machine.guest_unmap(vm, asid, vpn + page, 1)
        elif kind == "remap":
            backed = mvm.host_vm.pmap.backed()
            if backed.size:
                mvm.host_vm.remap(backed[np.array(op[2]) % backed.size])
        elif kind == "swap":
            mvm.host_vm.swap_out(op[2], op[3], np.random.default_rng(op[2]))
        elif kind == "reclaim":
            mvm.host_vm.reclaim(op[2], "random", np.random.default_rng(op[2]))
        elif kind == "share":
            backed = mvm.host_vm.pmap.backed()
            backed = backed[~mvm.tables.is_table_frame[backed]]  # data pages
            mvm.host_vm.share_scan(backed)
        else:
            _, _, asid, refs = op
            vpns = np.array([r[0] + r[1] for r in refs], dtype=np.int64)
            writes = np.array([r[2] for r in refs], dtype=bool)
            start = 0
            while start < vpns.size:
                batch = machine.access(vm, asid, vpns[start:], writes[start:])
                for k in range(batch.done):
                    vpn, write = int(vpns[start + k]), bool(writes[start + k])
                    ppn, _ = leaf_ppn(machine, vm, asid, vpn)
                    mpn = int(batch.mpns[k])
                    assert ppn >= 0
                    assert mpn == mvm.host_vm.pmap.mpn[ppn], "translation differs from PT∘pmap"
                    if write:
                        stamp += 1 + stamp % 3  # some writes repeat a value: shareable
                        # Low bytes set the compressed size: some pages compress, some not.
                        value = (stamp % 7 if stamp % 2 else stamp) << 8 | (stamp * 37) % 256
                        assert machine.host.frames.owner[mpn] == mvm.host_vm.vm_id
                        content[mpn] = value
                        expected[(vm, ppn)] = value
                        written_by.setdefault(value, set()).add(vm)
                    elif (vm, ppn) in expected:
                        assert content[mpn] == expected[(vm, ppn)], "data lost"
                    else:
                        # A page never written reads zeroes, or data its own VM left
                        # in a frame it freed (frames are zeroed only between VMs).
                        assert vm in written_by.get(int(content[mpn]), ()), "data leaked"
                if batch.fault is None:
                    break
                vpn = int(vpns[start + batch.done])
                ppn, writable = leaf_ppn(machine, vm, asid, vpn)
                if batch.fault.kind == FaultKind.GUEST_NOT_PRESENT:
                    assert ppn < 0
                else:
                    assert batch.fault.kind == FaultKind.GUEST_PROTECTION
                    assert ppn >= 0 and not writable and writes[start + batch.done]
                start += batch.done + 1  # the guest would kill or signal; move on
        machine.host.check_invariants()
        mvm.allocator.check_invariants()
    return machine


@settings(max_examples=100, deadline=None)
@given(ops=st.lists(op_st, min_size=4, max_size=40), paging=st.sampled_from(["shadow", "nested"]),
       pwc=st.sampled_from([0, 8]))
def test_translation_is_guest_table_composed_with_pmap(ops, paging, pwc):
    run(paging, pwc, ops)


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(op_st, min_size=4, max_size=40), pwc=st.sampled_from([0, 8]))
def test_shadow_and_nested_leave_identical_guest_tables(ops, pwc):
    shadow, nested = run("shadow", pwc, ops), run("nested", pwc, ops)
    for vm in VMS:
        s_tables, n_tables = shadow.vm(vm).tables, nested.vm(vm).tables
        frames = s_tables.table_frames()
        assert np.array_equal(frames, n_tables.table_frames())
        assert np.array_equal(s_tables.entries[frames], n_tables.entries[frames])


def test_first_touch_allocates_lazily_and_reuse_does_not_grow():
    machine = build("nested", 0)
    vm = machine.vm("a")
    machine.guest_map("a", 1, 0x100, 4)
    used_before = machine.host.frames.n_used
    n_tables = vm.tables.n_tables  # 2 roots, then PDPT, PD and PT pages for the region
    assert n_tables == 5
    # Only the page-table pages the guest wrote are backed; the data pages are not.
    assert vm.host_vm.pmap.count(Backing.PRIVATE) == n_tables
    batch = machine.access("a", 1, np.array([0x100, 0x101]), np.array([True, False]))
    assert batch.fault is None
    assert vm.host_vm.counters.first_touch_faults == n_tables + 2
    assert machine.host.frames.n_used > used_before
    # The guest frees the two touched pages and maps them again elsewhere (its free
    # list hands out the most recently freed first): no new machine memory.
    machine.guest_unmap("a", 1, 0x100, 2)
    used = machine.host.frames.n_used
    machine.guest_map("a", 1, 0x104, 2)
    batch = machine.access("a", 1, np.array([0x104, 0x105]), np.array([True, True]))
    assert batch.fault is None
    assert machine.host.frames.n_used == used
    assert vm.host_vm.counters.first_touch_faults == n_tables + 2


def test_frame_freed_by_one_vm_is_zeroed_for_another():
    machine = Machine(MachineConfig(host_memory_bytes=64 * 4096, paging="nested"))
    machine.add_vm("a", 32 * 4096)
    machine.add_vm("b", 32 * 4096)
    frames = machine.host.frames
    mpn = frames.alloc_one(0)
    frames.content[mpn] = 0xDEAD
    frames.free(mpn)
    again = frames.alloc_one(1)
    assert again == mpn and frames.content[mpn] == 0
    assert frames.counters.zeroings == 1


def test_shadow_traces_guest_page_table_writes():
    machine = build("shadow", 0)
    machine.guest_map("a", 1, 0x10, 2)
    machine.access("a", 1, np.array([0x10, 0x11]))
    pager = machine.vm("a").host_vm.paging
    exits_before = machine.vm("a").mmu.counters.exits
    machine.guest_unmap("a", 1, 0x10, 1)
    assert pager.counters.traced_writes == 1
    assert pager.counters.leaves_zapped == 1
    assert machine.vm("a").mmu.counters.exits > exits_before  # the write and the INVLPG
    batch = machine.access("a", 1, np.array([0x10]))
    assert batch.fault is not None and batch.fault.kind == FaultKind.GUEST_NOT_PRESENT
