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

Keys ``memory``, ``serial_log``, ``ram_file``, ``cgroup`` and ``operator_qmp``
(the second QMP monitor, for people) are what a launch recorded; the controller
reads those facts from QEMU and /proc itself. Any other key, or a bad value, is
a :class:`~hvmem.errors.ConfigError` naming the file, the key's path and the
value.

Each ``[[guest]]`` is a :class:`GuestSpec`, as the command line's QMP sockets
are; :class:`BackendOptions` holds the backend's knobs, the ``[host]`` settings
among them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hvmem.backends.qemu.cgroups import DEFAULT_CGROUP_ROOT, DEFAULT_HEADROOM_MIB
from hvmem.backends.qemu.ksm import DEFAULT_KSM_DIR
from hvmem.backends.qemu.qmp import DEFAULT_TIMEOUT_S
from hvmem.errors import ConfigError
from hvmem.policy.states import DEFAULT_PROFILE, PROFILES
from hvmem.scenario.toml_file import read_toml
from hvmem.units import MIB, parse_size_bytes

__all__ = ["BackendOptions", "GuestSpec", "GuestsConfig", "load_guests_config",
           "specs_from_sockets"]


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """One guest to control, as a config file or the command line names it.

    Attributes:
        name: the VM's name (unique).
        qmp: its QMP unix socket.
        pid: its QEMU process, if known.
        pid_file: a file holding that pid (QEMU's ``-pidfile``).
        shares: ``low``/``normal``/``high`` or a number.
        reservation_mib: guaranteed memory [VS-ALLOC].
        limit_mib: ceiling, None = unlimited.
        balloon_max_mib: largest balloon; None = 65 % of configured
            (``Mem.CtlMaxPercent``).
    """

    name: str
    qmp: Path
    pid: int | None = None
    pid_file: Path | None = None
    shares: str | int = "normal"
    reservation_mib: float = 0.0
    limit_mib: float | None = None
    balloon_max_mib: float | None = None


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Knobs of :class:`~hvmem.backends.qemu.backend.QemuBackend` and its parts.

    backend.py, sampling.py, balloon.py and swap_limit.py say what each rule does.

    Attributes:
        host_memory_mib: the host memory budget; None = the real MemTotal.
        pressure: set the budget from the guests instead (sampling.py): their
            configured memory is ``pressure`` times the budget, beside QEMU's own.
        profile: memory-state profile (``esx4``, ``esxi5``, ``esxi6``).
        qmp_timeout_s: bound on every QMP call.
        stats_interval_s: ``guest-stats-polling-interval`` set on each balloon.
        balloon_stuck_after_s: no balloon progress for this long = stuck.
        balloon_timeout_s: target not reached within this long = stuck.
        balloon_retry_s: a stuck balloon is tried again after this long.
        guest_reserve_mib: memory a guest keeps above what it uses, at least.
        guest_reserve_frac: ... or this fraction of its configured memory.
        swap_headroom_mib: kept above QEMU's anonymous memory under a limit.
        max_failures: timed-out samples in a row before a running guest is stalled.
        stall_retry_s: a stalled guest's QMP is tried again after this long.
        manage_ksm: tune KSM from the host plan (and restore it on close).
        deflate_on_exit: return the balloons the controller set when it closes.
        file_backed_hint: how the user gives a guest file-backed RAM, for the advice
            when an anonymous-RAM guest cannot be limited.
        state_dir: where the crash-safe state file goes (state_file.py); None:
            ``$HVMEM_STATE_DIR`` or ``/run/hvmem``.
        sample_cache_s: a sample younger than this is reused.
        proc_root: /proc.
        ksm_root: /sys/kernel/mm/ksm.
        cgroup_root: /sys/fs/cgroup.
        clock: monotonic seconds (tests pass a fake clock).
    """

    host_memory_mib: float | None = None
    pressure: float | None = None
    profile: str = DEFAULT_PROFILE
    qmp_timeout_s: float = DEFAULT_TIMEOUT_S
    stats_interval_s: int = 2
    balloon_stuck_after_s: float = 10.0
    balloon_timeout_s: float = 30.0
    balloon_retry_s: float = 60.0
    guest_reserve_mib: float = 64.0
    guest_reserve_frac: float = 0.05
    swap_headroom_mib: float = DEFAULT_HEADROOM_MIB
    max_failures: int = 3
    stall_retry_s: float = 5.0
    manage_ksm: bool = True
    deflate_on_exit: bool = True
    file_backed_hint: str = "launch it with file-backed RAM: hvmem qemu launch --file-backed"
    state_dir: Path | None = None
    sample_cache_s: float = 0.5
    proc_root: Path = Path("/proc")
    ksm_root: Path = DEFAULT_KSM_DIR
    cgroup_root: Path = DEFAULT_CGROUP_ROOT
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        if self.host_memory_mib is not None and not (
                math.isfinite(self.host_memory_mib) and self.host_memory_mib > 0):
            raise ConfigError(f"host memory budget: expected a positive size, found "
                              f"{self.host_memory_mib} MiB")
        if self.pressure is not None and not (math.isfinite(self.pressure)
                                              and 1.0 <= self.pressure <= 100.0):
            raise ConfigError(f"--pressure: expected a factor from 1 to 100, found "
                              f"{self.pressure}")
        if self.pressure is not None and self.host_memory_mib is not None:
            raise ConfigError("--pressure and --host-memory both set the host's memory; "
                              "give one")
        for name in ("qmp_timeout_s", "balloon_stuck_after_s", "balloon_timeout_s",
                     "balloon_retry_s", "stall_retry_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name}: expected a positive time, found {value}")
        if not 1 <= self.stats_interval_s <= 3600:
            raise ConfigError(f"stats_interval_s: expected 1-3600 s, found "
                              f"{self.stats_interval_s}")
        if self.max_failures < 1:
            raise ConfigError(f"max_failures: expected at least 1, found {self.max_failures}")


_GUEST_KEYS = {"name", "qmp", "pid_file", "shares", "reservation", "limit", "balloon_max",
               "memory", "serial_log", "ram_file", "cgroup", "operator_qmp"}
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
    # The scenario files' reader: a guests file in another encoding, a directory or
    # /dev/zero is one line naming the file, not a traceback.
    data = read_toml(path, "guests file")
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
