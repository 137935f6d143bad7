"""Random: evict pages chosen uniformly, knowing nothing of their use.

What ESX does when it swaps: the hypervisor cannot see which guest pages
matter, and picks at random, on purpose, so as not to fall into step with the
guest's own replacement [OSDI02 §3.3].

Reclaim
-------
No replacement data. The victims are ``n`` distinct candidates drawn without
replacement from the user's generator, in page order: the draw picks
positions among the candidates (``rng.choice(count, n, replace=False)``, the
same numbers ``rng.choice(candidates, n, replace=False)`` draws) and a mask
keeps page order without sorting.

Reference strings
-----------------
A uniform frame from a splitmix64 stream inside the kernel, seeded from
``RngStreams(seed).seed_for(RANDOM_STREAM)``; it draws once per eviction only,
so a seed gives the same result however the trace is split into chunks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.core.mix import splitmix64_next
from hvmem.replacement.base import HITS, NO_PAGES, RNG, USED, FrameReplay, ReplacementPolicy

#: Name of the random stream the replay kernel's seed comes from.
RANDOM_STREAM = "guest/replacement/random"


class RandomPolicy(ReplacementPolicy):
    """Random victims, drawn from ``rng``."""

    name = "random"
    __slots__ = ("rng",)

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.rng = rng

    def victims(self, n_pages: int, kinds: np.ndarray, evictable: np.ndarray,
                now_stamp: int | None = None) -> np.ndarray:
        """``n_pages`` candidates drawn uniformly, in page order."""
        if n_pages <= 0:
            return NO_PAGES
        pages = np.flatnonzero(evictable[kinds])
        if pages.size <= n_pages:
            return pages
        chosen = np.zeros(pages.size, dtype=np.bool_)
        chosen[self.rng.choice(pages.size, n_pages, replace=False)] = True
        return pages[chosen]


@njit(cache=True)
def replay(ids, nframes, frame_of, page_in, st):
    """Random eviction: a uniform frame from a splitmix64 stream, one draw per eviction."""
    used = st[USED]
    hits = st[HITS]
    state = np.uint64(st[RNG])
    n = np.uint64(nframes)
    for i in range(ids.shape[0]):
        p = ids[i]
        if frame_of[p] >= 0:
            hits += 1
            continue
        if used < nframes:
            f = used
            used += 1
        else:
            state, z = splitmix64_next(state)
            f = np.int64(z % n)  # bias at most frames / 2**64
            frame_of[page_in[f]] = -1
        page_in[f] = p
        frame_of[p] = f
    st[USED] = used
    st[HITS] = hits
    st[RNG] = np.int64(state)


class RandomReplay(FrameReplay):
    """Random over a reference string: the generator's state, no per-frame data."""

    __slots__ = ()

    def start(self, state: np.ndarray, kernel_seed: int) -> None:
        """Seed the generator."""
        state[RNG] = np.uint64(kernel_seed).view(np.int64)

    def run(self, ids: np.ndarray, n_frames: int, frame_of: np.ndarray, page_in: np.ndarray,
            state: np.ndarray) -> None:
        """Replay one chunk."""
        replay(ids, n_frames, frame_of, page_in, state)
