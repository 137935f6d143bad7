"""Real guests run the scenario's own policy configuration: idle tax, period, parameters."""

from __future__ import annotations

from typer.testing import CliRunner

from hvmem.backends.qemu.control import ControlLoop
from hvmem.policy.planner import PlannerParams
from hvmem.policy.policies import EsxParams, MomParams, PolicyConfig
from hvmem.ui.cli import app

SCENARIO = """
name = "qemu-policy"
duration = "2s"
[host]
memory = "600MiB"
[policy]
balance_period = "1s"
idle_tax_frac = 0.0
[policy.params]
swap_out_mib_s = 5
[backend]
kind = "qemu"
[[vm]]
name = "web"
memory = "256MiB"
"""


def test_control_loop_runs_the_given_configuration(fake_host):
    fake_host.add_guest("g1", 4001)
    from hvmem.backends.qemu.backend import QemuBackend

    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(host_memory_mib=880))
    try:
        config = PolicyConfig(name="mom", idle_tax_frac=0.1, params={"balloon_enabled": False})
        loop = ControlLoop(backend, config, interval_s=0.2, tick_s=0.1)
        assert loop.policy.params == MomParams(balloon_enabled=False)
        assert loop.result.scenario.policy == PolicyConfig(
            name="mom", idle_tax_frac=0.1, balance_period_ns=200_000_000,
            params={"balloon_enabled": False})
    finally:
        backend.close()


def test_hvmem_run_on_real_guests_keeps_the_idle_tax_and_the_params(fake_launch, tmp_path,
                                                                     monkeypatch):
    """``[backend] kind = "qemu"`` runs [policy] as the simulator would (guests faked)."""
    from hvmem.backends.qemu import scenario_run

    loops: list[ControlLoop] = []

    class Recorded(ControlLoop):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            loops.append(self)

    monkeypatch.setattr(scenario_run, "ControlLoop", Recorded)
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    result = CliRunner().invoke(app, ["run", str(path), "--no-live", "--out",
                                      str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    (loop,) = loops
    assert loop.policy.params == EsxParams(
        tax_frac=0.0, planner=PlannerParams(balance_period_s=1.0, swap_out_mib_s=5.0))
