"""One set of policy names; each user's subset, and the errors outside it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hvmem.errors import ConfigError
from hvmem.replacement import names
from hvmem.replacement.names import (
    POLICY_NAMES,
    RECLAIM_POLICIES,
    REPLAY_POLICIES,
    STREAMING_POLICIES,
    SWAP_SELECTIONS,
    check_policy,
)
from hvmem.replacement.policies import POLICY_CLASSES
from hvmem.replacement.replay import FRAME_REPLAYS


def test_every_subset_is_drawn_from_the_one_set():
    for subset in (RECLAIM_POLICIES, SWAP_SELECTIONS, REPLAY_POLICIES, STREAMING_POLICIES):
        assert set(subset) <= set(POLICY_NAMES)
        assert len(set(subset)) == len(subset)
    assert set(names.NEEDS) == set(POLICY_NAMES)


def test_opt_is_trace_replay_alone():
    assert "opt" in REPLAY_POLICIES
    assert "opt" not in RECLAIM_POLICIES + SWAP_SELECTIONS + STREAMING_POLICIES


def test_each_name_a_user_supports_has_an_implementation():
    assert set(RECLAIM_POLICIES) | set(SWAP_SELECTIONS) <= set(POLICY_CLASSES)
    assert set(STREAMING_POLICIES) == set(FRAME_REPLAYS)


@pytest.mark.parametrize(("name", "supported", "user", "words"), [
    ("lfu", RECLAIM_POLICIES, "guest reclaim",
     "guest reclaim: unknown replacement policy 'lfu'; expected one of fifo, lru, clock, random"),
    ("opt", RECLAIM_POLICIES, "guest reclaim",
     "guest reclaim: replacement policy 'opt' needs the future references, which guest "
     "reclaim does not keep; expected one of fifo, lru, clock, random"),
    ("clock", SWAP_SELECTIONS, "host swap selection",
     "host swap selection: replacement policy 'clock' needs a reference bit per page"),
    (7, SWAP_SELECTIONS, "host swap selection", "unknown replacement policy 7"),
])
def test_a_name_outside_a_users_subset_is_one_line_saying_why(name, supported, user, words):
    with pytest.raises(ConfigError) as info:
        check_policy(name, supported, user)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_every_supported_name_passes():
    for subset in (RECLAIM_POLICIES, SWAP_SELECTIONS, REPLAY_POLICIES):
        for name in subset:
            assert check_policy(name, subset, "user") == name


def test_the_names_load_without_numba():
    # A scenario is checked against these names; that must not compile kernels.
    code = ("import sys, hvmem.replacement.names; "
            "sys.exit(any(m == 'numba' or m.startswith('numba.') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
