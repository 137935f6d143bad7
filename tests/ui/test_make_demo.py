"""`make demo` from a fresh clone: the README's first command, end to end.

Clones the committed tree, lets its Makefile create the virtualenv and install
hvmem (pip's cache makes the downloads cheap after the first `make test`), and
runs the built-in demo scenario. Slow (a minute or two), so it runs once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("make") is None,
                    reason="needs git and make")
def test_make_demo_from_a_fresh_clone(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "hvmem"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    # Not a sub-make of `make test`: no inherited flags, no "Leaving directory" lines.
    inherited = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VIRTUAL_ENV") and k not in inherited}
    env["PYTHON"] = sys.executable  # the interpreter the tests run under (3.11+)
    done = subprocess.run(["make", "--no-print-directory", "demo"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "what each mechanism reclaimed" in out
    assert "what it cost each VM" in out
    results = clone / "results" / "demo-esx-seed42"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["complete"] is True
    assert set(summary["vms"]) == {"web", "db", "batch"}
    # The demo's point: memory is reclaimed, and by more than one mechanism.
    used = [m for m, held in summary["mechanisms"].items() if held["peak_mib"] > 1]
    assert len(used) >= 2, summary["mechanisms"]
    assert f"results: {Path('results') / 'demo-esx-seed42'} (complete)" in out.replace("\n", "")
    # It ends with the path of its report: the states, and every mechanism, over time.
    report = Path("results") / "demo-esx-seed42" / "report.html"
    assert out.strip().splitlines()[-1] == f"report: {report}"
    page = (clone / report).read_text()
    for chart in ("host", "composition", "targets", "performance", "events"):
        assert f"id='chart-{chart}'" in page
    assert "host memory states: high" in page and "hard" in page
