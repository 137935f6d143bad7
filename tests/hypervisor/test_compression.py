import numpy as np
import pytest

from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.compression import CompressionCache


def token(i, size_bytes):
    """A content token whose page compresses to ``size_bytes`` (see workloads.content)."""
    return np.uint64((i + 1) << 8 | (size_bytes // 16 - 1))


@pytest.fixture
def vm_with_pages(make_host, make_vm):
    """``vm_with_pages(tokens, n_ppns=400, salting="within")`` -> (host, vm, the pages written)."""
    return lambda tokens, n_ppns=400, salting="within": _vm_with_pages(
        make_host(4096, salting=salting), make_vm, tokens, n_ppns)


def _vm_with_pages(host, make_vm, tokens, n_ppns):
    vm, _ = make_vm(host, n_ppns, "v")
    ppns = np.arange(len(tokens))
    vm.write_pages(ppns, np.array(tokens, dtype=np.uint64))
    return host, vm, ppns


def test_small_pages_are_kept_compressed_and_come_back_on_touch(vm_with_pages):
    tokens = [token(i, 900) for i in range(32)]  # 1 KiB slots: 4 per frame
    host, vm, ppns = vm_with_pages(tokens)
    used = host.frames.n_used
    done = vm.reclaim(32, "random", np.random.default_rng(0), share_first=False)
    assert done == {"shared": 0, "compressed": 32 - 8, "swapped": 0}
    assert vm.pmap.count(Backing.COMPRESSED) == 32 and vm.zip.frames.size == 8
    assert host.frames.n_used == used - 24
    host.check_invariants()
    got, _ = vm.read_pages(ppns[:5])
    assert got.tolist() == [int(t) for t in tokens[:5]]
    assert vm.zip.counters.decompressed == 5 and vm.counters.fault_time_ns > 0
    host.check_invariants()


def test_pages_that_compress_poorly_are_swapped(vm_with_pages):
    host, vm, _ = vm_with_pages([token(i, 3000) for i in range(10)])
    done = vm.reclaim(10, "random", np.random.default_rng(0), share_first=False)
    assert done["swapped"] == 10 and vm.zip.counters.rejected == 10
    host.check_invariants()


def test_full_cache_evicts_its_oldest_pages_to_swap(vm_with_pages):
    # 400 pages * 10% = 40 pages of cache = 80 slots of 2 KiB.
    tokens = [token(i, 2000) for i in range(120)]
    host, vm, ppns = vm_with_pages(tokens)
    vm.reclaim(80, "lru", np.random.default_rng(0), share_first=False)
    assert vm.zip.used_bytes <= vm.zip.capacity_bytes
    first = vm.pmap.state[ppns[:80]].copy()
    vm.reclaim(40, "lru", np.random.default_rng(0), share_first=False)
    assert vm.zip.counters.evicted > 0
    assert vm.zip.used_bytes <= vm.zip.capacity_bytes
    assert np.all(first == Backing.COMPRESSED)
    got, _ = vm.read_pages(ppns)
    assert got.tolist() == [int(t) for t in tokens]
    host.check_invariants()


def test_share_before_swap(vm_with_pages):
    same = token(7, 3000)
    host, vm, _ = vm_with_pages([same] * 6 + [token(i, 3000) for i in range(4)])
    done = vm.reclaim(10, "random", np.random.default_rng(0))
    assert done["shared"] == 5  # six identical pages, one frame
    assert done["swapped"] == 4
    host.check_invariants()


def test_slot_sizes():
    slots = CompressionCache.slot_for(np.array([0, token(0, 512), token(0, 1024),
                                                token(0, 1040), token(0, 2048),
                                                token(0, 2064)], dtype=np.uint64))
    assert slots.tolist() == [1024, 1024, 1024, 2048, 2048, 0]


def test_the_scenarios_cache_cap_reaches_every_vm(make_scenario):
    """``[host.compression] max_frac`` sizes each VM's cache (Mem.MemZipMaxPct)."""
    from hvmem.sim import Simulation

    text = """
duration = "1s"
[host]
memory = "256MiB"
[host.compression]
max_frac = 0.05
[[vm]]
name = "vm"
memory = "128MiB"
"""
    sim = Simulation(make_scenario(text))
    sim.run()
    cache = sim.vms["vm"].host_vm.zip
    assert cache.capacity_bytes == int(128 * 2**20 * 0.05)
