"""The replacement policies by name, and which of them each user supports.

hvmem chooses victims in three places: the guest kernel's reclaim, the host's
swap selection, and the replay of reference strings (``hvmem paging``). They
share one set of names, :data:`POLICY_NAMES`. A policy needs something to
know about each page (when it was loaded, when it was last used, a reference
bit, or the future references), and each user supports the policies whose
needs it keeps:

* guest reclaim stamps pages when they are mapped and used and keeps their
  reference bits, but cannot see the future: every policy but OPT;
* host swap selection keeps one stamp per page, of the host's last sight of a
  touch: ``random`` (what ESX does, knowing nothing of the guest's use of its
  pages [OSDI02 §3.3]) and ``lru`` (an option beyond ESX);
* trace replay has the whole reference string: every policy, OPT included,
  and every one but OPT chunk by chunk, in memory bounded by the footprint.

A name outside a user's subset is refused with a :class:`ConfigError` that
names the user, what the policy needs and what the user supports.

This module carries no Numba: reading a scenario checks names without
compiling kernels.
"""

from __future__ import annotations

from hvmem.errors import ConfigError

#: Every replacement policy hvmem has.
POLICY_NAMES = ("fifo", "lru", "clock", "random", "opt")

#: What each policy must know of the pages, said in the error of a user without it.
NEEDS = {
    "fifo": "when each page was loaded",
    "lru": "when each page was last used",
    "clock": "a reference bit per page",
    "random": "nothing",
    "opt": "the future references",
}

#: Guest reclaim (``[vm.guest] reclaim_policy``).
RECLAIM_POLICIES = ("fifo", "lru", "clock", "random")
#: Host swap selection (``[host] swap_selection``); ESX's choice first.
SWAP_SELECTIONS = ("random", "lru")
#: Trace replay of a whole reference string (``hvmem paging --policy``).
REPLAY_POLICIES = POLICY_NAMES
#: Trace replay chunk by chunk (OPT needs the whole future).
STREAMING_POLICIES = ("fifo", "lru", "clock", "random")


def check_policy(name: object, supported: tuple[str, ...], user: str) -> str:
    """``name`` if ``user`` supports it.

    Args:
        name: a policy name, as given.
        supported: the user's subset of :data:`POLICY_NAMES`.
        user: who asks, for the message ("guest reclaim", "host swap selection").

    Raises:
        ConfigError: an unknown name, or one outside ``supported`` (saying what
            the policy needs that the user does not keep).
    """
    expected = ", ".join(supported)
    if not isinstance(name, str) or name not in POLICY_NAMES:
        raise ConfigError(f"{user}: unknown replacement policy {name!r}; "
                          f"expected one of {expected}")
    if name not in supported:
        raise ConfigError(f"{user}: replacement policy {name!r} needs {NEEDS[name]}, "
                          f"which {user} does not keep; expected one of {expected}")
    return name
