import numpy as np
import pytest

from hvmem.hypervisor.host import Host
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim import sharing_table as t
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


@pytest.mark.parametrize("initial_slots", [8, 32, 256])
def test_results_do_not_depend_on_the_arrays_size(monkeypatch, initial_slots):
    # The array starts at ``initial_slots`` and doubles as entries come; the
    # stale-hint clean-up still comes when the full 256 slots would pass load 1/2.
    monkeypatch.setattr(t, "INITIAL_SLOTS", initial_slots)
    table = SharingTable(capacity=256)
    assert table.table.shape[0] == initial_slots
    machine = machine_with({"a": list(range(1, 40))})
    machine.host.sharing = table
    vm = machine.vm("a").host_vm
    ppns = data_ppns(machine, "a")
    for rewrite in range(4):
        machine.host.frames.content[vm.pmap.mpn[ppns]] = np.arange(1, 40) + 1000 * rewrite
        vm.share_scan(ppns)
        assert table.table.shape[0] <= 256 and table.t_used[0] * 4 <= table.table.shape[0] * 3
    assert table.counters.stale_hints_dropped == 117 and table.n_entries(1) == 39
    machine.host.frames.content[vm.pmap.mpn[ppns[1]]] = machine.host.frames.content[
        vm.pmap.mpn[ppns[0]]]
    vm.share_scan(ppns[1:2])
    assert table.counters.hint_promotions == 1


def test_stale_hints_are_dropped_instead_of_growing_the_table():
    table = SharingTable(capacity=256)
    machine = machine_with({"a": list(range(1, 40))})
    machine.host.sharing = table
    vm = machine.vm("a").host_vm
    ppns = data_ppns(machine, "a")
    for rewrite in range(4):  # each round the VM rewrites every page, then it is scanned
        machine.host.frames.content[vm.pmap.mpn[ppns]] = np.arange(1, 40) + 1000 * rewrite
        vm.share_scan(ppns)
    # Rounds 1-3 left 117 hints whose pages changed since; before round 4 would
    # have pushed the load past 1/2, they were dropped rather than the table grown.
    assert table.counters.stale_hints_dropped == 117
    assert table.table.shape[0] == 256 and table.n_entries(1) == 39
    # The hints kept still work: a second page with one of those contents shares.
    machine.host.frames.content[vm.pmap.mpn[ppns[1]]] = machine.host.frames.content[
        vm.pmap.mpn[ppns[0]]]
    vm.share_scan(ppns[1:2])
    assert table.counters.hint_promotions == 1
    machine.host.check_invariants()


@pytest.mark.parametrize("seed", range(8))
def test_rehash_in_place_keeps_every_entry_findable(monkeypatch, seed):
    """Resizing in place (growing, shrinking, the same size) loses no entry and no tombstone
    survives: clusters that wrap past the array's end, displaced entries and tombstones."""

    monkeypatch.setattr(t, "INITIAL_SLOTS", 16)
    rng = np.random.default_rng(seed)
    table = SharingTable(1 << 12, n_frames=1 << 20)
    entries = {}
    sizes = [table.table.shape[0]]
    # Keys crowded into a few homes (the top bits), some near the end so clusters wrap.
    tops = rng.choice(np.array([0, 1, 2, 63, 64, 127], dtype=np.uint64), 150)
    keys = (tops << np.uint64(57)) | rng.integers(2, 1 << 40, 150).astype(np.uint64)
    for rounds in range(6):
        table.reserve(keys.size)
        for key in keys.tolist():
            if key in entries:
                continue
            slot = t._find(table.table, np.uint64(key), table.shift)
            assert slot < 0
            frame = int(rng.integers(0, 1 << 20))
            kind = t.KIND_SHARED if frame % 2 else t.KIND_HINT
            table.table[-slot - 1] = key, t.entry_word(frame, kind)
            table.t_used[0] += 1
            entries[key] = int(t.entry_word(frame, kind))
        for key in rng.choice(np.array(list(entries), dtype=np.uint64), 40).tolist():
            if key in entries:  # a tombstone where it was
                slot = t._find(table.table, np.uint64(key), table.shift)
                table.table[slot]["key"] = t.KEY_TOMBSTONE
                del entries[key]
        table._rehash(len(entries) * (3 - rounds % 3))  # shrinks, grows, or stays
        sizes.append(table.table.shape[0])
        assert not np.any(table.table["key"] == t.KEY_TOMBSTONE)
        assert int(t._count_live(table.table)) == len(entries)
        for key, word in entries.items():
            slot = t._find(table.table, np.uint64(key), table.shift)
            assert slot >= 0 and int(table.table[slot]["val"]) == word
        keys = (tops << np.uint64(57)) | rng.integers(2, 1 << 40, 150).astype(np.uint64)
    steps = np.diff(sizes)
    assert np.any(steps > 0) and np.any(steps < 0) and np.any(steps == 0)


def test_slot_word_widens_for_a_host_of_2_30_frames():

    assert SharingTable(1 << 8).table.dtype.itemsize == 12
    wide = SharingTable(1 << 8, n_frames=t.NARROW_SLOT_FRAMES)
    assert wide.table.dtype.itemsize == 16
    frame = (1 << 33) + 5
    wide.table[3] = 7, t.entry_word(frame, t.KIND_SHARED)
    assert t.entry_frame(wide.table[3]["val"]) == frame
    assert wide.shared_frames().tolist() == [frame]


def reference_scan(ppns, state, mpn, is_table, salt, content, owner, frame_ppn, refcount,
                   entries):
    """The lookup protocol of the module docstring, one candidate at a time in ``ppns`` order.

    ``entries`` maps a key to (kind, frame); returns actions, targets, promoted ppns.
    """
    from hvmem.hypervisor.reclaim import sharing as s

    actions, targets, promoted = [], {}, []
    for i, p in enumerate(ppns.tolist()):
        m = int(mpn[p])
        if is_table[p]:
            actions.append(s.A_PAGE_TABLE)
        elif state[p] not in (Backing.PRIVATE, Backing.SHARED):
            actions.append(s.A_NOT_BACKED)
        elif owner[m] == SHARED_OWNER:
            actions.append(s.A_ALREADY)
        else:
            key = int(t.table_key(content[m], salt))
            kind, frame = entries.get(key, (None, -1))
            if kind is None:
                entries[key] = (t.HINT, m)
                actions.append(s.A_HINT)
            elif kind == t.SHARED:
                if content[frame] != content[m]:
                    actions.append(s.A_FALSE)
                else:
                    refcount[frame] += 1
                    actions.append(s.A_SHARE)
                    targets[i] = frame
            elif not (owner[frame] >= 0 and frame_ppn[frame] >= 0 and refcount[frame] == 1
                      and frame != m and int(t.table_key(content[frame], salt)) == key):
                entries[key] = (t.HINT, m)
                actions.append(s.A_STALE)
            else:
                promoted.append(int(frame_ppn[frame]))
                owner[frame], frame_ppn[frame], refcount[frame] = SHARED_OWNER, -1, 2
                entries[key] = (t.SHARED, frame)
                actions.append(s.A_PROMOTE)
                targets[i] = frame
    return actions, targets, promoted


@pytest.mark.parametrize("seed", range(6))
def test_scan_kernel_matches_the_one_page_at_a_time_protocol(seed):
    """Repeated batches over one VM: duplicates within a batch, pages promoted earlier
    in the batch, stale hints, a false match, page tables and unbacked pages."""
    from hvmem.hypervisor.reclaim import sharing as s

    rng = np.random.default_rng(seed)
    n_pages, n_frames, salt = 3000, 3100, int(rng.integers(0, 3))
    state = np.where(rng.random(n_pages) < 0.1, Backing.UNBACKED, Backing.PRIVATE)
    state = state.astype(np.uint8)
    is_table = rng.random(n_pages) < 0.02
    mpn = np.arange(n_pages, dtype=np.int64)
    content = rng.integers(0, 1000, n_frames).astype(np.uint64)  # duplicates and singles
    owner = np.zeros(n_frames, dtype=np.int32)
    frame_ppn = np.arange(n_frames, dtype=np.int64)
    refcount = np.ones(n_frames, dtype=np.int32)
    table = SharingTable(1 << 8)
    entries = {}
    # A shared frame whose key is token 7's but whose content is not: a false match.
    false_frame = n_pages
    content[false_frame], owner[false_frame], frame_ppn[false_frame] = 1 << 40, SHARED_OWNER, -1
    key = t.table_key(np.uint64(7), salt)
    table.reserve(1)
    slot = -t._find(table.table, key, table.shift) - 1
    table.table[slot] = key, (np.uint64(false_frame) << t.KIND_SHIFT) | t.KIND_SHARED
    table.t_used[0] += 1
    entries[int(key)] = (t.SHARED, false_frame)
    ref = (owner.copy(), frame_ppn.copy(), refcount.copy())
    seen = set()
    for _ in range(5):
        ppns = np.sort(rng.choice(n_pages, 1500, replace=False)).astype(np.int64)
        n = ppns.size
        table.reserve(n)
        keys, mpns, action, joined, old, promoted_vm, promoted_ppn = table.scratch(n)
        counts = np.zeros(s.N_ACTIONS + 1, dtype=np.int64)
        state_before, mpn_before = state.copy(), mpn.copy()
        n_promoted = s.scan_kernel(ppns, state, mpn, is_table, salt, content, owner, frame_ppn,
                                   refcount, table.table, table.t_used, table.shift, keys,
                                   mpns, action, joined, old, promoted_vm, promoted_ppn,
                                   counts)
        actions, targets, promoted = reference_scan(ppns, state_before, mpn_before, is_table,
                                                    salt, content, *ref, entries)
        action = action[:n]
        assert action.tolist() == actions
        seen.update(actions)
        at = np.flatnonzero((action == s.A_SHARE) | (action == s.A_PROMOTE))
        n_joined = int(counts[s.A_SHARE] + counts[s.A_PROMOTE])
        assert n_joined == at.size
        np.testing.assert_array_equal(joined[:n_joined], ppns[at])
        np.testing.assert_array_equal(old[:n_joined], mpn_before[ppns[at]])
        # The joined pages, and only they, now map their shared frames.
        assert dict(zip(at.tolist(), mpn[ppns[at]].tolist(), strict=True)) == targets
        mpn_before[ppns[at]] = mpn[ppns[at]]
        state_before[ppns[at]] = Backing.SHARED
        np.testing.assert_array_equal(mpn, mpn_before)
        np.testing.assert_array_equal(state, state_before)
        assert sorted(promoted_ppn[:n_promoted].tolist()) == sorted(promoted)
        assert np.all(promoted_vm[:n_promoted] == 0)
        tally = np.bincount(actions, minlength=s.N_ACTIONS).tolist()
        assert counts[: s.N_ACTIONS].tolist() == tally and counts[s.N_ACTIONS] == 0
        for got, want in zip((owner, frame_ppn, refcount), ref, strict=True):
            np.testing.assert_array_equal(got, want)
        live = table.table[table.table["key"] > t.KEY_TOMBSTONE]
        kinds = np.where(live["val"] & t.KIND_SHARED, t.SHARED, t.HINT)
        assert {int(k): (int(kd), int(e >> t.KIND_SHIFT))
                for k, kd, e in zip(live["key"], kinds, live["val"], strict=True)} == entries
        # Some pages are written between scans: their hints go stale.
        written = rng.choice(n_pages, 100, replace=False)
        private = written[owner[written] >= 0]
        content[private] = rng.integers(0, 1000, private.size)
    assert seen == set(range(s.N_ACTIONS))  # every outcome was exercised


@pytest.mark.parametrize("frames, slots", [(1 << 17, 1 << 17), ((1 << 17) + 1, 1 << 18),
                                           (3 << 16, 1 << 18), (1000, 1 << 16)])
def test_the_host_gives_its_table_a_slot_per_frame(frames, slots):
    # The smallest power of two holding a slot per frame (at least INITIAL_SLOTS): a
    # host of exactly a power of two frames is not given twice the slots.
    assert Host(frames, "nested").sharing.capacity == slots
