"""Rows of a time series, kept by column.

A run records a row per tick for the host and per VM per tick: an hour of 32
VMs at 1 s ticks is 115,200 rows of about 30 numbers. As dicts, that is about
1.4 KiB a row (the dict, and a float object per value), 160 MiB for the hour;
kept by column, a float is 8 bytes in an ``array('d')``. :class:`RowLog` is a
read-only sequence of dicts to its readers (``rows[-1]``, ``rows[:3]``,
``for row in rows``), built on demand from the columns, and hands the columns
to Arrow whole.

A column holds floats in an ``array('d')`` while every value it has been given
is a float; the first value of another type (a name, a state label, an int,
``None``) turns it into a plain list, with its values unchanged. A row that
lacks a column gets ``None`` there, and a column that first appears in a later
row is ``None`` in the rows before it, as ``pyarrow.Table.from_pylist`` reads
rows with missing keys.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np


class RowLog(Sequence[dict]):
    """Rows (dicts of the same columns) appended one at a time, stored by column."""

    def __init__(self, rows: Iterable[dict] = ()) -> None:
        self._columns: dict[str, array | list] = {}
        self._n = 0
        self.extend(rows)

    def append(self, row: dict) -> None:
        """Add ``row`` at the end."""
        columns = self._columns
        if row.keys() == columns.keys():  # the usual row: every column and no other
            items = row.items()
        else:
            for key in row:
                if key not in columns:
                    columns[key] = [None] * self._n if self._n else array("d")
            items = [(key, row.get(key)) for key in columns]
        for key, value in items:
            column = columns[key]
            if type(column) is array:
                if isinstance(value, float):
                    column.append(value)
                    continue
                column = columns[key] = column.tolist()
            column.append(value)
        self._n += 1

    def append_columns(self, columns: dict[str, Sequence[Any]], n: int) -> None:
        """Add ``n`` rows given by column (every column ``n`` values, as ``append`` takes them).

        For a writer that has a tick's rows as arrays (the aggregate fidelity):
        one extend per column instead of one dict per row.
        """
        if not self._n and not self._columns:
            for key in columns:
                self._columns[key] = array("d")
        if set(columns) != set(self._columns):
            rows = [{key: values[i] for key, values in columns.items()} for i in range(n)]
            self.extend(rows)
            return
        for key, values in columns.items():
            column = self._columns[key]
            if type(column) is array:
                if isinstance(values, np.ndarray) and values.dtype == np.float64:
                    column.frombytes(values.tobytes())  # a float column stays an array
                    continue
                values = list(values)
                if all(type(x) is float for x in values):
                    column.extend(values)
                    continue
                column = self._columns[key] = column.tolist()
            column.extend(np.asarray(values).tolist() if isinstance(values, np.ndarray)
                          else values)
        self._n += n

    def extend(self, rows: Iterable[dict]) -> None:
        """Add ``rows`` at the end, in order."""
        for row in rows:
            self.append(row)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows only (every column cut to ``n`` values).

        For a run stopped by a signal while a tick's rows were being appended:
        cutting back to the rows of whole ticks leaves each column as long as the
        others even if the signal landed inside :meth:`append` itself.
        """
        n = max(0, min(n, self._n))
        for column in self._columns.values():
            del column[n:]
        self._n = n

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, index: int) -> dict: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict]: ...

    def __getitem__(self, index: int | slice) -> dict | list[dict]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._n))]
        if index < 0:
            index += self._n
        if not 0 <= index < self._n:
            raise IndexError("row index out of range")
        return {key: column[index] for key, column in self._columns.items()}

    def __iter__(self) -> Iterator[dict]:
        keys = list(self._columns)
        if not keys:  # rows without columns
            yield from ({} for _ in range(self._n))
            return
        for values in zip(*self._columns.values(), strict=True):
            yield dict(zip(keys, values, strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"RowLog({self._n} rows, columns {list(self._columns)})"

    def columns(self) -> dict[str, Sequence[Any]]:
        """Each column's values, in row order (the stored sequences: do not modify)."""
        return dict(self._columns)
