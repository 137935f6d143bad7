from array import array

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvmem.core.rows import RowLog

KEYS = ("time_s", "vm", "MEMSZ", "state", "n")
value_st = st.one_of(st.floats(allow_nan=False), st.text(max_size=3), st.integers(-5, 5),
                     st.none(), st.booleans())
row_st = st.dictionaries(st.sampled_from(KEYS), value_st, max_size=len(KEYS))


@given(rows=st.lists(row_st, max_size=30))
def test_rows_read_back_as_from_pylist_reads_them(rows):
    log = RowLog(rows)
    # Every row has every column seen so far or later, None where it had none.
    keys = list(dict.fromkeys(k for row in rows for k in row))
    expected = [{k: row.get(k) for k in keys} for row in rows]
    assert len(log) == len(rows)
    assert list(log) == expected and log == expected
    assert [log[i] for i in range(-len(rows), 0)] == expected
    assert log[1:4] == expected[1:4]
    # Values keep their types: a column of floats does not turn 1 into 1.0.
    for got, want in zip(log, expected, strict=True):
        assert [type(v) for v in got.values()] == [type(v) for v in want.values()]


def test_float_columns_are_kept_as_arrays_until_another_type_arrives():
    log = RowLog([{"t": 0.0, "vm": "a"}, {"t": 1.0, "vm": "b"}])
    cols = log.columns()
    assert isinstance(cols["t"], array) and isinstance(cols["vm"], list)
    log.append({"t": None, "vm": "c"})
    assert log.columns()["t"] == [0.0, 1.0, None]
    table = pa.table({k: pa.array(v) for k, v in log.columns().items()})
    assert table.equals(pa.Table.from_pylist(list(log)))


def test_index_out_of_range_and_equality():
    log = RowLog([{"a": 1.0}])
    with pytest.raises(IndexError):
        log[1]
    assert log == [{"a": 1.0}] and log != [{"a": 2.0}] and log != [] and log != "a"
