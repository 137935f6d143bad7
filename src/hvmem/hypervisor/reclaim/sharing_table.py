"""The host-wide page-sharing table: its slots, lookup, growth and clean-up.

What is modelled
----------------
ESX keeps one hash table for the whole host, keyed by a 64-bit hash of a
page's content, whose entries are *hints* (a page hashed once, by its frame)
or *shared frames* [OSDI02 §4.2]. The scan that fills it, and what a match
does, are in ``sharing.py``; this module is the table's storage.

Data layout: open addressing with linear probing over one array of packed
12-byte slots (the 64-bit key; the frame shifted left by two, over the
entry's kind), indexed by the key's high bits, so a probe mostly costs one
cache line (a host of 2**30 frames or more keeps a 64-bit word: 16 bytes).
Frames carry a reverse map (``MachineMemory.ppn``), so a hint is just a frame
number and is stale when that frame no longer backs the page it did.

Two sizes (:class:`SharingTable`): ``capacity`` is the table's size as the
model has it, which decides when stale hints are dropped; the array holding
the slots starts at ``INITIAL_SLOTS`` and doubles when 3/4 full, up to
``capacity``, so a run commits the slots it fills rather than a hint per host
frame. A lookup finds its key wherever it sits, so results do not depend on
the array's size. The array is resized and rehashed in place: an entry is
moved to its new place, and the one it finds there moves on in turn, so
growing it takes no second copy of its entries (a copy of the live entries
beside the grown array was bench-32vm's peak of memory: 192 MiB beside 512).
Its memory is committed when it is allocated or grown, where no probe waits
for the first touch of its pages. The measurements behind these choices are
in ``docs/design/sharing-scan.md``.

References: [OSDI02 §4.2]; the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.core.mix import GOLDEN_GAMMA, mix64
from hvmem.errors import ConfigError
from hvmem.hardware.frames import MachineMemory

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
    does not depend on the array's size, only on ``capacity``: the host gives
    it a slot per frame (192 MiB of slots on a 64 GiB host), most of which a
    run never fills.

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
