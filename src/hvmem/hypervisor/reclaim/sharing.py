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
at ``Mem.ShareRateMax`` = 1024 pages/s per VM [VS4-ATTR][LAMW]. Besides the
per-VM rate the host caps its total scan rate, as ESX always has
[OSDI02 §4.3]: ESX 2.5's ``ShareScanTotal`` = 200 pages/s (with ``ShareScanVM``
= 50 pages/s per VM) [ESX25-p343], vSphere's ``Mem.ShareScanGHz`` = 4 MB/s per
GHz of host CPU [VS4-ATTR][LAMW] (1024 pages/s per GHz). When the VMs' rates add
up to more than the cap, each VM's is scaled down by the same factor, so the
scanner's time is divided among the VMs as their own rates would divide it
(how ESX divides it is not published).

Data layout: open addressing over one array of packed 12-byte slots (the
64-bit key; the frame shifted left by two, over the entry's kind), indexed by
the key's high bits, so a probe mostly costs one cache line (a slot of 16
bytes, the key and a 64-bit word for the frame, held 512 MiB on a 64 GiB host
where 12 bytes hold 384 MiB; a host of 2**30 frames or more keeps the 64-bit
word); a Numba kernel takes a batch of candidates (in ascending PPN order the
frame arrays are read sequentially);
frames carry a reverse map (``MachineMemory.ppn``), so a hint is just a frame
number and is stale when that frame no longer backs the page it did.

Scan speed: a probe misses the host's caches, so the kernel gathers a batch
first (frame, content, key: sequential reads) and then probes, with a prefetch
instruction PREFETCH candidates ahead for the home slot's line and the line of
the slot three on (where a probe that runs past its home lands), and
PREFETCH_FRAME ahead for the words of the frame the home slot names, which the
checks of a shared or hinted entry read. Prefetches rather than loads: the
branch on each probe's outcome mispredicts often, and a pending load would
hold the pipeline while a prefetch retires at once. The table's memory is
committed when it is allocated (host setup, or a growth) and the per-scan work
arrays are kept from scan to scan, so no scan pays the first touch of their
pages; the table's array starts small and doubles as entries come, so a run
commits the slots it fills rather than a hint per host frame (results do not
depend on the array's size, :class:`SharingTable`). The array is resized and
rehashed in place: an entry is moved to its new place, and the one it finds
there moves on in turn, so growing it takes no second copy of its entries (a
copy of the live entries beside the grown array was bench-32vm's peak of
memory: 192 MiB beside 512). The kernel hands back this
VM's pages that joined a shared frame
compacted, with their old frames, so nothing after it walks the whole batch
again. The measurements behind these choices, and the alternatives that lost,
are in ``docs/design/sharing-scan.md``.

The scan driver (:func:`share_scan`, one VM's pages; :func:`scan_vms`, every
VM at its rate) runs the kernel and finishes what it leaves: pages inside a
host large page are hashed but not shared (``large_pages``), unless the host
breaks large pages by memory state, which breaks the visited ones first and
offers their hashed pages too [KB1021095][YB-STATES6]; the pages of a
promoted hint, which may belong to any VM, become SHARED and read-only in
that VM's translations; this VM's pages that joined a shared frame give their
own frame back. A write to a shared page gets a private copy
(``fault.break_cow``); :func:`leave_shared` drops a sharer and frees a frame
left with none.

Counters (pages): scanned, shared (mappings made), hints_inserted,
hint_promotions, stale_hints, already_shared, not_backed (page swapped,
ballooned or unbacked), page_tables (guest page-table pages, whose entries the
model keeps apart from content tokens, are not scanned), false_matches,
cow_breaks, frames_freed.

References: [OSDI02 §4]; [KB1021095] (large pages), [KB2097593] (salting); the
keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.core.mix import GOLDEN_GAMMA, mix64
from hvmem.errors import ConfigError
from hvmem.hardware.frames import MachineMemory
from hvmem.hardware.prefetch import host_prefetch
from hvmem.hypervisor.large_pages import break_covering, hashed_pages
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.vm_state import LARGE_PAGE_SHIFT, VmState
from hvmem.units import ns_to_s

SALTING_MODES = ("across", "within", "explicit")
SHARE_SCAN_TIME_S = 3600  # Mem.ShareScanTime: scan a whole VM per 60 minutes [VS4-ATTR]
SHARE_RATE_MAX_PAGES_PER_S = 1024  # Mem.ShareRateMax, per VM [VS4-ATTR][LAMW]
SHARE_SCAN_VM_PAGES_PER_S = 50  # ESX 2.5 ShareScanVM, per VM [ESX25-p343]
SHARE_SCAN_TOTAL_PAGES_PER_S = 200  # ESX 2.5 ShareScanTotal, per host [ESX25-p343]
SHARE_SCAN_MIB_S_PER_GHZ = 4  # Mem.ShareScanGHz: MB/s per GHz of host CPU [VS4-ATTR][LAMW]

SHARED_OWNER = -4  # frames.owner of a shared frame: it belongs to no single VM

# A table slot is a packed record: the key (0 empty, 1 tombstone) and a word
# holding the frame shifted left by KIND_SHIFT over the entry's kind. The word
# is 32 bits while every frame is below 2**30 (any host under 4 TiB): 12 bytes
# a slot instead of 16.
KEY_EMPTY = np.uint64(0)
KEY_TOMBSTONE = np.uint64(1)
KIND_HINT = np.uint64(1)
KIND_SHARED = np.uint64(2)
KIND_SHIFT = np.uint64(2)
HINT, SHARED = 1, 2  # entry kinds, for n_entries
NARROW_SLOT_FRAMES = 2**30  # frames below it fit a slot's 32-bit word
SLOT_NARROW = np.dtype([("key", "<u8"), ("val", "<u4")], align=False)  # 12 bytes
SLOT_WIDE = np.dtype([("key", "<u8"), ("val", "<u8")], align=False)  # 16 bytes

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
INITIAL_SLOTS = 1 << 16  # the slot array's first size (1 MiB), doubled when 3/4 full


@njit(cache=True, inline="always")
def content_hash(token):
    """A 64-bit mix of a content token (splitmix64's finalizer)."""
    return mix64(np.uint64(token) + GOLDEN_GAMMA)


@njit(cache=True, inline="always")
def table_key(token, salt):
    """The table key of a page: its content hash mixed with its salt (never 0 or 1)."""
    key = content_hash(token) ^ content_hash(np.uint64(salt) + np.uint64(0x5A17_5A17))
    if key < np.uint64(2):
        key += np.uint64(2)
    return key


@njit(cache=True, inline="always")
def entry_word(frame, kind):
    """A slot's word: ``frame`` over its ``kind`` (KIND_HINT or KIND_SHARED)."""
    return (np.uint64(frame) << KIND_SHIFT) | kind


@njit(cache=True, inline="always")
def entry_frame(word):
    """The frame a slot's word names."""
    return np.int64(np.uint64(word) >> KIND_SHIFT)


@njit(cache=True, inline="always")
def _find(table, key, shift):
    """Slot holding ``key``, or -(first free slot) - 1 where it would go.

    Slots are indexed by the key's high bits.
    """
    mask = table.shape[0] - 1
    i = np.int64(key >> np.uint64(shift))
    first_free = -1
    while True:
        k = table[i].key
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
    for i in range(n):
        ahead = i + PREFETCH
        if ahead < n and mpns[ahead] >= 0:
            home = np.int64(keys[ahead] >> np.uint64(shift))
            host_prefetch(table, home)
            # A probe that runs past its home slot may cross into the next
            # line: fetch the line of the third slot on as well (often the
            # same line, at no cost). Past the array's end a prefetch is harmless.
            host_prefetch(table, home + 3)
        # Nearer, the slot is likely in cache: read its frame and prefetch that
        # frame's words, which a shared or hinted entry's check reads. Only
        # the home slot is looked at, and frame 0 stands in when it holds
        # another key, so no branch here depends on the load.
        ahead = i + PREFETCH_FRAME
        if ahead < n and mpns[ahead] >= 0:
            home = np.int64(keys[ahead] >> np.uint64(shift))
            f = entry_frame(table[home].val)
            f = f if table[home].key == keys[ahead] else 0
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
            table[slot].key = key
            table[slot].val = entry_word(mpn, KIND_HINT)
            t_used[0] += 1
            action[i] = A_HINT
            continue
        entry = np.uint64(table[slot].val)
        frame = entry_frame(entry)
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
            table[slot].val = entry_word(mpn, KIND_HINT)  # replace the stale hint
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
        table[slot].val = entry_word(frame, KIND_SHARED)
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
        key = table[i].key
        entry = np.uint64(table[i].val)
        if key <= KEY_TOMBSTONE or not entry & KIND_HINT:
            continue
        frame = entry_frame(entry)
        vm = owner[frame]
        if 0 <= vm < salts.size and _hint_holds(frame, key, salts[vm], content, owner,
                                                frame_ppn, refcount):
            continue
        table[i].key = KEY_TOMBSTONE
        dropped += 1
    return dropped


@njit(cache=True)
def forget_frame(table, shift, key, frame):
    """Remove the shared entry for ``frame`` (its last sharer left); returns 1 if found."""
    slot = _find(table, key, shift)
    if slot >= 0 and entry_frame(table[slot].val) == frame:
        table[slot].key = KEY_TOMBSTONE
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

    Two sizes: ``capacity`` is the table's size as the model has it, which
    decides when stale hints are dropped (when the slots taken since the last
    clean-up would pass half of it, :meth:`reserve`); the array holding the
    slots starts at most ``INITIAL_SLOTS`` and doubles when 3/4 full, up to
    ``capacity``. A lookup finds a key wherever it sits, so what the scan finds
    does not depend on the array's size, only on ``capacity``: the host sizes
    that for a hint per frame (384 MiB of slots on a 64 GiB host), most of
    which a run never fills.

    Args:
        capacity: slots (a power of two; grows to keep load below half).
        n_frames: the host's frames: below NARROW_SLOT_FRAMES a slot is 12
            bytes, else 16.
    """

    def __init__(self, capacity: int = 1 << 16, n_frames: int = NARROW_SLOT_FRAMES - 1):
        if capacity & (capacity - 1) or capacity < 2:
            raise ConfigError("sharing table capacity must be a power of two")
        self.capacity = capacity
        self.slot_dtype = SLOT_NARROW if n_frames < NARROW_SLOT_FRAMES else SLOT_WIDE
        self.t_used = np.zeros(1, dtype=np.int64)  # slots taken since the last clean-up
        slots = min(capacity, INITIAL_SLOTS)
        self.table = np.zeros(slots, dtype=self.slot_dtype)
        # Commit the array's memory now: left to the scans, the first touch of
        # each of its pages is a page fault in the middle of a probe (about half
        # of a first scan's time over a large host, docs/design/sharing-scan.md).
        self.table.fill(0)
        self.shift = 64 - (slots.bit_length() - 1)  # slot = key >> shift
        self.counters = SharingCounters()
        self._scratch_size = -1
        self._scratch: tuple[np.ndarray, ...] = ()

    def _rehash(self, need: int) -> None:
        """Hold the live entries in the smallest array that keeps ``need`` slots below half of it.

        The array has at least INITIAL_SLOTS slots and at most ``capacity``. It
        is resized and rehashed in place (:func:`_rehash_in_place`): growing,
        the new slots are zeroed, which commits them as ``__init__`` does;
        shrinking, the entries move into the slots kept first.
        """
        slots = min(self.capacity, max(INITIAL_SLOTS, 1 << (2 * need - 1).bit_length()))
        old = self.table.shape[0]
        if slots > old:
            # ndarray.resize reallocates in place where it can (a large array is
            # remapped, not copied) and zeroes the new slots.
            self.table.resize(slots, refcheck=False)
        self.shift = 64 - (slots.bit_length() - 1)
        _rehash_in_place(self.table, old, slots, self.shift)
        if slots < old:
            self.table.resize(slots, refcheck=False)

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
        if (self.t_used[0] + extra) * 2 > self.capacity:
            if frames is not None and salts is not None:
                self.counters.stale_hints_dropped += int(_drop_stale_hints(
                    self.table, frames.content, frames.owner, frames.ppn, frames.refcount,
                    np.ascontiguousarray(salts(), dtype=np.int64)))
            live = int(_count_live(self.table))
            while (live + extra) * 2 > self.capacity:
                self.capacity *= 2
            self.t_used[0] = live
            self._rehash(live + extra)
        elif (self.t_used[0] + extra) * 4 > self.table.shape[0] * 3:
            # Within ``capacity``: a bigger array (load 1/2 again), the same
            # entries. The slots taken (tombstones included) stay counted, so
            # the clean-up above comes when it would at full size. The array
            # fills to 3/4 before it doubles: a probe past its home slot mostly
            # stays in its cache line, and bench-32vm's first 420 s end with
            # 11 Mi entries in 16 Mi slots rather than 32 Mi.
            self._rehash(int(self.t_used[0]) + extra)

    def n_entries(self, kind: int) -> int:
        """Live entries of ``kind`` (HINT or SHARED)."""
        live = self.table["key"] > KEY_TOMBSTONE
        bit = KIND_HINT if kind == HINT else KIND_SHARED
        return int(np.count_nonzero(live & ((self.table["val"] & bit) != 0)))

    def shared_frames(self) -> np.ndarray:
        """The frames of the live shared entries, sorted (for checks, not hot paths)."""
        words = self.table["val"][(self.table["key"] > KEY_TOMBSTONE)
                                  & ((self.table["val"] & KIND_SHARED) != 0)]
        return np.sort((words >> KIND_SHIFT).astype(np.int64))

    def forget(self, token: int, salt: int, frame: int) -> int:
        """Drop the shared entry of ``frame`` (holding ``token``); returns 1 if it was there."""
        key = np.uint64(table_key(np.uint64(token), salt))  # keep it unsigned across the call
        return int(forget_frame(self.table, self.shift, key, frame))


@njit(cache=True)
def _count_live(table):
    """Slots holding an entry (neither empty nor a tombstone)."""
    n = 0
    for i in range(table.shape[0]):
        if table[i].key > KEY_TOMBSTONE:
            n += 1
    return n


@njit(cache=True)
def _rehash_in_place(table, n_old, n_slots, shift):
    """Rehash the entries of ``table[:n_old]`` into ``table[:n_slots]`` (``shift``), in place.

    Tombstones are cleared first. Each entry not yet placed is taken out of
    its slot and put in the first slot from its new home that holds no placed
    entry; if that slot held an entry not yet placed, that one is taken out in
    turn, until a move lands in an empty slot. Placed entries never move again
    and every slot between an entry's home and its place holds a placed entry,
    so each is found by a probe from its home, as after inserting them all
    into an empty array. ``table[n_old:n_slots]`` must be empty, and the live
    entries at most ``n_slots - 1``.
    """
    for i in range(n_old):
        if table[i].key == KEY_TOMBSTONE:
            table[i].key = KEY_EMPTY
    mask = n_slots - 1
    placed = np.zeros((n_slots + 63) >> 6, dtype=np.uint64)  # a bit per slot
    one = np.uint64(1)
    for i in range(n_old):
        if table[i].key == KEY_EMPTY:
            continue
        if i < n_slots and placed[i >> 6] & (one << np.uint64(i & 63)):
            continue
        key = table[i].key
        word = table[i].val
        table[i].key = KEY_EMPTY
        while True:
            j = np.int64(key >> np.uint64(shift))
            while placed[j >> 6] & (one << np.uint64(j & 63)):
                j = (j + 1) & mask
            there_key = table[j].key
            there_word = table[j].val
            table[j].key = key
            table[j].val = word
            placed[j >> 6] |= one << np.uint64(j & 63)
            if there_key == KEY_EMPTY:
                break
            key = there_key
            word = there_word


def profile_scan_rates(profile: str, per_vm_pages_per_s: float | None,
                       total_pages_per_s: float | None, cpu_ghz: float
                       ) -> tuple[float | None, float]:
    """(per-VM rate, host cap) with what is None taken from ``profile``'s defaults.

    esx4: ShareScanVM 50 and ShareScanTotal 200 pages/s [ESX25-p343]; esxi5, esxi6:
    the per-VM rate stays None (a whole VM per ShareScanTime, at most ShareRateMax,
    :func:`default_scan_rate_pages_per_s`), the cap is ShareScanGHz times
    ``cpu_ghz`` [VS4-ATTR][LAMW].
    """
    if profile == "esx4":
        per_vm = SHARE_SCAN_VM_PAGES_PER_S if per_vm_pages_per_s is None else per_vm_pages_per_s
        total = SHARE_SCAN_TOTAL_PAGES_PER_S if total_pages_per_s is None else total_pages_per_s
        return float(per_vm), float(total)
    if total_pages_per_s is None:
        total_pages_per_s = SHARE_SCAN_MIB_S_PER_GHZ * 256 * cpu_ghz  # 256 pages a MiB
    return per_vm_pages_per_s, float(total_pages_per_s)


def default_scan_rate_pages_per_s(n_ppns: int) -> float:
    """Pages per second that scan a VM once per ShareScanTime, capped at ShareRateMax."""
    return min(SHARE_RATE_MAX_PAGES_PER_S, n_ppns / SHARE_SCAN_TIME_S)


# -- the scan driver ---------------------------------------------------------------


def scan_vms(vms: Sequence[VmState], elapsed_ns: int, rng: np.random.Generator,
             rate_pages_per_s: float | None = None,
             total_pages_per_s: float | None = None) -> int:
    """Run the page-sharing scanner for ``elapsed_ns``: random pages of every VM.

    Each VM is scanned at ``rate_pages_per_s`` (by default a whole VM per
    Mem.ShareScanTime, capped at Mem.ShareRateMax), all of them scaled down alike
    when they add up to more than ``total_pages_per_s`` (None: no host cap).
    Returns frames freed.
    """
    rates = [rate_pages_per_s or default_scan_rate_pages_per_s(vm.n_ppns) for vm in vms]
    total = sum(rates)
    scale = 1.0
    if total_pages_per_s is not None and total > total_pages_per_s:
        scale = total_pages_per_s / total
    freed = 0
    for vm, rate in zip(vms, rates, strict=True):
        n = min(vm.n_ppns, int(ns_to_s(rate * scale * elapsed_ns) + rng.random()))
        if n:
            freed += vm.services.share(vm, np.sort(rng.choice(vm.n_ppns, n, replace=False)))
    return freed


def share_scan(vm: VmState, ppns: np.ndarray, table: SharingTable, salt: int,
               salts: Callable[[], np.ndarray], vms: Sequence[VmState]) -> int:
    """Offer ``ppns`` (distinct) of ``vm`` to the table; returns frames freed.

    ``salt`` is this VM's, ``salts()`` every VM's and ``vms`` every VM by id
    (a promoted hint's page may be any VM's). Guest page-table pages are not
    candidates: the model keeps their entries in the table store rather than
    as a content token. Pages of a large page are hashed but not shared
    (counted as ``large_pages``), unless the host breaks large pages by memory
    state: then a visited large page is broken and its hashed pages are
    offered with the rest [KB1021095][YB-STATES6].
    """
    ppns = np.asarray(ppns, dtype=np.int64)
    frames = vm.frames
    if ppns.size and vm.large.any():
        in_large = vm.large[ppns >> LARGE_PAGE_SHIFT]
        if np.any(in_large):
            if vm.services.large_page_breaking != "off":
                broken = break_covering(vm, ppns[in_large], "state", bounded=True)
                ppns = np.union1d(ppns, hashed_pages(vm, broken))
                in_large = vm.large[ppns >> LARGE_PAGE_SHIFT]  # left whole: skipped
            if np.any(in_large):
                vm.lp_hashed[ppns[in_large]] = True
                skipped = int(np.count_nonzero(in_large))
                table.counters.scanned += skipped
                table.counters.large_pages += skipped
                ppns = ppns[~in_large]
    n = ppns.size
    table.reserve(n, frames, salts)
    keys, mpns, action, joined, old, promoted_vm, promoted_ppn = table.scratch(n)
    counts = np.zeros(N_ACTIONS + 1, dtype=np.int64)
    n_promoted = scan_kernel(
        ppns, vm.pmap.state, vm.pmap.mpn, vm.guest_tables.is_table_frame, salt,
        frames.content, frames.owner, frames.ppn, frames.refcount, table.table, table.t_used,
        table.shift, keys, mpns, action, joined, old, promoted_vm, promoted_ppn, counts)
    c = table.counters
    c.scanned += n
    c.hints_inserted += int(counts[A_HINT])
    c.stale_hints += int(counts[A_STALE])
    c.already_shared += int(counts[A_ALREADY])
    c.page_tables += int(counts[A_PAGE_TABLE])
    c.not_backed += int(counts[A_NOT_BACKED])
    c.false_matches += int(counts[A_FALSE])
    c.hint_promotions += int(n_promoted)
    # Pages whose hinted twin became a shared frame: read-only from now on.
    if n_promoted:
        promoted_vm, promoted_ppn = promoted_vm[:n_promoted], promoted_ppn[:n_promoted]
        first = int(promoted_vm[0])
        vm_ids = ([first] if np.all(promoted_vm == first)
                  else np.unique(promoted_vm).tolist())
        for vm_id in vm_ids:
            owner_vm = vms[vm_id]
            pages = promoted_ppn if len(vm_ids) == 1 else promoted_ppn[promoted_vm == vm_id]
            pages = pages.copy()  # the scratch arrays are reused by the next scan
            # A hint made before its frame became part of a large page can still
            # match: that large page is broken first, as its page now shares.
            break_covering(owner_vm, pages, "other")
            owner_vm.pmap.set_state(pages, Backing.SHARED)
            owner_vm.paging.on_backing_changed(pages, np.ones(pages.size, dtype=bool))
    # This VM's pages that now map a shared frame (the kernel remapped them
    # in the pmap) give their own frame back.
    n_joined = int(counts[A_SHARE] + counts[A_PROMOTE])
    if n_joined == 0:
        return 0
    vm.pmap.moved(n_joined, Backing.PRIVATE, Backing.SHARED)  # the kernel's remapping
    # Used before any other scan can reuse the work arrays: no copies.
    sharers, old = joined[:n_joined], old[:n_joined]
    vm.paging.on_backing_changed(sharers, np.ones(n_joined, dtype=bool))
    frames.free(old)
    c.shared += n_joined + int(n_promoted)
    c.frames_freed += n_joined
    return n_joined


def unshare(vm: VmState, ppns: np.ndarray, state: Backing) -> None:
    """Drop shared mappings of ``ppns`` without copying (their data is not needed)."""
    shared_mpns = vm.pmap.unback(ppns, state)
    vm.paging.on_backing_changed(ppns, np.ones(ppns.size, dtype=bool))
    vm.services.leave_shared(vm, shared_mpns, False)


def leave_shared(table: SharingTable, frames: MachineMemory, salt: int,
                 shared_mpns: np.ndarray, copied: bool) -> None:
    """One sharer (salted ``salt``) fewer per entry; frames left with none go back.

    ``copied``: the sharers left by a write, each with a private copy
    (counted as ``cow_breaks``).
    """
    if copied:
        table.counters.cow_breaks += int(shared_mpns.size)
    np.subtract.at(frames.refcount, shared_mpns, 1)
    empty = np.unique(shared_mpns[frames.refcount[shared_mpns] == 0])
    for mpn in empty.tolist():
        table.forget(int(frames.content[mpn]), salt, mpn)
    if empty.size:
        frames.refcount[empty] = 1  # free() expects a held frame
        frames.free(empty)
