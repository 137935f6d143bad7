"""ESX behaviours reproduced: each small scenario here against what the sources describe.

* the idle memory tax switched on mid-run moves memory from the idle VM to the
  busy one, which held equal targets before [OSDI02 §5.4, Fig. 7];
* the active-memory estimate follows a step up within a period and a step down
  with the slow average's time constant, 134.4 s, whatever the period
  [OSDI02 §5.3]; TCHD and ACTV part when a workload stops;
* ``dup_frac`` makes a VM share with itself [BARKER12];
* ``Mem.ShareScanTotal`` caps the host's scan rate [OSDI02 §4.3][ESX25-p343].
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hvmem.hypervisor.sampling import (
    FAST_TIME_CONSTANT_NS,
    SLOW_TIME_CONSTANT_NS,
    ActiveMemorySampler,
    SamplerConfig,
)
from hvmem.scenario.loader import load_scenario
from hvmem.scenario.schema import HostConfig, SharingConfig
from hvmem.sim import Simulation
from hvmem.units import GIB, NS_PER_S

HERE = Path(__file__).resolve().parent


def run(name: str) -> tuple[Simulation, dict[str, list[dict]]]:
    sim = Simulation(load_scenario(HERE / f"{name}.toml"), check_invariants=True)
    result = sim.run()
    assert result.complete
    rows: dict[str, list[dict]] = {}
    for row in result.vm_rows:
        rows.setdefault(row["vm"], []).append(row)
    return sim, rows


def at(rows: list[dict], time_s: float) -> dict:
    return next(r for r in rows if r["time_s"] == time_s)


# -- the idle memory tax, switched on ----------------------------------------------------


def test_the_idle_vm_gives_up_memory_when_the_tax_switches_on():
    sim, rows = run("idle-tax-switch")
    idle, busy = rows["idle"], rows["busy"]
    # Tax off: equal shares give equal targets (Fig. 7's 179 MB each), within a MiB.
    before = at(idle, 149.0)["SZTGT"], at(busy, 149.0)["SZTGT"]
    assert before[0] == pytest.approx(before[1], abs=1.0)
    # The switch is in the run's events at its time.
    [switch] = [e for e in sim.result.events if e["event"] == "scheduled"]
    assert switch["time_s"] == 150.0 and "policy.idle_tax_frac = 0.75" in switch["detail"]
    # The next plan moves memory: the idle VM's target falls, the busy one's rises, and
    # the idle VM's balloon takes the difference. With k = 4 the idle VM (active ~1 %)
    # keeps well under the busy one's target.
    after = at(idle, 165.0)["SZTGT"], at(busy, 165.0)["SZTGT"]
    assert after[0] < before[0] - 40.0 and after[1] > before[1] + 40.0
    end = idle[-1]
    assert end["MCTLSZ"] + end["SWCUR"] + end["ZIPPED"] > at(idle, 149.0)["MCTLSZ"] + 40.0
    assert busy[-1]["GRANT"] > at(busy, 149.0)["GRANT"] + 40.0


# -- sampling ------------------------------------------------------------------------------


def _exact(period_s: float) -> ActiveMemorySampler:
    """A sampler whose sample is the whole VM, so each period's fraction is exact."""
    n = 1000
    return ActiveMemorySampler(n, np.random.default_rng(0), SamplerConfig(
        sample_pages=n, period_ns=round(period_s * NS_PER_S), min_active_frac=0.0))


def _steps(s: ActiveMemorySampler, frac: float, seconds: float) -> None:
    """Each period for ``seconds`` the guest touches the first ``frac`` of its pages."""
    period_ns = s.config.period_ns
    for _ in range(round(seconds * NS_PER_S / period_ns)):
        s.observe(np.arange(int(frac * s.n_ppns)))
        s.advance((s.periods + 1) * period_ns)


@pytest.mark.parametrize("period_s", [30, 60])
def test_the_estimate_follows_a_step_up_fast_and_a_step_down_slowly(period_s):
    """Time constants 43.3 s (fast) and 134.4 s (slow), whatever the period."""
    assert FAST_TIME_CONSTANT_NS == 43_300_000_000 and SLOW_TIME_CONSTANT_NS == 134_400_000_000
    s = _exact(period_s)
    s.advance(0)
    _steps(s, 0.8, 600)  # busy for 10 minutes: every average near 0.8
    assert s.slow == pytest.approx(0.8, abs=0.01)
    _steps(s, 0.0, 240)  # stops: 4 minutes without a touch
    slow = 0.8 * math.exp(-240 / 134.4)
    fast = 0.8 * math.exp(-240 / 43.3)
    assert s.slow == pytest.approx(slow, abs=0.01)  # 0.134, at 30 s and at 60 s periods
    assert s.fast == pytest.approx(fast, abs=0.002)
    assert s.active_frac == pytest.approx(slow, abs=0.01)  # the slow average holds it up
    # Step up again: within one period the running count already shows it (current).
    s.observe(np.arange(int(0.8 * s.n_ppns)))
    assert s.active_frac == pytest.approx(
        s.fast + (1 - math.exp(-period_s / 43.3)) * (0.8 - s.fast), abs=1e-6)
    assert s.active_frac > 0.4 - 1e-3  # half the step at 30 s periods, 3/4 at 60 s


def test_tchd_and_actv_part_when_a_workload_stops():
    _, rows = run("stops")
    vm = rows["vm"]
    busy = at(vm, 179.0)
    assert busy["TCHD"] == pytest.approx(96.0, rel=0.15)  # 96 of 128 MiB touched
    assert busy["ACTV"] == pytest.approx(96.0, rel=0.15)
    # Two periods after the stop (60 s each), the sample sees nothing touched: TCHD is
    # at the floor while ACTV still holds exp(-(300 - 180) / 134.4) ~ 41 % of the slow
    # average's level.
    late = at(vm, 305.0)
    assert late["TCHD"] < 0.05 * 128
    assert late["ACTV"] > 0.3 * busy["ACTV"]
    assert late["ACTV"] == pytest.approx(late["ACTVS"], abs=0.5)
    assert late["ACTVF"] < late["ACTVS"]


# -- page content and sharing --------------------------------------------------------------


def test_dup_frac_makes_a_single_vm_share():
    _, rows = run("dup-single-vm")
    end = rows["vm"][-1]
    # 30 % of the 64 MiB written is in pairs: up to 9.6 MiB saved, all by the VM itself.
    assert end["ZERO"] == 0.0
    assert 4.0 < end["SHRDSVD"] <= 9.6 + 1e-6
    assert end["SHRD"] == pytest.approx(2 * end["SHRDSVD"], rel=0.01)  # pairs: 2 pages, 1 frame


def test_share_scan_total_caps_the_host_scan_rate():
    sim, _ = run("scan-total")
    scanned = sim.host.sharing.counters.scanned
    # 3 x 1000 pages/s asked for 20 s; the host cap lets 600/s through in all.
    assert scanned == pytest.approx(600 * 20, rel=0.02)
    assert sim.scenario.host.sharing.scan_total_pages_per_s == 600.0


def test_profiles_cap_the_scan_as_their_esx():
    old = HostConfig(memory_bytes=GIB, profile="esx4")
    assert (old.sharing.scan_rate_pages_per_s, old.sharing.scan_total_pages_per_s) == (50, 200)
    new = HostConfig(memory_bytes=GIB, profile="esxi6", sharing=SharingConfig(cpu_ghz=10.0))
    assert new.sharing.scan_rate_pages_per_s is None  # a whole VM per hour, <= 1024/s
    assert new.sharing.scan_total_pages_per_s == 4 * 256 * 10.0  # 4 MB/s per GHz
