"""KSM's unmerge at aggregate fidelity: shared pages get private copies again.

A policy that stops sharing for good (MOM's KSM rules with ``ksm_enabled``
off: ``SharingMode.UNMERGE``, KSM's ``run = 2``) has every shared page copied
back into a private frame. Page fidelity does it each tick the mode holds
(``SimulatedBackend.unmerge``): VM by VM, as many of the VM's shared pages as
the host's free frames above ``minFree`` allow, never by reclaiming others
(the kernel's unmerge fails on memory it cannot get). Here the same over the
masses of ``kernel.py``: of a VM's shared pages (``SHR``, ``ZERO``, in every
row, the guest's free list among them) the room's worth are drawn in
proportion to each row's and become private: a shared image or private
page holds its data (``PRIV``); a zero-shared page holds zeroes, written ones
(``PRIV``) in a class of zero content, else the zeroes the guest filled it
with (``FILL``). ``settle`` then frees the shared frames no VM maps any more.
"""

# ruff: noqa: F405  (the layout's names come from layout.py's __all__)
from __future__ import annotations

from numba import njit

from hvmem.aggregate.draws import part
from hvmem.aggregate.layout import *  # noqa: F403  (the array layout)
from hvmem.aggregate.reclaim import _nc


@njit(cache=True)
def unmerge(m, ck, vm, host, rng, h, minfree_pages):
    """Host ``h``'s shared pages back to private, as its free frames above minFree allow.

    Returns the pages unshared.
    """
    done = 0
    for v in range(m.shape[1]):
        if vm[h, v, V_ON] <= 0:
            continue
        n_c = _nc(vm, h, v)
        shared = 0
        for c in range(n_c):
            shared += m[h, v, c, SHR] + m[h, v, c, ZERO]
        room = int(host[h, H_FREE] - minfree_pages)
        n = min(shared, room)
        if n <= 0:
            continue
        left, rest = n, shared
        for c in range(n_c):
            for s in (SHR, ZERO):
                ms = m[h, v, c, s]
                if left <= 0 or rest <= 0:
                    break
                t = part(rng, h, left, ms, rest)
                left -= t
                rest -= ms
                if t <= 0:
                    continue
                m[h, v, c, s] -= t
                if s == ZERO and ck[h, v, c] != 0:
                    m[h, v, c, FILL] += t
                else:
                    m[h, v, c, PRIV] += t
        host[h, H_FREE] -= n
        done += n
    return done
