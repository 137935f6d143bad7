"""The put-aside store: swapped and compressed pages' data in compact slots."""

import numpy as np
import pytest

from hvmem.errors import InvariantViolation
from hvmem.hypervisor.reclaim.aside import SWAP_FILE, AsideStore


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
