"""One VM of a simulation: its configuration and every part of it, guest and host side.

``sim.py`` builds a :class:`SimVm` when the VM powers on and drops it when the VM
powers off. Besides the parts, a VM carries two kinds of running tally, each
kept by the one reader that needs it: the counters its last row was computed
from (``sim_rows.py`` turns their growth into per-second rates) and the
swap-ins and decompressions the swapper has already answered (``sim_backend.py``
replaces only pages touched back in since).
"""

from __future__ import annotations

from dataclasses import dataclass

from hvmem.guest.balloon_driver import BalloonDriver
from hvmem.guest.kernel import GuestKernel
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.hypervisor.reclaim.balloon import BalloonHost
from hvmem.hypervisor.sampling import ActiveMemorySampler
from hvmem.hypervisor.vm import HostVm
from hvmem.policy.samples import VmPlan
from hvmem.scenario.schema import VmConfig
from hvmem.workloads.base import Workload


@dataclass
class SimVm:
    """One VM in the simulation: its configuration and every part of it."""

    config: VmConfig
    host_vm: HostVm
    kernel: GuestKernel
    device: VirtioBalloon
    driver: BalloonDriver
    balloon: BalloonHost
    sampler: ActiveMemorySampler
    workload: Workload
    plan: VmPlan | None = None  # the policy's latest plan for the VM
    # Counters at the last row, for its rates (sim_rows.py).
    last_swap_outs: int = 0
    last_swap_ins: int = 0
    last_zips: int = 0
    last_unzips: int = 0
    last_reclaim_stall_ns: float = 0.0
    last_guest_swap_ins: int = 0
    last_guest_swap_outs: int = 0
    returned_seen: int = 0  # swap-ins + decompressions the swapper has answered
