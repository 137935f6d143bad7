"""Hypervisor swapping of real guests: a memory-cgroup limit on the QEMU process.

A plan's ``swap_target_mib`` becomes a memory-cgroup limit on the QEMU process
(cgroups.py), lowered by what the plan wants swapped beyond what is swapped
already, never below QEMU's anonymous memory plus a headroom. Only for a VM in
a cgroup of its own whose RAM is a file on disk, or anonymous on a host with
swap; otherwise the backend refuses, once per reason, with a message saying why
(an anonymous-RAM QEMU under a limit on a host without swap is OOM-killed).
When the host is back in a state without reclamation the limit is lifted, and
the pages come back as the guest touches them (ESX does not swap in
proactively either).

On cgroup v1 the limit is ``memory.limit_in_bytes``, which reclaims inside the
write. On cgroup v2 it is ``memory.reclaim`` for what the plan swaps now, then
``memory.high`` at the limit and ``memory.max`` a margin above it
(cgroup_v2.py ``hold``); for a guest with anonymous RAM the plan's swapping is
capped by what ``memory.swap.max`` leaves the cgroup (the ``swap_capped`` event,
and the plan lines of a dry run, say so), and refused when that is nothing.
Either way undoing puts back what was there: v1's limit, v2's ``memory.max``
and ``memory.high``.
"""

from __future__ import annotations

from pathlib import Path

from hvmem.backends.qemu import cgroup_v2
from hvmem.backends.qemu.cgroups import exclusive_to
from hvmem.backends.qemu.config import BackendOptions
from hvmem.backends.qemu.guest_state import EventSink, GuestState
from hvmem.backends.qemu.procfs import HostMemInfo, read_meminfo
from hvmem.errors import BackendError
from hvmem.policy.samples import VmPlan
from hvmem.policy.states import MemState, actions

__all__ = ["apply_swap_limit", "lift_limit", "swap_cap_mib", "swap_note", "swap_refusal"]


def swap_refusal(g: GuestState, proc_root: Path, meminfo: HostMemInfo | None = None,
                 file_backed_hint: str = "launch it with file-backed RAM: hvmem qemu launch "
                 "--file-backed") -> str | None:
    """None if the VM may be put under a memory limit, else why not (one line)."""
    if g.ram_file is None:
        mem = meminfo or read_meminfo(proc_root)
        if mem.swap_total_mib <= 0:
            return (f"{g.name}: refusing to limit its memory: its RAM is anonymous and "
                    "the host has no swap, so a memory-cgroup limit would get QEMU "
                    f"OOM-killed ({file_backed_hint})")
    elif not g.ram_on_disk:
        return (f"{g.name}: not limiting its memory: its RAM file {g.ram_file} is on "
                "tmpfs, so there is no disk to page it to")
    if g.cgroup is None:
        return (f"{g.name}: not limiting its memory: QEMU (pid {g.pid}) is not in a memory "
                "cgroup of its own (hvmem qemu launch --file-backed puts it in one)")
    if not g.cgroup_exclusive:
        # A launcher may still have been in it at attach time: look again.
        g.cgroup_exclusive = exclusive_to(g.cgroup, g.pid)
    if not g.cgroup_exclusive:
        return (f"{g.name}: not limiting its memory: cgroup {g.cgroup.path} holds other "
                "processes too")
    room = swap_cap_mib(g)
    if room is not None and room < 1.0:
        return (f"{g.name}: not limiting its memory: its RAM is anonymous and "
                f"{g.cgroup.path}/memory.swap.max leaves it no swap ({room:.0f} MiB), so a "
                f"limit would get QEMU OOM-killed ({file_backed_hint})")
    return None


def swap_cap_mib(g: GuestState) -> float | None:
    """What ``memory.swap.max`` still lets a cgroup-v2 guest with anonymous RAM swap (MiB).

    None where nothing caps it: v1, file-backed RAM (paged to its own file), or
    ``memory.swap.max`` unlimited.
    """
    if g.cgroup is None or g.cgroup.version != 2 or g.ram_file is not None:
        return None
    try:
        return cgroup_v2.swap_room_mib(g.cgroup.path)
    except (OSError, ValueError):
        return None


def swap_note(g: GuestState, plan: VmPlan) -> str | None:
    """For the plan's line: the swapping ``memory.swap.max`` does not allow, if any."""
    more = plan.swap_target_mib - g.swapped_mib
    room = swap_cap_mib(g)
    if room is None or more < 1.0 or room >= more:
        return None
    return f"swap capped at {room:.0f} MiB more by memory.swap.max"


def lift_limit(g: GuestState) -> None:
    """Put the cgroup's limits back as they were before this backend set them.

    Raises:
        BackendError: the kernel refused.
    """
    assert g.cgroup is not None
    g.cgroup.restore_limits(g.original_limit_mib, g.original_high_mib)
    g.limit_set = False


def _check_oom(g: GuestState, event: EventSink) -> None:
    """Report OOM kills in the guest's cgroup since the last look (v2 memory.events)."""
    if g.cgroup is None or g.cgroup.version != 2:
        return
    try:
        kills = g.cgroup.events().get("oom_kill", 0)
    except BackendError:
        return
    if g.oom_kills is not None and kills > g.oom_kills:
        event("cgroup_oom", g.name, f"{kills - g.oom_kills} OOM kill(s) in {g.cgroup.path} "
              "(memory.events oom_kill)")
    g.oom_kills = kills


def apply_swap_limit(g: GuestState, plan: VmPlan, state: MemState, opts: BackendOptions,
                     meminfo: HostMemInfo | None, event: EventSink) -> None:
    """Set, lower or lift the guest's memory limit for the plan in host ``state``.

    ``meminfo`` is the host's last reading, if any (whether the host has swap).
    """
    acts = actions(state, opts.profile)
    reclaiming = acts.balloon or acts.swap or acts.swap_fallback
    more = plan.swap_target_mib - g.swapped_mib
    if g.limit_set:
        _check_oom(g, event)
    if not reclaiming:
        if g.limit_set and g.cgroup is not None:
            lift_limit(g)
            event("swap_limit_lifted", g.name,
                  f"host {state.label}: limit back to "
                  f"{'none' if g.original_limit_mib is None else g.original_limit_mib}")
        return
    if more < 1.0:
        return
    why = swap_refusal(g, opts.proc_root, meminfo, opts.file_backed_hint)
    if why is not None:
        if why not in g.refused:
            g.refused.add(why)
            event("swap_refused", g.name, why)
        return
    assert g.cgroup is not None and g.proc is not None
    room = swap_cap_mib(g)
    if room is not None and room < more:
        if g.swap_capped_mib is None or abs(g.swap_capped_mib - room) >= 1.0:
            event("swap_capped", g.name, f"plan swaps {more:.0f} MiB more, memory.swap.max "
                  f"of {g.cgroup.path} allows {room:.0f} MiB: swapping {room:.0f} MiB")
        g.swap_capped_mib = room
        more = room
    else:
        g.swap_capped_mib = None
    usage = g.cgroup.usage_mib()
    floor = g.proc.overhead_mib + opts.swap_headroom_mib
    limit = max(floor, usage - more)
    current = g.cgroup.limit_mib()
    if current is not None and limit >= current - 1.0:
        return  # at the floor already, or the limit is already that low
    if g.cgroup.version == 2:
        _hold_v2(g, limit, usage, floor, more, event)
        return
    if not g.limit_set:
        g.original_limit_mib = current  # what close() and HIGH restore
    try:
        g.cgroup.set_limit_mib(limit)
    except BackendError as err:
        event("swap_failed", g.name, str(err))
        return
    g.limit_set = True
    event("swap_limit", g.name, f"memory limit {limit:.0f} MiB (usage was "
          f"{usage:.0f} MiB, plan swaps {more:.0f} MiB more; floor {floor:.0f} MiB)")


def _hold_v2(g: GuestState, limit: float, usage: float, floor: float, more: float,
             event: EventSink) -> None:
    """On cgroup v2: reclaim now, hold at ``memory.high`` with ``memory.max`` above it."""
    assert g.cgroup is not None
    if not g.limit_set:
        g.original_limit_mib, g.original_high_mib = g.cgroup.saved_limits()
    if g.oom_kills is None:
        _check_oom(g, event)  # the count before hvmem's limits, so later kills show
    try:
        held = cgroup_v2.hold(g.cgroup.path, limit, max(0.0, usage - limit),
                              max_cap_mib=g.original_limit_mib)
    except (OSError, ValueError) as err:
        event("swap_failed", g.name, f"{g.cgroup.path}: cannot hold at {limit:.0f} MiB "
              f"({getattr(err, 'strerror', None) or err})")
        return
    g.limit_set = True
    event("swap_limit", g.name, f"{held.describe()}; plan swaps {more:.0f} MiB more; "
          f"floor {floor:.0f} MiB")
