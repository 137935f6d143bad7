import io

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hvmem.results import read_results, write_results
from hvmem.sim import Simulation
from hvmem.ui.cli import app
from hvmem.ui.replay import (
    SPEEDS,
    ReplayState,
    default_speed,
    parse_keys,
    replay,
    screen,
    ticks_of,
)

TINY = """
name = "tiny"
duration = "6s"
seed = 3
[host]
memory = "320MiB"
profile = "esxi6"
[[vm]]
name = "a"
memory = "192MiB"
workload = { kind = "zipf", region = "176MiB", refs_per_s = 200_000 }
[[vm]]
name = "b"
memory = "192MiB"
workload = { kind = "uniform", region = "176MiB", refs_per_s = 200_000 }
"""


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    from hvmem.scenario.loader import load_scenario

    path = tmp_path_factory.mktemp("replay") / "tiny.toml"
    path.write_text(TINY)
    return write_results(Simulation(load_scenario(path)).run(), path.parent / "res")


def test_ticks_pair_each_host_row_with_its_vms(results_dir):
    res = read_results(results_dir)
    ticks = ticks_of(res.host.to_pylist(), res.vms.to_pylist())
    assert len(ticks) == 6
    assert all([r["vm"] for r in rows] == ["a", "b"] for _, rows in ticks)
    assert all(r["time_s"] == host["time_s"] for host, rows in ticks for r in rows)


def test_keys_pause_step_change_speed_toggle_columns_and_quit():
    state = ReplayState(n_ticks=10, tick_s=1.0, speed=2.0)
    state.advance(1.0)
    assert state.index == 2 and state.playing
    state.press(" ")
    state.advance(5.0)
    assert state.index == 2 and not state.playing
    state.press("right"), state.press("right"), state.press("left")
    assert state.index == 3
    state.press("left"), state.press("left"), state.press("left"), state.press("left")
    assert state.index == 0  # not before the first tick
    state.press("+")
    assert state.speed == SPEEDS[SPEEDS.index(2.0) + 1]
    state.press("-"), state.press("-")
    assert state.speed == SPEEDS[SPEEDS.index(2.0) - 1]
    for _ in SPEEDS:
        state.press("-")
    assert state.speed == SPEEDS[0]
    state.press("C", shown=frozenset("ACD"))
    assert state.fields == {"A", "D"}
    state.press("b")
    assert state.fields == {"A", "B", "D"}
    state.press("x")  # not a key of the replay: nothing happens
    assert state.fields == {"A", "B", "D"} and not state.done
    state.press("q")
    assert state.done


def test_play_stops_on_the_last_tick_and_space_plays_again():
    state = ReplayState(n_ticks=4, tick_s=0.5, speed=1.0)
    state.advance(0.3), state.advance(0.3)
    assert state.index == 1  # 0.6 s of play is one tick of 0.5 s, with 0.1 s owed
    state.advance(100.0)
    assert state.index == 3 and not state.playing
    state.press(" ")
    assert state.index == 0 and state.playing


def test_arrow_keys_are_decoded_from_their_escape_sequences():
    assert parse_keys("\x1b[D\x1b[C +-q") == ["left", "right", " ", "+", "-", "q"]
    assert parse_keys("\x1bOC\x1b[A") == ["right"]  # up is not a key of the replay
    assert parse_keys("") == []


def test_replay_loop_follows_scripted_keys(results_dir):
    res = read_results(results_dir)
    ticks = ticks_of(res.host.to_pylist(), res.vms.to_pylist())
    script = iter([[], ["right"], [" "], ["right", "right"], ["F"], ["q"]])
    now = iter(float(t) for t in range(100))
    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None, force_terminal=True)
    state = ReplayState(len(ticks), 1.0, speed=1.0)
    replay(console, ticks, "tiny  replay", state, keys=lambda timeout_s: next(script),
           clock=lambda: next(now))
    assert state.done
    # 1 s played (tick 1), right (2, paused), space (plays on: 3), right twice (5).
    assert state.index == 5 and not state.playing
    assert "F" not in state.fields and "A" in state.fields
    text = out.getvalue()
    assert "hvmem  tiny  replay" in text and "paused" in text and "q quit" in text


def test_screen_shows_the_states_tick(results_dir):
    res = read_results(results_dir)
    ticks = ticks_of(res.host.to_pylist(), res.vms.to_pylist())
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(
        screen(ticks, ReplayState(len(ticks), 1.0, index=2), "tiny", 80))
    assert "3 s of 6" in out.getvalue()


def test_default_speed_replays_a_run_in_about_half_a_minute():
    assert default_speed(6) == SPEEDS[0]
    assert default_speed(480) == 20.0
    assert default_speed(10**7) == SPEEDS[-1]


def test_top_without_a_terminal_prints_one_screen(results_dir):
    runner = CliRunner()
    out = runner.invoke(app, ["top", str(results_dir)])
    assert out.exit_code == 0, out.output
    assert "hvmem  tiny  replay   6 s of 6" in out.output and "MEMSZ" in out.output
    out = runner.invoke(app, ["top", str(results_dir), "--at", "2", "--fields", "memctl"])
    assert out.exit_code == 0 and "3 s of 6" in out.output
    header = next(line for line in out.output.splitlines() if line.startswith("NAME"))
    assert header.split() == ["NAME", "MCTLSZ", "MCTLTGT", "MCTLMAX"]


@pytest.mark.parametrize("args, message", [
    (["--fields", "Z"], "--fields 'Z'"),
    (["--at", "99"], "--at 99.0: outside the run"),
    (["--speed", "0"], "--speed 0.0"),
])
def test_top_refuses_bad_options_in_one_line(results_dir, args, message):
    out = CliRunner().invoke(app, ["top", str(results_dir), *args])
    assert out.exit_code == 1 and message in out.output and "Traceback" not in out.output


def test_top_of_a_directory_that_is_not_results_is_one_line(tmp_path):
    out = CliRunner().invoke(app, ["top", str(tmp_path)])
    assert out.exit_code == 1 and "not a results directory" in out.output
