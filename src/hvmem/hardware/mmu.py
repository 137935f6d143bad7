"""The MMU of one virtual CPU: TLB first, page walk on a miss, costs on the side.

What is modelled
----------------
Per vCPU the MMU holds a TLB and a page-walk cache and the current address
space (ASID and the root the hardware walks). A guest changes its address space
by loading CR3 and maintains the TLB with INVLPG and flushes. Under shadow
paging the hypervisor *intercepts* those operations (the VMCS exiting controls):
it must load its own shadow root instead of the guest's and keep shadow tables
coherent. Under nested paging they run natively. The interception is a hook the
hypervisor installs (:class:`MmuIntercepts`); each intercepted operation is a VM
exit, counted and charged.

Memory references are translated in batches by kernels of the paging mode in
use (``hypervisor/paging``), which combine the Numba helpers of ``tlb.py`` and
``walker.py``. A kernel returns counts, not times: :meth:`Mmu.charge` turns the
counts into nanoseconds with the :class:`~hvmem.hardware.timing.CostTable`.

Kernel counters (``COUNTERS`` columns, all event counts):
``refs`` references translated; ``tlb_hits``; ``tlb_misses``; ``walks`` page walks
started; ``walk_refs`` memory references made by walks; ``hidden_faults`` shadow
fills done by the hypervisor; ``ad_updates`` guest A/D bits set in software.

References: Intel SDM Vol. 3C ch. 24-25 (VMCS exiting controls: CR3-load
exiting, INVLPG exiting); gem5 ``arch/generic/mmu.hh`` (translate returns a fault).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hardware.tlb import Tlb
from hvmem.hardware.walker import FaultKind, PageWalkCache

# Columns of the counters array a translation kernel fills.
C_REFS, C_TLB_HITS, C_TLB_MISSES, C_WALKS, C_WALK_REFS, C_HIDDEN_FAULTS, C_AD_UPDATES = range(7)
N_COUNTERS = 7
COUNTER_NAMES = ("refs", "tlb_hits", "tlb_misses", "walks", "walk_refs", "hidden_faults",
                 "ad_updates")

# Kinds of recorded events beyond walk steps (see walker.KIND_*).
KIND_TLB_HIT = 2  # frame column: the MPN found
KIND_TLB_MISS = 3
KIND_SHADOW_FILL = 4  # frame: MPN written into the shadow leaf; index: the PPN
KIND_FAULT = 5  # index: FaultKind; frame: the PPN concerned, or -1


def new_counters() -> np.ndarray:
    """A zeroed counters array for one kernel call."""
    return np.zeros(N_COUNTERS, dtype=np.int64)


class MmuIntercepts(Protocol):
    """What a hypervisor doing shadow paging does when the guest touches the MMU."""

    def on_cr3_load(self, asid: int, guest_root_ppn: int) -> int:
        """The guest loads CR3; returns the root the hardware must walk instead."""
        ...

    def on_invlpg(self, asid: int, vpn: int) -> None:
        """The guest invalidates one page's translation."""
        ...

    def on_flush(self, asid: int) -> None:
        """The guest flushes its TLB (a CR3 reload without PCID no-flush)."""
        ...


@dataclass(slots=True)
class MmuCounters:
    """Event tallies of one MMU, plus the time they cost."""

    refs: int = 0  # references translated
    tlb_hits: int = 0  # references served by the TLB
    tlb_misses: int = 0  # references that needed a walk
    walks: int = 0  # page walks started (retries after a fault count again)
    walk_refs: int = 0  # memory references made by page walks
    hidden_faults: int = 0  # shadow paging: exits to fill a missing shadow entry
    ad_updates: int = 0  # shadow paging: guest A/D bits set by the hypervisor
    cr3_loads: int = 0  # CR3 loads by the guest
    invlpgs: int = 0  # INVLPG by the guest
    flushes: int = 0  # TLB flushes by the guest
    exits: int = 0  # VM exits caused by intercepted MMU operations
    time_ns: float = 0.0  # translation time charged so far

    def add_kernel(self, counts: np.ndarray) -> None:
        """Add a kernel's counters array to the tallies."""
        for name, value in zip(COUNTER_NAMES, counts, strict=True):
            setattr(self, name, getattr(self, name) + int(value))


class Mmu:
    """The MMU of one vCPU of one VM.

    Args:
        vm_id: the VM's tag in TLB entries (VPID).
        tlb: the TLB; a 64-entry 4-way one by default.
        pwc: the page-walk cache; ``None`` for none.
        costs: the cost table.
    """

    def __init__(
        self,
        vm_id: int,
        tlb: Tlb | None = None,
        pwc: PageWalkCache | None = None,
        costs: CostTable = DEFAULT_COSTS,
    ):
        self.vm_id = vm_id
        self.tlb = tlb if tlb is not None else Tlb(64, 4)
        self.pwc = pwc if pwc is not None else PageWalkCache(0)
        self.costs = costs
        self.counters = MmuCounters()
        self.intercepts: MmuIntercepts | None = None
        self.asid = 0
        self.guest_root = -1  # the CR3 value the guest loaded (a PPN under virtualization)
        self.hw_root = -1  # the root the hardware walks (a shadow root under shadow paging)
        self._reported = MmuCounters()  # the tallies at the last rate_columns call

    # -- guest-visible operations ----------------------------------------------
    def load_cr3(self, asid: int, root: int) -> None:
        """The guest switches address space (PCID-tagged: no flush is implied)."""
        self.counters.cr3_loads += 1
        self.asid, self.guest_root = asid, root
        if self.intercepts is not None:
            self._exit(self.costs.cr3_switch_ns)
            self.hw_root = self.intercepts.on_cr3_load(asid, root)
        else:
            self.hw_root = root

    def invlpg(self, vpn: int) -> None:
        """The guest drops one page's translation of the current address space."""
        self.counters.invlpgs += 1
        if self.intercepts is not None:
            self._exit(self.costs.tlb_flush_exit_ns)
            self.intercepts.on_invlpg(self.asid, vpn)
        self.tlb.invalidate(self.vm_id, self.asid, vpn)
        self.pwc.flush_asid(self.vm_id, self.asid)

    def flush(self) -> None:
        """The guest flushes the current address space's translations."""
        self.counters.flushes += 1
        if self.intercepts is not None:
            self._exit(self.costs.tlb_flush_exit_ns)
            self.intercepts.on_flush(self.asid)
        self.tlb.flush_asid(self.vm_id, self.asid)
        self.pwc.flush_asid(self.vm_id, self.asid)

    def _exit(self, cost_ns: float) -> None:
        self.counters.exits += 1
        self.counters.time_ns += cost_ns

    # -- accounting ----------------------------------------------------------------
    def rate_columns(self, interval_s: float) -> dict[str, float]:
        """Per-second rates since the previous call, as result-row columns.

        ``TLBMISS/s`` TLB misses, ``WALKREF/s`` page-walk memory references,
        ``HIDFLT/s`` shadow hidden faults (0 under nested paging).
        """
        now, last = self.counters, self._reported
        self._reported = replace(now)
        per_s = 1.0 / interval_s if interval_s > 0 else 0.0
        return {
            "TLBMISS/s": (now.tlb_misses - last.tlb_misses) * per_s,
            "WALKREF/s": (now.walk_refs - last.walk_refs) * per_s,
            "HIDFLT/s": (now.hidden_faults - last.hidden_faults) * per_s,
        }

    def charge(self, counts: np.ndarray) -> float:
        """Add a kernel's counters and return the time they cost, in ns."""
        c = self.costs
        time_ns = (
            counts[C_REFS] * c.tlb_hit_ns
            + counts[C_WALK_REFS] * c.walk_ref_ns
            + counts[C_HIDDEN_FAULTS] * c.hidden_fault_ns
        )
        self.counters.add_kernel(counts)
        self.counters.time_ns += float(time_ns)
        return float(time_ns)


@dataclass(frozen=True, slots=True)
class Fault:
    """A translation that stopped: what went wrong, where, for which page."""

    kind: FaultKind
    index: int  # position in the batch of the reference that faulted
    vpn: int  # the guest-virtual page
    ppn: int  # the guest-physical page concerned, or -1 when not known


class TranslationPath(Protocol):
    """What stands behind a vCPU's MMU: the hypervisor's side of translation.

    It runs references through the MMU, serves the faults that are its own
    (backing missing, copy-on-write, sampling traps, shadow fills) and retries
    them, stores what writes carry into machine memory, and stops at the first
    fault the guest must take.
    """

    def translate(self, mmu: Mmu, vpns: np.ndarray, is_write: np.ndarray | None = None,
                  steps: np.ndarray | None = None, events: list | None = None,
                  tokens: np.ndarray | None = None) -> TranslationBatch:
        """Translate ``vpns`` of the loaded address space until done or a guest fault."""
        ...


@dataclass(frozen=True, slots=True)
class TranslationBatch:
    """Result of translating a batch of references of one address space.

    ``mpns[:done]`` hold the machine frames of the references translated; if
    ``fault`` is set, reference ``done`` stopped with it and the rest were not run.
    """

    mpns: np.ndarray
    done: int
    fault: Fault | None
    time_ns: float
    n_steps: int = 0  # walk steps recorded, when recording was asked for
