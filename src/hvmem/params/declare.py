"""Declaring fields: :class:`Param`, its kinds, and the checks every class runs.

See the package essay (:mod:`hvmem.params`).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from hvmem.errors import ConfigError
from hvmem.units import (
    NS_PER_MS,
    NS_PER_S,
    PAGE_SHIFT,
    PAGE_SIZE_BYTES,
    parse_size_bytes,
    parse_time_ns,
    size_text,
    time_text,
)

__all__ = [
    "REQUIRED",
    "OMIT",
    "Declared",
    "Kind",
    "Param",
    "check",
    "choice",
    "cost",
    "declarations",
    "declared",
    "fail",
    "flag",
    "frac",
    "is_declared",
    "key_of",
    "number",
    "show_raw",
    "size",
    "table",
    "text",
    "time",
    "whole",
]


class _Required:
    """The default of a field that has none."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a field that has none: it must be given.
REQUIRED: Any = _Required()


class Kind(StrEnum):
    """The kinds of value a field holds (see the module essay)."""

    FLAG = "flag"
    WHOLE = "whole"
    NUMBER = "number"
    CHOICE = "choice"
    TEXT = "text"
    SIZE = "size"
    TIME = "time"
    COST = "cost"
    TABLE = "table"


# Stored units of sizes and times, and what one of them is in bytes or ns.
_SIZE_SCALE = MappingProxyType({"bytes": 1, "pages": PAGE_SIZE_BYTES})
_TIME_SCALE = MappingProxyType({"ns": 1, "ms": NS_PER_MS, "s": NS_PER_S})
# Unit suffixes a size's or a time's key drops.
_SUFFIXES = ("_bytes", "_pages", "_ns", "_ms", "_s")
# fail()'s found when none is given: the field's own value, shown in the file's units.
_ITS_VALUE = object()
#: What :meth:`Param.dump` returns for a value a file leaves out.
OMIT = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    """One field's declaration (see the module essay for each attribute's use).

    Attributes:
        kind: what the field holds.
        doc: one line saying what it is.
        default: its default (``REQUIRED``: none).
        unit: the stored unit ("bytes", "pages", "ns", "s", "ms", "frac", "MiB/s"...).
        key: the TOML key; "" derives it from the field name, None: not in a file.
        lo, hi: bounds in stored units (None: the kind's own limit, for non-numbers).
        lo_open, hi_open: the bound itself is excluded.
        choices: the strings a choice may be.
        pattern: a regular expression a text must match in full.
        expect: what a text or table must be, for messages.
        optional: None is allowed.
        none: what None means, for the docs.
        none_word: the word a file writes for None.
        levels: words a whole number may also be (the class resolves them).
        table: the dataclass (or classes) of a table.
        array: an array of tables.
        flatten: a table whose keys sit in its parent's table.
        required: a file must give it (code may leave it to the default).
        owner: the key that sets a field not in a file.
        source: where the number comes from (``[OSDI02 §5.2]``), or "assumed".
        whole_pages: a size in bytes must be a whole number of 4 KiB pages.
    """

    kind: Kind
    doc: str
    default: Any = REQUIRED
    unit: str = ""
    key: str | None = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] = ()
    pattern: str | None = None
    expect: str = ""
    optional: bool = False
    none: str = ""
    none_word: str | None = None
    levels: tuple[str, ...] = ()
    table: type | tuple[type, ...] | None = None
    array: bool = False
    flatten: bool = False
    required: bool = False
    owner: str = ""
    source: str = ""
    whole_pages: bool = True

    # -- checking ------------------------------------------------------------

    def problem(self, value: Any) -> str | None:
        """What ``value`` should have been (an ``expected`` phrase), or None if it is fine."""
        if value is None:
            return None if self.optional else self.expected()
        kind = self.kind
        if kind is Kind.FLAG:
            ok = isinstance(value, bool)
        elif kind is Kind.WHOLE:
            ok = (isinstance(value, str) and value in self.levels) or (
                _is_int(value) and self._within(value))
        elif kind in (Kind.NUMBER, Kind.COST):
            ok = _is_real(value) and self._within(value)
        elif kind is Kind.CHOICE:
            ok = isinstance(value, str) and value in self.choices
        elif kind is Kind.TEXT:
            ok = isinstance(value, str) and (self.pattern is None
                                             or re.fullmatch(self.pattern, value) is not None)
        elif kind is Kind.SIZE:
            if (_is_int(value) and value >= 0 and self.unit == "bytes" and self.whole_pages
                    and value % PAGE_SIZE_BYTES):
                return "a whole number of 4 KiB pages"
            ok = _is_int(value) and self._within(value)
        elif kind is Kind.TIME:
            ok = (_is_int(value) if self.unit == "ns" else _is_real(value)) and self._within(value)
        else:
            ok = self.table is not None and (
                isinstance(value, tuple | list) if self.array else isinstance(value, self.table))
        return None if ok else self.expected()

    def _within(self, value: float) -> bool:
        lo, hi = self.lo, self.hi
        if lo is not None and (value <= lo if self.lo_open else value < lo):
            return False
        return not (hi is not None and (value >= hi if self.hi_open else value > hi))

    def expected(self) -> str:
        """What a valid value is, bounds included (``a whole number in 1..4094``)."""
        kind = self.kind
        if kind is Kind.FLAG:
            text = "true or false"
        elif kind is Kind.WHOLE:
            text = f"a whole number in {_whole(self.lo)}..{_whole(self.hi)}"
            if self.levels:
                text = f"{_options(self.levels)} or {text}"
        elif kind is Kind.NUMBER and self.unit == "frac" and (self.lo, self.hi) == (0, 1) and not (
                self.lo_open or self.hi_open):
            text = "a fraction in [0, 1]"
        elif kind is Kind.NUMBER:
            noun = "a fraction" if self.unit == "frac" else "a number"
            text = f"{noun} {self._range(_number)}".rstrip()
        elif kind is Kind.COST:
            text = (f"a non-negative number of ns or a time such as '80us', at most "
                    f"{time_text(int(self.hi or 0))}")
        elif kind is Kind.CHOICE:
            text = _options(self.choices)
        elif kind is Kind.TEXT:
            text = self.expect or "a string"
        elif kind in (Kind.SIZE, Kind.TIME):
            text = self._quantity_range()
        elif self.expect:
            text = self.expect
        elif self.array:
            text = "an array of tables"
        else:
            name = self.table.__name__ if isinstance(self.table, type) else "table"
            text = f"a {name}"
        if self.none_word:
            text += f" or {self.none_word!r}"
        return text

    def type_phrase(self) -> str:
        """What a value of the kind looks like, without bounds (for values that do not parse)."""
        if self.kind is Kind.SIZE:
            text = f"{self._article('size')} such as '4GiB'"
        elif self.kind is Kind.TIME:
            text = f"{self._article('time')} such as '15s' or '10min'"
        elif self.kind is Kind.COST:
            text = "a non-negative number of ns or a time such as '80us'"
        else:
            return self.expected()
        return text + (f" or {self.none_word!r}" if self.none_word else "")

    def _article(self, noun: str) -> str:
        return f"a positive {noun}" if (self.lo == 0 and self.lo_open) else f"a {noun}"

    def _range(self, fmt: Any) -> str:
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {fmt(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {fmt(self.hi)}")
        return " and ".join(parts)

    def _quantity_range(self) -> str:
        """``a positive size up to 64TiB``, ``a time from 1ms to 1h``, ``a size up to 8TiB``."""
        noun = "size" if self.kind is Kind.SIZE else "time"
        hi = f" up to {self.as_text(self.hi)}" if self.hi is not None else ""
        if self.lo is None or (self.lo == 0 and not self.lo_open):
            return f"a {noun}{hi}"
        if self.lo == 0:
            return f"a positive {noun}{hi}"
        low = f"more than {self.as_text(self.lo)}" if self.lo_open else self.as_text(self.lo)
        top = f" to {self.as_text(self.hi)}" if self.hi is not None else " or more"
        return f"a {noun} from {low}{top}"

    def as_text(self, value: float | None) -> str:
        """A stored size or time as a file writes it (``4GiB``, ``15s``)."""
        if value is None:
            return ""
        if self.kind is Kind.SIZE:
            return size_text(int(value) * _SIZE_SCALE[self.unit])
        time_ns = round(value * _TIME_SCALE[self.unit])
        return time_text(1 if value > 0 and time_ns == 0 else time_ns)  # positive stays so

    def show(self, value: Any) -> str:
        """A stored value for a message, as a file would write it."""
        if self.kind in (Kind.SIZE, Kind.TIME) and _is_real(value) and value >= 0 and (
                self.kind is Kind.TIME or _is_int(value)):
            return repr(self.as_text(value))
        if self.kind is Kind.TABLE and is_dataclass(value):
            return type(value).__name__
        return _short(value)

    # -- a file's value to the stored value, and back -------------------------

    def load(self, raw: Any) -> Any:
        """The stored value of a file's ``raw`` value (units converted; bounds not checked).

        Raises:
            ConfigError: ``raw`` is not a value of the kind (no path: the reader adds it).
        """
        if (self.none_word and isinstance(raw, str)
                and raw.strip().lower() == self.none_word):
            return None
        kind = self.kind
        if kind is Kind.SIZE:
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                raise ConfigError(f"expected {self.type_phrase()}, found {show_raw(raw)}")
            size_bytes = self._parse(parse_size_bytes, raw)
            if self.unit == "pages":
                if size_bytes % PAGE_SIZE_BYTES:
                    raise ConfigError(f"expected a whole number of 4 KiB pages, found "
                                      f"{show_raw(raw)}")
                return size_bytes >> PAGE_SHIFT
            return size_bytes
        if kind is Kind.TIME:
            if isinstance(raw, bool) or not isinstance(raw, str | int | float):
                raise ConfigError(f"expected {self.type_phrase()}, found {show_raw(raw)}")
            time_ns = self._parse(parse_time_ns, raw)
            if self.unit == "ns":
                return time_ns
            return self._finite(raw, lambda: time_ns / _TIME_SCALE[self.unit])
        if kind is Kind.COST:
            if isinstance(raw, str):
                time_ns = self._parse(parse_time_ns, raw)
                return self._finite(raw, lambda: float(time_ns))
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                raise ConfigError(f"expected {self.type_phrase()}, found {show_raw(raw)}")
            return self._finite(raw, lambda: float(raw))
        return raw

    def _finite(self, raw: Any, convert: Any) -> float:
        """``convert()``, a float; a value too large for one is out of bounds, not a crash."""
        try:
            return convert()
        except OverflowError:
            raise ConfigError(f"expected {self.expected()}, found {show_raw(raw)}") from None

    def _parse(self, parser: Any, raw: Any) -> int:
        try:
            return int(parser(raw))
        except ConfigError as err:
            if self.none_word:  # the word was misspelt more likely than the quantity
                raise ConfigError(f"expected {self.type_phrase()}, found {show_raw(raw)}"
                                  ) from None
            raise ConfigError(err.message) from None

    def dump(self, value: Any) -> Any:
        """A stored value as a file writes it (``OMIT``: leave the key out)."""
        if value is None:
            return self.none_word if self.none_word else OMIT
        if self.kind in (Kind.SIZE, Kind.TIME):
            return self.as_text(value)
        if self.kind is Kind.COST:
            return float(value)
        return _plain(value)


@dataclass(frozen=True, slots=True)
class Declared:
    """A declared field of a class: its name, its declaration and its TOML key.

    ``key`` is None for a field not in a file and "" for a flattened table.
    """

    name: str
    param: Param
    key: str | None


# ------------------------------------------------------------------ declaring


def _declare(param: Param, factory: Any = None) -> Any:
    metadata = MappingProxyType({"param": param})
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if param.default is REQUIRED:
        return field(metadata=metadata)
    return field(default=param.default, metadata=metadata)


def flag(default: bool | None, doc: str, **kw: Any) -> Any:
    """A true/false field."""
    return _declare(Param(kind=Kind.FLAG, doc=doc, default=default, **kw))


def whole(default: int | None, doc: str, *, lo: int, hi: int, **kw: Any) -> Any:
    """A whole number in ``lo..hi``."""
    return _declare(Param(kind=Kind.WHOLE, doc=doc, default=default, lo=lo, hi=hi, **kw))


def number(default: float | None, doc: str, *, lo: float, hi: float, **kw: Any) -> Any:
    """A real number within the bounds (NaN and infinities are refused)."""
    return _declare(Param(kind=Kind.NUMBER, doc=doc, default=default, lo=lo, hi=hi, **kw))


def frac(default: float | None, doc: str, *, lo: float = 0.0, hi: float = 1.0,
         **kw: Any) -> Any:
    """A fraction, ``[0, 1]`` unless bounded otherwise."""
    return number(default, doc, lo=lo, hi=hi, unit="frac", **kw)


def choice(default: str, choices: Sequence[str], doc: str, **kw: Any) -> Any:
    """One of a few strings."""
    return _declare(Param(kind=Kind.CHOICE, doc=doc, default=default,
                          choices=tuple(str(c) for c in choices), **kw))


def text(default: str, doc: str, **kw: Any) -> Any:
    """A string (``pattern``: a regular expression it must match, ``expect`` says which)."""
    return _declare(Param(kind=Kind.TEXT, doc=doc, default=default, **kw))


def size(default: int | None, doc: str, *, lo: int, hi: int, unit: str = "bytes",
         **kw: Any) -> Any:
    """A size stored in ``unit`` ("bytes" or "pages"), written as ``"4GiB"``."""
    return _declare(Param(kind=Kind.SIZE, doc=doc, default=default, unit=unit, lo=lo, hi=hi,
                          **kw))


def time(default: float | None, doc: str, *, lo: float, hi: float, unit: str = "ns",
         **kw: Any) -> Any:
    """A time stored in ``unit`` ("ns" as an int, "s" or "ms" as a float), written as ``"15s"``."""
    return _declare(Param(kind=Kind.TIME, doc=doc, default=default, unit=unit, lo=lo, hi=hi,
                          **kw))


def cost(default: float, doc: str, *, hi: float, **kw: Any) -> Any:
    """A cost in ns, written as a number of ns or a time (``"80us"``)."""
    return _declare(Param(kind=Kind.COST, doc=doc, default=default, unit="ns", lo=0.0, hi=hi,
                          **kw))


def table(cls: type | tuple[type, ...], doc: str, *, default: Any = REQUIRED,
          factory: Any = None, **kw: Any) -> Any:
    """A nested table (``array=True``: an array of them) of a declared class."""
    param = Param(kind=Kind.TABLE, doc=doc, default=default, table=cls, **kw)
    return _declare(param, factory)


# ------------------------------------------------------------------ walking the declarations

_CACHE: dict[type, tuple[Declared, ...]] = {}


def declarations(cls: type) -> tuple[Declared, ...]:
    """The declared fields of a dataclass, in declaration order."""
    found = _CACHE.get(cls)
    if found is None:
        found = tuple(Declared(f.name, f.metadata["param"], key_of(f.name, f.metadata["param"]))
                      for f in fields(cls) if "param" in f.metadata)
        _CACHE[cls] = found
    return found


def declared(cls: type, name: str) -> Declared:
    """The declaration of one field (KeyError: the field is not declared)."""
    for d in declarations(cls):
        if d.name == name:
            return d
    raise KeyError(f"{cls.__name__}.{name}")


def key_of(name: str, param: Param) -> str | None:
    """The TOML key of field ``name`` (None: not in a file; "": a flattened table)."""
    if param.key is None or param.key:
        return param.key
    if param.flatten:
        return ""
    if param.kind in (Kind.SIZE, Kind.TIME):
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                return name[: -len(suffix)]
    return name


def is_declared(cls: Any) -> bool:
    """True for a dataclass with declared fields."""
    return isinstance(cls, type) and is_dataclass(cls) and bool(declarations(cls))


def check(obj: Any, *, skip: Sequence[str] = ()) -> None:
    """Check every declared field of ``obj`` (called from its ``__post_init__``).

    Args:
        obj: the object.
        skip: fields another object checks (it knows more about where they sit).

    Raises:
        ConfigError: the first field whose value is of the wrong kind, out of
            bounds or not a choice, at ``(ClassName, field)``.
    """
    for d in declarations(type(obj)):
        if d.name in skip:
            continue
        value = getattr(obj, d.name)
        wanted = d.param.problem(value)
        if wanted is not None:
            raise ConfigError(f"expected {wanted}, found {d.param.show(value)}",
                              path=(type(obj).__name__, d.name))


def fail(obj: Any, name: str, expected: str, found: Any = _ITS_VALUE) -> ConfigError:
    """A cross-field rule's error at ``(ClassName, name)``, the value shown as a file writes it.

    Args:
        obj: the object whose field is wrong.
        name: the field (a declared one shows its value in the file's units).
        expected: what the value should have been.
        found: the text for what was found, if not the field's value.
    """
    if found is _ITS_VALUE:
        value = getattr(obj, name)
        try:
            found = declared(type(obj), name).param.show(value)
        except KeyError:
            found = _short(value)
    return ConfigError(f"expected {expected}, found {found}", path=(type(obj).__name__, name))


# ------------------------------------------------------------------ values


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:  # an integer beyond any float (10**400): no number a field takes
        return False


def _short(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an integer of more digits than Python prints
        return f"an integer of about {int(value).bit_length() * 0.30103:.0f} digits"  # type: ignore[call-overload]
    except RecursionError:
        return "a value nested too deeply to show"
    return text if len(text) <= 60 else text[:57] + "..."


def show_raw(value: object) -> str:
    """A file's value for a message: short, on one line."""
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
        return "an array of tables"
    return _short(value)


def _whole(value: float | None) -> str:
    return "" if value is None else str(int(value))


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e7:
        return str(int(value))
    return f"{value:g}".replace("e+", "e")


def _options(options: Sequence[str]) -> str:
    quoted = [repr(o) for o in options]
    if len(quoted) <= 2:
        return " or ".join(quoted)
    return "one of " + ", ".join(quoted)


def _plain(value: Any) -> Any:
    """Read-only mappings and tuples back to dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # a StrEnum member as the plain string a file holds
    return value
