"""Running a sweep's runs: one function per run, on a process pool or a Dask cluster.

A run is :func:`simulate`: the simulation of one scenario, whose error (a
bad trace line, the host out of memory, a bug) is caught and returned with
what was simulated, marked incomplete, so a failed run is recorded and the
others go on. The function is the same wherever it runs: in the process of
``hvmem compare``, in a worker of a local process pool (``--workers N``, the
default), or on a Dask worker (``--dask local``: a ``LocalCluster`` of this
machine's cores; ``--dask tcp://HOST:PORT``: a scheduler whose workers may be
other machines). Each worker sends the run's results back (rows, events,
summary: a few MiB for an hour of 32 VMs), and only the sweep's own process
writes them, so the workers need hvmem installed and the scenario's trace files
at the same paths, but no shared filesystem.

A run may be given a wall-clock budget (``--run-timeout``). Its ticks check
the budget as they end, so a run too slow for it stops at a tick's end and is
recorded with what it simulated; a tick that never ends (a policy that loops)
gets an exception raised into its thread a few seconds after the budget, which
stops any Python code. Only code compiled by Numba cannot be stopped that way:
a worker looping in a kernel holds its slot until the sweep is stopped.

Runners ignore SIGINT and SIGTERM in their workers: a Ctrl-C at a terminal
reaches every process of the group, and it is the sweep's process that
decides (it stops the workers and keeps the completed runs). Each runner's
:meth:`~Runner.poll` returns the runs finished since it was last called, so the
sweep's loop stays in its own thread, where signals land.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from hvmem.errors import HvmemError
from hvmem.results import RunResult
from hvmem.scenario.schema import Scenario

__all__ = ["DaskRunner", "Finished", "PoolRunner", "RunTimedOut", "Runner", "error_text",
           "open_runner", "simulate"]

#: Seconds past its budget before a run whose tick never ends is stopped inside the tick.
STUCK_GRACE_S = 5.0


@dataclass
class Finished:
    """A run that ended, as it comes back from its worker.

    Attributes:
        index: the run's place in the sweep.
        result: what it simulated (None if it failed before its first tick).
        error: the one line of the error that ended it, or None.
        wall_s: wall-clock seconds it took in its worker.
    """

    index: int
    result: RunResult | None
    error: str | None
    wall_s: float


def error_text(err: BaseException) -> str:
    """An error as the one line a run records: hvmem's and the OS's as they print, others typed."""
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename is not None else ""
        return f"{where}{err.strerror}"
    if isinstance(err, HvmemError):
        return str(err)
    return f"{type(err).__name__}: {err}".splitlines()[0]


class RunTimedOut(HvmemError):
    """A run went past its wall-clock budget (``--run-timeout``)."""

    #: The message for an instance raised into a stuck tick, which gets no arguments.
    pending = ""


class _Watchdog:
    """Stops the thread that started it when a run's tick outlasts the budget by the grace.

    The exception is raised into the thread (``PyThreadState_SetAsyncExc``) only
    while :meth:`armed`; leaving the block disarms it under the same lock, so it
    cannot land once the run is over.
    """

    def __init__(self, after_s: float, message: Callable[[], str]) -> None:
        self._thread_id = threading.get_ident()
        self._lock = threading.Lock()
        self._armed = False
        self._message = message
        self._timer = threading.Timer(after_s, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:
            if self._armed:
                RunTimedOut.pending = self._message()
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread_id),
                                                           ctypes.py_object(RunTimedOut))

    @contextlib.contextmanager
    def armed(self):
        self._armed = True
        self._timer.start()
        try:
            yield
        finally:
            with self._lock:
                self._armed = False
            self._timer.cancel()


def simulate(index: int, scenario: Scenario, on_tick: Callable | None = None,
             timeout_s: float | None = None) -> Finished:
    """Run ``scenario`` to its end; an error ends it incomplete, with the error's line.

    ``timeout_s`` is the run's wall-clock budget: past it the run stops at the
    end of a tick, or inside one that is still going :data:`STUCK_GRACE_S` later,
    and is recorded as failed with what it simulated.

    A ``KeyboardInterrupt`` (a signal in the process of ``hvmem compare``) is not
    an error of the run: the simulation records it itself and it goes on up.
    """
    from hvmem.sim import Simulation
    from hvmem.units import format_time

    start = time.perf_counter()
    sim = None
    error = None

    def timed_out() -> str:
        done = "" if sim is None else (f", after {sim.result.ticks_done * scenario.tick_ns / 1e9:g}"
                                       f" of {scenario.duration_ns / 1e9:g} simulated s")
        return (f"run timed out: over its budget of {format_time(round(timeout_s * 1e9))} of "
                f"wall time (--run-timeout){done}")

    def each_tick(sim_: Simulation) -> None:
        if on_tick is not None:
            on_tick(sim_)
        if time.perf_counter() - start > timeout_s:
            raise RunTimedOut(timed_out())

    watchdog = (contextlib.nullcontext() if timeout_s is None else
                _Watchdog(timeout_s + STUCK_GRACE_S, timed_out).armed())
    try:
        with watchdog:
            sim = Simulation(scenario)
            sim.run(on_tick=on_tick if timeout_s is None else each_tick)
    except RunTimedOut as err:  # raised as a class into a stuck tick: its message is pending
        error = str(err) or RunTimedOut.pending
    except Exception as err:  # a failed run is recorded, whatever failed
        error = error_text(err)
    result = sim.result if sim is not None else None
    if error is not None and result is not None and result.stop_reason != error:
        result.complete = False
        result.stop_reason = error
        result.events.append({"time_s": sim.now_ns / 10**9, "event": "error",  # type: ignore
                              "vm": "", "detail": f"{error}; results are partial"})
    return Finished(index, result, error, time.perf_counter() - start)


def _ignore_stops() -> None:
    """A worker leaves SIGINT and SIGTERM to the sweep's process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Runner:
    """Where a sweep's runs go: :meth:`submit` them, :meth:`poll` the finished, :meth:`close`."""

    #: A line saying where the runs go (for the sweep's first lines).
    where = ""

    def __init__(self) -> None:
        self._pending: dict[Any, int] = {}
        #: Each run's wall-clock budget in seconds (None: none).
        self.run_timeout_s: float | None = None

    def submit(self, index: int, scenario: Scenario) -> None:
        """Start run ``index`` (its scenario) when a worker is free."""
        self._pending[self._submit(index, scenario)] = index

    def _submit(self, index: int, scenario: Scenario) -> Any:
        raise NotImplementedError

    @property
    def pending(self) -> int:
        """Runs submitted and not yet returned by :meth:`poll`."""
        return len(self._pending)

    def poll(self, timeout_s: float = 0.2) -> list[Finished]:
        """The runs finished since the last call; waits up to ``timeout_s`` for one."""
        deadline = time.monotonic() + timeout_s
        while True:
            done = [f for f in self._pending if f.done()]
            if done or not self._pending or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        finished = []
        for future in done:
            index = self._pending.pop(future)
            try:
                finished.append(future.result())
            except BaseException as err:  # the worker died, or the cluster lost it
                finished.append(Finished(index, None, f"worker lost: {error_text(err)}", 0.0))
        return finished

    def close(self) -> None:
        """Stop the workers, the runs still going too (they are not kept)."""


class PoolRunner(Runner):
    """A pool of ``workers`` processes on this machine (``--workers N``)."""

    def __init__(self, workers: int) -> None:
        super().__init__()
        # forkserver: workers start from a clean process, not from a copy of one whose
        # threads (a progress bar's) may hold locks; hvmem is imported once, in the server.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["hvmem.sweep.execute", "hvmem.sim"])
        self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_ignore_stops)
        self.where = f"{workers} worker process{'es' if workers != 1 else ''}"

    def _submit(self, index: int, scenario: Scenario) -> Future:
        return self._pool.submit(simulate, index, scenario, None, self.run_timeout_s)

    def close(self) -> None:
        """Cancel what has not started and end the workers (a running run is not kept)."""
        processes = list((getattr(self._pool, "_processes", None) or {}).values())
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(OSError, ValueError):
                process.kill()
        for process in processes:
            with contextlib.suppress(OSError, ValueError):
                process.join(5)


class DaskRunner(Runner):
    """A Dask cluster: ``"local"`` starts a LocalCluster, ``tcp://HOST:PORT`` joins a scheduler.

    Args:
        address: ``"local"`` or a scheduler's address.
        workers: the LocalCluster's worker processes (one thread each; a run is one
            Python thread's work).
    """

    def __init__(self, address: str, workers: int) -> None:
        super().__init__()
        import logging

        from dask.distributed import Client, LocalCluster

        self._cluster = None
        if address == "local":
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                         dashboard_address=":0", silence_logs=logging.ERROR)
            self._client = Client(self._cluster)
            self.where = f"a Dask LocalCluster of {workers} worker{'s' if workers != 1 else ''}"
        else:
            self._client = Client(address, timeout="10s")
            self.where = f"the Dask scheduler at {address}"
        self.dashboard = self._client.dashboard_link

    def _submit(self, index: int, scenario: Scenario) -> Any:
        return self._client.submit(simulate, index, scenario, None, self.run_timeout_s,
                                   pure=False,
                                   key=f"hvmem-run-{index}-{os.getpid()}-{time.time_ns()}")

    def close(self) -> None:
        """Cancel the runs still going, then leave the scheduler (and stop a LocalCluster)."""
        with contextlib.suppress(Exception):
            self._client.cancel(list(self._pending))
        with contextlib.suppress(Exception):
            self._client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def open_runner(dask: str | None, workers: int, run_timeout_s: float | None = None) -> Runner:
    """The runner a sweep's flags ask for (``--dask``, ``--workers``, ``--run-timeout``)."""
    runner = PoolRunner(workers) if dask is None else DaskRunner(dask, workers)
    runner.run_timeout_s = run_timeout_s
    return runner

