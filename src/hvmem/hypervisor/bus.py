r"""The guest-physical memory bus, the hypervisor's side of it.

What is modelled
----------------
The guest kernel reads and writes whole pages of its "physical" memory
(``hardware.guest_memory.GuestPhysicalMemory``); every touch the host must
serve happens behind these calls::

    read_pages / touch_pages / write_pages (ppns)
      all backed (private, for a write), none armed --> one kernel pass:
            store the data, stamp the pages for LRU, report sampled touches
      else --> copy-on-write for written shared pages, then first touch,
               swap-in, decompression (``fault.py``); armed pages trap
               (``sampling.py``); then the same touch

A read of a swapped page the guest is about to write to its own swap device
(``for_swap_out``) is double paging and counted as such [OSDI02 §3.1].

Data layout and speed: most bus calls need no service, so the first pass
(:func:`_bus_check`) only classifies the pages; a call that needs none goes
straight to the one-pass touch kernel, without gathering frame numbers it
does not use. The first pass also lists the pages without a frame, which the
fault path serves from that list (``fault.back_missing``), and a write's its
shared pages, so copy-on-write starts from that list; the pages are looked
at again only if making room for the copies swapped out some of the VM's
own.

Invariants: after a bus call every touched page is backed (and private, after
a write), and stamped with the host's current touch stamp.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.core.sets import sorted_unique
from hvmem.hypervisor.fault import back, back_missing, break_cow, select_pages
from hvmem.hypervisor.pmap import STATE_PRIVATE, STATE_SHARED, Backing
from hvmem.hypervisor.sampling import observe_touches
from hvmem.hypervisor.vm_state import VmState

_NO_TOKENS = np.zeros(0, dtype=np.uint64)
_NO_PAGES = np.zeros(0, dtype=np.int64)
_NO_SLOTS = np.zeros(0, dtype=np.int32)
_NO_TOUCHED = np.zeros(0, dtype=np.bool_)
_NO_STAMPS = np.zeros(0, dtype=np.int32)  # touch stamps not kept (no LRU swap selection)


def read_pages(vm: VmState, ppns: np.ndarray, for_swap_out: bool = False
               ) -> tuple[np.ndarray, float]:
    """Contents of guest pages, bringing back any the host had taken away.

    An unbacked page is backed first (it reads zeroes); a swapped one is
    read back from the swap file. ``for_swap_out`` says the guest reads the
    pages to write them to its own swap: a swapped one is double paging.
    Returns (tokens, time charged in ns).
    """
    ppns = np.asarray(ppns, dtype=np.int64)
    if for_swap_out:
        vm.swapfile.counters.double_paging += int(
            np.count_nonzero(vm.pmap.state[ppns] == Backing.SWAPPED)
        )
    before = vm.counters.fault_time_ns
    back(vm, ppns)
    mpns = vm.pmap.mpn[ppns]
    observe_touches(vm, ppns)
    return vm.frames.content[mpns], vm.counters.fault_time_ns - before  # a gather: a copy


def write_pages(vm: VmState, ppns: np.ndarray, tokens: np.ndarray) -> float:
    """Store contents into guest pages, backing unbacked ones first; returns the time."""
    ppns = np.asarray(ppns, dtype=np.int64)
    before = vm.counters.fault_time_ns
    if vm.n_armed or ppns.size == 0:
        shared = np.empty(ppns.size, dtype=np.int64)
        n_shared = select_pages(ppns, vm.pmap.state, True, shared)
        if n_shared > 0:
            break_cow(vm, sorted_unique(shared[:n_shared]))
        back(vm, ppns)
    else:
        # One pass classifies the pages and lists the shared ones for copy-on-write
        # and the frameless ones for the fault path.
        shared = np.empty(ppns.size, dtype=np.int64)
        missing = np.empty(ppns.size, dtype=np.int64)
        n_shared, n_missing = _bus_check_lists(ppns, vm.pmap.state, shared, missing)
        if n_shared > 0:
            swapped_before = vm.counters.emergency_swaps
            break_cow(vm, sorted_unique(shared[:n_shared]))
            # Making room for the copies may have swapped out written private pages
            # (compressed pages going to swap stay frameless: the list holds).
            if vm.counters.emergency_swaps != swapped_before:
                n_missing = -1
        _back_listed(vm, ppns, missing, n_missing)
    _touch_backed(vm, ppns, np.ascontiguousarray(tokens, dtype=np.uint64), True)
    return vm.counters.fault_time_ns - before


def touch_pages(vm: VmState, ppns: np.ndarray) -> float:
    """Read guest pages for their own sake (the contents are not wanted).

    The same as :func:`read_pages` without gathering the tokens; returns
    the time charged.
    """
    ppns = np.asarray(ppns, dtype=np.int64)
    before = vm.counters.fault_time_ns
    if vm.n_armed or ppns.size == 0:
        back(vm, ppns)
    else:
        missing = np.empty(ppns.size, dtype=np.int64)
        _, n_missing = _bus_check_lists(ppns, vm.pmap.state, _NO_PAGES, missing)
        _back_listed(vm, ppns, missing, n_missing)
    _touch_backed(vm, ppns, _NO_TOKENS, False)
    return vm.counters.fault_time_ns - before


def _back_listed(vm: VmState, ppns: np.ndarray, missing: np.ndarray, n_missing: int) -> None:
    """``back(vm, ppns)`` with the frameless pages listed: the first ``n_missing`` of ``missing``.

    A negative count says to look again (or that a page lies outside the VM,
    which ``back`` reports).
    """
    if n_missing > 0:
        back_missing(vm, sorted_unique(missing[:n_missing]), busy_ppns=ppns)
    elif n_missing < 0:
        back(vm, ppns)


def _touch_backed(vm: VmState, ppns: np.ndarray, tokens: np.ndarray, store: bool) -> None:
    """Touch ``ppns``, all backed (private, if ``store``): store ``tokens``, observe."""
    if vm.n_armed:  # some touches trap (mmu fidelity's sampling)
        if store:
            vm.frames.content[vm.pmap.mpn[ppns]] = tokens
        observe_touches(vm, ppns)
    else:
        _bus_touch(vm, ppns, tokens, store)


def _bus_touch(vm: VmState, ppns: np.ndarray, tokens: np.ndarray, store: bool) -> None:
    """Touch backed ``ppns`` (nothing armed) in one pass.

    Stores ``tokens`` if ``store``, stamps the pages for LRU and reports
    them to the sampler.
    """
    sampler = vm.sampler
    if sampler is not None and sampler.sample.size:
        slot_of_ppn, touched = sampler.slot_of_ppn, sampler.touched
    else:
        slot_of_ppn, touched = _NO_SLOTS, _NO_TOUCHED
    stamps = vm.last_touch_stamp if vm.services.touch_stamps else _NO_STAMPS
    _bus_touch_kernel(ppns, tokens, store, vm.pmap.mpn, vm.frames.content,
                      stamps, vm.clock.stamp, slot_of_ppn, touched)


@njit(cache=True, nogil=True)
def _bus_check_lists(ppns, state, shared, missing):
    """(shared, frameless) among ``ppns``; (-1, -1) if one lies outside the VM.

    The shared entries of ``ppns`` go to ``shared`` and the frameless ones to
    ``missing``, in order, each as many as it has room for (none, if empty).
    """
    n = state.size
    n_shared = 0
    n_missing = 0
    for i in range(ppns.size):
        p = ppns[i]
        if p < 0 or p >= n:
            return -1, -1
        s = state[p]
        if s == STATE_SHARED:
            if n_shared < shared.size:
                shared[n_shared] = p
            n_shared += 1
        elif s != STATE_PRIVATE:
            if n_missing < missing.size:
                missing[n_missing] = p
            n_missing += 1
    return n_shared, n_missing


@njit(cache=True, nogil=True)
def _bus_touch_kernel(ppns, tokens, store, mpn, content, last_touch_stamp, stamp, slot_of_ppn,
                      touched):
    """Backed pages touched over the bus: stores (in order), LRU stamps, sampled touches.

    An empty ``last_touch_stamp`` stamps nothing (no LRU swap selection to read it).
    """
    sampled = slot_of_ppn.size > 0
    stamped = last_touch_stamp.size > 0
    for i in range(ppns.size):
        p = ppns[i]
        if store:
            content[mpn[p]] = tokens[i]
        if stamped:
            last_touch_stamp[p] = stamp
        if sampled:
            slot = slot_of_ppn[p]
            if slot >= 0:
                touched[slot] = True
