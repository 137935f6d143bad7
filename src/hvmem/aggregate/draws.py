"""Random draws of the aggregate model: a SplitMix64 stream per host, binomials from it.

Each host of a batch has its own 64-bit state (``core/mix.py``'s SplitMix64),
so a host's run is the same whichever hosts it is batched with, and a seed's
run the same on any machine. Binomials of small mean (under 12) are drawn by
inversion (O(mean) steps), larger ones by the normal approximation, rounded
and clipped to [0, n]: at a mean of 12 the approximation's error in each
probability is under 2 %, far below the seed-to-seed spread it stands for.
An inversion that draws none, most of the small ones, is told so by a
bound of the chance of none (``_none_bound``) before any power is taken.
The normal deviate is one uniform through the inverse normal distribution
function [ACKLAM03]: 14 ns a draw, where Box-Muller's two uniforms,
logarithm, root and cosine took 30.

Every draw is compiled inline into its caller (``inline="always"``: a call
would pass each array as a dozen scalars). The kernels of ``kernel.py``,
``reclaim.py`` and ``guest_paging.py`` so hold copies of them; ``hvmem/compile_cache.py`` keys the
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
    A real draw takes one uniform, drawn here, and the rest is a call with
    scalars only (``_binomial``). Inlined at every one of the kernel's
    call sites (a hundred-odd once its callers are inlined in turn), the
    draw made the aggregate kernel take 199 s of CPU to compile on a fresh
    cache, against 78 s with it inlined only where most draws are made
    (:func:`binomial_inline`).
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    return _binomial(_uniform(rng, h), n, p)


@njit(cache=True, inline="always")
def binomial_inline(rng, h, n, p):
    """:func:`binomial` with the whole draw inlined, for the call sites that draw most.

    The touch draws and the sharing scanner make about 600 of a fleet
    host-tick's 800 real draws; the call a draw costs there was 7 % of the
    fleet's kernel.
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    return _draw(_uniform(rng, h), n, p)


@njit(cache=True)
def _binomial(u, n, p):
    """:func:`_draw`, compiled once: what :func:`binomial` calls."""
    return _draw(u, n, p)


@njit(cache=True, inline="always")
def _draw(u, n, p):
    """Binomial(n, p), ``0 < p < 1``, from one uniform ``u``: by inversion, or normal."""
    flip = p > 0.5
    q = 1.0 - p if flip else p
    mean = n * q
    if mean < 12.0:  # inversion: O(mean) steps
        if u < _none_bound(n, q):  # none drawn, known without the power
            return n if flip else 0
        r = q / (1.0 - q)
        prob = (1.0 - q) ** n
        k = 0
        while u > prob and k < n:
            u -= prob
            prob *= r * (n - k) / (k + 1)
            k += 1
    else:
        z = _std_normal(u)
        k = int(math.floor(mean + z * math.sqrt(mean * (1.0 - q)) + 0.5))
        k = min(max(k, 0), n)
    return n - k if flip else k


@njit(cache=True, inline="always")
def _none_bound(n, q):
    """A lower bound of ``(1 - q) ** n``, the chance that none is drawn, without a power.

    Bonferroni's inequality for ``n`` independent chances ``q``: P(none) is at
    least ``1 - S1 + S2 - S3``, ``Sk = C(n, k) q^k``. An inversion whose uniform
    falls below it draws none, as it would against the power itself, so the
    draw is the same, and needs no power: at a mean of 0.8, 43 % of draws (of
    the 45 % that draw none); at 0.1, 90 %. The
    bound is lowered by 1e-12, far more than the few ulps of rounding in it and
    in the power, so that a uniform between the two never decides. It is
    taken of the chance the power sees, ``1 - (1 - q)`` (exact), not of ``q``:
    the two differ by up to half an ulp of 1, which ``n`` times over (at
    ``n = 10**7``, ``q = 1e-16``) is more than the margin.
    """
    q = 1.0 - (1.0 - q)
    x = n * q
    fn = float(n)
    s2 = x * (fn - 1.0) * q * 0.5
    s3 = s2 * (fn - 2.0) * q * (1.0 / 3.0)
    return 1.0 - x + s2 - s3 - 1e-12


# Acklam's rational approximations of the inverse normal distribution function
# (relative error under 1.2e-9) [ACKLAM03]: the central region's numerator and
# denominator, and the tails'.
_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
      1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
      6.680131188771972e+01, -1.328068155288572e+01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
      -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
      3.754408661907416e+00)
_P_LOW = 0.02425  # below it (and above 1 - it), the tails' approximation


@njit(cache=True, inline="always")
def _std_normal(u):
    """A standard normal deviate of the uniform ``u``: the inverse distribution function.

    Nineteen draws in twenty fall in the central region, a ratio of two
    polynomials; the tails take a logarithm and a root.
    """
    u = max(u, 1e-300)
    if _P_LOW <= u <= 1.0 - _P_LOW:
        x = u - 0.5
        r = x * x
        return ((((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]) * x
                / (((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0))
    t = math.sqrt(-2.0 * math.log(min(u, 1.0 - u)))
    z = ((((((_C[0] * t + _C[1]) * t + _C[2]) * t + _C[3]) * t + _C[4]) * t + _C[5])
         / ((((_D[0] * t + _D[1]) * t + _D[2]) * t + _D[3]) * t + 1.0))
    return z if u < 0.5 else -z


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
