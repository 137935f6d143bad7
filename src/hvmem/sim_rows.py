"""The rows a simulated tick leaves: one for the host, one per running VM.

Columns carry esxtop's names ([TECHNICLOUD][TECHJOCKEY][MIQUEL][SLOWE-ESXTOP];
``ui/top.py`` lists them) so that a simulated run and a real one
(``backends/qemu/control.py``) read alike.
Sizes are MiB, rates MiB per second of the tick::

    host  time_s tick_s total_mib free_mib minfree_mib state
    vm    time_s tick_s vm MEMSZ GRANT SZTGT TCHD ACTV ACTVS ACTVF ACTVN MCTLSZ MCTLTGT MCTLMAX
          SWCUR SWTGT SWR/s SWW/s ZIP/s UNZIP/s CACHEUSD ZIPPED SHRD ZERO SHRDSVD
          LPAGE guest_free_mib guest_swap_mib guest_swap_in_mib_s guest_swap_out_mib_s
          throughput slowdown stall_<cause>_s ... psi_some_frac
          [TLBMISS/s WALKREF/s HIDFLT/s in mmu fidelity]

GRANT is what machine memory backs (private and shared pages); TCHD what the
running sample says the guest touches now, ACTV the estimate the idle tax uses,
ACTVS, ACTVF and ACTVN its slow, fast and current averages (esxtop's %ACTVS,
%ACTVF, %ACTVN as MiB; ``hypervisor/sampling.py``); a rate is the growth of its
counter since the VM's previous row. ``throughput`` is the share of the tick the VM did its
own work (``max(0, 1 - stall / tick)``) and ``slowdown`` ``(tick + stall) / tick``.
``psi_some_frac`` is the share of the tick the VM stalled bringing back memory the
host reclaimed (swap-in and decompression), as Linux's pressure stall information
counts time stalled on memory (``some``: at least one task waiting [LINUX-PSI]); a
real run records its cgroup's ``memory.pressure`` under the same name, so the two
compare on one measure.

Page sharing per VM (SHRD, ZERO, SHRDSVD) comes from :class:`SharingTally`,
which the simulated backend also uses for its samples.

Stall by cause
--------------
A VM's stall is split by what it waited for (``stall_<cause>_s``, seconds of
the tick, :data:`STALL_CAUSES`): ``guest_paging`` (its own swap device and
file reads: the price of a balloon that made the guest page), ``host_swap_in``
(pages the hypervisor had swapped, double paging included), ``decompress``,
``cow`` (copy-on-write breaks of shared pages), ``zeroing`` (frames scrubbed
on their way from another owner), ``blocked`` (descheduled in LOW) and
``other`` (first touches, the guest's demand-zero faults, translation). Each
cause is read from the time counters of the guest and the hypervisor around
the VM's accesses (:func:`stall_snapshot`), so the causes add up to the stall
(scaled to the tick when a tick's stall is longer: they split the work lost).
Guest swap-outs and host swap-outs are asynchronous writes and stall no one;
what a guest's page-out costs the VM is the host swap-in it forces when the
page was swapped by the host too (double paging [OSDI02 §3.1]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numba import njit

from hvmem.hardware.frames import MachineMemory
from hvmem.hypervisor.pmap import STATE_SHARED, Backing, Pmap
from hvmem.policy.states import MemState
from hvmem.results import STALL_CAUSES, RunResult
from hvmem.sim_batches import on_both_threads
from hvmem.sim_vm import SimVm
from hvmem.units import ns_to_s, pages_to_mib


def stall_snapshot(vm: SimVm) -> tuple[float, float, float, float, float]:
    """The time counters the stall causes are differences of (guest paging first).

    Each guest disk read (swap-in, file read, dirty write-back) is charged the
    guest swap device's latency (``guest/fault.py``, ``guest/reclaim.py``).
    """
    c, h = vm.kernel.counters, vm.host_vm.counters
    guest_io = (c.swap_ins + c.file_reads + c.writebacks) * vm.kernel.swap.op_ns
    return (guest_io, h.swap_in_time_ns, h.decompress_time_ns, h.cow_time_ns, h.zero_time_ns)


def stall_causes(before: tuple, after: tuple, stall_ns: float) -> dict[str, float]:
    """Nanoseconds of ``stall_ns`` by cause between two :func:`stall_snapshot` readings."""
    causes = dict(zip(STALL_CAUSES[:5], (b - a for a, b in zip(before, after, strict=True)),
                      strict=True))
    causes["blocked"] = 0.0
    causes["other"] = max(0.0, stall_ns - sum(causes.values()))
    return causes


def blocked_causes(tick_ns: float) -> dict[str, float]:
    """A tick the VM spent descheduled in LOW."""
    causes = dict.fromkeys(STALL_CAUSES, 0.0)
    causes["blocked"] = float(tick_ns)
    return causes


class SharingTally:
    """Each VM's shared pages, what sharing saves it (SHRDSVD), its private and zero pages.

    A frame mapped ``r`` times (by this VM and others) saves ``r - 1`` pages in
    all; each mapping is credited ``1 - 1/r`` of that, so the VMs' SHRDSVD add
    up to the host's saving whether pages are shared within a VM or across VMs.
    Private and shared pages are the pmap's kept counts; the shared pages are
    found by a scan of the states eight at a time that skips every word holding
    none and stops at the last shared page (their number is known), listing
    them, then reading each one's frame for its mappings and data; neither
    loop branches on a page's state, which mixes at random. The list and the
    credits go to scratch arrays kept from one VM to the next, not temporaries
    the size of each VM every tick, and the credits are summed in PPN order.
    A tick's VMs are tallied on both threads (:meth:`many`), each with scratch
    of its own.
    """

    def __init__(self) -> None:
        # Scratch of each thread that tallies (:meth:`many`): (credits, shared PPNs).
        self._scratch = [(np.empty(0, dtype=np.float64), np.empty(0, dtype=np.int64))
                         for _ in range(2)]

    def __call__(self, pmap: Pmap, frames: MachineMemory, lane: int = 0
                 ) -> tuple[int, float, int, int]:
        """(shared pages, pages saved, private pages, shared pages of zeroes) of one VM.

        ``lane``: whose scratch space to use (0, or 1 on the worker, :meth:`many`).
        """
        n_private = pmap.count(Backing.PRIVATE)
        n_shared = pmap.count(Backing.SHARED)
        if n_shared == 0:
            return 0, 0.0, n_private, 0
        inv_refs, shared_ppns = self._scratch[lane]
        if inv_refs.size < n_shared:
            inv_refs = np.empty(pmap.state.size, dtype=np.float64)
            shared_ppns = np.empty(pmap.state.size + 8, dtype=np.int64)
            self._scratch[lane] = inv_refs, shared_ppns
        words = pmap.state.size // 8
        n_zero = _sharing_tally(pmap.state, pmap.state[: words * 8].view(np.uint64), n_shared,
                                pmap.mpn, frames.refcount, frames.content, inv_refs,
                                shared_ppns)
        saved = float(n_shared - np.sum(inv_refs[:n_shared]))
        return n_shared, saved, n_private, n_zero

    def many(self, pmaps: Sequence[Pmap], frames: MachineMemory
             ) -> list[tuple[int, float, int, int]]:
        """The tally of each of ``pmaps``, in order, on the main and the workload thread.

        Between ticks' batches the workload thread idles (``sim_batches.py``);
        each VM's tally only reads the host's state and writes its thread's
        scratch, so splitting the VMs between the threads gives the same
        figures as tallying them one by one.
        """
        return on_both_threads(len(pmaps), lambda i, lane: self(pmaps[i], frames, lane))


_ONES = np.uint64(0x0101010101010101)
_HIGHS = np.uint64(0x8080808080808080)
_SHARED_BYTES = np.uint64(0x0101010101010101 * int(STATE_SHARED))


@njit(cache=True, nogil=True)
def _shared_in(state, base, end, shared_ppns, k):
    """List the SHARED pages among ``state[base:end]`` after ``shared_ppns[:k]``; returns the count.

    Without a branch on the state (shared and other pages mix at random in a
    word): each page is written at the list's end, which moves on only past
    a shared one; ``shared_ppns`` has room for a word beyond its pages.
    """
    for i in range(base, end):
        shared_ppns[k] = i
        k += state[i] == STATE_SHARED
    return k


@njit(cache=True, nogil=True)
def _sharing_tally(state, words, n_shared, mpn, refcount, content, inv_refs, shared_ppns):
    """SHARED pages of zeroes of a pmap with ``n_shared`` SHARED pages.

    ``1 / refcount`` of each SHARED page's frame goes to ``inv_refs``, in PPN
    order. ``words`` is ``state``'s whole 8-page words as uint64: a word with
    no byte equal to SHARED (no zero byte in ``word ^ SHARED_BYTES``) is
    skipped whole, and the scan ends at the word of the ``n_shared``-th shared
    page. The shared pages are listed first (``shared_ppns``, scratch), then
    their frames read in one loop without branches.
    """
    k = 0
    for w in range(words.size):
        x = words[w] ^ _SHARED_BYTES
        if ((x - _ONES) & ~x & _HIGHS) == 0:
            continue
        k = _shared_in(state, w * 8, w * 8 + 8, shared_ppns, k)
        if k >= n_shared:
            break
    if k < n_shared:
        k = _shared_in(state, words.size * 8, state.size, shared_ppns, k)
    n_zero = 0
    for i in range(min(k, n_shared)):
        m = mpn[shared_ppns[i]]
        inv_refs[i] = 1.0 / refcount[m]
        n_zero += content[m] == 0
    return n_zero


class TickRows:
    """Appends each tick's host row and VM rows to a run's result.

    Args:
        result: where the rows go.
        frames: the host's machine memory.
        minfree_mib: the host's minFree, constant over a run.
        tally: the per-VM sharing figures.
    """

    def __init__(self, result: RunResult, frames: MachineMemory, minfree_mib: float,
                 tally: SharingTally) -> None:
        self.result = result
        self.frames = frames
        self.minfree_mib = minfree_mib
        self.tally = tally

    def record(self, now_ns: int, tick_ns: int, state: MemState, vms: Mapping[str, SimVm],
               stall_ns: Mapping[str, float],
               causes_ns: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """The rows of the tick that started at ``now_ns``.

        ``stall_ns``: each VM's lost time; ``causes_ns``: the same split by cause
        (:data:`STALL_CAUSES`; a VM without an entry lost its time to ``other``).
        """
        tick_s = ns_to_s(tick_ns)
        now_s = ns_to_s(now_ns)
        frames = self.frames
        self.result.host_rows.append({
            "time_s": now_s, "tick_s": tick_s, "total_mib": pages_to_mib(frames.n_frames),
            "free_mib": pages_to_mib(frames.n_free), "minfree_mib": self.minfree_mib,
            "state": MemState(state).label,
        })
        tallies = self.tally.many([vm.host_vm.pmap for vm in vms.values()], frames)
        for (name, vm), tally in zip(vms.items(), tallies, strict=True):
            hv = vm.host_vm
            n_shared, saved, n_private, zero = tally
            sw, z = hv.swapfile.counters, hv.zip.counters
            stall = stall_ns.get(name, 0.0)
            throughput = max(0.0, 1.0 - stall / tick_ns)
            plan, sampler = vm.plan, vm.sampler
            causes = (causes_ns or {}).get(name) or {"other": stall}
            # Causes split the lost time: a stall past the tick loses one tick.
            lost_frac = 1.0 if stall <= tick_ns else tick_ns / stall
            gc = vm.kernel.counters
            self.result.vm_rows.append({
                "time_s": now_s, "tick_s": tick_s, "vm": name,
                "MEMSZ": pages_to_mib(hv.n_ppns),
                "GRANT": pages_to_mib(n_private + n_shared),
                "SZTGT": plan.target_mib if plan else pages_to_mib(hv.n_ppns),
                "TCHD": pages_to_mib(sampler.pages(sampler.touched_frac)),
                "ACTV": pages_to_mib(sampler.active_pages),
                "ACTVS": pages_to_mib(sampler.pages(sampler.slow)),
                "ACTVF": pages_to_mib(sampler.pages(sampler.fast)),
                "ACTVN": pages_to_mib(sampler.pages(sampler.current)),
                "MCTLSZ": pages_to_mib(vm.balloon.size_pages),
                "MCTLTGT": pages_to_mib(vm.balloon.target_pages),
                "MCTLMAX": pages_to_mib(vm.balloon.max_pages),
                "SWCUR": pages_to_mib(hv.swapfile.n_used),
                "SWTGT": plan.swap_target_mib if plan else 0.0,
                "SWR/s": pages_to_mib(sw.swap_ins - vm.last_swap_ins) / tick_s,
                "SWW/s": pages_to_mib(sw.swap_outs - vm.last_swap_outs) / tick_s,
                "ZIP/s": pages_to_mib(z.compressed - vm.last_zips) / tick_s,
                "UNZIP/s": pages_to_mib(z.decompressed - vm.last_unzips) / tick_s,
                "CACHEUSD": pages_to_mib(hv.zip.frames.size),
                "ZIPPED": pages_to_mib(hv.zip.n_pages),
                "SHRD": pages_to_mib(n_shared),
                "ZERO": pages_to_mib(zero),
                "SHRDSVD": pages_to_mib(saved),
                "LPAGE": pages_to_mib(hv.large_page_ppns),
                "guest_free_mib": pages_to_mib(vm.kernel.allocator.n_free),
                "guest_swap_mib": pages_to_mib(vm.kernel.swap.n_used),
                "guest_swap_in_mib_s": pages_to_mib(gc.swap_ins - vm.last_guest_swap_ins) / tick_s,
                "guest_swap_out_mib_s": pages_to_mib(gc.swap_outs - vm.last_guest_swap_outs)
                / tick_s,
                "throughput": throughput,
                "slowdown": (tick_ns + stall) / tick_ns,
                **{f"stall_{cause}_s": ns_to_s(causes.get(cause, 0.0)) * lost_frac
                   for cause in STALL_CAUSES},
                "psi_some_frac": min(1.0, (hv.counters.reclaim_stall_ns
                                           - vm.last_reclaim_stall_ns) / tick_ns),
                **(vm.kernel.mmu.rate_columns(tick_s) if vm.kernel.mmu else {}),
            })
            vm.last_swap_ins, vm.last_swap_outs = sw.swap_ins, sw.swap_outs
            vm.last_zips, vm.last_unzips = z.compressed, z.decompressed
            vm.last_reclaim_stall_ns = hv.counters.reclaim_stall_ns
            vm.last_guest_swap_ins, vm.last_guest_swap_outs = gc.swap_ins, gc.swap_outs
