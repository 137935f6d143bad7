"""Each tick's workload batches, drawn ahead on a worker thread while the main thread serves them.

A workload depends on nothing but its own state and random stream, so drawing
VM ``i + 1``'s batch while VM ``i``'s is served changes no result; the draws run
in GIL-free kernels, so on a second core they overlap the serving. One worker
thread, made on first use and kept for the process, draws in VM order, at most
AHEAD batches ahead of the one being served: a batch is megabytes (a busy
VM's 100 000 pages, with their references, writes and tokens), and a tick's
batches all drawn at once would hold them all (tens of VMs) in memory, where
a few suffice to keep both cores busy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from hvmem.workloads.base import AccessBatch, Workload

#: Batches the worker thread draws ahead of the one the main thread serves.
AHEAD = 2
#: The thread that draws workload batches while the main thread serves them.
_workload_thread: ThreadPoolExecutor | None = None


def tick_batches(workloads: Sequence[Workload], now_ns: int, tick_ns: int
                 ) -> Iterator[AccessBatch]:
    """Each workload's batch for the tick, in order, drawn ahead on the worker thread.

    Every batch of the tick has been drawn when the iteration ends.
    """
    global _workload_thread
    if len(workloads) < 2:
        for w in workloads:
            yield w.next_batch(now_ns, tick_ns)
        return
    if _workload_thread is None:
        _workload_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hvmem-workload")
    futures = deque(_workload_thread.submit(w.next_batch, now_ns, tick_ns)
                    for w in workloads[:AHEAD])
    pending = iter(workloads[AHEAD:])
    try:
        while futures:
            batch = futures.popleft().result()
            nxt = next(pending, None)
            if nxt is not None:
                futures.append(_workload_thread.submit(nxt.next_batch, now_ns, tick_ns))
            yield batch
    finally:
        for f in futures:
            f.cancel()
