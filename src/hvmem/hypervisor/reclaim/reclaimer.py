r"""Reclaim orchestration: which pages a VM loses, and to which mechanism.

What is modelled
----------------
When the memory scheduler gives a VM a swap target, the hypervisor takes
pages away the ESX way (:func:`reclaim`)::

    victims (random, as ESX; or LRU by host touch stamp)
      -> share?      offered to page sharing first (share-before-swap) [OSDI02 §4.3]
      -> compress?   kept in the compression cache if <= 2 KiB and it has room
                     (its oldest pages evicted to swap if not) [VS41-ZIP]
      -> swap        written to the VM's swap file [OSDI02 §3.3]

The simulator's ``SimulatedBackend.swap_to_target`` calls it once a balance
period for a plan's whole target and, between periods in HARD or LOW, for the
pages a VM touched back in, so the VM stays at its target. A victim inside a
host large page breaks that large page first, and the sub-pages the scanner
had hashed are offered to sharing with the victims [KB1021095]; a large page
is never swapped whole.

The synchronous path (:func:`make_room`): when a touch finds the free list
short, the hypervisor cannot wait for a balance period; it swaps pages out on
the spot from the VM consuming the most, never the pages being served, then
empties compression caches into swap. This is what ESX's LOW state stands for
[OSDI02 §6.3]; it is counted as ``emergency_swaps``.

A VM's limit (:func:`hold_to_cap`): a VM with a cap that is about to back more
pages than its limit leaves room swaps as many of its own pages first, by the
host's selection, never the pages being served ([VS-ALLOC]: a VM never gets
more machine memory than its limit). The balloon is the graceful way down to
a limit (the policy's plan); this is what keeps the limit between plans.

Invariants: a victim is a PRIVATE page of its VM when chosen; a shared frame
goes back to the free list only when its last sharer has left; the compression
cache always holds exactly the frames its slots need.

References: [OSDI02 §3.3, §4.3, §6.3]; [KB1021095]; share-before-swap [PERFCTR];
compression on the way to swap [VI-41][VS41-ZIP]; the keys in brackets resolve
in ``docs/references.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hvmem.core.sets import sorted_unique
from hvmem.errors import OutOfMemoryError
from hvmem.hardware.frames import MachineMemory
from hvmem.hypervisor.large_pages import break_covering, hashed_pages
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.swap import swap_victims
from hvmem.hypervisor.vm_state import EMERGENCY_SLACK_FRAMES, LARGE_PAGE_SHIFT, VmState


def choose_victims(vm: VmState, n_pages: int, selection: str, rng: np.random.Generator
                   ) -> np.ndarray:
    """Up to ``n_pages`` private pages to take away: "random" (as ESX) or "lru".

    Random victims are the random policy's draw over the kept count of private
    pages, and only the pages drawn are looked up (``Pmap.pages_at_ranks``):
    the same pages, without a list of every private page.
    """
    if selection == "random" and n_pages > 0:
        n_private = vm.pmap.count(Backing.PRIVATE)
        if n_pages < n_private:
            ranks = np.sort(rng.choice(n_private, n_pages, replace=False))
            return vm.pmap.pages_at_ranks(Backing.PRIVATE, ranks)
    return swap_victims(n_pages, selection, vm.pmap.state, vm.last_touch_stamp, rng)


def swap_out(vm: VmState, n_pages: int, selection: str, rng: np.random.Generator) -> int:
    """Page out up to ``n_pages`` private pages to the swap file; returns pages freed."""
    victims = choose_victims(vm, n_pages, selection, rng)
    swap_pages(vm, victims)
    return int(victims.size)


def swap_pages(vm: VmState, ppns: np.ndarray) -> None:
    """Write pages to the swap file and drop their frames.

    A shared frame goes back to the free list only once its last sharer has left.
    """
    if ppns.size == 0:
        return
    if vm.large.any():
        # A large page is never swapped whole: split the ones holding victims as
        # free frames allow (a table page each), swap their victims (at least a
        # frame back each) and go on; small-page victims go first.
        in_large = vm.large[ppns >> LARGE_PAGE_SHIFT]
        if np.any(in_large):
            swap_pages(vm, ppns[~in_large])
            rest = ppns[in_large]
            while rest.size:
                broken = break_covering(vm, rest, "reclaim", bounded=True)
                if broken.size == 0:
                    return  # no frame left even for a table page: these stay
                done = np.isin(rest >> LARGE_PAGE_SHIFT, broken)
                swap_pages(vm, rest[done])
                rest = rest[~done]
            return
    frames = vm.frames
    shared = vm.pmap.state[ppns] == Backing.SHARED
    old = vm.pmap.mpn[ppns]
    vm.swapfile.store(ppns, frames.content[old])
    vm.pmap.unback(ppns, Backing.SWAPPED)
    vm.paging.on_backing_changed(ppns, True)
    if np.any(shared):
        vm.services.leave_shared(vm, old[shared], False)
    frames.free(old[~shared])


def reclaim(vm: VmState, n_pages: int, selection: str, rng: np.random.Generator,
            compress: bool = True, share_first: bool = True) -> dict[str, int]:
    """Take up to ``n_pages`` away the ESX way: share, else compress, else swap.

    Victims are chosen as for swapping; a victim inside a large page breaks
    it, and the sub-pages the scanner had hashed are offered to sharing
    with the victims [KB1021095]. Each victim is first offered to page
    sharing (share-before-swap), then kept compressed if it compresses to
    2 KiB or less and the cache has room (evicting its oldest pages to swap
    if not), else written to the swap file.

    Returns:
        Pages reclaimed by each mechanism: {"shared", "compressed", "swapped"}
        (frames returned; compression's own frames are netted out).
    """
    victims = choose_victims(vm, n_pages, selection, rng)
    done = {"shared": 0, "compressed": 0, "swapped": 0}
    if victims.size == 0:
        return done
    broken = break_covering(vm, victims, "reclaim", bounded=True)
    # Victims in large pages there was no table page to split for wait for next time.
    victims = victims[~vm.large[victims >> LARGE_PAGE_SHIFT]]
    if share_first:
        offer = victims if broken.size == 0 else np.union1d(victims, hashed_pages(vm, broken))
        done["shared"] = vm.services.share(vm, offer)
        victims = victims[vm.pmap.state[victims] == Backing.PRIVATE]
    if compress and victims.size:
        frames, zip_cache = vm.frames, vm.zip
        tokens = frames.content[vm.pmap.mpn[victims]]
        slots = zip_cache.slot_for(tokens)
        keep = slots > 0
        zip_cache.counters.rejected += int(np.count_nonzero(~keep))
        kept = victims[keep]
        if kept.size:
            # Room: evict the cache's oldest pages to swap.
            evict = zip_cache.victims_for_room(int(slots[keep].sum()))
            if evict.size:
                zip_to_swap(vm, evict)
            fits = np.cumsum(slots[keep]) <= zip_cache.capacity_bytes - zip_cache.used_bytes
            kept = kept[fits]
            old = vm.pmap.mpn[kept]
            zip_cache.store(kept, frames.content[old], slots[keep][fits])
            vm.pmap.unback(kept, Backing.COMPRESSED)
            vm.paging.on_backing_changed(kept, True)
            frames.free(old)
            before = zip_cache.frames.size
            zip_cache.fit_frames(frames, vm.vm_id)
            done["compressed"] = int(kept.size) - (zip_cache.frames.size - before)
        victims = victims[vm.pmap.state[victims] == Backing.PRIVATE]
    swap_pages(vm, victims)
    done["swapped"] = int(victims.size)
    return done


def held_pages(vm: VmState) -> int:
    """Machine memory ``vm`` holds against its limit: mapped pages and its cache's frames."""
    return (vm.pmap.count(Backing.PRIVATE) + vm.pmap.count(Backing.SHARED)
            + int(vm.zip.frames.size))


def hold_to_cap(vm: VmState, n_frames: int, selection: str, rng: np.random.Generator,
                busy_ppns: np.ndarray | None = None) -> int:
    """Swap ``vm``'s own pages so that backing ``n_frames`` more keeps it within its cap.

    Victims are private pages by the host's selection, never ``busy_ppns``;
    returns the pages swapped (``limit_swaps``).
    """
    if vm.cap_pages is None:
        return 0
    over = held_pages(vm) + n_frames - vm.cap_pages
    if over <= 0:
        return 0
    state = vm.pmap.state
    if busy_ppns is not None and busy_ppns.size:
        state = state.copy()
        state[busy_ppns] = Backing.UNBACKED  # not candidates: they are being served
    victims = swap_victims(over, selection, state, vm.last_touch_stamp, rng)
    swap_pages(vm, victims)
    vm.counters.limit_swaps += int(victims.size)
    return int(victims.size)


def zip_to_swap(vm: VmState, ppns: np.ndarray) -> None:
    """Move compressed pages to the swap file (cache eviction)."""
    vm.swapfile.store(ppns, vm.zip.take(ppns))
    vm.pmap.set_state(ppns, Backing.SWAPPED)
    vm.zip.counters.evicted += int(ppns.size)
    vm.zip.fit_frames(vm.frames, vm.vm_id)


def make_room(vms: Sequence[VmState], frames: MachineMemory, rng: np.random.Generator,
              n_frames: int, requester: VmState | None = None,
              busy_ppns: np.ndarray | None = None) -> None:
    """Make sure ``n_frames`` (plus slack for table pages) are free, swapping if not.

    Pages go from the VM consuming the most, never ``requester``'s
    ``busy_ppns`` (the pages being served right now); ``rng`` picks them.
    """
    # Slack for the table pages that mapping the new frames may need (one
    # page-table page per 512 pages when dense, plus a fixed margin).
    want = n_frames + EMERGENCY_SLACK_FRAMES + n_frames // 256
    if frames.n_free >= want:
        return
    # Private pages first, then shared ones (a shared frame is freed once its
    # last sharer is swapped), then the compression caches.
    for state in (Backing.PRIVATE, Backing.SHARED):
        for vm in sorted(vms, key=lambda v: -v.pmap.count(state)):
            while True:
                need = want - frames.n_free
                if need <= 0:
                    return
                # A draw of ranks among the VM's pages in the state (the kept
                # count, less the requester's busy pages), and only the pages
                # drawn looked up: no list of every page in the state.
                skip = np.zeros(0, dtype=np.int64)
                if vm is requester and busy_ppns is not None and busy_ppns.size:
                    skip = sorted_unique(busy_ppns.astype(np.int64, copy=False))
                    skip = skip[vm.pmap.state[skip] == state]
                n_in_state = vm.pmap.count(state) - skip.size
                if n_in_state == 0:
                    break
                victims = vm.pmap.pages_at_ranks(state, np.sort(rng.choice(
                    n_in_state, min(need, n_in_state), replace=False)), skip)
                split_before = vm.counters.large_pages_broken
                swap_pages(vm, victims)
                vm.counters.emergency_swaps += int(victims.size)
                # Splitting large pages took table pages: the same VM goes again.
                if vm.counters.large_pages_broken == split_before:
                    break
    for vm in vms:
        if frames.n_free >= want:
            return
        cached = vm.zip.cached_ppns()
        if cached.size:
            zip_to_swap(vm, cached)
    if frames.n_free < n_frames + EMERGENCY_SLACK_FRAMES:
        raise OutOfMemoryError(
            f"host memory exhausted: {n_frames} frames needed, {frames.n_free} free and "
            "nothing left to swap (hypervisor overhead fills the rest)"
        )
