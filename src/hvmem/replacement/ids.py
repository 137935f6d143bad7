"""Page numbers to dense ids, for replaying reference strings.

Page numbers in a trace may be anything in int64 (addresses shifted right by
12 on a 64-bit machine; uint64 input is reinterpreted, not wrapped), so a
replay first maps them to dense ``int32`` ids 0..D-1 in first-seen order and
indexes every per-page array by id.

The map is an open-addressing hash table in Numba (linear probing, Fibonacci
hashing, load factor at most 1/2) that doubles when half full. It is O(1) per
reference: on 5 million Zipf references it takes about 0.09 s, where
``numpy.unique(..., return_inverse=True)`` takes about 1.9 s (it sorts all the
references, not just the distinct pages), far more than the replacement
itself. It is kept between chunks, so a long trace is mapped in memory
O(distinct pages + one chunk). (A dict per chunk would cost a Python step per
distinct page per chunk; a sorted array with ``searchsorted`` would re-merge
the whole map every chunk.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.core.mix import GOLDEN_GAMMA
from hvmem.errors import ConfigError

MAX_IDS = 1 << 30  # ids are int32; the table would hold 2**31 slots by then
_HASH_MUL = GOLDEN_GAMMA  # 2**64 / golden ratio (Fibonacci hashing)
_INITIAL_TABLE_BITS = 12


@njit(cache=True)
def _map_ids(pages, keys, vals, n_ids, shift, out, start):
    """Map ``pages[start:]`` to dense ids through a linear-probing hash table.

    New pages get the next id. Stops early, before inserting, when the table is
    half full, so Python can double it.

    Returns:
        (index reached, number of ids).
    """
    mask = keys.shape[0] - 1
    limit = keys.shape[0] >> 1
    sh = np.uint64(shift)
    for i in range(start, pages.shape[0]):
        key = pages[i]
        h = np.int64((np.uint64(key) * _HASH_MUL) >> sh)
        while True:
            v = vals[h]
            if v < 0:
                if n_ids >= limit:
                    return i, n_ids
                keys[h] = key
                vals[h] = n_ids
                out[i] = n_ids
                n_ids += 1
                break
            if keys[h] == key:
                out[i] = v
                break
            h = (h + 1) & mask
    return pages.shape[0], n_ids


@njit(cache=True)
def _rehash(keys, vals, new_keys, new_vals, shift):
    mask = new_keys.shape[0] - 1
    sh = np.uint64(shift)
    for j in range(keys.shape[0]):
        v = vals[j]
        if v < 0:
            continue
        key = keys[j]
        h = np.int64((np.uint64(key) * _HASH_MUL) >> sh)
        while new_vals[h] >= 0:
            h = (h + 1) & mask
        new_keys[h] = key
        new_vals[h] = v


class IdMap:
    """Page number -> dense id (first-seen order), a growable hash table over Numba kernels."""

    def __init__(self) -> None:
        self.bits = _INITIAL_TABLE_BITS
        self.keys = np.zeros(1 << self.bits, dtype=np.int64)
        self.vals = np.full(1 << self.bits, -1, dtype=np.int32)
        self.n_ids = 0

    def map(self, pages: np.ndarray) -> np.ndarray:
        """Ids of ``pages`` (int64), giving new pages the next ids."""
        out = np.empty(pages.shape[0], dtype=np.int32)
        start = 0
        while True:
            start, self.n_ids = _map_ids(pages, self.keys, self.vals, self.n_ids,
                                         64 - self.bits, out, start)
            if start == pages.shape[0]:
                return out
            if self.n_ids >= MAX_IDS:
                raise ConfigError(f"more than {MAX_IDS} distinct pages: too many to simulate")
            bits = self.bits + 1
            keys = np.zeros(1 << bits, dtype=np.int64)
            vals = np.full(1 << bits, -1, dtype=np.int32)
            _rehash(self.keys, self.vals, keys, vals, 64 - bits)
            self.keys, self.vals, self.bits = keys, vals, bits

    def ranks(self) -> np.ndarray:
        """Rank of each id's page number among all pages seen (0 = smallest)."""
        used = self.vals >= 0
        page_of = np.empty(self.n_ids, dtype=np.int64)
        page_of[self.vals[used]] = self.keys[used]
        rank = np.empty(self.n_ids, dtype=np.int64)
        rank[np.argsort(page_of, kind="stable")] = np.arange(self.n_ids)
        return rank
