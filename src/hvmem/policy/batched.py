"""The ``esx`` policy over arrays: one plan for many hosts' VMs in one Numba call.

What is modelled
----------------
The same decision as :class:`~hvmem.policy.esx.EsxPolicy.plan`, for every
host of a batch at once: each VM's sample is a column of ``[hosts, VMs]``
arrays instead of a :class:`~hvmem.policy.samples.VmSample`, each host's a
slot of ``[hosts]`` arrays, and the plans come back in arrays of the same
shape. A fleet of thousands of hosts (``aggregate/fleet.py``) plans its hosts
due in a balance period without building a Python object per VM: a host of
32 VMs sampled, planned and applied costs about 2.7 ms of CPU through the
objects, and about 0.2 ms over arrays, applying included.

It is not a second policy. Each step below is the scalar rule it mirrors,
named where it is, and ``tests/test_policy_batched.py`` holds the two to the
same targets over random samples and over fleet runs:

1. ``available = sum(consumed) + free - free_target``, ``free_target =
   free_target_frac x minFree`` (``entitlement.available_for_vms_mib``,
   ``planner.free_target_mib``; [OSDI02 §6.3]);
2. every VM's target by the closed form of min-funding revocation with the
   idle tax, bounded by ``min(reservation, ceiling)`` and ``ceiling =
   min(configured, limit)`` (``entitlement.compute_targets``; [OSDI02 §5.1-5.2]
   [VS-ALLOC]): the same breakpoints, in the same order, the same
   interpolation;
3. the excess over target to balloon, compression and swap as the host's
   state allows, the rate limits per balance period, deflation capped by free
   memory above the free target, and limits held in every state
   (``planner.plan_vms``, ``planner._deflation``, ``planner._over_limit_mib``;
   [OSDI02 §6.3][YB-STATES6][VS-SWAPWHEN]).

What a state allows comes from :func:`~hvmem.policy.states.actions` itself,
tabulated per host and state by :func:`action_table` before the call, so the
state machine's table has one source. Sums run over the VMs in slot order,
as the scalar code's do over the sample's order, so targets agree to the last
bit in practice; the tests allow float tolerance.

Layout (float64 unless said; ``inf`` for "no limit" and "unlimited rate")::

    on stuck            bool    [H, V]  powered on; balloon driver stuck
    shares configured reservation limit consumed active
    balloon balloon_target balloon_max swapped compressed   [H, V]  MiB
    free minfree        [H]     MiB;    state  int64 [H]
    acts                bool    [H, 5, N_ACT]   action_table()
    compression         bool    [H]     the profile has compression

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numba import njit

from hvmem.errors import ConfigError
from hvmem.policy.entitlement import idle_cost
from hvmem.policy.planner import PlannerParams
from hvmem.policy.states import MemState, actions, get_profile

__all__ = ["N_ACT", "PlanArrays", "SampleArrays", "action_table", "plan_hosts"]

# Columns of an action table (states.StateActions' fields the planner reads).
A_BALLOON, A_COMPRESS, A_SWAP, A_SWAP_FALLBACK, A_BLOCK = range(5)
N_ACT = 5
N_STATES = len(MemState)

# planner._EPS_MIB: excesses smaller than this are rounding noise.
_EPS_MIB = 1e-6


def action_table(profiles: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per host and state, what the planner may do (``states.actions``), and compression.

    A state the profile lacks (CLEAR before ESXi 6) allows nothing; a host is
    never in it.
    """
    acts = np.zeros((len(profiles), N_STATES, N_ACT), np.bool_)
    compression = np.zeros(len(profiles), np.bool_)
    cache: dict[str, tuple[np.ndarray, bool]] = {}
    for h, name in enumerate(profiles):
        if name not in cache:
            prof = get_profile(name)
            row = np.zeros((N_STATES, N_ACT), np.bool_)
            for s in prof.states:
                a = actions(s, prof)
                row[int(s)] = (a.balloon, a.compress, a.swap, a.swap_fallback,
                               a.block_allocations)
            cache[name] = (row, prof.compression)
        acts[h], compression[h] = cache[name]
    return acts, compression


class SampleArrays:
    """What the planner reads of ``n_h`` hosts of up to ``n_v`` VMs (module docs' layout)."""

    FIELDS = ("shares", "configured", "reservation", "limit", "consumed", "active", "balloon",
              "balloon_target", "balloon_max", "swapped", "compressed")

    def __init__(self, n_h: int, n_v: int) -> None:
        self.on = np.zeros((n_h, n_v), np.bool_)
        self.stuck = np.zeros((n_h, n_v), np.bool_)
        for name in self.FIELDS:
            setattr(self, name, np.zeros((n_h, n_v)))
        self.limit[:] = math.inf
        self.free = np.zeros(n_h)
        self.minfree = np.zeros(n_h)
        self.state = np.zeros(n_h, np.int64)


class PlanArrays:
    """The plans of ``n_h`` hosts: each field of ``VmPlan`` as an ``[H, V]`` array."""

    def __init__(self, n_h: int, n_v: int) -> None:
        self.target = np.zeros((n_h, n_v))
        self.balloon_target = np.zeros((n_h, n_v))
        self.swap_target = np.zeros((n_h, n_v))
        self.compress = np.zeros((n_h, n_v), np.bool_)
        self.blocked = np.zeros((n_h, n_v), np.bool_)
        self.available = np.zeros(n_h)


def _steps(params: PlannerParams) -> tuple[float, float, float]:
    """``PlannerParams.step_mib`` of the three rates (inf: unlimited)."""
    return (params.step_mib(params.balloon_inflate_mib_s),
            params.step_mib(params.balloon_deflate_mib_s),
            params.step_mib(params.swap_out_mib_s))


def plan_hosts(hosts: np.ndarray, s: SampleArrays, acts: np.ndarray, compression: np.ndarray,
               tax_frac: float, params: PlannerParams, out: PlanArrays) -> None:
    """Plan the hosts listed in ``hosts`` (indices into the arrays' first axis) into ``out``.

    ``tax_frac`` and ``params`` are the esx policy's (``EsxParams``), one for
    every host. Rows of hosts not listed are left as they were.

    Raises:
        ConfigError: a bad tax rate (``entitlement.idle_cost``).
    """
    k = idle_cost(tax_frac)
    inflate, deflate, swap = _steps(params)
    plan_kernel(np.asarray(hosts, np.int64), s.on, s.stuck, s.shares, s.configured,
                s.reservation, s.limit, s.consumed, s.active, s.balloon, s.balloon_target,
                s.balloon_max, s.swapped, s.compressed, s.free, s.minfree, s.state, acts,
                compression, k, params.free_target_frac, inflate, deflate, swap,
                out.target, out.balloon_target, out.swap_target, out.compress, out.blocked,
                out.available)


# -- entitlement (entitlement.compute_targets) ------------------------------------------------


@njit(cache=True, inline="always")
def _g(shares, active, x, k):
    """``entitlement._g``: the allocation whose taxed cost is ``S x``."""
    budget = shares * x
    if budget <= active:
        return budget
    return active + (budget - active) / k


@njit(cache=True, inline="always")
def _cost(alloc, active, k):
    """``entitlement._taxed_cost_k``: ``min(T, A) + k max(0, T - A)``."""
    return min(alloc, active) + k * max(0.0, alloc - active)


@njit(cache=True, inline="always")
def _target(shares, active, lo, hi, x, k):
    """``entitlement._target``: 0 shares get the reservation, else clamp(g, lo, hi)."""
    if shares <= 0:
        return lo
    return min(hi, max(lo, _g(shares, active, x, k)))


@njit(cache=True)
def _targets(idx, shares, active, lo, hi, available, k, out):
    """``compute_targets`` for one host's running VMs ``idx`` (their bounds already clamped)."""
    n = idx.size
    total_hi = 0.0
    total_lo = 0.0
    for j in range(n):
        v = idx[j]
        total_hi += lo[v] if shares[v] <= 0 else hi[v]  # _target at x = inf
        total_lo += lo[v]
    if total_hi <= available:  # nobody is constrained: every VM gets its ceiling
        for j in range(n):
            v = idx[j]
            out[v] = lo[v] if shares[v] <= 0 else hi[v]
        return
    if total_lo >= available:  # reservations use everything
        for j in range(n):
            out[idx[j]] = lo[idx[j]]
        return
    # Breakpoints of the piecewise-linear sum: where some g_i crosses lo_i, A_i or hi_i.
    xs = np.empty(1 + 3 * n)
    xs[0] = 0.0
    m = 1
    for j in range(n):
        v = idx[j]
        if shares[v] > 0:
            xs[m] = _cost(lo[v], active[v], k) / shares[v]
            xs[m + 1] = _cost(active[v], active[v], k) / shares[v]
            xs[m + 2] = _cost(hi[v], active[v], k) / shares[v]
            m += 3
    xs = np.sort(xs[:m])
    points = np.empty(m + 1)
    p = 0
    for i in range(m):  # the scalar code's set of breakpoints: each value once
        if p == 0 or xs[i] != points[p - 1]:
            points[p] = xs[i]
            p += 1
    points[p] = 2.0 * points[p - 1] + 1.0  # past every breakpoint: the sum is sum(hi)
    p += 1
    t_prev = 0.0
    x_star = points[p - 1]
    for i in range(p):
        t = 0.0
        for j in range(n):
            v = idx[j]
            t += _target(shares[v], active[v], lo[v], hi[v], points[i], k)
        if t >= available:  # totals[0] = sum(lo) < available, so i >= 1
            x_lo, x_hi = points[i - 1], points[i]
            x_star = x_lo + (available - t_prev) * (x_hi - x_lo) / (t - t_prev)
            break
        t_prev = t
    for j in range(n):
        v = idx[j]
        out[v] = _target(shares[v], active[v], lo[v], hi[v], x_star, k)


# -- the planner (planner.plan_vms) -----------------------------------------------------------


@njit(cache=True, inline="always")
def _over_limit(consumed, swapped, compressed, configured, limit):
    """``planner._over_limit_mib``: held + swapped + compressed - limit (-inf: no limit)."""
    if limit >= configured:
        return -math.inf
    return consumed + swapped + compressed - min(configured, limit)


@njit(cache=True)
def plan_kernel(hosts, on, stuck, shares, configured, reservation, limit, consumed, active,
                balloon, balloon_target, balloon_max, swapped, compressed, free, minfree,
                state, acts, compression, k, free_target_frac, inflate_step, deflate_step,
                swap_step, o_target, o_balloon, o_swap, o_compress, o_blocked, o_available):
    """``EsxPolicy.plan`` for each host in ``hosts`` (module docs for the rules it follows)."""
    n_v = on.shape[1]
    lo = np.empty(n_v)
    hi = np.empty(n_v)
    act = np.empty(n_v)
    give = np.zeros(n_v)
    for hh in range(hosts.size):
        h = hosts[hh]
        idx = np.flatnonzero(on[h])
        # entitlement._clients: ceiling = min(configured, limit); active and the
        # reservation clamped to it.
        for j in range(idx.size):
            v = idx[j]
            hi[v] = min(configured[h, v], limit[h, v])
            act[v] = min(active[h, v], hi[v])
            lo[v] = min(reservation[h, v], hi[v])
        free_target = free_target_frac * minfree[h]  # planner.free_target_mib
        total = 0.0
        for j in range(idx.size):
            total += consumed[h, idx[j]]
        available = max(0.0, total + free[h] - free_target)  # available_for_vms_mib
        o_available[h] = available
        target = o_target[h]
        _targets(idx, shares[h], act, lo, hi, available, k, target)
        st = state[h]
        a_balloon = acts[h, st, 0]
        a_compress = acts[h, st, 1]
        a_swap = acts[h, st, 2] or acts[h, st, 3]
        reclaiming = a_balloon or acts[h, st, 2] or acts[h, st, 3]
        # planner._deflation: in a state without reclamation, balloons of VMs below
        # target give memory back, the sum capped by free memory above the free target.
        if not reclaiming:
            asked = 0.0
            for j in range(idx.size):
                v = idx[j]
                give[v] = 0.0
                over = _over_limit(consumed[h, v], swapped[h, v], compressed[h, v],
                                   configured[h, v], limit[h, v])
                headroom = min(target[v] - consumed[h, v], -over)
                now = min(balloon[h, v], balloon_max[h, v])
                if stuck[h, v] or headroom <= _EPS_MIB or now <= 0:
                    continue
                give[v] = min(headroom, now, deflate_step)
                asked += give[v]
            budget = max(0.0, free[h] - free_target)
            if asked > budget:
                scale = budget / asked
                for j in range(idx.size):
                    give[idx[j]] = give[idx[j]] * scale
        for j in range(idx.size):
            v = idx[j]
            excess = consumed[h, v] - target[v]
            bmax = balloon_max[h, v]
            now = min(balloon[h, v], bmax)
            new = now
            swap_more = 0.0
            over = _over_limit(consumed[h, v], swapped[h, v], compressed[h, v],
                               configured[h, v], limit[h, v])
            if not reclaiming and over > _EPS_MIB:
                # A limit holds in every state [VS-ALLOC]: balloon down to it.
                if not stuck[h, v]:
                    room = max(0.0, bmax - now)
                    new = now + min(over, room, inflate_step)
            elif reclaiming and excess > _EPS_MIB:
                rest = excess
                if a_balloon and not stuck[h, v]:
                    room = max(0.0, bmax - now)
                    part = min(excess, room)
                    new = now + min(part, inflate_step)
                    rest = excess - part  # beyond the maximum: swap fallback
                elif not a_balloon and not stuck[h, v]:
                    # HARD and LOW: a balloon already asked for keeps inflating.
                    pending = max(0.0, min(balloon_target[h, v], bmax) - now)
                    new = now + min(pending, excess, inflate_step)
                    rest = excess - min(pending, excess)
                if a_swap and rest > _EPS_MIB:
                    swap_more = min(rest, swap_step)
            elif not reclaiming:
                new = now - give[v]
            o_balloon[h, v] = max(0.0, min(new, bmax))
            o_swap[h, v] = swapped[h, v] + compressed[h, v] + swap_more
            o_compress[h, v] = compression[h] and (a_compress or swap_more > 0)
            o_blocked[h, v] = acts[h, st, 4] and excess > _EPS_MIB


def check_batched(name: str) -> None:
    """Refuse, in one line, a policy this module does not plan (only ``esx``)."""
    if name != "esx":
        raise ConfigError(f"policy {name!r}: only esx is planned over arrays")
