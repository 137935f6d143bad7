r"""Streaming readers of memory-reference traces.

A trace is a text file with one memory reference per line. ``hvmem tlb TRACE`` feeds
one to the TLB simulator, and guest paging replays one. Three formats are read:

``"addr"``: one virtual address per line, hex with a ``0x``/``0X`` prefix or decimal::

    # a loop over two pages
    0x7f3a10
    0X7F3A18
    8335896

``"pages"``: one page number per line, in decimal. This is the ``-f/--addressfile``
format of the OSTEP homework simulator ``paging-policy.py``, which reads each line with
``int(line)``. The values are already page numbers and are never shifted::

    0
    3
    1

``"lackey"``: the output of ``valgrind --tool=lackey --trace-mem=yes PROGRAM``. Each
record is a kind letter, an address in hex without ``0x``, a comma and a size in
bytes. ``I`` (instruction fetch) starts at column 0 and is followed by two spaces. The
data records ``L`` (load), ``S`` (store) and ``M`` (modify: a load followed by a store
to the same address) start with one space. Valgrind's own messages start with ``==``
and are skipped::

    ==12345== Lackey, an example Valgrind tool
    I  0400d7d4,8
     L 04ffe3f8,8
     S 7ff000398,8
     M 0421d3a0,4

``"auto"`` (the default) looks at the first meaningful line, meaning the first line
that is not blank, not a comment and not a ``==`` message. The trace is read as Lackey
output if that line looks like a Lackey record (a kind letter ``I``/``L``/``S``/``M``
then a blank, which no ``addr`` line can start with), or if Valgrind ``==`` lines come
before it (the file is then clearly Valgrind output). A broken first record is thus
reported as a broken Lackey record, not as a bad address. Otherwise the trace is read
as ``"addr"``. ``"pages"`` is never guessed: a column of small decimals would read just
as well as byte addresses, so it must be asked for.

In every format, blank lines and lines whose first non-blank character is ``#`` are
skipped, and whitespace (spaces, tabs, ``\r``) may surround a record. Nothing else may
share a line with a record, so trailing comments are errors.

Choices:

* Each record is one reference with one address and an ``is_write`` flag. ``S`` and
  ``M`` are writes, ``I`` and ``L`` are reads, and every ``addr``/``pages`` line is a
  read.
* A Lackey ``M`` line is **one** reference with ``is_write=True``, not a load followed by
  a store. A read-modify-write instruction looks up its translation once, and a store's
  TLB lookup also serves the load. This matches what a TLB or paging simulator should
  count: one lookup that sets the accessed and dirty bits together.
* An access that straddles a page boundary (say an 8-byte load at ``...ffc``) counts
  once, at its start address. Lackey's size field is checked to be a decimal number and
  is otherwise ignored. Straddling accesses are rare (compilers align data), and
  splitting them would make the reference count depend on the page size.
* Addresses are unsigned 64-bit. An address or page number too big for that (or, for
  ``pages``, too big for int64) is an error, never silently wrapped.

Streaming design. :func:`iter_references` reads the file in blocks of a few MiB with
``readinto`` into one reused ``uint8`` buffer. It parses all complete lines of the
buffer with a Numba kernel (:func:`_parse_block`) and moves the partial last line to
the front of the buffer so the next block completes it. The kernel writes addresses
and write flags into preallocated output arrays of ``chunk_refs`` entries, which are
yielded as :class:`RefChunk` values when full. Memory therefore stays bounded (two
blocks plus one chunk) however long the trace is, and Python runs once per block or
chunk, never once per line. The kernel counts the newlines it consumes, and Python adds
them to a running total, so an error's line number is right across block boundaries.
On a malformed line the kernel stops and reports the line's byte offset, and Python
turns that into a one-line :class:`~hvmem.errors.TraceError`, ``file:line: ...``,
quoting the offending text. A line longer than 1 MiB (:data:`MAX_LINE_BYTES`) is
refused, whatever the block size, which keeps the carried partial line bounded too.
The path ``"-"`` reads standard input with the same code.

:func:`read_page_numbers` concatenates a whole trace into page numbers. It is for
small traces and for OPT, which needs the future.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from numba import njit

from hvmem.errors import ConfigError, TraceError
from hvmem.workloads.checks import check_arg

__all__ = [
    "FORMATS",
    "RefChunk",
    "detect_format",
    "generate_lackey",
    "iter_page_numbers",
    "iter_references",
    "page_numbers",
    "read_page_numbers",
    "write_lackey",
]

#: The format names :func:`iter_references` accepts.
FORMATS = ("auto", "addr", "pages", "lackey")

#: Default size of one read from the trace file, in bytes.
DEFAULT_BLOCK_BYTES = 4 << 20
#: A line longer than this, in bytes without its newline, is refused: no record is so long.
MAX_LINE_BYTES = 1 << 20
#: How much of an offending line an error message quotes.
_QUOTE_CHARS = 60

# Format codes passed to the kernels.
_ADDR = 0
_PAGES = 1
_LACKEY = 2
_AUTO = -1
_FORMAT_CODES = {"addr": _ADDR, "pages": _PAGES, "lackey": _LACKEY, "auto": _AUTO}
_FORMAT_NAMES = {_ADDR: "addr", _PAGES: "pages", _LACKEY: "lackey"}

# Kernel status codes.
_OK = 0
_BAD = 1
_TOO_BIG = 2
_TOO_LONG = 3

# ASCII codes used by the kernels.
_NL = 10
_HASH = 35
_EQ = 61
_COMMA = 44
_ZERO = 48
_X_LOWER = 120
_X_UPPER = 88
_K_INSTR = 73  # I
_K_LOAD = 76  # L
_K_STORE = 83  # S
_K_MODIFY = 77  # M


@dataclass(frozen=True, slots=True)
class RefChunk:
    """A run of consecutive references from a trace.

    Attributes:
        values: ``uint64`` byte addresses, or page numbers if ``is_page_numbers``.
        is_write: ``bool``, one per reference; True for Lackey ``S`` and ``M``.
        is_page_numbers: True for the ``"pages"`` format (values are page numbers).
    """

    values: np.ndarray
    is_write: np.ndarray
    is_page_numbers: bool

    def __len__(self) -> int:
        return int(self.values.shape[0])


# --------------------------------------------------------------------------- kernels


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
    status = _OK
    while i < stop:
        d = _hex_digit(buf[i])
        if d < 0:
            break
        if (v >> np.uint64(60)) != np.uint64(0):
            status = _TOO_BIG
        v = (v << np.uint64(4)) | np.uint64(d)
        i += 1
    if i == start:
        status = _BAD
    return status, v, i


@njit(cache=True, inline="always")
def _parse_dec(buf, i, stop):
    """Parse decimal digits at ``i``; return (status, value, index after the digits)."""
    v = np.uint64(0)
    start = i
    status = _OK
    limit = np.uint64(1844674407370955161)  # (2**64 - 1) // 10
    while i < stop:
        c = buf[i]
        if c < 48 or c > 57:
            break
        d = np.uint64(c - 48)
        if v > limit or (v == limit and d > np.uint64(5)):
            status = _TOO_BIG
        v = v * np.uint64(10) + d
        i += 1
    if i == start:
        status = _BAD
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
    if fmt == _LACKEY:
        k = buf[i]
        if k == _K_STORE or k == _K_MODIFY:  # noqa: SIM109 (kept plain for Numba)
            write = True
        elif k != _K_INSTR and k != _K_LOAD:
            return _BAD, v, write, i
        i += 1
        if i >= stop or not _is_blank(buf[i]):
            return _BAD, v, write, i
        while i < stop and _is_blank(buf[i]):
            i += 1
        status, v, i = _parse_hex(buf, i, stop)
        if status == _BAD:
            return status, v, write, i
        if i >= stop or buf[i] != _COMMA:
            return _BAD, v, write, i
        size_status, _size, i = _parse_dec(buf, i + 1, stop)
        if size_status == _BAD:
            return _BAD, v, write, i
    elif fmt == _ADDR:
        if buf[i] == _ZERO and i + 1 < stop and (buf[i + 1] == _X_LOWER or buf[i + 1] == _X_UPPER):
            status, v, i = _parse_hex(buf, i + 2, stop)
        else:
            status, v, i = _parse_dec(buf, i, stop)
        if status == _BAD:
            return status, v, write, i
    else:  # _PAGES
        status, v, i = _parse_dec(buf, i, stop)
        if status == _BAD:
            return status, v, write, i
        if (v >> np.uint64(63)) != np.uint64(0):
            status = _TOO_BIG
    end = _finish(buf, i, stop)
    if end < 0:
        return _BAD, v, write, i
    return status, v, write, end


@njit(cache=True)
def _parse_block(buf, pos, stop, fmt, values, writes, k, max_line):
    """Parse whole lines of ``buf[pos:stop]`` into ``values[k:]`` and ``writes[k:]``.

    Stops at ``stop``, when the output arrays are full, or at the first malformed line
    (or line longer than ``max_line`` bytes).

    Returns:
        (k, pos, newlines, status): the new fill level, where parsing stopped (the start
        of the next unparsed line, or of the malformed line), how many newlines were
        consumed, and ``_OK`` or the malformed line's status.
    """
    cap = values.shape[0]
    lines = 0
    while pos < stop and k < cap:
        i = pos
        while i < stop and _is_blank(buf[i]):
            i += 1
        if i >= stop or buf[i] == _NL:
            if i - pos > max_line:
                return k, pos, lines, _TOO_LONG
            if i >= stop:
                pos = stop
                break
            lines += 1
            pos = i + 1
            continue
        c = buf[i]
        if c == _HASH or (fmt == _LACKEY and c == _EQ and i + 1 < stop and buf[i + 1] == _EQ):
            while i < stop and buf[i] != _NL:
                i += 1
            if i - pos > max_line:
                return k, pos, lines, _TOO_LONG
            if i < stop:
                lines += 1
                pos = i + 1
            else:
                pos = stop
            continue
        status, v, w, end = _parse_record(buf, i, stop, fmt)
        if status != _OK:
            while end < stop and buf[end] != _NL:
                end += 1
            if end - pos > max_line:
                status = _TOO_LONG
            return k, pos, lines, status
        if end - pos > max_line:
            return k, pos, lines, _TOO_LONG
        values[k] = v
        writes[k] = w
        k += 1
        if end < stop:
            lines += 1
            pos = end + 1
        else:
            pos = stop
    return k, pos, lines, _OK


@njit(cache=True)
def _scan_head(buf, stop, saw_valgrind):
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
        kind = c in (_K_INSTR, _K_LOAD, _K_STORE, _K_MODIFY)
        return True, kind and i + 1 < stop and _is_blank(buf[i + 1]), saw_valgrind
    return False, False, saw_valgrind


@njit(cache=True)
def _last_newline(buf, lo, hi):
    """Index of the last newline in ``buf[lo:hi]``, or -1."""
    i = hi - 1
    while i >= lo:
        if buf[i] == _NL:
            return i
        i -= 1
    return -1


@njit(cache=True)
def _count_newlines(buf, lo, hi):
    n = 0
    for i in range(lo, hi):
        if buf[i] == _NL:
            n += 1
    return n


@njit(cache=True)
def _format_lackey(addrs, kinds, sizes, out):
    """Write Lackey records into ``out`` (uint8); return the number of bytes written."""
    p = 0
    digits = np.empty(20, np.uint8)
    for j in range(addrs.shape[0]):
        k = kinds[j]
        if k == _K_INSTR:
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


# ---------------------------------------------------------------------- block reading


class _LineTooLongError(Exception):
    pass


class _LineBuffer:
    """A reused byte buffer whose prefix ``buf[:stop]`` holds only complete lines."""

    def __init__(self, stream: BinaryIO, block_bytes: int) -> None:
        self.stream = stream
        self.block_bytes = block_bytes
        self.buf = np.empty(2 * block_bytes, dtype=np.uint8)
        self.have = 0
        self.stop = 0
        self.eof = False

    def fill(self) -> bool:
        """Drop ``buf[:stop]``, then read until ``buf[:stop]`` holds complete lines.

        Returns:
            False once the stream is exhausted and nothing is left.
        """
        rem = self.have - self.stop
        if rem and self.stop:
            self.buf[:rem] = self.buf[self.stop : self.have]
        self.have = rem
        self.stop = 0
        block = self.block_bytes
        while not self.eof:
            if self.buf.shape[0] - self.have < block:
                grown = np.empty(max(2 * self.buf.shape[0], self.have + block), np.uint8)
                grown[: self.have] = self.buf[: self.have]
                self.buf = grown
            got = self.stream.readinto(self.buf[self.have : self.have + block])
            if not got:
                self.eof = True
                break
            nl = _last_newline(self.buf, self.have, self.have + got)
            self.have += got
            if nl >= 0:
                self.stop = nl + 1
                return True
            if self.have > MAX_LINE_BYTES:
                raise _LineTooLongError
        self.stop = self.have
        return self.stop > 0


# ------------------------------------------------------------------------ public API


def _display_name(path: str | os.PathLike[str]) -> str:
    return "<stdin>" if _is_stdin(path) else os.fspath(path)


def _is_stdin(path: str | os.PathLike[str]) -> bool:
    return isinstance(path, str) and path == "-"


def _check_readable(path: str | os.PathLike[str], name: str) -> None:
    if _is_stdin(path):
        return
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TraceError(f"{name}: no such file") from None
    except OSError as exc:
        raise TraceError(f"{name}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise TraceError(f"{name}: is a directory, not a trace file")


@contextlib.contextmanager
def _open(path: str | os.PathLike[str], name: str) -> Iterator[BinaryIO]:
    if _is_stdin(path):
        yield sys.stdin.buffer
        return
    try:
        stream = open(path, "rb", buffering=0)  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise TraceError(f"{name}: no such file") from None
    except OSError as exc:
        raise TraceError(f"{name}: {exc.strerror or exc}") from None
    with stream:
        yield stream


def _quote(buf: np.ndarray, pos: int, stop: int) -> str:
    raw = buf[pos : min(stop, pos + 4 * _QUOTE_CHARS + 16)].tobytes().split(b"\n", 1)[0]
    text = raw.decode("utf-8", "replace").strip()
    if len(text) > _QUOTE_CHARS:
        text = text[: _QUOTE_CHARS - 3] + "..."
    return repr(text)


def _line_error(name: str, line: int, fmt: int, status: int, text: str) -> TraceError:
    where = f"{name}:{line}"
    if status == _TOO_LONG:
        return _too_long(name, line)
    if fmt == _LACKEY:
        if status == _TOO_BIG:
            return TraceError(f"{where}: Lackey address does not fit in 64 bits: {text}")
        return TraceError(f"{where}: not a Lackey record: {text}")
    if fmt == _PAGES:
        if status == _TOO_BIG:
            return TraceError(f"{where}: page number {text} is too large (at most 2**63 - 1)")
        return TraceError(f"{where}: cannot read {text} as a page number (expected decimal)")
    if status == _TOO_BIG:
        return TraceError(f"{where}: address {text} does not fit in 64 bits")
    return TraceError(
        f"{where}: cannot read {text} as an address (expected hex with 0x, or decimal)"
    )


def _too_long(name: str, line: int) -> TraceError:
    return TraceError(
        f"{name}:{line}: line longer than {MAX_LINE_BYTES} bytes; is this a memory trace?"
    )


def _detect(lines: _LineBuffer, name: str) -> tuple[int, bool, int]:
    """Decide ``addr`` or ``lackey`` from the first meaningful line.

    Returns:
        (format code, whether ``lines`` holds unparsed data, newlines dropped as noise).
    """
    saw_valgrind = False
    dropped = 0
    while True:
        try:
            more = lines.fill()
        except _LineTooLongError:
            raise _too_long(name, dropped + 1) from None
        except OSError as exc:
            raise TraceError(f"{name}: {exc.strerror or exc}") from None
        if not more:
            return (_LACKEY if saw_valgrind else _ADDR), False, dropped
        found, lackey, saw_valgrind = _scan_head(lines.buf, lines.stop, saw_valgrind)
        if found:
            return (_LACKEY if lackey or saw_valgrind else _ADDR), True, dropped
        # Only blank, comment and "==" lines so far: drop them, keep counting lines.
        dropped += _count_newlines(lines.buf, 0, lines.stop)


def detect_format(path: str | os.PathLike[str], *, block_bytes: int = DEFAULT_BLOCK_BYTES) -> str:
    """Guess the format of a trace file from its first meaningful line.

    Args:
        path: the trace file (standard input cannot be peeked at, so not ``"-"``).
        block_bytes: size of each read; the file is read only up to its first record.

    Returns:
        ``"lackey"`` if the first line that is not blank, a ``#`` comment or a Valgrind
        ``==`` message starts like a Lackey record (``I``, ``L``, ``S`` or ``M`` then a
        blank), or if ``==`` lines precede it;
        ``"addr"`` otherwise (also for a file with no records at all).

    Raises:
        TraceError: the file does not exist or cannot be read.
        ConfigError: ``path`` is ``"-"``.
    """
    if _is_stdin(path):
        raise ConfigError("detect_format cannot peek at standard input; give a format")
    check_arg("block_bytes", block_bytes, 1)
    name = _display_name(path)
    _check_readable(path, name)
    with _open(path, name) as stream:
        code, _, _ = _detect(_LineBuffer(stream, block_bytes), name)
    return _FORMAT_NAMES[code]


def iter_references(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    chunk_refs: int = 1 << 20,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[RefChunk]:
    """Stream a trace as chunks of references, in bounded memory.

    The file's existence and the arguments are checked at the call; the file is read
    as the iterator is consumed.

    Args:
        path: the trace file, or ``"-"`` for standard input.
        fmt: ``"auto"``, ``"addr"``, ``"pages"`` or ``"lackey"`` (see the module doc).
        chunk_refs: references per yielded chunk (the last chunk may be shorter).
        block_bytes: bytes per read from the file; small values are for tests.

    Returns:
        An iterator of :class:`RefChunk`, each with 1 to ``chunk_refs`` references.

    Raises:
        TraceError: no such file (at the call); a malformed line, naming ``file:line``;
            or a trace that holds no references (once the file ends).
        ConfigError: an unknown format or a non-positive ``chunk_refs``/``block_bytes``.
    """
    if fmt not in _FORMAT_CODES:
        raise ConfigError(f"unknown trace format {fmt!r}; expected one of {', '.join(FORMATS)}")
    check_arg("chunk_refs", chunk_refs, 1)
    check_arg("block_bytes", block_bytes, 1)
    name = _display_name(path)
    _check_readable(path, name)
    return _generate(path, name, _FORMAT_CODES[fmt], int(chunk_refs), int(block_bytes))


def _generate(
    path: str | os.PathLike[str], name: str, code: int, chunk_refs: int, block_bytes: int
) -> Iterator[RefChunk]:
    with _open(path, name) as stream:
        lines = _LineBuffer(stream, block_bytes)
        line_base = 0  # newlines before lines.buf[0]
        pending = False  # lines.buf[:lines.stop] holds data not parsed yet
        if code == _AUTO:
            code, pending, line_base = _detect(lines, name)
        is_pages = code == _PAGES
        values = np.empty(chunk_refs, dtype=np.uint64)
        writes = np.empty(chunk_refs, dtype=np.bool_)
        k = 0
        total = 0
        while True:
            if not pending:
                try:
                    if not lines.fill():
                        break
                except _LineTooLongError:
                    raise _too_long(name, line_base + 1) from None
                except OSError as exc:
                    raise TraceError(f"{name}: {exc.strerror or exc}") from None
            pending = False
            buf, stop, pos = lines.buf, lines.stop, 0
            while pos < stop:
                k, pos, newlines, status = _parse_block(
                    buf, pos, stop, code, values, writes, k, MAX_LINE_BYTES
                )
                line_base += newlines
                if status != _OK:
                    raise _line_error(name, line_base + 1, code, status, _quote(buf, pos, stop))
                if k == chunk_refs:
                    total += k
                    yield RefChunk(values, writes, is_pages)
                    values = np.empty(chunk_refs, dtype=np.uint64)
                    writes = np.empty(chunk_refs, dtype=np.bool_)
                    k = 0
        if k:
            total += k
            yield RefChunk(values[:k].copy(), writes[:k].copy(), is_pages)
        if total == 0:
            raise TraceError(f"{name}: the trace holds no references")


def page_numbers(chunk: RefChunk, page_shift: int) -> np.ndarray:
    """Page numbers of a chunk's references.

    Args:
        chunk: a chunk from :func:`iter_references`.
        page_shift: log2 of the page size (12 for 4 KiB, 21 for 2 MiB), 1 to 63.
            Ignored for ``"pages"`` chunks, whose values are already page numbers.

    Returns:
        ``int64`` page numbers; for page-number chunks, a view of ``chunk.values``.

    Raises:
        ConfigError: ``page_shift`` is out of range.
    """
    check_arg("page_shift", page_shift, 1, 63)
    if chunk.is_page_numbers:
        return chunk.values.view(np.int64)
    return (chunk.values >> np.uint64(page_shift)).view(np.int64)


def iter_page_numbers(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    page_shift: int = 12,
    chunk_refs: int = 1 << 20,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream a trace as ``(vpn int64, is_write bool)`` chunks; see :func:`iter_references`.

    Returns:
        An iterator of ``(page numbers, write flags)`` array pairs.
    """
    check_arg("page_shift", page_shift, 1, 63)
    chunks = iter_references(path, fmt, chunk_refs, block_bytes=block_bytes)
    return ((page_numbers(c, page_shift), c.is_write) for c in chunks)


def read_page_numbers(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    page_shift: int = 12,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a whole trace into memory as page numbers (for small traces and OPT).

    Args:
        path: the trace file, or ``"-"`` for standard input.
        fmt: as for :func:`iter_references`.
        page_shift: log2 of the page size; ignored for ``"pages"`` traces.
        block_bytes: bytes per read from the file.

    Returns:
        ``(vpn, is_write)``: ``int64`` page numbers and ``bool`` write flags.

    Raises:
        TraceError: as for :func:`iter_references`.
        ConfigError: a bad format or ``page_shift``.
    """
    pairs = list(iter_page_numbers(path, fmt, page_shift, block_bytes=block_bytes))
    if len(pairs) == 1:
        return pairs[0]
    vpn = np.concatenate([p[0] for p in pairs])
    is_write = np.concatenate([p[1] for p in pairs])
    return vpn, is_write


# ----------------------------------------------------------------- writing (tests, bench)


def _kind_codes(kinds: str | Sequence[str] | np.ndarray, n: int) -> np.ndarray:
    if isinstance(kinds, str):
        codes = np.frombuffer(kinds.encode("ascii"), dtype=np.uint8)
    else:
        arr = np.asarray(kinds)
        codes = arr.astype("S1").view(np.uint8) if arr.dtype.kind in "US" else arr.astype(np.uint8)
    if codes.shape[0] != n:
        raise ConfigError(f"got {codes.shape[0]} kinds for {n} addresses")
    if not np.isin(codes, np.frombuffer(b"ILSM", np.uint8)).all():
        raise ConfigError("Lackey kinds must be among 'I', 'L', 'S' and 'M'")
    return codes


def write_lackey(
    path: str | os.PathLike[str],
    addresses: np.ndarray | Sequence[int],
    kinds: str | Sequence[str] | np.ndarray,
    sizes: np.ndarray | Sequence[int] | int = 8,
    *,
    header: Sequence[str] = (),
    append: bool = False,
) -> None:
    """Write references as Lackey records, formatted by a Numba kernel.

    Args:
        path: the file to write.
        addresses: byte addresses (unsigned 64-bit).
        kinds: one of ``I``/``L``/``S``/``M`` per address, as a string such as
            ``"ILSM"``, a sequence of one-letter strings or an array of ASCII codes.
        sizes: access sizes in bytes, one per address or one for all.
        header: lines written before the records (e.g. Valgrind ``==`` lines).
        append: append to ``path`` instead of replacing it.

    Raises:
        ConfigError: lengths differ or a kind is not a Lackey kind.
    """
    addrs = np.asarray(addresses, dtype=np.uint64).reshape(-1)
    n = addrs.shape[0]
    codes = _kind_codes(kinds, n)
    size_arr = np.broadcast_to(np.asarray(sizes, dtype=np.int64), (n,)).copy()
    if (size_arr < 0).any():
        raise ConfigError("Lackey access sizes must not be negative")
    with open(path, "ab" if append else "wb") as out:
        for line in header:
            out.write(line.encode("utf-8") + b"\n")
        step = 1 << 20
        buf = np.empty(step * 44, dtype=np.uint8)  # 3 + 16 + 1 + 20 + 1 bytes at most
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            used = _format_lackey(addrs[lo:hi], codes[lo:hi], size_arr[lo:hi], buf)
            out.write(buf[:used].tobytes())


def _zipf_weights(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return w / w.sum()


def generate_lackey(path: str | os.PathLike[str], n_lines: int, seed: int) -> None:
    """Write a seeded, realistic-looking Lackey trace of ``n_lines`` records.

    The mix is about 62% ``I``, 24% ``L``, 10% ``S`` and 4% ``M``. Instruction fetches
    walk sequentially through a 2 MiB code region with 1-8 byte instructions and jump
    to Zipf-popular targets. Data accesses (1, 2, 4 or 8 bytes, aligned) go to a stack
    near ``0x1ffefff000``, a 16 MiB heap of Zipf-popular 64-byte objects, and a 256 KiB
    data segment. A three-line Valgrind header and a one-line footer are added, so the
    file has ``n_lines + 4`` lines. The same ``n_lines`` and ``seed`` give the same file.

    Args:
        path: the file to write.
        n_lines: number of records.
        seed: seed of the random generator.
    """
    if n_lines < 0:
        raise ConfigError(f"n_lines must not be negative, got {n_lines}")
    rng = np.random.default_rng(seed)
    code_base, code_span = 0x0400_0000, 2 << 20
    data_base, data_span = 0x0460_0000, 256 << 10
    heap_base, heap_span = 0x0480_0000, 16 << 20
    stack_top = 0x1F_FEFF_F000
    entries = code_base + rng.integers(0, code_span, 512)
    entry_p = _zipf_weights(entries.shape[0], 1.1)
    objects = heap_base + 64 * rng.permutation(heap_span // 64)[:8192]
    object_p = _zipf_weights(objects.shape[0], 0.9)
    header = [
        "==4242== Lackey, an example Valgrind tool",
        "==4242== Copyright (C) 2002-2017, and GNU GPL'd, by Nicholas Nethercote.",
        "==4242== Command: ./hvmem-synthetic",
    ]
    step = 1 << 20
    first = True
    for lo in range(0, n_lines, step):
        m = min(step, n_lines - lo)
        kinds = rng.choice(np.frombuffer(b"ILSM", np.uint8), m, p=[0.62, 0.24, 0.10, 0.04])
        addrs = np.empty(m, dtype=np.uint64)
        sizes = np.empty(m, dtype=np.int64)
        is_instr = kinds == _K_INSTR
        n_i = int(is_instr.sum())
        if n_i:
            isz = rng.integers(1, 9, n_i)
            jump = rng.random(n_i) < 0.08
            jump[0] = True
            seg_starts = np.flatnonzero(jump)
            seg = np.cumsum(jump) - 1
            before = np.cumsum(isz) - isz
            offset = before - before[seg_starts][seg]
            targets = rng.choice(entries, seg_starts.shape[0], p=entry_p)
            pc = code_base + (targets[seg] - code_base + offset) % code_span
            addrs[is_instr] = pc.astype(np.uint64)
            sizes[is_instr] = isz
        n_d = m - n_i
        if n_d:
            dsz = rng.choice(np.array([1, 2, 4, 8]), n_d, p=[0.1, 0.1, 0.3, 0.5])
            region = rng.choice(3, n_d, p=[0.45, 0.35, 0.20])
            stack = stack_top - np.minimum(rng.geometric(1 / 512, n_d), 64 << 10)
            heap = rng.choice(objects, n_d, p=object_p) + rng.integers(0, 64, n_d)
            data = data_base + rng.integers(0, data_span, n_d)
            da = np.where(region == 0, stack, np.where(region == 1, heap, data))
            da &= ~(dsz - 1)
            addrs[~is_instr] = da.astype(np.uint64)
            sizes[~is_instr] = dsz
        write_lackey(path, addrs, kinds, sizes, header=header if first else (), append=not first)
        first = False
    footer = ["==4242== Counted 1 call to main()"]
    with open(path, "w" if first else "a", encoding="ascii") as out:
        if first:
            out.write("\n".join(header) + "\n")
        out.write("\n".join(footer) + "\n")
