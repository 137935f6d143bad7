"""The host's part of a scenario: machine memory, its profile, paging, devices, backend.

:class:`HostConfig` (with :class:`SharingConfig` and :class:`CompressionConfig`)
and :class:`BackendConfig` are declared here, with the field helpers and bounds
the VM side of :mod:`hvmem.scenario.schema` shares. Each class checks its
declared fields on construction (:mod:`hvmem.params`) and resolves its defaults
from the memory-state profile, so a built object is always explicit:

* ``CompressionConfig.enabled`` None -> as the profile: yes for esxi5/esxi6,
  no for esx4 (compression arrived in ESX 4.1 [VI-41]).
* ``SamplerConfig.period_ns``, ``min_active_frac`` None -> as the profile.
* ``SharingConfig`` scan rates None -> as the profile [ESX25-p343][LAMW].
* ``HostConfig.large_pages`` None -> on with nested paging, off with shadow
  [KB1021095].

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hvmem.errors import ConfigError
from hvmem.hypervisor.host import PAGING_MODES
from hvmem.hypervisor.reclaim.sharing import SALTING_MODES, profile_scan_rates
from hvmem.hypervisor.sampling import SamplerConfig
from hvmem.params import check, choice, fail, flag, frac, number, size, table, time, whole
from hvmem.policy.states import DEFAULT_PROFILE, PROFILES
from hvmem.replacement.names import SWAP_SELECTIONS
from hvmem.units import GIB, MIB, NS_PER_S, PAGE_SHIFT, TIB, format_time

#: Swap devices, with latencies in the cost table.
SWAP_DEVICES = ("hdd", "ssd", "nvme")
#: ``Mem.MemZipMaxPct`` = 10 % of the VM's size [LAMW].
DEFAULT_COMPRESSION_MAX_FRAC = 0.10
#: Where a scenario's VMs run.
BACKEND_KINDS = ("simulated", "qemu")
#: The largest host a scenario declares (assumed: ESXi 8 takes 24 TB hosts).
MAX_HOST_BYTES = 64 * TIB
#: The longest tick, and the longest interval a backend setting may name: 1 h.
MAX_TICK_NS = 3600 * NS_PER_S


def resolve(owner: object, name: str, value: object) -> None:
    """Set ``owner.name``: a default resolved on construction of a frozen dataclass."""
    object.__setattr__(owner, name, value)


def bytes_field(default: int | None, doc: str, hi: int, **kw: object) -> int | None:
    """A size field of at least 0 bytes and at most ``hi`` (:func:`hvmem.params.size`)."""
    return size(default, doc, lo=0, hi=hi, **kw)


@dataclass(frozen=True, slots=True, kw_only=True)
class SharingConfig:
    """Transparent page sharing [OSDI02 §4]."""

    enabled: bool = flag(True, "run the page-sharing scanner at all")
    salting: str = choice("within", SALTING_MODES, "\"across\" (one salt for all VMs, before "
                          "2014), \"within\" (a salt per VM, ESXi's default since 2015: sharing "
                          "within a VM only) or \"explicit\" (each VM's salt)",
                          source="[KB2097593]")
    scan_rate_pages_per_s: float | None = number(
        None, "pages scanned per second per VM", lo=0.0, lo_open=True, hi=1e6, unit="1/s",
        optional=True, none="as the profile: esx4 50/s (ShareScanVM); esxi5, esxi6 a whole VM "
        "per 60 min (Mem.ShareScanTime), at most 1024/s", source="[ESX25-p343][LAMW]")
    scan_total_pages_per_s: float | None = number(
        None, "pages scanned per second by the whole host (Mem.ShareScanTotal)", lo=0.0,
        lo_open=True, hi=1e8, unit="1/s", optional=True, none="as the profile: esx4 200/s; "
        "esxi5, esxi6 Mem.ShareScanGHz 4 MB/s per GHz of cpu_ghz",
        source="[ESX25-p343][VS4-ATTR][LAMW]")
    cpu_ghz: float = number(20.0, "host CPU capacity Mem.ShareScanGHz scales the host's scan "
                            "cap with (cores x clock)", lo=0.0, lo_open=True, hi=1e5,
                            unit="GHz", source="assumed: 8 cores at 2.5 GHz")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompressionConfig:
    """Memory compression on the way to the swap file [VI-41][VS41-ZIP]."""

    enabled: bool | None = flag(None, "compress pages on their way to the swap file",
                                optional=True, none="as the profile: on for esxi5 and esxi6, "
                                "off for esx4", source="ESX 4.1 [VI-41]")
    max_frac: float = frac(DEFAULT_COMPRESSION_MAX_FRAC, "compression cache cap per VM, share "
                           "of its memory (Mem.MemZipMaxPct)", lo=0.0, lo_open=True,
                           source="10 % [LAMW]")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    """The physical host: machine memory, memory-state profile, paging and devices."""

    memory_bytes: int = size(4 * GIB, "machine memory the VMkernel manages", lo=0, lo_open=True,
                             hi=MAX_HOST_BYTES, required=True)
    profile: str = choice(DEFAULT_PROFILE, tuple(PROFILES), "free-memory states and their "
                          "thresholds (esx4, esxi5, esxi6)",
                          source="[OSDI02 §6.3][FD-MINFREE][YB-STATES6]")
    min_free_frac: float = frac(0.0, "Mem.MemMinFreePct / 100; 0: the sliding scale (esxi5, "
                                "esxi6)", hi=0.5, source="0-50 % [LAMW]")
    paging: str = choice("nested", PAGING_MODES, "\"nested\" (EPT/NPT) or \"shadow\" page "
                         "tables")
    swap_device: str = choice("ssd", SWAP_DEVICES, "device of the host swap files")
    swap_selection: str = choice("random", SWAP_SELECTIONS, "host swap victims: \"random\" (as "
                                 "ESX) or \"lru\" (a comparison point)", source="[OSDI02 §3.3]")
    sharing: SharingConfig = table(SharingConfig, "page sharing", factory=SharingConfig)
    compression: CompressionConfig = table(CompressionConfig, "memory compression",
                                           factory=CompressionConfig)
    sampling: SamplerConfig = table(SamplerConfig, "active-memory sampling",
                                    factory=SamplerConfig)
    tlb_entries: int = whole(64, "TLB entries per vCPU (mmu fidelity)", lo=1, hi=1 << 16,
                             key="tlb.entries")
    tlb_ways: int = whole(4, "TLB associativity (entries split into sets of this many)", lo=1,
                          hi=1 << 16, key="tlb.ways")
    pwc_entries: int = whole(0, "page-walk cache entries per vCPU; 0: none", lo=0, hi=1 << 12)
    large_pages: bool | None = flag(None, "back guest memory with 2 MiB host pages "
                                    "(Mem.AllocGuestLargePage)", optional=True,
                                    none="as ESX: on with nested paging, off with shadow",
                                    source="[KB1021095]")

    def __post_init__(self) -> None:
        check(self)
        profile = PROFILES[self.profile]
        if self.min_free_frac and not profile.sliding_scale:
            raise fail(self, "min_free_frac", f"0 with profile {self.profile!r} (a fixed 6 % "
                       "minFree; MemMinFreePct came with ESX 4.1)")
        if self.compression.enabled is None:
            resolve(self, "compression", replace(self.compression, enabled=profile.compression))
        elif self.compression.enabled and not profile.compression:
            raise ConfigError(f"expected false with profile {self.profile!r} (memory compression "
                              "arrived in ESX 4.1), found true",
                              path=("HostConfig", "compression", "enabled"))
        resolve(self, "sampling", self.sampling.for_profile(self.profile))
        sh = self.sharing
        rates = profile_scan_rates(self.profile, sh.scan_rate_pages_per_s,
                                   sh.scan_total_pages_per_s, sh.cpu_ghz)
        resolve(self, "sharing", replace(sh, scan_rate_pages_per_s=rates[0],
                                      scan_total_pages_per_s=rates[1]))
        if self.tlb_ways > self.tlb_entries or self.tlb_entries % self.tlb_ways:
            raise fail(self, "tlb_ways", f"a divisor of the {self.tlb_entries} TLB entries")
        if self.large_pages is None:
            resolve(self, "large_pages", self.paging == "nested")
        elif self.large_pages and self.paging != "nested":
            raise fail(self, "large_pages", "false with paging \"shadow\" (ESX uses 2 MiB "
                       "host pages only with nested paging)")

    @property
    def memory_pages(self) -> int:
        """Machine memory in 4 KiB frames."""
        return self.memory_bytes >> PAGE_SHIFT


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConfig:
    """Where the VMs run: the page-level simulator, or real QEMU guests (``hvmem qemu``).

    With ``kind = "qemu"`` each VM is a small real guest of its configured memory
    under the same policy, the host's memory is the controller's host memory
    budget, and the guests run the in-guest workload set here (the simulated
    workloads do not run in a real guest; backends/qemu/guest_image.py).
    """

    kind: str = choice("simulated", BACKEND_KINDS, "\"simulated\", or \"qemu\": every VM a "
                       "real QEMU guest")
    file_backed: bool = flag(False, "qemu: guest RAM in a file on disk, QEMU in a memory cgroup "
                             "(swappable)")
    shared_bytes: int = bytes_field(64 * MIB, "qemu: identical-page data each guest holds (KSM "
                               "merges it)", hi=64 * GIB)
    private_bytes: int = bytes_field(32 * MIB, "qemu: random data each guest holds", hi=64 * GIB)
    touch_ns: int = time(5 * NS_PER_S, "qemu: how often each guest re-reads and checks its "
                         "data", lo=0, lo_open=True, hi=MAX_TICK_NS)

    def __post_init__(self) -> None:
        check(self)
        if self.touch_ns % NS_PER_S:
            raise fail(self, "touch_ns", "whole seconds", format_time(self.touch_ns))
