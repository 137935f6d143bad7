"""The ``psi`` policy: hold each VM's memory pressure near a target, as senpai does.

What is modelled
----------------
Facebook's senpai [SENPAI] sizes a cgroup by its pressure stall information
(PSI, [LINUX-PSI]) instead of by free memory: every interval it compares the
time the cgroup's tasks stalled on memory with a target and moves the cgroup's
``memory.high`` by a factor that grows quadratically with the error::

    pressure above target:  grow  by min((p / target / 20) ** 2, 1) x 100 %
    pressure at or below:   shrink by min((target / p / 10) ** 2, 1) x 1 %

(``coeff_backoff`` 20, ``max_backoff`` 1.0, ``coeff_probe`` 10, ``max_probe``
0.01; the target is 10 ms of stall per 6 s interval, :data:`TARGET_FRAC` =
1/600 of the time). So a VM that never waits for memory gives up 1 % of what
it holds each period, and pressure ten times the target (or more) takes the
whole squeeze back at once. The effect is proactive reclaim: memory the VM does
not need goes back to the host before the host runs short, and the VM's own
pressure, not the host's free memory, says when to stop.

Mapping onto the plans: a VM's *size* is ``configured - balloon - swapped``.
Shrinking inflates its balloon (the guest chooses what to give up, as under
``memory.high`` the kernel does), or where the balloon cannot take more (stuck,
no driver, at its maximum) raises the swap target, which the QEMU backend
carries out as the cgroup limit and the simulator as host swapping. Growing
first lowers the swap target, then deflates the balloon. A VM without a
pressure reading (``psi_some_frac`` None: a real guest whose QEMU has no cgroup
of its own with ``memory.pressure``) is held where it is. The host memory state
does not enter: this is the VM's own control loop, and sharing keeps running.

The pressure a VM sample carries is PSI ``some`` (avg10 of the cgroup's
``memory.pressure`` on a real host; in the simulator, the share of time since
the last sample the VM stalled on swap-in and decompression). senpai reads the
cumulative ``total`` over its own interval; avg10 over a balance period of 15 s
is the nearest reading a sample offers.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from hvmem.policy.samples import (
    HostPlan,
    HostSample,
    Plans,
    SharingMode,
    VmPlan,
    VmSample,
    powered_on,
)

__all__ = ["COEFF_BACKOFF", "COEFF_PROBE", "MAX_BACKOFF", "MAX_PROBE", "PsiPolicy",
           "TARGET_FRAC", "psi_adjustment"]

#: Stall share to hold: senpai's 10 ms per 6 s interval [SENPAI].
TARGET_FRAC = 0.010 / 6
#: Largest shrink per period, and the pressure ratio where it is reached [SENPAI].
MAX_PROBE = 0.01
COEFF_PROBE = 10.0
#: Largest growth per period, and the pressure ratio where it is reached [SENPAI].
MAX_BACKOFF = 1.0
COEFF_BACKOFF = 20.0


def psi_adjustment(pressure_frac: float, target_frac: float = TARGET_FRAC) -> float:
    """The relative size change senpai makes: positive grows, negative shrinks."""
    if pressure_frac > target_frac:
        err = pressure_frac / target_frac
        return min((err / COEFF_BACKOFF) ** 2, 1.0) * MAX_BACKOFF
    err = target_frac / max(pressure_frac, 1e-12)
    return -min((err / COEFF_PROBE) ** 2, 1.0) * MAX_PROBE


class PsiPolicy:
    """senpai's pressure loop over every VM (module docs); no parameters."""

    name = "psi"
    params_type: type = type(None)

    def __init__(self, params: None = None) -> None:
        self.params = params

    def plan(self, host: HostSample, vms: Sequence[VmSample]) -> Plans:
        """Plan one balance period: each VM's size moved by its own pressure."""
        plans = {}
        for vm in powered_on(vms):
            balloon, swapped = vm.balloon_mib, vm.swapped_mib + vm.compressed_mib
            if vm.psi_some_frac is not None:
                size = max(0.0, vm.configured_mib - balloon - swapped)
                change = psi_adjustment(vm.psi_some_frac) * size
                if change > 0:  # give back: the limit first, then the balloon
                    back = min(swapped, change)
                    swapped -= back
                    balloon = max(0.0, balloon - (change - back))
                elif not vm.balloon_stuck and balloon - change <= vm.balloon_max_mib:
                    balloon -= change
                else:
                    swapped -= change
            target = max(0.0, vm.configured_mib - balloon - swapped)
            plans[vm.name] = VmPlan(target_mib=min(target, vm.ceiling_mib),
                                    balloon_target_mib=balloon, swap_target_mib=swapped)
        return Plans(plans, HostPlan(sharing=SharingMode.RUN, state=host.state))
