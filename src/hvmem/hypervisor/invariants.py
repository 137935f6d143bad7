r"""The host's invariants: every machine frame accounted for exactly once.

What is checked
---------------
:func:`check_invariants` raises :class:`InvariantViolation` unless

* every frame is free, owned by exactly one VM through exactly one PRIVATE
  pmap entry (and its reverse map names that page), shared with a refcount
  equal to its sharers, one of a VM's compression-cache frames, or a
  hypervisor table page;
* no VM's pmap names a frame another VM owns; an unshared frame has one
  mapping, and only a private frame names a guest page;
* the sharing table holds each shared frame once;
* each VM's swap file holds exactly its SWAPPED pages and its compression
  cache exactly its COMPRESSED ones, in exactly the frames its slots need;
* no VM consumes more frames than it has guest pages;
* every page of a large region is PRIVATE in the aligned frames of its run,
  which the nested table maps with one PS leaf (:func:`check_large_pages`).

The frame table and each pmap check their own arrays first. The checks are
whole-array passes, so the simulator runs them only when asked to, after
every tick (``Simulation(check_invariants=True)``).

References: Waldspurger, OSDI 2002 §2 (pmap).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hvmem.errors import InvariantViolation
from hvmem.hardware.frames import FREE, HYPERVISOR, MachineMemory
from hvmem.hypervisor.large_pages import nested, pages_of
from hvmem.hypervisor.paging.nested import NestedPaging
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.sharing import SHARED_OWNER, SharingTable
from hvmem.hypervisor.vm_state import LARGE_PAGE_PAGES, LARGE_PAGE_SHIFT, VmState


def check_invariants(frames: MachineMemory, vms: Sequence[VmState],
                     sharing: SharingTable | None = None) -> None:
    """Raise :class:`InvariantViolation` unless every frame is accounted for exactly once.

    With ``sharing``, also that the sharing table holds each shared frame once.
    """
    frames.check_invariants()
    claimed = np.zeros(frames.n_frames, dtype=np.int64)
    sharers = np.zeros(frames.n_frames, dtype=np.int64)
    n_private = 0
    for vm in vms:
        np.add.at(sharers, vm.pmap.mpn[vm.pmap.state == Backing.SHARED], 1)
        vm.pmap.check_invariants()
        vm.swapfile.aside.check_invariants()
        if not np.array_equal(vm.swapfile.used, vm.pmap.state == Backing.SWAPPED):
            raise InvariantViolation(f"{vm.name}: swap file and pmap disagree")
        if not np.array_equal(vm.zip.slot_bytes > 0, vm.pmap.state == Backing.COMPRESSED):
            raise InvariantViolation(f"{vm.name}: compression cache and pmap disagree")
        if vm.zip.frames.size != vm.zip.frames_needed or np.any(
            frames.owner[vm.zip.frames] != vm.vm_id
        ):
            raise InvariantViolation(f"{vm.name}: compression cache frames are off")
        np.add.at(claimed, vm.zip.frames, 1)
        # Consumed memory never exceeds configured memory: one frame at most
        # per guest page, the compression cache holding fewer than it saves.
        consumed = vm.pmap.count(Backing.PRIVATE) + vm.zip.frames.size
        if consumed > vm.n_ppns:
            raise InvariantViolation(
                f"{vm.name}: consumes {consumed} frames for {vm.n_ppns} guest pages"
            )
        mpns = vm.pmap.mpn[vm.pmap.state == Backing.PRIVATE]
        if np.any(frames.owner[mpns] != vm.vm_id):
            raise InvariantViolation(f"{vm.name}: pmap names a frame the VM does not own")
        np.add.at(claimed, mpns, 1)
        n_private += mpns.size
        if np.any(frames.ppn[mpns] != np.flatnonzero(vm.pmap.state == Backing.PRIVATE)):
            raise InvariantViolation(f"{vm.name}: frame reverse map is stale")
        check_large_pages(vm)
        tables = vm.paging.table_frames()
        if np.any(frames.owner[tables] != HYPERVISOR):
            raise InvariantViolation(f"{vm.name}: a table page is not a hypervisor frame")
        np.add.at(claimed, tables, 1)
    is_shared = frames.owner == SHARED_OWNER
    if np.any(sharers[is_shared] != frames.refcount[is_shared]) or np.any(
        sharers[~is_shared] != 0
    ):
        raise InvariantViolation("a shared frame's refcount differs from its sharers")
    claimed[is_shared & (sharers > 0)] = 1
    if np.any(claimed > 1):
        raise InvariantViolation(f"frame {int(np.flatnonzero(claimed > 1)[0])} mapped twice")
    owned = frames.owner != FREE
    leaked = np.flatnonzero(owned & (claimed == 0))
    if leaked.size:
        raise InvariantViolation(f"frame {int(leaked[0])} is owned but mapped by nobody")
    # A frame of one holder (page, table, cache) has one mapping; only a private
    # frame names a guest page, or a stale sharing hint on it could hold.
    if np.any(frames.refcount[owned & ~is_shared] != 1):
        raise InvariantViolation("an unshared frame's refcount is not 1")
    if np.count_nonzero(frames.ppn >= 0) != n_private:
        raise InvariantViolation("a frame that backs no private page has a reverse map")
    # Each shared frame is in the sharing table once, or a later scan would map a
    # page onto whatever frame a leftover entry names.
    if sharing is not None and not np.array_equal(sharing.shared_frames(),
                                                  np.flatnonzero(is_shared)):
        raise InvariantViolation("the sharing table and the shared frames disagree")


def check_large_pages(vm: VmState) -> None:
    """Every page of a large region is PRIVATE, in order in one aligned run, PS-mapped."""
    regions = np.flatnonzero(vm.large)
    if vm.large.size != -(-vm.n_ppns // LARGE_PAGE_PAGES):
        raise InvariantViolation(f"{vm.name}: large-page map has the wrong size")
    if isinstance(vm.paging, NestedPaging) and not np.array_equal(vm.paging.large, vm.large):
        raise InvariantViolation(f"{vm.name}: nested table and host disagree on large pages")
    if regions.size == 0:
        return
    if regions[-1] >= vm.n_ppns >> LARGE_PAGE_SHIFT:
        raise InvariantViolation(f"{vm.name}: a partial region is a large page")
    pages = pages_of(regions).reshape(regions.size, LARGE_PAGE_PAGES)
    if np.any(vm.pmap.state[pages] != Backing.PRIVATE):
        raise InvariantViolation(f"{vm.name}: a page of a large page is not private")
    bases = vm.pmap.mpn[pages[:, 0]]
    if np.any(bases % LARGE_PAGE_PAGES) or np.any(
        vm.pmap.mpn[pages] != bases[:, None] + np.arange(LARGE_PAGE_PAGES)
    ):
        raise InvariantViolation(f"{vm.name}: a large page is not one aligned run of frames")
    if not np.array_equal(nested(vm).large_leaves(regions), bases):
        raise InvariantViolation(f"{vm.name}: a large page is not one PS leaf in the EPT")
