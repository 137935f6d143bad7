"""The exception hierarchy.

Exceptions are for misconfiguration, bad input and broken invariants, never for
ordinary outcomes: a translation that faults returns a typed ``Fault`` value.
Every ``HvmemError`` carries a message fit to print as the one line a user sees;
the CLI prints it and exits non-zero, never with a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class HvmemError(Exception):
    """Base of every error hvmem raises on purpose."""


class ConfigError(HvmemError):
    """A value in a scenario, flag or argument is missing, malformed or out of range.

    Where the value sits is data, not text: ``path`` is the way to it, names and
    indices (``("vm", 2, "workload", "alpha")``; a class built in code starts it
    with its own name, ``("VmConfig", "memory_bytes")``), and ``file`` the file
    it came from. The one line a user sees joins them::

        demo.toml: vm[2].workload.alpha: expected a number >= 0 and <= 20, found 30

    Attributes:
        message: what is wrong (``expected ..., found ...``), without the place.
        path: the way to the value; empty when the message says it all.
        file: the file the value came from, or None.
    """

    def __init__(self, message: str, *, path: Sequence[str | int] = (),
                 file: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = tuple(path)
        self.file = file

    def __str__(self) -> str:
        where = render_path(self.path)
        text = f"{where}: {self.message}" if where else self.message
        return f"{self.file}: {text}" if self.file else text

    def within(self, *outer: str | int, file: str | None = None) -> ConfigError:
        """The same error one level further out: ``outer`` put before its path."""
        return ConfigError(self.message, path=(*outer, *self.path), file=file or self.file)


class TraceError(HvmemError):
    """A memory-reference trace cannot be read (names file and line)."""


class OutOfMemoryError(HvmemError):
    """A memory (machine frames, guest-physical pages, table storage) is exhausted."""


class GuestOutOfMemoryError(OutOfMemoryError):
    """A guest's own physical memory is exhausted: its VM is too small, not the host.

    The guest kernel does not know its VM's name; the simulation that runs it sets
    ``vm`` before the error leaves the tick, so the message can name ``vm[i].memory``.
    """

    vm: str | None = None


class InvariantViolation(HvmemError):
    """A model invariant does not hold: a bug in hvmem, not a user error."""


class BackendError(HvmemError):
    """A real backend (QEMU, QMP, KSM, cgroups) failed or answered nonsense."""


def render_path(path: Sequence[str | int]) -> str:
    """A path as written in messages: ``("vm", 2, "workload")`` -> ``vm[2].workload``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text
