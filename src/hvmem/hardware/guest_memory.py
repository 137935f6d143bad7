"""Guest-physical memory as the guest kernel sees it: the memory bus of a VM.

The guest kernel reads and writes whole pages of its "physical" memory when it
zeroes a fresh page, swaps a page out to its disk or in from it, or copies data.
Those are ordinary memory accesses to guest-physical pages: the hypervisor
behind them may have to back a page first (first touch), bring it back from its
own swap or compression cache (which is how double paging happens), or break
sharing before a write. This protocol is that bus; the hypervisor implements
it, the guest only uses it, so neither imports the other.

Contents are 64-bit tokens standing for 4 KiB of data (0 = zeroes).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class GuestPhysicalMemory(Protocol):
    """Page-granular access to one VM's guest-physical memory."""

    n_ppns: int  # the VM's configured memory in 4 KiB pages

    def read_pages(self, ppns: np.ndarray, for_swap_out: bool = False
                   ) -> tuple[np.ndarray, float]:
        """Contents of ``ppns``; returns (tokens, time charged in ns).

        ``for_swap_out`` marks the guest reading pages to write them to its own
        swap device (so a hypervisor can tell double paging apart).
        """
        ...

    def write_pages(self, ppns: np.ndarray, tokens: np.ndarray) -> float:
        """Store ``tokens`` into ``ppns``; returns the time charged in ns."""
        ...

    def touch_pages(self, ppns: np.ndarray) -> float:
        """Read ``ppns`` without wanting their contents (the program's own loads).

        Returns the time charged in ns, as :meth:`read_pages` would.
        """
        ...
