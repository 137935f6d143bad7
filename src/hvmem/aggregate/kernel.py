"""One tick of many hosts at once: the aggregate model's Numba kernel.

What is modelled
----------------
Per host ``h``, VM ``v`` and class ``c`` the kernel holds ``m[h, v, c, s]``,
the pages in backing state ``s`` (below). Row 0 of the classes is the guest's
free list, row 1 its balloon, rows 2.. the workload's heat classes
(``aggregate/classes.py``); a workload page the guest never allocated is
``NEVER``, one the guest swapped out ``GSWP``: the guest state is the row and
those two states, the host state the rest. ``FILL`` is a private page that
still holds the zeroes the guest filled it with when the workload first read
it (demand-zero), until its first write. One tick, per VM, in ``sim.py``'s
order:

* touches: a random class's pages in each state are touched with the class's
  probability (binomial draws, so seeds vary as page fidelity's do), those
  never touched with that of the class's sub-blocks' pages still never
  touched (``_first_touch``, ``classes.py``); a sweep
  touches the pages its cursor passes, those never allocated first (then,
  for an LRU guest, those it swapped out: the oldest, just ahead of the
  cursor), and a block's share touched in a sampling period adds up. Touched
  ``NEVER`` and ``GSWP`` pages need guest pages: the guest takes them from its
  free list (backed ones first, as its LIFO list hands out the pages it freed
  last, their backing states in proportion), reclaiming the coldest classes'
  pages to its swap below its low watermark (to high, as Linux does),
  equally cold classes in proportion,
  once for all of the VM's touches of the tick, drawn first (``_touch_vm``;
  a guest with random victims class by class).
  Every touched page the host does not back (swapped, compressed, shared
  and written) is served: a frame, and the
  service's cost in the VM's stall; a frame the host lacks is made room for by
  swapping the largest consumer's private pages (``make_room``); a VM with a
  limit that now holds more swaps its own pages back to it (``hold_to_cap``).
* the balloon (each second): towards its target at vmw_balloon's rates, from
  the guest's free list (the guest reclaims to give it more); inflated pages
  free their frames.
* in HARD and LOW, the swapper replaces the pages touched back in
  (``SimulatedBackend.swap_to_target``), at most one per device operation;
  zero victims join the zero page first, image victims with the chance
  another VM's copy is shared or hashed (share-before-swap, ``image_share.py``).
* the sharing scanner: a share of each private page of zero content, and of
  each ``FILL`` page, the scan rate over the VM's memory, becomes shared, and
  of its image pages (shared across VMs) those whose copy in another VM is
  shared or hashed (``image_share.py``); with host large pages, only the
  pages of large pages broken once the host has left HIGH (``_share``).
* active-memory sampling: each class's chance of a touch since the period
  began; at each period's end a binomial sample of 100 pages of the touched
  share folds into the fast and slow averages.
* the host's free frames and memory state, with the tracker's hysteresis.

Random numbers: a stream per host (``draws.py``), so a host's run does not
depend on the hosts it is batched with.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.aggregate.balloon import deflate_on_oom
from hvmem.aggregate.draws import binomial, binomial_inline, part, stochastic_round
from hvmem.aggregate.guest_paging import (
    _ensure_free,
    _free_pages,
    _mass,
    _take_free,
    lru_split,
)
from hvmem.aggregate.image_share import (
    age_hints,
    hinted_frac,
    image_match,
    promote_hints,
)
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout; also read as k.NAME)
from hvmem.aggregate.reclaim import (
    _frames,
    _nc,
    _unzip,
    hold_to_cap,
    make_room,
    swap_to_target,
)
from hvmem.aggregate.settle import (  # noqa: F401  (also read as k.settle, ...)
    SETTLE_SCRATCH_ROWS,
    image_backed,
    settle,
    settle_tick,
)


@njit(cache=True, inline="always")
def _first_touch(ft, h, v, c, p):
    """A never-touched page's chance of its first touch this tick; its sub-blocks age.

    ``ft[h, v, c, FT_PROB:]`` are the class's sub-blocks' touch chances,
    ``ft[h, v, c, FT_NEVER:]`` their shares of its pages still never touched
    (``FT_BINS`` each, ``layout.py``): the mean chance is over those, and each
    share then keeps ``1 - p_j`` of itself (in expectation, renormalised), so
    the hotter sub-blocks' pages run out first.
    """
    num = den = 0.0
    for j in range(FT_BINS):
        num += ft[h, v, c, FT_NEVER + j] * ft[h, v, c, FT_PROB + j]
        den += ft[h, v, c, FT_NEVER + j]
    if den <= 0.0:
        return p
    left = 0.0
    for j in range(FT_BINS):
        ft[h, v, c, FT_NEVER + j] *= 1.0 - ft[h, v, c, FT_PROB + j]
        left += ft[h, v, c, FT_NEVER + j]
    if left > 0.0:
        for j in range(FT_BINS):
            ft[h, v, c, FT_NEVER + j] /= left
    return num / den


@njit(cache=True, inline="always")
def _touched(ft, h, v, c):
    """A random class's share touched since the sampling period began, after this tick.

    Summed over its sub-blocks (``classes.py``), each ``1 - (1 - q_j)(1 - p_j)``:
    a period's share touched of pages whose chances differ is below that of
    their mean chance (70 MiB of web's 803 over 60 s in ``demo``).
    """
    share = 0.0
    for j in range(FT_BINS):
        q_j = 1.0 - (1.0 - ft[h, v, c, FT_SEEN + j]) * (1.0 - ft[h, v, c, FT_PROB + j])
        ft[h, v, c, FT_SEEN + j] = q_j
        share += ft[h, v, c, FT_PAGES + j] * q_j
    return share


@njit(cache=True, inline="always")
def _touch_vm(m, tp, wp, slo, shi, q, ft, vm, cnt, host, heat, rng, costs, stall, h, v, lru,
              t, busy):
    """One tick of VM ``v``'s workload over its classes.

    First each class's touches are drawn (``t[c, s]``, the class's pages in
    state ``s`` touched) and those the guest or the host must serve are held
    aside; the classes with some are listed in ``busy``. Then the guest finds
    room for all of the tick's faults at once, as its kswapd does, woken below
    the low watermark and reclaiming to high while the tick's faults go on: the
    pages being faulted in are none of its victims, and an LRU guest's victims,
    its coldest pages, are not faulted back within the tick they left in (a
    guest with random victims makes room class by class instead, as the
    draws go, so that a later class may touch back what it took). Then each
    listed class is served, in class order; a class the free list cannot serve
    (the tick touched more than the guest holds) makes the guest reclaim
    again, from the pages served before it.
    """
    n_c = _nc(vm, h, v)
    rate = vm[h, v, V_SCAN_RATE]
    a = b = 0.0
    if rate > 0:
        a = vm[h, v, V_SCAN_POS]
        b = a + rate
        length = vm[h, v, V_SCAN_LEN]
        vm[h, v, V_SCAN_POS] = b % length
    n_busy = need_all = 0
    random_guest = vm[h, v, V_GUEST_RANDOM] > 0
    for c in range(FIRST_CLASS, n_c):
        # A class nothing touches this tick is passed over before its pages are counted.
        lo = slo[h, v, c]
        if (rate <= 0) if lo >= 0.0 else (tp[h, v, c] <= 0.0):
            continue
        cover = 0.0
        if lo >= 0.0:  # swept: the share of the class the cursor passes this tick
            hi = shi[h, v, c]
            length = vm[h, v, V_SCAN_LEN]
            # The window [a, b) wraps around the sweep's length.
            for off in (0.0, length):
                x0, x1 = max(a, lo + off), min(b, hi + off)
                if x1 > x0:
                    cover += x1 - x0
            if cover <= 0.0:  # most swept classes most ticks: before their pages are counted
                continue
        mass = _mass(m, h, v, c)
        if mass == 0:
            continue
        if lo < 0.0 and mass == m[h, v, c, PRIV]:
            # All backed and private: touches draw nothing to serve or move.
            q[h, v, c] = _touched(ft, h, v, c)
            continue
        t[c, :] = 0
        if lo >= 0.0:  # swept: the pages the cursor passes
            k = min(mass, stochastic_round(rng, h, cover * mass / (hi - lo)))
            # The cursor passes pages it has not passed yet this period: the shares
            # of a block it crosses add up, to all of it in a period with a whole sweep.
            q[h, v, c] = min(1.0, q[h, v, c] + cover / (hi - lo))
            t[c, NEVER] = min(k, m[h, v, c, NEVER])
            left = k - t[c, NEVER]
            rest = mass - m[h, v, c, NEVER]
            # An LRU guest swapped out the block's pages the cursor passed longest ago
            # (guest_paging.py, _reclaim_sweep): those just ahead of it, reached first.
            lru_guest = vm[h, v, V_GUEST_RANDOM] <= 0
            if lru_guest:
                t[c, GSWP] = min(left, m[h, v, c, GSWP])
                left -= t[c, GSWP]
                rest -= m[h, v, c, GSWP]
            for s in (PRIV, SHR, ZERO, ZIP, SWP, GSWP, FILL):
                if s == GSWP and lru_guest:
                    continue
                ms = m[h, v, c, s]
                if left <= 0 or rest <= 0:
                    break
                d = part(rng, h, left, ms, rest)
                t[c, s] = d
                left -= d
                rest -= ms
            w = wp[h, v, c]
            t[c, SHR] = binomial_inline(rng, h, t[c, SHR], w)
            t[c, ZERO] = binomial_inline(rng, h, t[c, ZERO], w)
            t[c, FILL] = binomial_inline(rng, h, t[c, FILL], w)
            t[c, PRIV] = 0
        else:
            p = tp[h, v, c]
            q[h, v, c] = _touched(ft, h, v, c)
            # An LRU guest has out the class's colder pages (guest_paging.lru_split).
            p_out = p_in = p
            gswp = m[h, v, c, GSWP]
            if gswp > 0 and vm[h, v, V_GUEST_RANDOM] <= 0:
                p_out, p_in = lru_split(ft, h, v, c, p, gswp / (mass - m[h, v, c, NEVER]))
            for s in (NEVER, ZIP, SWP, GSWP):
                ms = m[h, v, c, s]
                t[c, s] = binomial_inline(
                    rng, h, ms, p_out if s == GSWP else p_in if s != NEVER
                    else p if ms == 0 else _first_touch(ft, h, v, c, p))
            pw = p_in * wp[h, v, c]
            t[c, SHR] = binomial_inline(rng, h, m[h, v, c, SHR], pw)
            t[c, ZERO] = binomial_inline(rng, h, m[h, v, c, ZERO], pw)
            t[c, FILL] = binomial_inline(rng, h, m[h, v, c, FILL], pw)
        # A zero-filled page written holds its data now: private, nothing to serve.
        if t[c, FILL] > 0:
            m[h, v, c, FILL] -= t[c, FILL]
            m[h, v, c, PRIV] += t[c, FILL]
            t[c, FILL] = 0
        # Most classes most ticks touch no page the host must serve: nothing below to do.
        if t[c, NEVER] + t[c, ZIP] + t[c, SWP] + t[c, GSWP] + t[c, SHR] + t[c, ZERO] == 0:
            continue
        # Held aside while the guest finds room, so reclaim cannot take them.
        for s in (NEVER, SHR, ZERO, ZIP, SWP, GSWP):
            m[h, v, c, s] -= t[c, s]
        busy[n_busy] = c
        n_busy += 1
        need_all += t[c, NEVER] + t[c, GSWP]
        if random_guest:
            # Random victims: the guest's reclaim picks pages a later class then touches
            # back within the tick, as page fidelity's does, so each class is served
            # before the next class's touches are drawn.
            _fault_in(m, tp, wp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, lru, t,
                      busy, n_busy, need_all)
            n_busy = need_all = 0
    _fault_in(m, tp, wp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, lru, t, busy,
              n_busy, need_all)


@njit(cache=True, inline="always")
def _fault_in(m, tp, wp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, lru, t, busy,
              n_busy, need):
    """The guest makes room for ``need`` pages at once, then the listed classes are served."""
    if need > 0:
        _ensure_free(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, need, lru)
    for i in range(n_busy):
        _serve(m, tp, wp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, lru, t,
               busy[i])


@njit(cache=True, inline="always")
def _serve(m, tp, wp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, lru, t, c):
    """Class ``c``'s touches drawn into ``t[c]`` and held aside, served (``_touch_vm``)."""
    need = t[c, NEVER] + t[c, GSWP]
    got = need
    if need > 0:
        got = _take_free(m, vm, cnt, host, heat, rng, costs, stall, h, v, need, False, lru)
        if got < need:
            # The tick touched more than the guest holds beside its free list (a
            # working set larger than its memory): it reclaims again, now among the
            # pages the classes served before this one touched, and thrashes.
            _ensure_free(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v,
                         need - got, lru)
            got += _take_free(m, vm, cnt, host, heat, rng, costs, stall, h, v, need - got,
                              False, lru)
        if got < need:  # a call passes each array as a dozen scalars: only when short
            got += deflate_on_oom(m, vm, cnt, host, heat, rng, costs, stall, h, v,
                                  need - got, lru)
    # With deflate-on-OOM the balloon gives back what the guest lacks (balloon.py);
    # what it still could not place stays where it was (the guest would OOM-kill).
    short = need - got
    back_gswp = min(short, t[c, GSWP])
    back_never = short - back_gswp
    m[h, v, c, GSWP] += back_gswp
    m[h, v, c, NEVER] += back_never
    t[c, GSWP] -= back_gswp
    t[c, NEVER] -= back_never
    # The guest's fault, major (read back from its swap) or minor (guest/fault.py).
    stall[h, v, S_OTHER] += (t[c, NEVER] + t[c, GSWP]) * costs[C_GUEST_FAULT]
    stall[h, v, S_GUEST] += t[c, GSWP] * vm[h, v, V_GSWAP_NS]
    cnt[h, v, K_GSWAP_IN] += t[c, GSWP]
    served = t[c, SWP] + t[c, ZIP] + t[c, SHR] + t[c, ZERO]
    _frames(m, vm, cnt, host, heat, rng, h, v, served, lru)
    cnt[h, v, K_SWAP_IN] += t[c, SWP]
    swap_ns = t[c, SWP] * host[h, H_SWAP_NS]
    stall[h, v, S_SWAP_IN] += swap_ns
    _unzip(m, vm, cnt, host, h, v, t[c, ZIP])
    unzip_ns = t[c, ZIP] * costs[C_DECOMPRESS]
    stall[h, v, S_DECOMPRESS] += unzip_ns
    cnt[h, v, K_RECLAIM_STALL_NS] += swap_ns + unzip_ns
    stall[h, v, S_COW] += (t[c, SHR] + t[c, ZERO]) * costs[C_COW]
    # A page faulted in from nothing holds the zeroes the guest filled it with
    # (demand-zero) until its first write; one read back from swap, its data.
    zeroes = t[c, NEVER] - binomial(rng, h, t[c, NEVER], wp[h, v, c]) if t[c, NEVER] > 0 else 0
    m[h, v, c, FILL] += zeroes
    m[h, v, c, PRIV] += got + served - zeroes


@njit(cache=True, inline="always")
def _balloon(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, lru):
    """One poll of the balloon driver: towards the target at vmw_balloon's rates."""
    if vm[h, v, V_BAL_ON] <= 0:
        return
    size = m[h, v, BALLOON_ROW, BALL]
    target = int(min(vm[h, v, V_BAL_TARGET], vm[h, v, V_BAL_MAX]))
    moved = 0
    if target > size:
        got = _inflate(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v,
                       target - size, lru)
        m[h, v, BALLOON_ROW, BALL] += got
        moved = got
    elif target < size:
        k = min(size - target, RATE_FREE_MAX_PAGES)
        m[h, v, BALLOON_ROW, BALL] -= k
        m[h, v, FREE_ROW, NEVER] += k
        moved = k
    cnt[h, v, K_BALLOON_MOVED] += moved
    stall[h, v, S_OTHER] += moved * costs[C_BALLOON]


@njit(cache=True, inline="always")
def _inflate(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, wanted, lru):
    """vmw_balloon's allocation of ``wanted`` pages this poll; the pages it got.

    As page fidelity's driver (``guest/balloon_driver.py``): first the guest's
    free pages above its min watermark, without reclaim, up to 16,384 a poll;
    once they run short, for 4 polls, allocations that make the guest reclaim,
    at a rate that starts at 2,048 pages a poll, rises by 16 after a poll that
    got what it asked for and halves (down to 512) after one that did not. So
    a guest with free memory gives it at 64 MiB/s, one without at 8 MiB/s at
    most, paced by its own reclaim (vmw_balloon v1.2.1).
    """
    got = 0
    if vm[h, v, V_BAL_SLOW_LEFT] <= 0:
        spare = max(0, _free_pages(m, h, v) - int(vm[h, v, V_MIN]))
        n = min(wanted, NOSLEEP_ALLOC_MAX_PAGES, spare)
        if n > 0:
            got += _take_free(m, vm, cnt, host, heat, rng, costs, stall, h, v, n, True, lru)
        wanted -= n
        if wanted > 0:
            vm[h, v, V_BAL_SLOW_LEFT] = SLOW_CYCLES
    if wanted > 0 and vm[h, v, V_BAL_SLOW_LEFT] > 0:
        vm[h, v, V_BAL_SLOW_LEFT] -= 1
        n = min(wanted, int(vm[h, v, V_BAL_RATE]))
        _ensure_free(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, n, lru)
        # What a user allocation may take: half the min watermark stays the kernel's.
        room = max(0, min(n, _free_pages(m, h, v) - int(vm[h, v, V_MIN]) // 2 - 1))
        g = _take_free(m, vm, cnt, host, heat, rng, costs, stall, h, v, room, True, lru)
        got += g
        if g < n:
            vm[h, v, V_BAL_RATE] = max(RATE_ALLOC_MIN_PAGES, vm[h, v, V_BAL_RATE] // 2)
        else:
            vm[h, v, V_BAL_RATE] = min(RATE_ALLOC_MAX_PAGES,
                                       vm[h, v, V_BAL_RATE] + RATE_ALLOC_INC_PAGES)
    return got


@njit(cache=True, inline="always")
def _share(m, ck, vm, host, rng, h, v, scan, breaking):
    """The sharing scanner's pass over VM ``v`` this tick, and large pages broken for it.

    ``breaking``: 0 off (the scanner hashes large pages but shares none of
    them), 1 lazy (it breaks the large pages it visits), 2 active (besides,
    ``H_LP_BREAK`` pages of large pages are broken and offered at once)
    [YB-STATES6][YB-LP6]. ``V_LARGE_FRAC`` is the share of the VM's pages
    still in large pages, ``V_LP_HASHED`` the share of those the scanner has
    hashed while they were large (``lp_hashed`` at page fidelity).

    Lazily, one visited page breaks its whole 2 MiB region: of the large
    regions, ``1 - (1 - f)^512`` are visited when the scan covers ``f`` of
    the VM, as many as the free frames have table pages for
    (``break_covering(bounded=True)``). A broken region's hashed pages and
    its visited ones are offered at once; the others wait for the scanner
    to come round to them as small pages (``hypervisor/large_pages.py``).
    """
    pages = vm[h, v, V_PAGES]
    if pages <= 0:
        return
    large = vm[h, v, V_LARGE_FRAC]
    f = min(1.0, vm[h, v, V_SHARE_RATE] / pages) if scan else 0.0
    # Hashed pages of large pages host reclaim broke since the last pass (reclaim.py).
    offered = f * (1.0 - large) + vm[h, v, V_LP_OFFER]
    vm[h, v, V_LP_OFFER] = 0.0
    hashed = vm[h, v, V_LP_HASHED]
    seen = hashed + f * (1.0 - hashed)  # hashed before, or visited now
    room = max(0.0, host[h, H_FREE] - LARGE_PAGE_SPLIT_RESERVE) * LARGE_PAGE_PAGES / pages
    broken = 0.0
    if breaking >= 1 and large > 0.0 and f > 0.0:
        broken = min(room, large * (1.0 - (1.0 - f) ** LARGE_PAGE_PAGES))
        offered += broken * seen
    if breaking == 2:
        active = max(0.0, min(large - broken, host[h, H_LP_BREAK] / pages, room - broken))
        broken += active
        offered += active
    broken = min(broken, large)
    vm[h, v, V_LARGE_FRAC] = large - broken
    vm[h, v, V_LP_HASHED] = seen if large - broken > 0.0 else 0.0
    offered = min(1.0, offered)
    if offered <= 0.0:
        return
    # An image page shares only where another VM's copy is shared or is the
    # table's hint; an unhashed one visited that finds neither becomes a hint
    # itself, and a hinted one visited meets only its own hint (``V_HINTED``).
    p_shared, p_any = image_match(vm, h, v)
    hashed = hinted_frac(m, ck, vm, h, v)
    fresh = offered * (1.0 - hashed)  # a private image page's chance: visited, unhashed
    joined = 0
    priv_image = 0
    # The frames freed, added to the host's once: a sum kept in a register, where a
    # store to ``host`` each class made each class's pass wait for the last one's.
    freed = 0
    for c in range(FIRST_CLASS, _nc(vm, h, v)):
        kind = ck[h, v, c]
        if kind == 1:
            priv_image += m[h, v, c, PRIV]
        if kind == 0 or (kind == 1 and p_any > 0.0):
            k = binomial_inline(rng, h, m[h, v, c, PRIV], offered if kind == 0 else fresh * p_any)
            m[h, v, c, PRIV] -= k
            m[h, v, c, ZERO if kind == 0 else SHR] += k
            freed += k
            if kind == 1:
                joined += k
        # Zero-filled pages are zero pages, whatever the workload writes there later.
        if m[h, v, c, FILL] > 0:
            k = binomial_inline(rng, h, m[h, v, c, FILL], offered)
            m[h, v, c, FILL] -= k
            m[h, v, c, ZERO] += k
            freed += k
    host[h, H_FREE] += freed
    if vm[h, v, V_SHARE_IMAGE] > 0:
        vm[h, v, V_HINTED] = min(priv_image - joined,
                                 vm[h, v, V_HINTED] + fresh * (1.0 - p_any) * priv_image)
    promote_hints(m, ck, vm, rng, h, v, joined, p_shared, p_any)


@njit(cache=True, inline="always")
def _running(m, q, vm, h, v):
    """The share of VM ``v``'s pages touched since its sampling period began.

    The sampler looks at guest pages: a class's pages touched since the
    period began, but never more than the guest pages that held the
    workload's data in the period (those ballooned, free or in the guest's
    swap all period are pages it cannot find touched, however often the
    workload asks for them). A guest page touched and then ballooned or
    swapped out within the period was found touched, so the bound is the
    more of those at the period's start (``V_RESIDENT_START``) and now.
    """
    pages = vm[h, v, V_PAGES]
    touched = 0.0
    resident = _resident_now(m, vm, h, v)
    for c in range(FIRST_CLASS, _nc(vm, h, v)):
        touched += _mass(m, h, v, c) * q[h, v, c]
    return min(1.0, min(touched, max(resident, vm[h, v, V_RESIDENT_START])) / pages)


@njit(cache=True, inline="always")
def _resident_now(m, vm, h, v):
    """VM ``v``'s guest pages that hold its workload's data (not never-touched, not swapped)."""
    resident = 0
    for c in range(FIRST_CLASS, _nc(vm, h, v)):
        resident += _mass(m, h, v, c) - m[h, v, c, NEVER] - m[h, v, c, GSWP]
    return resident


@njit(cache=True)
def running_share(m, q, vm, h):
    """``V_RUNNING`` of host ``h``'s VMs, for a tick stepped with ``lazy_running``.

    From the end of the tick's sampling on, only the sharing scanner and host
    reclaim move a VM's pages, and neither changes which of them are in guest
    memory, so the share read any time until the next step is the one the
    tick's sampling would have written.
    """
    for v in range(m.shape[1]):
        if vm[h, v, V_ON] > 0:
            vm[h, v, V_RUNNING] = _running(m, q, vm, h, v)


@njit(cache=True, inline="always")
def _sample(m, q, ft, vm, host, rng, h, v, lazy):
    """Active-memory sampling: the running share touched, and a period's end folded in.

    ``lazy``: the running share (``V_RUNNING``) is left to ``running_share``
    when no period ends this tick.
    """
    if lazy and vm[h, v, V_SAMPLE_LEFT] > 1:
        vm[h, v, V_SAMPLE_LEFT] -= 1
        return
    frac = _running(m, q, vm, h, v)
    vm[h, v, V_RUNNING] = frac
    vm[h, v, V_SAMPLE_LEFT] -= 1
    if vm[h, v, V_SAMPLE_LEFT] <= 0:
        n = int(vm[h, v, V_SAMPLE_N])
        drawn = binomial(rng, h, n, frac) / max(1, n)
        vm[h, v, V_SLOW] += host[h, H_SLOW_GAIN] * (drawn - vm[h, v, V_SLOW])
        vm[h, v, V_FAST] += host[h, H_FAST_GAIN] * (drawn - vm[h, v, V_FAST])
        vm[h, v, V_LAST_FRAC] = drawn
        vm[h, v, V_RUNNING] = 0.0
        vm[h, v, V_SAMPLE_LEFT] = host[h, H_SAMPLE_TICKS]
        vm[h, v, V_RESIDENT_START] = _resident_now(m, vm, h, v)
        for c in range(_nc(vm, h, v)):
            q[h, v, c] = 0.0
            ft[h, v, c, FT_SEEN:FT_SEEN + FT_BINS] = 0.0


@njit(cache=True, nogil=True)
def step(m, tp, wp, ck, slo, shi, q, heat, ft, vm, cnt, host, rng, costs, stall, tick_ns,
         poll, lru, lazy_running, settled):
    """One tick of every host in the batch (``poll``: the balloon drivers poll this tick).

    ``lazy_running``: the running share of a sampling period (``V_RUNNING``) is
    written only at the period's end, and ``running_share`` works it out
    where it is read (the fleet's policy core reads it for the hosts it decides).
    ``settled[h]`` set: host ``h``'s arrays are as the end of its last step left
    them, so its free frames and state need not be counted again first; set
    for every host on return.

    A step with nothing to do is not called: ``make_room`` while no frame is
    owed, ``hold_to_cap`` for a VM without a limit, a balloon switched off.
    """
    n_h, n_v = m.shape[0], m.shape[1]
    stall[:] = 0.0
    t = np.zeros((m.shape[2], N_STATES), np.int64)
    busy = np.zeros(m.shape[2], np.int64)
    scratch = np.empty((SETTLE_SCRATCH_ROWS, n_v + 1))
    for h in range(n_h):
        step_host(m, tp, wp, ck, slo, shi, q, heat, ft, vm, cnt, host, rng, costs, stall,
                  tick_ns, poll, lru, lazy_running, settled, h, t, busy, scratch)


@njit(cache=True, nogil=True, _nrt=False)
def step_host(m, tp, wp, ck, slo, shi, q, heat, ft, vm, cnt, host, rng, costs, stall, tick_ns,
              poll, lru, lazy_running, settled, h, t, busy, scratch):
    """``step`` of host ``h`` alone (its ``stall`` row as the last step left it, not zeroed).

    ``t``: classes x ``N_STATES`` int64 scratch, ``busy`` one int64 a class (``_touch_vm``);
    ``scratch``: ``SETTLE_SCRATCH_ROWS`` x (VMs + 1) floats.
    Hosts share nothing, so stepping them one by one in any order, or one
    host for many ticks before the next (``fleet_loop.py``), leaves each as
    ``step`` does.

    Compiled without Numba's reference counting (``_nrt=False``), as are the
    kernels it calls: with it, the entry of each call and
    each helper compiled inline took and dropped a reference on every array it
    binds (an atomic add each, ``NRT_incref``/``NRT_decref``, 19 % of a fleet
    host-tick's samples). Every array here is its caller's for the whole call,
    a view made of one lives no longer, and none of them allocates or returns
    an array (Numba refuses to compile an allocation without it), so no count
    is needed. The fleet's kernel time a host-tick fell from 99-108 to
    75-81 us (32 hosts, 10 min, paired runs), bit for bit the same arrays.
    """
    n_v = m.shape[1]
    if not settled[h]:
        settle_tick(m, ck, vm, host, h, scratch)
    host[h, H_WORSENED] = 0.0
    state = int(host[h, H_STATE])
    for v in range(n_v):
        if vm[h, v, V_ON] <= 0:
            continue
        if vm[h, v, V_BLOCKED] > 0 and state == LOW_STATE:
            stall[h, v, S_BLOCKED] = tick_ns
            continue
        _touch_vm(m, tp, wp, slo, shi, q, ft, vm, cnt, host, heat, rng, costs, stall, h, v,
                  lru, t, busy)
        if vm[h, v, V_CAP] > 0:
            hold_to_cap(m, vm, cnt, host, heat, rng, h, v, lru)
        if host[h, H_FREE] < 0:
            make_room(m, vm, cnt, host, heat, rng, h, lru)
    if poll:
        for v in range(n_v):
            if vm[h, v, V_ON] > 0 and vm[h, v, V_BAL_ON] > 0:
                _balloon(m, tp, slo, vm, cnt, host, heat, rng, costs, stall, h, v, lru)
                if vm[h, v, V_CAP] > 0:  # pages double paging brought back (guest_paging.py)
                    hold_to_cap(m, vm, cnt, host, heat, rng, h, v, lru)
                if host[h, H_FREE] < 0:
                    make_room(m, vm, cnt, host, heat, rng, h, lru)
    if host[h, H_SWAP_OK + state] > 0:
        for v in range(n_v):
            if vm[h, v, V_ON] > 0 and vm[h, v, V_PLANNED] > 0:
                swap_to_target(m, ck, vm, cnt, host, heat, rng, h, v, True, lru)
    for v in range(n_v):
        if vm[h, v, V_ON] > 0:
            _sample(m, q, ft, vm, host, rng, h, v, lazy_running)
    scan = host[h, H_SHARE_ON] > 0 and host[h, H_SHARING] == SHARING_RUN
    breaking = 0
    if host[h, H_LP_ACTIVE + state] > 0:
        breaking = 2
    elif host[h, H_LP_LAZY] > 0 and host[h, H_FREE] / PAGES_PER_MIB < host[h, H_HIGH_MIB]:
        breaking = 1
    if host[h, H_SHARE_ON] > 0:
        for v in range(n_v):
            if vm[h, v, V_ON] > 0:
                age_hints(m, vm, h, v)
        for v in range(n_v):
            if vm[h, v, V_ON] > 0:
                _share(m, ck, vm, host, rng, h, v, scan, breaking)
    settle_tick(m, ck, vm, host, h, scratch)
    settled[h] = 1
