"""Scenario files: TOML to a typed :class:`~hvmem.scenario.schema.Scenario`.

Layout (every field but those marked *required* has a default; sizes are
strings such as ``"4GiB"``, times strings such as ``"15s"`` or ``"10min"``)::

    name = "demo"                 # default: the file's name without .toml
    description = "..."
    duration = "8min"             # required; a whole number of ticks
    tick = "1s"
    seed = 42
    fidelity = "page"             # or "mmu"

    [host]                        # required
    memory = "4GiB"               # required
    profile = "esxi6"             # esx4, esxi5, esxi6
    min_free_frac = 0.0           # Mem.MemMinFreePct / 100; 0 = sliding scale
    paging = "nested"             # or "shadow"
    swap_device = "ssd"           # hdd, ssd, nvme
    swap_selection = "random"     # host swap victims: random (as ESX) or lru
    large_pages = true            # 2 MiB host pages; default: true with nested paging
    tlb = { entries = 64, ways = 4 }
    pwc_entries = 0
    [host.sharing]
    enabled = true
    salting = "within"            # across, within, explicit
    scan_rate_pages_per_s = 1024  # leave out for ESX's default
    [host.compression]
    enabled = true                # default: as the profile
    max_frac = 0.10

    [policy]
    name = "esx"                  # esx, static, mom, proxmox
    balance_period = "15s"
    idle_tax_frac = 0.75
    [policy.params]               # anything: passed through to the policy

    [backend]                     # where the VMs run (default: the simulator)
    kind = "qemu"                 # simulated, qemu (real guests: hvmem qemu)
    file_backed = false           # qemu: guest RAM in a file, QEMU in a memory cgroup
    shared = "64MiB"              # qemu: identical-page data per guest
    private = "32MiB"             # qemu: random data per guest
    touch = "5s"                  # qemu: how often a guest re-reads and checks its data

    [timing]                      # CostTable overrides: a number of ns or a time
    swap_ssd_ns = "80us"

    [[vm]]                        # one or more
    name = "web"                  # required
    count = 3                     # web-1, web-2, web-3
    memory = "2GiB"               # required
    reservation = "0B"
    limit = "unlimited"           # or a size
    shares = "normal"             # low, normal, high (5/10/20 per MiB) or a number
    overhead = "52MiB"            # default: 32 MiB + 1 % of memory (assumed)
    power_on = "0s"
    power_off = "never"           # or a time
    salt = 7                      # for salting = "explicit"
    [vm.guest]
    swap = "2GiB"                 # default: as memory
    swap_device = "ssd"
    reclaim_policy = "lru"        # fifo, lru, clock, random
    processes = 1
    balloon = true
    deflate_on_oom = true
    free_page_reporting = false
    balloon_max = "1GiB"          # default: the host's cap, 65 % of memory
    [vm.content]
    image = "ubuntu-22.04"
    image_frac = 0.15
    zero_frac = 0.10
    image_compressibility = { to_1kib_frac = 0.35, to_2kib_frac = 0.30 }
    private_compressibility = { to_1kib_frac = 0.35, to_2kib_frac = 0.30 }
    [vm.workload]                 # default: idle over min(memory, 64 MiB)
    kind = "zipf"                 # uniform zipf hotcold scan idle phases churn replay
    region = "1GiB"               # required for all kinds but replay
    alpha = 0.9                   # ... and the kind's own parameters

Workload parameters keep the names of the ``*Params`` fields in
``workloads/synthetic.py`` and ``replay.py``, except sizes and times, which
take units: ``region`` (-> ``region_pages``), ``chunk`` (churn,
-> ``chunk_pages``), ``lifetime`` (churn, -> ``lifetime_s``); phases are
``[[vm.workload.phases]]`` tables with ``duration`` and either ``working_set``
(and ``offset``), resizing the ``base`` generator (an inline table with a
``kind``; default uniform), or a ``kind`` of their own with its parameters,
``region`` (default: the rest of the phased region) and ``offset``. A replay's
``path`` is relative to the scenario file; ``format`` is the trace format;
``first_vpn`` and ``region`` state the range it maps.

Errors: every wrong field raises one :class:`~hvmem.errors.ConfigError` line,
``FILE: PATH: expected WHAT, found WHAT`` with PATH the TOML path
(``vm[2].workload.alpha``; ``vm[2]`` is the third ``[[vm]]`` table of the file,
before ``count`` is expanded). Unknown fields name the known ones; missing
required fields say what is expected. The checks of the schema and workload
classes are re-raised with the file and TOML path in front.

:func:`dump_scenario` turns a Scenario back into a document of this layout
(each VM on its own, sizes and times as exact strings) that
:func:`parse_scenario` reads into an equal Scenario: the effective
configuration a run records.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from hvmem.errors import ConfigError
from hvmem.hardware.timing import DEFAULT_COSTS, CostTable
from hvmem.scenario.schema import (
    DEFAULT_TICK_NS,
    BackendConfig,
    CompressionConfig,
    GuestSettings,
    HostConfig,
    PolicyConfig,
    Scenario,
    SharingConfig,
    VmConfig,
    shares_for,
)
from hvmem.units import (
    GIB,
    KIB,
    MIB,
    NS_PER_MS,
    NS_PER_S,
    NS_PER_US,
    PAGE_SHIFT,
    PAGE_SIZE_BYTES,
    TIB,
    parse_size_bytes,
    parse_time_ns,
)
from hvmem.workloads.content import Compressibility, ContentParams, GuestImage
from hvmem.workloads.replay import ReplayParams
from hvmem.workloads.synthetic import (
    DEFAULT_FIRST_VPN,
    ChurnParams,
    HotColdParams,
    IdleParams,
    Phase,
    PhasesParams,
    ScanParams,
    UniformParams,
    ZipfParams,
)

__all__ = ["WORKLOAD_KINDS", "dump_scenario", "load_scenario", "parse_scenario"]

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
}
#: Kinds a phase (or the base of working-set phases) may run.
_GENERATOR_KINDS = ("uniform", "zipf", "hotcold", "scan", "idle")
#: Each synthetic kind's own keys (beyond the region keys), as in its Params class
#: except ``chunk`` and ``lifetime``.
_KIND_KEYS: Mapping[str, tuple[str, ...]] = {
    "uniform": ("refs_per_s",),
    "zipf": ("refs_per_s", "alpha"),
    "hotcold": ("refs_per_s", "hot_pages_frac", "hot_refs_frac"),
    "scan": ("pages_per_s", "pages_per_tick", "refs_per_s", "refs_per_page", "start_page"),
    "idle": ("refs_per_s", "housekeeping_pages"),
    "churn": ("chunk", "allocs_per_s", "lifetime", "lifetime_dist", "refs_per_s",
              "touch_on_alloc"),
}
_REGION_KEYS = ("region", "first_vpn", "process", "file_backed", "write_frac")
_PHASES_KEYS = ("kind", "region", "first_vpn", "process", "file_backed", "loop", "base",
                "phases")
_REPLAY_KEYS = ("kind", "path", "format", "refs_per_s", "time_scale", "trace_refs_per_s", "loop",
                "process", "file_backed", "first_vpn", "region", "map_gap_pages", "chunk_refs",
                "block")
_TOP_KEYS = ("name", "description", "duration", "tick", "seed", "fidelity", "host", "policy",
             "timing", "vm", "backend")
_BACKEND_KEYS = ("kind", "file_backed", "shared", "private", "touch")
_HOST_KEYS = ("memory", "profile", "min_free_frac", "paging", "swap_device", "swap_selection",
              "large_pages", "tlb", "pwc_entries", "sharing", "compression")
_VM_KEYS = ("name", "count", "memory", "reservation", "limit", "shares", "overhead", "power_on",
            "power_off", "salt", "guest", "content", "workload")
_GUEST_KEYS = ("swap", "swap_device", "reclaim_policy", "processes", "balloon", "deflate_on_oom",
               "free_page_reporting", "balloon_max")
_CONTENT_KEYS = ("image", "image_frac", "zero_frac", "image_compressibility",
                 "private_compressibility")
_MAX_COUNT = 4096

#: Dataclass field -> TOML key, for re-raised errors ("" drops the component).
_TOML_KEY = {
    "duration_ns": "duration",
    "tick_ns": "tick",
    "vms": "vm",
    "memory_bytes": "memory",
    "reservation_bytes": "reservation",
    "limit_bytes": "limit",
    "overhead_bytes": "overhead",
    "power_on_ns": "power_on",
    "power_off_ns": "power_off",
    "swap_bytes": "swap",
    "n_processes": "processes",
    "balloon_enabled": "balloon",
    "balloon_max_bytes": "balloon_max",
    "tlb_entries": "tlb.entries",
    "tlb_ways": "tlb.ways",
    "balance_period_ns": "balance_period",
    "region_pages": "region",
    "map_pages": "region",
    "map_first_vpn": "first_vpn",
    "chunk_pages": "chunk",
    "lifetime_s": "lifetime",
    "duration_s": "duration",
    "working_set_pages": "working_set",
    "offset_pages": "offset",
    "fmt": "format",
    "block_bytes": "block",
    "shared_bytes": "shared",
    "private_bytes": "private",
    "touch_ns": "touch",
    "params": "",
}
_ERROR = re.compile(r"^[A-Z]\w*\.(?P<field>[A-Za-z_][\w.\[\]]*): (?P<rest>.*)$", re.DOTALL)
_COMPONENT = re.compile(r"^(?P<name>\w+)(?P<index>\[\d+\])?$")
_INDEX = re.compile(r"\[\d+\]")
_REQUIRED = object()


# --------------------------------------------------------------- entry points


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read a scenario file.

    Raises:
        ConfigError: the file is missing, not TOML, or a field is wrong (one line
            naming the file, the TOML path, what was expected and what was found).
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as handle:
            doc = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, not a scenario file") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: not valid TOML: {err}") from None
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
    return _Loader(file).scenario(doc)


# --------------------------------------------------------------- table reader


def _show(value: object) -> str:
    """A found value for a message: short, on one line."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return "an array of tables"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else (path or key)


class _Table:
    """One TOML table: refuses unknown keys, names its path in every error."""

    def __init__(self, file: str, path: str, value: object, known: tuple[str, ...] | None):
        if not isinstance(value, dict):
            raise ConfigError(f"{file}: {path}: expected a table, found {_show(value)}")
        self.file, self.path, self.data = file, path, value
        if known is not None:
            self.check_known(known)

    def check_known(self, known: tuple[str, ...]) -> None:
        unknown = [k for k in self.data if k not in known]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{self.file}: {self.where(key)}: unknown field ({hint}known "
                              f"here: {', '.join(sorted(known))})")

    def where(self, key: str) -> str:
        return _join(self.path, key)

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def error(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where(key)}: expected {expected}, "
                           f"found {_show(self.data[key])}")

    def missing(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.file}: {self.where(key)}: expected {expected}, found nothing "
                           "(the field is required)")

    def raw(self, key: str, default: Any = _REQUIRED, expected: str = "a value") -> Any:
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            raise self.missing(key, expected)
        return default

    def string(self, key: str, default: Any = _REQUIRED, expected: str = "a string") -> Any:
        value = self.raw(key, default, expected)
        if key in self.data and not isinstance(value, str):
            raise self.error(key, expected)
        return value

    def choice(self, key: str, options: tuple[str, ...], default: Any = _REQUIRED) -> Any:
        expected = "one of " + ", ".join(options)
        value = self.raw(key, default, expected)
        if key in self.data and value not in options:
            raise self.error(key, expected)
        return value

    def integer(self, key: str, default: Any, lo: int, hi: int) -> Any:
        expected = f"a whole number in {lo}..{hi}"
        value = self.raw(key, default, expected)
        if key in self.data and (isinstance(value, bool) or not isinstance(value, int)
                                 or not lo <= value <= hi):
            raise self.error(key, expected)
        return value

    def _quantity(self, key: str, default: Any, expected: str,
                  words: Mapping[str, Any] | None) -> tuple[Any, str, bool]:
        """(value, expected, done): done when the value is the default or a word's meaning."""
        if words:
            expected += " or " + " or ".join(repr(w) for w in words)
        value = self.raw(key, default, expected)
        if key not in self.data:
            return value, expected, True
        if words and isinstance(value, str) and value.strip().lower() in words:
            return words[value.strip().lower()], expected, True
        return value, expected, False

    def size(self, key: str, default: Any = _REQUIRED, *, positive: bool = True,
             words: Mapping[str, Any] | None = None) -> Any:
        """A size in bytes (whole pages), or the value of one of ``words``."""
        kind = "a positive size" if positive else "a size"
        value, expected, done = self._quantity(key, default, f"{kind} such as '4GiB'", words)
        if done:
            return value
        if isinstance(value, float):
            raise self.error(key, expected)
        try:
            size_bytes = parse_size_bytes(value, what=self.where(key))
        except ConfigError as err:
            if words:
                raise self.error(key, expected) from None
            raise ConfigError(f"{self.file}: {err}") from None
        if size_bytes % PAGE_SIZE_BYTES:
            raise self.error(key, "a whole number of 4 KiB pages")
        if positive and size_bytes == 0:
            raise self.error(key, expected)
        return size_bytes

    def pages(self, key: str, default: Any = _REQUIRED, *, positive: bool = True) -> Any:
        value = self.size(key, default, positive=positive)
        return value >> PAGE_SHIFT if key in self.data else value

    def time(self, key: str, default: Any = _REQUIRED, *, positive: bool = False,
             words: Mapping[str, Any] | None = None) -> Any:
        """A duration in ns, or the value of one of ``words``."""
        kind = "a positive time" if positive else "a time"
        value, expected, done = self._quantity(key, default, f"{kind} such as '15s' or '10min'",
                                               words)
        if done:
            return value
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise self.error(key, expected)
        try:
            time_ns = parse_time_ns(value, what=self.where(key))
        except ConfigError as err:
            if words:
                raise self.error(key, expected) from None
            raise ConfigError(f"{self.file}: {err}") from None
        if positive and time_ns <= 0:
            raise self.error(key, expected)
        return time_ns

    def table(self, key: str, known: tuple[str, ...] | None, *,
              required: bool = False) -> _Table:
        if key not in self.data and required:
            raise self.missing(key, "a table")
        return _Table(self.file, self.where(key), self.data.get(key, {}), known)

    def tables(self, key: str, *, required: bool = False) -> list[tuple[str, Any]]:
        """An array of tables as (path, table) pairs."""
        header = _INDEX.sub("", self.where(key))
        expected = f"an array of tables ([[{header}]])"
        if key not in self.data:
            if required:
                raise self.missing(key, expected)
            return []
        value = self.data[key]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, expected)
        if required and not value:
            raise self.error(key, "at least one table")
        return [(f"{self.where(key)}[{i}]", v) for i, v in enumerate(value)]


def _relocate(err: ConfigError, file: str, path: str,
              index_map: Callable[[str, str], str] | None = None,
              keys: Mapping[str, str] | None = None) -> ConfigError:
    """A schema or Params error (``Class.field: ...``) as ``FILE: PATH.key: ...``."""
    message = str(err)
    match = _ERROR.match(message)
    if not match:
        return ConfigError(f"{file}: {path}: {message}" if path else f"{file}: {message}")
    parts = []
    for component in match["field"].split("."):
        m = _COMPONENT.match(component)
        if m is None:
            parts.append(component)
            continue
        name, index = m["name"], m["index"] or ""
        if index and index_map is not None:
            parts.append(index_map(name, index))
            continue
        key = (keys or {}).get(name, _TOML_KEY.get(name, name))
        if key:
            parts.append(key + index)
    return ConfigError(f"{file}: {_join(path, '.'.join(parts))}: {match['rest']}")


def _build(cls: type, kwargs: Mapping[str, Any], file: str, path: str, *,
           keys: Mapping[str, str] | None = None) -> Any:
    """``cls(**kwargs)``, its ConfigError re-raised with the file and TOML path."""
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise _relocate(err, file, path, keys=keys) from None


# --------------------------------------------------------------- the loader


class _Loader:
    def __init__(self, file: str):
        self.file = file
        self.base_dir = Path(file).parent

    def scenario(self, doc: Mapping[str, Any]) -> Scenario:
        top = _Table(self.file, "", dict(doc), _TOP_KEYS)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(self.file).stem).strip("-._") or "scenario"
        fidelity = top.choice("fidelity", ("page", "mmu"), "page")
        host = self.host(top.table("host", _HOST_KEYS, required=True))
        vms: list[VmConfig] = []
        origin: list[int] = []
        for i, (path, table) in enumerate(top.tables("vm", required=True)):
            for vm in self.vms(_Table(self.file, path, table, _VM_KEYS), fidelity):
                vms.append(vm)
                origin.append(i)
        kwargs = {
            "name": top.string("name", stem),
            "description": top.string("description", ""),
            "duration_ns": top.time("duration", positive=True),
            "tick_ns": top.time("tick", DEFAULT_TICK_NS, positive=True),
            "seed": top.raw("seed", 0),
            "fidelity": fidelity,
            "host": host,
            "policy": self.policy(top.table("policy", ("name", "balance_period", "idle_tax_frac",
                                                       "params"))),
            "vms": tuple(vms),
            "timing": self.timing(top.table("timing", None)),
            "backend": self.backend(top.table("backend", _BACKEND_KEYS)),
        }

        def vm_index(name: str, index: str) -> str:
            return f"vm[{origin[int(index[1:-1])]}]" if name == "vms" else f"{name}{index}"

        try:
            return Scenario(**kwargs)
        except ConfigError as err:
            raise _relocate(err, self.file, "", index_map=vm_index) from None

    # -- host, policy, timing ------------------------------------------------

    def host(self, t: _Table) -> HostConfig:
        tlb = t.table("tlb", ("entries", "ways"))
        sharing = t.table("sharing", ("enabled", "salting", "scan_rate_pages_per_s"))
        compression = t.table("compression", ("enabled", "max_frac"))
        sharing_cfg = _build(SharingConfig, dict(sharing.data), self.file, sharing.path)
        compression_cfg = _build(CompressionConfig, dict(compression.data), self.file,
                                 compression.path)
        kwargs = _given(t, {"profile": "profile", "min_free_frac": "min_free_frac",
                            "paging": "paging", "swap_device": "swap_device",
                            "swap_selection": "swap_selection", "large_pages": "large_pages",
                            "pwc_entries": "pwc_entries"})
        kwargs.update(_given(tlb, {"entries": "tlb_entries", "ways": "tlb_ways"}))
        kwargs.update(memory_bytes=t.size("memory"), sharing=sharing_cfg,
                      compression=compression_cfg)
        return _build(HostConfig, kwargs, self.file, t.path)

    def policy(self, t: _Table) -> PolicyConfig:
        kwargs = _given(t, {"name": "name", "idle_tax_frac": "idle_tax_frac"})
        if "balance_period" in t:
            kwargs["balance_period_ns"] = t.time("balance_period", positive=True)
        if "params" in t:
            kwargs["params"] = t.table("params", None).data
        return _build(PolicyConfig, kwargs, self.file, t.path)

    def backend(self, t: _Table) -> BackendConfig:
        kwargs = _given(t, {"kind": "kind", "file_backed": "file_backed"})
        if "shared" in t:
            kwargs["shared_bytes"] = t.size("shared", positive=False)
        if "private" in t:
            kwargs["private_bytes"] = t.size("private", positive=False)
        if "touch" in t:
            kwargs["touch_ns"] = t.time("touch", positive=True)
        return _build(BackendConfig, kwargs, self.file, t.path)

    def timing(self, t: _Table) -> CostTable:
        known = tuple(f.name for f in fields(CostTable))
        t.check_known(known)
        overrides: dict[str, float] = {}
        for key, value in t.data.items():
            if isinstance(value, str):
                overrides[key] = float(t.time(key))
            elif isinstance(value, int | float) and not isinstance(value, bool) \
                    and math.isfinite(value) and value >= 0:
                overrides[key] = float(value)
            else:
                raise t.error(key, "a non-negative number of ns or a time such as '80us'")
        return DEFAULT_COSTS.with_overrides(overrides) if overrides else DEFAULT_COSTS

    # -- VMs -----------------------------------------------------------------

    def vms(self, t: _Table, fidelity: str) -> list[VmConfig]:
        name = t.string("name", expected="a VM name such as 'web'")
        count = t.integer("count", 1, 1, _MAX_COUNT)
        memory = t.size("memory")
        kwargs: dict[str, Any] = {
            "memory_bytes": memory,
            "reservation_bytes": t.size("reservation", 0, positive=False),
            "limit_bytes": t.size("limit", None, words={"unlimited": None}),
            "overhead_bytes": t.size("overhead", None, positive=False),
            "power_on_ns": t.time("power_on", 0),
            "power_off_ns": t.time("power_off", None, words={"never": None}),
            "salt": t.raw("salt", None),
        }
        if "shares" in t:
            value = t.raw("shares")
            if isinstance(value, str):
                if value not in ("low", "normal", "high"):
                    raise t.error("shares", "low, normal, high or a whole number of shares")
                kwargs["shares"] = shares_for(value, memory)
            else:
                kwargs["shares"] = value
        guest = self.guest(t.table("guest", _GUEST_KEYS))
        content = self.content(t.table("content", _CONTENT_KEYS))
        kwargs.update(guest=guest, content=content)
        if "workload" in t:
            kwargs["workload"] = self.workload(t.table("workload", None), content, fidelity)
        else:
            kwargs["workload"] = IdleParams(region_pages=min(memory, 64 * MIB) >> PAGE_SHIFT,
                                            content=content, fidelity=fidelity)
        names = [name] if count == 1 else [f"{name}-{k}" for k in range(1, count + 1)]
        return [_build(VmConfig, {**kwargs, "name": n}, self.file, t.path) for n in names]

    def guest(self, t: _Table) -> GuestSettings:
        kwargs = _given(t, {"swap_device": "swap_device", "reclaim_policy": "reclaim_policy",
                            "processes": "n_processes", "balloon": "balloon_enabled",
                            "deflate_on_oom": "deflate_on_oom",
                            "free_page_reporting": "free_page_reporting"})
        if "swap" in t:
            kwargs["swap_bytes"] = t.size("swap", positive=False)
        if "balloon_max" in t:
            kwargs["balloon_max_bytes"] = t.size("balloon_max", positive=False)
        return _build(GuestSettings, kwargs, self.file, t.path)

    def content(self, t: _Table) -> ContentParams:
        kwargs = _given(t, {"image_frac": "image_frac", "zero_frac": "zero_frac"})
        image: dict[str, Any] = {}
        if "image" in t:
            image["name"] = t.string("image", expected="an image name such as 'ubuntu-22.04'")
        for key, target in (("image_compressibility", None),
                            ("private_compressibility", "private_compressibility")):
            if key in t:
                sub = t.table(key, ("to_1kib_frac", "to_2kib_frac"))
                comp = _build(Compressibility, dict(sub.data), self.file, sub.path)
                if target is None:
                    image["compressibility"] = comp
                else:
                    kwargs[target] = comp
        kwargs["image"] = _build(GuestImage, image, self.file, t.path, keys={"name": "image"})
        return _build(ContentParams, kwargs, self.file, t.path)

    # -- workloads -----------------------------------------------------------

    def workload(self, t: _Table, content: ContentParams, fidelity: str) -> Any:
        kind = t.choice("kind", tuple(WORKLOAD_KINDS))
        if kind == "phases":
            return self.phases(t, content, fidelity)
        if kind == "replay":
            return self.replay(t, content, fidelity)
        t.check_known(("kind", *_REGION_KEYS, *_KIND_KEYS[kind]))
        fixed = {"content": content, "fidelity": fidelity, "region_pages": t.pages("region")}
        fixed.update(_given(t, {k: k for k in _REGION_KEYS if k != "region"}))
        return self.generator(t, kind, fixed)

    def generator(self, t: _Table, kind: str, fixed: dict[str, Any]) -> Any:
        """A synthetic kind's Params from its own keys in ``t`` plus ``fixed``."""
        kwargs = dict(fixed)
        for key in _KIND_KEYS[kind]:
            if key not in t:
                continue
            if key == "chunk":
                kwargs["chunk_pages"] = t.pages("chunk")
                if kwargs["chunk_pages"] > kwargs["region_pages"]:
                    raise t.error("chunk", "at most the region "
                                  f"({_size_text(kwargs['region_pages'] << PAGE_SHIFT)})")
            elif key == "lifetime":
                kwargs["lifetime_s"] = t.time("lifetime", positive=True) / NS_PER_S
            else:
                kwargs[key] = t.raw(key)
        return _build(WORKLOAD_KINDS[kind], kwargs, self.file, t.path)

    def phases(self, t: _Table, content: ContentParams, fidelity: str) -> PhasesParams:
        t.check_known(_PHASES_KEYS)
        region = t.pages("region")
        common = _given(t, {"first_vpn": "first_vpn", "process": "process",
                            "file_backed": "file_backed", "loop": "loop"})
        first_vpn = common.get("first_vpn", DEFAULT_FIRST_VPN)
        process = common.get("process", 0)
        inherit = {"content": content, "fidelity": fidelity, "process": process,
                   "file_backed": common.get("file_backed", False)}
        phases = []
        needs_base = False
        for path, table in t.tables("phases", required=True):
            p = _Table(self.file, path, table, None)
            duration_s = p.time("duration", positive=True) / NS_PER_S
            if ("kind" in p) == ("working_set" in p):
                raise ConfigError(f"{self.file}: {path}: expected either a working_set (which "
                                  "resizes the base generator) or a kind, found "
                                  + ("both" if "kind" in p else "neither"))
            offset = p.pages("offset", 0, positive=False)
            if offset >= region:
                raise p.error("offset", f"an offset inside the phased region "
                              f"({_size_text(region << PAGE_SHIFT)})")
            if "working_set" in p:
                p.check_known(("duration", "working_set", "offset"))
                needs_base = True
                ws = p.pages("working_set")
                if offset + ws > region:
                    raise p.error("working_set", f"a working set inside the phased region (at "
                                  f"most {_size_text((region - offset) << PAGE_SHIFT)} from "
                                  f"offset {_size_text(offset << PAGE_SHIFT)})")
                phase = _build(Phase, {"duration_s": duration_s, "working_set_pages": ws,
                                       "offset_pages": offset}, self.file, path)
            else:
                kind = p.choice("kind", _GENERATOR_KINDS)
                p.check_known(("duration", "kind", "offset", "region", "write_frac",
                               *_KIND_KEYS[kind]))
                pages = p.pages("region", region - offset)
                if offset + pages > region:
                    raise p.error("region", f"a region inside the phased region (at most "
                                  f"{_size_text((region - offset) << PAGE_SHIFT)} from offset "
                                  f"{_size_text(offset << PAGE_SHIFT)})")
                fixed = {**inherit, "region_pages": pages, "first_vpn": first_vpn + offset,
                         **_given(p, {"write_frac": "write_frac"})}
                params = self.generator(p, kind, fixed)
                phase = _build(Phase, {"duration_s": duration_s, "params": params},
                               self.file, path)
            phases.append(phase)
        base = None
        if "base" in t:
            b = t.table("base", None)
            kind = b.choice("kind", _GENERATOR_KINDS)
            b.check_known(("kind", "write_frac", *_KIND_KEYS[kind]))
            base = self.generator(b, kind, {**inherit, "region_pages": region,
                                            "first_vpn": first_vpn,
                                            **_given(b, {"write_frac": "write_frac"})})
        elif needs_base:
            base = UniformParams(region_pages=region, first_vpn=first_vpn, **inherit)
        kwargs = {**common, "region_pages": region, "phases": tuple(phases), "base": base,
                  "fidelity": fidelity}
        return _build(PhasesParams, kwargs, self.file, t.path)

    def replay(self, t: _Table, content: ContentParams, fidelity: str) -> ReplayParams:
        t.check_known(_REPLAY_KEYS)
        path = t.string("path", expected="a trace file name")
        if path != "-":
            resolved = Path(path).expanduser()
            if not resolved.is_absolute():
                resolved = self.base_dir / resolved
            if not resolved.is_file():
                raise t.error("path", f"an existing trace file (looked for {str(resolved)!r})")
            path = str(resolved)
        kwargs = _given(t, {"format": "fmt", "refs_per_s": "refs_per_s",
                            "time_scale": "time_scale", "trace_refs_per_s": "trace_refs_per_s",
                            "loop": "loop", "process": "process", "file_backed": "file_backed",
                            "first_vpn": "map_first_vpn", "map_gap_pages": "map_gap_pages",
                            "chunk_refs": "chunk_refs"})
        if "region" in t:
            kwargs["map_pages"] = t.pages("region")
        if "block" in t:
            kwargs["block_bytes"] = t.size("block") if isinstance(t.raw("block"), str) \
                else t.raw("block")
        kwargs.update(path=path, content=content, fidelity=fidelity)
        return _build(ReplayParams, kwargs, self.file, t.path)


def _given(t: _Table, keys: Mapping[str, str]) -> dict[str, Any]:
    """The raw values of the keys ``t`` has, renamed (the classes check them)."""
    return {target: t.data[key] for key, target in keys.items() if key in t.data}


# --------------------------------------------------------------- dumping


def _size_text(size_bytes: int) -> str:
    """An exact size string: the largest binary unit that divides it."""
    for unit, scale in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size_bytes and size_bytes % scale == 0:
            return f"{size_bytes // scale}{unit}"
    return f"{size_bytes}B"


def _time_text(time_ns: int) -> str:
    """An exact time string: the largest unit that divides it."""
    for unit, scale in (("h", 3600 * NS_PER_S), ("min", 60 * NS_PER_S), ("s", NS_PER_S),
                        ("ms", NS_PER_MS), ("us", NS_PER_US)):
        if time_ns and time_ns % scale == 0:
            return f"{time_ns // scale}{unit}"
    return f"{time_ns}ns"


def _seconds_text(time_s: float) -> str:
    return _time_text(max(1, round(time_s * NS_PER_S)))


def _kind_of(params: object) -> str:
    for kind, cls in WORKLOAD_KINDS.items():
        if type(params) is cls:
            return kind
    raise ConfigError(f"workload: unknown parameters {type(params).__name__}")


def _generator_doc(params: Any, *, region: bool) -> dict[str, Any]:
    kind = _kind_of(params)
    doc: dict[str, Any] = {"kind": kind}
    if region:
        doc["region"] = _size_text(params.region_pages << PAGE_SHIFT)
        doc.update(first_vpn=params.first_vpn, process=params.process,
                   file_backed=params.file_backed)
    doc["write_frac"] = params.write_frac
    for key in _KIND_KEYS[kind]:
        if key == "chunk":
            doc["chunk"] = _size_text(params.chunk_pages << PAGE_SHIFT)
        elif key == "lifetime":
            doc["lifetime"] = _seconds_text(params.lifetime_s)
        elif getattr(params, key) is not None:
            doc[key] = getattr(params, key)
    return doc


def _workload_doc(params: Any) -> dict[str, Any]:
    if isinstance(params, PhasesParams):
        doc: dict[str, Any] = {"kind": "phases",
                               "region": _size_text(params.region_pages << PAGE_SHIFT),
                               "first_vpn": params.first_vpn, "process": params.process,
                               "file_backed": params.file_backed, "loop": params.loop}
        if params.base is not None:
            doc["base"] = _generator_doc(params.base, region=False)
        phases = []
        for phase in params.phases:
            entry: dict[str, Any] = {"duration": _seconds_text(phase.duration_s)}
            if phase.params is None:
                entry["working_set"] = _size_text(phase.working_set_pages << PAGE_SHIFT)
                entry["offset"] = _size_text(phase.offset_pages << PAGE_SHIFT)
            else:
                entry.update(_generator_doc(phase.params, region=False))
                entry["region"] = _size_text(phase.params.region_pages << PAGE_SHIFT)
                entry["offset"] = _size_text((phase.params.first_vpn - params.first_vpn)
                                             << PAGE_SHIFT)
            phases.append(entry)
        doc["phases"] = phases
        return doc
    if isinstance(params, ReplayParams):
        doc = {"kind": "replay", "path": os.fspath(params.path), "format": params.fmt,
               "trace_refs_per_s": params.trace_refs_per_s, "loop": params.loop,
               "process": params.process, "file_backed": params.file_backed,
               "map_gap_pages": params.map_gap_pages, "chunk_refs": params.chunk_refs,
               "block": _size_text(params.block_bytes) if params.block_bytes % PAGE_SIZE_BYTES
               == 0 else params.block_bytes}
        for key in ("refs_per_s", "time_scale"):
            if getattr(params, key) is not None:
                doc[key] = getattr(params, key)
        if params.map_first_vpn is not None:
            doc["first_vpn"] = params.map_first_vpn
            doc["region"] = _size_text(params.map_pages << PAGE_SHIFT)
        return doc
    return _generator_doc(params, region=True)


def _content_doc(content: ContentParams) -> dict[str, Any]:
    def comp(c: Compressibility) -> dict[str, float]:
        return {"to_1kib_frac": c.to_1kib_frac, "to_2kib_frac": c.to_2kib_frac}

    return {"image": content.image.name, "image_frac": content.image_frac,
            "zero_frac": content.zero_frac,
            "image_compressibility": comp(content.image.compressibility),
            "private_compressibility": comp(content.private_compressibility)}


def _plain(value: Any) -> Any:
    """Read-only mappings and tuples back to dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def dump_scenario(scenario: Scenario) -> dict[str, Any]:
    """The scenario as a document of the TOML layout, every value explicit.

    Each VM is its own ``[[vm]]`` table (``count`` expanded); sizes and times are
    exact strings; ``parse_scenario(dump_scenario(s)) == s``. Plain dicts, lists,
    strings, numbers and booleans only (ready for JSON or a TOML writer).
    """
    s = scenario
    h = s.host
    host: dict[str, Any] = {
        "memory": _size_text(h.memory_bytes), "profile": h.profile,
        "min_free_frac": h.min_free_frac, "paging": h.paging, "swap_device": h.swap_device,
        "swap_selection": h.swap_selection, "large_pages": h.large_pages,
        "tlb": {"entries": h.tlb_entries, "ways": h.tlb_ways},
        "pwc_entries": h.pwc_entries,
        "sharing": {"enabled": h.sharing.enabled, "salting": h.sharing.salting},
        "compression": {"enabled": h.compression.enabled, "max_frac": h.compression.max_frac},
    }
    if h.sharing.scan_rate_pages_per_s is not None:
        host["sharing"]["scan_rate_pages_per_s"] = h.sharing.scan_rate_pages_per_s
    vms = []
    for vm in s.vms:
        g = vm.guest
        guest: dict[str, Any] = {
            "swap": _size_text(g.swap_bytes or 0), "swap_device": g.swap_device,
            "reclaim_policy": g.reclaim_policy, "processes": g.n_processes,
            "balloon": g.balloon_enabled, "deflate_on_oom": g.deflate_on_oom,
            "free_page_reporting": g.free_page_reporting,
        }
        if g.balloon_max_bytes is not None:
            guest["balloon_max"] = _size_text(g.balloon_max_bytes)
        entry: dict[str, Any] = {
            "name": vm.name, "memory": _size_text(vm.memory_bytes),
            "reservation": _size_text(vm.reservation_bytes),
            "limit": "unlimited" if vm.limit_bytes is None else _size_text(vm.limit_bytes),
            "shares": vm.shares, "overhead": _size_text(vm.overhead_bytes or 0),
            "power_on": _time_text(vm.power_on_ns),
            "power_off": "never" if vm.power_off_ns is None else _time_text(vm.power_off_ns),
            "guest": guest, "content": _content_doc(vm.content),
            "workload": _workload_doc(vm.workload),
        }
        if vm.salt is not None:
            entry["salt"] = vm.salt
        vms.append(entry)
    timing = {f.name: getattr(s.timing, f.name) for f in fields(CostTable)
              if getattr(s.timing, f.name) != getattr(DEFAULT_COSTS, f.name)}
    return {
        "name": s.name, "description": s.description, "duration": _time_text(s.duration_ns),
        "tick": _time_text(s.tick_ns), "seed": s.seed, "fidelity": str(s.fidelity),
        "host": host,
        "policy": {"name": s.policy.name, "balance_period": _time_text(s.policy.balance_period_ns),
                   "idle_tax_frac": s.policy.idle_tax_frac, "params": _plain(s.policy.params)},
        "timing": timing,
        "vm": vms,
    } | ({} if s.backend == BackendConfig() else {"backend": {
        "kind": s.backend.kind, "file_backed": s.backend.file_backed,
        "shared": _size_text(s.backend.shared_bytes),
        "private": _size_text(s.backend.private_bytes), "touch": _time_text(s.backend.touch_ns),
    }})
