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

    hvmem-manifest.json  the files above: what hvmem wrote, and may replace

A directory is written to a temporary sibling of its own and renamed into
place when every file is there, so a reader never sees a half-written one, and
it never replaces anything but earlier results (``outdir.py``). A run that was
interrupted or failed is still written, with ``"complete": false`` and its
``"stop_reason"`` in the summary. The JSON files are strict JSON: a number
that is not finite is written as ``null``.
Everything that reads results (reports, plots, comparisons) goes through
:func:`read_results`.

A run in memory is a :class:`RunResult`, whoever made it: the simulation
(``sim.py``) and the controller of real QEMU guests (``backends/qemu/control.py``)
fill the same rows, so neither depends on the other and one writer serves both.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hvmem.core.rows import RowLog
from hvmem.errors import ConfigError
from hvmem.outdir import OutputDir
from hvmem.scenario.loader import dump_scenario
from hvmem.scenario.schema import Scenario


@dataclass
class RunResult:
    """What a run produced: rows of time series, events and a summary."""

    scenario: Scenario
    # Sequences of dicts, kept by column (an hour of 32 VMs is 115,200 rows).
    host_rows: RowLog = field(default_factory=RowLog)
    vm_rows: RowLog = field(default_factory=RowLog)
    events: list[dict] = field(default_factory=list)
    complete: bool = False
    ticks_done: int = 0
    # Why a run that did not finish stopped ("stopped by SIGTERM", an error's line).
    stop_reason: str = ""

    def keep_ticks(self, done: tuple[int, int, int]) -> None:
        """Keep the ticks ``done`` counts (ticks, host rows, VM rows) and only their rows.

        A run loop stores ``done`` as one tuple after each whole tick, so a signal
        between two statements never pairs a count with another tick's rows.
        """
        self.ticks_done = done[0]
        self.host_rows.truncate(done[1])
        self.vm_rows.truncate(done[2])

    def summary(self) -> dict:
        """What reclaimed how much, and what it cost each VM: JSON-ready totals.

        Per VM: the peak of each mechanism's holding (balloon, compressed and
        swapped MiB, MiB saved by sharing), swap and compression traffic, and
        the cost: mean throughput, worst tick's slowdown and the seconds of
        work lost to stalls, split by cause (``stall_<cause>_s``), and the
        guest's own paging (``guest_swap_in_mib``, ``guest_swap_out_mib``: what
        ballooning costs a guest that has to page to give memory up).
        ``mechanisms``: machine memory each mechanism holds back, summed
        over the VMs each tick (compression net of its cache's frames), at its
        host-wide peak and at the end of the run.
        """
        vms: dict[str, dict] = {}
        totals: dict[float, dict[str, float]] = {}
        for row in self.vm_rows:
            s = vms.setdefault(row["vm"], {
                "ticks": 0, "throughput_sum": 0.0, "balloon_peak_mib": 0.0,
                "swapped_peak_mib": 0.0, "compressed_peak_mib": 0.0,
                "shared_saved_peak_mib": 0.0, "swap_in_mib": 0.0, "swap_out_mib": 0.0,
                "compress_mib": 0.0, "decompress_mib": 0.0, "guest_swap_in_mib": 0.0,
                "guest_swap_out_mib": 0.0, "stall_s": 0.0,
                **{f"stall_{cause}_s": 0.0 for cause in STALL_CAUSES},
                "worst_slowdown": 1.0})
            tick_s = row["tick_s"]
            s["ticks"] += 1
            s["throughput_sum"] += row["throughput"]
            s["balloon_peak_mib"] = max(s["balloon_peak_mib"], row["MCTLSZ"])
            s["swapped_peak_mib"] = max(s["swapped_peak_mib"], row["SWCUR"])
            s["compressed_peak_mib"] = max(s["compressed_peak_mib"], row["ZIPPED"])
            s["shared_saved_peak_mib"] = max(s["shared_saved_peak_mib"], row["SHRDSVD"])
            s["swap_in_mib"] += row["SWR/s"] * tick_s
            s["swap_out_mib"] += row["SWW/s"] * tick_s
            s["compress_mib"] += row["ZIP/s"] * tick_s
            s["decompress_mib"] += row["UNZIP/s"] * tick_s
            s["stall_s"] += (1.0 - row["throughput"]) * tick_s
            # Real guests have no such columns (NaN or absent): they count nothing.
            s["guest_swap_in_mib"] += _number(row.get("guest_swap_in_mib_s")) * tick_s
            s["guest_swap_out_mib"] += _number(row.get("guest_swap_out_mib_s")) * tick_s
            for cause in STALL_CAUSES:
                s[f"stall_{cause}_s"] += _number(row.get(f"stall_{cause}_s"))
            s["worst_slowdown"] = max(s["worst_slowdown"], row["slowdown"])
            t = totals.setdefault(row["time_s"], dict.fromkeys(_MECHANISMS, 0.0))
            t["ballooning"] += row["MCTLSZ"]
            t["sharing"] += row["SHRDSVD"]
            t["compression"] += row["ZIPPED"] - row["CACHEUSD"]  # net of the cache's frames
            t["swapping"] += row["SWCUR"]
        for s in vms.values():
            s["mean_throughput"] = s.pop("throughput_sum") / max(1, s["ticks"])
        held = list(totals.values())
        mechanisms = {
            name: {"peak_mib": max((t[name] for t in held), default=0.0),
                   "end_mib": held[-1][name] if held else 0.0}
            for name in _MECHANISMS
        }
        states: dict[str, float] = {}
        for row in self.host_rows:
            states[row["state"]] = states.get(row["state"], 0.0) + row["tick_s"]
        return {
            "scenario": self.scenario.name,
            "complete": self.complete,
            "ticks": self.ticks_done,
            "time_in_state_s": states,
            "mechanisms": mechanisms,
            "vms": vms,
        }


#: The reclamation mechanisms, in the order ESX turns to them.
_MECHANISMS = ("sharing", "ballooning", "compression", "swapping")

#: What a VM's stall is split into (the ``stall_<cause>_s`` columns of the
#: simulator's rows, ``sim_rows.py``): its own paging, the host's swap-ins,
#: decompression, copy-on-write, zeroing, blocked in LOW, the rest.
STALL_CAUSES = ("guest_paging", "host_swap_in", "decompress", "cow", "zeroing", "blocked",
                "other")


def _number(value: float | None) -> float:
    """A row's value as a number to add: absent or NaN counts nothing."""
    return 0.0 if value is None or value != value else float(value)



def write_results(result: RunResult, out_dir: str | Path | OutputDir,
                  overwrite: bool = False) -> Path:
    """Write ``result`` to ``out_dir`` atomically; returns the directory.

    ``out_dir`` is a path, or an :class:`~hvmem.outdir.OutputDir` the caller
    opened (checked, locked and staged) before the run. A path that holds
    anything but earlier results is refused, and earlier results are replaced
    only with ``overwrite``. A run that did not finish is written all the same,
    with ``"complete": false`` and its ``stop_reason`` in the summary.

    Raises:
        ConfigError: ``out_dir`` is refused (``outdir.py``) or cannot be written.
    """
    if isinstance(out_dir, OutputDir):
        return _write_into(result, out_dir)
    with OutputDir(out_dir, replace=overwrite) as target:
        return _write_into(result, target)


def _write_into(result: RunResult, target: OutputDir) -> Path:
    """The files of ``result`` in ``target``'s staging directory, then committed."""
    tmp = target.staging
    if tmp is None:
        raise RuntimeError("results written to an output directory that is not open")
    summary = summary_with_stop(result)
    try:
        (tmp / "scenario.json").write_text(
            strict_json(dump_scenario(result.scenario), indent=2, default=str) + "\n")
        pq.write_table(_table(result.host_rows), tmp / "host.parquet")
        pq.write_table(_table(result.vm_rows), tmp / "vms.parquet")
        with open(tmp / "events.jsonl", "w") as handle:
            for event in result.events:
                handle.write(strict_json(event) + "\n")
        (tmp / "summary.json").write_text(strict_json(summary, indent=2) + "\n")
        return target.commit(list(RESULTS_FILES))
    except OSError as err:
        raise ConfigError(f"{target.path}: cannot write results ({err.strerror})") from None


def summary_with_stop(result: RunResult) -> dict:
    """``result.summary()``, with ``stop_reason`` when the run did not finish."""
    summary = result.summary()
    if not result.complete:
        summary["stop_reason"] = result.stop_reason or "interrupted"
    return summary


#: The files of a results directory, in the order they replace earlier ones (summary last).
RESULTS_FILES = ("scenario.json", "host.parquet", "vms.parquet", "events.jsonl",
                 "summary.json")


def strict_json(value: object, **dumps_options: object) -> str:
    """``value`` as JSON that every parser reads: NaN and the infinities become ``null``.

    Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON
    [RFC8259 §6]: JavaScript's ``JSON.parse`` and strict readers refuse them.
    """
    return json.dumps(_finite(value), allow_nan=False, **dumps_options)


def _finite(value: object) -> object:
    """``value`` with every float that is not finite replaced by None, at any depth."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


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
