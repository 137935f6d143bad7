"""Properties of address translation under shadow and nested paging.

Random sequences of guest actions (reads and writes from several processes of
two VMs, unmapping and mapping pages again) and hypervisor actions (remapping
pages to new frames, sharing, swapping, ESX-style reclamation) run on a small
machine. After every step:

* every translated reference lands on the MPN that composing the guest's page
  table with the pmap gives (shadow tables and TLBs never go stale);
* a read returns the last value written to that guest page, whatever
  remapping, sharing, copy-on-write, compression and hypervisor swapping
  happened in between; a page never written reads zeroes or data of its own VM
  (a frame is zeroed only when it changes VM): no VM ever sees another VM's
  data, shared frames included;
* every machine frame is free, backs exactly one guest page of its owner, is
  shared with an exact refcount, or is a hypervisor table page (no leak, no
  double mapping).

And across modes: the same sequence leaves the guests' page tables, accessed
and dirty bits included, identical under shadow and nested paging.

Reaching the claims
-------------------
Every region of every process is mapped before the actions start, so most
references complete; unmapping single pages and mapping them again keeps guest
faults in the mix. Written values come from a small pool, three values common
to both VMs and one private to each (which keeps the leak check sharp), so the
scanner merges written pages as well as zero pages, within and across VMs, and
later writes (some aimed at the pages shared at the time) land on shared frames
and break them. Each example reports the paths it took as hypothesis events,
and each test asserts, over all its examples, that every path it claims was
taken in at least the share of examples its ``*_REACH`` table states: a
strategy that stops reaching a path fails the test rather than passing without
testing it. The tests print how often each path was taken (``pytest -s`` shows
it, a failure repeats it). ``@example`` cases force each path once.

Running longer: ``pytest --hypothesis-profile=long`` (or
``HYPOTHESIS_PROFILE=long``) runs ten times the examples, freshly random; the
CI profile (``CI=true``) runs the counts in the ``@settings``, derandomized.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hvmem.hardware.page_table import (
    PTE_ACCESSED,
    PTE_DIRTY,
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_PRESENT,
    PTE_WRITABLE,
)
from hvmem.hardware.walker import FaultKind
from hvmem.hypervisor.pmap import Backing
from hvmem.machine import Machine, MachineConfig
from hvmem.units import MIB
from path_tally import assert_reached, examples, took

# Regions of 4 pages whose starts differ at each table level: same PT, other PD
# entry, other PDPT entry, other PML4 entry. Operations name a region and a page
# in it.
BASES = (0x0, 0x200, 0x4_0000, 0x800_0000)
REGIONS = BASES
REGION_PAGES = 4
VMS = ("a", "b")
ASIDS = (1, 2)
ALL_REGIONS = tuple((vm, asid, base) for vm in VMS for asid in ASIDS for base in BASES)

# Written values: three common to both VMs, one in each compression band (to
# 1 KiB: kept in a small slot; to 2 KiB; incompressible: swapped), the size
# being the token's low byte (workloads/content.py); and one private to each VM,
# which another VM must never read.
BANDS = (0x10, 0x70, 0xF0)
COMMON = tuple((0x11 + k) << 16 | band for k, band in enumerate(BANDS))
N_VALUES = len(COMMON) + 1


def value_of(vm: str, index: int) -> int:
    """Pool value ``index`` as VM ``vm`` writes it: common below 3, else its own."""
    if index < len(COMMON):
        return COMMON[index]
    return (VMS.index(vm) + 1) << 40 | COMMON[1]


# -- the machine and the actions ---------------------------------------------------------

region_st = st.sampled_from(REGIONS)
page_st = st.integers(0, REGION_PAGES - 1)
access_st = st.tuples(region_st, page_st, st.booleans(), st.integers(0, N_VALUES - 1))
op_st = st.one_of(
    # one_of draws each distinct strategy object equally often: those built twice
    # here are drawn twice as often.
    *(st.tuples(st.just("access"), st.sampled_from(VMS), st.sampled_from(ASIDS),
                st.lists(access_st, min_size=1, max_size=16)) for _ in range(2)),
    # The guest unmaps a page (its PPN goes back on the guest's free list) ...
    st.tuples(st.just("unmap"), st.sampled_from(VMS), st.sampled_from(ASIDS), region_st,
              page_st),
    # ... and maps its processes' unmapped pages again (to the PPNs freed last).
    st.tuples(st.just("map"), st.sampled_from(VMS), st.booleans()),
    # A write to a page that is shared now (picked by index among them), if any.
    *(st.tuples(st.just("write_shared"), st.sampled_from(VMS), st.integers(0, 1 << 16),
                st.integers(0, N_VALUES - 1)) for _ in range(2)),
    # Indices into the VM's backed pages, so remaps hit pages in use.
    st.tuples(st.just("remap"), st.sampled_from(VMS),
              st.lists(st.integers(0, 1 << 16), min_size=1, max_size=6)),
    # The hypervisor swaps pages out (random or LRU selection).
    st.tuples(st.just("swap"), st.sampled_from(VMS), st.integers(1, 12),
              st.sampled_from(["random", "lru"])),
    # The page-sharing scanner looks at every data page of this VM, then of the other.
    st.tuples(st.just("share"), st.sampled_from(VMS)),
    # ESX-style reclamation: share, else compress, else swap.
    st.tuples(st.just("reclaim"), st.sampled_from(VMS), st.integers(1, 16)),
)
readonly_st = st.sets(st.sampled_from(ALL_REGIONS), max_size=2)


def build(paging: str, pwc: int) -> Machine:
    machine = Machine(MachineConfig(host_memory_bytes=4 * MIB, paging=paging, tlb_entries=8,
                                    tlb_ways=2, pwc_entries=pwc, salting="across"))
    for name in VMS:
        machine.add_vm(name, MIB // 2)  # 128 guest pages each
        for asid in ASIDS:
            machine.add_process(name, asid)
    return machine


def build_mapped(paging: str, pwc: int, readonly: set) -> Machine:
    """``build``, with every region of every process mapped (``readonly`` ones read-only)."""
    machine = build(paging, pwc)
    for vm, asid, base in ALL_REGIONS:
        machine.guest_map(vm, asid, base, REGION_PAGES, (vm, asid, base) not in readonly)
    return machine


def leaf_ppn(machine: Machine, vm: str, asid: int, vpn: int) -> tuple[int, bool]:
    """(ppn, writable) of the guest mapping, or (-1, False)."""
    pte = int(machine.vm(vm).processes[asid].page_table.lookup(vpn))
    if not pte & int(PTE_PRESENT):
        return -1, False
    return (pte & int(PTE_FRAME_MASK)) >> PTE_FRAME_SHIFT, bool(pte & 2)


def host_totals(machine: Machine) -> Counter:
    """The host's path counters, summed over VMs."""
    host = machine.host
    vms = [machine.vm(name).host_vm for name in VMS]
    return Counter({
        "page shared": host.sharing.counters.shared,
        "copy-on-write break": host.sharing.counters.cow_breaks,
        "swap-in": sum(vm.counters.swap_in_faults for vm in vms),
        "decompression": sum(vm.zip.counters.decompressed for vm in vms),
        "compression": sum(vm.zip.counters.compressed for vm in vms),
        "swap-out": sum(vm.swapfile.counters.swap_outs for vm in vms),
    })


def shared_across_vms(machine: Machine) -> int:
    """Frames holding non-zero data that pages of both VMs map (shared across VMs)."""
    a, b = (machine.vm(name).host_vm.pmap for name in VMS)
    both = np.intersect1d(a.mpn[a.state == Backing.SHARED], b.mpn[b.state == Backing.SHARED])
    return int(np.count_nonzero(machine.host.frames.content[both]))


class Run:
    """One sequence of actions on one machine, checking every step; ``paths`` it took."""

    def __init__(self, paging: str, pwc: int, readonly: set):
        self.machine = build_mapped(paging, pwc, readonly)
        self.expected: dict[tuple[str, int], int] = {}  # (vm, ppn) -> last value written
        self.written_by: dict[int, set[str]] = {0: set(VMS)}  # value -> VMs that wrote it
        self.paths: Counter = Counter()
        self.guest_ops: list[tuple] = []  # the ops as the guest made them, to replay

    def access(self, vm: str, asid: int, vpns: np.ndarray, writes: np.ndarray,
               values: np.ndarray) -> None:
        machine, paths = self.machine, self.paths
        mvm = machine.vm(vm)
        frames = machine.host.frames
        pmap = mvm.host_vm.pmap
        start = 0
        while start < vpns.size:
            # A write to a shared page breaks it in the middle of the batch, and the
            # frame may be freed and handed out again before the batch ends: the
            # references before the write saw the shared frame, as it was then (a
            # shared frame's data never changes). Everything else the batch touches
            # changes only by the writes, applied here in program order.
            mpn_before, state_before = pmap.mpn.copy(), pmap.state.copy()
            content_before = frames.content.copy()
            broken: set[int] = set()
            batch = machine.access(vm, asid, vpns[start:], writes[start:])
            paths["reference completed"] += batch.done
            for k in range(batch.done):
                vpn, write = int(vpns[start + k]), bool(writes[start + k])
                ppn, _ = leaf_ppn(machine, vm, asid, vpn)
                mpn = int(batch.mpns[k])
                assert ppn >= 0
                if write:
                    broken.add(ppn)
                if state_before[ppn] == Backing.SHARED and ppn not in broken:
                    assert mpn == mpn_before[ppn], "translation differs from PT∘pmap"
                    data = int(content_before[mpn])
                    paths["read of a shared frame"] += 1
                else:
                    assert mpn == pmap.mpn[ppn], "translation differs from PT∘pmap"
                    assert frames.owner[mpn] == mvm.host_vm.vm_id
                    data = int(frames.content[mpn])
                if write:
                    value = int(values[start + k])
                    frames.content[mpn] = value
                    self.expected[(vm, ppn)] = value
                    self.written_by.setdefault(value, set()).add(vm)
                elif (vm, ppn) in self.expected:
                    assert data == self.expected[(vm, ppn)], "data lost"
                    paths["read of a written page"] += 1
                else:
                    # A page never written reads zeroes, or data its own VM left
                    # in a frame it freed (frames are zeroed only between VMs).
                    assert vm in self.written_by.get(data, ()), "data leaked"
            if batch.fault is None:
                break
            vpn = int(vpns[start + batch.done])
            ppn, writable = leaf_ppn(machine, vm, asid, vpn)
            if batch.fault.kind == FaultKind.GUEST_NOT_PRESENT:
                assert ppn < 0
                paths["guest fault: not present"] += 1
            else:
                assert batch.fault.kind == FaultKind.GUEST_PROTECTION
                assert ppn >= 0 and not writable and writes[start + batch.done]
                paths["guest fault: write protection"] += 1
            start += batch.done + 1  # the guest would kill or signal; move on

    def step(self, op: tuple) -> None:
        machine = self.machine
        kind, vm = op[0], op[1]
        mvm = machine.vm(vm)
        if kind == "map":
            for asid in ASIDS:
                vpns = np.concatenate([np.arange(b, b + REGION_PAGES) for b in BASES])
                unmapped = vpns[mvm.processes[asid].page_table.lookup_many(vpns) == 0]
                for vpn in unmapped.tolist():
                    if mvm.allocator.n_free > 8:  # room for the tables a mapping may take
                        machine.guest_map(vm, asid, vpn, 1, op[2])
                        self.paths["page mapped again"] += 1
        elif kind == "unmap":
            _, _, asid, base, page = op
            machine.guest_unmap(vm, asid, base + page, 1)
        elif kind == "write_shared":
            # Which pages are shared is the host's business, and differs between
            # paging modes: the write is recorded as the access the guest made.
            targets = self.shared_targets(vm)
            if not targets:
                return
            asid, vpn = targets[op[2] % len(targets)]
            value = op[3]
            op = ("access", vm, asid,
                  [(vpn & ~(REGION_PAGES - 1), vpn & (REGION_PAGES - 1), True, value)])
            self.access(vm, asid, np.array([vpn]), np.ones(1, bool),
                        np.array([value_of(vm, value)], np.uint64))
        elif kind == "remap":
            backed = mvm.host_vm.pmap.backed()
            if backed.size:
                moved = mvm.host_vm.remap(backed[np.array(op[2]) % backed.size])
                self.paths["remap"] += moved.size
        elif kind == "swap":
            mvm.host_vm.swap_out(op[2], op[3], np.random.default_rng(op[2]))
        elif kind == "reclaim":
            mvm.host_vm.reclaim(op[2], "random", np.random.default_rng(op[2]))
        elif kind == "share":
            for name in sorted(VMS, key=lambda name: name != vm):
                scanned = machine.vm(name)
                backed = scanned.host_vm.pmap.backed()
                backed = backed[~scanned.tables.is_table_frame[backed]]  # data pages
                scanned.host_vm.share_scan(backed)
            self.paths["non-zero frame shared across VMs"] += shared_across_vms(machine)
        else:
            _, _, asid, refs = op
            vpns = np.array([base + page for base, page, _, _ in refs], dtype=np.int64)
            writes = np.array([write for _, _, write, _ in refs], dtype=bool)
            values = np.array([value_of(vm, v) for _, _, _, v in refs], dtype=np.uint64)
            self.access(vm, asid, vpns, writes, values)
        machine.host.check_invariants()
        mvm.allocator.check_invariants()
        self.guest_ops.append(op)

    def shared_targets(self, vm: str) -> list[tuple[int, int]]:
        """(asid, vpn) of the pages a process of ``vm`` may write that are shared now."""
        mvm = self.machine.vm(vm)
        vpns = np.concatenate([np.arange(b, b + REGION_PAGES) for b in BASES])
        targets = []
        for asid in ASIDS:
            ptes = mvm.processes[asid].page_table.leaf_entries(vpns)
            ok = (ptes & PTE_PRESENT) != 0
            ok &= (ptes & PTE_WRITABLE) != 0
            ppns = ((ptes & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
            ok[ok] = mvm.host_vm.pmap.state[ppns[ok]] == Backing.SHARED
            targets += [(asid, int(vpn)) for vpn in vpns[ok]]
        return targets

    def read_everything(self) -> None:
        """Read every mapped page of every process: what was written is still there."""
        for vm in VMS:
            for asid in ASIDS:
                vpns = np.concatenate([np.arange(b, b + REGION_PAGES) for b in BASES])
                self.access(vm, asid, vpns, np.zeros(vpns.size, bool),
                            np.zeros(vpns.size, np.uint64))
        self.machine.host.check_invariants()


def run(paging: str, pwc: int, ops: list, readonly: set = frozenset()) -> Run:
    """Run ``ops``, then read everything back; ``paths`` has the paths taken."""
    r = Run(paging, pwc, readonly)
    before = host_totals(r.machine)
    for op in ops:
        r.step(op)
    r.read_everything()
    r.paths.update(host_totals(r.machine) - before)
    return r


def writes(vm, asid, pages, value):
    """An access op writing pool value ``value`` to ``pages`` (region, page) of a process."""
    return ("access", vm, asid, [(base, page, True, value) for base, page in pages])


FIRST_REGION = [(0x0, p) for p in range(REGION_PAGES)]
EVERY_PAGE = [(b, p) for b in BASES for p in range(REGION_PAGES)]

#: Sharing written data across VMs, then a write to the shared frame.
SHARE_AND_BREAK = [writes("a", 1, FIRST_REGION, 0), writes("b", 2, FIRST_REGION[:2], 0),
                   ("share", "a"),
                   ("access", "b", 2, [(0x0, 0, False, 0), (0x0, 1, True, 3)]),
                   writes("a", 1, [(0x0, 3)], 1)]
#: Incompressible data swapped out and touched again.
SWAP_AND_BACK = [writes("a", 1, EVERY_PAGE, 2), ("swap", "a", 12, "random"),
                 ("access", "a", 1, [(b, p, False, 0) for b, p in EVERY_PAGE])]
#: Compressible data reclaimed into the compression cache and touched again.
ZIP_AND_BACK = [writes("a", 1, [(0x0, 0)], 0), writes("a", 1, [(0x0, 1)], 1),
                writes("a", 1, [(0x0, 2)], 3), writes("a", 1, [(0x0, 3)], 2),
                ("reclaim", "a", 16),
                ("access", "a", 1, [(0x0, p, False, 0) for p in range(REGION_PAGES)])]
#: A write through a read-only mapping, a touch of an unmapped page, a remap.
GUEST_FAULTS = [("unmap", "b", 1, 0x200, 1),
                ("access", "b", 1, [(0x200, 1, False, 0), (0x800_0000, 0, True, 3)]),
                ("remap", "b", [0, 1, 2]), ("map", "b", True)]

#: Share of examples that must take each path (paths not listed may be rare).
TRANSLATION_REACH = {
    "reference completed": 0.95,
    "read of a written page": 0.6,
    "read of a shared frame": 0.3,
    "page shared": 0.3,
    "non-zero frame shared across VMs": 0.08,
    "copy-on-write break": 0.15,
    "swap-in": 0.25,
    "decompression": 0.2,
    "remap": 0.3,
    "guest fault: not present": 0.25,
    "guest fault: write protection": 0.08,
    "page mapped again": 0.12,
}



@settings(max_examples=examples(400), deadline=None)
@example(ops=SHARE_AND_BREAK, paging="shadow", pwc=0, readonly=set())
@example(ops=SHARE_AND_BREAK, paging="nested", pwc=8, readonly=set())
@example(ops=SWAP_AND_BACK, paging="nested", pwc=0, readonly=set())
@example(ops=ZIP_AND_BACK, paging="shadow", pwc=8, readonly=set())
@example(ops=GUEST_FAULTS, paging="nested", pwc=0, readonly={("b", 1, 0x800_0000)})
@given(ops=st.lists(op_st, min_size=10, max_size=40), paging=st.sampled_from(["shadow", "nested"]),
       pwc=st.sampled_from([0, 8]), readonly=readonly_st)
def translation_property(ops, paging, pwc, readonly):
    took(run(paging, pwc, ops, readonly).paths)


def test_translation_is_guest_table_composed_with_pmap():
    assert_reached(translation_property, TRANSLATION_REACH)


#: Share of examples that must take each path: references completed, leaf entries
#: accessed and dirty at the end (the bits compared across modes), and the host's
#: paths the accessed and dirty bits have to survive.
MODES_REACH = {
    "reference completed": 0.95,
    "accessed leaf entry": 0.9,
    "dirty leaf entry": 0.5,
    "page shared": 0.2,
    "copy-on-write break": 0.12,
    "swap-in": 0.15,
    "decompression": 0.1,
}


@settings(max_examples=examples(200), deadline=None)
@example(ops=SHARE_AND_BREAK, pwc=0, readonly=set())
@example(ops=SWAP_AND_BACK, pwc=8, readonly=set())
@given(ops=st.lists(op_st, min_size=10, max_size=40), pwc=st.sampled_from([0, 8]),
       readonly=readonly_st)
def modes_property(ops, pwc, readonly):
    first = run("shadow", pwc, ops, readonly)
    # The same guest actions under nested paging (writes to shared pages as they landed).
    shadow, nested = first.machine, run("nested", pwc, first.guest_ops, readonly).machine
    paths = first.paths
    for vm in VMS:
        s_tables, n_tables = shadow.vm(vm).tables, nested.vm(vm).tables
        frames = s_tables.table_frames()
        assert np.array_equal(frames, n_tables.table_frames())
        assert np.array_equal(s_tables.entries[frames], n_tables.entries[frames])
        for asid in ASIDS:
            vpns = np.concatenate([np.arange(b, b + REGION_PAGES) for b in BASES])
            leaves = shadow.vm(vm).processes[asid].page_table.leaf_entries(vpns)
            paths["accessed leaf entry"] += int(np.count_nonzero(leaves & PTE_ACCESSED))
            paths["dirty leaf entry"] += int(np.count_nonzero(leaves & PTE_DIRTY))
    took(paths)


def test_shadow_and_nested_leave_identical_guest_tables():
    assert_reached(modes_property, MODES_REACH)


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
