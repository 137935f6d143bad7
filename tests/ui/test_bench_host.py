"""``hvmem bench host`` runs end to end: small fixed parts and one simulated minute.

The benchmark's figures are never asserted (speed is measured, not tested);
what is checked is that every part runs and reports finite, positive figures
and the sizes it ran, so a crash in any part shows here and not on the next
benchmark run.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from types import SimpleNamespace

from typer.testing import CliRunner

from hvmem import bench
from hvmem.ui.cli import app

SCAN_PAGES = 65_536  # a 128th of the benchmark's sharing scan; swapping scales with it


def test_bench_host_for_one_simulated_minute():
    child = subprocess.run(
        [sys.executable, "-m", "hvmem", "bench", "host", "--duration", "1min",
         "--scan-pages", str(SCAN_PAGES), "--json"],
        capture_output=True, text=True, timeout=600, check=False)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout)
    for key in ("sharing_scan_pages_per_s", "sharing_scan_median_pages_per_s",
                "swap_out_pages_per_s", "sim_seconds_per_wall_second", "peak_rss_mib",
                "aggregate_sim_seconds_per_wall_second"):
        value = result[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    sharing = result["sharing"]
    assert sharing["pages"] == SCAN_PAGES
    assert 0 < sharing["frames_freed"] < SCAN_PAGES
    assert sharing["shared"] > 0
    assert len(sharing["runs_s"]) == 3
    assert all(math.isfinite(t) and t > 0 for t in sharing["runs_s"])
    assert result["swap"] == {"vm_pages": SCAN_PAGES // 4, "pages_swapped": SCAN_PAGES // 8}
    scenario = result["scenario"]
    assert scenario["scenario"] == "bench-32vm"
    assert scenario["vms"] == 32
    assert scenario["simulated_s"] == 60.0
    assert all(math.isfinite(scenario[k]) and scenario[k] > 0
               for k in ("setup_s", "run_s", "run_cpu_s"))
    # A minute never reaches the pressure window (simulated 300-420 s).
    assert result["pressure_window_sim_seconds_per_wall_second"] is None
    assert scenario["pressure_window_cpu_s"] is None


def test_the_pressure_window_is_timed_from_the_ticks_that_reach_its_edges(monkeypatch):
    clock = iter([10.0, 14.0])
    cpu = iter([3.0, 9.5])
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(bench.time, "process_time", lambda: next(cpu))
    window = bench.PressureWindow((300.0, 420.0))
    sim = SimpleNamespace(result=SimpleNamespace(ticks_done=0),
                          scenario=SimpleNamespace(tick_ns=60 * 10**9))
    for ticks in range(1, 9):  # minutes 1..8: the edges are reached after 5 and 7
        sim.result.ticks_done = ticks
        window.on_tick(sim)
    assert window.sim_seconds_per_wall_second() == 120.0 / 4.0
    assert window.cpu_s() == 6.5
    assert bench.PressureWindow().sim_seconds_per_wall_second() is None


def test_bench_host_rejects_a_scan_it_cannot_split_over_its_vms():
    result = CliRunner().invoke(app, ["bench", "host", "--scan-pages", "12", "--json"])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "hvmem: error: --scan-pages: expected a positive multiple of 8, found 12")
    assert "Traceback" not in result.stderr + result.stdout
