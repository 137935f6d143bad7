"""The workload thread's extra work: the next tick's batches drawn early, tallies shared.

Each moves work to the second core and must change no result: a run with
the next tick's batches drawn at the end of each tick leaves the same rows
and events as one drawing every batch in its own tick, across power-ons,
power-offs, phase changes and configuration events; batches taken for a tick
they were not drawn for are refused; and work shared by both threads comes
back in order, as done on one.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import replace

import numpy as np
import pytest

from hvmem import sim_batches
from hvmem.core.rng import RngStreams
from hvmem.errors import InvariantViolation
from hvmem.hardware.frames import MachineMemory
from hvmem.hypervisor.pmap import Backing, Pmap
from hvmem.scenario.loader import parse_scenario
from hvmem.sim import Simulation
from hvmem.sim_batches import SWITCH_INTERVAL_S, NextTick, on_both_threads, tick_batches
from hvmem.sim_rows import SharingTally
from hvmem.units import NS_PER_S
from hvmem.workloads.factory import make_workload
from hvmem.workloads.synthetic import ZipfParams

EVENTFUL = {
    "name": "eventful",
    "duration": "24s",
    "seed": 5,
    "host": {"memory": "384MiB", "profile": "esxi6", "sharing": {"enabled": True}},
    "policy": {"balance_period": "5s"},
    "vm": [
        {"name": "a", "memory": "160MiB",
         "workload": {"kind": "zipf", "region": "128MiB", "refs_per_s": 60_000}},
        {"name": "b", "memory": "160MiB", "power_on": "3s", "power_off": "17s",
         "workload": {"kind": "uniform", "region": "128MiB", "refs_per_s": 60_000,
                      "write_frac": 0.5}},
        {"name": "c", "memory": "160MiB",
         "workload": {"kind": "phases", "region": "128MiB", "loop": True,
                      "base": {"kind": "zipf", "alpha": 0.8, "refs_per_s": 60_000},
                      "phases": [{"duration": "4s", "working_set": "32MiB"},
                                 {"duration": "4s", "working_set": "128MiB"}]}},
        {"name": "d", "memory": "96MiB",
         "workload": {"kind": "hotcold", "region": "80MiB", "refs_per_s": 40_000}},
    ],
    "event": [
        {"at": "6s", "set": {"policy.idle_tax_frac": 0.5}},
        {"at": "9s", "vm": "c", "phase": 1},
        {"at": "11s", "vm": "d", "power": "off"},
        {"at": "14s", "vm": "d", "power": "on"},
        {"at": "19s", "set": {"vm.a.limit": "96MiB"}},
    ],
}


def _rows(result) -> str:
    return json.dumps([list(result.host_rows), list(result.vm_rows), result.events],
                      sort_keys=True)


def test_drawing_the_next_ticks_batches_early_changes_no_row(monkeypatch):
    scenario = parse_scenario(EVENTFUL, "eventful.toml")
    drawn_early = []
    early = Simulation._same_next

    def counted(self, next_ns, tick_ns):
        same = early(self, next_ns, tick_ns)
        drawn_early.append(same)
        return same

    monkeypatch.setattr(Simulation, "_same_next", counted)
    with_early = Simulation(scenario).run()
    # Some ticks draw early and some may not (an event, a power-on or -off next).
    assert any(drawn_early) and not all(drawn_early)
    monkeypatch.setattr(Simulation, "_same_next", lambda self, next_ns, tick_ns: False)
    without = Simulation(scenario).run()
    assert with_early.complete and without.complete
    assert _rows(with_early) == _rows(without)


def test_how_far_the_worker_draws_ahead_changes_no_row(monkeypatch):
    scenario = parse_scenario(EVENTFUL, "eventful.toml")
    runs = []
    for ahead in (1, sim_batches.AHEAD):
        monkeypatch.setattr(sim_batches, "AHEAD", ahead)
        runs.append(Simulation(scenario).run())
    assert all(r.complete for r in runs)
    assert _rows(runs[0]) == _rows(runs[1])


def test_a_run_hands_the_interpreter_lock_over_quickly_and_restores_the_interval():
    steady = {**EVENTFUL, "vm": [EVENTFUL["vm"][0], EVENTFUL["vm"][3]], "event": []}
    scenario = replace(parse_scenario(steady, "steady.toml"), duration_ns=3 * NS_PER_S)
    before = sys.getswitchinterval()
    assert before != SWITCH_INTERVAL_S
    seen = []
    Simulation(scenario).run(on_tick=lambda sim: seen.append(sys.getswitchinterval()))
    assert seen == [SWITCH_INTERVAL_S] * 3
    assert sys.getswitchinterval() == before

    def fail(sim):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        Simulation(scenario).run(on_tick=fail)
    assert sys.getswitchinterval() == before


def test_early_draws_are_taken_only_by_their_tick():
    tick = NS_PER_S
    streams = RngStreams(9)
    config = ZipfParams(region_pages=4096, refs_per_s=20_000)
    early = [make_workload(config, streams.stream(f"w/{i}"), name=f"w{i}") for i in range(6)]
    plain = [make_workload(config, RngStreams(9).stream(f"w/{i}"), name=f"w{i}")
             for i in range(6)]
    ahead = NextTick()
    for k in range(3):
        got = [b for b, _ in tick_batches(early, k * tick, tick, next_tick=ahead,
                                          same_next=True)]
        want = [b for b, _ in tick_batches(plain, k * tick, tick)]
        for g, w in zip(got, want, strict=True):
            assert np.array_equal(g.vpn, w.vpn) and np.array_equal(g.is_write, w.is_write)
    with pytest.raises(InvariantViolation, match="did not come"):
        list(tick_batches(early, 5 * tick, tick, next_tick=ahead))  # drawn for tick 3


def test_work_on_both_threads_comes_back_in_order():
    lanes = set()

    def job(i, lane):
        lanes.add((lane, threading.current_thread().name.startswith("hvmem-workload")))
        return i * i

    assert on_both_threads(200, job) == [i * i for i in range(200)]
    assert lanes <= {(0, False), (1, True)}


def test_tallies_on_both_threads_are_each_vms_own():
    rng = np.random.default_rng(4)
    frames = MachineMemory(256)
    frames.refcount[:] = rng.integers(1, 5, 256)
    frames.content[:] = rng.integers(0, 3, 256).astype(np.uint64)
    pmaps = []
    for n in rng.integers(1, 2000, 24):
        pmap = Pmap(int(n), 256)
        kind = rng.random(int(n))
        shared = np.flatnonzero(kind < 0.4)
        private = np.flatnonzero(kind > 0.7)
        pmap.back(shared, rng.integers(0, 256, shared.size), Backing.SHARED)
        pmap.back(private, rng.integers(0, 256, private.size), Backing.PRIVATE)
        pmaps.append(pmap)
    one = SharingTally()
    assert SharingTally().many(pmaps, frames) == [one(p, frames) for p in pmaps]


class _SlowOnWorker:
    """A workload whose draws take long on the workload thread: the caller draws too."""

    def __init__(self, inner, drawn_on: list) -> None:
        self.inner, self.name, self.drawn_on = inner, inner.name, drawn_on

    def next_batch(self, now_ns, tick_ns):
        on_worker = threading.current_thread().name.startswith("hvmem-workload")
        self.drawn_on.append((self.name, now_ns, on_worker))
        if on_worker:
            threading.Event().wait(0.02)
        return self.inner.next_batch(now_ns, tick_ns)


def test_batches_drawn_by_either_thread_are_each_workloads_own_in_order():
    tick = NS_PER_S
    config = ZipfParams(region_pages=4096, refs_per_s=20_000)
    drawn_on: list = []
    slow = [_SlowOnWorker(make_workload(config, RngStreams(3).stream(f"w/{i}"), name=f"w{i}"),
                          drawn_on) for i in range(12)]
    plain = [make_workload(config, RngStreams(3).stream(f"w/{i}"), name=f"w{i}")
             for i in range(12)]
    ahead = NextTick()
    for k in range(3):
        steps = [lambda b, i=i: (i, len(b)) for i in range(12)]
        got = list(tick_batches(slow, k * tick, tick, steps, next_tick=ahead, same_next=k < 2))
        want = [b for b, _ in tick_batches(plain, k * tick, tick)]
        for i, ((g, step), w) in enumerate(zip(got, want, strict=True)):
            assert np.array_equal(g.vpn, w.vpn) and np.array_equal(g.is_write, w.is_write)
            assert step == (i, len(g))  # each batch's step ran on that batch
    # Both threads drew (the caller while the worker's draws were slow), each draw once.
    assert {on for *_, on in drawn_on} == {True, False}
    assert len(drawn_on) == len({(name, t) for name, t, _ in drawn_on}) == 36


class _Failing:
    name = "failing"

    def next_batch(self, now_ns, tick_ns):
        raise ValueError("no batch")


def test_a_failed_draw_is_raised_at_its_batch_and_the_tick_stops():
    config = ZipfParams(region_pages=4096, refs_per_s=20_000)
    workloads = [make_workload(config, RngStreams(3).stream(f"w/{i}"), name=f"w{i}")
                 for i in range(3)]
    workloads.insert(2, _Failing())
    batches = tick_batches(workloads, 0, NS_PER_S)
    assert len(next(batches)[0]) and len(next(batches)[0])
    with pytest.raises(ValueError, match="no batch"):
        next(batches)
    # The worker is free again: work lent to it after the failed tick is done.
    assert on_both_threads(8, lambda i, lane: i) == list(range(8))
