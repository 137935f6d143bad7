"""Oldest-first victims, for FIFO (by load stamp) and LRU (by use stamp).

FIFO and LRU evict the candidates least by (age, page number): ``age`` is the
stamp of when a page was loaded (FIFO) or last used (LRU), and the page number
breaks ties so the choice is deterministic. Linux keeps LRU lists for this;
hvmem keeps only per-page stamps (``base.py``), so the order has to be found in
the arrays.

Selection
---------
Stamps are small integers (one per distinct simulated time), so the k least
are found by counting rather than by comparing: one pass makes a histogram of
the candidates' ages, which gives the threshold age ``T`` with fewer than k
pages below it and at least k at or below; a second pass writes every page
below ``T`` straight to its place in (age, page) order (each age's run starts
where the histogram's prefix sum says) and takes the pages of age ``T`` in page
order until k are chosen. No sort, no heap, two branch-light passes over the
arrays. When the stamps span more values than a histogram should hold (a very
long run at a fine tick), ages are bucketed by a shift and the chosen pages
sorted; the result is the same.

Keeping the choice
------------------
A guest under pressure reclaims every tick (a balloon inflating, a workload
growing), and each reclaim takes a few thousand pages of a million. Scanning a
million pages for each is most of the cost, so :class:`OldestFirst`, when told
the current stamp, selects more than asked, hands out the oldest, and keeps
the rest in order with the ages they had. On the next call it keeps those
kept pages whose age and kind have not changed, and if enough remain they are
exactly the oldest pages now. The reason: at selection every other candidate
was later in (age, page) order than the last page kept; ages never go back (a
page is stamped with the current stamp when it is loaded or used, and stamps
only grow); and a page that becomes a candidate is loaded at that moment, so
it is stamped then. As long as the last kept page's age is below the stamp
current at selection, every page stamped afterwards comes after it; so the
selection keeps only its pages older than that stamp. A page
that was evicted and loaded again has a new, larger age, so it no longer
matches what was kept. A change of which kinds are candidates (the guest's
anonymous pages become candidates once there is swap space again) is the one
thing that can add older pages: the kept selection is dropped then. A user
that cannot promise those rules (the host: pages become private without a
touch) passes no stamp, and nothing is kept. A call checks the kept pages
only until it has one more unchanged than it hands out; the rest wait for a
later call, which is the same choice since a changed page never matches again.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.replacement.base import NO_PAGES, candidates

#: Ages are counted exactly, one histogram bin per stamp, up to this many bins.
EXACT_BINS = 1 << 16

#: A selection keeps at least this many pages (or four reclaims' worth) beyond
#: what was asked for, so most reclaims under steady pressure reuse it.
KEEP_MIN_PAGES = 32_768
KEEP_RECLAIMS = 4


@njit(cache=True, nogil=True)
def least_pages(kinds, age, evictable, max_age, out):
    """The candidates least by (age, page), in that order, into ``out``.

    A page is a candidate when ``evictable[kinds[page]]``. Fills
    ``out[:min(total, out.size)]`` and returns ``total``, the number of
    candidates. Every age must lie in ``0..max_age``.
    """
    k = out.size
    shift = 0
    while (max_age >> shift) >= EXACT_BINS:
        shift += 1
    hist = np.zeros((max_age >> shift) + 1, dtype=np.int64)
    total = 0
    # Counted without a branch: candidates and others mix page by page (free,
    # ballooned and table pages among a guest's own), which a branch mispredicts.
    for p in range(kinds.size):
        e = np.int64(evictable[kinds[p]])
        hist[age[p] >> shift] += e
        total += e
    n = min(k, total)
    if n == 0:
        return total
    # The threshold bin t: fewer than n pages below it, at least n up to it.
    below = 0
    t = 0
    while below + hist[t] < n:
        below += hist[t]
        t += 1
    need = n - below  # pages of bin t to take
    # Each lower bin's pages go after all pages of the bins below it.
    start = np.empty(t, dtype=np.int64)
    acc = 0
    for b in range(t):
        start[b] = acc
        acc += hist[b]
    tie = np.empty(hist[t] if shift else 0, dtype=np.int64)
    n_tie = 0
    taken = 0
    for p in range(kinds.size):
        # The age first: most pages are younger than the threshold, so the
        # branch predicts well and their kind is never looked up.
        b = age[p] >> shift
        if b > t or not evictable[kinds[p]]:
            continue
        if b < t:
            out[start[b]] = p
            start[b] += 1
        else:
            if shift:
                tie[n_tie] = p
                n_tie += 1
            elif taken < need:  # one age: the first by PPN
                out[below + taken] = p
                taken += 1
    if shift:
        # A bin holds several ages: order each bin's pages (in PPN order now)
        # stably by age, and take the least of the threshold bin.
        lo = 0
        for b in range(t):
            hi = lo + hist[b]
            if hi - lo > 1:
                seg = out[lo:hi].copy()
                out[lo:hi] = seg[np.argsort(age[seg], kind="mergesort")]
            lo = hi
        order = np.argsort(age[tie], kind="mergesort")
        out[below:n] = tie[order[:need]]
    return total


@njit(cache=True, nogil=True)
def _keep_unchanged(pages, ages, kinds, age, evictable, n_want):
    """The first ``n_want`` kept pages still at the age kept, moved up against the rest.

    Looks only as far as it must: the pages past the ``n_want``-th unchanged
    one are checked on a later call (a page that has changed never matches
    again, see the module notes). Returns the index the unchanged ones now
    start at, pages before it dropped; -1 if fewer than ``n_want`` are left.
    """
    found = 0
    i = 0
    while i < pages.size and found < n_want:
        p = pages[i]
        if age[p] == ages[i] and evictable[kinds[p]]:
            found += 1
        i += 1
    if found < n_want:
        return -1
    # Compacted from the back, so they end where the unchecked rest begins.
    w = i
    for j in range(i - 1, -1, -1):
        p = pages[j]
        if age[p] == ages[j] and evictable[kinds[p]]:
            w -= 1
            pages[w] = p
            ages[w] = ages[j]
    return w


class OldestFirst:
    """The oldest candidates, for one memory's FIFO or LRU victims.

    Holds a selection between calls when given the current stamp (see the
    module notes): the pages beyond those handed out, in (age, page) order,
    with their ages.
    """

    __slots__ = ("_pages", "_ages", "_evictable", "builds", "reuses")

    def __init__(self) -> None:
        self._pages = np.zeros(0, dtype=np.int32)
        self._ages = np.zeros(0, dtype=np.int32)
        self._evictable: np.ndarray | None = None  # the rules the kept pages were chosen by
        self.builds = 0  # selections made by scanning every page
        self.reuses = 0  # calls served from a kept selection

    def choose(self, kinds: np.ndarray, age: np.ndarray, evictable: np.ndarray, n_pages: int,
               now_stamp: int | None) -> np.ndarray | None:
        """The ``n_pages`` candidates least by (age, page), in that order.

        ``now_stamp`` is the stamp of the current time (no age is larger), or
        None to keep nothing. Returns None when there are no more than
        ``n_pages`` candidates (the caller takes them all). The pages returned
        are taken out of the selection: the caller evicts them all, or calls
        :meth:`forget`.
        """
        if self._evictable is not None and self._pages.size > n_pages \
                and np.array_equal(self._evictable, evictable):
            # More than asked still unchanged: the candidates are more too.
            start = _keep_unchanged(self._pages, self._ages, kinds, age, evictable, n_pages + 1)
            if start >= 0:
                self._pages, self._ages = self._pages[start:], self._ages[start:]
                self.reuses += 1
                return self._hand_out(n_pages)
        self.builds += 1
        want = n_pages
        if now_stamp is not None:
            want += max(KEEP_MIN_PAGES, KEEP_RECLAIMS * n_pages)
        out = np.empty(want, dtype=np.int64)
        # The current stamp bounds every age: no pass over the stamps to find the largest.
        max_age = now_stamp if now_stamp is not None else int(age.max()) if age.size else 0
        total = least_pages(kinds, age, evictable, max_age, out)
        if total <= n_pages:
            self.forget()
            return None
        out = out[:min(total, want)]
        chosen = out[:n_pages].copy()
        if now_stamp is None:
            self.forget()
            return chosen
        # Pages stamped later this same time could come before a kept page of
        # the current stamp (same age, lower page number): only older ones are
        # kept. The ages are in order, so they are a prefix.
        ages = age[out]
        older = int(np.searchsorted(ages, now_stamp))
        if older <= n_pages:
            self.forget()
            return chosen
        # Kept as int32 (page numbers of one guest fit), 8 bytes a page with the age.
        self._pages = out[n_pages:older].astype(np.int32)
        self._ages = ages[n_pages:older]
        self._evictable = evictable.copy()
        return chosen

    def _hand_out(self, n_pages: int) -> np.ndarray:
        chosen = self._pages[:n_pages].astype(np.int64)
        self._pages, self._ages = self._pages[n_pages:], self._ages[n_pages:]
        return chosen

    def forget(self) -> None:
        """Drop the kept selection (pages handed out were not all evicted)."""
        self._pages = self._pages[:0]
        self._ages = self._ages[:0]
        self._evictable = None


def oldest_victims(oldest: OldestFirst, age: np.ndarray, n_pages: int, kinds: np.ndarray,
                   evictable: np.ndarray, now_stamp: int | None) -> np.ndarray:
    """The ``n_pages`` candidates least by (age, page); all of them, in page order, if no more."""
    if n_pages <= 0:
        return NO_PAGES
    chosen = oldest.choose(kinds, age, evictable, n_pages, now_stamp)
    return candidates(kinds, evictable) if chosen is None else chosen
