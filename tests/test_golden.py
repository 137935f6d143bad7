"""Golden summaries: small scenarios whose whole outcome is pinned down.

Each ``tests/golden/<name>.toml`` runs to the end (invariants checked every
tick) and its summary (what each mechanism reclaimed, each VM's cost, time in
each host state) must equal ``tests/golden/<name>.json``, floats to six
significant digits. A change in the model that moves any number fails here, so
it is seen and reviewed; after an intended change, regenerate with::

    HVMEM_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_golden.py

and read the diff of the JSON files before committing them.
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


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_summary_matches_golden(path):
    summary = rounded(Simulation(load_scenario(path), check_invariants=True).run().summary())
    expected_path = path.with_suffix(".json")
    if os.environ.get("HVMEM_UPDATE_GOLDEN"):
        expected_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    assert expected_path.exists(), f"no golden summary {expected_path.name}; see module docs"
    expected = json.loads(expected_path.read_text())
    assert summary == expected


def test_golden_scenarios_exercise_every_mechanism():
    """Together the goldens cover sharing, ballooning, compression and swapping."""
    peaks: dict[str, float] = {}
    for path in SCENARIOS:
        golden = json.loads(path.with_suffix(".json").read_text())
        for name, held in golden["mechanisms"].items():
            peaks[name] = max(peaks.get(name, 0.0), held["peak_mib"])
    assert set(peaks) == {"sharing", "ballooning", "compression", "swapping"}
    assert all(peak > 1.0 for peak in peaks.values()), peaks
