"""The sharing table's rule for image pages, over the masses of ``kernel.py``.

At page fidelity the scanner shares a page only through the host-wide table
(``hypervisor/reclaim/sharing.py``) [OSDI02 §4.2]: its content must already
be there, as a shared frame or as another page's hint. The first copy of an
image page the scanner hashes only becomes the hint; the second copy, from
another VM of the same image, promotes that hint, and both pages share. A
victim offered to the table before it is swapped (share-before-swap,
[OSDI02 §4.3]) follows the same rule. So an image page of VM ``v`` shares
with the chance that another VM's copy of it is shared or hashed.

Hints. A hint names a frame, and holds only while that frame still backs
the page it was hashed from with the same content
(``sharing_table._hint_holds``). So VM ``u``'s hints (``V_HINTED``) are a
count of pages: a private image page the scanner visits and finds no match
for becomes a hint; a hint another VM's copy meets leaves the count shared;
and a private page that leaves private memory other than by sharing (the
guest swaps it out and reuses its frame, the host swaps or compresses it)
takes its hint with it. Pages come and go at random with respect to whether
they were hashed, so each pass keeps ``1 - r`` of the hints, ``r`` the share
of private pages that left since the last (``age_hints``). A page that
becomes private again (copy-on-write, a swap-in, a first touch) comes back in
a new frame, unhashed. A VM's hinted page meets only its own hint when its
scanner or share-before-swap offers it again, so only its unhashed private
pages can share (``hinted_frac``). On seed 1 of ``sharing`` at page
fidelity, the share of a VM's private image pages whose copy in another VM
is shared or a hint falls from 0.81 at 700 s to 0.26 at 900 s as the guests
page; counting every page a scanner had ever hashed as a hint kept it at 1.0.

Frames. Each image group's shared frames are kept by their sharers
(``V_FRAMES``: how many frames ``s`` VMs share, ``s`` = 1..VMs), as page
fidelity's refcounts have them, and moved at every settle by the tick's
flows (``frames_settle``): a page that met a hint makes a frame of two
sharers with the hinting page; a page that joined a shared frame moves one
up, a frame it is not in (of ``n`` VMs, ``n - s`` are not in a frame of
``s``); and the sharers the flows do not account for left it, by
copy-on-write, the guest's swap or free, its balloon, the host's swap or
an unmerge, each from a frame picked in proportion to its sharers, which
moves one down. A frame left with one sharer stays a shared frame, as at
page fidelity (``leave_shared`` frees a frame only at none). The host's
frames for the group are the histogram's sum. Counting the sets as
independent (``U (1 - prod(1 - x_v / U))`` of ``U`` image pages, ``x_v``
shared by VM ``v``) gave 429 MiB for the four VMs of ``sharing`` at 600 s
where page fidelity has 333: the boot sweep writes the same pages of every
VM at the same time, so the scanner finds them shared together, and every
frame has two sharers or more. Kept by their sharers they are 354 MiB on
seed 1 at 600 s (11, 119, 138 and 86 MiB of frames of one, two, three
and four sharers; 123 MiB of one-sharer frames at 800 s, as the guests
page), and the validation's ``sharing`` had 42 of 57 metrics within bound
(41 counting independent sets with every hashed page a hint; 53 once an LRU
guest's swapped-out pages are its classes' colder ones, ``guest_paging.lru_split``).

The chances. The masses say how many, not which. A page of ``v`` finds a
shared frame with chance ``(F - x_v) / (U - x_v)``: of the ``U - x_v``
image pages it holds private, a frame holds those of the ``F`` frames it is
not in (a frame holds one page of each VM at most). It finds a hint with
chance ``1 - prod(1 - hint_u / (U - F))`` over the other VMs ``u`` of the
group, the hints being of pages no frame holds (``image_match``). A page that
met a hint promotes it: the hinting VM's page becomes shared as well
(``promote_hints``), the hints handed out over the VMs by their hinted pages
and over each one's image classes by their private pages. The counts are the
previous tick's settle (``V_IMAGE_BACKED``, ``V_SHARED``, ``V_GROUP_FRAMES``):
the tick's own scans are not seen until the next one.
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
    """VM ``u``'s image pages hashed into the table and still private, unchanged (its hints)."""
    return max(0.0, vm[h, u, V_HINTED])


@njit(cache=True, inline="always")
def hinted_frac(m, ck, vm, h, v):
    """The share of VM ``v``'s private image pages that are hints."""
    priv = 0
    for c in range(FIRST_CLASS, int(vm[h, v, V_NCLASS])):
        if ck[h, v, c] == 1:
            priv += m[h, v, c, PRIV]
    return min(1.0, _hinted(vm, h, v) / priv) if priv > 0 else 0.0


@njit(cache=True, _nrt=False)
def age_hints(m, vm, h, v):
    """VM ``v``'s hints that left with its private pages since the last pass are gone.

    ``V_PRIV_LEFT`` counts the private pages (written or zero-filled) that
    left private memory other than by sharing since the last pass; they left
    at random with respect to being hashed, so the hints keep ``1 - r`` of
    themselves, ``r`` the share of private pages that left.
    """
    left = vm[h, v, V_PRIV_LEFT]
    if left <= 0.0:
        return
    vm[h, v, V_PRIV_LEFT] = 0.0
    priv = 0
    for c in range(FIRST_CLASS, int(vm[h, v, V_NCLASS])):
        priv += m[h, v, c, PRIV] + m[h, v, c, FILL]
    vm[h, v, V_HINTED] *= priv / (priv + left)


@njit(cache=True, _nrt=False)
def image_match(vm, h, v):
    """(shared, shared or hinted): the chances another VM's copy of a ``v`` image page is."""
    g = int(vm[h, v, V_IMAGE_GROUP])
    if vm[h, v, V_SHARE_IMAGE] <= 0 or g < 0:
        return 0.0, 0.0
    # The image's pages: the most any VM of the group holds, ``v`` (on, as
    # every VM whose pages are scanned or offered) among them.
    own = vm[h, v, V_SHARED] - vm[h, v, V_ZERO_SHARED]
    universe = max(0.0, vm[h, v, V_IMAGE_BACKED], own)
    for u in range(vm.shape[1]):
        if _peer(vm, h, v, u):
            shr = vm[h, u, V_SHARED] - vm[h, u, V_ZERO_SHARED]
            universe = max(universe, vm[h, u, V_IMAGE_BACKED], shr)
    if universe <= 0:
        return 0.0, 0.0
    # A frame holds one page of ``v`` at most: of the image's pages ``v`` holds
    # private, those with a frame are the frames ``v`` is not in.
    frames = vm[h, g, V_GROUP_FRAMES]
    p_shared = min(1.0, max(0.0, frames - own) / max(1.0, universe - own))
    # Hints are of pages no frame holds.
    unframed = max(1.0, universe - frames)
    none_hinted = 1.0
    for u in range(vm.shape[1]):
        if _peer(vm, h, v, u):
            none_hinted *= 1.0 - min(1.0, _hinted(vm, h, u) / unframed)
    return p_shared, p_shared + (1.0 - p_shared) * (1.0 - none_hinted)


@njit(cache=True, _nrt=False)
def promote_hints(m, ck, vm, rng, h, v, joined, p_shared, p_any):
    """``joined`` of ``v``'s image pages shared: those that met a hint make its page shared too.

    Each promoted hint makes a frame of two sharers (``V_NEW_PAIRS``); the
    rest joined a frame already shared (``V_JOINED_UP``), for ``frames_settle``.
    """
    promoted = _promote(m, ck, vm, rng, h, v, joined, p_shared, p_any)
    pairs = min(joined, promoted)
    vm[h, v, V_NEW_PAIRS] += pairs
    vm[h, v, V_JOINED_UP] += joined + promoted - 2 * pairs


@njit(cache=True, inline="always")
def _promote(m, ck, vm, rng, h, v, joined, p_shared, p_any):
    if joined <= 0 or p_any <= p_shared:
        return 0
    n = stochastic_round(rng, h, joined * (p_any - p_shared) / p_any)
    if n <= 0:
        return 0
    hints = 0.0
    for u in range(vm.shape[1]):
        if _peer(vm, h, v, u):
            hints += _hinted(vm, h, u)
    if hints <= 0:
        return 0
    promoted = 0
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
                vm[h, u, V_HINTED] = max(0.0, vm[h, u, V_HINTED] - k)
                promoted += k
    return promoted


@njit(cache=True, inline="always")
def _move(vm, h, g, n, members, pages, up):
    """``pages`` sharers join (``up``) or leave group ``g``'s frames; returns those not placed.

    A sharer leaving picks its frame in proportion to the frame's sharers; one
    joining, among the frames it is not in (``members - s`` of ``members``
    VMs are not in a frame of ``s`` sharers). Every frame moves by one level
    at most a round; the caller repeats for what is left.
    """
    weight = 0.0
    for s in range(1, n):
        f = vm[h, g, V_FRAMES + s]
        weight += f * (max(0, members - s) if up else s)
    if weight <= 0.0 or pages <= 0.0:
        return pages
    share = pages / weight
    moved = 0.0
    if up:  # from the top down, so no frame moves twice
        for s in range(members - 1, 0, -1):
            d = min(vm[h, g, V_FRAMES + s], share * vm[h, g, V_FRAMES + s] * (members - s))
            vm[h, g, V_FRAMES + s] -= d
            vm[h, g, V_FRAMES + s + 1] += d
            moved += d
    else:  # from the bottom up; a frame left with none is freed
        for s in range(1, n):
            d = min(vm[h, g, V_FRAMES + s], share * vm[h, g, V_FRAMES + s] * s)
            vm[h, g, V_FRAMES + s] -= d
            if s > 1:
                vm[h, g, V_FRAMES + s - 1] += d
            moved += d
    return pages - moved


@njit(cache=True, _nrt=False)
def frames_settle(vm, h, g, members, pages, pairs, ups):
    """Image group ``g``'s shared frames, its sharers now ``pages``; returns the frames.

    ``members``: the group's VMs that are on; ``pairs`` and ``ups``: its image
    pages shared since the last settle by meeting a hint and by joining a
    frame. What the frames' sharers and those added do not come to left
    by copy-on-write, a guest's swap or free, its balloon, the host's swap or
    an unmerge: those sharers leave first (the tick's writes and reclaim
    come before its scan), then the new ones come.
    """
    n = vm.shape[2] - V_FRAMES
    members = min(members, n - 1)
    held = 0.0
    for s in range(1, n):
        held += s * vm[h, g, V_FRAMES + s]
    # Below a millionth of a page the difference is the sum's rounding: a
    # settle with nothing moved since the last leaves the frames as they are.
    gone = held + 2.0 * pairs + ups - pages
    if gone < 0.0:  # more sharers than the flows say: count them as joins
        ups -= gone
        gone = 0.0
    for _ in range(8):
        if gone <= 1e-6:
            break
        gone = _move(vm, h, g, n, members, min(gone, held), False)
    vm[h, g, V_FRAMES + 2] += pairs
    for _ in range(8):
        if ups <= 1e-6:
            break
        ups = _move(vm, h, g, n, members, ups, True)
    if ups > 1e-6:  # a sharer with no frame to join (each holds every VM): its own
        vm[h, g, V_FRAMES + 1] += ups
    frames = 0.0
    for s in range(1, n):
        frames += vm[h, g, V_FRAMES + s]
    vm[h, g, V_GROUP_FRAMES] = frames
    return frames
