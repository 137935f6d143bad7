r"""The host: machine memory and the VMs on it.

What is modelled
----------------
The host owns machine memory (``hardware/frames.py``: the frame table and its
free list), the table store its nested and shadow tables live in, its clock,
and the VMs it runs. Per VM it keeps a pmap and a paging mode (shadow or
nested) that keeps the hardware's view of the guest's translations coherent
with the guest's tables and the pmap. A VM gets no machine memory up front:
its first touch of each guest-physical page faults into the hypervisor
(``fault.py``).

What crosses VMs stays the host's, and a VM reaches it only through the
``HostServices`` the host hands it (``vm_state.py`` says why)::

    make_room     free frames short: swap out of the VM consuming the most
                  (reclaim/reclaimer.py) [OSDI02 §6.3]
    share         the host-wide page-sharing table; a promoted hint remaps a
                  page of whichever VM made it (reclaim/sharing.py) [OSDI02 §4.2]
    leave_shared  a shared frame's sharer leaves; the last one frees it
    large pages   the host's setting, and how the memory state breaks them
                  (large_pages.py) [KB1021095][YB-STATES6]

Host-wide passes over every VM run here: the sharing scanner
(:meth:`Host.scan_for_sharing`), the large-page breaking the memory state asks
for (:meth:`Host.break_large_pages_for_state`) and the invariants
(:meth:`Host.check_invariants`, ``invariants.py``).

The parts of the hypervisor, by module::

    host.py              this: machine memory, the VMs, host-wide passes
    vm_state.py, vm.py   one VM: its state and reach; the calls made on it
    fault.py             first touch, swap-in, decompression, copy-on-write, remap
    bus.py               the guest-physical memory bus and its kernels
    mmu_batch.py         a vCPU's references translated, exits served
    large_pages.py       2 MiB host pages: backing, breaking, giving back
    sampling.py          active-memory estimation and its traps
    invariants.py        every frame accounted for exactly once
    pmap.py, paging/     PPN -> backing; shadow and nested translation
    reclaim/             sharing, balloon, compression, swap, reclaimer

Time: the simulator sets ``now_ns``; each later time gets the next touch stamp
(``core/stamps.py``), which the VMs stamp touched pages with for LRU swap
selection.

References: [OSDI02 §2] (pmap, shadow page tables), [OSDI02 §7] (remapping);
the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from hvmem.core.stamps import StampClock
from hvmem.errors import ConfigError
from hvmem.hardware.frames import MAX_OWNERS, MachineMemory
from hvmem.hardware.page_table import TableStore
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hypervisor.invariants import check_invariants
from hvmem.hypervisor.large_pages import LARGE_PAGE_BREAKING, break_actively
from hvmem.hypervisor.paging.nested import NestedPaging
from hvmem.hypervisor.paging.shadow import ShadowPaging
from hvmem.hypervisor.pmap import Pmap
from hvmem.hypervisor.reclaim.aside import AsideStore
from hvmem.hypervisor.reclaim.compression import ZIP_MAX_FRAC, CompressionCache
from hvmem.hypervisor.reclaim.reclaimer import hold_to_cap, make_room
from hvmem.hypervisor.reclaim.sharing import (
    SALTING_MODES,
    SharingTable,
    leave_shared,
    scan_vms,
    share_scan,
)
from hvmem.hypervisor.reclaim.swap import HostSwapFile
from hvmem.hypervisor.vm import HostVm
from hvmem.hypervisor.vm_state import HostServices, PagingMode, VmState

PagingName = Literal["shadow", "nested"]
PAGING_MODES = ("shadow", "nested")


class Host:
    """Machine memory and the VMs running on it.

    Args:
        memory_pages: machine memory in 4 KiB frames.
        paging: "shadow" or "nested".
        costs: the cost table.
        swap_device: device of the host swap files.
        salting: page-sharing salting mode.
        large_pages: back guest memory with 2 MiB host pages where a whole
            region is touched first (nested paging only, as ESX [KB1021095]).
        compression_max_frac: each VM's compression cache at most this share of
            its memory (``Mem.MemZipMaxPct`` [LAMW]).
    """

    def __init__(self, memory_pages: int, paging: PagingName = "nested",
                 costs: CostTable = DEFAULT_COSTS, swap_device: str = "ssd",
                 salting: str = "within", large_pages: bool = False,
                 compression_max_frac: float = ZIP_MAX_FRAC):
        if paging not in PAGING_MODES:
            raise ConfigError(f"paging: expected shadow or nested, found {paging!r}")
        if large_pages and paging != "nested":
            raise ConfigError("large pages: ESX backs guests with 2 MiB pages only under "
                              "nested paging; shadow paging backs with 4 KiB pages")
        self.paging = paging
        # What the VMs may ask of the host; it also holds the large-page settings.
        self.services = HostServices(make_room=self.make_room, share=self._share,
                                     leave_shared=self._leave_shared,
                                     hold_to_cap=self.hold_to_cap, large_pages=large_pages)
        # How the host picks pages to swap ([host] swap_selection): random, as ESX.
        # Set through the property, which keeps touch stamps only for LRU; a host
        # built here keeps them until told its selection, so any may be asked for.
        self._swap_selection = "random"
        self.costs = costs
        self.frames = MachineMemory(memory_pages)
        self.tables = TableStore(memory_pages, "machine")  # nested and shadow tables
        self.vms: list[HostVm] = []
        self.swap_device = swap_device
        self.compression_max_frac = compression_max_frac
        # Time, set by whoever drives it (the simulator); stamp 0 means "never touched".
        self.clock = StampClock("host", first_stamp=1)
        self._emergency_rng = np.random.default_rng(0x5EED)
        self._cap_rng = np.random.default_rng(0xCA95)
        # A slot per frame, as ESX's table has a record per frame [OSDI02 §4.3]: the
        # stale hints are cleared when half the slots are taken (SharingTable.reserve).
        self.sharing = SharingTable(max(1 << 16, 1 << (memory_pages - 1).bit_length()),
                                    memory_pages)
        if salting not in SALTING_MODES:
            raise ConfigError(f"sharing salting: expected {', '.join(SALTING_MODES)}, "
                              f"found {salting!r}")
        self.salting = salting
        self.explicit_salts: dict[int, int] = {}  # vm id -> configured salt ("explicit")

    @property
    def large_pages(self) -> bool:
        """Whether first touches of wholly unbacked 2 MiB regions get large pages."""
        return self.services.large_pages

    @large_pages.setter
    def large_pages(self, value: bool) -> None:
        self.services.large_pages = value

    @property
    def large_page_breaking(self) -> str:
        """How large pages are broken now: set by the memory state (LARGE_PAGE_BREAKING)."""
        return self.services.large_page_breaking

    @large_page_breaking.setter
    def large_page_breaking(self, value: str) -> None:
        self.services.large_page_breaking = value

    @property
    def swap_selection(self) -> str:
        """How the host picks pages to swap: "random" (as ESX) or "lru"."""
        return self._swap_selection

    @swap_selection.setter
    def swap_selection(self, value: str) -> None:
        # Only LRU reads the touch stamps: under any other selection the VMs stop
        # writing them (the stamp store was a scattered write per touched page).
        self._swap_selection = value
        self.services.touch_stamps = value == "lru"

    @property
    def now_ns(self) -> int:
        """Simulated time, set by whoever drives it (the simulator); it never goes back.

        Each later time gets the next ``touch_stamp``: pages are stamped with
        it when touched, so LRU order by stamp is order by time, in an int32
        per page instead of nanoseconds in an int64 (see ``core/stamps.py``).
        """
        return self.clock.now_ns

    @now_ns.setter
    def now_ns(self, value: int) -> None:
        self.clock.advance(value)

    @property
    def touch_stamp(self) -> int:
        """The stamp of ``now_ns``."""
        return self.clock.stamp

    def add_vm(self, name: str, n_ppns: int, guest_tables: TableStore) -> HostVm:
        """Power on a VM of ``n_ppns`` pages; it consumes nothing until it touches memory."""
        if n_ppns >= 2**31:  # the frame table's reverse map holds PPNs in int32
            raise ConfigError(f"{name}: {n_ppns} pages is more than a VM may have (8 TiB)")
        vm_id = len(self.vms)
        if vm_id >= MAX_OWNERS:  # frame owners are int16
            raise ConfigError(f"{name}: a host runs at most {MAX_OWNERS} VMs")
        pmap = Pmap(n_ppns, self.frames.n_frames)
        mode: PagingMode
        if self.paging == "nested":
            mode = NestedPaging(vm_id, self.frames, self.tables, guest_tables, pmap)
        else:
            mode = ShadowPaging(vm_id, self.frames, self.tables, guest_tables, pmap, self.costs)
        # The data of pages put aside: a page is swapped or compressed, never both.
        aside = AsideStore(n_ppns)
        vm = HostVm(vm_id, name, n_ppns, pmap, guest_tables, mode, self.frames, self.costs,
                    self.clock, self.services,
                    HostSwapFile(n_ppns, self.swap_device, self.costs, store=aside),
                    CompressionCache(n_ppns, self.compression_max_frac, store=aside))
        self.vms.append(vm)
        return vm

    def scan_for_sharing(self, elapsed_ns: int, rng: np.random.Generator,
                         rate_pages_per_s: float | None = None,
                         total_pages_per_s: float | None = None) -> int:
        """Run the page-sharing scanner for ``elapsed_ns``: random pages of every VM.

        Each VM is scanned at ``rate_pages_per_s`` (by default a whole VM per
        Mem.ShareScanTime, capped at Mem.ShareRateMax), the host at most at
        ``total_pages_per_s`` in all (Mem.ShareScanTotal). Returns frames freed.
        """
        return scan_vms(self.vms, elapsed_ns, rng, rate_pages_per_s, total_pages_per_s)

    def break_large_pages_for_state(self, breaking: str, elapsed_ns: int,
                                    rng: np.random.Generator, share: bool = True) -> int:
        """Break large pages as the host memory state asks; returns how many were broken.

        ``breaking`` is "off", "lazy" (ESXi 6 below the HIGH threshold: the
        scanner breaks the large pages it visits, at its next run) or "active"
        (CLEAR and below: besides, up to ``LARGE_PAGE_BREAKS_PER_S`` random large
        pages per VM and second are broken now and their pages offered to
        sharing at once when ``share``) [YB-STATES6][YB-LP6].
        """
        if breaking not in LARGE_PAGE_BREAKING:
            raise ConfigError(f"large page breaking: expected {', '.join(LARGE_PAGE_BREAKING)},"
                              f" found {breaking!r}")
        self.services.large_page_breaking = breaking
        if breaking != "active":
            return 0
        return break_actively(self.vms, elapsed_ns, rng, share)

    def make_room(self, n_frames: int, requester: VmState | None = None,
                  busy_ppns: np.ndarray | None = None) -> None:
        """Make sure ``n_frames`` (plus slack for table pages) are free, swapping if not.

        When a VM touches memory and the free list is empty, the hypervisor
        cannot wait for a balance period: it swaps pages out on the spot, from
        the VM consuming the most, never the pages being served right now. This
        is the synchronous path behind ESX's LOW state [OSDI02 §6.3]; it costs
        the VMs whose pages go, and is counted as ``emergency_swaps``.
        """
        make_room(self.vms, self.frames, self._emergency_rng, n_frames, requester, busy_ppns)

    def hold_to_cap(self, vm: VmState, n_frames: int, busy_ppns: np.ndarray | None = None
                    ) -> None:
        """Keep ``vm`` within its limit as it backs ``n_frames`` more: swap its own pages.

        ESX never gives a VM more machine memory than its limit [VS-ALLOC]; a
        VM at its limit that touches a page without a frame gives one of its
        own for it, chosen by the host's swap selection (random, as ESX's
        swapper [OSDI02 §3.3]), never the pages being served. Counted as
        ``limit_swaps``; the swap-in that follows is the VM's stall.
        """
        hold_to_cap(vm, n_frames, self.swap_selection, self._cap_rng, busy_ppns)

    def _share(self, vm: VmState, ppns: np.ndarray) -> int:
        """Offer ``vm``'s distinct ``ppns`` to the host-wide sharing table; returns frames freed."""
        return share_scan(vm, ppns, self.sharing, self.salt_of(vm.vm_id), self.salts, self.vms)

    def _leave_shared(self, vm: VmState, shared_mpns: np.ndarray, copied: bool) -> None:
        """``vm``'s pages left ``shared_mpns`` (``copied``: by copy-on-write)."""
        leave_shared(self.sharing, self.frames, self.salt_of(vm.vm_id), shared_mpns, copied)

    def salts(self) -> np.ndarray:
        """Every VM's sharing salt, indexed by VM id."""
        return np.array([self.salt_of(vm.vm_id) for vm in self.vms], dtype=np.int64)

    def salt_of(self, vm_id: int) -> int:
        """The sharing salt of a VM under the host's salting mode."""
        if self.salting == "across":
            return 0
        if self.salting == "within":
            return vm_id + 1
        return self.explicit_salts.get(vm_id, 0)

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` unless every frame is accounted for exactly once."""
        check_invariants(self.frames, self.vms, self.sharing)
