"""The generator workloads: uniform, Zipf, hot/cold, idle and scan, each over one region.

Each is one guest process touching one region of its address space at a
steady rate (parameters and the fidelities: :mod:`hvmem.workloads.synthetic`).
Four draw their references from a :class:`~hvmem.workloads.samplers.Sampler`
built once, at construction, from the popularity they model:

    uniform    one range over the whole region
    Zipf       one alias entry per popularity rank (or per block of ranks, above
               ZIPF_EXACT_MAX_PAGES pages), ranks scattered by a random permutation
    hot/cold   two ranges over a random permutation: the hot set, the rest
    idle       one range over a few random housekeeping pages

The scan draws nothing: it sweeps the region in order from a cursor, a whole
number of pages per tick (from a per-second rate, or a fixed count per tick),
each visit ``refs_per_page`` references. Only its write flags are random.

:class:`RegionWorkload` holds what every workload over a region shares (the
churn workload builds on it too): mapping the region at setup, turning region
offsets into VPNs, tokens from the content model, the reference count. A
phased schedule runs generators one after the other (:func:`make_generator`).
"""

from __future__ import annotations

import numpy as np

from hvmem.errors import ConfigError
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind, Rate, Workload
from hvmem.workloads.content import ContentModel
from hvmem.workloads.samplers import (
    ZIPF_EXACT_MAX_PAGES,
    Sampler,
    page_write_flags,
    zipf_blocks,
)
from hvmem.workloads.synthetic import (
    HotColdParams,
    IdleParams,
    RegionParams,
    ScanParams,
    UniformParams,
    ZipfParams,
)

__all__ = [
    "GENERATOR_WORKLOADS",
    "HotColdWorkload",
    "IdleWorkload",
    "RegionWorkload",
    "ScanWorkload",
    "UniformWorkload",
    "ZipfWorkload",
    "make_generator",
]


class RegionWorkload:
    """Shared machinery: the region, the content model, batch assembly."""

    kind = "region"

    def __init__(self, params: RegionParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        if not isinstance(rng, np.random.Generator):
            raise ConfigError(f"{type(self).__name__}: rng must be a numpy Generator "
                              f"(a named stream from RngStreams), found {type(rng).__name__}")
        self.params = params
        self.rng = rng
        self.name = name if name is not None else self.kind
        if content_key is None:
            content_key = int(rng.integers(0, 1 << 63))
        self.content = ContentModel(params.content, content_key)
        #: References generated so far.
        self.refs_total = 0

    def setup(self) -> tuple[MemoryOp, ...]:
        """Map the region."""
        p = self.params
        return (MemoryOp(MemoryOpKind.MAP, p.process, p.first_vpn, p.region_pages,
                         p.file_backed),)

    def _emit(self, offsets: np.ndarray, refs: np.ndarray | None, is_write: np.ndarray,
              ops: tuple[MemoryOp, ...] = ()) -> AccessBatch:
        """A batch from region offsets (``refs`` None: one reference each)."""
        n = offsets.shape[0]
        if n == 0:
            return AccessBatch.empty(ops)
        vpn = offsets  # the offsets are ours: turn them into VPNs in place
        vpn += self.params.first_vpn
        if refs is None:
            refs = np.ones(n, dtype=np.int64)
        self.refs_total += int(refs.sum())
        return AccessBatch(np.full(n, self.params.process, dtype=np.int32), vpn, is_write,
                           refs, self.content.tokens(vpn, is_write), ops)


class _SampledWorkload(RegionWorkload):
    """A workload drawing ``refs_per_s`` references per second from a sampler."""

    def __init__(self, params: RegionParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        super().__init__(params, rng, name=name, content_key=content_key)
        self._rate = Rate(params.refs_per_s)  # type: ignore[attr-defined]
        self.sampler = self._make_sampler()

    def _make_sampler(self) -> Sampler:
        """The sampler of a concrete workload (each subclass provides its own)."""
        raise TypeError(f"{type(self).__name__} does not define its sampler")

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """The references of the tick ``[now_ns, now_ns + tick_ns)``."""
        n = self._rate.take(tick_ns)
        if n == 0:
            return AccessBatch.empty()
        if self.params.page_fidelity:
            off, refs, writes = self.sampler.draw_pages(self.rng, n, self.params.write_frac)
            return self._emit(off, refs, writes)
        off, writes = self.sampler.draw(self.rng, n, self.params.write_frac)
        return self._emit(off, None, writes)


class UniformWorkload(_SampledWorkload):
    """Every page of the region equally likely (:class:`UniformParams`)."""

    kind = "uniform"
    params: UniformParams

    def _make_sampler(self) -> Sampler:
        n = self.params.region_pages
        return Sampler.ranges(np.ones(1), np.zeros(1, np.int64), np.array([n]), n)


class ZipfWorkload(_SampledWorkload):
    """Zipf-popular pages (:class:`ZipfParams`); ranks scattered by a permutation."""

    kind = "zipf"
    params: ZipfParams

    def _make_sampler(self) -> Sampler:
        n = self.params.region_pages
        page_of_rank = self.rng.permutation(n).astype(np.int32)
        if n <= ZIPF_EXACT_MAX_PAGES:  # one alias entry per rank: exact, table in L2
            weights = np.arange(1, n + 1, dtype=np.float64) ** -self.params.alpha
            return Sampler.singleton(weights, page_of_rank)
        lo, width, weights = zipf_blocks(n, self.params.alpha)
        return Sampler.ranges(weights, lo, width, n, page_of_rank)

    @property
    def page_of_rank(self) -> np.ndarray:
        """Region offset of the page of each popularity rank (index 0: the hottest)."""
        return self.sampler.perm.astype(np.int64)

    def rank_probabilities(self) -> np.ndarray:
        """The exact Zipf share of each rank (index 0: the hottest page).

        Above :data:`ZIPF_EXACT_MAX_PAGES` pages the sampler draws each rank
        within :data:`~hvmem.workloads.samplers.ZIPF_MAX_ERROR_FRAC` (relative) of this.
        """
        w = np.arange(1, self.params.region_pages + 1, dtype=np.float64) ** -self.params.alpha
        return w / w.sum()


class HotColdWorkload(_SampledWorkload):
    """A hot set receiving most references (:class:`HotColdParams`)."""

    kind = "hotcold"
    params: HotColdParams

    def _make_sampler(self) -> Sampler:
        p = self.params
        n = p.region_pages
        self.n_hot_pages = min(n - 1, max(1, round(p.hot_pages_frac * n)))
        perm = self.rng.permutation(n).astype(np.int32)
        weights = np.array([p.hot_refs_frac, 1.0 - p.hot_refs_frac])
        return Sampler.ranges(weights, np.array([0, self.n_hot_pages]),
                               np.array([self.n_hot_pages, n - self.n_hot_pages]), n, perm)

    @property
    def hot_pages(self) -> np.ndarray:
        """Region offsets of the hot pages (sorted)."""
        return np.sort(self.sampler.perm[: self.n_hot_pages].astype(np.int64))


class IdleWorkload(_SampledWorkload):
    """A trickle of housekeeping references (:class:`IdleParams`)."""

    kind = "idle"
    params: IdleParams

    def _make_sampler(self) -> Sampler:
        p = self.params
        k = p.housekeeping_pages
        chosen = np.sort(self.rng.choice(p.region_pages, size=k, replace=False)).astype(np.int64)
        return Sampler.ranges(np.ones(1), np.zeros(1, np.int64), np.array([k]),
                               p.region_pages, chosen)

    @property
    def housekeeping_pages(self) -> np.ndarray:
        """Region offsets of the pages the housekeeping touches (sorted)."""
        return self.sampler.perm.copy()


class ScanWorkload(RegionWorkload):
    """A cyclic sequential sweep (:class:`ScanParams`)."""

    kind = "scan"
    params: ScanParams

    def __init__(self, params: ScanParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        super().__init__(params, rng, name=name, content_key=content_key)
        if params.pages_per_s is not None:
            self._rate: Rate | None = Rate(params.pages_per_s)
        elif params.refs_per_s is not None:
            self._rate = Rate(params.refs_per_s / params.refs_per_page)
        else:
            self._rate = None
        #: Offset of the next page the sweep visits.
        self.cursor = params.start_page

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """The pages the sweep visits in this tick, in order."""
        p = self.params
        if self._rate is not None:
            k = self._rate.take(tick_ns)
        else:  # a fixed number per tick; a zero-length tick visits nothing
            k = int(p.pages_per_tick or 0) if tick_ns > 0 else 0
        if k == 0:
            return AccessBatch.empty()
        n = p.region_pages
        start = self.cursor
        self.cursor = (start + k) % n
        if not p.page_fidelity:
            pages = (start + np.arange(k, dtype=np.int64)) % n
            off = np.repeat(pages, p.refs_per_page)
            writes = self.rng.random(off.shape[0]) < p.write_frac
            return self._emit(off, None, writes)
        m = min(k, n)
        off = (start + np.arange(m, dtype=np.int64)) % n
        visits = np.full(m, k // n, dtype=np.int64)
        visits[: k % n] += 1  # the first k % n pages from the cursor get one more
        refs = visits * p.refs_per_page
        return self._emit(off, refs, page_write_flags(self.rng, refs, p.write_frac))


#: The workload class of each generator's parameters.
GENERATOR_WORKLOADS: dict[type, type] = {
    UniformParams: UniformWorkload,
    ZipfParams: ZipfWorkload,
    HotColdParams: HotColdWorkload,
    ScanParams: ScanWorkload,
    IdleParams: IdleWorkload,
}


def make_generator(params: object, rng: np.random.Generator, *, name: str | None = None,
                   content_key: int | None = None) -> Workload:
    """The generator workload for uniform, Zipf, hot/cold, scan or idle parameters.

    Raises:
        ConfigError: ``params`` is not a generator's parameters.
    """
    cls = GENERATOR_WORKLOADS.get(type(params))
    if cls is None:
        raise ConfigError(f"workload: unknown parameters {type(params).__name__}")
    return cls(params, rng, name=name, content_key=content_key)
