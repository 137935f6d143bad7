"""Typed scenario configuration: one frozen dataclass per part of a simulated host.

What is modelled
----------------
A :class:`Scenario` is everything one simulation run needs, and nothing it
computes: the host (:class:`HostConfig`, with :class:`SharingConfig` and
:class:`CompressionConfig`, declared in :mod:`hvmem.scenario.host_config` with
:class:`BackendConfig`), the memory policy (:class:`PolicyConfig`), the VMs
(:class:`VmConfig`, each with :class:`GuestSettings`, a workload and a page
content mix) and the cost table (:class:`~hvmem.hardware.timing.CostTable`).
``scenario/loader.py`` builds one from TOML; code may build one directly.

Every field carries its unit in its name (``_bytes``, ``_ns``, ``_frac``,
``_pages_per_s``) and is declared once (:mod:`hvmem.params`): TOML key, kind,
unit, default, bounds, a one-line description and its source. Sizes are bytes
(whole 4 KiB pages), times integer nanoseconds. Each class checks its declared
fields on construction, then the rules between fields below, and raises
:class:`~hvmem.errors.ConfigError` at ``(Class, field)``
(``VmConfig.reservation_bytes: expected ..., found ...``); the loader moves it
to the file and TOML path (``demo.toml: vm[2].reservation: ...``) through the
same declarations.

Defaults resolved on construction (so a built object is always explicit):

* ``VmConfig.shares`` None -> ``normal``: 10 shares per MiB of configured
  memory; ``low``/``normal``/``high`` are 5/10/20 per MiB (4:2:1)
  [VS-SHARES][ESX25-p341].
* ``VmConfig.overhead_bytes`` None -> 32 MiB + 1 % of configured memory,
  rounded up to a page. **Assumed**: no source gives an overhead table;
  "typical overhead 32 MB per VM ..., more for VMs > 1 GB" [OSDI02 §6.2], and
  real overheads vary with vCPUs, devices and version [VS601-OVHD].
* ``GuestSettings.swap_bytes`` None -> the VM's configured memory.
* The host's defaults (compression, sampling, scan rates, large pages) come
  from its profile: :mod:`hvmem.scenario.host_config`.
* ``GuestSettings.balloon_max_bytes`` stays None: the host's cap applies,
  ``Mem.CtlMaxPercent`` = 65 % of configured memory ([LAMW], as
  ``sched.mem.maxmemctl`` = -1 [NERDBLURT]).

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

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from hvmem.errors import ConfigError
from hvmem.guest.config import GuestConfig
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hypervisor.reclaim.balloon import CTL_MAX_FRAC
from hvmem.params import check, choice, fail, flag, size, table, text, time, whole
from hvmem.policy.entitlement import DEFAULT_TAX_FRAC, MAX_TAX_FRAC
from hvmem.policy.policies import POLICY_NAMES, PolicyConfig
from hvmem.policy.samples import SHARES_PER_MIB
from hvmem.replacement.names import RECLAIM_POLICIES
from hvmem.scenario.events import EventConfig, check_events
from hvmem.scenario.host_config import (
    BACKEND_KINDS,
    DEFAULT_COMPRESSION_MAX_FRAC,
    MAX_HOST_BYTES,
    MAX_TICK_NS,
    SWAP_DEVICES,
    BackendConfig,
    CompressionConfig,
    HostConfig,
    SharingConfig,
    bytes_field,
    resolve,
)
from hvmem.units import (
    GIB,
    MIB,
    NS_PER_MS,
    NS_PER_S,
    PAGE_SHIFT,
    PAGE_SIZE_BYTES,
    TIB,
    format_size,
    format_time,
)
from hvmem.workloads.base import Fidelity
from hvmem.workloads.content import ContentParams
from hvmem.workloads.demand import DemandParams
from hvmem.workloads.replay import ReplayParams
from hvmem.workloads.synthetic import (
    MAX_PROCESSES,
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
    "BACKEND_KINDS",
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
    "BackendConfig",
    "CompressionConfig",
    "GuestSettings",
    "HostConfig",
    "PolicyConfig",
    "Scenario",
    "SharingConfig",
    "VmConfig",
    "WorkloadParams",
    "default_overhead_bytes",
    "shares_for",
    "workload_span_pages",
]

#: Fixed part of the default per-VM overhead: "typical overhead 32 MB" [OSDI02 §6.2].
OVERHEAD_BASE_BYTES = 32 * MIB
#: Part of the default overhead that grows with memory. **Assumed** (no table in the
#: reference; OSDI02 §6.2 says only "more for VMs > 1 GB").
OVERHEAD_FRAC = 0.01
#: Simulation fidelities (docs/architecture.md, data layout and speed).
FIDELITIES = tuple(str(f) for f in Fidelity)
#: A scenario's fidelities: a workload's, and masses of pages instead of pages (aggregate/).
SCENARIO_FIDELITIES = (*FIDELITIES, "aggregate")
#: Default tick: 1 simulated second (docs/architecture.md, data layout and speed).
DEFAULT_TICK_NS = NS_PER_S
#: ``Mem.BalancePeriod`` = 15 s (declared with :class:`PolicyConfig`).
DEFAULT_BALANCE_PERIOD_NS = PolicyConfig().balance_period_ns
#: ``Mem.IdleTax`` = 75 % and its largest value, 99 % (:mod:`hvmem.policy.entitlement`).
DEFAULT_IDLE_TAX_FRAC = DEFAULT_TAX_FRAC
MAX_IDLE_TAX_FRAC = MAX_TAX_FRAC
#: ``Mem.CtlMaxPercent`` = 65 %: the host's balloon cap when a VM sets none [VS4-ATTR][LAMW].
BALLOON_MAX_DEFAULT_FRAC = CTL_MAX_FRAC

#: A workload's parameters: one of the workload modules' Params classes.
WorkloadParams = (UniformParams | ZipfParams | HotColdParams | ScanParams | IdleParams
                  | PhasesParams | ChurnParams | ReplayParams | DemandParams)
#: The classes of :data:`WorkloadParams`, for ``isinstance``.
WORKLOAD_TYPES = (UniformParams, ZipfParams, HotColdParams, ScanParams, IdleParams,
                  PhasesParams, ChurnParams, ReplayParams, DemandParams)

# At most 128 characters: a scenario's name goes into its results directory's name.
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}"
_NAME_EXPECT = ("a name of letters, digits, '-', '_' and '.' (not starting with a punctuation "
                "mark), at most 128 characters")
_MAX_SALT = (1 << 63) - 1
# Bounds a real VM fits in (assumed: ESXi 8 takes 24 TB VMs; the model keeps frame
# numbers of a VM in int32, so a VM stays below 8 TiB).
_MAX_VM_BYTES = 6 * TIB
_MAX_OVERHEAD_BYTES = 1 * TIB
# A simulated run: ticks of 1 ms to 1 h, runs of up to 30 days; a VM's times alike.
_MIN_TICK_NS = NS_PER_MS
_MAX_RUN_NS = 30 * 86400 * NS_PER_S


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
            raise ConfigError(f"expected low, normal, high or a whole number of shares, "
                              f"found {level!r}", path=("shares",))
        return round(per_mib * memory_bytes / MIB)
    if isinstance(level, bool) or not isinstance(level, int) or level < 0:
        raise ConfigError(f"expected a whole number >= 0, found {level!r}", path=("shares",))
    return int(level)


def default_overhead_bytes(memory_bytes: int) -> int:
    """The assumed overhead of a VM: 32 MiB + 1 % of its memory, rounded up to a page.

    **Assumption**, see the module essay: 32 MiB is OSDI02's typical overhead,
    the 1 % stands for what grows with memory (the pmap, page tables).
    """
    size_bytes = OVERHEAD_BASE_BYTES + math.ceil(OVERHEAD_FRAC * memory_bytes)
    return -(-size_bytes // PAGE_SIZE_BYTES) * PAGE_SIZE_BYTES


def workload_span_pages(params: object) -> int | None:
    """Guest-virtual pages a workload maps at most (None: not known before a replay reads it)."""
    if isinstance(params, ReplayParams):
        return params.map_pages
    return int(params.region_pages)  # type: ignore[attr-defined]


def _exact(size_bytes: int | None) -> str:
    """A size with the largest binary unit that divides it ("1028 MiB", "2 GiB")."""
    value = size_bytes or 0
    for unit, scale in (("TiB", 1 << 40), ("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if value and value % scale == 0:
            return f"{value // scale} {unit}"
    return format_size(value) if value >= MIB else f"{value} B"


def _mib(size_bytes: int | None) -> str:
    """A size in MiB, exact to 1/100 MiB (comparable within one message)."""
    return f"{(size_bytes or 0) / MIB:.2f} MiB".replace(".00 MiB", " MiB")


# ------------------------------------------------------------------ VMs


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestSettings:
    """The guest OS inside a VM: its swap, page reclaim, processes and balloon driver."""

    swap_bytes: int | None = bytes_field(None, "guest swap", hi=MAX_HOST_BYTES, optional=True,
                                    none="as large as the VM's memory")
    swap_device: str = choice("ssd", SWAP_DEVICES, "the guest's swap device")
    reclaim_policy: str = choice("lru", RECLAIM_POLICIES, "guest page reclaim")
    n_processes: int = whole(1, "guest processes (ASIDs 1..n); workloads run in process "
                             "0..n-1", lo=1, hi=MAX_PROCESSES, key="processes")
    balloon_enabled: bool = flag(True, "the balloon driver is installed and running",
                                 key="balloon")
    deflate_on_oom: bool = flag(True, "the guest may take pages back from the balloon on OOM")
    free_page_reporting: bool = flag(False, "the guest reports free pages (virtio-balloon)")
    balloon_max_bytes: int | None = bytes_field(
        None, "the largest balloon (sched.mem.maxmemctl)", hi=_MAX_VM_BYTES, optional=True,
        none="the host's cap, Mem.CtlMaxPercent 65 % of memory", source="[VS4-ATTR][LAMW]")
    kernel_bytes_per_page: int = whole(64, "kernel memory per 4 KiB page of memory (page-frame "
                                       "array), kept when ballooned; 0: none", lo=0, hi=4096,
                                       source="Linux struct page; [OSDI02 §3.2]")

    def __post_init__(self) -> None:
        check(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class VmConfig:
    """One VM: its memory, resource controls, lifetime, guest, workload and page contents."""

    name: str = text("vm1", "unique in the scenario", pattern=_NAME, expect=_NAME_EXPECT,
                     required=True)
    memory_bytes: int = size(1 * GIB, "configured guest-physical memory", lo=0, lo_open=True,
                             hi=_MAX_VM_BYTES, required=True)
    reservation_bytes: int = bytes_field(0, "sched.mem.min: guaranteed machine memory",
                                    hi=_MAX_VM_BYTES, source="[OSDI02 §6.1][VS-ALLOC]")
    limit_bytes: int | None = size(None, "sched.mem.max: ceiling", lo=0, lo_open=True,
                                   hi=_MAX_VM_BYTES, optional=True, none="unlimited",
                                   none_word="unlimited", source="[VS-ALLOC]")
    shares: int | str | None = whole(None, "proportional shares: a number, or low, normal, high "
                                     "(5, 10, 20 per MiB of memory)", lo=0, hi=10**9,
                                     levels=tuple(SHARES_PER_MIB), optional=True,
                                     none="normal, 10 per MiB of memory",
                                     source="[VS-SHARES][ESX25-p341]")
    overhead_bytes: int | None = bytes_field(None, "reserved at power-on beside the guest's memory",
                                        hi=_MAX_OVERHEAD_BYTES, optional=True,
                                        none="32 MiB + 1 % of memory (assumed)",
                                        source="[OSDI02 §6.2]; the 1 % is assumed")
    power_on_ns: int = time(0, "when the VM powers on", lo=0, hi=_MAX_RUN_NS)
    power_off_ns: int | None = time(None, "when it powers off", lo=0, hi=_MAX_RUN_NS,
                                    optional=True, none="never", none_word="never")
    salt: int | None = whole(None, "page-sharing salt under \"explicit\" salting", lo=0,
                             hi=_MAX_SALT, optional=True, none="salt 0")
    guest: GuestSettings = table(GuestSettings, "the guest OS", factory=GuestSettings)
    workload: WorkloadParams | None = table(
        WORKLOAD_TYPES, "what runs: a kind and its parameters", default=None, optional=True,
        none="idle over min(memory, 64 MiB)",
        expect="workload parameters (UniformParams, ZipfParams, ...)")
    content: ContentParams = table(ContentParams, "the guest image and the page mix of its "
                                   "writes", factory=ContentParams)

    def __post_init__(self) -> None:
        check(self)
        memory = self.memory_bytes
        if self.reservation_bytes > memory:
            raise fail(self, "reservation_bytes", f"at most the VM's memory ({_exact(memory)})",
                       _exact(self.reservation_bytes))
        if self.limit_bytes is not None and self.limit_bytes < self.reservation_bytes:
            raise fail(self, "limit_bytes", f"at least the reservation "
                       f"({_exact(self.reservation_bytes)}) and more than 0",
                       _exact(self.limit_bytes))
        if self.shares is None or isinstance(self.shares, str):
            resolve(self, "shares", shares_for(self.shares or "normal", memory))
        if self.overhead_bytes is None:
            resolve(self, "overhead_bytes", default_overhead_bytes(memory))
        if self.power_off_ns is not None and self.power_off_ns <= self.power_on_ns:
            raise fail(self, "power_off_ns", f"a time after power-on "
                       f"({format_time(self.power_on_ns)})", format_time(self.power_off_ns))
        if self.guest.swap_bytes is None:
            resolve(self, "guest", replace(self.guest, swap_bytes=memory))
        balloon_max = self.guest.balloon_max_bytes
        if balloon_max is not None and balloon_max > memory:
            raise ConfigError(f"expected at most the VM's memory ({_exact(memory)}), found "
                              f"{_exact(balloon_max)}",
                              path=("VmConfig", "guest", "balloon_max_bytes"))
        if self.workload is None:
            region = min(memory, 64 * MIB) >> PAGE_SHIFT
            resolve(self, "workload", IdleParams(region_pages=region, content=self.content))
        if isinstance(self.workload, DemandParams) and self.workload.region_pages is None:
            resolve(self, "workload", replace(self.workload, region_pages=self.memory_pages))
        self._check_workload()

    def _check_workload(self) -> None:
        workload = self.workload
        n_processes = self.guest.n_processes
        if workload.process >= n_processes:  # type: ignore[union-attr]
            raise ConfigError(f"expected a process of the guest (0..{n_processes - 1}; set "
                              f"guest processes), found {workload.process}",  # type: ignore
                              path=("VmConfig", "workload", "process"))
        span = workload_span_pages(workload)
        room = self.memory_bytes + self.guest.swap_bytes  # type: ignore[operator]
        if span is not None and span << PAGE_SHIFT > room:
            field_name = "map_pages" if isinstance(workload, ReplayParams) else "region_pages"
            raise ConfigError(
                f"expected at most the VM's memory plus its guest swap "
                f"({_exact(self.memory_bytes)} + {_exact(self.guest.swap_bytes)} = "
                f"{_exact(room)}; a larger region could never be resident), found "
                f"{_exact(span << PAGE_SHIFT)}", path=("VmConfig", "workload", field_name))

    @property
    def memory_pages(self) -> int:
        """Configured memory in 4 KiB pages."""
        return self.memory_bytes >> PAGE_SHIFT

    @property
    def cap_pages(self) -> int | None:
        """The pages the VM may hold under its limit; None when the limit does not bind.

        A limit at or above the VM's memory binds nothing. Both fidelities hold a VM to this
        in every host state [VS-ALLOC].
        """
        if self.limit_bytes is None or self.limit_bytes >= self.memory_bytes:
            return None
        return self.limit_bytes >> PAGE_SHIFT

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
                           n_processes=g.n_processes,
                           kernel_bytes_per_page=g.kernel_bytes_per_page)

    def running_at(self, t_ns: int) -> bool:
        """True if the VM is powered on at ``t_ns``."""
        return self.power_on_ns <= t_ns and (self.power_off_ns is None or t_ns < self.power_off_ns)


# ------------------------------------------------------------------ scenario


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole simulation: host, policy, VMs (``count`` already expanded), costs and run length."""

    name: str = text("scenario", "names the run and its results directory (default in a "
                     "file: the file's name)", pattern=_NAME, expect=_NAME_EXPECT)
    description: str = text("", "what the scenario shows, for reports")
    duration_ns: int = time(10 * 60 * NS_PER_S, "simulated time to run, a whole number of "
                            "ticks", lo=_MIN_TICK_NS, hi=_MAX_RUN_NS, required=True)
    tick_ns: int = time(DEFAULT_TICK_NS, "workload step: each VM touches one batch per tick",
                        lo=_MIN_TICK_NS, hi=MAX_TICK_NS)
    seed: int = whole(0, "the one seed every random stream derives from", lo=0,
                      hi=(1 << 63) - 1)
    fidelity: str = choice(Fidelity.PAGE, SCENARIO_FIDELITIES, "\"page\" (sampled pages per "
                           "tick), \"mmu\" (every reference through the vCPU's MMU) or "
                           "\"aggregate\" (masses of pages by heat class and state)")
    host: HostConfig = table(HostConfig, "the physical host", factory=HostConfig,
                             required=True)
    policy: PolicyConfig = table(PolicyConfig, "the memory policy", factory=PolicyConfig)
    vms: tuple[VmConfig, ...] = table(VmConfig, "the VMs, one [[vm]] table each (count "
                                      "expanded)", factory=lambda: (VmConfig(),), array=True,
                                      key="vm", required=True)
    timing: CostTable = table(CostTable, "per-event costs in ns (defaults with overrides)",
                              default=DEFAULT_COSTS)
    backend: BackendConfig = table(BackendConfig, "where the VMs run: the simulator or real "
                                   "QEMU guests", factory=BackendConfig)
    events: tuple[EventConfig, ...] = table(EventConfig, "scheduled changes, one [[event]] "
                                            "table each (scenario/events.py)", factory=tuple,
                                            array=True, key="event")

    def __post_init__(self) -> None:
        check(self)
        if self.duration_ns % self.tick_ns:
            raise fail(self, "duration_ns", f"a whole number of ticks of "
                       f"{format_time(self.tick_ns)}", format_time(self.duration_ns))
        if not self.vms:
            raise fail(self, "vms", "at least one VM")
        vms = []
        seen: dict[str, int] = {}
        for i, vm in enumerate(self.vms):
            where = ("Scenario", "vms", i)
            if not isinstance(vm, VmConfig):
                raise ConfigError(f"expected a VmConfig, found {type(vm).__name__}", path=where)
            if vm.name in seen:
                raise ConfigError(f"expected a name no other VM has, found {vm.name!r} (VM "
                                  f"{seen[vm.name] + 1} has it too)", path=(*where, "name"))
            seen[vm.name] = i
            if vm.power_on_ns >= self.duration_ns:
                raise ConfigError(f"expected a time before the end of the run "
                                  f"({format_time(self.duration_ns)}), found "
                                  f"{format_time(vm.power_on_ns)}", path=(*where, "power_on_ns"))
            # Aggregate runs keep their workloads' page-fidelity parameters as classes.
            fidelity = Fidelity.PAGE if self.fidelity == "aggregate" else self.fidelity
            if vm.workload.fidelity != fidelity:  # type: ignore[union-attr]
                vm = replace(vm, workload=with_fidelity(vm.workload, fidelity))
            vms.append(vm)
        resolve(self, "vms", tuple(vms))
        self._check_admission()
        resolve(self, "events", tuple(self.events))
        check_events(self)

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
                    f"expected the reservations plus overheads of the VMs powered on at time 0 "
                    f"to fit the host's memory ({_mib(self.host.memory_bytes)}), found "
                    f"{_mib(total)} once {vm.name!r} is added (reservation "
                    f"{_mib(vm.reservation_bytes)} + overhead {_mib(vm.overhead_bytes)}): "
                    "admission control would refuse to power it on",
                    path=("Scenario", "vms", i, "reservation_bytes"))

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
