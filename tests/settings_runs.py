"""The runs the setting-by-setting tests share: base scenarios, a cached runner, a registry.

Each case of ``tests/test_scenario_settings*.py`` runs small scenarios that differ in one
field (:func:`run`, cached for the session so a run serves every case that needs it) and
claims the fields it shows with :func:`covers`; ``test_every_field_is_exercised`` checks
that every scenario field is claimed, listed as output-only, or listed as not yet shown.
The registry lives here, not in a test module, so that every case module adds to one table.
"""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field

from hvmem.scenario.loader import parse_scenario
from hvmem.sim import Simulation

# -- the base scenario ------------------------------------------------------------------
# Two VMs of equal shares on a 256 MiB host, 384 MiB configured. "idle" writes 160 MiB
# once in its first 8 s and then works over 8 MiB only, so its active memory falls well
# below what it holds; "busy" powers on at 10 s and sweeps 160 MiB at 4 MiB/s, which
# brings the host down through soft (ballooning) with room to spare before hard.
# minFree at 20 % of the host (51.2 MiB) makes the soft band wide enough for that.
BASE = tomllib.loads("""
name = "settings"
duration = "150s"
seed = 7

[host]
memory = "256MiB"
min_free_frac = 0.2

[policy]
name = "esx"
balance_period = "15s"
idle_tax_frac = 0.75

[[vm]]
name = "idle"
memory = "192MiB"

[vm.workload]
kind = "phases"
region = "160MiB"

[[vm.workload.phases]]
duration = "8s"
kind = "scan"
pages_per_s = 5120
write_frac = 1.0

[[vm.workload.phases]]
duration = "142s"
kind = "uniform"
region = "8MiB"
refs_per_s = 20_000

[[vm]]
name = "busy"
memory = "192MiB"
power_on = "10s"

[vm.workload]
kind = "scan"
region = "160MiB"
pages_per_s = 1024
write_frac = 1.0
""")

MIB_EPS = 1e-6


def _set(doc: dict, path: str, value) -> None:
    """Set ``path`` (``policy.idle_tax_frac``, ``vm.0.guest.balloon_max``) in ``doc``."""
    *parents, last = path.split(".")
    node = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


@dataclass
class Run:
    """One finished run: its rows by VM and each VM's plans as the policy made them."""

    host_rows: list[dict]
    vm_rows: dict[str, list[dict]]
    plans: dict[str, list] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    sim: Simulation | None = None  # the finished simulation, for what rows do not show

    def last(self, vm: str) -> dict:
        return self.vm_rows[vm][-1]

    def column(self, vm: str, name: str) -> list[float]:
        return [row[name] for row in self.vm_rows[vm]]


_RUNS: dict[tuple, Run] = {}


def run(*changes: tuple[str, object], base: dict = BASE) -> Run:
    """The run of ``base`` with ``changes`` (``(path, value)`` pairs), cached."""
    key = (id(base), tuple((p, repr(v)) for p, v in changes))
    if key in _RUNS:
        return _RUNS[key]
    doc = copy.deepcopy(base)
    for path, value in changes:
        _set(doc, path, value)
    sim = Simulation(parse_scenario(doc, "settings.toml"))
    plans: dict[str, list] = {}

    def after_tick(s: Simulation) -> None:
        for name, vm in s.vms.items():
            if vm.plan is not None:
                plans.setdefault(name, []).append(vm.plan)

    result = sim.run(on_tick=after_tick)
    assert result.complete
    rows: dict[str, list[dict]] = {}
    for row in result.vm_rows:
        rows.setdefault(row["vm"], []).append(dict(row))
    out = Run([dict(r) for r in result.host_rows], rows, plans, result.summary(), sim)
    _RUNS[key] = out
    return out


def _all(values) -> float:
    """The one value every item has (a column constant over a run)."""
    distinct = set(values)
    assert len(distinct) == 1, sorted(distinct)
    return distinct.pop()


# -- which fields the cases cover -------------------------------------------------------
COVERED: dict[tuple[str, str], str] = {}


def covers(*fields: str | tuple[str, str]) -> Callable:
    """Record that the decorated test shows the effect of each field (path, or (path, when))."""
    def mark(test: Callable) -> Callable:
        for f in fields:
            path, when = (f, "") if isinstance(f, str) else f
            COVERED[(path, when)] = test.__name__
        return test
    return mark


# mmu fidelity, shadow paging, two processes (CR3 switches) and a churning workload
# (guest PTE writes, unmaps and their flushes): every translation cost is paid here.
MMU = tomllib.loads("""
name = "settings-mmu"
duration = "20s"
seed = 11
fidelity = "mmu"

[host]
memory = "128MiB"
paging = "shadow"
tlb = { entries = 64, ways = 4 }

[[vm]]
name = "web"
memory = "96MiB"

[vm.guest]
processes = 2

[vm.workload]
kind = "churn"
region = "32MiB"
chunk = "256KiB"
allocs_per_s = 20
lifetime = "2s"
refs_per_s = 100_000
""")


# One VM with room to spare (no reclaim), small pages so GRANT counts what was touched.
# One VM with room to spare (no reclaim), small pages so GRANT counts what was touched.
ONE = tomllib.loads("""
name = "settings-one"
duration = "30s"
seed = 5

[host]
memory = "256MiB"
large_pages = false

[[vm]]
name = "vm"
memory = "128MiB"

[vm.workload]
kind = "uniform"
region = "64MiB"
refs_per_s = 2_000
""")


def _stall_s(r: Run) -> float:
    return sum(vm["stall_s"] for vm in r.summary["vms"].values())



def _peak(r: Run, vm: str, column: str) -> float:
    return max(r.column(vm, column))
