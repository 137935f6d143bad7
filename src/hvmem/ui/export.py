r"""``hvmem export``: a results directory as CSV, for tools that read esxtop's or plain tables.

Two layouts:

* ``esxtop-csv``: the Windows perfmon CSV that ``esxtop -b`` writes, so that
  tools made for esxtop batch files read a run as if a host had recorded it
  (``hvmem export run/ --format esxtop-csv > run.csv``). Every value is quoted;
  the first column is ``(PDH-CSV 4.0) (UTC)(0)`` with the sample's time as
  ``MM/DD/YYYY HH:MM:SS`` in UTC; each other column is a counter named
  ``\\HOST\Group(Instance)\Counter`` [ESXTOP-GRAFANA][ESXTOP-CSV]: the host's
  under ``Memory`` (no instance), each VM's under ``Group Memory(GID:NAME)``,
  GIDs numbered from 1 in the order the VMs first appear. The counter names are
  those of esxtop's batch output; the ones no public sample shows (the host's
  ``Kernel ...``, ``PShare ...``, ``Swap ...``, ``Memctl ...`` and ``Total ...``
  figures, and the VMs' ``Memctl ...``, ``Swap Target``, ``Shared`` and
  ``Zero MBytes``) are **unconfirmed**: they follow the fields of esxtop's
  memory screen in esxtop's way of naming. ``Kernel State`` numbers the states
  high 0, clear 1, soft 2, hard 3, low 4 (**assumed**). ``% Active Estimate``
  is ACTV as a share of MEMSZ; THRU and the guest's own figures have no
  esxtop counter and are left out.
* ``csv``: plain, tidy CSV: one row per VM and tick with the columns of
  ``vms.parquet`` (``time_s``, ``vm``, the esxtop-named metrics, guest figures,
  throughput), and the host's figures of that tick beside them as ``host_*``.

Neither layout has units in its own header beyond the names: sizes are MiB
(esxtop's "MBytes"), rates MiB/s, times seconds. A value a run could not
observe (NaN: a real host's throughput) is an empty cell.

Samples carry times since the run began; ``--start`` gives the wall-clock time
the run began (by default the time the results were written less the run's
length), and each sample is stamped with the end of its tick, when it was taken.
"""

from __future__ import annotations

import csv
import io
import math
import os
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hvmem.errors import ConfigError
from hvmem.ui.exits import user_errors

#: esxtop's batch-mode timestamp column and its time format.
PDH_TIME = "(PDH-CSV 4.0) (UTC)(0)"
PDH_TIME_FORMAT = "%m/%d/%Y %H:%M:%S"
STATE_NUMBER = {"high": 0, "clear": 1, "soft": 2, "hard": 3, "low": 4}

#: Each VM's counters: esxtop batch name, and the results column it comes from.
VM_COUNTERS = (
    ("Memory Size MBytes", "MEMSZ"),
    ("Memory Granted Size MBytes", "GRANT"),
    ("Target Size MBytes", "SZTGT"),
    ("Touched MBytes", "TCHD"),
    ("% Active Estimate", "%ACTV"),
    ("Memctl MBytes", "MCTLSZ"),
    ("Memctl Target MBytes", "MCTLTGT"),
    ("Memctl Max MBytes", "MCTLMAX"),
    ("Swapped MBytes", "SWCUR"),
    ("Swap Target MBytes", "SWTGT"),
    ("Swap Read MBytes/sec", "SWR/s"),
    ("Swap Written MBytes/sec", "SWW/s"),
    ("Compressed Memory MBytes", "CACHEUSD"),
    ("Compression MBytes/sec", "ZIP/s"),
    ("Decompression MBytes/sec", "UNZIP/s"),
    ("Shared MBytes", "SHRD"),
    ("Zero MBytes", "ZERO"),
    ("Shared Saved MBytes", "SHRDSVD"),
)

#: The host's counters: esxtop batch name, and how a tick's rows give it.
HOST_COUNTERS = (
    ("Machine MBytes", lambda h, vms: h["total_mib"]),
    ("Free MBytes", lambda h, vms: h["free_mib"]),
    ("Kernel MinFree MBytes", lambda h, vms: h["minfree_mib"]),
    ("Kernel State", lambda h, vms: STATE_NUMBER.get(h["state"], math.nan)),
    ("PShare Shared MBytes", lambda h, vms: _sum(vms, "SHRD")),
    ("PShare Common MBytes", lambda h, vms: _sum(vms, "SHRD") - _sum(vms, "SHRDSVD")),
    ("PShare Savings MBytes", lambda h, vms: _sum(vms, "SHRDSVD")),
    ("Swap Used MBytes", lambda h, vms: _sum(vms, "SWCUR")),
    ("Swap Target MBytes", lambda h, vms: _sum(vms, "SWTGT")),
    ("Swap MBytes Read/sec", lambda h, vms: _sum(vms, "SWR/s")),
    ("Swap MBytes Write/sec", lambda h, vms: _sum(vms, "SWW/s")),
    ("Total Compressed MBytes", lambda h, vms: _sum(vms, "ZIPPED")),
    ("Total Saved By Compression MBytes",
     lambda h, vms: _sum(vms, "ZIPPED") - _sum(vms, "CACHEUSD")),
    ("Memctl Current MBytes", lambda h, vms: _sum(vms, "MCTLSZ")),
    ("Memctl Target MBytes", lambda h, vms: _sum(vms, "MCTLTGT")),
    ("Memctl Max MBytes", lambda h, vms: _sum(vms, "MCTLMAX")),
)


def _sum(rows: Iterable[dict], key: str) -> float:
    return sum(row.get(key, math.nan) for row in rows)


def _vm_value(row: dict | None, column: str) -> float:
    if row is None:  # the VM is off at this tick
        return math.nan
    if column == "%ACTV":
        return 100.0 * row["ACTV"] / row["MEMSZ"] if row["MEMSZ"] else math.nan
    return row.get(column, math.nan)


def _number(value: float) -> str:
    return "" if value != value else f"{value:.2f}"


def write_esxtop_csv(out: io.TextIOBase, host_rows: Sequence[dict], vm_rows: Sequence[dict],
                     start: datetime, host_name: str = "hvmem") -> None:
    """Write the rows as ``esxtop -b`` does: one quoted perfmon CSV line per tick."""
    names: list[str] = []
    by_time: dict[float, dict[str, dict]] = {}
    for row in vm_rows:
        if row["vm"] not in names:
            names.append(row["vm"])
        by_time.setdefault(row["time_s"], {})[row["vm"]] = row
    prefix = f"\\\\{host_name}\\"
    header = [PDH_TIME, *(f"{prefix}Memory\\{c}" for c, _ in HOST_COUNTERS)]
    for gid, name in enumerate(names, start=1):
        header += [f"{prefix}Group Memory({gid}:{name})\\{c}" for c, _ in VM_COUNTERS]
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writerow(header)
    for host in host_rows:
        vms = by_time.get(host["time_s"], {})
        at = start + timedelta(seconds=host["time_s"] + host["tick_s"])
        line = [at.strftime(PDH_TIME_FORMAT),
                *(_number(f(host, vms.values())) for _, f in HOST_COUNTERS)]
        for name in names:
            line += [_number(_vm_value(vms.get(name), col)) for _, col in VM_COUNTERS]
        writer.writerow(line)


def write_tidy_csv(out: io.TextIOBase, host_rows: Sequence[dict], vm_rows: Sequence[dict]) -> None:
    """Write one row per VM and tick, the host's figures of the tick beside it as ``host_*``."""
    hosts = {row["time_s"]: row for row in host_rows}
    host_keys = [k for k in (host_rows[0] if host_rows else {}) if k not in ("time_s", "tick_s")]
    vm_keys = list(vm_rows[0]) if vm_rows else ["time_s", "tick_s", "vm"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*vm_keys, *(f"host_{k}" for k in host_keys)])
    for row in vm_rows:
        host = hosts.get(row["time_s"], {})
        cells = [*(row.get(k) for k in vm_keys), *(host.get(k) for k in host_keys)]
        writer.writerow(["" if isinstance(v, float) and v != v else v for v in cells])


class ExportFormat(StrEnum):
    """Layouts ``hvmem export`` writes."""

    esxtop_csv = "esxtop-csv"
    csv = "csv"


def _start_time(text: str | None, results_dir: Path, total_s: float) -> datetime:
    if text is None:
        written = (results_dir / "summary.json").stat().st_mtime
        return datetime.fromtimestamp(written, UTC) - timedelta(seconds=total_s)
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--start {text!r}: expected a time such as "
                          "2024-05-01T09:00:00") from None
    return start.astimezone(UTC) if start.tzinfo else start.replace(tzinfo=UTC)


@user_errors
def export_command(
    results_dir: Annotated[Path, typer.Argument(
        help="A results directory (hvmem run --out, hvmem qemu control --out).")],
    format: Annotated[ExportFormat, typer.Option(
        "--format", help="esxtop-csv: esxtop -b's perfmon CSV; csv: one row per VM and tick.")
    ] = ExportFormat.esxtop_csv,
    out: Annotated[Path | None, typer.Option(
        help="File to write (default: standard output).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
    host: Annotated[str, typer.Option(
        help="Host name in esxtop-csv counter paths.")] = "hvmem",
    start: Annotated[str | None, typer.Option(
        help="UTC time the run began, ISO 8601 (default: when the results were "
             "written, less the run's length).")] = None,
) -> None:
    """Write a results directory's counters as CSV: esxtop batch layout, or plain."""
    from hvmem.results import read_results

    if "\\" in host or not host.strip():
        raise ConfigError(f"--host {host!r}: expected a host name without backslashes")
    if out is not None and out.exists() and not force:
        raise ConfigError(f"--out {out}: exists; --force replaces it")
    results = read_results(results_dir)
    host_rows, vm_rows = results.host.to_pylist(), results.vms.to_pylist()
    text = io.StringIO(newline="")
    if format is ExportFormat.esxtop_csv:
        total_s = host_rows[-1]["time_s"] + host_rows[-1]["tick_s"] if host_rows else 0.0
        write_esxtop_csv(text, host_rows, vm_rows, _start_time(start, results_dir, total_s),
                         host)
    else:
        write_tidy_csv(text, host_rows, vm_rows)
    if out is None:
        # As bytes: esxtop-csv's CRLF line ends go out unchanged.
        sys.stdout.flush()
        sys.stdout.buffer.write(text.getvalue().encode())
        sys.stdout.buffer.flush()
        return
    # Written beside the target and renamed onto it, so a reader never sees half a file.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text.getvalue(), newline="")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
