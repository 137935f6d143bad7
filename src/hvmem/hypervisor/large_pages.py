r"""Host large pages: 2 MiB of machine memory behind a 2 MiB guest region.

What is modelled
----------------
With hardware-assisted paging ESX prefers to back guest memory with 2 MiB host
pages (``Mem.AllocGuestLargePage`` = 1): fewer nested-table levels to walk and
more reach per TLB entry, paid for in memory, because a large page is never
shared and is backed whole [KB1021095]. With shadow paging ESX backs with
4 KiB pages, so the host refuses large pages there. The model, per VM:

* ``large[region]``, one bool per aligned 512-page (2 MiB) guest-physical
  region (``ppn >> 9``): the region is backed by one large page. Its 512 pages
  are PRIVATE and page ``i`` of it sits in frame ``base + i`` of a 2 MiB-aligned
  run; the nested table maps it with one PS leaf (``paging/nested.py``).
* First touch (:func:`back_large`): a touched page whose whole region is
  UNBACKED (nothing backed, ballooned, compressed or swapped there; a partial
  region at the end of memory never qualifies) gets the whole region at once:
  one fault, 512 frames, 2 MiB more consumed, whether the guest uses the rest
  or not.
* Contiguity: a large page needs a 2 MiB-aligned block of 512 free frames
  (``MachineMemory.alloc_runs``, taken from the top of memory while 4 KiB pages
  come off the free list's low end). Nothing is swapped to make room for one:
  with no such block, or not enough free memory beside it, the region is backed
  with 4 KiB pages and counted in ``large_page_fallbacks``. Freed and shared
  frames fragment memory over time, so fallbacks rise as a host fills up.
  Large pages are never formed again from small ones (no promotion).
* Sharing: the scanner still visits the pages of a large page and hashes them
  (ESX keeps the 4 KiB sub-pages' hashes; here ``lp_hashed``, one bit per page)
  but shares none of them; they are counted as ``large_pages`` in the sharing
  counters.
* Breaking (:func:`break_large_pages`): the region becomes 512 ordinary private
  pages, no data moves, the nested table maps them at 4 KiB again. ESX breaks
  (a) when the swap or compression path picks a page of a large page, and then
  first offers to sharing the sub-pages it has hashes for [KB1021095]; (b) in
  ESXi 6 by memory state: below the HIGH threshold a large page the scanner
  visits is broken and the visited page (and the hashed ones) offered, the rest
  waiting for the scanner ("wait for the next TPS run"); in CLEAR and below
  large pages are broken actively, ``LARGE_PAGE_BREAKS_PER_S`` per VM, and TPS
  is called on all their pages at once [YB-STATES6][YB-LP6]
  (:func:`break_actively`); (c) when the guest gives part of one back (balloon,
  free page reporting); a large page given back whole (d: a VM powered off) is
  dropped whole and counted in ``large_pages_released`` (:func:`release_large`).
  Remapping a page, or a stale sharing hint that still names a frame now inside
  a large page and matches, breaks it too (``large_pages_broken_other``).

Invariant (checked in ``invariants.py``): every page of a large region is
PRIVATE in the aligned frames of its run, which the nested table maps with one
PS leaf; no partial region is large.

References: [KB1021095] (TPS and large pages); [YB-STATES6][YB-LP6]
(ESXi 6 states); the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hvmem.core.sets import sorted_unique
from hvmem.errors import InvariantViolation
from hvmem.hypervisor.paging.nested import NestedPaging
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.vm_state import (
    EMERGENCY_SLACK_FRAMES,
    LARGE_PAGE_PAGES,
    LARGE_PAGE_SHIFT,
    VmState,
)
from hvmem.units import ns_to_s

#: Large pages broken per VM and second in CLEAR and below. No rate is published;
#: 64 (128 MiB/s per VM) splits a 4 GiB VM in about half a minute, well before a
#: host that keeps falling reaches SOFT at 64 % of minFree.
LARGE_PAGE_BREAKS_PER_S = 64
#: Free frames a split leaves alone: splitting a large page takes a nested table page,
#: so under pressure only as many are split at once as free frames allow.
LARGE_PAGE_SPLIT_RESERVE = 8
#: How a host breaks large pages by memory state: not at all, when the scanner
#: visits them (ESXi 6 below HIGH), or actively as well (ESXi 6 CLEAR and below).
LARGE_PAGE_BREAKING = ("off", "lazy", "active")


def pages_of(regions: np.ndarray) -> np.ndarray:
    """Every page of 2 MiB ``regions``, in order."""
    return (regions[:, None] * LARGE_PAGE_PAGES + np.arange(LARGE_PAGE_PAGES)).ravel()


def hashed_pages(vm: VmState, regions: np.ndarray) -> np.ndarray:
    """The pages of just-broken ``regions`` the scanner hashed while they were large."""
    pages = pages_of(regions)
    return pages[vm.lp_hashed[pages]]


def nested(vm: VmState) -> NestedPaging:
    """The VM's nested paging mode: large pages exist only under it."""
    if not isinstance(vm.paging, NestedPaging):
        raise InvariantViolation(f"{vm.name}: large pages need nested paging")
    return vm.paging


def back_large(vm: VmState, todo: np.ndarray) -> np.ndarray:
    """Back the wholly unbacked regions of first-touched ``todo`` with large pages.

    Returns the pages still to back with 4 KiB frames.
    """
    whole = vm.n_ppns >> LARGE_PAGE_SHIFT
    regions = sorted_unique(todo >> LARGE_PAGE_SHIFT)
    regions = regions[regions < whole]
    if regions.size == 0:
        return todo
    states = vm.pmap.state[: whole << LARGE_PAGE_SHIFT].reshape(whole, LARGE_PAGE_PAGES)
    regions = regions[(states[regions] == Backing.UNBACKED).all(axis=1)]
    if regions.size == 0:
        return todo
    frames, costs = vm.frames, vm.costs
    # Only what is free beyond the small pages still to back and make_room's slack:
    # a large page is a preference, never a reason to swap.
    spare = frames.n_free - todo.size - EMERGENCY_SLACK_FRAMES - todo.size // 256
    zeroed_before = frames.counters.zeroings
    bases = frames.alloc_runs(vm.vm_id, min(regions.size, max(0, spare) // LARGE_PAGE_PAGES),
                              LARGE_PAGE_PAGES)
    zeroed = frames.counters.zeroings - zeroed_before
    vm.counters.large_page_fallbacks += int(regions.size - bases.size)
    if bases.size == 0:
        return todo
    got = regions[: bases.size]
    pages = pages_of(got)
    mpns = (bases[:, None] + np.arange(LARGE_PAGE_PAGES)).ravel()
    frames.ppn[mpns] = pages
    vm.pmap.back(pages, mpns, Backing.PRIVATE)
    vm.large[got] = True
    vm.lp_hashed[pages] = False
    nested(vm).map_large(got, bases)
    vm.counters.large_pages_backed += int(got.size)
    vm.counters.first_touch_faults += int(got.size)
    vm.counters.zeroed_frames += zeroed
    vm.counters.fault_time_ns += got.size * costs.hypervisor_fault_ns + zeroed * (
        costs.zero_page_ns)
    vm.counters.zero_time_ns += zeroed * costs.zero_page_ns
    return todo[~vm.large[todo >> LARGE_PAGE_SHIFT]]


def break_large_pages(vm: VmState, regions: np.ndarray, reason: str = "other",
                      bounded: bool = False) -> int:
    """Split large pages into 512 private 4 KiB pages each; returns how many were split.

    ``regions`` are 2 MiB region numbers (``ppn >> 9``); those not backed by a
    large page are ignored. No data moves: each page keeps its frame, the
    nested table maps the pages one by one again (a table page each), and
    from now on each is an ordinary page that can be shared, compressed,
    swapped or released. ``reason`` ("reclaim", "state", "release" or
    "other") picks the counter. ``bounded``: split only the first ones that
    the free frames (less ``LARGE_PAGE_SPLIT_RESERVE``) have table pages for,
    so that reclaiming under pressure never fails for want of one.
    """
    regions = np.unique(np.asarray(regions, dtype=np.int64))
    regions = regions[vm.large[regions]]
    if bounded:
        regions = regions[: max(0, vm.frames.n_free - LARGE_PAGE_SPLIT_RESERVE)]
    if regions.size == 0:
        return 0
    vm.large[regions] = False
    nested(vm).split_large(regions)
    n = int(regions.size)
    c = vm.counters
    c.large_pages_broken += n
    if reason == "reclaim":
        c.large_pages_broken_reclaim += n
    elif reason == "state":
        c.large_pages_broken_state += n
    elif reason == "release":
        c.large_pages_broken_release += n
    else:
        c.large_pages_broken_other += n
    return n


def break_covering(vm: VmState, ppns: np.ndarray, reason: str, bounded: bool = False
                   ) -> np.ndarray:
    """Break the large pages holding any of ``ppns``; returns the regions broken.

    ``bounded`` as in :func:`break_large_pages`: some may stay whole.
    """
    if ppns.size == 0 or not vm.large.any():
        return np.zeros(0, dtype=np.int64)
    regions = sorted_unique(ppns >> LARGE_PAGE_SHIFT)
    regions = regions[vm.large[regions]]
    break_large_pages(vm, regions, reason, bounded)
    return regions[~vm.large[regions]]


def release_large(vm: VmState, ppns: np.ndarray) -> None:
    """Large pages among distinct ``ppns`` given back: dropped whole, or broken.

    A large page all of whose pages go (a powered-off VM) is dropped whole;
    one the guest gives part of back (balloon, free page reporting) breaks.
    """
    regions, counts = np.unique(ppns >> LARGE_PAGE_SHIFT, return_counts=True)
    large = vm.large[regions]
    whole = regions[large & (counts == LARGE_PAGE_PAGES)]
    partial = regions[large & (counts < LARGE_PAGE_PAGES)]
    if partial.size:
        # The guest does not wait: the table pages the splits take are found
        # now, by swapping elsewhere if memory is that tight.
        vm.services.make_room(partial.size, vm, ppns)
        break_large_pages(vm, partial, "release")
    if whole.size:
        # The caller unbacks the pages and frees their frames; the nested
        # table's 4 KiB path is empty already once the PS leaves are gone.
        vm.large[whole] = False
        nested(vm).unmap_large(whole)
        vm.counters.large_pages_released += int(whole.size)


def break_actively(vms: Sequence[VmState], elapsed_ns: int, rng: np.random.Generator,
                   share: bool = True) -> int:
    """Break large pages as ESXi 6 does in CLEAR and below; returns how many were broken.

    Up to ``LARGE_PAGE_BREAKS_PER_S`` random large pages per VM and second
    are broken now and, when ``share``, their pages offered to sharing at once
    [YB-STATES6][YB-LP6].
    """
    budget = int(ns_to_s(LARGE_PAGE_BREAKS_PER_S * elapsed_ns) + rng.random())
    broken = 0
    for vm in vms:
        regions = np.flatnonzero(vm.large)
        if regions.size == 0 or budget == 0:
            continue
        if regions.size > budget:
            regions = np.sort(rng.choice(regions, budget, replace=False))
        broken += break_large_pages(vm, regions, "state", bounded=True)
        if share:
            vm.services.share(vm, pages_of(regions[~vm.large[regions]]))
    return broken
