r"""Memory compression: a per-VM cache of compressed pages in front of the swap file.

What is modelled
----------------
ESX compresses only pages it has already chosen to swap: a page that
compresses to at most 2 KiB stays in the VM's compression cache instead of
going to disk (in a 1 KiB quarter-page slot if it fits there), anything larger
is swapped. Touching a compressed page decompresses it into a fresh frame, in
microseconds rather than a disk read's milliseconds [VS41-ZIP][VMAESTRO-ZIP]::

    victim page --size <= 1 KiB--> 1 KiB slot  \\
                --size <= 2 KiB--> 2 KiB slot   > compression cache (CACHEUSD)
                --larger---------> swap file   /     full? oldest out to swap

The cache holds at most ``Mem.MemZipMaxPct`` = 10 % of the VM's memory
[VS67-ZIPSIZE][LAMW]. When a new page needs room the oldest compressed pages
are evicted to the swap file (decompressed and written out); the eviction
order is not documented for ESX (unconfirmed: docs/references.md, open
question 7), FIFO here.
The cache lives in machine frames owned by the VM: ``frames_needed`` frames
hold ``used_bytes`` of slots, taken and given back as the cache grows and shrinks.

Compressed sizes come from the page's content token
(``workloads.content.compressed_size_bytes``). What the model keeps of a
cached page (its token, slot size and when it was stored) is in the VM's
put-aside store (``aside.py``), which it shares with the swap file.

Counters (pages): compressed (ZIP), decompressed (UNZIP), rejected (too large:
sent to swap), evicted (to swap to make room). Decompression stalls the vCPU
that touched the page and is charged to it; compression is host work.

References: vSphere "Memory Compression" [VS41-ZIP, VS65-ZIP]; only pages chosen
for swapping are compressed [VI-41]; slot sizes [VMAESTRO-ZIP]; the keys in
brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hvmem.hardware.frames import MachineMemory
from hvmem.hypervisor.reclaim.aside import SWAP_FILE, TAKE_COMPRESSED, AsideStore
from hvmem.units import KIB, PAGE_SIZE_BYTES
from hvmem.workloads.content import compressed_size_bytes

ZIP_MAX_FRAC = 0.10  # Mem.MemZipMaxPct = 10 % of VM memory [VS67-ZIPSIZE][LAMW]
KEEP_MAX_BYTES = 2 * KIB  # kept only if it compresses to <= 2 KiB [VS41-ZIP]
SMALL_SLOT_BYTES = 1 * KIB  # quarter-page slot for pages <= 1 KiB [VMAESTRO-ZIP]


@dataclass(slots=True)
class CompressionCounters:
    """Event tallies of one VM's compression cache, in pages."""

    compressed: int = 0  # pages put in the cache (ZIP)
    decompressed: int = 0  # pages taken out on touch (UNZIP)
    rejected: int = 0  # pages that compressed too poorly: swapped instead
    evicted: int = 0  # cached pages pushed to swap to make room


class CompressionCache:
    """The compression cache of one VM.

    Args:
        n_ppns: the VM's configured memory.
        max_frac: cache capacity as a fraction of VM memory.
    """

    def __init__(self, n_ppns: int, max_frac: float = ZIP_MAX_FRAC,
                 store: AsideStore | None = None):
        self.capacity_bytes = int(n_ppns * PAGE_SIZE_BYTES * max_frac)
        # Where cached pages' data is kept; may be shared with the VM's swap file
        # (a page is never in both).
        self.aside = AsideStore(n_ppns) if store is None else store
        self.n_ppns = n_ppns
        self._clock = 0  # stores so far: each cached page's place in the eviction order
        self.used_bytes = 0
        self.frames = np.zeros(0, dtype=np.int64)  # machine frames holding the slots
        self.counters = CompressionCounters()

    @property
    def frames_needed(self) -> int:
        """Frames the slots in use take."""
        return -(-self.used_bytes // PAGE_SIZE_BYTES)

    @property
    def n_pages(self) -> int:
        """Pages held compressed (kept as they come and go)."""
        return self.aside.n_compressed

    @property
    def slot_bytes(self) -> np.ndarray:
        """Per PPN: its slot's bytes, 0 if not cached (a new array: for checks, not hot paths)."""
        out = np.zeros(self.n_ppns, dtype=np.int16)
        slots = self._cached_slots()
        out[self.aside.ppn_of[slots]] = self.aside.kib[slots].astype(np.int16) * KIB
        return out

    def cached_ppns(self) -> np.ndarray:
        """The pages held compressed, ascending."""
        return self.aside.pages(swap_file=False)

    def _cached_slots(self) -> np.ndarray:
        aside = self.aside
        n = aside.n_slots
        return np.flatnonzero((aside.ppn_of[:n] >= 0) & (aside.kib[:n] != SWAP_FILE))

    @staticmethod
    def slot_for(tokens: np.ndarray) -> np.ndarray:
        """Slot size per page (1 or 2 KiB), or 0 where the page is not worth keeping."""
        size = compressed_size_bytes(tokens)
        return np.where(size <= SMALL_SLOT_BYTES, SMALL_SLOT_BYTES,
                        np.where(size <= KEEP_MAX_BYTES, KEEP_MAX_BYTES, 0)).astype(np.int32)

    def victims_for_room(self, need_bytes: int) -> np.ndarray:
        """Oldest cached pages whose eviction frees at least ``need_bytes`` beyond the capacity."""
        excess = self.used_bytes + need_bytes - self.capacity_bytes
        if excess <= 0:
            return np.zeros(0, dtype=np.int64)
        aside = self.aside
        slots = self._cached_slots()
        # Store times are distinct, so this is the order of the pages' times alone.
        slots = slots[np.argsort(aside.stored_at[slots], kind="stable")]
        freed = np.cumsum(aside.kib[slots].astype(np.int64) * KIB)
        return aside.ppn_of[slots[: int(np.searchsorted(freed, excess)) + 1]].astype(np.int64)

    def store(self, ppns: np.ndarray, tokens: np.ndarray, slots: np.ndarray) -> None:
        """Put the distinct ``ppns`` in the cache (the caller made room)."""
        self.aside.put(ppns, tokens, (slots // KIB).astype(np.uint8),
                       self._clock + np.arange(ppns.size))
        self._clock += ppns.size
        self.used_bytes += int(slots.sum())
        self.counters.compressed += int(ppns.size)

    def take(self, ppns: np.ndarray) -> np.ndarray:
        """Take the distinct ``ppns`` out (decompress, or evict); returns their contents."""
        tokens, kib = self.aside.take_kind(ppns, TAKE_COMPRESSED)
        self.used_bytes -= kib * KIB
        return tokens

    def fit_frames(self, frames: MachineMemory, owner: int) -> None:
        """Hold exactly the frames the slots need, taking them from ``frames`` as ``owner``."""
        need = self.frames_needed
        have = self.frames.size
        if need > have:
            self.frames = np.concatenate([self.frames, frames.alloc(owner, need - have)])
        elif need < have:
            frames.free(self.frames[need:])
            self.frames = self.frames[:need]
