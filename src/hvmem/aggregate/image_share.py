"""The sharing table's rule for image pages, over the masses of ``kernel.py``.

At page fidelity the scanner shares a page only through the host-wide table
(``hypervisor/reclaim/sharing.py``) [OSDI02 §4.2]: its content must already
be there, as a shared frame or as another page's hint. The first copy of an
image page the scanner hashes only becomes the hint; the second copy, from
another VM of the same image, promotes that hint, and both pages share. A
victim offered to the table before it is swapped (share-before-swap,
[OSDI02 §4.3]) follows the same rule. So an image page of VM ``v`` shares
with the chance that another VM's copy of it is shared or hashed.

The masses say how many, not which: the scanner visits each VM's pages in its
own random order, so which of the image's ``U`` pages (the most any VM of the
group holds) VM ``u`` has shared, or hashed and still holds private, is taken
as independent of the others. VM ``u`` marks ``shr_u`` shared and
``seen_u (backed_u - shr_u)`` hinted pages (``V_SHARE_SEEN``, the share of
its pages its scanner has hashed); a page of ``v`` finds a shared frame with
chance ``1 - prod(1 - shr_u / U)`` and a shared frame or a hint with chance
``1 - prod(1 - (shr_u + hint_u) / U)`` over the other VMs ``u`` of the group
(``image_match``). A page that met a hint promotes it: the hinting VM's page
becomes shared as well (``promote_hints``), the hints handed out over the
VMs by their hinted pages and over each one's image classes by their private
pages. The counts are the previous tick's settle (``V_IMAGE_BACKED``,
``V_SHARED``): the tick's own scans are not seen until the next one.

What this leaves out, measured on ``sharing`` seed 1 (seed 2 alike). A hint
holds only while its frame still backs the page it was hashed from
(``sharing_table._hint_holds``): the guest swapping the page out and reusing
its frame, or the host swapping or compressing it, makes it stale, and a
hint another VM's copy meets is shared, no longer a hint. Counting every page
a scanner ever hashed as a hint makes ``image_match``'s second chance 1.0
from the first minutes on; at page fidelity the share of a VM's private
image pages whose copy elsewhere is shared or a valid hint is 0.64 at 600 s,
0.81 at 700 s and 0.26 at 900 s (0.40, 0.68 and 0.12 of them shared), so
over 900-1000 s the aggregate's scanner shares 335 pages a second a VM and
promotes 209 hints, page fidelity's 148 and 53. A count of valid hints
(hashed, unchanged, not yet met) follows page fidelity's shared pages
through the boot sweep to within 3 % (299 against 306 MiB a VM at 600 s),
but the frames ``kernel.settle`` counts for them as independent sets are
429 MiB for the four VMs where page fidelity's are 333 (the sweep writes the
same pages of every VM at the same time, so the pages shared line up across
VMs), and with both the validation's ``sharing`` falls from 41 to 27 of 57
metrics within bound (42 to 28 at aggregate seeds 9-16). Today's rule
over-shares by about as much as the independent frame count over-counts;
the two are to be corrected together.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)

from __future__ import annotations

from numba import njit

from hvmem.aggregate.draws import binomial, stochastic_round
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout)


@njit(cache=True, inline="always")
def _peer(vm, h, v, u):
    """Whether VM ``u`` is on and of ``v``'s image group, and not ``v``: a peer it shares with."""
    return u != v and vm[h, u, V_ON] > 0 and vm[h, u, V_IMAGE_GROUP] == vm[h, v, V_IMAGE_GROUP]


@njit(cache=True, inline="always")
def _hinted(vm, h, u):
    """VM ``u``'s image pages hashed into the table and still private (its hints)."""
    shr = vm[h, u, V_SHARED] - vm[h, u, V_ZERO_SHARED]
    return vm[h, u, V_SHARE_SEEN] * max(0.0, vm[h, u, V_IMAGE_BACKED] - shr)


@njit(cache=True)
def image_match(vm, h, v):
    """(shared, shared or hinted): the chances another VM's copy of a ``v`` image page is."""
    g = vm[h, v, V_IMAGE_GROUP]
    if vm[h, v, V_SHARE_IMAGE] <= 0 or g < 0:
        return 0.0, 0.0
    # The image's pages: the most any VM of the group holds, ``v`` (on, as
    # every VM whose pages are scanned or offered) among them.
    universe = max(0.0, vm[h, v, V_IMAGE_BACKED], vm[h, v, V_SHARED] - vm[h, v, V_ZERO_SHARED])
    for u in range(vm.shape[1]):
        if _peer(vm, h, v, u):
            shr = vm[h, u, V_SHARED] - vm[h, u, V_ZERO_SHARED]
            universe = max(universe, vm[h, u, V_IMAGE_BACKED], shr)
    if universe <= 0:
        return 0.0, 0.0
    none_shared = 1.0
    none_marked = 1.0
    for u in range(vm.shape[1]):
        if not _peer(vm, h, v, u):
            continue
        shr = vm[h, u, V_SHARED] - vm[h, u, V_ZERO_SHARED]
        none_shared *= 1.0 - min(1.0, shr / universe)
        none_marked *= 1.0 - min(1.0, (shr + _hinted(vm, h, u)) / universe)
    return 1.0 - none_shared, 1.0 - none_marked


@njit(cache=True)
def promote_hints(m, ck, vm, rng, h, v, joined, p_shared, p_any):
    """``joined`` of ``v``'s image pages shared: those that met a hint make its page shared too."""
    if joined <= 0 or p_any <= p_shared:
        return
    n = stochastic_round(rng, h, joined * (p_any - p_shared) / p_any)
    if n <= 0:
        return
    hints = 0.0
    for u in range(vm.shape[1]):
        if _peer(vm, h, v, u):
            hints += _hinted(vm, h, u)
    if hints <= 0:
        return
    for u in range(vm.shape[1]):
        if not _peer(vm, h, v, u):
            continue
        want = n * _hinted(vm, h, u) / hints
        n_c = int(vm[h, u, V_NCLASS])
        priv = 0
        for c in range(FIRST_CLASS, n_c):
            if ck[h, u, c] == 1:
                priv += m[h, u, c, PRIV]
        if priv <= 0 or want <= 0:
            continue
        frac = min(1.0, want / priv)
        # The hinted page keeps its frame, now the shared one: no frame moves.
        for c in range(FIRST_CLASS, n_c):
            if ck[h, u, c] == 1 and m[h, u, c, PRIV] > 0:
                k = binomial(rng, h, m[h, u, c, PRIV], frac)
                m[h, u, c, PRIV] -= k
                m[h, u, c, SHR] += k
