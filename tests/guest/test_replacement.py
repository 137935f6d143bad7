"""Tests of trace replay (replacement/replay.py): textbook cases, pure-Python references,
invariants."""

from __future__ import annotations

from collections import OrderedDict, deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError
from hvmem.replacement.names import REPLAY_POLICIES, STREAMING_POLICIES
from hvmem.replacement.opt import next_uses
from hvmem.replacement.replay import (
    PagingResult,
    ReplacementSimulator,
    simulate,
    simulate_chunks,
)

# OSTEP ch. 22: the running example, a memory of 3 frames.
OSTEP = [0, 1, 2, 0, 1, 3, 0, 3, 1, 2, 1]
# Belady, Nelson, Shedler (1969): FIFO misses more with 4 frames than with 3.
BELADY = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]

# Page numbers no small table could index: a dense id map is needed.
WILD = [0, -1, 2**63 - 1, -(2**63), 1 << 40, 4096, 7, (1 << 52) + 3, -4096, 1 << 62]


# ----------------------------------------------------------------- pure-Python references
# Each counts hits the obvious way, written from the textbook description, not the kernels.


def ref_fifo(pages: list[int], frames: int) -> int:
    queue: deque[int] = deque()
    resident: set[int] = set()
    hits = 0
    for p in pages:
        if p in resident:
            hits += 1
            continue
        if len(queue) == frames:
            resident.discard(queue.popleft())
        queue.append(p)
        resident.add(p)
    return hits


def ref_lru(pages: list[int], frames: int) -> int:
    recency: OrderedDict[int, None] = OrderedDict()
    hits = 0
    for p in pages:
        if p in recency:
            hits += 1
            recency.move_to_end(p)
            continue
        if len(recency) == frames:
            recency.popitem(last=False)
        recency[p] = None
    return hits


def ref_clock(pages: list[int], frames: int) -> int:
    slot: list[int] = []  # page in each frame, filled in order
    where: dict[int, int] = {}  # page -> frame
    bit: list[int] = []
    hand = 0
    hits = 0
    for p in pages:
        if p in where:
            hits += 1
            bit[where[p]] = 1
            continue
        if len(slot) < frames:
            where[p] = len(slot)
            slot.append(p)
            bit.append(1)
            continue
        while bit[hand]:
            bit[hand] = 0
            hand = (hand + 1) % frames
        del where[slot[hand]]
        slot[hand] = p
        where[p] = hand
        bit[hand] = 1
        hand = (hand + 1) % frames
    return hits


def ref_opt(pages: list[int], frames: int) -> int:
    resident: list[int] = []
    hits = 0
    for i, p in enumerate(pages):
        if p in resident:
            hits += 1
            continue
        if len(resident) == frames:
            future = pages[i + 1 :]

            def next_use(q: int, future: list[int] = future) -> int:
                return future.index(q) if q in future else len(future)

            resident.remove(max(resident, key=next_use))
        resident.append(p)
    return hits


REFERENCES = {"fifo": ref_fifo, "lru": ref_lru, "clock": ref_clock, "opt": ref_opt}

page_lists = st.lists(st.integers(0, 7), max_size=60)
wild_lists = st.lists(st.sampled_from(WILD), max_size=40)
frame_counts = st.integers(1, 6)


def hits(pages, frames: int, policy: str, seed: int = 0) -> int:
    return simulate(np.asarray(pages, dtype=np.int64), frames, policy, seed).hits


# ------------------------------------------------------------------------- textbook cases


@pytest.mark.parametrize(
    ("policy", "expected_hits", "expected_evictions"),
    [("opt", 6, 2), ("fifo", 4, 4), ("lru", 6, 2)],
)
def test_ostep_chapter_22_tables(policy, expected_hits, expected_evictions):
    # Figure 22.1 (optimal): misses on 0, 1, 2 (cold), 3 (evicts 2), 2 (evicts 3): 6 hits.
    # Figure 22.2 (FIFO): misses on 0, 1, 2, 3 (evicts 0), 0 (evicts 1), 1 (evicts 2),
    # 2 (evicts 3): 4 hits.
    # Figure 22.5 (LRU): misses on 0, 1, 2, 3 (evicts 2), 2 (evicts 0): 6 hits.
    result = simulate(np.array(OSTEP), 3, policy)
    assert result == PagingResult(policy, 3, 11, expected_hits, 11 - expected_hits,
                                  expected_evictions, 4)


def test_ostep_example_clock_by_hand():
    # All three bits are set when 3 misses, so the hand clears a full turn and evicts
    # page 0 (frame 0); then 1 (frame 1, bit clear), then 2; then for page 2 another
    # full turn evicts 3. Hits: 0, 1, 3, 1.
    assert hits(OSTEP, 3, "clock") == 4


def test_clock_gives_a_second_chance():
    # 1, 2, 3 fill the frames with bits set; the miss on 4 clears a full turn and
    # evicts 1 (frame 0), leaving the hand on frame 1. The hit on 2 sets its bit
    # again, so the miss on 5 spares 2 (clears it) and evicts 3: the last 2 hits.
    # FIFO evicts 2 at 5 and misses it.
    seq = [1, 2, 3, 4, 2, 5, 2]
    assert hits(seq, 3, "clock") == 2
    assert hits(seq, 3, "fifo") == 1


def test_belady_anomaly_fifo():
    assert simulate(np.array(BELADY), 3, "fifo").misses == 9
    assert simulate(np.array(BELADY), 4, "fifo").misses == 10


def test_belady_string_stack_algorithms_do_not_show_the_anomaly():
    assert [simulate(np.array(BELADY), n, "lru").misses for n in (3, 4)] == [10, 8]
    assert [simulate(np.array(BELADY), n, "opt").misses for n in (3, 4)] == [7, 6]


def test_opt_never_used_again_tie_break_is_the_largest_page_number():
    # next use of each reference; "never" is len + rank of the page number (5 > 3 > 1)
    ids = np.array([0, 1, 0, 2], dtype=np.int32)  # pages 5, 1, 5, 3 in first-seen order
    ranks = np.array([2, 0, 1])
    assert next_uses(ids, ranks).tolist() == [2, 4 + 0, 4 + 2, 4 + 1]


# ------------------------------------------------------------------ agreement with references


@pytest.mark.parametrize("policy", sorted(REFERENCES))
@settings(max_examples=150, deadline=None)
@given(pages=page_lists, frames=frame_counts)
def test_matches_reference(policy, pages, frames):
    assert hits(pages, frames, policy) == REFERENCES[policy](pages, frames)


@pytest.mark.parametrize("policy", sorted(REFERENCES))
@settings(max_examples=60, deadline=None)
@given(pages=wild_lists, frames=frame_counts)
def test_matches_reference_on_wild_page_numbers(policy, pages, frames):
    assert hits(pages, frames, policy) == REFERENCES[policy](pages, frames)


@pytest.mark.parametrize("policy", ["fifo", "lru", "clock"])
def test_matches_reference_while_the_id_map_grows(policy):
    # 30k references over ~20k distinct 64-bit page numbers: the hash map doubles
    # several times, within one chunk and across chunks.
    rng = np.random.default_rng(7)
    universe = rng.integers(-(2**63), 2**63 - 1, 20_000, dtype=np.int64, endpoint=True)
    pages = universe[rng.integers(0, universe.shape[0], 30_000)]
    expected = REFERENCES[policy](pages.tolist(), 5000)
    assert hits(pages, 5000, policy) == expected
    assert simulate_chunks(np.array_split(pages, 7), 5000, policy).hits == expected


# ----------------------------------------------------------------------------- invariants


@settings(max_examples=150, deadline=None)
@given(pages=page_lists, frames=frame_counts, seed=st.integers(0, 2**32))
def test_opt_misses_no_more_than_any_policy(pages, frames, seed):
    best = simulate(np.array(pages, dtype=np.int64), frames, "opt").misses
    for policy in STREAMING_POLICIES:
        assert best <= simulate(np.array(pages, dtype=np.int64), frames, policy, seed).misses


@pytest.mark.parametrize("policy", REPLAY_POLICIES)
@settings(max_examples=80, deadline=None)
@given(pages=page_lists, frames=frame_counts, seed=st.integers(0, 1000))
def test_counts_add_up(policy, pages, frames, seed):
    r = simulate(np.array(pages, dtype=np.int64), frames, policy, seed)
    distinct = len(set(pages))
    assert r.accesses == len(pages)
    assert r.hits + r.misses == r.accesses
    assert r.distinct_pages == distinct
    assert r.evictions == r.misses - min(frames, distinct)  # memory fills and stays full
    assert r.misses >= distinct
    if frames >= distinct:
        assert r.misses == distinct
    if frames == 1:
        assert r.hits == sum(a == b for a, b in zip(pages, pages[1:], strict=False))


@pytest.mark.parametrize("policy", ["lru", "opt"])
@settings(max_examples=80, deadline=None)
@given(pages=page_lists)
def test_stack_algorithms_never_miss_more_with_more_frames(policy, pages):
    misses = [simulate(np.array(pages, dtype=np.int64), n, policy).misses for n in range(1, 8)]
    assert misses == sorted(misses, reverse=True)


def test_random_is_reproducible_for_a_seed():
    pages = np.random.default_rng(3).integers(0, 50, 5000)
    first = simulate(pages, 10, "random", seed=11)
    assert simulate(pages, 10, "random", seed=11) == first
    others = {simulate(pages, 10, "random", seed=s).hits for s in range(12, 17)}
    assert others - {first.hits}  # other seeds pick other victims


def test_random_lies_between_opt_and_the_worst_case():
    pages = np.random.default_rng(4).integers(0, 30, 3000)
    r = simulate(pages, 10, "random", seed=5)
    assert simulate(pages, 10, "opt").misses <= r.misses < r.accesses


@pytest.mark.parametrize("policy", REPLAY_POLICIES)
@settings(max_examples=60, deadline=None)
@given(pages=st.lists(st.integers(0, 12), max_size=80), frames=frame_counts,
       cuts=st.lists(st.integers(0, 80), max_size=5), seed=st.integers(0, 1000))
def test_chunked_stream_equals_one_shot(policy, pages, frames, cuts, seed):
    arr = np.array(pages, dtype=np.int64)
    chunks = np.split(arr, sorted(c for c in cuts if c <= arr.shape[0]))
    assert simulate_chunks(chunks, frames, policy, seed) == simulate(arr, frames, policy, seed)


@pytest.mark.parametrize("policy", STREAMING_POLICIES)
def test_simulator_feeds_and_reports_as_it_goes(policy):
    pages = np.random.default_rng(9).integers(0, 400, 20_000)
    sim = ReplacementSimulator(64, policy, seed=2)
    for lo in range(0, pages.shape[0], 3000):
        sim.feed(pages[lo : lo + 3000])
        assert sim.result() == simulate(pages[: lo + 3000], 64, policy, seed=2)
    sim.feed(np.empty(0, dtype=np.int64))
    assert sim.result().accesses == 20_000
    assert sim.distinct_pages == 400


# ------------------------------------------------------------------------- inputs, errors


def test_uint64_page_numbers_are_reinterpreted_not_wrapped():
    pages = np.array([2**64 - 1, 2**63, 2**63 - 1, 2**64 - 1], dtype=np.uint64)
    r = simulate(pages, 3, "lru")
    assert (r.distinct_pages, r.hits) == (3, 1)


@pytest.mark.parametrize("policy", REPLAY_POLICIES)
def test_empty_and_huge_memories(policy):
    assert simulate(np.empty(0, np.int64), 4, policy) == PagingResult(policy, 4, 0, 0, 0, 0, 0)
    assert simulate_chunks(iter(()), 4, policy).accesses == 0
    r = simulate(np.array(OSTEP), 10**12, policy)  # frame arrays follow the footprint
    assert (r.misses, r.evictions) == (4, 0)


def test_hit_rate():
    assert simulate(np.array(OSTEP), 3, "lru").hit_rate == pytest.approx(6 / 11)
    assert simulate(np.empty(0, np.int64), 3, "lru").hit_rate == 0.0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"policy": "mru"}, "unknown replacement policy 'mru'"),
        ({"policy": "LRU"}, "unknown replacement policy"),
        ({"frames": 0}, "frames must be positive, found 0"),
        ({"frames": -2}, "frames must be positive"),
        ({"frames": 2.5}, "frames must be an integer"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"pages": np.zeros((2, 2), np.int64)}, "1-D"),
        ({"pages": np.array([1.5, 2.0])}, "integers"),
    ],
)
def test_bad_arguments_raise_one_line_config_errors(kwargs, words):
    args = {"pages": np.array(OSTEP), "frames": 3, "policy": "lru", "seed": 0} | kwargs
    with pytest.raises(ConfigError) as info:
        simulate(**args)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_opt_cannot_stream_chunk_by_chunk():
    with pytest.raises(ConfigError, match="whole trace"):
        ReplacementSimulator(3, "opt")
    with pytest.raises(ConfigError, match="unknown"):
        simulate_chunks([np.array(OSTEP)], 3, "belady")
