"""sorted_unique is np.unique for integer arrays."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hvmem.core.sets import sorted_unique


@given(arrays(st.sampled_from([np.int64, np.int32, np.uint64, np.int16]),
              st.integers(0, 300), elements=st.integers(0, 50)))
def test_same_as_numpy_unique(values):
    got = sorted_unique(values)
    want = np.unique(values)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_leaves_its_input_alone():
    values = np.array([5, 1, 5, 3], dtype=np.int64)
    np.testing.assert_array_equal(sorted_unique(values), [1, 3, 5])
    np.testing.assert_array_equal(values, [5, 1, 5, 3])
