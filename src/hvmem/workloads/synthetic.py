"""Synthetic workloads: what the programs of a guest touch, tick by tick, and their parameters.

What is modelled
----------------
A synthetic workload is one guest process touching one region of its virtual
address space at a steady rate. Each kind of workload is a class implementing
the :class:`~hvmem.workloads.base.Workload` protocol, configured by a frozen
dataclass of this module whose fields carry their units (``refs_per_s``,
``region_pages``, ``duration_s``...) and are declared with their bounds and
meaning (:mod:`hvmem.params`); each checks itself, raising
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
from dataclasses import dataclass
from typing import Any, TypeVar

from hvmem.params import REQUIRED, check, choice, fail, flag, frac, number, size, table, time, whole
from hvmem.units import NS_PER_S, PAGE_SHIFT, size_text
from hvmem.workloads.base import MAX_PROCESSES, MAX_REFS_PER_S, VPN_SPACE_PAGES, Fidelity
from hvmem.workloads.checks import check_int as _check_int
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


# ------------------------------------------------------------------ declarations

#: Largest region a scenario may state: 4 TiB, more than any VM has (the samplers could
#: take MAX_REGION_PAGES).
_MAX_REGION_SIZE_PAGES = 1 << 30
#: Longest phase, churn lifetime or run a scenario may state: 30 days.
_MAX_SECONDS = 30 * 86400.0
_FIDELITIES = tuple(str(f) for f in Fidelity)



def _refs_per_s(default: float | None, doc: str = "memory references per simulated second",
                **kw: object) -> Any:
    return number(default, doc, lo=0.0, hi=MAX_REFS_PER_S, unit="1/s", **kw)


def _region(doc: str) -> Any:
    return size(REQUIRED, doc, unit="pages", lo=0, lo_open=True, hi=_MAX_REGION_SIZE_PAGES)


def _fidelity() -> Any:
    return choice(Fidelity.PAGE, _FIDELITIES, "'page' or 'mmu' (see the module essay)", key=None,
                  owner="fidelity")


def _content() -> Any:
    return table(ContentParams, "what writes store (zero, image and private pages)",
                 factory=ContentParams, key=None, owner="vm[].content")


def _process() -> Any:
    return whole(0, "the guest process that runs it (0 is the first)", lo=0,
                 hi=MAX_PROCESSES - 1)


# ----------------------------------------------------------------------- params


@dataclass(frozen=True, slots=True, kw_only=True)
class RegionParams:
    """Fields every synthetic workload shares: where it works and how it writes."""

    region_pages: int = _region("the region the workload touches (mapped at setup)")
    first_vpn: int = whole(DEFAULT_FIRST_VPN, "first guest-virtual page of the region", lo=0,
                           hi=VPN_SPACE_PAGES - 1)
    process: int = _process()
    file_backed: bool = flag(False, "map the region as a file mapping (page cache) instead of "
                             "anonymous memory")
    write_frac: float = frac(0.3, "share of references that are writes",
                             source="assumed (module essay)")
    fidelity: str = _fidelity()
    content: ContentParams = _content()

    def __post_init__(self) -> None:
        check(self)
        self._validate()

    def _validate(self) -> None:
        if self.first_vpn + self.region_pages > VPN_SPACE_PAGES:
            raise _fail(self, "region_pages", f"a region ending at most at VPN "
                        f"{VPN_SPACE_PAGES:#x} (48-bit addresses)",
                        self.region_pages)

    @property
    def page_fidelity(self) -> bool:
        """True in page fidelity, False in mmu fidelity."""
        return self.fidelity == Fidelity.PAGE


@dataclass(frozen=True, slots=True, kw_only=True)
class UniformParams(RegionParams):
    """Every page of the region equally likely."""

    refs_per_s: float = _refs_per_s(1e6)


@dataclass(frozen=True, slots=True, kw_only=True)
class ZipfParams(RegionParams):
    """Zipf popularity: the page of rank k gets a share ~ k**-alpha."""

    refs_per_s: float = _refs_per_s(1e6)
    alpha: float = number(1.0, "the skew: 0 is uniform, about 1 web-like, larger more skewed",
                          lo=0.0, hi=20.0, source="Breslau et al., INFOCOM 1999")


@dataclass(frozen=True, slots=True, kw_only=True)
class HotColdParams(RegionParams):
    """A hot set: ``hot_pages_frac`` of the pages get ``hot_refs_frac`` of the references.

    Within the hot set and within the rest, pages are equally likely. The
    classic "80/20" rule is ``hot_pages_frac=0.2, hot_refs_frac=0.8``.
    """

    refs_per_s: float = _refs_per_s(1e6)
    hot_pages_frac: float = frac(0.2, "share of the region's pages that are hot", lo_open=True,
                                 hi_open=True)
    hot_refs_frac: float = frac(0.8, "share of the references that go to the hot pages")

    def _validate(self) -> None:
        RegionParams._validate(self)
        if self.region_pages < 2:
            raise _fail(self, "region_pages", "at least 2 pages (a hot and a cold one)",
                        self.region_pages)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanParams(RegionParams):
    """A cyclic sequential sweep over the region (a scan, a streaming copy, a GC mark).

    Set exactly one of the three rates.
    """

    pages_per_s: float | None = number(None, "pages visited per simulated second", lo=0.0,
                                       hi=1e8, unit="1/s", optional=True, none="another rate")
    pages_per_tick: int | None = whole(None, "pages visited per tick, whatever its length",
                                       lo=0, hi=MAX_REGION_PAGES, optional=True,
                                       none="another rate")
    refs_per_s: float | None = _refs_per_s(None, "references per second (pages per second = "
                                           "refs_per_s / refs_per_page)", optional=True,
                                           none="another rate")
    refs_per_page: int = whole(64, "references each visit makes (64: one per 64-byte line)",
                               lo=1, hi=1 << 20)
    start_page: int = whole(0, "offset in the region where the sweep starts", lo=0,
                            hi=MAX_REGION_PAGES - 1)

    def _validate(self) -> None:
        RegionParams._validate(self)
        given = [n for n in ("pages_per_s", "pages_per_tick", "refs_per_s")
                 if getattr(self, n) is not None]
        if len(given) != 1:
            raise _fail(self, "pages_per_s",
                        "exactly one of pages_per_s, pages_per_tick, refs_per_s", given)
        _check_int(self, "start_page", 0, self.region_pages - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdleParams(RegionParams):
    """An idle guest: a trickle of references over a few pages (timers, housekeeping).

    The region (all of it mapped) is what the idle guest once allocated; only
    ``housekeeping_pages`` random pages of it are touched, at ``refs_per_s``.
    """

    refs_per_s: float = _refs_per_s(8.0, "references per simulated second (a few)")
    housekeeping_pages: int = whole(16, "pages the housekeeping touches", lo=1,
                                    hi=MAX_REGION_PAGES)
    write_frac: float = frac(0.5, "share of references that are writes (timers and counters "
                             "write often)", source="assumed")

    def _validate(self) -> None:
        RegionParams._validate(self)
        _check_int(self, "housekeeping_pages", 1, self.region_pages)


#: Parameters of the workloads a phase may run.
GeneratorParams = UniformParams | ZipfParams | HotColdParams | ScanParams | IdleParams
_GENERATOR_TYPES = (UniformParams, ZipfParams, HotColdParams, ScanParams, IdleParams)
_GENERATOR_EXPECT = "uniform, zipf, hot/cold, scan or idle parameters"


@dataclass(frozen=True, slots=True, kw_only=True)
class Phase:
    """One phase of a schedule: a duration and what runs during it.

    Give either ``params`` (a full generator, whose region must lie inside the
    phased region) or ``working_set_pages`` (the schedule's ``base`` generator
    over that many pages starting ``offset_pages`` into the region).
    """

    duration_s: float = time(REQUIRED, "how long the phase lasts", unit="s", lo=0.0,
                             lo_open=True, hi=_MAX_SECONDS)
    params: GeneratorParams | None = table(
        _GENERATOR_TYPES, "the generator of this phase: a kind and its parameters", default=None,
        optional=True, flatten=True, none="the schedule's base over working_set",
        expect=_GENERATOR_EXPECT)
    working_set_pages: int | None = size(None, "or the working set the base generator runs "
                                         "over", unit="pages", lo=0, lo_open=True,
                                         hi=_MAX_REGION_SIZE_PAGES, optional=True,
                                         none="the phase's own generator")
    offset_pages: int = size(0, "where the phase's pages start within the phased region",
                             unit="pages", lo=0, hi=_MAX_REGION_SIZE_PAGES)
    content: ContentParams | None = table(
        ContentParams, "the page mix this phase's writes store, over the VM's (a guest zeroing "
        "its memory at boot: zero_frac = 1.0)", default=None, optional=True,
        none="the VM's content")

    def __post_init__(self) -> None:
        check(self, skip=("params",))  # the schedule checks it, knowing the phase's index


@dataclass(frozen=True, slots=True, kw_only=True)
class PhasesParams:
    """A schedule of generators over one region, so the working set changes over time.

    Every phase stays inside the region; ``fidelity`` applies to every phase
    (their own is overridden).
    """

    region_pages: int = _region("the phased region, mapped at setup")
    phases: tuple[Phase, ...] = table(Phase, "the schedule, in order", array=True)
    first_vpn: int = whole(DEFAULT_FIRST_VPN, "first guest-virtual page of the region", lo=0,
                           hi=VPN_SPACE_PAGES - 1)
    process: int = _process()
    file_backed: bool = flag(False, "map the region as a file mapping")
    base: GeneratorParams | None = table(
        _GENERATOR_TYPES, "the generator working-set phases resize: a kind and its parameters",
        default=None, optional=True, none="uniform at 10**6 references per second",
        expect=_GENERATOR_EXPECT)
    loop: bool = flag(False, "repeat the schedule; otherwise the last phase goes on for ever")
    fidelity: str = _fidelity()

    def __post_init__(self) -> None:
        check(self)
        if self.first_vpn + self.region_pages > VPN_SPACE_PAGES:
            raise _fail(self, "region_pages", "a region inside the 48-bit address space",
                        self.region_pages)
        if not self.phases:
            raise _fail(self, "phases", "a non-empty list of phases", self.phases)
        self.resolved()  # checks every phase

    def resolved(self) -> tuple[tuple[int, GeneratorParams], ...]:
        """Each phase as (duration in ns, the generator parameters it runs)."""
        out = []
        for i, phase in enumerate(self.phases):
            where = ("PhasesParams", "phases", i)
            if not isinstance(phase, Phase):
                raise _fail(where[:-1], i, "a Phase", type(phase).__name__)
            duration_ns = max(1, round(phase.duration_s * NS_PER_S))
            if (phase.params is None) == (phase.working_set_pages is None):
                raise _fail(where, "params", "exactly one of params and working_set_pages",
                            (phase.params, phase.working_set_pages))
            if phase.params is not None:
                params = phase.params
                if not isinstance(params, _GENERATOR_TYPES):
                    raise _fail(where, "params", _GENERATOR_EXPECT, type(params).__name__)
                if params.process != self.process:
                    raise _fail((*where, "params"), "process",
                                f"{self.process} (the schedule's)", params.process)
                lo, hi = params.first_vpn, params.first_vpn + params.region_pages
                if lo < self.first_vpn or hi > self.first_vpn + self.region_pages:
                    raise _fail((*where, "params"), "first_vpn",
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
            if phase.content is not None and params.content != phase.content:
                params = dataclasses.replace(params, content=phase.content)
            out.append((duration_ns, params))
        return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChurnParams(RegionParams):
    """Allocation churn: chunks mapped, used and unmapped on a schedule.

    The region is an arena of ``region_pages // chunk_pages`` slots; nothing is
    mapped at setup.
    """

    chunk_pages: int = size(256, "pages per allocation", unit="pages", lo=0, lo_open=True,
                            hi=_MAX_REGION_SIZE_PAGES)
    allocs_per_s: float = number(10.0, "allocations per simulated second", lo=0.0, hi=1e6,
                                 unit="1/s")
    lifetime_s: float = time(5.0, "(mean) time from an allocation to its free", unit="s",
                             lo=0.0, lo_open=True, hi=_MAX_SECONDS)
    lifetime_dist: str = choice("exponential", ("exponential", "fixed"),
                                "how lifetimes are drawn around lifetime")
    refs_per_s: float = _refs_per_s(1e6, "references per second, spread evenly over the live "
                                    "pages")
    touch_on_alloc: bool = flag(True, "write every page of a new chunk once when it is mapped")

    def _validate(self) -> None:
        RegionParams._validate(self)
        if self.chunk_pages > self.region_pages:
            raise fail(self, "chunk_pages", f"at most the region "
                       f"({size_text(self.region_pages << PAGE_SHIFT)})")


_P = TypeVar("_P")


def with_fidelity(params: _P, fidelity: str) -> _P:
    """A copy of workload parameters with another fidelity (what a simulator sets)."""
    return dataclasses.replace(params, fidelity=fidelity)  # type: ignore[type-var]
