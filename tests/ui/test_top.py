import io

from rich.console import Console

from hvmem.sim import Simulation
from hvmem.ui.top import COLUMNS, LiveTop, last_tick, render_top

#: Two VMs overcommitting a small host; the tests run it for a few seconds.
TINY = """
name = "tiny"
duration = "{duration}"
seed = 3
[host]
memory = "320MiB"
profile = "esxi6"
[[vm]]
name = "a"
memory = "192MiB"
workload = {{ kind = "zipf", region = "176MiB", refs_per_s = 200_000 }}
[[vm]]
name = "b"
memory = "192MiB"
workload = {{ kind = "uniform", region = "176MiB", refs_per_s = 200_000 }}
"""


def test_render_shows_host_line_and_every_vm_with_esxtop_columns(make_scenario):
    result = Simulation(make_scenario(TINY.format(duration="6s"), "tiny")).run()
    host, rows = last_tick(result.host_rows, result.vm_rows)
    assert [r["vm"] for r in rows] == ["a", "b"]
    out = io.StringIO()
    Console(file=out, width=220, color_system=None).print(render_top(host, rows, "tiny", 6))
    text = out.getvalue()
    assert "PMEM  /MB:" in text and f"state {host['state']}" in text
    for column in COLUMNS:
        assert column in text
    assert "\na " in text or " a " in text

def test_live_top_shows_the_newest_tick_with_the_runs_status(make_scenario):
    result = Simulation(make_scenario(TINY.format(duration="3s"), "tiny")).run()
    out = io.StringIO()
    console = Console(file=out, width=220, color_system=None, force_terminal=True)
    with LiveTop(console, "tiny", status=lambda row: f"   at {row['time_s']:.0f} s") as view:
        view.update(result.host_rows[:1], result.vm_rows[:2])
        view.update(result.host_rows, result.vm_rows)
    text = out.getvalue()
    assert "hvmem  tiny   at 2 s" in text and "PMEM  /MB:" in text


def test_live_top_off_shows_nothing(make_scenario):
    result = Simulation(make_scenario(TINY.format(duration="2s"), "tiny")).run()
    out = io.StringIO()
    with LiveTop(Console(file=out, force_terminal=True), "tiny", enabled=False) as view:
        view.update(result.host_rows, result.vm_rows)
    assert out.getvalue() == ""
