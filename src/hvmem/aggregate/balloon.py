"""The balloon at aggregate fidelity beyond its rates: stuck, deflate-on-OOM, reporting.

``kernel.py`` moves a balloon towards its target at vmw_balloon's rates
(``_balloon``). What page fidelity's driver and host side do besides, over
the masses of ``kernel.py`` (``m[h, v, c, s]``; row ``BALLOON_ROW`` the
balloon, ``FREE_ROW`` the guest's free list):

* a stuck balloon (``judge``): at each poll the host judges the driver as
  ``BalloonHost._judge`` does. A balloon at or above its target, or grown
  since the last poll, made progress; one short of its target that made none
  for ``STUCK_AFTER_NS`` (15 s) is stuck until it makes progress again, and
  the policy then reclaims its shortfall by other means (``balloon_stuck``
  in the samples). A guest without a driver (``balloon = false``) never
  moves, so any target above 0 makes it stuck, as at page fidelity.
* deflate-on-OOM (``deflate_on_oom``): when the guest cannot find a page for
  its workload (free list empty, nothing left to reclaim to its swap), the
  driver gives back pages from the balloon, as many as are missing
  (``BalloonDriver.deflate_on_oom``). They return unbacked: the workload's
  touch then backs them as any first touch. The host's target is unchanged,
  so the next poll inflates again, as a real driver does.
* free page reporting (``report_free``): every ``REPORT_PERIOD_NS`` (2 s) at
  a poll, the guest reports the free pages that stayed free since the last
  report and have not been reported yet; the host drops their backing
  (``BalloonHost.collect``: a private frame is freed, a shared page loses a
  sharer, a compressed or swapped copy is discarded). The free list hands out
  the pages it freed last first, so of the backed free pages not reported
  at the last report (``V_REPORT_LEFT``) the ones still free now are
  ``min(V_REPORT_LEFT, backed free now)``; each backing state gives in
  proportion to what it holds.

Each is a no-op for a VM that does not use it, so a scenario that sets none
of them runs as before.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

from numba import njit

from hvmem.aggregate.draws import part
from hvmem.aggregate.guest_paging import _take_free
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout)
from hvmem.aggregate.reclaim import _shrink_cache
from hvmem.hypervisor.reclaim.balloon import STUCK_AFTER_NS


@njit(cache=True)
def judge(m, vm, now_ns):
    """Every running VM's balloon judged at a poll (``BalloonHost._judge``), over all hosts."""
    for h in range(m.shape[0]):
        judge_host(m, vm, h, now_ns)


@njit(cache=True, inline="always")
def judge_host(m, vm, h, now_ns):
    """``judge`` of host ``h``'s VMs."""
    for v in range(m.shape[1]):
        if vm[h, v, V_ON] <= 0:
            continue
        actual = float(m[h, v, BALLOON_ROW, BALL])
        target = min(vm[h, v, V_BAL_TARGET], vm[h, v, V_BAL_MAX])
        if actual >= target or actual > vm[h, v, V_BAL_LAST]:
            vm[h, v, V_BAL_PROGRESS_NS] = now_ns
            vm[h, v, V_BAL_STUCK] = 0.0
        elif now_ns - vm[h, v, V_BAL_PROGRESS_NS] >= STUCK_AFTER_NS:
            vm[h, v, V_BAL_STUCK] = 1.0
        vm[h, v, V_BAL_LAST] = actual


@njit(cache=True, _nrt=False)
def deflate_on_oom(m, vm, cnt, host, heat, rng, costs, stall, h, v, short, lru):
    """The guest short of ``short`` pages: the balloon gives them back; pages the guest got."""
    if short <= 0 or vm[h, v, V_DEFLATE_OOM] <= 0:
        return 0
    n = min(short, m[h, v, BALLOON_ROW, BALL])
    if n <= 0:
        return 0
    m[h, v, BALLOON_ROW, BALL] -= n
    m[h, v, FREE_ROW, NEVER] += n
    return _take_free(m, vm, cnt, host, heat, rng, costs, stall, h, v, n, False, lru)


@njit(cache=True)
def report_free(m, vm, host, rng, h):
    """Free page reporting of host ``h``'s VMs that report: free pages lose their backing."""
    for v in range(m.shape[1]):
        if vm[h, v, V_ON] <= 0 or vm[h, v, V_REPORTING] <= 0:
            continue
        backed = 0
        for s in (PRIV, FILL, ZERO, SHR, ZIP, SWP):
            backed += m[h, v, FREE_ROW, s]
        n = min(int(vm[h, v, V_REPORT_LEFT]), backed)
        left, rest = n, backed
        for s in (PRIV, FILL, ZERO, SHR, ZIP, SWP):
            ms = m[h, v, FREE_ROW, s]
            if left <= 0 or rest <= 0:
                break
            k = part(rng, h, left, ms, rest)
            left -= k
            rest -= ms
            if k <= 0:
                continue
            m[h, v, FREE_ROW, s] -= k
            m[h, v, FREE_ROW, NEVER] += k
            if s in (PRIV, FILL):
                host[h, H_FREE] += k
            elif s == ZIP:
                _shrink_cache(vm, host, h, v, k)
        vm[h, v, V_REPORT_LEFT] = backed - n
