"""The interface every replacement policy has: gem5's four verbs, over arrays of pages.

gem5 gives each cache a replacement policy (``src/mem/cache/replacement_policies/
base.hh``) with per-entry *replacement data* it owns and four verbs on it:
``reset`` (the entry was filled), ``touch`` (used), ``invalidate`` (emptied) and
``getVictim(candidates)``. hvmem's memories are pages numbered 0..n-1 whose
state is kept as arrays, never an object per page, so the verbs here take
arrays of page numbers and the replacement data is arrays indexed by page::

    reset(pages, stamp)      the pages were loaded (mapped, faulted in) at ``stamp``
    touch(pages, stamp)      the pages were used at ``stamp``
    invalidate(pages)        the pages left memory (freed)
    victims(n, kinds, evictable, now_stamp)
                             up to n pages to evict, in the order to evict them
    keep(pages)              pages handed out as victims stay after all

Replacement data
----------------
Three arrays, each allocated only by the policies that need it (empty in the
others, so a verb stores nothing there): ``load_stamp`` (FIFO: when each page
was loaded), ``use_stamp`` (LRU: when it was last used) and ``use_bit`` (CLOCK:
used since the hand passed). Stamps are int32 counters that order pages as
their times do (``core/stamps.py``); only their order matters. The verbs are
the same stores for every policy (a load is a use too), so they are written
once, here; a policy differs in the arrays it keeps and in :meth:`victims`.

A touch is data, not code: it stores the stamp in ``use_stamp[page]`` and sets
``use_bit[page]``, where those arrays are not empty. A user whose Numba kernels
see pages go by (the guest's page walk, the host's memory bus) makes the same
stores inline, so a reference costs no Python call; every other touch goes
through :meth:`touch`.

Candidates
----------
A page may be chosen when ``evictable[kinds[page]]``: ``kinds`` is the user's
per-page class (the guest's page kinds, the pmap's backing states, uint8) and
``evictable`` a small bool table by class. The kernels read one byte per page
and a table that stays in cache, with no mask the size of memory, and a
policy that keeps a selection between calls sees when the rules change.

The replay of reference strings (``replay.py``) runs each policy's own Numba
kernel over the whole string, one call per chunk; its per-frame data and the
layout of the state it carries between chunks are below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

#: Empty replacement data: a policy that keeps no such array stores nothing there.
NO_STAMPS = np.zeros(0, dtype=np.int32)
NO_BITS = np.zeros(0, dtype=np.bool_)
NO_PAGES = np.zeros(0, dtype=np.int64)


class ReplacementPolicy(ABC):
    """Victim choice over pages 0..n-1, with the replacement data as arrays by page.

    Subclasses allocate the arrays they need and implement :meth:`victims`.
    """

    name: ClassVar[str]
    __slots__ = ("load_stamp", "use_stamp", "use_bit")

    def __init__(self) -> None:
        self.load_stamp: np.ndarray = NO_STAMPS  # stamp of each page's load
        self.use_stamp: np.ndarray = NO_STAMPS  # stamp of each page's last use
        self.use_bit: np.ndarray = NO_BITS  # used since the hand passed

    def reset(self, pages: np.ndarray, stamp: int) -> None:
        """The pages were loaded at ``stamp`` (a load is also a use)."""
        if self.load_stamp.size:
            self.load_stamp[pages] = stamp
        self.touch(pages, stamp)

    def touch(self, pages: np.ndarray, stamp: int) -> None:
        """The pages were used at ``stamp``."""
        if self.use_stamp.size:
            self.use_stamp[pages] = stamp
        if self.use_bit.size:
            self.use_bit[pages] = True

    def invalidate(self, pages: np.ndarray) -> None:
        """The pages left memory; their stamps mean nothing until the next load."""
        if self.use_bit.size:
            self.use_bit[pages] = False

    @abstractmethod
    def victims(self, n_pages: int, kinds: np.ndarray, evictable: np.ndarray,
                now_stamp: int | None = None) -> np.ndarray:
        """Up to ``n_pages`` candidates to evict, in the order to evict them (int64).

        Args:
            n_pages: pages wanted.
            kinds: each page's class (uint8).
            evictable: by class, whether its pages are candidates.
            now_stamp: the current stamp (no stamp kept is larger), for a
                policy that keeps a selection between calls; None keeps nothing.

        Returns:
            Distinct candidates: ``n_pages`` of them, or every candidate (in
            page order, unless the policy says otherwise) when there are no more.
        """

    def keep(self, pages: np.ndarray) -> None:
        """Pages handed out by :meth:`victims` stay in memory after all."""
        return  # a policy that keeps no selection between calls has nothing to undo


def candidates(kinds: np.ndarray, evictable: np.ndarray) -> np.ndarray:
    """Every candidate, in page order."""
    return np.flatnonzero(evictable[kinds])


# -- replaying reference strings ----------------------------------------------------

#: Slots of the state a replay carries between chunks (int64 each).
USED = 0  # frames holding a page
HAND = 1  # clock/FIFO hand; LRU head (most recent frame)
TAIL = 2  # LRU tail (least recent frame)
HITS = 3
RNG = 4  # splitmix64 state (bits of a uint64) for the random policy
STATE_SLOTS = 5


class FrameReplay(ABC):
    """One policy's side of a replay: its per-frame data and its kernel.

    The replay (``replay.py``) keeps the page-to-frame maps, the id map and the
    state slots; frame arrays grow as pages appear, never beyond the frames.
    """

    __slots__ = ()

    def start(self, state: np.ndarray, kernel_seed: int) -> None:
        """Set the state slots this policy reads before the first chunk."""
        return  # most policies start from zeroed slots

    def grow(self, n_frames: int) -> None:
        """Make room for ``n_frames`` frames."""
        return  # a policy with no per-frame data has nothing to grow

    @abstractmethod
    def run(self, ids: np.ndarray, n_frames: int, frame_of: np.ndarray, page_in: np.ndarray,
            state: np.ndarray) -> None:
        """Replay one chunk of dense page ids."""


def grow(arr: np.ndarray, size: int, fill: int) -> np.ndarray:
    """``arr`` extended to ``size`` entries with ``fill``."""
    out = np.full(size, fill, dtype=arr.dtype)
    out[: arr.shape[0]] = arr
    return out
