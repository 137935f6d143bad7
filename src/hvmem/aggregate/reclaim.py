"""Reclaim at aggregate fidelity: the host's (share, compress, swap) and the guest's own.

The same steps as page fidelity's reclaim paths, over the masses of
``kernel.py`` (``m[h, v, c, s]``: pages of VM ``v``'s row ``c`` in backing
state ``s``), split out of the kernel's tick so each reads on its own:

* host reclaim of a VM's private pages (``_reclaim``): victims by the host's
  selection, random (each row in proportion, drawn without replacement by
  ``part``) or LRU (the guest's free list, then the coldest classes); with
  share-before-swap, zero victims join the zero page first; the rest go to
  the compression cache while it has room (``Mem.MemZipMaxPct``), then to
  the swap file (``_evict_private``). ``swap_to_target`` drives it towards a
  VM's swap target (and, between plans, refills only what was touched back
  in), ``make_room`` takes a tick's frames the host lacks from its largest
  consumer, ``hold_to_cap`` a VM over its limit from itself.
* the guest's side: its free list (``_take_free``, backed pages first, as
  its LIFO list hands out the pages it freed last), Linux's watermarks
  (``_ensure_free``: below low, reclaim to high) and guest reclaim of the
  coldest classes to its swap, equally cold classes in proportion
  (``_guest_reclaim``, ``_gswap_out``), a sweep's blocks in the order its
  cursor passed them (``_reclaim_sweep``); with ``reclaim_policy = "random"``
  every class gives in proportion to what it holds, whatever its heat.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

import math

from numba import njit

from hvmem.aggregate.draws import binomial, part
from hvmem.aggregate.image_share import image_match, promote_hints
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout)


@njit(cache=True, inline="always")
def _nc(vm, h, v):
    """Rows VM ``v`` uses (its classes; the rest of the axis is padding)."""
    return int(vm[h, v, V_NCLASS])


@njit(cache=True, inline="always")
def _used_frames(m, vm, h, v):
    """Frames VM ``v`` holds privately: its kernel, private pages and compression cache."""
    used = vm[h, v, V_KERNEL] + vm[h, v, V_CACHE_FRAMES]
    for c in range(_nc(vm, h, v)):
        used += _private(m, h, v, c)
    return used


@njit(cache=True, inline="always")
def _private(m, h, v, c):
    """Row ``c``'s pages the VM holds in frames of its own (written or zero-filled)."""
    return m[h, v, c, PRIV] + m[h, v, c, FILL]


@njit(cache=True, inline="always")
def _swap_out(m, vm, cnt, host, heat, rng, h, v, k, lru, compress):
    """Host reclaim of ``k`` of VM ``v``'s private pages, without sharing; the number taken."""
    # Without sharing no victim's content is read: ``heat`` stands in for the kinds.
    return _reclaim(m, heat, vm, cnt, host, heat, rng, h, v, k, lru, compress, False)


@njit(cache=True, inline="always")
def _evict_private(m, vm, cnt, rng, h, v, c, t, compress, filled=-1):
    """``t`` private pages of row ``c`` to the compression cache or the swap file.

    ``filled`` of them zero-filled (-1: drawn, the victims being any of the row's).
    """
    if t <= 0:
        return 0
    z = 0
    if compress:  # the cache's frames are capped (Mem.MemZipMaxPct), not its pages
        room = (vm[h, v, V_CACHE_MAX] - vm[h, v, V_CACHE_FRAMES]) / vm[h, v, V_FRAME_FRAC]
        if room > 0:
            z = min(binomial(rng, h, t, vm[h, v, V_COMP_FRAC]), int(room))
    if filled < 0:
        filled = part(rng, h, t, m[h, v, c, FILL], _private(m, h, v, c))
    m[h, v, c, FILL] -= filled
    m[h, v, c, PRIV] -= t - filled
    m[h, v, c, ZIP] += z
    m[h, v, c, SWP] += t - z
    vm[h, v, V_CACHE_FRAMES] += z * vm[h, v, V_FRAME_FRAC]
    cnt[h, v, K_ZIP] += z
    cnt[h, v, K_SWAP_OUT] += t - z
    return t


@njit(cache=True, inline="always")
def _swap_kernel(m, vm, cnt, h, v, t):
    """``t`` pages of the guest kernel's memory to the swap file; the number taken.

    The kernel's memory (``V_KERNEL`` pages, its page-frame structures) is the
    guest's own data, written at boot and never touched again by the
    workload: incompressible, shared with nothing, a random victim like any
    private page (page fidelity's ``choose_victims`` draws over all of them).
    Swapped, it stays swapped: ``m[KERNEL_ROW, SWP]``, which every reading of
    a VM's swapped pages sums with the rest.
    """
    vm[h, v, V_KERNEL] -= t
    m[h, v, KERNEL_ROW, SWP] += t
    cnt[h, v, K_SWAP_OUT] += t
    return t


@njit(cache=True)
def _reclaim(m, ck, vm, cnt, host, heat, rng, h, v, k, lru, compress, share):
    """Host reclaim of ``k`` of VM ``v``'s private pages: shared, compressed or swapped.

    Victims by the host's selection: random (each row's private pages in
    proportion, the guest's free list and its kernel's memory included) or
    LRU (the kernel's memory, the free list, then the coldest classes
    first); the number taken is returned.

    With ``share`` (share-before-swap), page fidelity offers the pages it reclaims to
    the sharing table first (``reclaimer.reclaim``) [OSDI02 §4.3]: a victim shares if
    the table holds its content already. A zero page always finds it (every VM has zero
    pages, and the first one hashed is a hint for the rest), whether the workload wrote
    the zeroes or the guest filled the page at its first read (``FILL``). An image
    victim shares where another VM holds the same page shared or hashed
    (``image_share.py``).
    """
    n_c = _nc(vm, h, v)
    kernel = int(vm[h, v, V_KERNEL])
    total = kernel
    for c in range(n_c):
        total += _private(m, h, v, c)
    k = min(k, total)
    if k <= 0:
        return 0
    taken = 0
    cache = vm[h, v, V_CACHE_FRAMES]
    left, rest = k, total
    p_shared, p_any = image_match(vm, h, v) if share else (0.0, 0.0)
    joined = 0
    for j in range(n_c):
        if lru:  # the kernel's pages, touched at boot only, are the least recently used
            c = KERNEL_ROW if j == 0 else FREE_ROW if j == 1 else heat[h, v, j - 2]
            if c < 0:
                break
            t = min(k - taken, kernel if c == KERNEL_ROW else _private(m, h, v, c))
        else:
            c = j
            mc = kernel if c == KERNEL_ROW else _private(m, h, v, c)
            if mc <= 0:
                continue
            t = part(rng, h, left, mc, rest)
            left -= t
            rest -= mc
        if t > 0 and c == KERNEL_ROW:
            taken += _swap_kernel(m, vm, cnt, h, v, t)
        elif t > 0 and not share:
            taken += _evict_private(m, vm, cnt, rng, h, v, c, t, compress)
        elif t > 0:
            # Zero-filled victims are zero pages: they always find the zero page.
            z = part(rng, h, t, m[h, v, c, FILL], _private(m, h, v, c))
            m[h, v, c, FILL] -= z
            s = t - z if ck[h, v, c] == 0 else 0  # written zeroes
            if ck[h, v, c] == 1 and p_any > 0.0:  # image pages another VM's copy matches
                s = binomial(rng, h, min(t - z, m[h, v, c, PRIV]), p_any)
                m[h, v, c, PRIV] -= s
                m[h, v, c, SHR] += s
                joined += s
                taken += s
                t -= s
                s = 0
            m[h, v, c, PRIV] -= s
            m[h, v, c, ZERO] += z + s
            taken += z + s + _evict_private(m, vm, cnt, rng, h, v, c, t - z - s, compress, 0)
        if taken >= k or (not lru and (left <= 0 or rest <= 0)):
            break
    promote_hints(m, ck, vm, rng, h, v, joined, p_shared, p_any)
    # A compressed victim's frame is free, less its share of the cache's frames.
    host[h, H_FREE] += taken - (vm[h, v, V_CACHE_FRAMES] - cache)
    return taken


@njit(cache=True, inline="always")
def _unzip(m, vm, cnt, host, h, v, n):
    """``n`` pages leave the compression cache (its frames shrink in proportion)."""
    if n <= 0:
        return
    cnt[h, v, K_UNZIP] += n
    _shrink_cache(vm, host, h, v, n)


@njit(cache=True, inline="always")
def _shrink_cache(vm, host, h, v, n):
    """``n`` pages out of the compression cache: the frames it no longer needs are free.

    The host's free count follows every frame the cache gives back at once, as
    page fidelity's frame table does, so that ``make_room`` later in the tick
    sees the frames there are (``settle`` counts the same at the tick's end).
    """
    before = vm[h, v, V_CACHE_FRAMES]
    after = max(0.0, before - n * vm[h, v, V_FRAME_FRAC])
    vm[h, v, V_CACHE_FRAMES] = after
    host[h, H_FREE] += before - after


@njit(cache=True, inline="always")
def _frames(m, vm, cnt, host, heat, rng, h, v, n, lru):
    """``n`` frames for VM ``v`` off the host's free list (``make_room`` settles a debt)."""
    if n > 0:
        host[h, H_FREE] -= n


@njit(cache=True)
def make_room(m, vm, cnt, host, heat, rng, h, lru):
    """Free frames short: swap the largest consumers' private pages until none is owed.

    The synchronous swap behind ESX's LOW state (``Host.make_room``), run once a
    VM's touches of the tick are served rather than at each frame.
    """
    n_v = m.shape[1]
    for _ in range(n_v):
        if host[h, H_FREE] >= 0:
            break
        need = int(math.ceil(-host[h, H_FREE]))
        best, best_used = -1, 0.0
        for u in range(n_v):
            if vm[h, u, V_ON] > 0:
                used = _used_frames(m, vm, h, u)
                if used > best_used:
                    best, best_used = u, used
        if best < 0:
            break
        if _swap_out(m, vm, cnt, host, heat, rng, h, best, need, lru, False) == 0:
            break


@njit(cache=True)
def hold_to_cap(m, vm, cnt, host, heat, rng, h, v, lru):
    """A VM with a limit (``V_CAP`` pages, 0: none) holding more swaps its own pages back to it.

    What a VM holds is what the limit caps in page fidelity
    (``reclaimer.held_pages``): its private and shared pages (the kernel's
    among them) and its compression cache's frames. Victims by the host's
    selection, swapped, never compressed (``reclaimer.hold_to_cap``): a VM
    never holds more machine memory than its limit, whatever the host's
    state [VS-ALLOC]. Run once the VM's touches of the tick are served, so
    the pages it touched may be among them (page fidelity spares those).
    """
    cap = vm[h, v, V_CAP]
    if cap <= 0:
        return 0
    held = _used_frames(m, vm, h, v)
    for c in range(_nc(vm, h, v)):
        held += m[h, v, c, SHR] + m[h, v, c, ZERO]
    over = int(math.ceil(held - cap))
    if over <= 0:
        return 0
    return _swap_out(m, vm, cnt, host, heat, rng, h, v, over, lru, False)


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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

    For the workload, each is written: a shared one is copied, a compressed or
    swapped one brought back, an unbacked one given a frame. For the balloon,
    each one's backing is released.
    """
    got = 0
    for s in (PRIV, FILL, ZERO, SHR, ZIP, SWP, NEVER):
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
                stall[h, v, S_OTHER] += k * costs[C_HYP_FAULT]
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


@njit(cache=True)
def swap_to_target(m, ck, vm, cnt, host, heat, rng, h, v, refill, lru):
    """Share, compress or swap VM ``v``'s pages up to its swap target; pages taken.

    ``refill``: between plans, only pages touched back in are replaced, at
    most ``host[H_REFILL]`` a tick (``SimulatedBackend.swap_to_target``).
    Shared victims add nothing to what is held, so the next plan asks for
    them again, as at page fidelity.
    """
    returned = cnt[h, v, K_SWAP_IN] + cnt[h, v, K_UNZIP]
    refilled = min(int(returned - vm[h, v, V_RETURNED_SEEN]), int(host[h, H_REFILL]))
    vm[h, v, V_RETURNED_SEEN] = returned
    if refill and refilled <= 0:  # nothing touched back in: what is held need not be counted
        return 0
    held = 0
    for c in range(_nc(vm, h, v)):
        held += m[h, v, c, SWP] + m[h, v, c, ZIP]
    want = int(vm[h, v, V_SWAP_TARGET] * PAGES_PER_MIB) - held
    if refill:
        want = min(want, refilled)
    if want <= 0:
        return 0
    state = int(host[h, H_STATE])
    compress = (vm[h, v, V_COMPRESS] > 0 and host[h, H_ZIP_OK + state] > 0
                and host[h, H_ZIP_ON] > 0)
    return _reclaim(m, ck, vm, cnt, host, heat, rng, h, v, want, lru, compress,
                    host[h, H_SHARE_ON] > 0)
