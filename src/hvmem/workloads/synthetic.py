"""Synthetic workloads: what the programs of a guest touch, tick by tick, and their parameters.

What is modelled
----------------
A synthetic workload is one guest process touching one region of its virtual
address space at a steady rate. Each kind of workload is a class implementing
the :class:`~hvmem.workloads.base.Workload` protocol, configured by a frozen
dataclass of this module whose fields carry their units (``refs_per_s``,
``region_pages``, ``duration_s``...) and which checks itself, raising
:class:`~hvmem.errors.ConfigError` that names the field::

    UniformParams    every page of the region equally likely
    ZipfParams       page of popularity rank k with probability ~ k**-alpha
    HotColdParams    hot_pages_frac of the pages get hot_refs_frac of the references
    ScanParams       a cyclic sequential sweep, pages per second or per tick
    IdleParams       a few references per second over a few pages (housekeeping)
    PhasesParams     a schedule of the above: the working set grows, shrinks, moves
    ChurnParams      mmap/munmap of chunks on a schedule, touching what is live

The workloads themselves live in modules of their own: the first five (the
*generators*) in :mod:`~hvmem.workloads.generators`, the schedule in
:mod:`~hvmem.workloads.phases`, churn in :mod:`~hvmem.workloads.churn`;
:func:`~hvmem.workloads.factory.make_workload` builds the workload for any of
them. ``setup()`` maps the region (one ``MAP``); churn maps and unmaps as it
goes. Every write stores a token from the workload's content model
(:mod:`hvmem.workloads.content`): zero, guest-image or private pages in the
proportions of ``params.content``.

Rates and time. A rate in references per second turns into a whole number of
references per tick, the fraction carried to the next tick
(:class:`~hvmem.workloads.base.Rate`), so the long-run count is exact. Each
reference is a write with probability ``write_frac`` (default 0.3: loads
outnumber stores about two to one in integer code; the Lackey generator in
``trace_writer.py`` has a similar mix).

Fidelity (``params.fidelity``, see :class:`~hvmem.workloads.base.Fidelity`):

* ``"mmu"``: one entry per reference, in order, ``refs == 1``;
* ``"page"``: the tick's references are drawn one by one exactly as in mmu
  mode, then aggregated: one entry per distinct page, ``refs`` = its count,
  ``is_write`` if any of its references wrote (drawn as
  ``1 - (1 - write_frac) ** refs``, which is exact for independent writes).
  The total reference count is preserved and the batch never has more entries
  than the region has pages. Entries come in the sampler's index order: page
  order for uniform, idle and churn, popularity-rank order (hottest first) for
  Zipf, the hot set first for hot/cold, sweep order for scans.

How pages are drawn (the alias method, Zipf blocks, counting in page mode):
:mod:`hvmem.workloads.samplers`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypeVar

from hvmem.units import NS_PER_S as _NS_PER_S
from hvmem.workloads.base import VPN_SPACE_PAGES, Fidelity
from hvmem.workloads.checks import check_fidelity as _check_fidelity
from hvmem.workloads.checks import check_int as _check_int
from hvmem.workloads.checks import check_real as _check_real
from hvmem.workloads.checks import fail as _fail
from hvmem.workloads.content import ContentParams

__all__ = [
    "DEFAULT_FIRST_VPN",
    "MAX_REGION_PAGES",
    "ChurnParams",
    "GeneratorParams",
    "HotColdParams",
    "IdleParams",
    "Phase",
    "PhasesParams",
    "RegionParams",
    "ScanParams",
    "UniformParams",
    "ZipfParams",
    "with_fidelity",
]

#: Default first page of a workload's region: VPN 0x400 is address 0x400000, where
#: x86-64 ELF executables traditionally start; any VPN will do.
DEFAULT_FIRST_VPN = 0x400
#: The samplers pack page offsets in 32 bits.
MAX_REGION_PAGES = (1 << 31) - 1


# ----------------------------------------------------------------------- params


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionParams:
    """Fields every synthetic workload shares: where it works and how it writes.

    Attributes:
        region_pages: pages of the region the workload touches (mapped by setup()).
        first_vpn: first guest-virtual page of the region.
        process: index of the guest process that runs the workload.
        file_backed: map the region as a file mapping (page cache) instead of
            anonymous memory.
        write_frac: share of references that are writes.
        fidelity: ``"page"`` or ``"mmu"`` (see the module essay).
        content: what writes store (zero, image and private pages).
    """

    region_pages: int
    first_vpn: int = DEFAULT_FIRST_VPN
    process: int = 0
    file_backed: bool = False
    write_frac: float = 0.3
    fidelity: str = Fidelity.PAGE
    content: ContentParams = field(default_factory=ContentParams)

    def __post_init__(self) -> None:
        self._validate()

    def _validate(self) -> None:
        _check_int(self, "region_pages", 1, MAX_REGION_PAGES)
        _check_int(self, "first_vpn", 0, VPN_SPACE_PAGES - 1)
        if self.first_vpn + self.region_pages > VPN_SPACE_PAGES:
            raise _fail(self, "region_pages", f"a region ending at most at VPN "
                        f"{VPN_SPACE_PAGES:#x} (48-bit addresses)",
                        self.region_pages)
        _check_int(self, "process", 0)
        if not isinstance(self.file_backed, bool):
            raise _fail(self, "file_backed", "true or false", self.file_backed)
        _check_real(self, "write_frac", 0.0, 1.0)
        _check_fidelity(self)
        if not isinstance(self.content, ContentParams):
            raise _fail(self, "content", "ContentParams", type(self.content).__name__)

    @property
    def page_fidelity(self) -> bool:
        """True in page fidelity, False in mmu fidelity."""
        return self.fidelity == Fidelity.PAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class UniformParams(RegionParams):
    """Every page of the region equally likely.

    Attributes:
        refs_per_s: memory references per simulated second.
    """

    refs_per_s: float = 1e6

    def _validate(self) -> None:
        RegionParams._validate(self)
        _check_real(self, "refs_per_s", 0.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipfParams(RegionParams):
    """Zipf popularity: the page of rank k gets a share ~ k**-alpha.

    Attributes:
        refs_per_s: memory references per simulated second.
        alpha: the skew; 0 is uniform, about 1 is web-like, larger is more skewed.
    """

    refs_per_s: float = 1e6
    alpha: float = 1.0

    def _validate(self) -> None:
        RegionParams._validate(self)
        _check_real(self, "refs_per_s", 0.0)
        _check_real(self, "alpha", 0.0, 20.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class HotColdParams(RegionParams):
    """A hot set: ``hot_pages_frac`` of the pages get ``hot_refs_frac`` of the references.

    Within the hot set and within the rest, pages are equally likely. The
    classic "80/20" rule is ``hot_pages_frac=0.2, hot_refs_frac=0.8``.

    Attributes:
        refs_per_s: memory references per simulated second.
        hot_pages_frac: share of the region's pages that are hot (0 < f < 1).
        hot_refs_frac: share of the references that go to the hot pages.
    """

    refs_per_s: float = 1e6
    hot_pages_frac: float = 0.2
    hot_refs_frac: float = 0.8

    def _validate(self) -> None:
        RegionParams._validate(self)
        _check_real(self, "refs_per_s", 0.0)
        _check_real(self, "hot_pages_frac", 0.0, 1.0, lo_open=True)
        if self.hot_pages_frac >= 1.0:
            raise _fail(self, "hot_pages_frac", "a fraction > 0 and < 1", self.hot_pages_frac)
        _check_real(self, "hot_refs_frac", 0.0, 1.0)
        if self.region_pages < 2:
            raise _fail(self, "region_pages", "at least 2 pages (a hot and a cold one)",
                        self.region_pages)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanParams(RegionParams):
    """A cyclic sequential sweep over the region (a scan, a streaming copy, a GC mark).

    Set exactly one of the three rates.

    Attributes:
        pages_per_s: pages visited per simulated second.
        pages_per_tick: pages visited per tick, whatever its length.
        refs_per_s: references per second; pages per second = refs_per_s / refs_per_page.
        refs_per_page: references each visit makes (64: one per 64-byte cache line).
        start_page: offset in the region where the sweep starts.
    """

    pages_per_s: float | None = None
    pages_per_tick: int | None = None
    refs_per_s: float | None = None
    refs_per_page: int = 64
    start_page: int = 0

    def _validate(self) -> None:
        RegionParams._validate(self)
        given = [n for n in ("pages_per_s", "pages_per_tick", "refs_per_s")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            raise _fail(self, "pages_per_s",
                        "exactly one of pages_per_s, pages_per_tick, refs_per_s", given)
        _check_real(self, "pages_per_s", 0.0, optional=True)
        _check_real(self, "refs_per_s", 0.0, optional=True)
        if self.pages_per_tick is not None:
            _check_int(self, "pages_per_tick", 0)
        _check_int(self, "refs_per_page", 1, 1 << 20)
        _check_int(self, "start_page", 0, self.region_pages - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleParams(RegionParams):
    """An idle guest: a trickle of references over a few pages (timers, housekeeping).

    The region (all of it mapped) is what the idle guest once allocated; only
    ``housekeeping_pages`` random pages of it are touched, at ``refs_per_s``.

    Attributes:
        refs_per_s: references per simulated second (a few).
        housekeeping_pages: pages the housekeeping touches.
    """

    refs_per_s: float = 8.0
    housekeeping_pages: int = 16
    write_frac: float = 0.5

    def _validate(self) -> None:
        RegionParams._validate(self)
        _check_real(self, "refs_per_s", 0.0)
        _check_int(self, "housekeeping_pages", 1, self.region_pages)


#: Parameters of the workloads a phase may run.
GeneratorParams = UniformParams | ZipfParams | HotColdParams | ScanParams | IdleParams
_GENERATOR_TYPES = (UniformParams, ZipfParams, HotColdParams, ScanParams, IdleParams)


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One phase of a schedule: a duration and what runs during it.

    Give either ``params`` (a full generator, whose region must lie inside the
    phased region) or ``working_set_pages`` (the schedule's ``base`` generator
    over that many pages starting ``offset_pages`` into the region).

    Attributes:
        duration_s: how long the phase lasts, in simulated seconds.
        params: the generator of this phase.
        working_set_pages: or the size of the working set for ``base``.
        offset_pages: where that working set starts within the region.
    """

    duration_s: float
    params: GeneratorParams | None = None
    working_set_pages: int | None = None
    offset_pages: int = 0

    def __post_init__(self) -> None:
        _check_real(self, "duration_s", 0.0, lo_open=True)
        if self.working_set_pages is not None:
            _check_int(self, "working_set_pages", 1)
        _check_int(self, "offset_pages", 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhasesParams:
    """A schedule of generators over one region, so the working set changes over time.

    Attributes:
        region_pages: pages mapped at setup; every phase stays inside them.
        first_vpn: first guest-virtual page of the region.
        process: the guest process (every phase runs in it).
        file_backed: map the region as a file mapping.
        phases: the schedule, in order.
        base: the generator working-set phases resize (default: uniform at 10**6 refs/s).
        loop: repeat the schedule; otherwise the last phase goes on for ever.
        fidelity: applies to every phase (their own ``fidelity`` is overridden).
    """

    region_pages: int
    phases: tuple[Phase, ...]
    first_vpn: int = DEFAULT_FIRST_VPN
    process: int = 0
    file_backed: bool = False
    base: GeneratorParams | None = None
    loop: bool = False
    fidelity: str = Fidelity.PAGE

    def __post_init__(self) -> None:
        _check_int(self, "region_pages", 1, MAX_REGION_PAGES)
        _check_int(self, "first_vpn", 0, VPN_SPACE_PAGES - 1)
        if self.first_vpn + self.region_pages > VPN_SPACE_PAGES:
            raise _fail(self, "region_pages", "a region inside the 48-bit address space",
                        self.region_pages)
        _check_int(self, "process", 0)
        _check_fidelity(self)
        if not isinstance(self.loop, bool):
            raise _fail(self, "loop", "true or false", self.loop)
        if not isinstance(self.file_backed, bool):
            raise _fail(self, "file_backed", "true or false", self.file_backed)
        if self.base is not None and not isinstance(self.base, _GENERATOR_TYPES):
            raise _fail(self, "base", "uniform, zipf, hot/cold, scan or idle parameters",
                        type(self.base).__name__)
        if not isinstance(self.phases, tuple | list) or not self.phases:
            raise _fail(self, "phases", "a non-empty list of phases", self.phases)
        self.resolved()  # checks every phase

    def resolved(self) -> tuple[tuple[int, GeneratorParams], ...]:
        """Each phase as (duration in ns, the generator parameters it runs)."""
        out = []
        for i, phase in enumerate(self.phases):
            where = f"PhasesParams.phases[{i}]"
            if not isinstance(phase, Phase):
                raise _fail("PhasesParams", f"phases[{i}]", "a Phase", type(phase).__name__)
            _check_real(phase, "duration_s", 0.0, lo_open=True)
            duration_ns = max(1, round(phase.duration_s * _NS_PER_S))
            if (phase.params is None) == (phase.working_set_pages is None):
                raise _fail(where, "params", "exactly one of params and working_set_pages",
                            (phase.params, phase.working_set_pages))
            if phase.params is not None:
                params = phase.params
                if not isinstance(params, _GENERATOR_TYPES):
                    raise _fail(where, "params",
                                "uniform, zipf, hot/cold, scan or idle parameters",
                                type(params).__name__)
                if params.process != self.process:
                    raise _fail(f"{where}.params", "process", f"{self.process} (the schedule's)",
                                params.process)
                lo, hi = params.first_vpn, params.first_vpn + params.region_pages
                if lo < self.first_vpn or hi > self.first_vpn + self.region_pages:
                    raise _fail(f"{where}.params", "first_vpn",
                                f"a range inside [{self.first_vpn:#x}, "
                                f"{self.first_vpn + self.region_pages:#x})",
                                f"[{lo:#x}, {hi:#x})")
            else:
                ws = _check_int(phase, "working_set_pages", 1, self.region_pages)
                off = _check_int(phase, "offset_pages", 0, self.region_pages - ws)
                base = self.base if self.base is not None else UniformParams(region_pages=ws)
                params = dataclasses.replace(base, region_pages=ws,
                                             first_vpn=self.first_vpn + off, process=self.process)
            if params.fidelity != self.fidelity:
                params = dataclasses.replace(params, fidelity=self.fidelity)
            out.append((duration_ns, params))
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChurnParams(RegionParams):
    """Allocation churn: chunks mapped, used and unmapped on a schedule.

    The region is an arena of ``region_pages // chunk_pages`` slots; nothing is
    mapped at setup.

    Attributes:
        chunk_pages: pages per allocation.
        allocs_per_s: allocations per simulated second.
        lifetime_s: (mean) time from an allocation to its free.
        lifetime_dist: ``"exponential"`` or ``"fixed"``.
        refs_per_s: references per second, spread evenly over the live pages.
        touch_on_alloc: write every page of a new chunk once when it is mapped.
    """

    chunk_pages: int = 256
    allocs_per_s: float = 10.0
    lifetime_s: float = 5.0
    lifetime_dist: str = "exponential"
    refs_per_s: float = 1e6
    touch_on_alloc: bool = True

    def _validate(self) -> None:
        RegionParams._validate(self)
        _check_int(self, "chunk_pages", 1, self.region_pages)
        _check_real(self, "allocs_per_s", 0.0)
        _check_real(self, "lifetime_s", 0.0, lo_open=True)
        if self.lifetime_dist not in ("exponential", "fixed"):
            raise _fail(self, "lifetime_dist", "'exponential' or 'fixed'", self.lifetime_dist)
        _check_real(self, "refs_per_s", 0.0)
        if not isinstance(self.touch_on_alloc, bool):
            raise _fail(self, "touch_on_alloc", "true or false", self.touch_on_alloc)


_P = TypeVar("_P")


def with_fidelity(params: _P, fidelity: str) -> _P:
    """A copy of workload parameters with another fidelity (what a simulator sets)."""
    return dataclasses.replace(params, fidelity=fidelity)  # type: ignore[type-var]
