"""The virtio balloon device: the only channel between a guest and the host about memory.

What is modelled
----------------
All counters of this device are in 4 KiB balloon pages, as in Linux's driver
("All memory counters in this driver are in balloon page units"). The device
has a configuration space and virtqueues (virtio spec §5.5)::

    config.num_pages   written by the host: the balloon size it wants (target)
    config.actual      written by the guest: the balloon size it has reached
    inflateq           guest -> host: PPNs the guest gave up (host may drop them)
    deflateq           guest -> host: PPNs the guest takes back (host re-backs on touch)
    statsq             guest -> host: memory statistics (free, available, caches, ...)
    reporting_vq       guest -> host: free pages the guest reports (free page reporting)

Queues are drained by the host side; nothing else crosses between guest and
hypervisor. Features negotiated at boot: ``deflate_on_oom`` (the guest may
deflate when it runs out of memory, VIRTIO_BALLOON_F_DEFLATE_ON_OOM) and
``free_page_reporting`` (VIRTIO_BALLOON_F_REPORTING).

Counters (pages): ``inflated``, ``deflated``, ``reported``; ``target_writes``
(times the host changed the target).

References: virtio spec v1.2 §5.5 (traditional memory balloon device); Linux
``drivers/virtio/virtio_balloon.c`` (towards_target, fill_balloon, leak_balloon,
update_balloon_size, report_free_page).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class BalloonCounters:
    """Event tallies of one balloon device, in pages (or writes)."""

    inflated: int = 0  # pages put on the inflate queue
    deflated: int = 0  # pages put on the deflate queue
    reported: int = 0  # free pages put on the reporting queue
    target_writes: int = 0  # host writes of a new target


@dataclass(frozen=True, slots=True)
class GuestMemoryStats:
    """What the guest reports on the stats queue (virtio spec §5.5.6.3), in pages."""

    free_pages: int  # VIRTIO_BALLOON_S_MEMFREE
    available_pages: int  # VIRTIO_BALLOON_S_AVAIL: free + reclaimable without swapping
    cached_pages: int  # VIRTIO_BALLOON_S_CACHES: page cache
    total_pages: int  # VIRTIO_BALLOON_S_MEMTOT
    swap_ins: int  # VIRTIO_BALLOON_S_SWAP_IN, cumulative
    swap_outs: int  # VIRTIO_BALLOON_S_SWAP_OUT, cumulative
    major_faults: int  # VIRTIO_BALLOON_S_MAJFLT, cumulative
    minor_faults: int  # VIRTIO_BALLOON_S_MINFLT, cumulative


@dataclass
class VirtioBalloon:
    """One VM's balloon device."""

    deflate_on_oom: bool = True  # VIRTIO_BALLOON_F_DEFLATE_ON_OOM
    free_page_reporting: bool = False  # VIRTIO_BALLOON_F_REPORTING
    target_pages: int = 0  # config.num_pages (host-written)
    actual_pages: int = 0  # config.actual (guest-written)
    stats: GuestMemoryStats | None = None  # the latest stats buffer
    counters: BalloonCounters = field(default_factory=BalloonCounters)
    _inflateq: list[np.ndarray] = field(default_factory=list)
    _deflateq: list[np.ndarray] = field(default_factory=list)
    _reportq: list[np.ndarray] = field(default_factory=list)

    # -- host side ----------------------------------------------------------------
    def set_target(self, target_pages: int) -> None:
        """The host asks for a balloon of ``target_pages``."""
        target_pages = max(0, int(target_pages))
        if target_pages != self.target_pages:
            self.counters.target_writes += 1
        self.target_pages = target_pages

    def take_inflated(self) -> np.ndarray:
        """Drain the inflate queue: PPNs the guest gave up since the last call."""
        return _drain(self._inflateq)

    def take_deflated(self) -> np.ndarray:
        """Drain the deflate queue: PPNs the guest took back."""
        return _drain(self._deflateq)

    def take_reported(self) -> np.ndarray:
        """Drain the reporting queue: free PPNs whose backing the host may drop."""
        return _drain(self._reportq)

    # -- guest side ----------------------------------------------------------------
    def push_inflated(self, ppns: np.ndarray) -> None:
        """The guest driver gives pages to the balloon."""
        if ppns.size:
            self._inflateq.append(np.asarray(ppns, dtype=np.int64))
            self.counters.inflated += int(ppns.size)

    def push_deflated(self, ppns: np.ndarray) -> None:
        """The guest driver takes pages back from the balloon."""
        if ppns.size:
            self._deflateq.append(np.asarray(ppns, dtype=np.int64))
            self.counters.deflated += int(ppns.size)

    def push_reported(self, ppns: np.ndarray) -> None:
        """The guest reports free pages (free page reporting)."""
        if ppns.size:
            self._reportq.append(np.asarray(ppns, dtype=np.int64))
            self.counters.reported += int(ppns.size)

    def update_actual(self, actual_pages: int) -> None:
        """The guest writes the balloon size it has reached."""
        self.actual_pages = int(actual_pages)

    def post_stats(self, stats: GuestMemoryStats) -> None:
        """The guest fills the stats buffer."""
        self.stats = stats


def _drain(queue: list[np.ndarray]) -> np.ndarray:
    if not queue:
        return np.zeros(0, dtype=np.int64)
    out = np.concatenate(queue)
    queue.clear()
    return out
