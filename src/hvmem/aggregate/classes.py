"""Heat classes: a workload's pages as a few groups that are touched alike.

What is modelled
----------------
The aggregate fidelity (``aggregate/__init__.py``) keeps no page. It keeps, per
VM, how many pages of each *class* are in each backing state. A class is a set
of pages the workload touches with the same probability per tick, whose
contents are of one kind (zero, image or private data, ``workloads/content.py``),
inside one *segment* of the workload's region.

Where the probabilities come from. Page fidelity draws each tick's
references from a distribution over the region's pages (``workloads/
samplers.py``); a page of per-tick reference rate ``lam`` is touched in a tick
with probability ``1 - exp(-lam)`` (the references of a tick are many and
independent: Poisson). A class holds pages of similar ``lam``:

* uniform: one class, ``lam = refs / n``;
* hot/cold: two, the hot set and the rest;
* Zipf: rank blocks growing eightfold from rank 64 (``lam`` of rank ``i`` is
  ``refs * i**-alpha / H``); the class's probability is the block's mean
  ``1 - exp(-lam)``, so the expected number of distinct pages a tick touches
  is exact;
* idle: the housekeeping pages, and the rest, never touched;
* scan: spatial blocks of the region, each touched as the sweep's cursor
  passes it (``scan_lo``/``scan_hi``, the block in sweep coordinates), never
  drawn at random: the first sweep faults pages in at its own steady pace.

First touches. A Zipf block's pages differ in ``lam`` by up to the block's
rank span to the power ``alpha`` (tenfold at ``alpha`` 1.1): its hotter
pages are touched for the first time early, so those still never touched
are colder than the block's mean, and drawing their first touches at the
mean probability grows the working set too fast (a 1.5 GiB Zipf region of
``alpha`` 1.1 at 50,000 references a second: 1,100 MiB touched at 100 s
against 1,015 MiB by the pages' own rates). Each class therefore carries
``FIRST_TOUCH_BINS`` sub-blocks of its ranks, equal spans of log-rank, with
their own probabilities and page shares (``sub_prob``, ``sub_pages``); the
kernel draws a never-touched page's first touch at the mean over the
sub-blocks' pages still never touched, which it ages tick by tick as
``(1 - p_j)`` each (``kernel._first_touch``). The 8-fold error of the
working set's growth is then that of blocks 1.7-fold in rank (under 10 MiB
there). Other touches keep the class's mean: a page once touched is as
likely as any of its class to be touched again.

A touched page is written with probability ``(1 - exp(-lam w)) / (1 -
exp(-lam))``: at least one of its references is a write.

Phases. A phased workload changes its generator over time; each phase's
generator draws over a random permutation of its own range of the region.
The region is cut into segments at every phase's range ends, and each phase
has its own classes inside each segment (pages of the segment outside the
phase's range form a class touched never). When a phase starts, the masses
of each segment are pooled and split among the new phase's classes of that
segment in proportion to their size: a new random permutation puts any page
of the segment in any class with the same odds (``aggregate/model.py``).

What is lost: which page is which (so no trace replay and no MMU), and the
heat inside a class (a class's pages are alike; Zipf's blocks bound the
spread to eightfold in rank).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hvmem.errors import ConfigError
from hvmem.units import NS_PER_S
from hvmem.workloads.content import ContentParams
from hvmem.workloads.synthetic import (
    HotColdParams,
    IdleParams,
    PhasesParams,
    ScanParams,
    UniformParams,
    ZipfParams,
)

#: Content kinds of a class (``workloads/content.py``).
CONTENT_ZERO, CONTENT_IMAGE, CONTENT_PRIVATE = 0, 1, 2

#: Zipf's rank blocks: the first ends at this rank, each next one this many times further.
ZIPF_FIRST_BLOCK_RANKS = 64
ZIPF_BLOCK_GROWTH = 8
#: Sub-blocks of a class's ranks whose never-touched pages age apart (first touches).
FIRST_TOUCH_BINS = 4
#: Spatial blocks a sweep's region is cut into.
SCAN_BLOCKS = 16
#: Scan phases touch pages in order; far enough into a region, a block counts as swept.
NEVER = math.inf


@dataclass(frozen=True, slots=True)
class PhaseClasses:
    """One phase's classes of one VM (arrays of one length, the classes)."""

    duration_ns: float  # how long the phase lasts (inf: for ever)
    segment: np.ndarray  # int64: the segment each class lies in
    pages: np.ndarray  # int64: pages in the class
    touch_prob: np.ndarray  # float64: a page's chance of a touch in a tick (random classes)
    write_prob: np.ndarray  # float64: a touched page's chance of a write
    sub_prob: np.ndarray  # float64 [classes, FIRST_TOUCH_BINS]: the sub-blocks' touch chances
    sub_pages: np.ndarray  # float64 [classes, FIRST_TOUCH_BINS]: their shares of the pages
    content: np.ndarray  # int8: CONTENT_ZERO, CONTENT_IMAGE or CONTENT_PRIVATE
    scan_lo: np.ndarray  # float64: the class's pages in sweep coordinates, -1: not a sweep
    scan_hi: np.ndarray
    scan_pages_per_tick: float  # the sweep's pace (0: no sweep in this phase)
    scan_len: float  # the sweep's length in pages
    scan_start: float  # where the sweep starts


@dataclass(frozen=True, slots=True)
class WorkloadClasses:
    """A VM's workload as classes: its segments, its phases and whether they loop."""

    segment_pages: np.ndarray  # int64, pages per segment
    phases: tuple[PhaseClasses, ...]
    loop: bool
    image: str  # the guest image whose pages the image classes hold
    compressible_frac: float  # pages compressing to at most 2 KiB
    compressed_frame_frac: float  # a compressed page's mean share of a frame


def workload_classes(params: object, tick_ns: int, vm: str = "") -> WorkloadClasses:
    """The classes of a workload's parameters (a one-line ConfigError for one it cannot hold)."""
    if isinstance(params, PhasesParams):
        resolved = params.resolved()
        region0 = params.first_vpn
        cuts = {0, params.region_pages}
        for _, g in resolved:
            cuts.update((g.first_vpn - region0, g.first_vpn - region0 + g.region_pages))
        loop = params.loop
    elif isinstance(params, _GENERATORS):
        resolved = ((NEVER, params),)
        region0 = params.first_vpn
        cuts = {0, params.region_pages}
        loop = False
    else:
        raise ConfigError(f"{vm}: the aggregate fidelity holds synthetic workloads (uniform, "
                          f"zipf, hotcold, scan, idle, phases); a {type(params).__name__} "
                          "(trace replay, demand, churn) needs page fidelity",
                          path=("VmConfig", "workload"))
    edges = np.array(sorted(cuts), dtype=np.int64)
    seg_lo, seg_hi = edges[:-1], edges[1:]
    phases = tuple(_phase(duration, g, g.first_vpn - region0, seg_lo, seg_hi, tick_ns)
                   for duration, g in resolved)
    content = resolved[0][1].content
    comp = content.image.compressibility
    to1, to2 = comp.to_1kib_frac, comp.to_2kib_frac
    frame_frac = (0.25 * to1 + 0.5 * to2) / (to1 + to2) if to1 + to2 > 0 else 0.5
    return WorkloadClasses(segment_pages=seg_hi - seg_lo, phases=phases, loop=loop,
                           image=content.image.name, compressible_frac=to1 + to2,
                           compressed_frame_frac=frame_frac)


_GENERATORS = (UniformParams, ZipfParams, HotColdParams, ScanParams, IdleParams)


def _heat_blocks(g: object, tick_ns: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A random generator's heat blocks: pages, touch and write probability, sub-blocks.

    The sub-blocks (first touches): each block's touch chances and page shares,
    ``FIRST_TOUCH_BINS`` of each.
    """
    n = g.region_pages
    tick_s = tick_ns / NS_PER_S
    w = g.write_frac
    if isinstance(g, ZipfParams):
        ranks = np.arange(1, n + 1, dtype=np.float64)
        weight = ranks ** -g.alpha
        lam = g.refs_per_s * tick_s * weight / weight.sum()
        bounds = [0]
        b = ZIPF_FIRST_BLOCK_RANKS
        while b < n:
            bounds.append(b)
            b *= ZIPF_BLOCK_GROWTH
        bounds.append(n)
        lams = [lam[a:z] for a, z in zip(bounds[:-1], bounds[1:], strict=True)]
        firsts = bounds[:-1]
    elif isinstance(g, HotColdParams):
        n_hot = max(1, min(n, round(n * g.hot_pages_frac)))
        refs = g.refs_per_s * tick_s
        lams = [np.full(n_hot, refs * g.hot_refs_frac / n_hot)]
        if n > n_hot:
            lams.append(np.full(n - n_hot, refs * (1 - g.hot_refs_frac) / (n - n_hot)))
    elif isinstance(g, IdleParams):
        hk = g.housekeeping_pages
        lams = [np.full(hk, g.refs_per_s * tick_s / hk)]
        if n > hk:
            lams.append(np.zeros(n - hk))
    else:  # uniform
        lams = [np.full(n, g.refs_per_s * tick_s / n)]
    if not isinstance(g, ZipfParams):
        firsts = [0] * len(lams)  # a block of equal ranks: any sub-blocks are alike
    pages, touch, write, sub_p, sub_n = [], [], [], [], []
    for lam_b, r0 in zip(lams, firsts, strict=True):
        hit = -np.expm1(-lam_b)
        pages.append(lam_b.size)
        touch.append(float(hit.mean()))
        written = -np.expm1(-lam_b * w)
        write.append(float(written.sum() / hit.sum()) if hit.sum() > 0 else w)
        # Equal spans of log-rank, ranks counted from 1.
        edges = np.unique(np.round(np.geomspace(r0 + 1, r0 + lam_b.size + 1,
                                                FIRST_TOUCH_BINS + 1)).astype(np.int64) - r0 - 1)
        p_j = np.zeros(FIRST_TOUCH_BINS)
        n_j = np.zeros(FIRST_TOUCH_BINS)
        for j, (a, z) in enumerate(zip(edges[:-1], edges[1:], strict=False)):
            p_j[j] = hit[a:z].mean()
            n_j[j] = (z - a) / lam_b.size
        sub_p.append(p_j)
        sub_n.append(n_j)
    return (np.array(pages, np.int64), np.array(touch), np.array(write), np.array(sub_p),
            np.array(sub_n))


def _phase(duration_ns: float, g: object, offset: int, seg_lo: np.ndarray, seg_hi: np.ndarray,
           tick_ns: int) -> PhaseClasses:
    """One phase's classes: its generator's blocks inside each segment, by content kind."""
    lo, hi = offset, offset + g.region_pages
    content: ContentParams = g.content
    kinds = ((CONTENT_ZERO, content.zero_frac), (CONTENT_IMAGE, content.image_frac),
             (CONTENT_PRIVATE, 1.0 - content.zero_frac - content.image_frac))
    seg_l, n_l, p_l, w_l, c_l, slo_l, shi_l = [], [], [], [], [], [], []
    sp_l, sn_l = [], []
    scan_rate = scan_len = scan_start = 0.0
    alike = np.zeros(FIRST_TOUCH_BINS)
    alike[0] = 1.0

    def add(seg: int, n: float, p: float, w: float, s_lo: float = -1.0, s_hi: float = -1.0,
            sub_p: np.ndarray | None = None, sub_n: np.ndarray = alike) -> None:
        for kind, f in kinds:
            k = int(round(n * f))
            if k > 0:
                seg_l.append(seg)
                n_l.append(k)
                p_l.append(p)
                w_l.append(w)
                c_l.append(kind)
                sp_l.append(np.full(FIRST_TOUCH_BINS, p) if sub_p is None else sub_p)
                sn_l.append(sub_n)
                # A sweep's block holds each content kind spread over its length.
                slo_l.append(s_lo)
                shi_l.append(s_hi)

    if isinstance(g, ScanParams):
        tick_s = tick_ns / NS_PER_S
        if g.pages_per_tick is not None:
            scan_rate = float(g.pages_per_tick)
        elif g.pages_per_s is not None:
            scan_rate = g.pages_per_s * tick_s
        else:
            scan_rate = g.refs_per_s * tick_s / g.refs_per_page
        scan_len, scan_start = float(g.region_pages), float(g.start_page)
        w = 1.0 - (1.0 - g.write_frac) ** g.refs_per_page
        edges = np.linspace(lo, hi, SCAN_BLOCKS + 1)
    for s, (a, z) in enumerate(zip(seg_lo.tolist(), seg_hi.tolist(), strict=True)):
        inside = max(0, min(z, hi) - max(a, lo))
        if z - a - inside > 0:
            add(s, z - a - inside, 0.0, 0.0)
        if not inside:
            continue
        if isinstance(g, ScanParams):
            for b0, b1 in zip(edges[:-1], edges[1:], strict=True):
                x0, x1 = max(a, b0), min(z, b1)
                if x1 > x0:
                    add(s, x1 - x0, 0.0, w, x0 - lo, x1 - lo)
        else:
            pages, touch, write, sub_p, sub_n = _heat_blocks(g, tick_ns)
            share = inside / g.region_pages  # the permutation spreads each block evenly
            for b, (n_b, p_b, w_b) in enumerate(zip(pages.tolist(), touch.tolist(),
                                                    write.tolist(), strict=True)):
                add(s, n_b * share, p_b, w_b, sub_p=sub_p[b], sub_n=sub_n[b])
    return PhaseClasses(
        duration_ns=float(duration_ns), segment=np.array(seg_l, np.int64),
        pages=np.array(n_l, np.int64), touch_prob=np.array(p_l), write_prob=np.array(w_l),
        sub_prob=np.array(sp_l).reshape(-1, FIRST_TOUCH_BINS),
        sub_pages=np.array(sn_l).reshape(-1, FIRST_TOUCH_BINS),
        content=np.array(c_l, np.int8), scan_lo=np.array(slo_l), scan_hi=np.array(shi_l),
        scan_pages_per_tick=scan_rate, scan_len=scan_len, scan_start=scan_start)
