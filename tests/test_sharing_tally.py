"""``SharingTally``'s word-skipping scan gives what a plain pass over the pmap gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.hardware.frames import MachineMemory
from hvmem.hypervisor.pmap import Backing, Pmap
from hvmem.sim_rows import SharingTally


def plain_tally(pmap: Pmap, frames: MachineMemory) -> tuple[int, float, int, int]:
    shared = np.flatnonzero(pmap.state == Backing.SHARED)
    mpns = pmap.mpn[shared]
    inv = 1.0 / frames.refcount[mpns].astype(np.float64)
    saved = float(shared.size - np.sum(inv)) if shared.size else 0.0
    return (int(shared.size), saved, int(np.count_nonzero(pmap.state == Backing.PRIVATE)),
            int(np.count_nonzero(frames.content[mpns] == 0)))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 300), st.floats(0, 1), st.floats(0, 1), st.integers(0, 2**32 - 1))
def test_the_tally_equals_a_plain_pass(n_ppns, shared_frac, private_frac, seed):
    rng = np.random.default_rng(seed)
    frames = MachineMemory(64)
    frames.refcount[:] = rng.integers(1, 5, 64)
    frames.content[:] = rng.integers(0, 3, 64).astype(np.uint64)
    pmap = Pmap(n_ppns, 64)
    kind = rng.random(n_ppns)
    shared = np.flatnonzero(kind < shared_frac)
    private = np.flatnonzero((kind >= shared_frac) & (rng.random(n_ppns) < private_frac))
    pmap.back(shared, rng.integers(0, 64, shared.size), Backing.SHARED)
    pmap.back(private, rng.integers(0, 64, private.size), Backing.PRIVATE)
    assert SharingTally()(pmap, frames) == plain_tally(pmap, frames)
