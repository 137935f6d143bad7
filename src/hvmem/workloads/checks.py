"""The rules between workload parameters, with the one error form they share.

Each field of the workload parameter classes (synthetic, replay, content) is
declared with its kind and bounds (:mod:`hvmem.params`), and the class checks
those on construction. What a declaration cannot say is a rule between fields
(a start page inside the region, exactly one of three rates); those checks are
here, and refuse a bad value the same way: a one-line
:class:`~hvmem.errors.ConfigError` whose path names the class and the field::

    IdleParams.housekeeping_pages: expected an integer in [1, 4], found 16

(the scenario loader moves the path to the file's: ``vm[0].workload.housekeeping_pages``).
Functions taking plain arguments (the trace readers' block and chunk sizes,
page shifts) say which argument and its bounds instead.
"""

from __future__ import annotations

import numbers

from hvmem.errors import ConfigError

__all__ = ["check_arg", "check_int", "fail"]


def fail(owner: object, name: str | int, expected: str, found: object) -> ConfigError:
    """The error for field ``name`` of ``owner``.

    Args:
        owner: the object, its class name, or the path before ``name``
            (``("PhasesParams", "phases", 0)``).
        name: the field (or an index).
        expected: what the value should have been.
        found: the value found (shown with ``repr``).
    """
    if isinstance(owner, tuple):
        head: tuple[str | int, ...] = owner
    else:
        head = (owner if isinstance(owner, str) else type(owner).__name__,)
    return ConfigError(f"expected {expected}, found {found!r}", path=(*head, name))


def check_int(owner: object, name: str, lo: int, hi: int) -> int:
    """Field ``name`` of ``owner`` as an int in ``[lo, hi]``, bounds set by other fields."""
    value = getattr(owner, name)
    if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
            or not lo <= value <= hi):
        raise fail(owner, name, f"an integer in [{lo}, {hi}]", value)
    return int(value)


def check_arg(name: str, value: int, lo: int, hi: int | None = None) -> None:
    """A function's argument ``name`` lies in ``[lo, hi]`` (no upper bound if ``hi`` is None)."""
    if hi is None:
        if not lo <= value:
            raise ConfigError(f"{name} must be at least {lo}, got {value}")
    elif not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
