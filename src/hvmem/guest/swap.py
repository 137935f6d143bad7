"""The guest's own swap device: where the guest pages out under pressure.

What is modelled
----------------
A swap area of ``capacity_pages`` slots on the guest's virtual disk. Swapping a
page out takes a free slot, stores the page's content token there and charges a
device write; swapping in reads the token back, charges a device read and frees
the slot (Linux keeps the slot while the page is clean in the swap cache; this
model frees it at once, so a swapped-in page that is evicted again is written
again). A page-table entry of a swapped page holds its slot, as Linux's swap
entries do, so the slot is found on the next fault.

Latency per 4 KiB operation comes from the cost table's device profiles (HDD,
SSD, NVMe); reads and writes cost the same in this model.

Free slots are a stack (the slot freed last is taken first; a fresh device
hands out the lowest) written only where used (``free_stack.py``): a guest that
swaps little commits little of it.

Invariants: a slot is free or holds exactly one page; ``used + free == capacity``.

Counters (pages): ``swap_outs``, ``swap_ins``, ``failed_full`` (swap-outs
refused because every slot was taken).

References: Linux ``mm/swapfile.c`` (swap slots), ``include/linux/swapops.h``
(swap entries in PTEs); OSTEP ch. 21.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvmem.errors import ConfigError, InvariantViolation
from hvmem.guest.free_stack import LazyFreeStack
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable


@dataclass(slots=True)
class SwapCounters:
    """Event tallies of one guest swap device, in pages."""

    swap_outs: int = 0  # pages written to swap
    swap_ins: int = 0  # pages read back
    failed_full: int = 0  # swap-outs refused: no free slot
    time_ns: float = 0.0  # device time charged


class SwapDevice:
    """A guest swap area.

    Args:
        capacity_pages: slots (0 for a guest without swap).
        device: "hdd", "ssd" or "nvme" (its latency from ``costs``).
        costs: the cost table.
    """

    def __init__(self, capacity_pages: int, device: str = "ssd",
                 costs: CostTable = DEFAULT_COSTS):
        if capacity_pages < 0:
            raise ConfigError(f"guest swap: capacity must not be negative, found {capacity_pages}")
        self.capacity_pages = capacity_pages
        self.device = device
        self.op_ns = costs.swap_in_ns(device)
        self.content = np.zeros(capacity_pages, dtype=np.uint64)
        self.used = np.zeros(capacity_pages, dtype=np.bool_)
        self._free_stack = LazyFreeStack(capacity_pages)
        self.counters = SwapCounters()

    @property
    def n_free(self) -> int:
        """Free slots."""
        return self._free_stack.size

    @property
    def n_used(self) -> int:
        """Slots holding pages."""
        return self.capacity_pages - self.n_free

    def swap_out(self, tokens: np.ndarray) -> np.ndarray:
        """Write pages with contents ``tokens``; returns their slots (all or nothing).

        Raises:
            ConfigError: not enough free slots (the caller checks ``n_free`` first).
        """
        n = tokens.size
        if n > self.n_free:
            self.counters.failed_full += n
            raise ConfigError(f"guest swap full: {n} slots asked, {self.n_free} free")
        slots = self._free_stack.pop(n)
        self.used[slots] = True
        self.content[slots] = tokens
        self.counters.swap_outs += n
        self.counters.time_ns += n * self.op_ns
        return slots

    def swap_in(self, slots: np.ndarray) -> np.ndarray:
        """Read pages back from ``slots`` (freeing them); returns their contents."""
        slots = np.asarray(slots, dtype=np.int64)
        tokens = self.content[slots].copy()
        self.used[slots] = False
        self._free_stack.push(slots)
        self.counters.swap_ins += slots.size
        self.counters.time_ns += slots.size * self.op_ns
        return tokens

    def discard(self, slots: np.ndarray) -> None:
        """Free slots without reading them (their process unmapped the pages)."""
        slots = np.asarray(slots, dtype=np.int64)
        self.used[slots] = False
        self._free_stack.push(slots)

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` unless the free slots are exactly the unused ones."""
        on_stack = self._free_stack.contents()
        if (np.unique(on_stack).size != on_stack.size or np.any(self.used[on_stack])
                or on_stack.size + int(np.count_nonzero(self.used)) != self.capacity_pages):
            raise InvariantViolation("guest swap: free slot list corrupt")
