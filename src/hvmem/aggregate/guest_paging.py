"""The guest's own paging at aggregate fidelity: its free list and its swap.

Over the masses of ``kernel.py`` (``m[h, v, c, s]``), as page fidelity's
guest does it (``guest/``): its free list (``_take_free``, backed pages
first, as its LIFO list hands out the pages it freed last), Linux's
watermarks (``_ensure_free``: below low, reclaim to high) and guest reclaim
of the coldest classes to its swap, equally cold classes in proportion
(``_guest_reclaim``, ``_gswap_out``), a sweep's blocks in the order its
cursor passed them (``_reclaim_sweep``, ``_sweep_in_order``); with
``reclaim_policy = "random"`` every class gives in proportion to what it
holds, whatever its heat. A page the host had compressed or swapped is
brought back before the guest writes it out (double paging), which takes
frames through the host's reclaim (``reclaim.py``).

Which of a class's pages an LRU guest swapped out (``lru_split``). A class
holds pages of different heat (a Zipf block's ranks span eightfold), and
LRU evicts the page untouched longest, so the pages it has out are the
class's colder ones, and touches find fewer of them than the class's mean
chance says. With independent touches, LRU keeps a page whose last touch
is under a characteristic age ``T`` ago and has evicted the others (Che's
approximation [CHE02]): of pages touched each tick with chance ``p_j``,
``(1 - p_j)^T`` are out. Over the class's sub-blocks (``classes.py``, their
touch chances and page shares ``n_j``), ``T`` is where
``sum_j n_j (1 - p_j)^T`` is the class's share out, and the pages out are
touched with chance ``sum_j n_j (1 - p_j)^T p_j / sum_j n_j (1 - p_j)^T``;
those kept, with what is left of the class's mean. In ``sharing``'s Zipf
phase (its coldest block, ranks 32,768 on, 20 % out) the pages out are
touched at 0.171 a tick against the block's mean 0.202: on seed 1 at
page fidelity, with 175.6 MiB of each guest swapped out, its guests swap
in 7,704 pages a second, where the block's mean gives 9,090 and the
sub-blocks 7,775.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

import math

from numba import njit

from hvmem.aggregate.draws import part, stochastic_round
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout)
from hvmem.aggregate.reclaim import _frames, _nc, _shrink_cache, _unzip


@njit(cache=True, _nrt=False)
def lru_split(ft, h, v, c, p, out):
    """(out, kept): touch chances of class ``c``'s pages an LRU guest swapped out and kept.

    ``p`` is the class's mean chance, ``out`` its touched pages' share in the
    guest's swap. ``ft[h, v, c, FT_PROB:]`` are its sub-blocks' chances and
    ``ft[h, v, c, FT_PAGES:]`` their page shares (``layout.py``). ``T`` by
    Newton's method on ``f(T) = sum_j n_j (1 - p_j)^T``, convex and falling:
    the first step lands at or below the root, and from there the steps
    climb to it. It starts from the class's ``T`` of its last solve, kept in
    ``ft[h, v, c, FT_AGE]`` (0: none since the phase began, and it starts from
    the mean chance's ``log(out) / log(1 - p)``): the share out moves little
    from one tick to the next, so fewer steps reach the tolerance (3.3 a
    solve against 4.1 from a cold start, 32 hosts over 10 minutes). Each
    sub-block's ``log(1 - p_j)`` is worked out at the class's first solve of
    a phase and kept in ``ft[h, v, c, FT_LOG:]``, so a step takes only
    ``exp``.
    """
    lo, hi = 1.0, 0.0
    for j in range(FT_BINS):
        if ft[h, v, c, FT_PAGES + j] > 0.0:
            lo = min(lo, ft[h, v, c, FT_PROB + j])
            hi = max(hi, ft[h, v, c, FT_PROB + j])
    if hi <= lo or out <= 0.0 or out >= 1.0 or p >= 1.0:
        return p, p  # pages alike (or all of them out): heat does not tell them apart
    for j in range(FT_BINS):
        p_j = ft[h, v, c, FT_PROB + j]
        if ft[h, v, c, FT_LOG + j] == 0.0 and 0.0 < p_j < 1.0:
            ft[h, v, c, FT_LOG + j] = math.log1p(-p_j)
    age = ft[h, v, c, FT_AGE]
    if age <= 0.0:
        age = math.log(out) / math.log1p(-p)
    for _ in range(20):
        f = df = 0.0
        for j in range(FT_BINS):
            if ft[h, v, c, FT_PAGES + j] > 0.0 and ft[h, v, c, FT_PROB + j] < 1.0:
                lq = ft[h, v, c, FT_LOG + j]
                x = ft[h, v, c, FT_PAGES + j] * math.exp(age * lq)
                f += x
                df += x * lq
        if df >= 0.0:
            break
        step = (f - out) / df
        age = max(0.0, age - step)
        if abs(step) <= 1e-9 * (1.0 + age):
            break
    ft[h, v, c, FT_AGE] = age
    num = den = 0.0
    for j in range(FT_BINS):
        if ft[h, v, c, FT_PAGES + j] > 0.0 and ft[h, v, c, FT_PROB + j] < 1.0:
            x = ft[h, v, c, FT_PAGES + j] * math.exp(age * ft[h, v, c, FT_LOG + j])
            num += x * ft[h, v, c, FT_PROB + j]
            den += x
    if den <= 0.0:
        return p, p
    p_out = num / den
    return p_out, min(1.0, max(0.0, (p - out * p_out) / (1.0 - out)))


@njit(cache=True, _nrt=False)
def _guest_reclaim(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, n, lru):
    """The guest swaps out ``n`` resident pages, coldest classes first; the number freed.

    Classes equally cold (the same touch probability, or the same block of a
    sweep: a heat block's zero, image and private pages) give pages in
    proportion to what they hold, as the guest's LRU lists know nothing of
    contents. A page the host had compressed or swapped is read back first
    (double paging); the others keep their backing on the guest's free list.
    """
    room = int(vm[h, v, V_GSWAP_CAP])
    used = 0
    for c in range(FIRST_CLASS, _nc(vm, h, v)):
        used += m[h, v, c, GSWP]
    n = min(n, room - used)
    freed = 0
    n_c = _nc(vm, h, v)
    j = 0
    while j < n_c and freed < n:
        c0 = heat[h, v, j]
        if c0 < 0:
            break
        if slo[h, v, c0] >= 0.0 and vm[h, v, V_GUEST_RANDOM] <= 0:
            z = j + 1  # a sweep's blocks, all as cold by pace, follow one another in heat
            while z < n_c and heat[h, v, z] >= 0 and slo[h, v, heat[h, v, z]] >= 0.0:
                z += 1
            freed += _reclaim_sweep(m, slo, vm, cnt, host, heat, rng, costs, stall, h, v,
                                    j, z, n - freed, lru)
            j = z
            continue
        # The run of equally cold classes that starts here (random victims: all of them).
        z = j + 1
        while (z < n_c and heat[h, v, z] >= 0 and (vm[h, v, V_GUEST_RANDOM] > 0 or (
                tp[h, v, heat[h, v, z]] == tp[h, v, c0]
                and slo[h, v, heat[h, v, z]] == slo[h, v, c0]))):
            z += 1
        rest = 0
        for i in range(j, z):
            rest += _resident(m, h, v, heat[h, v, i])
        left = min(n - freed, rest)
        for i in range(j, z):
            c = heat[h, v, i]
            r = _resident(m, h, v, c)
            t = part(rng, h, left, r, rest) if left > 0 else 0
            left -= t
            rest -= r
            if t > 0:
                freed += _gswap_out(m, vm, cnt, host, heat, rng, costs, stall, h, v, c, t, lru)
        j = z
    cnt[h, v, K_GSWAP_OUT] += freed
    return freed


@njit(cache=True, _nrt=False)
def _reclaim_sweep(m, slo, vm, cnt, host, heat, rng, costs, stall, h, v, j, z, n, lru):
    """An LRU guest's reclaim of ``n`` pages of a sweep's blocks (``heat[j:z]``); pages freed.

    The least recently used pages of a sweep are those its cursor passed
    longest ago: the ones just ahead of it, which it reaches next. So the
    guest takes, in order, the pages of the cursor's block still ahead of it
    (all but those it passed this sweep, which it has just touched), the
    blocks that follow in the order the cursor reaches them, and last the
    pages of its block behind it; a block's zero, image and private classes
    in proportion. ``_touch_vm`` takes a block's swapped-out pages first, the
    cursor reaching them first. A sweep larger than the guest's memory then
    faults on every page it reaches, as LRU does under any cyclic sweep
    larger than memory; taking the blocks in proportion would leave most of
    it resident.

    The blocks tile the sweep (``classes.py``), so a block ends where the next
    begins; the cursor's block is the one whose span holds ``V_SCAN_POS``.
    Heat lists a sweep's classes in block order (``model.py`` sorts them
    stably by pace, all equal), and then ``_sweep_in_order`` takes the same
    pages with the same draws in one pass over them; the search below, a pass
    per block, serves any other order.
    """
    for i in range(j + 1, z):
        if slo[h, v, heat[h, v, i]] < slo[h, v, heat[h, v, i - 1]]:
            break
    else:
        return _sweep_in_order(m, slo, vm, cnt, host, heat, rng, costs, stall, h, v, j, z,
                               n, lru)
    pos = vm[h, v, V_SCAN_POS]
    length = vm[h, v, V_SCAN_LEN]
    cur, end = -1.0, length
    for i in range(j, z):
        lo = slo[h, v, heat[h, v, i]]
        if cur < lo <= pos:
            cur = lo
    for i in range(j, z):
        lo = slo[h, v, heat[h, v, i]]
        if cur < lo < end:
            end = lo
    passed = (pos - cur) / (end - cur) if cur >= 0.0 else 0.0
    freed = 0
    # The cursor's block ahead of it: what it holds beyond the pages passed this sweep.
    rest = 0
    for i in range(j, z):
        c = heat[h, v, i]
        if slo[h, v, c] == cur:
            rest += max(0, _resident(m, h, v, c) - int(passed * _mass(m, h, v, c)))
    left = min(n, rest)
    for i in range(j, z):
        c = heat[h, v, i]
        if slo[h, v, c] != cur or left <= 0:
            continue
        r = max(0, _resident(m, h, v, c) - int(passed * _mass(m, h, v, c)))
        t = part(rng, h, left, r, rest)
        left -= t
        rest -= r
        if t > 0:
            freed += _gswap_out(m, vm, cnt, host, heat, rng, costs, stall, h, v, c, t, lru)
    # Then block by block in the cursor's order, its own block's pages behind it last.
    after = -1.0
    for _ in range(z - j + 1):
        if freed >= n:
            break
        lo, key = -1.0, 2.0 * length
        for i in range(j, z):
            s = slo[h, v, heat[h, v, i]]
            d = (s - pos) % length if s != cur else length
            if after < d < key:
                lo, key = s, d
        if lo < 0.0:
            break
        after = key
        rest = 0
        for i in range(j, z):
            c = heat[h, v, i]
            if slo[h, v, c] == lo:
                rest += _resident(m, h, v, c)
        left = min(n - freed, rest)
        for i in range(j, z):
            c = heat[h, v, i]
            if slo[h, v, c] != lo or left <= 0:
                continue
            r = _resident(m, h, v, c)
            t = part(rng, h, left, r, rest)
            left -= t
            rest -= r
            if t > 0:
                freed += _gswap_out(m, vm, cnt, host, heat, rng, costs, stall, h, v, c, t,
                                    lru)
    return freed


@njit(cache=True, _nrt=False)
def _sweep_in_order(m, slo, vm, cnt, host, heat, rng, costs, stall, h, v, j, z, n, lru):
    """``_reclaim_sweep`` over classes ``heat[j:z]`` listed in block order; pages freed.

    A block is a run of equal starts. The cursor's block (the last starting
    at or before ``V_SCAN_POS``) gives its pages ahead of the cursor first;
    then the blocks after it, wrapping round to the first, and the cursor's
    block last: the order of their distance ahead of the cursor that
    ``_reclaim_sweep``'s search finds. Each block's classes in heat order, as
    there, so the draws are the same.
    """
    pos = vm[h, v, V_SCAN_POS]
    length = vm[h, v, V_SCAN_LEN]
    # The cursor's block: heat[b0:b1] (b0 == b1: the cursor is before every block).
    b0 = b1 = j
    i = j
    while i < z and slo[h, v, heat[h, v, i]] <= pos:
        if slo[h, v, heat[h, v, i]] != slo[h, v, heat[h, v, b0]]:
            b0 = i
        i += 1
    b1 = i
    cur = slo[h, v, heat[h, v, b0]] if b1 > j else -1.0
    if b1 == j:
        b0 = j
    end = slo[h, v, heat[h, v, b1]] if b1 < z else length
    passed = (pos - cur) / (end - cur) if cur >= 0.0 else 0.0
    freed = 0
    rest = 0
    for i in range(b0, b1):
        c = heat[h, v, i]
        rest += max(0, _resident(m, h, v, c) - int(passed * _mass(m, h, v, c)))
    left = min(n, rest)
    for i in range(b0, b1):
        if left <= 0:
            break
        c = heat[h, v, i]
        r = max(0, _resident(m, h, v, c) - int(passed * _mass(m, h, v, c)))
        t = part(rng, h, left, r, rest)
        left -= t
        rest -= r
        if t > 0:
            freed += _gswap_out(m, vm, cnt, host, heat, rng, costs, stall, h, v, c, t, lru)
    # The blocks from the cursor's next one on, wrapping round, the cursor's own last.
    i = b1
    for lap in range(2):
        stop = z if lap == 0 else b1
        if lap == 1:
            i = j
        while i < stop and freed < n:
            k0 = i
            lo = slo[h, v, heat[h, v, i]]
            rest = 0
            while i < stop and slo[h, v, heat[h, v, i]] == lo:
                rest += _resident(m, h, v, heat[h, v, i])
                i += 1
            left = min(n - freed, rest)
            for x in range(k0, i):
                if left <= 0:
                    break
                c = heat[h, v, x]
                r = _resident(m, h, v, c)
                t = part(rng, h, left, r, rest)
                left -= t
                rest -= r
                if t > 0:
                    freed += _gswap_out(m, vm, cnt, host, heat, rng, costs, stall, h, v, c, t,
                                        lru)
    return freed


@njit(cache=True, inline="always")
def _mass(m, h, v, c):
    """Row ``c``'s pages in every state."""
    mass = 0
    for s in range(N_STATES):
        mass += m[h, v, c, s]
    return mass


@njit(cache=True, inline="always")
def _resident(m, h, v, c):
    """Row ``c``'s pages in guest memory (backed by the host or not)."""
    return (m[h, v, c, PRIV] + m[h, v, c, SHR] + m[h, v, c, ZERO] + m[h, v, c, ZIP]
            + m[h, v, c, SWP] + m[h, v, c, FILL])


@njit(cache=True, inline="always")
def _gswap_out(m, vm, cnt, host, heat, rng, costs, stall, h, v, c, t, lru):
    """``t`` of row ``c``'s resident pages to the guest's swap; the number freed."""
    left, rest = t, _resident(m, h, v, c)
    for s in (PRIV, SHR, ZERO, ZIP, SWP, FILL):
        ms = m[h, v, c, s]
        if ms <= 0 or left <= 0:
            rest -= ms
            continue
        k = part(rng, h, left, ms, rest)
        m[h, v, c, s] -= k
        m[h, v, c, GSWP] += k
        if s in (PRIV, FILL):  # its frame is reused: any hint it was goes (image_share.py)
            vm[h, v, V_PRIV_LEFT] += k
        if s in (ZIP, SWP):  # double paging: the host brings it back to be written
            m[h, v, FREE_ROW, PRIV] += k
            _frames(m, vm, cnt, host, heat, rng, h, v, k, lru)
            if s == ZIP:
                _unzip(m, vm, cnt, host, h, v, k)
                stall[h, v, S_DECOMPRESS] += k * costs[C_DECOMPRESS]
            else:
                cnt[h, v, K_SWAP_IN] += k
                stall[h, v, S_SWAP_IN] += k * host[h, H_SWAP_NS]
        else:
            m[h, v, FREE_ROW, s] += k
        left -= k
        rest -= ms
    return t - left


@njit(cache=True, inline="always")
def _free_pages(m, h, v):
    f = 0
    for s in range(N_STATES):
        f += m[h, v, FREE_ROW, s]
    return f


@njit(cache=True, inline="always")
def _take_free(m, vm, cnt, host, heat, rng, costs, stall, h, v, n, for_balloon, lru):
    """``n`` pages off the guest's free list, backed ones first; returns how many.

    The list is a stack (``guest/allocator.py``): what it hands out next is
    what the guest freed last, its reclaim's victims, private, zero-filled,
    zero-shared and shared pages mixed as reclaim took them. So those four
    come off in proportion to what the list holds of each, not one state
    before another: each state's share of the pages taken, rounded up or
    down at random by its fraction (one uniform, where a binomial draw cost
    5 % of the fleet's kernel for the same 16-seed validation). Taking the
    private ones first gave the workload the pages that need no frame and
    the balloon those that free one; on ``sharing``'s seeds 1 to 8 the
    seeds then split between two outcomes (6 to 17 s in HARD, 53 to 142 MiB
    swapped in a VM, where page fidelity's seeds all give 15 to 18 s and
    100 to 123 MiB), and in proportion they give 9 to 10 s and 70 to 77
    MiB. Below them lie the pages the host compressed or swapped while they
    sat free, and at the bottom those never used since boot.

    For the workload, each is written: a shared one is copied, a compressed or
    swapped one brought back, an unbacked one given a frame. For the balloon,
    each one's backing is released.
    """
    got = 0
    # The pages freed last, as many as there are of them and as asked for, by state: each
    # state's share, within what it holds and what the states after it can still give.
    backed = (m[h, v, FREE_ROW, PRIV] + m[h, v, FREE_ROW, FILL] + m[h, v, FREE_ROW, ZERO]
              + m[h, v, FREE_ROW, SHR])
    mix = min(n, backed)
    rest = backed
    for s in (PRIV, FILL, ZERO, SHR, ZIP, SWP, NEVER):
        if s in (PRIV, FILL, ZERO, SHR):
            ms = m[h, v, FREE_ROW, s]
            k = 0
            if ms >= rest:
                k = min(mix, ms)
            elif ms > 0 and mix > 0:
                k = max(min(ms, stochastic_round(rng, h, mix * ms / rest)), mix - (rest - ms))
            mix -= k
            rest -= ms
        else:
            k = min(n - got, m[h, v, FREE_ROW, s])
        if k <= 0:
            continue
        m[h, v, FREE_ROW, s] -= k
        got += k
        if for_balloon:
            if s in (PRIV, FILL):
                host[h, H_FREE] += k
            elif s == ZIP:
                _shrink_cache(vm, host, h, v, k)
        elif s not in (PRIV, FILL):
            _frames(m, vm, cnt, host, heat, rng, h, v, k, lru)
            if s in (ZERO, SHR):
                stall[h, v, S_COW] += k * costs[C_COW]
            elif s == ZIP:
                _unzip(m, vm, cnt, host, h, v, k)
                stall[h, v, S_DECOMPRESS] += k * costs[C_DECOMPRESS]
            elif s == SWP:
                cnt[h, v, K_SWAP_IN] += k
                stall[h, v, S_SWAP_IN] += k * host[h, H_SWAP_NS]
            else:
                stall[h, v, S_ZEROING] += k * costs[C_ZERO_PAGE]
                # One exit backs a whole large page (hypervisor/large_pages.py's
                # back_large): a 512th of one for each page first touched in them.
                exits = 1.0 - vm[h, v, V_LARGE_FRAC] * (1.0 - 1.0 / LARGE_PAGE_PAGES)
                stall[h, v, S_OTHER] += k * exits * costs[C_HYP_FAULT]
        if got >= n:
            break
    return got


@njit(cache=True, inline="always")
def _ensure_free(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, n, lru):
    """Linux's watermarks: below low after taking ``n``, reclaim up to high."""
    f = _free_pages(m, h, v)
    if f - n < vm[h, v, V_LOW]:
        want = int(n + vm[h, v, V_HIGH] - f)
        g = _guest_reclaim(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, want,
                           lru)
        stall[h, v, S_GUEST] += 0.0 * g  # writes are asynchronous: they stall no one
