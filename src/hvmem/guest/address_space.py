"""A guest process's address space: its page table in guest-physical memory.

What is modelled
----------------
Each guest process has an address space identified by an ASID (its PCID) and a
four-level page table whose pages are guest-physical pages taken from the
guest's own allocator. The guest maps and unmaps ranges of virtual pages to
guest-physical pages by writing entries; under shadow paging the hypervisor
traces those writes, under nested paging the hardware reads them directly.

After changing mappings the guest must drop stale TLB entries, as Linux's
``flush_tlb_mm_range`` does: INVLPG page by page up to a ceiling of 33 pages
(``tlb_single_page_flush_ceiling`` in ``arch/x86/mm/tlb.c``), a full flush of
the address space beyond it.

References: Linux ``arch/x86/mm/tlb.c``; Intel SDM Vol. 3A §4.10.4.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hvmem.hardware.mmu import Mmu
from hvmem.hardware.page_table import (
    ENTRIES_PER_TABLE,
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_LARGE,
    PTE_PRESENT,
    PTE_USER,
    PTE_WRITABLE,
    RadixPageTable,
    TableStore,
)

#: Linux x86 ``tlb_single_page_flush_ceiling``: beyond this many pages, flush all.
TLB_SINGLE_PAGE_FLUSH_CEILING = 33


class AddressSpace:
    """One guest process's virtual address space.

    Args:
        asid: the address-space tag (PCID) the guest uses for it.
        tables: the guest's table store (its guest-physical memory).
        alloc_table_ppn: hands out a guest-physical page for a new table page.
    """

    def __init__(self, asid: int, tables: TableStore, alloc_table_ppn: Callable[[], int]):
        self.asid = asid
        self.page_table = RadixPageTable(tables, alloc_table_ppn)

    @property
    def root_ppn(self) -> int:
        """The value the guest loads into CR3."""
        return self.page_table.root_frame

    def map(self, vpns: np.ndarray, ppns: np.ndarray, writable: bool = True) -> None:
        """Map virtual pages to guest-physical pages (user pages)."""
        flags = PTE_PRESENT | PTE_USER | (PTE_WRITABLE if writable else 0)
        self.page_table.map_many(vpns, ppns, flags)

    def unmap(self, vpns: np.ndarray, mmu: Mmu | None = None) -> np.ndarray:
        """Unmap virtual pages, flush their translations; returns their PPNs (-1 if none)."""
        vpns = np.asarray(vpns, dtype=np.int64)
        old = self.page_table.unmap_many(vpns)
        self.flush_tlb(vpns, mmu)
        present = (old & PTE_PRESENT) != 0
        ppns = ((old & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
        return np.where(present, ppns, -1)

    def flush_tlb(self, vpns: np.ndarray, mmu: Mmu | None) -> None:
        """Drop stale translations of ``vpns`` after their entries changed.

        For the running address space: INVLPG up to the ceiling, else a full
        flush. For another one (its PCID is not loaded), its tagged entries are
        dropped as the CR3 load that next switches to it would, without an exit.
        """
        if mmu is None or len(vpns) == 0:
            return
        if mmu.asid == self.asid:
            if len(vpns) <= TLB_SINGLE_PAGE_FLUSH_CEILING:
                for vpn in np.asarray(vpns).tolist():
                    mmu.invlpg(vpn)
            else:
                mmu.flush()
        else:
            mmu.tlb.flush_asid(mmu.vm_id, self.asid)
            mmu.pwc.flush_asid(mmu.vm_id, self.asid)

    def lookup_ppn(self, vpn: int) -> int:
        """The guest-physical page ``vpn`` maps to, or -1 (a software walk, no side effects)."""
        pte = self.page_table.lookup(vpn)
        if not pte & PTE_PRESENT:
            return -1
        ppn = int((pte & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT))
        if pte & PTE_LARGE:
            ppn += vpn & (ENTRIES_PER_TABLE - 1)  # a 2 MiB page: add the 4 KiB index within it
        return ppn
