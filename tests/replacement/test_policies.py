"""The victim-selection interface: every reclaim policy against a plain reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError
from hvmem.guest.kernel import GuestConfig, GuestKernel
from hvmem.hardware.page_table import TableStore
from hvmem.hypervisor.host import Host
from hvmem.replacement.base import ReplacementPolicy
from hvmem.replacement.names import RECLAIM_POLICIES
from hvmem.replacement.policies import make_policy

# Classes 0..3; pages of classes 1 and 2 are candidates, as the guest's ANON and FILE.
EVICTABLE = np.array([False, True, True, False])


def make(name, n_pages, seed=0, **kwargs):
    return make_policy(name, n_pages, np.random.default_rng(seed), supported=RECLAIM_POLICIES,
                       user="test", **kwargs)


class Reference:
    """The policies written the obvious way, one page at a time."""

    def __init__(self, name, n_pages, seed):
        self.name = name
        self.load = [0] * n_pages
        self.use = [0] * n_pages
        self.bit = [False] * n_pages
        self.hand = 0
        self.rng = np.random.default_rng(seed)

    def reset(self, pages, stamp):
        for p in pages:
            self.load[p] = self.use[p] = stamp
            self.bit[p] = True

    def touch(self, pages, stamp):
        for p in pages:
            self.use[p] = stamp
            self.bit[p] = True

    def invalidate(self, pages):
        for p in pages:
            self.bit[p] = False

    def victims(self, n, kinds):
        pages = [p for p in range(len(kinds)) if EVICTABLE[kinds[p]]]
        if n <= 0:
            return []
        if self.name == "clock":
            chosen, steps = [], 0
            while len(chosen) < n and steps < 2 * len(kinds):
                p = self.hand
                if EVICTABLE[kinds[p]] and p not in chosen:
                    if self.bit[p]:
                        self.bit[p] = False
                    else:
                        chosen.append(p)
                self.hand = (self.hand + 1) % len(kinds)
                steps += 1
            return chosen
        if len(pages) <= n:
            return pages
        if self.name == "random":
            return sorted(pages[i] for i in self.rng.choice(len(pages), n, replace=False))
        age = self.load if self.name == "fifo" else self.use
        return sorted(pages, key=lambda p: (age[p], p))[:n]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(RECLAIM_POLICIES), seed=st.integers(0, 2**32 - 1),
       n_pages=st.integers(1, 300), keep_stamp=st.booleans(),
       steps=st.lists(st.tuples(st.sampled_from(["tick", "touch", "load", "victims", "keep"]),
                                st.integers(0, 400)), max_size=40))
def test_policies_choose_as_the_textbook_does(name, seed, n_pages, keep_stamp, steps):
    rng = np.random.default_rng(seed)
    kinds = rng.integers(0, 4, n_pages).astype(np.uint8)
    policy, ref = make(name, n_pages, seed), Reference(name, n_pages, seed)
    live = np.flatnonzero(EVICTABLE[kinds])
    policy.reset(live, 0)
    ref.reset(live.tolist(), 0)
    stamp = 0
    for op, x in steps:
        if op == "tick":
            stamp += 1
        elif op == "touch":
            pages = np.flatnonzero(EVICTABLE[kinds])[x % 7::3]
            policy.touch(pages, stamp)
            ref.touch(pages.tolist(), stamp)
        elif op == "load":  # free pages become candidates, loaded now
            free = np.flatnonzero(kinds == 0)[: x % 20]
            kinds[free] = 1 + x % 2
            policy.reset(free, stamp)
            ref.reset(free.tolist(), stamp)
        else:
            n = x % 40
            got = policy.victims(n, kinds, EVICTABLE, stamp if keep_stamp else None)
            assert got.dtype == np.int64
            assert got.tolist() == ref.victims(n, kinds.tolist())
            if op == "keep":  # half of them stay after all
                policy.keep(got[got.size // 2:])
                got = got[: got.size // 2]
            kinds[got] = 0
            policy.invalidate(got)
            ref.invalidate(got.tolist())


@pytest.mark.parametrize(("name", "kept"), [
    ("fifo", {"load_stamp"}), ("lru", {"use_stamp"}), ("clock", {"use_bit"}), ("random", set()),
])
def test_each_policy_keeps_only_the_data_it_needs(name, kept):
    policy = make(name, 64)
    assert isinstance(policy, ReplacementPolicy) and policy.name == name
    arrays = {"load_stamp", "use_stamp", "use_bit"}
    assert {a for a in arrays if getattr(policy, a).size} == kept
    assert all(getattr(policy, a).size in (0, 64) for a in arrays)


def test_fifo_ignores_use_lru_does_not():
    kinds = np.ones(4, np.uint8)
    fifo, lru = make("fifo", 4), make("lru", 4)
    for policy in (fifo, lru):
        for page in range(4):
            policy.reset(np.array([page]), page)
        policy.touch(np.array([0]), 9)  # page 0, loaded first, used last
    assert fifo.victims(2, kinds, EVICTABLE).tolist() == [0, 1]
    assert lru.victims(2, kinds, EVICTABLE).tolist() == [1, 2]


def test_clock_gives_used_pages_a_second_chance():
    kinds = np.ones(4, np.uint8)
    clock = make("clock", 4)
    clock.reset(np.arange(4), 0)  # loads set every bit
    assert clock.victims(1, kinds, EVICTABLE).tolist() == [0]  # a lap clears, then takes 0
    clock.touch(np.array([1]), 1)
    assert clock.victims(1, kinds, EVICTABLE).tolist() == [2]  # 1 was used again
    assert clock.hand == 3


def test_random_is_its_generators_and_in_page_order():
    kinds = np.ones(1000, np.uint8)
    kinds[::3] = 0
    a = make("random", 1000, seed=5).victims(50, kinds, EVICTABLE)
    b = make("random", 1000, seed=5).victims(50, kinds, EVICTABLE)
    assert a.tolist() == b.tolist() == sorted(set(a.tolist()))
    assert EVICTABLE[kinds[a]].all()


def test_lru_reads_stamps_its_user_keeps():
    stamps = np.array([5, 1, 3, 0], np.int32)
    kinds = np.array([1, 1, 1, 3], np.uint8)
    lru = make("lru", 4, use_stamp=stamps)
    assert lru.victims(2, kinds, EVICTABLE).tolist() == [1, 2]
    stamps[2] = 9  # the user's own touch
    assert lru.victims(2, kinds, EVICTABLE).tolist() == [1, 0]


def test_a_kept_selection_is_dropped_when_victims_stay():
    n = 100_000
    kinds = np.ones(n, np.uint8)
    lru = make("lru", n)
    lru.reset(np.arange(n), 1)
    got = lru.victims(10, kinds, EVICTABLE, now_stamp=2)
    kinds[got] = 0
    again = lru.victims(10, kinds, EVICTABLE, now_stamp=2)
    assert lru._oldest.reuses == 1
    lru.keep(again)  # they stay: the next call scans again, and finds them first
    assert lru.victims(10, kinds, EVICTABLE, now_stamp=2).tolist() == again.tolist()
    assert lru._oldest.builds == 2


def test_users_refuse_what_they_do_not_support():
    tables = TableStore(16, "g")
    vm = Host(256).add_vm("g", 16, tables)
    with pytest.raises(ConfigError, match="guest reclaim: replacement policy 'opt' needs"):
        make_policy("opt", 16, np.random.default_rng(0), supported=RECLAIM_POLICIES,
                    user="guest reclaim")
    with pytest.raises(ConfigError, match="reclaim policy"):
        GuestKernel(GuestConfig(16, reclaim_policy="opt"), vm, tables, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="host swap selection: replacement policy 'clock'"):
        vm.swap_out(1, "clock", np.random.default_rng(0))
