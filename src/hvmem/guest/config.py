"""A guest kernel's settings: what a scenario fixes about each guest.

Pure data, so that reading a scenario (``scenario/``) needs none of the guest's
machinery: the kernel and its Numba kernels load when a simulation builds a
guest, not when a file is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from hvmem.errors import ConfigError
from hvmem.replacement.names import RECLAIM_POLICIES  # one name set with host and replay


@dataclass(frozen=True, slots=True)
class GuestConfig:
    """Settings of one guest kernel."""

    memory_pages: int  # configured guest-physical memory
    swap_pages: int | None = None  # guest swap; None: as large as memory
    swap_device: str = "ssd"  # "hdd", "ssd" or "nvme"
    reclaim_policy: str = "lru"  # fifo, lru, clock or random
    n_processes: int = 1  # guest processes (ASIDs 1..n)

    def __post_init__(self) -> None:
        if self.memory_pages <= 0:
            raise ConfigError(f"guest memory: expected a positive size, found {self.memory_pages}")
        if self.reclaim_policy not in RECLAIM_POLICIES:
            raise ConfigError(
                f"reclaim policy: expected {', '.join(RECLAIM_POLICIES)}, "
                f"found {self.reclaim_policy!r}"
            )
        if self.n_processes < 1 or self.n_processes > 4094:
            raise ConfigError(f"processes: expected 1..4094, found {self.n_processes}")
