"""A fleet task's ticks host by host: one host runs a stretch of ticks, then the next.

Why. Stepping a task's hosts tick by tick (``HostBatch.step``, then the
policy core over every host) walks every host's arrays once a tick. A
``bench-32vm`` host's classes are about 200 KB of masses, probabilities and
sub-blocks; a task of 32 hosts or more no longer fits in L2 (2 MiB), so each
host's rows come back from memory at every tick: a host-tick cost 1.5 times
as much in a task of 32 hosts as in one of 2. And each tick entered Python
a few times per task (the kernel's dispatch, the balloon's judging, the
policy's).

What. :func:`run_stretch` runs ticks ``first..last`` of host 0, then of
host 1, and so on, in one compiled call: for each host and tick the
kernel's step of that host (``kernel.step_host``), what
``HostBatch._after_step`` does for it (the balloon judged at a poll, free
page reporting when due, KSM's unmerge, the host settled if they moved
pages) and its esx controller's decision if one is due
(``fleet_policy.decide_host``). The host's rows stay in L1/L2 from one tick
to the next.

Where a stretch ends. Python runs what it must between stretches:

* the phases of every VM whose time has come (``HostBatch.begin_tick``): a
  stretch ends before the first tick at which a phase ends, and the next
  begins with it;
* the rows (``fleet_rows.py``), read off every host at the same tick: a
  stretch ends at each row's tick.

So with 60 s rows a stretch is up to 60 ticks. Which ticks poll the balloon
drivers and which of those report free pages (a ``core.period.Period`` kept
in Python) are worked out before the call, one flag a tick.

Why the results do not change. Hosts share nothing: each has its own
random stream (``draws.py``), and the kernel, the after-step work and the
controller read and write only the host's own rows. A host's ticks run in
the same order, with the same calls, as tick by tick, so every array ends
bit for bit as ``HostBatch.step`` and ``FleetPolicy.tick`` leave it, and
the rows are the same (``tests/test_fleet_loop.py``).
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.aggregate.balloon import judge_host, report_free
from hvmem.aggregate.fleet_policy import FleetPolicy, decide_host, due
from hvmem.aggregate.kernel import step_host
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout)
from hvmem.aggregate.model import HostBatch
from hvmem.aggregate.settle import SETTLE_SCRATCH_ROWS, image_backed, settle
from hvmem.aggregate.unmerge import unmerge

#: A tick's flags: the balloon drivers poll; the guests that report free pages report.
POLL, REPORT = 1, 2


@njit(cache=True, nogil=True)
def run_stretch(first_tick, flags, tick_ns, m, tp, wp, ck, slo, shi, q, heat, ft, vm, cnt,
                host, rng, costs, stall, lru, settled, minfree_pages, clock, samples, plans,
                params, counts):
    """Ticks ``first_tick ..`` (one a flag of ``flags``) of every host, host by host.

    Each host-tick: ``kernel.step_host`` (``lazy_running``), the after-step work
    (module docs) and the esx controller's decision. ``clock``, ``samples``,
    ``plans``, ``params``: ``FleetPolicy.arrays``. Adds the decisions taken and
    those a crossing forced to ``counts[0]`` and ``counts[1]``.
    """
    n_h, n_v = m.shape[0], m.shape[1]
    t = np.zeros((m.shape[2], N_STATES), np.int64)
    busy = np.zeros(m.shape[2], np.int64)
    scratch = np.empty((SETTLE_SCRATCH_ROWS, n_v + 1))
    tick_f = float(tick_ns)
    for h in range(n_h):
        reporting = False
        for v in range(n_v):
            reporting |= vm[h, v, V_REPORTING] != 0
        for j in range(flags.size):
            now_ns = (first_tick + j) * tick_ns
            poll = (flags[j] & POLL) != 0
            stall[h] = 0.0
            step_host(m, tp, wp, ck, slo, shi, q, heat, ft, vm, cnt, host, rng, costs, stall,
                      tick_f, poll, lru, True, settled, h, t, busy, scratch)
            # HostBatch._after_step, of this host.
            moved = False
            if poll:
                judge_host(m, vm, h, float(now_ns))
                if (flags[j] & REPORT) != 0 and reporting:
                    report_free(m, vm, host, rng, h)
                    moved = True
            if (host[h, H_SHARING] == SHARING_UNMERGE and host[h, H_SHARE_ON] > 0
                    and unmerge(m, ck, vm, host, rng, h, minfree_pages[h]) != 0):
                moved = True
            if moved:
                image_backed(m, ck, vm, h)
                settle(m, vm, host, h)
                settled[h] = 0
            why = due(now_ns, host, h, clock, params)
            if why != 0:
                decide_host(now_ns, h, m, ck, q, vm, cnt, host, heat, rng, lru, settled, clock,
                            samples, plans, params)
                counts[0] += 1
                if why == 2:
                    counts[1] += 1


class FleetLoop:
    """The esx fleet's ticks, a stretch of each host at a time (module docs).

    Args:
        batch: the hosts, powered on.
        policy: their esx policy core, built with ``settled``.
        settled: the batch's ``settled`` flags (``kernel.step``).
        poll_every: ticks between the balloon drivers' polls.
    """

    def __init__(self, batch: HostBatch, policy: FleetPolicy, settled: np.ndarray,
                 poll_every: int) -> None:
        self.batch, self.policy, self.settled = batch, policy, settled
        self.poll_every = poll_every
        self._counts = np.zeros(2, np.int64)

    def stretch_end(self, first_tick: int, last_tick: int) -> int:
        """A stretch's last tick from ``first_tick``: ``last_tick`` or before a phase ends.

        Called once the phases due at ``first_tick`` have started.
        """
        tick_ns = self.batch.tick_ns
        nxt = self.batch.next_phase_ns
        if nxt == float("inf"):
            return last_tick
        p = int(nxt // tick_ns)  # the first tick at which a phase ends: p * tick_ns >= nxt
        while p * tick_ns < nxt:
            p += 1
        while p > 0 and (p - 1) * tick_ns >= nxt:
            p -= 1
        return max(first_tick, min(last_tick, p - 1))

    def run(self, first_tick: int, last_tick: int) -> int:
        """Ticks ``first_tick`` to at most ``last_tick`` of every host; the last tick run.

        Returns the stretch's last tick: ``last_tick``, or the tick before a phase ends.
        """
        b, pol = self.batch, self.policy
        tick_ns = b.tick_ns
        b.begin_tick(first_tick * tick_ns, self.settled)
        end = self.stretch_end(first_tick, last_tick)
        flags = np.zeros(end - first_tick + 1, np.uint8)
        for j in range(flags.size):
            i = first_tick + j
            if i % self.poll_every == 0:
                flags[j] = POLL | (REPORT if b.report_due(i * tick_ns) else 0)
        counts = self._counts
        counts[:] = 0
        run_stretch(first_tick, flags, tick_ns, b.m, b.tp, b.wp, b.ck, b.slo, b.shi, b.q,
                    b.heat, b.ft, b.vm, b.cnt, b.host, b.rng, b.costs, b.stall, b.lru,
                    self.settled, b.minfree_pages, *pol.arrays(), counts)
        pol.decisions += int(counts[0])
        pol.reactions += int(counts[1])
        return end
