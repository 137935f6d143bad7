"""End to end, setting by setting: each policy's ``[policy.params]``.

The base scenario (``settings_runs.BASE``) run under esx, mom and proxmox, one parameter
changed at a time. A case checks the plans the policy made in the run (balloon and swap
targets, the host plan that drives the sharing scanner) and, where the parameter's
effect reaches the host, the rows.
"""

from __future__ import annotations

import numpy as np

from hvmem.policy.samples import SharingMode
from settings_runs import _peak, covers, run

P = "policy.params"
PERIOD_S = 15.0  # BASE's balance period


def esx_run(*changes):
    return run(*changes)


def mom(*changes):
    return run(("policy.name", "mom"), *changes)


def proxmox(*changes):
    return run(("policy.name", "proxmox"), *changes)


def field_of(key: str, policy: str) -> tuple[str, str]:
    return (f"policy.params.{key}", f'name = "{policy}"')


def steps(r, vm: str, attr: str) -> np.ndarray:
    """Changes of a plan attribute from one plan to the next (only where it changed)."""
    values = np.array([getattr(p, attr) for p in r.plans[vm]])
    d = np.diff(values)
    return d[d != 0]


def host_plans(r):
    return [d.plans.host for d in r.sim.controller.history]


def peak_balloon(r) -> float:
    return max(_peak(r, vm, "MCTLSZ") for vm in r.vm_rows)


# -- esx ------------------------------------------------------------------------------------
def moves(r, attr: str) -> list[float]:
    """What each plan asked beyond what the VM had when sampled: balloon MiB to inflate
    (negative: deflate), or swap MiB to add, over every decision of the run."""
    out = []
    for d in r.sim.controller.history:
        for vm in d.vms:
            plan = d.plans.get(vm.name)
            if plan is None:
                continue
            if attr == "balloon":
                out.append(plan.balloon_target_mib - vm.balloon_mib)
            else:
                out.append(plan.swap_target_mib - vm.swapped_mib - vm.compressed_mib)
    return out


@covers(field_of("balloon_inflate_mib_s", "esx"))
def test_esx_balloon_growth_per_period_is_capped():
    """A plan grows a balloon by at most the rate times the balance period."""
    slow = esx_run((f"{P}.balloon_inflate_mib_s", 0.5))
    assert max(moves(slow, "balloon")) <= 0.5 * PERIOD_S + 1e-6
    assert max(moves(esx_run(), "balloon")) > 0.5 * PERIOD_S
    assert peak_balloon(slow) < peak_balloon(esx_run())


#: busy powers off at 120 s: the host has memory again and the idle VM's balloon deflates.
RETURNS = (("vm.1.power_off", "120s"),)


@covers(field_of("balloon_deflate_mib_s", "esx"))
def test_esx_balloon_shrink_per_period_is_capped():
    """Deflation is capped the same way, once memory comes back."""
    assert min(moves(esx_run(*RETURNS), "balloon")) < -0.5 * PERIOD_S
    slow = esx_run(*RETURNS, (f"{P}.balloon_deflate_mib_s", 0.5))
    assert min(moves(slow, "balloon")) >= -0.5 * PERIOD_S - 1e-6
    assert _peak(slow, "idle", "MCTLSZ") > 0
    assert slow.last("idle")["MCTLSZ"] > esx_run(*RETURNS).last("idle")["MCTLSZ"]


@covers(field_of("swap_out_mib_s", "esx"))
def test_esx_swap_target_growth_is_capped():
    """A plan adds at most the rate times the period to what the VM has swapped."""
    slow = esx_run((f"{P}.swap_out_mib_s", 0.2))
    assert max(moves(slow, "swap")) <= 0.2 * PERIOD_S + 1e-6
    assert max(moves(esx_run(), "swap")) > 0.2 * PERIOD_S


@covers(field_of("free_target_frac", "esx"))
def test_esx_free_target_steers_free_memory():
    """Twice minFree as the target: the policy hands out less and the host keeps more free."""
    more = esx_run((f"{P}.free_target_frac", 2.0))
    free = [np.mean([h["free_mib"] for h in r.host_rows[30:]]) for r in (more, esx_run())]
    assert free[0] > free[1] + 5.0
    avail = [np.mean([p.available_mib for p in host_plans(r)[3:]]) for r in (more, esx_run())]
    assert avail[0] < avail[1]


# -- mom: ballooning --------------------------------------------------------------------------
@covers(field_of("balloon_enabled", "mom"))
def test_mom_without_ballooning_inflates_nothing():
    off = mom((f"{P}.balloon_enabled", False))
    assert peak_balloon(off) == 0.0 < peak_balloon(mom())


@covers(field_of("pressure_threshold_frac", "mom"))
def test_mom_a_higher_pressure_threshold_balloons_more():
    """Guests shrink below the threshold: a higher one, sooner and further [vdsm 02-balloon]."""
    assert peak_balloon(mom((f"{P}.pressure_threshold_frac", 0.4))) > peak_balloon(mom()) + 5


@covers(field_of("pressure_critical_frac", "mom"))
def test_mom_critical_pressure_lowers_the_guests_floor():
    """At or below critical pressure a guest's floor drops to what it uses (free share
    host_free - critical), so a higher critical level lets guests shrink further (with
    steps large enough for the floor to bind)."""
    steps_ = (f"{P}.max_balloon_change_frac", 0.5)
    critical = mom(steps_, (f"{P}.pressure_critical_frac", 0.15))
    assert peak_balloon(critical) > peak_balloon(mom(steps_))


@covers(field_of("min_guest_free_frac", "mom"))
def test_mom_guests_keep_their_free_share():
    """A guest keeps min_guest_free_frac of its memory free: at 50 % BASE's guests are
    never squeezed."""
    keep = mom((f"{P}.min_guest_free_frac", 0.5))
    assert peak_balloon(keep) < peak_balloon(mom())


@covers(field_of("max_balloon_change_frac", "mom"))
def test_mom_balloon_steps_are_capped_by_the_current_size():
    """Each step changes a guest by at most max_balloon_change_frac of its current size."""
    small = mom()
    for r, frac in ((small, 0.05), (mom((f"{P}.max_balloon_change_frac", 0.2)), 0.2)):
        for vm in ("idle", "busy"):
            targets = [p.balloon_target_mib for p in r.plans[vm]]
            sizes = 192.0 - np.array(targets)
            d = np.abs(np.diff(sizes))
            assert np.all(d <= frac * sizes[:-1] + 1e-6)
    big = mom((f"{P}.max_balloon_change_frac", 0.2))
    assert steps(big, "busy", "balloon_target_mib").max() > steps(
        small, "busy", "balloon_target_mib").max()


@covers(field_of("min_balloon_change_frac", "mom"))
def test_mom_small_changes_are_not_made():
    """The deadband: a change under min_balloon_change_frac of the size is skipped, so a
    wider band makes fewer, larger changes."""
    wide = mom((f"{P}.min_balloon_change_frac", 0.05))
    assert (steps(wide, "busy", "balloon_target_mib").size
            < steps(mom(), "busy", "balloon_target_mib").size)


@covers(field_of("history_len", "mom"))
def test_mom_a_short_history_reacts_to_the_latest_sample():
    """StatAvg over one sample follows the guest's free memory at once: the first
    balloon comes no later, and the plans differ from a ten-sample average's."""
    def first_balloon(r):
        return min(i for i, p in enumerate(r.plans["idle"]) if p.balloon_target_mib > 0)
    short = mom((f"{P}.history_len", 1))
    assert first_balloon(short) <= first_balloon(mom())
    assert [p.balloon_target_mib for p in short.plans["idle"]] != [
        p.balloon_target_mib for p in mom().plans["idle"]]


# -- mom: KSM -------------------------------------------------------------------------------
def scan_pages(r) -> list[int]:
    return [h.scan_pages for h in host_plans(r) if h.sharing is SharingMode.RUN]


@covers(field_of("ksm_enabled", "mom"))
def test_mom_without_ksm_stops_and_unmerges():
    """ksmEnabled off: KSM is stopped, what it merged unmerged (run=2) [vdsm 03-ksm]; the
    scanner stops and shared pages return to private copies."""
    off, on = mom((f"{P}.ksm_enabled", False)), mom()
    modes = {h.sharing for h in host_plans(off)}
    assert SharingMode.RUN not in modes and SharingMode.UNMERGE in modes
    assert {h.sharing for h in host_plans(on)} == {SharingMode.RUN}
    assert off.sim.backend.sharing(None)[0] is not SharingMode.RUN


@covers(field_of("ksm_free_frac", "mom"), field_of("ksm_pages_boost", "mom"),
        field_of("ksm_pages_decay", "mom"), field_of("ksm_npages_min", "mom"),
        field_of("ksm_npages_max", "mom"), field_of("ksm_pages_to_scan_initial", "mom"))
def test_mom_pages_to_scan_moves_by_boost_and_decay_within_bounds():
    """Below ksm_free_frac of free memory pages_to_scan rises by the boost, above it
    falls by the decay, always within [npages_min, npages_max], from the initial value."""
    r = mom((f"{P}.ksm_pages_boost", 200), (f"{P}.ksm_pages_decay", -30),
            (f"{P}.ksm_npages_min", 80), (f"{P}.ksm_npages_max", 900),
            (f"{P}.ksm_pages_to_scan_initial", 500))
    pages = scan_pages(r)
    assert pages and min(pages) >= 80 and max(pages) <= 900
    assert pages[0] in (500 + 200, 500 - 30)
    moves = {b - a for a, b in zip(pages, pages[1:], strict=False)} - {0}
    assert moves and moves <= {200, -30} | {900 - p for p in pages} | {80 - p for p in pages}
    assert 900 in pages  # the pressure of BASE drives it to the ceiling
    # a higher ksm_free_frac counts more of the run as pressure: more time boosted
    assert np.mean(scan_pages(mom((f"{P}.ksm_free_frac", 0.9)))) >= np.mean(scan_pages(mom()))
    assert _peak(mom((f"{P}.ksm_free_frac", 0.9)), "idle", "SHRD") >= _peak(mom(), "idle", "SHRD")


@covers(field_of("ksm_sleep_baseline", "mom"))
def test_mom_ksm_sleep_scales_with_host_size():
    """sleep_millisecs = baseline x 16 GiB / host memory, at least 10 ms: on BASE's
    256 MiB host, 64 x the baseline."""
    r = mom((f"{P}.ksm_sleep_baseline", "20ms"))
    sleeps = {h.scan_sleep_ms for h in host_plans(r) if h.sharing is SharingMode.RUN}
    assert sleeps == {20.0 * 16384 / 256}
    slower_sharing = _peak(r, "busy", "SHRD")
    assert slower_sharing <= _peak(mom(), "busy", "SHRD")


# -- proxmox --------------------------------------------------------------------------------
@covers(field_of("target_frac", "proxmox"))
def test_proxmox_a_lower_target_balloons_more():
    """Steering to 50 % host use instead of 80 %: larger balloons, more free memory."""
    low = proxmox((f"{P}.target_frac", 0.5))
    assert peak_balloon(low) > peak_balloon(proxmox()) + 20
    assert (np.mean([h["free_mib"] for h in low.host_rows])
            > np.mean([h["free_mib"] for h in proxmox().host_rows]))


@covers(field_of("max_change_mib", "proxmox"))
def test_proxmox_change_per_round_is_capped():
    small = proxmox((f"{P}.max_change_mib", 10))
    assert np.abs(steps(small, "busy", "balloon_target_mib")).max() <= 10 + 1e-6
    assert np.abs(steps(proxmox(), "busy", "balloon_target_mib")).max() > 10


@covers(field_of("deadband_mib", "proxmox"))
def test_proxmox_does_nothing_inside_the_deadband():
    """While |goal| is within the deadband no balloon moves: 60 MiB covers BASE's goals."""
    assert peak_balloon(proxmox((f"{P}.deadband_mib", 60))) == 0.0 < peak_balloon(proxmox())


@covers(field_of("interval", "proxmox"))
def test_proxmox_rounds_come_every_interval():
    """Plans asked for between rounds hold the targets: with 30 s, balloon targets change
    only at multiples of 30 s."""
    r = proxmox((f"{P}.interval", "30s"))
    times = [d.time_s for d in r.sim.controller.history]
    targets = [d.plans["busy"].balloon_target_mib if "busy" in d.plans else None
               for d in r.sim.controller.history]
    changed_at = [t for t, a, b in zip(times[1:], targets, targets[1:], strict=False)
                  if a is not None and b != a]
    assert changed_at and all(t % 30 == 0 for t in changed_at)


@covers(field_of("comfortable_free_frac", "proxmox"))
def test_proxmox_comfortable_vms_are_shrunk_first():
    """A VM whose guest reports more free memory than comfortable_free_frac of its minimum
    is comfortable and gives first: at 0 every guest with free memory is comfortable,
    at 1 almost none, which changes who is ballooned."""
    all_comfy = proxmox((f"{P}.comfortable_free_frac", 0.0))
    none_comfy = proxmox((f"{P}.comfortable_free_frac", 1.0))
    assert [p.balloon_target_mib for p in all_comfy.plans["idle"]] != [
        p.balloon_target_mib for p in none_comfy.plans["idle"]]
