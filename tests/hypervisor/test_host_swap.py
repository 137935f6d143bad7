import numpy as np
import pytest

from hvmem.errors import InvariantViolation
from hvmem.hypervisor.pmap import Backing
from hvmem.machine import Machine, MachineConfig
from hvmem.units import MIB
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_swapped_pages_come_back_with_their_data_on_touch(paging):
    machine = Machine(MachineConfig(host_memory_bytes=4 * MIB, paging=paging))
    vm = machine.add_vm("a", MIB)
    machine.add_process("a", 1)
    machine.guest_map("a", 1, 0x10, 8)
    vpns = np.arange(0x10, 0x18)
    batch = machine.access("a", 1, vpns, np.ones(8, bool))
    frames = machine.host.frames
    frames.content[batch.mpns] = np.arange(100, 108, dtype=np.uint64)
    used = frames.n_used
    freed = vm.host_vm.swap_out(1000, "random", np.random.default_rng(0))
    assert freed == vm.host_vm.pmap.count(Backing.SWAPPED) > 8  # data and table pages
    assert frames.n_used == used - freed
    machine.host.check_invariants()
    again = machine.access("a", 1, vpns)
    assert again.fault is None
    assert np.array_equal(frames.content[again.mpns], np.arange(100, 108))
    assert vm.host_vm.counters.swap_in_faults >= 8
    assert vm.host_vm.swapfile.counters.time_ns > 0
    machine.host.check_invariants()


def test_lru_selection_takes_the_oldest_touched_pages(make_host, make_vm):
    host = make_host(1024)
    vm, _ = make_vm(host, 64)
    for t, ppn in enumerate(range(10)):
        host.now_ns = t
        vm.write_pages(np.array([ppn]), np.array([ppn + 1], np.uint64))
    vm.swap_out(3, "lru", np.random.default_rng(0))
    assert np.flatnonzero(vm.pmap.state == Backing.SWAPPED).tolist() == [0, 1, 2]


def test_touch_stamps_order_pages_as_their_times_do(make_host, make_vm):
    host = make_host(1024)
    vm, _ = make_vm(host, 64)
    # Pages 0-3 touched at 5 ns, 4-5 at 5 ns again (the same stamp), 6 at 9 ns.
    for now, ppns in ((5, [0, 1, 2, 3]), (5, [4, 5]), (9, [6])):
        host.now_ns = now
        vm.write_pages(np.array(ppns), np.ones(len(ppns), np.uint64))
    stamps = vm.last_touch_stamp
    assert len(set(stamps[:6].tolist())) == 1 and stamps[6] > stamps[0] > 0
    assert stamps[7:].tolist() == [0] * 57  # never touched
    with pytest.raises(InvariantViolation, match="went back"):
        host.now_ns = 8


def test_guest_swapping_a_host_swapped_page_is_double_paging(make_guest):
    g = make_guest(128, swap_pages=512)
    host, vm, kernel = g.host, g.vm, g.kernel
    ops = (MemoryOp(MemoryOpKind.MAP, 0, 0, 400),)
    n = 100
    kernel.access(AccessBatch(np.zeros(n, np.int32), np.arange(n), np.ones(n, bool),
                              np.ones(n, np.int64), np.arange(1, n + 1, dtype=np.uint64), ops), 0)
    vm.swap_out(60, "random", np.random.default_rng(1))
    m = 200
    kernel.access(AccessBatch(np.zeros(m, np.int32), np.arange(n, n + m), np.ones(m, bool),
                              np.ones(m, np.int64), np.ones(m, np.uint64)), 1)
    assert kernel.counters.swap_outs > 0
    assert vm.swapfile.counters.double_paging > 0
    host.check_invariants()
    kernel.check_invariants()
