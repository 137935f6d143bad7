"""Tests of named random streams: determinism, independence, stable derivation."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvmem.core.rng import RngStreams


@pytest.fixture
def streams() -> RngStreams:
    return RngStreams(seed=0)


def draws(generator: np.random.Generator, n: int = 16) -> list[int]:
    return generator.integers(0, 2**63, size=n).tolist()


def test_same_name_returns_the_same_generator_object(streams):
    first = streams.stream("workload/vm1")
    assert streams.stream("workload/vm1") is first
    assert isinstance(first, np.random.Generator)
    assert isinstance(first.bit_generator, np.random.PCG64)


def test_same_seed_same_name_same_numbers():
    assert draws(RngStreams(7).stream("workload/vm1")) == draws(
        RngStreams(7).stream("workload/vm1")
    )


def test_streams_do_not_depend_on_other_names_or_request_order():
    """Adding a component does not shift another component's draws."""
    alone = RngStreams(3)
    crowded = RngStreams(3)
    for name in ["sharing/scan", "workload/vm0", "hypervisor/swap"]:
        draws(crowded.stream(name), 100)
    assert draws(alone.stream("workload/vm1")) == draws(crowded.stream("workload/vm1"))


def test_different_names_give_different_numbers(streams):
    assert draws(streams.stream("workload/vm1")) != draws(streams.stream("workload/vm2"))


def test_different_seeds_give_different_numbers():
    assert draws(RngStreams(1).stream("workload/vm1")) != draws(
        RngStreams(2).stream("workload/vm1")
    )


def test_streams_are_uncorrelated(streams):
    a = streams.stream("workload/vm1").random(20_000)
    b = streams.stream("workload/vm2").random(20_000)
    # Independent uniforms: |r| is about 1/sqrt(n) = 0.007; 0.05 is a very loose bound.
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.05


@given(st.integers(0, 2**64), st.text(min_size=1), st.text(min_size=1))
def test_distinct_names_distinct_kernel_seeds(seed, name_a, name_b):
    streams = RngStreams(seed)
    if name_a != name_b:
        assert streams.seed_for(name_a) != streams.seed_for(name_b)
    assert streams.seed_for(name_a) == RngStreams(seed).seed_for(name_a)
    assert 0 <= streams.seed_for(name_a) < 2**64


def test_seed_for_does_not_advance_or_echo_the_stream(streams):
    seed = streams.seed_for("sharing/scan")
    assert seed == streams.seed_for("sharing/scan")
    generator = streams.stream("sharing/scan")
    fresh = RngStreams(0).stream("sharing/scan")
    assert draws(generator) == draws(fresh)
    assert seed not in draws(RngStreams(0).stream("sharing/scan"), 1000)


def test_derivation_is_pinned():
    """Golden values: a change here changes every run's results (e.g. someone used hash())."""
    assert RngStreams(0).seed_for("workload/vm1") == 6406052523863336389
    assert RngStreams(42).seed_for("sharing/scan") == 14871622416688513734
    assert draws(RngStreams(0).stream("workload/vm1"), 3) == [
        8813611700656887071,
        5013505932633986124,
        8454199506017908005,
    ]


def test_derivation_ignores_python_hash_salt():
    code = (
        "from hvmem.core.rng import RngStreams;"
        "s = RngStreams(5);"
        "print(s.seed_for('workload/vm1'), s.stream('workload/vm1').integers(1 << 62))"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1


def test_names_lists_created_streams_in_order(streams):
    streams.stream("b")
    streams.stream("a")
    streams.stream("b")
    streams.seed_for("c")
    assert streams.names() == ("b", "a")
    assert streams.seed == 0


def test_bad_seeds_and_names_are_refused():
    with pytest.raises(ValueError):
        RngStreams(-1)
    with pytest.raises(TypeError):
        RngStreams(1.5)
    streams = RngStreams(0)
    with pytest.raises(ValueError):
        streams.stream("")
    with pytest.raises(TypeError):
        streams.stream(3)
