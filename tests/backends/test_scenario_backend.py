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
