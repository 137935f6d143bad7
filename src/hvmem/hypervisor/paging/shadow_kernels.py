"""Shadow paging's Numba kernels: the hidden-fault fill and the batch translation.

What is modelled
----------------
A TLB miss under shadow paging walks the shadow table, a plain 1-D walk. A walk
that finds no shadow entry is a *hidden* page fault: a VM exit to the
hypervisor, which walks the guest's table in software and the pmap
(:func:`shadow_fill`), then either

* reflects a true guest page fault to the guest (guest entry not present, or a
  write to a read-only guest mapping),
* resolves the backing first (first touch, swap-in, copy-on-write) when the PPN
  has no writable machine page, or sampling armed it: ``BACKING_MISSING`` /
  ``BACKING_READ_ONLY``, returned to the host, which retries,
* or writes the shadow entry and restarts the reference.

The hypervisor also emulates the guest's accessed and dirty bits: it sets A in
the guest's entry when it fills a shadow entry and maps the page writable in the
shadow only once the guest entry is dirty, so the first write to a clean page
exits once more and sets D. The guest sees the same A/D bits it would see under
nested paging.

The fill records, per PPN, the one (ASID, VPN) whose shadow leaf maps it, or
RMAP_MANY once there may be more: the reverse map ``shadow.py`` follows when the
pmap changes. Shadow table pages come from a small pool of spares the caller
refills between kernel calls (``NEEDS_TABLE`` when it runs dry).

Speed: the batch kernel (:func:`shadow_translate`) runs a window of references
until done or a fault only the host can resolve; step recording (for ``hvmem
translate``) and the page-walk cache switch are compile-time constants, as in
``nested.py``. It prefetches a few references ahead (see ``walker.py``), and
while hidden faults are recent it prefetches what the fill will read as well.

References: Adams and Agesen, ASPLOS 2006 (hidden faults); Linux KVM
``arch/x86/kvm/mmu/paging_tmpl.h`` (shadow A/D emulation).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.hardware.mmu import (
    C_AD_UPDATES,
    C_HIDDEN_FAULTS,
    C_REFS,
    C_TLB_HITS,
    C_TLB_MISSES,
    C_WALK_REFS,
    C_WALKS,
    KIND_FAULT,
    KIND_SHADOW_FILL,
    KIND_TLB_HIT,
    KIND_TLB_MISS,
)
from hvmem.hardware.page_table import (
    INDEX_BITS,
    LEVELS,
    PTE_ACCESSED,
    PTE_DIRTY,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_USER,
    PTE_WRITABLE,
    TABLE_LINK_FLAGS,
    flat_entries,
    make_pte,
    pte_frame,
    table_index,
)
from hvmem.hardware.prefetch import host_prefetch
from hvmem.hardware.tlb import (
    ASID_SHIFT,
    PERM,
    PERM_WRITE,
    VALUE,
    _row,
    sa_fill,
    sa_probe,
    sa_touch,
    set_of,
    tlb_key,
)
from hvmem.hardware.walker import (
    BACKING_MISSING,
    BACKING_READ_ONLY,
    DIM_ONE,
    GUEST_NOT_PRESENT,
    GUEST_PROTECTION,
    NEEDS_TABLE,
    NONE,
    PREFETCH_MIN_PAGES,
    _record,
    _slot,
    _walk_1d,
    peek_frame,
    prefetch_leaf_1d,
)
from hvmem.hypervisor.pmap import STATE_PRIVATE, STATE_SHARED

RMAP_NONE = -1  # no shadow leaf maps this PPN
RMAP_MANY = -2  # more than one may: a pmap change drops all shadow tables
# How many references ahead the batch kernel prefetches (see walker.py): the
# shadow leaf entry; if that is missing (a hidden fault to come), the guest's
# leaf entry; and, reading that, the pmap and rmap entries of the guest page.
# Each stage reads what the one before prefetched.
PREFETCH_AHEAD = 16
PREFETCH_GUEST_AHEAD = 10
PREFETCH_PMAP_AHEAD = 5
FILL_WINDOW = 64  # hidden-fault stages run while the last fill is this recent


@njit(cache=True, inline="always")
def shadow_fill(
    s_entries,
    s_root,
    g_entries,
    g_root,
    pmap_state,
    pmap_mpn,
    rmap,
    trap,
    spares,
    spare_top,
    asid,
    vpn,
    write,
    counts,
    steps,
    n_steps,
    record,
):
    """Handle a hidden fault for ``vpn``: consult the guest table and pmap, fill the shadow.

    Returns:
        (status, ppn, n_steps): NONE when the shadow leaf was written, else the
        fault to resolve (with the PPN concerned, or -1).
    """
    # Software walk of the guest's table (the guest page is read through the
    # hypervisor's own mapping of guest memory: no TLB, no cost beyond the exit).
    frame = g_root
    w_ok = True
    ppn = np.int64(-1)
    for level in range(LEVELS - 1, -1, -1):
        idx = table_index(vpn, level)
        slot = _slot(g_entries, frame, idx)
        pte = g_entries[slot]
        if not pte & PTE_PRESENT:
            return GUEST_NOT_PRESENT, np.int64(-1), n_steps
        w_ok = w_ok and (pte & PTE_WRITABLE) != 0
        leaf = level == 0 or (level == 1 and (pte & PTE_LARGE) != 0)
        if leaf and write and not w_ok:
            return GUEST_PROTECTION, np.int64(-1), n_steps
        # Emulate the walker: A on every entry used, D on the leaf of a write.
        new = pte | PTE_ACCESSED
        if leaf and write:
            new |= PTE_DIRTY
        if new != pte:
            g_entries[slot] = new
            counts[C_AD_UPDATES] += 1
        if leaf:
            ppn = pte_frame(pte)
            if level == 1:
                ppn += vpn & ((1 << INDEX_BITS) - 1)
            guest_dirty = (new & PTE_DIRTY) != 0
            break
        frame = pte_frame(pte)
    state = pmap_state[ppn]
    if (state != STATE_PRIVATE and state != STATE_SHARED) or trap[ppn]:
        # No machine page, or a page sampling armed: the host decides.
        return BACKING_MISSING, ppn, n_steps
    if write and state != STATE_PRIVATE:
        return BACKING_READ_ONLY, ppn, n_steps
    mpn = pmap_mpn[ppn]
    flags = PTE_PRESENT | PTE_USER | PTE_ACCESSED
    # Writable in the shadow only when the guest allows it, the guest's D bit is
    # set (so the first write to a clean page exits and sets it) and the
    # backing is private.
    if w_ok and guest_dirty and state == STATE_PRIVATE:
        flags |= PTE_WRITABLE | PTE_DIRTY
    # Make sure the shadow path exists, taking table pages from the spares.
    frame = s_root
    for level in range(LEVELS - 1, 0, -1):
        slot = _slot(s_entries, frame, table_index(vpn, level))
        pte = s_entries[slot]
        if not pte & PTE_PRESENT:
            if spare_top[0] == 0:
                return NEEDS_TABLE, np.int64(-1), n_steps
            spare_top[0] -= 1
            child = spares[spare_top[0]]
            pte = make_pte(child, TABLE_LINK_FLAGS)
            s_entries[slot] = pte
        frame = pte_frame(pte)
    s_entries[_slot(s_entries, frame, table_index(vpn, 0))] = make_pte(mpn, flags)
    packed = (np.int64(asid) << ASID_SHIFT) | vpn
    if rmap[ppn] == RMAP_NONE:
        rmap[ppn] = packed
    elif rmap[ppn] != packed:
        rmap[ppn] = RMAP_MANY
    n_steps = _record(
        steps, n_steps, record, DIM_ONE, 0, mpn, ppn, make_pte(mpn, flags), KIND_SHADOW_FILL
    )
    return NONE, ppn, n_steps


@njit(cache=True, inline="always")
def _prefetch_ahead(s_flat, s_root, g_flat, g_root, pmap_state, pmap_mpn, rmap, vpns, i, filling):
    """Host prefetches for the references after ``i`` (no simulated effect, see walker.py).

    The hidden-fault stages only while ``filling`` (hidden faults were recent):
    once the shadow table is warm they would cost more than they save.
    """
    if i + PREFETCH_AHEAD < vpns.size:
        prefetch_leaf_1d(s_flat, s_root, vpns[i + PREFETCH_AHEAD])
    if not filling:
        return
    if i + PREFETCH_GUEST_AHEAD < vpns.size:
        vpn = vpns[i + PREFETCH_GUEST_AHEAD]
        if peek_frame(s_flat, s_root, vpn) < 0:
            prefetch_leaf_1d(g_flat, g_root, vpn)
    if i + PREFETCH_PMAP_AHEAD < vpns.size:
        vpn = vpns[i + PREFETCH_PMAP_AHEAD]
        if peek_frame(s_flat, s_root, vpn) < 0:
            ppn = peek_frame(g_flat, g_root, vpn)
            if ppn >= 0:
                host_prefetch(pmap_state, ppn)
                host_prefetch(pmap_mpn, ppn)
                host_prefetch(rmap, ppn)


@njit(cache=True, inline="always")
def _shadow_translate(
    tlb,
    tlb_clock,
    tlb_sets,
    tlb_mask,
    pwc,
    pwc_clock,
    pwc_sets,
    pwc_mask,
    use_pwc,
    vm,
    asid,
    s_entries,
    s_root,
    g_entries,
    g_root,
    pmap_state,
    pmap_mpn,
    rmap,
    trap,
    spares,
    spare_top,
    vpns,
    is_write,
    start,
    mpns_out,
    counts,
    steps,
    record,
):
    """Translate ``vpns[start:]`` of one address space under shadow paging.

    ``record`` must be a constant at the call site, as in ``nested._nested_translate``.

    A hidden fault is handled in place and the reference restarted, as the
    hardware restarts the faulting instruction.

    Returns:
        (stop, status, fault_ppn, n_steps), as ``nested.nested_translate``.
    """
    # Tallies and both LRU clocks in locals, stored once at the end (as in
    # nested._nested_translate).
    n_steps = 0
    hits = misses = walk_refs = hidden = 0
    t_clock = tlb_clock[0]
    p_clock = pwc_clock[0]
    s_flat = flat_entries(s_entries)
    g_flat = flat_entries(g_entries)
    prefetch = not record and g_entries.shape[0] >= PREFETCH_MIN_PAGES
    stop, status, fault_ppn = vpns.size, NONE, np.int64(-1)
    last_fill = start - FILL_WINDOW
    i = start
    while i < vpns.size:
        if prefetch:
            filling = i - last_fill < FILL_WINDOW
            _prefetch_ahead(
                s_flat, s_root, g_flat, g_root, pmap_state, pmap_mpn, rmap, vpns, i, filling
            )  # fmt: skip
        vpn = vpns[i]
        write = is_write[i]
        s = set_of(vpn, tlb_sets, tlb_mask)
        key = tlb_key(vm, asid, vpn)
        way, victim = sa_probe(tlb, key, s)
        if way >= 0:
            t_clock = sa_touch(tlb, t_clock, s, way)
            if not write or (tlb[_row(s), way, PERM] & PERM_WRITE) != 0:
                hits += 1
                mpn = tlb[_row(s), way, VALUE]
                mpns_out[i] = mpn
                n_steps = _record(steps, n_steps, record, DIM_ONE, 0, mpn, 0, 0, KIND_TLB_HIT)
                i += 1
                continue
        misses += 1
        n_steps = _record(steps, n_steps, record, DIM_ONE, 0, -1, 0, 0, KIND_TLB_MISS)
        st, mpn, refs, n_steps, writable, p_clock = _walk_1d(
            s_flat, s_root, vpn, write, pwc, p_clock, pwc_sets, pwc_mask, use_pwc, vm,
            asid, DIM_ONE, steps, n_steps, record
        )  # fmt: skip
        walk_refs += refs
        if st == NONE:
            # ``victim``: the LRU slot, or the entry itself on a write through a
            # clean one (nothing between the probe and here touches the TLB).
            t_clock = sa_fill(tlb, t_clock, s, victim, key, mpn, PERM_WRITE if writable else 0)
            mpns_out[i] = mpn
            i += 1
            continue
        st, ppn, n_steps = shadow_fill(
            s_flat, s_root, g_flat, g_root, pmap_state, pmap_mpn, rmap, trap, spares,
            spare_top, asid, vpn, write, counts, steps, n_steps, record
        )  # fmt: skip
        if st != NONE:
            if st != NEEDS_TABLE:
                n_steps = _record(steps, n_steps, record, DIM_ONE, 0, ppn, st, 0, KIND_FAULT)
            stop, status, fault_ppn = i, st, ppn
            break
        # Restart the reference: it walks the filled shadow entry, and the TLB
        # insert replaces any read-only entry for the page in place.
        hidden += 1
        last_fill = i
    tlb_clock[0] = t_clock
    pwc_clock[0] = p_clock
    counts[C_REFS] += stop - start
    counts[C_TLB_HITS] += hits
    counts[C_TLB_MISSES] += misses
    counts[C_WALKS] += misses
    counts[C_WALK_REFS] += walk_refs
    counts[C_HIDDEN_FAULTS] += hidden
    return stop, status, fault_ppn, n_steps


@njit(cache=True, _nrt=False)
def shadow_translate(
    tlb,
    tlb_clock,
    tlb_sets,
    tlb_mask,
    pwc,
    pwc_clock,
    pwc_sets,
    pwc_mask,
    use_pwc,
    vm,
    asid,
    s_entries,
    s_root,
    g_entries,
    g_root,
    pmap_state,
    pmap_mpn,
    rmap,
    trap,
    spares,
    spare_top,
    vpns,
    is_write,
    start,
    mpns_out,
    counts,
    steps,
):
    """The batch kernel: :func:`_shadow_translate` without step recording.

    Compiled twice, with the page-walk cache on and off as constants, and
    without the reference-counting runtime, as ``nested.nested_translate`` is.
    """
    if use_pwc:
        return _shadow_translate(
            tlb,
            tlb_clock,
            tlb_sets,
            tlb_mask,
            pwc,
            pwc_clock,
            pwc_sets,
            pwc_mask,
            True,
            vm,
            asid,
            s_entries,
            s_root,
            g_entries,
            g_root,
            pmap_state,
            pmap_mpn,
            rmap,
            trap,
            spares,
            spare_top,
            vpns,
            is_write,
            start,
            mpns_out,
            counts,
            steps,
            False,
        )
    return _shadow_translate(
        tlb,
        tlb_clock,
        tlb_sets,
        tlb_mask,
        pwc,
        pwc_clock,
        pwc_sets,
        pwc_mask,
        False,
        vm,
        asid,
        s_entries,
        s_root,
        g_entries,
        g_root,
        pmap_state,
        pmap_mpn,
        rmap,
        trap,
        spares,
        spare_top,
        vpns,
        is_write,
        start,
        mpns_out,
        counts,
        steps,
        False,
    )


@njit(cache=True, _nrt=False)
def shadow_translate_recorded(
    tlb,
    tlb_clock,
    tlb_sets,
    tlb_mask,
    pwc,
    pwc_clock,
    pwc_sets,
    pwc_mask,
    use_pwc,
    vm,
    asid,
    s_entries,
    s_root,
    g_entries,
    g_root,
    pmap_state,
    pmap_mpn,
    rmap,
    trap,
    spares,
    spare_top,
    vpns,
    is_write,
    start,
    mpns_out,
    counts,
    steps,
):
    """The explaining kernel: :func:`_shadow_translate` recording every step."""
    return _shadow_translate(
        tlb,
        tlb_clock,
        tlb_sets,
        tlb_mask,
        pwc,
        pwc_clock,
        pwc_sets,
        pwc_mask,
        use_pwc,
        vm,
        asid,
        s_entries,
        s_root,
        g_entries,
        g_root,
        pmap_state,
        pmap_mpn,
        rmap,
        trap,
        spares,
        spare_top,
        vpns,
        is_write,
        start,
        mpns_out,
        counts,
        steps,
        True,
    )


@njit(cache=True)
def zap_shadow_leaves(s_entries, s_root, vpns):
    """Clear the shadow leaves of ``vpns`` where present; returns how many were cleared."""
    cleared = 0
    for i in range(vpns.size):
        frame = s_root
        found = True
        for level in range(LEVELS - 1, 0, -1):
            pte = s_entries[frame, table_index(vpns[i], level)]
            if not pte & PTE_PRESENT:
                found = False
                break
            frame = pte_frame(pte)
        if found:
            idx = table_index(vpns[i], 0)
            if s_entries[frame, idx] & PTE_PRESENT:
                s_entries[frame, idx] = 0
                cleared += 1
    return cleared
