"""Transparent page sharing: one machine page for identical guest pages.

What is modelled
----------------
A scanner visits guest pages in random order at a bounded rate, hashes each
page's content and looks the hash up in one host-wide table (OSDI 2002 §4.2)::

    lookup (salt, hash)
      empty        -> insert a *hint* (this page's frame), share nothing yet
      hint         -> rehash the hinted page: changed? drop the stale hint;
                      same content? promote its frame to a shared frame and map
                      both pages to it, copy-on-write
      shared frame -> full compare, map this page to it, free this page's frame

A shared frame is read-only in every guest's translations; a write to it
faults and the hypervisor breaks the sharing: the writer gets a private copy
(``break_cow``). A frame whose last sharer leaves goes back to the free list.

Hints are not write-protected (that would cost a fault per write to every
scanned page); they may go stale, which the rehash catches. Page contents are
64-bit tokens, so the "full comparison" compares tokens; the table is keyed by
a 64-bit mix of the token, as ESX keys by a 64-bit hash, and a hash match with
different contents (a false match) makes the page ineligible, as in ESX.

Salting: the salt is part of the key, so pages share only within one salt.
``across`` gives every VM salt 0 (pre-2014 behaviour, Mem.ShareForceSalting=0),
``within`` gives each VM its own salt (ESXi's default since 2015: intra-VM
sharing only, ShareForceSalting=2 without a configured salt), ``explicit`` takes
each VM's configured salt (ShareForceSalting=1: equal salts share)
[KB2097593][LAMW]. Zero pages follow the same rule.

Scan rate: by default a whole VM per ``Mem.ShareScanTime`` = 60 minutes, capped
at ``Mem.ShareRateMax`` = 1024 pages/s per VM [VS4-ATTR][LAMW].

Data layout: open addressing over parallel arrays (key hash, salt, kind, frame),
probed by a Numba kernel that processes a batch of candidates in order;
frames carry a reverse map (``MachineMemory.ppn``), so a hint is just a frame
number and is stale when that frame no longer backs the page it did.

Counters (pages): scanned, shared (mappings made), hints_inserted,
hint_promotions, stale_hints, already_shared, not_backed (page swapped,
ballooned or unbacked), page_tables (guest page-table pages, whose entries the
model keeps apart from content tokens, are not scanned), false_matches,
cow_breaks, frames_freed.

References: Waldspurger, OSDI 2002 §4; VMware KB 1021095 (large pages), KB
2097593 (salting); esx-memory.md §1.4 and §3.3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.errors import ConfigError

SALTING_MODES = ("across", "within", "explicit")
SHARE_SCAN_TIME_S = 3600  # Mem.ShareScanTime: scan a whole VM per 60 minutes [VS4-ATTR]
SHARE_RATE_MAX_PAGES_PER_S = 1024  # Mem.ShareRateMax, per VM [VS4-ATTR][LAMW]

SHARED_OWNER = -4  # frames.owner of a shared frame: it belongs to no single VM

EMPTY, HINT, SHARED, TOMBSTONE = 0, 1, 2, 3

# Outcome per candidate, from the kernel.
A_HINT = 0  # inserted as a hint
A_SHARE = 1  # mapped to an existing shared frame (``target``)
A_PROMOTE = 2  # the hinted frame (``target``) became shared; both pages map to it
A_ALREADY = 3  # the page is shared already
A_STALE = 4  # a stale hint was dropped; this page took its place as a hint
A_FALSE = 5  # hash matched, content did not: ineligible
A_NOT_BACKED = 6  # no private frame to share


@njit(cache=True, inline="always")
def content_hash(token):
    """A 64-bit mix of a content token (splitmix64's finalizer)."""
    x = np.uint64(token) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True)
def _find(t_hash, t_salt, t_kind, h, salt):
    """Slot holding (h, salt), or -(first free slot) - 1 where it would go."""
    mask = t_hash.size - 1
    i = np.int64(h & np.uint64(mask))
    first_free = -1
    while True:
        k = t_kind[i]
        if k == EMPTY:
            return -(i if first_free < 0 else first_free) - 1
        if k == TOMBSTONE:
            if first_free < 0:
                first_free = i
        elif t_hash[i] == h and t_salt[i] == salt:
            return i
        i = (i + 1) & mask


@njit(cache=True)
def scan_kernel(cand_vm, cand_ppn, cand_mpn, cand_salt, content, owner, frame_ppn, refcount,
                t_hash, t_salt, t_kind, t_frame, t_used, action, target, promoted_vm,
                promoted_ppn):
    """Process candidates in order; returns how many hints were promoted.

    ``cand_mpn`` is -1 for a page with no machine frame. Frames promoted to
    shared get owner SHARED_OWNER and their refcount raised here; the pmap
    updates (remapping, read-only) are the caller's.
    """
    n_promoted = 0
    for i in range(cand_vm.size):
        mpn = cand_mpn[i]
        if mpn < 0:
            action[i] = A_NOT_BACKED
            continue
        if owner[mpn] == SHARED_OWNER:
            action[i] = A_ALREADY
            continue
        token = content[mpn]
        h = content_hash(token)
        slot = _find(t_hash, t_salt, t_kind, h, cand_salt[i])
        if slot < 0:
            slot = -slot - 1
            t_hash[slot] = h
            t_salt[slot] = cand_salt[i]
            t_kind[slot] = HINT
            t_frame[slot] = mpn
            t_used[0] += 1
            action[i] = A_HINT
            continue
        frame = t_frame[slot]
        if t_kind[slot] == SHARED:
            if content[frame] != token:
                action[i] = A_FALSE
                continue
            refcount[frame] += 1
            action[i] = A_SHARE
            target[i] = frame
            continue
        # A hint: still the same page with the same content?
        valid = (owner[frame] >= 0 and frame_ppn[frame] >= 0 and refcount[frame] == 1
                 and content_hash(content[frame]) == h and frame != mpn)
        if not valid:
            t_frame[slot] = mpn  # replace the stale hint with this page
            action[i] = A_STALE
            continue
        if content[frame] != token:
            action[i] = A_FALSE
            continue
        promoted_vm[n_promoted] = owner[frame]
        promoted_ppn[n_promoted] = frame_ppn[frame]
        n_promoted += 1
        owner[frame] = SHARED_OWNER
        frame_ppn[frame] = -1
        refcount[frame] = 2
        t_kind[slot] = SHARED
        action[i] = A_PROMOTE
        target[i] = frame
    return n_promoted


@njit(cache=True)
def forget_frame(t_hash, t_salt, t_kind, t_frame, h, salt, frame):
    """Remove the shared entry for ``frame`` (its last sharer left); returns 1 if found."""
    slot = _find(t_hash, t_salt, t_kind, h, salt)
    if slot >= 0 and t_frame[slot] == frame:
        t_kind[slot] = TOMBSTONE
        return 1
    return 0


@dataclass(slots=True)
class SharingCounters:
    """Event tallies of the page-sharing scanner, in pages."""

    scanned: int = 0  # candidate pages examined
    shared: int = 0  # pages newly mapped to a shared frame (promotions count two)
    hints_inserted: int = 0  # pages entered as hints
    hint_promotions: int = 0  # hints whose frame became a shared frame
    stale_hints: int = 0  # hints found changed and replaced
    already_shared: int = 0  # candidates that were shared already
    not_backed: int = 0  # candidates with no frame (swapped, ballooned, untouched)
    page_tables: int = 0  # candidates holding guest page tables (not eligible)
    false_matches: int = 0  # hash matched, content differed: not shared
    cow_breaks: int = 0  # writes that broke sharing
    frames_freed: int = 0  # frames given back by sharing


class SharingTable:
    """The host-wide table of shared frames and hints.

    Args:
        capacity: initial slots (a power of two; grows to keep load below half).
    """

    def __init__(self, capacity: int = 1 << 16):
        if capacity & (capacity - 1):
            raise ConfigError("sharing table capacity must be a power of two")
        self._alloc(capacity)
        self.counters = SharingCounters()

    def _alloc(self, capacity: int) -> None:
        self.t_hash = np.zeros(capacity, dtype=np.uint64)
        self.t_salt = np.zeros(capacity, dtype=np.int64)
        self.t_kind = np.zeros(capacity, dtype=np.int8)
        self.t_frame = np.full(capacity, -1, dtype=np.int64)
        self.t_used = np.zeros(1, dtype=np.int64)  # slots ever taken (tombstones included)

    def reserve(self, extra: int) -> None:
        """Grow (rehashing live entries) so ``extra`` more inserts keep load below 1/2."""
        capacity = self.t_hash.size
        if (self.t_used[0] + extra) * 2 <= capacity:
            return
        live = (self.t_kind == HINT) | (self.t_kind == SHARED)
        h, salt = self.t_hash[live], self.t_salt[live]
        kind, frame = self.t_kind[live], self.t_frame[live]
        while (live.sum() + extra) * 2 > capacity:
            capacity *= 2
        self._alloc(capacity)
        _reinsert(h, salt, kind, frame, self.t_hash, self.t_salt, self.t_kind, self.t_frame)
        self.t_used[0] = h.size

    def n_entries(self, kind: int) -> int:
        """Live entries of ``kind`` (HINT or SHARED)."""
        return int(np.count_nonzero(self.t_kind == kind))


@njit(cache=True)
def _reinsert(h, salt, kind, frame, t_hash, t_salt, t_kind, t_frame):
    for i in range(h.size):
        slot = -_find(t_hash, t_salt, t_kind, h[i], salt[i]) - 1
        t_hash[slot] = h[i]
        t_salt[slot] = salt[i]
        t_kind[slot] = kind[i]
        t_frame[slot] = frame[i]


def default_scan_rate_pages_per_s(n_ppns: int) -> float:
    """Pages per second that scan a VM once per ShareScanTime, capped at ShareRateMax."""
    return min(SHARE_RATE_MAX_PAGES_PER_S, n_ppns / SHARE_SCAN_TIME_S)
