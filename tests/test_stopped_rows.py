"""A run stopped by a signal keeps the rows of whole ticks only.

SIGTERM (``timeout``) and friends raise inside whatever the run is doing, which can
be the middle of a tick's rows: a host row appended and one of three VMs' rows. The
results then had a tick that ``ticks`` did not count, one VM a row longer than the
others (``vms.parquet`` 259 rows for 86 ticks of three VMs).
"""

from __future__ import annotations

import dis
import inspect
import sys
from dataclasses import replace

import pytest

from hvmem.core.rows import RowLog
from hvmem.scenario.loader import load_scenario, parse_scenario
from hvmem.scenarios import builtin_scenario_path
from hvmem.sim import Simulation
from hvmem.units import NS_PER_S

TWO_VMS = {
    "name": "two", "duration": "20s", "seed": 3,
    "host": {"memory": "320MiB", "profile": "esxi6"},
    "vm": [
        {"name": "a", "memory": "192MiB",
         "workload": {"kind": "zipf", "region": "176MiB", "refs_per_s": 50_000}},
        {"name": "b", "memory": "192MiB",
         "workload": {"kind": "uniform", "region": "176MiB", "refs_per_s": 50_000}},
    ],
}


SIGTERM = KeyboardInterrupt("stopped by SIGTERM")  # as the command line raises it


def _stop_after(log: RowLog, method: str, calls: int, error: BaseException = SIGTERM) -> None:
    """``log.method`` does its work, and its ``calls``-th call then raises ``error``."""
    real = getattr(log, method)
    count = 0

    def wrapped(*args, **kwargs):
        nonlocal count
        real(*args, **kwargs)
        count += 1
        if count == calls:
            raise error

    setattr(log, method, wrapped)


def _assert_whole_ticks(result, n_vms: int) -> None:
    assert not result.complete and result.stop_reason == "stopped by SIGTERM"
    assert result.ticks_done > 0
    assert len(result.host_rows) == result.ticks_done
    assert len(result.vm_rows) == result.ticks_done * n_vms
    per_vm = {name: s["ticks"] for name, s in result.summary()["vms"].items()}
    assert set(per_vm.values()) == {result.ticks_done}, per_vm
    for values in result.vm_rows.columns().values():
        assert len(values) == len(result.vm_rows)


@pytest.mark.parametrize(("log", "method", "calls"), [
    ("vm_rows", "append", 2 * 7 + 1),  # the first VM's row of the 8th tick
    ("host_rows", "append", 8),  # the 8th tick's host row, before any VM's
])
def test_page_fidelity_run_stopped_inside_a_ticks_rows(log, method, calls):
    sim = Simulation(parse_scenario(TWO_VMS, "two.toml"))
    _stop_after(getattr(sim.result, log), method, calls)
    result = sim.run()
    _assert_whole_ticks(result, 2)
    assert result.ticks_done == 7


def test_aggregate_run_stopped_inside_a_ticks_rows():
    sc = load_scenario(builtin_scenario_path("demo"))
    sc = replace(sc, fidelity="aggregate", duration_ns=30 * NS_PER_S)
    sim = Simulation(sc)
    _stop_after(sim.result.host_rows, "append", 12)  # its VMs' rows not yet buffered
    result = sim.run()
    _assert_whole_ticks(result, 3)
    assert result.ticks_done == 11


def test_an_error_mid_tick_leaves_whole_ticks_to_its_caller():
    """A run that fails inside a tick's rows is written incomplete: whole ticks only."""
    sim = Simulation(parse_scenario(TWO_VMS, "two.toml"))
    _stop_after(sim.result.vm_rows, "append", 2 * 4 + 1, RuntimeError("failed mid-tick"))
    with pytest.raises(RuntimeError):
        sim.run()
    assert sim.result.ticks_done == 4
    assert len(sim.result.host_rows) == 4 and len(sim.result.vm_rows) == 8
    sc = replace(load_scenario(builtin_scenario_path("demo")), fidelity="aggregate",
                 duration_ns=30 * NS_PER_S)
    sim = Simulation(sc)
    _stop_after(sim.result.host_rows, "append", 6, RuntimeError("failed mid-tick"))
    with pytest.raises(RuntimeError):
        sim.run()
    assert sim.result.ticks_done == 5
    assert len(sim.result.host_rows) == 5 and len(sim.result.vm_rows) == 15


def test_truncate_cuts_every_column_even_after_a_torn_append():
    log = RowLog([{"t": 0.0, "vm": "a"}, {"t": 1.0, "vm": "b"}])

    class Torn(dict):  # interrupted between its columns, as a signal may
        def items(self):
            for key, value in super().items():
                if key == "vm":
                    raise KeyboardInterrupt
                yield key, value

    with pytest.raises(KeyboardInterrupt):
        log.append(Torn(t=2.0, vm="c"))  # "t" got its value, "vm" did not
    assert len(log.columns()["t"]) == 3 and len(log) == 2
    log.truncate(len(log))
    assert list(log) == [{"t": 0.0, "vm": "a"}, {"t": 1.0, "vm": "b"}]
    log.truncate(1)
    assert list(log) == [{"t": 0.0, "vm": "a"}]
    log.append({"t": 5.0, "vm": "z"})
    assert list(log)[-1] == {"t": 5.0, "vm": "z"}


def _loop_lines(run) -> list[int]:
    """The line numbers of ``run``'s tick loop: from its ``for`` to ``complete = True``."""
    lines, first = inspect.getsourcelines(run)
    start = next(i for i, text in enumerate(lines) if text.lstrip().startswith("for "))
    end = next(i for i, text in enumerate(lines) if "self.result.complete = True" in text)
    starts = {line for _, line in dis.findlinestarts(run.__code__) if line is not None}
    return sorted(first + i for i in range(start, end) if first + i in starts)


def _stop_at_line(code, line: int, hits: int):
    """A tracer that raises SIGTERM the ``hits``-th time ``code`` is about to run ``line``,
    as a signal handler raises between two statements."""
    count = 0

    def local(frame, event, _arg):
        nonlocal count
        if event == "line" and frame.f_lineno == line:
            count += 1
            if count == hits:
                raise SIGTERM
        return local

    def tracer(frame, event, _arg):
        return local if frame.f_code is code else None

    return tracer


@pytest.mark.parametrize("fidelity", ["page", "aggregate"])
def test_a_signal_between_any_two_statements_of_the_tick_loop_keeps_whole_ticks(fidelity):
    """Between storing the tick count and the rows' lengths, a signal once left a count one
    tick ahead of the rows kept (1,855 ticks, 1,854 host rows)."""
    sc = replace(parse_scenario(TWO_VMS, "two.toml"), fidelity=fidelity)
    run = type(Simulation(sc)).run
    lines = _loop_lines(run)
    assert len(lines) >= 4
    for line in lines:
        sim = Simulation(sc)
        sys.settrace(_stop_at_line(run.__code__, line, 3))
        try:
            result = sim.run(lambda _sim: None)  # a watcher: every line of the loop runs
        finally:
            sys.settrace(None)
        _assert_whole_ticks(result, 2)
        assert result.ticks_done in (2, 3), line
