"""Each tick's workload batches, drawn ahead on a worker thread while the main thread serves them.

A workload depends on nothing but its own state and random stream, so drawing
VM ``i + 1``'s batch while VM ``i``'s is served changes no result; the draws run
in GIL-free kernels, so on a second core they overlap the serving. One worker
thread, made on first use and kept for the process, draws in VM order, at most
AHEAD batches ahead of the one being served: a batch is megabytes (a busy
VM's 100 000 pages, with their references, writes and tokens), and a tick's
batches all drawn at once would hold them all (tens of VMs) in memory, where
a few suffice to keep both cores busy.

Where the draws outweigh the serving (VMs whose pages are all resident), the
main thread would wait for the worker; instead, when the batch it needs is
still being drawn, it draws the next batch nobody has taken (:class:`_Jobs`),
so both cores draw and neither idles.

Once a tick's batches are drawn the worker has nothing to do until the next
tick. It draws the next tick's first batches then (:class:`NextTick`), when
the caller knows that tick runs the same workloads; and
:func:`on_both_threads` lends it to the main thread for work that splits
into independent items (each VM's sharing tally, ``sim_rows.py``).

The worker may also take the first steps of serving each batch that touch
nothing but its own VM's guest (``guest/access.py``, "Walking ahead"): the
walk of its page table, its stamps and dirty bits. They depend on nothing
the VMs served before it change, so they too run while those are served.

Both threads run Python between their kernels, and only one at a time holds
the interpreter lock; the main thread, which bounds the tick, should not wait
for it long. While a run goes on the switch interval is a tenth of Python's
(:func:`main_thread_turns`), so a thread waiting for the lock gets it within
half a millisecond.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from hvmem.errors import InvariantViolation
from hvmem.workloads.base import AccessBatch, Workload

#: Batches the worker thread draws (and walks) ahead of the one the main thread
#: serves. Enough that the worker banks the draws of the cheap VMs that follow
#: a long serve (one faulting and reclaiming): at 4, over bench-32vm's simulated
#: 1200-1320 s the worker spent 43 % of its time waiting at this bound while the
#: main thread drew and walked 10 % of its own time; yet few, as each banked
#: batch is megabytes (a busy VM's 100 000 pages, their references, writes and
#: tokens, and its walk).
AHEAD = 8
#: The interpreter's thread switch interval while batches are drawn and served
#: (:func:`main_thread_turns`), in seconds; Python's default is 5 ms.
SWITCH_INTERVAL_S = 0.0005
#: The thread that draws workload batches while the main thread serves them.
_workload_thread: ThreadPoolExecutor | None = None


#: What the worker does with a VM's batch once drawn (None: nothing).
Then = Callable[[AccessBatch], Any] | None
T = TypeVar("T")


def _worker() -> ThreadPoolExecutor:
    """The workload thread, made on first use."""
    global _workload_thread
    if _workload_thread is None:
        _workload_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hvmem-workload")
    return _workload_thread


@contextmanager
def main_thread_turns() -> Iterator[None]:
    """Hand the interpreter lock over within SWITCH_INTERVAL_S while a run's ticks go on.

    The main thread serves the VMs in order and so bounds the tick; the worker
    runs Python between its GIL-free kernels (drawing, walking ahead). A thread
    waiting for the lock gets it when the holder enters such a kernel, or once
    the switch interval has passed: at Python's 5 ms, the main thread slept
    2.1 s of its 9.5 s of CPU over bench-32vm's first 60 s waiting for the
    lock, and 3.9 of 12.5 s over 60-200 s; at 0.5 ms, 0.8 and 1.3 s, for the
    same CPU (both cores shared with other work, which preempts the holder
    too). Which thread runs when changes no result (the module notes).
    The previous interval comes back when the run ends.
    """
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def on_both_threads(n: int, job: Callable[[int, int], T]) -> list[T]:
    """``[job(i, lane) for i in range(n)]``, the items shared by this thread and the worker.

    Each thread takes the next item not yet taken, so a few long items do not
    leave one thread idle; ``lane`` is 0 on the calling thread and 1 on the
    worker, for jobs that keep scratch space per thread. The items must not
    depend on each other (they run in any order, two at a time), and the
    worker must have nothing else queued, or the caller waits for it: call
    this between ticks' batches, never inside :func:`tick_batches`'s loop.
    """
    out: list[Any] = [None] * n
    if n < 2:
        for i in range(n):
            out[i] = job(i, 0)
        return out
    items = iter(range(n))
    taking = threading.Lock()

    def take(lane: int) -> None:
        while True:
            with taking:
                i = next(items, None)
            if i is None:
                return
            out[i] = job(i, lane)

    helper = _worker().submit(take, 1)
    try:
        take(0)
    finally:
        # Still queued behind the worker's own work (the next tick's draws): it is
        # not needed; else its items end first (and its error, if any, is raised).
        if not helper.cancel():
            helper.result()
    return out


class NextTick:
    """The first batches of the next tick, drawn on the worker before that tick starts.

    :func:`tick_batches` leaves them here when its caller knows the next tick
    runs the same workloads (no event, no VM powered on or off, not the last
    tick) and takes them back at that tick. A workload's batch depends only on
    the workload and the time, so it is the same batch drawn a tick's tail
    earlier; the worker would otherwise idle then, and the main thread wait for
    the first batch at the start of every tick.
    """

    def __init__(self) -> None:
        self._now_ns: int | None = None
        self._workloads: tuple[Workload, ...] = ()
        self._futures: list[Future] = []

    def put(self, now_ns: int, workloads: Sequence[Workload], futures: list[Future]) -> None:
        """The draws under way for the tick at ``now_ns`` of the first ``workloads``."""
        self._now_ns, self._workloads, self._futures = now_ns, tuple(workloads), futures

    def take(self, now_ns: int, workloads: Sequence[Workload]) -> list[Future]:
        """The draws left for this tick (of ``workloads``' first few), or none.

        Draws left for another tick or other workloads cannot be drawn again
        (the workloads have moved on): that is an error of the caller's.
        """
        futures, self._futures = self._futures, []
        if not futures:
            return []
        mine = tuple(workloads[:len(futures)])
        if now_ns != self._now_ns or len(mine) != len(self._workloads) or any(
                a is not b for a, b in zip(mine, self._workloads, strict=True)):
            raise InvariantViolation("workload batches drawn ahead for a tick that did not "
                                     "come (an event or a VM powered on or off in between)")
        return futures


def tick_batches(workloads: Sequence[Workload], now_ns: int, tick_ns: int,
                 then: Sequence[Then] | None = None, next_tick: NextTick | None = None,
                 same_next: bool = False) -> Iterator[tuple[AccessBatch, Any]]:
    """Each workload's batch for the tick, in order, drawn ahead on the worker thread.

    Yields (batch, ``then[i](batch)``, or None where ``then`` has no step);
    the step runs after the draw, on the thread that drew. Every batch of the
    tick has been drawn, and every step taken, when the iteration ends.

    The worker takes each next batch's draw (and step) in VM order, at most
    AHEAD beyond the one the caller waits for. When the caller would wait for
    a batch the worker is still drawing, it takes the next batch nobody has
    taken and draws that itself (:class:`_Jobs`): where the draws outweigh the
    serving, both threads draw, and the serving waits less.

    ``next_tick``: batches of this tick already drawn are taken from it; and
    with ``same_next`` (the next tick runs the same workloads, no event between)
    the next tick's first batches are drawn into it once this tick's are done.
    """
    steps = list(then) if then is not None else [None] * len(workloads)
    jobs = list(zip(workloads, steps, strict=True))
    if len(workloads) < 2:
        for job in jobs:
            yield _draw(job, now_ns, tick_ns)
        return
    worker = _worker()
    early = next_tick.take(now_ns, workloads) if next_tick is not None else []
    tick = _Jobs(jobs, early, now_ns, tick_ns)
    helper = worker.submit(tick.work)
    try:
        for i in range(len(jobs)):
            yield tick.get(i)
        if same_next and next_tick is not None:
            helper.result()  # done: every job was taken and has ended
            ahead = workloads[:AHEAD]
            later = now_ns + tick_ns
            next_tick.put(later, ahead, [worker.submit(_draw_only, w, later, tick_ns)
                                         for w in ahead])
    finally:
        tick.stop()
        # A job under way when a tick stopped early ends first; so do the early
        # draws, which the worker ran before it started on this tick's jobs.
        helper.exception()
        for f in early:
            if not f.cancelled():
                f.exception()


class _Jobs:
    """A tick's draws (each with its step), taken in VM order by the worker and the caller.

    ``early`` holds the futures of the first draws, made at the end of the tick
    before (:class:`NextTick`): their jobs only take the step. Each job is
    taken once, by whichever thread comes first; its result waits in its slot
    until the caller takes it (:meth:`get`). The worker (:meth:`work`) takes
    the next job while it is at most AHEAD beyond the one the caller waits
    for; the caller takes the job it waits for if nobody has, and otherwise,
    while the worker draws it, the next untaken one. A workload's batch
    depends on nothing but the workload and the time, and a step on nothing
    but its own VM's guest, which nothing serves before the caller takes the
    batch: whichever thread runs a job, its result is the same.
    """

    def __init__(self, jobs: list[tuple[Workload, Then]], early: list[Future], now_ns: int,
                 tick_ns: int) -> None:
        self.jobs, self.early, self.now_ns, self.tick_ns = jobs, early, now_ns, tick_ns
        self.results: list[tuple[AccessBatch, Any] | None] = [None] * len(jobs)
        self.errors: list[BaseException | None] = [None] * len(jobs)
        self.done = [False] * len(jobs)
        self.taken = 0  # jobs taken so far (by either thread), in order
        self.waited_for = 0  # the job the caller waits for
        self.stopped = False
        self.cond = threading.Condition()

    def _run(self, j: int) -> None:
        """Run job ``j`` (taken by this thread) and leave its result in its slot."""
        try:
            if j < len(self.early):
                result = _step(self.early[j], self.jobs[j][1])
            else:
                result = _draw(self.jobs[j], self.now_ns, self.tick_ns)
        except BaseException as err:  # raised in the caller's thread, at its batch
            with self.cond:
                self.errors[j] = err
                self.done[j] = True
                self.cond.notify_all()
            if not isinstance(err, Exception):
                raise  # an interrupt stops the thread it lands on at once
            return
        with self.cond:
            self.results[j] = result
            self.done[j] = True
            self.cond.notify_all()

    def work(self) -> None:
        """The worker's part: the next job, in order, while it is not too far ahead."""
        cond, n = self.cond, len(self.jobs)
        while True:
            with cond:
                while not self.stopped and self.taken < n \
                        and self.taken > self.waited_for + AHEAD:
                    cond.wait()
                if self.stopped or self.taken >= n:
                    return
                j = self.taken
                self.taken += 1
            self._run(j)

    def get(self, i: int) -> tuple[AccessBatch, Any]:
        """Job ``i``'s result, once done; the caller draws while it waits (see the class)."""
        cond, n = self.cond, len(self.jobs)
        while True:
            with cond:
                if self.waited_for != i:
                    self.waited_for = i
                    cond.notify_all()  # the worker may go further ahead
                if self.done[i]:
                    break
                if self.taken < n and self.taken <= i + AHEAD:
                    j = self.taken  # i itself if nobody took it, else one the worker would
                    self.taken += 1
                else:
                    cond.wait()
                    continue
            self._run(j)
        err = self.errors[i]
        if err is not None:
            raise err
        result = self.results[i]
        self.results[i] = None  # the caller holds it now; keep no batch longer
        assert result is not None
        return result

    def stop(self) -> None:
        """Take no more jobs (the iteration ended, or stopped early)."""
        with self.cond:
            self.stopped = True
            self.cond.notify_all()


def _draw(job: tuple[Workload, Then], now_ns: int, tick_ns: int) -> tuple[AccessBatch, Any]:
    workload, step = job
    batch = workload.next_batch(now_ns, tick_ns)
    return batch, (step(batch) if step is not None else None)


def _draw_only(workload: Workload, now_ns: int, tick_ns: int) -> AccessBatch:
    return workload.next_batch(now_ns, tick_ns)


def _step(drawn: Future, step: Then) -> tuple[AccessBatch, Any]:
    batch = drawn.result()  # drawn at the end of the tick before, on the worker
    return batch, (step(batch) if step is not None else None)
