"""The guest's balloon driver: pins guest pages on the host's request.

What is modelled
----------------
Once a second the driver reads the target the host wrote into the virtio
balloon device and moves towards it (units: 4 KiB pages)::

    target > actual  inflate: allocate pages through the guest's own allocator,
                     pin them (kind BALLOON), report them on the inflate queue;
                     the host then drops their backing
    target < actual  deflate: unpin pages, report them on the deflate queue and
                     free them to the guest's allocator
    then             write ``actual``, post memory statistics

Allocation goes through the guest allocator, so inflating under pressure makes
the *guest* reclaim and swap by its own policy: that is how ballooning moves
memory pressure into the guest, which knows best what to give up (OSDI 2002
§3.1). The allocation rate follows VMware's Linux driver (vmw_balloon v1.2):
first non-sleeping allocations that take only free pages, up to 16,384 pages a
cycle; once free pages run out, sleeping allocations (which may reclaim) at a
rate between 512 and 2,048 pages a cycle, raised by 16 pages after a cycle that
met it and halved after one that could not, staying slow for 4 cycles.
Deflation frees at most ``rate_free`` pages a cycle (512..16,384, halved on an
error). With deflate-on-oom the guest may take pages back from the balloon when
an allocation would otherwise fail.

Free page reporting (modern virtio-balloon): every ``REPORT_PERIOD_NS`` the
driver reports pages that have stayed free since the last report, so the host
may drop their backing; a reported page is backed afresh on its next touch.
Linux reports only free blocks of pageblock order (2 MiB) after a 2-second
delay; this model reports single pages that stayed free for one period.

The simulation calls :meth:`BalloonDriver.poll` once a ``POLL_PERIOD_NS`` and
:meth:`BalloonDriver.report_free_pages` once a ``REPORT_PERIOD_NS``, each at the
first tick that long after the last call (``core/period.py``), as the drivers
re-arm their delayed work after each run.

Counters (pages or cycles): inflated, deflated, alloc_failures, slow_cycles,
oom_deflated, reported.

References: Waldspurger, OSDI 2002 §3; Linux ``drivers/misc/vmw_balloon.c``
(v1.2.1: VMW_BALLOON_NOSLEEP_ALLOC_MAX, VMW_BALLOON_RATE_ALLOC_MIN/MAX/INC,
VMW_BALLOON_SLOW_CYCLES, VMW_BALLOON_RATE_FREE_MIN/MAX) and
``drivers/virtio/virtio_balloon.c``; ``Documentation/mm/free_page_reporting.rst``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvmem.guest.kernel import GuestKernel
from hvmem.guest.pages import PageKind
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.units import NS_PER_S

NOSLEEP_ALLOC_MAX_PAGES = 16_384  # VMW_BALLOON_NOSLEEP_ALLOC_MAX
RATE_ALLOC_MIN_PAGES = 512  # VMW_BALLOON_RATE_ALLOC_MIN, pages per 1 s cycle
RATE_ALLOC_MAX_PAGES = 2_048  # VMW_BALLOON_RATE_ALLOC_MAX
RATE_ALLOC_INC_PAGES = 16  # VMW_BALLOON_RATE_ALLOC_INC
SLOW_CYCLES = 4  # VMW_BALLOON_SLOW_CYCLES
RATE_FREE_MIN_PAGES = 512  # VMW_BALLOON_RATE_FREE_MIN
RATE_FREE_MAX_PAGES = 16_384  # VMW_BALLOON_RATE_FREE_MAX
POLL_PERIOD_NS = NS_PER_S  # the driver polls its target once per second [OSDI02 §3.2]
REPORT_PERIOD_NS = 2 * NS_PER_S  # free page reporting delay (free_page_reporting.rst)


@dataclass(slots=True)
class BalloonDriverCounters:
    """Event tallies of one balloon driver."""

    inflated: int = 0  # pages pinned into the balloon
    deflated: int = 0  # pages released from the balloon
    alloc_failures: int = 0  # cycles in which allocation fell short of the goal
    slow_cycles: int = 0  # cycles spent in sleeping (reclaiming) allocation
    oom_deflated: int = 0  # pages given back to the guest on out-of-memory
    reported: int = 0  # free pages reported to the host


class BalloonDriver:
    """One guest's balloon driver.

    Args:
        kernel: the guest kernel it allocates from.
        device: the VM's virtio balloon device.
        enabled: a guest without the driver (uninstalled, disabled) never moves.
    """

    def __init__(self, kernel: GuestKernel, device: VirtioBalloon, enabled: bool = True):
        self.kernel = kernel
        self.device = device
        self.enabled = enabled
        # Pinned PPNs, most recent last: int32, as guest page numbers are below 2**31
        # (``Host.add_vm``); handed out as int64.
        self.pages = np.zeros(0, dtype=np.int32)
        self.rate_alloc = RATE_ALLOC_MAX_PAGES
        self.rate_free = RATE_FREE_MAX_PAGES
        self.slow_left = 0
        self.counters = BalloonDriverCounters()
        # Which pages were free at the last report: made at the first report, so a
        # guest without free page reporting holds no byte per page for it.
        self._free_at_last_report: np.ndarray | None = None
        if device.deflate_on_oom:
            kernel.oom_notifier = self.deflate_on_oom

    @property
    def size_pages(self) -> int:
        """Pages in the balloon now."""
        return int(self.pages.size)

    def poll(self, now_ns: int) -> int:
        """One cycle: move towards the target, write ``actual``, post statistics.

        Returns the pages inflated or deflated in the cycle, each a page the guest's
        vCPU spent allocating or freeing and passing to the device (the caller
        charges ``balloon_page_ns`` apiece).
        """
        if not self.enabled:
            return 0
        moved_before = self.counters.inflated + self.counters.deflated
        target = self.device.target_pages
        if target > self.size_pages:
            self._inflate(target - self.size_pages)
        elif target < self.size_pages:
            self._deflate(self.size_pages - target)
        self.device.update_actual(self.size_pages)
        self.device.post_stats(self.kernel.stats())
        return self.counters.inflated + self.counters.deflated - moved_before

    def _inflate(self, wanted: int) -> None:
        kernel = self.kernel
        got = []
        if self.slow_left == 0:
            # Non-sleeping allocation: free pages only, above the min watermark.
            spare = max(0, kernel.allocator.n_free - kernel.min_pages)
            n = min(wanted, NOSLEEP_ALLOC_MAX_PAGES, spare)
            if n:
                got.append(kernel.alloc_pages(n, PageKind.BALLOON, allow_reclaim=False))
            wanted -= n
            if wanted > 0:
                self.slow_left = SLOW_CYCLES  # free pages ran out: go slow
        if wanted > 0 and self.slow_left > 0:
            self.counters.slow_cycles += 1
            self.slow_left -= 1
            n = min(wanted, self.rate_alloc)
            ppns = kernel.alloc_pages(n, PageKind.BALLOON, allow_reclaim=True)
            got.append(ppns)
            if ppns.size < n:
                self.counters.alloc_failures += 1
                self.rate_alloc = max(RATE_ALLOC_MIN_PAGES, self.rate_alloc // 2)
            else:
                self.rate_alloc = min(RATE_ALLOC_MAX_PAGES, self.rate_alloc + RATE_ALLOC_INC_PAGES)
        if got:
            new = np.concatenate(got)
            self.pages = np.concatenate([self.pages, new.astype(np.int32)])
            self.counters.inflated += int(new.size)
            self.device.push_inflated(new)

    def _deflate(self, surplus: int) -> None:
        n = min(surplus, self.rate_free)
        self._release(n)

    def _release(self, n: int) -> np.ndarray:
        ppns = self.pages[self.pages.size - n:].astype(np.int64)
        self.pages = self.pages[: self.pages.size - n]
        self.device.push_deflated(ppns)
        self.kernel.free_pages(ppns)
        self.counters.deflated += int(ppns.size)
        return ppns

    def deflate_on_oom(self, n_pages: int) -> int:
        """The guest is out of memory: give back up to ``n_pages`` from the balloon."""
        n = min(n_pages, self.size_pages)
        if n:
            self._release(n)
            self.counters.oom_deflated += n
            self.device.update_actual(self.size_pages)
        return n

    def report_free_pages(self) -> int:
        """Free page reporting: report pages that stayed free for a whole period.

        A reported page is not reported again until the guest has allocated it
        in between (Linux's PageReported flag).
        """
        if not self.device.free_page_reporting:
            return 0
        allocator = self.kernel.allocator
        free_now = ~allocator.allocated
        if self._free_at_last_report is None:  # the first report: none has stayed free yet
            self._free_at_last_report = np.zeros_like(free_now)
        stayed = np.flatnonzero(free_now & self._free_at_last_report & ~allocator.reported)
        self._free_at_last_report = free_now
        allocator.reported[stayed] = True
        self.device.push_reported(stayed)
        self.counters.reported += int(stayed.size)
        return int(stayed.size)
