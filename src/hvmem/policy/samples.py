"""Samples and plans: what a policy sees of a host and its VMs, and what it decides.

What is modelled
----------------
The policy layer is pure: it never touches pages, guests or QEMU. A backend (the
page-level simulator, or the controller of real QEMU/KVM guests) observes the
host once per balance period and hands the policy one :class:`HostSample` and
one :class:`VmSample` per VM; the policy answers with a :class:`Plans` mapping,
one :class:`VmPlan` per powered-on VM plus one :class:`HostPlan`, which the
backend applies (docs/architecture.md, the policy interface). The field names
below are the contract between policies and backends: keep them stable, add
fields with defaults.

Conventions: every size is in MiB (``*_mib``), every rate per second
(``*_mib_s``), every time in seconds (``*_s``), fractions in [0, 1] (``*_frac``).
Sizes of a VM are *machine* (host-physical) memory unless the name says
otherwise (``guest_*`` fields are what the guest OS reports about its own
guest-physical memory).

Accounting a backend must respect (the ESX counters [PERFCTR40])::

    host:  total = free + sum(consumed + overhead of powered-on VMs) + other host use
    VM:    configured >= consumed + balloon + swapped (+ never-touched pages)

``consumed`` is machine memory backing the VM's guest-physical pages, after
sharing (a shared frame counts once per host, split among its sharers or
charged to one of them: the backend's choice, as long as the host identity
holds). ``compressed`` pages are counted in ``compressed_mib``, not in
``consumed_mib``; their compression cache is counted in ``overhead_mib`` or
``consumed_mib`` (the backend's choice; the policy only needs the identity above).

Per-VM controls
---------------
* ``reservation_mib``: guaranteed minimum (``sched.mem.min``) [OSDI02 §6.1]
  [VS-ALLOC]; a target is never below it.
* ``limit_mib``: ceiling (None = unlimited); a target never exceeds
  ``min(configured, limit)`` [VS-ALLOC].
* ``shares``: relative priority. vSphere presets are 5/10/20 shares per MB of
  configured memory for low/normal/high [VS-SHARES][ESX25-p341]
  (:data:`SHARES_PER_MIB`, :func:`shares_for`). 0 shares means "allocate exactly
  the minimum" [ESX25-p341].
* ``balloon_max_mib``: how far the balloon may inflate, by default
  ``Mem.CtlMaxPercent`` = 65 % of configured memory [VS4-ATTR][LAMW], or the
  per-VM ``sched.mem.maxmemctl`` if smaller [VS-BALLOON][NERDBLURT]
  (:func:`balloon_max_for`). 0 means the VM has no working balloon driver.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from hvmem.errors import ConfigError, InvariantViolation
from hvmem.policy.states import DEFAULT_PROFILE, MemState, get_profile

__all__ = [
    "DEFAULT_CTL_MAX_FRAC",
    "SHARES_PER_MIB",
    "HostPlan",
    "HostSample",
    "Plans",
    "SharingMode",
    "VmPlan",
    "VmSample",
    "balloon_max_for",
    "powered_on",
    "shares_for",
]

#: Shares per MiB of configured memory for the vSphere presets low/normal/high
#: (5/10/20 per MB, 1:2:4) [VS-SHARES][ESX25-p341].
SHARES_PER_MIB: Mapping[str, int] = MappingProxyType({"low": 5, "normal": 10, "high": 20})

#: ``Mem.CtlMaxPercent``: the largest balloon, as a fraction of configured memory
#: (65 %, ESX/ESXi 4.0 to 9.0.1) [VS4-ATTR][LAMW].
DEFAULT_CTL_MAX_FRAC = 0.65


def shares_for(level: str | int, configured_mib: float) -> int:
    """The memory shares of a VM given as a preset name or an explicit number.

    Args:
        level: ``"low"``, ``"normal"`` or ``"high"`` (5/10/20 shares per MiB of
            configured memory [VS-SHARES]), or a non-negative number of shares.
        configured_mib: the VM's configured memory in MiB.

    Returns:
        The number of shares (rounded to a whole number for presets).

    Raises:
        ConfigError: an unknown preset or a negative number.
    """
    if isinstance(level, str):
        per_mib = SHARES_PER_MIB.get(level.lower())
        if per_mib is None:
            raise ConfigError(
                f"shares: expected {', '.join(SHARES_PER_MIB)} or a number, found {level!r}"
            )
        return round(per_mib * _size(configured_mib, "configured_mib", "shares"))
    if isinstance(level, bool) or not isinstance(level, numbers.Integral) or level < 0:
        raise ConfigError(f"shares: expected a non-negative whole number, found {level!r}")
    return int(level)


def balloon_max_for(
    configured_mib: float,
    *,
    ctl_max_frac: float = DEFAULT_CTL_MAX_FRAC,
    maxmemctl_mib: float | None = None,
) -> float:
    """The largest balloon of a VM: ``min(ctl_max_frac x configured, maxmemctl)``.

    ``Mem.CtlMaxPercent`` (65 % by default) caps every VM; ``sched.mem.maxmemctl``
    lowers it for one VM [VS-BALLOON][NERDBLURT].

    Raises:
        ConfigError: a fraction outside [0, 1) or a negative size.
    """
    size = _size(configured_mib, "configured_mib", "balloon")
    if not 0.0 <= ctl_max_frac < 1.0:
        raise ConfigError(
            f"ctl_max_frac: must be in [0, 1) (Mem.CtlMaxPercent 0-99 %), found {ctl_max_frac}"
        )
    cap = ctl_max_frac * size
    if maxmemctl_mib is not None:
        cap = min(cap, _size(maxmemctl_mib, "maxmemctl_mib", "balloon"))
    return cap


def _size(value: float, what: str, owner: str, *, error: type[Exception] = ConfigError) -> float:
    """A finite, non-negative number (MiB, MiB/s or s), else ``error`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{owner}: {what} must be a number, found {value!r}")
    if not math.isfinite(value) or value < 0:
        raise error(f"{owner}: {what} must be finite and non-negative, found {value}")
    return float(value)


# -- samples ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VmSample:
    """One VM as a backend observes it at the start of a balance period.

    Configuration (a bad value raises :class:`~hvmem.errors.ConfigError`):

    Attributes:
        name: unique VM name; plans are keyed by it.
        configured_mib: guest-physical memory size ("max" [OSDI02 §6.1]).
        reservation_mib: guaranteed minimum of machine memory [VS-ALLOC].
        limit_mib: ceiling on machine memory, None = unlimited [VS-ALLOC].
        shares: memory shares (see :func:`shares_for`).
        balloon_max_mib: largest balloon the host may ask for (see
            :func:`balloon_max_for`); 0 = no usable balloon driver.
        overhead_mib: virtualization overhead (page tables, frame buffer, VMX);
            counted by admission control [OSDI02 §6.2] and outside ``consumed_mib``.
        powered_on: False for a VM that is defined but not running; policies
            ignore it (no plan).

    Observations (a negative or non-finite value raises
    :class:`~hvmem.errors.InvariantViolation`: a backend bug):

    Attributes:
        consumed_mib: machine memory backing the VM now [PERFCTR40].
        active_mib: estimated working set (ESX sampling [OSDI02 §5.3]).
        balloon_mib: current balloon size (guest pages pinned by the driver).
        balloon_target_mib: balloon target currently set in the driver.
        balloon_stuck: the driver does not follow its target (missing, disabled,
            not progressing); the planner then swaps instead [OSDI02 §3.2]
            [VS-SWAPWHEN].
        swapped_mib: pages in the host swap file.
        compressed_mib: guest pages held in the compression cache (their
            uncompressed size).
        shared_saved_mib: machine memory saved by page sharing for this VM.
        guest_free_mib: free memory the guest reports (virtio-balloon
            stat-free-memory, MemFree); None if unknown.
        guest_available_mib: memory the guest could free easily (MemAvailable);
            None if unknown.
        swap_in_rate_mib_s: host swap-in rate of this VM over the last period.
        psi_some_frac: share of recent time at least one of the VM's tasks stalled
            on memory (Linux PSI ``some``, avg10 of its cgroup's memory.pressure;
            simulated: swap-in and decompression time since the last sample);
            None where nothing measures it.
    """

    name: str
    configured_mib: float
    shares: int
    consumed_mib: float
    active_mib: float
    balloon_max_mib: float
    reservation_mib: float = 0.0
    limit_mib: float | None = None
    balloon_mib: float = 0.0
    balloon_target_mib: float = 0.0
    balloon_stuck: bool = False
    swapped_mib: float = 0.0
    compressed_mib: float = 0.0
    shared_saved_mib: float = 0.0
    overhead_mib: float = 0.0
    guest_free_mib: float | None = None
    guest_available_mib: float | None = None
    swap_in_rate_mib_s: float = 0.0
    powered_on: bool = True
    psi_some_frac: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"VM name must be a non-empty string, found {self.name!r}")
        owner = f"vm {self.name}"
        configured = _size(self.configured_mib, "configured_mib", owner)
        if configured <= 0:
            raise ConfigError(f"{owner}: configured_mib must be positive, found {configured}")
        reservation = _size(self.reservation_mib, "reservation_mib", owner)
        if reservation > configured:
            raise ConfigError(
                f"{owner}: reservation {reservation:g} MiB exceeds configured memory "
                f"{configured:g} MiB"
            )
        if self.limit_mib is not None:
            limit = _size(self.limit_mib, "limit_mib", owner)
            if limit < reservation:
                raise ConfigError(
                    f"{owner}: limit {limit:g} MiB is below reservation {reservation:g} MiB"
                )
        if (
            isinstance(self.shares, bool)
            or not isinstance(self.shares, numbers.Integral)
            or self.shares < 0
        ):
            raise ConfigError(
                f"{owner}: shares must be a non-negative integer, found {self.shares!r}"
            )
        if _size(self.balloon_max_mib, "balloon_max_mib", owner) > configured:
            raise ConfigError(
                f"{owner}: balloon_max_mib {self.balloon_max_mib:g} exceeds configured "
                f"memory {configured:g} MiB"
            )
        _size(self.overhead_mib, "overhead_mib", owner)
        for what in (
            "consumed_mib",
            "active_mib",
            "balloon_mib",
            "balloon_target_mib",
            "swapped_mib",
            "compressed_mib",
            "shared_saved_mib",
            "swap_in_rate_mib_s",
        ):
            _size(getattr(self, what), what, owner, error=InvariantViolation)
        for what in ("guest_free_mib", "guest_available_mib"):
            if getattr(self, what) is not None:
                _size(getattr(self, what), what, owner, error=InvariantViolation)

    @property
    def ceiling_mib(self) -> float:
        """The most machine memory the VM may get: ``min(configured, limit)`` [VS-ALLOC]."""
        if self.limit_mib is None:
            return self.configured_mib
        return min(self.configured_mib, self.limit_mib)

    @property
    def reclaimed_mib(self) -> float:
        """Memory taken from the VM by the host: balloon + swapped + compressed."""
        return self.balloon_mib + self.swapped_mib + self.compressed_mib

    @property
    def active_frac(self) -> float:
        """Active memory as a fraction of consumed memory (1.0 when nothing is consumed)."""
        if self.consumed_mib <= 0:
            return 1.0
        return min(1.0, self.active_mib / self.consumed_mib)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostSample:
    """The host as a backend observes it at the start of a balance period.

    Attributes:
        time_s: when the sample was taken (simulated or wall-clock seconds).
        total_mib: machine memory the hypervisor manages [VMWAREBITS].
        free_mib: free machine memory (what the memory states are measured on).
        state: the host memory state, tracked by the backend with
            :class:`~hvmem.policy.state_tracker.StateTracker` (esxtop's "state").
        minfree_mib: the host's minFree (:func:`~hvmem.policy.minfree.minfree_mib`):
            the free memory ESX steers towards.
        profile: memory-state profile ("esx4", "esxi5", "esxi6"); decides which
            actions a state allows (:func:`~hvmem.policy.states.actions`).
        cache_mib: host page cache and buffers that a Linux host counts as
            reclaimable (Buffers + Cached); 0 for the simulator. MOM and Proxmox
            count it as free [MOM][PVE-BALLOON].
        shared_saved_mib: machine memory saved by page sharing on the whole host
            (KSM: ``pages_sharing`` x 4 KiB).
        sharing_pages_to_scan: the sharing scanner's current pages per scan
            (KSM ``pages_to_scan``) where the backend has one, else None.
        swap_in_rate_mib_s: host-wide swap-in rate over the last period.
        swap_out_rate_mib_s: host-wide swap-out rate over the last period.
        psi_some_frac, psi_full_frac: the host's memory pressure (Linux PSI
            ``/proc/pressure/memory``, avg10 as a fraction: some task stalled,
            all non-idle tasks stalled); None where nothing measures it.
    """

    time_s: float
    total_mib: float
    free_mib: float
    state: MemState
    minfree_mib: float
    profile: str = DEFAULT_PROFILE
    cache_mib: float = 0.0
    shared_saved_mib: float = 0.0
    sharing_pages_to_scan: int | None = None
    swap_in_rate_mib_s: float = 0.0
    swap_out_rate_mib_s: float = 0.0
    psi_some_frac: float | None = None
    psi_full_frac: float | None = None

    def __post_init__(self) -> None:
        owner = "host sample"
        if (
            isinstance(self.time_s, bool)
            or not isinstance(self.time_s, numbers.Real)
            or (not math.isfinite(self.time_s))
        ):
            raise InvariantViolation(
                f"{owner}: time_s must be a finite number, found {self.time_s!r}"
            )
        if _size(self.total_mib, "total_mib", owner, error=InvariantViolation) <= 0:
            raise InvariantViolation(f"{owner}: total_mib must be positive")
        for what in (
            "free_mib",
            "minfree_mib",
            "cache_mib",
            "shared_saved_mib",
            "swap_in_rate_mib_s",
            "swap_out_rate_mib_s",
        ):
            _size(getattr(self, what), what, owner, error=InvariantViolation)
        if not isinstance(self.state, MemState):
            raise InvariantViolation(f"{owner}: state must be a MemState, found {self.state!r}")
        profile = get_profile(self.profile)  # ConfigError for an unknown profile
        if self.state not in profile.states:
            raise InvariantViolation(
                f"{owner}: profile {profile.name} has no {self.state.label} state"
            )

    @property
    def used_mib(self) -> float:
        """Memory in use, page cache excluded: ``total - free - cache`` (never negative)."""
        return max(0.0, self.total_mib - self.free_mib - self.cache_mib)


# -- plans ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class VmPlan:
    """What a policy wants done to one VM until the next balance period.

    Attributes:
        target_mib: the VM's entitlement: machine memory it should have (ESX
            "memory target"; for balloon-only policies, the guest memory size
            they aim at).
        balloon_target_mib: total balloon size to set in the guest driver.
        swap_target_mib: total memory the host should hold swapped or compressed
            for this VM. A floor the backend works up to, never a cap: it swaps
            out (compressing first if ``compress``) while the VM's ``swapped +
            compressed`` is below it (the simulator every tick while the host
            is in HARD or LOW, as touched pages come back), and never swaps in
            just because it is above (pages come back when touched).
        compress: compress swap candidates before writing them to swap
            (ESX 4.1+ [VI-41]).
        blocked: the VM may not allocate new machine memory (LOW state, VM above
            its target [OSDI02 §6.3][YB-STATES6]).
    """

    target_mib: float
    balloon_target_mib: float
    swap_target_mib: float
    compress: bool = False
    blocked: bool = False

    def __post_init__(self) -> None:
        for what in ("target_mib", "balloon_target_mib", "swap_target_mib"):
            _size(getattr(self, what), what, "VM plan", error=InvariantViolation)


class SharingMode(StrEnum):
    """What the page-sharing scanner (TPS, KSM) should do (KSM ``run`` 1/0/2)."""

    RUN = "run"  # scan and merge (ksm run=1)
    STOP = "stop"  # stop scanning, keep what is shared (ksm run=0)
    UNMERGE = "unmerge"  # break every shared page (ksm run=2)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostPlan:
    """Host-wide decisions: page-sharing knobs, plus what the plan was based on.

    Attributes:
        sharing: what the sharing scanner should do; None = the policy does not
            manage sharing, the backend keeps its own default.
        scan_pages: pages per scan cycle (KSM ``pages_to_scan``); None = default.
        scan_sleep_ms: pause between scan cycles (KSM ``sleep_millisecs``); None =
            default.
        break_large_pages: split large pages so that their small pages can be
            shared (ESXi 6 CLEAR and below [YB-STATES6]).
        state: the host memory state the plan was made in (None when the policy
            does not use states).
        available_mib: memory the policy handed out to VMs (None if not computed).
    """

    sharing: SharingMode | None = SharingMode.RUN
    scan_pages: int | None = None
    scan_sleep_ms: float | None = None
    break_large_pages: bool = False
    state: MemState | None = None
    available_mib: float | None = None

    @property
    def scan_rate_pages_s(self) -> float | None:
        """Pages scanned per second (``scan_pages / scan_sleep``), None unless both are set."""
        if self.scan_pages is None or not self.scan_sleep_ms:
            return None
        return self.scan_pages * 1000.0 / self.scan_sleep_ms


def powered_on(vms: Sequence[VmSample]) -> list[VmSample]:
    """The VMs of a sample that are powered on (the only ones a policy plans for)."""
    return [vm for vm in vms if vm.powered_on]


@dataclass(frozen=True)
class Plans(Mapping[str, VmPlan]):
    """A policy's answer: a read-only mapping VM name -> :class:`VmPlan`, plus ``host``.

    Behaves as ``Mapping[str, VmPlan]`` (docs/architecture.md), so a backend that only
    applies per-VM plans needs nothing else; ``host`` carries the sharing knobs.
    Holds one entry per powered-on VM of the sample.
    """

    vms: Mapping[str, VmPlan]
    host: HostPlan = field(default_factory=HostPlan)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vms", MappingProxyType(dict(self.vms)))

    def __getitem__(self, name: str) -> VmPlan:
        return self.vms[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.vms)

    def __len__(self) -> int:
        return len(self.vms)

    def __repr__(self) -> str:
        return f"Plans(vms={dict(self.vms)!r}, host={self.host!r})"
