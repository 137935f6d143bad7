"""Tests of hardware/frames.py: the frame table, lazy zeroing and the host free list."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hvmem.errors import ConfigError, InvariantViolation, OutOfMemoryError
from hvmem.hardware.frames import FREE, HYPERVISOR, NOBODY, MachineMemory


def test_fresh_memory_is_all_free_and_zero():
    mem = MachineMemory(8)
    assert mem.n_free == 8
    assert mem.n_used == 0
    assert np.all(mem.owner == FREE)
    assert np.all(mem.last_owner == NOBODY)
    assert np.all(mem.content == 0)
    mem.check_invariants()


@pytest.mark.parametrize("n", [0, -1])
def test_empty_memory_is_a_config_error(n):
    with pytest.raises(ConfigError):
        MachineMemory(n)


def test_alloc_hands_out_low_frames_first_and_sets_owner():
    mem = MachineMemory(8)
    got = mem.alloc(0, 3)
    assert got.tolist() == [0, 1, 2]
    assert mem.alloc_one(HYPERVISOR) == 3
    assert mem.owner[:5].tolist() == [0, 0, 0, HYPERVISOR, FREE]
    assert mem.refcount[:5].tolist() == [1, 1, 1, 1, 0]
    assert mem.n_used == 4
    assert mem.counters.allocations == 4
    mem.check_invariants()


def test_free_list_is_lifo():
    mem = MachineMemory(8)
    mem.alloc(0, 4)
    mem.free(np.array([2, 0]))
    assert mem.alloc_one(0) == 0  # the last frame freed comes back first
    assert mem.alloc_one(0) == 2
    assert mem.alloc_one(0) == 4


def test_never_used_frames_are_not_counted_as_zeroed():
    mem = MachineMemory(4)
    mem.alloc(0, 2)
    mem.alloc(1, 2)
    assert mem.counters.zeroings == 0
    assert mem.counters.reuses_unzeroed == 0
    assert np.all(mem.content == 0)


def test_same_owner_reuse_keeps_content_and_is_not_zeroed():
    mem = MachineMemory(4)
    mpn = mem.alloc_one(0)
    mem.content[mpn] = 0xDEAD
    mem.free(mpn)
    assert mem.content[mpn] == 0xDEAD  # nothing is scrubbed on free
    assert mem.last_owner[mpn] == 0
    assert mem.owner[mpn] == FREE
    again = mem.alloc_one(0)
    assert again == mpn
    assert mem.content[mpn] == 0xDEAD
    assert mem.counters.zeroings == 0
    assert mem.counters.reuses_unzeroed == 1


def test_other_owner_gets_a_zeroed_frame_and_it_is_counted():
    mem = MachineMemory(4)
    mpn = mem.alloc_one(0)
    mem.content[mpn] = 0xDEAD
    mem.free(mpn)
    again = mem.alloc_one(1)
    assert again == mpn
    assert mem.content[mpn] == 0
    assert mem.owner[mpn] == 1
    assert mem.last_owner[mpn] == 1
    assert mem.counters.zeroings == 1
    assert mem.counters.reuses_unzeroed == 0


def test_mixed_batch_counts_each_rule():
    mem = MachineMemory(6)
    a = mem.alloc(0, 2)  # frames 0, 1 for VM 0
    b = mem.alloc(1, 2)  # frames 2, 3 for VM 1
    mem.content[a] = [11, 12]
    mem.content[b] = [21, 22]
    mem.free(np.array([a[0], b[0]]))
    # VM 0 takes back: b[0] (last owner 1: zeroed), a[0] (its own: kept), 4 (never used).
    got = mem.alloc(0, 3)
    assert sorted(got.tolist()) == [0, 2, 4]
    assert mem.content[0] == 11
    assert mem.content[2] == 0
    assert mem.content[4] == 0
    assert mem.counters.zeroings == 1
    assert mem.counters.reuses_unzeroed == 1
    assert mem.counters.allocations == 7
    assert mem.counters.frees == 2


def test_double_free_raises():
    mem = MachineMemory(4)
    mpn = mem.alloc_one(0)
    mem.free(mpn)
    with pytest.raises(InvariantViolation, match=f"frame {mpn}"):
        mem.free(mpn)
    mem.check_invariants()


def test_free_of_never_allocated_frame_raises():
    mem = MachineMemory(4)
    with pytest.raises(InvariantViolation):
        mem.free(3)


def test_same_frame_twice_in_one_free_raises_and_changes_nothing():
    mem = MachineMemory(4)
    mpns = mem.alloc(0, 2)
    with pytest.raises(InvariantViolation):
        mem.free(np.array([mpns[0], mpns[0]]))
    assert mem.n_free == 2
    mem.check_invariants()


def test_exhaustion_raises_and_leaves_state_alone():
    mem = MachineMemory(4)
    mem.alloc(0, 3)
    with pytest.raises(OutOfMemoryError):
        mem.alloc(1, 2)
    assert mem.n_free == 1
    assert mem.counters.allocations == 3
    mem.alloc(1, 1)
    with pytest.raises(OutOfMemoryError):
        mem.alloc_one(0)
    mem.check_invariants()


def test_check_invariants_detects_corruption():
    mem = MachineMemory(4)
    mem.alloc(0, 2)
    mem.owner[0] = FREE  # marked free but not on the list
    with pytest.raises(InvariantViolation):
        mem.check_invariants()
    mem = MachineMemory(4)
    mem.alloc(0, 2)
    mem.refcount[3] = 1  # a free frame with a mapping
    with pytest.raises(InvariantViolation):
        mem.check_invariants()


# --- properties ----------------------------------------------------------------------------

N_FRAMES = 12
OWNERS = [0, 1, 2, HYPERVISOR]


class FrameMachine(RuleBasedStateMachine):
    """Random alloc/free; each owner writes its own tokens; nobody sees another's data."""

    def __init__(self):
        super().__init__()
        self.mem = MachineMemory(N_FRAMES)
        self.held: dict[int, int] = {}  # mpn -> owner
        self.written: dict[int, tuple[int, int]] = {}  # mpn -> (writer, token)
        self.next_token = 1

    @rule(owner=st.sampled_from(OWNERS), n=st.integers(1, 4))
    def alloc(self, owner, n):
        if n > self.mem.n_free:
            with pytest.raises(OutOfMemoryError):
                self.mem.alloc(owner, n)
            return
        mpns = self.mem.alloc(owner, n)
        assert mpns.size == n
        for mpn in mpns.tolist():
            assert mpn not in self.held
            content = int(self.mem.content[mpn])
            if mpn in self.written:
                writer, token = self.written[mpn]
                if writer == owner:
                    assert content == token  # its own data comes back unzeroed
                else:
                    assert content == 0, f"owner {owner} got frame {mpn} with {writer}'s data"
                    del self.written[mpn]  # that data is gone for good
            else:
                assert content == 0
            self.held[mpn] = owner

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def write(self, data):
        mpn = data.draw(st.sampled_from(sorted(self.held)))
        owner = self.held[mpn]
        token = (owner + 10) << 32 | self.next_token
        self.next_token += 1
        self.mem.content[np.array([mpn])] = token
        self.written[mpn] = (owner, token)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def free(self, data):
        mpns = data.draw(st.lists(st.sampled_from(sorted(self.held)), min_size=1, unique=True))
        self.mem.free(np.array(mpns, dtype=np.int64))
        for mpn in mpns:
            del self.held[mpn]

    @invariant()
    def accounting(self):
        self.mem.check_invariants()
        assert self.mem.n_used == len(self.held)
        for mpn, owner in self.held.items():
            assert self.mem.owner[mpn] == owner
        c = self.mem.counters
        assert c.allocations - c.frees == len(self.held)


FrameMachine.TestCase.settings = settings(max_examples=80, stateful_step_count=30,
                                          deadline=None)
TestFrameMachine = FrameMachine.TestCase


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 2), st.integers(1, 5), st.integers(0, 2**31)),
        max_size=60,
    )
)
def test_no_owner_ever_receives_another_owners_data(ops):
    mem = MachineMemory(16)
    held: dict[int, list[int]] = {0: [], 1: [], 2: []}
    token_owner: dict[int, int] = {}
    rng = np.random.default_rng(0)
    next_token = 1
    for is_alloc, owner, n, pick in ops:
        if is_alloc and n <= mem.n_free:
            mpns = mem.alloc(owner, n)
            for mpn in mpns.tolist():
                token = int(mem.content[mpn])
                assert token == 0 or token_owner[token] == owner
            # Write fresh, distinct, nonzero tokens into every frame just received.
            tokens = np.arange(next_token, next_token + n, dtype=np.uint64)
            next_token += n
            mem.content[mpns] = tokens
            for t in tokens.tolist():
                token_owner[t] = owner
            held[owner].extend(mpns.tolist())
        elif held[owner]:
            k = min(n, len(held[owner]))
            order = rng.permutation(len(held[owner]))
            chosen = [held[owner][i] for i in order[:k]]
            if pick % 2:
                chosen = chosen[:1]
            mem.free(np.array(chosen, dtype=np.int64))
            held[owner] = [m for m in held[owner] if m not in chosen]
    mem.check_invariants()
    assert mem.n_used == sum(len(v) for v in held.values())
