"""``hvmem libvirt``: the memory policy over the domains of a libvirt connection.

Subcommands (thin shells over ``hvmem.backends.libvirt``):

* ``control``: the controller loop of ``hvmem qemu control`` (the same policy
  core, esxtop-style live view, results directory, ``--dry-run`` and Prometheus
  endpoint, ``ui/control_run.py``) over a connection's running domains:
  ``memoryStats`` in, ``setMemory`` (balloon) and ``setMemoryParameters``
  (memtune) out, KSM where the domains run on this machine;
* ``restore``: undo what a controller that crashed (or was SIGKILLed) changed,
  from its state file under ``/run/hvmem``.

libvirt's Python binding is optional: without it each command is one line
saying what to install.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hvmem.errors import ConfigError, HvmemError
from hvmem.ui.exits import user_errors
from hvmem.units import MIB, ns_to_s, parse_size_bytes, parse_time_ns

libvirt_app = typer.Typer(help="libvirt domains under the same memory policy as the simulator.",
                          no_args_is_help=True)


@libvirt_app.command("control")
@user_errors
def control_cmd(
    ctx: typer.Context,
    uri: Annotated[str, typer.Option(
        help="The libvirt connection: qemu:///system, qemu+ssh://HOST/system, "
        "test:///default.")],
    domain: Annotated[list[str] | None, typer.Option(
        help="A domain to control (repeat for more; default: every running one).")] = None,
    policy: Annotated[str, typer.Option(help="Policy: esx, mom, proxmox, psi or static.")] = (
        "esx"),
    interval: Annotated[str, typer.Option(help="Balance period between decisions.")] = "15s",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plans; apply nothing.")] = False,
    host_memory: Annotated[str | None, typer.Option(
        help="Host memory budget (default: the connection's host).")] = None,
    pressure: Annotated[float | None, typer.Option(
        help="Set the budget from the domains instead: their memory is FACTOR times the "
        "budget.", metavar="FACTOR")] = None,
    profile: Annotated[str, typer.Option(help="Memory-state profile: esx4, esxi5 or esxi6.")] = (
        "esxi6"),
    duration: Annotated[str | None, typer.Option(
        help="Stop after this long (default: run until SIGINT/SIGTERM).")] = None,
    out: Annotated[Path | None, typer.Option(help="Results directory to write.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the earlier results in --out (only hvmem's files).")] = False,
    metrics_port: Annotated[int | None, typer.Option(
        help="Serve Prometheus metrics on this port.")] = None,
    metrics_addr: Annotated[str, typer.Option(help="Address of the metrics endpoint.")] = (
        "127.0.0.1"),
    no_live: Annotated[bool, typer.Option(
        "--no-live", help="No esxtop-style view; one line per decision.")] = False,
    deflate_on_exit: Annotated[bool, typer.Option(
        help="Give the balloons back when the controller stops.")] = True,
    state_dir: Annotated[Path | None, typer.Option(
        help="Where the crash-safe state file goes (default $HVMEM_STATE_DIR or "
        "/run/hvmem).")] = None,
) -> None:
    """Run a memory policy over a libvirt connection's domains until stopped.

    Domains are left running; memtune, stats periods, KSM and (unless
    --no-deflate-on-exit) balloons are restored on exit, and after a crash by the
    next control of the same URI or by hvmem libvirt restore.
    """
    from hvmem.backends.libvirt.backend import LibvirtBackend
    from hvmem.backends.libvirt.control import LibvirtControlLoop
    from hvmem.backends.libvirt.domain import DomainSpec
    from hvmem.backends.qemu.config import BackendOptions
    from hvmem.backends.qemu.control import COLUMNS
    from hvmem.backends.qemu.metrics import Metrics
    from hvmem.policy.policies import POLICIES
    from hvmem.policy.states import PROFILES
    from hvmem.ui.control_run import follow_control
    from hvmem.ui.run_guard import RunGuard

    if not uri.strip():
        # libvirt takes an empty URI as "pick one": name the host rather than guess it.
        raise ConfigError("--uri: expected a libvirt URI (qemu:///system, test:///default), "
                          "found ''")
    if policy not in POLICIES:
        raise ConfigError(f"--policy: unknown policy {policy!r}; choose one of "
                          f"{', '.join(POLICIES)}")
    if profile not in PROFILES:
        raise ConfigError(f"--profile: expected one of {', '.join(PROFILES)}, found "
                          f"{profile!r}")
    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise ConfigError(f"--metrics-port: expected 0-65535, found {metrics_port}")
    budget = (parse_size_bytes(host_memory, what="--host-memory") / MIB
              if host_memory is not None else None)
    interval_s = ns_to_s(parse_time_ns(interval, what="--interval"))
    duration_s = (ns_to_s(parse_time_ns(duration, what="--duration"))
                  if duration is not None else None)
    options = BackendOptions(host_memory_mib=budget, pressure=pressure, profile=profile,
                             manage_ksm=not dry_run, deflate_on_exit=deflate_on_exit,
                             state_dir=state_dir)
    name = "libvirt-" + policy + ("-dry-run" if dry_run else "")
    # Checked and locked before any domain is touched; closed with the command.
    guard = ctx.with_resource(RunGuard(out or Path("results") / name, replace=force or out is None,
                                       label="--out" if out is not None else None))
    specs = [DomainSpec(name=d) for d in domain] if domain else None
    backend = LibvirtBackend(uri, specs, options)
    metrics = Metrics(COLUMNS) if metrics_port is not None else None
    try:
        loop = LibvirtControlLoop(backend, policy, interval_s, dry_run=dry_run, name=name,
                                  metrics=metrics)
    except BaseException:
        backend.close()
        raise
    follow_control(guard, loop, metrics, title=f"libvirt {uri}  policy {loop.policy.name}"
                   + ("  DRY RUN" if dry_run else ""), interval_s=interval_s,
                   duration_s=duration_s, no_live=no_live, metrics_port=metrics_port,
                   metrics_addr=metrics_addr, what="libvirt domains")


@libvirt_app.command("restore")
@user_errors
def restore_cmd(
    uri: Annotated[str | None, typer.Option(
        help="Only the controllers of this connection (default: every one).")] = None,
    state_dir: Annotated[Path | None, typer.Option(
        help="The state directory (default $HVMEM_STATE_DIR or /run/hvmem).")] = None,
) -> None:
    """Undo what a libvirt controller that did not exit cleanly changed.

    Reads the state files of controllers no longer running (memtune, balloons,
    stats periods, KSM); a running controller's file is left alone.
    """
    from hvmem.backends.libvirt.state_file import restore_stale
    from hvmem.backends.qemu.state_file import default_state_dir

    directory = state_dir if state_dir is not None else default_state_dir()
    done, problems = restore_stale(directory, uri)
    for line in done:
        typer.echo(line)
    if problems:
        raise HvmemError("; ".join(problems))
    if not done:
        typer.echo(f"nothing to restore in {directory}")
