"""The vCPU TLB under nested and under shadow paging against independent LRU references.

The translation kernels of both paging modes (hypervisor/paging) share the
TLB helpers but each drives them itself: a kernel that forgets to refresh a
hit's recency, fills the wrong way or loses a write permission still
translates every reference correctly, only with more or fewer TLB misses. So
the miss counts of whole streams are compared here, 30,000 references over two
address spaces of one VM, with:

* ``Tlb.run_pages``, the TLB's own one-loop LRU (as ``hvmem tlb`` uses it),
* pycachesim, a C LRU cache simulator set up as the same TLB,
* a plain Python model (an ordered dict per set) that also knows which entries
  allow writes, for streams that write through entries filled by reads.

The machine is warmed up first (every page backed, every shadow entry filled)
and its TLB emptied, so that every miss is a TLB miss and nothing else.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from hvmem.hardware.tlb import ASID_SHIFT, Tlb
from hvmem.machine import Machine, MachineConfig
from hvmem.units import MIB

TLB_ENTRIES, TLB_WAYS = 64, 4
N_SETS = TLB_ENTRIES // TLB_WAYS
REGION_PAGES = 1024  # per process: 16x the TLB
FIRST_VPN = 0x400
ASIDS = (1, 2)
N_REFS = 30_000
CHUNK = 1_500  # references per CR3 switch
WRITE_FRAC = 0.3


def zipf_stream(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(asid, vpn, is_write) of a Zipf-popular (alpha 1.0) stream over both processes.

    Popularity is over a process's pages; each chunk of references belongs to one
    process, as between two context switches, so the TLB holds both at once.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, REGION_PAGES + 1) ** 1.0
    ranks = rng.choice(REGION_PAGES, size=N_REFS, p=weights / weights.sum())
    vpn = FIRST_VPN + rng.permutation(REGION_PAGES)[ranks]
    asid = np.repeat(rng.choice(ASIDS, size=N_REFS // CHUNK), CHUNK)
    return asid.astype(np.int64), vpn.astype(np.int64), rng.random(N_REFS) < WRITE_FRAC


def tlb_keys(asid: np.ndarray, vpn: np.ndarray) -> np.ndarray:
    """Address-space-tagged page numbers: the set is still ``vpn mod sets``."""
    return (asid << ASID_SHIFT) | vpn


def pycachesim_misses(keys: np.ndarray) -> int:
    from cachesim import Cache, CacheSimulator, MainMemory

    memory = MainMemory()
    cache = Cache("TLB", N_SETS, TLB_WAYS, 4096, "LRU")
    memory.load_to(cache)
    memory.store_from(cache)
    sim = CacheSimulator(cache, memory)
    sim.loadstore([((keys * 4096).tolist(), [])], length=1)
    return int(cache.backend.MISS_count)


def model_misses(keys: np.ndarray, writes: np.ndarray, dirty: set[int]) -> int:
    """LRU per set, entries tagged with whether a write may use them.

    A fill allows writes when the page is dirty (written before, by anyone); a
    write that hits an entry without that permission is a miss that refills the
    entry in place, now allowing writes (x86 walks again to set D).
    """
    sets: list[OrderedDict[int, bool]] = [OrderedDict() for _ in range(N_SETS)]
    misses = 0
    for key, write in zip(keys.tolist(), writes.tolist(), strict=True):
        ways = sets[key % N_SETS]
        allows_write = ways.get(key)
        if allows_write is not None and (not write or allows_write):
            ways.move_to_end(key)
            continue
        misses += 1
        if write:
            dirty.add(key)
        if allows_write is None and len(ways) == TLB_WAYS:
            ways.popitem(last=False)
        ways[key] = key in dirty
        ways.move_to_end(key)
    return misses


def warm_machine(paging: str, *, write: bool) -> Machine:
    """Two processes of one VM, every page touched (written, or read) and the TLB empty."""
    machine = Machine(MachineConfig(host_memory_bytes=64 * MIB, paging=paging,
                                    tlb_entries=TLB_ENTRIES, tlb_ways=TLB_WAYS,
                                    pwc_entries=16))
    machine.add_vm("vm0", 32 * MIB)
    pages = np.arange(FIRST_VPN, FIRST_VPN + REGION_PAGES, dtype=np.int64)
    for asid in ASIDS:
        machine.add_process("vm0", asid)
        machine.guest_map("vm0", asid, FIRST_VPN, REGION_PAGES)
        batch = machine.access("vm0", asid, pages, np.full(pages.size, write))
        assert batch.fault is None and batch.done == pages.size
    mmu = machine.vm("vm0").mmu
    mmu.tlb.flush_all()  # the hardware's TLB only: shadow tables stay filled
    assert mmu.tlb.occupancy() == 0
    return machine


def run_stream(machine: Machine, asid: np.ndarray, vpn: np.ndarray,
               writes: np.ndarray) -> tuple[int, int]:
    """(TLB misses, hidden faults) of the stream, run a chunk per CR3 switch."""
    mmu = machine.vm("vm0").mmu
    misses, hidden = mmu.counters.tlb_misses, mmu.counters.hidden_faults
    for lo in range(0, vpn.size, CHUNK):
        hi = lo + CHUNK
        batch = machine.access("vm0", int(asid[lo]), vpn[lo:hi], writes[lo:hi])
        assert batch.fault is None and batch.done == hi - lo
    return mmu.counters.tlb_misses - misses, mmu.counters.hidden_faults - hidden


@pytest.fixture(scope="module")
def stream():
    return zipf_stream(seed=7)


def test_the_references_agree_with_each_other(stream):
    asid, vpn, writes = stream
    keys = tlb_keys(asid, vpn)
    tlb = Tlb(TLB_ENTRIES, TLB_WAYS)
    lru_misses = keys.size - tlb.run_pages(keys)
    assert lru_misses == pycachesim_misses(keys)
    # Every page dirty already: permissions never matter, the model is plain LRU.
    assert model_misses(keys, writes, dirty=set(keys.tolist())) == lru_misses
    # A stream worth comparing: neither almost all hits nor almost all misses.
    assert 0.2 < lru_misses / keys.size < 0.8


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_tlb_misses_equal_lru_on_written_pages(paging, stream):
    asid, vpn, writes = stream
    keys = tlb_keys(asid, vpn)
    expected = keys.size - Tlb(TLB_ENTRIES, TLB_WAYS).run_pages(keys)
    misses, hidden = run_stream(warm_machine(paging, write=True), asid, vpn, writes)
    assert hidden == 0
    assert misses == expected
    assert misses == pycachesim_misses(keys)


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_tlb_misses_equal_lru_on_reads(paging, stream):
    asid, vpn, _ = stream
    keys = tlb_keys(asid, vpn)
    reads = np.zeros(vpn.size, dtype=np.bool_)
    misses, hidden = run_stream(warm_machine(paging, write=False), asid, vpn, reads)
    assert hidden == 0
    assert misses == pycachesim_misses(keys)


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_writes_through_entries_filled_by_reads(paging, stream):
    # Pages read but never written: their entries do not allow writes, so a page's
    # first write misses even when its entry is cached. Shadow paging then takes a
    # hidden fault to emulate the dirty bit and walks once more; nested paging's
    # walk sets the bit itself.
    asid, vpn, writes = stream
    keys = tlb_keys(asid, vpn)
    expected = model_misses(keys, writes, dirty=set())
    assert expected > keys.size - Tlb(TLB_ENTRIES, TLB_WAYS).run_pages(keys)
    misses, hidden = run_stream(warm_machine(paging, write=False), asid, vpn, writes)
    if paging == "nested":
        assert (misses, hidden) == (expected, 0)
    else:
        assert hidden == np.unique(keys[writes]).size  # one per page first written
        assert misses == expected + hidden
