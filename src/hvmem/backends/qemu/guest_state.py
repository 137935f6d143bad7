"""What the QEMU backend knows and tracks about one guest under its control.

A :class:`GuestState` is made when a guest is attached (backend.py) and is then
read and written by the parts of the backend: sampling.py refreshes its readings
and rates, balloon.py its balloon target and progress, swap_limit.py its cgroup
limit. Sizes are MiB, times seconds since the backend started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hvmem.backends.qemu.cgroups import MemoryCgroup
from hvmem.backends.qemu.config import GuestSpec
from hvmem.backends.qemu.procfs import ProcessMemory
from hvmem.backends.qemu.qmp import QmpClient
from hvmem.policy.samples import VmPlan

__all__ = ["EventSink", "GuestState"]

#: Where the backend's parts report what happened: (event, vm, detail).
EventSink = Callable[[str, str, str], None]


@dataclass
class GuestState:
    """Everything the backend knows and tracks about one controlled guest."""

    spec: GuestSpec
    client: QmpClient
    pid: int
    configured_mib: float
    shares: int
    balloon_max_mib: float
    balloon_path: str | None
    ram_file: str | None
    ram_on_disk: bool
    cgroup: MemoryCgroup | None
    cgroup_exclusive: bool
    original_limit_mib: float | None = None  # v1 limit or v2 memory.max (None: unlimited)
    original_high_mib: float | None = None  # v2 memory.high (None: unlimited)
    limit_set: bool = False
    oom_kills: int | None = None  # the cgroup's OOM kills at the last reading
    swap_capped_mib: float | None = None  # what memory.swap.max last allowed, when it capped
    failures: int = 0
    attached_s: float = 0.0
    # a QEMU that is stopped or does not answer (backend.py): kept, tried again
    stalled_since_s: float | None = None
    qmp_retry_s: float = 0.0  # no QMP before this time while stalled
    # balloon tracking (MiB, seconds)
    balloon_mib: float = 0.0
    target_mib: float | None = None  # balloon target outstanding (None: none)
    target_set_s: float = 0.0
    progress_mark_mib: float = 0.0
    progress_s: float = 0.0
    stuck_since_s: float | None = None
    last_set_mib: float = 0.0  # balloon size last asked of QEMU
    gain_mark: tuple[float, float] | None = None  # (balloon, resident RAM) at an inflation
    no_gain: bool = False  # the last inflation freed nothing on the host
    balloon_set: bool = False  # a balloon target was sent (close() returns it)
    original_balloon_mib: float = 0.0  # the balloon when attached (what close() restores)
    # guest stats
    stats_update: float | None = None
    guest_free_mib: float | None = None
    guest_available_mib: float | None = None
    guest_used_mib: float | None = None
    # pressure stall information of the guest's own cgroup (None: none to read)
    pressure_path: Path | None = None
    psi_some_frac: float | None = None
    # rates
    last_cpu: tuple[float, int] | None = None
    cpu_frac: float = 0.0
    last_majflt: tuple[float, int] | None = None
    swap_in_mib_s: float = 0.0
    last_swapped: tuple[float, float] | None = None
    swap_out_mib_s: float = 0.0
    refused: set[str] = field(default_factory=set)
    plan: VmPlan | None = None
    # last reading
    proc: ProcessMemory | None = None
    swapped_mib: float = 0.0
    saved_mib: float = 0.0

    @property
    def name(self) -> str:
        """The VM's name."""
        return self.spec.name

    @property
    def stalled(self) -> bool:
        """QEMU is stopped or silent: readings are stale and nothing is asked of it."""
        return self.stalled_since_s is not None

    @property
    def stuck(self) -> bool:
        """The balloon is held as stuck until its retry (balloon.py)."""
        return self.stuck_since_s is not None

