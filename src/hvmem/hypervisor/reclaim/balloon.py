"""Ballooning, host side: targets in, pages out.

What is modelled
----------------
The hypervisor cannot take memory from a guest gracefully by itself; it asks
the guest's balloon driver to give some up (OSDI 2002 §3). Per VM and per
balance period the host side::

    set_target(pages)  clamp to the maximum balloon and write it into the
                       virtio balloon device's config space
    collect()          drain the device's queues: pages the guest inflated and
                       pages it reported free lose their backing (their frames go
                       back to the host free list); deflated pages are the
                       guest's again and get backing on their next touch

The maximum balloon is ``Mem.CtlMaxPercent`` = 65 % of the VM's memory, or a
per-VM ``sched.mem.maxmemctl`` override [VS4-ATTR][VS-BALLOON].

Pages the guest gives up lose their backing (:func:`release`): a private
frame goes back to the host free list (its data kept until the frame is
reused), a shared mapping drops one sharer, a swapped or compressed copy is
discarded, and the pmap records why (BALLOONED, or UNBACKED for reported free
pages and a powered-off VM). A host large page given back in part is broken
first; one given back whole is dropped whole (``large_pages.release_large``).
The next touch backs such a page afresh, as any first touch.

A driver can be missing, disabled, not yet loaded, or too slow (OSDI 2002
§3.2). The host calls it *stuck* when the balloon has stayed short of its
target without growing for ``stuck_after_ns`` (default 15 s, one balance
period; an assumption: ESX's timeout is not published); the memory scheduler
then falls back to the next mechanism (compression and swapping) for the
shortfall.

Counters (pages): inflated_released (frames freed for inflated pages),
reported_released (frames freed for reported free pages), deflated; stuck_events.

References: [OSDI02 §3]; the maximum balloon [VS4-ATTR][VS-BALLOON][NERDBLURT];
swapping when the balloon cannot deliver [VS-SWAPWHEN]; the keys in brackets
resolve in ``docs/references.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvmem.core.sets import sorted_unique
from hvmem.errors import ConfigError
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.hypervisor.large_pages import release_large
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.sharing import unshare
from hvmem.hypervisor.vm_state import VmState
from hvmem.units import NS_PER_S

CTL_MAX_FRAC = 0.65  # Mem.CtlMaxPercent = 65 % (ESX/ESXi 4.0 -> 9.0.1) [VS4-ATTR][LAMW]
STUCK_AFTER_NS = 15 * NS_PER_S  # assumption: one balance period without progress


def release(vm: VmState, ppns: np.ndarray, state: Backing = Backing.UNBACKED) -> int:
    """Drop the machine pages behind ``ppns`` (the guest gave them up); returns frames freed.

    ``state`` records why: BALLOONED for pages in the balloon, UNBACKED for
    free pages the guest reported. The next touch backs them afresh (zeroed
    only if the frame comes from another VM, as any first touch).
    """
    ppns = np.asarray(ppns, dtype=np.int64)
    if ppns.size == 0:  # most collections: nothing inflated or reported since the last
        return 0
    ppns = sorted_unique(ppns)
    if vm.large.any():
        release_large(vm, ppns)
    shared = ppns[vm.pmap.state[ppns] == Backing.SHARED]
    if shared.size:
        unshare(vm, shared, state)
    current = vm.pmap.state[ppns]
    backed = ppns[current == Backing.PRIVATE]
    swapped = ppns[current == Backing.SWAPPED]
    vm.swapfile.discard(swapped)  # its data is garbage now: the guest gave it up
    compressed = ppns[current == Backing.COMPRESSED]
    if compressed.size:
        vm.zip.take(compressed)
        vm.zip.fit_frames(vm.frames, vm.vm_id)
    others = ppns[(current != Backing.PRIVATE) & (current != Backing.SHARED)]
    old = vm.pmap.unback(backed, state)
    vm.pmap.set_state(others, state)
    if backed.size:
        vm.paging.on_backing_changed(backed, True)
        vm.frames.free(old)
    return int(backed.size)


@dataclass(slots=True)
class BalloonHostCounters:
    """Event tallies of the host side of one VM's balloon."""

    inflated_released: int = 0  # frames freed because the guest ballooned the page
    reported_released: int = 0  # frames freed because the guest reported the page free
    deflated: int = 0  # pages the guest took back out of the balloon
    stuck_events: int = 0  # times the driver was declared stuck


class BalloonHost:
    """The host side of one VM's balloon.

    Args:
        vm: the hypervisor's VM (a ``vm.HostVm``).
        device: the VM's virtio balloon device.
        max_pages: the maximum balloon; 65 % of the VM's memory by default.
        stuck_after_ns: how long a balloon short of its target may make no progress.
    """

    def __init__(self, vm, device: VirtioBalloon, max_pages: int | None = None,
                 stuck_after_ns: int = STUCK_AFTER_NS):
        if max_pages is None:
            max_pages = int(vm.n_ppns * CTL_MAX_FRAC)
        if not 0 <= max_pages <= vm.n_ppns:
            raise ConfigError(f"{vm.name}: maximum balloon {max_pages} pages outside "
                              f"0..{vm.n_ppns}")
        self.vm = vm
        self.device = device
        self.max_pages = max_pages
        self.stuck_after_ns = stuck_after_ns
        self.counters = BalloonHostCounters()
        self.stuck = False
        self._last_actual = 0
        self._progress_ns = 0

    @property
    def target_pages(self) -> int:
        """The target the host asked for (MCTLTGT)."""
        return self.device.target_pages

    @property
    def size_pages(self) -> int:
        """The balloon size the guest reports (MCTLSZ)."""
        return self.device.actual_pages

    def set_target(self, pages: int) -> int:
        """Ask for a balloon of ``pages`` (clamped to the maximum); returns the target set."""
        target = int(min(max(pages, 0), self.max_pages))
        self.device.set_target(target)
        return target

    def collect(self, now_ns: int) -> int:
        """Drain the device's queues and judge progress; returns frames freed."""
        vm = self.vm
        # Inflations first: a page inflated and deflated again since the last
        # collection ends up the guest's.
        freed = vm.release(self.device.take_inflated(), Backing.BALLOONED)
        self.counters.inflated_released += freed
        deflated = self.device.take_deflated()
        if deflated.size:
            # Back to the guest: the next touch backs them like a first touch.
            vm.pmap.set_state(deflated[vm.pmap.state[deflated] == Backing.BALLOONED],
                              Backing.UNBACKED)
            self.counters.deflated += int(deflated.size)
        reported = vm.release(self.device.take_reported(), Backing.UNBACKED)
        self.counters.reported_released += reported
        self._judge(now_ns)
        return freed + reported

    def _judge(self, now_ns: int) -> None:
        actual, target = self.device.actual_pages, self.device.target_pages
        if actual >= target or actual > self._last_actual:
            self._progress_ns = now_ns
            self.stuck = False
        elif not self.stuck and now_ns - self._progress_ns >= self.stuck_after_ns:
            self.stuck = True
            self.counters.stuck_events += 1
        self._last_actual = actual

    @property
    def shortfall_pages(self) -> int:
        """Pages the balloon still owes its target."""
        return max(0, self.device.target_pages - self.device.actual_pages)

