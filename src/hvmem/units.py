"""Sizes and times with units: the only place where units are converted.

Conventions used everywhere else (see docs/architecture.md):

* memory is counted in pages (``*_pages``, 4 KiB base pages) inside the model and
  in MiB (``*_mib``) at the edges; raw byte counts are ``*_bytes``;
* simulated time is integer nanoseconds (``*_ns``); seconds (``*_s``) appear only
  in configuration and reports.

Text forms accepted by the parsers: sizes as ``"4GiB"``, ``"512 MiB"``, ``"2M"``
(binary multiples: hvmem sizes memory, and memory comes in powers of two),
``"4096"`` (bytes); times as ``"15s"``, ``"250ns"``, ``"1.5ms"``, ``"2min"``,
``"1h"``. Anything else raises :class:`~hvmem.errors.ConfigError` naming the text.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from hvmem.errors import ConfigError

PAGE_SHIFT = 12
#: Base page size of x86-64, in bytes.
PAGE_SIZE_BYTES = 1 << PAGE_SHIFT

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40

NS_PER_US = 1_000
NS_PER_MS = 1_000_000
NS_PER_S = 1_000_000_000

_SIZE_UNITS_BYTES = {
    "": 1,
    "b": 1,
    "k": KIB,
    "kb": KIB,
    "kib": KIB,
    "m": MIB,
    "mb": MIB,
    "mib": MIB,
    "g": GIB,
    "gb": GIB,
    "gib": GIB,
    "t": TIB,
    "tb": TIB,
    "tib": TIB,
}

_TIME_UNITS_NS = {
    "ns": 1,
    "us": NS_PER_US,
    "µs": NS_PER_US,
    "ms": NS_PER_MS,
    "s": NS_PER_S,
    "sec": NS_PER_S,
    "min": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
}

_NUMBER_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Zµ]*)\s*$")


def parse_size_bytes(text: str | int, *, what: str = "size") -> int:
    """Parse a memory size such as ``"4GiB"`` into bytes.

    Args:
        text: the size; an ``int`` is taken as bytes.
        what: the name of the field, used in the error message.

    Returns:
        The size in bytes (a whole number).

    Raises:
        ConfigError: the text is not a non-negative size with a known unit, or
            does not come to a whole number of bytes.
    """
    if isinstance(text, bool):
        raise ConfigError(f"expected a size such as '4GiB', found {text!r}", path=(what,))
    if isinstance(text, int):
        if text < 0:
            raise ConfigError(f"expected a non-negative size, found {text}", path=(what,))
        return text
    match = _NUMBER_UNIT.match(str(text))
    if not match:
        raise ConfigError(f"expected a size such as '4GiB' or '512MiB', found {text!r}",
                          path=(what,))
    number, unit = match.groups()
    scale = _SIZE_UNITS_BYTES.get(unit.lower())
    if scale is None:
        raise ConfigError(
            f"unknown size unit {unit!r} in {text!r} (use B, KiB, MiB, GiB or TiB)",
            path=(what,),
        )
    # Exact arithmetic: a float would round long byte counts and overflow on huge ones.
    value = Fraction(number) * scale
    if value.denominator != 1:
        raise ConfigError(f"{text!r} is not a whole number of bytes", path=(what,))
    return int(value)


def parse_size_pages(text: str | int, *, what: str = "size") -> int:
    """Parse a memory size into 4 KiB pages; it must be a whole number of pages."""
    size_bytes = parse_size_bytes(text, what=what)
    if size_bytes % PAGE_SIZE_BYTES:
        raise ConfigError(f"{text!r} is not a whole number of 4 KiB pages", path=(what,))
    return size_bytes >> PAGE_SHIFT


def parse_time_ns(text: str | int | float, *, what: str = "time") -> int:
    """Parse a duration such as ``"15s"`` or ``"250ns"`` into integer nanoseconds.

    Args:
        text: the duration; a bare number must carry a unit (a bare ``0`` is allowed).
        what: the name of the field, used in the error message.

    Returns:
        The duration in nanoseconds, rounded to the nearest nanosecond.

    Raises:
        ConfigError: the text is not a non-negative duration with a known unit.
    """
    if isinstance(text, bool):
        raise ConfigError(f"expected a time such as '15s', found {text!r}", path=(what,))
    if isinstance(text, int | float):
        if text == 0:
            return 0
        raise ConfigError(f"a time needs a unit, such as '{text}s', found {text!r}",
                          path=(what,))
    match = _NUMBER_UNIT.match(str(text))
    if not match:
        raise ConfigError(f"expected a time such as '15s' or '250ns', found {text!r}",
                          path=(what,))
    number, unit = match.groups()
    if unit == "":
        if float(number) == 0:
            return 0
        raise ConfigError(f"a time needs a unit (ns, us, ms, s, min, h), found {text!r}",
                          path=(what,))
    scale = _TIME_UNITS_NS.get(unit if unit == "µs" else unit.lower())
    if scale is None:
        raise ConfigError(
            f"unknown time unit {unit!r} in {text!r} (use ns, us, ms, s, min or h)",
            path=(what,),
        )
    return round(Fraction(number) * scale)


def format_size(size_bytes: int | float) -> str:
    """Format a byte count with the largest binary unit that keeps it >= 1 (``"1.5 GiB"``)."""
    value = float(size_bytes)
    for unit, scale in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(value) >= scale:
            scaled = value / scale
            return f"{scaled:.0f} {unit}" if scaled == int(scaled) else f"{scaled:.1f} {unit}"
    return f"{value:.0f} B"


def format_time(time_ns: int | float) -> str:
    """Format nanoseconds with a readable unit (``"250 ns"``, ``"1.5 ms"``, ``"15 s"``)."""
    value = float(time_ns)
    for unit, scale in (("h", 3600 * NS_PER_S), ("s", NS_PER_S), ("ms", NS_PER_MS),
                        ("us", NS_PER_US)):
        if abs(value) >= scale:
            scaled = value / scale
            text = f"{scaled:.0f}" if scaled == int(scaled) else _significant(scaled, 3)
            return f"{text} {unit}"
    return f"{value:.0f} ns"


def size_text(size_bytes: int) -> str:
    """An exact size as a scenario writes it: the largest binary unit that divides it.

    ``parse_size_bytes(size_text(n)) == n`` for every ``n >= 0`` (``"4GiB"``,
    ``"1028MiB"``, ``"4100B"``).
    """
    for unit, scale in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size_bytes and size_bytes % scale == 0:
            return f"{size_bytes // scale}{unit}"
    return f"{size_bytes}B"


def time_text(time_ns: int) -> str:
    """An exact time as a scenario writes it: the largest unit that divides it.

    ``parse_time_ns(time_text(n)) == n`` for every ``n >= 0`` (``"15s"``,
    ``"10min"``, ``"1500us"``, ``"0s"``).
    """
    if time_ns == 0:
        return "0s"
    for unit, scale in (("h", 3600 * NS_PER_S), ("min", 60 * NS_PER_S), ("s", NS_PER_S),
                        ("ms", NS_PER_MS), ("us", NS_PER_US)):
        if time_ns and time_ns % scale == 0:
            return f"{time_ns // scale}{unit}"
    return f"{time_ns}ns"


def _significant(value: float, digits: int) -> str:
    """Format ``value`` (``abs(value) >= 1``) to ``digits`` significant digits, never as 1e+03."""
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def ns_to_s(time_ns: int | float) -> float:
    """Convert nanoseconds to seconds (the one way hvmem does it)."""
    return time_ns / NS_PER_S


def pages_to_mib(pages: int | float) -> float:
    """Convert 4 KiB pages to MiB."""
    return pages * PAGE_SIZE_BYTES / MIB


def mib_to_pages(size_mib: float) -> int:
    """Convert MiB to whole 4 KiB pages (rounding down)."""
    return int(size_mib * MIB) >> PAGE_SHIFT
