r"""The hypervisor's fault path: giving a guest page a machine frame.

What is modelled
----------------
A VM gets no machine memory up front: the first touch of a guest-physical
page faults into the hypervisor, which takes a frame off the host free list
(zeroed first if it last belonged to someone else), records it in the pmap
and retries the reference::

    guest reference --MMU--> TLB hit ............................... MPN
                          \-> walk --> BACKING_MISSING (ppn) --> host: first touch,
                                                                  pmap[ppn] = new MPN, retry
                               \-> GUEST_NOT_PRESENT -------------> back to the guest

The same exit serves a page the host took away: a swapped page is read back
from the VM's swap file (``swap_in_faults``, the device time charged), a
compressed one is decompressed out of the compression cache. A write to a
shared page exits as BACKING_READ_ONLY and gets a private copy
(copy-on-write, :func:`break_cow`) [OSDI02 §4.2]. Where the host backs guest
memory with large pages, a first touch of a wholly unbacked 2 MiB region
takes the whole region (``large_pages.back_large``). Remapping
(:func:`remap`) is the same move unasked: a backed page's data goes to a
fresh frame and the translations follow the pmap.

Every fault first makes room (``services.make_room``): with too few free
frames the host swaps elsewhere at once, never the pages being served. A VM
with a limit (``cap_pages``) first swaps its own pages so that what it holds
stays within it (``services.hold_to_cap``): a limit holds whatever the host's
state [VS-ALLOC].

Counters per VM: ``first_touch_faults`` (pages backed lazily), ``zeroed_frames``
(of those, frames zeroed because they came from another owner),
``swap_in_faults``; ``fault_time_ns`` is the time every fault is charged.

References: Waldspurger, OSDI 2002 §2 (pmap), footnote 2 (zeroing), §4.2
(copy-on-write), §7 (remapping).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.core.sets import sorted_unique
from hvmem.errors import ConfigError
from hvmem.hypervisor.large_pages import back_large, break_covering
from hvmem.hypervisor.pmap import STATE_PRIVATE, STATE_SHARED, Backing
from hvmem.hypervisor.vm_state import VmState


@njit(cache=True, nogil=True)
def select_pages(ppns, state, shared, out):
    """Entries of ``ppns`` that are SHARED (``shared``) or else have no frame.

    They go to ``out`` in order; returns how many, or -1 if a page lies outside the VM.
    """
    n = state.size
    k = 0
    for i in range(ppns.size):
        p = ppns[i]
        if p < 0 or p >= n:
            return -1
        s = state[p]
        if (s == STATE_SHARED) if shared else (s != STATE_PRIVATE and s != STATE_SHARED):
            out[k] = p
            k += 1
    return k


def back(vm: VmState, ppns: np.ndarray) -> None:
    """Touch ``ppns`` (int64, any order, repeats allowed): back the ones without a frame.

    Most touches find their pages backed already, so that case costs one
    pass; only pages with no frame are sorted out and served (first touch,
    swap-in, decompression).
    """
    missing = np.empty(ppns.size, dtype=np.int64)
    n_missing = select_pages(ppns, vm.pmap.state, False, missing)
    if n_missing < 0:
        raise ConfigError(f"{vm.name}: guest-physical page outside 0..{vm.n_ppns - 1}")
    if n_missing:
        back_missing(vm, sorted_unique(missing[:n_missing]), busy_ppns=ppns)


def back_missing(vm: VmState, ppns: np.ndarray, busy_ppns: np.ndarray) -> None:
    """Give distinct, sorted, frameless ``ppns`` a frame each (never evicting ``busy_ppns``)."""
    state = vm.pmap.state[ppns]
    if vm.cap_pages is not None and vm.services.hold_to_cap is not None:
        vm.services.hold_to_cap(vm, ppns.size, busy_ppns)
    vm.services.make_room(ppns.size, vm, busy_ppns)
    swapped = ppns[state == Backing.SWAPPED]
    if swapped.size:
        swap_in(vm, swapped)
    compressed = ppns[state == Backing.COMPRESSED]
    if compressed.size:
        decompress(vm, compressed)
    todo = ppns[(state == Backing.UNBACKED) | (state == Backing.BALLOONED)]
    if todo.size and vm.services.large_pages and vm.cap_pages is None:
        todo = back_large(vm, todo)  # (a 2 MiB run could pass a VM's cap at once)
    if todo.size:
        frames = vm.frames
        zeroed_before = frames.counters.zeroings
        mpns = frames.alloc(vm.vm_id, todo.size)
        zeroed = frames.counters.zeroings - zeroed_before
        frames.ppn[mpns] = todo
        vm.pmap.back(todo, mpns, Backing.PRIVATE)
        vm.paging.on_backing_changed(todo, False)
        costs = vm.costs
        vm.counters.first_touch_faults += todo.size
        vm.counters.zeroed_frames += zeroed
        vm.counters.fault_time_ns += (
            todo.size * costs.hypervisor_fault_ns + zeroed * costs.zero_page_ns
        )
        vm.counters.zero_time_ns += zeroed * costs.zero_page_ns


def swap_in(vm: VmState, ppns: np.ndarray) -> None:
    """Bring swapped pages back into fresh frames (the guest touched them)."""
    frames = vm.frames
    zeroed_before = frames.counters.zeroings
    mpns = frames.alloc(vm.vm_id, ppns.size)
    # A frame from another VM is scrubbed before the page's data lands in it.
    vm.counters.zeroed_frames += frames.counters.zeroings - zeroed_before
    before = vm.swapfile.counters.time_ns
    frames.content[mpns] = vm.swapfile.load(ppns)
    frames.ppn[mpns] = ppns
    vm.pmap.back(ppns, mpns, Backing.PRIVATE)
    vm.paging.on_backing_changed(ppns, False)
    vm.counters.swap_in_faults += int(ppns.size)
    device_ns = vm.swapfile.counters.time_ns - before
    swap_in_ns = device_ns + ppns.size * vm.costs.hypervisor_fault_ns
    vm.counters.fault_time_ns += swap_in_ns
    vm.counters.swap_in_time_ns += swap_in_ns


def decompress(vm: VmState, ppns: np.ndarray) -> None:
    """Touched compressed pages come back into fresh frames."""
    frames = vm.frames
    tokens = vm.zip.take(ppns)
    vm.zip.fit_frames(frames, vm.vm_id)
    zeroed_before = frames.counters.zeroings
    mpns = frames.alloc(vm.vm_id, ppns.size)
    vm.counters.zeroed_frames += frames.counters.zeroings - zeroed_before
    frames.content[mpns] = tokens
    frames.ppn[mpns] = ppns
    vm.pmap.back(ppns, mpns, Backing.PRIVATE)
    vm.paging.on_backing_changed(ppns, False)
    vm.zip.counters.decompressed += int(ppns.size)
    costs = vm.costs
    decompress_ns = ppns.size * (costs.decompress_ns + costs.hypervisor_fault_ns)
    vm.counters.fault_time_ns += decompress_ns
    vm.counters.decompress_time_ns += decompress_ns


def break_cow(vm: VmState, ppns: np.ndarray) -> None:
    """A write to shared pages: give each a private copy (copy-on-write)."""
    ppns = np.asarray(ppns, dtype=np.int64)
    frames = vm.frames
    vm.services.make_room(ppns.size, vm, ppns)
    shared_mpns = vm.pmap.mpn[ppns]
    new = frames.alloc(vm.vm_id, ppns.size)
    frames.content[new] = frames.content[shared_mpns]
    frames.ppn[new] = ppns
    vm.services.leave_shared(vm, shared_mpns, True)
    vm.pmap.back(ppns, new, Backing.PRIVATE)
    vm.paging.on_backing_changed(ppns, True)
    costs = vm.costs
    cow_ns = ppns.size * (costs.hypervisor_fault_ns + costs.cow_copy_ns)
    vm.counters.fault_time_ns += cow_ns
    vm.counters.cow_time_ns += cow_ns


def remap(vm: VmState, ppns: np.ndarray) -> np.ndarray:
    """Move backed pages to fresh frames, copying their data; returns the new MPNs.

    This is the hypervisor's basic remapping move (OSDI 2002 §7 remaps hot
    I/O pages this way; sharing, swapping and migration build on it). The
    guest notices nothing: its translations follow the pmap.
    """
    ppns = sorted_unique(np.asarray(ppns, dtype=np.int64))
    ppns = ppns[vm.pmap.state[ppns] == Backing.PRIVATE]
    if ppns.size == 0:
        return np.zeros(0, dtype=np.int64)
    break_covering(vm, ppns, "other")  # the moved pages leave their 2 MiB run
    frames = vm.frames
    old = vm.pmap.mpn[ppns].copy()
    new = frames.alloc(vm.vm_id, ppns.size)
    frames.content[new] = frames.content[old]
    frames.ppn[new] = ppns
    vm.pmap.back(ppns, new, Backing.PRIVATE)
    vm.paging.on_backing_changed(ppns, True)
    frames.free(old)
    return new
