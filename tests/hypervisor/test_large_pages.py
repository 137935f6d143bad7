"""Host large pages: first-touch backing, fallback, sharing skip, breaking, invariants.

The property test runs random mixes of touches, writes, sharing scans,
ballooning, free page reporting, swapping, reclamation, remapping, breaking and
state-driven breaking on a host with large pages, and checks after every step:

* every frame is free, backs exactly one page, is shared with an exact
  refcount, or is a table page (``Host.check_invariants``, which also checks
  that each large page is one aligned run of private frames under one PS leaf);
* the nested table maps every page exactly as the pmap says, 2 MiB leaves
  included;
* a page reads the last value written to it, whatever happened in between; a
  page never written (or given back) reads zeroes or data of its own VM.

Reaching the claims: touches write values from a small pool, half of it common
to both VMs, and fills write whole regions with values of their own in the
three compression bands, so pages share once their large page is broken,
writes (some aimed at the pages shared at the time) break copy-on-write, and
reclamation compresses some pages and swaps others. Each example reports the
paths it took as hypothesis events, and the test asserts that each path in
``LARGE_REACH`` (every way a large page is made, broken or released, sharing,
copy-on-write, compression, swapping) was taken in at least that share of its
examples, and prints how often each was (``pytest -s``); ``@example`` cases
force them.
Running longer: ``pytest --hypothesis-profile=long`` (or
``HYPOTHESIS_PROFILE=long``) runs ten times the examples, freshly random; the
CI profile (``CI=true``) runs the count in the ``@settings``, derandomized.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError
from hvmem.hardware.frames import MachineMemory
from hvmem.hardware.mmu import Mmu
from hvmem.hardware.page_table import (
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_WRITABLE,
    TableStore,
)
from hvmem.hardware.tlb import Tlb
from hvmem.hypervisor.host import Host
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.vm_state import LARGE_PAGE_PAGES
from hvmem.machine import Machine, MachineConfig
from hvmem.policy.minfree import thresholds
from hvmem.policy.state_tracker import large_page_breaking
from hvmem.policy.states import MemState
from hvmem.scenario.schema import HostConfig
from hvmem.units import MIB
from path_tally import assert_reached, examples, took

LP = LARGE_PAGE_PAGES


def host_with(n_frames=8192, vm_pages=(2048,), salting="across"):
    host = Host(n_frames, "nested", salting=salting, large_pages=True)
    vms = [host.add_vm(f"vm{i}", n, TableStore(n, f"vm{i}")) for i, n in enumerate(vm_pages)]
    return host, vms


def write(vm, ppns, tokens):
    ppns = np.asarray(ppns, dtype=np.int64)
    vm.write_pages(ppns, np.broadcast_to(np.asarray(tokens, dtype=np.uint64), ppns.shape))


def ept_view(vm):
    """(mpn or -1, writable) per PPN, by software walks of the nested table."""
    vm.paging.sync_leaves()  # no MMU attached: leaves are written when read
    ppns = np.arange(vm.n_ppns)
    ptes = vm.paging.ept.lookup_many(ppns)
    present = (ptes & PTE_PRESENT) != 0
    frames = ((ptes & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
    large = (ptes & PTE_LARGE) != 0
    frames[large] += ppns[large] & (LP - 1)
    frames[~present] = -1
    return frames, present & ((ptes & PTE_WRITABLE) != 0)


def check_ept(vm):
    mpns, writable = ept_view(vm)
    state = vm.pmap.state
    backed = (state == Backing.PRIVATE) | (state == Backing.SHARED)
    assert np.array_equal(mpns[backed], vm.pmap.mpn[backed]), "nested table differs from pmap"
    assert np.all(mpns[~backed] == -1)
    assert np.array_equal(writable[backed], state[backed] == Backing.PRIVATE)


# -- first touch -------------------------------------------------------------------------


def test_first_touch_backs_the_whole_region_with_one_large_page():
    host, (vm,) = host_with()
    used = host.frames.n_used
    write(vm, [600], 7)
    assert vm.large.tolist() == [False, True, False, False]
    assert vm.pmap.count(Backing.PRIVATE) == LP  # 2 MiB consumed for one touched page
    assert host.frames.n_used - used >= LP
    base = vm.pmap.mpn[LP]
    assert base % LP == 0
    assert np.array_equal(vm.pmap.mpn[LP:2 * LP], base + np.arange(LP))
    assert vm.counters.large_pages_backed == 1 and vm.counters.first_touch_faults == 1
    assert vm.large_page_ppns == LP
    # Touching the rest of the region costs nothing more.
    before = host.frames.n_used
    write(vm, np.arange(LP, 2 * LP), 8)
    assert host.frames.n_used == before and vm.counters.first_touch_faults == 1
    check_ept(vm)
    host.check_invariants()


def test_regions_partly_backed_or_ballooned_and_the_partial_tail_get_small_pages():
    host, (vm,) = host_with(vm_pages=(1100,))  # two whole regions and 76 pages
    vm.release(np.array([3]), Backing.BALLOONED)  # unbacked, but in the balloon
    write(vm, [0, 1090], 1)
    assert not vm.large.any()
    assert vm.pmap.count(Backing.PRIVATE) == 2
    write(vm, [LP], 2)
    assert vm.large.tolist() == [False, True, False]
    host.check_invariants()


def test_large_pages_come_from_the_top_of_memory():
    memory = MachineMemory(4 * LP)
    bases = memory.alloc_runs(0, 2, LP)
    assert bases.tolist() == [3 * LP, 2 * LP]
    assert memory.n_free == 2 * LP
    assert memory.alloc(1, 1)[0] == 0  # the small allocations keep coming from below
    memory.check_invariants()


def test_no_free_2mib_run_falls_back_to_small_pages():
    host, (a, b) = host_with(n_frames=4 * LP, vm_pages=(LP, 3 * LP))
    write(b, np.arange(0, 3 * LP, LP), 1)
    assert b.large.all()
    # b gives every other page back: plenty of free memory, but no whole 2 MiB block
    # (the nested tables sit in the lowest one).
    b.release(np.arange(0, 3 * LP, 2), Backing.BALLOONED)
    assert b.counters.large_pages_broken_release == 3
    assert host.frames.n_free > LP
    write(a, [5], 3)
    assert not a.large.any()
    assert a.counters.large_page_fallbacks == 1 and a.pmap.count(Backing.PRIVATE) == 1
    host.check_invariants()


def test_a_large_page_is_never_a_reason_to_swap():
    host, (vm,) = host_with(n_frames=LP + 300, vm_pages=(LP,))
    write(vm, [0], 1)
    assert not vm.large.any() and vm.counters.large_page_fallbacks == 1
    assert vm.counters.emergency_swaps == 0


# -- sharing -----------------------------------------------------------------------------


def test_pages_of_a_large_page_are_hashed_but_not_shared():
    host, (vm,) = host_with()
    write(vm, np.arange(LP), 0)  # 512 zero pages: all shareable but for the large page
    counters = host.sharing.counters
    assert vm.share_scan(np.arange(LP)) == 0
    assert counters.large_pages == LP and counters.scanned == LP
    assert vm.pmap.count(Backing.SHARED) == 0
    assert vm.break_large_pages(np.array([0])) == 1
    assert vm.counters.large_pages_broken == vm.counters.large_pages_broken_other == 1
    freed = vm.share_scan(np.arange(LP))
    assert freed == LP - 1 and vm.pmap.count(Backing.SHARED) == LP
    check_ept(vm)
    host.check_invariants()


def test_a_stale_hint_matching_a_frame_now_in_a_large_page_breaks_it():
    host, (a, b) = host_with(vm_pages=(LP, LP))
    write(a, np.arange(LP), 0)
    a.break_large_pages(np.array([0]))
    a.share_scan(np.array([7]))  # a hint: a's frame of page 7, content 0
    a.release(np.arange(LP), Backing.UNBACKED)  # all of a goes; the hint stays behind
    write(b, [0], 0)  # b's large page may reuse that frame, zeroed
    b.share_scan(np.arange(LP))  # skipped: b's pages are in a large page
    host.check_invariants()
    a.back_pages(np.array([9]))  # a's fresh zero page matches the hint, if it is b's now
    a.break_large_pages(np.flatnonzero(a.large))
    a.share_scan(np.array([9]))
    # The hinted frame is b's page 7 now (memory's top block, zeroed): it shares,
    # so b's large page had to break.
    assert b.pmap.state[7] == Backing.SHARED and not b.large.any()
    assert b.counters.large_pages_broken_other == 1
    host.check_invariants()
    check_ept(a)
    check_ept(b)


# -- breaking ----------------------------------------------------------------------------


def test_swapping_a_page_of_a_large_page_breaks_it_first():
    host, (vm,) = host_with()
    write(vm, np.arange(LP), np.arange(1, LP + 1))
    vm.swap_out(1, "random", np.random.default_rng(0))
    assert vm.counters.large_pages_broken_reclaim == 1 and not vm.large.any()
    assert vm.swapfile.n_used == 1
    check_ept(vm)
    host.check_invariants()
    assert sorted(vm.read_pages(np.arange(LP))[0].tolist()) == list(range(1, LP + 1))


def test_emergency_swapping_splits_large_pages_as_free_frames_allow():
    host, (a, b) = host_with(n_frames=5 * LP + 40, vm_pages=(4 * LP, 2 * LP))
    write(a, np.arange(0, 4 * LP, LP), 0)  # four first touches, four large pages
    write(a, np.arange(4 * LP), np.arange(1, 4 * LP + 1))
    assert a.large.all() and host.frames.n_free < 600
    write(b, np.arange(540), 7)  # no 2 MiB run left: small pages, room by swapping a
    assert not b.large.any() and a.counters.emergency_swaps > 0
    assert a.counters.large_pages_broken_reclaim >= 1
    host.check_invariants()
    check_ept(a)
    assert np.array_equal(a.read_pages(np.arange(4 * LP))[0], np.arange(1, 4 * LP + 1))
    host.check_invariants()


def test_reclaim_breaks_then_shares_the_sub_pages_before_compressing_or_swapping():
    host, (vm,) = host_with()
    tokens = np.zeros(LP, dtype=np.uint64)
    tokens[1::2] = np.arange(1, LP // 2 + 1)  # half private data, half zero pages
    tokens[2::4] = 2 * LP  # a quarter: one more shared value
    write(vm, np.arange(LP), tokens)
    vm.share_scan(np.arange(0, LP, 2))  # the scanner hashed the even pages, shared none
    done = vm.reclaim(4, "random", np.random.default_rng(1))
    assert vm.counters.large_pages_broken_reclaim == 1
    # The hashed zero sub-pages share at once: far more than the 4 victims.
    assert done["shared"] >= LP // 4 - 1 - 4
    assert vm.pmap.count(Backing.SHARED) >= LP // 4 - 4
    check_ept(vm)
    host.check_invariants()
    assert np.array_equal(vm.read_pages(np.arange(LP))[0], tokens)


def test_ballooning_part_of_a_large_page_breaks_it_and_whole_ones_are_released():
    host, (vm,) = host_with()
    write(vm, np.arange(0, 4 * LP, LP), 5)
    used = host.frames.n_used
    assert vm.release(np.arange(10, 20), Backing.BALLOONED) == 10
    assert vm.counters.large_pages_broken_release == 1
    assert vm.large.tolist() == [False, True, True, True]
    assert vm.release(np.arange(LP, 2 * LP), Backing.BALLOONED) == LP
    assert vm.counters.large_pages_released == 1 and vm.counters.large_pages_broken == 1
    assert host.frames.n_used == used - 10 - LP + 1  # the split took a nested table page
    check_ept(vm)
    host.check_invariants()
    # Power-off: everything goes back, the large pages whole.
    vm.release(np.arange(vm.n_ppns), Backing.UNBACKED)
    assert vm.counters.large_pages_released == 3 and not vm.large.any()
    host.check_invariants()


def test_remapping_a_page_of_a_large_page_breaks_it():
    host, (vm,) = host_with()
    write(vm, np.arange(LP), 9)
    vm.remap(np.array([3]))
    assert vm.counters.large_pages_broken_other == 1
    check_ept(vm)
    host.check_invariants()


def test_states_break_large_pages_lazily_at_the_next_scan_or_actively():
    host, (a, b) = host_with(vm_pages=(4 * LP, 4 * LP))
    for vm in (a, b):
        write(vm, np.arange(4 * LP), 0)
    rng = np.random.default_rng(0)
    assert host.break_large_pages_for_state("off", 10**9, rng) == 0
    a.share_scan(np.array([1]))
    assert a.large.all() and host.sharing.counters.large_pages == 1
    a.share_scan(np.arange(LP, 2 * LP, 2))  # hashed while large, not shared
    assert a.pmap.count(Backing.SHARED) == 0
    # Lazy: nothing now; the scanner breaks what it visits, offering what it hashed.
    assert host.break_large_pages_for_state("lazy", 10**9, rng) == 0
    assert a.large.all()
    a.share_scan(np.array([LP + 1]))
    assert a.large.tolist() == [True, False, True, True]
    assert a.counters.large_pages_broken_state == 1
    assert a.pmap.count(Backing.SHARED) == LP // 2 + 1  # the rest wait for the scanner
    # Active: a bounded number per VM and tick (64/s x 30 ms: 1 or 2), shared at once.
    first = host.break_large_pages_for_state("active", 30_000_000, rng)
    assert first in (2, 4) and int(a.large.sum()) == 3 - first // 2
    left = int(a.large.sum() + b.large.sum())
    assert host.break_large_pages_for_state("active", 10**9, rng) == left
    assert not a.large.any() and not b.large.any()
    # Actively broken large pages have all their pages offered at once.
    assert a.pmap.count(Backing.SHARED) == 4 * LP - (LP // 2 - 1)
    with pytest.raises(ConfigError):
        host.break_large_pages_for_state("eager", 1, rng)
    check_ept(a)
    host.check_invariants()


def test_large_page_breaking_follows_the_esxi6_states():
    th = thresholds(16 * 1024, "esxi6")
    assert large_page_breaking(MemState.HIGH, th.high_mib + 1, th) == "off"
    assert large_page_breaking(MemState.HIGH, th.high_mib - 1, th) == "lazy"
    for state in (MemState.CLEAR, MemState.SOFT, MemState.HARD, MemState.LOW):
        assert large_page_breaking(state, 0.0, th) == "active"
    th5 = thresholds(16 * 1024, "esxi5")
    for state in (MemState.HIGH, MemState.SOFT, MemState.HARD, MemState.LOW):
        assert large_page_breaking(state, 0.0, th5) == "off"


# -- configuration and translation -----------------------------------------------------


def test_large_pages_default_to_nested_paging_only():
    assert HostConfig(paging="nested").large_pages is True
    assert HostConfig(paging="shadow").large_pages is False
    assert HostConfig(paging="nested", large_pages=False).large_pages is False
    with pytest.raises(ConfigError, match="large_pages: expected false"):
        HostConfig(paging="shadow", large_pages=True)
    with pytest.raises(ConfigError, match="nested paging"):
        Host(1024, "shadow", large_pages=True)


def translated(large_pages):
    """A guest's 64 pages written four times over; (walk references, the host's VM)."""
    machine = Machine(MachineConfig(host_memory_bytes=64 * MIB, paging="nested", tlb_entries=4,
                                    tlb_ways=4))
    machine.host.large_pages = large_pages
    machine.add_vm("a", 8 * MIB)
    machine.add_process("a", 1)
    ppns = machine.guest_map("a", 1, 0x100, 64)
    vpns = np.tile(np.arange(0x100, 0x140), 4)
    batch = machine.access("a", 1, vpns, np.ones(vpns.size, bool))
    assert batch.fault is None
    vm = machine.vm("a").host_vm
    assert np.array_equal(batch.mpns, vm.pmap.mpn[np.tile(ppns, 4)])
    check_ept(vm)
    machine.host.check_invariants()
    return machine.vm("a").mmu.counters.walk_refs, vm


def test_nested_walks_end_at_2mib_leaves_one_reference_sooner():
    small_refs, small = translated(False)
    large_refs, large = translated(True)
    assert not small.large.any() and large.large.any()
    assert large_refs < small_refs


# -- property ----------------------------------------------------------------------------

N_VM_PAGES = 3 * LP + 100  # three whole regions and a partial one
VMS = (0, 1)

# Written values: a pool of three common to both VMs and three private to each, in
# the three compression bands (the token's low byte is its compressed size:
# to 1 KiB, to 2 KiB, incompressible), so written pages share within and across
# VMs; and fills of whole regions with values of their own, which compress or not.
BANDS = (0x10, 0x70, 0xF0)
COMMON = tuple((0x41 + k) << 16 | band for k, band in enumerate(BANDS))
N_VALUES = 2 * len(BANDS)


def value_of(v, index):
    """Pool value ``index`` as VM ``v`` writes it: common below 3, else its own."""
    if index < len(COMMON):
        return COMMON[index]
    return (v + 1) << 40 | COMMON[index - len(COMMON)]


page_st = st.integers(0, N_VM_PAGES - 1)


# one_of draws each distinct strategy object equally often: those built k times here
# are drawn k times as often.
op_st = st.one_of(
    # Touches back large pages for the rest to act on.
    *(st.tuples(st.just("touch"), st.sampled_from(VMS),
                st.lists(page_st, min_size=1, max_size=8), st.booleans(),
                st.integers(0, N_VALUES - 1)) for _ in range(3)),
    # A write to a page that is shared now (picked by index among them), if any.
    st.tuples(st.just("write_shared"), st.sampled_from(VMS), st.integers(0, 1 << 16),
              st.integers(0, N_VALUES - 1)),
    # The scanner visits every so many pages (op[2] of them, from page op[3]); sharing
    # needs pages broken out of large pages first.
    *(st.tuples(st.just("share"), st.sampled_from(VMS), st.integers(1, 600),
                st.integers(0, 99)) for _ in range(2)),
    *(st.tuples(st.just("state"), st.sampled_from(VMS),
                st.sampled_from(["off", "lazy", "active"])) for _ in range(2)),
    # A region written whole, page by page with values of its own.
    *(st.tuples(st.just("fill"), st.sampled_from(VMS), st.integers(0, 3)) for _ in range(2)),
    # A whole region given back (a power-off, as far as that region goes), or part.
    *(st.tuples(st.just("release_region"), st.sampled_from(VMS), st.integers(0, 3))
      for _ in range(3)),
    *(st.tuples(st.just("balloon"), st.sampled_from(VMS), page_st, st.integers(1, 700))
      for _ in range(2)),
    st.tuples(st.just("report"), st.sampled_from(VMS), page_st, st.integers(1, 40)),
    st.tuples(st.just("swap"), st.sampled_from(VMS), st.integers(1, 40),
              st.sampled_from(["random", "lru"])),
    # Reclamation, sharing first (as ESX) or not (so that zero pages compress too).
    *(st.tuples(st.just("reclaim"), st.sampled_from(VMS), st.integers(1, 40), st.booleans())
      for _ in range(2)),
    *(st.tuples(st.just("remap"), st.sampled_from(VMS), page_st) for _ in range(2)),
    st.tuples(st.just("break"), st.sampled_from(VMS), st.integers(0, 2)),
)


def paths_of(host, vms, read_written):
    """The paths a run took, from the host's counters."""
    sharing = host.sharing.counters
    paths = Counter({"read of a written page": read_written,
                     "page shared": sharing.shared,
                     "hashed inside a large page": sharing.large_pages,
                     "copy-on-write break": sharing.cow_breaks})
    for vm in vms:
        c = vm.counters
        paths.update({
            "large page backed": c.large_pages_backed,
            "large page fallback": c.large_page_fallbacks,
            "large page broken: reclaim": c.large_pages_broken_reclaim,
            "large page broken: state": c.large_pages_broken_state,
            "large page broken: release": c.large_pages_broken_release,
            "large page broken: other": c.large_pages_broken_other,
            "large page released whole": c.large_pages_released,
            "compression": vm.zip.counters.compressed,
            "decompression": vm.zip.counters.decompressed,
            "swap-out": vm.swapfile.counters.swap_outs,
            "swap-in": c.swap_in_faults,
        })
    return paths


def run(ops, n_frames):
    host, vms = host_with(n_frames=n_frames, vm_pages=(N_VM_PAGES,) * len(VMS))
    expected: dict[tuple[int, int], int] = {}
    written_by: dict[int, set[int]] = {0: set(VMS)}
    for step, op in enumerate(ops):
        host.now_ns = step
        kind, v = op[0], op[1]
        vm = vms[v]
        rng = np.random.default_rng(step)
        if kind in ("touch", "fill", "write_shared"):
            if kind == "touch":
                ppns = np.unique(op[2])
                values = np.full(ppns.size, value_of(v, op[4]), dtype=np.uint64)
                write_it = op[3]
            elif kind == "write_shared":
                shared = np.flatnonzero(vm.pmap.state == Backing.SHARED)
                ppns = shared[op[2] % max(1, shared.size):][:1]
                values = np.full(ppns.size, value_of(v, op[3]), dtype=np.uint64)
                write_it = ppns.size > 0
            else:
                ppns = np.arange(op[2] * LP, min(N_VM_PAGES, (op[2] + 1) * LP))
                values = ((v + 1) << 40 | step << 24 | ppns << 8
                          | np.array(BANDS)[ppns % len(BANDS)]).astype(np.uint64)
                write_it = True
            if write_it:
                write(vm, ppns, values)
                for p, value in zip(ppns.tolist(), values.tolist(), strict=True):
                    expected[(v, p)] = value
                    written_by.setdefault(value, set()).add(v)
            else:
                vm.read_pages(ppns)
        elif kind == "share":
            pages = np.arange(op[3], N_VM_PAGES, max(1, N_VM_PAGES // op[2]))
            vm.share_scan(pages)
        elif kind in ("balloon", "report", "release_region"):
            if kind == "release_region":
                ppns = np.arange(op[2] * LP, min(N_VM_PAGES, (op[2] + 1) * LP))
            else:
                ppns = np.arange(op[2], min(N_VM_PAGES, op[2] + op[3]))
            vm.release(ppns, Backing.BALLOONED if kind == "balloon" else Backing.UNBACKED)
            for p in ppns.tolist():
                expected.pop((v, p), None)  # the guest gave its data up
        elif kind == "swap":
            vm.swap_out(op[2], op[3], rng)
        elif kind == "reclaim":
            vm.reclaim(op[2], "random", rng, share_first=op[3])
        elif kind == "remap":
            vm.remap(np.array([op[2]]))
        elif kind == "break":
            vm.break_large_pages(np.array([op[2]]))
        else:
            host.break_large_pages_for_state(op[2], 20_000_000, rng)
        host.check_invariants()
        for other in vms:
            check_ept(other)
    # Every page's content survives, and nobody reads another VM's data.
    read_written = 0
    for v, vm in enumerate(vms):
        got = vm.read_pages(np.arange(N_VM_PAGES))[0]
        for p in range(N_VM_PAGES):
            if (v, p) in expected:
                assert got[p] == expected[(v, p)], "data lost"
                read_written += 1
            else:
                assert v in written_by.get(int(got[p]), ()), "data leaked"
    host.check_invariants()
    return paths_of(host, vms, read_written)


def touch(v, pages, value):
    return ("touch", v, pages, True, value)


#: Equal values in both VMs' small pages, shared, then written again.
SHARE_AND_BREAK = [touch(0, [3 * LP + 1, 3 * LP + 3], 0), touch(1, [3 * LP + 1], 0),
                   ("share", 0, 800, 1), ("share", 1, 800, 1), touch(1, [3 * LP + 1], 4),
                   touch(0, [3 * LP + 3], 1)]
#: A filled large page reclaimed (broken, compressed, swapped), then read back.
RECLAIM_AND_BACK = [("fill", 0, 1), ("reclaim", 0, 40, True), ("swap", 0, 40, "lru"),
                    touch(1, [5], 0), ("reclaim", 1, 40, False)]
#: Large pages broken by the memory state, by ballooning and by a remap; one released.
BREAKING = [touch(0, [0, LP, 2 * LP], 1), ("remap", 0, 2 * LP + 7), ("balloon", 0, LP + 5, 20),
            ("state", 0, "active"), touch(1, [0], 2), ("release_region", 1, 0),
            ("share", 0, 600, 1)]

#: Share of examples that must take each path.
LARGE_REACH = {
    "large page backed": 0.9,
    "large page fallback": 0.1,
    "large page broken: reclaim": 0.3,
    "large page broken: state": 0.1,
    "large page broken: release": 0.1,
    "large page broken: other": 0.1,
    "large page released whole": 0.05,
    "hashed inside a large page": 0.06,
    "page shared": 0.15,
    "copy-on-write break": 0.06,
    "compression": 0.2,
    "decompression": 0.2,
    "swap-in": 0.2,
    "read of a written page": 0.5,
}


@settings(max_examples=examples(200), deadline=None)
@example(ops=SHARE_AND_BREAK, n_frames=16 * LP)
@example(ops=RECLAIM_AND_BACK, n_frames=12 * LP)
@example(ops=BREAKING, n_frames=6 * LP)
@given(ops=st.lists(op_st, min_size=10, max_size=40),
       n_frames=st.sampled_from([6 * LP, 12 * LP, 16 * LP]))
def large_page_property(ops, n_frames):
    took(run(ops, n_frames))


def test_large_pages_never_lose_leak_or_double_map():
    assert_reached(large_page_property, LARGE_REACH)


# -- leaves on demand ----------------------------------------------------------------------


def test_leaves_written_on_demand_end_as_leaves_kept_all_along():
    """A VM with no MMU attached defers its nested leaves; the tables and, once
    synced, every entry are those of a VM whose leaves follow each change."""
    runs = []
    for attached in (True, False):
        host, (vm, other) = host_with(n_frames=8192, vm_pages=(3000, 3000))
        if attached:
            vm.paging.attach(Mmu(vm.vm_id, Tlb(64, 4)))
        rng = np.random.default_rng(7)
        for step in range(12):
            ppns = np.unique(rng.integers(0, vm.n_ppns, 600))
            write(vm, ppns, rng.integers(0, 40, ppns.size))  # repeats share below
            write(other, ppns, rng.integers(0, 40, ppns.size))
            vm.share_scan(ppns)
            vm.reclaim(int(rng.integers(50, 300)), "random", rng)
            vm.touch_pages(np.unique(rng.integers(0, vm.n_ppns, 400)))
            if step % 4 == 3:
                vm.release(np.unique(rng.integers(0, vm.n_ppns, 200)))
        assert vm.paging.leaves_stale == (not attached)
        frames = np.sort(vm.paging.table_frames())
        check_ept(vm)  # syncs first
        assert not vm.paging.leaves_stale
        runs.append((frames, host.tables.entries[frames].copy(), vm.pmap.mpn.copy()))
    (frames_a, entries_a, mpn_a), (frames_b, entries_b, mpn_b) = runs
    assert np.array_equal(mpn_a, mpn_b)
    assert np.array_equal(frames_a, frames_b)
    assert np.array_equal(entries_a, entries_b)
