"""Numba's compiled kernels are kept per version of the sources (hvmem/compile_cache.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numba.core.config
import pytest

from hvmem.compile_cache import PREFIX, STALE_AFTER_S, key_numba_cache, sources_digest

_CALLEE = "from numba import njit\n\n@njit(cache=True)\ndef value():\n    return {}\n"
_CALLER = textwrap.dedent("""\
    from numba import njit
    from kpkg.callee import value

    @njit(cache=True)
    def kernel():
        return value() * 10
    """)
_RUN = textwrap.dedent("""\
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    if sys.argv[2] == "keyed":
        from hvmem.compile_cache import key_numba_cache
        key_numba_cache(Path(sys.argv[1]) / "kpkg")
    from kpkg.caller import kernel
    print(kernel())
    """)


@pytest.fixture(autouse=True)
def _numba_config_restored(monkeypatch):
    """key_numba_cache points this process's Numba at its directory: put it back after."""
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", numba.core.config.CACHE_DIR)
    monkeypatch.setenv("NUMBA_CACHE_DIR", os.environ.get("NUMBA_CACHE_DIR", ""))


def _package(root: Path, value: int) -> Path:
    pkg = root / "kpkg"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "caller.py").write_text(_CALLER)
    (pkg / "callee.py").write_text(_CALLEE.format(value))
    return pkg


def _kernel(root: Path, cache: Path, mode: str) -> int:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    out = subprocess.run([sys.executable, "-c", _RUN, str(root), mode], env=env,
                         capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_a_kernel_sees_an_edit_of_a_compiled_function_it_calls_from_another_file(tmp_path):
    # Numba alone keys the caller's cache by the caller's file, so it keeps the old callee.
    for mode in ("plain", "keyed"):
        root = tmp_path / mode
        _package(root, 1)
        assert _kernel(root, tmp_path / f"cache-{mode}", mode) == 10
        time.sleep(0.01)
        _package(root, 2)
        after = _kernel(root, tmp_path / f"cache-{mode}", mode)
        assert after == (10 if mode == "plain" else 20), mode


def test_the_digest_follows_files_that_use_numba_and_what_they_import(tmp_path):
    pkg = _package(tmp_path, 1)
    (pkg / "plain.py").write_text("X = 1\n")
    before = sources_digest(pkg)
    (pkg / "plain.py").write_text("X = 2\n")
    assert sources_digest(pkg) == before            # nothing compiled imports it
    (pkg / "callee.py").write_text(_CALLEE.format(3))
    assert sources_digest(pkg) != before


def test_the_digest_follows_constants_a_kernel_imports_through_other_modules(tmp_path):
    # A kernel compiles a global it reads as a constant; Numba's cache keys the kernel by
    # its own file only, so an edit of the constant's file alone must change the digest,
    # however the constant reached the kernel's module.
    pkg = _package(tmp_path, 1)
    (pkg / "sub").mkdir()
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "slots.py").write_text("from kpkg.sub.base import FIRST\nSLOT = FIRST + 1\n")
    (pkg / "sub" / "base.py").write_text("FIRST = 0\n")
    (pkg / "caller.py").write_text(_CALLER.replace(
        "from kpkg.callee import value\n",
        "from kpkg.callee import value\nfrom kpkg.sub import (\n    slots,  # the slots\n)\n"))
    before = sources_digest(pkg)
    (pkg / "sub" / "base.py").write_text("FIRST = 1\n")
    after = sources_digest(pkg)
    assert after != before
    (pkg / "sub" / "slots.py").write_text("from kpkg.sub.base import FIRST\nSLOT = FIRST + 2\n")
    assert sources_digest(pkg) not in (before, after)


def test_the_directory_is_under_the_given_base_and_not_keyed_twice(tmp_path, monkeypatch):
    pkg = _package(tmp_path, 1)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "base"))
    keyed = key_numba_cache(pkg)
    assert keyed == tmp_path / "base" / (PREFIX + sources_digest(pkg))
    assert keyed.is_dir() and os.environ["NUMBA_CACHE_DIR"] == str(keyed)
    assert key_numba_cache(pkg) == keyed              # a child process keeps its parent's


def test_only_its_own_directories_unused_for_a_week_are_removed(tmp_path, monkeypatch):
    pkg = _package(tmp_path, 1)
    base = tmp_path / "base"
    old = time.time() - STALE_AFTER_S - 60
    stale, recent, foreign = base / (PREFIX + "0" * 16), base / (PREFIX + "1" * 16), base / "mine"
    for path in (stale, recent, foreign):
        path.mkdir(parents=True)
    for path in (stale, foreign):
        os.utime(path, (old, old))
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(base))
    key_numba_cache(pkg)
    assert not stale.exists()
    assert recent.exists() and foreign.exists()
