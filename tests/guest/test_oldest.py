"""Oldest-first victims: the same pages, in the same order, as sorting every page would give."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.guest.pages import PageKind
from hvmem.replacement import oldest as oldest_module
from hvmem.replacement.oldest import EXACT_BINS, OldestFirst, least_pages


def evictable(evict_anon):
    """The guest's table: file pages, and anonymous ones while there is swap."""
    table = np.zeros(len(PageKind), np.bool_)
    table[PageKind.FILE] = True
    table[PageKind.ANON] = evict_anon
    return table


def reference(kinds, age, evict_anon, n_pages):
    """The evictable pages least by (age, PPN), by a full sort."""
    mask = (kinds == PageKind.FILE) | ((kinds == PageKind.ANON) & evict_anon)
    pages = np.flatnonzero(mask)
    return pages[np.lexsort((pages, age[pages]))][:n_pages], pages.size


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), k=st.integers(0, 450),
       max_age=st.sampled_from([0, 3, 50, EXACT_BINS - 1, EXACT_BINS, 5 * EXACT_BINS + 7,
                                2**31 - 1]),
       evict_anon=st.booleans())
def test_least_pages_is_a_sort(seed, n, k, max_age, evict_anon):
    # Few distinct ages make ties (broken by PPN); a wide range takes the bucketed path.
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 5, n).astype(np.uint8)
    age = rng.integers(0, max_age, n, endpoint=True).astype(np.int32)
    out = np.full(k, -1, dtype=np.int64)
    total = least_pages(kinds, age, evictable(evict_anon), max_age, out)
    want, n_evictable = reference(kinds, age, evict_anon, k)
    assert total == n_evictable
    np.testing.assert_array_equal(out[:want.size], want)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 3000),
       steps=st.lists(st.tuples(st.sampled_from(["tick", "touch", "map", "reclaim", "partial",
                                                 "swap_full", "swap_free", "unmap"]),
                                st.integers(0, 2000)), max_size=60),
       keep_min=st.sampled_from([0, 5, 64, oldest_module.KEEP_MIN_PAGES]))
def test_kept_selection_matches_a_fresh_sort(seed, n, steps, keep_min):
    """Under the kernel's rules (stamps only grow, a page mapped is stamped), every
    reclaim served from a kept selection is what a full sort would choose."""
    saved = oldest_module.KEEP_MIN_PAGES
    oldest_module.KEEP_MIN_PAGES = keep_min  # small: pages beyond the kept ones exist
    try:
        _run_steps(seed, n, steps)
    finally:
        oldest_module.KEEP_MIN_PAGES = saved


def _run_steps(seed, n, steps):
    rng = np.random.default_rng(seed)
    kinds = rng.choice(np.array([0, 1, 2, 3, 4], np.uint8), n, p=[0.2, 0.5, 0.2, 0.05, 0.05])
    stamp = 5
    age = rng.integers(0, stamp, n, endpoint=True).astype(np.int32)
    oldest = OldestFirst()
    evict_anon = True
    for op, x in steps:
        if op == "tick":
            stamp += 1 + x % 3
        elif op == "touch":  # used pages get the current stamp
            used = rng.choice(n, min(n, x), replace=False)
            used = used[(kinds[used] == PageKind.ANON) | (kinds[used] == PageKind.FILE)]
            age[used] = stamp
        elif op == "map":  # free pages mapped now
            free = np.flatnonzero(kinds == PageKind.FREE)[: x]
            kinds[free] = rng.choice(np.array([1, 2], np.uint8), free.size)
            age[free] = stamp
        elif op in ("reclaim", "partial"):
            k = 1 + x % 300
            got = oldest.choose(kinds, age, evictable(evict_anon), k, stamp)
            want, n_evictable = reference(kinds, age, evict_anon, k)
            if n_evictable <= k:
                assert got is None
                continue
            np.testing.assert_array_equal(got, want)
            if op == "partial":  # the caller keeps some of them: it says so
                kinds[got[: got.size // 2]] = PageKind.FREE
                oldest.forget()
            else:
                kinds[got] = PageKind.FREE
        elif op == "unmap":  # pages freed by munmap keep their old stamps
            kinds[rng.choice(n, min(n, x), replace=False)] = PageKind.FREE
        elif op == "swap_full":
            evict_anon = False
        else:
            evict_anon = True


def test_a_kept_selection_serves_later_reclaims_without_a_scan():
    n = 100_000
    kinds = np.full(n, PageKind.ANON, dtype=np.uint8)
    age = np.arange(n, dtype=np.int32) % 1000
    oldest = OldestFirst()
    for _ in range(5):
        got = oldest.choose(kinds, age, evictable(True), 100, 2000)
        want, _ = reference(kinds, age, True, 100)
        np.testing.assert_array_equal(got, want)
        kinds[got] = PageKind.FREE
    assert (oldest.builds, oldest.reuses) == (1, 4)


def test_pages_used_since_the_selection_leave_it():
    n = 1000
    kinds = np.full(n, PageKind.ANON, dtype=np.uint8)
    age = (np.arange(n) % 50).astype(np.int32)
    oldest = OldestFirst()
    kinds[oldest.choose(kinds, age, evictable(True), 10, 60)] = PageKind.FREE
    age[::7] = 61  # used at the next stamp
    got = oldest.choose(kinds, age, evictable(True), 10, 61)
    np.testing.assert_array_equal(got, reference(kinds, age, True, 10)[0])
    assert oldest.reuses == 1
    assert not np.any(age[got] == 61)


def test_a_selection_reaching_the_current_stamp_is_not_kept():
    # The oldest page was used at the current stamp: a page used later at the same
    # stamp, with a lower PPN, would come first; so nothing is kept.
    n = 50_000
    kinds = np.full(n, PageKind.ANON, dtype=np.uint8)
    age = np.full(n, 7, dtype=np.int32)
    oldest = OldestFirst()
    got = oldest.choose(kinds, age, evictable(True), 10, 7)
    np.testing.assert_array_equal(got, np.arange(10))
    kinds[got] = PageKind.FREE
    oldest.choose(kinds, age, evictable(True), 10, 7)
    assert (oldest.builds, oldest.reuses) == (2, 0)
