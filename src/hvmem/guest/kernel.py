"""The guest kernel: processes, page faults, its own reclaim and swap.

What is modelled
----------------
``GuestKernel`` is one guest's kernel: its state (``KernelState`` in
``kernel_state.py``: what each page is, the reverse map, the reclaim policy's
data, the free lists, the swap device, the processes, the time) and the calls
the simulator, the balloon driver and the tools make on it. Each call is one
part of the kernel, kept in its own module::

    mappings           apply_op (mmap, munmap)                      process.py
    serving accesses   access (page fidelity), access_mmu (mmu)     access.py
    page faults        fault_in (demand-zero, swap-in, file pages)  fault.py
    memory pressure    alloc_pages, free_pages, reclaim             reclaim.py
    reports            count, stats, check_invariants               here

The parts are functions of the state, so each can be read on its own; they
import each other downwards only (access, fault, reclaim, kernel_state,
process, pages), and this module, which builds the state, imports them all.

All page contents go through the guest-physical memory bus
(``hardware/guest_memory.py``): zeroing a fresh page, reading a page to swap it
out and writing a swapped-in page are touches the hypervisor sees and may have
to serve (first touch, its own swap-in: double paging).

Invariants: free + anon + file + table + balloon = configured pages; every
mapped page's reverse map names the entry that maps it, and every present entry
is one of those; a swap slot is held by exactly one swap entry; the TABLE pages
are the page-table pages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvmem.core.counted import counts_of
from hvmem.errors import ConfigError, InvariantViolation
from hvmem.guest import access, fault, process, reclaim
from hvmem.guest.address_space import AddressSpace
from hvmem.guest.allocator import PageAllocator
from hvmem.guest.config import GuestConfig
from hvmem.guest.kernel_state import KernelState
from hvmem.guest.pages import PTE_SWAP, PageKind, pte_frames
from hvmem.guest.process import Process
from hvmem.guest.swap import SwapDevice
from hvmem.hardware.guest_memory import GuestPhysicalMemory
from hvmem.hardware.mmu import Mmu, TranslationPath
from hvmem.hardware.page_table import PTE_PRESENT, TableStore
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hardware.virtio_balloon import GuestMemoryStats
from hvmem.replacement.names import RECLAIM_POLICIES
from hvmem.replacement.policies import make_policy
from hvmem.workloads.base import AccessBatch, MemoryOp

#: VPNs below this fit the reverse map's int32 (``KernelState.vpn``).
NARROW_VPN_PAGES = 2**31


@dataclass(frozen=True, slots=True)
class AccessResult:
    """What serving one access batch cost and caused."""

    refs: int  # references served
    time_ns: float  # time charged beyond the references themselves
    minor_faults: int
    major_faults: int
    dropped: int  # entries dropped (invalid or out of memory)
    dropped_mask: np.ndarray | None = None  # per batch entry, whether it was dropped


class GuestKernel(KernelState):
    """One guest's kernel.

    Args:
        config: its settings.
        memory: the guest-physical memory bus (the hypervisor behind it).
        tables: the store holding its page tables (its guest-physical memory).
        rng: the random stream for the random reclaim policy.
        costs: the cost table.
        mmu: the vCPU's MMU when references go through it (mmu fidelity), for
            TLB shootdowns; None in page fidelity.
    """

    def __init__(self, config: GuestConfig, memory: GuestPhysicalMemory, tables: TableStore,
                 rng: np.random.Generator, costs: CostTable = DEFAULT_COSTS,
                 mmu: Mmu | None = None):
        n = config.memory_pages
        if memory.n_ppns != n or tables.n_frames != n:
            raise ConfigError("guest kernel: memory, tables and config disagree on the size")
        allocator = PageAllocator(n)
        swap = SwapDevice(n if config.swap_pages is None else config.swap_pages,
                          config.swap_device, costs)
        replacement = make_policy(config.reclaim_policy, n, rng,
                                  supported=RECLAIM_POLICIES, user="guest reclaim")
        min_pages, low_pages, high_pages = reclaim.linux_watermarks_pages(n)
        super().__init__(
            config=config, memory=memory, tables=tables, rng=rng, costs=costs, mmu=mmu,
            allocator=allocator, swap=swap, kind=np.zeros(n, dtype=np.uint8),
            proc=np.zeros(n, dtype=np.int16), vpn=np.zeros(n, dtype=np.int32),
            dirty=np.zeros(n, dtype=np.bool_), replacement=replacement,
            min_pages=min_pages, low_pages=low_pages, high_pages=high_pages,
        )
        # Their page tables take pages as they grow, which may make the guest reclaim.
        self.processes = [
            Process(i, AddressSpace(i + 1, tables, self._alloc_table_page))
            for i in range(config.n_processes)
        ]
        if config.kernel_pages:
            self._boot_kernel_memory(config.kernel_pages)

    def _boot_kernel_memory(self, n_pages: int) -> None:
        """Take and write the kernel's memory sized by configured memory (struct pages).

        It stays whatever the balloon takes later, so a guest ballooned down to
        N MiB has less left for its programs than one configured with N MiB
        [OSDI02 §3.2]. Its contents are this guest's own data: tokens keyed by a
        draw from the guest's stream, incompressible (size code 255).
        """
        n_pages = min(n_pages, self.allocator.n_free)
        ppns = self.allocator.alloc(n_pages)
        self.set_kind(ppns, PageKind.KERNEL)
        key = np.uint64(self.rng.integers(1, 1 << 62)) << np.uint64(8)
        tokens = (key ^ (ppns.astype(np.uint64) << np.uint64(9))) | np.uint64(0xFF)
        self.memory.write_pages(ppns, tokens)

    # -- allocation ------------------------------------------------------------------
    def _alloc_table_page(self) -> int:
        return reclaim.alloc_table_page(self)

    def alloc_pages(self, n: int, kind: PageKind, allow_reclaim: bool = True) -> np.ndarray:
        """Take ``n`` pages for ``kind``, reclaiming first if free pages run low.

        Returns fewer than ``n`` pages (possibly none) when memory cannot be found.
        """
        return reclaim.alloc_pages(self, n, kind, allow_reclaim)

    def free_pages(self, ppns: np.ndarray) -> None:
        """Return pages to the free list; they keep their contents (and host backing)."""
        reclaim.free_pages(self, ppns)

    # -- address spaces ----------------------------------------------------------------
    def apply_op(self, op: MemoryOp) -> None:
        """Carry out one ``mmap``/``munmap``."""
        if op.first_vpn + op.n_pages > NARROW_VPN_PAGES and self.vpn.dtype != np.int64:
            # The reverse map holds VPNs as int32 while every mapping lies below
            # 2**31 pages (8 TiB of address space), as all shipped workloads do; a
            # mapping above widens it, once, before any of its pages can be faulted in.
            self.vpn = self.vpn.astype(np.int64)
        process.apply_op(process.process_of(self.processes, op.process), op, self.swap,
                         self.mmu, self.free_pages)

    # -- accesses ----------------------------------------------------------------------
    def access(self, batch: AccessBatch, now_ns: int,
               walked: access.WalkedChunk | None = None) -> AccessResult:
        """Serve one tick's accesses (page fidelity): faults first, then the touches.

        ``walked``: what :meth:`walk_ahead` returned for this batch and time, if
        it ran (on another thread, before the kernel served anything else).
        """
        self.now_ns = now_ns
        c = self.counters
        before = (c.minor_faults, c.major_faults, c.time_ns)
        for op in batch.ops:
            self.apply_op(op)
        dropped_mask, served_refs = access.serve_pages(self, batch, walked)
        c.refs += served_refs
        return AccessResult(served_refs, c.time_ns - before[2], c.minor_faults - before[0],
                            c.major_faults - before[1], int(dropped_mask.sum()), dropped_mask)

    def walk_ahead(self, batch: AccessBatch, now_ns: int) -> access.WalkedChunk | None:
        """The guest-only first steps of :meth:`access` (``access.walk_ahead``)."""
        return access.walk_ahead(self, batch, now_ns)

    def access_mmu(self, batch: AccessBatch, now_ns: int, path: TranslationPath
                   ) -> AccessResult:
        """Serve one tick's references (mmu fidelity): each through the vCPU's MMU, in order.

        ``path`` is what stands behind the MMU (the hypervisor's side of
        translation). The kernel's ``mmu`` must be set: its TLB and walks are used.
        """
        mmu = self.mmu
        if mmu is None:
            raise ConfigError("guest kernel: mmu fidelity needs the vCPU's MMU")
        self.now_ns = now_ns
        c, m = self.counters, mmu.counters
        before = (c.minor_faults, c.major_faults, c.time_ns)
        mmu_before = (m.time_ns, m.refs)
        for op in batch.ops:
            self.apply_op(op)
        dropped, host_ns = access.serve_mmu(self, batch, path)
        served = int(batch.refs[~dropped].sum())
        c.refs += served
        # Translation beyond the TLB lookup every reference makes, exits included.
        c.time_ns += host_ns + (m.time_ns - mmu_before[0]) - (m.refs - mmu_before[1]) * (
            mmu.costs.tlb_hit_ns)
        return AccessResult(served, c.time_ns - before[2], c.minor_faults - before[0],
                            c.major_faults - before[1], int(dropped.sum()), dropped)

    def fault_in(self, proc: Process, vpns: np.ndarray) -> np.ndarray:
        """Handle faults on distinct ``vpns`` of ``proc``; returns the VPNs that failed."""
        return fault.fault_in(self, proc, vpns)

    # -- reclaim -----------------------------------------------------------------------
    def reclaim(self, n_pages: int) -> int:
        """Free up to ``n_pages`` by evicting process and cache pages; returns pages freed."""
        return reclaim.reclaim(self, n_pages)

    def _choose_victims(self, n_pages: int, evict_anon: bool) -> np.ndarray:
        return reclaim.choose_victims(self, n_pages, evict_anon)

    # -- reports -----------------------------------------------------------------------
    def count(self, kind: PageKind) -> int:
        """Pages of ``kind`` (kept at each change of kind, not counted)."""
        return int(self.kind_counts[kind])

    def stats(self) -> GuestMemoryStats:
        """What the guest would put on the balloon's stats queue."""
        free = self.allocator.n_free
        cached = self.count(PageKind.FILE)
        c = self.counters
        return GuestMemoryStats(
            free_pages=free, available_pages=free + cached, cached_pages=cached,
            total_pages=self.config.memory_pages, swap_ins=c.swap_ins, swap_outs=c.swap_outs,
            major_faults=c.major_faults, minor_faults=c.minor_faults,
        )

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` unless page kinds, lists and maps agree."""
        self.allocator.check_invariants()
        self.swap.check_invariants()
        free = self.kind == PageKind.FREE
        if not np.array_equal(free, ~self.allocator.allocated):
            raise InvariantViolation("guest: page kinds and the free list disagree")
        if not np.array_equal(self.kind == PageKind.TABLE, self.tables.is_table_frame):
            raise InvariantViolation("guest: page-table pages and page kinds disagree")
        in_use = (self.kind == PageKind.ANON) | (self.kind == PageKind.FILE)
        n_mapped = []
        for proc in self.processes:
            mapped = np.flatnonzero((self.proc == proc.index) & in_use)
            ptes = proc.space.page_table.leaf_entries(self.vpn[mapped].astype(np.int64))
            if np.any((ptes & PTE_PRESENT) == 0) or np.any(pte_frames(ptes) != mapped):
                raise InvariantViolation(f"guest: process {proc.index} reverse map is stale")
            n_mapped.append(mapped.size)
        # Every present entry is one the reverse map names (no page mapped twice or
        # mapped free), and every swap entry holds a slot of its own.
        slots = [np.zeros(0, dtype=np.int64)]
        for proc in self.processes:
            n_present = 0
            for start, end in zip(proc.vma_start.tolist(), proc.vma_end.tolist(), strict=True):
                ptes = proc.space.page_table.leaf_entries(np.arange(start, end))
                present = (ptes & PTE_PRESENT) != 0
                n_present += int(np.count_nonzero(present))
                slots.append(pte_frames(ptes[((ptes & PTE_SWAP) != 0) & ~present]))
            if n_present != n_mapped[proc.index]:
                raise InvariantViolation(f"guest: process {proc.index} has {n_present} pages "
                                         f"mapped, its reverse map names {n_mapped[proc.index]}")
        held = np.concatenate(slots)
        if held.size != self.swap.n_used:
            raise InvariantViolation(
                f"guest: {held.size} swap entries but {self.swap.n_used} slots in use"
            )
        recount = counts_of(self.kind, len(PageKind))
        if not np.array_equal(recount, self.kind_counts):
            raise InvariantViolation(f"guest: kept counts per page kind "
                                     f"{self.kind_counts.tolist()}, recounted {recount.tolist()}")
        if not np.array_equal(np.sort(held), np.flatnonzero(self.swap.used)):
            raise InvariantViolation("guest: swap entries and the slots in use disagree")
