"""Import directions between hvmem's layers (docs/architecture.md, Layers).

Every module under src/hvmem is parsed with ``ast`` and each import of ``hvmem.*``
(absolute or relative, at any depth, including ``TYPE_CHECKING`` blocks) is
checked against the layer table below:

* a module may import its own top-level package, its own layer, or lower;
* ``policy`` and ``workloads`` (L2) never import each other;
* ``guest`` and ``hypervisor`` (L4) never import each other: they meet at
  hardware objects, as real guests and hosts do;
* the composition modules (L5) may import each other;
* the controller of real QEMU guests (``backends.qemu``) never imports the
  simulator (``sim`` and its parts ``sim_*``): it runs the same policy without
  it and meets it only at ``results`` (``RunResult``, the results directory);
* ``hvmem/__init__.py`` and ``hvmem/__main__.py`` may import anything. Names
  taken from the root package itself (``import hvmem``, ``from hvmem import
  __version__``) count as L7: the root re-exports the composition API, so only
  the UI leans on it; lower layers import the module that defines the thing;
* a top-level name missing from the table fails, so a new package gets classified;
* the modules of ``hypervisor``, and those of ``guest``, import each other without a
  circle (every import counts, including those inside functions), so their parts read
  from the bottom up.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import pytest

SRC_PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hvmem"

LAYERS: dict[str, int] = {
    "units": 0,
    "errors": 0,
    # Where Numba's compiled kernels are kept, keyed by their sources; set before Numba loads.
    "compile_cache": 0,
    # Field declarations (key, kind, unit, default, bounds, doc) for every config class.
    "params": 0,
    # Shipped scenario files: data and a lookup, needing only errors.
    "scenarios": 1,
    "core": 1,
    "policy": 2,
    "workloads": 2,
    "hardware": 3,
    # Replacement policies, which guest reclaim, host swap selection and trace replay share.
    "replacement": 3,
    "guest": 4,
    "hypervisor": 4,
    "scenario": 5,
    "sim": 5,
    # The aggregate fidelity: masses of pages, beside the page-level simulation.
    "aggregate": 5,
    "sim_vm": 5,
    "sim_batches": 5,
    "sim_rows": 5,
    "sim_backend": 5,
    "sim_events": 5,
    "results": 5,
    # Output directories: checked, locked and staged before a run, committed after.
    "outdir": 5,
    "machine": 5,
    "bench": 5,
    # Sweeps: experiment files expanded into runs, run on a process pool or Dask.
    "sweep": 5,
    "backends": 6,
    "ui": 7,
}
# Importers that may import anything.
UNRESTRICTED = {"__init__", "__main__"}
# Attributes of the root package (hvmem/__init__.py) count as this layer.
ROOT_PACKAGE_LAYER = 7
# Same-layer pairs that must not import each other, in either direction.
SIBLINGS_APART = {frozenset({"policy", "workloads"}), frozenset({"guest", "hypervisor"})}
# Importer package -> modules it must not import, although their layer allows it.
KEPT_APART = {"hvmem.backends.qemu": ("hvmem.sim", "hvmem.sim_vm", "hvmem.sim_batches",
                                       "hvmem.sim_rows", "hvmem.sim_backend",
                                       "hvmem.sim_events")}
KEPT_APART["hvmem.backends.libvirt"] = KEPT_APART["hvmem.backends.qemu"]


def module_name_of(path: Path, package_dir: Path) -> tuple[str, bool]:
    """Dotted module name of a file under package_dir, and whether it is a package."""
    parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every hvmem.* name the tree imports, as (dotted name, line), relative ones resolved.

    ``from X import a`` yields ``X.a``: a is either a submodule or an attribute of X,
    and the top-level package is X's either way (except when X is ``hvmem``).
    """
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                keep = len(package_parts) - (node.level - 1)
                if keep < 1:
                    found.append(("<beyond-top-level>", node.lineno))
                    continue
                base = ".".join(package_parts[:keep] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.extend((f"{base}.{alias.name}", node.lineno) for alias in node.names)
    return [
        (name, line)
        for name, line in found
        if name.split(".")[0] in ("hvmem", "<beyond-top-level>")
    ]


def top_level_of(dotted: str, on_disk: Collection[str]) -> str:
    """The top-level name a hvmem.* import belongs to; "__root__" for the root package."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return "__root__"  # import hvmem
    name = parts[1]
    if name in LAYERS or name in UNRESTRICTED or name in on_disk:
        return name
    return "__root__"  # from hvmem import something_defined_in___init__


def layer_violations(
    module: str, source: str, *, is_package: bool = False, on_disk: Collection[str] = ()
) -> list[str]:
    """Check one module's hvmem imports against the layer table.

    Args:
        module: the importer's dotted name, such as "hvmem.core.rows".
        source: its Python source.
        is_package: the source is the package's __init__.py.
        on_disk: top-level names that exist under src/hvmem, so an unclassified
            package is told apart from an attribute of the root package.

    Returns:
        One message per violation; empty if the module keeps to its layer.
    """
    importer = module.split(".")[1] if "." in module else "__init__"
    if importer in UNRESTRICTED:
        return []
    if importer not in LAYERS:
        return [f"{module}: top-level name {importer!r} has no layer; add it to LAYERS"]
    tree = ast.parse(source, filename=module)
    violations = []
    for dotted, line in imported_modules(tree, module, is_package):
        where = f"{module}:{line} imports {dotted}"
        if dotted == "<beyond-top-level>":
            violations.append(f"{where}: relative import beyond the hvmem package")
            continue
        apart = [kept for package, kept in KEPT_APART.items() if _within(module, package)]
        if any(_within(dotted, name) for names in apart for name in names):
            violations.append(f"{where}: {module} must not depend on the simulator")
            continue
        imported = top_level_of(dotted, on_disk)
        if imported == importer:
            continue
        if imported == "__root__":
            layer = ROOT_PACKAGE_LAYER
        elif imported in LAYERS:
            layer = LAYERS[imported]
        elif imported in UNRESTRICTED:
            violations.append(f"{where}: nothing may import {imported}")
            continue
        else:
            violations.append(f"{where}: top-level name {imported!r} has no layer")
            continue
        if layer > LAYERS[importer]:
            violations.append(
                f"{where}: L{LAYERS[importer]} {importer} must not import L{layer} {imported}"
            )
        elif frozenset({importer, imported}) in SIBLINGS_APART:
            violations.append(
                f"{where}: siblings {importer} and {imported} never import each other"
            )
    return violations


def _within(dotted: str, name: str) -> bool:
    """Whether ``dotted`` is the module ``name`` or inside it."""
    return dotted == name or dotted.startswith(name + ".")


def tree_violations(package_dir: Path) -> list[str]:
    """Check every module under package_dir (a directory named hvmem)."""
    on_disk = {path.stem if path.is_file() else path.name for path in package_dir.iterdir()}
    violations = []
    for path in sorted(package_dir.rglob("*.py")):
        module, is_package = module_name_of(path, package_dir)
        source = path.read_text(encoding="utf-8")
        violations.extend(layer_violations(module, source, is_package=is_package, on_disk=on_disk))
    return violations


# -- the real tree --------------------------------------------------------------


def test_source_tree_exists():
    assert (SRC_PACKAGE / "__init__.py").is_file()


def test_imports_point_down_the_layers():
    violations = tree_violations(SRC_PACKAGE)
    assert not violations, "layering violations:\n" + "\n".join(violations)


# -- the checker itself fails on violations ------------------------------------


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("hvmem.core.rows", "from hvmem.hardware import tlb"),
        ("hvmem.core.rows", "import hvmem.sim"),
        ("hvmem.units", "from hvmem.core.engine import Engine"),
        ("hvmem.guest.kernel", "from hvmem.hypervisor.pmap import Pmap"),
        ("hvmem.guest.kernel", "from ..hypervisor import pmap"),
        ("hvmem.hypervisor.paging.shadow", "from ...guest.kernel import GuestKernel"),
        ("hvmem.policy.planner", "from hvmem.workloads import synthetic"),
        ("hvmem.workloads.synthetic", "from hvmem import policy"),
        ("hvmem.hardware.tlb", "from hvmem import sim"),
        ("hvmem.sim", "from hvmem.backends import simulated"),
        ("hvmem.backends.qemu.qmp", "from hvmem.ui import cli"),
        ("hvmem.backends.qemu.control", "from hvmem.sim import RunResult"),
        ("hvmem.backends.qemu.control", "from ...sim import Simulation"),
        ("hvmem.backends.qemu", "from hvmem import sim"),
        ("hvmem.backends.qemu.backend", "from hvmem.sim_rows import SharingTally"),
        ("hvmem.core.rows", "from hvmem import __version__"),
        ("hvmem.core.rows", "import hvmem"),
        ("hvmem.core.rows", "from hvmem.gizmo import thing"),
        ("hvmem.replacement.lru", "from hvmem.guest.kernel import PageKind"),
        ("hvmem.replacement.random", "from hvmem.hypervisor.pmap import Backing"),
        ("hvmem.core.rng", "from hvmem.replacement.names import POLICY_NAMES"),
        ("hvmem.gizmo", "from hvmem import units"),
        ("hvmem.ui.cli", "from hvmem.__main__ import main"),
        ("hvmem.units", "from ... import errors"),
        ("hvmem.core.rows", "def f():\n    from hvmem.hardware import tlb\n"),
        (
            "hvmem.core.rows",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import hvmem.guest\n",
        ),
    ],
)
def test_checker_reports_violations(module, source):
    assert layer_violations(module, source, on_disk={"gizmo"})


@pytest.mark.parametrize(
    ("module", "source", "is_package"),
    [
        ("hvmem.units", "from hvmem.errors import ConfigError", False),
        ("hvmem.core.rows", "from hvmem.core.priority import Priority", False),
        (
            "hvmem.core.rows",
            "from .priority import Priority\nfrom ..units import NS_PER_S",
            False,
        ),
        ("hvmem.core", "from . import engine\nfrom .rng import RngStreams", True),
        ("hvmem.hypervisor.memsched", "from hvmem.policy import planner", False),
        ("hvmem.hypervisor.paging.shadow", "from ..pmap import Pmap", False),
        ("hvmem.guest.kernel", "from hvmem.hardware.virtio_balloon import VirtioBalloon", False),
        ("hvmem.guest.kernel", "from hvmem.replacement.policies import make_policy", False),
        ("hvmem.hypervisor.reclaim.swap", "from hvmem.replacement.names import SWAP_SELECTIONS",
         False),
        ("hvmem.replacement.replay", "from hvmem.core.rng import RngStreams", False),
        ("hvmem.sim", "from hvmem.scenario import Scenario\nfrom hvmem import results", False),
        ("hvmem.scenario.load", "from hvmem.machine import Machine", False),
        ("hvmem.backends.simulated", "from hvmem.sim import Simulation", False),
        ("hvmem.backends.qemu.control", "from hvmem.results import RunResult", False),
        ("hvmem.ui.cli", "from hvmem import __version__\nfrom hvmem.backends import qemu", False),
        ("hvmem", "from hvmem.sim import Simulation\nfrom hvmem.ui import cli", True),
        ("hvmem.__main__", "from hvmem.ui.cli import main", False),
        ("hvmem.core.rows", "import numpy as np\nfrom heapq import heappush", False),
    ],
)
def test_checker_accepts_allowed_imports(module, source, is_package):
    assert layer_violations(module, source, is_package=is_package, on_disk=set(LAYERS)) == []


def test_checker_finds_a_violating_file_in_a_tree(tmp_path):
    package_dir = tmp_path / "hvmem"
    (package_dir / "core").mkdir(parents=True)
    (package_dir / "__init__.py").write_text("")
    (package_dir / "units.py").write_text("from hvmem.errors import ConfigError\n")
    (package_dir / "core" / "__init__.py").write_text("")
    (package_dir / "core" / "bad.py").write_text("from ..guest import kernel\n")
    (package_dir / "newthing.py").write_text("x = 1\n")
    violations = tree_violations(package_dir)
    assert any("hvmem.core.bad" in v and "guest" in v for v in violations)
    assert any("newthing" in v and "no layer" in v for v in violations)
    assert len(violations) == 2


# -- import circles ----------------------------------------------------------------

# Packages whose modules must import each other without a circle: all of hvmem, imports
# inside functions included.
NO_CIRCLES_WITHIN = ("hvmem",)


def module_imports(package_dir: Path) -> dict[str, set[str]]:
    """Each module under package_dir (a directory named hvmem) -> the hvmem modules it imports.

    ``from X import a`` counts as importing the module ``X.a`` where there is
    one, else ``X`` itself.
    """
    sources = {}
    for path in sorted(package_dir.rglob("*.py")):
        module, is_package = module_name_of(path, package_dir)
        sources[module] = (path.read_text(encoding="utf-8"), is_package)
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        deps = set()
        for dotted, _ in imported_modules(ast.parse(source), module, is_package):
            target = dotted if dotted in sources else dotted.rpartition(".")[0]
            if target in sources and target != module:
                deps.add(target)
        graph[module] = deps
    return graph


def import_circles(graph: dict[str, set[str]], within: str) -> list[list[str]]:
    """Circles among the modules under ``within``, each as modules in import order."""
    inside = {m for m in graph if m == within or m.startswith(within + ".")}
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module] & inside):
            if state.get(dep) == 1:
                circles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path)
        path.pop()
        state[module] = 2

    for module in sorted(inside):
        if module not in state:
            visit(module, [])
    return circles


@pytest.mark.parametrize("package", NO_CIRCLES_WITHIN)
def test_modules_import_without_circles(package):
    circles = import_circles(module_imports(SRC_PACKAGE), package)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


def test_circle_finder_finds_a_circle(tmp_path):
    package_dir = tmp_path / "hvmem"
    (package_dir / "hypervisor").mkdir(parents=True)
    (package_dir / "__init__.py").write_text("")
    (package_dir / "hypervisor" / "__init__.py").write_text("")
    (package_dir / "hypervisor" / "a.py").write_text("from hvmem.hypervisor.b import x\n")
    (package_dir / "hypervisor" / "b.py").write_text("def f():\n    from . import a\n")
    (package_dir / "hypervisor" / "c.py").write_text("from hvmem.hypervisor import a\n")
    circles = import_circles(module_imports(package_dir), "hvmem.hypervisor")
    assert circles == [["hvmem.hypervisor.a", "hvmem.hypervisor.b", "hvmem.hypervisor.a"]]
