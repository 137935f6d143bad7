"""Shadow paging: the hypervisor composes the two translations in software.

What is modelled
----------------
For every guest address space (every guest CR3 value) the hypervisor keeps a
*shadow* page table that maps guest-virtual pages straight to machine pages,
and points the hardware at it; TLB misses then cost a plain 1-D walk::

    guest table   VPN --> PPN       (the guest's, in guest-physical pages)
    pmap                  PPN --> MPN   (the hypervisor's)
    shadow table  VPN ----------> MPN   (the composition, what the hardware walks)

The shadow table is filled lazily: a walk that finds no shadow entry is a
*hidden* page fault, which the batch kernel handles in place, emulating the
guest's accessed and dirty bits as it goes (``shadow_kernels.py``).

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

from hvmem.hardware.frames import HYPERVISOR, MachineMemory
from hvmem.hardware.mmu import Mmu
from hvmem.hardware.page_table import (
    INDEX_BITS,
    LEVELS,
    PTE_LARGE,
    PTE_PRESENT,
    TableStore,
    pte_frame,
    table_index,
    tree_tables,
)
from hvmem.hardware.timing import CostTable
from hvmem.hardware.tlb import ASID_SHIFT, VPN_MASK
from hvmem.hardware.walker import NEEDS_TABLE
from hvmem.hypervisor.paging.shadow_kernels import (
    RMAP_MANY,
    RMAP_NONE,
    shadow_translate,
    shadow_translate_recorded,
    zap_shadow_leaves,
)
from hvmem.hypervisor.pmap import Pmap

SPARE_BATCH = 64  # spare shadow table pages handed to the fill kernel at a time


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
    def on_backing_changed(self, ppns: np.ndarray, had_frames: bool) -> None:
        """Drop shadow leaves that map ``ppns`` (they refill from the new pmap on use).

        Pages that had no machine page (``had_frames`` False) have no leaf to drop.
        """
        if had_frames:
            self._drop_leaves(np.asarray(ppns, dtype=np.int64))

    def _drop_leaves(self, ppns: np.ndarray) -> None:
        """Drop the shadow leaves that map ``ppns``, pages that had machine pages."""
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
        self._drop_leaves(ppns[self.pmap.mpn[ppns] >= 0])

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
