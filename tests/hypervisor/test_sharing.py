import numpy as np
import pytest

from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.sharing import SHARED_OWNER, SharingTable
from hvmem.machine import Machine, MachineConfig
from hvmem.units import MIB

VPNS = np.arange(0x100, 0x104)


def machine_with(tokens_by_vm, paging="nested", salting="across"):
    """VMs whose process 1 wrote ``tokens`` into pages 0x100.. (one page per token)."""
    machine = Machine(MachineConfig(host_memory_bytes=8 * MIB, paging=paging, salting=salting))
    for name, tokens in tokens_by_vm.items():
        machine.add_vm(name, MIB)
        machine.add_process(name, 1)
        machine.guest_map(name, 1, 0x100, len(tokens))
        vpns = np.arange(0x100, 0x100 + len(tokens))
        batch = machine.access(name, 1, vpns, np.ones(len(tokens), bool))
        machine.host.frames.content[batch.mpns] = np.array(tokens, dtype=np.uint64)
    return machine


def data_ppns(machine, name):
    vm = machine.vm(name).host_vm
    backed = vm.pmap.backed()
    return backed[~machine.vm(name).tables.is_table_frame[backed]]


def scan_all(machine):
    for name in machine.vms:
        machine.vm(name).host_vm.share_scan(data_ppns(machine, name))


def read(machine, name, vpns):
    batch = machine.access(name, 1, vpns)
    assert batch.fault is None
    return machine.host.frames.content[batch.mpns].tolist(), batch.mpns


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_identical_pages_share_one_frame_and_writes_copy(paging):
    machine = machine_with({"a": [5, 5, 7, 0], "b": [5, 9, 7, 0]}, paging)
    used = machine.host.frames.n_used
    scan_all(machine)
    counters = machine.host.sharing.counters
    # 5: three pages, one frame; 7: two pages, one frame; 0: two pages, one frame.
    assert machine.host.frames.n_used == used - 4
    assert counters.frames_freed == 4
    assert machine.vm("a").host_vm.pmap.count(Backing.SHARED) == 4
    assert machine.vm("b").host_vm.pmap.count(Backing.SHARED) == 3
    machine.host.check_invariants()
    got_a, mpns_a = read(machine, "a", VPNS)
    got_b, mpns_b = read(machine, "b", VPNS)
    assert got_a == [5, 5, 7, 0] and got_b == [5, 9, 7, 0]
    assert mpns_a[0] == mpns_a[1] == mpns_b[0]
    assert machine.host.frames.owner[mpns_a[0]] == SHARED_OWNER
    assert machine.host.frames.refcount[mpns_a[0]] == 3
    # A write breaks sharing for the writer only.
    batch = machine.access("a", 1, VPNS[:1], np.array([True]))
    assert batch.fault is None and batch.mpns[0] != mpns_a[0]
    machine.host.frames.content[batch.mpns] = 6
    assert counters.cow_breaks == 1
    assert read(machine, "a", VPNS)[0] == [6, 5, 7, 0]
    assert read(machine, "b", VPNS)[0] == [5, 9, 7, 0]
    assert machine.host.frames.refcount[mpns_a[1]] == 2
    machine.host.check_invariants()


def test_salting_within_keeps_sharing_inside_each_vm():
    machine = machine_with({"a": [5, 5, 0, 0], "b": [5, 5, 0, 0]}, salting="within")
    used = machine.host.frames.n_used
    scan_all(machine)
    # Each VM shares its own 5s and its own zeroes: two frames freed per VM.
    assert machine.host.frames.n_used == used - 4
    _, mpns_a = read(machine, "a", VPNS)
    _, mpns_b = read(machine, "b", VPNS)
    assert mpns_a[0] != mpns_b[0]
    machine.host.check_invariants()


def test_explicit_salts_share_between_vms_with_equal_salts():
    machine = machine_with({"a": [5], "b": [5], "c": [5]}, salting="explicit")
    machine.host.explicit_salts.update({0: 7, 1: 7, 2: 8})
    scan_all(machine)
    mpns = {n: read(machine, n, VPNS[:1])[1][0] for n in "abc"}
    assert mpns["a"] == mpns["b"] != mpns["c"]


def test_stale_hint_is_replaced():
    machine = machine_with({"a": [5], "b": [5]})
    a, b = machine.vm("a").host_vm, machine.vm("b").host_vm
    a.share_scan(data_ppns(machine, "a"))  # hint for a's page
    machine.host.frames.content[a.pmap.mpn[data_ppns(machine, "a")]] = 6  # a rewrites it
    b.share_scan(data_ppns(machine, "b"))
    c = machine.host.sharing.counters
    assert c.stale_hints == 1 and c.frames_freed == 0
    machine.host.check_invariants()


def test_last_sharer_leaving_frees_the_frame():
    machine = machine_with({"a": [5], "b": [5]})
    scan_all(machine)
    shared = machine.vm("a").host_vm.pmap.mpn[data_ppns(machine, "a")][0]
    used = machine.host.frames.n_used
    machine.vm("a").host_vm.release(data_ppns(machine, "a"), Backing.BALLOONED)
    assert machine.host.frames.refcount[shared] == 1 and machine.host.frames.n_used == used
    machine.vm("b").host_vm.release(data_ppns(machine, "b"), Backing.BALLOONED)
    assert machine.host.frames.n_used == used - 1
    assert machine.host.sharing.n_entries(2) == 0
    machine.host.check_invariants()


def test_page_tables_and_untouched_pages_are_not_candidates():
    machine = machine_with({"a": [5]})
    vm = machine.vm("a").host_vm
    vm.share_scan(np.arange(vm.n_ppns))
    c = machine.host.sharing.counters
    assert c.page_tables == machine.vm("a").tables.n_tables
    assert c.not_backed == vm.n_ppns - vm.pmap.backed().size


def test_table_grows_and_keeps_entries():
    table = SharingTable(capacity=8)
    machine = machine_with({"a": list(range(1, 40))})
    machine.host.sharing = table
    vm = machine.vm("a").host_vm
    vm.share_scan(data_ppns(machine, "a"))
    assert table.table.shape[0] >= 64 and table.n_entries(1) == 39
