r"""The hypervisor's side of one VM: what the rest of hvmem asks of it.

What is modelled
----------------
``HostVm`` is one VM as the host sees it: its state (``VmState``: pmap,
paging mode, swap file, compression cache, large-page map, touch stamps,
sampling traps) and the calls the guest, the simulator and the tools make on
it. Each call is one mechanism, kept in its own module::

    the guest's memory bus   read_pages, write_pages, touch_pages      bus.py
    the vCPU's MMU batches   translate                                 mmu_batch.py
    faults                   back_pages, break_cow, remap              fault.py
    host large pages         break_large_pages                         large_pages.py
    reclaim                  choose_victims, swap_out, reclaim         reclaim/reclaimer.py
    page sharing             share_scan                                reclaim/sharing.py
    pages given back         release                                   reclaim/balloon.py
    sampling traps           arm_sampling                              sampling.py

A VM reaches only its own state, machine memory, the cost table, the host's
clock and the few host services that cross VMs (making room, page sharing,
the host's large-page settings); ``vm_state.py`` says why. The guest kernel
sees a ``HostVm`` only as its guest-physical memory bus
(``hardware.guest_memory.GuestPhysicalMemory``) and, under mmu fidelity, as
what translates its vCPU's references.
"""

from __future__ import annotations

import numpy as np

from hvmem.hardware.mmu import Mmu, TranslationBatch
from hvmem.hypervisor import bus, fault, large_pages, mmu_batch, sampling
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim import balloon, reclaimer
from hvmem.hypervisor.vm_state import VmState


class HostVm(VmState):
    """The hypervisor's side of one VM (made by ``Host.add_vm``)."""

    # -- the guest's memory bus (hardware.guest_memory.GuestPhysicalMemory) ---------
    def read_pages(self, ppns: np.ndarray, for_swap_out: bool = False
                   ) -> tuple[np.ndarray, float]:
        """Contents of guest pages, bringing back any the host had taken away.

        An unbacked page is backed first (it reads zeroes); a swapped one is
        read back from the swap file. ``for_swap_out`` says the guest reads the
        pages to write them to its own swap: a swapped one is double paging.
        """
        return bus.read_pages(self, ppns, for_swap_out)

    def write_pages(self, ppns: np.ndarray, tokens: np.ndarray) -> float:
        """Store contents into guest pages, backing unbacked ones first."""
        return bus.write_pages(self, ppns, tokens)

    def touch_pages(self, ppns: np.ndarray) -> float:
        """Read guest pages for their own sake (the contents are not wanted).

        The same as :meth:`read_pages` without gathering the tokens; returns
        the time charged.
        """
        return bus.touch_pages(self, ppns)

    # -- the vCPU's MMU ---------------------------------------------------------------
    def translate(self, mmu: Mmu, vpns: np.ndarray, is_write: np.ndarray | None = None,
                  steps: np.ndarray | None = None, events: list | None = None,
                  tokens: np.ndarray | None = None) -> TranslationBatch:
        """Translate a batch of the current address space, resolving hypervisor faults.

        Faults the guest must handle (``GUEST_*``) stop the batch and are
        returned; backing faults and sampling traps are resolved here and the
        reference retried (``mmu_batch.translate`` has the arguments).
        """
        return mmu_batch.translate(self, mmu, vpns, is_write, steps, events, tokens)

    # -- faults -----------------------------------------------------------------------
    def back_pages(self, ppns: np.ndarray) -> np.ndarray:
        """Touch ``ppns``: back the ones without a frame; returns their MPNs, in order.

        ``ppns`` may repeat and come in any order.
        """
        ppns = np.asarray(ppns, dtype=np.int64)
        fault.back(self, ppns)
        return self.pmap.mpn[ppns]

    def break_cow(self, ppns: np.ndarray) -> None:
        """A write to shared pages: give each a private copy (copy-on-write)."""
        fault.break_cow(self, ppns)

    def remap(self, ppns: np.ndarray) -> np.ndarray:
        """Move backed pages to fresh frames, copying their data; returns the new MPNs."""
        return fault.remap(self, ppns)

    # -- host large pages -------------------------------------------------------------
    def break_large_pages(self, regions: np.ndarray, reason: str = "other",
                          bounded: bool = False) -> int:
        """Split large pages into 512 private 4 KiB pages each; returns how many were split.

        ``regions`` are 2 MiB region numbers (``ppn >> 9``); ``reason`` and
        ``bounded`` as in ``large_pages.break_large_pages``.
        """
        return large_pages.break_large_pages(self, regions, reason, bounded)

    # -- reclaim ----------------------------------------------------------------------
    def choose_victims(self, n_pages: int, selection: str, rng: np.random.Generator
                       ) -> np.ndarray:
        """Up to ``n_pages`` private pages to take away: "random" (as ESX) or "lru"."""
        return reclaimer.choose_victims(self, n_pages, selection, rng)

    def swap_out(self, n_pages: int, selection: str, rng: np.random.Generator) -> int:
        """Page out up to ``n_pages`` private pages to the swap file; returns pages freed."""
        return reclaimer.swap_out(self, n_pages, selection, rng)

    def reclaim(self, n_pages: int, selection: str, rng: np.random.Generator,
                compress: bool = True, share_first: bool = True) -> dict[str, int]:
        """Take up to ``n_pages`` away the ESX way: share, else compress, else swap.

        Returns:
            Pages reclaimed by each mechanism: {"shared", "compressed", "swapped"}
            (frames returned; compression's own frames are netted out).
        """
        return reclaimer.reclaim(self, n_pages, selection, rng, compress, share_first)

    def share_scan(self, ppns: np.ndarray) -> int:
        """Offer ``ppns`` (distinct) to the page-sharing scanner; returns frames freed."""
        return self.services.share(self, ppns)

    def release(self, ppns: np.ndarray, state: Backing = Backing.UNBACKED) -> int:
        """Drop the machine pages behind ``ppns`` (the guest gave them up); returns frames freed.

        ``state`` records why: BALLOONED for pages in the balloon, UNBACKED for
        free pages the guest reported.
        """
        return balloon.release(self, ppns, state)

    # -- active-memory sampling by traps (mmu fidelity) ------------------------------
    def arm_sampling(self, ppns: np.ndarray) -> None:
        """A sampling period starts: make the next touch of each of ``ppns`` trap."""
        sampling.arm_sampling(self, ppns)
