"""Shadow paging: the hypervisor composes the two translations in software.

What is modelled
----------------
For every guest address space (every guest CR3 value) the hypervisor keeps a
*shadow* page table that maps guest-virtual pages straight to machine pages,
and points the hardware at it; TLB misses then cost a plain 1-D walk::

    guest table   VPN --> PPN       (the guest's, in guest-physical pages)
    pmap                  PPN --> MPN   (the hypervisor's)
    shadow table  VPN ----------> MPN   (the composition, what the hardware walks)

The shadow table is filled lazily. A walk that finds no shadow entry is a
*hidden* page fault: a VM exit to the hypervisor, which walks the guest's table
in software and the pmap, then either

* reflects a true guest page fault to the guest (guest entry not present, or a
  write to a read-only guest mapping),
* resolves the backing first (first touch, swap-in, copy-on-write) when the PPN
  has no writable machine page: ``BACKING_MISSING`` / ``BACKING_READ_ONLY``,
  returned to the host, which retries,
* or writes the shadow entry and restarts the reference.

The hypervisor also emulates the guest's accessed and dirty bits: it sets A in
the guest's entry when it fills a shadow entry and maps the page writable in the
shadow only once the guest entry is dirty, so the first write to a clean page
exits once more and sets D. The guest sees the same A/D bits it would see under
nested paging.

Coherence: the guest's page-table pages are write-protected. Every guest write
to one is *traced* (an exit, counted and charged): a changed leaf drops the
shadow leaf and the TLB entry; a changed upper-level link drops the whole shadow
subtree below it (its table pages go back to the free list) and the address
space's TLB entries. To know which VPNs a guest table page translates, the pager
records the level and first VPN of each guest table page as the guest links it.
CR3 loads are intercepted to switch shadow roots; INVLPG and flushes are
intercepted too (the tables are already coherent, so they only cost an exit).

When the *pmap* changes a page (sharing, swapping, ...), a reverse map finds
the shadow leaf that maps it: one (ASID, VPN) per PPN, or "many", in which case
all of the VM's shadow tables are dropped and rebuilt lazily (as early VMMs did
on a full resync). Shadow table pages come from machine memory; the fill kernel
takes them from a small pool of spare table pages, refilled between kernel calls.

Active-memory sampling makes chosen pages trap (``arm_traps``): their shadow
leaves are zapped through the reverse map and the fill path refuses them, so
the next access to each is a hidden fault the fill hands to the host
(``BACKING_MISSING`` on a backed page), which counts the touch, disarms the
page (``clear_traps``) and retries; the fill then proceeds [OSDI02 §5.3].

Invariants: any present shadow leaf for (address space, VPN) equals the guest
leaf composed with the pmap, with writability no greater than both allow (the
property tests compare every translation with that composition).

Limitations: a guest table page linked from two places (shared kernel tables)
is tracked at its most recent place only; the guest model does not share them.

References: Adams and Agesen, ASPLOS 2006 (hidden faults, tracing); Waldspurger,
OSDI 2002 §2, §5.3 [OSDI02]; Linux KVM ``arch/x86/kvm/mmu/paging_tmpl.h`` (shadow A/D emulation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.hardware.frames import HYPERVISOR, MachineMemory
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
    Mmu,
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
    TableStore,
    flat_entries,
    make_pte,
    pte_frame,
    table_index,
    tree_tables,
)
from hvmem.hardware.prefetch import host_prefetch
from hvmem.hardware.timing import CostTable
from hvmem.hardware.tlb import (
    ASID_SHIFT,
    PERM,
    PERM_WRITE,
    VALUE,
    VPN_MASK,
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
from hvmem.hypervisor.pmap import STATE_PRIVATE, STATE_SHARED, Pmap

RMAP_NONE = -1  # no shadow leaf maps this PPN
RMAP_MANY = -2  # more than one may: a pmap change drops all shadow tables
SPARE_BATCH = 64  # spare shadow table pages handed to the fill kernel at a time
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


@dataclass(slots=True)
class ShadowCounters:
    """Event tallies of one VM's shadow pager."""

    traced_writes: int = 0  # guest page-table writes that exited to the hypervisor
    leaves_zapped: int = 0  # shadow leaves dropped because the guest or pmap changed
    subtrees_zapped: int = 0  # shadow subtrees dropped for changed guest upper-level links
    full_resyncs: int = 0  # all shadow tables dropped (a pmap change with a shared PPN)
    shadow_roots: int = 0  # shadow tables created (one per guest CR3 value)


class ShadowPaging:
    """The shadow tables of one VM, their coherence, and the batch translation.

    Args:
        vm_id: the VM.
        frames: machine memory (shadow table pages are hypervisor frames).
        host_tables: the store of table pages in machine frames.
        guest_tables: the VM's guest-physical table store (write-protected here).
        pmap: the VM's pmap.
        costs: to charge traced writes.
    """

    name = "shadow"

    def __init__(
        self,
        vm_id: int,
        frames: MachineMemory,
        host_tables: TableStore,
        guest_tables: TableStore,
        pmap: Pmap,
        costs: CostTable,
    ):
        self.vm_id = vm_id
        self.frames = frames
        self.host_tables = host_tables
        self.guest_tables = guest_tables
        self.pmap = pmap
        self.costs = costs
        self.counters = ShadowCounters()
        self.mmus: list[Mmu] = []
        self.shadow_root_of: dict[int, int] = {}  # guest root PPN -> shadow root MPN
        self.guest_root_of_asid: dict[int, int] = {}
        self.asid_of_guest_root: dict[int, int] = {}
        n = guest_tables.n_frames
        # What each guest table page translates: its level (-1: not shadowed),
        # its first VPN, and the guest root of its tree.
        self.gpt_level = np.full(n, -1, dtype=np.int8)
        self.gpt_base = np.zeros(n, dtype=np.int64)
        self.gpt_root = np.full(n, -1, dtype=np.int64)
        self.rmap = np.full(pmap.n_ppns, RMAP_NONE, dtype=np.int64)
        # Pages whose next access must exit to the hypervisor (sampling).
        self.trap = np.zeros(pmap.n_ppns, dtype=np.bool_)
        self.spares = np.zeros(SPARE_BATCH, dtype=np.int64)
        self.spare_top = np.zeros(1, dtype=np.int64)
        guest_tables.write_protect(self._on_guest_writes)

    # -- interception (MmuIntercepts) ------------------------------------------------
    def attach(self, mmu: Mmu) -> None:
        """Run ``mmu`` under shadow paging: its CR3 loads and flushes exit to us."""
        mmu.intercepts = self
        self.mmus.append(mmu)

    def on_cr3_load(self, asid: int, guest_root_ppn: int) -> int:
        """Switch to (creating if needed) the shadow table of the guest's address space."""
        if guest_root_ppn not in self.shadow_root_of:
            root = self.frames.alloc_one(HYPERVISOR)
            self.host_tables.add_table(root)
            self.shadow_root_of[guest_root_ppn] = root
            self.counters.shadow_roots += 1
            frames, levels, bases = tree_tables(self.guest_tables, guest_root_ppn)
            self.gpt_level[frames] = levels
            self.gpt_base[frames] = bases
            self.gpt_root[frames] = guest_root_ppn
        self.guest_root_of_asid[asid] = guest_root_ppn
        self.asid_of_guest_root[guest_root_ppn] = asid
        if self.spare_top[0] == 0:
            self._refill_spares()
        return self.shadow_root_of[guest_root_ppn]

    def on_invlpg(self, asid: int, vpn: int) -> None:
        """Nothing to resync: every guest table write was traced when it happened."""

    def on_flush(self, asid: int) -> None:
        """Nothing to resync, as for INVLPG."""

    # -- tracing guest page-table writes ---------------------------------------------
    def _on_guest_writes(
        self, frames: np.ndarray, indices: np.ndarray, old: np.ndarray, new: np.ndarray
    ) -> None:
        levels = self.gpt_level[frames]
        shadowed = levels >= 0
        if not np.any(shadowed):
            return  # not a shadowed table page: not write-protected, no exit
        n_traced = int(np.count_nonzero(shadowed))
        self.counters.traced_writes += n_traced
        if self.mmus:
            cpu = self.mmus[0].counters
            cpu.exits += n_traced
            cpu.time_ns += n_traced * self.costs.pte_trace_ns
        frames, indices = frames[shadowed], indices[shadowed].astype(np.int64)
        old, new, levels = old[shadowed], new[shadowed], levels[shadowed].astype(np.int64)
        roots = self.gpt_root[frames]
        vpns = self.gpt_base[frames] + (indices << (INDEX_BITS * levels))
        was_present = (old & PTE_PRESENT) != 0
        # Leaves that mapped something: drop their shadow leaves and TLB entries.
        leaf = (levels == 0) & was_present
        for root in np.unique(roots[leaf]):
            self._zap_leaves(int(root), vpns[leaf & (roots == root)])
        # Upper-level links that changed: drop the shadow subtree below them.
        upper = levels > 0
        for k in np.flatnonzero(upper & was_present):
            self._zap_subtree(int(roots[k]), int(levels[k]), int(vpns[k]))
        # New links: record what the linked table page translates.
        links = upper & ((new & PTE_PRESENT) != 0) & ~((levels == 1) & ((new & PTE_LARGE) != 0))
        children = ((new[links] >> np.uint64(12)) & np.uint64((1 << 40) - 1)).astype(np.int64)
        self.gpt_level[children] = levels[links] - 1
        self.gpt_base[children] = vpns[links]
        self.gpt_root[children] = roots[links]

    def _zap_leaves(self, guest_root: int, vpns: np.ndarray) -> None:
        s_root = self.shadow_root_of.get(guest_root)
        if s_root is None:
            return
        h = self.host_tables
        self.counters.leaves_zapped += int(
            zap_shadow_leaves(h.entries, s_root, vpns.astype(np.int64))
        )
        asid = self.asid_of_guest_root.get(guest_root)
        if asid is not None:
            for mmu in self.mmus:
                for vpn in vpns.tolist():
                    mmu.tlb.invalidate(self.vm_id, asid, vpn)

    def _zap_subtree(self, guest_root: int, level: int, vpn: int) -> None:
        """Drop the shadow entry at ``level`` on the path of ``vpn`` and free what it linked."""
        s_root = self.shadow_root_of.get(guest_root)
        if s_root is None:
            return
        h = self.host_tables
        frame = s_root
        for lv in range(LEVELS - 1, level, -1):
            pte = h.entries[frame, table_index(vpn, lv)]
            if not pte & PTE_PRESENT:
                return
            frame = int(pte_frame(pte))
        idx = int(table_index(vpn, level))
        pte = h.entries[frame, idx]
        if not pte & PTE_PRESENT:
            return
        h.entries[frame, idx] = 0
        self._free_tree(int(pte_frame(pte)))
        self.counters.subtrees_zapped += 1
        asid = self.asid_of_guest_root.get(guest_root)
        for mmu in self.mmus:
            if asid is not None:
                mmu.tlb.flush_asid(self.vm_id, asid)
                mmu.pwc.flush_asid(self.vm_id, asid)

    def _free_tree(self, root: int) -> None:
        frames = tree_tables(self.host_tables, root)[0]
        for frame in frames.tolist():
            self.host_tables.remove_table(frame)
        self.frames.free(frames)

    # -- pmap changes ------------------------------------------------------------------
    def on_backing_changed(self, ppns: np.ndarray, old_had_mpn: np.ndarray) -> None:
        """Drop shadow leaves that map ``ppns`` (they refill from the new pmap on use)."""
        ppns = np.asarray(ppns, dtype=np.int64)[np.asarray(old_had_mpn, dtype=bool)]
        if ppns.size == 0:
            return
        r = self.rmap[ppns]
        if np.any(r == RMAP_MANY):
            self._resync_all()
            return
        single = r >= 0
        asids = r[single] >> ASID_SHIFT
        vpns = r[single] & VPN_MASK
        for asid in np.unique(asids).tolist():
            root = self.guest_root_of_asid.get(asid)
            if root is not None:
                self._zap_leaves(root, vpns[asids == asid])
        self.rmap[ppns] = RMAP_NONE

    def arm_traps(self, ppns: np.ndarray) -> None:
        """Make the next access to each of ``ppns`` exit: zap the shadow leaves that map them."""
        ppns = np.asarray(ppns, dtype=np.int64)
        self.trap[ppns] = True
        self.on_backing_changed(ppns, self.pmap.mpn[ppns] >= 0)

    def clear_traps(self, ppns: np.ndarray) -> None:
        """Disarm ``ppns``: the next hidden fault on each fills its shadow leaf as usual."""
        self.trap[np.asarray(ppns, dtype=np.int64)] = False

    def _resync_all(self) -> None:
        """Drop every shadow table of the VM; they refill lazily."""
        h = self.host_tables
        for s_root in self.shadow_root_of.values():
            frames = tree_tables(h, s_root)[0][1:]
            for frame in frames.tolist():
                h.remove_table(frame)
            if frames.size:
                self.frames.free(frames)
            h.entries[s_root] = 0
        self.rmap[:] = RMAP_NONE
        self.counters.full_resyncs += 1
        for mmu in self.mmus:
            mmu.tlb.flush_vm(self.vm_id)
            mmu.pwc.flush_vm(self.vm_id)

    # -- translation -------------------------------------------------------------------
    def table_frames(self) -> np.ndarray:
        """Machine frames holding this VM's shadow table pages, spares included."""
        parts = [tree_tables(self.host_tables, r)[0] for r in self.shadow_root_of.values()]
        parts.append(self.spares[: int(self.spare_top[0])])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _refill_spares(self) -> None:
        have = int(self.spare_top[0])
        need = SPARE_BATCH - have
        fresh = self.frames.alloc(HYPERVISOR, need)
        for frame in fresh.tolist():
            self.host_tables.add_table(frame)
        self.spares[have:SPARE_BATCH] = fresh
        self.spare_top[0] = SPARE_BATCH

    def run(
        self,
        mmu: Mmu,
        vpns: np.ndarray,
        is_write: np.ndarray,
        start: int,
        mpns_out: np.ndarray,
        counts: np.ndarray,
        steps: np.ndarray,
        record: bool,
    ) -> tuple[int, int, int, int]:
        """Translate from ``start`` until done or a fault the host must resolve."""
        if mmu.hw_root < 0:
            raise RuntimeError("shadow paging: the guest has not loaded CR3")
        guest_root = mmu.guest_root
        n_steps_total = 0
        while True:
            tlb, pwc, g, h = mmu.tlb, mmu.pwc, self.guest_tables, self.host_tables
            kernel = shadow_translate_recorded if record else shadow_translate
            stop, status, ppn, n_steps = kernel(
                tlb.cache,
                tlb.clock,
                tlb.n_sets,
                tlb.set_mask,
                pwc.cache,
                pwc.clock,
                pwc.n_sets,
                pwc.set_mask,
                pwc.enabled,
                self.vm_id,
                mmu.asid,
                h.entries,
                mmu.hw_root,
                g.entries,
                guest_root,
                self.pmap.state,
                self.pmap.mpn,
                self.rmap,
                self.trap,
                self.spares,
                self.spare_top,
                vpns,
                is_write,
                start,
                mpns_out,
                counts,
                steps[n_steps_total:],
            )
            n_steps_total += int(n_steps)
            if status != NEEDS_TABLE:
                return int(stop), int(status), int(ppn), n_steps_total
            self._refill_spares()
            start = int(stop)
