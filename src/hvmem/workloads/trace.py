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
buffer with a Numba kernel (:func:`~hvmem.workloads.trace_parse.parse_block`) and moves
the partial last line to the front of the buffer so the next block completes it. The
kernel writes addresses and write flags into preallocated output arrays of
``chunk_refs`` entries, which are yielded as :class:`RefChunk` values when full. Memory
therefore stays bounded (two blocks plus one chunk) however long the trace is, and
Python runs once per block or chunk, never once per line. The kernel counts the newlines
it consumes, and Python adds them to a running total, so an error's line number is right
across block boundaries. On a malformed line the kernel stops and reports the line's
byte offset, and Python turns that into a one-line :class:`~hvmem.errors.TraceError`,
``file:line: ...``, quoting the offending text. A line longer than 1 MiB
(:data:`MAX_LINE_BYTES`) is refused, whatever the block size, which keeps the carried
partial line bounded too. The path ``"-"`` reads standard input with the same code.

:func:`read_page_numbers` concatenates a whole trace into page numbers. It is for
small traces and for OPT, which needs the future. Traces for tests and benchmarks are
written by :mod:`hvmem.workloads.trace_writer`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from hvmem.errors import ConfigError, TraceError
from hvmem.workloads.checks import check_arg
from hvmem.workloads.trace_parse import (
    FMT_ADDR,
    FMT_AUTO,
    FMT_LACKEY,
    FMT_PAGES,
    PARSE_OK,
    PARSE_TOO_BIG,
    PARSE_TOO_LONG,
    count_newlines,
    last_newline,
    parse_block,
    scan_head,
)

__all__ = [
    "FORMATS",
    "RefChunk",
    "detect_format",
    "iter_page_numbers",
    "iter_references",
    "page_numbers",
    "read_page_numbers",
]

#: The format names :func:`iter_references` accepts.
FORMATS = ("auto", "addr", "pages", "lackey")

#: Default size of one read from the trace file, in bytes.
DEFAULT_BLOCK_BYTES = 4 << 20
#: A line longer than this, in bytes without its newline, is refused: no record is so long.
MAX_LINE_BYTES = 1 << 20
#: How much of an offending line an error message quotes.
_QUOTE_CHARS = 60
# Format names to the kernels' codes, and back.
_FORMAT_CODES = {"addr": FMT_ADDR, "pages": FMT_PAGES, "lackey": FMT_LACKEY, "auto": FMT_AUTO}
_FORMAT_NAMES = {FMT_ADDR: "addr", FMT_PAGES: "pages", FMT_LACKEY: "lackey"}


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
            nl = last_newline(self.buf, self.have, self.have + got)
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
    if status == PARSE_TOO_LONG:
        return _too_long(name, line)
    if fmt == FMT_LACKEY:
        if status == PARSE_TOO_BIG:
            return TraceError(f"{where}: Lackey address does not fit in 64 bits: {text}")
        return TraceError(f"{where}: not a Lackey record: {text}")
    if fmt == FMT_PAGES:
        if status == PARSE_TOO_BIG:
            return TraceError(f"{where}: page number {text} is too large (at most 2**63 - 1)")
        return TraceError(f"{where}: cannot read {text} as a page number (expected decimal)")
    if status == PARSE_TOO_BIG:
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
            return (FMT_LACKEY if saw_valgrind else FMT_ADDR), False, dropped
        found, lackey, saw_valgrind = scan_head(lines.buf, lines.stop, saw_valgrind)
        if found:
            return (FMT_LACKEY if lackey or saw_valgrind else FMT_ADDR), True, dropped
        # Only blank, comment and "==" lines so far: drop them, keep counting lines.
        dropped += count_newlines(lines.buf, 0, lines.stop)


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
        if code == FMT_AUTO:
            code, pending, line_base = _detect(lines, name)
        is_pages = code == FMT_PAGES
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
                k, pos, newlines, status = parse_block(
                    buf, pos, stop, code, values, writes, k, MAX_LINE_BYTES
                )
                line_base += newlines
                if status != PARSE_OK:
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


