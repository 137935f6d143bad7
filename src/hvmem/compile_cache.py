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
that uses Numba: when any of them changes, every kernel is compiled again
(about 10 s of CPU for ``demo``, about 35 s for the aggregate kernels), and
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


def sources_digest(package_dir: Path) -> str:
    """A digest of the path and content of every source file under the package using Numba."""
    digest = hashlib.blake2b(digest_size=8)
    for path in sorted(package_dir.rglob("*.py")):
        data = path.read_bytes()
        if _MARK in data:
            digest.update(path.relative_to(package_dir).as_posix().encode())
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
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
