"""Allocation churn: chunks mapped, touched, used and unmapped on a schedule.

A :class:`~hvmem.workloads.synthetic.ChurnParams` workload is a program that
keeps allocating and freeing memory: its region is an arena of
``region_pages // chunk_pages`` slots, nothing is mapped at setup, and each
allocation maps one chunk into a free slot (``MAP``), each free unmaps it
(``UNMAP``), so the guest sees memory come and go.

Choices:

* A new chunk goes to a random free slot, as a fragmented heap reuses
  addresses; an allocation when every slot is live is refused and counted.
* Each chunk is freed after its lifetime (exponential or fixed) at the start
  of the first tick after it ends, and ``UNMAP``s come before ``MAP``s in a
  tick so a freed slot can be reused at once.
* A new chunk is written once page by page (``touch_on_alloc``, as ``calloc``
  or a first ``memset``), then shares the tick's references evenly with the
  other live pages: each tick draws them from a sampler with one range per
  live chunk (:mod:`hvmem.workloads.samplers`).
"""

from __future__ import annotations

import numpy as np

from hvmem.units import NS_PER_S
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind, Rate
from hvmem.workloads.generators import RegionWorkload
from hvmem.workloads.samplers import Sampler, merge_sorted
from hvmem.workloads.synthetic import ChurnParams

__all__ = ["ChurnWorkload"]

_NO_SLOTS = np.zeros(0, dtype=np.int64)


class ChurnWorkload(RegionWorkload):
    """Allocation churn: MAP, touch, use, UNMAP (:class:`ChurnParams`)."""

    kind = "churn"
    params: ChurnParams

    def __init__(self, params: ChurnParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        super().__init__(params, rng, name=name, content_key=content_key)
        self.n_slots = params.region_pages // params.chunk_pages
        self.live = np.zeros(self.n_slots, dtype=np.bool_)
        self.expire_ns = np.zeros(self.n_slots, dtype=np.int64)
        self._allocs = Rate(params.allocs_per_s)
        self._refs = Rate(params.refs_per_s)
        #: Chunks mapped so far.
        self.n_allocs = 0
        #: Chunks unmapped so far.
        self.n_frees = 0
        #: Allocations not made because every slot was live.
        self.n_allocs_refused = 0

    def setup(self) -> tuple[MemoryOp, ...]:
        """Nothing is mapped at boot: chunks are mapped as they are allocated."""
        return ()

    @property
    def live_pages(self) -> int:
        """Pages currently mapped."""
        return int(self.live.sum()) * self.params.chunk_pages

    def _op(self, kind: MemoryOpKind, slot: int) -> MemoryOp:
        p = self.params
        return MemoryOp(kind, p.process, p.first_vpn + slot * p.chunk_pages, p.chunk_pages,
                        p.file_backed)

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """Free what expired, allocate what is due, touch new chunks, use live ones."""
        p = self.params
        chunk = p.chunk_pages
        freed = np.flatnonzero(self.live & (self.expire_ns <= now_ns))
        self.live[freed] = False
        self.n_frees += freed.shape[0]
        ops = [self._op(MemoryOpKind.UNMAP, int(s)) for s in freed.tolist()]

        k = self._allocs.take(tick_ns)
        free = np.flatnonzero(~self.live)
        if k > free.shape[0]:
            self.n_allocs_refused += k - free.shape[0]
            k = free.shape[0]
        new = self.rng.choice(free, size=k, replace=False) if k else _NO_SLOTS
        if k:
            born = now_ns + (np.arange(k) + 0.5) * (tick_ns / k)
            if p.lifetime_dist == "fixed":
                life = np.full(k, p.lifetime_s)
            else:
                life = self.rng.exponential(p.lifetime_s, size=k)
            self.expire_ns[new] = np.ceil(born + life * NS_PER_S).astype(np.int64)
            self.live[new] = True
            self.n_allocs += k
            ops.extend(self._op(MemoryOpKind.MAP, int(s)) for s in new.tolist())

        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if k and p.touch_on_alloc:
            # In mmu mode in allocation order; in page mode sorted, for merge_sorted.
            first = new if not p.page_fidelity else np.sort(new)
            off = (first[:, None] * chunk + np.arange(chunk)[None, :]).ravel().astype(np.int64)
            parts.append((off, np.ones(off.shape[0], np.int64), np.ones(off.shape[0], np.bool_)))
        n = self._refs.take(tick_ns)
        slots = np.flatnonzero(self.live)
        if n and slots.shape[0]:
            sampler = Sampler.ranges(np.ones(slots.shape[0]), slots * chunk,
                                      np.full(slots.shape[0], chunk), p.region_pages)
            if p.page_fidelity:
                parts.append(sampler.draw_pages(self.rng, n, p.write_frac))
            else:
                off, writes = sampler.draw(self.rng, n, p.write_frac)
                parts.append((off, np.ones(n, np.int64), writes))
        if not parts:
            return AccessBatch.empty(tuple(ops))
        if p.page_fidelity:
            # The few new-chunk pages go into the many drawn ones.
            off, refs, writes = parts[0] if len(parts) == 1 else merge_sorted(parts[1], parts[0])
        else:
            off = np.concatenate([q[0] for q in parts])
            refs = np.concatenate([q[1] for q in parts])
            writes = np.concatenate([q[2] for q in parts])
        return self._emit(off, refs, writes, tuple(ops))
