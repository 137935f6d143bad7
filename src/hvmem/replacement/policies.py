"""The reclaim policies by name: one class each, made for a user that supports it.

Trace replay runs its own kernels (``replay.py``); guest reclaim and host swap
selection make a :class:`~hvmem.replacement.base.ReplacementPolicy` here, under
the names of ``names.py``, and ask it for victims.
"""

from __future__ import annotations

import numpy as np

from hvmem.replacement.base import ReplacementPolicy
from hvmem.replacement.clock import ClockPolicy
from hvmem.replacement.fifo import FifoPolicy
from hvmem.replacement.lru import LruPolicy
from hvmem.replacement.names import check_policy
from hvmem.replacement.random import RandomPolicy

#: Every policy that chooses victims as a memory goes (all but OPT), by name.
POLICY_CLASSES: dict[str, type[ReplacementPolicy]] = {
    "fifo": FifoPolicy, "lru": LruPolicy, "clock": ClockPolicy, "random": RandomPolicy,
}


def make_policy(name: str, n_pages: int, rng: np.random.Generator, *,
                supported: tuple[str, ...], user: str,
                use_stamp: np.ndarray | None = None) -> ReplacementPolicy:
    """The policy ``name`` over pages 0..n_pages-1.

    Args:
        name: the policy's name.
        n_pages: pages of the memory.
        rng: the generator the ``random`` policy draws from.
        supported: the names ``user`` supports (``names.py``).
        user: who asks, for the error ("guest reclaim", "host swap selection").
        use_stamp: use stamps the user keeps itself, for ``lru`` to read
            (None: the policy keeps its own).

    Raises:
        ConfigError: ``name`` is unknown or outside ``supported``.
    """
    check_policy(name, supported, user)
    if name == "random":
        return RandomPolicy(rng)
    if name == "lru":
        return LruPolicy(n_pages, use_stamp)
    return POLICY_CLASSES[name](n_pages)
