"""Host reclaim at aggregate fidelity: sharing, compression and swapping.

The same steps as page fidelity's host reclaim paths, over the masses of
``kernel.py`` (``m[h, v, c, s]``: pages of VM ``v``'s row ``c`` in backing
state ``s``), split out of the kernel's tick so each reads on its own:
host reclaim of a VM's private pages (``_reclaim``): victims by the host's
selection, random (each row in proportion, drawn without replacement by
``part``) or LRU (the guest's free list, then the coldest classes); with
share-before-swap, zero victims join the zero page first; the rest go to
the compression cache while it has room (``Mem.MemZipMaxPct``), then to
the swap file (``_evict_private``). ``swap_to_target`` drives it towards a
VM's swap target (and, between plans, refills only what was touched back
in), ``make_room`` takes a tick's frames the host lacks from its largest
consumer, ``hold_to_cap`` a VM over its limit from itself. The guest's own
paging is in ``guest_paging.py``.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

import math

from numba import njit

from hvmem.aggregate.draws import binomial, part
from hvmem.aggregate.image_share import hinted_frac, image_match, promote_hints
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
    if c >= FIRST_CLASS:  # the hints its private pages held go with them (image_share.py)
        vm[h, v, V_PRIV_LEFT] += t
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


@njit(cache=True, _nrt=False)
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
    if vm[h, v, V_LARGE_FRAC] > 0.0:
        _break_for(vm, host, h, v, k, share)
    taken = 0
    cache = vm[h, v, V_CACHE_FRAMES]
    left, rest = k, total
    p_shared, p_any = image_match(vm, h, v) if share else (0.0, 0.0)
    # A hinted victim meets its own hint: only unhashed ones can share.
    p_join = p_any * (1.0 - hinted_frac(m, ck, vm, h, v)) if p_any > 0.0 else 0.0
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
                s = binomial(rng, h, min(t - z, m[h, v, c, PRIV]), p_join)
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
def _break_for(vm, host, h, v, k, share):
    """The host large pages that ``k`` victims of VM ``v`` break (``reclaimer.reclaim``).

    A large page is never swapped or compressed whole: a victim in one splits
    it first, as many as the free frames have table pages for
    (``break_covering(bounded=True)``), and with ``share`` (share-before-swap)
    its sub-pages the scanner had hashed are offered to sharing with the
    victims [KB1021095] (at the scanner's next pass, ``V_LP_OFFER``); the
    others wait for the scanner to come round to them as small pages. Victims
    spread over the VM's memory (random selection, and LRU's coldest classes
    lie anywhere in it): of ``P`` pages, a region holds none of ``k`` with
    chance ``(1 - k/P)^512``, so a reclaim of a sixth of a VM breaks all its
    large pages at once (``idle-tax``'s idle VM at 65 s, at page fidelity),
    where active breaking from CLEAR down takes 64 a second.
    """
    pages = vm[h, v, V_PAGES]
    if pages <= 0:
        return
    large = vm[h, v, V_LARGE_FRAC]
    hit = large * (1.0 - (1.0 - min(1.0, k / pages)) ** LARGE_PAGE_PAGES)
    room = max(0.0, host[h, H_FREE] - LARGE_PAGE_SPLIT_RESERVE) * LARGE_PAGE_PAGES / pages
    broken = min(hit, room)
    if broken <= 0.0:
        return
    vm[h, v, V_LARGE_FRAC] = large - broken
    if share:
        vm[h, v, V_LP_OFFER] += broken * vm[h, v, V_LP_HASHED]
    if large - broken <= 0.0:
        vm[h, v, V_LP_HASHED] = 0.0


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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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
