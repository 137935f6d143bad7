"""Golden summaries: small scenarios whose whole outcome is pinned down.

Each ``tests/golden/<name>.toml`` runs to the end (invariants checked every
tick) and its summary (what each mechanism reclaimed, each VM's cost, time in
each host state) must equal ``tests/golden/<name>.json``, floats to six
significant digits. A change in the model that moves any number fails here, so
it is seen and reviewed; after an intended change, regenerate with::

    HVMEM_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden.py

That run rewrites the JSON files and fails ("regenerated: review the diff"): a
golden never blesses itself, so an update run cannot pass as a check. Read the
diff of the JSON files, then run the tests again without the variable (green
now) before committing them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hvmem.scenario.loader import load_scenario
from hvmem.sim import Simulation

GOLDEN = Path(__file__).resolve().parent / "golden"
SCENARIOS = sorted(GOLDEN.glob("*.toml"))


def rounded(value):
    """``value`` with every float at six significant digits (platform noise aside)."""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def check_golden(summary: dict, expected_path: Path) -> None:
    """``summary`` must equal the JSON at ``expected_path``.

    With ``HVMEM_UPDATE_GOLDEN`` set the file is rewritten from ``summary`` and the
    check fails all the same: comparing the file with what was just written to it
    would pass whatever the model did.
    """
    if os.environ.get("HVMEM_UPDATE_GOLDEN"):
        expected_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        pytest.fail(f"{expected_path.name} regenerated: review the diff", pytrace=False)
    assert expected_path.exists(), f"no golden summary {expected_path.name}; see module docs"
    expected = json.loads(expected_path.read_text())
    assert summary == expected


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_summary_matches_golden(path):
    summary = rounded(Simulation(load_scenario(path), check_invariants=True).run().summary())
    check_golden(summary, path.with_suffix(".json"))


def test_an_update_run_rewrites_the_golden_and_fails(tmp_path, monkeypatch):
    golden = tmp_path / "g.json"
    golden.write_text(json.dumps({"ticks": 3}) + "\n")
    monkeypatch.setenv("HVMEM_UPDATE_GOLDEN", "1")
    with pytest.raises(pytest.fail.Exception, match=r"g\.json regenerated: review the diff"):
        check_golden({"ticks": 4, "complete": True}, golden)
    assert json.loads(golden.read_text()) == {"ticks": 4, "complete": True}
    with pytest.raises(pytest.fail.Exception, match="regenerated"):  # even when unchanged
        check_golden({"ticks": 4, "complete": True}, golden)
    monkeypatch.delenv("HVMEM_UPDATE_GOLDEN")
    check_golden({"ticks": 4, "complete": True}, golden)  # the next plain run is green
    with pytest.raises(AssertionError):
        check_golden({"ticks": 5, "complete": True}, golden)
    with pytest.raises(AssertionError, match="no golden summary"):
        check_golden({"ticks": 4}, tmp_path / "missing.json")


def test_golden_scenarios_exercise_every_mechanism():
    """Together the goldens cover sharing, ballooning, compression and swapping."""
    peaks: dict[str, float] = {}
    for path in SCENARIOS:
        golden = json.loads(path.with_suffix(".json").read_text())
        for name, held in golden["mechanisms"].items():
            peaks[name] = max(peaks.get(name, 0.0), held["peak_mib"])
    assert set(peaks) == {"sharing", "ballooning", "compression", "swapping"}
    assert all(peak > 1.0 for peak in peaks.values()), peaks
