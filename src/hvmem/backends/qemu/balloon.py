"""Balloon targets for real guests: the floor a guest keeps, progress and stuck drivers.

The balloon is best effort. A plan's balloon target goes to QEMU as ``balloon``
(the guest size = configured - balloon target), never below a *floor*: the
guest keeps what it uses plus a reserve, ``used = configured - balloon -
available`` from its last stats and ``reserve = max(guest_reserve_mib,
guest_reserve_frac x configured)``. Without stats, a balloon may deflate but
not grow. Over-inflating a tiny guest panics it, or with ``deflate-on-oom``
stalls the balloon ("Out of puff!" [QEMU-PROBE]).

Progress is checked at every sample: a balloon that has not moved for
``balloon_stuck_after_s`` (squeezed declares a driver stuck after 5 s
[SQUEEZED]), or has not reached its target within ``balloon_timeout_s``, is
*stuck*: its target is set back to where it is, the sample says
``balloon_stuck`` (so the planner swaps instead [VS-SWAPWHEN]) and ballooning
is tried again after ``balloon_retry_s``. A guest that has sent no balloon
stats ``balloon_stuck_after_s`` after it was attached has no running driver
(the driver sends its first stats as soon as it starts [QEMU-PROBE]) and is
stuck too.

Balloons that gain nothing
--------------------------
A balloon is worth inflating only if it lowers what the host backs. With free
page reporting on (the launcher turns it on), the guest has already handed its
free pages back: they are not resident in the QEMU process, and a balloon that
takes them frees nothing. So each inflation is measured: the guest RAM's
resident size (smaps, procfs.py) is marked when a larger target is set, and once
the balloon has grown by at least :data:`GAIN_CHECK_MIB` the drop in resident
memory is compared with the growth. If less than :data:`MIN_GAIN_FRAC` of it
came off the host, the balloon is held where it is (``balloon_no_gain``) and
counts as stuck until ``balloon_retry_s`` has passed, so the planner neither
ratchets it further toward the guest's floor nor counts on it, and swaps where
it may instead.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import contextlib

from hvmem.backends.qemu.config import BackendOptions
from hvmem.backends.qemu.guest_state import EventSink, GuestState
from hvmem.backends.qemu.qmp import QmpTimeout
from hvmem.policy.samples import VmPlan
from hvmem.units import MIB

__all__ = ["GAIN_CHECK_MIB", "MIN_GAIN_FRAC", "apply_balloon", "balloon_ceiling_mib",
           "set_balloon", "track_balloon"]

#: Balloon growth (MiB) after which its gain on the host is judged.
GAIN_CHECK_MIB = 8.0
#: Least share of a balloon's growth that must leave the host's resident memory.
MIN_GAIN_FRAC = 0.25


def _tolerance(g: GuestState) -> float:
    return max(2.0, 0.01 * g.configured_mib)


def track_balloon(g: GuestState, now: float, opts: BackendOptions, event: EventSink) -> None:
    """Check one guest's balloon progress at a sample: reached, still moving, or stuck."""
    if g.stuck_since_s is not None and now - g.stuck_since_s >= opts.balloon_retry_s:
        g.stuck_since_s = None
        g.no_gain = False
        event("balloon_retry", g.name, "trying the balloon again")
    if _judge_gain(g, now, event):
        return
    if (g.stats_update is None and g.stuck_since_s is None and g.balloon_path is not None
            and now - g.attached_s >= opts.balloon_stuck_after_s):
        # The driver sends its first stats as soon as it starts: none means no driver.
        event("balloon_stuck", g.name, f"no balloon stats from the guest in "
              f"{now - g.attached_s:.0f} s: its balloon driver is not running")
        g.stuck_since_s = now
        g.target_mib = None
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
    why = None
    if now - g.progress_s >= opts.balloon_stuck_after_s:
        why = f"no progress for {now - g.progress_s:.0f} s"
    elif now - g.target_set_s >= opts.balloon_timeout_s:
        why = f"target not reached within {opts.balloon_timeout_s:g} s"
    if why is None:
        return
    event("balloon_stuck", g.name, f"{why}: at {g.balloon_mib:.0f} MiB of a "
          f"{g.target_mib:.0f} MiB target; holding it there")
    g.stuck_since_s = now
    g.target_mib = None
    with contextlib.suppress(QmpTimeout):
        set_balloon(g, g.balloon_mib)


def _resident_mib(g: GuestState) -> float | None:
    if g.proc is None:
        return None
    return g.proc.ram_rss_mib if g.proc.ram_rss_mib is not None else g.proc.rss_mib


def _judge_gain(g: GuestState, now: float, event: EventSink) -> bool:
    """Hold a balloon whose growth freed nothing on the host; True if it was held."""
    rss = _resident_mib(g)
    if g.gain_mark is None or rss is None:
        return False
    mark_balloon, mark_rss = g.gain_mark
    grown = g.balloon_mib - mark_balloon
    if grown < GAIN_CHECK_MIB:
        return False
    g.gain_mark = None
    freed = mark_rss - rss
    if freed >= MIN_GAIN_FRAC * grown:
        return False
    event("balloon_no_gain", g.name, f"balloon grew {grown:.0f} MiB but the host backs only "
          f"{max(0.0, freed):.0f} MiB less (free pages were already returned); holding it "
          f"at {g.balloon_mib:.0f} MiB")
    g.no_gain = True
    g.stuck_since_s = now
    g.target_mib = None
    with contextlib.suppress(QmpTimeout):
        set_balloon(g, g.balloon_mib)
    return True


def set_balloon(g: GuestState, balloon_mib: float) -> None:
    """Ask QEMU for a balloon of ``balloon_mib`` (the guest size is what is left)."""
    size = int(round(g.configured_mib - balloon_mib)) * MIB
    g.balloon_set = True  # before the call: a timed-out one may still arrive
    g.client.call("balloon", {"value": size})
    g.last_set_mib = balloon_mib


def balloon_ceiling_mib(g: GuestState, opts: BackendOptions) -> float:
    """The largest balloon the guest's floor allows now (see the module docs)."""
    if g.guest_used_mib is None:
        return g.balloon_mib  # no stats: never grow the balloon blind
    reserve = max(opts.guest_reserve_mib,
                  opts.guest_reserve_frac * g.configured_mib)
    return max(0.0, g.configured_mib - g.guest_used_mib - reserve)


def apply_balloon(g: GuestState, plan: VmPlan, now: float, opts: BackendOptions,
                  event: EventSink) -> None:
    """Set the guest's balloon toward the plan's target, above its floor."""
    if g.balloon_path is None:
        return
    want = max(0.0, min(plan.balloon_target_mib, g.balloon_max_mib))
    if want > g.balloon_mib:
        if g.stuck:
            return  # do not push a stuck driver; the planner swaps instead
        ceiling = balloon_ceiling_mib(g, opts)
        if want > ceiling:
            if "floor" not in g.refused:
                used = ("unknown (no guest stats yet)" if g.guest_used_mib is None
                        else f"{g.guest_used_mib:.0f} MiB")
                event("balloon_floor", g.name,
                      f"target {want:.0f} MiB limited to {ceiling:.0f} MiB: the "
                      f"guest uses {used} and keeps a reserve")
                g.refused.add("floor")
            want = max(g.balloon_mib, ceiling)
        else:
            g.refused.discard("floor")
    want = float(round(want))
    if abs(want - g.last_set_mib) < 1.0 and (g.target_mib is not None
                                             or abs(want - g.balloon_mib) < 1.0):
        return
    if want > g.balloon_mib + 1.0 and g.gain_mark is None:
        rss = _resident_mib(g)
        if rss is not None:
            g.gain_mark = (g.balloon_mib, rss)
    elif want < g.balloon_mib:
        g.gain_mark = None
    set_balloon(g, want)
    if abs(want - g.balloon_mib) > _tolerance(g):
        g.target_mib = want
        g.target_set_s = g.progress_s = now
        g.progress_mark_mib = g.balloon_mib
    else:
        g.target_mib = None

