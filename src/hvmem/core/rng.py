"""Named random streams: one scenario seed, one independent generator per component.

Why named streams. A run has a single seed, but if every component drew from one
shared generator, each draw would depend on every draw made before it, by anyone.
Adding a VM, turning on the sharing scanner or changing how many pages a
workload samples per tick would shift the numbers every other component sees,
and two runs meant to differ in one knob would differ everywhere. Instead each
component asks for its own stream by a stable name::

    streams = RngStreams(seed=42)
    rng = streams.stream("workload/vm1")      # numpy.random.Generator
    kernel_seed = streams.seed_for("sharing/scan")  # 64-bit int for a Numba kernel

and a stream depends only on (seed, name). Adding a component adds a name; it
does not move anyone else's draws. Names are free text; the convention is
``"<component>/<instance>"``, such as ``"workload/vm1"`` or ``"hypervisor/swap"``.

Derivation. The name is digested with SHA-256 (hashlib, so the digest is the
same in every process; Python's ``hash()`` is salted per process and must never
be used here) and passed, with a purpose tag, as the ``spawn_key`` of a NumPy
:class:`~numpy.random.SeedSequence` whose entropy is the scenario seed. That is
the mechanism NumPy itself uses for independent child streams: SeedSequence
mixes entropy and spawn key so that distinct keys give statistically
independent states. Generators use the PCG64 bit generator, named explicitly so
that a change of NumPy's default cannot change results.

The purpose tag keeps the two kinds of output apart: ``seed_for(name)`` is not
drawn from the same state as ``stream(name)``, so a component may use both
without the kernel's numbers echoing the generator's.

Invariants:

* ``stream(name)`` returns the same Generator object on every call of one
  ``RngStreams`` (its state advances as it is used);
* two ``RngStreams`` with the same seed give identical streams for a name, in
  any process and whatever other names were requested, in any order;
* ``seed_for(name)`` is a pure function of (seed, name), in ``[0, 2**64)``.

Reproducibility holds for a fixed NumPy version: SeedSequence and PCG64 are
stable across versions, but NumPy does not promise that every Generator method
keeps drawing the same values forever.
"""

from __future__ import annotations

import hashlib
import operator

import numpy as np

__all__ = ["RngStreams"]

# Purpose tags in the spawn key: a Generator's state and a kernel seed for the
# same name come from different children of the scenario seed.
_PURPOSE_GENERATOR = 0
_PURPOSE_KERNEL_SEED = 1


class RngStreams:
    """One scenario seed split into named, independent, reproducible random streams.

    Args:
        seed: the scenario seed; a non-negative integer.

    Raises:
        ValueError: the seed is negative.
        TypeError: the seed is not an integer.
    """

    def __init__(self, seed: int) -> None:
        seed = operator.index(seed)
        if seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        self._seed = seed
        self._streams: dict[str, np.random.Generator] = {}

    @property
    def seed(self) -> int:
        """The scenario seed every stream is derived from."""
        return self._seed

    def stream(self, name: str) -> np.random.Generator:
        """Return the generator for ``name``, creating it on first use.

        Args:
            name: a stable component name, such as ``"workload/vm1"``.

        Returns:
            The same :class:`numpy.random.Generator` object on every call with
            this name; its state advances as it is drawn from.
        """
        generator = self._streams.get(name)
        if generator is None:
            sequence = self._sequence(name, _PURPOSE_GENERATOR)
            generator = np.random.Generator(np.random.PCG64(sequence))
            self._streams[name] = generator
        return generator

    def seed_for(self, name: str) -> int:
        """Return a 64-bit seed for code that draws its own numbers (Numba kernels).

        Numba kernels cannot take a NumPy Generator, so they get an integer and run
        their own generator (for example splitmix64) from it. ``numba``'s
        ``np.random.seed`` takes 32 bits: pass ``seed_for(name) & 0xFFFF_FFFF``.

        Args:
            name: a stable component name, such as ``"sharing/scan"``.

        Returns:
            An integer in ``[0, 2**64)``, a pure function of (seed, name); it may be 0.
        """
        state = self._sequence(name, _PURPOSE_KERNEL_SEED).generate_state(1, dtype=np.uint64)
        return int(state[0])

    def names(self) -> tuple[str, ...]:
        """Return the names of the generators created so far, in creation order."""
        return tuple(self._streams)

    def _sequence(self, name: str, purpose: int) -> np.random.SeedSequence:
        if not isinstance(name, str):
            raise TypeError(f"stream name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("stream name must not be empty")
        return np.random.SeedSequence(entropy=self._seed, spawn_key=(_name_key(name), purpose))


def _name_key(name: str) -> int:
    """Digest a stream name into a 256-bit integer that is the same in every process."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest(), "little")
