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
    # Kernel memory per page of configured memory: the page-frame array (Linux's
    # struct page, 64 B per 4 KiB page) and what else is sized by memory, taken at
    # boot and kept whatever the balloon takes later [OSDI02 §3.2]. 0: none.
    kernel_bytes_per_page: int = 0

    @property
    def kernel_pages(self) -> int:
        """Pages the kernel takes at boot for what it sizes by configured memory."""
        return -(-self.memory_pages * self.kernel_bytes_per_page // 4096)

    def __post_init__(self) -> None:
        if self.memory_pages <= 0:
            raise ConfigError(f"guest memory: expected a positive size, found {self.memory_pages}")
        if self.reclaim_policy not in RECLAIM_POLICIES:
            raise ConfigError(
                f"reclaim policy: expected {', '.join(RECLAIM_POLICIES)}, "
                f"found {self.reclaim_policy!r}"
            )
        if not 0 <= self.kernel_bytes_per_page <= 4096:
            raise ConfigError(f"kernel bytes per page: expected 0..4096, found "
                              f"{self.kernel_bytes_per_page}")
        if self.n_processes < 1 or self.n_processes > 4094:
            raise ConfigError(f"processes: expected 1..4094, found {self.n_processes}")
