"""Serving a tick's memory references: the page fidelity and the mmu fidelity paths.

What is modelled
----------------
Two ways to serve a tick's accesses, one per fidelity:

* page fidelity (``GuestKernel.access``, :func:`serve_pages`): the tick's
  distinct pages in chunks; missing ones are faulted in, then every page is
  touched once over the memory bus.
* mmu fidelity (``GuestKernel.access_mmu``, :func:`serve_mmu`): every
  reference, in program order, through the vCPU's MMU (``hardware/mmu.py``)
  and whatever stands behind it (the hypervisor's ``translate``: TLB, 1-D or
  2-D walks, hidden faults, its own faults, the stores writes make). A batch
  kernel runs until a fault the guest must take; the kernel faults the page
  in, together with the other unmapped pages the next few thousand references
  touch (fault-around, ``fault.py``), and resumes. Pages the references used
  are marked for reclaim (last use, referenced, dirty) before each fault and at
  the end, so reclaim sees the same recency as in page fidelity. The time
  charged is the faults' and the translation's beyond the TLB lookup each
  reference makes anyway (page fidelity charges nothing per reference).

Walking ahead (page fidelity)
-----------------------------
A chunk's first steps read and write only the guest's own state: the walk of
its page table, the reclaim policy's stamps of the pages found present and,
when none is missing, their dirty bits and the split into written and read
pages. Nothing else changes that state while other VMs are served (the host
reaches a guest only through its memory bus, and each guest is served by the
one thread that serves it), so :func:`walk_ahead` can do those steps for a
VM's first chunk on another thread while the VMs before it are served, and
:func:`serve_pages` starts from its result: the same values, computed earlier.
Everything that reaches the host (the bus calls, faults, guest reclaim) still
runs in VM order on the serving thread.

A chunk's faults
----------------
A chunk with pages missing faults them in, and the faults may make the guest
reclaim. Afterwards only the entries faulted on are walked again, unless the
reclaim may have evicted a page used at the current stamp
(``KernelState.young_evictions``, counted by ``reclaim.py``): every page of
the chunk mapped so far was stamped as used now, and an eviction changes no
entry but its own page's, so when no such page left memory the chunk's other
entries are as they were. Otherwise the whole chunk is walked again. A
guest thrashing over a tick's pages nearly always evicts older pages, so the
walk after its faults covers the missing pages only. A policy that keeps no
use stamps (FIFO, CLOCK, random) cannot tell, and counts every reclaim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.core.sets import sorted_unique
from hvmem.errors import InvariantViolation
from hvmem.guest.fault import FAULT_AROUND_REFS, fault_around, fault_in
from hvmem.guest.kernel_state import KernelState
from hvmem.guest.pages import pte_frames
from hvmem.guest.process import Process, process_of
from hvmem.hardware.mmu import TranslationPath
from hvmem.hardware.page_table import PTE_FRAME_MASK, PTE_FRAME_SHIFT, PTE_PRESENT, pte_frame
from hvmem.hardware.prefetch import host_prefetch
from hvmem.hardware.walker import FaultKind
from hvmem.workloads.base import AccessBatch

#: mmu fidelity: references handed to one translation call at most (its buffers).
TRANSLATE_WINDOW_REFS = 1 << 16

STAMP_AHEAD = 8  # pages ahead whose use stamp and bit _stamp_present prefetches


@njit(cache=True, nogil=True)
def _stamp_present(ptes, stamp, use_stamp, use_bit, missing_idx):
    """Touch the page behind every present entry of ``ptes`` at ``stamp``.

    The touch is the reclaim policy's (``replacement/base.py``): the stamp
    into ``use_stamp`` and the bit into ``use_bit``, either of which may be
    empty (the policy keeps no such data). Returns how many entries are not
    present; the first ``missing_idx.size`` of their indices go to
    ``missing_idx``, in order. The entries come from a walk of a batch
    (``leaf_entries_of``), whose pages are scattered over arrays much larger
    than the caches: each page's stamp and bit are fetched STAMP_AHEAD entries
    early, so the misses overlap.
    """
    n = ptes.size
    stamps = use_stamp.size != 0
    bits = use_bit.size != 0
    missing = 0
    for i in range(n):
        if i + STAMP_AHEAD < n:
            ahead = ptes[i + STAMP_AHEAD]
            if ahead & PTE_PRESENT:
                if stamps:
                    host_prefetch(use_stamp, pte_frame(ahead))
                if bits:
                    host_prefetch(use_bit, pte_frame(ahead))
        pte = ptes[i]
        if pte & PTE_PRESENT:
            ppn = pte_frame(pte)
            if stamps:
                use_stamp[ppn] = stamp
            if bits:
                use_bit[ppn] = True
        else:
            if missing < missing_idx.size:
                missing_idx[missing] = i
            missing += 1
    return missing


_NO_INDICES = np.zeros(0, dtype=np.int64)
_NO_PTES = np.zeros(0, dtype=np.uint64)


@njit(cache=True, nogil=True)
def _split_touches(ptes, writes, tokens, refs, dirty, w_ppns, w_tokens, r_ppns):
    """Split present entries into written pages (marked dirty) and read pages.

    Both in batch order, the written ones with their tokens; returns (written,
    read, references). Writes and reads mix at random in a batch, so the split
    has no branch to mispredict: every page is stored to both lists, and only
    the count of its own list moves on; the written pages are marked dirty
    after, from their list.
    """
    n_w = 0
    n_r = 0
    served = 0
    for i in range(ptes.size):
        ppn = pte_frame(ptes[i])
        served += refs[i]
        w = np.int64(writes[i])
        w_ppns[n_w] = ppn
        w_tokens[n_w] = tokens[i]
        r_ppns[n_r] = ppn
        n_w += w
        n_r += 1 - w
    for i in range(n_w):
        dirty[w_ppns[i]] = True
    return n_w, n_r, served


@njit(cache=True)
def _mark_used(ptes, writes, stamp, use_stamp, use_bit, dirty):
    """Touch the page behind every present entry at ``stamp``; mark written ones dirty.

    The touch is the reclaim policy's, as in ``_stamp_present``.
    """
    stamps = use_stamp.size != 0
    bits = use_bit.size != 0
    for i in range(ptes.size):
        pte = ptes[i]
        if pte & PTE_PRESENT:
            ppn = np.int64((pte & PTE_FRAME_MASK) >> np.uint64(PTE_FRAME_SHIFT))
            if stamps:
                use_stamp[ppn] = stamp
            if bits:
                use_bit[ppn] = True
            if writes[i]:
                dirty[ppn] = True


# -- page fidelity -----------------------------------------------------------------------
@dataclass(slots=True)
class WalkedChunk:
    """A batch's first chunk, walked and stamped ahead (:func:`walk_ahead`).

    ``ptes`` are the chunk's leaf entries; the first ``idx.size`` indices of
    those not present are in ``idx`` (``n_missing`` in all). With none missing
    the pages are split instead (``split``: written pages, their tokens, read
    pages, and the references), the written ones marked dirty, and ``ptes``
    and ``idx`` are empty: the chunk is served from the split alone.
    """

    n_pages: int
    ptes: np.ndarray
    idx: np.ndarray
    n_missing: int
    split: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None


def _chunk_pages(kernel: KernelState) -> int:
    """Pages served per chunk: few enough that a chunk's faults fit in memory."""
    return max(1, (kernel.config.memory_pages - kernel.high_pages) // 4)


def _one_process(batch: AccessBatch) -> bool:
    procs = batch.process
    return bool(procs.size) and procs[0] == procs.min() == procs.max()


def walk_ahead(kernel: KernelState, batch: AccessBatch, now_ns: int) -> WalkedChunk | None:
    """The guest-only first steps of serving ``batch`` at ``now_ns`` (see the essay).

    Only for a batch of one process without mappings to change (None
    otherwise): the steps read and write the guest's own page table, stamps
    and dirty bits, nothing the host or another guest holds, and must run
    before the kernel serves anything else of this guest. The kernel then
    serves ``batch`` at ``now_ns`` from the result (``GuestKernel.access``).
    """
    if batch.ops or not _one_process(batch):
        return None
    kernel.now_ns = now_ns  # the stamp this time gets; serving sets the same time again
    proc = process_of(kernel.processes, int(batch.process[0]))
    hi = _chunk_pages(kernel)
    vpns = np.ascontiguousarray(batch.vpn[:hi], dtype=np.int64)
    n = vpns.size
    ptes = proc.space.page_table.leaf_entries(vpns)
    idx = np.empty(n, dtype=np.int64)
    rp = kernel.replacement
    n_missing = _stamp_present(ptes, kernel.now_stamp, rp.use_stamp, rp.use_bit, idx)
    if n_missing:
        return WalkedChunk(n, ptes, idx, n_missing, None)
    # Split, the chunk is served from its lists alone: it waits without its entries.
    split = _split(kernel, ptes, batch.is_write[:hi], batch.refs[:hi], batch.content[:hi])
    return WalkedChunk(n, _NO_PTES, _NO_INDICES, 0, split)


def serve_pages(kernel: KernelState, batch: AccessBatch, walked: WalkedChunk | None = None
                ) -> tuple[np.ndarray, int]:
    """Serve a tick's distinct pages, faults first; returns (dropped per entry, references).

    ``walked``: the first chunk as :func:`walk_ahead` left it, if it ran (then
    the batch is of one process: ``walk_ahead`` checked).
    """
    procs = batch.process
    if walked is not None or _one_process(batch):  # one process: no selection
        return _serve_process(kernel, process_of(kernel.processes, int(procs[0])), batch.vpn,
                              batch.is_write, batch.refs, batch.content, walked)
    dropped_mask = np.zeros(len(batch), dtype=np.bool_)
    served_refs = 0
    for index in np.unique(procs).tolist():
        sel = np.flatnonzero(batch.process == index)
        d, r = _serve_process(kernel, process_of(kernel.processes, index), batch.vpn[sel],
                              batch.is_write[sel], batch.refs[sel], batch.content[sel])
        dropped_mask[sel] = d
        served_refs += r
    return dropped_mask, served_refs


def _serve_process(kernel: KernelState, proc: Process, vpns: np.ndarray, writes: np.ndarray,
                   refs: np.ndarray, tokens: np.ndarray, walked: WalkedChunk | None = None
                   ) -> tuple[np.ndarray, int]:
    # Accesses happen in order: in chunks small enough that a chunk's faults
    # fit in memory, so pages touched earlier in the tick may be reclaimed
    # for later ones (a tick touching more than memory holds thrashes).
    chunk = _chunk_pages(kernel)
    if 0 < vpns.size <= chunk:  # one chunk: its own mask is the answer, no copy of it
        return _serve_chunk(kernel, proc, vpns, writes, refs, tokens, walked)
    dropped = np.zeros(vpns.size, dtype=np.bool_)
    served = 0
    for lo in range(0, vpns.size, chunk):
        hi = lo + chunk
        dropped[lo:hi], r = _serve_chunk(kernel, proc, vpns[lo:hi], writes[lo:hi],
                                         refs[lo:hi], tokens[lo:hi],
                                         walked if lo == 0 else None)
        served += r
    return dropped, served


def _serve_chunk(kernel: KernelState, proc: Process, vpns: np.ndarray, writes: np.ndarray,
                 refs: np.ndarray, tokens: np.ndarray, walked: WalkedChunk | None = None
                 ) -> tuple[np.ndarray, int]:
    table = proc.space.page_table
    stamp = kernel.now_stamp
    # Mark what is resident as used now, so reclaim for this chunk's faults
    # prefers pages it does not touch.
    n = vpns.size
    vpns = np.ascontiguousarray(vpns, dtype=np.int64)
    rp = kernel.replacement
    if walked is not None and walked.n_pages == n:  # done ahead (walk_ahead)
        if walked.split is not None:
            return _touch_split(kernel, n, walked.split)
        ptes, idx, n_missing = walked.ptes, walked.idx, walked.n_missing
    else:
        ptes = table.leaf_entries(vpns)
        idx = np.empty(n, dtype=np.int64)
        n_missing = _stamp_present(ptes, stamp, rp.use_stamp, rp.use_bit, idx)
    if n_missing == 0:  # the common case: every page resident, no fault to take
        return _touch_resident(kernel, ptes, writes, refs, tokens)
    # ``idx``: the entries that may be missing. Without guest reclaim in between,
    # faulting pages in changes no other entry, so only those are walked again.
    idx = idx[:n_missing]
    dropped = np.zeros(n, dtype=np.bool_)
    c = kernel.counters
    reclaimed = False
    for _ in range(4):  # reclaim may evict a page of this very chunk: fault it back
        idx = idx[((ptes[idx] & PTE_PRESENT) == 0) & ~dropped[idx]]
        if idx.size == 0:
            break
        runs, young = c.reclaim_runs, kernel.young_evictions
        failed = fault_in(kernel, proc, sorted_unique(vpns[idx]))
        if failed.size:
            dropped |= np.isin(vpns, failed)
        reclaimed |= c.reclaim_runs != runs
        if kernel.young_evictions == young:
            # No page used now was evicted, and every page of the chunk mapped
            # so far is one: only the entries faulted on can have changed.
            ptes[idx] = table.leaf_entries(vpns[idx])
        else:
            ptes = table.leaf_entries(vpns)
            idx = np.flatnonzero((ptes & PTE_PRESENT) == 0)
    if not dropped.any() and (not idx.size or np.all(ptes & PTE_PRESENT)):
        # Every page mapped and stamped (the faulted ones by the fault); after a
        # reclaim the refaulted pages are stamped again, as below. Serve them.
        if reclaimed:
            _stamp_present(ptes, stamp, rp.use_stamp, rp.use_bit, _NO_INDICES)
        return _touch_resident(kernel, ptes, writes, refs, tokens)
    dropped |= (ptes & PTE_PRESENT) == 0
    ok = ~dropped
    ppns = pte_frames(ptes[ok])
    if ok.all():  # the common case: every page of the chunk was resident already
        _stamp_present(ptes, stamp, rp.use_stamp, rp.use_bit, _NO_INDICES)
    else:
        rp.touch(ppns, stamp)
    w = writes[ok]
    if np.any(w):
        kernel.dirty[ppns[w]] = True
        kernel.counters.time_ns += kernel.memory.write_pages(ppns[w], tokens[ok][w])
    if np.any(~w):
        kernel.counters.time_ns += kernel.memory.touch_pages(ppns[~w])
    return dropped, int(refs[ok].sum())


def _touch_resident(kernel: KernelState, ptes: np.ndarray, writes: np.ndarray,
                    refs: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, int]:
    """Serve a chunk whose pages are all mapped (and stamped as used already).

    The written pages are marked dirty, then the writes and the reads go
    over the bus.
    """
    return _touch_split(kernel, ptes.size, _split(kernel, ptes, writes, refs, tokens))


def _split(kernel: KernelState, ptes: np.ndarray, writes: np.ndarray, refs: np.ndarray,
           tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Mapped pages split into written (marked dirty, with tokens) and read; and references."""
    writes = np.ascontiguousarray(writes, dtype=np.bool_)
    # Each list sized to its pages, and one more: the split stores every page to
    # both lists, at the end of each. A walked batch waits with its lists while
    # the VMs before it are served, so they hold no room they do not use.
    n_w = int(np.count_nonzero(writes))
    n_r = ptes.size - n_w
    w_ppns = np.empty(n_w + 1, dtype=np.int64)
    w_tokens = np.empty(n_w + 1, dtype=np.uint64)
    r_ppns = np.empty(n_r + 1, dtype=np.int64)
    _, _, served = _split_touches(ptes, writes, np.ascontiguousarray(tokens, dtype=np.uint64),
                                  np.ascontiguousarray(refs, dtype=np.int64), kernel.dirty,
                                  w_ppns, w_tokens, r_ppns)
    return w_ppns[:n_w], w_tokens[:n_w], r_ppns[:n_r], int(served)


def _touch_split(kernel: KernelState, n: int,
                 split: tuple[np.ndarray, np.ndarray, np.ndarray, int]
                 ) -> tuple[np.ndarray, int]:
    """The writes, then the reads of a split chunk of ``n`` pages, over the bus."""
    w_ppns, w_tokens, r_ppns, served = split
    if w_ppns.size:
        kernel.counters.time_ns += kernel.memory.write_pages(w_ppns, w_tokens)
    if r_ppns.size:
        kernel.counters.time_ns += kernel.memory.touch_pages(r_ppns)
    return np.zeros(n, dtype=np.bool_), served


# -- mmu fidelity ------------------------------------------------------------------------
def serve_mmu(kernel: KernelState, batch: AccessBatch, path: TranslationPath
              ) -> tuple[np.ndarray, float]:
    """Serve every reference through the vCPU's MMU (``kernel.mmu``), in order.

    ``path`` is what stands behind the MMU. Returns (dropped per reference,
    the hypervisor's fault time).
    """
    n = len(batch)
    dropped = np.zeros(n, dtype=np.bool_)
    host_ns = 0.0
    if n:
        # Runs of one process each, in batch order: a switch is a CR3 load.
        procs = batch.process
        cuts = [0, *(np.flatnonzero(procs[1:] != procs[:-1]) + 1).tolist(), n]
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            host_ns += _run_mmu(kernel, process_of(kernel.processes, int(procs[lo])),
                                batch.vpn[lo:hi], batch.is_write[lo:hi], batch.content[lo:hi],
                                dropped[lo:hi], path)
    return dropped, host_ns


def _run_mmu(kernel: KernelState, proc: Process, vpns: np.ndarray, writes: np.ndarray,
             tokens: np.ndarray, dropped: np.ndarray, path: TranslationPath) -> float:
    """One process's run of references; returns the hypervisor's fault time."""
    mmu = kernel.mmu
    space = proc.space
    if mmu.asid != space.asid or mmu.hw_root < 0:
        mmu.load_cr3(space.asid, space.root_ppn)
    vpns = np.ascontiguousarray(vpns, dtype=np.int64)
    writes = np.ascontiguousarray(writes, dtype=np.bool_)
    tokens = np.ascontiguousarray(tokens, dtype=np.uint64)
    table = space.page_table
    n = vpns.size
    start = marked = 0  # next reference to run; references before ``marked`` are marked
    host_ns = 0.0
    while start < n:
        end = min(n, start + TRANSLATE_WINDOW_REFS)
        mmu_ns = mmu.counters.time_ns
        tb = path.translate(mmu, vpns[start:end], writes[start:end], tokens=tokens[start:end])
        host_ns += tb.time_ns - (mmu.counters.time_ns - mmu_ns)
        stop = start + tb.done
        if tb.fault is None:
            start = stop
            continue
        _mark_run_used(kernel, table, vpns[marked:stop], writes[marked:stop])
        if tb.fault.kind == FaultKind.GUEST_NOT_PRESENT:
            if fault_around(kernel, proc, vpns[stop:stop + FAULT_AROUND_REFS]):
                start = marked = stop
                continue
        elif tb.fault.kind == FaultKind.GUEST_PROTECTION:
            # The guest maps nothing read-only: a write there is a bad access.
            kernel.counters.invalid_accesses += 1
        else:
            raise InvariantViolation(f"guest kernel: unexpected {tb.fault.kind.name} "
                                     "from the MMU path")
        dropped[stop] = True
        start = marked = stop + 1
    _mark_run_used(kernel, table, vpns[marked:n], writes[marked:n])
    return host_ns


def _mark_run_used(kernel: KernelState, table, vpns: np.ndarray, writes: np.ndarray) -> None:
    if vpns.size:
        rp = kernel.replacement
        _mark_used(table.leaf_entries(vpns), writes, kernel.now_stamp, rp.use_stamp,
                   rp.use_bit, kernel.dirty)
