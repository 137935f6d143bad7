"""Synthetic reference streams.

Zipf popularity
---------------
Real programs touch a few pages very often and most pages rarely. The Zipf
model gives the page of popularity rank ``k`` (1-based) the probability
``k**-alpha / H(n, alpha)`` over ``n`` pages; ``alpha`` near 1 is the classic
web and file-popularity skew, larger values concentrate references further.
Ranks are assigned to pages by a seeded random permutation, so hot pages are
scattered over the address space as in a real heap, not packed at its start.

Draws use the inverse CDF: one uniform number per reference and a binary search
in the precomputed cumulative weights (``numpy.searchsorted``), which stays
fast for millions of references; ``numpy.random.Generator.zipf`` is unbounded
and far slower per draw.

Every generator takes a ``numpy.random.Generator``: pass a named stream from
``core.rng.RngStreams`` so runs are reproducible.

References: Breslau et al., "Web Caching and Zipf-like Distributions", INFOCOM 1999.
"""

from __future__ import annotations

import numpy as np

from hvmem.errors import ConfigError


def zipf_cdf(n_pages: int, alpha: float) -> np.ndarray:
    """Cumulative Zipf weights over ranks 1..n_pages (last element exactly 1)."""
    if n_pages <= 0:
        raise ConfigError(f"zipf: the page count must be positive, found {n_pages}")
    if not alpha >= 0:
        raise ConfigError(f"zipf: alpha must be >= 0, found {alpha}")
    weights = np.arange(1, n_pages + 1, dtype=np.float64) ** -alpha
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf[-1] = 1.0
    return cdf


def zipf_pages(rng: np.random.Generator, n_pages: int, n_refs: int, alpha: float,
               first_page: int = 0) -> np.ndarray:
    """``n_refs`` page numbers in ``first_page .. first_page + n_pages - 1``, Zipf-popular.

    Args:
        rng: the random stream to draw from.
        n_pages: pages in the region.
        n_refs: references to draw.
        alpha: the skew (0 is uniform).
        first_page: page number of the region's first page.

    Returns:
        int64 page numbers.
    """
    cdf = zipf_cdf(n_pages, alpha)
    ranks = np.searchsorted(cdf, rng.random(n_refs), side="right")
    np.minimum(ranks, n_pages - 1, out=ranks)
    page_of_rank = rng.permutation(n_pages).astype(np.int64)
    return page_of_rank[ranks] + first_page
