"""Random draws of the aggregate model: a SplitMix64 stream per host, binomials from it.

Each host of a batch has its own 64-bit state (``core/mix.py``'s SplitMix64),
so a host's run is the same whichever hosts it is batched with, and a seed's
run the same on any machine. Binomials of small mean (under 12) are drawn by
inversion (O(mean) steps), larger ones by the normal approximation, rounded
and clipped to [0, n]: at a mean of 12 the approximation's error in each
probability is under 2 %, far below the seed-to-seed spread it stands for.

Every draw is compiled inline into its caller (``inline="always"``: a call
would pass each array as a dozen scalars). The kernels of ``kernel.py`` and
``reclaim.py`` so hold copies of them; ``hvmem/compile_cache.py`` keys the
compiled cache by every Numba source, so an edit here compiles them again.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from hvmem.core.mix import splitmix64_next


@njit(cache=True, inline="always")
def _uniform(rng, h):
    s, z = splitmix64_next(rng[h])
    rng[h] = s
    return (z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def binomial(rng, h, n, p):
    """A Binomial(n, p) draw from host ``h``'s stream.

    The empty draws, most of a tick's calls, are answered where they are made
    (inlined): they cost a function call each, more than all the real draws.
    """
    if n <= 0 or p <= 0.0:
        return 0
    return _binomial(rng, h, n, p)


@njit(cache=True, inline="always")
def _binomial(rng, h, n, p):
    if p >= 1.0:
        return n
    flip = p > 0.5
    q = 1.0 - p if flip else p
    mean = n * q
    if mean < 12.0:  # inversion: O(mean) steps
        r = q / (1.0 - q)
        prob = (1.0 - q) ** n
        u = _uniform(rng, h)
        k = 0
        while u > prob and k < n:
            u -= prob
            prob *= r * (n - k) / (k + 1)
            k += 1
    else:
        u1 = max(_uniform(rng, h), 1e-300)
        u2 = _uniform(rng, h)
        z = math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
        k = int(math.floor(mean + z * math.sqrt(mean * (1.0 - q)) + 0.5))
        k = min(max(k, 0), n)
    return n - k if flip else k


@njit(cache=True, inline="always")
def part(rng, h, left, ms, rest):
    """Of ``left`` pages drawn from ``rest``, how many come from a part of ``ms`` of them.

    A binomial draw kept within what the part holds and what the parts after
    it can still give (the sequential form of a multivariate hypergeometric).
    """
    if ms >= rest:
        return min(left, ms)
    k = min(ms, binomial(rng, h, left, ms / rest))
    return max(k, left - (rest - ms))


@njit(cache=True, inline="always")
def stochastic_round(rng, h, x):
    """``x`` as a whole number, rounded up with the chance of its fraction."""
    f = math.floor(x)
    return int(f) + (1 if _uniform(rng, h) < x - f else 0)
