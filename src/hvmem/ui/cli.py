"""The ``hvmem`` command line.

Every subcommand is a thin shell: it parses arguments, calls the model or a
benchmark, and renders the result (Rich for people, ``--json`` for scripts).
User errors (bad flags, files, values) end in one line on stderr and a non-zero
exit, never a traceback: ``hvmem: error: ...`` with exit status 1 for a bad
value or file, and Click's usage message with status 2 for a bad flag
(``ui/exits.py``, shared with ``hvmem qemu``).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from signal import SIGINT
from typing import Annotated

import typer
from rich.console import Console

from hvmem import __version__
from hvmem.errors import HvmemError
from hvmem.ui.exits import STOPS, ExitStatus, Stopped, user_errors

app = typer.Typer(
    name="hvmem",
    help="Hypervisor memory resource management, the way VMware ESX does it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
bench_app = typer.Typer(help="Measure hvmem's speed on fixed, seeded workloads (JSON with --json).",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
# Real QEMU guests (hvmem.ui.qemu_cli): image, launch, control, stop.
from hvmem.ui.qemu_cli import qemu_app  # noqa: E402 -- registered right after the bench app

app.add_typer(qemu_app, name="qemu")
from hvmem.ui.libvirt_cli import libvirt_app  # noqa: E402 -- libvirt domains: control, restore

app.add_typer(libvirt_app, name="libvirt")
from hvmem.ui.aggregate_cli import FIDELITY_HELP, bench_fleet, with_fidelity  # noqa: E402

bench_app.command("fleet")(bench_fleet)
# Reports and figures of results (hvmem.ui.report_cli): report, plot.
from hvmem.ui.report_cli import (  # noqa: E402
    plot_command,
    report_command,
    report_of_directory,
)

app.command("report")(report_command)
app.command("plot")(plot_command)
# Scenarios and traces from real data (hvmem.ui.traces_cli): scenario from-traces, trace record.
from hvmem.ui.traces_cli import scenario_app, trace_app  # noqa: E402

app.add_typer(scenario_app, name="scenario")
app.add_typer(trace_app, name="trace")
# A results directory on the esxtop-style screen (hvmem.ui.replay).
from hvmem.ui.replay import top_command  # noqa: E402 -- registered with the other command groups

app.command("top")(top_command)
# A results directory as CSV, esxtop's batch layout or plain (hvmem.ui.export).
from hvmem.ui.export import export_command  # noqa: E402 -- registered with the other commands

app.command("export")(export_command)
# A grid of scenario values x seeds, on a process pool or Dask (hvmem.ui.sweep_cli).
from hvmem.ui.sweep_cli import sweep_command  # noqa: E402 -- registered with the other commands

app.command("sweep")(sweep_command)
# One scenario under several policies, side by side (hvmem.ui.compare_cli).
from hvmem.ui.compare_cli import compare_command  # noqa: E402 -- registered with the others

app.command("compare")(compare_command)
#: --force, as hvmem run, compare and demo explain it.
FORCE_HELP = ("Replace the earlier results in --out (only the files hvmem wrote there), and "
              "run even beyond the work ceiling or the RAM this machine has.")


class Paging(StrEnum):
    """Paging modes a user may pick."""

    nested = "nested"
    shadow = "shadow"


class TraceFormat(StrEnum):
    """Trace formats ``hvmem tlb`` reads."""

    auto = "auto"
    addr = "addr"
    lackey = "lackey"


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hvmem {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True,
                           help="Print the version and exit.")
    ] = False,
) -> None:
    """Hypervisor memory resource management, the way VMware ESX does it."""


def _parse_gva(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise HvmemError(f"GVA {text!r}: expected an address such as 0x400123 or 4194595") from None
    if not 0 <= value < (1 << 48):
        raise HvmemError(f"GVA {text!r}: outside the 48-bit guest-virtual address space")
    return value


@app.command()
@user_errors
def translate(
    gvas: Annotated[list[str], typer.Argument(help="Guest-virtual addresses (0x... or decimal).")],
    paging: Annotated[
        Paging | None,
        typer.Option(help="How the hypervisor virtualizes the MMU [default: nested]."),
    ] = None,
    vm: Annotated[str, typer.Option(help="The VM whose process issues the accesses.")] = "vm0",
    asid: Annotated[int, typer.Option(help="The guest process (address-space id).")] = 1,
    write: Annotated[bool, typer.Option("--write", help="Access for writing.")] = False,
    pwc: Annotated[int | None, typer.Option(help="Page-walk cache entries [default: 0].")] = None,
    machine_file: Annotated[
        Path | None,
        typer.Option("--machine", help="A machine TOML file instead of the built-in machine."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Translate guest-virtual addresses step by step: TLB, every table read, GPA, MPN, cost.

    The built-in machine is a 64 MiB host running vm0 (16 MiB) with two processes:
    ASID 1 maps code at 0x400000 (8 pages, read-only), a heap at 0x10000000 (32
    pages) and a stack at 0x7fffffffde000; ASID 2 maps code at 0x400000 and data
    at 0x55550000 (64 pages). Nothing is backed until touched. Addresses are
    translated in order, so a repeated address hits the TLB.
    """
    from hvmem.machine import builtin_machine
    from hvmem.scenario.machine_file import load_machine
    from hvmem.ui.translate_view import render_walk

    addresses = [_parse_gva(text) for text in gvas]
    if machine_file is not None:
        if paging is not None or pwc is not None:
            raise HvmemError("--paging and --pwc: with --machine, set them in the file's [host]")
        machine = load_machine(machine_file)
    else:
        if pwc is not None and not 0 <= pwc <= 4096:
            raise HvmemError(f"--pwc: expected 0..4096 entries, found {pwc}")
        machine = builtin_machine((paging or Paging.nested).value, pwc_entries=pwc or 0)
    reports = [machine.explain(vm, asid, gva, write) for gva in addresses]
    if as_json:
        typer.echo(json.dumps(reports, indent=2))
        return
    console = _console()
    for report in reports:
        console.print(render_walk(report))


def _page_shift(page_size: str) -> int:
    """log2 of a --page-size (4KiB, 2MiB or 1GiB), or a one-line error."""
    from hvmem.units import GIB, MIB, PAGE_SIZE_BYTES, parse_size_bytes

    size_bytes = parse_size_bytes(page_size, what="--page-size")
    if size_bytes not in (PAGE_SIZE_BYTES, 2 * MIB, GIB):
        from hvmem.params import show_raw

        raise HvmemError(f"--page-size: expected 4KiB, 2MiB or 1GiB, found {show_raw(page_size)}")
    return size_bytes.bit_length() - 1


@app.command()
@user_errors
def tlb(
    trace: Annotated[Path, typer.Argument(help="Trace file ('-' for standard input).")],
    entries: Annotated[int, typer.Option(help="TLB entries.")] = 64,
    ways: Annotated[int, typer.Option(help="Associativity (entries per set).")] = 4,
    page_size: Annotated[str, typer.Option(help="Page size: 4KiB or 2MiB.")] = "4KiB",
    pages: Annotated[
        bool, typer.Option("--pages", help="One page number per line (OSTEP format).")
    ] = False,
    trace_format: Annotated[
        TraceFormat, typer.Option("--format", help="Trace format when not --pages.")
    ] = TraceFormat.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Simulate a set-associative LRU TLB over an address trace.

    Formats: one address per line (hex with 0x, or decimal); --pages for one page
    number per line; Valgrind Lackey --trace-mem=yes output (I, L, S, M lines),
    detected automatically. A page maps to set (page number mod sets).
    """
    from hvmem.hardware.tlb import Tlb
    from hvmem.ui.options import check_tlb, check_trace_format
    from hvmem.workloads.trace import iter_page_numbers

    page_shift = _page_shift(page_size)
    check_tlb(entries, ways)
    check_trace_format(pages, trace_format.value)
    fmt = "pages" if pages else trace_format.value
    sim = Tlb(entries, ways, "tlb")
    for vpns, _ in iter_page_numbers(str(trace), fmt, page_shift):
        sim.run_pages(vpns)
    c = sim.counters
    accesses = c.hits + c.misses
    if as_json:
        typer.echo(json.dumps({"accesses": accesses, "hits": c.hits, "misses": c.misses}))
        return
    rate = c.hits / accesses if accesses else 0.0
    typer.echo(f"TLB: {entries} entries, {ways}-way ({sim.n_sets} sets), LRU, "
               f"{page_size} pages")
    typer.echo(f"accesses {accesses}  hits {c.hits}  misses {c.misses}  hit rate {rate:.2%}")


@app.command()
@user_errors
def run(
    scenario_file: Annotated[
        Path, typer.Argument(help="A scenario TOML file or a shipped scenario name.")
    ],
    policy: Annotated[str | None, typer.Option(
        help="Policy: esx, static, mom, proxmox or psi.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    fidelity: Annotated[str | None, typer.Option(help=FIDELITY_HELP)] = None,
    out: Annotated[Path | None, typer.Option(help="Results directory to write.")] = None,
    check_invariants: Annotated[
        bool, typer.Option("--check-invariants", help="Check every invariant after each tick.")
    ] = False,
    no_live: Annotated[
        bool, typer.Option("--no-live", help="A progress bar instead of the esxtop-style view.")
    ] = False,
    report: Annotated[bool, typer.Option(
        "--report", help="Also write RESULTS/report.html (hvmem report) and print its path.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
) -> None:
    """Simulate a scenario and write a results directory (Parquet time series, summary).

    SCENARIO_FILE is a TOML file, or the name of a shipped scenario (demo,
    idle-tax, sharing, ...). On a terminal an esxtop-style memory screen follows
    the run; with --no-live, or when output is not a terminal, a progress bar,
    then a summary table. --out must be new, empty or earlier results (--force);
    a run stopped by a signal or an error keeps what it simulated, marked
    incomplete, and exits 128 + the signal's number or 1.
    """
    STOPS.hold()  # a signal while the run is prepared waits for it (ui/run_guard.py)
    from hvmem.scenario.work_estimate import check_run, host_memory_errors
    from hvmem.ui.options import check_policy, check_seed, scenario_of_flags
    from hvmem.ui.simulate import simulate

    check_seed(seed)
    check_policy(policy)
    file, scenario = scenario_of_flags(scenario_file, seed, fidelity)
    if scenario.backend.kind == "qemu":  # the scenario's VMs as real QEMU guests
        from hvmem.ui.qemu_cli import run_scenario_on_qemu

        STOPS.raise_if_stopped()  # the guests' control loop takes signals itself
        path = run_scenario_on_qemu(scenario, policy, out, no_live, force)
        if report:
            typer.echo(f"report: {report_of_directory(path)}")
        return
    check_run(scenario, str(file), force=force)
    with host_memory_errors(str(file), scenario):
        simulate(_console(), scenario, policy, out, check_invariants, no_live, force,
                 report=report)


@app.command()
@user_errors
def demo(
    walkthrough: Annotated[bool, typer.Option(
        "--walkthrough", help="The address-translation walkthrough instead of the run.")] = False,
    out: Annotated[Path | None, typer.Option(help="Results directory to write.")] = None,
    no_live: Annotated[
        bool, typer.Option("--no-live", help="A progress bar instead of the esxtop-style view.")
    ] = False,
    report: Annotated[bool, typer.Option(
        help="Write RESULTS/report.html (hvmem report) and print its path.")] = True,
    force: Annotated[bool, typer.Option("--force", help=FORCE_HELP)] = False,
    fidelity: Annotated[str | None, typer.Option(help=FIDELITY_HELP)] = None,
) -> None:
    """Run the built-in demo scenario: three VMs on a 1.5x overcommitted host.

    The same as `hvmem run demo`: the host passes through the ESXi 6 memory
    states while balloons, sharing, compression and swapping take memory back;
    it ends with what each mechanism reclaimed and what it cost each VM.
    """
    if walkthrough:
        from hvmem.ui.demo import run_demo

        run_demo(_console())
        return
    STOPS.hold()  # a signal while the run is prepared waits for it (ui/run_guard.py)
    from hvmem.scenario.loader import load_scenario
    from hvmem.scenarios import builtin_scenario_path
    from hvmem.ui.simulate import simulate

    simulate(_console(), with_fidelity(load_scenario(builtin_scenario_path("demo")), fidelity),
             None, out, False, no_live, force, report=report)


@app.command()
@user_errors
def minfree(
    memory: Annotated[str, typer.Option(help="Host memory, such as 128GiB.")],
    profile: Annotated[str, typer.Option(help="State profile: esx4, esxi5 or esxi6.")] = "esxi6",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show minFree and the free-memory threshold of each host memory state."""
    from hvmem.params import show_raw
    from hvmem.policy.minfree import minfree_report
    from hvmem.scenario.schema import HostConfig
    from hvmem.ui.options import check_field
    from hvmem.units import parse_size_bytes

    memory_bytes = parse_size_bytes(memory, what="--memory")
    check_field("--memory", memory_bytes, HostConfig, "memory_bytes", show_raw(memory))
    report = minfree_report(memory_bytes, profile)
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"host memory {report['memory_mib']:g} MiB, profile {report['profile']}: "
               f"minFree {report['minfree_mib']:g} MiB")
    typer.echo("state   threshold (MiB free; the state holds below it, high above the next)")
    for state, level in report["thresholds_mib"].items():
        typer.echo(f"{state:6s}  {level:10.2f}")


def _print_bench(result: dict, as_json: bool) -> bool:
    """Print a benchmark's JSON, or its rates for people; True when printed for people."""
    if as_json:
        typer.echo(json.dumps(result))
        return False
    for key, value in result.items():
        if key.endswith("_per_s") and not key.endswith("mib_per_s"):
            typer.echo(f"{key:40s} {value / 1e6:8.2f} M/s")
    return True


@bench_app.command("translate")
@user_errors
def bench_translate(
    refs: Annotated[int, typer.Option(help="References in the stream.")] = 5_000_000,
    seed: Annotated[int, typer.Option(help="Seed of the stream.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """TLB only, nested and shadow translation, and pycachesim, over one Zipf stream."""
    from hvmem.bench import bench_translate as run
    from hvmem.ui.options import check_count, check_seed

    check_count("--refs", refs)
    check_seed(seed)
    result = run(refs, seed)
    if _print_bench(result, as_json):
        typer.echo(f"{'counts_match':40s} {result['counts_match']}")


def main() -> None:
    """Entry point of the ``hvmem`` script."""
    try:
        with STOPS:  # SIGTERM and SIGHUP as Ctrl-C, from the start
            app()
    except KeyboardInterrupt as stop:  # before a run began, or outside one: nothing to keep
        typer.echo(f"hvmem: {stop or 'interrupted'}", err=True)
        raise SystemExit(getattr(stop, "exit_status", ExitStatus.INTERRUPTED)) from None
    except SystemExit as done:
        # Typer ends any KeyboardInterrupt outside a command with 130; SIGTERM is 143.
        if done.code == ExitStatus.INTERRUPTED and STOPS.received not in (None, SIGINT):
            stop = Stopped(STOPS.received)
            typer.echo(f"hvmem: {stop}", err=True)
            raise SystemExit(stop.exit_status) from None
        raise


@app.command()
@user_errors
def paging(
    trace: Annotated[Path, typer.Argument(help="Trace file ('-' for standard input).")],
    frames: Annotated[int, typer.Option(help="Page frames of the memory.")],
    policy: Annotated[
        str, typer.Option(help="Replacement policy: fifo, lru, clock, random or opt.")
    ],
    page_size: Annotated[str, typer.Option(help="Page size: 4KiB or 2MiB.")] = "4KiB",
    pages: Annotated[
        bool, typer.Option("--pages", help="One page number per line (OSTEP format).")
    ] = False,
    trace_format: Annotated[
        TraceFormat, typer.Option("--format", help="Trace format when not --pages.")
    ] = TraceFormat.auto,
    seed: Annotated[int, typer.Option(help="Seed of the random policy.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Replay a trace through a demand-paged memory and count hits and misses.

    Policies: fifo; lru; clock (second chance, one reference bit, circular hand);
    random (seeded); opt (Belady: evict the page used farthest in the future; reads
    the whole trace first). The others stream the trace in bounded memory. Formats
    as for 'hvmem tlb': addresses, --pages (OSTEP paging-policy.py -f files) or
    Valgrind Lackey output, detected automatically.
    """
    from hvmem.replacement.names import REPLAY_POLICIES
    from hvmem.replacement.replay import simulate_chunks
    from hvmem.workloads.trace import iter_page_numbers

    name = policy.strip().lower()
    if name not in REPLAY_POLICIES:
        raise HvmemError(f"--policy {policy!r}: expected one of {', '.join(REPLAY_POLICIES)}")
    if frames <= 0:
        raise HvmemError(f"--frames: expected a positive count, found {frames}")
    if seed < 0:
        raise HvmemError(f"--seed: expected a non-negative integer, found {seed}")
    from hvmem.ui.options import check_trace_format

    check_trace_format(pages, trace_format.value)
    page_shift = _page_shift(page_size)
    fmt = "pages" if pages else trace_format.value
    chunks = (vpns for vpns, _ in iter_page_numbers(str(trace), fmt, page_shift))
    result = simulate_chunks(chunks, frames, name, seed)
    if as_json:
        typer.echo(json.dumps({"accesses": result.accesses, "hits": result.hits,
                               "misses": result.misses}))
        return
    unit = "pages" if pages else f"{page_size} pages"
    typer.echo(f"paging: {frames} frames, {name.upper()}, {unit}")
    typer.echo(f"accesses {result.accesses}  hits {result.hits}  misses {result.misses}  "
               f"hit rate {result.hit_rate:.2%}")
    typer.echo(f"distinct pages {result.distinct_pages}  evictions {result.evictions}")


@bench_app.command("host")
@user_errors
def bench_host_command(
    seed: Annotated[int, typer.Option(help="Seed of the page contents and choices.")] = 1,
    scenario: Annotated[str, typer.Option(
        help="Shipped scenario simulated end to end ('none' to skip).")] = "bench-32vm",
    duration: Annotated[str | None, typer.Option(
        help="Simulate only this much of the scenario, such as 5min.")] = None,
    scan_pages: Annotated[int, typer.Option(
        help="Pages of the sharing scan; swapping takes an eighth as many.")] = 8 << 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sharing scan over 8 Mi pages, swapping out 1 Mi pages, and a whole scenario.

    The scenario (bench-32vm: 32 VMs of 4 GiB on a 64 GiB host for one
    simulated hour) gives sim_seconds_per_wall_second and peak_rss_mib.
    """
    from hvmem.bench import bench_aggregate, bench_host, bench_scenario
    from hvmem.scenarios import builtin_scenario_path
    from hvmem.units import parse_time_ns

    duration_s = None
    if duration is not None:
        duration_s = parse_time_ns(duration, what="--duration") / 10**9
        if duration_s <= 0:
            raise HvmemError(f"--duration: expected a positive time, found {duration}")
    if scenario != "none":
        builtin_scenario_path(scenario)  # an unknown name fails before the long part
    from hvmem.ui.options import MAX_BENCH_PAGES, check_count, check_seed

    check_count("--scan-pages", scan_pages, MAX_BENCH_PAGES)
    check_seed(seed)
    result = bench_host(seed, scan_pages)
    if scenario != "none":
        run = bench_scenario(scenario, duration_s)
        result["sim_seconds_per_wall_second"] = run.pop("sim_seconds_per_wall_second")
        result["pressure_window_sim_seconds_per_wall_second"] = run.pop(
            "pressure_window_sim_seconds_per_wall_second")
        result["peak_rss_mib"] = run.pop("peak_rss_mib")
        result["scenario"] = run
        result["aggregate_sim_seconds_per_wall_second"] = bench_aggregate(
            scenario, duration_s)["sim_seconds_per_wall_second"]
    _print_bench(result, as_json)


@bench_app.command("guest")
@user_errors
def bench_guest(
    refs: Annotated[int, typer.Option(help="References in the Zipf stream.")] = 5_000_000,
    lines: Annotated[int, typer.Option(help="Records in the generated Lackey trace.")] = 3_000_000,
    seed: Annotated[int, typer.Option(help="Seed of the stream and the trace.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Guest paging (LRU over a Zipf stream) and streaming Lackey trace parsing."""
    from hvmem.bench import bench_guest as run
    from hvmem.ui.options import check_count, check_seed

    check_count("--refs", refs)
    check_count("--lines", lines)
    check_seed(seed)
    result = run(refs, lines, seed)
    if not _print_bench(result, as_json):
        return
    typer.echo(f"{'lackey_mib_per_s':40s} {result['lackey_mib_per_s']:8.1f} MiB/s")
    for key in ("refs", "footprint_pages", "frames", "hits", "misses", "lackey_lines"):
        typer.echo(f"{key:40s} {result[key]}")
