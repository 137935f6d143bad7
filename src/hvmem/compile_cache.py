"""Where Numba keeps hvmem's compiled kernels: one directory per version of their sources.

Numba's on-disk cache (``cache=True``) keys a compiled function by the
timestamp and size of its own file only (numba/core/caching.py,
``_CacheImpl`` and ``IndexDataCacheFile``). A kernel that calls, or inlines,
a compiled function of another file keeps its old machine code after an edit
of that other file alone: ``aggregate/kernel.py`` compiles ``reclaim.py``'s
reclaim and ``draws.py``'s draws into itself, and after an edit of
``reclaim.py`` it went on running the old reclaim, with wrong results and no
error.

So the cache directory is named after a digest of every hvmem source file
that uses Numba, and of every hvmem module such a file imports, directly or
through others: a kernel compiles the globals it reads as constants, so the
aggregate kernels hold ``aggregate/layout.py``'s slot numbers, and an edit of
that file alone (a slot added) would otherwise leave them indexing the old
slots. When any of these files changes, every kernel is compiled again
(about 10 s of CPU for ``demo``, about 80 s for the aggregate kernels), and
identical sources, in any checkout, share one directory. The base is
``NUMBA_CACHE_DIR`` when it is set (the tests give each xdist worker its
own), else ``$XDG_CACHE_HOME/hvmem`` (``~/.cache/hvmem``). Directories of
other source versions that nobody has used for a week are removed; nothing
else under the base is touched.

:func:`key_numba_cache` runs from ``hvmem/__init__.py``, before any hvmem
module imports Numba (Numba reads ``NUMBA_CACHE_DIR`` when it is imported;
if it was imported first, its config is set directly).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

__all__ = ["PREFIX", "STALE_AFTER_S", "key_numba_cache", "sources_digest"]

#: Prefix of the directories named after a sources digest (only these are ever removed).
PREFIX = "hvmem-numba-"
#: A directory of other sources unused this long is removed: one week.
STALE_AFTER_S = 7 * 86400
# A source file uses Numba when it holds this text.
_MARK = b"numba"
# ``from PKG.a.b import x, y`` (the names may be a parenthesised list over lines) and
# ``import PKG.a.b``: the package's name is put in front when the pattern is built.
_IMPORT = (r"^[ \t]*(?:from[ \t]+({pkg}(?:\.\w+)*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)"
           r"|import[ \t]+({pkg}(?:\.\w+)*))")


def _imported(text: str, modules: dict[str, Path], pattern: re.Pattern) -> list[Path]:
    """The package's source files ``text`` imports: modules, and imported names that are modules."""
    found = []
    for match in pattern.finditer(text):
        module, names, plain = match.groups()
        dotted = [module or plain]
        if names:
            dotted += [f"{module}.{name}" for name in re.findall(r"(\w+)(?:[ \t]+as[ \t]+\w+)?",
                                                                names.strip("()"))]
        found += [modules[name] for name in dotted if name in modules]
    return found


def sources_digest(package_dir: Path) -> str:
    """A digest of every source file under the package that uses Numba or that one imports.

    The imports are followed to the end: a module of constants that imports its
    numbers from another is covered with it.
    """
    package = package_dir.name
    modules, texts = {}, {}
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
        texts[path] = path.read_bytes()
    pattern = re.compile(_IMPORT.format(pkg=re.escape(package)), re.MULTILINE)
    pending = [path for path, data in texts.items() if _MARK in data]
    covered: set[Path] = set()
    while pending:
        path = pending.pop()
        if path not in covered:
            covered.add(path)
            pending += _imported(texts[path].decode("utf-8", "replace"), modules, pattern)
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(covered):
        digest.update(path.relative_to(package_dir).as_posix().encode())
        digest.update(len(texts[path]).to_bytes(8, "little"))
        digest.update(texts[path])
    return digest.hexdigest()


def _prune(base: Path, keep: Path, now_s: float) -> None:
    """Remove this module's directories of other sources left unused for a week."""
    try:
        entries = list(base.iterdir())
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(PREFIX) or entry == keep:
            continue
        try:
            if entry.is_dir() and now_s - entry.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def key_numba_cache(package_dir: Path | None = None) -> Path:
    """Point Numba's cache at this source version's directory, and return it."""
    package_dir = package_dir or Path(__file__).resolve().parent
    name = PREFIX + sources_digest(package_dir)
    given = os.environ.get("NUMBA_CACHE_DIR")
    if given and Path(given).name == name:      # a child of a process that keyed it
        return Path(given)
    if given:
        base = Path(given)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hvmem"
    cache_dir = base / name
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.utime(cache_dir)                     # in use: not stale
    except OSError:
        return cache_dir                        # Numba reports an unwritable cache itself
    _prune(base, cache_dir, time.time())
    os.environ["NUMBA_CACHE_DIR"] = str(cache_dir)
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None:
        numba_config.CACHE_DIR = str(cache_dir)
    return cache_dir
