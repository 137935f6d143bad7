"""The put-aside store: swapped and compressed pages' data in compact slots."""

import numpy as np
import pytest

from hvmem.errors import InvariantViolation
from hvmem.hypervisor.reclaim.aside import SWAP_FILE, TAKE_COMPRESSED, TAKE_SWAPPED, AsideStore


def test_pages_come_back_with_their_data_and_counts_follow():
    store = AsideStore(5000)
    rng = np.random.default_rng(1)
    held: dict[int, tuple[int, int]] = {}  # ppn -> (token, kind)
    for _ in range(40):
        free = np.setdiff1d(np.arange(5000), np.array(list(held), dtype=np.int64))
        ppns = rng.choice(free, int(rng.integers(1, 300)), replace=False)
        tokens = rng.integers(0, 2**63, ppns.size).astype(np.uint64)
        kind = int(rng.integers(0, 3))  # the swap file, or a 1 or 2 KiB slot
        store.put(ppns, tokens, kind, np.arange(ppns.size))
        held.update({int(p): (int(t), kind) for p, t in zip(ppns, tokens, strict=True)})
        back = rng.choice(np.array(list(held), dtype=np.int64), len(held) // 3, replace=False)
        got = store.take(back)
        assert got.tolist() == [held.pop(int(p))[0] for p in back]
        store.check_invariants()
        swapped = sorted(p for p, (_, k) in held.items() if k == SWAP_FILE)
        assert store.n_swapped == len(swapped) and store.pages(swap_file=True).tolist() == swapped
        assert store.n_compressed == len(held) - len(swapped)
    assert store.n_slots <= 5000  # freed slots are handed out again


def test_a_page_put_aside_twice_is_refused():
    store = AsideStore(16)
    store.put(np.array([3]), np.array([7], np.uint64))
    with pytest.raises(InvariantViolation):
        store.put(np.array([3, 4]), np.array([7, 8], np.uint64))


def test_a_take_of_one_kind_leaves_the_other_kind_put_aside():
    store = AsideStore(64)
    store.put(np.arange(0, 10), np.arange(100, 110, dtype=np.uint64))  # the swap file
    store.put(np.arange(10, 20), np.arange(200, 210, dtype=np.uint64), 2, np.arange(10))
    ppns = np.array([3, 12, 40, 5, 19])
    tokens, kib = store.take_kind(ppns, TAKE_COMPRESSED)
    assert tokens.tolist() == [0, 202, 0, 0, 209] and kib == 4
    assert (store.n_swapped, store.n_compressed) == (10, 8)
    tokens, kib = store.take_kind(ppns, TAKE_SWAPPED, tokens=False)
    assert tokens.size == 0 and kib == 0
    assert (store.n_swapped, store.n_compressed) == (8, 8)
    store.check_invariants()
    assert store.take(ppns).tolist() == [0, 0, 0, 0, 0]  # all taken already
    assert store.take(np.array([4, 11])).tolist() == [104, 201]
    store.check_invariants()
