"""Test-wide settings.

Under CI (``CI`` set in the environment) hypothesis runs derandomized: the
same examples every run, so a landing never depends on luck. Locally it
explores new examples each run and remembers failures in ``.hypothesis/``.

Integration tests (marked ``integration``: real QEMU guests today) skip, with
the reason, where what they need is missing. With ``HVMEM_REQUIRE_INTEGRATION``
set (``.ci/run`` sets it) such a skip is a failure instead, naming the skip's
reason, so a CI machine that lost QEMU or root cannot pass by skipping them:

* a test marked ``integration`` (itself, its class or its module's
  ``pytestmark``) that skips in setup or in its body fails;
* a module that declares ``pytestmark`` with ``integration`` and skips as a whole
  while it is collected (``pytest.skip(..., allow_module_level=True)``) has no
  tests to mark, so it is reported as one failing test of its own.

xfail is not a skip and is left alone.

``make test`` runs the suite over every core (pytest-xdist, ``--dist loadfile``
refined below): a module with a fixture that several of its tests share goes to
one worker as a whole, so the fixture (a simulated run that several tests read)
is built once; other tests are spread one by one. The modules whose tests share
this host's state run as one unit in one worker, one after another, and before
everything else (they are among the longest): every module with a test marked
``integration`` (the QEMU guests share one guest image, KSM's settings and a
lock held for the session) or ``host_state`` (fixed paths outside ``tmp_path``,
fixed ports, real cgroups). Without ``-n`` none of this applies.
"""

from __future__ import annotations

import ast
import functools
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import numba_cache  # noqa: F401  (sets NUMBA_CACHE_DIR before hvmem imports numba)
from hvmem.guest.config import GuestConfig
from hvmem.guest.kernel import GuestKernel
from hvmem.hardware.page_table import TableStore
from hvmem.hypervisor.host import Host
from hvmem.hypervisor.vm import HostVm
from hvmem.scenario.loader import parse_scenario

# The health check of slow input generation measures wall time: on a shared 2-core
# machine another process can stall a draw for a second, which says nothing of the test.
# The profiles below inherit it from this one, loaded first.
settings.register_profile("hvmem", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("hvmem")
settings.register_profile("ci", derandomize=True, print_blob=True)
# Ten times the examples, freshly random: `pytest --hypothesis-profile=long` or
# HYPOTHESIS_PROFILE=long (the property tests scale their counts by max_examples).
settings.register_profile("long", max_examples=1000)
if os.environ.get("CI"):
    settings.load_profile("ci")
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])

pytest_plugins = ["pytester"]  # tests of the hooks below run pytest inside pytest

#: Set (to anything but "" or "0") to make skipped integration tests fail.
REQUIRE_INTEGRATION = "HVMEM_REQUIRE_INTEGRATION"
INTEGRATION_MARK = "integration"


def integration_required() -> bool:
    """Whether a skipped integration test fails this run."""
    return os.environ.get(REQUIRE_INTEGRATION, "") not in ("", "0")


def _skip_reason(longrepr) -> str:
    """The reason of a skip report: ``(path, line, "Skipped: reason")`` or text."""
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(
        longrepr)
    return reason.removeprefix("Skipped: ")


def _required_message(reason: str) -> str:
    return f"integration test skipped under {REQUIRE_INTEGRATION}=1: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A skipped integration test fails when integration tests are required."""
    report = yield
    if (report.skipped and not hasattr(report, "wasxfail") and integration_required()
            and item.get_closest_marker(INTEGRATION_MARK) is not None):
        report.outcome = "failed"
        report.longrepr = _required_message(_skip_reason(report.longrepr))
    return report


def _declares_integration(path: Path) -> bool:
    """Whether a test module assigns ``pytestmark`` a mark named ``integration``.

    Read from the source: a module that skipped while it was imported has no
    module object to ask.
    """
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError):
        return False
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
            return any(isinstance(n, ast.Attribute) and n.attr == INTEGRATION_MARK
                       for n in ast.walk(node.value))
    return False


class SkippedIntegrationModule(pytest.Item):
    """Stands for the tests of an integration module skipped as a whole; fails."""

    def __init__(self, *, reason: str, **kwargs):
        super().__init__(**kwargs)
        self.reason = reason
        self.add_marker(INTEGRATION_MARK)

    def runtest(self) -> None:
        pytest.fail(_required_message(self.reason), pytrace=False)

    def reportinfo(self):
        return self.path, None, f"{self.name} (skipped at collection)"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    """An integration module skipped whole becomes one failing test when required."""
    report = yield
    if (report.skipped and integration_required() and isinstance(collector, pytest.Module)
            and _declares_integration(collector.path)):
        item = SkippedIntegrationModule.from_parent(
            collector, name="module", reason=_skip_reason(report.longrepr))
        report = pytest.CollectReport(collector.nodeid, "passed", None, [item])
    return report


# -- running in parallel (pytest-xdist) -----------------------------------------------

#: The one xdist work unit of the modules that share this host's state.
HOST_GROUP = "host"
HOST_STATE_MARK = "host_state"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{HOST_STATE_MARK}: shares this host's state (KSM, cgroups, fixed paths or "
        "ports): its module runs in the one xdist worker that runs all such modules")


def _tree(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError):
        return None


@functools.cache
def shares_host(path: Path) -> bool:
    """Whether a test module marks any test ``integration`` or ``host_state``.

    Read from the source: xdist's controller, which schedules the tests, sees
    only node ids, never the items and their marks.
    """
    tree = _tree(path)
    return tree is not None and any(
        isinstance(n, ast.Attribute) and n.attr in (INTEGRATION_MARK, HOST_STATE_MARK)
        and isinstance(n.value, ast.Attribute) and n.value.attr == "mark"
        for n in ast.walk(tree))


@functools.cache
def has_wide_fixtures(path: Path) -> bool:
    """Whether a test module declares a fixture wider than one test (``scope=...``)."""
    tree = _tree(path)
    return tree is None or any(
        isinstance(n, ast.keyword) and n.arg == "scope"
        and not (isinstance(n.value, ast.Constant) and n.value.value == "function")
        for n in ast.walk(tree))


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadfile``, refined: the work units the workers are handed.

    All modules that share the host are one unit; a module with a fixture shared
    by several of its tests is one unit (the fixture is built once); every other
    test is a unit of its own, so the long ones spread over the workers.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class HostModulesAsOneUnit(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if shares_host(config.rootpath / module):
                return HOST_GROUP
            return module if has_wide_fixtures(config.rootpath / module) else nodeid

    return HostModulesAsOneUnit(config, log)


#: Tests that take minutes on a two-core machine (shipped scenarios run with every
#: invariant checked at every tick; a fresh clone's ``make demo``): started right after
#: the host's modules, so that no worker is left running one of them alone at the end.
LONG_TESTS = ("tests/test_sim.py::test_shipped_scenarios_run", "tests/ui/test_make_demo.py::")


def _start_order(item: pytest.Item) -> int:
    if shares_host(item.path):
        return 0
    return 1 if item.nodeid.startswith(LONG_TESTS) else 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In an xdist worker: the host's modules first, then the long tests.

    Every worker sorts alike, as their collections must match; with
    ``--no-loadscope-reorder`` the scheduler hands out the units in this order.
    """
    if hasattr(config, "workerinput"):
        items.sort(key=_start_order)


# -- shared builders ------------------------------------------------------------------
#
# Most model tests start from the same few objects: a host, a VM on it (its guest-
# physical tables and pmap), a guest kernel on that VM, or a small scenario. The
# fixtures below hand out builders for them (session-scoped: they hold no state, so
# hypothesis may call them once per example), so that a test file says only what is
# particular about its setup.


@dataclass
class GuestOnHost:
    """A guest kernel on a VM of a host: the usual start of a model test."""

    host: Host
    vm: HostVm
    tables: TableStore
    kernel: GuestKernel


def _new_host(n_frames: int = 4096, paging: str = "nested", **options) -> Host:
    return Host(n_frames, paging, **options)


def _new_vm(host: Host, n_ppns: int, name: str = "g") -> tuple[HostVm, TableStore]:
    tables = TableStore(n_ppns, name)
    return host.add_vm(name, n_ppns, tables), tables


def _new_guest(memory_pages: int = 256, *, host: Host | None = None, host_frames: int = 4096,
               paging: str = "nested", swap_pages: int | None = None, policy: str = "lru",
               name: str = "g", seed: int = 0, mmu=None) -> GuestOnHost:
    host = host if host is not None else _new_host(host_frames, paging)
    vm, tables = _new_vm(host, memory_pages, name)
    config = GuestConfig(memory_pages, swap_pages, reclaim_policy=policy)
    kernel = GuestKernel(config, vm, tables, np.random.default_rng(seed), mmu=mmu)
    return GuestOnHost(host, vm, tables, kernel)


#: The smallest whole scenario: a 256 MiB host with one idle 128 MiB VM for 30 s.
SMALL_SCENARIO = """
duration = "30s"
[host]
memory = "256MiB"
[[vm]]
name = "vm"
memory = "128MiB"
"""


def _new_scenario(text: str = SMALL_SCENARIO, name: str = "small"):
    return parse_scenario(tomllib.loads(text), f"{name}.toml")


@pytest.fixture(scope="session")
def make_host():
    """``make_host(n_frames=4096, paging="nested", **Host options)`` -> a Host."""
    return _new_host


@pytest.fixture(scope="session")
def make_vm():
    """``make_vm(host, n_ppns, name="g")`` -> (HostVm, its guest-physical TableStore)."""
    return _new_vm


@pytest.fixture(scope="session")
def make_guest():
    """``make_guest(memory_pages=256, host=None, ...)`` -> a :class:`GuestOnHost`."""
    return _new_guest


@pytest.fixture(scope="session")
def make_scenario():
    """``make_scenario(text=SMALL_SCENARIO)`` -> a Scenario parsed from TOML text."""
    return _new_scenario
