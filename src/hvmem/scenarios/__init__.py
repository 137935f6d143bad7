"""The scenarios shipped with hvmem (``scenarios/`` in the source tree links here).

Each ``*.toml`` file is a complete scenario with a comment header saying what it
shows; :func:`builtin_scenario_path` finds one by name wherever hvmem is
installed, so ``hvmem demo`` needs no checkout.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

from hvmem.errors import ConfigError

__all__ = ["builtin_scenario_names", "builtin_scenario_path", "file_or_shipped"]


def builtin_scenario_names() -> list[str]:
    """Names of the shipped scenarios (file names without ``.toml``), sorted."""
    return sorted(p.name.removesuffix(".toml") for p in files(__name__).iterdir()
                  if p.name.endswith(".toml"))


def builtin_scenario_path(name: str) -> Path:
    """The file of the shipped scenario ``name`` (such as ``"demo"``)."""
    resource = files(__name__).joinpath(f"{name}.toml")
    if not resource.is_file():
        raise ConfigError(f"no built-in scenario {name!r}; "
                          f"choose one of {', '.join(builtin_scenario_names())}")
    with as_file(resource) as path:  # a real file for packages installed as directories
        return Path(path)


def file_or_shipped(scenario_file: Path) -> Path:
    """``scenario_file`` itself, or the shipped scenario of that name if no such file exists."""
    try:
        exists = scenario_file.exists()
    except OSError:  # a name too long for a file: the loader says so
        exists = False
    if not exists and str(scenario_file) in builtin_scenario_names():
        return builtin_scenario_path(str(scenario_file))
    return scenario_file
