"""Translation lookaside buffers: set-associative, LRU, tagged by VM and address space.

What is modelled
----------------
A TLB caches recent translations VPN -> MPN. It has ``entries`` slots split into
``entries / ways`` sets; a page maps to set ``vpn mod sets`` and may sit in any
of that set's ``ways`` slots; on a miss the least recently used slot of the set
is replaced. Entries are tagged with the VM (VPID) and the address space (ASID,
PCID on x86), so switching address spaces or VMs needs no flush::

    key = vm << 48 | asid << 36 | vpn          (vm < 2**15, asid < 2**12, vpn < 2**36)
    set = vpn mod sets

Each entry also records whether a write may go through it without a walk
(``PERM_WRITE``: the leaf was writable *and* already dirty, so the hardware need
not set D). A write that hits an entry without it is handled as a miss: x86
walks again to set the dirty bit.

Maintenance operations, as the ISA offers them: flush everything, flush one
address space (``INVPCID`` single-context, or a CR3 load without the no-flush
bit), and invalidate one page (``INVLPG``).

The same set-associative LRU array also serves the page-walk cache (see
``walker.py``), with other keys.

Layout: one ``int64[sets, ways, 4]`` array of (tag, LRU stamp, value, perm) per
slot, so a 4-way set is two cache lines; a one-element ``clock`` array holds the
LRU clock between calls. Invalid slots have tag -1 and stamp -1, so they are
filled first. The Numba helpers take and return the clock as a plain value: a
kernel loads it once, ticks it in a register, and stores it back when it ends
(a clock in memory would be a store and a reload on every lookup).

References: Intel SDM Vol. 3A §4.10 (TLBs, PCIDs, paging-structure caches);
OSTEP ch. 19; pycachesim (RRZE-HPC) as the reference LRU cache in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.errors import ConfigError

TAG, STAMP, VALUE, PERM = 0, 1, 2, 3
INVALID = -1
PERM_WRITE = 1  # a write may use this entry without a walk (writable and dirty)

VM_SHIFT = 48
ASID_SHIFT = 36
VPN_MASK = (1 << 36) - 1
MAX_ASIDS = 1 << 12


@njit(cache=True, inline="always")
def tlb_key(vm, asid, vpn):
    """Tag of a translation: VM, address space and page number in one int64."""
    return (np.int64(vm) << VM_SHIFT) | (np.int64(asid) << ASID_SHIFT) | np.int64(vpn)


@njit(cache=True, inline="always")
def set_of(vpn, n_sets, set_mask):
    """Set a page maps to: ``vpn mod n_sets`` (a mask when n_sets is a power of two)."""
    if set_mask >= 0:
        return vpn & set_mask
    return vpn % n_sets


@njit(cache=True, inline="always")
def _row(s):
    # Set numbers are never negative; as unsigned indices they skip Numba's
    # negative-index wraparound on every access to the set.
    return np.uint64(s)


@njit(cache=True, inline="always")
def sa_lookup(cache, clock, key, s):
    """Look ``key`` up in set ``s``; on a hit make it most recent.

    ``clock`` is the LRU clock's value. Returns (way or -1, the clock's new value).
    """
    r = _row(s)
    for w in range(cache.shape[1]):
        if cache[r, w, TAG] == key:
            clock += 1
            cache[r, w, STAMP] = clock
            return w, clock
    return -1, clock


@njit(cache=True, inline="always")
def sa_probe(cache, key, s):
    """One pass over set ``s``: (way holding ``key`` or -1, way an insert of ``key`` fills).

    The second is what :func:`sa_insert` would pick: the way holding ``key``,
    else the first slot with the oldest stamp (an invalid slot, stamp -1, first).
    Nothing is changed, so a lookup and the insert after a miss scan the set once.
    """
    r = _row(s)
    victim = 0
    oldest = cache[r, 0, STAMP]
    for w in range(cache.shape[1]):
        if cache[r, w, TAG] == key:
            return w, w
        if cache[r, w, STAMP] < oldest:
            oldest = cache[r, w, STAMP]
            victim = w
    return -1, victim


@njit(cache=True, inline="always")
def sa_touch(cache, clock, s, way):
    """Make ``way`` of set ``s`` most recent (a hit); returns the clock's new value."""
    clock += 1
    cache[_row(s), way, STAMP] = clock
    return clock


@njit(cache=True, inline="always")
def sa_fill(cache, clock, s, way, key, value, perm):
    """Write an entry into ``way`` of set ``s`` as most recent; returns the clock's new value."""
    clock += 1
    r = _row(s)
    cache[r, way, TAG] = key
    cache[r, way, STAMP] = clock
    cache[r, way, VALUE] = value
    cache[r, way, PERM] = perm
    return clock


@njit(cache=True, inline="always")
def sa_insert(cache, clock, key, s, value, perm):
    """Insert ``key`` into set ``s`` over the LRU (or an invalid) slot, or refresh it if present.

    Returns (the way written, the clock's new value).
    """
    _, victim = sa_probe(cache, key, s)
    return victim, sa_fill(cache, clock, s, victim, key, value, perm)


@njit(cache=True)
def sa_invalidate_key(cache, key, s):
    """Drop ``key`` from set ``s``; returns 1 if it was there."""
    for w in range(cache.shape[1]):
        if cache[s, w, TAG] == key:
            cache[s, w, TAG] = INVALID
            cache[s, w, STAMP] = INVALID
            return 1
    return 0


@njit(cache=True)
def sa_invalidate_masked(cache, key, mask):
    """Drop every entry whose tag matches ``key`` on the bits of ``mask``; returns how many."""
    dropped = 0
    for s in range(cache.shape[0]):
        for w in range(cache.shape[1]):
            tag = cache[s, w, TAG]
            if tag != INVALID and (tag & mask) == key:
                cache[s, w, TAG] = INVALID
                cache[s, w, STAMP] = INVALID
                dropped += 1
    return dropped


@njit(cache=True)
def tlb_run_pages(cache, clock, vpns, n_sets, set_mask):
    """Run a stream of page numbers (VM 0, ASID 0) through a TLB; returns the hit count.

    This is the TLB-only path of ``hvmem tlb`` and ``hvmem bench translate``: a
    hit refreshes the LRU stamp, a miss fills the LRU slot with the page itself.
    """
    hits = 0
    t = clock[0]
    for i in range(vpns.size):
        vpn = vpns[i]
        s = set_of(vpn, n_sets, set_mask)
        hit, victim = sa_probe(cache, vpn, s)
        if hit >= 0:
            hits += 1
            t = sa_touch(cache, t, s, hit)
        else:
            t = sa_fill(cache, t, s, victim, vpn, vpn, 0)
    clock[0] = t
    return hits


def new_cache(n_sets: int, ways: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty set-associative array and its LRU clock."""
    cache = np.full((n_sets, ways, 4), INVALID, dtype=np.int64)
    cache[:, :, VALUE] = 0
    cache[:, :, PERM] = 0
    return cache, np.zeros(1, dtype=np.int64)


@dataclass(slots=True)
class TlbCounters:
    """Event tallies of one TLB."""

    hits: int = 0  # lookups that found their translation
    misses: int = 0  # lookups that needed a walk
    flushes_all: int = 0  # whole-TLB flushes
    flushes_asid: int = 0  # single-address-space flushes
    invalidations: int = 0  # single-page invalidations (INVLPG)
    entries_dropped: int = 0  # valid entries removed by flushes and invalidations


class Tlb:
    """A set-associative, LRU, VM- and ASID-tagged TLB.

    Args:
        entries: total slots; a multiple of ``ways``.
        ways: associativity (slots per set); ``ways == entries`` is fully associative.
        name: for messages and stats.
    """

    def __init__(self, entries: int = 64, ways: int = 4, name: str = "tlb"):
        if entries <= 0 or ways <= 0:
            raise ConfigError(f"{name}: entries and ways must be positive, found {entries}/{ways}")
        if entries % ways:
            raise ConfigError(f"{name}: {entries} entries do not split into sets of {ways} ways")
        self.name = name
        self.entries = entries
        self.ways = ways
        self.n_sets = entries // ways
        power_of_two = self.n_sets & (self.n_sets - 1) == 0
        self.set_mask = self.n_sets - 1 if power_of_two else -1
        self.cache, self.clock = new_cache(self.n_sets, ways)
        self.counters = TlbCounters()

    def lookup(self, vm: int, asid: int, vpn: int) -> tuple[int, int] | None:
        """(mpn, perm) of a cached translation, or None; counts a hit or a miss."""
        s = set_of(vpn, self.n_sets, self.set_mask)
        way, self.clock[0] = sa_lookup(self.cache, self.clock[0], tlb_key(vm, asid, vpn), s)
        if way < 0:
            self.counters.misses += 1
            return None
        self.counters.hits += 1
        return int(self.cache[s, way, VALUE]), int(self.cache[s, way, PERM])

    def insert(self, vm: int, asid: int, vpn: int, mpn: int, perm: int = 0) -> None:
        """Cache a translation, evicting the set's LRU entry if the set is full."""
        s = set_of(vpn, self.n_sets, self.set_mask)
        _, self.clock[0] = sa_insert(
            self.cache, self.clock[0], tlb_key(vm, asid, vpn), s, mpn, perm
        )

    def run_pages(self, vpns: np.ndarray) -> int:
        """Run page numbers (VM 0, ASID 0) through the TLB; returns hits and counts both."""
        vpns = np.ascontiguousarray(vpns, dtype=np.int64)
        hits = int(tlb_run_pages(self.cache, self.clock, vpns, self.n_sets, self.set_mask))
        self.counters.hits += hits
        self.counters.misses += vpns.size - hits
        return hits

    def flush_all(self) -> None:
        """Drop every entry (a CR3 load without PCIDs, or a full INVPCID)."""
        self.counters.flushes_all += 1
        self.counters.entries_dropped += int(np.count_nonzero(self.cache[:, :, TAG] != INVALID))
        self.cache[:, :, TAG] = INVALID
        self.cache[:, :, STAMP] = INVALID

    def flush_vm(self, vm: int) -> None:
        """Drop every entry of one VM (all its address spaces)."""
        mask = np.int64(-1) << VM_SHIFT
        self.counters.entries_dropped += int(
            sa_invalidate_masked(self.cache, tlb_key(vm, 0, 0), mask)
        )
        self.counters.flushes_asid += 1

    def flush_asid(self, vm: int, asid: int) -> None:
        """Drop every entry of one address space of one VM."""
        mask = np.int64(-1) << ASID_SHIFT
        self.counters.entries_dropped += int(
            sa_invalidate_masked(self.cache, tlb_key(vm, asid, 0), mask)
        )
        self.counters.flushes_asid += 1

    def invalidate(self, vm: int, asid: int, vpn: int) -> None:
        """Drop one page's entry (INVLPG)."""
        s = set_of(vpn, self.n_sets, self.set_mask)
        self.counters.invalidations += 1
        self.counters.entries_dropped += int(
            sa_invalidate_key(self.cache, tlb_key(vm, asid, vpn), s)
        )

    def occupancy(self) -> int:
        """Valid entries now held."""
        return int(np.count_nonzero(self.cache[:, :, TAG] != INVALID))
