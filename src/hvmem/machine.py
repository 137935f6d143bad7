"""The translation machine: a host, its VMs, their guest processes, wired together.

This is the composition root of address translation (the full simulation adds
workloads, reclamation and the memory scheduler on top). It connects the pieces
the way the real ones connect:

* each VM has a guest page allocator, a guest-physical table store, guest
  processes with address spaces, and one vCPU MMU;
* the host gives each VM a pmap and a paging mode (shadow or nested);
* a guest writing a fresh page-table page touches that guest-physical page, so
  it is backed by the host on that first touch like any other page.

:meth:`Machine.explain` translates one guest-virtual address step by step, which
is what ``hvmem translate`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hvmem.errors import ConfigError
from hvmem.guest.address_space import AddressSpace
from hvmem.guest.allocator import PageAllocator
from hvmem.hardware.mmu import (
    KIND_FAULT,
    KIND_SHADOW_FILL,
    KIND_TLB_HIT,
    KIND_TLB_MISS,
    Mmu,
    TranslationBatch,
)
from hvmem.hardware.page_table import LEVEL_NAMES, TableStore, describe_pte
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hardware.tlb import Tlb
from hvmem.hardware.walker import (
    DIM_NESTED,
    KIND_PWC_HIT,
    KIND_READ,
    STEP_DIM,
    STEP_FRAME,
    STEP_INDEX,
    STEP_KIND,
    STEP_LEVEL,
    STEP_PTE,
    FaultKind,
    PageWalkCache,
    new_steps,
)
from hvmem.hypervisor.host import PAGING_MODES, Host
from hvmem.hypervisor.vm import HostVm
from hvmem.units import MIB, PAGE_SHIFT, PAGE_SIZE_BYTES


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """Shape of a translation machine."""

    host_memory_bytes: int = 64 * MIB  # machine memory
    paging: str = "nested"  # "shadow" or "nested"
    tlb_entries: int = 64  # per vCPU
    tlb_ways: int = 4  # TLB associativity
    pwc_entries: int = 0  # page-walk cache entries per vCPU (0: none)
    salting: str = "within"  # page-sharing salting: across, within or explicit
    costs: CostTable = DEFAULT_COSTS

    def __post_init__(self) -> None:
        if self.paging not in PAGING_MODES:
            raise ConfigError(f"paging: expected shadow or nested, found {self.paging!r}")
        if self.host_memory_bytes < PAGE_SIZE_BYTES:
            raise ConfigError("host memory: must hold at least one 4 KiB page")


@dataclass
class MachineVm:
    """One VM as the translation machine sees it: guest side, host side, vCPU."""

    name: str
    allocator: PageAllocator
    tables: TableStore
    host_vm: HostVm
    mmu: Mmu
    processes: dict[int, AddressSpace] = field(default_factory=dict)


class Machine:
    """A host with VMs and guest processes, for translating guest-virtual addresses.

    Args:
        config: the machine's shape.
    """

    def __init__(self, config: MachineConfig = MachineConfig()):
        self.config = config
        self.host = Host(config.host_memory_bytes >> PAGE_SHIFT, config.paging, config.costs,
                         salting=config.salting)
        self.vms: dict[str, MachineVm] = {}

    def add_vm(self, name: str, memory_bytes: int) -> MachineVm:
        """Power on a VM with ``memory_bytes`` of guest-physical memory."""
        if name in self.vms:
            raise ConfigError(f"vm {name!r} exists already")
        n_ppns = memory_bytes >> PAGE_SHIFT
        if n_ppns <= 0:
            raise ConfigError(f"vm {name!r}: memory must hold at least one 4 KiB page")
        tables = TableStore(n_ppns, f"{name} guest-physical")
        host_vm = self.host.add_vm(name, n_ppns, tables)
        cfg = self.config
        mmu = Mmu(host_vm.vm_id, Tlb(cfg.tlb_entries, cfg.tlb_ways, f"{name} tlb"),
                  PageWalkCache(cfg.pwc_entries), cfg.costs)
        host_vm.paging.attach(mmu)
        vm = MachineVm(name, PageAllocator(n_ppns), tables, host_vm, mmu)
        self.vms[name] = vm
        return vm

    def vm(self, name: str) -> MachineVm:
        """The VM called ``name``."""
        try:
            return self.vms[name]
        except KeyError:
            raise ConfigError(f"no vm {name!r} (have: {', '.join(self.vms)})") from None

    def add_process(self, vm_name: str, asid: int) -> AddressSpace:
        """Create a guest process (an address space tagged ``asid``) in a VM."""
        vm = self.vm(vm_name)
        if asid in vm.processes:
            raise ConfigError(f"{vm_name}: asid {asid} is taken")
        if not 0 < asid < 4095:
            raise ConfigError(f"{vm_name}: asid must be in 1..4094, found {asid}")

        def alloc_table_ppn() -> int:
            ppn = vm.allocator.alloc_one()
            # The guest zeroes the new table page: its first touch.
            vm.host_vm.back_pages(np.array([ppn]))
            return ppn

        space = AddressSpace(asid, vm.tables, alloc_table_ppn)
        vm.processes[asid] = space
        return space

    def guest_map(self, vm_name: str, asid: int, first_vpn: int, n_pages: int,
                  writable: bool = True) -> np.ndarray:
        """The guest allocates ``n_pages`` guest-physical pages and maps them at ``first_vpn``.

        Returns:
            The PPNs mapped. The host backs none of them until they are touched.
        """
        vm = self.vm(vm_name)
        space = self._process(vm, asid)
        if n_pages <= 0:
            raise ConfigError(f"{vm_name}: a region needs at least one page")
        vpns = np.arange(first_vpn, first_vpn + n_pages, dtype=np.int64)
        if first_vpn < 0 or first_vpn + n_pages > (1 << 36):
            raise ConfigError(f"{vm_name}: region at vpn {first_vpn:#x} leaves the 48-bit space")
        taken = np.flatnonzero(space.page_table.lookup_many(vpns) != 0)
        if taken.size:
            gva = int(vpns[taken[0]]) << PAGE_SHIFT
            raise ConfigError(f"{vm_name}: asid {asid}: {gva:#x} is mapped already")
        if n_pages > vm.allocator.n_free:
            raise ConfigError(
                f"{vm_name}: {n_pages} pages asked, the guest has {vm.allocator.n_free} free"
            )
        ppns = vm.allocator.alloc(n_pages)
        space.map(vpns, ppns, writable)
        return ppns

    def guest_unmap(self, vm_name: str, asid: int, first_vpn: int, n_pages: int) -> np.ndarray:
        """The guest unmaps ``n_pages`` at ``first_vpn`` and frees their guest-physical pages.

        The freed pages keep their machine backing: the guest reusing them later
        costs the host nothing new. Returns the PPNs freed.
        """
        vm = self.vm(vm_name)
        space = self._process(vm, asid)
        self.switch_to(vm_name, asid)
        vpns = np.arange(first_vpn, first_vpn + n_pages, dtype=np.int64)
        ppns = space.unmap(vpns, vm.mmu)
        ppns = ppns[ppns >= 0]
        if ppns.size:
            vm.allocator.free(ppns)
        return ppns

    def _process(self, vm: MachineVm, asid: int) -> AddressSpace:
        try:
            return vm.processes[asid]
        except KeyError:
            have = ", ".join(str(a) for a in vm.processes) or "none"
            raise ConfigError(f"{vm.name}: no process with asid {asid} (have: {have})") from None

    def switch_to(self, vm_name: str, asid: int) -> None:
        """Run process ``asid`` on the VM's vCPU (the guest loads CR3 if needed)."""
        vm = self.vm(vm_name)
        space = self._process(vm, asid)
        if vm.mmu.asid != asid or vm.mmu.hw_root < 0:
            vm.mmu.load_cr3(asid, space.root_ppn)

    def access(self, vm_name: str, asid: int, vpns: np.ndarray,
               is_write: np.ndarray | None = None) -> TranslationBatch:
        """Translate a batch of references of one process (faults the guest must take stop it)."""
        self.switch_to(vm_name, asid)
        vm = self.vm(vm_name)
        return vm.host_vm.translate(vm.mmu, vpns, is_write)

    def explain(self, vm_name: str, asid: int, gva: int, is_write: bool = False) -> dict:
        """Translate one guest-virtual address and report every step, as a plain dict."""
        if not 0 <= gva < (1 << 48):
            raise ConfigError(f"address {gva:#x} is outside the 48-bit guest-virtual space")
        self.switch_to(vm_name, asid)
        vm = self.vm(vm_name)
        vpn, offset = gva >> PAGE_SHIFT, gva & (PAGE_SIZE_BYTES - 1)
        steps = new_steps()
        events: list = []
        batch = vm.host_vm.translate(vm.mmu, np.array([vpn]), np.array([is_write]), steps,
                                     events)
        costs = self.config.costs
        report_steps = []
        event_at = {e[3]: e for e in events}
        for k in range(min(batch.n_steps, steps.shape[0])):
            report_steps.extend(_describe_step(steps[k], costs, self.config.paging))
            if k + 1 in event_at:
                _, ppn, mpn, _ = event_at[k + 1]
                report_steps.append({
                    "event": "hypervisor fault: first touch",
                    "detail": f"ppn {ppn:#x} had no machine page; backed by mpn {mpn:#x}",
                    "cost_ns": costs.hypervisor_fault_ns,
                })
        result: dict = {
            "vm": vm_name,
            "asid": asid,
            "paging": self.config.paging,
            "gva": f"{gva:#x}",
            "vpn": f"{vpn:#x}",
            "access": "write" if is_write else "read",
            "steps": report_steps,
            "cost_ns": batch.time_ns,
        }
        if batch.fault is not None:
            result["fault"] = batch.fault.kind.name
            result["fault_meaning"] = _FAULT_MEANING[batch.fault.kind]
            return result
        space = vm.processes[asid]
        ppn = space.lookup_ppn(vpn)
        mpn = int(batch.mpns[0])
        result.update({
            "gpa": f"{(ppn << PAGE_SHIFT) | offset:#x}",
            "ppn": f"{ppn:#x}",
            "mpn": f"{mpn:#x}",
            "hpa": f"{(mpn << PAGE_SHIFT) | offset:#x}",
            "walk_refs": sum(1 for s in report_steps if s.get("event") == "read"),
        })
        return result


_FAULT_MEANING = {
    FaultKind.GUEST_NOT_PRESENT: "the guest's page table maps nothing here: a guest page fault",
    FaultKind.GUEST_PROTECTION: "the guest's page table forbids this write: a guest page fault",
    FaultKind.BACKING_READ_ONLY: "the backing page is read-only (copy-on-write)",
    FaultKind.BACKING_MISSING: "the guest-physical page has no machine page",
    FaultKind.NOT_PRESENT: "no translation",
    FaultKind.PROTECTION: "write to a read-only translation",
    FaultKind.NEEDS_TABLE: "shadow table pages needed",
    FaultKind.NONE: "",
}


def _describe_step(step: np.ndarray, costs: CostTable, paging: str) -> list[dict]:
    kind = int(step[STEP_KIND])
    frame = int(step[STEP_FRAME])
    if kind == KIND_TLB_HIT:
        return [{"event": "TLB hit", "detail": f"mpn {frame:#x}", "cost_ns": costs.tlb_hit_ns}]
    if kind == KIND_TLB_MISS:
        return [{"event": "TLB miss", "detail": "walk the tables", "cost_ns": costs.tlb_hit_ns}]
    if kind == KIND_SHADOW_FILL:
        return [{
            "event": "hidden fault: shadow fill",
            "detail": (f"guest maps ppn {int(step[STEP_INDEX]):#x}, pmap gives mpn {frame:#x}; "
                       f"shadow entry {describe_pte(int(step[STEP_PTE]))}; restart"),
            "cost_ns": costs.hidden_fault_ns,
        }]
    if kind == KIND_FAULT:
        fault = FaultKind(int(step[STEP_INDEX]))
        where = f" (ppn {frame:#x})" if frame >= 0 else ""
        return [{"event": f"fault: {fault.name}", "detail": _FAULT_MEANING[fault] + where,
                 "cost_ns": 0.0}]
    if int(step[STEP_DIM]) == DIM_NESTED:
        dim, space = "nested", "mpn"
    elif paging == "shadow":
        dim, space = "shadow", "mpn"  # the hardware walks the shadow table in machine memory
    else:
        dim, space = "guest", "ppn"  # the guest's table, in guest-physical pages
    level = LEVEL_NAMES[int(step[STEP_LEVEL])]
    if kind == KIND_PWC_HIT:
        return [{"event": "PWC hit", "table": dim, "level": level,
                 "detail": f"next table at {space} {frame:#x}", "cost_ns": 0.0}]
    assert kind == KIND_READ
    pte = int(step[STEP_PTE]) & ((1 << 64) - 1)
    return [{
        "event": "read",
        "table": dim,
        "level": level,
        "detail": f"{space} {frame:#x}[{int(step[STEP_INDEX])}] = {describe_pte(pte)}",
        "cost_ns": costs.walk_ref_ns,
    }]


#: The built-in small machine: one VM with two processes, a few regions each.
BUILTIN_REGIONS = (
    # (asid, name, first gva, pages, writable)
    (1, "init: code", 0x0000_0040_0000, 8, False),
    (1, "init: heap", 0x0000_1000_0000, 32, True),
    (1, "init: stack", 0x7FFF_FFFD_E000, 4, True),
    (2, "app: code", 0x0000_0040_0000, 8, False),
    (2, "app: data", 0x0000_5555_0000, 64, True),
)


def builtin_machine(paging: str = "nested", pwc_entries: int = 0) -> Machine:
    """A 64 MiB host with one 16 MiB VM, ``vm0``, running two processes (ASIDs 1 and 2)."""
    machine = Machine(MachineConfig(paging=paging, pwc_entries=pwc_entries))
    machine.add_vm("vm0", 16 * MIB)
    for asid in (1, 2):
        machine.add_process("vm0", asid)
    for asid, _, gva, pages, writable in BUILTIN_REGIONS:
        machine.guest_map("vm0", asid, gva >> PAGE_SHIFT, pages, writable)
    return machine
