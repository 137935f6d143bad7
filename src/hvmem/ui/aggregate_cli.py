"""The aggregate fidelity's command-line parts: ``--fidelity`` and ``hvmem bench fleet``.

``hvmem run``, ``compare`` and ``demo`` take ``--fidelity page|mmu|aggregate``
to run a scenario at another fidelity than its file says, and nothing else
changes (``aggregate/sim.py``). ``hvmem bench fleet`` runs a fleet of
``bench-32vm`` hosts on a Dask cluster (``aggregate/fleet.py``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated

import typer

from hvmem.errors import ConfigError, HvmemError
from hvmem.ui.exits import user_errors

FIDELITY_HELP = ("Run at this fidelity instead of the scenario's: page, mmu or aggregate "
                 "(masses of pages, ~100x faster; no traces, no MMU).")


def with_fidelity(scenario, fidelity: str | None):
    """``scenario`` at ``fidelity`` (None: as it is); one line naming --fidelity if refused."""
    if fidelity is None:
        return scenario
    from hvmem.scenario.schema import SCENARIO_FIDELITIES

    if fidelity not in SCENARIO_FIDELITIES:
        raise HvmemError(f"--fidelity: expected one of {', '.join(SCENARIO_FIDELITIES)}, "
                         f"found {fidelity!r}")
    if fidelity == "aggregate" and scenario.fidelity == "mmu":
        raise HvmemError(f"--fidelity aggregate: {scenario.name} is an mmu-fidelity scenario "
                         "(every reference through the vCPU's MMU); it runs at mmu or page "
                         "fidelity only")
    try:
        scenario = dataclasses.replace(scenario, fidelity=fidelity)
        if fidelity == "aggregate":
            from hvmem.aggregate.sim import check_aggregate

            check_aggregate(scenario)
    except ConfigError as err:
        raise HvmemError(f"--fidelity {fidelity}: {err.args[0]}") from None
    return scenario


@user_errors
def bench_fleet(
    hosts: Annotated[int, typer.Option(help="Hosts shaped like bench-32vm, seeds 1..N.")] = 8,
    duration: Annotated[str, typer.Option(help="Simulated time, such as 10min or 1d.")] = "10min",
    workers: Annotated[int | None, typer.Option(
        help="Worker processes of the local Dask cluster (default: the machine's cores).")
    ] = None,
    hosts_per_task: Annotated[int | None, typer.Option(
        help="Hosts stepped together in one task (default: 4 tasks per worker).")] = None,
    scheduler: Annotated[str | None, typer.Option(
        help="An existing Dask scheduler (tcp://HOST:8786) instead of a local cluster.")
    ] = None,
    policy: Annotated[str, typer.Option(
        help="The policy every host runs: esx is planned over arrays for all hosts at "
             "once; the others (static, mom, proxmox, psi) run per host, much slower "
             "(the JSON's policy_path says which).")] = "esx",
    out: Annotated[str | None, typer.Option(
        help="Directory for the rows (vm_rows/, host_rows/ as Parquet); a directory "
             "every worker sees. Default: written to scratch and discarded.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A fleet of bench-32vm hosts at aggregate fidelity on a Dask cluster.

    Each host has its own seed; 1 s ticks; per-VM and per-host rows every
    simulated minute, streamed to Parquet. Prints hosts, vms, simulated_s,
    wall_s, host_seconds_per_wall_second and peak_rss_mib, with the workers'
    CPU time (host_ticks_per_cpu_second) and the policy's path.
    """
    from hvmem.aggregate.fleet import run_fleet
    from hvmem.units import NS_PER_S, parse_time_ns

    text = duration.strip()
    if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():  # days: 1d
        text = f"{float(text[:-1]) * 24}h"
    duration_ns = parse_time_ns(text, what="--duration")
    if duration_ns < NS_PER_S or duration_ns % NS_PER_S:
        raise HvmemError(f"--duration: expected a whole number of seconds, found {duration}")
    if not 1 <= hosts <= 1_000_000:
        raise HvmemError(f"--hosts: expected 1 to 1000000, found {hosts}")
    for flag, value in (("--workers", workers), ("--hosts-per-task", hosts_per_task)):
        if value is not None and not 1 <= value <= 10_000:
            raise HvmemError(f"{flag}: expected 1 to 10000, found {value}")
    from hvmem.policy.policies import POLICY_NAMES

    if policy not in POLICY_NAMES:
        raise HvmemError(f"--policy: expected one of {', '.join(POLICY_NAMES)}, "
                         f"found {policy!r}")
    result = run_fleet(hosts, duration_ns // NS_PER_S, workers=workers,
                       hosts_per_task=hosts_per_task, scheduler=scheduler, policy=policy,
                       out=out)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for key, value in result.items():
        typer.echo(f"{key:32s} {value:,.1f}" if isinstance(value, float) else f"{key:32s} {value}")
