"""Checks of workload parameters, with the one error form they all share.

The parameter classes of the workloads (synthetic, replay, content) check
themselves when built and refuse a bad value with a one-line
:class:`~hvmem.errors.ConfigError` that names the class, the field, what was
expected and what was found::

    ZipfParams.alpha: expected a number >= 0 and <= 20, found -1

(the scenario loader puts the file and TOML path in front). A bool is never
taken for a number, though Python counts it as one, and a number must be
finite. Functions taking plain arguments (the trace readers' block and chunk
sizes, page shifts) say which argument and its bounds instead.
"""

from __future__ import annotations

import math
import numbers

from hvmem.errors import ConfigError
from hvmem.workloads.base import Fidelity

__all__ = [
    "check_arg",
    "check_fidelity",
    "check_frac",
    "check_int",
    "check_real",
    "fail",
    "is_int",
    "is_pos_real",
]


def fail(owner: object, name: str, expected: str, found: object) -> ConfigError:
    """The error for field ``name`` of ``owner`` (an object, or its class name)."""
    owner_name = owner if isinstance(owner, str) else type(owner).__name__
    return ConfigError(f"{owner_name}.{name}: expected {expected}, found {found!r}")


def is_int(v: object) -> bool:
    """An integer, and not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_pos_real(v: object) -> bool:
    """A finite number > 0, and not a bool."""
    return (isinstance(v, numbers.Real) and not isinstance(v, bool)
            and math.isfinite(float(v)) and float(v) > 0)


def check_int(owner: object, name: str, lo: int, hi: int | None = None) -> int:
    """Field ``name`` of ``owner`` as an int in ``[lo, hi]`` (no upper bound if ``hi`` is None)."""
    value = getattr(owner, name)
    if not is_int(value) or value < lo or (hi is not None and value > hi):
        bound = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        raise fail(owner, name, bound, value)
    return int(value)


def check_real(owner: object, name: str, lo: float, hi: float | None = None, *,
               lo_open: bool = False, optional: bool = False) -> float | None:
    """Field ``name`` of ``owner`` as a finite float >= ``lo`` (> with ``lo_open``), <= ``hi``.

    With ``optional``, None passes (and is returned).
    """
    value = getattr(owner, name)
    if value is None and optional:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > lo if lo_open else v >= lo) and (hi is None or v <= hi)
    if not ok:
        low = f"> {lo:g}" if lo_open else f">= {lo:g}"
        bound = f"a number {low}" if hi is None else f"a number {low} and <= {hi:g}"
        raise fail(owner, name, bound, value)
    return float(value)


def check_frac(owner: str, name: str, value: object) -> float:
    """``value`` (field ``name`` of class ``owner``) as a fraction in [0, 1]: an int or float."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise fail(owner, name, "a fraction in [0, 1]", value)
    return float(value)


def check_fidelity(owner: object) -> None:
    """``owner.fidelity`` is one of :class:`~hvmem.workloads.base.Fidelity`."""
    value = owner.fidelity  # type: ignore[attr-defined]
    if value not in tuple(Fidelity):
        raise fail(owner, "fidelity", "'page' or 'mmu'", value)


def check_arg(name: str, value: int, lo: int, hi: int | None = None) -> None:
    """A function's argument ``name`` lies in ``[lo, hi]`` (no upper bound if ``hi`` is None)."""
    if hi is None:
        if not lo <= value:
            raise ConfigError(f"{name} must be at least {lo}, got {value}")
    elif not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
