from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.workloads.base import AccessBatch, Fidelity, MemoryOp, MemoryOpKind


def batch(process, vpn, is_write, refs, content, ops=()):
    return AccessBatch(np.array(process, np.int32), np.array(vpn, np.int64),
                       np.array(is_write, np.bool_), np.array(refs, np.int64),
                       np.array(content, np.uint64), ops)


def test_aggregated_merges_pages_and_keeps_the_last_write():
    op = MemoryOp(MemoryOpKind.MAP, 0, 0, 10)
    b = batch([0, 0, 1, 0, 0, 1], [5, 3, 5, 5, 3, 5], [True, False, False, True, False, False],
              [1, 2, 1, 4, 1, 1], [11, 0, 0, 22, 0, 0], (op,))
    a = b.aggregated()
    assert a.process.tolist() == [0, 0, 1]
    assert a.vpn.tolist() == [3, 5, 5]
    assert a.refs.tolist() == [3, 5, 2]
    assert a.is_write.tolist() == [False, True, False]
    assert a.content.tolist() == [0, 22, 0]
    assert a.ops == (op,)
    assert a.n_refs == b.n_refs
    assert AccessBatch.empty().aggregated().n_refs == 0


def test_concat_keeps_order_and_ops():
    op1 = MemoryOp(MemoryOpKind.MAP, 0, 0, 10)
    op2 = MemoryOp(MemoryOpKind.UNMAP, 0, 0, 10)
    a = batch([0], [1], [True], [1], [9], (op1,))
    b = batch([0, 0], [2, 3], [False, False], [1, 1], [0, 0], (op2,))
    c = AccessBatch.concat([a, b])
    assert c.vpn.tolist() == [1, 2, 3] and c.ops == (op1, op2)
    assert AccessBatch.concat([a]) is a
    assert len(AccessBatch.concat([])) == 0


def test_fidelity_values():
    assert Fidelity("page") is Fidelity.PAGE and Fidelity.MMU == "mmu"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 20), st.booleans(),
                          st.integers(1, 5)), max_size=60))
def test_aggregated_preserves_references_and_writes(entries):
    n = len(entries)
    b = batch([e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries],
              [e[3] for e in entries], list(range(1, n + 1)))
    a = b.aggregated()
    assert a.n_refs == b.n_refs
    keys = list(zip(a.process.tolist(), a.vpn.tolist(), strict=True))
    assert keys == sorted(set(keys))
    for p, v, w, c in zip(a.process, a.vpn, a.is_write, a.content, strict=True):
        mine = [i for i, e in enumerate(entries) if (e[0], e[1]) == (p, v)]
        written = [i for i in mine if entries[i][2]]
        assert w == bool(written)
        assert c == (written[-1] + 1 if written else 0)
