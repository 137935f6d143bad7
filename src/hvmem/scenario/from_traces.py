"""A host scenario from a directory of per-VM memory-usage traces.

``hvmem scenario from-traces DIR --host-memory 64GiB`` reads every file of DIR
as a demand trace (:mod:`hvmem.workloads.trace_formats`; Bitbrains' per-VM
files are the usual source), picks VMs and writes a scenario in which each VM:

* has the memory the trace says was provisioned (Bitbrains' ``Memory capacity
  provisioned [KB]``), or ``trace_memory`` when a format gives usage only as a
  share of it, or else its peak usage rounded up to 64 MiB;
* runs a ``demand`` workload over its own trace, ``over = "clip"``: Bitbrains
  records usage above the provisioned size now and then, and a host cannot
  give a VM more than its memory.

Picking: ``largest`` takes the VMs with the most memory (ties by file name),
``random`` a seeded sample; without ``--vms``, all of them. What the host is
asked for is reported: configured memory over host memory (the overcommit
ESX allows and reclaims under), and the peak of the VMs' summed usage over
host memory (what it must really find at the worst moment).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hvmem.errors import ConfigError
from hvmem.units import MIB, PAGE_SIZE_BYTES, format_time, size_text
from hvmem.workloads.trace_formats import DemandTrace, read_demand_trace

__all__ = ["PICKS", "TraceHost", "TraceVm", "build_from_traces"]

PICKS = ("largest", "random")
#: A VM whose trace states no size gets its peak usage rounded up to this.
_ROUND_BYTES = 64 * MIB
#: Points of the summed-usage curve at which the peak is looked for.
_GRID_POINTS = 4096


@dataclass(frozen=True, slots=True)
class TraceVm:
    """One VM of the scenario and the trace that drives it."""

    name: str
    path: Path
    memory_bytes: int
    trace: DemandTrace

    @property
    def peak_bytes(self) -> float:
        """Its highest usage."""
        return float(self.trace.usage_bytes.max())


@dataclass(frozen=True, slots=True)
class TraceHost:
    """What ``build_from_traces`` made: the VMs, the scenario text and its overcommit."""

    vms: tuple[TraceVm, ...]
    host_memory_bytes: int
    toml: str
    n_files: int

    @property
    def configured_bytes(self) -> int:
        """The VMs' memory, summed."""
        return sum(vm.memory_bytes for vm in self.vms)

    @property
    def overcommit(self) -> float:
        """Configured memory over host memory."""
        return self.configured_bytes / self.host_memory_bytes

    @property
    def peak_demand_bytes(self) -> float:
        """The highest sum of the VMs' usage at one moment (traces aligned at their start)."""
        end = max(vm.trace.duration_s for vm in self.vms)
        grid = np.linspace(0.0, end, _GRID_POINTS)
        total = sum(np.interp(grid, vm.trace.time_s,
                              np.minimum(vm.trace.usage_bytes, vm.memory_bytes))
                    for vm in self.vms)
        return float(np.max(total))

    def report(self) -> str:
        """The overcommit, in one line."""
        return (f"{len(self.vms)} of {self.n_files} traces: "
                f"{size_text(self.configured_bytes)} configured on a "
                f"{size_text(self.host_memory_bytes)} host, overcommit {self.overcommit:.2f}x; "
                f"summed usage peaks at {size_text(-(-int(self.peak_demand_bytes) // MIB) * MIB)} "
                f"({self.peak_demand_bytes / self.host_memory_bytes:.2f}x)")


def _vm_name(stem: str, taken: set[str]) -> str:
    base = "vm-" + (re.sub(r"[^A-Za-z0-9_.-]", "-", stem) or "trace")
    name, k = base, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name


def _memory_bytes(trace: DemandTrace, trace_memory_bytes: int | None) -> int:
    size_bytes = trace.provisioned_bytes or trace_memory_bytes
    if not size_bytes:
        size_bytes = max(_ROUND_BYTES, math.ceil(trace.usage_bytes.max() / _ROUND_BYTES)
                         * _ROUND_BYTES)
    return -(-int(size_bytes) // MIB) * MIB  # whole MiB: a size a file writes plainly


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml(name: str, host: TraceHost, out_dir: Path, *, fmt: str, time_scale: float,
          duration_ns: int, seed: int, trace_memory_bytes: int | None) -> str:
    lines = [
        f"# Built by hvmem scenario from-traces: {host.report()}.",
        f"name = {_quote(name)}",
        f"description = {_quote(f'{len(host.vms)} VMs driven by their memory-usage traces')}",
        f"duration = {_quote(format_time(duration_ns).replace(' ', ''))}",
        f"seed = {seed}",
        "",
        "[host]",
        f"memory = {_quote(size_text(host.host_memory_bytes).replace(' ', ''))}",
    ]
    for vm in host.vms:
        rel = os.path.relpath(vm.path.resolve(), out_dir.resolve())
        lines += [
            "",
            "[[vm]]",
            f"name = {_quote(vm.name)}",
            f"memory = {_quote(size_text(vm.memory_bytes).replace(' ', ''))}",
            "",
            "[vm.workload]",
            'kind = "demand"',
            f"path = {_quote(rel)}",
            f"format = {_quote(fmt)}",
            f"time_scale = {time_scale:g}",
            'over = "clip"',
        ]
        if trace_memory_bytes is not None:
            lines.append(f"trace_memory = {trace_memory_bytes}")
    return "\n".join(lines) + "\n"


def build_from_traces(directory: str | os.PathLike[str], host_memory_bytes: int, *,
                      out: str | os.PathLike[str], n_vms: int | None = None,
                      pick: str = "largest", seed: int = 0, fmt: str = "auto",
                      time_scale: float = 60.0, duration_ns: int = 600 * 10**9,
                      trace_memory_bytes: int | None = None) -> TraceHost:
    """The scenario of a directory of per-VM traces (see the module essay).

    Args:
        directory: one trace file per VM (hidden files are skipped).
        host_memory_bytes: the host's memory.
        out: where the scenario will be written (trace paths are relative to it).
        n_vms: how many VMs (None: one per file).
        pick: ``largest`` or ``random``.
        seed: the random pick's seed, and the scenario's.
        fmt: the traces' format (``auto``: detected per file).
        time_scale: trace seconds per simulated second.
        duration_ns: the scenario's duration.
        trace_memory_bytes: what a percent or fraction usage is of (Alibaba, Google).

    Raises:
        ConfigError: a bad option or an empty directory; TraceError: a file that
        cannot be read (its file and line).
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"DIR: expected a directory of traces, found {os.fspath(root)!r}")
    if pick not in PICKS:
        raise ConfigError(f"--pick: expected one of {', '.join(PICKS)}, found {pick!r}")
    if host_memory_bytes < PAGE_SIZE_BYTES:
        raise ConfigError(f"--host-memory: expected at least 4KiB, found {host_memory_bytes}")
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"DIR: no trace files in {os.fspath(root)!r}")
    if n_vms is not None and not 1 <= n_vms <= len(files):
        raise ConfigError(f"--vms: expected 1 to {len(files)} (the files in DIR), found {n_vms}")
    n_files = len(files)
    k = n_files if n_vms is None else n_vms
    if pick == "random":
        chosen = sorted(np.random.default_rng(seed).choice(len(files), size=k, replace=False))
        files = [files[int(i)] for i in chosen]
    traces = [(p, read_demand_trace(p, fmt, trace_memory_bytes=trace_memory_bytes,
                                    default_memory_bytes=trace_memory_bytes))
              for p in files]
    sized = [(p, tr, _memory_bytes(tr, trace_memory_bytes)) for p, tr in traces]
    if pick == "largest":
        sized.sort(key=lambda item: (-item[2], item[0].name))
        sized = sized[:k]
    taken: set[str] = set()
    vms = tuple(TraceVm(_vm_name(p.stem, taken), p, size_bytes, tr) for p, tr, size_bytes in sized)
    out_path = Path(out)
    host = TraceHost(vms, host_memory_bytes, "", n_files)
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", out_path.stem).lstrip("-_.") or "from-traces"
    text = _toml(name, host, out_path.parent, fmt=fmt, time_scale=time_scale,
                 duration_ns=duration_ns, seed=seed, trace_memory_bytes=trace_memory_bytes)
    return TraceHost(vms, host_memory_bytes, text, n_files)
