"""Machine memory: the frame table and the host free list.

What is modelled
----------------
Host physical memory is an array of 4 KiB frames numbered by MPN. Per frame the
table keeps (a struct of arrays, Linux ``mem_map`` style, never an object per
frame)::

    owner[mpn]       who holds the frame: a VM id >= 0, HYPERVISOR, or FREE
    last_owner[mpn]  who held it last (kept while it is free), NOBODY if never used
    refcount[mpn]    mappings of the frame (> 1 once page sharing lands)
    content[mpn]     a 64-bit token standing for the 4 KiB of data (0 = zeroes)
    ppn[mpn]         the guest page a private frame backs (reverse map), else -1

The free list is a LIFO stack of MPNs. Frames a large page takes out of the
middle of it are only marked (``stale``) and skipped when the stack pops down to
them, so taking a run costs nothing per free frame; freeing a marked frame first
drops the marked entries, so a frame is on the stack at most once. The order
in which live frames come off is that of a stack compacted on every take.
A freed frame *keeps its data*: nothing
is scrubbed on free. When the allocator hands a frame to a different owner than
the one that last held it, it zeroes the frame first (content token 0), so no VM
ever sees another's data; handed back to the same owner it is not zeroed, which
is what makes re-using a VM's own freed memory cheap. Frames that were never
used are zero already (the host scrubbed them at boot).

Invariants: every frame is either on the free list (owner FREE) or owned, never
both; a frame is on the free list at most once; ``free + owned == total``; a
free frame has no mappings and names no guest page; a frame held by a VM or the
hypervisor has it as its last owner.

Host large pages: :meth:`MachineMemory.alloc_runs` takes whole 2 MiB-aligned
blocks of free frames (512 at a time), as a host large page needs contiguous,
aligned machine memory; the hypervisor decides what to do when none is left.

Counters (all counts of frames): ``allocations``, ``frees``, ``zeroings`` (frames
zeroed because they changed owner), ``reuses_unzeroed`` (frames returned to their
last owner without zeroing).

References: Waldspurger, OSDI 2002, footnote 2 (newly allocated machine pages are
zeroed to avoid leaks between VMs); Linux ``mm/page_alloc.c`` (free lists).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hvmem.errors import ConfigError, InvariantViolation, OutOfMemoryError

FREE = -1  # owner of a frame on the free list
NOBODY = -2  # last_owner of a frame never handed out
HYPERVISOR = -3  # owner of frames the hypervisor uses itself (nested and shadow tables)
MAX_OWNERS = 2**15 - 1  # owner ids 0 .. MAX_OWNERS - 1 fit the owner arrays (int16)


@dataclass(slots=True)
class FrameCounters:
    """Event tallies of the frame allocator, in frames."""

    allocations: int = 0  # frames handed out
    frees: int = 0  # frames returned to the free list
    zeroings: int = 0  # frames zeroed because they went to a new owner
    reuses_unzeroed: int = 0  # frames handed back to their last owner, data kept


def index_dtype(n: int) -> type:
    """The integer type of an array of indices below ``n``: int32 where they fit.

    Stacks of frame, page and slot numbers use it; half the memory of int64
    for anything under 2**31 entries.
    """
    return np.int32 if n < 2**31 else np.int64


class MachineMemory:
    """The host's frame table and free list.

    Args:
        n_frames: machine memory in 4 KiB frames.
    """

    def __init__(self, n_frames: int):
        if n_frames <= 0:
            raise ConfigError(f"machine memory must hold at least one frame, found {n_frames}")
        self.n_frames = n_frames
        # Owners are VM ids or the negative markers above: int16, as a host runs
        # far fewer than MAX_OWNERS VMs (ESXi 7 supports 1024 per host).
        self.owner = np.full(n_frames, FREE, dtype=np.int16)
        self.last_owner = np.full(n_frames, NOBODY, dtype=np.int16)
        self.refcount = np.zeros(n_frames, dtype=np.int32)
        self.content = np.zeros(n_frames, dtype=np.uint64)
        # Reverse map: the guest-physical page a frame privately backs, -1 otherwise
        # (kept by the hypervisor, as Linux keeps page->index).
        # int32 while guest page numbers fit, as they do for guests under 8 TiB.
        self.ppn = np.full(n_frames, -1, dtype=np.int32)
        # Free list as a stack: the top is free_stack[top - 1]. Low MPNs first out.
        # Entries whose frame is marked stale were taken by alloc_runs and are
        # skipped; n_free counts the live ones.
        self.free_stack = np.arange(n_frames - 1, -1, -1, dtype=index_dtype(n_frames))
        self.top = n_frames
        self.stale = np.zeros(n_frames, dtype=np.bool_)
        self.n_stale = 0
        self.n_free = n_frames
        self.counters = FrameCounters()

    @property
    def n_used(self) -> int:
        """Frames currently owned."""
        return self.n_frames - self.n_free

    def alloc(self, owner: int, n: int = 1) -> np.ndarray:
        """Take ``n`` frames off the free list for ``owner``.

        Frames that last belonged to someone else are zeroed first.

        Returns:
            The MPNs handed out, in allocation order.

        Raises:
            OutOfMemoryError: fewer than ``n`` frames are free.
        """
        if n < 0:
            raise ValueError(f"cannot allocate a negative number of frames ({n})")
        if n > self.n_free:
            raise OutOfMemoryError(
                f"machine memory exhausted: {n} frames asked, {self.n_free} free"
            )
        if self.n_stale:
            mpns = np.empty(n, dtype=np.int64)
            self.top, dropped = _pop_kernel(self.free_stack, self.top, self.stale, mpns)
            self.n_stale -= dropped
        else:
            mpns = self.free_stack[self.top - n : self.top][::-1].astype(np.int64)
            self.top -= n
        self.n_free -= n
        zeroed, reused = _hand_out(mpns, owner, self.owner, self.last_owner, self.refcount,
                                   self.content)
        self.counters.zeroings += zeroed
        self.counters.reuses_unzeroed += reused
        self.counters.allocations += n
        return mpns

    def alloc_runs(self, owner: int, n_runs: int, run_frames: int) -> np.ndarray:
        """Take up to ``n_runs`` aligned runs of ``run_frames`` free frames (host large pages).

        A run qualifies when every frame of a ``run_frames``-aligned block is
        free. Runs are taken from the top of machine memory down, away from the
        free list's end (which hands out low frames first), so that 4 KiB
        allocations and large pages meet in the middle, as a buddy allocator
        keeps its big blocks whole by splitting small ones off elsewhere.
        Zeroing and counters follow :meth:`alloc`, frame by frame.

        Returns:
            The first frame of each run taken (possibly fewer than asked, or none).
        """
        n_blocks = self.n_frames // run_frames
        if n_runs <= 0 or n_blocks == 0 or self.n_free < run_frames:
            return np.zeros(0, dtype=np.int64)
        bases = _free_blocks_from_top(self.owner, n_blocks, run_frames, n_runs)
        if bases.size == 0:
            return bases
        mpns = (bases[:, None] + np.arange(run_frames)).ravel()
        previous = self.last_owner[mpns]
        foreign = (previous != owner) & (previous != NOBODY)
        self.content[mpns[foreign]] = 0
        self.counters.zeroings += int(np.count_nonzero(foreign))
        self.counters.reuses_unzeroed += int(np.count_nonzero(previous == owner))
        self.counters.allocations += mpns.size
        self.owner[mpns] = owner
        self.last_owner[mpns] = owner
        self.refcount[mpns] = 1
        # The taken frames stay on the free stack, marked: skipped when popped.
        self.stale[mpns] = True
        self.n_stale += mpns.size
        self.n_free -= mpns.size
        return bases

    def _compact(self) -> None:
        """Drop the marked entries from the free stack; the rest keep their order."""
        self.top = _compact_kernel(self.free_stack, self.top, self.stale)
        self.n_stale = 0

    def alloc_one(self, owner: int) -> int:
        """Take one frame for ``owner`` (see :meth:`alloc`)."""
        return int(self.alloc(owner, 1)[0])

    def free(self, mpns: np.ndarray | int) -> None:
        """Return frames to the free list; their data stays until someone else takes them."""
        mpns = np.atleast_1d(np.asarray(mpns, dtype=np.int64))
        if self.n_stale and self.stale[mpns].any():
            self._compact()  # a frame of a large page comes back: one entry for it
        bad = _free_kernel(mpns, self.owner, self.refcount, self.ppn, self.free_stack,
                           self.top)
        if bad >= 0:
            raise InvariantViolation(f"frame {bad} freed twice")
        self.n_free += mpns.size
        self.top += mpns.size
        self.counters.frees += mpns.size

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` unless free list and owners agree exactly."""
        on_list = self.free_stack[: self.top]
        if np.count_nonzero(self.stale) != self.n_stale or np.any(self.owner[on_list[
                self.stale[on_list]]] == FREE):
            raise InvariantViolation("a frame taken off the free list is marked wrongly")
        on_list = on_list[~self.stale[on_list]].astype(np.int64)
        if on_list.size != self.n_free:
            raise InvariantViolation("the free count and the free list disagree")
        if np.unique(on_list).size != on_list.size:
            raise InvariantViolation("a frame is on the free list twice")
        marked_free = np.flatnonzero(self.owner == FREE)
        if marked_free.size != on_list.size or not np.array_equal(
            np.sort(on_list), marked_free
        ):
            raise InvariantViolation("free list and frame owners disagree")
        if np.any(self.refcount[marked_free] != 0):
            raise InvariantViolation("a free frame has mappings")
        if np.any(self.ppn[marked_free] != -1):
            raise InvariantViolation("a free frame still names a guest page")
        # Zeroing is decided by the last owner: one that differs from the holder would
        # hand the holder's data to the VM it names, unzeroed, once the frame is freed.
        held = (self.owner >= 0) | (self.owner == HYPERVISOR)
        if np.any(self.last_owner[held] != self.owner[held]):
            raise InvariantViolation("a held frame's last owner is someone else")


@njit(cache=True)
def _free_kernel(mpns, owner, refcount, ppn, free_stack, top):
    """Free ``mpns`` in one pass; returns the first frame already free (or repeated), else -1.

    A frame repeated within ``mpns`` is caught when it is seen free the second
    time. On error nothing is freed: the owners changed so far are restored.
    """
    saved = np.empty(mpns.size, dtype=owner.dtype)
    for i in range(mpns.size):
        m = mpns[i]
        if owner[m] == FREE:
            for j in range(i):
                owner[mpns[j]] = saved[j]
            return m
        saved[i] = owner[m]
        owner[m] = FREE
    for i in range(mpns.size):
        m = mpns[i]
        refcount[m] = 0
        ppn[m] = -1
        free_stack[top + i] = m
    return -1


@njit(cache=True, nogil=True)
def _hand_out(mpns, owner, owners, last_owner, refcount, content):
    """Give free ``mpns`` to ``owner``, zeroing those another owner held last.

    One pass where the array steps took one each (a fault takes a few frames
    at a time, so their per-call cost was most of it). Returns (zeroed, reused
    unzeroed).
    """
    zeroed = 0
    reused = 0
    for i in range(mpns.size):
        m = mpns[i]
        previous = last_owner[m]
        if previous == owner:
            reused += 1
        elif previous != NOBODY:
            content[m] = 0
            zeroed += 1
        owners[m] = owner
        last_owner[m] = owner
        refcount[m] = 1
    return zeroed, reused


@njit(cache=True)
def _pop_kernel(free_stack, top, stale, out):
    """Pop ``out.size`` live frames, skipping (and unmarking) stale entries.

    Returns the new top and the number of stale entries dropped.
    """
    dropped = 0
    k = 0
    while k < out.size:
        top -= 1
        m = free_stack[top]
        if stale[m]:
            stale[m] = False
            dropped += 1
        else:
            out[k] = m
            k += 1
    return top, dropped


@njit(cache=True)
def _compact_kernel(free_stack, top, stale):
    """Remove stale entries below ``top`` in place, unmarking them; returns the new top."""
    j = 0
    for i in range(top):
        m = free_stack[i]
        if stale[m]:
            stale[m] = False
        else:
            free_stack[j] = m
            j += 1
    return j


@njit(cache=True)
def _free_blocks_from_top(owner, n_blocks, run_frames, n_runs):
    """First frames of up to ``n_runs`` wholly free aligned blocks, highest first."""
    out = np.empty(min(n_runs, n_blocks), dtype=np.int64)
    found = 0
    b = n_blocks - 1
    while b >= 0 and found < out.size:
        base = b * run_frames
        free = True
        for i in range(run_frames):
            if owner[base + i] != FREE:
                free = False
                break
        if free:
            out[found] = base
            found += 1
        b -= 1
    return out[:found]
