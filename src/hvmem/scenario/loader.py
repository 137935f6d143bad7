"""Scenario files: TOML to a typed :class:`~hvmem.scenario.schema.Scenario`, and back.

Every key of a scenario file is a field declaration (:mod:`hvmem.params`) of
the class that holds it; ``docs/scenario.md`` lists them all (key, type, unit,
default, bounds, meaning, source), generated from the same declarations by
``python -m hvmem.scenario.docs``. In short::

    name = "demo"                 # default: the file's name without .toml
    duration = "8min"             # required; a whole number of ticks
    [host]                        # required: memory = "4GiB", and the rest
    [policy]                      # name, balance_period, idle_tax_frac
    [policy.params]               # the named policy's own parameters
    [backend]                     # where the VMs run (default: the simulator)
    [[event]]                     # at = "31min", set = { "policy.idle_tax_frac" = 0.75 }
    [timing]                      # cost overrides: a number of ns or a time
    [[vm]]                        # one or more: name and memory required;
    count = 3                     #   web-1, web-2, web-3
    [vm.guest]  [vm.content]  [vm.workload]    # kind = "zipf", region = "1GiB", ...

Sizes are strings such as ``"4GiB"``, times such as ``"15s"`` or ``"10min"``.
What is not declared on a class is here: ``count`` (a ``[[vm]]`` table stands
for that many VMs), the default name, and the workload table's kinds
(:mod:`hvmem.scenario.workload_table`).

Errors: every wrong field raises one :class:`~hvmem.errors.ConfigError` line,
``FILE: PATH: expected WHAT, found WHAT`` with PATH the TOML path
(``vm[2].workload.alpha``; ``vm[2]`` is the third ``[[vm]]`` table of the file,
before ``count`` is expanded). Unknown fields name the closest known one;
missing required fields say what is expected. The classes' own checks are
moved to the file and TOML path through the declarations.

:func:`dump_scenario` turns a Scenario back into a document of this layout
(each VM on its own, sizes and times as exact strings) that
:func:`parse_scenario` reads into an equal Scenario: the effective
configuration a run records.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from hvmem.errors import ConfigError
from hvmem.params import Kind, Param, declared, read, relocate, show_raw, write
from hvmem.scenario.events import EventConfig, read_set, write_set
from hvmem.scenario.schema import BackendConfig, Scenario, VmConfig
from hvmem.scenario.toml_file import MAX_DEPTH, depth_of, read_toml, show_path
from hvmem.scenario.workload_table import WORKLOAD_KINDS, read_workload, write_workload
from hvmem.workloads.content import ContentParams

__all__ = ["COUNT", "WORKLOAD_KINDS", "dump_scenario", "load_scenario", "parse_scenario"]

#: ``count`` of a ``[[vm]]`` table: that many VMs, named ``NAME-1`` ... ``NAME-count``.
COUNT = Param(kind=Kind.WHOLE, doc="VMs this table stands for, named NAME-1 .. NAME-count "
              "(1: the name as it is)", default=1, lo=1, hi=4096)


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read a scenario file.

    Raises:
        ConfigError: the file is missing, not a UTF-8 TOML file of at most 1 MiB
            (:mod:`hvmem.scenario.toml_file`), or a field is wrong (one line
            naming the file, the TOML path, what was expected and what was found).
    """
    file = os.fspath(path)
    doc = read_toml(file, "scenario file")
    return parse_scenario(doc, file)


def parse_scenario(doc: Mapping[str, Any], file: str = "<scenario>") -> Scenario:
    """Build a Scenario from a parsed TOML document (a dict of the layout above).

    Args:
        doc: the document.
        file: names the source in error messages; relative trace paths are
            resolved against its directory.

    Raises:
        ConfigError: as :func:`load_scenario`.
    """
    shown = show_path(file)
    if depth_of(doc) > MAX_DEPTH:  # before anything walks it, or shows a part of it
        raise ConfigError(f"nested too deeply (more than {MAX_DEPTH} levels of arrays or "
                          "tables)", file=shown)
    if not isinstance(doc, Mapping):
        raise ConfigError(f"expected a document (a table), found {show_raw(doc)}", file=shown)
    try:
        return _scenario(doc, Path(file))
    except ConfigError as err:
        raise ConfigError(err.message, path=err.path, file=shown) from None


def _scenario(doc: Mapping[str, Any], file: Path) -> Scenario:
    kwargs = read(Scenario, doc, (), skip=("vms", "events"))
    if "name" not in doc:
        kwargs["name"] = re.sub(r"[^A-Za-z0-9_.-]+", "-", file.stem).strip("-._") or "scenario"
    fidelity = kwargs.get("fidelity", "page")
    wanted = declared(Scenario, "fidelity").param.problem(fidelity)
    if wanted is not None:  # checked before every workload takes it
        raise ConfigError(f"expected {wanted}, found {show_raw(fidelity)}", path=("fidelity",))
    if "vm" not in doc:
        raise ConfigError("expected an array of tables ([[vm]]), found nothing (the field is "
                          "required)", path=("vm",))
    tables = doc["vm"]
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigError(f"expected an array of tables ([[vm]]), found {show_raw(tables)}",
                          path=("vm",))
    vms: list[VmConfig] = []
    origin: list[int] = []  # the [[vm]] table of each VM, before count is expanded
    for i, table in enumerate(tables):
        # An aggregate run's workloads keep their page-fidelity parameters (aggregate/).
        workload_fidelity = "page" if fidelity == "aggregate" else fidelity
        for vm in _vms(table, ("vm", i), workload_fidelity, file.parent):
            vms.append(vm)
            origin.append(i)
    kwargs["vms"] = tuple(vms)
    try:
        scenario = Scenario(**kwargs)
        return _with_events(scenario, doc.get("event", []))
    except ConfigError as err:
        moved = relocate(err, Scenario, kwargs, ())
        path = list(moved.path)
        if path[:1] == ["vm"] and len(path) > 1 and isinstance(path[1], int):
            path[1] = origin[path[1]]
        raise ConfigError(moved.message, path=path) from None


def _with_events(scenario: Scenario, tables: Any) -> Scenario:
    """``scenario`` with the ``[[event]]`` tables (read once the VMs they name are known)."""
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ConfigError(f"expected an array of tables ([[event]]), found {show_raw(tables)}",
                          path=("event",))
    events = []
    for i, table in enumerate(tables):
        kwargs = read(EventConfig, table, ("event", i), extra=("set",))
        if "set" in table:
            try:
                kwargs["changes"] = read_set(scenario, table["set"])
            except ConfigError as err:
                raise ConfigError(err.message, path=("event", i, "set", *err.path)) from None
        try:
            events.append(EventConfig(**kwargs))
        except ConfigError as err:
            raise relocate(err, EventConfig, kwargs, ("event", i)) from None
    if not events:
        return scenario
    return replace(scenario, events=tuple(events))


def _vms(table: Mapping[str, Any], path: tuple[str | int, ...], fidelity: str,
         base_dir: Path) -> list[VmConfig]:
    """The VMs of one ``[[vm]]`` table (``count`` of them)."""
    kwargs = read(VmConfig, table, path, skip=("workload",), extra=("count",))
    count = table.get("count", 1)
    if COUNT.problem(count) is not None:
        raise ConfigError(f"expected {COUNT.expected()}, found {show_raw(count)}",
                          path=(*path, "count"))
    name = kwargs["name"]
    problem = declared(VmConfig, "name").param.problem(name)
    if problem is not None:
        raise ConfigError(f"expected {problem}, found {show_raw(name)}", path=(*path, "name"))
    if "workload" in table:
        kwargs["workload"] = read_workload(
            table["workload"], (*path, "workload"),
            content=kwargs.get("content", ContentParams()), fidelity=fidelity,
            base_dir=base_dir)
    names = [name] if count == 1 else [f"{name}-{k}" for k in range(1, count + 1)]
    vms = []
    for vm_name in names:
        try:
            vms.append(VmConfig(**{**kwargs, "name": vm_name}))
        except ConfigError as err:
            raise relocate(err, VmConfig, kwargs, path) from None
    return vms


def dump_scenario(scenario: Scenario) -> dict[str, Any]:
    """The scenario as a document of the TOML layout, every value explicit.

    Each VM is its own ``[[vm]]`` table (``count`` expanded); sizes and times are
    exact strings; ``parse_scenario(dump_scenario(s)) == s``. Plain dicts, lists,
    strings, numbers and booleans only (ready for JSON or a TOML writer). The
    ``[backend]`` table is left out while it is the default (the simulator).
    """
    doc = write(scenario, skip=("vms", "backend", "events"))
    doc["vm"] = [{**write(vm, skip=("workload",)), "workload": write_workload(vm.workload)}
                 for vm in scenario.vms]
    if scenario.backend != BackendConfig():
        doc["backend"] = write(scenario.backend)
    if scenario.events:
        doc["event"] = [{**write(e), **({"set": write_set(scenario, e.changes)}
                                         if e.changes else {})} for e in scenario.events]
    return doc
