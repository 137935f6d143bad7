"""Guest processes and their mappings: ``mmap`` and ``munmap``.

What is modelled
----------------
A guest process is an address space (``address_space.py``: its ASID and page
table) and its mappings: sorted, non-overlapping ranges of virtual pages, each
anonymous or file-backed (Linux's VMAs). Processes map ranges (``mmap``) and
unmap them (``munmap``)::

    mmap     a new mapping; nothing is allocated until a page is touched
             (``fault.py``: the mapping a page lies in says how it is faulted in)
    munmap   the range's entries are cleared (and the TLB flushed), the pages
             they mapped freed, the swap slots they held discarded; mappings
             overlapping the range are trimmed, split or dropped

Ranges lie within the 48-bit virtual address space (2**36 pages) and a
mapping never overlaps another: either is a bad workload, a ``ConfigError``.

References: Linux ``mm/mmap.c`` (VMAs, ``find_vma``), ``mm/memory.c``
(``zap_page_range``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hvmem.errors import ConfigError
from hvmem.guest.address_space import AddressSpace
from hvmem.guest.pages import PTE_SWAP, pte_frames
from hvmem.guest.swap import SwapDevice
from hvmem.hardware.mmu import Mmu
from hvmem.hardware.page_table import PTE_PRESENT
from hvmem.workloads.base import MemoryOp, MemoryOpKind


@dataclass
class Process:
    """A guest process: an address space and its mappings."""

    index: int
    space: AddressSpace
    # Mappings as sorted, non-overlapping [start, end) VPN ranges.
    vma_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vma_end: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vma_file: np.ndarray = field(default_factory=lambda: np.zeros(0, np.bool_))

    def find_vma(self, vpns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each of ``vpns``: the first mapping ending after it, and whether it lies inside.

        Returns (index into the mappings, inside); the index is meaningful where inside.
        """
        slot = np.searchsorted(self.vma_end, vpns, side="right")
        inside = slot < self.vma_start.size
        inside[inside] = self.vma_start[slot[inside]] <= vpns[inside]
        return slot, inside


def process_of(processes: list[Process], index: int) -> Process:
    """The process numbered ``index``; a ``ConfigError`` if there is none."""
    if not 0 <= index < len(processes):
        raise ConfigError(f"no guest process {index} (have 0..{len(processes) - 1})")
    return processes[index]


def apply_op(proc: Process, op: MemoryOp, swap: SwapDevice, mmu: Mmu | None,
             free_pages: Callable[[np.ndarray], None]) -> None:
    """Carry out one ``mmap``/``munmap`` of ``proc`` (the process ``op`` names).

    ``munmap`` gives the pages it frees to ``free_pages`` and the slots to ``swap``
    and flushes ``mmu``'s translations of the range.
    """
    start, end = op.first_vpn, op.first_vpn + op.n_pages
    if op.n_pages <= 0 or start < 0 or end > (1 << 36):
        raise ConfigError(f"process {op.process}: bad range {start:#x}+{op.n_pages}")
    if op.kind == MemoryOpKind.MAP:
        overlap = (proc.vma_start < end) & (proc.vma_end > start)
        if np.any(overlap):
            raise ConfigError(
                f"process {op.process}: mmap at vpn {start:#x} overlaps a mapping"
            )
        order = np.searchsorted(proc.vma_start, start)
        proc.vma_start = np.insert(proc.vma_start, order, start)
        proc.vma_end = np.insert(proc.vma_end, order, end)
        proc.vma_file = np.insert(proc.vma_file, order, op.file_backed)
    else:
        unmap_range(proc, start, end, swap, mmu, free_pages)


def unmap_range(proc: Process, start: int, end: int, swap: SwapDevice, mmu: Mmu | None,
                free_pages: Callable[[np.ndarray], None]) -> None:
    """``munmap`` of [start, end): entries, pages, swap slots and mappings."""
    vpns = np.arange(start, end, dtype=np.int64)
    ptes = proc.space.page_table.leaf_entries(vpns)
    present = (ptes & PTE_PRESENT) != 0
    swapped = ~present & ((ptes & PTE_SWAP) != 0)
    touched = present | swapped
    if np.any(touched):
        proc.space.page_table.set_leaf_entries(vpns[touched], np.zeros(int(touched.sum()),
                                                                      np.uint64))
        proc.space.flush_tlb(vpns[present], mmu)
    if np.any(swapped):
        swap.discard(pte_frames(ptes[swapped]))
    if np.any(present):
        free_pages(pte_frames(ptes[present]))
    # Trim, split or drop the mappings that overlap [start, end).
    keep_s, keep_e, keep_f = [], [], []
    for s, e, f in zip(proc.vma_start.tolist(), proc.vma_end.tolist(),
                       proc.vma_file.tolist(), strict=True):
        if e <= start or s >= end:
            keep_s.append(s), keep_e.append(e), keep_f.append(f)
            continue
        if s < start:
            keep_s.append(s), keep_e.append(start), keep_f.append(f)
        if e > end:
            keep_s.append(end), keep_e.append(e), keep_f.append(f)
    proc.vma_start = np.array(keep_s, np.int64)
    proc.vma_end = np.array(keep_e, np.int64)
    proc.vma_file = np.array(keep_f, np.bool_)
