"""The cost table: what each hardware and software event costs, in nanoseconds.

Function and cost are kept apart (gem5's atomic versus timing split): the MMU,
the hypervisor and the guest decide *what* happens and count events; this table
turns counts into time, so one model can be re-costed without being re-run in
another way. Every cost is declared with its source (:mod:`hvmem.params`); where
no published figure fits, the value is marked *assumed*, and a scenario may
override any field in its ``[timing]`` table (a number of ns or a time).

Sources
-------
[SDM]        Intel 64 and IA-32 Architectures SDM Vol. 3A, §4.10 (TLBs and paging-structure caches).
[BHARGAVA08] Bhargava et al., "Accelerating Two-Dimensional Page Walks for Virtualized
             Systems", ASPLOS 2008: up to 24 references per 2-D walk; walk references are
             ordinary cacheable loads, so most hit in the data caches.
[INTEL09]    Intel Developer Zone, "Virtualization and Performance: Understanding VM
             Exits" (2009): a VM exit and entry cost "hundreds or thousands of cycles".
[ADAMS06]    Adams and Agesen, "A Comparison of Software and Hardware Techniques for x86
             Virtualization", ASPLOS 2006: shadow paging pays for hidden page faults,
             traced page-table writes and context switches (CR3 writes) with exits.
[OSDI02]     Waldspurger, "Memory Resource Management in VMware ESX Server", OSDI 2002.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from hvmem.errors import ConfigError
from hvmem.params import check, cost

#: Largest cost a scenario may set: 10 s, beyond any device or exit (a 7200 rpm disk
#: seek is 8 ms); a larger one is a unit mistake.
MAX_COST_NS = 10.0 * 1e9


@dataclass(frozen=True, slots=True)
class CostTable:
    """Per-event costs in nanoseconds. Defaults assume a ~2.5 GHz x86-64 server core."""

    # -- translation ----------------------------------------------------------
    # Every reference pays it, as part of the work itself: a run's stall and
    # throughput leave it out; `hvmem translate` shows it in a walk's cost.
    tlb_hit_ns: float = cost(1.0, "a TLB lookup, overlapped with the L1 access (~2 cycles); "
                             "part of every reference, not counted as stall",
                             hi=MAX_COST_NS, source="[SDM]; assumed")
    # An entry found in the page-walk cache costs nothing beyond the TLB lookup.
    walk_ref_ns: float = cost(20.0, "one page-walk memory reference, mostly a cache hit",
                              hi=MAX_COST_NS, source="[BHARGAVA08]; assumed")
    # -- virtualization exits --------------------------------------------------
    vmexit_ns: float = cost(500.0, "one VM exit plus re-entry (~1250 cycles)",
                            hi=MAX_COST_NS, source="[INTEL09]")
    hidden_fault_ns: float = cost(1500.0, "shadow paging: a hidden fault (exit, software walk, "
                                  "shadow fill)", hi=MAX_COST_NS, source="[ADAMS06]; assumed")
    pte_trace_ns: float = cost(1000.0, "shadow paging: a traced guest PTE write (exit, "
                               "emulation)", hi=MAX_COST_NS, source="[ADAMS06]; assumed")
    cr3_switch_ns: float = cost(800.0, "shadow paging: an intercepted CR3 load (exit, root "
                                "switch)", hi=MAX_COST_NS, source="[ADAMS06]; assumed")
    tlb_flush_exit_ns: float = cost(600.0, "shadow paging: an intercepted INVLPG or flush",
                                    hi=MAX_COST_NS, source="[ADAMS06]; assumed")
    # -- faults and page operations --------------------------------------------
    guest_fault_ns: float = cost(1500.0, "the guest kernel's demand-zero fault (trap, allocate, "
                                 "map)", hi=MAX_COST_NS, source="assumed")
    hypervisor_fault_ns: float = cost(2000.0, "an exit, a frame allocated and mapped in the "
                                      "pmap", hi=MAX_COST_NS, source="assumed")
    zero_page_ns: float = cost(400.0, "zeroing 4 KiB at ~10 GB/s", hi=MAX_COST_NS,
                               source="assumed")
    cow_copy_ns: float = cost(600.0, "copying 4 KiB on a copy-on-write break", hi=MAX_COST_NS,
                              source="assumed")
    decompress_ns: float = cost(10_000.0, "decompressing one 4 KiB page (zswap-class codecs)",
                                hi=MAX_COST_NS, source="assumed")
    balloon_page_ns: float = cost(2000.0, "one balloon inflate or deflate page operation",
                                  hi=MAX_COST_NS, source="assumed")
    # -- swap devices, one 4 KiB random read -----------------------------------
    swap_hdd_ns: float = cost(8_000_000.0, "a swap-in from a 7200 rpm disk (seek + rotation)",
                              hi=MAX_COST_NS, source="assumed")
    swap_ssd_ns: float = cost(100_000.0, "a swap-in from a SATA SSD (random read)",
                              hi=MAX_COST_NS, source="assumed")
    swap_nvme_ns: float = cost(20_000.0, "a swap-in from an NVMe SSD (random read)",
                               hi=MAX_COST_NS, source="assumed")

    def __post_init__(self) -> None:
        check(self)

    def with_overrides(self, overrides: dict[str, float]) -> CostTable:
        """A copy with some costs replaced; unknown names or values out of bounds are errors."""
        known = {f.name for f in fields(self)}
        for name in overrides:
            if name not in known:
                known_list = ", ".join(sorted(known))
                raise ConfigError(f"timing: unknown cost {name!r} (known: {known_list})")
        return replace(self, **overrides)

    def swap_in_ns(self, device: str) -> float:
        """Cost of one swap-in from ``device`` ("hdd", "ssd" or "nvme")."""
        try:
            return {"hdd": self.swap_hdd_ns, "ssd": self.swap_ssd_ns, "nvme": self.swap_nvme_ns}[
                device
            ]
        except KeyError:
            raise ConfigError(f"swap device: expected hdd, ssd or nvme, found {device!r}") from None


DEFAULT_COSTS = CostTable()
