"""The pages per state a pmap keeps equal a recount after any sequence of operations.

``Pmap.counts`` is updated at each transition instead of counted when asked
(``core/counted.py``): a transition that bypassed it would leave every later
``make_room``, limit and row wrong without failing anything at once. Random
sequences of what moves pages between states (first touches and writes, reads
that swap in and decompress, sharing scans, copy-on-write breaks, ESX-style
reclaim with compression, swap-outs, balloon releases and deflations, free
page reports, the emergency swap of a host out of frames, a VM held to its
limit, power off) run on a small host whose VMs together have more pages than
it has frames; after every step each VM's kept counts must equal a recount and
the host's invariants must hold.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.hardware.page_table import TableStore
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.hypervisor.host import Host
from hvmem.hypervisor.pmap import Backing, Pmap
from hvmem.hypervisor.reclaim.balloon import BalloonHost

VM_PAGES = 160
HOST_FRAMES = 256  # less than the two VMs' pages plus the emergency slack: make_room swaps
# Written values: a few common to both VMs (shared by the scanner), zeroes, and
# values that compress or do not (low byte: the compressed size code).
TOKENS = np.array([0, 0x5500 | 0x10, 0x6600 | 0x10, 0x100 | 0x10, 0x200 | 0xFF],
                  dtype=np.uint64)

pages = st.lists(st.integers(0, VM_PAGES - 1), min_size=1, max_size=40)
OPS = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 1), pages, st.integers(0, TOKENS.size - 1)),
    st.tuples(st.just("read"), st.integers(0, 1), pages, st.just(0)),
    st.tuples(st.just("share"), st.integers(0, 1), pages, st.just(0)),
    st.tuples(st.just("cow"), st.integers(0, 1), pages, st.just(0)),
    st.tuples(st.just("reclaim"), st.integers(0, 1), pages, st.integers(0, 1)),
    st.tuples(st.just("swap_out"), st.integers(0, 1), pages, st.just(0)),
    st.tuples(st.just("balloon"), st.integers(0, 1), pages, st.just(0)),
    st.tuples(st.just("deflate"), st.integers(0, 1), pages, st.just(0)),
    st.tuples(st.just("report"), st.integers(0, 1), pages, st.just(0)),
    st.tuples(st.just("cap"), st.integers(0, 1), pages, st.integers(20, 120)),
    st.tuples(st.just("power_off"), st.integers(0, 1), pages, st.just(0)),
)


def check_counts(host: Host) -> None:
    for vm in host.vms:
        assert vm.pmap.counts.tolist() == vm.pmap.recount().tolist(), vm.name
    host.check_invariants()


def run(ops, swap_selection: str) -> Host:
    host = Host(HOST_FRAMES, "nested", salting="across")
    host.swap_selection = swap_selection
    vms = [host.add_vm(name, VM_PAGES, TableStore(VM_PAGES, name)) for name in "ab"]
    balloons = [BalloonHost(vm, VirtioBalloon()) for vm in vms]
    rng = np.random.default_rng(7)
    for step, (kind, k, raw, arg) in enumerate(ops):
        vm, ppns = vms[k], np.unique(np.asarray(raw, dtype=np.int64))
        host.now_ns = (step + 1) * 1_000_000
        if kind == "write":
            vm.write_pages(ppns, np.full(ppns.size, TOKENS[arg]))
        elif kind == "read":
            vm.read_pages(ppns)
        elif kind == "share":
            vm.share_scan(ppns)
        elif kind == "cow":
            vm.break_cow(ppns[vm.pmap.state[ppns] == Backing.SHARED])
        elif kind == "reclaim":
            vm.reclaim(ppns.size, swap_selection, rng, compress=True, share_first=bool(arg))
        elif kind == "swap_out":
            vm.swap_out(ppns.size, swap_selection, rng)
        elif kind == "balloon":
            vm.release(ppns, Backing.BALLOONED)
        elif kind == "deflate":  # the guest takes pages back out of the balloon
            balloons[k].device.push_deflated(ppns)
            balloons[k].collect(host.now_ns)
        elif kind == "report":
            vm.release(ppns, Backing.UNBACKED)
        elif kind == "cap":
            vm.cap_pages = arg
        elif kind == "power_off":
            vm.release(np.arange(VM_PAGES), Backing.UNBACKED)
        check_counts(host)
    return host


@settings(max_examples=60, deadline=None)
@given(st.lists(OPS, min_size=1, max_size=25), st.sampled_from(["random", "lru"]))
def test_kept_counts_equal_a_recount_after_any_operations(ops, swap_selection):
    run(ops, swap_selection)


def test_the_emergency_swap_and_a_limit_are_reached():
    """Both VMs write all their pages: the host runs out of frames, a capped VM hits its cap."""
    every, low, high = list(range(VM_PAGES)), list(range(80)), list(range(80, VM_PAGES))
    host = run([("cap", 1, [0], 60), ("write", 1, low, 4), ("write", 1, high, 4),
                ("write", 0, every, 4), ("write", 0, every, 3)], "random")
    assert sum(vm.counters.emergency_swaps for vm in host.vms) > 0
    assert host.vms[1].counters.limit_swaps > 0


def test_pages_at_ranks_is_flatnonzero_indexed():
    pmap = Pmap(1000)
    rng = np.random.default_rng(3)
    pmap.set_state(rng.choice(1000, 300, replace=False), Backing.PRIVATE)
    pmap.set_state(rng.choice(1000, 100, replace=False), Backing.SHARED)
    for state in (Backing.PRIVATE, Backing.SHARED, Backing.UNBACKED):
        every = np.flatnonzero(pmap.state == state)
        ranks = np.sort(rng.choice(every.size, min(50, every.size), replace=False))
        assert pmap.pages_at_ranks(state, ranks).tolist() == every[ranks].tolist()
    assert pmap.counts.tolist() == pmap.recount().tolist()


def test_pages_at_ranks_leaves_out_the_pages_to_skip():
    pmap = Pmap(500)
    rng = np.random.default_rng(5)
    pmap.set_state(rng.choice(500, 200, replace=False), Backing.PRIVATE)
    busy = np.unique(rng.integers(0, 500, 80))
    every = np.flatnonzero(pmap.state == Backing.PRIVATE)
    every = every[~np.isin(every, busy)]
    skip = busy[pmap.state[busy] == Backing.PRIVATE]
    ranks = np.sort(rng.choice(every.size, 40, replace=False))
    got = pmap.pages_at_ranks(Backing.PRIVATE, ranks, skip)
    assert got.tolist() == every[ranks].tolist()


def test_pages_at_ranks_counts_whole_words_as_the_scan_did():
    """Every state mix, size (whole words and a tail), skip and rank list: flatnonzero's pages."""
    rng = np.random.default_rng(11)
    for trial in range(200):
        n = int(rng.integers(1, 3000))
        pmap = Pmap(n)
        states = rng.integers(0, len(Backing), n).astype(np.uint8)
        if trial % 3 == 0:  # long runs of one state: whole words passed over
            states[rng.random(n) < 0.9] = Backing.UNBACKED
        pmap.state[:] = states
        for state in Backing:
            skip = np.unique(rng.integers(0, n, int(rng.integers(0, 40))))
            skip = skip[states[skip] == state]
            every = np.flatnonzero(states == state)
            every = every[~np.isin(every, skip)]
            if every.size == 0:
                continue
            ranks = np.sort(rng.integers(0, every.size, int(rng.integers(1, 30))))
            got = pmap.pages_at_ranks(state, ranks, skip)
            assert got.tolist() == every[ranks].tolist()
