"""The access-batch interface between workloads and the guest.

A workload is what the programs inside one guest do. Each tick the simulator
asks it for an :class:`AccessBatch`: which guest-virtual pages each process
touched, whether it wrote them, what it wrote, and how many memory references
each entry stands for; plus the address-space changes (:class:`MemoryOp`, like
``mmap``/``munmap``) the programs made. Two fidelities read the same batches::

    page fidelity:  entries are distinct sampled pages, ``refs`` says how many
                    references each stands for; the guest and host see each
                    page once per tick (for long policy runs)
    mmu fidelity:   every entry is one reference (``refs == 1``), in program
                    order, translated through TLB and page walks

Content: a write stores the 64-bit token in ``content`` into the page. Token 0
means a page of zeroes; equal tokens mean identical pages (which page sharing
finds); see ``content.py`` for how tokens are drawn and how compressible each is.

Rates: a workload states how often its programs act (references, pages or
allocations per second) and :class:`Rate` turns that into a whole number per
tick, carrying the fraction to the next tick, so a rate of 5 refs/s with 1 ms
ticks gives one reference every 200 ticks and the long-run count is exact.
Deterministic counts rather than Poisson ones: the rate is what a scenario
states and totals are exact; randomness lies in which pages are touched.

Units: page numbers are 4 KiB guest-virtual page numbers; times are nanoseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np

from hvmem.units import ns_to_s

#: Pages in a 48-bit virtual address space (36-bit VPNs, four-level paging).
VPN_SPACE_PAGES = 1 << 36
#: Guest processes run as ASIDs 1..4094 (12-bit PCIDs, 0 reserved): index 0..4093.
MAX_PROCESSES = 4094
#: No vCPU makes more than a few 10**9 memory references a second; more is a unit slip.
MAX_REFS_PER_S = 1e10


class MemoryOpKind(StrEnum):
    """Address-space changes a program makes."""

    MAP = "map"  # mmap: make a range of virtual pages usable (backed on first touch)
    UNMAP = "unmap"  # munmap: give a range back; its guest-physical pages are freed


class Fidelity(StrEnum):
    """How a workload's batches are laid out (see the module docstring)."""

    PAGE = "page"  # distinct pages per tick, ``refs`` counts the references of each
    MMU = "mmu"  # one entry per reference, in program order, ``refs == 1``


@dataclass(frozen=True, slots=True)
class MemoryOp:
    """One ``mmap``/``munmap`` by one process of the guest."""

    kind: MemoryOpKind
    process: int  # index of the guest process
    first_vpn: int  # first guest-virtual page of the range
    n_pages: int  # length of the range in pages
    file_backed: bool = False  # a file mapping: its pages are page cache, dropped not swapped


@dataclass(frozen=True, slots=True)
class AccessBatch:
    """What one guest's processes did in one tick.

    All arrays have one entry per touched page (page fidelity) or per reference
    (mmu fidelity), in the order the program made them.
    """

    process: np.ndarray  # int32: index of the guest process
    vpn: np.ndarray  # int64: guest-virtual page number
    is_write: np.ndarray  # bool: the page was written
    refs: np.ndarray  # int64: references the entry stands for (>= 1)
    content: np.ndarray  # uint64: token written (meaningful where is_write)
    ops: tuple[MemoryOp, ...] = field(default=())  # address-space changes, before the accesses

    def __post_init__(self) -> None:
        n = self.vpn.shape[0]
        for name in ("process", "is_write", "refs", "content"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"AccessBatch: {name} has {getattr(self, name).shape[0]} "
                                 f"entries, vpn has {n}")

    @property
    def n_refs(self) -> int:
        """Memory references the batch stands for."""
        return int(self.refs.sum())

    def __len__(self) -> int:
        return int(self.vpn.shape[0])

    @staticmethod
    def empty(ops: tuple[MemoryOp, ...] = ()) -> AccessBatch:
        """A batch that touches nothing (it may still change address spaces)."""
        return AccessBatch(
            np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.bool_),
            np.zeros(0, np.int64), np.zeros(0, np.uint64), ops,
        )

    @staticmethod
    def concat(batches: Sequence[AccessBatch]) -> AccessBatch:
        """The batches one after the other: their ops first (in order), then their entries."""
        if len(batches) == 1:
            return batches[0]
        if not batches:
            return AccessBatch.empty()
        ops = tuple(op for b in batches for op in b.ops)
        return AccessBatch(
            np.concatenate([b.process for b in batches]).astype(np.int32, copy=False),
            np.concatenate([b.vpn for b in batches]).astype(np.int64, copy=False),
            np.concatenate([b.is_write for b in batches]).astype(np.bool_, copy=False),
            np.concatenate([b.refs for b in batches]).astype(np.int64, copy=False),
            np.concatenate([b.content for b in batches]).astype(np.uint64, copy=False),
            ops,
        )

    def aggregated(self) -> AccessBatch:
        """The same accesses in page fidelity: one entry per distinct (process, vpn).

        Entries are sorted by (process, vpn); ``refs`` are summed, ``is_write`` is
        True if any reference wrote, and ``content`` is the token of the page's
        last write in batch order (what the page holds at the end of the tick).
        ``ops`` are kept. The total reference count is unchanged.
        """
        n = len(self)
        if n == 0:
            return self
        # One int64 key: processes fit in 27 bits above the 36-bit VPN space.
        key = (self.process.astype(np.int64) << 36) | self.vpn
        order = np.argsort(key, kind="stable")  # stable: batch order within a page
        key = key[order]
        start = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
        writes = self.is_write[order]
        last_write = np.maximum.reduceat(np.where(writes, np.arange(n), -1), start)
        content = np.zeros(start.shape[0], dtype=np.uint64)
        has = last_write >= 0
        content[has] = self.content[order][last_write[has]]
        return AccessBatch(
            self.process[order][start].astype(np.int32, copy=False),
            self.vpn[order][start].astype(np.int64, copy=False),
            np.logical_or.reduceat(writes, start),
            np.add.reduceat(self.refs[order].astype(np.int64, copy=False), start),
            content,
            self.ops,
        )


class Workload(Protocol):
    """What the programs of one guest do, tick by tick."""

    name: str

    def setup(self) -> tuple[MemoryOp, ...]:
        """Address-space changes at boot (for example mapping the working region)."""
        ...

    def next_batch(self, now_ns: int, tick_ns: int) -> AccessBatch:
        """The accesses of the tick that starts at ``now_ns`` and lasts ``tick_ns``."""
        ...


class Rate:
    """Turns a per-second rate into whole counts per tick, carrying the fraction."""

    def __init__(self, per_s: float) -> None:
        self.per_s = float(per_s)
        self.carry = 0.0

    def take(self, tick_ns: int) -> int:
        """The whole count of the tick ``tick_ns`` long; its fraction goes to the next."""
        if tick_ns < 0:
            raise ValueError(f"tick_ns must not be negative, got {tick_ns}")
        x = self.per_s * ns_to_s(tick_ns) + self.carry
        n = math.floor(x)
        self.carry = x - n
        return int(n)
