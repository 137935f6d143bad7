"""The guest kernel: faults, reclaim, swap, page reuse, the balloon driver.

The property test runs random guest activity (mapping and unmapping anonymous
and file regions, touches and sweeps of them, ballooning with free page
reporting) under a hypervisor that shares, compresses and swaps behind the
guest's back, and checks the guest's and the host's invariants after every
step and, at the end, that every page written and not unmapped reads what was
written last. Touches land on the regions mapped at the time (a touch names a
mapped region by index, a page by remainder) and written values come from a
small pool, so written pages share, later writes break copy-on-write, and the
values that do not compress are swapped by the host and swapped back in. Each
example reports the paths it took as hypothesis events, and the test asserts
that each path in ``GUEST_REACH`` was taken in at least that share of its
examples, so a strategy that stops reaching one fails; it prints how often each
path was taken (``pytest -s`` shows it, a failure repeats it). ``@example``
cases force each path.

Running longer: ``pytest --hypothesis-profile=long`` (or
``HYPOTHESIS_PROFILE=long``) runs ten times the examples, freshly random; the
CI profile (``CI=true``) runs the counts in the ``@settings``, derandomized.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hvmem.core.stamps import STAMP_MAX
from hvmem.errors import ConfigError, InvariantViolation
from hvmem.guest.balloon_driver import BalloonDriver
from hvmem.guest.kernel import PTE_SWAP, GuestConfig, GuestKernel, PageKind
from hvmem.hardware.page_table import PTE_PRESENT, TableStore
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.hypervisor.host import Host
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.balloon import BalloonHost
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind
from path_tally import assert_reached, examples, took


def make_guest(memory_pages=256, swap_pages=None, policy="lru", host_pages=2048,
               processes=1, paging="nested", kernel_class=GuestKernel):
    host = Host(host_pages, paging)
    tables = TableStore(memory_pages, "g")
    vm = host.add_vm("g", memory_pages, tables)
    kernel = kernel_class(GuestConfig(memory_pages, swap_pages, "ssd", policy, processes),
                          vm, tables, np.random.default_rng(0))
    return host, vm, kernel


def batch(vpns, writes=None, tokens=None, process=0, ops=()):
    vpns = np.asarray(vpns, dtype=np.int64)
    n = vpns.size
    writes = np.zeros(n, bool) if writes is None else np.asarray(writes, bool)
    tokens = np.zeros(n, np.uint64) if tokens is None else np.asarray(tokens, np.uint64)
    return AccessBatch(np.full(n, process, np.int32), vpns, writes, np.ones(n, np.int64),
                       tokens, tuple(ops))


def mmap(first, n, process=0, file_backed=False):
    return MemoryOp(MemoryOpKind.MAP, process, first, n, file_backed)


def read_virtual(kernel, vm, vpns, process=0):
    """Contents of virtual pages as the guest would read them (faulting them in).

    The read comes a nanosecond after everything before it, so the pages it faults
    in are the newest: at an equal time FIFO's tie-break by page number could evict
    one of them again before the read returns.
    """
    kernel.access(batch(vpns, process=process), kernel.now_ns + 1)
    ptes = kernel.processes[process].space.page_table.leaf_entries(np.asarray(vpns))
    assert np.all(ptes & PTE_PRESENT)
    ppns = ((ptes >> np.uint64(12)) & np.uint64((1 << 40) - 1)).astype(np.int64)
    return vm.read_pages(ppns)[0]


def test_demand_zero_faults_back_pages_lazily():
    host, vm, kernel = make_guest()
    kernel.access(batch([], ops=[mmap(0x100, 8)]), 0)
    assert vm.counters.first_touch_faults == 0 or kernel.count(PageKind.ANON) == 0
    result = kernel.access(batch([0x100, 0x101, 0x100]), 1)
    assert result.minor_faults == 2 and result.major_faults == 0
    assert kernel.count(PageKind.ANON) == 2
    assert np.all(read_virtual(kernel, vm, [0x100, 0x101]) == 0)
    host.check_invariants()
    kernel.check_invariants()


def test_access_outside_mappings_is_invalid_and_dropped():
    _, _, kernel = make_guest()
    result = kernel.access(batch([0x500]), 0)
    assert result.dropped == 1 and kernel.counters.invalid_accesses == 1
    assert kernel.count(PageKind.ANON) == 0


def test_pressure_swaps_and_data_survives():
    host, vm, kernel = make_guest(memory_pages=128, swap_pages=512)
    n = 300
    kernel.access(batch([], ops=[mmap(0x1000, n)]), 0)
    vpns = np.arange(0x1000, 0x1000 + n)
    tokens = np.arange(1, n + 1, dtype=np.uint64) * 7
    for t, chunk in enumerate(np.array_split(np.arange(n), 10)):
        kernel.access(batch(vpns[chunk], np.ones(chunk.size, bool), tokens[chunk]), t)
    assert kernel.counters.swap_outs > 0
    assert kernel.allocator.n_allocated <= 128
    got = np.concatenate([read_virtual(kernel, vm, vpns[c]) for c in np.array_split(
        np.arange(n), 30)])
    assert np.array_equal(got, tokens)
    assert kernel.counters.swap_ins > 0 and kernel.counters.major_faults > 0
    host.check_invariants()
    kernel.check_invariants()


def test_guest_never_exceeds_its_memory_and_reuse_does_not_grow_host():
    host, vm, kernel = make_guest(memory_pages=128)
    kernel.access(batch([], ops=[mmap(0, 64)]), 0)
    kernel.access(batch(np.arange(64), np.ones(64, bool), np.full(64, 5)), 1)
    used = host.frames.n_used
    kernel.access(batch([], ops=[MemoryOp(MemoryOpKind.UNMAP, 0, 0, 64), mmap(0x100, 64)]), 2)
    # The new range shares the old one's page-table page, so any growth would be data.
    kernel.access(batch(np.arange(0x100, 0x140), np.ones(64, bool), np.full(64, 6)), 3)
    assert host.frames.n_used == used  # the freed pages were reused, still backed
    assert vm.counters.first_touch_faults <= 128


def test_unmapped_swap_slots_are_released():
    _, _, kernel = make_guest(memory_pages=64, swap_pages=256)
    kernel.access(batch([], ops=[mmap(0, 200)]), 0)
    kernel.access(batch(np.arange(200), np.ones(200, bool), np.arange(200)), 1)
    assert kernel.swap.n_used > 0
    kernel.access(batch([], ops=[MemoryOp(MemoryOpKind.UNMAP, 0, 0, 200)]), 2)
    assert kernel.swap.n_used == 0
    kernel.check_invariants()


def test_file_pages_are_dropped_not_swapped():
    _, _, kernel = make_guest(memory_pages=64, swap_pages=256)
    kernel.access(batch([], ops=[mmap(0, 200, file_backed=True)]), 0)
    kernel.access(batch(np.arange(200)), 1)
    assert kernel.counters.swap_outs == 0
    assert kernel.counters.file_drops > 0
    assert kernel.counters.file_reads == 200
    kernel.check_invariants()


@pytest.mark.parametrize("policy,expected_kept", [("lru", 0x10), ("fifo", None)])
def test_lru_keeps_the_recently_used_page(policy, expected_kept):
    _, _, kernel = make_guest(memory_pages=64, swap_pages=512, policy=policy)
    low = kernel.low_pages
    kernel.access(batch([], ops=[mmap(0, 400)]), 0)
    kernel.access(batch([0x10], [True], [9]), 1)  # loaded first
    for t in range(2, 60):
        # keep touching page 0x10 while streaming through others
        kernel.access(batch([0x10, 0x20 + t]), t)
    pte = kernel.processes[0].space.page_table.leaf_entries(np.array([0x10]))[0]
    assert low > 0
    if expected_kept is not None:
        assert pte & PTE_PRESENT
    else:
        # FIFO evicts by load order: the first page loaded goes first, however hot.
        assert kernel.counters.swap_outs > 0


@pytest.mark.parametrize("policy", ["fifo", "lru", "clock", "random"])
def test_every_policy_keeps_the_guest_within_memory(policy):
    host, vm, kernel = make_guest(memory_pages=96, swap_pages=512, policy=policy)
    kernel.access(batch([], ops=[mmap(0, 300)]), 0)
    rng = np.random.default_rng(3)
    for t in range(30):
        v = rng.integers(0, 300, 20)
        kernel.access(batch(v, rng.random(20) < 0.5, rng.integers(1, 1 << 40, 20)), t)
        kernel.check_invariants()
    assert kernel.allocator.n_allocated <= 96
    host.check_invariants()


def test_bad_config():
    with pytest.raises(ConfigError, match="reclaim policy"):
        GuestConfig(64, reclaim_policy="opt")
    with pytest.raises(ConfigError, match="guest memory"):
        GuestConfig(0)


def test_balloon_inflates_pins_and_host_drops_backing():
    host, vm, kernel = make_guest(memory_pages=512, host_pages=4096)
    device = VirtioBalloon()
    driver = BalloonDriver(kernel, device)
    kernel.access(batch([], ops=[mmap(0, 64)]), 0)
    kernel.access(batch(np.arange(64), np.ones(64, bool), np.full(64, 3)), 0)
    # The guest touched its free memory at some point (e.g. boot): back it all.
    vm.back_pages(np.flatnonzero(kernel.kind == PageKind.FREE))
    used = host.frames.n_used
    device.set_target(200)
    driver.poll(0)
    assert driver.size_pages == 200 and device.actual_pages == 200
    assert kernel.count(PageKind.BALLOON) == 200
    freed = vm.release(device.take_inflated(), Backing.BALLOONED)
    assert freed == 200 and host.frames.n_used == used - 200
    assert device.stats is not None and device.stats.total_pages == 512
    device.set_target(50)
    driver.poll(1)
    assert driver.size_pages == 50 and device.take_deflated().size == 150
    assert kernel.allocator.n_allocated + kernel.allocator.n_free == 512
    host.check_invariants()
    kernel.check_invariants()


def test_balloon_under_pressure_makes_the_guest_swap():
    _, _, kernel = make_guest(memory_pages=256, swap_pages=512)
    device = VirtioBalloon()
    driver = BalloonDriver(kernel, device)
    kernel.access(batch([], ops=[mmap(0, 200)]), 0)
    kernel.access(batch(np.arange(200), np.ones(200, bool), np.arange(1, 201)), 0)
    device.set_target(180)
    for t in range(1, 8):
        driver.poll(t)
    assert driver.size_pages == 180
    assert driver.counters.slow_cycles > 0
    assert kernel.counters.swap_outs > 0
    kernel.check_invariants()


def test_deflate_on_oom_gives_pages_back():
    _, _, kernel = make_guest(memory_pages=128, swap_pages=0)
    device = VirtioBalloon(deflate_on_oom=True)
    driver = BalloonDriver(kernel, device)
    device.set_target(100)
    driver.poll(0)
    assert driver.size_pages == 100
    kernel.access(batch([], ops=[mmap(0, 64)]), 1)
    result = kernel.access(batch(np.arange(64), np.ones(64, bool), np.arange(64)), 1)
    assert result.dropped == 0
    assert driver.counters.oom_deflated > 0


def test_free_page_reporting_reports_pages_that_stay_free_once():
    _, _, kernel = make_guest(memory_pages=128)
    device = VirtioBalloon(free_page_reporting=True)
    driver = BalloonDriver(kernel, device)
    assert driver.report_free_pages() == 0  # nothing was free at the last report yet
    first = driver.report_free_pages()
    assert first == kernel.allocator.n_free
    assert driver.report_free_pages() == 0  # already reported
    reported = device.take_reported()
    assert reported.size == first


def test_swap_entries_live_in_non_present_ptes():
    _, _, kernel = make_guest(memory_pages=64, swap_pages=256)
    kernel.access(batch([], ops=[mmap(0, 150)]), 0)
    kernel.access(batch(np.arange(150), np.ones(150, bool), np.arange(150)), 1)
    ptes = kernel.processes[0].space.page_table.leaf_entries(np.arange(150))
    swapped = (ptes & PTE_SWAP) != 0
    assert swapped.sum() == kernel.swap.n_used > 0
    assert not np.any(ptes[swapped] & PTE_PRESENT)


def test_reverse_map_widens_for_a_mapping_above_int32():
    """VPNs are kept as int32 until a mapping reaches past 2**31 pages, then as int64."""
    host, vm, kernel = make_guest(memory_pages=64, swap_pages=256)
    kernel.access(batch(np.arange(0x100, 0x120), ops=[mmap(0x100, 32)]), 0)
    assert kernel.vpn.dtype == np.int32
    high = (1 << 36) - 200  # the top of the 48-bit address space
    kernel.access(batch([], ops=[mmap(high, 150)]), 1)
    assert kernel.vpn.dtype == np.int64
    tokens = np.arange(150, dtype=np.uint64) + 1
    kernel.access(batch(high + np.arange(150), np.ones(150, bool), tokens), 2)
    assert kernel.counters.swap_outs > 0  # reclaim looked the high VPNs up by page
    got = np.concatenate([read_virtual(kernel, vm, high + c)
                          for c in np.array_split(np.arange(150), 10)])
    assert np.array_equal(got, tokens)
    assert np.all(read_virtual(kernel, vm, np.arange(0x100, 0x120)) == 0)
    host.check_invariants()
    kernel.check_invariants()


# -- property: guest activity under host reclamation (see the module docstring) -------

#: Written values: two compress to the cache, two do not (the low byte is the size).
GUEST_VALUES = (0x21 << 16 | 0x10, 0x22 << 16 | 0x70, 0x23 << 16 | 0xF0, 0x24 << 16 | 0xF0)
N_REGIONS = 8
REGION_STRIDE = 64  # region r starts at VPN r * 64


touch_st = st.tuples(st.integers(0, N_REGIONS - 1), st.integers(0, 39), st.booleans(),
                     st.integers(0, len(GUEST_VALUES) - 1))
region_st = st.tuples(st.integers(8, 40), st.booleans())  # pages, file-backed
op_st = st.one_of(
    st.tuples(st.just("map"), st.integers(0, N_REGIONS - 1), region_st),
    st.tuples(st.just("unmap"), st.integers(0, N_REGIONS - 1)),
    # one_of draws each distinct strategy object equally often: those built twice
    # here are drawn twice as often.
    *(st.tuples(st.just("touch"), st.lists(touch_st, min_size=1, max_size=30))
      for _ in range(2)),
    st.tuples(st.just("balloon"), st.integers(0, 100)),
    # Touch a whole mapped region (reads, or writes of one value).
    *(st.tuples(st.just("sweep"), st.integers(0, N_REGIONS - 1), st.booleans(),
                st.integers(0, len(GUEST_VALUES) - 1)) for _ in range(2)),
    # The hypervisor reclaims behind the guest's back: share, compress, swap ...
    st.tuples(st.just("host_reclaim"), st.integers(1, 40), st.sampled_from(["random", "lru"])),
    # ... and its sharing scanner visits every page.
    st.tuples(st.just("host_share"),),
)


class GuestRun:
    """One guest under one host, driven by ops; ``paths`` are what it went through."""

    def __init__(self, policy, paging, layout):
        self.host, self.vm, self.kernel = make_guest(memory_pages=96, swap_pages=160,
                                                     policy=policy, paging=paging)
        self.device = VirtioBalloon(free_page_reporting=True)
        self.driver = BalloonDriver(self.kernel, self.device)
        self.balloon = BalloonHost(self.vm, self.device)
        self.regions: dict[int, tuple[int, bool]] = {}  # region -> (pages, file_backed)
        self.expected: dict[int, int] = {}  # vpn -> token written
        self.paths: Counter = Counter()
        for r, region in enumerate(layout):
            self.step(0, ("map", r, region))

    def touch(self, t, refs):
        """Touch (vpn, write, token) references in one batch; record what is written."""
        vpns = np.array([v for v, _, _ in refs])
        writes = np.array([w for _, w, _ in refs])
        tokens = np.array([tok for _, _, tok in refs], np.uint64)
        result = self.kernel.access(batch(vpns, writes, tokens), t)
        self.paths["reference completed"] += result.refs
        for k, (v, w, tok) in enumerate(refs):
            if w and not result.dropped_mask[k]:
                self.expected[v] = tok

    def step(self, t, op):
        kernel, vm, regions = self.kernel, self.vm, self.regions
        if op[0] == "map" and op[1] not in regions:
            n, file_backed = op[2]
            regions[op[1]] = (n, file_backed)
            kernel.access(batch([], ops=[mmap(op[1] * REGION_STRIDE, n,
                                              file_backed=file_backed)]), t)
        elif op[0] == "unmap" and op[1] in regions:
            n, _ = regions.pop(op[1])
            first = op[1] * REGION_STRIDE
            kernel.access(batch([], ops=[MemoryOp(MemoryOpKind.UNMAP, 0, first, n)]), t)
            for v in range(first, first + n):
                self.expected.pop(v, None)
        elif op[0] in ("touch", "sweep") and regions:
            mapped = sorted(regions)
            if op[0] == "sweep":
                r = mapped[op[1] % len(mapped)]
                refs = [(r * REGION_STRIDE + p, op[2], GUEST_VALUES[op[3]])
                        for p in range(regions[r][0])]
            else:
                refs = []
                for r, p, w, value in op[1]:
                    r = mapped[r % len(mapped)]
                    refs.append((r * REGION_STRIDE + p % regions[r][0], w, GUEST_VALUES[value]))
            self.touch(t, refs)
        elif op[0] == "balloon":
            self.balloon.set_target(op[1])
            self.driver.poll(t)
            self.driver.report_free_pages()
            self.balloon.collect(t)
        elif op[0] == "host_reclaim":
            vm.reclaim(op[1], op[2], np.random.default_rng(t))
        elif op[0] == "host_share":
            vm.share_scan(np.arange(vm.n_ppns))
        assert kernel.allocator.n_allocated + kernel.allocator.n_free == 96
        assert kernel.count(PageKind.BALLOON) == self.driver.size_pages
        kernel.check_invariants()
        self.host.check_invariants()

    def read_back(self, vpn):
        """What the guest reads at ``vpn`` (faulting it in), or its swap slot's data if
        memory is too short to fault it in."""
        kernel = self.kernel
        kernel.access(batch([vpn]), kernel.now_ns)
        pte = kernel.processes[0].space.page_table.leaf_entries(np.array([vpn]))[0]
        frame = int((pte >> np.uint64(12)) & np.uint64((1 << 40) - 1))
        if pte & PTE_PRESENT:
            return int(self.vm.read_pages(np.array([frame]))[0][0])
        assert pte & PTE_SWAP, "a written page is neither resident nor in swap"
        return int(kernel.swap.content[frame])

    def paths_taken(self):
        kc, dc = self.kernel.counters, self.driver.counters
        sharing = self.host.sharing.counters
        self.paths.update({
            "minor fault": kc.minor_faults,
            "guest swap-in": kc.swap_ins,
            "guest reclaim: swap-out": kc.swap_outs,
            "guest reclaim: file page dropped": kc.file_drops,
            "balloon inflation": dc.inflated,
            "balloon deflation": dc.deflated,
            "free page reported": dc.reported,
            "page shared": sharing.shared,
            "copy-on-write break": sharing.cow_breaks,
            "host compression": self.vm.zip.counters.compressed,
            "decompression": self.vm.zip.counters.decompressed,
            "host swap-out": self.vm.swapfile.counters.swap_outs,
            "host swap-in": self.vm.counters.swap_in_faults,
            "double paging": self.vm.swapfile.counters.double_paging,
        })
        return self.paths


def run_guest(ops, policy, paging, layout):
    """Run ``ops``, then read every anonymous page written; the paths taken."""
    r = GuestRun(policy, paging, layout)
    for t, op in enumerate(ops, start=1):
        r.step(t, op)
    # Every page written and not unmapped still holds what was written last,
    # whatever guest reclaim, ballooning, free page reporting and the host's
    # sharing, compression and swapping did in between.
    anon = {v: tok for v, tok in r.expected.items()
            if not r.regions.get(v // REGION_STRIDE, (0, True))[1]}
    for v in sorted(anon):
        assert r.read_back(v) == anon[v], f"data lost at vpn {v:#x}"
        r.paths["read of a written page"] += 1
    r.kernel.check_invariants()
    r.host.check_invariants()
    return r.paths_taken()


def sweep(region, value, write=True):
    return ("sweep", region, write, value)


#: Pages written with one value, shared by the host, then written again.
SHARE_AND_BREAK = [sweep(0, 0), ("host_share",), ("touch", [(0, 3, True, 1), (0, 4, False, 0)])]
#: The host compresses and swaps page-cache pages (each of its own content) behind the
#: guest, which reads them again.
HOST_RECLAIM_AND_BACK = [sweep(0, 0, False), ("host_reclaim", 40, "random"),
                         sweep(0, 0, False)]
#: The balloon inflates into a full guest (which reclaims), reports free pages, deflates.
BALLOON = [sweep(0, 3), sweep(1, 1), ("balloon", 70), ("balloon", 0), ("balloon", 0),
           sweep(1, 1, False)]

#: Share of examples that must take each path.
GUEST_REACH = {
    "reference completed": 0.8,
    "read of a written page": 0.4,
    "minor fault": 0.5,
    "guest reclaim: swap-out": 0.1,
    "guest reclaim: file page dropped": 0.08,
    "guest swap-in": 0.08,
    "balloon inflation": 0.3,
    "free page reported": 0.15,
    "page shared": 0.35,
    "copy-on-write break": 0.25,
    "host compression": 0.35,
    "decompression": 0.12,
    "host swap-out": 0.15,
    "host swap-in": 0.1,
}


@settings(max_examples=examples(300), deadline=None)
@example(ops=SHARE_AND_BREAK, policy="lru", paging="nested", layout=[(40, False)])
@example(ops=HOST_RECLAIM_AND_BACK, policy="clock", paging="shadow", layout=[(40, True)])
@example(ops=BALLOON, policy="fifo", paging="nested", layout=[(40, False), (40, False)])
@given(ops=st.lists(op_st, min_size=8, max_size=30),
       policy=st.sampled_from(["fifo", "lru", "clock", "random"]),
       paging=st.sampled_from(["nested", "shadow"]),
       layout=st.lists(region_st, min_size=1, max_size=3))
def guest_activity_property(ops, policy, paging, layout):
    took(run_guest(ops, policy, paging, layout))


def test_random_guest_activity_keeps_invariants_and_data():
    assert_reached(guest_activity_property, GUEST_REACH)


#: The reclaim policy's stamp arrays (FIFO keeps the first, LRU the second).
STAMP_ARRAYS = ("load_stamp", "use_stamp")


class NanosecondKernel(GuestKernel):
    """The kernel as it kept times before stamps: each page's times in int64 nanoseconds."""

    def __init__(self, *args, **kwargs):
        self._now_ns = 0
        super().__init__(*args, **kwargs)
        n = self.config.memory_pages
        for name in STAMP_ARRAYS:  # the ones the reclaim policy keeps, as nanoseconds
            if getattr(self.replacement, name).size:
                setattr(self.replacement, name, np.zeros(n, dtype=np.int64))

    @property
    def now_ns(self):
        return self._now_ns

    @now_ns.setter
    def now_ns(self, value):
        self._now_ns = value

    @property
    def now_stamp(self):  # pages are stamped with the time itself
        return self._now_ns


def dense_rank(a):
    """Each entry's rank among the distinct values: equal for arrays ordered alike, ties too."""
    return np.unique(a, return_inverse=True)[1]


@settings(max_examples=40, deadline=None)
@given(policy=st.sampled_from(["fifo", "lru"]), paging=st.sampled_from(["nested", "shadow"]),
       # Ticks: how far time moves (0: the same time again) and what is touched.
       ticks=st.lists(st.tuples(st.sampled_from([0, 0, 1, 3, 999, 10**12]),
                                st.integers(0, 2**32 - 1)), min_size=2, max_size=14))
def test_stamps_order_pages_and_choose_victims_as_nanoseconds_did(policy, paging, ticks):
    kernels = [make_guest(memory_pages=64, swap_pages=512, policy=policy, paging=paging,
                          kernel_class=cls)[2] for cls in (GuestKernel, NanosecondKernel)]
    stamped, timed = kernels
    for kernel in kernels:
        kernel.access(batch([], ops=[mmap(0, 160), mmap(0x200, 60, file_backed=True)]), 0)
        kernel.access(batch(np.arange(0, 160, 3)), 0)  # memory about full: ticks reclaim
    now = 0
    for gap, seed in ticks:
        now += gap
        rng = np.random.default_rng(seed)
        vpns = np.concatenate([rng.integers(0, 160, 24), rng.integers(0x200, 0x200 + 60, 8)])
        writes = rng.random(vpns.size) < 0.5
        results = [k.access(batch(vpns, writes, np.arange(1, vpns.size + 1)), now)
                   for k in kernels]
        a, b = results
        assert (a.refs, a.time_ns, a.minor_faults, a.major_faults, a.dropped) == (
            b.refs, b.time_ns, b.minor_faults, b.major_faults, b.dropped)
        assert np.array_equal(a.dropped_mask, b.dropped_mask)
        assert stamped.now_ns == now and timed.now_stamp == now
        # Same pages where they were, same order of their times, same victims next.
        assert np.array_equal(stamped.kind, timed.kind)
        assert stamped.counters == timed.counters
        for name in STAMP_ARRAYS:
            ours, theirs = getattr(stamped.replacement, name), getattr(timed.replacement, name)
            assert ours.dtype == np.int32
            assert np.array_equal(dense_rank(ours), dense_rank(theirs))
        for n in (1, 7, 32):
            assert np.array_equal(stamped._choose_victims(n, True), timed._choose_victims(n, True))
        stamped.check_invariants()
    assert stamped.counters.swap_outs + stamped.counters.file_drops > 0  # reclaim chose


@pytest.mark.parametrize(("policy", "stamps_of"), [("fifo", "load_stamp"), ("lru", "use_stamp")])
def test_stamps_count_distinct_times(policy, stamps_of):
    _, _, kernel = make_guest(memory_pages=64, policy=policy)
    kernel.access(batch([], ops=[mmap(0, 8)]), 0)
    assert kernel.now_stamp == 0  # time 0 is stamp 0, as pages never stamped
    stamps = []
    for t, vpn in [(0, 0), (5, 1), (5, 2), (10**15, 3), (10**15 + 1, 4)]:
        kernel.access(batch([vpn]), t)
        stamps.append(kernel.now_stamp)
    assert stamps == [0, 1, 1, 2, 3]
    ppns = ((kernel.processes[0].space.page_table.leaf_entries(np.arange(5)) >> np.uint64(12))
            & np.uint64((1 << 40) - 1)).astype(np.int64)
    assert getattr(kernel.replacement, stamps_of)[ppns].tolist() == stamps


def test_guest_time_never_goes_back():
    _, _, kernel = make_guest(memory_pages=64)
    kernel.access(batch([], ops=[mmap(0, 8)]), 5)
    kernel.access(batch([0]), 5)
    with pytest.raises(InvariantViolation, match="went back"):
        kernel.access(batch([1]), 4)
    assert kernel.now_ns == 5 and kernel.now_stamp == 1


@pytest.mark.parametrize(("policy", "stamps_of"), [("fifo", "load_stamp"), ("lru", "use_stamp")])
def test_stamps_refuse_to_overflow(policy, stamps_of):
    _, _, kernel = make_guest(memory_pages=64, policy=policy)
    kernel.access(batch([], ops=[mmap(0, 8)]), 0)
    kernel.clock.stamp = STAMP_MAX - 1  # as if 2**31 - 1 distinct times had passed
    kernel.access(batch([0, 1]), 10)
    assert kernel.now_stamp == STAMP_MAX
    assert getattr(kernel.replacement, stamps_of).max() == STAMP_MAX  # not wrapped
    kernel.access(batch([2]), 10)  # the same time keeps its stamp
    with pytest.raises(InvariantViolation, match="overflow"):
        kernel.access(batch([3]), 11)
    assert kernel.now_ns == 10 and kernel.now_stamp == STAMP_MAX
