"""The guests file: which QEMU guests the controller drives, and their memory controls.

``hvmem qemu launch`` writes one (``guests.toml`` in its run directory); a user
can write one for guests started any other way. Layout::

    [host]
    memory = "2GiB"        # optional host memory budget (default: the real host)
    profile = "esxi6"      # optional memory-state profile

    [[guest]]
    name = "vm1"                      # unique
    qmp = "/run/hvmem/vm1.qmp"        # QMP unix socket (required)
    pid_file = "/run/hvmem/vm1.pid"   # optional; else found from QEMU's command line
    shares = "normal"                 # low / normal / high or a number
    reservation = "128MiB"            # optional
    limit = "512MiB"                  # optional
    balloon_max = "256MiB"            # optional; default 65 % of memory

Keys ``memory``, ``serial_log``, ``ram_file`` and ``cgroup`` are what a launch
recorded; the controller reads those facts from QEMU and /proc itself. Any
other key, or a bad value, is a :class:`~hvmem.errors.ConfigError` naming the
file, the key's path and the value.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvmem.backends.qemu.backend import GuestSpec
from hvmem.errors import ConfigError
from hvmem.policy.states import PROFILES
from hvmem.units import MIB, parse_size_bytes

__all__ = ["GuestsConfig", "load_guests_config", "specs_from_sockets"]

_GUEST_KEYS = {"name", "qmp", "pid_file", "shares", "reservation", "limit", "balloon_max",
               "memory", "serial_log", "ram_file", "cgroup"}
_HOST_KEYS = {"memory", "profile"}


@dataclass(frozen=True, slots=True)
class GuestsConfig:
    """A guests file, read: the guests and the host settings it gives."""

    guests: tuple[GuestSpec, ...]
    host_memory_mib: float | None = None
    profile: str | None = None


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a non-empty string, found {value!r}")
    return value


def _mib(value: Any, where: str) -> float:
    return parse_size_bytes(value, what=where) / MIB


def load_guests_config(path: str | Path) -> GuestsConfig:
    """Read a guests file.

    Raises:
        ConfigError: missing file, bad TOML, an unknown key or a bad value
            (the message names the file and the key's path).
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    unknown = sorted(set(data) - {"host", "guest", "accel"})
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r} (expected [host], [[guest]])")
    host = data.get("host", {})
    if not isinstance(host, dict):
        raise ConfigError(f"{path}: host: expected a table, found {host!r}")
    for key in sorted(set(host) - _HOST_KEYS):
        raise ConfigError(f"{path}: host.{key}: unknown key (expected "
                          f"{', '.join(sorted(_HOST_KEYS))})")
    memory = _mib(host["memory"], f"{path}: host.memory") if "memory" in host else None
    if memory is not None and memory <= 0:
        raise ConfigError(f"{path}: host.memory: expected a positive size, found "
                          f"{host['memory']!r}")
    profile = host.get("profile")
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"{path}: host.profile: expected one of {', '.join(PROFILES)}, "
                          f"found {profile!r}")
    entries = data.get("guest", [])
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: expected at least one [[guest]] table")
    specs = []
    for i, entry in enumerate(entries):
        where = f"{path}: guest[{i}]"
        for key in sorted(set(entry) - _GUEST_KEYS):
            raise ConfigError(f"{where}.{key}: unknown key")
        name = _str(entry.get("name"), f"{where}.name")
        qmp = Path(_str(entry.get("qmp"), f"{where}.qmp"))
        shares = entry.get("shares", "normal")
        if not (isinstance(shares, str) or (isinstance(shares, int)
                                            and not isinstance(shares, bool) and shares >= 0)):
            raise ConfigError(f"{where}.shares: expected low, normal, high or a number >= 0, "
                              f"found {shares!r}")
        if isinstance(shares, str) and shares not in ("low", "normal", "high"):
            raise ConfigError(f"{where}.shares: expected low, normal, high or a number >= 0, "
                              f"found {shares!r}")
        specs.append(GuestSpec(
            name=name, qmp=qmp,
            pid_file=Path(_str(entry["pid_file"], f"{where}.pid_file"))
            if "pid_file" in entry else None,
            shares=shares,
            reservation_mib=_mib(entry["reservation"], f"{where}.reservation")
            if "reservation" in entry else 0.0,
            limit_mib=_mib(entry["limit"], f"{where}.limit") if "limit" in entry else None,
            balloon_max_mib=_mib(entry["balloon_max"], f"{where}.balloon_max")
            if "balloon_max" in entry else None))
    names = [s.name for s in specs]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(f"{path}: guest[{i}].name: {name!r} is used by "
                              f"guest[{names.index(name)}] too")
    return GuestsConfig(tuple(specs), memory, profile)


def specs_from_sockets(paths: list[Path]) -> tuple[GuestSpec, ...]:
    """Guests named by their QMP sockets (``--qmp``): the name is the file's stem.

    Raises:
        ConfigError: two sockets with the same stem.
    """
    specs = []
    seen: dict[str, Path] = {}
    for p in paths:
        name = Path(p).stem
        if name in seen:
            raise ConfigError(f"--qmp: {p} and {seen[name]} would both be called {name!r}")
        seen[name] = Path(p)
        specs.append(GuestSpec(name=name, qmp=Path(p)))
    return tuple(specs)
