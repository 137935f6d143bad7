"""Nested paging (Intel EPT, AMD NPT): the hardware composes the two translations.

What is modelled
----------------
The hypervisor keeps one nested table per VM, mapping PPN -> MPN exactly as the
pmap says: present and writable for a PRIVATE page, present and read-only for a
SHARED one, absent otherwise. The guest's own page tables are used as they are:
no write tracing, no CR3 interception. On a TLB miss the hardware makes a 2-D
walk (``hardware/walker.walk_2d``, up to 24 references); a guest-physical page
without backing stops the walk with an EPT violation (``BACKING_MISSING``),
which the host resolves (first-touch allocation, swap-in, ...) before the
reference is retried.

When the pmap changes a page that had a machine page, its nested entry is
rewritten and the VM's cached translations are dropped (``INVEPT``
single-context: the TLB holds combined VPN -> MPN entries and nothing maps an
MPN back to the VPNs that used it).

Host large pages: a 2 MiB guest-physical region the host backs with one
aligned 2 MiB run of machine frames is mapped by one PS leaf at level 1 of the
nested table (``map_large``), so the nested dimension of a 2-D walk that ends
there reads 3 entries instead of 4 and needs no level-0 table page at all: the
benefit of large pages besides the TLB's reach (the combined TLB entries stay
4 KiB, as the guest maps 4 KiB pages). Breaking the large page (``split_large``)
puts a level-0 table of 512 entries back, each mapping the frame it mapped
inside the large page: no data moves. The walker already reads PS leaves.

Invariant: for every PPN, the nested table's leaf equals the pmap's MPN with
the pmap's writability (property-tested through translations); a PPN inside a
large page is mapped by its region's PS leaf.

Leaves on demand: only a vCPU's walk reads the 4 KiB leaves, and only a VM
with an MMU attached (mmu fidelity) walks. Without one (page fidelity) a pmap
change writes no leaf into an existing level-0 table; it only finds the pages
that need a table where none exists, and those tables are made as before, in
the same order, so the table frames (which count as the host's memory) are
the same. The leaves are rewritten from the pmap (:meth:`NestedPaging.sync_leaves`)
before anything reads them (an MMU attached, a trap armed or cleared); a
region mapped large had no page backed, so its table's leaves are cleared.
In bench-32vm's pressure window the leaf writes were 5 % of the serving
thread's time.

Active-memory sampling makes chosen pages trap (``arm_traps``): their nested
leaves are cleared and the VM's cached translations dropped (INVEPT), so the
next access to each, from any guest-virtual address and from guest page walks
alike, is an EPT violation the host sees; the host counts the touch and puts
the leaf back (``clear_traps``). While a page is armed, pmap changes leave its
leaf clear, so the trap cannot be lost [OSDI02 §5.3].

References: Bhargava et al., ASPLOS 2008; Intel SDM Vol. 3C §28.2-28.3 (EPT, INVEPT);
Waldspurger, OSDI 2002 §5.3 [OSDI02].
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.hardware.frames import HYPERVISOR, MachineMemory
from hvmem.hardware.mmu import (
    C_REFS,
    C_TLB_HITS,
    C_TLB_MISSES,
    C_WALK_REFS,
    C_WALKS,
    KIND_FAULT,
    KIND_TLB_HIT,
    KIND_TLB_MISS,
    Mmu,
)
from hvmem.hardware.page_table import (
    ENTRIES_PER_TABLE,
    INDEX_BITS,
    PTE_ACCESSED,
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_USER,
    PTE_WRITABLE,
    RadixPageTable,
    TableStore,
    flat_entries,
    leaf_table_frame,
    software_walk_many,
)
from hvmem.hardware.tlb import (
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
    DIM_ONE,
    NONE,
    PREFETCH_MIN_PAGES,
    _record,
    _walk_2d,
    prefetch_leaf_1d,
    prefetch_leaf_2d,
)
from hvmem.hypervisor.pmap import STATE_PRIVATE, STATE_SHARED, Backing, Pmap

_NESTED_READ = PTE_PRESENT | PTE_USER | PTE_ACCESSED
_NESTED_WRITE = _NESTED_READ | PTE_WRITABLE

# How many references ahead the batch kernel prefetches the guest leaf entry,
# and then (reading that entry) the nested leaf of the data page: far enough
# for a cache miss to resolve, near enough that the line is still cached.
PREFETCH_GUEST_AHEAD = 16
PREFETCH_NESTED_AHEAD = 8


@njit(cache=True, inline="always")
def _nested_translate(
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
    g_entries,
    g_root,
    n_entries,
    n_root,
    vpns,
    is_write,
    start,
    mpns_out,
    counts,
    steps,
    record,
):
    """Translate ``vpns[start:]`` of one address space under nested paging.

    ``record`` must be a constant at the call site (see the two kernels below):
    when it is False, the step recording compiles away.

    Returns:
        (stop, status, fault_ppn, n_steps): ``stop`` is the index of the first
        reference not translated (``len(vpns)`` when all were), ``status`` its
        fault kind (NONE when all were).
    """
    # Tallies and both LRU clocks are kept in locals and stored once at the end:
    # stores into an array inside the loop would pin every table entry load
    # behind them.
    n_steps = 0
    hits = misses = walk_refs = 0
    t_clock = tlb_clock[0]
    p_clock = pwc_clock[0]
    g_flat = flat_entries(g_entries)
    n_flat = flat_entries(n_entries)
    # (A root of -1, no CR3 loaded yet, must not be peeked at: the walk itself
    # stops in the nested table, at the root's own translation.)
    prefetch = not record and g_root >= 0 and g_entries.shape[0] >= PREFETCH_MIN_PAGES
    stop, status, fault_ppn = vpns.size, NONE, np.int64(-1)
    for i in range(start, vpns.size):
        if prefetch:
            # Host prefetches for the walks a few references ahead (see walker.py).
            if i + PREFETCH_GUEST_AHEAD < vpns.size:
                prefetch_leaf_1d(g_flat, g_root, vpns[i + PREFETCH_GUEST_AHEAD])
            if i + PREFETCH_NESTED_AHEAD < vpns.size:
                prefetch_leaf_2d(g_flat, g_root, n_flat, n_root, vpns[i + PREFETCH_NESTED_AHEAD])
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
                continue
        misses += 1
        n_steps = _record(steps, n_steps, record, DIM_ONE, 0, -1, 0, 0, KIND_TLB_MISS)
        st, mpn, refs, n_steps, writable, fppn, p_clock = _walk_2d(
            g_flat, g_root, n_flat, n_root, vpn, write, pwc, p_clock, pwc_sets,
            pwc_mask, use_pwc, vm, asid, steps, n_steps, record
        )  # fmt: skip
        walk_refs += refs
        if st != NONE:
            n_steps = _record(steps, n_steps, record, DIM_ONE, 0, fppn, st, 0, KIND_FAULT)
            stop, status, fault_ppn = i, st, fppn
            break
        # ``victim`` is the way the walk's entry replaces: the LRU slot, or the
        # entry itself on a write through a clean one (the walk touches no TLB).
        t_clock = sa_fill(tlb, t_clock, s, victim, key, mpn, PERM_WRITE if writable else 0)
        mpns_out[i] = mpn
    tlb_clock[0] = t_clock
    pwc_clock[0] = p_clock
    counts[C_REFS] += stop - start
    counts[C_TLB_HITS] += hits
    counts[C_TLB_MISSES] += misses
    counts[C_WALKS] += misses
    counts[C_WALK_REFS] += walk_refs
    return stop, status, fault_ppn, n_steps


@njit(cache=True, _nrt=False)
def nested_translate(
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
    g_entries,
    g_root,
    n_entries,
    n_root,
    vpns,
    is_write,
    start,
    mpns_out,
    counts,
    steps,
):
    """The batch kernel: :func:`_nested_translate` without step recording.

    The body is compiled twice, with the page-walk cache on and off as constants:
    a runtime flag costs almost half the speed (the dead PWC code still blocks
    optimisation of every inlined walk).

    The kernels run without Numba's reference-counting runtime (``_nrt=False``):
    they allocate nothing, and with it every array handed to an inlined helper
    is an atomic increment and decrement on each walk (about 10% of the time).
    """
    if use_pwc:
        return _nested_translate(
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
            g_entries,
            g_root,
            n_entries,
            n_root,
            vpns,
            is_write,
            start,
            mpns_out,
            counts,
            steps,
            False,
        )
    return _nested_translate(
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
        g_entries,
        g_root,
        n_entries,
        n_root,
        vpns,
        is_write,
        start,
        mpns_out,
        counts,
        steps,
        False,
    )


@njit(cache=True, _nrt=False)
def nested_translate_recorded(
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
    g_entries,
    g_root,
    n_entries,
    n_root,
    vpns,
    is_write,
    start,
    mpns_out,
    counts,
    steps,
):
    """The explaining kernel: :func:`_nested_translate` recording every step."""
    return _nested_translate(
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
        g_entries,
        g_root,
        n_entries,
        n_root,
        vpns,
        is_write,
        start,
        mpns_out,
        counts,
        steps,
        True,
    )


@njit(cache=True, nogil=True)
def _mirror_leaves(entries, root_frame, ppns, large, state, mpn, trap, slow, write):
    """Rewrite the nested leaves of ``ppns`` as the pmap says, where their tables exist.

    A PRIVATE page gets a writable leaf, a SHARED one a read-only leaf, any
    other (or an armed) page none; pages inside a large page keep their region's
    PS leaf. Pages that need a leaf but have no level-0 table go to ``slow``, in
    order. Without ``write`` no leaf is written (see "Leaves on demand"), only
    ``slow`` is listed. Returns (how many went to ``slow``, whether a page with a
    level-0 table was left unwritten).
    """
    n_slow = 0
    unwritten = False
    region = np.int64(-1)  # the 2 MiB region whose leaf table ``frame`` is: batches
    frame = np.int64(-1)  # come in PPN order, so most pages need no walk of their own
    for i in range(ppns.size):
        ppn = ppns[i]
        if large[ppn >> INDEX_BITS]:
            continue
        st = state[ppn]
        pte = np.uint64(0)
        if not trap[ppn]:
            if st == STATE_PRIVATE:
                pte = (np.uint64(mpn[ppn]) << np.uint64(PTE_FRAME_SHIFT)) | _NESTED_WRITE
            elif st == STATE_SHARED:
                pte = (np.uint64(mpn[ppn]) << np.uint64(PTE_FRAME_SHIFT)) | _NESTED_READ
        if ppn >> INDEX_BITS != region:
            region = ppn >> INDEX_BITS
            frame = leaf_table_frame(entries, root_frame, ppn)
        if frame >= 0:
            if write:
                entries[frame, ppn & (ENTRIES_PER_TABLE - 1)] = pte
            else:
                unwritten = True
        elif pte != 0:
            slow[n_slow] = ppn
            n_slow += 1
    return n_slow, unwritten


class NestedPaging:
    """The nested table of one VM and the batch translation that uses it.

    Args:
        vm_id: the VM.
        frames: machine memory (nested table pages are hypervisor frames).
        host_tables: the store of table pages in machine frames.
        guest_tables: the VM's guest-physical table store.
        pmap: the VM's pmap.
    """

    name = "nested"

    def __init__(
        self,
        vm_id: int,
        frames: MachineMemory,
        host_tables: TableStore,
        guest_tables: TableStore,
        pmap: Pmap,
    ):
        self.vm_id = vm_id
        self.frames = frames
        self.host_tables = host_tables
        self.guest_tables = guest_tables
        self.pmap = pmap
        self.ept = RadixPageTable(host_tables, lambda: frames.alloc_one(HYPERVISOR))
        # Per 2 MiB region: mapped by one PS leaf. Its pages' leaves are that entry,
        # so pmap updates of single pages there leave the table alone.
        self.large = np.zeros(-(-pmap.n_ppns // ENTRIES_PER_TABLE), dtype=np.bool_)
        self.mmus: list[Mmu] = []
        # Pages whose next access must exit to the hypervisor (sampling).
        self.trap = np.zeros(pmap.n_ppns, dtype=np.bool_)
        # Some 4 KiB leaves lag the pmap (no MMU attached: see "Leaves on demand").
        self.leaves_stale = False

    def attach(self, mmu: Mmu) -> None:
        """Run ``mmu`` under nested paging: guest MMU operations are not intercepted."""
        self.sync_leaves()  # its walks read every leaf from now on
        mmu.intercepts = None
        self.mmus.append(mmu)

    def sync_leaves(self) -> None:
        """Rewrite the 4 KiB leaves from the pmap (see "Leaves on demand").

        Every page that needs a leaf has its level-0 table already, so no
        table is made here.
        """
        if self.leaves_stale:
            self._mirror(np.arange(self.pmap.n_ppns, dtype=np.int64))
            self.leaves_stale = False

    def arm_traps(self, ppns: np.ndarray) -> None:
        """Make the next access to each of ``ppns`` exit: clear their leaves, then INVEPT."""
        self.sync_leaves()
        ppns = np.asarray(ppns, dtype=np.int64)
        self.trap[ppns] = True
        self.ept.unmap_many(ppns)
        for mmu in self.mmus:  # INVEPT single-context, as for any leaf taken away
            mmu.tlb.flush_vm(self.vm_id)
            mmu.pwc.flush_vm(self.vm_id)

    def clear_traps(self, ppns: np.ndarray) -> None:
        """Disarm ``ppns`` and put their leaves back as the pmap says (nothing to flush)."""
        self.sync_leaves()
        ppns = np.asarray(ppns, dtype=np.int64)
        self.trap[ppns] = False
        self.on_backing_changed(ppns, False)

    def table_frames(self) -> np.ndarray:
        """Machine frames holding this VM's nested table pages."""
        return self.ept.table_frames()

    def on_backing_changed(self, ppns: np.ndarray, had_frames: bool) -> None:
        """Mirror pmap changes of ``ppns`` into the nested table.

        Args:
            ppns: pages whose pmap entry changed.
            had_frames: whether the pages had machine pages before (so some
                translation may be cached and must be flushed).
        """
        ppns = np.ascontiguousarray(ppns, dtype=np.int64)
        # No MMU attached, no walks: the tables only (see "Leaves on demand").
        self.leaves_stale |= self._mirror(ppns, write=bool(self.mmus))
        if had_frames and ppns.size:
            self._invept()

    def _mirror(self, ppns: np.ndarray, write: bool = True) -> bool:
        """Rewrite the leaves of ``ppns`` from the pmap, making level-0 tables where needed.

        Without ``write`` only the tables are made; returns whether a leaf was
        left unwritten.
        """
        # One pass rewrites the leaves whose table pages exist (nothing traces
        # writes to the machine's table store, so they are written directly);
        # the pages that need a leaf where no level-0 table exists yet come
        # back in ``slow``.
        slow = np.empty(ppns.size, dtype=np.int64)
        n_slow, unwritten = _mirror_leaves(self.ept.store.entries, self.ept.root_frame, ppns,
                                           self.large, self.pmap.state, self.pmap.mpn,
                                           self.trap, slow, write)
        self._map_tableless(slow[:n_slow])
        return unwritten

    def _map_tableless(self, slow: np.ndarray) -> None:
        """Map ``slow``, pages that need a leaf where no level-0 table exists.

        map_many creates those tables: the private pages' first, then the
        shared pages' (the order decides which frames the new table pages take).
        """
        if slow.size:
            shared = self.pmap.state[slow] == Backing.SHARED
            self.ept.map_many(slow[~shared], self.pmap.mpn[slow[~shared]], _NESTED_WRITE)
            self.ept.map_many(slow[shared], self.pmap.mpn[slow[shared]], _NESTED_READ)

    def _invept(self) -> None:
        # INVEPT single-context: combined translations cannot be found by PPN.
        for mmu in self.mmus:
            mmu.tlb.flush_vm(self.vm_id)
            mmu.pwc.flush_vm(self.vm_id)

    def map_large(self, regions: np.ndarray, base_mpns: np.ndarray) -> None:
        """Map wholly unmapped 2 MiB ``regions`` (PPN >> 9) with one PS leaf each.

        A level-0 table page left empty in a region goes back to the free list;
        the page-walk cache may still link it, so the VM's cached translations
        are dropped then.
        """
        regions = np.asarray(regions, dtype=np.int64)
        if self.leaves_stale:
            # The regions had no page backed, so every leaf their tables hold is
            # clear where leaves follow each change: the tables displaced are empty.
            for region in regions.tolist():
                frame = leaf_table_frame(self.host_tables.entries, self.ept.root_frame,
                                         region << INDEX_BITS)
                if frame >= 0:
                    self.host_tables.entries[frame] = 0
        displaced = self.ept.map_large_many(regions << INDEX_BITS, base_mpns, _NESTED_WRITE)
        self.large[regions] = True
        if displaced.size:
            for frame in displaced.tolist():
                self.host_tables.remove_table(frame)
            self.frames.free(displaced)
            self._invept()

    def split_large(self, regions: np.ndarray) -> None:
        """Map 2 MiB ``regions`` at 4 KiB again, each page as the pmap says (a break)."""
        regions = np.asarray(regions, dtype=np.int64)
        if regions.size == 0:
            return
        self.ept.unmap_large_many(regions << INDEX_BITS)
        self.large[regions] = False
        ppns = (regions[:, None] * ENTRIES_PER_TABLE + np.arange(ENTRIES_PER_TABLE)).ravel()
        self.on_backing_changed(ppns, True)

    def unmap_large(self, regions: np.ndarray) -> None:
        """Drop the PS leaves of 2 MiB ``regions`` (their pages are being released)."""
        regions = np.asarray(regions, dtype=np.int64)
        if regions.size == 0:
            return
        self.ept.unmap_large_many(regions << INDEX_BITS)
        self.large[regions] = False
        self._invept()

    def large_leaves(self, regions: np.ndarray) -> np.ndarray:
        """The first frame each region's PS leaf maps, or -1 where none (for checks)."""
        regions = np.asarray(regions, dtype=np.int64)
        ptes = software_walk_many(self.host_tables.entries, self.ept.root_frame,
                                  regions << INDEX_BITS)
        out = np.full(regions.size, -1, dtype=np.int64)
        large = (ptes & PTE_LARGE) != 0
        out[large] = ((ptes[large] & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
        return out

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
        """Translate from ``start`` until done or a fault; see :func:`nested_translate`."""
        self.sync_leaves()
        tlb, pwc = mmu.tlb, mmu.pwc
        g, h = self.guest_tables, self.host_tables
        kernel = nested_translate_recorded if record else nested_translate
        stop, status, fault_ppn, n_steps = kernel(
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
            g.entries,
            mmu.hw_root,
            h.entries,
            self.ept.root_frame,
            vpns,
            is_write,
            start,
            mpns_out,
            counts,
            steps,
        )
        return int(stop), int(status), int(fault_ppn), int(n_steps)
