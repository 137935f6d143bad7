from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError, TraceError
from hvmem.workloads import trace
from hvmem.workloads.trace import (
    RefChunk,
    detect_format,
    iter_page_numbers,
    iter_references,
    page_numbers,
    read_page_numbers,
)
from hvmem.workloads.trace_writer import generate_lackey, write_lackey

LACKEY_SAMPLE = """\
==12345== Lackey, an example Valgrind tool
==12345== Command: ls
I  0400d7d4,8
 L 04ffe3f8,8
 S 7ff000398,8
 M 0421d3a0,4
==12345==
==12345== Counted 1 call to main()
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path


def read_all(path, fmt="auto", chunk_refs=1 << 20, block_bytes=trace.DEFAULT_BLOCK_BYTES):
    chunks = list(iter_references(path, fmt, chunk_refs, block_bytes=block_bytes))
    values = np.concatenate([c.values for c in chunks])
    writes = np.concatenate([c.is_write for c in chunks])
    return values, writes, chunks


def trace_error(path, fmt="auto", block_bytes=trace.DEFAULT_BLOCK_BYTES) -> str:
    with pytest.raises(TraceError) as info:
        read_all(path, fmt, block_bytes=block_bytes)
    message = str(info.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------- formats


def test_addr_hex_and_decimal(tmp_path):
    path = write(tmp_path, "t.txt", "0x1000\n0X2FFF\n  4096  \n\t0xdeadBEEF\t\n0\n")
    values, writes, chunks = read_all(path, "addr")
    assert values.tolist() == [0x1000, 0x2FFF, 4096, 0xDEADBEEF, 0]
    assert values.dtype == np.uint64
    assert writes.dtype == np.bool_
    assert not writes.any()
    assert not chunks[0].is_page_numbers


def test_addr_full_64_bit_range(tmp_path):
    path = write(tmp_path, "t.txt", "0xffffffffffffffff\n18446744073709551615\n")
    values, _, _ = read_all(path, "addr")
    assert values.tolist() == [2**64 - 1, 2**64 - 1]


def test_addr_comments_blanks_and_crlf(tmp_path):
    text = "# header\n\n   \n0x10\r\n  # indented comment\r\n\r\n20\r\n"
    values, _, _ = read_all(write(tmp_path, "t.txt", text), "addr")
    assert values.tolist() == [0x10, 20]


def test_last_line_without_newline(tmp_path):
    values, _, _ = read_all(write(tmp_path, "t.txt", "1\n2\n0x3"), "addr")
    assert values.tolist() == [1, 2, 3]


def test_pages_format(tmp_path):
    path = write(tmp_path, "p.txt", "# OSTEP addressfile\n0\n3\n1\n\n7\n")
    values, writes, chunks = read_all(path, "pages")
    assert values.tolist() == [0, 3, 1, 7]
    assert not writes.any()
    assert all(c.is_page_numbers for c in chunks)
    vpn, is_write = read_page_numbers(path, "pages", page_shift=21)
    assert vpn.tolist() == [0, 3, 1, 7]
    assert vpn.dtype == np.int64
    assert is_write.dtype == np.bool_


def test_lackey_records(tmp_path):
    path = write(tmp_path, "t.lackey", LACKEY_SAMPLE)
    values, writes, chunks = read_all(path, "lackey")
    assert values.tolist() == [0x0400D7D4, 0x04FFE3F8, 0x7FF000398, 0x0421D3A0]
    assert writes.tolist() == [False, False, True, True]
    assert not chunks[0].is_page_numbers


def test_lackey_modify_is_one_write(tmp_path):
    path = write(tmp_path, "t.lackey", " M 0421d3a0,4\n M 0421d3a4,4\n")
    values, writes, _ = read_all(path, "lackey")
    assert values.tolist() == [0x0421D3A0, 0x0421D3A4]
    assert writes.tolist() == [True, True]


def test_lackey_valgrind_lines_comments_and_blanks_skipped(tmp_path):
    text = "==1== start\n\n# note\nI  00001000,4\n   \n==1== middle\n L 00002000,8\n==1== end"
    values, _, _ = read_all(write(tmp_path, "t.lackey", text), "lackey")
    assert values.tolist() == [0x1000, 0x2000]


def test_lackey_surrounding_whitespace_and_uppercase_hex(tmp_path):
    text = "  I  0400D7D4,8  \n\t L\t04FFE3F8,16\r\n"
    values, writes, _ = read_all(write(tmp_path, "t.lackey", text), "lackey")
    assert values.tolist() == [0x0400D7D4, 0x04FFE3F8]
    assert writes.tolist() == [False, False]


def test_straddling_access_counts_once_at_its_start(tmp_path):
    path = write(tmp_path, "t.lackey", " L 00000ffc,8\n")
    vpn, _ = read_page_numbers(path, "lackey", page_shift=12)
    assert vpn.tolist() == [0]


# ------------------------------------------------------------------------ auto-detection


def test_detect_lackey_with_valgrind_header(tmp_path):
    path = write(tmp_path, "t.lackey", LACKEY_SAMPLE)
    assert detect_format(path) == "lackey"
    values, writes, _ = read_all(path)  # fmt="auto"
    assert values.tolist() == [0x0400D7D4, 0x04FFE3F8, 0x7FF000398, 0x0421D3A0]
    assert writes.tolist() == [False, False, True, True]


def test_detect_lackey_without_header(tmp_path):
    path = write(tmp_path, "t.lackey", "\n# c\n L 04ffe3f8,8\n")
    assert detect_format(path) == "lackey"


def test_detect_addr(tmp_path):
    assert detect_format(write(tmp_path, "a.txt", "# c\n\n0x1000\n")) == "addr"
    assert detect_format(write(tmp_path, "b.txt", "4096\n")) == "addr"
    assert detect_format(write(tmp_path, "c.txt", "")) == "addr"


def test_detect_after_block_boundaries(tmp_path):
    header = "".join(f"==1== line {i}\n" for i in range(50))
    path = write(tmp_path, "t.lackey", header + "I  00001000,4\n")
    assert detect_format(path, block_bytes=7) == "lackey"
    values, _, _ = read_all(path, block_bytes=7)
    assert values.tolist() == [0x1000]


def test_auto_broken_first_lackey_record_is_reported_as_lackey(tmp_path):
    path = write(tmp_path, "t.lackey", "I 0400d7d4\n")
    assert trace_error(path) == "t.lackey:1: not a Lackey record: 'I 0400d7d4'".replace(
        "t.lackey", str(path)
    )


def test_auto_addr_file_is_not_lackey(tmp_path):
    values, writes, _ = read_all(write(tmp_path, "t.txt", "0x10\n16\n"))
    assert values.tolist() == [16, 16]
    assert not writes.any()


# ------------------------------------------------------------------------- page numbers


def test_page_numbers_4k_and_2m(tmp_path):
    path = write(tmp_path, "t.txt", "0x0\n0xfff\n0x1000\n0x1fffff\n0x200000\n0x7ff000398\n")
    (chunk,) = iter_references(path, "addr")
    assert page_numbers(chunk, 12).tolist() == [0, 0, 1, 0x1FF, 0x200, 0x7FF000]
    assert page_numbers(chunk, 21).tolist() == [0, 0, 0, 0, 1, 0x7FF000398 >> 21]
    assert page_numbers(chunk, 12).dtype == np.int64
    vpn, _ = read_page_numbers(path, "addr", page_shift=21)
    assert vpn.tolist() == [0, 0, 0, 0, 1, 0x7FF000398 >> 21]


def test_page_numbers_pass_through_page_chunks():
    chunk = RefChunk(np.array([5, 9], np.uint64), np.zeros(2, np.bool_), True)
    assert page_numbers(chunk, 12).tolist() == [5, 9]
    assert page_numbers(chunk, 21).tolist() == [5, 9]


def test_page_numbers_top_address_fits_int64():
    chunk = RefChunk(np.array([2**64 - 1], np.uint64), np.zeros(1, np.bool_), False)
    assert page_numbers(chunk, 12).tolist() == [(2**64 - 1) >> 12]


def test_page_numbers_rejects_bad_shift():
    chunk = RefChunk(np.array([1], np.uint64), np.zeros(1, np.bool_), False)
    with pytest.raises(ConfigError):
        page_numbers(chunk, 0)
    with pytest.raises(ConfigError):
        page_numbers(chunk, 64)


def test_iter_page_numbers(tmp_path):
    path = write(tmp_path, "t.lackey", LACKEY_SAMPLE)
    pairs = list(iter_page_numbers(path, chunk_refs=3))
    assert [len(v) for v, _ in pairs] == [3, 1]
    vpn = np.concatenate([v for v, _ in pairs])
    assert vpn.tolist() == [0x0400D, 0x04FFE, 0x7FF000, 0x0421D]


# ------------------------------------------------------------------------------ chunks


def test_chunks_are_full_except_the_last(tmp_path):
    path = write(tmp_path, "t.txt", "".join(f"{i}\n" for i in range(10)))
    _, _, chunks = read_all(path, "addr", chunk_refs=4, block_bytes=3)
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert np.concatenate([c.values for c in chunks]).tolist() == list(range(10))
    # yielded chunks are independent arrays, not one reused buffer
    assert chunks[0].values.tolist() == [0, 1, 2, 3]


def test_chunk_is_frozen():
    chunk = RefChunk(np.array([1], np.uint64), np.zeros(1, np.bool_), False)
    with pytest.raises(AttributeError):
        chunk.is_page_numbers = True  # type: ignore[misc]


# ------------------------------------------------------------------------------ errors


def test_bad_address_message(tmp_path):
    path = write(tmp_path, "trace.txt", "0x10\n\n# c\n20\nzz12\n")
    assert trace_error(path, "addr") == (
        f"{path}:5: cannot read 'zz12' as an address (expected hex with 0x, or decimal)"
    )


@pytest.mark.parametrize(
    "line", ["0x", "0xg1", "12a", "-5", "+5", "0x10 # comment", "1 2", "0b101", "=="]
)
def test_malformed_addr_lines(tmp_path, line):
    path = write(tmp_path, "t.txt", f"0x10\n{line}\n")
    message = trace_error(path, "addr")
    assert message.startswith(f"{path}:2: cannot read {line!r} as an address")


@pytest.mark.parametrize(
    "line",
    [
        "X 1234,8",
        "I 0400d7d4",
        "I  0400d7d4,",
        "I  0400d7d4,x",
        "I0400d7d4,8",
        "L ,8",
        " S 0x7ff000398,8",
        " M 0421d3a0,4 extra",
        "I  04zz,8",
        "12345",
    ],
)
def test_malformed_lackey_lines(tmp_path, line):
    path = write(tmp_path, "trace.lackey", f"==1== hi\n L 1000,8\n{line}\n")
    assert trace_error(path, "lackey") == f"{path}:3: not a Lackey record: {line.strip()!r}"


@pytest.mark.parametrize("line", ["0x3", "1.5", "-1", "a", "3 4"])
def test_malformed_pages_lines(tmp_path, line):
    path = write(tmp_path, "p.txt", f"1\n2\n{line}\n")
    assert trace_error(path, "pages") == (
        f"{path}:3: cannot read {line!r} as a page number (expected decimal)"
    )


def test_too_big_values(tmp_path):
    addr = write(tmp_path, "a.txt", "0x1\n0x1" + "0" * 16 + "\n")
    assert trace_error(addr, "addr") == f"{addr}:2: address '0x1{'0' * 16}' does not fit in 64 bits"
    dec = write(tmp_path, "d.txt", "18446744073709551616\n")
    assert "does not fit in 64 bits" in trace_error(dec, "addr")
    lackey = write(tmp_path, "l.lackey", " L 1" + "0" * 16 + ",8\n")
    assert "does not fit in 64 bits" in trace_error(lackey, "lackey")
    pages = write(tmp_path, "p.txt", "9223372036854775808\n")
    assert trace_error(pages, "pages").startswith(f"{pages}:1: page number '9223372036854775808'")
    ok = write(tmp_path, "ok.txt", "9223372036854775807\n")
    vpn, _ = read_page_numbers(ok, "pages")
    assert vpn.tolist() == [2**63 - 1]


def test_error_text_is_truncated(tmp_path):
    path = write(tmp_path, "t.txt", "x" * 500 + "\n")
    message = trace_error(path, "addr")
    quoted = message.split("cannot read ", 1)[1].split(" as an address")[0]
    assert 50 <= len(quoted) <= 64
    assert quoted.endswith("...'")


@pytest.mark.parametrize("block_bytes", [1, 2, 5, 7, 16, 64, 1 << 20])
def test_error_line_number_across_block_boundaries(tmp_path, block_bytes):
    lines = [f"0x{i * 4096:x}" for i in range(60)]
    lines[10:10] = ["# comment", "", "   "]
    lines.insert(47, "0xNOPE")  # line 48
    path = write(tmp_path, "t.txt", "\n".join(lines) + "\n")
    message = trace_error(path, "addr", block_bytes=block_bytes)
    assert message.startswith(f"{path}:48: cannot read '0xNOPE'")


@pytest.mark.parametrize("block_bytes", [1, 3, 13, 1 << 20])
def test_lackey_error_line_number_across_block_boundaries(tmp_path, block_bytes):
    body = "".join(f" L {i:08x},8\n" for i in range(40))
    path = write(tmp_path, "t.lackey", "==9== hdr\n" + body + "X 1234,8\n")
    message = trace_error(path, block_bytes=block_bytes)
    assert message == f"{path}:42: not a Lackey record: 'X 1234,8'"


@pytest.mark.parametrize("text", ["", "\n\n", "# only comments\n  \n", "==1== hi\n==1== bye\n"])
def test_empty_trace(tmp_path, text):
    path = write(tmp_path, "trace.txt", text)
    assert trace_error(path) == f"{path}: the trace holds no references"
    with pytest.raises(TraceError, match="holds no references"):
        read_page_numbers(path)


def test_empty_trace_in_explicit_formats(tmp_path):
    path = write(tmp_path, "trace.txt", "# nothing\n")
    for fmt in ("addr", "pages", "lackey"):
        assert trace_error(path, fmt) == f"{path}: the trace holds no references"


def test_missing_file_raises_at_the_call(tmp_path):
    path = tmp_path / "trace.txt"
    with pytest.raises(TraceError) as info:
        iter_references(path)
    assert str(info.value) == f"{path}: no such file"
    with pytest.raises(TraceError, match="no such file"):
        detect_format(path)
    with pytest.raises(TraceError, match="no such file"):
        read_page_numbers(path)


def test_directory_is_not_a_trace(tmp_path):
    with pytest.raises(TraceError, match="is a directory"):
        iter_references(tmp_path)


def test_bad_arguments(tmp_path):
    path = write(tmp_path, "t.txt", "1\n")
    with pytest.raises(ConfigError, match="unknown trace format"):
        iter_references(path, "csv")
    with pytest.raises(ConfigError):
        iter_references(path, "addr", chunk_refs=0)
    with pytest.raises(ConfigError):
        iter_references(path, "addr", block_bytes=0)
    with pytest.raises(ConfigError):
        detect_format("-")


@pytest.mark.parametrize("block_bytes", [1, 7, 64, 150, 1 << 20])
@pytest.mark.parametrize("filler", ["#", " ", "9"])
def test_overlong_line_is_refused(tmp_path, monkeypatch, block_bytes, filler):
    monkeypatch.setattr(trace, "MAX_LINE_BYTES", 100)
    fits = "0x1" + " " * 97  # exactly 100 bytes
    long = (filler * 101) if filler != " " else " " * 101
    path = write(tmp_path, "t.txt", f"1\n{fits}\n{long}\n2\n")
    message = trace_error(path, "addr", block_bytes=block_bytes)
    assert message == f"{path}:3: line longer than 100 bytes; is this a memory trace?"
    ok = write(tmp_path, "ok.txt", f"1\n{fits}\n2\n")
    values, _, _ = read_all(ok, "addr", block_bytes=block_bytes)
    assert values.tolist() == [1, 1, 2]


def test_overlong_last_line_without_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(trace, "MAX_LINE_BYTES", 100)
    path = write(tmp_path, "t.txt", "1\n" + "#" * 200)
    assert trace_error(path, "addr", block_bytes=1 << 20).startswith(f"{path}:2: line longer")


# ------------------------------------------------------------------------------- stdin


def test_stdin(monkeypatch):
    fake = io.TextIOWrapper(io.BytesIO(b"==1== x\nI  00001000,4\n S 00002000,8\n"))
    monkeypatch.setattr(sys, "stdin", fake)
    vpn, is_write = read_page_numbers("-", block_bytes=5)
    assert vpn.tolist() == [1, 2]
    assert is_write.tolist() == [False, True]


def test_stdin_errors_name_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"0x1\nbad\n")))
    with pytest.raises(TraceError, match=r"^<stdin>:2: cannot read 'bad'"):
        read_page_numbers("-", "addr")


# --------------------------------------------------------------------- writing helpers


def test_write_lackey_round_trip(tmp_path):
    addrs = np.array([0x0400D7D4, 0x04FFE3F8, 0x7FF000398, 0x0421D3A0, 0, 2**64 - 1], np.uint64)
    path = tmp_path / "w.lackey"
    write_lackey(path, addrs, "ILSMLI", [8, 8, 8, 4, 1, 16], header=["==1== hi"])
    assert path.read_text().splitlines()[:5] == [
        "==1== hi",
        "I  0400d7d4,8",
        " L 04ffe3f8,8",
        " S 7ff000398,8",
        " M 0421d3a0,4",
    ]
    values, writes, _ = read_all(path)
    assert values.tolist() == addrs.tolist()
    assert writes.tolist() == [False, False, True, True, False, False]


def test_write_lackey_rejects_bad_kinds(tmp_path):
    with pytest.raises(ConfigError):
        write_lackey(tmp_path / "w", [1, 2], "IX")
    with pytest.raises(ConfigError):
        write_lackey(tmp_path / "w", [1, 2], "I")


def test_generate_lackey(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_lackey(a, 5000, seed=3)
    generate_lackey(b, 5000, seed=3)
    generate_lackey(c, 5000, seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert detect_format(a) == "lackey"
    values, writes, _ = read_all(a)
    assert len(values) == 5000
    assert len(a.read_text().splitlines()) == 5000 + 4
    kinds = [line[:2].strip() for line in a.read_text().splitlines() if not line.startswith("==")]
    assert set(kinds) == {"I", "L", "S", "M"}
    assert writes.sum() == sum(k in "SM" for k in kinds)
    # clustered: a few hundred distinct 4 KiB pages, not thousands
    assert len(np.unique(values >> np.uint64(12))) < 2000


def test_generate_lackey_zero_lines_is_an_empty_trace(tmp_path):
    path = tmp_path / "z.lackey"
    generate_lackey(path, 0, seed=1)
    assert trace_error(path) == f"{path}: the trace holds no references"


# -------------------------------------------------------------------------- properties

KINDS = "ILSM"
records = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2**64 - 1),
        st.sampled_from(KINDS),
        st.integers(min_value=1, max_value=8),
    ),
    min_size=1,
    max_size=60,
)
noise = st.sampled_from(["", "   ", "# comment", "==77== valgrind says", "\t#x"])


@pytest.fixture(scope="module")
def prop_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("prop")


@settings(max_examples=120, deadline=None)
@given(
    recs=records,
    noise_lines=st.lists(st.tuples(st.integers(0, 60), noise), max_size=8),
    block_bytes=st.integers(min_value=1, max_value=80),
    chunk_refs=st.integers(min_value=1, max_value=9),
    final_newline=st.booleans(),
)
def test_property_lackey_round_trip(
    prop_dir, recs, noise_lines, block_bytes, chunk_refs, final_newline
):
    lines = [f"I  {a:08x},{s}" if k == "I" else f" {k} {a:08x},{s}" for a, k, s in recs]
    for at, text in noise_lines:
        lines.insert(min(at, len(lines)), text)
    path = prop_dir / "p.lackey"
    path.write_text("\n".join(lines) + ("\n" if final_newline else ""))
    values, writes, chunks = read_all(path, "auto", chunk_refs, block_bytes)
    assert values.tolist() == [a for a, _, _ in recs]
    assert writes.tolist() == [k in "SM" for _, k, _ in recs]
    assert all(len(c) == chunk_refs for c in chunks[:-1])
    assert 1 <= len(chunks[-1]) <= chunk_refs


@settings(max_examples=120, deadline=None)
@given(
    addrs=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2**64 - 1),
            st.sampled_from(["hex", "HEX", "0X", "dec"]),
            st.sampled_from(["", " ", "\t", "  "]),
            st.sampled_from(["", " ", "\r", " \t"]),
        ),
        min_size=1,
        max_size=60,
    ),
    noise_lines=st.lists(
        st.tuples(st.integers(0, 60), st.sampled_from(["", " ", "# c", "  # c"])), max_size=8
    ),
    block_bytes=st.integers(min_value=1, max_value=80),
    chunk_refs=st.integers(min_value=1, max_value=9),
)
def test_property_addr_round_trip(prop_dir, addrs, noise_lines, block_bytes, chunk_refs):
    def show(a: int, style: str) -> str:
        return {"hex": f"0x{a:x}", "HEX": f"0x{a:X}", "0X": f"0X{a:x}", "dec": str(a)}[style]

    lines = [f"{lead}{show(a, style)}{trail}" for a, style, lead, trail in addrs]
    for at, text in noise_lines:
        lines.insert(min(at, len(lines)), text)
    path = prop_dir / "p.txt"
    path.write_text("\n".join(lines) + "\n")
    expected = [a for a, _, _, _ in addrs]
    values, writes, _ = read_all(path, "auto", chunk_refs, block_bytes)
    assert values.tolist() == expected
    assert not writes.any()
    whole, _, _ = read_all(path, "addr")
    assert whole.tolist() == expected
    vpn, _ = read_page_numbers(path, "addr", page_shift=12, block_bytes=block_bytes)
    assert vpn.tolist() == [a >> 12 for a in expected]
