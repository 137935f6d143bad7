"""Hypervisor swapping: a swap file per VM (ESX's ``.vswp``).

What is modelled
----------------
When ballooning is too slow or not possible, the hypervisor pages guest memory
out itself, behind the guest's back: it writes the page's data to the VM's swap
file, marks the PPN SWAPPED in the pmap and frees the frame. The guest's next
touch of the page faults into the hypervisor, which reads it back (a swap-in,
with the device's latency) into a fresh frame. Reclaiming is fast (no guest
cooperation), running is costly: every touch of a swapped page stalls the vCPU
for a disk read.

The swap file has room for every guest-physical page (ESX sizes ``.vswp`` as
configured memory minus the reservation, so every unreserved page has a home);
what the model keeps of a swapped page, its content token, is in the VM's
put-aside store (``aside.py``), which it shares with the compression cache.

Page selection (:func:`swap_victims`): among the VM's private pages, by one of
the replacement policies the host supports (``SWAP_SELECTIONS`` in
``replacement/names.py``): ``random`` (ESX picks pages at random, knowing
nothing about the guest's use of them [OSDI02 §3]) or ``lru`` (oldest
host-observed touch first, an option beyond ESX, over the touch stamps the
host keeps for every page). Victims are swapped in PPN order.

Double paging: a guest that swaps out a page the host has already swapped makes
the host read it back first (to hand the guest its data) only for the guest to
write it to its own disk: two I/Os, no memory gained. It is counted here when
the guest's swap-out reads a SWAPPED page [OSDI02 §3.1].

Counters (pages): swap_outs, swap_ins, double_paging; time_ns of device I/O.

References: [OSDI02 §3.1, §3.3, §4]; the ``.vswp`` size, configured memory
less the reservation [ITUDA-SWAP]; the keys in brackets resolve in
``docs/references.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.aside import SWAP_FILE, TAKE_SWAPPED, AsideStore
from hvmem.replacement.names import SWAP_SELECTIONS
from hvmem.replacement.policies import make_policy

#: The pages the host may swap, by pmap state: private ones (a shared page
#: would be read back to be swapped once per sharer, freeing nothing).
SWAP_CANDIDATES = np.array([state == Backing.PRIVATE for state in Backing])


def swap_victims(n_pages: int, selection: str, state: np.ndarray, touch_stamp: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Up to ``n_pages`` private pages of a VM to swap, in PPN order.

    Args:
        n_pages: pages wanted.
        selection: one of ``SWAP_SELECTIONS``: "random" (as ESX) or "lru".
        state: the VM's pmap states.
        touch_stamp: when the host last saw each page touched (``lru`` reads it).
        rng: the generator ``random`` draws from.

    Raises:
        ConfigError: a selection the host does not support.
    """
    policy = make_policy(selection, state.size, rng, supported=SWAP_SELECTIONS,
                         user="host swap selection", use_stamp=touch_stamp)
    return np.sort(policy.victims(n_pages, state, SWAP_CANDIDATES))


@dataclass(slots=True)
class HostSwapCounters:
    """Event tallies of one VM's swap file, in pages."""

    swap_outs: int = 0  # pages written to the swap file
    swap_ins: int = 0  # pages read back on touch
    double_paging: int = 0  # guest swap-outs of pages the host had swapped
    time_ns: float = 0.0  # device time of all of it


class HostSwapFile:
    """The swap file of one VM.

    Args:
        n_ppns: the VM's configured memory (room for every page).
        device: "hdd", "ssd" or "nvme".
        costs: the cost table.
        store: where the pages' data is kept; shared with the VM's compression
            cache (a page is never in both). A store of its own if None.
    """

    def __init__(self, n_ppns: int, device: str = "ssd", costs: CostTable = DEFAULT_COSTS,
                 store: AsideStore | None = None):
        self.device = device
        self.op_ns = costs.swap_in_ns(device)
        self.aside = AsideStore(n_ppns) if store is None else store
        self.n_ppns = n_ppns
        self.counters = HostSwapCounters()

    @property
    def n_used(self) -> int:
        """Pages in the swap file (SWCUR, in pages), kept as they come and go."""
        return self.aside.n_swapped

    @property
    def used(self) -> np.ndarray:
        """Per PPN: in the swap file (a new array: for checks, not hot paths)."""
        used = np.zeros(self.n_ppns, dtype=np.bool_)
        used[self.aside.pages(swap_file=True)] = True
        return used

    def store(self, ppns: np.ndarray, tokens: np.ndarray) -> None:
        """Write the distinct ``ppns`` out."""
        self.aside.put(ppns, tokens, SWAP_FILE)
        self.counters.swap_outs += int(ppns.size)
        self.counters.time_ns += ppns.size * self.op_ns

    def load(self, ppns: np.ndarray) -> np.ndarray:
        """Read the distinct ``ppns`` back, freeing their slots; returns their contents."""
        tokens = self.aside.take(ppns)
        self.counters.swap_ins += int(ppns.size)
        self.counters.time_ns += ppns.size * self.op_ns
        return tokens

    def discard(self, ppns: np.ndarray) -> None:
        """Forget the distinct ``ppns``' slots without reading them (the pages were released)."""
        self.aside.take_kind(ppns, TAKE_SWAPPED, tokens=False)
