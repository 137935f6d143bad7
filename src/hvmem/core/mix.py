"""SplitMix64: the 64-bit generator and mixer behind hvmem's random bits and hashes.

SplitMix64 advances a 64-bit state by a fixed odd increment, the *golden gamma*
(2**64 divided by the golden ratio, rounded to odd), and passes the new state
through a finaliser: two xor-shift-multiply rounds and a last xor-shift
(Stafford's "variant 13" constants). The finaliser alone is a bijection on
64-bit words in which every input bit affects every output bit, so it also
serves as a hash::

    state' = state + GOLDEN_GAMMA
    z      = state'
    z      = (z ^ (z >> 30)) * MIX_M1
    z      = (z ^ (z >> 27)) * MIX_M2
    bits   = z ^ (z >> 31)                  (mix64)

Who uses what: the samplers of the synthetic workloads draw from the generator
(:func:`splitmix64_next`, seeded from a NumPy stream), as does the random
replacement policy of ``hvmem paging``; content tokens, the sharing table's
content hash and file-page tokens are :func:`mix64` of salted inputs; the
golden gamma alone is the multiplier of Fibonacci hashing (multiply, keep the
top bits) in the page-number hash tables of trace replay and ``hvmem paging``.
One definition keeps them all the same function, so a token hashed by the
guest and by the host agrees bit for bit.

Both functions are Numba functions compiled with ``inline="always"``: a kernel
that calls them gets the arithmetic in place, as if written there, so they cost
nothing over a hand-written copy. Arguments are ``np.uint64`` (scalars in
kernels; :func:`mix64` also takes a ``uint64`` array from Python); arithmetic
wraps modulo 2**64.

Reference: G. Steele, D. Lea and C. Flood, "Fast Splittable Pseudorandom
Number Generators", OOPSLA 2014 (SplitMix64); D. Stafford, "Better Bit
Mixing", 2011 (the mixer's constants).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["GOLDEN_GAMMA", "MIX_M1", "MIX_M2", "mix64", "splitmix64_next"]

#: 2**64 / golden ratio, rounded to odd: SplitMix64's increment, and the
#: multiplier of Fibonacci hashing.
GOLDEN_GAMMA = np.uint64(0x9E37_79B9_7F4A_7C15)
#: The finaliser's two multipliers (Stafford's variant 13).
MIX_M1 = np.uint64(0xBF58_476D_1CE4_E5B9)
MIX_M2 = np.uint64(0x94D0_49BB_1331_11EB)

_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)


@njit(cache=True, inline="always")
def mix64(z):
    """SplitMix64's finaliser: a bijective 64-bit mixer (a hash of ``z``)."""
    z = (z ^ (z >> _S30)) * MIX_M1
    z = (z ^ (z >> _S27)) * MIX_M2
    return z ^ (z >> _S31)


@njit(cache=True, inline="always")
def splitmix64_next(state):
    """One SplitMix64 step: (the advanced state, 64 random bits)."""
    state = state + GOLDEN_GAMMA
    return state, mix64(state)
