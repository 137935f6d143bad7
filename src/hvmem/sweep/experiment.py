"""Experiment files: a base scenario, seeds and a grid of values, expanded into runs.

An experiment asks one question of many runs: how do the policies compare on
this host, how does the tax change with the load. Its file names the base
scenario, the seeds and a grid::

    name = "policies"              # default: the file's name without .toml
    scenario = "demo"              # a shipped name, or a path relative to this file
    seeds = 3                      # 1, 2, 3; or a list: [7, 11, 13]
    [grid]
    "policy.name" = ["esx", "mom", "proxmox", "static"]
    "fidelity" = ["page"]
    "vm.web.shares" = ["normal", "high"]

Every combination of the grid's values, times every seed, is one run. A grid
key is a dotted path into the scenario file (what ``docs/scenario.md`` lists):
``host.memory``, ``policy.params.swap_out_mib_s``, and a VM's field as
``vm.NAME.KEY`` (``NAME`` the ``[[vm]]`` table's name, ``*`` every table), as
an ``[[event]]``'s ``set`` names them. Values are written as in the scenario
file (sizes as ``"4GiB"``, times as ``"15s"``). A run's scenario is the base
file's document with the combination's values put in, read by the scenario
loader, with the seed set; ``policy.name`` drops the base's ``[policy.params]``
when it names another policy (they belong to the base's policy, as with
``hvmem run --policy``), unless the grid sets ``policy.params`` keys too.

Every combination is read before any run starts, so a bad one is one line
naming the experiment file and the grid key (an unknown path, a value the field
refuses), or the combination when two of its values refuse each other.

A run is named by its combination, ``policy.name=esx,vm.web.shares=high``
(characters outside letters, digits and ``.=,+-_`` become ``-``), which is
also its directory under the sweep's ``runs/`` (``directory.py``).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hvmem.errors import ConfigError
from hvmem.params import declared, show_raw
from hvmem.scenario.loader import parse_scenario
from hvmem.scenario.schema import Scenario
from hvmem.scenario.toml_file import read_toml, show_path
from hvmem.scenarios import builtin_scenario_names, builtin_scenario_path

__all__ = ["MAX_RUNS", "MAX_SEEDS", "Experiment", "RunSpec", "load_experiment", "parse_experiment",
           "policy_experiment", "policy_runs", "value_text"]

#: The keys of an experiment file.
KEYS = ("name", "scenario", "seeds", "grid")
#: The most seeds a count may ask for (``seeds = N``).
MAX_SEEDS = 10_000
#: The most runs an experiment may expand into (combinations x seeds).
MAX_RUNS = 100_000
#: The longest run name kept as it is; a longer one keeps its start and a hash.
MAX_NAME_CHARS = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


@dataclass(frozen=True)
class RunSpec:
    """One run of an experiment: a combination of grid values and a seed.

    Attributes:
        combination: the combination's name (its directory under ``runs/``).
        params: grid key -> value, as the experiment file wrote it.
        seed: the run's seed.
        scenario: the scenario it runs (the combination's values and the seed in).
    """

    combination: str
    params: Mapping[str, Any]
    seed: int
    scenario: Scenario

    @property
    def rel_dir(self) -> str:
        """Its results directory, relative to the sweep's directory."""
        return f"runs/{self.combination}/seed={self.seed}"


@dataclass(frozen=True)
class Experiment:
    """An experiment file read and expanded.

    Attributes:
        file: the experiment file, as named.
        name: the experiment's name.
        scenario: the base scenario as the file names it.
        scenario_file: the base scenario's file.
        seeds: the seeds, in order.
        grid: key -> its values, in the file's order.
        runs: every combination x seed, combinations in grid order, seeds within.
    """

    file: str
    name: str
    scenario: str
    scenario_file: Path
    seeds: tuple[int, ...]
    grid: Mapping[str, tuple[Any, ...]]
    runs: tuple[RunSpec, ...]

    def record(self, version: str) -> dict[str, Any]:
        """``experiment.json``: the parameters expanded, and the hvmem version that ran them."""
        return {"format": "hvmem-sweep", "hvmem_version": version, "name": self.name,
                "experiment_file": str(Path(self.file).resolve()),
                "scenario": self.scenario, "scenario_file": str(self.scenario_file),
                "seeds": list(self.seeds), "grid": {k: list(v) for k, v in self.grid.items()},
                "runs": [{"combination": r.combination, "params": dict(r.params),
                          "seed": r.seed, "dir": r.rel_dir} for r in self.runs]}


def load_experiment(path: str | os.PathLike[str]) -> Experiment:
    """Read an experiment file and expand it, every combination checked.

    Raises:
        ConfigError: one line naming the file and the key (or the base scenario's
            file and field, when the base itself is wrong).
    """
    file = os.fspath(path)
    return parse_experiment(read_toml(file, "experiment file"), file)


def parse_experiment(doc: Mapping[str, Any], file: str = "<experiment>") -> Experiment:
    """Expand a parsed experiment document (see the module essay); ``file`` names it."""
    shown = show_path(file)

    def refuse(key: str, message: str) -> ConfigError:
        return ConfigError(message, path=(key,), file=shown)

    for key in doc:
        if key not in KEYS:
            raise refuse(key, f"unknown key; expected {', '.join(KEYS)}")
    name = doc.get("name", re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(file).stem).strip("-._")
                   or "experiment")
    if not isinstance(name, str) or not name:
        raise refuse("name", f"expected a name, found {show_raw(name)}")
    if "scenario" not in doc:
        raise refuse("scenario", "expected a shipped scenario's name or a scenario file, found "
                     "nothing (the key is required)")
    scenario = doc["scenario"]
    if not isinstance(scenario, str) or not scenario:
        raise refuse("scenario", f"expected a shipped scenario's name or a scenario file, "
                     f"found {show_raw(scenario)}")
    base_file = _base_file(scenario, Path(file).parent, refuse)
    seeds = _seeds(doc.get("seeds", 1), refuse)
    grid = _grid(doc.get("grid", {}), refuse)
    combinations = list(itertools.product(*grid.values()))
    if len(combinations) * len(seeds) > MAX_RUNS:
        raise refuse("grid", f"expected at most {MAX_RUNS} runs (combinations x seeds), found "
                     f"{len(combinations)} x {len(seeds)}")
    base = read_toml(base_file, "scenario file")
    names = _names([dict(zip(grid, values, strict=True)) for values in combinations])
    runs = []
    for values, combination in zip(combinations, names, strict=True):
        params = dict(zip(grid, values, strict=True))
        scenario_ = _combination_scenario(base, base_file, params, shown)
        runs.extend(RunSpec(combination, params, seed, replace(scenario_, seed=seed))
                    for seed in seeds)
    return Experiment(file=file, name=name, scenario=scenario, scenario_file=base_file,
                      seeds=seeds, grid=grid, runs=tuple(runs))


def policy_runs(scenario: Scenario, names: Sequence[str]) -> list[RunSpec]:
    """The runs of a one-seed sweep over policies (``hvmem compare``), from a loaded scenario.

    The same as a grid of ``policy.name`` over the scenario's own seed: each
    policy with its defaults unless it is the scenario's own.
    """
    return [RunSpec(_names([{"policy.name": name}])[0], {"policy.name": name}, scenario.seed,
                    replace(scenario, policy=scenario.policy.for_policy(name)))
            for name in names]


def policy_experiment(file: Path, scenario: Scenario, names: Sequence[str]) -> Experiment:
    """``hvmem compare --out``: its runs as an experiment, so that its directory is a sweep's."""
    return Experiment(str(file), scenario.name, str(file), Path(file), (scenario.seed,),
                      {"policy.name": tuple(names)}, tuple(policy_runs(scenario, names)))


def _base_file(scenario: str, here: Path, refuse: Any) -> Path:
    """The base scenario's file: a path relative to the experiment file, or a shipped name."""
    path = here / scenario
    try:
        exists = path.is_file()
    except OSError:  # a name too long for a file
        exists = False
    if exists:
        return path
    if scenario in builtin_scenario_names():
        return builtin_scenario_path(scenario)
    raise refuse("scenario", f"expected a shipped scenario ({', '.join(builtin_scenario_names())})"
                 f" or a scenario file relative to the experiment file, found {show_raw(scenario)}")


def _seeds(value: Any, refuse: Any) -> tuple[int, ...]:
    """``seeds``: a count N (1..N) or a list of distinct seeds."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_SEEDS:
            raise refuse("seeds", f"expected a count of seeds in 1..{MAX_SEEDS} or a list of "
                         f"seeds, found {value}")
        return tuple(range(1, value + 1))
    if not isinstance(value, list) or not value:
        raise refuse("seeds", f"expected a count of seeds or a non-empty list of seeds, found "
                     f"{show_raw(value)}")
    seed_field = declared(Scenario, "seed").param
    for seed in value:
        wanted = seed_field.problem(seed)
        if wanted is not None:
            raise refuse("seeds", f"expected seeds that are each {wanted}, found "
                         f"{show_raw(seed)}")
    if len(set(value)) != len(value):
        raise refuse("seeds", f"expected distinct seeds, found {show_raw(value)}")
    return tuple(value)


def _grid(value: Any, refuse: Any) -> dict[str, tuple[Any, ...]]:
    """``[grid]``: dotted scenario path -> a non-empty list of values."""
    if not isinstance(value, Mapping):
        raise refuse("grid", f"expected a table of dotted scenario paths and lists of values, "
                     f"found {show_raw(value)}")
    grid: dict[str, tuple[Any, ...]] = {}
    for key, values in value.items():
        where = f'grid."{key}"'
        parts = key.split(".")
        if not key or not all(parts):
            raise refuse(where, "expected a dotted scenario path such as policy.name")
        if key == "seed":
            raise refuse(where, "the seed is the experiment's 'seeds', not a grid key")
        if parts[0] == "event":
            raise refuse(where, "[[event]] tables are not swept; sweep the fields they change")
        if not isinstance(values, list) or not values:
            raise refuse(where, f"expected a non-empty list of values, found {show_raw(values)}")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise refuse(where, f"expected distinct values, found {show_raw(values)}")
        grid[key] = tuple(values)
    return grid


def _combination_scenario(base: Mapping[str, Any], base_file: Path, params: Mapping[str, Any],
                          shown: str) -> Scenario:
    """The base document with ``params`` put in, read by the loader; errors name the key."""
    doc = copy.deepcopy(dict(base))
    for key, value in params.items():
        try:
            _put(doc, key.split("."), value)
        except ConfigError as err:
            raise ConfigError(f"{err.message} ({show_path(base_file)})",
                              path=(f'grid."{key}"',), file=shown) from None
    policy = doc.get("policy")
    base_policy = base.get("policy", {})
    if ("policy.name" in params and isinstance(policy, dict) and isinstance(base_policy, Mapping)
            and params["policy.name"] != base_policy.get("name")
            and not any(k.startswith("policy.params.") or k == "policy.params" for k in params)):
        policy.pop("params", None)
    try:
        return parse_scenario(doc, str(base_file))
    except ConfigError as err:
        at = _dotted(err.path, doc)
        keys = [k for k in params if at == k or at.startswith(k + ".")
                or (k.startswith("vm.*.") and re.fullmatch(r"vm\.[^.]+" + re.escape(k[4:]), at))]
        if not keys and err.path:  # two values that refuse each other, or the base itself
            keys = [k for k in params if k.split(".")[0] == at.split(".")[0]]
        if not keys:
            raise
        shown_values = ", ".join(f'"{k}" = {show_raw(params[k])}' for k in keys)
        where = f"{at}: " if at and at not in keys else ""
        raise ConfigError(f"{where}{err.message}", path=(f"grid: {shown_values}",),
                          file=shown) from None


def _put(doc: dict[str, Any], parts: list[str], value: Any) -> None:
    """Set ``doc`` at the dotted path ``parts``; ``vm.NAME.`` picks ``[[vm]]`` tables by name."""
    if parts[0] == "vm":
        tables = doc.get("vm")
        if len(parts) < 3 or not isinstance(tables, list):
            raise ConfigError("expected vm.NAME.KEY, NAME a [[vm]] table's name or *")
        chosen = [t for t in tables if isinstance(t, dict)
                  and (parts[1] == "*" or t.get("name") == parts[1])]
        if not chosen:
            known = ", ".join(str(t.get("name")) for t in tables if isinstance(t, dict))
            raise ConfigError(f"no [[vm]] table named {parts[1]!r} in the scenario (its VMs: "
                              f"{known})")
        for table in chosen:
            _put_in_table(table, parts[2:], value, parts[:2])
        return
    _put_in_table(doc, parts, value, [])


def _put_in_table(table: dict[str, Any], parts: list[str], value: Any, done: list[str]) -> None:
    for i, part in enumerate(parts[:-1]):
        inner = table.setdefault(part, {})
        if not isinstance(inner, dict):
            at = ".".join([*done, *parts[:i + 1]])
            raise ConfigError(f"{at} is {show_raw(inner)} in the scenario, not a table")
        table = inner
    table[parts[-1]] = value


def _dotted(path: Sequence[str | int], doc: Mapping[str, Any]) -> str:
    """A loader error's path as a grid key would name it (``vm[1]`` as ``vm.NAME``)."""
    parts: list[str] = []
    for i, part in enumerate(path):
        if isinstance(part, int):
            if i == 1 and path[0] == "vm" and isinstance(doc.get("vm"), list):
                tables = doc["vm"]
                parts.append(str(tables[part].get("name", part)) if part < len(tables)
                             and isinstance(tables[part], dict) else str(part))
            else:
                parts.append(str(part))
        else:
            parts.append(part)
    return ".".join(parts)


def _names(combinations: list[dict[str, Any]]) -> list[str]:
    """Each combination's name: ``key=value`` joined by commas, safe as a directory name."""
    names: list[str] = []
    seen: set[str] = set()
    for params in combinations:
        text = ",".join(f"{k}={value_text(v)}" for k, v in params.items()) or "base"
        name = _UNSAFE.sub("-", text)
        if len(name) > MAX_NAME_CHARS or name in seen or name.startswith("."):
            digest = hashlib.sha256(text.encode()).hexdigest()[:10]
            name = f"{name[:MAX_NAME_CHARS - 11].lstrip('.')}~{digest}"
        seen.add(name)
        names.append(name)
    return names


def value_text(value: Any) -> str:
    """A grid value as a name or a text column shows it (a table as compact JSON)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
