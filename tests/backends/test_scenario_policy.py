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


def test_hvmem_run_on_real_guests_keeps_the_idle_tax_and_the_params(fake_host, tmp_path,
                                                                     monkeypatch):
    """``[backend] kind = "qemu"`` runs [policy] as the simulator would (guests faked)."""
    from hvmem.backends.qemu import config as config_module
    from hvmem.backends.qemu import launcher, scenario_run

    fake_host.add_guest("web", 4001)
    pid_file = tmp_path / "web.pid"
    pid_file.write_text("4001\n")
    guest = launcher.LaunchedGuest(name="web", qmp=fake_host.spec("web").qmp, pid_file=pid_file,
                                   serial_log=tmp_path / "web.log", memory_mib=256)
    opts = fake_host.options()
    real_options = config_module.BackendOptions

    def fake_options(**kw):
        return real_options(proc_root=opts.proc_root, ksm_root=opts.ksm_root,
                            cgroup_root=opts.cgroup_root, **kw)

    loops: list[ControlLoop] = []

    class Recorded(ControlLoop):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            loops.append(self)

    # What scenario_run uses to launch and control guests, faked.
    monkeypatch.setattr(scenario_run, "require_tools", lambda: None)
    monkeypatch.setattr(scenario_run, "build_image", lambda *a, **k: None)
    monkeypatch.setattr(scenario_run, "launch", lambda *a, **k: [guest])
    monkeypatch.setattr(scenario_run, "wait_for_marker", lambda *a, **k: "HVMEM-READY")
    monkeypatch.setattr(scenario_run, "stop", lambda guests, **k: [])
    monkeypatch.setattr(scenario_run, "BackendOptions", fake_options)
    monkeypatch.setattr(scenario_run, "ControlLoop", Recorded)
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    result = CliRunner().invoke(app, ["run", str(path), "--no-live", "--out",
                                      str(tmp_path / "res")])
    assert result.exit_code == 0, result.output
    (loop,) = loops
    assert loop.policy.params == EsxParams(
        tax_frac=0.0, planner=PlannerParams(balance_period_s=1.0, swap_out_mib_s=5.0))
