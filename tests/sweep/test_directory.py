"""A sweep's loop and rows, with a runner that needs no workers."""

from __future__ import annotations

import signal
from concurrent.futures import Future

import pytest

from hvmem.sweep.directory import SweepState, nothing_held, run_sweep
from hvmem.sweep.execute import Finished, Runner
from hvmem.sweep.experiment import load_experiment
from hvmem.ui.exits import Stopped, StopSignals

TINY = """
duration = "1s"
[host]
memory = "320MiB"
[[vm]]
name = "a"
memory = "64MiB"
"""


class Failing(Runner):
    """Every run fails at once."""

    def _submit(self, index, scenario):
        future = Future()
        future.set_result(Finished(index, None, f"boom {index}", 0.5))
        return future


def experiment(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "exp.toml").write_text('scenario = "tiny.toml"\nseeds = 2\n[grid]\n'
                                       '"vm.a.shares" = ["high", 500]\n')
    return load_experiment(tmp_path / "exp.toml")


def test_failed_runs_are_rows_with_their_error_and_mixed_values_as_text(tmp_path):
    exp = experiment(tmp_path)
    state = SweepState(exp)
    run_sweep(exp, tmp_path, state, [0, 1, 2, 3], Failing(), held=nothing_held)
    table = state.table().to_pydict()
    assert table["error"] == ["boom 0", "boom 1", "boom 2", "boom 3"]
    assert table["complete"] == [False] * 4 and table["seed"] == [1, 2, 1, 2]
    assert table["vm.a.shares"] == ["high", "high", "500", "500"]  # one type per column
    assert state.failed == 4 and state.complete == 0


def test_a_signal_that_came_while_held_stops_the_loop_at_the_next_poll(tmp_path):
    exp = experiment(tmp_path)
    state = SweepState(exp)
    signals = StopSignals()
    signals.received = signal.SIGTERM  # remembered while a run's files were written
    with pytest.raises(Stopped):
        run_sweep(exp, tmp_path, state, [0, 1], Failing(), held=signals.held,
                  check=signals.check)
    assert state.errors == [None] * 4
