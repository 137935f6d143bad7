"""Typed scenario configuration: one frozen dataclass per part of a simulated host.

What is modelled
----------------
A :class:`Scenario` is everything one simulation run needs, and nothing it
computes: the host (:class:`HostConfig`, with :class:`SharingConfig` and
:class:`CompressionConfig`), the memory policy (:class:`PolicyConfig`), the VMs
(:class:`VmConfig`, each with :class:`GuestSettings`, a workload and a page
content mix) and the cost table (:class:`~hvmem.hardware.timing.CostTable`).
``scenario/loader.py`` builds one from TOML; code may build one directly.

Every field carries its unit in its name (``_bytes``, ``_ns``, ``_frac``,
``_pages_per_s``), has a default and a one-line description beside it. Sizes
are bytes (whole 4 KiB pages), times integer nanoseconds. Each class checks
itself on construction and raises :class:`~hvmem.errors.ConfigError` as
``Class.field: expected ..., found ...``; the loader rewrites that prefix into
the file and TOML path (``demo.toml: vm[2].reservation: ...``).

Defaults resolved on construction (so a built object is always explicit):

* ``VmConfig.shares`` None -> ``normal``: 10 shares per MiB of configured
  memory; ``low``/``normal``/``high`` are 5/10/20 per MiB (4:2:1)
  [VS-SHARES][ESX25-p341], esx-memory.md sections 1.6 and 2.2.
* ``VmConfig.overhead_bytes`` None -> 32 MiB + 1 % of configured memory,
  rounded up to a page. **Assumed**: the reference has no overhead table;
  "typical overhead 32 MB per VM ..., more for VMs > 1 GB" [OSDI02 §6.2], and
  real overheads vary with vCPUs, devices and version (esx-memory.md 1.8).
* ``GuestSettings.swap_bytes`` None -> the VM's configured memory.
* ``CompressionConfig.enabled`` None -> as the profile: yes for esxi5/esxi6,
  no for esx4 (compression arrived in ESX 4.1 [VI-41]).
* ``GuestSettings.balloon_max_bytes`` stays None: the host's cap applies,
  ``Mem.CtlMaxPercent`` = 65 % of configured memory ([LAMW], as
  ``sched.mem.maxmemctl`` = -1, esx-memory.md 2.2).

Cross-field rules (checked here, so code-built scenarios obey them too):
reservation <= memory; limit >= reservation; power_off > power_on; a VM
powers on before the run ends; the run is a whole number of ticks, at least
one; VM names are unique; a workload's region is at most the VM's memory plus
its guest swap (a guest may map more virtual memory than it has physical
memory and page, but never more than it could hold at all); a workload's
process exists; admission control at time 0: the reservations plus overheads
of the VMs powered on at 0 fit the host's memory [OSDI02 §6.2] (later power-ons
are the simulator's to admit or refuse, as ESX does at run time).

The scenario's fidelity applies to every workload: :class:`Scenario` replaces
a workload whose own ``fidelity`` differs (as ``with_fidelity`` does).

Sources: keys in brackets resolve in ``reference/esx-memory.md`` section 9.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from hvmem.errors import ConfigError
from hvmem.guest.config import GuestConfig
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hypervisor.host import PAGING_MODES
from hvmem.hypervisor.reclaim.balloon import CTL_MAX_FRAC
from hvmem.hypervisor.reclaim.sharing import SALTING_MODES
from hvmem.policy.states import DEFAULT_PROFILE, PROFILES
from hvmem.replacement.names import RECLAIM_POLICIES, SWAP_SELECTIONS
from hvmem.units import GIB, MIB, NS_PER_S, PAGE_SHIFT, PAGE_SIZE_BYTES, format_size, format_time
from hvmem.workloads.base import Fidelity
from hvmem.workloads.content import ContentParams
from hvmem.workloads.replay import ReplayParams
from hvmem.workloads.synthetic import (
    ChurnParams,
    HotColdParams,
    IdleParams,
    PhasesParams,
    ScanParams,
    UniformParams,
    ZipfParams,
    with_fidelity,
)

__all__ = [
    "BALLOON_MAX_DEFAULT_FRAC",
    "DEFAULT_BALANCE_PERIOD_NS",
    "DEFAULT_COMPRESSION_MAX_FRAC",
    "DEFAULT_IDLE_TAX_FRAC",
    "DEFAULT_TICK_NS",
    "FIDELITIES",
    "MAX_IDLE_TAX_FRAC",
    "OVERHEAD_BASE_BYTES",
    "OVERHEAD_FRAC",
    "POLICY_NAMES",
    "SHARES_PER_MIB",
    "SWAP_DEVICES",
    "WORKLOAD_TYPES",
    "CompressionConfig",
    "GuestSettings",
    "HostConfig",
    "PolicyConfig",
    "Scenario",
    "SharingConfig",
    "VmConfig",
    "WorkloadParams",
    "BackendConfig",
    "default_overhead_bytes",
    "shares_for",
    "workload_span_pages",
]

#: Shares per MiB of configured memory for the named levels (4:2:1)
#: [VS-SHARES][ESX25-p341]; esx-memory.md sections 1.6 and 2.2.
SHARES_PER_MIB: Mapping[str, int] = MappingProxyType({"low": 5, "normal": 10, "high": 20})
#: Fixed part of the default per-VM overhead: "typical overhead 32 MB" [OSDI02 §6.2].
OVERHEAD_BASE_BYTES = 32 * MIB
#: Part of the default overhead that grows with memory. **Assumed** (no table in the
#: reference; OSDI02 §6.2 says only "more for VMs > 1 GB").
OVERHEAD_FRAC = 0.01
#: Policies a scenario may name (the policy registry implements them).
POLICY_NAMES = ("esx", "static", "mom", "proxmox")
#: Swap devices, with latencies in the cost table.
SWAP_DEVICES = ("hdd", "ssd", "nvme")
#: Simulation fidelities (see DESIGN.md section 3).
FIDELITIES = tuple(str(f) for f in Fidelity)
#: Default tick: 1 simulated second (DESIGN.md section 3).
DEFAULT_TICK_NS = NS_PER_S
#: ``Mem.BalancePeriod`` = 15 s, ESX 2.5 to ESXi 7 [VS4-ATTR][VS-ADV70][ESX25-p343].
DEFAULT_BALANCE_PERIOD_NS = 15 * NS_PER_S
#: ``Mem.IdleTax`` = 75 %, ESX 1.5 to ESXi 9.0.1 [OSDI02 §5.2][VS4-ATTR][LAMW].
DEFAULT_IDLE_TAX_FRAC = 0.75
#: ``Mem.IdleTax`` accepts 0-99 % [LAMW]; a tax of 100 % would make idle memory free.
MAX_IDLE_TAX_FRAC = 0.99
#: ``Mem.MemZipMaxPct`` = 10 % of the VM's size [LAMW].
DEFAULT_COMPRESSION_MAX_FRAC = 0.10
#: ``Mem.CtlMaxPercent`` = 65 %: the host's balloon cap when a VM sets none [VS4-ATTR][LAMW].
BALLOON_MAX_DEFAULT_FRAC = CTL_MAX_FRAC

#: A workload's parameters: one of the workload modules' Params classes.
WorkloadParams = (UniformParams | ZipfParams | HotColdParams | ScanParams | IdleParams
                  | PhasesParams | ChurnParams | ReplayParams)
#: The classes of :data:`WorkloadParams`, for ``isinstance``.
WORKLOAD_TYPES = (UniformParams, ZipfParams, HotColdParams, ScanParams, IdleParams,
                  PhasesParams, ChurnParams, ReplayParams)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_TLB_ENTRIES = 1 << 16
_MAX_PWC_ENTRIES = 1 << 12
_MAX_PROCESSES = 4094  # ASIDs 1..4094 (12-bit PCIDs, 0 reserved)
_MAX_SALT = (1 << 63) - 1


# ------------------------------------------------------------------ helpers


def shares_for(level: str | int, memory_bytes: int) -> int:
    """Shares of a VM: a named level scaled by configured memory, or a number as is.

    Args:
        level: ``"low"``, ``"normal"`` or ``"high"`` (5, 10 or 20 shares per MiB
            of configured memory [VS-SHARES][ESX25-p341]), or a whole number.
        memory_bytes: the VM's configured memory.

    Raises:
        ConfigError: an unknown level or a negative number.
    """
    if isinstance(level, str):
        per_mib = SHARES_PER_MIB.get(level)
        if per_mib is None:
            raise ConfigError(f"shares: expected low, normal, high or a whole number of shares, "
                              f"found {level!r}")
        return round(per_mib * memory_bytes / MIB)
    if not _is_int(level) or level < 0:
        raise ConfigError(f"shares: expected a whole number >= 0, found {level!r}")
    return int(level)


def default_overhead_bytes(memory_bytes: int) -> int:
    """The assumed overhead of a VM: 32 MiB + 1 % of its memory, rounded up to a page.

    **Assumption**, see the module essay: 32 MiB is OSDI02's typical overhead,
    the 1 % stands for what grows with memory (the pmap, page tables).
    """
    size = OVERHEAD_BASE_BYTES + math.ceil(OVERHEAD_FRAC * memory_bytes)
    return -(-size // PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES


def workload_span_pages(params: object) -> int | None:
    """Guest-virtual pages a workload maps at most (None: not known before a replay reads it)."""
    if isinstance(params, ReplayParams):
        return params.map_pages
    return int(params.region_pages)  # type: ignore[attr-defined]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _exact(size_bytes: int | None) -> str:
    """A size with the largest binary unit that divides it ("1028 MiB", "2 GiB")."""
    size = size_bytes or 0
    for unit, scale in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if size and size % scale == 0:
            return f"{size // scale} {unit}"
    return format_size(size) if size >= MIB else f"{size} B"


def _mib(size_bytes: int | None) -> str:
    """A size in MiB, exact to 1/100 MiB (comparable within one message)."""
    return f"{(size_bytes or 0) / MIB:.2f} MiB".replace(".00 MiB", " MiB")


def _fail(owner: object, name: str, expected: str, found: str) -> ConfigError:
    return ConfigError(f"{type(owner).__name__}.{name}: expected {expected}, found {found}")


def _check_size(owner: object, name: str, *, positive: bool = False,
                optional: bool = False) -> None:
    value = getattr(owner, name)
    if value is None and optional:
        return
    if not _is_int(value) or value < 0:
        raise _fail(owner, name, "a size in bytes (a non-negative integer)", _show(value))
    if value % PAGE_SIZE_BYTES:
        raise _fail(owner, name, "a whole number of 4 KiB pages", f"{value} bytes")
    if positive and value == 0:
        raise _fail(owner, name, "a positive size", "0 bytes")


def _check_time(owner: object, name: str, *, positive: bool = False,
                optional: bool = False) -> None:
    value = getattr(owner, name)
    if value is None and optional:
        return
    if not _is_int(value) or value < 0 or (positive and value == 0):
        bound = "a positive" if positive else "a non-negative"
        raise _fail(owner, name, f"{bound} whole number of nanoseconds", _show(value))


def _check_int(owner: object, name: str, lo: int, hi: int) -> None:
    value = getattr(owner, name)
    if not _is_int(value) or not lo <= value <= hi:
        raise _fail(owner, name, f"a whole number in {lo}..{hi}", _show(value))


def _check_frac(owner: object, name: str, lo: float, hi: float, *, lo_open: bool = False) -> None:
    value = getattr(owner, name)
    ok = _is_real(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        raise _fail(owner, name, f"a number {low} and <= {hi:g}", _show(value))


def _check_bool(owner: object, name: str, *, optional: bool = False) -> None:
    value = getattr(owner, name)
    if not (isinstance(value, bool) or (optional and value is None)):
        raise _fail(owner, name, "true or false", _show(value))


def _check_choice(owner: object, name: str, options: tuple[str, ...] | Mapping[str, Any]) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str) or value not in options:
        raise _fail(owner, name, " or ".join(repr(o) for o in options), _show(value))


def _check_name(owner: object, name: str) -> None:
    value = getattr(owner, name)
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(owner, name, "a name of letters, digits, '-', '_' and '.' (not starting "
                    "with a punctuation mark)", _show(value))


def _set(owner: object, name: str, value: object) -> None:
    object.__setattr__(owner, name, value)  # resolving a default of a frozen dataclass


def _freeze(value: object) -> object:
    """A deep read-only copy: tables become mapping proxies, arrays tuples."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


# ------------------------------------------------------------------ host


@dataclass(frozen=True, slots=True, kw_only=True)
class SharingConfig:
    """Transparent page sharing (esx-memory.md section 1.4)."""

    enabled: bool = True  # run the page-sharing scanner at all
    # salting: "across" (one salt for all VMs, pre-2014), "within" (per-VM salt,
    # ESXi's default since 2015: intra-VM sharing only), "explicit" (VmConfig.salt)
    salting: str = "within"
    scan_rate_pages_per_s: float | None = None  # per VM; None: a VM per 60 min, <= 1024/s

    def __post_init__(self) -> None:
        _check_bool(self, "enabled")
        _check_choice(self, "salting", SALTING_MODES)
        value = self.scan_rate_pages_per_s
        if value is not None and not (_is_real(value) and value > 0):
            raise _fail(self, "scan_rate_pages_per_s", "a number > 0 (or leave it out for "
                        "ESX's default)", _show(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class CompressionConfig:
    """Memory compression on the way to the swap file (esx-memory.md section 1.5)."""

    enabled: bool | None = None  # None: as the profile (esxi5, esxi6: on; esx4: off)
    max_frac: float = DEFAULT_COMPRESSION_MAX_FRAC  # cache cap per VM, share of its memory

    def __post_init__(self) -> None:
        _check_bool(self, "enabled", optional=True)
        _check_frac(self, "max_frac", 0.0, 1.0, lo_open=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    """The physical host: machine memory, memory-state profile, paging and devices."""

    memory_bytes: int = 4 * GIB  # machine memory the VMkernel manages
    profile: str = DEFAULT_PROFILE  # free-memory states: "esx4", "esxi5" or "esxi6"
    min_free_frac: float = 0.0  # Mem.MemMinFreePct / 100; 0: sliding scale (esxi5, esxi6)
    paging: str = "nested"  # "nested" (EPT/NPT) or "shadow" page tables
    swap_device: str = "ssd"  # device of the host swap files: "hdd", "ssd" or "nvme"
    swap_selection: str = "random"  # host swap victims: "random" (as ESX) or "lru"
    sharing: SharingConfig = field(default_factory=SharingConfig)  # page sharing
    compression: CompressionConfig = field(default_factory=CompressionConfig)  # compression
    tlb_entries: int = 64  # TLB entries per vCPU (mmu fidelity)
    tlb_ways: int = 4  # TLB associativity (entries split into sets of this many)
    pwc_entries: int = 0  # page-walk cache entries per vCPU; 0: none
    # Back guest memory with 2 MiB host pages (Mem.AllocGuestLargePage); None: as ESX,
    # on with nested paging, off with shadow paging (4 KiB backing) [KB1021095].
    large_pages: bool | None = None

    def __post_init__(self) -> None:
        _check_size(self, "memory_bytes", positive=True)
        _check_choice(self, "profile", PROFILES)
        _check_frac(self, "min_free_frac", 0.0, 0.5)  # Mem.MemMinFreePct 0-50 [LAMW]
        profile = PROFILES[self.profile]
        if self.min_free_frac and not profile.sliding_scale:
            raise _fail(self, "min_free_frac", f"0 with profile {self.profile!r} (a fixed 6 % "
                        "minFree; MemMinFreePct came with ESX 4.1)", _show(self.min_free_frac))
        _check_choice(self, "paging", PAGING_MODES)
        _check_choice(self, "swap_device", SWAP_DEVICES)
        _check_choice(self, "swap_selection", SWAP_SELECTIONS)
        if not isinstance(self.sharing, SharingConfig):
            raise _fail(self, "sharing", "a SharingConfig", type(self.sharing).__name__)
        if not isinstance(self.compression, CompressionConfig):
            raise _fail(self, "compression", "a CompressionConfig",
                        type(self.compression).__name__)
        if self.compression.enabled is None:
            _set(self, "compression", replace(self.compression, enabled=profile.compression))
        elif self.compression.enabled and not profile.compression:
            raise ConfigError(f"HostConfig.compression.enabled: expected false with profile "
                              f"{self.profile!r} (memory compression arrived in ESX 4.1), "
                              "found true")
        _check_int(self, "tlb_entries", 1, _MAX_TLB_ENTRIES)
        _check_int(self, "tlb_ways", 1, self.tlb_entries)
        if self.tlb_entries % self.tlb_ways:
            raise _fail(self, "tlb_ways", f"a divisor of the {self.tlb_entries} TLB entries",
                        _show(self.tlb_ways))
        _check_int(self, "pwc_entries", 0, _MAX_PWC_ENTRIES)
        _check_bool(self, "large_pages", optional=True)
        if self.large_pages is None:
            _set(self, "large_pages", self.paging == "nested")
        elif self.large_pages and self.paging != "nested":
            raise _fail(self, "large_pages", "false with paging \"shadow\" (ESX uses 2 MiB "
                        "host pages only with nested paging)", _show(self.large_pages))

    @property
    def memory_pages(self) -> int:
        """Machine memory in 4 KiB frames."""
        return self.memory_bytes >> PAGE_SHIFT


# ------------------------------------------------------------------ policy


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyConfig:
    """The memory policy: which controller decides, how often, and its idle tax."""

    name: str = "esx"  # "esx", "static", "mom" or "proxmox"
    balance_period_ns: int = DEFAULT_BALANCE_PERIOD_NS  # Mem.BalancePeriod: re-plan every
    idle_tax_frac: float = DEFAULT_IDLE_TAX_FRAC  # Mem.IdleTax; 0 switches the tax off
    # extra parameters passed through to the policy as they are (it checks them)
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        _check_choice(self, "name", POLICY_NAMES)
        _check_time(self, "balance_period_ns", positive=True)
        _check_frac(self, "idle_tax_frac", 0.0, MAX_IDLE_TAX_FRAC)
        if not isinstance(self.params, Mapping) or not all(isinstance(k, str)
                                                           for k in self.params):
            raise _fail(self, "params", "a table of named parameters", _show(self.params))
        _set(self, "params", _freeze(self.params))


# ------------------------------------------------------------------ backend

#: Where a scenario's VMs run.
BACKEND_KINDS = ("simulated", "qemu")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConfig:
    """Where the VMs run: the page-level simulator, or real QEMU guests (``hvmem qemu``).

    With ``kind = "qemu"`` each VM is a small real guest of its configured memory
    under the same policy, the host's memory is the controller's host memory
    budget, and the guests run the in-guest workload set here (the simulated
    workloads do not run in a real guest; backends/qemu/guest_image.py).
    """

    kind: str = "simulated"  # "simulated", or "qemu": every VM a real QEMU guest
    file_backed: bool = False  # qemu: RAM in a file on disk, in a memory cgroup (swappable)
    shared_bytes: int = 64 * MIB  # qemu: identical-page data each guest holds (KSM merges it)
    private_bytes: int = 32 * MIB  # qemu: random data each guest holds
    touch_ns: int = 5 * NS_PER_S  # qemu: how often each guest re-reads and checks its data

    def __post_init__(self) -> None:
        _check_choice(self, "kind", BACKEND_KINDS)
        _check_bool(self, "file_backed")
        _check_size(self, "shared_bytes")
        _check_size(self, "private_bytes")
        _check_time(self, "touch_ns", positive=True)
        if self.touch_ns % NS_PER_S:
            raise _fail(self, "touch_ns", "whole seconds", format_time(self.touch_ns))


# ------------------------------------------------------------------ VMs


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestSettings:
    """The guest OS inside a VM: its swap, page reclaim, processes and balloon driver."""

    swap_bytes: int | None = None  # guest swap; None: as large as the VM's memory
    swap_device: str = "ssd"  # the guest's swap device: "hdd", "ssd" or "nvme"
    reclaim_policy: str = "lru"  # guest page reclaim: "fifo", "lru", "clock" or "random"
    n_processes: int = 1  # guest processes (ASIDs 1..n); workloads run in process 0..n-1
    balloon_enabled: bool = True  # the balloon driver is installed and running
    deflate_on_oom: bool = True  # the guest may take pages back from the balloon on OOM
    free_page_reporting: bool = False  # the guest reports free pages (virtio-balloon)
    balloon_max_bytes: int | None = None  # sched.mem.maxmemctl; None: host cap, 65 % of memory

    def __post_init__(self) -> None:
        _check_size(self, "swap_bytes", optional=True)
        _check_choice(self, "swap_device", SWAP_DEVICES)
        _check_choice(self, "reclaim_policy", RECLAIM_POLICIES)
        _check_int(self, "n_processes", 1, _MAX_PROCESSES)
        _check_bool(self, "balloon_enabled")
        _check_bool(self, "deflate_on_oom")
        _check_bool(self, "free_page_reporting")
        _check_size(self, "balloon_max_bytes", optional=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class VmConfig:
    """One VM: its memory, resource controls, lifetime, guest, workload and page contents."""

    name: str = "vm1"  # unique in the scenario (letters, digits, '-', '_', '.')
    memory_bytes: int = 1 * GIB  # configured guest-physical memory
    reservation_bytes: int = 0  # sched.mem.min: guaranteed machine memory
    limit_bytes: int | None = None  # sched.mem.max: ceiling; None: unlimited
    shares: int | None = None  # proportional shares; None: normal, 10 per MiB of memory
    overhead_bytes: int | None = None  # reserved at power-on; None: 32 MiB + 1 % (assumed)
    power_on_ns: int = 0  # when the VM powers on
    power_off_ns: int | None = None  # when it powers off; None: never
    salt: int | None = None  # page-sharing salt under "explicit" salting; None: salt 0
    guest: GuestSettings = field(default_factory=GuestSettings)  # the guest OS
    workload: WorkloadParams | None = None  # what runs; None: idle over min(memory, 64 MiB)
    content: ContentParams = field(default_factory=ContentParams)  # image and page mix

    def __post_init__(self) -> None:
        _check_name(self, "name")
        _check_size(self, "memory_bytes", positive=True)
        memory = self.memory_bytes
        _check_size(self, "reservation_bytes")
        if self.reservation_bytes > memory:
            raise _fail(self, "reservation_bytes", f"at most the VM's memory "
                        f"({_exact(memory)})", _exact(self.reservation_bytes))
        _check_size(self, "limit_bytes", optional=True)
        if self.limit_bytes is not None and self.limit_bytes < max(self.reservation_bytes, 1):
            raise _fail(self, "limit_bytes", f"at least the reservation "
                        f"({_exact(self.reservation_bytes)}) and more than 0",
                        _exact(self.limit_bytes))
        if self.shares is None:
            _set(self, "shares", shares_for("normal", memory))
        elif not _is_int(self.shares) or self.shares < 0:
            raise _fail(self, "shares", "a whole number >= 0", _show(self.shares))
        if self.overhead_bytes is None:
            _set(self, "overhead_bytes", default_overhead_bytes(memory))
        _check_size(self, "overhead_bytes")
        _check_time(self, "power_on_ns")
        _check_time(self, "power_off_ns", optional=True)
        if self.power_off_ns is not None and self.power_off_ns <= self.power_on_ns:
            raise _fail(self, "power_off_ns", f"a time after power-on "
                        f"({format_time(self.power_on_ns)})", format_time(self.power_off_ns))
        if self.salt is not None and not (_is_int(self.salt) and 0 <= self.salt <= _MAX_SALT):
            raise _fail(self, "salt", f"a whole number in 0..{_MAX_SALT}", _show(self.salt))
        if not isinstance(self.guest, GuestSettings):
            raise _fail(self, "guest", "a GuestSettings", type(self.guest).__name__)
        if self.guest.swap_bytes is None:
            _set(self, "guest", replace(self.guest, swap_bytes=memory))
        balloon_max = self.guest.balloon_max_bytes
        if balloon_max is not None and balloon_max > memory:
            raise ConfigError(f"VmConfig.guest.balloon_max_bytes: expected at most the VM's "
                              f"memory ({_exact(memory)}), found {_exact(balloon_max)}")
        if not isinstance(self.content, ContentParams):
            raise _fail(self, "content", "a ContentParams", type(self.content).__name__)
        if self.workload is None:
            region = min(memory, 64 * MIB) >> PAGE_SHIFT
            _set(self, "workload", IdleParams(region_pages=region, content=self.content))
        self._check_workload()

    def _check_workload(self) -> None:
        workload = self.workload
        if not isinstance(workload, WORKLOAD_TYPES):
            raise _fail(self, "workload", "workload parameters (UniformParams, ZipfParams, ...)",
                        type(workload).__name__)
        n_processes = self.guest.n_processes
        if workload.process >= n_processes:
            raise ConfigError(f"VmConfig.workload.process: expected a process of the guest "
                              f"(0..{n_processes - 1}; set guest processes), "
                              f"found {workload.process}")
        span = workload_span_pages(workload)
        room = self.memory_bytes + self.guest.swap_bytes  # type: ignore[operator]
        if span is not None and span << PAGE_SHIFT > room:
            key = "map_pages" if isinstance(workload, ReplayParams) else "region_pages"
            raise ConfigError(
                f"VmConfig.workload.{key}: expected at most the VM's memory plus its guest "
                f"swap ({_exact(self.memory_bytes)} + "
                f"{_exact(self.guest.swap_bytes)} = {_exact(room)}; a larger region "
                f"could never be resident), found {_exact(span << PAGE_SHIFT)}")

    @property
    def memory_pages(self) -> int:
        """Configured memory in 4 KiB pages."""
        return self.memory_bytes >> PAGE_SHIFT

    @property
    def balloon_max_pages(self) -> int:
        """Most pages the balloon may hold: the VM's own cap, else 65 % of memory."""
        if self.guest.balloon_max_bytes is not None:
            return self.guest.balloon_max_bytes >> PAGE_SHIFT
        return int(self.memory_pages * BALLOON_MAX_DEFAULT_FRAC)

    def guest_config(self) -> GuestConfig:
        """The guest kernel's configuration for this VM."""
        g = self.guest
        return GuestConfig(memory_pages=self.memory_pages,
                           swap_pages=(g.swap_bytes or 0) >> PAGE_SHIFT,
                           swap_device=g.swap_device, reclaim_policy=g.reclaim_policy,
                           n_processes=g.n_processes)

    def running_at(self, t_ns: int) -> bool:
        """True if the VM is powered on at ``t_ns``."""
        return self.power_on_ns <= t_ns and (self.power_off_ns is None or t_ns < self.power_off_ns)


# ------------------------------------------------------------------ scenario


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole simulation: host, policy, VMs (``count`` already expanded), costs and run length."""

    name: str = "scenario"  # names the run and its results directory
    description: str = ""  # what the scenario shows, for reports
    duration_ns: int = 10 * 60 * NS_PER_S  # simulated time to run, a whole number of ticks
    tick_ns: int = DEFAULT_TICK_NS  # workload step: each VM touches one batch per tick
    seed: int = 0  # the one seed every random stream derives from
    fidelity: str = Fidelity.PAGE  # "page" (sampled pages per tick) or "mmu" (every reference)
    host: HostConfig = field(default_factory=HostConfig)  # the physical host
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # the memory policy
    vms: tuple[VmConfig, ...] = field(default_factory=lambda: (VmConfig(),))  # the VMs
    timing: CostTable = DEFAULT_COSTS  # per-event costs in ns (defaults with overrides)
    backend: BackendConfig = field(default_factory=BackendConfig)  # simulated or real guests

    def __post_init__(self) -> None:
        _check_name(self, "name")
        if not isinstance(self.description, str):
            raise _fail(self, "description", "a string", _show(self.description))
        _check_time(self, "tick_ns", positive=True)
        _check_time(self, "duration_ns", positive=True)
        if self.duration_ns % self.tick_ns:
            raise _fail(self, "duration_ns", f"a whole number of ticks of "
                        f"{format_time(self.tick_ns)}", format_time(self.duration_ns))
        if not _is_int(self.seed) or self.seed < 0:
            raise _fail(self, "seed", "a whole number >= 0", _show(self.seed))
        _check_choice(self, "fidelity", FIDELITIES)
        for name, cls in (("host", HostConfig), ("policy", PolicyConfig), ("timing", CostTable),
                          ("backend", BackendConfig)):
            if not isinstance(getattr(self, name), cls):
                raise _fail(self, name, f"a {cls.__name__}", type(getattr(self, name)).__name__)
        if not isinstance(self.vms, tuple | list) or not self.vms:
            raise _fail(self, "vms", "at least one VM", _show(self.vms))
        vms = []
        seen: dict[str, int] = {}
        for i, vm in enumerate(self.vms):
            if not isinstance(vm, VmConfig):
                raise ConfigError(f"Scenario.vms[{i}]: expected a VmConfig, "
                                  f"found {type(vm).__name__}")
            if vm.name in seen:
                raise ConfigError(f"Scenario.vms[{i}].name: expected a name no other VM has, "
                                  f"found {vm.name!r} (VM {seen[vm.name] + 1} has it too)")
            seen[vm.name] = i
            if vm.power_on_ns >= self.duration_ns:
                raise ConfigError(f"Scenario.vms[{i}].power_on_ns: expected a time before the "
                                  f"end of the run ({format_time(self.duration_ns)}), "
                                  f"found {format_time(vm.power_on_ns)}")
            if vm.workload.fidelity != self.fidelity:  # type: ignore[union-attr]
                vm = replace(vm, workload=with_fidelity(vm.workload, self.fidelity))
            vms.append(vm)
        _set(self, "vms", tuple(vms))
        self._check_admission()

    def _check_admission(self) -> None:
        """Admission control at time 0: reservations + overheads must fit [OSDI02 §6.2]."""
        total = 0
        for i, vm in enumerate(self.vms):
            if not vm.running_at(0):
                continue
            need = vm.reservation_bytes + vm.overhead_bytes  # type: ignore[operator]
            total += need
            if total > self.host.memory_bytes:
                raise ConfigError(
                    f"Scenario.vms[{i}].reservation_bytes: expected the reservations plus "
                    f"overheads of the VMs powered on at time 0 to fit the host's memory "
                    f"({_mib(self.host.memory_bytes)}), found {_mib(total)} once {vm.name!r} "
                    f"is added (reservation {_mib(vm.reservation_bytes)} + overhead "
                    f"{_mib(vm.overhead_bytes)}): admission control would refuse to power "
                    "it on")

    @property
    def n_ticks(self) -> int:
        """Ticks in the run."""
        return self.duration_ns // self.tick_ns

    def vm(self, name: str) -> VmConfig:
        """The VM of that name.

        Raises:
            KeyError: no VM has that name.
        """
        for vm in self.vms:
            if vm.name == name:
                return vm
        raise KeyError(name)
