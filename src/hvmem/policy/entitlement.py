"""Share-based memory entitlement with the idle memory tax, and admission control.

What is modelled
----------------
ESX divides machine memory among VMs by *shares*, bounded below by each VM's
reservation and above by ``min(configured, limit)`` [OSDI02 §5.1, §6.1][VS-ALLOC].
When memory is scarce it is revoked from the VM that pays least for it
("dynamic min-funding revocation" [OSDI02 §5.1]); the price is the VM's shares
per allocated page, adjusted by the *idle memory tax* so that idle pages cost
more than active ones [OSDI02 §5.2]::

    rho = S / (P * (f + k * (1 - f))),    k = 1 / (1 - tau)

S shares, P allocated pages, f the fraction of them that is active, tau the tax
rate (``Mem.IdleTax`` = 75 % from ESX 1.5 to ESXi 9, so k = 4: "idle memory
costs 4x active" [OSDI02 §5.2][LAMW][METRON]). tau = 0 is pure proportional
share; tau -> 1 makes all idle memory reclaimable ("the tax rate specifies the
maximum fraction of idle pages that may be reclaimed from a client" [OSDI02 §5.2]).

The closed form used here (**derived**)
---------------------------------------
The paper reclaims one unit at a time from the lowest-rho VM ([OSDI02 §5.1-5.2],
:func:`min_funding_revocation` below). Its fixed point can be computed
directly. Hold each VM's working set ``A = active_mib`` fixed while its
allocation ``T`` changes (reclaiming idle pages does not shrink the working set,
so ``f = min(1, A / T)``). The denominator of rho becomes the *taxed cost* of an
allocation::

    cost(T) = T                      if T <= A      (every page active)
            = A + k * (T - A)        if T >  A      (idle pages cost k each)

and ``rho(T) = S / cost(T)``. At equilibrium every VM strictly between its
bounds has the same price ``lambda`` (no unit can move to a VM that pays more),
VMs held at their reservation pay at most ``lambda``, VMs at their ceiling at
least ``lambda``. With ``x = 1 / lambda``, VM i gets ``T_i(x) = clamp(g_i(x),
lo_i, hi_i)`` where ``g_i = cost_i^-1(S_i x)``::

    g_i(x) = S_i x                        if S_i x <= A_i
           = A_i + (S_i x - A_i) / k      otherwise

Each ``T_i`` is continuous, non-decreasing and piecewise linear in x, so the
x* with ``sum_i T_i(x*) = available`` is found exactly: evaluate the sum at
every breakpoint (where some g_i crosses lo_i, A_i or hi_i), find the segment
that brackets ``available`` and interpolate linearly (:func:`compute_targets`).
Three regimes:

* ``sum(hi) <= available``: nobody is constrained; every VM gets its ceiling.
* ``sum(lo) >= available``: reservations use everything; every VM gets its
  reservation (the sum then exceeds ``available``: reservations are guarantees,
  and admission control keeps them within host memory).
* otherwise the targets sum to ``available`` exactly (up to rounding).

Checks of the form: tau = 0 gives ``T_i proportional to S_i`` between bounds
(Fig. 7's two equal-share VMs at 179 MB each [OSDI02 §5.4]); a VM with 0 shares
gets exactly its reservation ("0 shares means allocate exactly min"
[ESX25-p341]). The progressive tax of modern ESXi (``Mem.IdleTaxType`` = 1) is
unpublished (docs/references.md, open question 4); this is the flat tax of ESX 1.5-4.x.

What "available" is (**derived**)
---------------------------------
ESX computes targets that "drive the aggregate amount of free space above the
high threshold" [OSDI02 §6.3]. The targets may therefore add up to what the VMs
hold now plus the free memory above the free target (:func:`available_for_vms_mib`)::

    available = sum(consumed of powered-on VMs) + free - free_target

so that reaching every target leaves exactly ``free_target`` free. Overheads
and the hypervisor's own memory are neither given nor taken.

Admission control
-----------------
A VM powers on only if unreserved machine memory covers its reservation plus
its overhead, and (ESX 1.5) unreserved swap covers ``configured - reservation``
[OSDI02 §6.2]. :func:`admit` answers with an
:class:`AdmissionResult` whose message names the VM and the numbers.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from hvmem.errors import ConfigError, InvariantViolation, OutOfMemoryError
from hvmem.policy.samples import HostSample, VmSample

__all__ = [
    "DEFAULT_TAX_FRAC",
    "MAX_TAX_FRAC",
    "AdmissionResult",
    "EntitlementResult",
    "adjusted_ratio",
    "admit",
    "available_for_vms_mib",
    "compute_targets",
    "idle_cost",
    "min_funding_revocation",
    "taxed_cost_mib",
]

#: ``Mem.IdleTax``: 75 % from ESX 1.5 to ESXi 9.0.1 [OSDI02 §5.2][ESX25-p343][LAMW].
DEFAULT_TAX_FRAC = 0.75

#: ``Mem.IdleTax`` accepts 0-99 % [LAMW]; a tax of 100 % would make idle memory free.
MAX_TAX_FRAC = 0.99


def idle_cost(tax_frac: float) -> float:
    """The idle page cost k = 1 / (1 - tau), relative to an active page [OSDI02 §5.2].

    tau = 0 -> 1, 0.5 -> 2, 0.75 -> 4, 0.9 -> 10 (docs/references.md, derived values).

    Raises:
        ConfigError: tau outside [0, 0.99] (``Mem.IdleTax`` 0-99 % [LAMW]).
    """
    if (
        isinstance(tax_frac, bool)
        or not isinstance(tax_frac, int | float)
        or not 0.0 <= tax_frac <= MAX_TAX_FRAC
    ):
        raise ConfigError(
            f"tax_frac: must be between 0 and {MAX_TAX_FRAC} "
            f"(Mem.IdleTax 0-99 %), found {tax_frac!r}"
        )
    return 1.0 / (1.0 - tax_frac)


def adjusted_ratio(shares: float, alloc_mib: float, active_frac: float, tax_frac: float) -> float:
    """The paper's price rho = S / (P (f + k (1 - f))), per MiB [OSDI02 §5.2].

    Args:
        shares: S.
        alloc_mib: P, the allocation (MiB instead of pages: the unit cancels out
            in comparisons).
        active_frac: f in [0, 1].
        tax_frac: tau.

    Returns:
        Shares per taxed MiB; ``inf`` for an empty allocation.
    """
    k = idle_cost(tax_frac)
    denominator = alloc_mib * (active_frac + k * (1.0 - active_frac))
    return math.inf if denominator <= 0 else shares / denominator


def taxed_cost_mib(alloc_mib: float, active_mib: float, tax_frac: float) -> float:
    """``P (f + k (1 - f))`` with the working set held fixed: ``min(T, A) + k max(0, T - A)``."""
    return _taxed_cost_k(alloc_mib, active_mib, idle_cost(tax_frac))


def available_for_vms_mib(
    host: HostSample, vms: Iterable[VmSample], free_target_mib: float
) -> float:
    """Memory the targets may add up to: ``sum(consumed) + free - free_target``, >= 0.

    Only powered-on VMs count (see the module docs for why this is the right sum).
    """
    consumed = sum(vm.consumed_mib for vm in vms if vm.powered_on)
    return max(0.0, consumed + host.free_mib - free_target_mib)


@dataclass(frozen=True, slots=True)
class EntitlementResult:
    """Every VM's target, and how they were found.

    Attributes:
        targets_mib: VM name -> target (entitlement) in MiB.
        available_mib: the memory that was divided.
        price: the equilibrium shares per taxed MiB (lambda); ``inf`` when
            reservations alone use up ``available``, 0 when nobody is constrained.
        constrained: demand (the sum of ceilings) exceeded ``available``.
    """

    targets_mib: Mapping[str, float]
    available_mib: float
    price: float
    constrained: bool


@dataclass(frozen=True, slots=True)
class _Client:
    name: str
    shares: float
    active_mib: float
    lo_mib: float
    hi_mib: float


def _clients(vms: Sequence[VmSample]) -> list[_Client]:
    seen: set[str] = set()
    clients = []
    for vm in vms:
        if not vm.powered_on:
            continue
        if vm.name in seen:
            raise InvariantViolation(f"two powered-on VMs are named {vm.name!r}")
        seen.add(vm.name)
        hi = vm.ceiling_mib
        clients.append(
            _Client(
                name=vm.name,
                shares=float(vm.shares),
                active_mib=min(vm.active_mib, hi),
                lo_mib=min(vm.reservation_mib, hi),
                hi_mib=hi,
            )
        )
    return clients


def _g(client: _Client, x: float, k: float) -> float:
    """Allocation whose taxed cost is ``S x`` (inverse of the cost function)."""
    budget = client.shares * x
    if budget <= client.active_mib:
        return budget
    return client.active_mib + (budget - client.active_mib) / k


def _g_inverse(client: _Client, alloc_mib: float, k: float) -> float:
    """The x at which ``g`` reaches ``alloc_mib`` (shares > 0)."""
    return _taxed_cost_k(alloc_mib, client.active_mib, k) / client.shares


def _taxed_cost_k(alloc_mib: float, active_mib: float, k: float) -> float:
    return min(alloc_mib, active_mib) + k * max(0.0, alloc_mib - active_mib)


def _target(client: _Client, x: float, k: float) -> float:
    if client.shares <= 0:
        return client.lo_mib
    return min(client.hi_mib, max(client.lo_mib, _g(client, x, k)))


def compute_targets(
    vms: Sequence[VmSample], available_mib: float, *, tax_frac: float = DEFAULT_TAX_FRAC
) -> EntitlementResult:
    """Every powered-on VM's target under shares, reservation, limit and the idle tax.

    Closed-form equilibrium of min-funding revocation (module docs): targets lie
    in ``[min(reservation, ceiling), ceiling]`` with ``ceiling = min(configured,
    limit)``; they add up to ``available_mib`` whenever the ceilings exceed it and
    the reservations do not.

    Args:
        vms: the VM samples (powered-off VMs are skipped).
        available_mib: machine memory to divide (see :func:`available_for_vms_mib`).
        tax_frac: idle memory tax rate tau in [0, 0.99].

    Returns:
        The targets and the equilibrium price.

    Raises:
        ConfigError: a bad tax rate or a negative ``available_mib``.
        InvariantViolation: two powered-on VMs share a name.
    """
    k = idle_cost(tax_frac)
    if not math.isfinite(available_mib) or available_mib < 0:
        raise ConfigError(f"available_mib: must be finite and non-negative, found {available_mib}")
    clients = _clients(vms)
    total_hi = sum(_target(c, math.inf, k) for c in clients)
    total_lo = sum(c.lo_mib for c in clients)
    if total_hi <= available_mib:
        targets = {c.name: _target(c, math.inf, k) for c in clients}
        return _result(targets, available_mib, 0.0, constrained=False)
    if total_lo >= available_mib:
        targets = {c.name: c.lo_mib for c in clients}
        return _result(targets, available_mib, math.inf, constrained=True)

    # Breakpoints of the piecewise-linear sum: where some g_i crosses lo_i, A_i or hi_i.
    xs = {0.0}
    for c in clients:
        if c.shares > 0:
            for level in (c.lo_mib, c.active_mib, c.hi_mib):
                xs.add(_g_inverse(c, level, k))
    points = sorted(xs)
    # One point well past every breakpoint, where rounding cannot leave a VM short of
    # its ceiling: the last total is then exactly sum(hi) > available.
    points.append(2.0 * points[-1] + 1.0)
    totals = [sum(_target(c, x, k) for c in clients) for x in points]
    # totals[0] = sum(lo) < available < sum(hi) = totals[-1]: bracket and interpolate.
    hi_index = next(i for i, total in enumerate(totals) if total >= available_mib)
    x_lo, x_hi = points[hi_index - 1], points[hi_index]
    t_lo, t_hi = totals[hi_index - 1], totals[hi_index]
    x_star = x_lo + (available_mib - t_lo) * (x_hi - x_lo) / (t_hi - t_lo)
    targets = {c.name: _target(c, x_star, k) for c in clients}
    price = math.inf if x_star <= 0 else 1.0 / x_star
    return _result(targets, available_mib, price, constrained=True)


def _result(
    targets: dict[str, float], available_mib: float, price: float, *, constrained: bool
) -> EntitlementResult:
    return EntitlementResult(
        targets_mib=MappingProxyType(targets),
        available_mib=float(available_mib),
        price=price,
        constrained=constrained,
    )


def min_funding_revocation(
    vms: Sequence[VmSample],
    available_mib: float,
    *,
    tax_frac: float = DEFAULT_TAX_FRAC,
    unit_mib: float = 1.0,
) -> dict[str, float]:
    """The paper's iterative form: revoke ``unit_mib`` at a time from the lowest rho.

    Starts every VM at its ceiling (0-share VMs at their reservation) and, while
    the sum exceeds ``available_mib``, takes a unit from the VM with the lowest
    ``rho = S / cost(T)`` among those above their reservation [OSDI02 §5.1-5.2].
    Slow (one step per unit); kept as the reference that
    :func:`compute_targets` is tested against. Ties go to the first VM in order.
    """
    k = idle_cost(tax_frac)
    if unit_mib <= 0:
        raise ConfigError(f"unit_mib: must be positive, found {unit_mib}")
    clients = _clients(vms)
    alloc = {c.name: _target(c, math.inf, k) for c in clients}
    excess = sum(alloc.values()) - available_mib

    def rho(c: _Client) -> float:
        cost = _taxed_cost_k(alloc[c.name], c.active_mib, k)
        return math.inf if cost <= 0 else c.shares / cost

    heap = [(rho(c), i, c) for i, c in enumerate(clients) if alloc[c.name] > c.lo_mib]
    heapq.heapify(heap)
    while excess > 1e-9 and heap:
        _, i, c = heapq.heappop(heap)
        step = min(unit_mib, alloc[c.name] - c.lo_mib, excess)
        alloc[c.name] -= step
        excess -= step
        if alloc[c.name] > c.lo_mib:
            heapq.heappush(heap, (rho(c), i, c))
    return alloc


# -- admission control -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdmissionResult:
    """The answer of :func:`admit`; truthy when the VM may power on.

    Attributes:
        admitted: the VM may power on.
        vm: its name.
        needed_mib: reservation + overhead of the new VM.
        unreserved_mib: host memory not yet reserved by running VMs.
        message: one line naming the VM and the numbers.
    """

    admitted: bool
    vm: str
    needed_mib: float
    unreserved_mib: float
    message: str

    def __bool__(self) -> bool:
        return self.admitted

    def require(self) -> None:
        """Raise :class:`~hvmem.errors.OutOfMemoryError` with the message if refused."""
        if not self.admitted:
            raise OutOfMemoryError(self.message)


def admit(
    host_total_mib: float,
    running: Sequence[VmSample],
    new: VmSample,
    *,
    host_reserved_mib: float = 0.0,
    unreserved_swap_mib: float | None = None,
) -> AdmissionResult:
    """May ``new`` power on next to ``running``? [OSDI02 §6.2].

    Memory check: ``reservation + overhead`` of ``new`` must fit in
    ``host_total - host_reserved - sum(reservation + overhead of running)``.
    Swap check (only when ``unreserved_swap_mib`` is given): ``configured -
    reservation`` of ``new`` must fit in it (the ESX 1.5 swap reservation; the
    vSphere .vswp file has the same size [ITUDA-SWAP]).

    Args:
        host_total_mib: machine memory of the host.
        running: the VMs already running (powered-off ones are ignored).
        new: the VM asking to power on.
        host_reserved_mib: memory the hypervisor keeps for itself.
        unreserved_swap_mib: swap space not yet reserved, or None to skip the check.

    Returns:
        The decision, with a one-line message either way.
    """
    on = [vm for vm in running if vm.powered_on and vm.name != new.name]
    reserved = sum(vm.reservation_mib + vm.overhead_mib for vm in on)
    unreserved = host_total_mib - host_reserved_mib - reserved
    needed = new.reservation_mib + new.overhead_mib
    if needed > unreserved:
        message = (
            f"cannot power on {new.name}: reservation {new.reservation_mib:g} MiB + overhead "
            f"{new.overhead_mib:g} MiB = {needed:g} MiB exceeds unreserved host memory "
            f"{unreserved:g} MiB (host {host_total_mib:g} MiB, hypervisor "
            f"{host_reserved_mib:g} MiB, {len(on)} running VMs reserve {reserved:g} MiB)"
        )
        return AdmissionResult(False, new.name, needed, unreserved, message)
    swap_needed = new.configured_mib - new.reservation_mib
    if unreserved_swap_mib is not None and swap_needed > unreserved_swap_mib:
        message = (
            f"cannot power on {new.name}: swap reservation configured {new.configured_mib:g} "
            f"MiB - reservation {new.reservation_mib:g} MiB = {swap_needed:g} MiB exceeds "
            f"unreserved swap {unreserved_swap_mib:g} MiB"
        )
        return AdmissionResult(False, new.name, needed, unreserved, message)
    message = (
        f"{new.name} admitted: reservation + overhead {needed:g} MiB fits in unreserved "
        f"host memory {unreserved:g} MiB"
    )
    return AdmissionResult(True, new.name, needed, unreserved, message)
