"""A host's count of its frames, and its memory state: the aggregate kernel's settle.

``settle`` counts host ``h``'s frames afresh from its VMs' masses (``kernel.py``
names the states): each VM's private and demand-zero pages, its kernel and
page-cache frames, one zero page per salt, and each image group's shared
frames, kept by their sharers (``image_share.frames_settle``). From the frames
it takes each VM's SHRDSVD and the host's free frames, and moves the host's
memory state with the tracker's hysteresis (an entry threshold to fall to a
state, an exit threshold to climb out of it). ``settle_tick``, the tick's
settle, also counts each VM's image pages the guest holds (``V_IMAGE_BACKED``,
what its scanner can share) in the same pass over the classes.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.aggregate.image_share import frames_settle
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout)
from hvmem.aggregate.reclaim import _nc

#: Rows of ``_settle``'s scratch (each VMs + 1 floats): frames, shared pages, universe,
#: members, new pairs and joins of each image group.
SETTLE_SCRATCH_ROWS = 6


@njit(cache=True)
def image_backed(m, ck, vm, h):
    """Each VM's image pages the guest holds (``V_IMAGE_BACKED``): what its scanner can share."""
    for v in range(m.shape[1]):
        n = 0
        if vm[h, v, V_ON] > 0:
            n = _image_pages(m, ck, vm, h, v)
        vm[h, v, V_IMAGE_BACKED] = n


@njit(cache=True, inline="always")
def _image_pages(m, ck, vm, h, v):
    n = 0
    for c in range(FIRST_CLASS, _nc(vm, h, v)):
        if ck[h, v, c] == 1:
            n += m[h, v, c, PRIV] + m[h, v, c, SHR] + m[h, v, c, ZIP] + m[h, v, c, SWP]
    return n


@njit(cache=True)
def settle(m, vm, host, h):
    """Host ``h``'s free frames counted afresh, and its memory state with hysteresis.

    Shared frames: one zero page per salt (each VM's own, or one for the host
    when salting is across). Image pages shared across VMs of one image: the
    group's frames by their sharers, moved by the flows since the last settle
    (``image_share.frames_settle``: pages that met a hint pair up, pages that
    joined move a frame up, sharers that left move one down); their sum is
    the group's frames. Each VM's SHRDSVD is its shared pages less its share
    of those frames.
    """
    n_v = m.shape[1]
    scratch = np.empty((SETTLE_SCRATCH_ROWS, n_v + 1))
    _settle(m, np.zeros((1, 1, 1), np.int8), vm, host, h, False, scratch)


@njit(cache=True, _nrt=False)
def settle_tick(m, ck, vm, host, h, scratch):
    """``image_backed`` then ``settle``, in one pass over each VM's classes (the tick's)."""
    _settle(m, ck, vm, host, h, True, scratch)


@njit(cache=True, inline="always")
def _settle(m, ck, vm, host, h, image, scratch):
    """``settle``; with ``image``, each VM's ``V_IMAGE_BACKED`` counted first, VM by VM.

    ``scratch``: ``SETTLE_SCRATCH_ROWS`` x (VMs + 1) floats, overwritten.
    """
    n_v = m.shape[1]
    used = 0.0
    zero_any = 0
    groups, group_total, universe = scratch[0], scratch[1], scratch[2]
    members, pairs, ups = scratch[3], scratch[4], scratch[5]
    scratch[1:] = 0.0
    for v in range(n_v):
        if vm[h, v, V_ON] <= 0:
            if image:
                vm[h, v, V_IMAGE_BACKED] = 0
            continue
        # _used_frames' sum, in its order, with the shared and zero pages beside it, and
        # with ``image`` _image_pages' in the same pass (the masses are read once).
        frames = vm[h, v, V_KERNEL] + vm[h, v, V_CACHE_FRAMES]
        shr = 0
        zero = 0
        backed = 0
        for c in range(_nc(vm, h, v)):
            priv, shared = m[h, v, c, PRIV], m[h, v, c, SHR]
            frames += priv + m[h, v, c, FILL]
            shr += shared
            zero += m[h, v, c, ZERO]
            if image and c >= FIRST_CLASS and ck[h, v, c] == 1:
                backed += priv + shared + m[h, v, c, ZIP] + m[h, v, c, SWP]
        if image:
            vm[h, v, V_IMAGE_BACKED] = backed
        used += frames
        vm[h, v, V_SHARED] = shr + zero
        vm[h, v, V_ZERO_SHARED] = zero
        g = int(vm[h, v, V_IMAGE_GROUP])
        if g >= 0:
            universe[g] = max(universe[g], vm[h, v, V_IMAGE_BACKED], float(shr))
            group_total[g] += shr
            members[g] += 1
            pairs[g] += vm[h, v, V_NEW_PAIRS]
            ups[g] += vm[h, v, V_JOINED_UP]
        vm[h, v, V_NEW_PAIRS] = 0.0
        vm[h, v, V_JOINED_UP] = 0.0
        if zero > 0:
            zero_any += 1
    for g in range(n_v + 1):
        groups[g] = 0.0
        if members[g] > 0:
            groups[g] = frames_settle(vm, h, g, int(members[g]), group_total[g], pairs[g],
                                      ups[g])
    across = host[h, H_SALT_ACROSS] > 0
    zero_frames = (1.0 if zero_any else 0.0) if across else float(zero_any)
    used += zero_frames + groups.sum()
    total_zero = 0.0
    for v in range(n_v):
        if vm[h, v, V_ON] > 0:
            total_zero += vm[h, v, V_ZERO_SHARED]
    for v in range(n_v):
        if vm[h, v, V_ON] <= 0:
            vm[h, v, V_SAVED] = 0.0
            continue
        zero = vm[h, v, V_ZERO_SHARED]
        shr = vm[h, v, V_SHARED] - zero
        saved = 0.0
        if zero > 0:
            saved += zero - (zero_frames * zero / total_zero if across else 1.0)
        g = int(vm[h, v, V_IMAGE_GROUP])
        if shr > 0:
            saved += shr - (groups[g] * shr / group_total[g] if g >= 0 else shr)
        vm[h, v, V_SAVED] = max(0.0, saved)
    host[h, H_FREE] = host[h, H_TOTAL] - used
    free_mib = host[h, H_FREE] / PAGES_PER_MIB
    state = int(host[h, H_STATE])
    before = state
    while state != LOW_STATE and free_mib < host[h, H_ENTER + state]:
        state = int(host[h, H_LOWER + state])
    if state == before:
        while free_mib > host[h, H_EXIT + state]:
            state = int(host[h, H_HIGHER + state])
    if state > before:
        host[h, H_WORSENED] = 1.0
    host[h, H_STATE] = state
