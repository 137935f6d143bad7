"""Each tick's workload batches, drawn ahead on a worker thread while the main thread serves them.

A workload depends on nothing but its own state and random stream, so drawing
VM ``i + 1``'s batch while VM ``i``'s is served changes no result; the draws run
in GIL-free kernels, so on a second core they overlap the serving. One worker
thread, made on first use and kept for the process, draws in VM order, at most
AHEAD batches ahead of the one being served: a batch is megabytes (a busy
VM's 100 000 pages, with their references, writes and tokens), and a tick's
batches all drawn at once would hold them all (tens of VMs) in memory, where
a few suffice to keep both cores busy.

The worker may also take the first steps of serving each batch that touch
nothing but its own VM's guest (``guest/access.py``, "Walking ahead"): the
walk of its page table, its stamps and dirty bits. They depend on nothing
the VMs served before it change, so they too run while those are served.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hvmem.workloads.base import AccessBatch, Workload

#: Batches the worker thread draws (and walks) ahead of the one the main thread
#: serves: a few, so that a VM whose steps ahead take long (a busy one) does not
#: hold up the serving of those before it.
AHEAD = 4
#: The thread that draws workload batches while the main thread serves them.
_workload_thread: ThreadPoolExecutor | None = None


#: What the worker does with a VM's batch once drawn (None: nothing).
Then = Callable[[AccessBatch], Any] | None


def tick_batches(workloads: Sequence[Workload], now_ns: int, tick_ns: int,
                 then: Sequence[Then] | None = None) -> Iterator[tuple[AccessBatch, Any]]:
    """Each workload's batch for the tick, in order, drawn ahead on the worker thread.

    Yields (batch, ``then[i](batch)``, or None where ``then`` has no step);
    the step runs on the worker thread after the draw. Every batch of the tick
    has been drawn, and every step taken, when the iteration ends.
    """
    global _workload_thread
    steps = list(then) if then is not None else [None] * len(workloads)
    jobs = list(zip(workloads, steps, strict=True))
    if len(workloads) < 2:
        for job in jobs:
            yield _draw(job, now_ns, tick_ns)
        return
    if _workload_thread is None:
        _workload_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hvmem-workload")
    futures = deque(_workload_thread.submit(_draw, job, now_ns, tick_ns)
                    for job in jobs[:AHEAD])
    pending = iter(jobs[AHEAD:])
    try:
        while futures:
            drawn = futures.popleft().result()
            nxt = next(pending, None)
            if nxt is not None:
                futures.append(_workload_thread.submit(_draw, nxt, now_ns, tick_ns))
            yield drawn
    finally:
        for f in futures:
            f.cancel()
        for f in futures:  # a step under way when a tick stopped early ends first
            if not f.cancelled():
                f.exception()


def _draw(job: tuple[Workload, Then], now_ns: int, tick_ns: int) -> tuple[AccessBatch, Any]:
    workload, step = job
    batch = workload.next_batch(now_ns, tick_ns)
    return batch, (step(batch) if step is not None else None)
