"""Phased workloads: a schedule of generators, so the working set grows, shrinks and moves.

A :class:`~hvmem.workloads.synthetic.PhasesParams` schedule runs one generator
(uniform, Zipf, hot/cold, scan or idle; :mod:`hvmem.workloads.generators`)
after another inside one mapped region, each for its duration: the working-set
changes of Denning's model, which a memory scheduler has to follow.

Choices:

* Phases switch at their exact boundary even inside a tick: the tick is split,
  each part drawn from its phase, and (page mode) the parts re-aggregated.
* The schedule's clock starts at the first ``next_batch``; after the last
  phase the schedule repeats (``loop``) or the last phase goes on.
* Each phase is its own generator, built once, with its own content key, so
  the phases of one VM write distinct private tokens.

Reference: P. J. Denning, "The Working Set Model for Program Behavior", CACM
1968.
"""

from __future__ import annotations

import numpy as np

from hvmem.workloads.base import AccessBatch, Fidelity, MemoryOp, MemoryOpKind, Workload
from hvmem.workloads.generators import make_generator
from hvmem.workloads.synthetic import PhasesParams

__all__ = ["PhasesWorkload"]


class PhasesWorkload:
    """A schedule of generators (:class:`PhasesParams`)."""

    kind = "phases"

    def __init__(self, params: PhasesParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        self.params = params
        self.rng = rng
        self.name = name if name is not None else self.kind
        if content_key is None:
            content_key = int(rng.integers(0, 1 << 63))
        resolved = params.resolved()
        self._bounds_ns = np.cumsum([d for d, _ in resolved]).astype(np.int64)
        self._cycle_ns = int(self._bounds_ns[-1])
        # Each phase keys its private tokens apart (same VM, distinct write counters).
        self.generators: list[Workload] = [
            make_generator(p, rng, name=f"{self.name}[{i}]",
                           content_key=(content_key + 0x9E37_79B9 * (i + 1)) % (1 << 63))
            for i, (_, p) in enumerate(resolved)
        ]
        self._start_ns: int | None = None
        #: Index of the phase the last tick ended in.
        self.current_phase = 0

    def setup(self) -> tuple[MemoryOp, ...]:
        """Map the whole phased region once."""
        p = self.params
        return (MemoryOp(MemoryOpKind.MAP, p.process, p.first_vpn, p.region_pages,
                         p.file_backed),)

    def phase_at(self, t_ns: int) -> tuple[int, int | None]:
        """(phase index, end of that phase) at ``t_ns`` after the schedule's start."""
        bounds = self._bounds_ns
        if t_ns >= self._cycle_ns and not self.params.loop:
            return len(bounds) - 1, None
        cycle, r = divmod(t_ns, self._cycle_ns)
        i = int(np.searchsorted(bounds, r, side="right"))
        return i, cycle * self._cycle_ns + int(bounds[i])

    def start_phase(self, index: int, now_ns: int) -> None:
        """Run phase ``index`` from ``now_ns`` on (a scheduled event).

        The schedule's clock moves so that the phase begins now, and goes on
        from there as usual.
        """
        begin = int(self._bounds_ns[index - 1]) if index else 0
        self._start_ns = now_ns - begin

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """The tick's references, split at phase boundaries."""
        if self._start_ns is None:
            self._start_ns = now_ns
        t = now_ns - self._start_ns
        end = t + tick_ns
        parts = []
        while t < end:
            i, phase_end = self.phase_at(t)
            seg_end = end if phase_end is None else min(end, phase_end)
            parts.append(self.generators[i].next_batch(self._start_ns + t, seg_end - t))
            self.current_phase = i
            t = seg_end
        batch = AccessBatch.concat(parts)
        if len(parts) > 1 and self.params.fidelity == Fidelity.PAGE:
            batch = batch.aggregated()
        return batch
