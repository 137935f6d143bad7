"""``hvmem scenario from-traces`` and ``hvmem trace record``: scenarios and traces from real data.

``scenario from-traces`` builds a host scenario from a directory of per-VM
memory-usage traces (``scenario/from_traces.py``); ``trace record`` runs a
program under Valgrind's Lackey and keeps its memory references
(``ui/trace_record.py``). Both are thin: they parse, call, and print.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hvmem.errors import HvmemError
from hvmem.ui.exits import user_errors

__all__ = ["scenario_app", "trace_app"]

scenario_app = typer.Typer(help="Build scenarios from data.", no_args_is_help=True)
trace_app = typer.Typer(help="Record memory-reference traces of real programs.",
                        no_args_is_help=True)


class Pick(StrEnum):
    """Which traces become VMs."""

    largest = "largest"
    random = "random"


def _size(text: str, flag: str) -> int:
    from hvmem.units import parse_size_bytes

    try:
        return parse_size_bytes(text, what=flag)
    except (ValueError, HvmemError) as exc:
        raise HvmemError(f"{flag}: {exc}") from None


@scenario_app.command("from-traces")
@user_errors
def from_traces(
    directory: Annotated[Path, typer.Argument(help="A directory of per-VM usage traces.")],
    host_memory: Annotated[str, typer.Option("--host-memory", help="Host memory (64GiB).")],
    out: Annotated[Path, typer.Option(help="The scenario file to write.")],
    vms: Annotated[int | None, typer.Option(help="How many VMs (default: one per file).")] = None,
    pick: Annotated[Pick, typer.Option(help="Which traces: the largest VMs or a random "
                                       "sample.")] = Pick.largest,
    seed: Annotated[int, typer.Option(help="Seed of the random pick and of the scenario.")] = 0,
    trace_format: Annotated[str, typer.Option("--format", help="auto, bitbrains, alibaba, "
                                              "google or csv.")] = "auto",
    time_scale: Annotated[float, typer.Option(help="Trace seconds per simulated second.")] = 60.0,
    duration: Annotated[str, typer.Option(help="The scenario's duration.")] = "10min",
    trace_memory: Annotated[str | None, typer.Option(help="What a percent usage is of "
                                                     "(Alibaba, Google traces).")] = None,
) -> None:
    """Write a host scenario whose VMs follow the traces in DIRECTORY.

    Each VM's memory is what its trace says was provisioned; its workload is a
    demand workload over its trace. The overcommit (configured memory over host
    memory) and the peak of the summed usage are printed.
    """
    from hvmem.scenario.from_traces import build_from_traces
    from hvmem.units import parse_time_ns

    try:
        duration_ns = parse_time_ns(duration, what="--duration")
    except (ValueError, HvmemError) as exc:
        raise HvmemError(f"--duration: {exc}") from None
    if not 0 < time_scale <= 1e6:
        raise HvmemError(f"--time-scale: expected a number in (0, 1e6], found {time_scale:g}")
    host = build_from_traces(directory, _size(host_memory, "--host-memory"), out=out,
                             n_vms=vms, pick=pick.value, seed=seed, fmt=trace_format,
                             time_scale=time_scale, duration_ns=duration_ns,
                             trace_memory_bytes=(None if trace_memory is None
                                                 else _size(trace_memory, "--trace-memory")))
    out.write_text(host.toml, encoding="utf-8")
    for vm in host.vms:
        for note in vm.trace.notes:
            typer.echo(f"{vm.path.name}: {note}", err=True)
    typer.echo(host.report())
    typer.echo(f"wrote {out}")


@trace_app.command("record", context_settings={"allow_extra_args": True,
                                                "ignore_unknown_options": True})
@user_errors
def record(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="The trace file to write.")],
    max_size: Annotated[str, typer.Option(help="Stop the program when the trace reaches "
                                          "this size.")] = "1GiB",
) -> None:
    """Run COMMAND under Valgrind's Lackey and write its memory references to OUT.

    Usage: hvmem trace record --out FILE -- COMMAND [ARGS...]. The trace is
    Lackey's format, which replay workloads, hvmem tlb and hvmem paging read.
    """
    from hvmem.ui.trace_record import record_trace

    cap = _size(max_size, "--max-size")
    result = record_trace(list(ctx.args), out, max_size_bytes=cap, progress=sys.stderr)
    if result.records == 0:
        raise HvmemError(f"trace record: nothing recorded: valgrind exited {result.exit_status} "
                         f"(can it run {ctx.args[0]!r}?)")
    if result.capped:
        raise HvmemError(f"trace record: the trace reached --max-size {max_size} and the "
                         f"program was stopped; {out} holds its first {result.records} "
                         f"records (raise --max-size for more)")
    typer.echo(f"wrote {out}: {result.records} records, "
               f"{result.size_bytes / (1 << 20):.1f} MiB (the program exited "
               f"{result.exit_status})")
