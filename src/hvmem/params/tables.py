"""Reading and writing tables: TOML values to constructor arguments and back.

See the package essay (:mod:`hvmem.params`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields, replace
from typing import Any

from hvmem.errors import ConfigError
from hvmem.params.declare import (
    OMIT,
    Kind,
    Param,
    declarations,
    declared,
    is_declared,
    key_of,
    show_raw,
)

__all__ = ["build", "construct", "keys", "read", "refuse_unknown", "relocate", "toml_path",
           "write"]


# ------------------------------------------------------------------ reading a table


def refuse_unknown(data: Mapping[str, Any], known: Sequence[str] | set[str],
                   path: Sequence[str | int]) -> None:
    """Refuse a key of ``data`` that is not ``known``, naming the closest known one.

    Raises:
        ConfigError: ``unknown field (did you mean 'memory'?)``, or the known keys
            when none is close.
    """
    for key in data:
        if key in known:
            continue
        close = difflib.get_close_matches(key, list(known), n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
        elif known:
            hint = f"known here: {', '.join(sorted(known))}"
        else:
            hint = "nothing is set here"
        raise ConfigError(f"unknown field ({hint})", path=(*path, key))


def _table_of(data: Any, path: Sequence[str | int]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table, found {show_raw(data)}", path=tuple(path))
    return data


def keys(cls: type) -> set[str]:
    """The keys a table of ``cls`` may hold at its top level (flattened tables included)."""
    found: set[str] = set()
    for d in declarations(cls):
        if d.key == "" and isinstance(d.param.table, type):
            found |= keys(d.param.table)
        elif d.key:
            found.add(d.key.split(".")[0])
    return found


def read(cls: type, data: Any, path: Sequence[str | int] = (), *,
         skip: Sequence[str] = (), extra: Sequence[str] = ()) -> dict[str, Any]:
    """Constructor arguments for ``cls`` from the TOML table ``data``.

    Every declared key ``data`` holds is converted to its stored unit; keys left
    out are left out (the class's defaults apply); nested tables are built
    (:func:`build`). Fields named in ``skip`` are the caller's to read (their
    keys are known here); ``extra`` are keys the caller reads that are no field.

    Raises:
        ConfigError: at the TOML path of the key: an unknown key, a missing
            required one, or a value that is not of its kind.
    """
    where = tuple(path)
    table = _table_of(data, where)
    known = keys(cls) | set(extra)
    owners = _owned(cls)
    for key in table:
        if key not in known and key in owners:
            raise ConfigError(f"unknown field here ({owners[key]} sets it)", path=(*where, key))
    refuse_unknown(table, known, where)
    kwargs: dict[str, Any] = {}
    for d in declarations(cls):
        if d.key is None or d.name in skip:
            continue
        p = d.param
        if d.key == "":  # a flattened table: its keys are this table's
            inner = p.table if isinstance(p.table, type) else None
            if inner is not None:
                mine = {k: v for k, v in table.items() if k in keys(inner)}
                if mine:
                    kwargs[d.name] = build(inner, mine, where)
            continue
        parts = d.key.split(".")
        holder: Mapping[str, Any] = table
        for depth, part in enumerate(parts[:-1]):
            if part not in holder:
                holder = {}
                break
            holder = _table_of(holder[part], (*where, *parts[: depth + 1]))
            refuse_unknown(holder, _sub_keys(cls, parts[: depth + 1]),
                           (*where, *parts[: depth + 1]))
        at = (*where, *parts)
        if parts[-1] not in holder:
            if p.required or not _has_default(cls, d.name):
                raise ConfigError(f"expected {p.type_phrase()}, found nothing (the field is "
                                  "required)", path=at)
            continue
        raw = holder[parts[-1]]
        if p.kind is Kind.TABLE:
            inner = p.table if isinstance(p.table, type) else None
            if inner is None:  # one of several classes: the class (or the caller) decides
                kwargs[d.name] = raw
                continue
            if p.array:
                kwargs[d.name] = tuple(build(inner, item, (*at, i))
                                       for i, item in enumerate(_array_of(raw, p, at)))
            else:
                kwargs[d.name] = build(inner, raw, at)
            continue
        try:
            kwargs[d.name] = p.load(raw)
        except ConfigError as err:
            raise ConfigError(err.message, path=at) from None
    return kwargs


def _owned(cls: type) -> dict[str, str]:
    """Names of the fields another key sets (``tax_frac``), flattened tables included."""
    owned: dict[str, str] = {}
    for d in declarations(cls):
        if d.key is None and d.param.owner:
            bare = key_of(d.name, replace(d.param, key=""))
            owned[d.name] = owned[bare or d.name] = d.param.owner
        elif d.key == "" and isinstance(d.param.table, type):
            owned.update(_owned(d.param.table))
    return owned


def _sub_keys(cls: type, prefix: Sequence[str]) -> set[str]:
    n = len(prefix)
    return {d.key.split(".")[n] for d in declarations(cls)
            if d.key and d.key.split(".")[:n] == list(prefix) and len(d.key.split(".")) > n}


def _has_default(cls: type, name: str) -> bool:
    for f in fields(cls):
        if f.name == name:
            return f.default is not MISSING or f.default_factory is not MISSING
    return False


def _array_of(raw: Any, p: Param, at: tuple[str | int, ...]) -> list[Any]:
    if not isinstance(raw, list) or not all(isinstance(v, Mapping) for v in raw):
        raise ConfigError(f"expected {p.expected()}, found {show_raw(raw)}", path=at)
    return raw


def construct(cls: type, kwargs: Mapping[str, Any], path: Sequence[str | int] = ()) -> Any:
    """``cls(**kwargs)``, a ConfigError of its checks moved to the TOML path of its table."""
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise relocate(err, cls, kwargs, path) from None


def build(cls: type, data: Any, path: Sequence[str | int] = (), *,
          given: Mapping[str, Any] | None = None, skip: Sequence[str] = (),
          extra: Sequence[str] = ()) -> Any:
    """An object of ``cls`` from its TOML table (:func:`read`, then the class's checks).

    Args:
        cls: a declared dataclass.
        data: its table.
        path: the table's TOML path, for errors.
        given: arguments the caller supplies (fields not in a file, or read by it).
        skip: fields the caller reads (as :func:`read`).
        extra: keys the caller reads that are no field (as :func:`read`).

    Raises:
        ConfigError: one line naming the TOML path of the wrong value.
    """
    kwargs = read(cls, data, path, skip=skip, extra=extra)
    kwargs.update(given or {})
    return construct(cls, kwargs, path)


def relocate(err: ConfigError, cls: type, values: Any,
             path: Sequence[str | int]) -> ConfigError:
    """A class's error (path ``(ClassName, field, ...)``) at the TOML path of that field.

    ``values`` are the constructor's arguments (or the object), which tell the
    classes of nested values (a VM's workload is one of several).
    """
    if err.path[:1] != (cls.__name__,):
        return ConfigError(err.message, path=(*path, *err.path), file=err.file)
    return ConfigError(err.message, path=(*path, *toml_path(cls, values, err.path[1:])),
                       file=err.file)


def toml_path(cls: type | None, values: Any, fields_path: Sequence[str | int]
              ) -> tuple[str | int, ...]:
    """The TOML keys of a path of field names and indices, through the declarations."""
    out: list[str | int] = []
    current: Any = values
    for i, part in enumerate(fields_path):
        if isinstance(part, int):
            out.append(part)
            current = _index(current, part)
            cls = type(current) if is_declared(type(current)) else None
            continue
        d = None
        if cls is not None:
            try:
                d = declared(cls, part)
            except KeyError:
                d = None
        if d is None:
            out.extend(fields_path[i:])
            break
        if d.key:
            out.extend(d.key.split("."))
        elif d.key is None:
            out.append(part)
        current = current.get(part) if isinstance(current, Mapping) else getattr(current, part,
                                                                                   None)
        if is_declared(type(current)):
            cls = type(current)
        elif isinstance(d.param.table, type):
            cls = d.param.table
        else:
            cls = None
    return tuple(out)


def _index(value: Any, i: int) -> Any:
    try:
        return value[i]
    except (TypeError, IndexError, KeyError):
        return None


# ------------------------------------------------------------------ writing a table


def write(obj: Any, *, skip: Sequence[str] = ()) -> dict[str, Any]:
    """``obj`` as a TOML table of its declared keys, every value explicit.

    Plain dicts, lists, strings, numbers and booleans only; :func:`read` reads
    it back to an equal object. None is written as its ``none_word`` or left out.
    """
    out: dict[str, Any] = {}
    for d in declarations(type(obj)):
        if d.key is None or d.name in skip:
            continue
        value = getattr(obj, d.name)
        p = d.param
        if p.kind is Kind.TABLE:
            if value is None:
                continue
            if d.key == "":
                out.update(write(value))
                continue
            written: Any = [write(v) for v in value] if p.array else write(value)
        else:
            written = p.dump(value)
            if written is OMIT:
                continue
        holder = out
        parts = d.key.split(".")
        for part in parts[:-1]:
            holder = holder.setdefault(part, {})
        holder[parts[-1]] = written
    return out


