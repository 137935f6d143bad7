"""Results directories: what a run leaves on disk, and the one reader for it.

Layout of a results directory::

    scenario.json   the effective scenario (every default filled in)
    host.parquet    one row per tick: time_s, free_mib, minfree_mib, state, ...
    vms.parquet     one row per VM per tick: esxtop-named metrics (MEMSZ, GRANT,
                    SZTGT, TCHD, ACTV, MCTLSZ, MCTLTGT, MCTLMAX, SWCUR, SWTGT,
                    SWR/s, SWW/s, ZIP/s, UNZIP/s, CACHEUSD, ZIPPED, SHRD, ZERO,
                    SHRDSVD), guest figures, throughput and slowdown
    events.jsonl    one JSON object per event (power on/off, reclaim, refusals)
    summary.json    per-VM and host totals, and "complete": true or false

A directory is written to a temporary sibling and renamed into place when
every file is there, so a reader never sees a half-written one; a run that was
interrupted is still written, with ``"complete": false`` in its summary.
Everything that reads results (reports, plots, comparisons) goes through
:func:`read_results`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hvmem.core.rows import RowLog
from hvmem.errors import ConfigError
from hvmem.scenario.loader import dump_scenario
from hvmem.sim import RunResult


def write_results(result: RunResult, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write ``result`` to ``out_dir`` atomically; returns the directory.

    Raises:
        ConfigError: ``out_dir`` exists (and ``overwrite`` is off) or is not writable.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists already (choose another --out, or remove it)")
    tmp = out.with_name(out.name + ".partial")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        (tmp / "scenario.json").write_text(
            json.dumps(dump_scenario(result.scenario), indent=2, default=str) + "\n")
        pq.write_table(_table(result.host_rows), tmp / "host.parquet")
        pq.write_table(_table(result.vm_rows), tmp / "vms.parquet")
        with open(tmp / "events.jsonl", "w") as handle:
            for event in result.events:
                handle.write(json.dumps(event) + "\n")
        (tmp / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except OSError as err:
        raise ConfigError(f"{out}: cannot write results ({err.strerror})") from None
    return out


def _table(rows: RowLog) -> pa.Table:
    """The rows as an Arrow table, column by column (the same table ``from_pylist`` makes)."""
    return pa.table({key: pa.array(values) for key, values in rows.columns().items()})


@dataclass(frozen=True)
class Results:
    """A results directory, read back."""

    path: Path
    summary: dict
    host: pa.Table
    vms: pa.Table
    events: list[dict]

    @property
    def complete(self) -> bool:
        """Whether the run reached its end."""
        return bool(self.summary.get("complete"))


def read_results(path: str | Path) -> Results:
    """Read a results directory written by :func:`write_results`.

    Raises:
        ConfigError: the directory is missing or lacks one of its files.
    """
    root = Path(path)
    needed = ("summary.json", "host.parquet", "vms.parquet", "events.jsonl")
    for name in needed:
        if not (root / name).is_file():
            raise ConfigError(f"{root}: not a results directory (no {name})")
    events = [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()
              if line.strip()]
    return Results(root, json.loads((root / "summary.json").read_text()),
                   pq.read_table(root / "host.parquet"), pq.read_table(root / "vms.parquet"),
                   events)
