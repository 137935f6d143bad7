"""The pmap: each VM's map from guest-physical pages to their backing.

What is modelled
----------------
ESX keeps, per VM, a *pmap* translating every guest "physical" page number (PPN)
to the machine page (MPN) that backs it, or to where its data went instead
(OSDI 2002 §2). Remapping a PPN (changing or dropping its MPN) is invisible to
the guest and is what page sharing, ballooning, compression and swapping do.
The pmap is a struct of arrays indexed by PPN::

    state[ppn]   Backing: UNBACKED until first touch, then PRIVATE; later SHARED,
                 BALLOONED, COMPRESSED or SWAPPED as reclamation moves the page
    mpn[ppn]     the machine page while state is PRIVATE or SHARED, else -1

Only PRIVATE and SHARED pages have a machine page; only PRIVATE ones may be
written without a copy (a write to a SHARED page breaks the sharing first).

Invariants: ``mpn >= 0`` exactly where state is PRIVATE or SHARED; no two PRIVATE
pages, of any VM, have the same MPN (checked by the host).

References: Waldspurger, OSDI 2002, §2 and §7.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from hvmem.errors import InvariantViolation
from hvmem.hardware.frames import index_dtype


class Backing(IntEnum):
    """What backs a guest-physical page."""

    UNBACKED = 0  # never touched, or given back: the next touch allocates (lazily)
    PRIVATE = 1  # a machine page of this VM alone, writable
    SHARED = 2  # a machine page shared copy-on-write (read-only in the tables)
    BALLOONED = 3  # pinned by the guest's balloon driver; backing dropped
    COMPRESSED = 4  # data in the VM's compression cache
    SWAPPED = 5  # data in the VM's swap file


#: The states as stored (``state`` is uint8), for the Numba kernels that compare them.
STATE_PRIVATE = np.uint8(Backing.PRIVATE)
STATE_SHARED = np.uint8(Backing.SHARED)


class Pmap:
    """PPN -> backing for one VM.

    Args:
        n_ppns: the VM's configured memory in 4 KiB pages.
        n_frames: machine frames of the host (MPNs are below it); ``mpn`` is
            int32 while they fit, which is any host under 8 TiB.
    """

    def __init__(self, n_ppns: int, n_frames: int = 2**31 - 1):
        self.n_ppns = n_ppns
        self.state = np.zeros(n_ppns, dtype=np.uint8)
        self.mpn = np.full(n_ppns, -1, dtype=index_dtype(n_frames))

    def back(self, ppns: np.ndarray, mpns: np.ndarray, state: Backing = Backing.PRIVATE) -> None:
        """Record that ``ppns`` are now backed by ``mpns``."""
        self.mpn[ppns] = mpns
        self.state[ppns] = state

    def unback(self, ppns: np.ndarray, state: Backing = Backing.UNBACKED) -> np.ndarray:
        """Drop the machine pages of ``ppns``; returns the MPNs they had."""
        old = self.mpn[ppns].copy()
        self.mpn[ppns] = -1
        self.state[ppns] = state
        return old

    def backed(self) -> np.ndarray:
        """PPNs that have a machine page."""
        return np.flatnonzero(self.mpn >= 0)

    def count(self, state: Backing) -> int:
        """Pages in ``state``."""
        return int(np.count_nonzero(self.state == state))

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` if states and MPNs disagree."""
        has_mpn = self.mpn >= 0
        should = (self.state == Backing.PRIVATE) | (self.state == Backing.SHARED)
        if not np.array_equal(has_mpn, should):
            ppn = int(np.flatnonzero(has_mpn != should)[0])
            raise InvariantViolation(
                f"pmap: ppn {ppn} is {Backing(self.state[ppn]).name} with mpn {self.mpn[ppn]}"
            )
