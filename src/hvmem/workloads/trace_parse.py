"""Trace text to references: the record grammar of the trace formats, in Numba kernels.

The trace readers (:mod:`hvmem.workloads.trace`, where the formats are
described) hold a block of the file in a reused ``uint8`` buffer and hand it
to :func:`parse_block`, which parses every complete line byte by byte: it
skips blank lines, ``#`` comments and (Lackey) Valgrind ``==`` lines, reads
each record's address or page number and write flag into preallocated output
arrays, and stops when they are full, at the end of the block, or at the first
malformed or overlong line, returning a status (``PARSE_*``) and where it
stopped. It counts the newlines it consumes, so the caller numbers lines right
across blocks. Python thus runs once per block or chunk, never once per line.

:func:`scan_head` looks at the first meaningful line to tell Lackey output
from addresses; :func:`format_lackey` is the grammar the other way round,
writing Lackey records (for :mod:`hvmem.workloads.trace_writer`).

Numbers are unsigned 64-bit: a value that does not fit (or, for page numbers,
does not fit in int64) is ``PARSE_TOO_BIG``, never wrapped. Formats and
statuses are small integers because kernels take them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = [
    "FMT_ADDR",
    "FMT_AUTO",
    "FMT_LACKEY",
    "FMT_PAGES",
    "K_INSTR",
    "PARSE_BAD",
    "PARSE_OK",
    "PARSE_TOO_BIG",
    "PARSE_TOO_LONG",
    "count_newlines",
    "format_lackey",
    "last_newline",
    "parse_block",
    "scan_head",
]

# Format codes passed to the kernels.
FMT_ADDR = 0
FMT_PAGES = 1
FMT_LACKEY = 2
FMT_AUTO = -1

# Kernel status codes.
PARSE_OK = 0
PARSE_BAD = 1
PARSE_TOO_BIG = 2
PARSE_TOO_LONG = 3

# ASCII codes used by the kernels (K_*: the Lackey kind letters).
_NL = 10
_HASH = 35
_EQ = 61
_COMMA = 44
_ZERO = 48
_X_LOWER = 120
_X_UPPER = 88
K_INSTR = 73  # I
_K_LOAD = 76  # L
_K_STORE = 83  # S
_K_MODIFY = 77  # M


@njit(cache=True, inline="always")
def _is_blank(c):
    # space, tab, \v, \f, \r (not \n: lines end there)
    return c == 32 or c == 9 or c == 11 or c == 12 or c == 13


@njit(cache=True, inline="always")
def _hex_digit(c):
    if 48 <= c <= 57:
        return np.int64(c) - 48
    if 97 <= c <= 102:
        return np.int64(c) - 87
    if 65 <= c <= 70:
        return np.int64(c) - 55
    return np.int64(-1)


@njit(cache=True, inline="always")
def _finish(buf, i, stop):
    """Skip trailing blanks from ``i``; return the line end (a newline or ``stop``) or -1."""
    while i < stop and _is_blank(buf[i]):
        i += 1
    if i >= stop or buf[i] == _NL:
        return i
    return -1


@njit(cache=True, inline="always")
def _parse_hex(buf, i, stop):
    """Parse hex digits at ``i``; return (status, value, index after the digits)."""
    v = np.uint64(0)
    start = i
    status = PARSE_OK
    while i < stop:
        d = _hex_digit(buf[i])
        if d < 0:
            break
        if (v >> np.uint64(60)) != np.uint64(0):
            status = PARSE_TOO_BIG
        v = (v << np.uint64(4)) | np.uint64(d)
        i += 1
    if i == start:
        status = PARSE_BAD
    return status, v, i


@njit(cache=True, inline="always")
def _parse_dec(buf, i, stop):
    """Parse decimal digits at ``i``; return (status, value, index after the digits)."""
    v = np.uint64(0)
    start = i
    status = PARSE_OK
    limit = np.uint64(1844674407370955161)  # (2**64 - 1) // 10
    while i < stop:
        c = buf[i]
        if c < 48 or c > 57:
            break
        d = np.uint64(c - 48)
        if v > limit or (v == limit and d > np.uint64(5)):
            status = PARSE_TOO_BIG
        v = v * np.uint64(10) + d
        i += 1
    if i == start:
        status = PARSE_BAD
    return status, v, i


@njit(cache=True)
def _parse_record(buf, i, stop, fmt):
    """Parse the record starting at ``i`` (its first non-blank byte).

    Returns:
        (status, value, is_write, end) where ``end`` is the index of the line's newline,
        or ``stop`` for a last line without one.
    """
    v = np.uint64(0)
    write = False
    if fmt == FMT_LACKEY:
        k = buf[i]
        if k == _K_STORE or k == _K_MODIFY:  # noqa: SIM109 (kept plain for Numba)
            write = True
        elif k != K_INSTR and k != _K_LOAD:
            return PARSE_BAD, v, write, i
        i += 1
        if i >= stop or not _is_blank(buf[i]):
            return PARSE_BAD, v, write, i
        while i < stop and _is_blank(buf[i]):
            i += 1
        status, v, i = _parse_hex(buf, i, stop)
        if status == PARSE_BAD:
            return status, v, write, i
        if i >= stop or buf[i] != _COMMA:
            return PARSE_BAD, v, write, i
        size_status, _size, i = _parse_dec(buf, i + 1, stop)
        if size_status == PARSE_BAD:
            return PARSE_BAD, v, write, i
    elif fmt == FMT_ADDR:
        if buf[i] == _ZERO and i + 1 < stop and (buf[i + 1] == _X_LOWER or buf[i + 1] == _X_UPPER):
            status, v, i = _parse_hex(buf, i + 2, stop)
        else:
            status, v, i = _parse_dec(buf, i, stop)
        if status == PARSE_BAD:
            return status, v, write, i
    else:  # FMT_PAGES
        status, v, i = _parse_dec(buf, i, stop)
        if status == PARSE_BAD:
            return status, v, write, i
        if (v >> np.uint64(63)) != np.uint64(0):
            status = PARSE_TOO_BIG
    end = _finish(buf, i, stop)
    if end < 0:
        return PARSE_BAD, v, write, i
    return status, v, write, end


@njit(cache=True)
def parse_block(buf, pos, stop, fmt, values, writes, k, max_line):
    """Parse whole lines of ``buf[pos:stop]`` into ``values[k:]`` and ``writes[k:]``.

    Stops at ``stop``, when the output arrays are full, or at the first malformed line
    (or line longer than ``max_line`` bytes).

    Returns:
        (k, pos, newlines, status): the new fill level, where parsing stopped (the start
        of the next unparsed line, or of the malformed line), how many newlines were
        consumed, and ``PARSE_OK`` or the malformed line's status.
    """
    cap = values.shape[0]
    lines = 0
    while pos < stop and k < cap:
        i = pos
        while i < stop and _is_blank(buf[i]):
            i += 1
        if i >= stop or buf[i] == _NL:
            if i - pos > max_line:
                return k, pos, lines, PARSE_TOO_LONG
            if i >= stop:
                pos = stop
                break
            lines += 1
            pos = i + 1
            continue
        c = buf[i]
        if c == _HASH or (fmt == FMT_LACKEY and c == _EQ and i + 1 < stop and buf[i + 1] == _EQ):
            while i < stop and buf[i] != _NL:
                i += 1
            if i - pos > max_line:
                return k, pos, lines, PARSE_TOO_LONG
            if i < stop:
                lines += 1
                pos = i + 1
            else:
                pos = stop
            continue
        status, v, w, end = _parse_record(buf, i, stop, fmt)
        if status != PARSE_OK:
            while end < stop and buf[end] != _NL:
                end += 1
            if end - pos > max_line:
                status = PARSE_TOO_LONG
            return k, pos, lines, status
        if end - pos > max_line:
            return k, pos, lines, PARSE_TOO_LONG
        values[k] = v
        writes[k] = w
        k += 1
        if end < stop:
            lines += 1
            pos = end + 1
        else:
            pos = stop
    return k, pos, lines, PARSE_OK


@njit(cache=True)
def scan_head(buf, stop, saw_valgrind):
    """Find the first meaningful line of ``buf[:stop]`` and see if it looks like Lackey.

    A line looks like a Lackey record when it starts with a kind letter (``I``, ``L``,
    ``S``, ``M``) and a blank. No ``addr`` line can start so, and a broken record such
    as ``I 0400d7d4`` is then reported as a broken Lackey record, not a bad address.

    Returns:
        (found, looks_lackey, saw_valgrind): whether a meaningful line exists, whether
        it looks like a Lackey record, and whether a ``==`` line came before it.
    """
    pos = 0
    while pos < stop:
        i = pos
        while i < stop and _is_blank(buf[i]):
            i += 1
        if i >= stop:
            break
        c = buf[i]
        if c == _NL:
            pos = i + 1
            continue
        if c == _HASH or (c == _EQ and i + 1 < stop and buf[i + 1] == _EQ):
            if c == _EQ:
                saw_valgrind = True
            while i < stop and buf[i] != _NL:
                i += 1
            pos = i + 1
            continue
        kind = c in (K_INSTR, _K_LOAD, _K_STORE, _K_MODIFY)
        return True, kind and i + 1 < stop and _is_blank(buf[i + 1]), saw_valgrind
    return False, False, saw_valgrind


@njit(cache=True)
def last_newline(buf, lo, hi):
    """Index of the last newline in ``buf[lo:hi]``, or -1."""
    i = hi - 1
    while i >= lo:
        if buf[i] == _NL:
            return i
        i -= 1
    return -1


@njit(cache=True)
def count_newlines(buf, lo, hi):
    """How many newlines ``buf[lo:hi]`` holds."""
    n = 0
    for i in range(lo, hi):
        if buf[i] == _NL:
            n += 1
    return n


@njit(cache=True)
def format_lackey(addrs, kinds, sizes, out):
    """Write Lackey records into ``out`` (uint8); return the number of bytes written."""
    p = 0
    digits = np.empty(20, np.uint8)
    for j in range(addrs.shape[0]):
        k = kinds[j]
        if k == K_INSTR:
            out[p] = k
            out[p + 1] = 32
        else:
            out[p] = 32
            out[p + 1] = k
        out[p + 2] = 32
        p += 3
        v = addrs[j]
        n = 0
        while v != np.uint64(0) or n < 8:
            d = np.int64(v & np.uint64(15))
            digits[n] = 48 + d if d < 10 else 87 + d
            v >>= np.uint64(4)
            n += 1
        for t in range(n - 1, -1, -1):
            out[p] = digits[t]
            p += 1
        out[p] = _COMMA
        p += 1
        s = np.int64(sizes[j])
        n = 0
        while s != 0 or n < 1:
            digits[n] = 48 + s % 10
            s //= 10
            n += 1
        for t in range(n - 1, -1, -1):
            out[p] = digits[t]
            p += 1
        out[p] = _NL
        p += 1
    return p
