"""``Host.check_invariants`` refuses every broken state it claims to rule out.

Each test builds a small valid host (private pages of two VMs, a frame shared
by both, a compressed page and its cache frame, a swapped page, the nested
tables; or a VM backed by a host large page), checks that it passes, breaks it
in one way and expects :class:`InvariantViolation`. A checker that stops
looking at something makes its test fail here, where the property tests,
which only ever hand it valid states, would not notice.
"""

from __future__ import annotations

import numpy as np
import pytest

from hvmem.errors import InvariantViolation
from hvmem.hardware.frames import FREE, HYPERVISOR
from hvmem.hardware.page_table import TableStore
from hvmem.hypervisor.host import Host
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.sharing_table import KEY_TOMBSTONE, KIND_SHARED, KIND_SHIFT
from hvmem.hypervisor.vm_state import LARGE_PAGE_PAGES

LP = LARGE_PAGE_PAGES
SHARED_TOKEN = 0x5500 | 0x10  # one value in both VMs: shared
ZIP_TOKEN = 0x100 | 0x10  # compresses to 272 bytes: kept in the compression cache
SWAP_TOKEN = 0x200 | 0xFF  # does not compress: swapped


def small_host():
    """Two VMs of 64 pages on 256 frames, every kind of frame present once at least.

    VM ``a``: pages 0..7 private (page 0 then compressed, page 1 swapped),
    pages 8 and 9 on the frame shared with ``b``'s page 8. VM ``b``: pages
    0..7 private. Nested tables for both.
    """
    host = Host(256, "nested", salting="across")
    a, b = (host.add_vm(name, 64, TableStore(64, name)) for name in "ab")
    tokens = (np.arange(8, dtype=np.uint64) + 1) << np.uint64(16)
    tokens[0], tokens[1] = ZIP_TOKEN, SWAP_TOKEN
    a.write_pages(np.arange(8), tokens)
    b.write_pages(np.arange(8), tokens | np.uint64(1 << 40))
    a.write_pages(np.array([8, 9]), np.full(2, SHARED_TOKEN, np.uint64))
    b.write_pages(np.array([8]), np.full(1, SHARED_TOKEN, np.uint64))
    a.share_scan(np.array([8, 9]))
    b.share_scan(np.array([8]))
    # LRU among equal stamps takes the lowest pages: 0 compresses, 1 is swapped.
    done = a.reclaim(2, "lru", np.random.default_rng(0), share_first=False)
    assert done == {"shared": 0, "compressed": 0, "swapped": 1}  # the cache frame nets out
    assert a.pmap.state[:2].tolist() == [Backing.COMPRESSED, Backing.SWAPPED]
    assert a.pmap.count(Backing.SHARED) == 2 and b.pmap.count(Backing.SHARED) == 1
    assert a.zip.frames.size == 1
    host.check_invariants()
    return host, a, b


def shared_frame(host, a):
    return int(a.pmap.mpn[8])


def table_frame(a):
    return int(a.paging.table_frames()[0])


def break_cross_vm_double_map(host, a, b):
    b.pmap.mpn[2] = a.pmap.mpn[2]  # b's page now names a's frame (b's old frame leaks)


def break_zip_frame_backs_a_page(host, a, b):
    # The cache's frame is also page 2's; the cache's own frame goes back.
    frames = host.frames
    frames.free(a.zip.frames)
    a.zip.frames = a.pmap.mpn[[2]].astype(np.int64)


def break_leak_vm_frame(host, a, b):
    host.frames.alloc(a.vm_id, 1)  # owned, mapped by nobody


def break_leak_hypervisor_frame(host, a, b):
    host.frames.alloc(HYPERVISOR, 1)  # a table page no table holds


def break_release_without_free(host, a, b):
    a.pmap.unback(np.array([3]), Backing.BALLOONED)  # the frame is never freed


def break_shared_refcount(host, a, b):
    host.frames.refcount[shared_frame(host, a)] += 1


def break_shared_refcount_low(host, a, b):
    host.frames.refcount[shared_frame(host, a)] -= 1


def break_shared_frame_owned_by_a_vm(host, a, b):
    host.frames.owner[shared_frame(host, a)] = a.vm_id


def break_table_frame_given_to_vm(host, a, b):
    frame = table_frame(a)
    host.frames.owner[frame] = host.frames.last_owner[frame] = a.vm_id


def break_table_frame_also_backs_a_page(host, a, b):
    old = int(a.pmap.mpn[4])
    a.pmap.mpn[4] = table_frame(a)
    host.frames.free(old)


def break_private_refcount(host, a, b):
    host.frames.refcount[a.pmap.mpn[5]] = 2  # a private frame counted as mapped twice


def break_table_frame_reverse_map(host, a, b):
    host.frames.ppn[table_frame(a)] = 5  # a table page claims to back page 5


def break_shared_frame_reverse_map(host, a, b):
    host.frames.ppn[shared_frame(host, a)] = 8  # would let a stale hint on it hold


def break_swap_file(host, a, b):
    a.swapfile.store(np.array([3]), np.zeros(1, np.uint64))  # a private page also swapped


def break_swap_file_lost(host, a, b):
    a.swapfile.discard(np.array([1]))  # a swapped page whose slot is gone


def break_zip_slot(host, a, b):
    a.zip.aside.put(np.array([3]), np.zeros(1, np.uint64), 1)  # private, also cached


def break_zip_frames(host, a, b):
    host.frames.free(a.zip.frames)  # the cache's frame went back; the cache still uses it


def break_pmap_state_without_frame(host, a, b):
    a.pmap.state[20] = Backing.PRIVATE


def break_pmap_frame_without_state(host, a, b):
    a.pmap.mpn[1] = a.pmap.mpn[2]  # the swapped page names a frame


def break_freed_frame_still_mapped(host, a, b):
    host.frames.free(a.pmap.mpn[[4]])


def break_stale_reverse_map(host, a, b):
    host.frames.ppn[a.pmap.mpn[4]] = 5


def break_free_list(host, a, b):
    free = int(np.flatnonzero(host.frames.owner == FREE)[0])
    host.frames.owner[free] = a.vm_id  # owned, but still on the free list


def break_sharing_entry_lost(host, a, b):
    table = host.sharing.table
    live = table["key"] > KEY_TOMBSTONE
    slot = np.flatnonzero(live & ((table["val"] & KIND_SHARED) != 0))[0]
    table["key"][slot] = KEY_TOMBSTONE  # the shared frame can no longer be found


def break_sharing_entry_names_private_frame(host, a, b):
    table = host.sharing.table
    live = table["key"] > KEY_TOMBSTONE
    slot = np.flatnonzero(live & ((table["val"] & KIND_SHARED) != 0))[0]
    # The next page with that content would be mapped onto a's private page 6.
    table["val"][slot] = (np.uint64(a.pmap.mpn[6]) << KIND_SHIFT) | KIND_SHARED


BREAKS = {
    "two VMs' pmaps on one frame": (break_cross_vm_double_map, "does not own"),
    "a compression-cache frame that also backs a page": (break_zip_frame_backs_a_page,
                                                         "mapped twice"),
    "a VM frame owned but mapped by nobody": (break_leak_vm_frame, "mapped by nobody"),
    "a hypervisor frame in no table": (break_leak_hypervisor_frame, "mapped by nobody"),
    "a page released without its frame": (break_release_without_free, "mapped by nobody"),
    "a shared refcount too high": (break_shared_refcount, "refcount differs"),
    "a shared refcount too low": (break_shared_refcount_low, "refcount differs"),
    "a shared page on a frame one VM owns": (break_shared_frame_owned_by_a_vm,
                                             "refcount differs"),
    "a page-table frame given to a VM": (break_table_frame_given_to_vm,
                                         "not a hypervisor frame"),
    "a page-table frame that also backs a page": (break_table_frame_also_backs_a_page,
                                                  "does not own"),
    "a private frame with two mappings": (break_private_refcount, "refcount"),
    "a table frame with a reverse map": (break_table_frame_reverse_map, "reverse map"),
    "a shared frame with a reverse map": (break_shared_frame_reverse_map, "reverse map"),
    "a private page also in the swap file": (break_swap_file, "swap file"),
    "a swapped page not in the swap file": (break_swap_file_lost, "swap file"),
    "a private page also in the compression cache": (break_zip_slot, "compression cache"),
    "a compression-cache frame freed": (break_zip_frames, "compression cache frames"),
    "a private page without a frame": (break_pmap_state_without_frame, "pmap"),
    "a swapped page with a frame": (break_pmap_frame_without_state, "pmap"),
    "a freed frame still in a pmap": (break_freed_frame_still_mapped, "does not own"),
    "a stale frame reverse map": (break_stale_reverse_map, "reverse map is stale"),
    "an owned frame on the free list": (break_free_list, "free list"),
    "a shared frame missing from the sharing table": (break_sharing_entry_lost,
                                                      "sharing table"),
    "a sharing-table entry naming a private frame": (break_sharing_entry_names_private_frame,
                                                     "sharing table"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_host_invariants_catch(name):
    host, a, b = small_host()
    corrupt, message = BREAKS[name]
    corrupt(host, a, b)
    with pytest.raises(InvariantViolation, match=message):
        host.check_invariants()


def test_a_vm_consuming_more_frames_than_it_has_pages_is_caught():
    host = Host(512, "nested")
    vm = host.add_vm("c", 2, TableStore(2, "c"))
    vm.write_pages(np.arange(2), np.array([7, 8], np.uint64))
    host.check_invariants()
    # A compression cache frame with nothing in the cache it would save.
    vm.zip.used_bytes = 4096
    vm.zip.frames = host.frames.alloc(vm.vm_id, 1)
    with pytest.raises(InvariantViolation, match="consumes 3 frames for 2 guest pages"):
        host.check_invariants()


# -- host large pages ------------------------------------------------------------------


def large_host():
    """One VM of two 2 MiB regions and a few pages more, its second region a large page."""
    host = Host(8 * LP, "nested", large_pages=True)
    vm = host.add_vm("a", 2 * LP + 8, TableStore(2 * LP + 8, "a"))
    vm.write_pages(np.array([LP]), np.array([3], np.uint64))
    vm.write_pages(np.array([3]), np.array([4], np.uint64))  # region 0: small pages
    vm.break_large_pages(np.array([0]))
    assert vm.large.tolist() == [False, True, False]
    host.check_invariants()
    return host, vm


def break_large_flag_without_leaf(host, vm):
    vm.large[0] = True  # region 0 is small pages under 4 KiB leaves


def break_large_partial_region(host, vm):
    vm.large[2] = vm.paging.large[2] = True  # only 8 pages: cannot be a large page


def break_large_frames_out_of_order(host, vm):
    frames = host.frames
    p, q = LP + 1, LP + 2
    vm.pmap.mpn[[p, q]] = vm.pmap.mpn[[q, p]]
    frames.ppn[vm.pmap.mpn[[p, q]]] = [p, q]


def break_large_page_not_private(host, vm):
    ppn = LP + 5
    old = vm.pmap.unback(np.array([ppn]), Backing.SWAPPED)
    vm.swapfile.store(np.array([ppn]), np.zeros(1, np.uint64))
    host.frames.free(old)


def break_large_map_size(host, vm):
    vm.large = vm.large[:-1]


def break_large_page_moved_without_leaf(host, vm):
    # The large page's data moves to another aligned run; its PS leaf still names the old.
    frames, pages = host.frames, np.arange(LP, 2 * LP)
    old = vm.pmap.mpn[pages].astype(np.int64)
    base = int(frames.alloc_runs(vm.vm_id, 1, LP)[0])
    vm.pmap.mpn[pages] = base + np.arange(LP)
    frames.ppn[base:base + LP] = pages
    frames.free(old)


LARGE_BREAKS = {
    "a large-page map of the wrong size": (break_large_map_size, "wrong size"),
    "a large page moved without its PS leaf": (break_large_page_moved_without_leaf,
                                               "PS leaf"),
    "a large-page flag with no PS leaf": (break_large_flag_without_leaf, "disagree on large"),
    "a partial region marked large": (break_large_partial_region, "partial region"),
    "a large page's frames out of order": (break_large_frames_out_of_order,
                                           "aligned run"),
    "a page of a large page swapped": (break_large_page_not_private, "not private"),
}


@pytest.mark.parametrize("name", list(LARGE_BREAKS))
def test_host_large_page_invariants_catch(name):
    host, vm = large_host()
    corrupt, message = LARGE_BREAKS[name]
    corrupt(host, vm)
    with pytest.raises(InvariantViolation, match=message):
        host.check_invariants()


def test_the_sharing_table_entry_goes_with_the_last_sharer():
    # The state the sharing-table checks expect after sharers leave: a frame whose
    # last sharer leaves is forgotten, and the checker agrees.
    host, a, b = small_host()
    a.break_cow(np.array([8, 9]))
    host.check_invariants()
    b.break_cow(np.array([8]))
    host.check_invariants()
    table = host.sharing.table
    live = table["key"] > KEY_TOMBSTONE
    assert not np.any(live & ((table["val"] & KIND_SHARED) != 0))
