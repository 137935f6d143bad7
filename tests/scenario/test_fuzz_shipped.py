"""Fuzzing the loader with mutants of the shipped scenarios.

Each example takes one shipped scenario (``src/hvmem/scenarios/*.toml``), picks a
place in its document (any key of any table, any item of any array) and mutates it:
drops the key, changes the value's type, or puts an edge value there (NaN, infinities,
2**63, 10**400, ``"1EiB"``, ``"1ns"``, a time of 2**64 ns, values nested hundreds of
levels deep, a string of 100 000 characters); or it damages the file's bytes (a byte
that is not UTF-8, a NUL, UTF-16, a cut in the middle). For every mutant the loader
either

* refuses it with the project's own :class:`~hvmem.errors.ConfigError` (one line,
  naming the file), or
* accepts it, and the scenario survives ``dump_scenario`` and ``parse_scenario``
  unchanged.

Anything else (a ``TypeError``, an ``OverflowError``, a ``RecursionError``, a
scenario that reads back different) fails the test with the mutant that caused it.

In the suite it runs derandomized (the same examples every run) at a size that
takes well under 30 s. To fuzz longer, with fresh random examples each run::

    HVMEM_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest -q tests/scenario/test_fuzz_shipped.py
"""

from __future__ import annotations

import copy
import math
import os
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError
from hvmem.scenario.loader import dump_scenario, load_scenario, parse_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "src" / "hvmem" / "scenarios"
SHIPPED = {p.stem: p for p in sorted(SCENARIOS.glob("*.toml"))}
TEXTS = {name: path.read_bytes() for name, path in SHIPPED.items()}
DOCS = {name: tomllib.loads(text.decode()) for name, text in TEXTS.items()}

#: Examples per run; set HVMEM_FUZZ_EXAMPLES for more (and fresh random ones).
LONG_RUN = os.environ.get("HVMEM_FUZZ_EXAMPLES")
EXAMPLES = int(LONG_RUN) if LONG_RUN else 300
FUZZ = settings(max_examples=EXAMPLES, derandomize=not LONG_RUN, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _deep(levels: int) -> Any:
    value: Any = 1
    for k in range(levels):
        value = [value] if k % 2 else {"a": value}
    return value


#: Edge values put in place of a value.
EDGES: list[Any] = [
    math.nan, math.inf, -math.inf, 0, -1, 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**400, -(10**400),
    0.0, -0.0, 1e-300, 1e308, 0.5, 1.5, True, False, "", " ", "x", "1EiB", "1PiB", "64TiB",
    "1ns", "0s", "-1s", "1e3s", "18446744073709551615ns", "18446744073709551616ns",
    "9223372036854775807ns", "2592000000000000ns", "2591999999999999ns", "1.0000000001s",
    "nan", "inf", "unlimited", "never", "low", "high", "page", "mmu", "random", "\x00",
    "é", "x" * 100_000, [], [1], {}, {"kind": "zipf"}, _deep(40), _deep(500),
]


def _places(value: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a key or an array item in a document."""
    found = []
    if isinstance(value, dict):
        for key, child in value.items():
            found.append((*path, key))
            found.extend(_places(child, (*path, key)))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found.append((*path, i))
            found.extend(_places(child, (*path, i)))
    return found


PLACES = {name: _places(doc) for name, doc in DOCS.items()}


def _holder(doc: Any, path: tuple) -> Any:
    for part in path[:-1]:
        doc = doc[part]
    return doc


def _type_changed(value: Any) -> Any:
    """The value as another TOML type would hold it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return {"0": value[0]} if value else "[]"
    return list(value.values())


@st.composite
def mutants(draw) -> tuple[str, dict[str, Any], str]:
    name = draw(st.sampled_from(sorted(DOCS)))
    doc = copy.deepcopy(DOCS[name])
    path = draw(st.sampled_from(PLACES[name]))
    holder = _holder(doc, path)
    how = draw(st.sampled_from(["drop", "type", "edge", "edge", "edge", "add"]))
    key = path[-1]
    if how == "drop":
        if isinstance(holder, list):
            holder.pop(key)
        else:
            del holder[key]
    elif how == "type":
        holder[key] = _type_changed(holder[key])
    elif how == "add" and isinstance(holder, dict):
        holder[draw(st.sampled_from(["extra", "count", "kind", "memory", "duration"]))] = draw(
            st.sampled_from(EDGES))
    else:
        holder[key] = draw(st.sampled_from(EDGES))
    return name, doc, f"{how} at {path}"


def _accepted_or_refused(doc: dict[str, Any], file: str) -> None:
    try:
        scenario = parse_scenario(doc, file)
    except ConfigError as err:
        assert str(err).startswith(f"{file}: ")
        assert "\n" not in str(err)
        return
    dumped = dump_scenario(scenario)
    assert parse_scenario(dumped, file) == scenario
    assert dump_scenario(parse_scenario(dumped, file)) == dumped


@FUZZ
@given(mutants())
def test_a_mutated_shipped_scenario_loads_and_round_trips_or_is_one_config_error(mutant):
    name, doc, how = mutant
    try:
        _accepted_or_refused(doc, f"{name}.toml")
    except ConfigError:
        raise
    except Exception as err:  # what the loader must never do
        pytest.fail(f"{name}.toml, {how}: {type(err).__name__}: {err!s:.300}")


@st.composite
def damaged_files(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(TEXTS)))
    data = TEXTS[name]
    at = draw(st.integers(0, len(data)))
    damage = draw(st.sampled_from(["byte", "nul", "utf16", "cut", "bom", "deep"]))
    if damage == "byte":
        bad = draw(st.sampled_from([b"\xff", b"\xe9", b"\xc3", b"\x80", b"\xfe\xff"]))
        data = data[:at] + bad + data[at:]
    elif damage == "nul":
        data = data[:at] + b"\x00" + data[at:]
    elif damage == "utf16":
        data = data.decode().encode(draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32"])))
    elif damage == "cut":
        data = data[:at]
    elif damage == "bom":
        data = b"\xef\xbb\xbf" + data
    else:
        data = data + b"\nextra = " + b"[" * 3000 + b"]" * 3000 + b"\n"
    return name, data


@FUZZ
@given(damaged_files())
def test_a_damaged_shipped_scenario_file_is_accepted_or_one_config_error(tmp_path_factory,
                                                                        damaged):
    name, data = damaged
    path = tmp_path_factory.mktemp("fuzz") / f"{name}.toml"
    path.write_bytes(data)
    try:
        scenario = load_scenario(path)
    except ConfigError as err:
        assert str(err).startswith(f"{path}: ")
        assert "\n" not in str(err)
        return
    except Exception as err:
        pytest.fail(f"{name}.toml damaged: {type(err).__name__}: {err!s:.300}")
    assert parse_scenario(dump_scenario(scenario), str(path)) == scenario
