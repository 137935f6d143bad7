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
"""

from __future__ import annotations

from pathlib import Path

from hvmem.backends.qemu.cgroups import exclusive_to
from hvmem.backends.qemu.config import BackendOptions
from hvmem.backends.qemu.guest_state import EventSink, GuestState
from hvmem.backends.qemu.procfs import HostMemInfo, read_meminfo
from hvmem.errors import BackendError
from hvmem.policy.samples import VmPlan
from hvmem.policy.states import MemState, actions

__all__ = ["apply_swap_limit", "swap_refusal"]


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
    return None


def apply_swap_limit(g: GuestState, plan: VmPlan, state: MemState, opts: BackendOptions,
                     meminfo: HostMemInfo | None, event: EventSink) -> None:
    """Set, lower or lift the guest's memory limit for the plan in host ``state``.

    ``meminfo`` is the host's last reading, if any (whether the host has swap).
    """
    acts = actions(state, opts.profile)
    reclaiming = acts.balloon or acts.swap or acts.swap_fallback
    more = plan.swap_target_mib - g.swapped_mib
    if not reclaiming:
        if g.limit_set and g.cgroup is not None:
            g.cgroup.set_limit_mib(g.original_limit_mib)
            g.limit_set = False
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
    usage = g.cgroup.usage_mib()
    floor = g.proc.overhead_mib + opts.swap_headroom_mib
    limit = max(floor, usage - more)
    current = g.cgroup.limit_mib()
    if current is not None and limit >= current - 1.0:
        return  # at the floor already, or the limit is already that low
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
