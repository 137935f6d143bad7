"""A per-page code array with how many pages hold each code, kept as it changes.

The guest's page kinds and the pmap's backing states are small codes stored
one byte a page. Callers ask how many pages hold a code far more often than
the pages change: the balloon asks for the guest's page cache at every poll,
the host for each VM's private pages at every emergency swap. Counting the
whole array each time made those questions cost as much as the work itself;
:func:`assign_counted` instead moves each changed page's count from its old
code to its new one, at the cost of reading the old code it overwrites.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def counts_of(codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Pages holding each code, counted over the whole array (what kept counts must equal)."""
    return np.bincount(codes, minlength=n_codes).astype(np.int64)


@njit(cache=True, nogil=True)
def assign_counted(codes, counts, pages, new):
    """``codes[pages] = new``, each page's count moved from its old code to ``new``.

    Exact with repeated pages too: a repeat reads the ``new`` it just wrote.
    """
    for i in range(pages.size):
        p = pages[i]
        counts[codes[p]] -= 1
        codes[p] = new
    counts[new] += pages.size
