r"""The MMU batch path: a vCPU's references translated, the exits to the hypervisor served.

What is modelled
----------------
Under mmu fidelity every guest reference goes through the vCPU's MMU (TLB,
walks, hidden faults) in the paging mode's Numba kernel, which runs until the
batch is done or a reference needs someone else::

    paging.run(from start) --done--------------------------------------> batch
         \--BACKING_MISSING, page armed ----> sampling trap, retry
          \-BACKING_READ_ONLY --------------> copy-on-write break, retry
           \-BACKING_MISSING ---------------> first touch (with those just ahead), retry
            \-GUEST_* ----------------------> stop: the guest's fault, returned

Exits are served in Python, so each serves a cluster rather than one page:
the guest's table (read at its CR3, as the shadow pager reads it) names the
pages the next ``SERVE_AHEAD_REFS`` references touch, and those without a
machine page and not armed are backed with the faulting one, up to
``SERVE_AHEAD_PAGES`` (Linux's SWAP_CLUSTER_MAX). Each is counted and charged
as it would be alone.

A batch may carry the data its writes store (``translate(tokens=...)``): each
stretch the kernel translated is stored before the next fault is served, since
serving it may move or reclaim pages.

The time of a batch is the MMU's (TLB, walks, hidden faults) plus every
hypervisor fault served on the way.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.hardware.mmu import Fault, Mmu, TranslationBatch, new_counters
from hvmem.hardware.page_table import (
    PTE_FRAME_MASK,
    PTE_FRAME_SHIFT,
    PTE_PRESENT,
    leaf_entries_of,
)
from hvmem.hardware.walker import FaultKind
from hvmem.hypervisor.fault import back, break_cow
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.sampling import sampling_trap
from hvmem.hypervisor.vm_state import VmState

#: A backing fault met in a batch of references is served together with those
#: the next SERVE_AHEAD_REFS references would take, up to SERVE_AHEAD_PAGES
#: pages (Linux's SWAP_CLUSTER_MAX): one exit to Python per cluster, not per page.
SERVE_AHEAD_REFS = 4096
SERVE_AHEAD_PAGES = 32

_NO_STEPS = np.zeros((1, 6), dtype=np.int64)


def translate(vm: VmState, mmu: Mmu, vpns: np.ndarray, is_write: np.ndarray | None = None,
              steps: np.ndarray | None = None, events: list | None = None,
              tokens: np.ndarray | None = None) -> TranslationBatch:
    """Translate a batch of the current address space, resolving hypervisor faults.

    Faults the guest must handle (``GUEST_*``) stop the batch and are
    returned; backing faults and sampling traps are resolved here and the
    reference retried.

    Args:
        vm: the VM the vCPU belongs to.
        mmu: the vCPU's MMU, with the guest's CR3 loaded.
        vpns: guest-virtual page numbers.
        is_write: per reference, a write; all reads if omitted.
        steps: when given, the walk steps are recorded into it (one-reference
            batches, for ``hvmem translate``).
        events: when given, hypervisor actions are appended as (kind, ppn, mpn).
        tokens: when given, the data each write stores (the CPU's stores):
            each translated stretch is stored before the next fault is served.
    """
    vpns = np.ascontiguousarray(vpns, dtype=np.int64)
    if is_write is None:
        is_write = np.zeros(vpns.size, dtype=np.bool_)
    is_write = np.ascontiguousarray(is_write, dtype=np.bool_)
    content = vm.frames.content
    fault_before = vm.counters.fault_time_ns
    record = steps is not None
    steps_buf = steps if steps is not None else _NO_STEPS
    mpns = np.full(vpns.size, -1, dtype=np.int64)
    counts = new_counters()
    start = 0
    n_steps = 0
    time_ns = 0.0
    fault = None
    while True:
        stop, status, ppn, used = vm.paging.run(
            mmu, vpns, is_write, start, mpns, counts, steps_buf[n_steps:], record)
        n_steps += used
        if tokens is not None:
            _store_writes(content, mpns, is_write, tokens, start, stop)
        if status == FaultKind.NONE:
            break
        if status == FaultKind.BACKING_MISSING and vm.paging.trap[ppn]:
            # A sampled page: the exit sampling armed. A page with no
            # backing is served on the retry.
            sampling_trap(vm, np.array([ppn], dtype=np.int64))
            if events is not None:
                events.append(("sampling_trap", ppn, int(vm.pmap.mpn[ppn]), n_steps))
            start = stop
            continue
        if status == FaultKind.BACKING_READ_ONLY:
            break_cow(vm, np.array([ppn]))
            if events is not None:
                events.append(("cow_break", ppn, int(vm.pmap.mpn[ppn]), n_steps))
            start = stop
            continue
        if status == FaultKind.BACKING_MISSING:
            if record:
                back(vm, np.array([ppn], dtype=np.int64))
            else:
                _serve_ahead(vm, mmu, vpns, stop, ppn)
            mpn = int(vm.pmap.mpn[ppn])
            if events is not None:
                events.append(("first_touch", ppn, mpn, n_steps))
            start = stop
            continue
        fault = Fault(FaultKind(status), stop, int(vpns[stop]), ppn)
        break
    time_ns += vm.counters.fault_time_ns - fault_before  # first touch, COW, traps
    time_ns += mmu.charge(counts)
    return TranslationBatch(mpns, fault.index if fault else vpns.size, fault, time_ns,
                            n_steps)


def _serve_ahead(vm: VmState, mmu: Mmu, vpns: np.ndarray, at: int, ppn: int) -> None:
    """Serve the backing fault of ``vpns[at]`` (on ``ppn``) with those just ahead of it.

    The guest's table (read at its CR3, as the shadow pager reads it) names
    the pages the next references touch; those without a machine page and
    not armed by sampling are served now, in the order they come, up to a
    cluster. Each is counted and charged as it would be alone.
    """
    window = vpns[at + 1:at + SERVE_AHEAD_REFS]
    ptes = leaf_entries_of(vm.guest_tables.entries, mmu.guest_root, window)
    ptes = ptes[(ptes & PTE_PRESENT) != 0]
    ahead = ((ptes & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT)).astype(np.int64)
    ahead = ahead[(ahead < vm.n_ppns) & (ahead != ppn)]
    state = vm.pmap.state[ahead]
    ahead = ahead[(state != Backing.PRIVATE) & (state != Backing.SHARED)
                  & ~vm.paging.trap[ahead]]
    _, first = np.unique(ahead, return_index=True)
    ahead = ahead[np.sort(first)][:SERVE_AHEAD_PAGES]
    back(vm, np.concatenate([np.array([ppn], dtype=np.int64), ahead]))


@njit(cache=True)
def _store_writes(content, mpns, is_write, tokens, start, stop):
    """The stores of references ``start:stop``, in program order (the last write wins)."""
    for i in range(start, stop):
        if is_write[i]:
            content[mpns[i]] = tokens[i]
