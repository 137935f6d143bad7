"""The exception hierarchy.

Exceptions are for misconfiguration, bad input and broken invariants, never for
ordinary outcomes: a translation that faults returns a typed ``Fault`` value.
Every ``HvmemError`` carries a message fit to print as the one line a user sees;
the CLI prints it and exits non-zero, never with a traceback.
"""

from __future__ import annotations


class HvmemError(Exception):
    """Base of every error hvmem raises on purpose."""


class ConfigError(HvmemError):
    """A value in a scenario, flag or argument is missing, malformed or out of range."""


class TraceError(HvmemError):
    """A memory-reference trace cannot be read (names file and line)."""


class OutOfMemoryError(HvmemError):
    """A memory (machine frames, guest-physical pages, table storage) is exhausted."""


class InvariantViolation(HvmemError):
    """A model invariant does not hold: a bug in hvmem, not a user error."""


class BackendError(HvmemError):
    """A real backend (QEMU, QMP, KSM, cgroups) failed or answered nonsense."""
