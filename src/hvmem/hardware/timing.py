"""The cost table: what each hardware and software event costs, in nanoseconds.

Function and cost are kept apart (gem5's atomic versus timing split): the MMU,
the hypervisor and the guest decide *what* happens and count events; this table
turns counts into time, so one model can be re-costed without being re-run in
another way. Every default names its source; where no published figure fits, the
value is marked *assumed* together with its reasoning, and a scenario may
override any field.

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


@dataclass(frozen=True, slots=True)
class CostTable:
    """Per-event costs in nanoseconds. Defaults assume a ~2.5 GHz x86-64 server core."""

    # -- translation ----------------------------------------------------------
    tlb_hit_ns: float = 1.0  # a TLB lookup, overlapped with the L1 access [SDM]; assumed ~2 cycles
    # One page-walk memory reference; mostly cache hits [BHARGAVA08]; assumed. An
    # entry found in the page-walk cache costs nothing beyond the TLB lookup.
    walk_ref_ns: float = 20.0
    # -- virtualization exits --------------------------------------------------
    vmexit_ns: float = 500.0  # one VM exit plus re-entry: ~1250 cycles [INTEL09]
    # shadow paging: exit + software walk + shadow fill [ADAMS06]; assumed
    hidden_fault_ns: float = 1500.0
    # shadow paging: a traced guest PTE write, exit + emulation [ADAMS06]; assumed
    pte_trace_ns: float = 1000.0
    # shadow paging: an intercepted CR3 load, exit + root switch [ADAMS06]; assumed
    cr3_switch_ns: float = 800.0
    # shadow paging: an intercepted INVLPG or flush [ADAMS06]; assumed
    tlb_flush_exit_ns: float = 600.0
    # -- faults and page operations --------------------------------------------
    # guest kernel demand-zero fault path (trap, allocate, map); assumed
    guest_fault_ns: float = 1500.0
    hypervisor_fault_ns: float = 2000.0  # exit + allocate a frame + map it in the pmap; assumed
    zero_page_ns: float = 400.0  # zeroing 4 KiB at ~10 GB/s; assumed
    cow_copy_ns: float = 600.0  # copying 4 KiB on a copy-on-write break; assumed
    decompress_ns: float = 10_000.0  # decompressing one 4 KiB page; assumed (zswap-class codecs)
    balloon_page_ns: float = 2000.0  # one balloon inflate or deflate page operation; assumed
    # -- swap devices, one 4 KiB random read -----------------------------------
    swap_hdd_ns: float = 8_000_000.0  # seek + rotation of a 7200 rpm disk; assumed
    swap_ssd_ns: float = 100_000.0  # SATA SSD random read; assumed
    swap_nvme_ns: float = 20_000.0  # NVMe SSD random read; assumed

    def with_overrides(self, overrides: dict[str, float]) -> CostTable:
        """A copy with some costs replaced; unknown names or negative values are errors."""
        known = {f.name for f in fields(self)}
        for name, value in overrides.items():
            if name not in known:
                known_list = ", ".join(sorted(known))
                raise ConfigError(f"timing: unknown cost {name!r} (known: {known_list})")
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigError(
                    f"timing.{name}: expected a non-negative number of ns, found {value!r}"
                )
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
