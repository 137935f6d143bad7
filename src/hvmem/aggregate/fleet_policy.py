"""A fleet's policy core: every host's balance period in one call per tick, over arrays.

What is modelled
----------------
A single aggregate run keeps a :class:`~hvmem.policy.controller.PolicyController`
per host: at its balance period, or when free memory falls into a worse state,
it samples the host through :class:`~hvmem.aggregate.backend.AggregateBackend`
(a :class:`~hvmem.policy.samples.VmSample` per VM), asks the policy for plans
and applies them. In a fleet that loop, in Python per host, was about 70 % of
the time. :class:`FleetPolicy` is the same loop for every host of a
:class:`~hvmem.aggregate.model.HostBatch` in one Numba call per tick:

* which hosts decide (``PolicyController.step`` and ``react``): a host
  decides when its balance period has passed since its last decision
  (``core.period.Period``: due at the first tick, then every period from the
  decision), or, the esx policy rebalancing on crossings [OSDI02 §6.3], when
  the tick's settle found its free memory in a more severe state than the one
  its plans were made for and at least ``min_react_gap_s`` (1 s) has passed
  since them; a forced decision starts a new period;
* the sample: ``AggregateBackend.sample``'s numbers, read off the masses
  (consumed = kernel + compression cache + private pages; balloon, swapped
  and compressed the masses in those states; active the sampler's estimate,
  rounded to whole pages);
* the plan: :func:`hvmem.policy.batched.plan_kernel`, the esx planner over
  ``[hosts, VMs]`` arrays;
* applying it: ``AggregateBackend.apply``'s writes (balloon and swap targets,
  compression, blocking), each VM taken to its swap target at once in slot
  order (``kernel.swap_to_target``, whose draws are the host's own stream),
  then the host's free frames and state settled (``settle.settle``). The
  plan's host part is ``TPS always`` with the scenario's scan rate, what the
  batch was set up with, so only the sharing mode is written.

One host's decision is ``decide_host`` (``decide`` runs it for every host due;
``fleet_loop.py`` runs it inside a host's stretch of ticks). Hosts draw from
their own random streams and share nothing, so deciding them together, or
each within its own stretch, leaves each host's run as the per-host loop
leaves it;
``tests/test_policy_batched.py`` runs both and compares the masses.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.aggregate import kernel as k
from hvmem.aggregate.model import HostBatch
from hvmem.policy.batched import PlanArrays, SampleArrays, _steps, action_table, plan_kernel
from hvmem.policy.controller import DEFAULT_MIN_REACT_GAP_S
from hvmem.policy.entitlement import idle_cost
from hvmem.policy.esx import EsxParams
from hvmem.policy.policies import PolicyConfig
from hvmem.units import MIB, NS_PER_S

#: The policies planned over arrays; the others run per host (``fleet.py``).
BATCHED_POLICIES = ("esx",)


class FleetPolicy:
    """The esx policy core for every host of ``batch`` (module docs).

    Args:
        batch: the hosts, powered on.
        config: the ``[policy]`` configuration, the same for every host (esx).
        settled: the ``settled`` flags the batch is stepped with (``kernel.step``):
            a host whose plans are applied is cleared.
    """

    def __init__(self, batch: HostBatch, config: PolicyConfig,
                 settled: np.ndarray | None = None) -> None:
        if config.name not in BATCHED_POLICIES or not isinstance(config.params, EsxParams):
            raise ValueError(f"policy {config.name!r} is not planned over arrays")
        self.batch = batch
        n_h, n_v = batch.vm.shape[0], batch.vm.shape[1]
        self.settled = np.zeros(n_h, np.uint8) if settled is None else settled
        s = self.samples = SampleArrays(n_h, n_v)
        self.plans = PlanArrays(n_h, n_v)
        for h, row in enumerate(batch.slots):
            s.minfree[h] = batch.thresholds[h].minfree_mib
            for v, slot in enumerate(row):
                cfg = slot.config
                s.shares[h, v] = cfg.shares
                s.reservation[h, v] = cfg.reservation_bytes / MIB
                if cfg.limit_bytes is not None:
                    s.limit[h, v] = cfg.limit_bytes / MIB
                s.balloon_max[h, v] = cfg.balloon_max_pages / k.PAGES_PER_MIB
        self.acts, self.compression = action_table([sc.host.profile for sc in batch.scenarios])
        params: EsxParams = config.params
        self.k = idle_cost(params.tax_frac)
        self.free_target_frac = params.planner.free_target_frac
        self.steps = _steps(params.planner)
        self.period_ns = config.balance_period_ns
        self.gap_ns = round(DEFAULT_MIN_REACT_GAP_S * NS_PER_S)
        self.next_due_ns = np.zeros(n_h, np.int64)  # due at the first tick
        self.last_state = np.full(n_h, -1, np.int64)  # -1: no decision yet
        self.last_ns = np.zeros(n_h, np.int64)
        self.decisions = 0
        self.reactions = 0

    def tick(self, now_ns: int) -> int:
        """Decide every host whose decision is due at ``now_ns``; how many decided."""
        b = self.batch
        if now_ns < self.next_due_ns.min() and not b.host[:, k.H_WORSENED].any():
            return 0  # most ticks: nobody due, nothing crossed; skip the call's dispatch
        n, reacted = decide(now_ns, b.m, b.ck, b.q, b.vm, b.cnt, b.host, b.heat, b.rng, b.lru,
                            self.settled, *self.arrays())
        self.decisions += n
        self.reactions += reacted
        return n

    def arrays(self) -> tuple:
        """The controllers' clocks, samples, plans and parameters, as ``decide_host`` takes them."""
        s, p = self.samples, self.plans
        inflate, deflate, swap = self.steps
        clock = (self.next_due_ns, self.last_state, self.last_ns)
        samples = (s.on, s.stuck, s.shares, s.configured, s.reservation, s.limit, s.consumed,
                   s.active, s.balloon, s.balloon_target, s.balloon_max, s.swapped,
                   s.compressed, s.free, s.minfree, s.state)
        plans = (p.target, p.balloon_target, p.swap_target, p.compress, p.blocked, p.available)
        params = (self.period_ns, self.gap_ns, self.acts, self.compression, self.k,
                  self.free_target_frac, inflate, deflate, swap)
        return clock, samples, plans, params


@njit(cache=True)
def _sample(m, vm, host, h, on, configured, consumed, active, balloon, balloon_target,
            swapped, compressed, free, state):
    """``AggregateBackend.sample`` of host ``h`` into the sample arrays."""
    mib = 1.0 / k.PAGES_PER_MIB
    n_v, n_c = m.shape[1], m.shape[2]
    for v in range(n_v):
        on[h, v] = vm[h, v, k.V_ON] > 0
        if not on[h, v]:
            continue
        priv = bal = swp = zp = 0
        for c in range(n_c):
            priv += m[h, v, c, k.PRIV] + m[h, v, c, k.FILL]
            bal += m[h, v, c, k.BALL]
            swp += m[h, v, c, k.SWP]
            zp += m[h, v, c, k.ZIP]
        pages = vm[h, v, k.V_PAGES]
        configured[h, v] = pages * mib
        consumed[h, v] = (vm[h, v, k.V_KERNEL] + vm[h, v, k.V_CACHE_FRAMES]) * mib + priv * mib
        # HostBatch.active_frac: max of slow, fast and current, floored.
        fast = vm[h, v, k.V_FAST]
        current = fast + host[h, k.H_FAST_GAIN] * (vm[h, v, k.V_RUNNING] - fast)
        frac = max(vm[h, v, k.V_SLOW], fast, current, host[h, k.H_FLOOR])
        active[h, v] = np.rint(frac * pages) * mib  # Python's round: half to even
        balloon[h, v] = bal * mib
        balloon_target[h, v] = int(vm[h, v, k.V_BAL_TARGET]) * mib
        swapped[h, v] = swp * mib
        compressed[h, v] = zp * mib
    free[h] = host[h, k.H_FREE] / k.PAGES_PER_MIB
    state[h] = int(host[h, k.H_STATE])


@njit(cache=True)
def _apply(m, ck, vm, cnt, host, heat, rng, lru, h, on, target, balloon_target, swap_target,
           compress, blocked):
    """``AggregateBackend.apply`` of host ``h``'s plans, then ``HostBatch.settle``."""
    host[h, k.H_SHARING] = k.SHARING_RUN
    for v in range(on.shape[1]):
        if not on[h, v]:
            continue
        vm[h, v, k.V_BAL_TARGET] = int(balloon_target[h, v] * k.PAGES_PER_MIB)
        vm[h, v, k.V_SWAP_TARGET] = swap_target[h, v]
        vm[h, v, k.V_SZTGT] = target[h, v]
        vm[h, v, k.V_SWTGT] = swap_target[h, v]
        vm[h, v, k.V_COMPRESS] = 1.0 if compress[h, v] else 0.0
        vm[h, v, k.V_BLOCKED] = 1.0 if blocked[h, v] else 0.0
        vm[h, v, k.V_PLANNED] = 1.0
        k.swap_to_target(m, ck, vm, cnt, host, heat, rng, h, v, False, lru)
    k.settle(m, vm, host, h)


@njit(cache=True, inline="always")
def due(now_ns, host, h, clock, params):
    """Whether host ``h`` decides at ``now_ns``: 0 no, 1 its period, 2 forced by a crossing."""
    next_due_ns, last_state, last_ns = clock
    gap_ns = params[1]
    if now_ns >= next_due_ns[h]:  # Period.due
        return 1
    if (host[h, k.H_WORSENED] > 0 and last_state[h] >= 0  # PolicyController.react
            and host[h, k.H_STATE] > last_state[h] and now_ns - last_ns[h] >= gap_ns):
        return 2
    return 0


@njit(cache=True)
def decide_host(now_ns, h, m, ck, q, vm, cnt, host, heat, rng, lru, settled, clock, samples,
                plans, params):
    """Host ``h``'s controller decides at ``now_ns``: its sample, plan and applying.

    ``clock``, ``samples``, ``plans``, ``params``: ``FleetPolicy.arrays``. Reads
    and writes only host ``h``'s rows, so hosts may decide in any order.
    """
    next_due_ns, last_state, last_ns = clock
    (on, stuck, shares, configured, reservation, limit, consumed, active, balloon,
     balloon_target, balloon_max, swapped, compressed, free, minfree, state) = samples
    o_target, o_balloon, o_swap, o_compress, o_blocked, o_available = plans
    (period_ns, _, acts, compression, kk, free_target_frac, inflate_step, deflate_step,
     swap_step) = params
    for v in range(vm.shape[1]):  # as the host judged at the last poll
        stuck[h, v] = vm[h, v, k.V_BAL_STUCK] > 0
    k.running_share(m, q, vm, h)  # the step left it to be read here
    _sample(m, vm, host, h, on, configured, consumed, active, balloon, balloon_target,
            swapped, compressed, free, state)
    plan_kernel(np.full(1, h, np.int64), on, stuck, shares, configured, reservation, limit,
                consumed, active, balloon, balloon_target, balloon_max, swapped, compressed,
                free, minfree, state, acts, compression, kk, free_target_frac, inflate_step,
                deflate_step, swap_step, o_target, o_balloon, o_swap, o_compress, o_blocked,
                o_available)
    _apply(m, ck, vm, cnt, host, heat, rng, lru, h, on, o_target, o_balloon, o_swap,
           o_compress, o_blocked)
    settled[h] = 0  # its pages moved: the next step counts its frames afresh
    last_state[h] = state[h]
    last_ns[h] = now_ns
    next_due_ns[h] = now_ns + period_ns  # a forced decision starts a new period too


@njit(cache=True)
def decide(now_ns, m, ck, q, vm, cnt, host, heat, rng, lru, settled, clock, samples, plans,
           params):
    """One tick of every host's controller: which decide, their samples, plans and applying.

    Returns the number of hosts that decided and how many of those a crossing forced.
    """
    n = 0
    reacted = 0
    for h in range(host.shape[0]):
        why = due(now_ns, host, h, clock, params)
        if why == 0:
            continue
        decide_host(now_ns, h, m, ck, q, vm, cnt, host, heat, rng, lru, settled, clock,
                    samples, plans, params)
        n += 1
        if why == 2:
            reacted += 1
    return n, reacted
