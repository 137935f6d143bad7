"""What a run will cost before it starts: the RAM it needs and the work it does.

Why
---
A scenario's fields each have bounds a real host could need, yet together they
can ask for more than this machine has: a 64 TiB host is a valid host, but
simulating it takes a frame table of 64 TiB / 4 KiB = 16 Gi entries; a 30-day
run at 1 ms ticks is 2.6 * 10**9 ticks per VM. Left alone, the first ends in a
NumPy allocation failure after minutes of work, the second runs for months
with nothing to say. So a run is checked first, from the scenario alone and
before anything is allocated, and refused with one line naming the field to
change (:func:`check_run`); ``--force`` runs it anyway.

RAM
---
Memory grows with the pages simulated: every host frame and every guest page
keeps a few arrays (owner, refcount, content token, reverse map; the pmap,
backing, stamps, the guest's page kinds and reverse map, its swap slots).
Measured with ``tracemalloc`` on this code (a 1 GiB host with 16 MiB, 512 MiB
and 1 GiB VMs whose workload touches the whole VM, 5 ticks; then a 4 GiB host):

====================  ============  ============
per                   page fidelity mmu fidelity
====================  ============  ============
host frame            50 bytes      50 bytes
guest page            103 bytes     73 bytes
====================  ============  ============

(a host frame's bytes are 26 for the frame table and 24 for the sharing table
at its full size, two 12-byte slots a frame, which a short run does not reach;
page fidelity's guest page was 115 bytes before the reverse map's VPNs became
int32 and the data of pages put aside moved into compact slots.)

(a guest page's bytes include a guest swap of the VM's size and, at the peak,
a tick's batch; mmu fidelity's page tables are committed lazily, a table page
per 512 pages mapped). The estimate rounds up (64, 128 and 96 bytes) and adds
:data:`BASE_BYTES` for the interpreter, NumPy and Numba's compiled kernels
(about 300 MB resident before the first tick). It is an upper bound, as if
every page were touched: ``demo`` peaks at 402 MiB resident against an
estimate of 640 MiB, the first 5 minutes of ``bench-32vm`` at 2.1 GiB against
5.4 GiB. It is compared with ``MemAvailable`` of ``/proc/meminfo`` (the
kernel's estimate of what can be allocated without swapping); where there is
no such file the check is skipped.

Work
----
A tick of a running VM costs a fixed part (the tick's Python steps: balloon,
sampling, rows; :data:`TICK_UNITS`, about 100 us, counted in units of one
page served, about 100 ns) plus the references it serves: every one in mmu
fidelity, the distinct pages in page fidelity (at most the region). The work
of a run is the sum over ticks and VMs, each at its busiest phase's rate
(an upper bound). The shipped scenarios come to 7 * 10**7 (``mmu-small``) to
2 * 10**10 (``bench-32vm``, 32 VMs for an hour, some minutes of wall time);
:data:`WORK_CEILING` is 5 times that, hours of wall time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hvmem.errors import ConfigError, GuestOutOfMemoryError, OutOfMemoryError
from hvmem.scenario.schema import Scenario, VmConfig
from hvmem.units import MIB, NS_PER_S, format_size
from hvmem.workloads.replay import ReplayParams
from hvmem.workloads.synthetic import PhasesParams, ScanParams

__all__ = ["BASE_BYTES", "HOST_BYTES_PER_PAGE", "TICK_UNITS", "VM_BYTES_PER_PAGE",
           "WORK_CEILING", "RunEstimate", "available_ram_bytes", "check_ram", "check_run",
           "estimate_run", "host_memory_errors", "refs_per_s"]

#: Bytes of RAM per simulated host frame (measured 50; module essay).
HOST_BYTES_PER_PAGE = 64
#: Bytes of RAM per simulated guest page, by fidelity (measured 103 in page fidelity).
VM_BYTES_PER_PAGE = {"page": 128, "mmu": 96}
#: RAM a run takes before its first page: the interpreter, NumPy, Numba's kernels.
BASE_BYTES = 384 * MIB
#: Work of one tick of one VM beyond its references, in units of one page served.
TICK_UNITS = 1000
#: The most work a run may do without ``--force``: about five times bench-32vm.
WORK_CEILING = 10**11

_MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True, slots=True)
class RunEstimate:
    """What a run will take.

    Attributes:
        ram_bytes: RAM the simulation needs at its peak.
        host_ram_bytes: the part for the host's frames.
        vm_ram_bytes: the part for each VM's pages, by name.
        ticks: ticks in the run.
        work_units: ticks x VMs x references (module essay).
        vm_work_units: that work by VM name.
    """

    ram_bytes: int
    host_ram_bytes: int
    vm_ram_bytes: dict[str, int] = field(default_factory=dict)
    ticks: int = 0
    work_units: int = 0
    vm_work_units: dict[str, int] = field(default_factory=dict)


def refs_per_s(vm: VmConfig) -> float:
    """The most references per simulated second the VM's workload makes (any phase)."""
    return _refs_per_s(vm.workload)


def _refs_per_s(params: object) -> float:
    if isinstance(params, ReplayParams):
        return params.effective_refs_per_s
    if isinstance(params, PhasesParams):
        rates = [_refs_per_s(p) for _, p in params.resolved()]
        return max(rates, default=0.0)
    if isinstance(params, ScanParams):
        if params.refs_per_s is not None:
            return float(params.refs_per_s)
        if params.pages_per_s is not None:
            return float(params.pages_per_s) * params.refs_per_page
        return 0.0  # pages_per_tick: counted per tick by the caller
    return float(getattr(params, "refs_per_s", 0.0) or 0.0)


def _refs_per_tick(vm: VmConfig, tick_ns: int) -> float:
    workload = vm.workload
    refs = _refs_per_s(workload) * tick_ns / NS_PER_S
    if isinstance(workload, ScanParams) and workload.pages_per_tick is not None:
        refs = float(workload.pages_per_tick * workload.refs_per_page)
    if workload.fidelity == "page":  # type: ignore[union-attr]
        span = getattr(workload, "region_pages", None) or getattr(workload, "map_pages", None)
        if span:
            refs = min(refs, float(span))
    return refs


def estimate_run(scenario: Scenario) -> RunEstimate:
    """The RAM and work of simulating ``scenario`` (module essay)."""
    per_vm_page = VM_BYTES_PER_PAGE.get(scenario.fidelity, max(VM_BYTES_PER_PAGE.values()))
    host_ram = scenario.host.memory_pages * HOST_BYTES_PER_PAGE
    aggregate = scenario.fidelity == "aggregate"  # masses: no page, no reference kept
    if aggregate:
        per_vm_page = host_ram = 0
    vm_ram = {vm.name: vm.memory_pages * per_vm_page for vm in scenario.vms}
    ticks = scenario.n_ticks
    vm_work = {}
    for vm in scenario.vms:
        end_ns = scenario.duration_ns if vm.power_off_ns is None else min(
            vm.power_off_ns, scenario.duration_ns)
        vm_ticks = max(0, -(-(end_ns - vm.power_on_ns) // scenario.tick_ns))
        refs = 0.0 if aggregate else _refs_per_tick(vm, scenario.tick_ns)
        vm_work[vm.name] = round(vm_ticks * (TICK_UNITS + refs))
    return RunEstimate(ram_bytes=BASE_BYTES + host_ram + sum(vm_ram.values()),
                       host_ram_bytes=host_ram, vm_ram_bytes=vm_ram, ticks=ticks,
                       work_units=sum(vm_work.values()), vm_work_units=vm_work)


def available_ram_bytes(meminfo: Path = _MEMINFO) -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes; None where it cannot be read."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            parts = line.split()
            try:
                return int(parts[1]) * 1024  # kB, as the kernel writes it
            except (IndexError, ValueError):
                return None
    return None


def check_ram(need_bytes: int, field_path: tuple[str | int, ...], what: str, *,
              file: str | None = None, available: int | None = None,
              forced_by: str | None = "--force") -> None:
    """Refuse a simulation that needs more RAM than the machine has available.

    Args:
        need_bytes: the RAM it needs.
        field_path: the field to name (the largest part of the need).
        what: what the need comes from, for the message.
        file: the file the field is in.
        available: the machine's available RAM (default: read /proc/meminfo).
        forced_by: the flag that runs it anyway, for the message (None: there is none).

    Raises:
        ConfigError: ``FILE: host.memory: the simulation would need about ...``.
    """
    have = available_ram_bytes() if available is None else available
    if have is None or need_bytes <= have:
        return
    anyway = f", or {forced_by} to try anyway" if forced_by else ""
    raise ConfigError(f"the simulation would need about {format_size(need_bytes)} of RAM "
                      f"({what}) and this machine has {format_size(have)} available; use a "
                      f"smaller value{anyway}", path=field_path, file=file)


def check_run(scenario: Scenario, file: str | None = None, *, force: bool = False,
              available: int | None = None) -> RunEstimate:
    """Refuse a run that needs more RAM than there is, or more work than the ceiling.

    Args:
        scenario: the run.
        file: its file, named in the error.
        force: run it anyway (nothing is checked).
        available: the machine's available RAM (default: read /proc/meminfo).

    Returns:
        The estimate.

    Raises:
        ConfigError: one line naming the field that makes the run too large and
            how to go further.
    """
    est = estimate_run(scenario)
    if force:
        return est
    vm_total = sum(est.vm_ram_bytes.values())
    if est.host_ram_bytes >= vm_total:
        where: tuple[str | int, ...] = ("host", "memory")
        what = (f"{format_size(scenario.host.memory_bytes)} of host memory at "
                f"{HOST_BYTES_PER_PAGE} bytes a page")
    else:
        where = ("vm",)
        vm_bytes = sum(vm.memory_bytes for vm in scenario.vms)
        what = (f"{len(scenario.vms)} VMs of {format_size(vm_bytes)} in all at "
                f"{VM_BYTES_PER_PAGE.get(scenario.fidelity)} bytes a page")
    check_ram(est.ram_bytes, where, what, file=file, available=available)
    if est.work_units > WORK_CEILING:
        top = max(est.vm_work_units, key=est.vm_work_units.__getitem__)
        coarser = ("fidelity = \"page\", " if scenario.fidelity == "mmu" else "")
        raise ConfigError(
            f"the run would do about {est.work_units:.1e} units of work ({est.ticks} ticks x "
            f"{len(scenario.vms)} VMs x references; {top!r} the most), more than the "
            f"ceiling of {WORK_CEILING:.0e} (some hours); go further with {coarser}a longer "
            "tick, a shorter duration or fewer references per second, or --force to run it "
            "anyway", file=file)
    return est


@contextlib.contextmanager
def host_memory_errors(file: str | None, scenario: Scenario) -> Iterator[None]:
    """A run that runs out of memory for good: an error naming the field to change.

    The model's :class:`~hvmem.errors.OutOfMemoryError` says which frames were
    missing; what the user can change is the host's memory (or the VMs'
    overheads and reservations, which fill it). A guest that runs out of its own
    memory (:class:`~hvmem.errors.GuestOutOfMemoryError`, say a VM too small for its
    page tables) names that VM's ``memory`` instead.
    """
    try:
        yield
    except OutOfMemoryError as err:
        names = [vm.name for vm in scenario.vms]
        if isinstance(err, GuestOutOfMemoryError) and err.vm in names:
            i = names.index(err.vm)
            raise ConfigError(
                f"expected a VM large enough for its guest kernel's page tables and its "
                f"workload's pages, found {format_size(scenario.vms[i].memory_bytes)} ({err})",
                path=("vm", i, "memory"), file=file) from None
        detail = str(err).removeprefix("host memory exhausted: ").split(" (")[0]
        raise ConfigError(
            f"expected a host large enough for its VMs and the hypervisor's own pages, found "
            f"{format_size(scenario.host.memory_bytes)} ({detail})",
            path=("host", "memory"), file=file) from None

