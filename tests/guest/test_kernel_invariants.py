"""``GuestKernel.check_invariants`` refuses every broken state it claims to rule out.

Each test builds a small valid guest (anonymous pages resident and swapped out,
page-cache pages, page-table pages, free pages), checks that it passes,
breaks it in one way and expects :class:`InvariantViolation`: the free and
allocated lists, page kinds, the reverse map, swap entries and slots, and
page-table pages.
"""

from __future__ import annotations

import numpy as np
import pytest

from hvmem.errors import InvariantViolation
from hvmem.guest.kernel import PTE_SWAP, GuestConfig, GuestKernel, PageKind
from hvmem.hardware.page_table import PTE_FRAME_SHIFT, PTE_PRESENT, TableStore
from hvmem.hypervisor.host import Host
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind

ANON_PAGES = 150  # anonymous pages at VPN 0.. (more than memory: some are swapped)
FILE_VPN = 0x200  # a file mapping of 20 pages


def batch(vpns, writes=None, ops=()):
    """Process 0 touches ``vpns`` (writing VPN + 1 where it writes), after ``ops``."""
    vpns = np.asarray(vpns, dtype=np.int64)
    n = vpns.size
    writes = np.zeros(n, bool) if writes is None else np.asarray(writes, bool)
    return AccessBatch(np.zeros(n, np.int32), vpns, writes, np.ones(n, np.int64),
                       vpns.astype(np.uint64) + np.uint64(1), tuple(ops))


def small_guest():
    """A guest of 64 pages with 128 swap slots: everything a check looks at, present."""
    host = Host(1024, "nested")
    tables = TableStore(64, "g")
    vm = host.add_vm("g", 64, tables)
    kernel = GuestKernel(GuestConfig(64, 128, "ssd", "lru", 1), vm, tables,
                         np.random.default_rng(0))
    ops = (MemoryOp(MemoryOpKind.MAP, 0, 0, ANON_PAGES, False),
           MemoryOp(MemoryOpKind.MAP, 0, FILE_VPN, 20, True))
    kernel.access(batch([], ops=ops), 0)
    kernel.access(batch(np.arange(ANON_PAGES), np.ones(ANON_PAGES, bool)), 1)
    kernel.access(batch(np.arange(FILE_VPN, FILE_VPN + 4)), 2)
    assert kernel.swap.n_used > 2 and kernel.allocator.n_free > 2
    assert kernel.count(PageKind.FILE) > 0 and kernel.count(PageKind.TABLE) > 0
    kernel.check_invariants()
    return kernel


def entries(kernel, vpns):
    return kernel.processes[0].space.page_table.leaf_entries(np.asarray(vpns, np.int64))


def set_entries(kernel, vpns, ptes):
    kernel.processes[0].space.page_table.set_leaf_entries(np.asarray(vpns, np.int64),
                                                          np.asarray(ptes, np.uint64))


def present_vpns(kernel):
    ptes = entries(kernel, np.arange(ANON_PAGES))
    return np.flatnonzero(ptes & PTE_PRESENT)


def swapped_vpns(kernel):
    ptes = entries(kernel, np.arange(ANON_PAGES))
    return np.flatnonzero(((ptes & PTE_SWAP) != 0) & ((ptes & PTE_PRESENT) == 0))


def anon_page(kernel):
    return int(np.flatnonzero(kernel.kind == PageKind.ANON)[0])


def free_page(kernel):
    return int(np.flatnonzero(kernel.kind == PageKind.FREE)[0])


def table_page(kernel):
    return int(np.flatnonzero(kernel.kind == PageKind.TABLE)[-1])


def break_free_and_allocated(kernel):
    kernel.allocator.allocated[free_page(kernel)] = True  # on the free list, and allocated


def break_neither_free_nor_allocated(kernel):
    kernel.allocator.allocated[anon_page(kernel)] = False


def break_free_list_twice(kernel):
    kernel.allocator.free_stack.push(np.array([free_page(kernel)]))


def break_kind_free_but_allocated(kernel):
    kernel.kind[anon_page(kernel)] = PageKind.FREE


def break_kind_used_but_free(kernel):
    kernel.kind[free_page(kernel)] = PageKind.ANON


def break_reverse_map_vpn(kernel):
    kernel.vpn[anon_page(kernel)] += 1


def break_reverse_map_process(kernel):
    kernel.proc[anon_page(kernel)] = 1  # no such process maps it


def break_page_mapped_twice(kernel):
    # A second entry maps a resident page (in place of a swapped page's entry,
    # whose slot is given back): two virtual pages share one guest page behind
    # the kernel's back.
    vpn, other = present_vpns(kernel)[0], swapped_vpns(kernel)[0]
    slot = int(entries(kernel, [other])[0] >> np.uint64(PTE_FRAME_SHIFT)) & ((1 << 40) - 1)
    kernel.swap.discard(np.array([slot]))
    set_entries(kernel, [other], entries(kernel, [vpn]))


def break_entry_maps_free_page(kernel):
    vpn = swapped_vpns(kernel)[0]
    slot = int(entries(kernel, [vpn])[0] >> np.uint64(PTE_FRAME_SHIFT)) & ((1 << 40) - 1)
    kernel.swap.discard(np.array([slot]))
    ppn = free_page(kernel)
    set_entries(kernel, [vpn], [np.uint64(ppn << PTE_FRAME_SHIFT) | PTE_PRESENT])


def break_swap_slot_used_twice(kernel):
    a, b = swapped_vpns(kernel)[:2]
    set_entries(kernel, [b], entries(kernel, [a]))  # b's slot is held by nobody now


def break_swap_entry_names_free_slot(kernel):
    vpn = swapped_vpns(kernel)[0]
    free_slot = int(np.flatnonzero(~kernel.swap.used)[0])
    set_entries(kernel, [vpn], [np.uint64(free_slot << PTE_FRAME_SHIFT) | PTE_SWAP])


def break_swap_slot_leaked(kernel):
    kernel.swap.swap_out(np.ones(1, np.uint64))  # a slot in use that no entry holds


def break_swap_entry_lost(kernel):
    set_entries(kernel, [swapped_vpns(kernel)[0]], [0])  # the page's data is unreachable


def break_swap_free_list(kernel):
    kernel.swap.used[int(np.flatnonzero(~kernel.swap.used)[0])] = True


def break_table_page_freed(kernel):
    ppn = table_page(kernel)
    kernel.kind[ppn] = PageKind.FREE  # handed back while it still holds entries
    kernel.allocator.free(np.array([ppn]))


def break_data_page_is_a_table(kernel):
    kernel.tables.is_table_frame[anon_page(kernel)] = True


BREAKS = {
    "a page both free and allocated": (break_free_and_allocated, "free list corrupt"),
    "a page neither free nor allocated": (break_neither_free_nor_allocated,
                                          "neither free nor allocated"),
    "a page on the free list twice": (break_free_list_twice, "free list corrupt"),
    "an allocated page of kind FREE": (break_kind_free_but_allocated,
                                       "kinds and the free list"),
    "a free page of kind ANON": (break_kind_used_but_free, "kinds and the free list"),
    "a reverse map naming the wrong VPN": (break_reverse_map_vpn, "reverse map"),
    "a reverse map naming the wrong process": (break_reverse_map_process, "reverse map"),
    "a guest page mapped by two entries": (break_page_mapped_twice, "mapped"),
    "an entry mapping a free page": (break_entry_maps_free_page, "mapped"),
    "a swap slot held by two entries": (break_swap_slot_used_twice, "swap"),
    "a swap entry naming a free slot": (break_swap_entry_names_free_slot, "swap"),
    "a slot in use with no entry": (break_swap_slot_leaked, "swap entries"),
    "a swapped page whose entry is gone": (break_swap_entry_lost, "swap entries"),
    "a corrupt swap free list": (break_swap_free_list, "guest swap"),
    "a page-table page on the free list": (break_table_page_freed, "page-table pages"),
    "a data page that is also a page table": (break_data_page_is_a_table,
                                              "page-table pages"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_guest_invariants_catch(name):
    kernel = small_guest()
    corrupt, message = BREAKS[name]
    corrupt(kernel)
    with pytest.raises(InvariantViolation, match=message):
        kernel.check_invariants()
