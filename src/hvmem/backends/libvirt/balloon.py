"""Balloon targets for libvirt domains: the floor, progress, stuck drivers, gains.

The rules are the QEMU backend's (backends/qemu/balloon.py), carried out through
libvirt instead of QMP:

* a plan's balloon target becomes the domain's live memory (configured less the
  target), never below the guest's *floor*, what it uses plus a reserve
  (``balloon_ceiling_mib``, shared); without guest stats a balloon may deflate
  but never grow;
* a balloon that has not moved for ``balloon_stuck_after_s``, or has not reached
  its target within ``balloon_timeout_s``, is *stuck*: held where it is, and
  tried again after ``balloon_retry_s``; a stuck balloon counts as such in the
  sample, so the planner swaps instead [VS-SWAPWHEN];
* a balloon that frees nothing on the host is held too. With free page
  reporting the guest has already returned its free pages, and a balloon that
  takes them lowers no resident memory. Where the domain's QEMU process is on
  this machine, its resident guest RAM is marked when a larger target is set;
  once the balloon has grown by ``GAIN_CHECK_MIB`` and less than
  ``MIN_GAIN_FRAC`` of the growth left the host, it is held (``balloon_no_gain``).
  Without the process (a remote host, the test driver) libvirt's ``rss`` stands
  in for it.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from hvmem.backends.libvirt.domain import LibvirtGuest
from hvmem.backends.qemu.balloon import GAIN_CHECK_MIB, MIN_GAIN_FRAC, balloon_ceiling_mib
from hvmem.backends.qemu.config import BackendOptions
from hvmem.backends.qemu.guest_state import EventSink
from hvmem.errors import BackendError
from hvmem.policy.samples import VmPlan

__all__ = ["apply_balloon", "track_balloon"]


def _tolerance(g: LibvirtGuest) -> float:
    return max(2.0, 0.01 * g.configured_mib)


def _resident_mib(g: LibvirtGuest) -> float | None:
    if g.proc is not None and g.proc.ram_rss_mib is not None:
        return g.proc.ram_rss_mib
    return g.rss_mib


def _hold(g: LibvirtGuest, now: float, event: EventSink) -> None:
    g.stuck_since_s, g.target_mib = now, None
    try:
        g.set_balloon(g.balloon_mib)
    except BackendError as err:
        event("balloon_failed", g.name, str(err))


def track_balloon(g: LibvirtGuest, now: float, opts: BackendOptions, event: EventSink) -> None:
    """Check one domain's balloon at a sample: reached, moving, stuck, or gaining nothing."""
    if g.stuck_since_s is not None and now - g.stuck_since_s >= opts.balloon_retry_s:
        g.stuck_since_s = None
        event("balloon_retry", g.name, "trying the balloon again")
    rss = _resident_mib(g)
    if g.gain_mark is not None and rss is not None:
        mark_balloon, mark_rss = g.gain_mark
        grown = g.balloon_mib - mark_balloon
        if grown >= GAIN_CHECK_MIB:
            g.gain_mark = None
            freed = mark_rss - rss
            if freed < MIN_GAIN_FRAC * grown:
                event("balloon_no_gain", g.name, f"balloon grew {grown:.0f} MiB but the host "
                      f"backs only {max(0.0, freed):.0f} MiB less (free pages were already "
                      f"returned); holding it at {g.balloon_mib:.0f} MiB")
                _hold(g, now, event)
                return
    if g.target_mib is None:
        return
    if abs(g.balloon_mib - g.target_mib) <= _tolerance(g):
        event("balloon_reached", g.name, f"{g.balloon_mib:.0f} MiB after "
              f"{now - g.target_set_s:.1f} s")
        g.target_mib = None
        return
    toward = (g.balloon_mib - g.progress_mark_mib) * (
        1 if g.target_mib > g.progress_mark_mib else -1)
    if toward >= 1.0:
        g.progress_mark_mib, g.progress_s = g.balloon_mib, now
    if (now - g.progress_s < opts.balloon_stuck_after_s
            and now - g.target_set_s < opts.balloon_timeout_s):
        return
    event("balloon_stuck", g.name, f"at {g.balloon_mib:.0f} MiB of a {g.target_mib:.0f} MiB "
          "target; holding it there")
    _hold(g, now, event)


def apply_balloon(g: LibvirtGuest, plan: VmPlan, now: float, opts: BackendOptions,
                  event: EventSink) -> None:
    """Set the domain's balloon toward the plan's target, above its floor.

    Raises:
        BackendError: libvirt refused the new size.
    """
    if not g.has_balloon:
        return
    want = max(0.0, min(plan.balloon_target_mib, g.balloon_max_mib))
    if want > g.balloon_mib:
        if g.stuck:
            return  # a stuck driver is not pushed; the planner swaps instead
        ceiling = balloon_ceiling_mib(g, opts)
        if want > ceiling:
            if "floor" not in g.refused:
                used = ("unknown (no guest stats yet)" if g.guest_used_mib is None
                        else f"{g.guest_used_mib:.0f} MiB")
                event("balloon_floor", g.name, f"target {want:.0f} MiB limited to "
                      f"{ceiling:.0f} MiB: the guest uses {used} and keeps a reserve")
                g.refused.add("floor")
            want = max(g.balloon_mib, ceiling)
        else:
            g.refused.discard("floor")
    want = float(round(want))
    if abs(want - g.last_set_mib) < 1.0 and abs(want - g.balloon_mib) < 1.0:
        return
    if want > g.balloon_mib + 1.0 and g.gain_mark is None:
        rss = _resident_mib(g)
        if rss is not None:
            g.gain_mark = (g.balloon_mib, rss)
    elif want < g.balloon_mib:
        g.gain_mark = None
    g.set_balloon(want)
    if abs(want - g.balloon_mib) > _tolerance(g):
        g.target_mib = want
        g.target_set_s = g.progress_s = now
        g.progress_mark_mib = g.balloon_mib
    else:
        g.target_mib = None
