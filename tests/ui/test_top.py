import io

import pytest
from rich.console import Console

from hvmem.errors import ConfigError
from hvmem.sim import Simulation
from hvmem.ui.top import (
    COLUMNS,
    FIELD_GROUPS,
    GROUP_LETTERS,
    LiveTop,
    fit_fields,
    last_tick,
    parse_fields,
    render_top,
)

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


def _text(renderable, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


@pytest.mark.parametrize("width", [80, 120])
def test_headers_are_whole_at_80_and_120_columns(make_scenario, width):
    result = Simulation(make_scenario(TINY.format(duration="3s"), "tiny")).run()
    host, rows = last_tick(result.host_rows, result.vm_rows)
    rows = [dict(row, vm=f"{row['vm']}-web-frontend") for row in rows]  # a long NAME too
    text = _text(render_top(host, rows, "tiny  policy esx", 3, width=width), width)
    assert "\u2026" not in text and "..." not in text
    assert all(len(line) <= width for line in text.splitlines())
    header = next(line for line in text.splitlines() if line.startswith("NAME"))
    shown = fit_fields(width, rows)
    assert "A" in shown and "C" in shown  # sizes and the balloon, whatever the width
    assert width == 80 or {"A", "C", "D", "G"} <= shown  # swapping and throughput too
    for group in FIELD_GROUPS:
        for column in group.columns:
            assert (f" {column} " in f" {header} ") == (group.letter in shown), column


def test_wider_terminals_show_more_groups_and_all_of_them_fit_at_200(make_scenario):
    result = Simulation(make_scenario(TINY.format(duration="2s"), "tiny")).run()
    host, rows = last_tick(result.host_rows, result.vm_rows)
    assert fit_fields(80, rows) < fit_fields(120, rows) < fit_fields(200, rows)
    assert fit_fields(200, rows) == set(GROUP_LETTERS)


def test_fields_pick_groups_by_letter_or_name():
    assert parse_fields("ACD") == {"A", "C", "D"}
    assert parse_fields("size, memctl,SWAP") == {"A", "C", "D"}
    assert parse_fields("g") == {"G"}
    with pytest.raises(ConfigError, match="--fields 'AX'.*no field group"):
        parse_fields("AX")
    with pytest.raises(ConfigError, match="--fields ','"):
        parse_fields(",")


def test_chosen_fields_show_only_their_columns(make_scenario):
    result = Simulation(make_scenario(TINY.format(duration="2s"), "tiny")).run()
    host, rows = last_tick(result.host_rows, result.vm_rows)
    text = _text(render_top(host, rows, "tiny", 2, fields={"C", "G"}), 200)
    header = next(line for line in text.splitlines() if line.startswith("NAME"))
    assert header.split() == ["NAME", "MCTLSZ", "MCTLTGT", "MCTLMAX", "THRU"]
    for line in ("PMEM  /MB:", "VMKMEM/MB:", "PSHARE/MB:", "SWAP  /MB:", "ZIP   /MB:",
                 "MEMCTL/MB:"):
        assert line in text


def test_chosen_fields_wider_than_the_screen_run_off_its_edge(make_scenario):
    result = Simulation(make_scenario(TINY.format(duration="2s"), "tiny")).run()
    host, rows = last_tick(result.host_rows, result.vm_rows)
    text = _text(render_top(host, rows, "tiny", 2, fields=GROUP_LETTERS, width=80), 80)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("NAME"))
    assert len(header) == 80 and header.startswith("NAME  MEMSZ  GRANT  SZTGT  TCHD  ACTV")
    assert "\u2026" not in text and all(len(line) <= 80 for line in lines)
    assert any(line.startswith("a ") for line in lines)


def test_live_top_fits_the_terminal(make_scenario):
    result = Simulation(make_scenario(TINY.format(duration="2s"), "tiny")).run()
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, force_terminal=True)
    with LiveTop(console, "tiny  policy esx", 2) as view:
        view.update(result.host_rows, result.vm_rows)
    text = out.getvalue()
    assert "NAME  MEMSZ  GRANT  SZTGT" in text and "\u2026" not in text
    assert "CACHEUSD" not in text  # the compression group does not fit 80 columns
