"""The page walker: one-dimensional and two-dimensional (nested) walks.

What is modelled
----------------
On a TLB miss the hardware walks page tables in memory. A **1-D walk** reads one
entry per level of one table (native paging, or a hypervisor's shadow table that
maps guest-virtual straight to machine pages): at most 4 memory references.

A **2-D walk** (nested paging: Intel EPT, AMD NPT) walks the guest's own table,
whose pages are guest-physical, and every guest-physical address it meets must
itself be translated through the hypervisor's nested table::

    guest CR3 (a PPN) --nested walk--> MPN of the guest PML4 page, read entry
        -> PPN of the guest PDPT page --nested walk--> MPN, read entry
        -> ... PD, PT ...
        -> PPN of the data page --nested walk--> MPN of the data

    references = 4 guest levels x (4 nested + 1 guest) + 4 nested = 24

so a 2-D miss costs up to six times a 1-D miss (Bhargava et al., ASPLOS 2008).

A **page-walk cache** (PWC; Intel's paging-structure caches) may hold upper-level
entries keyed by the address prefix they translate (level 3: ``vpn >> 27``,
level 2: ``vpn >> 18``, level 1: ``vpn >> 9``); a walk starts from the deepest
level it finds there. In a 2-D walk the guest dimension and the nested dimension
each have their prefixes cached, which is how real nested walks get far below 24
references. The PWC is a set-associative LRU array like the TLB (``tlb.py``),
tagged the same way; the nested dimension uses ASID ``NESTED_ASID``.

The walker sets accessed bits on every entry it uses and the dirty bit on the
leaf of a write, as x86 does; in a 2-D walk that includes the guest's entries,
so the guest sees its A/D bits whichever paging mode the hypervisor uses.

Results are values: a status from :class:`FaultKind`, never an exception; the
steps of a walk can be recorded into an array for ``hvmem translate``.

Speed (how the simulator runs, not what it models): the batch kernels index
table stores as flat arrays (``frame << 9 | index``: a shift, not a multiply,
on every dependent load of a walk) and keep the PWC's LRU clock in a register.
Their walks are chains of dependent loads, and on a large guest the leaf
entries miss the host's caches, so the kernels also *prefetch* the leaves a
few references ahead (:func:`prefetch_leaf_1d`, :func:`prefetch_leaf_2d`):
reads of the tables and host prefetch instructions only, with no simulated
effect (no reference counted, no A/D bit, no PWC or TLB change).

Invariants: a successful walk returns the frame that composing the tables gives
(checked against ``page_table.software_walk`` in the property tests); a walk
never changes anything but A/D bits and the PWC.

References: Intel SDM Vol. 3A §4.10.3 (paging-structure caches) and §28.3 (EPT);
Bhargava, Serebrin, Spadini, Manne, "Accelerating Two-Dimensional Page Walks for
Virtualized Systems", ASPLOS 2008 (24 references, page-walk caches).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numba import njit
from numba.extending import overload

from hvmem.hardware.page_table import (
    INDEX_BITS,
    LEVELS,
    PTE_ACCESSED,
    PTE_DIRTY,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_WRITABLE,
    pte_frame,
    table_index,
)
from hvmem.hardware.prefetch import host_prefetch
from hvmem.hardware.tlb import (
    MAX_ASIDS,
    PERM,
    VALUE,
    _row,
    new_cache,
    sa_insert,
    sa_invalidate_masked,
    sa_lookup,
    set_of,
    tlb_key,
)


class FaultKind(IntEnum):
    """Outcome of a translation; ``NONE`` is success."""

    NONE = 0
    NOT_PRESENT = 1  # 1-D walk found no mapping (native fault, or a shadow "hidden" fault)
    PROTECTION = 2  # 1-D walk: a write through a read-only entry
    GUEST_NOT_PRESENT = 3  # 2-D walk: the guest's table has no mapping (a guest page fault)
    GUEST_PROTECTION = 4  # 2-D walk: the guest's table forbids the write
    BACKING_MISSING = 5  # a guest-physical page has no machine page (EPT violation, or
    #                      found by the shadow pager's hidden-fault handler)
    BACKING_READ_ONLY = 6  # a write to a read-only backing, e.g. a shared page
    NEEDS_TABLE = 7  # internal: the shadow pager ran out of spare table pages


NONE = np.int64(FaultKind.NONE)
NOT_PRESENT = np.int64(FaultKind.NOT_PRESENT)
PROTECTION = np.int64(FaultKind.PROTECTION)
GUEST_NOT_PRESENT = np.int64(FaultKind.GUEST_NOT_PRESENT)
GUEST_PROTECTION = np.int64(FaultKind.GUEST_PROTECTION)
BACKING_MISSING = np.int64(FaultKind.BACKING_MISSING)
BACKING_READ_ONLY = np.int64(FaultKind.BACKING_READ_ONLY)
NEEDS_TABLE = np.int64(FaultKind.NEEDS_TABLE)

#: The nested dimension's PWC entries carry this ASID (guest ASIDs stay below it).
NESTED_ASID = MAX_ASIDS - 1

# Columns of a recorded walk step.
STEP_DIM, STEP_LEVEL, STEP_FRAME, STEP_INDEX, STEP_PTE, STEP_KIND = range(6)
DIM_ONE = 0  # the one table of a 1-D walk, or the guest dimension of a 2-D walk
DIM_NESTED = 1  # the nested dimension of a 2-D walk
KIND_READ = 0  # an entry read from memory (one reference)
KIND_PWC_HIT = 1  # an upper-level entry found in the page-walk cache (no reference)
MAX_STEPS = 160  # room for a few 24-reference walks and the events between


def new_steps() -> np.ndarray:
    """A buffer for recording the steps of one walk."""
    return np.zeros((MAX_STEPS, 6), dtype=np.int64)


@njit(cache=True, inline="always")
def _pwc_key(vm, asid, level, prefix):
    # Below bit 36 the TLB key holds the VPN; a PWC key puts the level above the
    # longest prefix (27 bits) instead, so entries of different levels never meet.
    return tlb_key(vm, asid, (np.int64(level) << 30) | prefix)


@njit(cache=True, inline="always")
def _record(steps, n, record, dim, level, frame, index, pte, kind):
    if record and n < steps.shape[0]:
        steps[n, STEP_DIM] = dim
        steps[n, STEP_LEVEL] = level
        steps[n, STEP_FRAME] = frame
        steps[n, STEP_INDEX] = index
        steps[n, STEP_PTE] = np.int64(pte)
        steps[n, STEP_KIND] = kind
    return n + 1


def _slot(entries, frame, idx):
    """Where entry ``idx`` of table page ``frame`` sits in ``entries`` (Numba only).

    Numba's ``overload`` idiom: the compiled versions below are the function;
    this Python body only stands for it outside compiled code.
    """
    raise TypeError("_slot is only callable from Numba-compiled kernels")


@overload(_slot, inline="always")
def _slot_impl(entries, frame, idx):
    # A table store is ``uint64[n_frames, 512]``; the kernels pass it flattened
    # (``flat_entries``) so that each level's address is a shift and an OR, not
    # a multiply by a run-time row length: a few cycles on every link of the
    # walk's chain of dependent loads. Indices are unsigned: frames and
    # indices are never negative, and signed ones pay Numba's wraparound check.
    if entries.ndim == 1:
        return lambda entries, frame, idx: np.uint64((frame << INDEX_BITS) | idx)
    return lambda entries, frame, idx: (np.uint64(frame), np.uint64(idx))


#: Prefetch only for guests of at least this many pages (512 MiB): below, their
#: leaf tables (8 bytes per page, guest and nested) mostly stay in the host's
#: caches and the look-ahead reads cost more than the misses they hide
#: (measured: -20% at 64 MiB, +30% at 1 GiB, +70% at 4 GiB, nested paging).
PREFETCH_MIN_PAGES = 1 << 17


@njit(cache=True, inline="always")
def _peek_leaf_table(entries, root_frame, vpn):
    """Frame of the level-0 table on ``vpn``'s path, or -1 (a hole, or a 2 MiB leaf).

    Plain reads: no reference counted, no bit set. For prefetching only.
    """
    frame = root_frame
    for level in range(LEVELS - 1, 0, -1):
        pte = entries[_slot(entries, frame, table_index(vpn, level))]
        if not pte & PTE_PRESENT or (level == 1 and (pte & PTE_LARGE) != 0):
            return -1
        frame = pte_frame(pte)
    return frame


@njit(cache=True, inline="always")
def peek_frame(entries, root_frame, vpn):
    """The frame a walk of ``vpn`` would reach, or -1 for a hole (flat or 2-D ``entries``).

    Plain reads, no permission check: no reference counted, no bit set. For
    prefetching only.
    """
    frame = root_frame
    for level in range(LEVELS - 1, -1, -1):
        pte = entries[_slot(entries, frame, table_index(vpn, level))]
        if not pte & PTE_PRESENT:
            return -1
        if level == 0:
            return pte_frame(pte)
        if level == 1 and (pte & PTE_LARGE) != 0:
            return pte_frame(pte) + (vpn & ((1 << INDEX_BITS) - 1))
        frame = pte_frame(pte)
    return -1


@njit(cache=True, inline="always")
def prefetch_leaf_1d(entries, root_frame, vpn):
    """Prefetch the leaf entry a walk of ``vpn`` will read (flat ``entries``).

    The upper levels are few and stay cached; the leaf is the entry a large
    table misses on. No simulated effect.
    """
    frame = _peek_leaf_table(entries, root_frame, vpn)
    if frame >= 0:
        host_prefetch(entries, _slot(entries, frame, table_index(vpn, 0)))


@njit(cache=True, inline="always")
def prefetch_leaf_2d(g_entries, g_root_ppn, n_entries, n_root, vpn):
    """Prefetch the nested leaf of ``vpn``'s data page (flat entries).

    Reads the guest leaf, so it should have been prefetched (with
    :func:`prefetch_leaf_1d` on the guest table) some references earlier. No
    simulated effect; a 2 MiB guest leaf is skipped.
    """
    frame = _peek_leaf_table(g_entries, g_root_ppn, vpn)
    if frame >= 0:
        pte = g_entries[_slot(g_entries, frame, table_index(vpn, 0))]
        if pte & PTE_PRESENT:
            prefetch_leaf_1d(n_entries, n_root, pte_frame(pte))


@njit(cache=True, inline="always")
def _walk_1d(
    entries,
    root_frame,
    vpn,
    is_write,
    pwc,
    pwc_clock,
    pwc_sets,
    pwc_mask,
    use_pwc,
    vm,
    asid,
    dim,
    steps,
    n_steps,
    record,
):
    """:func:`walk_1d` with the PWC clock as a value, returned last; ``entries`` flat or 2-D."""
    frame = root_frame
    start = LEVELS - 1
    w_ok = True
    refs = 0
    if use_pwc:
        for level in range(1, LEVELS):
            prefix = vpn >> (INDEX_BITS * level)
            key = _pwc_key(vm, asid, level, prefix)
            s = set_of(prefix, pwc_sets, pwc_mask)
            way, pwc_clock = sa_lookup(pwc, pwc_clock, key, s)
            if way >= 0:
                frame = pwc[_row(s), way, VALUE]
                w_ok = pwc[_row(s), way, PERM] != 0
                start = level - 1
                n_steps = _record(
                    steps,
                    n_steps,
                    record,
                    dim,
                    level,
                    frame,
                    table_index(vpn, level),
                    0,
                    KIND_PWC_HIT,
                )
                break
    for level in range(start, -1, -1):
        idx = table_index(vpn, level)
        slot = _slot(entries, frame, idx)
        pte = entries[slot]
        refs += 1
        if not pte & PTE_PRESENT:
            n_steps = _record(steps, n_steps, record, dim, level, frame, idx, pte, KIND_READ)
            return NOT_PRESENT, np.int64(-1), refs, n_steps, False, pwc_clock
        w_ok = w_ok and (pte & PTE_WRITABLE) != 0
        leaf = level == 0 or (level == 1 and (pte & PTE_LARGE) != 0)
        if leaf and is_write and not w_ok:
            n_steps = _record(steps, n_steps, record, dim, level, frame, idx, pte, KIND_READ)
            return PROTECTION, np.int64(-1), refs, n_steps, False, pwc_clock
        # The walker sets A on every entry it uses and D on the leaf of a write.
        new = pte | PTE_ACCESSED
        if leaf and is_write:
            new |= PTE_DIRTY
        if new != pte:
            entries[slot] = new
        n_steps = _record(steps, n_steps, record, dim, level, frame, idx, new, KIND_READ)
        if leaf:
            out = pte_frame(pte)
            if level == 1:
                out += vpn & ((1 << INDEX_BITS) - 1)
            # A write may later bypass the walk only if the leaf is writable and dirty.
            return NONE, out, refs, n_steps, w_ok and (new & PTE_DIRTY) != 0, pwc_clock
        child = pte_frame(pte)
        if use_pwc:
            prefix = vpn >> (INDEX_BITS * level)
            _, pwc_clock = sa_insert(
                pwc,
                pwc_clock,
                _pwc_key(vm, asid, level, prefix),
                set_of(prefix, pwc_sets, pwc_mask),
                child,
                1 if w_ok else 0,
            )
        frame = child
    return NOT_PRESENT, np.int64(-1), refs, n_steps, False, pwc_clock


@njit(cache=True, inline="always")
def walk_1d(
    entries,
    root_frame,
    vpn,
    is_write,
    pwc,
    pwc_clock,
    pwc_sets,
    pwc_mask,
    use_pwc,
    vm,
    asid,
    dim,
    steps,
    n_steps,
    record,
):
    """Walk one four-level table for ``vpn``.

    ``pwc_clock`` is the PWC's one-element clock array (the kernels use
    :func:`_walk_1d`, which takes and returns its value).

    Returns:
        (status, frame, refs, n_steps, writable): status is NONE, NOT_PRESENT or
        PROTECTION; frame the translated frame number (valid only on NONE); refs
        the memory references made; n_steps the step count after recording;
        writable whether every level allows writes (after setting D on a write).
    """
    status, frame, refs, n_steps, writable, clock = _walk_1d(
        entries, root_frame, vpn, is_write, pwc, pwc_clock[0], pwc_sets, pwc_mask, use_pwc,
        vm, asid, dim, steps, n_steps, record
    )  # fmt: skip
    pwc_clock[0] = clock
    return status, frame, refs, n_steps, writable


@njit(cache=True, inline="always")
def _walk_2d(
    g_entries,
    g_root_ppn,
    n_entries,
    n_root,
    vpn,
    is_write,
    pwc,
    pwc_clock,
    pwc_sets,
    pwc_mask,
    use_pwc,
    vm,
    asid,
    steps,
    n_steps,
    record,
):
    """:func:`walk_2d` with the PWC clock as a value, returned last; entries flat or 2-D."""
    refs = 0
    gframe = g_root_ppn
    start = LEVELS - 1
    g_w_ok = True
    if use_pwc:
        for level in range(1, LEVELS):
            prefix = vpn >> (INDEX_BITS * level)
            s = set_of(prefix, pwc_sets, pwc_mask)
            way, pwc_clock = sa_lookup(pwc, pwc_clock, _pwc_key(vm, asid, level, prefix), s)
            if way >= 0:
                gframe = pwc[_row(s), way, VALUE]
                g_w_ok = pwc[_row(s), way, PERM] != 0
                start = level - 1
                n_steps = _record(
                    steps,
                    n_steps,
                    record,
                    DIM_ONE,
                    level,
                    gframe,
                    table_index(vpn, level),
                    0,
                    KIND_PWC_HIT,
                )
                break
    for level in range(start, -1, -1):
        # The guest table page is guest-physical: translate it first. The walker
        # writes A bits into it, but a table page is never mapped read-only by
        # the nested table in this model, so the nested walk is a read.
        st, _, r, n_steps, _, pwc_clock = _walk_1d(
            n_entries,
            n_root,
            gframe,
            False,
            pwc,
            pwc_clock,
            pwc_sets,
            pwc_mask,
            use_pwc,
            vm,
            NESTED_ASID,
            DIM_NESTED,
            steps,
            n_steps,
            record,
        )
        refs += r
        if st != NONE:
            return BACKING_MISSING, np.int64(-1), refs, n_steps, False, gframe, pwc_clock
        idx = table_index(vpn, level)
        slot = _slot(g_entries, gframe, idx)
        pte = g_entries[slot]
        refs += 1
        if not pte & PTE_PRESENT:
            n_steps = _record(steps, n_steps, record, DIM_ONE, level, gframe, idx, pte, KIND_READ)
            return GUEST_NOT_PRESENT, np.int64(-1), refs, n_steps, False, np.int64(-1), pwc_clock
        g_w_ok = g_w_ok and (pte & PTE_WRITABLE) != 0
        leaf = level == 0 or (level == 1 and (pte & PTE_LARGE) != 0)
        if leaf and is_write and not g_w_ok:
            n_steps = _record(steps, n_steps, record, DIM_ONE, level, gframe, idx, pte, KIND_READ)
            return GUEST_PROTECTION, np.int64(-1), refs, n_steps, False, np.int64(-1), pwc_clock
        new = pte | PTE_ACCESSED
        if leaf and is_write:
            new |= PTE_DIRTY
        if new != pte:
            g_entries[slot] = new
        n_steps = _record(steps, n_steps, record, DIM_ONE, level, gframe, idx, new, KIND_READ)
        if leaf:
            data_ppn = pte_frame(pte)
            if level == 1:
                data_ppn += vpn & ((1 << INDEX_BITS) - 1)
            st, mpn, r, n_steps, n_w, pwc_clock = _walk_1d(
                n_entries,
                n_root,
                data_ppn,
                is_write,
                pwc,
                pwc_clock,
                pwc_sets,
                pwc_mask,
                use_pwc,
                vm,
                NESTED_ASID,
                DIM_NESTED,
                steps,
                n_steps,
                record,
            )
            refs += r
            if st == NOT_PRESENT:
                return BACKING_MISSING, np.int64(-1), refs, n_steps, False, data_ppn, pwc_clock
            if st == PROTECTION:
                return BACKING_READ_ONLY, np.int64(-1), refs, n_steps, False, data_ppn, pwc_clock
            writable = g_w_ok and (new & PTE_DIRTY) != 0 and n_w
            return NONE, mpn, refs, n_steps, writable, np.int64(-1), pwc_clock
        child = pte_frame(pte)
        if use_pwc:
            prefix = vpn >> (INDEX_BITS * level)
            _, pwc_clock = sa_insert(
                pwc,
                pwc_clock,
                _pwc_key(vm, asid, level, prefix),
                set_of(prefix, pwc_sets, pwc_mask),
                child,
                1 if g_w_ok else 0,
            )
        gframe = child
    return GUEST_NOT_PRESENT, np.int64(-1), refs, n_steps, False, np.int64(-1), pwc_clock


@njit(cache=True, inline="always")
def walk_2d(
    g_entries,
    g_root_ppn,
    n_entries,
    n_root,
    vpn,
    is_write,
    pwc,
    pwc_clock,
    pwc_sets,
    pwc_mask,
    use_pwc,
    vm,
    asid,
    steps,
    n_steps,
    record,
):
    """Walk a guest table whose pages are guest-physical, each through the nested table.

    ``g_entries`` are the guest's table pages, indexed by PPN; ``n_entries`` the
    hypervisor's nested table pages, indexed by MPN. ``pwc_clock`` is the PWC's
    one-element clock array, as in :func:`walk_1d`.

    Returns:
        (status, mpn, refs, n_steps, writable, fault_ppn): status NONE or one of the
        GUEST_* / BACKING_* kinds; fault_ppn names the guest-physical page whose
        nested translation failed (BACKING_*), else -1.
    """
    status, mpn, refs, n_steps, writable, fault_ppn, clock = _walk_2d(
        g_entries, g_root_ppn, n_entries, n_root, vpn, is_write, pwc, pwc_clock[0], pwc_sets,
        pwc_mask, use_pwc, vm, asid, steps, n_steps, record
    )  # fmt: skip
    pwc_clock[0] = clock
    return status, mpn, refs, n_steps, writable, fault_ppn


class PageWalkCache:
    """The page-walk cache: upper-level entries, set-associative LRU.

    Args:
        entries: total entries (0 turns the cache off).
        ways: associativity.
    """

    def __init__(self, entries: int = 32, ways: int = 4):
        self.enabled = entries > 0
        ways = min(ways, entries) if entries > 0 else 1
        n_sets = max(1, entries // ways)
        self.n_sets = n_sets
        self.set_mask = n_sets - 1 if n_sets & (n_sets - 1) == 0 else -1
        self.cache, self.clock = new_cache(n_sets, ways)

    def flush_asid(self, vm: int, asid: int) -> None:
        """Drop one address space's entries (INVLPG and CR3 loads drop these, SDM §4.10.4)."""
        mask = np.int64(-1) << 36
        sa_invalidate_masked(self.cache, tlb_key(vm, asid, 0), mask)

    def flush_vm(self, vm: int) -> None:
        """Drop every entry of one VM, nested dimension included (INVEPT)."""
        mask = np.int64(-1) << 48
        sa_invalidate_masked(self.cache, tlb_key(vm, 0, 0), mask)
