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

Data layout: open addressing over one array of two-word slots (key; frame and
kind), indexed by the key's high bits, so a probe costs one cache line; a Numba
kernel takes a batch of candidates (in ascending PPN order the frame arrays
are read sequentially);
frames carry a reverse map (``MachineMemory.ppn``), so a hint is just a frame
number and is stale when that frame no longer backs the page it did.

Scan speed (``hvmem bench host``: 8 Mi pages of 8 VMs in batches of 256 Ki
pages, a 16 Mi-slot, 256 MiB table). A probe misses the host's caches, so the
kernel gathers a batch first (frame, content, key: sequential reads) and then
probes with a prefetch instruction PREFETCH candidates ahead. A plain load as
the look-ahead helps little: the branch on each probe's outcome (empty, hint,
shared) mispredicts often and a pending load holds the pipeline, while a
prefetch retires at once. Measured, kernel time (CPU) over the bench's scan on
a warm table: 0.46-0.52 s with a load 16 ahead, 0.28-0.34 s with a prefetch 16
ahead, 0.32-0.37 s when the prefetched slot is also read 8 ahead to prefetch its
frame's words. The form kept reads only the home slot, PREFETCH_FRAME = 8
ahead, branches on nothing it holds (frame 0 stands in for another key), and
prefetches the frame's content, owner, reverse map and refcount, which the
checks of a shared or hinted entry read: measured again on a busier machine
with the kernel also remapping the joined pages, 0.30-0.31 s with it against
0.31-0.32 s without. Probes that run on past their home slot cross into the
next line often enough to matter (at load 0.3, a missed lookup probes 1.5
slots on average, and an insert's home is the last slot of its line one time
in four), so the line of the slot three on is prefetched too: 0.29 s against
0.31-0.32 s (three runs each, interleaved; 0.23 s against 0.26 s for 8 Mi
distinct pages, all inserts). Rejected, measured the same way: probing each batch in key
order (a stable counting sort on the key's top bits, about one candidate a
bucket or 4 Ki buckets), whose probes walk the table from start to end,
0.77-0.88 s: the sort costs about 0.14 s and the sorted probes were no faster,
as a batch is one candidate per 64 slots, so each probe is still a new line
and a new page (in isolation: 31 M probes/s sorted, 44 M/s sorted with
prefetch, 42 M/s in random order with prefetch); and gathering and probing
in one pass through a ring of candidates, 0.74 s. On an untouched table about
half the scan's time was the first touch of the table's pages (measured:
0.80-1.05 s on an untouched table against 0.28-0.46 s on a touched one), which
no probe order avoids, so the table's memory is committed when it is allocated
(host setup, or a growth), where a scan does not wait for it; halving the slot
(a partial key beside the frame) would halve that cost, but a stale hint's
full key could no longer be recovered from its frame, so the table would stop
being the 64-bit-keyed table modelled here. The per-scan work arrays are kept
from scan to scan for the same reason, and the kernel hands back this VM's
pages that joined a shared frame compacted, with their targets and old frames,
so nothing after it walks the whole batch again.

Counters (pages): scanned, shared (mappings made), hints_inserted,
hint_promotions, stale_hints, already_shared, not_backed (page swapped,
ballooned or unbacked), page_tables (guest page-table pages, whose entries the
model keeps apart from content tokens, are not scanned), false_matches,
cow_breaks, frames_freed.

References: Waldspurger, OSDI 2002 §4; VMware KB 1021095 (large pages), KB
2097593 (salting); esx-memory.md §1.4 and §3.3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.errors import ConfigError
from hvmem.hardware.frames import MachineMemory
from hvmem.hardware.prefetch import host_prefetch

SALTING_MODES = ("across", "within", "explicit")
SHARE_SCAN_TIME_S = 3600  # Mem.ShareScanTime: scan a whole VM per 60 minutes [VS4-ATTR]
SHARE_RATE_MAX_PAGES_PER_S = 1024  # Mem.ShareRateMax, per VM [VS4-ATTR][LAMW]

SHARED_OWNER = -4  # frames.owner of a shared frame: it belongs to no single VM

# A table slot is two words: the key (0 empty, 1 tombstone) and the frame with
# the entry's kind in the top bits.
KEY_EMPTY = np.uint64(0)
KEY_TOMBSTONE = np.uint64(1)
KIND_HINT = np.uint64(1 << 62)
KIND_SHARED = np.uint64(1 << 63)
FRAME_MASK = np.uint64((1 << 62) - 1)
HINT, SHARED = 1, 2  # entry kinds, for n_entries

# Outcome per candidate, from the kernel.
A_HINT = 0  # inserted as a hint
A_SHARE = 1  # mapped to an existing shared frame (``target``)
A_PROMOTE = 2  # the hinted frame (``target``) became shared; both pages map to it
A_ALREADY = 3  # the page is shared already
A_STALE = 4  # a stale hint was dropped; this page took its place as a hint
A_FALSE = 5  # hash matched, content did not: ineligible
A_NOT_BACKED = 6  # no private frame to share
A_PAGE_TABLE = 7  # a guest page-table page: not a candidate
N_ACTIONS = 8  # the kernel's counts array has one more slot (spare, always 0)
PREFETCH = 16  # candidates ahead whose table slot is prefetched (see the module docstring)
PREFETCH_FRAME = 8  # candidates ahead whose slot's frame is prefetched


@njit(cache=True, inline="always")
def content_hash(token):
    """A 64-bit mix of a content token (splitmix64's finalizer)."""
    x = np.uint64(token) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, inline="always")
def table_key(token, salt):
    """The table key of a page: its content hash mixed with its salt (never 0 or 1)."""
    key = content_hash(token) ^ content_hash(np.uint64(salt) + np.uint64(0x5A17_5A17))
    if key < np.uint64(2):
        key += np.uint64(2)
    return key


@njit(cache=True, inline="always")
def _find(table, key, shift):
    """Slot holding ``key``, or -(first free slot) - 1 where it would go.

    Slots are indexed by the key's high bits.
    """
    mask = table.shape[0] - 1
    i = np.int64(key >> np.uint64(shift))
    first_free = -1
    while True:
        k = table[i, 0]
        if k == KEY_EMPTY:
            return -(i if first_free < 0 else first_free) - 1
        if k == KEY_TOMBSTONE:
            if first_free < 0:
                first_free = i
        elif k == key:
            return i
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def _hint_holds(frame, key, salt, content, owner, frame_ppn, refcount):
    """Whether a hint's ``frame`` is still one VM's private page whose content gives ``key``."""
    return (owner[frame] >= 0 and frame_ppn[frame] >= 0 and refcount[frame] == 1
            and table_key(content[frame], salt) == key)


@njit(cache=True)
def scan_kernel(ppns, pmap_state, pmap_mpn, is_table, salt, content, owner, frame_ppn,
                refcount, table, t_used, shift, keys, mpns, action, joined, old,
                promoted_vm, promoted_ppn, counts):
    """Offer ``ppns`` of one VM to the table; returns how many hints were promoted.

    Two passes: the first gathers each candidate's frame and key into ``mpns``
    and ``keys`` (sequential when ``ppns`` ascend), the second probes the
    table, one cache line a probe, prefetched PREFETCH candidates ahead.
    Frames promoted to shared get owner SHARED_OWNER and their refcount raised
    here, and this VM's pages that now map a shared frame are remapped in its
    pmap (state SHARED); they are listed in ``joined`` (in ``ppns`` order) with
    the frames they held in ``old``, ``counts[A_SHARE] + counts[A_PROMOTE]`` of
    them. The rest is the caller's: the promoted pages' pmap state, the
    translations of both, and freeing ``old``.
    """
    n = ppns.size
    for i in range(n):
        p = ppns[i]
        mpns[i] = -1
        st = pmap_state[p]
        if is_table[p]:
            action[i] = A_PAGE_TABLE
            continue
        if st != 1 and st != 2:  # Backing.PRIVATE, Backing.SHARED
            action[i] = A_NOT_BACKED
            continue
        m = pmap_mpn[p]
        if owner[m] == SHARED_OWNER:
            action[i] = A_ALREADY
            continue
        mpns[i] = m
        keys[i] = table_key(content[m], salt)
    n_promoted = 0
    n_joined = 0
    # Prefetch the slot PREFETCH candidates ahead so its cache miss overlaps the
    # probes before it: a prefetch instruction, unlike a load, retires at once,
    # so a mispredicted branch on a probe's outcome does not wait for it.
    flat = table.reshape(table.shape[0] * 2)  # the slots' words, for prefetching
    for i in range(n):
        ahead = i + PREFETCH
        if ahead < n and mpns[ahead] >= 0:
            word = np.int64(keys[ahead] >> np.uint64(shift)) * 2
            host_prefetch(flat, word)
            # A probe that runs past its home slot may cross into the next
            # line: fetch the line of the third slot on as well (the same
            # line, at no cost, when the home is the first slot of its line).
            host_prefetch(flat, word + 6)
        # Nearer, the slot is likely in cache: read its frame and prefetch that
        # frame's words, which a shared or hinted entry's check reads. Only
        # the home slot is looked at, and frame 0 stands in when it holds
        # another key, so no branch here depends on the load.
        ahead = i + PREFETCH_FRAME
        if ahead < n and mpns[ahead] >= 0:
            home = np.int64(keys[ahead] >> np.uint64(shift)) * 2
            f = np.int64(flat[home + 1] & FRAME_MASK)
            f = f if flat[home] == keys[ahead] else 0
            host_prefetch(content, f)
            host_prefetch(owner, f)
            host_prefetch(frame_ppn, f)
            host_prefetch(refcount, f)
        mpn = mpns[i]
        if mpn < 0:
            continue
        if owner[mpn] == SHARED_OWNER:  # promoted earlier in this batch
            action[i] = A_ALREADY
            continue
        key = keys[i]
        token = content[mpn]
        slot = _find(table, key, shift)
        if slot < 0:
            slot = -slot - 1
            table[slot, 0] = key
            table[slot, 1] = np.uint64(mpn) | KIND_HINT
            t_used[0] += 1
            action[i] = A_HINT
            continue
        entry = table[slot, 1]
        frame = np.int64(entry & FRAME_MASK)
        if entry & KIND_SHARED:
            if content[frame] != token:
                action[i] = A_FALSE
                continue
            refcount[frame] += 1
            action[i] = A_SHARE
            joined[n_joined] = ppns[i]
            old[n_joined] = mpn
            n_joined += 1
            pmap_mpn[ppns[i]] = frame
            pmap_state[ppns[i]] = 2  # Backing.SHARED
            continue
        # A hint: still the same private page with the same content?
        if frame == mpn or not _hint_holds(frame, key, salt, content, owner, frame_ppn,
                                           refcount):
            table[slot, 1] = np.uint64(mpn) | KIND_HINT  # replace the stale hint
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
        table[slot, 1] = np.uint64(frame) | KIND_SHARED
        action[i] = A_PROMOTE
        joined[n_joined] = ppns[i]
        old[n_joined] = mpn
        n_joined += 1
        pmap_mpn[ppns[i]] = frame
        pmap_state[ppns[i]] = 2  # Backing.SHARED
    for i in range(n):
        counts[action[i]] += 1
    return n_promoted


@njit(cache=True, nogil=True)
def _drop_stale_hints(table, content, owner, frame_ppn, refcount, salts):
    """Turn every hint that no longer describes its frame into a tombstone; returns how many.

    A hint holds while its frame is still one VM's private page (refcount 1)
    whose content, salted as its owner's, still gives the hint's key: the
    scan's own check, with the owner's salt in place of the scanning VM's.
    """
    dropped = 0
    for i in range(table.shape[0]):
        key = table[i, 0]
        entry = table[i, 1]
        if key <= KEY_TOMBSTONE or not entry & KIND_HINT:
            continue
        frame = np.int64(entry & FRAME_MASK)
        vm = owner[frame]
        if 0 <= vm < salts.size and _hint_holds(frame, key, salts[vm], content, owner,
                                                frame_ppn, refcount):
            continue
        table[i, 0] = KEY_TOMBSTONE
        dropped += 1
    return dropped


@njit(cache=True)
def forget_frame(table, shift, key, frame):
    """Remove the shared entry for ``frame`` (its last sharer left); returns 1 if found."""
    slot = _find(table, key, shift)
    if slot >= 0 and np.int64(table[slot, 1] & FRAME_MASK) == frame:
        table[slot, 0] = KEY_TOMBSTONE
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
    stale_hints_dropped: int = 0  # stale hints cleared when the table was about to grow
    already_shared: int = 0  # candidates that were shared already
    not_backed: int = 0  # candidates with no frame (swapped, ballooned, untouched)
    page_tables: int = 0  # candidates holding guest page tables (not eligible)
    false_matches: int = 0  # hash matched, content differed: not shared
    cow_breaks: int = 0  # writes that broke sharing
    frames_freed: int = 0  # frames given back by sharing
    large_pages: int = 0  # candidates inside a host large page: hashed, not shared [KB1021095]


class SharingTable:
    """The host-wide table of shared frames and hints.

    Args:
        capacity: initial slots (a power of two; grows to keep load below half).
    """

    def __init__(self, capacity: int = 1 << 16):
        if capacity & (capacity - 1) or capacity < 2:
            raise ConfigError("sharing table capacity must be a power of two")
        self._alloc(capacity)
        self.counters = SharingCounters()
        self._scratch_size = -1
        self._scratch: tuple[np.ndarray, ...] = ()

    def _alloc(self, capacity: int) -> None:
        self.table = np.zeros((capacity, 2), dtype=np.uint64)
        # Commit the table's memory now: left to the scans, the first touch of
        # each of its pages is a page fault in the middle of a probe (about half
        # of a first scan's time over a large host, see the module docstring).
        self.table.fill(0)
        self.shift = 64 - (capacity.bit_length() - 1)  # slot = key >> shift
        self.t_used = np.zeros(1, dtype=np.int64)  # slots ever taken (tombstones included)

    def scratch(self, n: int) -> tuple[np.ndarray, ...]:
        """Work arrays for a scan of up to ``n`` candidates, kept from scan to scan.

        Fresh arrays per batch would cost a page fault per 4 KiB on every scan.
        Returns (keys, mpns, action, joined, old, promoted_vm, promoted_ppn)
        as :func:`scan_kernel` takes them.
        """
        if n > self._scratch_size:
            size = max(n, 1024)
            self._scratch = (np.zeros(size, dtype=np.uint64), np.zeros(size, dtype=np.int64),
                             np.zeros(size, dtype=np.int8),
                             *(np.zeros(size, dtype=np.int64) for _ in range(4)))
            self._scratch_size = size
        return self._scratch

    def reserve(self, extra: int, frames: MachineMemory | None = None,
                salts: Callable[[], np.ndarray] | None = None) -> None:
        """Make room so ``extra`` more inserts keep the load below 1/2.

        Tombstones are cleared by rehashing the live entries. Given the host's
        ``frames`` and what gives each VM's salt (``salts()[vm_id]``, asked only
        when room must be made), hints that went stale
        are dropped first: a hint is looked at only when a page with its key
        is scanned, so the hints of pages rewritten since they were hashed
        would otherwise pile up for good (a write-heavy VM leaves one per
        rewrite) and grow the table past any bound. The table grows (doubling)
        only if the live entries need it.
        """
        capacity = self.table.shape[0]
        if (self.t_used[0] + extra) * 2 <= capacity:
            return
        if frames is not None and salts is not None:
            self.counters.stale_hints_dropped += int(_drop_stale_hints(
                self.table, frames.content, frames.owner, frames.ppn, frames.refcount,
                np.ascontiguousarray(salts(), dtype=np.int64)))
        live = self.table[self.table[:, 0] > KEY_TOMBSTONE]
        while (live.shape[0] + extra) * 2 > capacity:
            capacity *= 2
        self._alloc(capacity)
        _reinsert(live, self.table, self.shift)
        self.t_used[0] = live.shape[0]

    def n_entries(self, kind: int) -> int:
        """Live entries of ``kind`` (HINT or SHARED)."""
        live = self.table[:, 0] > KEY_TOMBSTONE
        bit = KIND_HINT if kind == HINT else KIND_SHARED
        return int(np.count_nonzero(live & ((self.table[:, 1] & bit) != 0)))

    def shared_frames(self) -> np.ndarray:
        """The frames of the live shared entries, sorted (for checks, not hot paths)."""
        entries = self.table[(self.table[:, 0] > KEY_TOMBSTONE)
                             & ((self.table[:, 1] & KIND_SHARED) != 0), 1]
        return np.sort((entries & FRAME_MASK).astype(np.int64))

    def forget(self, token: int, salt: int, frame: int) -> int:
        """Drop the shared entry of ``frame`` (holding ``token``); returns 1 if it was there."""
        key = np.uint64(table_key(np.uint64(token), salt))  # keep it unsigned across the call
        return int(forget_frame(self.table, self.shift, key, frame))


@njit(cache=True)
def _reinsert(live, table, shift):
    for i in range(live.shape[0]):
        slot = -_find(table, live[i, 0], shift) - 1
        table[slot, 0] = live[i, 0]
        table[slot, 1] = live[i, 1]


def default_scan_rate_pages_per_s(n_ppns: int) -> float:
    """Pages per second that scan a VM once per ShareScanTime, capped at ShareRateMax."""
    return min(SHARE_RATE_MAX_PAGES_PER_S, n_ppns / SHARE_SCAN_TIME_S)
