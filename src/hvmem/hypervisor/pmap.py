"""The pmap: each VM's map from guest-physical pages to their backing.

What is modelled
----------------
ESX keeps, per VM, a *pmap* translating every guest "physical" page number (PPN)
to the machine page (MPN) that backs it, or to where its data went instead
(OSDI 2002 §2). Remapping a PPN (changing or dropping its MPN) is invisible to
the guest and is what page sharing, ballooning, compression and swapping do.
The pmap is a struct of arrays indexed by PPN::

    state[ppn]   Backing: UNBACKED until first touch, then PRIVATE; later SHARED,
                 BALLOONED, COMPRESSED or SWAPPED as reclamation moves the page
    mpn[ppn]     the machine page while state is PRIVATE or SHARED, else -1

Only PRIVATE and SHARED pages have a machine page; only PRIVATE ones may be
written without a copy (a write to a SHARED page breaks the sharing first).

Beside the arrays the pmap keeps how many pages are in each state
(``counts``, ``core/counted.py``), updated at every transition: the host asks for them many times
a tick (which VM consumes the most when ``make_room`` must swap at once, how
much a capped VM holds at each fault), and a count over the whole array each
time cost as much as the rest of a tick under pressure. Every state change
therefore goes through :meth:`Pmap.set_state`, :meth:`Pmap.back`,
:meth:`Pmap.unback` or, for pages a Numba kernel moved from PRIVATE to SHARED,
:meth:`Pmap.moved`; ``check_invariants`` compares the counts with a recount.

Invariants: ``mpn >= 0`` exactly where state is PRIVATE or SHARED; no two PRIVATE
pages, of any VM, have the same MPN (checked by the host); ``counts[s]`` is the
number of pages in state ``s``.

References: Waldspurger, OSDI 2002, §2 and §7.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from numba import njit

from hvmem.core.counted import assign_counted, counts_of
from hvmem.errors import InvariantViolation
from hvmem.hardware.frames import index_dtype


class Backing(IntEnum):
    """What backs a guest-physical page."""

    UNBACKED = 0  # never touched, or given back: the next touch allocates (lazily)
    PRIVATE = 1  # a machine page of this VM alone, writable
    SHARED = 2  # a machine page shared copy-on-write (read-only in the tables)
    BALLOONED = 3  # pinned by the guest's balloon driver; backing dropped
    COMPRESSED = 4  # data in the VM's compression cache
    SWAPPED = 5  # data in the VM's swap file


#: The states as stored (``state`` is uint8), for the Numba kernels that compare them.
STATE_PRIVATE = np.uint8(Backing.PRIVATE)
STATE_SHARED = np.uint8(Backing.SHARED)
N_STATES = len(Backing)
_NO_PAGES = np.zeros(0, dtype=np.int64)


class Pmap:
    """PPN -> backing for one VM.

    Args:
        n_ppns: the VM's configured memory in 4 KiB pages.
        n_frames: machine frames of the host (MPNs are below it); ``mpn`` is
            int32 while they fit, which is any host under 8 TiB.
    """

    def __init__(self, n_ppns: int, n_frames: int = 2**31 - 1):
        self.n_ppns = n_ppns
        self.state = np.zeros(n_ppns, dtype=np.uint8)
        self.mpn = np.full(n_ppns, -1, dtype=index_dtype(n_frames))
        # Pages per state, kept at the transitions (module docs).
        self.counts = np.zeros(N_STATES, dtype=np.int64)
        self.counts[Backing.UNBACKED] = n_ppns

    def set_state(self, ppns: np.ndarray, state: Backing) -> None:
        """Put the distinct pages ``ppns`` (indices, not a mask) in ``state``."""
        if ppns.size == 0:
            return
        assign_counted(self.state, self.counts, ppns, np.uint8(state))

    def moved(self, n_pages: int, old: Backing, new: Backing) -> None:
        """Count ``n_pages`` a kernel moved from ``old`` to ``new`` in ``state`` itself."""
        self.counts[old] -= n_pages
        self.counts[new] += n_pages

    def back(self, ppns: np.ndarray, mpns: np.ndarray, state: Backing = Backing.PRIVATE) -> None:
        """Record that the distinct ``ppns`` are now backed by ``mpns``."""
        self.mpn[ppns] = mpns
        self.set_state(ppns, state)

    def unback(self, ppns: np.ndarray, state: Backing = Backing.UNBACKED) -> np.ndarray:
        """Drop the machine pages of the distinct ``ppns``; returns the MPNs they had."""
        old = self.mpn[ppns].copy()
        self.mpn[ppns] = -1
        self.set_state(ppns, state)
        return old

    def backed(self) -> np.ndarray:
        """PPNs that have a machine page."""
        return np.flatnonzero(self.mpn >= 0)

    def count(self, state: Backing) -> int:
        """Pages in ``state`` (kept, not counted: see the module docs)."""
        return int(self.counts[state])

    def recount(self) -> np.ndarray:
        """Pages per state, counted over the whole map (what ``counts`` must equal)."""
        return counts_of(self.state, N_STATES)

    def pages_at_ranks(self, state: Backing, ranks: np.ndarray,
                       skip: np.ndarray = _NO_PAGES) -> np.ndarray:
        """The pages in ``state`` at ascending ``ranks`` in PPN order, without listing all.

        Equals ``np.flatnonzero(self.state == state)[ranks]`` with the pages of
        ``skip`` (ascending, distinct) left out of the list first; the scan
        stops at the last rank asked for.
        """
        words = self.state.size // 8
        return _pages_at_ranks(self.state, self.state[: words * 8].view(np.uint64),
                               np.uint8(state), ranks, skip)

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` if states, MPNs and counts disagree."""
        has_mpn = self.mpn >= 0
        should = (self.state == Backing.PRIVATE) | (self.state == Backing.SHARED)
        if not np.array_equal(has_mpn, should):
            ppn = int(np.flatnonzero(has_mpn != should)[0])
            raise InvariantViolation(
                f"pmap: ppn {ppn} is {Backing(self.state[ppn]).name} with mpn {self.mpn[ppn]}"
            )
        recount = self.recount()
        if not np.array_equal(recount, self.counts):
            raise InvariantViolation(f"pmap: kept counts per state {self.counts.tolist()}, "
                                     f"recounted {recount.tolist()}")


_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_ONES = np.uint64(0x0101010101010101)
_SEVEN = np.uint64(7)
_TOP_BYTE = np.uint64(56)


@njit(cache=True, nogil=True)
def _bytes_equal(word, value):
    """How many of ``word``'s 8 bytes equal ``value`` (exact: no carry between bytes)."""
    x = word ^ (_ONES * np.uint64(value))
    zero_high = ~(((x & _LOW7) + _LOW7) | x | _LOW7)  # the high bit of each zero byte
    return np.int64(((zero_high >> _SEVEN) * _ONES) >> _TOP_BYTE)


@njit(cache=True, nogil=True)
def _pages_at_ranks(state, words, value, ranks, skip):
    """``flatnonzero(state == value)`` without ``skip`` (ascending), at ascending ``ranks``.

    One partial scan, ending at the last rank. ``words`` is ``state``'s whole
    8-page words as uint64: a word holding no page of the next rank wanted
    and none to skip is counted whole (its pages in ``value``) and passed over,
    so a scan costs a few operations per 8 pages, not a branch per page.
    """
    out = np.empty(ranks.size, dtype=np.int64)
    if ranks.size == 0:
        return out
    k = 0
    seen = 0
    want = ranks[0]
    j = 0  # the next page of ``skip`` not behind the scan
    n_words = words.size
    for w in range(n_words + 1):
        base = w * 8
        end = min(base + 8, state.size)
        if w < n_words:
            c = _bytes_equal(words[w], value)
            if c == 0:
                continue
            while j < skip.size and skip[j] < base:
                j += 1
            if seen + c <= want and (j == skip.size or skip[j] >= end):
                seen += c  # no rank wanted here and nothing to skip: count it whole
                continue
        for p in range(base, end):
            if state[p] == value:
                while j < skip.size and skip[j] < p:
                    j += 1
                if j < skip.size and skip[j] == p:
                    continue
                while seen == want:
                    out[k] = p
                    k += 1
                    if k == ranks.size:
                        return out
                    want = ranks[k]
                seen += 1
    return out[:k]
