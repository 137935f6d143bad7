"""Free stacks written only where used: same pages and slots as a full stack, little memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import InvariantViolation
from hvmem.guest.allocator import PageAllocator
from hvmem.guest.free_stack import LazyFreeStack
from hvmem.guest.swap import SwapDevice

MI = 1 << 20


class EagerStack:
    """The stack as it was: every number written at creation, lowest on top."""

    def __init__(self, n):
        self.stack = np.arange(n - 1, -1, -1, dtype=np.int64)
        self.size = n

    def pop(self, k):
        out = self.stack[self.size - k : self.size].copy()
        self.size -= k
        return out

    def push(self, numbers):
        self.stack[self.size : self.size + numbers.size] = numbers
        self.size += numbers.size


def some_of(numbers, seed, frac=None):
    """A random part of ``numbers``, in random order, and the rest.

    Each number is in the part with chance ``frac`` (itself drawn if None).
    """
    rng = np.random.default_rng(seed)
    pick = rng.random(numbers.size) < (rng.random() if frac is None else frac)
    return rng.permutation(numbers[pick]), numbers[~pick]


# An operation: ("take", how many) or ("give", which of the taken ones, by a seed).
ops_st = st.lists(st.one_of(st.tuples(st.just("take"), st.integers(0, 40)),
                            st.tuples(st.just("give"), st.integers(0, 2**32 - 1))),
                  max_size=60)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 120), ops=ops_st)
def test_lazy_stack_behaves_as_a_full_one(n, ops):
    lazy, eager = LazyFreeStack(n), EagerStack(n)
    taken = np.zeros(0, np.int64)
    for kind, arg in ops:
        if kind == "take":
            k = min(arg, eager.size)
            top_first = bool(arg % 2)
            want = eager.pop(k)
            got = lazy.pop(k, top_first=top_first)
            assert got.dtype == np.int64 and got.flags.c_contiguous
            assert got.tolist() == (want[::-1] if top_first else want).tolist()
            taken = np.concatenate([taken, want])
        elif taken.size:
            back, taken = some_of(taken, arg, 0.5)
            eager.push(back)
            lazy.push(back)
        assert lazy.size == eager.size
        assert 0 <= lazy.low_water <= lazy.size
        assert lazy.contents().tolist() == eager.stack[: eager.size].tolist()


def test_pop_beyond_the_stack_is_refused():
    stack = LazyFreeStack(4)
    stack.pop(3)
    with pytest.raises(InvariantViolation, match="free stack"):
        stack.pop(2)


class EagerAllocator:
    """The guest allocator's free list as it was (a full stack)."""

    def __init__(self, n):
        self.stack = EagerStack(n)

    def alloc(self, k):
        return self.stack.pop(k)[::-1]

    def free(self, ppns):
        self.stack.push(ppns)


alloc_ops_st = st.lists(st.one_of(st.tuples(st.just("alloc"), st.integers(0, 50)),
                                  st.tuples(st.just("free"), st.integers(0, 2**32 - 1))),
                        max_size=80)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 200), ops=alloc_ops_st)
def test_allocator_hands_out_the_pages_a_full_stack_would(n, ops):
    allocator, eager = PageAllocator(n), EagerAllocator(n)
    held = np.zeros(0, np.int64)
    for kind, arg in ops:
        if kind == "alloc":
            k = min(arg, allocator.n_free)
            got = allocator.alloc(k)
            assert got.tolist() == eager.alloc(k).tolist()
            held = np.concatenate([held, got])
        elif held.size:
            back, held = some_of(held, arg)
            allocator.free(back)
            eager.free(back)
        assert allocator.n_free == eager.stack.size == n - held.size
        allocator.check_invariants()


class EagerSwap:
    """The guest swap device's free slots as they were (a full stack)."""

    def __init__(self, n):
        self.stack = EagerStack(n)

    def swap_out(self, k):
        return self.stack.pop(k)

    def swap_in(self, slots):
        self.stack.push(slots)


swap_ops_st = st.lists(st.one_of(st.tuples(st.just("out"), st.integers(0, 50)),
                                 st.tuples(st.sampled_from(["in", "discard"]),
                                           st.integers(0, 2**32 - 1))),
                       max_size=80)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(0, 200), ops=swap_ops_st)
def test_swap_device_hands_out_the_slots_a_full_stack_would(n, ops):
    swap, eager = SwapDevice(n), EagerSwap(n)
    tokens_of: dict[int, int] = {}
    for t, (kind, arg) in enumerate(ops):
        if kind == "out":
            k = min(arg, swap.n_free)
            tokens = np.arange(k, dtype=np.uint64) + np.uint64(1000 * t + 1)
            got = swap.swap_out(tokens)
            assert got.tolist() == eager.swap_out(k).tolist()
            tokens_of.update(zip(got.tolist(), tokens.tolist(), strict=True))
        elif tokens_of:
            back, _ = some_of(np.array(sorted(tokens_of), np.int64), arg)
            if kind == "in":
                assert swap.swap_in(back).tolist() == [tokens_of[s] for s in back.tolist()]
            else:
                swap.discard(back)
            eager.swap_in(back)
            for s in back.tolist():
                del tokens_of[s]
        assert swap.n_free == eager.stack.size and swap.n_used == len(tokens_of)
        swap.check_invariants()


def test_swap_invariants_catch_a_corrupt_free_list():
    swap = SwapDevice(8)
    slots = swap.swap_out(np.ones(3, np.uint64))
    swap.used[slots[0]] = False  # a slot neither used nor on the free list
    with pytest.raises(InvariantViolation, match="guest swap"):
        swap.check_invariants()


def test_a_fresh_large_allocator_and_swap_write_little_of_their_stacks():
    allocator, swap = PageAllocator(MI), SwapDevice(MI)
    assert allocator.free_stack.written_bytes == swap._free_stack.written_bytes == 0
    rng = np.random.default_rng(1)
    # A guest that boots, takes a few thousand pages, frees and takes them again.
    held = allocator.alloc(5000)
    for _ in range(20):
        back = rng.permutation(held)[:1500]
        allocator.free(back)
        held = np.concatenate([np.setdiff1d(held, back), allocator.alloc(1500)])
    assert held.size == np.unique(held).size == 5000
    slots = swap.swap_out(np.ones(300, np.uint64))
    swap.swap_in(slots[:200])
    swap.swap_out(np.ones(100, np.uint64))
    stack_bytes = MI * 4  # int32 entries
    # At most the band the top moved through was written: well under 1 % of the stack.
    assert allocator.free_stack.written_bytes <= 4 * held.size
    assert allocator.free_stack.written_bytes < stack_bytes // 100
    assert swap._free_stack.written_bytes <= 4 * 300 < stack_bytes // 1000
    allocator.check_invariants()
    swap.check_invariants()
