import pytest
from typer.testing import CliRunner

from hvmem.errors import ConfigError
from hvmem.scenario.loader import dump_scenario, load_scenario, parse_scenario
from hvmem.scenario.schema import BackendConfig
from hvmem.ui.cli import app

SCENARIO = """
name = "qemu-small"
duration = "12s"
[host]
memory = "600MiB"
[policy]
balance_period = "3s"
[backend]
kind = "qemu"
shared = "32MiB"
private = "8MiB"
touch = "4s"
[[vm]]
name = "web"
memory = "256MiB"
"""


def test_backend_table_is_read_and_round_trips(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    s = load_scenario(path)
    assert s.backend == BackendConfig(kind="qemu", shared_bytes=32 << 20, private_bytes=8 << 20,
                                      touch_ns=4 * 10**9)
    doc = dump_scenario(s)
    assert doc["backend"]["kind"] == "qemu" and doc["backend"]["touch"] == "4s"
    assert parse_scenario(doc) == s
    plain = parse_scenario({k: v for k, v in doc.items() if k != "backend"})
    assert plain.backend.kind == "simulated" and "backend" not in dump_scenario(plain)


@pytest.mark.parametrize("table, message", [
    ('kind = "xen"', "backend.kind: expected 'simulated' or 'qemu', found 'xen'"),
    ('touch = "1.5s"', "backend.touch: expected whole seconds"),
    ('shared = "lots"', "backend.shared"),
    ('colour = "red"', "backend.colour: unknown field"),
])
def test_backend_errors_name_the_field(tmp_path, table, message):
    path = tmp_path / "s.toml"
    path.write_text(f'duration = "4s"\n[host]\nmemory = "1GiB"\n[backend]\n{table}\n'
                    '[[vm]]\nname = "a"\nmemory = "64MiB"\n')
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_scenario(path)


def test_qemu_scenario_refuses_late_power_on(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO + 'power_on = "5s"\n')
    result = CliRunner().invoke(app, ["run", str(path), "--no-live"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "hvmem: error: qemu-small: vm[0] (web): the qemu backend runs every guest for the "
        "whole scenario; leave power_on and power_off out"]


def test_qemu_scenario_results_are_checked_first_and_kept_however_the_run_ends(tmp_path,
                                                                              monkeypatch):
    """``hvmem run`` of a qemu scenario: --out refused before any guest starts; a run that
    a signal or an error ended is written, incomplete, and the exit says which."""
    from hvmem.backends.qemu import scenario_run
    from hvmem.errors import BackendError
    from hvmem.results import RunResult, read_results

    path = tmp_path / "s.toml"
    path.write_text(SCENARIO)
    ends = []

    def fake_run(scenario, policy=None, on_tick=None):
        reason, error = ends.pop(0)
        return scenario_run.ScenarioRun(RunResult(scenario, complete=True, ticks_done=4),
                                        "esx", reason, [], error)

    monkeypatch.setattr(scenario_run, "run_scenario", fake_run)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "a.txt").write_text("a")
    refused = CliRunner().invoke(app, ["run", str(path), "--no-live", "--out", str(mine)])
    assert refused.exit_code == 1 and "not an hvmem results directory" in refused.output
    out = tmp_path / "r"
    ends.extend([("stopped by SIGTERM", None),
                 ("stopped", BackendError("web: guest exited")),
                 ("duration reached", None)])
    stopped = CliRunner().invoke(app, ["run", str(path), "--no-live", "--out", str(out)])
    assert stopped.exit_code == 143, stopped.output
    assert read_results(out).summary["stop_reason"] == "stopped by SIGTERM"
    failed = CliRunner().invoke(app, ["run", str(path), "--no-live", "--out", str(out),
                                      "--force"])
    assert failed.exit_code == 1 and failed.stderr.strip() == "hvmem: error: web: guest exited"
    back = read_results(out)
    assert not back.complete and back.summary["stop_reason"] == "web: guest exited"
    done = CliRunner().invoke(app, ["run", str(path), "--no-live", "--out", str(out),
                                    "--force"])
    assert done.exit_code == 0, done.output
    assert read_results(out).complete
