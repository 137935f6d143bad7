"""Trace replay: a recorded reference stream as a guest process's workload.

What is modelled
----------------
A memory trace (a Valgrind Lackey log, a list of addresses or of page numbers;
see :mod:`hvmem.workloads.trace`) records what one program touched, in order,
but not when. :class:`ReplayWorkload` plays it into one guest process at a
stated pace, tick by tick, once or over and over.

Pace. A trace carries no timestamps, so the rate is configuration: either
``refs_per_s`` (trace references per simulated second), or ``time_scale``, a
slow-down factor against ``trace_refs_per_s``, the rate at which the traced
program ran natively (default 10**9: a core at a few GHz issues a fetch, load
or store about every cycle or two). ``time_scale=1000`` replays a thousand
times slower than the original run. Per tick the rate gives a whole number of
references, the fraction carried over, exactly as for the synthetic
workloads.

Addresses. A trace address is a guest-*virtual* address of the process, and
its 4 KiB page number is used as the VPN directly (a ``"pages"`` trace gives
VPNs already). Nothing is relocated, so the replayed process has the traced
program's layout: text near 0x400000, heap above it, stack near the top of the
47-bit user half.

Mapping. The guest must have the pages mapped before they are touched (an
access outside every mapping is invalid). Two choices:

* ``map_first_vpn``/``map_pages`` given: ``setup()`` maps that one range and
  the replay checks each tick's pages against it (a page outside it is a
  :class:`~hvmem.errors.TraceError`);
* otherwise ``setup()`` makes a first pass over the trace (streamed, chunk by
  chunk) that collects the distinct pages as runs of consecutive VPNs, merges
  runs closer than ``map_gap_pages`` apart, and maps each merged run. Mapping a
  few untouched pages between touched ones costs nothing (memory is backed on
  first touch only) and keeps the number of mappings small: a Lackey trace of a
  typical program needs a handful (text, data, heap, stack). The pass keeps
  only runs, so its memory grows with the trace's footprint, never with its
  length; it reads the file once more, which is the price of not trusting a
  stated range.

Standard input (``path="-"``) can be read only once: it needs a stated range and
cannot loop.

Bounded memory. The replay holds at most one chunk of ``chunk_refs``
references from the reader (which itself holds two blocks of the file) plus
the tick's output: the file is never loaded whole. Page fidelity counts each
piece of the tick into a hash table of pages as it is taken (a Numba kernel,
O(1) per reference), so its memory is bounded by the tick's distinct pages
plus one chunk, not by its reference count.

Cost. Parsing dominates, in either fidelity: a tick costs about what reading
its references from the trace does, and the first pass about what reading the
whole trace once does (measurements: ``docs/design/workload-generation.md``).

Fidelity. ``"mmu"``: one entry per trace reference in trace order; a Lackey
``S`` or ``M`` record is a write. ``"page"``: one entry per distinct page of the
tick (sorted by VPN), ``refs`` its references and ``is_write`` whether any of
them wrote. Written pages get tokens from the content model, like the
synthetic workloads (a trace records addresses, not data).

When a trace that does not loop ends, the workload touches nothing from then on
(``finished`` becomes True).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.core.mix import GOLDEN_GAMMA
from hvmem.errors import ConfigError, TraceError
from hvmem.params import REQUIRED, check, choice, flag, number, size, table, text, whole
from hvmem.units import PAGE_SHIFT
from hvmem.workloads.base import (
    MAX_PROCESSES,
    MAX_REFS_PER_S,
    VPN_SPACE_PAGES,
    AccessBatch,
    Fidelity,
    MemoryOp,
    MemoryOpKind,
    Rate,
)
from hvmem.workloads.checks import fail
from hvmem.workloads.content import ContentModel, ContentParams
from hvmem.workloads.trace import DEFAULT_BLOCK_BYTES, FORMATS, iter_page_numbers

__all__ = [
    "DEFAULT_TRACE_REFS_PER_S",
    "ReplayParams",
    "ReplayWorkload",
    "merge_runs",
    "trace_page_runs",
]

#: Native pace assumed for a trace when ``time_scale`` is used: about one
#: reference per nanosecond.
DEFAULT_TRACE_REFS_PER_S = 1e9


def _fail(name: str, expected: str, found: object) -> ConfigError:
    """The error for field ``name`` of :class:`ReplayParams`."""
    return fail("ReplayParams", name, expected, found)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayParams:
    """A trace replayed into one guest process.

    Give exactly one of ``refs_per_s`` and ``time_scale``; ``map_first_vpn`` and
    ``map_pages`` together, or neither (a first pass over the trace finds the
    ranges to map).
    """

    path: str | os.PathLike[str] = text(REQUIRED, "the trace file, relative to the scenario "
                                        "file (\"-\": standard input)",
                                        expect="a trace file name")
    fmt: str = choice("auto", FORMATS, "the trace format (see trace.py)", key="format")
    refs_per_s: float | None = number(None, "trace references per simulated second", lo=0.0,
                                      hi=MAX_REFS_PER_S, unit="1/s", optional=True,
                                      none="time_scale sets the pace")
    time_scale: float | None = number(None, "slow-down against trace_refs_per_s", lo=0.0,
                                      lo_open=True, hi=1e9, optional=True,
                                      none="refs_per_s sets the pace")
    trace_refs_per_s: float = number(DEFAULT_TRACE_REFS_PER_S, "the native pace of the traced "
                                     "program, for time_scale", lo=0.0, lo_open=True,
                                     hi=MAX_REFS_PER_S, unit="1/s", source="assumed")
    loop: bool = flag(False, "start over at the end of the trace")
    process: int = whole(0, "the guest process that replays it", lo=0, hi=MAX_PROCESSES - 1)
    file_backed: bool = flag(False, "map the trace's pages as a file mapping")
    fidelity: str = choice(Fidelity.PAGE, tuple(str(f) for f in Fidelity),
                           "'page' or 'mmu'", key=None, owner="fidelity")
    content: ContentParams = table(ContentParams, "what writes store", factory=ContentParams,
                                   key=None, owner="vm[].content")
    map_first_vpn: int | None = whole(None, "with region, the one range to map (no first pass)",
                                      lo=0, hi=VPN_SPACE_PAGES - 1, key="first_vpn",
                                      optional=True, none="a first pass finds the ranges")
    map_pages: int | None = size(None, "the length of that range", unit="pages", lo=0,
                                 lo_open=True, hi=VPN_SPACE_PAGES, key="region", optional=True,
                                 none="a first pass finds the ranges")
    map_gap_pages: int = whole(16, "in the first pass, touched pages at most this far apart are "
                               "mapped as one range", lo=0, hi=VPN_SPACE_PAGES)
    chunk_refs: int = whole(1 << 16, "references read from the trace at a time", lo=1,
                            hi=1 << 30)
    block_bytes: int = size(DEFAULT_BLOCK_BYTES, "bytes read from the file at a time",
                            lo=0, lo_open=True, hi=1 << 30, whole_pages=False)

    def __post_init__(self) -> None:
        if not isinstance(self.path, str | os.PathLike) or not os.fspath(self.path):
            raise _fail("path", "a trace file name", self.path)
        check(self, skip=("path",))  # a path may be any os.PathLike, checked above
        if (self.refs_per_s is None) == (self.time_scale is None):
            raise _fail("refs_per_s", "exactly one of refs_per_s and time_scale",
                        (self.refs_per_s, self.time_scale))
        if (self.map_first_vpn is None) != (self.map_pages is None):
            raise _fail("map_pages", "map_first_vpn and map_pages both given or both left out",
                        (self.map_first_vpn, self.map_pages))
        if self.map_first_vpn is not None and (self.map_first_vpn + self.map_pages
                                               > VPN_SPACE_PAGES):
            raise _fail("map_pages", "a positive page count inside the 48-bit address space",
                        self.map_pages)
        if isinstance(self.path, str) and self.path == "-":
            if self.map_first_vpn is None:
                raise _fail("map_first_vpn", "a stated range for a trace read from standard "
                            "input (it cannot be read twice)", None)
            if self.loop:
                raise _fail("loop", "false for a trace read from standard input", self.loop)

    @property
    def effective_refs_per_s(self) -> float:
        """The replay's pace in trace references per simulated second."""
        if self.refs_per_s is not None:
            return float(self.refs_per_s)
        return float(self.trace_refs_per_s) / float(self.time_scale)  # type: ignore[arg-type]


# --------------------------------------------------------------- page runs


def _runs_of(sorted_unique: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of consecutive values as ``[start, end)`` pairs."""
    if sorted_unique.shape[0] == 0:
        return sorted_unique.copy(), sorted_unique.copy()
    breaks = np.flatnonzero(np.diff(sorted_unique) > 1)
    starts = sorted_unique[np.concatenate(([0], breaks + 1))]
    ends = sorted_unique[np.concatenate((breaks, [sorted_unique.shape[0] - 1]))] + 1
    return starts, ends


def merge_runs(starts: np.ndarray, ends: np.ndarray,
               gap_pages: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Union of ``[start, end)`` ranges; ranges at most ``gap_pages`` apart are joined.

    Args:
        starts: int64 first pages of the ranges (any order; ranges may overlap).
        ends: int64 ends of the ranges (exclusive), matching ``starts``.
        gap_pages: join ranges separated by this many pages or fewer (0: only
            overlapping or touching ranges).

    Returns:
        Sorted, disjoint ``(starts, ends)``.
    """
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    if starts.shape[0] == 0:
        return starts.copy(), ends.copy()
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    reach = np.maximum.accumulate(e)
    new = np.empty(s.shape[0], dtype=np.bool_)
    new[0] = True
    new[1:] = s[1:] > reach[:-1] + gap_pages
    first = np.flatnonzero(new)
    return s[first], np.maximum.reduceat(e, first)


def trace_page_runs(path: str | os.PathLike[str], fmt: str = "auto", *,
                    chunk_refs: int = 1 << 16,
                    block_bytes: int = DEFAULT_BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pages a trace touches, as sorted runs ``[start, end)`` of VPNs.

    Streams the file; memory grows with the number of runs, not the trace length.
    Runs found in chunks are merged whenever they outnumber the merged runs (and
    at least 65536 are pending), so the merging costs O(runs log runs) overall.

    Raises:
        TraceError: as :func:`~hvmem.workloads.trace.iter_references`, or a page
            beyond the 48-bit virtual address space.
    """
    starts = np.zeros(0, np.int64)
    ends = np.zeros(0, np.int64)
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    n_pending = 0
    name = os.fspath(path)
    for vpn, _ in iter_page_numbers(path, fmt, PAGE_SHIFT, chunk_refs, block_bytes=block_bytes):
        u = np.unique(vpn)
        if u[0] < 0 or u[-1] >= VPN_SPACE_PAGES:
            bad = int(u[0]) if u[0] < 0 else int(u[-1])
            raise TraceError(f"{name}: page {bad:#x} lies beyond the 48-bit virtual address "
                             "space (a kernel address?); only user addresses can be replayed")
        pending.append(_runs_of(u))
        n_pending += pending[-1][0].shape[0]
        if n_pending > max(65536, starts.shape[0]):
            starts, ends = merge_runs(np.concatenate([starts] + [p[0] for p in pending]),
                                      np.concatenate([ends] + [p[1] for p in pending]))
            pending, n_pending = [], 0
    if pending:
        starts, ends = merge_runs(np.concatenate([starts] + [p[0] for p in pending]),
                                  np.concatenate([ends] + [p[1] for p in pending]))
    return starts, ends


# ----------------------------------------------------------------- workload


class ReplayWorkload:
    """Replays a trace into one guest process (:class:`ReplayParams`).

    Args:
        params: the replay's parameters.
        rng: the workload's stream; the replay itself is deterministic and draws
            only the content key from it when none is given.
        name: the workload's name.
        content_key: keys the private page tokens (see ``make_workload``).
    """

    kind = "replay"

    def __init__(self, params: ReplayParams, rng: np.random.Generator, *,
                 name: str | None = None, content_key: int | None = None) -> None:
        self.params = params
        self.name = name if name is not None else self.kind
        if content_key is None:
            content_key = int(rng.integers(0, 1 << 63))
        self.content = ContentModel(params.content, content_key)
        self._rate = Rate(params.effective_refs_per_s)
        self._chunks: Iterator[tuple[np.ndarray, np.ndarray]] | None = None
        self._vpn = np.zeros(0, np.int64)
        self._write = np.zeros(0, np.bool_)
        self._pos = 0
        #: Complete passes over the trace so far.
        self.passes_completed = 0
        #: True once a trace that does not loop has been replayed to its end.
        self.finished = False
        #: Trace references replayed so far.
        self.refs_replayed = 0
        #: Distinct pages the trace touches (after a first pass; else None).
        self.footprint_pages: int | None = None
        #: The ranges ``setup()`` maps, as (starts, ends).
        self.mapped_runs: tuple[np.ndarray, np.ndarray] | None = None

    def setup(self) -> tuple[MemoryOp, ...]:
        """Map the stated range, or the trace's pages found by a first pass."""
        p = self.params
        if p.map_first_vpn is not None:
            starts = np.array([p.map_first_vpn], np.int64)
            ends = starts + int(p.map_pages)  # type: ignore[arg-type]
        else:
            exact = trace_page_runs(p.path, p.fmt, chunk_refs=p.chunk_refs,
                                    block_bytes=p.block_bytes)
            self.footprint_pages = int((exact[1] - exact[0]).sum())
            starts, ends = merge_runs(*exact, gap_pages=p.map_gap_pages)
        self.mapped_runs = (starts, ends)
        return tuple(MemoryOp(MemoryOpKind.MAP, p.process, int(s), int(e - s), p.file_backed)
                     for s, e in zip(starts.tolist(), ends.tolist(), strict=True))

    @property
    def mapped_pages(self) -> int:
        """Pages ``setup()`` mapped (0 before it ran)."""
        if self.mapped_runs is None:
            return 0
        return int((self.mapped_runs[1] - self.mapped_runs[0]).sum())

    def _open(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        p = self.params
        return iter_page_numbers(p.path, p.fmt, PAGE_SHIFT, p.chunk_refs,
                                 block_bytes=p.block_bytes)

    def _refill(self) -> bool:
        """Load the next chunk; False at the end of a trace that does not loop."""
        if self._chunks is None:
            self._chunks = self._open()
        for _ in range(2):
            chunk = next(self._chunks, None)
            if chunk is not None:
                self._vpn, self._write = chunk
                self._pos = 0
                return True
            self.passes_completed += 1
            if not self.params.loop:
                self.finished = True
                return False
            self._chunks = self._open()  # an empty trace raises TraceError here
        raise TraceError(f"{os.fspath(self.params.path)}: the trace holds no references")

    def _take(self, n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The next ``n`` references (fewer at the end), as pieces of chunks."""
        while n > 0 and not self.finished:
            if self._pos >= self._vpn.shape[0] and not self._refill():
                return
            k = min(n, self._vpn.shape[0] - self._pos)
            lo = self._pos
            self._pos += k
            n -= k
            yield self._vpn[lo : lo + k], self._write[lo : lo + k]

    def _check_range(self, vpn: np.ndarray) -> None:
        p = self.params
        if p.map_first_vpn is None or vpn.shape[0] == 0:
            return
        lo, hi = int(vpn.min()), int(vpn.max())
        end = p.map_first_vpn + int(p.map_pages)  # type: ignore[arg-type]
        if lo < p.map_first_vpn or hi >= end:
            bad = lo if lo < p.map_first_vpn else hi
            raise TraceError(f"{os.fspath(p.path)}: page {bad:#x} lies outside the stated range "
                             f"[{p.map_first_vpn:#x}, {end:#x}) (map_first_vpn, map_pages)")

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """The trace references of the tick ``[now_ns, now_ns + tick_ns)``."""
        n = self._rate.take(tick_ns)
        if n == 0 or self.finished:
            return AccessBatch.empty()
        if self.params.fidelity == Fidelity.PAGE:
            vpn, ref, w = self._take_pages(n)
        else:
            vpns, writes = [], []
            for piece, piece_w in self._take(n):
                self._check_range(piece)
                vpns.append(piece)
                writes.append(piece_w)
            if not vpns:
                return AccessBatch.empty()
            vpn = np.concatenate(vpns)  # a copy: the reader's chunk is not kept
            w = np.concatenate(writes)
            ref = np.ones(vpn.shape[0], np.int64)
        if vpn.shape[0] == 0:
            return AccessBatch.empty()
        self.refs_replayed += int(ref.sum())
        return AccessBatch(np.full(vpn.shape[0], self.params.process, np.int32), vpn, w, ref,
                           self.content.tokens(vpn, w), ())

    def _take_pages(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The next ``n`` references aggregated by page, in memory bounded by the pages."""
        table = _PageTable()
        for piece, piece_w in self._take(n):
            self._check_range(piece)
            table.add(piece, piece_w)
        return table.pages()


_EMPTY_KEY = np.int64(-1)
_HASH_MUL = GOLDEN_GAMMA


@njit(cache=True)
def _table_add(keys, refs, wrote, shift, vpn, writes, n_used):
    """Count ``vpn`` into an open-addressing table (linear probing); returns the pages in it.

    Fibonacci hashing (multiply by 2**64 / golden ratio, keep the top bits)
    spreads the runs of neighbouring pages a trace is made of.
    """
    mask = keys.shape[0] - 1
    for i in range(vpn.shape[0]):
        key = vpn[i]
        slot = np.int64((np.uint64(key) * _HASH_MUL) >> shift)
        while keys[slot] != key and keys[slot] != _EMPTY_KEY:
            slot = (slot + 1) & mask
        if keys[slot] == _EMPTY_KEY:
            keys[slot] = key
            n_used += 1
        refs[slot] += 1
        wrote[slot] |= writes[i]
    return n_used


@njit(cache=True)
def _table_insert(keys, refs, wrote, shift, src_keys, src_refs, src_wrote):
    """Put distinct pages with their counts into an empty table (a rehash)."""
    mask = keys.shape[0] - 1
    for i in range(src_keys.shape[0]):
        slot = np.int64((np.uint64(src_keys[i]) * _HASH_MUL) >> shift)
        while keys[slot] != _EMPTY_KEY:
            slot = (slot + 1) & mask
        keys[slot] = src_keys[i]
        refs[slot] = src_refs[i]
        wrote[slot] = src_wrote[i]


class _PageTable:
    """Distinct pages of a tick with their reference counts and write flags.

    A hash table, not ``np.unique``: a trace tick has many references over few
    pages (a program's working set), and counting them in O(1) each is several
    times faster than sorting them. The table holds at most twice the pages
    it may have to take, so its memory follows the tick's pages, not its length.
    """

    def __init__(self) -> None:
        self.n_used = 0
        self._alloc(1 << 12)

    def _alloc(self, size: int) -> None:
        self.keys = np.full(size, _EMPTY_KEY, dtype=np.int64)
        self.refs = np.zeros(size, dtype=np.int64)
        self.wrote = np.zeros(size, dtype=np.bool_)
        self.shift = np.uint64(64 - (size.bit_length() - 1))

    def add(self, vpn: np.ndarray, writes: np.ndarray) -> None:
        """Count a piece of references (at most half the table may be full after it)."""
        need = 2 * (self.n_used + vpn.shape[0])
        if need > self.keys.shape[0]:  # grow first: rehash what is counted so far
            keys, refs, wrote = self.pages()
            self._alloc(1 << (need - 1).bit_length())
            _table_insert(self.keys, self.refs, self.wrote, self.shift, keys, refs, wrote)
        self.n_used = _table_add(self.keys, self.refs, self.wrote, self.shift,
                                 np.ascontiguousarray(vpn, dtype=np.int64),
                                 np.ascontiguousarray(writes, dtype=np.bool_), self.n_used)

    def pages(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pages sorted by VPN, their references, whether any wrote)."""
        occupied = np.flatnonzero(self.keys != _EMPTY_KEY)
        order = np.argsort(self.keys[occupied])
        slots = occupied[order]
        return self.keys[slots], self.refs[slots], self.wrote[slots]
