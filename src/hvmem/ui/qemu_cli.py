"""``hvmem qemu``: start small real guests, and run the memory policy over them.

Subcommands (each a thin shell over ``hvmem.backends.qemu``):

* ``image``: build (once) and show the cached guest kernel and initramfs;
* ``launch``: start N guests (TCG unless hardware KVM works), write guests.toml;
* ``control``: the controller loop with the esxtop-style live view, a results
  directory like a simulated run's, ``--dry-run`` and a Prometheus endpoint;
* ``stop``: stop the guests a launch started and remove their files and cgroups;
* ``restore``: undo what a controller that crashed (or was SIGKILLed) changed,
  from its state file under ``/run/hvmem`` (KSM, cgroup limits, balloons).

Errors are one line on stderr with a non-zero exit (``ui/exits.py``), and the
esxtop-style screen is the simulator's (``LiveTop`` in ``ui/top.py``).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from hvmem.errors import ConfigError, HvmemError
from hvmem.ui.control_run import console as _console
from hvmem.ui.control_run import follow_control, kept_stop
from hvmem.ui.exits import user_errors
from hvmem.units import MIB, NS_PER_S, ns_to_s, parse_size_bytes, parse_time_ns

qemu_app = typer.Typer(help="Real QEMU guests under the same memory policy as the simulator.",
                       no_args_is_help=True)


def _mib(text: str, what: str) -> float:
    return parse_size_bytes(text, what=what) / MIB


def _whole_s(text: str, what: str) -> int:
    ns = parse_time_ns(text, what=what)
    if ns % NS_PER_S:
        raise ConfigError(f"{what}: expected whole seconds, found {text!r}")
    return ns // NS_PER_S


def default_run_dir() -> Path:
    """Where launches put sockets, pid files and logs by default (short: socket paths)."""
    import os

    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return Path(runtime) / "hvmem" if runtime else Path(f"/tmp/hvmem-{os.getuid()}")


@qemu_app.command("image")
@user_errors
def image_cmd(
    cache_dir: Annotated[Path | None, typer.Option(help="Cache directory.")] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build even if cached.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Build the tiny guest (Debian cloud kernel + busybox initramfs), or show the cached one."""
    from hvmem.backends.qemu.guest_image import build_image

    image = build_image(cache_dir, force=rebuild)
    info = {"kernel": str(image.kernel), "initramfs": str(image.initramfs),
            "kernel_version": image.kernel_version}
    typer.echo(json.dumps(info) if as_json else "\n".join(f"{k}: {v}" for k, v in info.items()))


@qemu_app.command("launch")
@user_errors
def launch_cmd(
    count: Annotated[int, typer.Option(help="Number of guests.")] = 2,
    memory: Annotated[str, typer.Option(help="Memory of each guest.")] = "384MiB",
    run_dir: Annotated[Path | None, typer.Option(
        "--dir", help="Run directory: sockets, pid files, serial logs, guests.toml.")] = None,
    file_backed: Annotated[bool, typer.Option(
        "--file-backed", help="Guest RAM in a file on disk, QEMU in a memory cgroup "
        "(host swapping possible, KSM not).")] = False,
    swap_dir: Annotated[Path | None, typer.Option(
        help="Directory of the RAM files (.vswp) with --file-backed; not tmpfs.")] = None,
    shared: Annotated[str, typer.Option(help="Workload: identical-page data per guest.")] = (
        "64MiB"),
    private: Annotated[str, typer.Option(help="Workload: unique data per guest.")] = "32MiB",
    hold: Annotated[str, typer.Option(help="Workload: hold data this long (0s: for ever).")] = (
        "0s"),
    idle: Annotated[str, typer.Option(help="Workload: pause after freeing.")] = "10s",
    cycles: Annotated[int, typer.Option(help="Workload: alloc/hold/free cycles (0: for ever).")]
    = 1,
    touch: Annotated[str, typer.Option(help="Workload: re-read and checksum interval.")] = "5s",
    no_balloon_driver: Annotated[bool, typer.Option(
        "--no-balloon-driver", help="Leave the guests' balloon driver out.")] = False,
    host_memory: Annotated[str | None, typer.Option(
        help="Host memory budget to record in guests.toml for control.")] = None,
    prefix: Annotated[str, typer.Option(help="Guest names: PREFIX1, PREFIX2, ...")] = "vm",
    cache_dir: Annotated[Path | None, typer.Option(help="Guest image cache.")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until every guest's workload is ready.")] = (
        True),
) -> None:
    """Start N small guests with QMP sockets and virtio-balloon; write guests.toml."""
    from hvmem.backends.qemu.guest_image import WorkloadParams, build_image
    from hvmem.backends.qemu.launcher import (
        GUESTS_FILE,
        choose_accel,
        launch,
        require_tools,
        wait_for_marker,
    )

    if memory.strip().isdigit():
        raise ConfigError(f"--memory: {memory!r} has no unit; write it with one, "
                          f"e.g. {memory.strip()}MiB")
    memory_mib = _mib(memory, "--memory")
    if memory_mib != int(memory_mib):
        raise ConfigError(f"--memory: expected whole MiB, found {memory!r}")
    workload = WorkloadParams(
        shared_mib=int(_mib(shared, "--shared")), private_mib=int(_mib(private, "--private")),
        hold_s=_whole_s(hold, "--hold"), idle_s=_whole_s(idle, "--idle"), cycles=cycles,
        touch_s=_whole_s(touch, "--touch"), balloon=not no_balloon_driver)
    budget = _mib(host_memory, "--host-memory") if host_memory is not None else None
    require_tools()
    accel, why = choose_accel()
    image = build_image(cache_dir)
    directory = run_dir or default_run_dir()
    guests = launch(image, directory, count=count, memory_mib=int(memory_mib),
                    workload=workload, file_backed=file_backed, swap_dir=swap_dir,
                    prefix=prefix, accel=accel, host_memory_mib=budget)
    if guests[0].fallback:
        typer.echo(f"accelerator: tcg (KVM was chosen because {why}, but {guests[0].fallback}; "
                   "every guest was started again under TCG)")
    else:
        typer.echo(f"accelerator: {accel} ({why})")
    for g in guests:
        if wait:
            wait_for_marker(g.serial_log, "HVMEM-READY", 120.0, g.pid)
        ram = f"  ram {g.ram_file}" if g.ram_file else ""
        cgroup = (f"  scope {g.scope}" if g.scope else "") + (
            f"  cgroup {g.cgroup}" if g.cgroup else "  cgroup none (not limitable)")
        typer.echo(f"{g.name}: pid {g.pid}  qmp {g.qmp}  log {g.serial_log}{ram}{cgroup}")
    config = Path(directory).resolve() / GUESTS_FILE
    typer.echo(f"guests: {config}")
    typer.echo(f"control them: hvmem qemu control --config {config}")


@qemu_app.command("stop")
@user_errors
def stop_cmd(
    config: Annotated[Path, typer.Option(help="The guests.toml a launch wrote.")],
    keep_logs: Annotated[bool, typer.Option("--keep-logs", help="Keep the serial logs.")] = (
        False),
) -> None:
    """Stop the guests of a launch (by their pids) and remove their files and cgroups."""
    from hvmem.backends.qemu.launcher import read_guests_file, stop

    guests, _ = read_guests_file(config)
    problems = stop(guests, remove_files=not keep_logs)
    if problems:
        raise HvmemError("; ".join(problems))
    if not keep_logs:
        config.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the run directory, if nothing else is in it
            config.parent.rmdir()
    typer.echo(f"stopped {len(guests)} guest(s)")


@qemu_app.command("restore")
@user_errors
def restore_cmd(
    state_dir: Annotated[Path | None, typer.Option(
        help="The state directory (default $HVMEM_STATE_DIR or /run/hvmem).")] = None,
) -> None:
    """Undo what a controller that did not exit cleanly changed: KSM, cgroup limits, balloons.

    Reads the state files of controllers no longer running; a running
    controller's file is left alone. Also removes the empty cgroups of launches
    that did not finish (a cgroup still holding its QEMU stays for ``stop``).
    """
    from hvmem.backends.qemu.state_file import default_state_dir, restore_stale

    directory = state_dir if state_dir is not None else default_state_dir()
    done, problems = restore_stale(directory)
    for line in done:
        typer.echo(line)
    if problems:
        raise HvmemError("; ".join(problems))
    if not done:
        typer.echo(f"nothing to restore in {directory}")


@qemu_app.command("control")
@user_errors
def control_cmd(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(
        help="A guests file (guests.toml from launch, or written by hand).")] = None,
    qmp: Annotated[list[Path] | None, typer.Option(
        help="A guest's QMP socket (repeat for more guests); named by the file's stem.")] = None,
    policy: Annotated[str, typer.Option(help="Policy: esx, mom, proxmox, psi or static.")] = "esx",
    interval: Annotated[str, typer.Option(help="Balance period between decisions.")] = "15s",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plans; apply nothing.")] = False,
    host_memory: Annotated[str | None, typer.Option(
        help="Host memory budget (default: the guests file's, else the real host).")] = None,
    pressure: Annotated[float | None, typer.Option(
        help="Set the budget from the guests instead: their configured memory is FACTOR "
        "times the budget, QEMU's own memory on top (e.g. 2).", metavar="FACTOR")] = None,
    profile: Annotated[str | None, typer.Option(
        help="Memory-state profile: esx4, esxi5 or esxi6.")] = None,
    duration: Annotated[str | None, typer.Option(
        help="Stop after this long (default: run until SIGINT/SIGTERM).")] = None,
    out: Annotated[Path | None, typer.Option(help="Results directory to write.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the earlier results in --out (only hvmem's files).")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        help="Serve Prometheus metrics on this port.")] = None,
    metrics_addr: Annotated[str, typer.Option(help="Address of the metrics endpoint.")] = (
        "127.0.0.1"),
    qmp_timeout: Annotated[str, typer.Option(help="Timeout of each QMP call.")] = "2s",
    no_live: Annotated[bool, typer.Option(
        "--no-live", help="No esxtop-style view; one line per decision.")] = False,
    deflate_on_exit: Annotated[bool, typer.Option(
        help="Give the balloons back when the controller stops.")] = True,
    state_dir: Annotated[Path | None, typer.Option(
        help="Where the crash-safe state file goes (default $HVMEM_STATE_DIR or "
        "/run/hvmem).")] = None,
) -> None:
    """Run a memory policy over real QEMU guests until stopped (SIGINT, SIGTERM, --duration).

    Guests are left running; KSM settings, cgroup limits and (unless
    --no-deflate-on-exit) balloons are restored on exit, and after a crash by the
    next control or by hvmem qemu restore.
    """
    from hvmem.backends.qemu.backend import QemuBackend
    from hvmem.backends.qemu.config import BackendOptions, load_guests_config, specs_from_sockets
    from hvmem.backends.qemu.control import COLUMNS, ControlLoop
    from hvmem.backends.qemu.metrics import Metrics
    from hvmem.policy.policies import POLICIES
    from hvmem.ui.run_guard import RunGuard

    if policy not in POLICIES:
        raise ConfigError(f"--policy: unknown policy {policy!r}; choose one of "
                          f"{', '.join(POLICIES)}")
    if (config is None) == (not qmp):
        raise ConfigError("name the guests with either --config FILE or --qmp SOCKET "
                          "(repeatable), not both and not neither")
    budget = profile_name = None
    if config is not None:
        cfg = load_guests_config(config)
        specs, budget, profile_name = cfg.guests, cfg.host_memory_mib, cfg.profile
    else:
        specs = specs_from_sockets(list(qmp or []))
    if host_memory is not None:
        budget = _mib(host_memory, "--host-memory")
    if pressure is not None:
        if host_memory is not None:
            raise ConfigError("--pressure and --host-memory both set the host's memory; "
                              "give one")
        budget = None  # the guests file's budget gives way to the pressure
    interval_s = ns_to_s(parse_time_ns(interval, what="--interval"))
    duration_s = (ns_to_s(parse_time_ns(duration, what="--duration"))
                  if duration is not None else None)
    timeout_s = ns_to_s(parse_time_ns(qmp_timeout, what="--qmp-timeout"))
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise ConfigError(f"--metrics-port: expected 0-65535, found {metrics_port}")
    options = dict(host_memory_mib=budget, pressure=pressure, qmp_timeout_s=timeout_s,
                   manage_ksm=not dry_run, deflate_on_exit=deflate_on_exit, state_dir=state_dir)
    if profile or profile_name:
        options["profile"] = profile or profile_name
    from hvmem.policy.states import PROFILES

    if options.get("profile", "esxi6") not in PROFILES:
        raise ConfigError(f"--profile: expected one of {', '.join(PROFILES)}, found "
                          f"{options['profile']!r}")
    name = f"qemu-{policy}" + ("-dry-run" if dry_run else "")
    # Checked and locked before any guest is touched; closed with the command.
    guard = ctx.with_resource(RunGuard(out or Path("results") / name, replace=force or out is None,
                                       label="--out" if out is not None else None))
    backend = QemuBackend(list(specs), BackendOptions(**options))
    metrics = Metrics(COLUMNS) if metrics_port is not None else None
    try:
        loop = ControlLoop(backend, policy, interval_s, dry_run=dry_run, name=name,
                           metrics=metrics)
    except BaseException:
        backend.close()
        raise
    follow_control(guard, loop, metrics, title=f"qemu  policy {loop.policy.name}"
                   + ("  DRY RUN" if dry_run else ""), interval_s=interval_s,
                   duration_s=duration_s, no_live=no_live, metrics_port=metrics_port,
                   metrics_addr=metrics_addr)


def run_scenario_on_qemu(scenario, policy: str | None, out: Path | None, no_live: bool,
                         force: bool = False) -> Path:
    """``hvmem run`` for a scenario with ``[backend] kind = "qemu"``: its VMs as real guests.

    The run itself is ``backends/qemu/scenario_run.py``'s; here it is followed
    on the esxtop-style screen, written to ``out`` (default
    ``results/<scenario>-<policy>-qemu``, checked and locked before any guest
    starts) and summed up. A run stopped by a signal or an error is written,
    incomplete, before the command ends (``ui/run_guard.py``). Returns the
    results directory.

    Raises:
        HvmemError: the run could not start, failed, or stopping its guests left
            something behind (after the results are written).
    """
    from hvmem.backends.qemu.scenario_run import run_scenario
    from hvmem.ui.run_guard import RunGuard
    from hvmem.ui.summary_view import render_summary
    from hvmem.ui.top import LiveTop

    console = _console()
    duration_s = ns_to_s(scenario.duration_ns)
    name = f"{scenario.name}-{scenario.policy.for_policy(policy).name}-qemu"
    title = f"{scenario.name}  policy {policy or scenario.policy.name}  (real guests)"
    with RunGuard(out or Path("results") / name, replace=force or out is None,
                  label="--out" if out is not None else None) as guard:
        with LiveTop(console, title, enabled=console.is_terminal and not no_live,
                     status=lambda host_row: f"   {host_row['time_s']:.0f} s of "
                     f"{duration_s:.0f}") as view:
            run = run_scenario(scenario, policy, on_tick=lambda lp: view.update(
                lp.result.host_rows, lp.result.vm_rows))
        result = run.result
        if run.error is not None:  # kept with what ran; raised once the results are written
            guard.outcome.fail(run.error)
        kept_stop(result, run.stop_reason, cut_short=True)
        path = guard.write(result, result.host_rows[-1]["time_s"] if result.host_rows else 0.0)
        console.print(render_summary(result.summary()))
        console.print(f"results: {path} ({guard.state(result)}); real guests, stopped",
                      markup=False)
    if run.problems:
        raise HvmemError("; ".join(run.problems))
    guard.finish()
    return path
