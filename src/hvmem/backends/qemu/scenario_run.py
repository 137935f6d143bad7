"""A scenario with ``[backend] kind = "qemu"``: its VMs as real guests, under its policy.

What ``hvmem run`` does for such a scenario, from launch to cleanup::

    check    every VM runs for the whole scenario (real guests cannot power on
             late or off early); the policy is a registered one; QEMU, busybox
             and apt-get are there
    launch   one guest per VM with the VM's memory, running the backend's
             in-guest workload ([backend] shared, private, touch), RAM in a
             file with [backend] file_backed; wait until every workload is ready
    control  a QemuBackend over them with the host's memory as its budget, and
             the controller loop (control.py) for the scenario's duration, its
             balance period as the interval, ticks of 1 s (or the period, if
             shorter); SIGINT, SIGTERM and SIGHUP end the loop early, and an
             error in it ends it with what ran kept (``ScenarioRun.error``)
    clean    stop the guests, remove their files, cgroups and run directory,
             whatever ended the run

The caller (``ui/qemu_cli.py``) renders: it may follow the loop tick by tick
(``on_tick``), and writes the results directory from :class:`ScenarioRun`.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hvmem.backends.qemu.backend import QemuBackend
from hvmem.backends.qemu.config import BackendOptions, GuestSpec
from hvmem.backends.qemu.control import ControlLoop
from hvmem.backends.qemu.guest_image import WorkloadParams, build_image, default_cache_dir
from hvmem.backends.qemu.launcher import launch, require_tools, stop, wait_for_marker
from hvmem.errors import ConfigError, HvmemError
from hvmem.results import RunResult
from hvmem.scenario.schema import Scenario
from hvmem.units import MIB, NS_PER_S, ns_to_s

#: How long a guest may take to boot and start its workload (TCG on two cores).
READY_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class ScenarioRun:
    """A scenario's run on real guests, after the guests were stopped.

    Attributes:
        result: the rows and events, ready for ``results.write_results``.
        policy: the policy that ran.
        stop_reason: why the loop ended ("duration reached", a signal, ...).
        problems: what stopping the guests could not do (empty: all clean).
        error: the error that ended the loop, if one did; ``result`` holds what
            ran until then, for the caller to write before it raises the error.
    """

    result: RunResult
    policy: str
    stop_reason: str
    problems: list[str]
    error: HvmemError | OSError | None = None


def run_scenario(scenario: Scenario, policy: str | None = None,
                 on_tick: Callable[[ControlLoop], None] | None = None) -> ScenarioRun:
    """Run ``scenario``'s VMs as real guests under its policy (or ``policy``).

    Each VM becomes a guest of its configured memory running the backend's in-guest
    workload; the host's memory is the controller's budget; the policy, balance
    period and duration are the scenario's. The guests are stopped (and their
    files and cgroups removed) when the run ends.

    Raises:
        ConfigError: a VM that powers on later or off early (real guests all run
            for the whole scenario), or an unknown policy.
        HvmemError: QEMU or busybox is missing; a guest did not start.
    """
    policy_config = scenario.policy.for_policy(policy)  # ConfigError for an unknown name
    name = policy_config.name
    for i, vm in enumerate(scenario.vms):
        if vm.power_on_ns != 0 or vm.power_off_ns is not None:
            raise ConfigError(f"{scenario.name}: vm[{i}] ({vm.name}): the qemu backend runs "
                              "every guest for the whole scenario; leave power_on and "
                              "power_off out")
    require_tools()
    b = scenario.backend
    workload = WorkloadParams(shared_mib=b.shared_bytes // MIB, private_mib=b.private_bytes // MIB,
                              touch_s=b.touch_ns // NS_PER_S)
    image = build_image()
    run_dir = Path(tempfile.mkdtemp(prefix="hvmem-", dir="/tmp"))
    swap_dir = default_cache_dir() / "swap" if b.file_backed else None
    guests = launch(image, run_dir, names=[vm.name for vm in scenario.vms],
                    memories_mib=[vm.memory_bytes // MIB for vm in scenario.vms],
                    workload=workload, file_backed=b.file_backed, swap_dir=swap_dir,
                    die_with_parent=True)
    try:
        for g in guests:
            wait_for_marker(g.serial_log, "HVMEM-READY", READY_TIMEOUT_S, g.pid)
        specs = [GuestSpec(vm.name, g.qmp, pid_file=g.pid_file, shares=vm.shares,
                           reservation_mib=vm.reservation_bytes / MIB,
                           limit_mib=None if vm.limit_bytes is None else vm.limit_bytes / MIB,
                           balloon_max_mib=None if vm.guest.balloon_max_bytes is None
                           else vm.guest.balloon_max_bytes / MIB)
                 for vm, g in zip(scenario.vms, guests, strict=True)]
        backend = QemuBackend(specs, BackendOptions(
            host_memory_mib=scenario.host.memory_bytes / MIB, profile=scenario.host.profile,
            file_backed_hint="give the VMs file-backed RAM: [backend] file_backed = true "
            "in the scenario"))
        interval_s = ns_to_s(scenario.policy.balance_period_ns)
        loop = ControlLoop(backend, policy_config, interval_s, tick_s=min(1.0, interval_s),
                           name=scenario.name, scenario=scenario)
        restore = loop.install_signal_handlers()
        error = None
        try:
            result = loop.run(ns_to_s(scenario.duration_ns), on_tick=on_tick)
        except (HvmemError, OSError) as err:  # what ran is kept; the caller raises it
            result, error = loop.result, err
        finally:
            restore()
    finally:
        problems = stop(guests)
        shutil.rmtree(run_dir, ignore_errors=True)
    return ScenarioRun(result, name, loop.stop_reason, problems, error)
