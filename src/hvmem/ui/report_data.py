"""The runs a report or a plot shows, read once into columns.

A report is drawn from results directories (``read_results``: a simulated run
or a real QEMU one, the same format) or from runs still in memory (``hvmem
compare`` keeps its runs without writing them). Either way a :class:`RunData`
holds what the charts and tables need: the host's and the VMs' time series as
NumPy columns, the events, the summary and the effective scenario as JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from hvmem.errors import ConfigError
from hvmem.results import RunResult, read_results
from hvmem.scenario.loader import dump_scenario

#: Columns that place a row (time, VM) rather than measure something.
KEY_COLUMNS = ("time_s", "tick_s", "vm")


@dataclass(frozen=True)
class RunData:
    """One run, ready to draw: its name, columns, events, summary and scenario."""

    name: str
    host: dict[str, np.ndarray]
    vms: dict[str, dict[str, np.ndarray]]  # VM name -> column -> values, in time order
    events: list[dict]
    summary: dict
    scenario: dict

    @property
    def vm_names(self) -> list[str]:
        """The VMs in the order they first appear in the rows."""
        return list(self.vms)

    @property
    def end_s(self) -> float:
        """The time of the last host row (0 for an empty run)."""
        times = self.host.get("time_s")
        return float(times[-1]) if times is not None and len(times) else 0.0


def _columns(table: pa.Table) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy(zero_copy_only=False)
            for name in table.column_names}


def _by_vm(vms: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    if "vm" not in vms:
        return {}
    names = vms["vm"]
    order = list(dict.fromkeys(names.tolist()))
    return {name: {key: values[names == name] for key, values in vms.items() if key != "vm"}
            for name in order}


def run_from_tables(name: str, host: pa.Table, vms: pa.Table, events: list[dict],
                    summary: dict, scenario: dict) -> RunData:
    """A :class:`RunData` from Arrow tables as ``read_results`` returns them."""
    return RunData(name, _columns(host), _by_vm(_columns(vms)), events, summary, scenario)


def load_run(path: str | Path) -> RunData:
    """A results directory as a :class:`RunData`, named after the directory.

    Raises:
        ConfigError: not a results directory, or its ``scenario.json`` is not JSON.
    """
    results = read_results(path)
    scenario_file = Path(path) / "scenario.json"
    try:
        scenario = json.loads(scenario_file.read_text()) if scenario_file.is_file() else {}
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{scenario_file}: not JSON ({err})") from None
    return run_from_tables(Path(path).name or str(path), results.host, results.vms,
                           results.events, results.summary, scenario)


def run_from_result(name: str, result: RunResult) -> RunData:
    """A run still in memory (``hvmem compare``) as a :class:`RunData`."""
    host = pa.table(result.host_rows.columns())
    vms = pa.table(result.vm_rows.columns())
    return run_from_tables(name, host, vms, list(result.events), result.summary(),
                           json.loads(json.dumps(dump_scenario(result.scenario), default=str)))


def metric_names(run: RunData) -> tuple[list[str], list[str]]:
    """The numeric columns a plot may draw: (host metrics, VM metrics), as stored."""
    host = [k for k, v in run.host.items() if k not in KEY_COLUMNS and v.dtype.kind in "fiu"]
    first = next(iter(run.vms.values()), {})
    vm = [k for k, v in first.items() if k not in KEY_COLUMNS and v.dtype.kind in "fiu"]
    return host, vm
