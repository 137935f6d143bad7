"""Each xdist worker keeps its own Numba cache; imported by conftest.py before hvmem.

Numba writes its on-disk cache (``cache=True``) without a lock: every file is
written whole and renamed into place, but two processes that compile the same
function for different argument types at the same moment can each rewrite the
function's index, and the index may end up naming the other one's machine code
for its types (numba/core/caching.py, IndexDataCacheFile.save). So under
``pytest -n`` each worker, and the hvmem processes its tests start, compile into
a directory of their own under .pytest_cache/numba/ (``NUMBA_CACHE_DIR``, read
when numba is imported), kept between runs. Without xdist nothing changes.
"""

from __future__ import annotations

import os
from pathlib import Path

if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    base = os.environ.get("NUMBA_CACHE_DIR") or (
        Path(__file__).resolve().parents[1] / ".pytest_cache" / "numba")
    os.environ["NUMBA_CACHE_DIR"] = str(Path(base) / worker)
