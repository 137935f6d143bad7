"""Tests of hvmem.units: parsing and formatting sizes and times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hvmem.errors import ConfigError
from hvmem.units import (
    GIB,
    KIB,
    MIB,
    NS_PER_MS,
    NS_PER_S,
    NS_PER_US,
    PAGE_SIZE_BYTES,
    TIB,
    format_size,
    format_time,
    mib_to_pages,
    pages_to_mib,
    parse_size_bytes,
    parse_size_pages,
    parse_time_ns,
)

# -- sizes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected_bytes"),
    [
        ("4GiB", 4 * GIB),
        ("512 MiB", 512 * MIB),
        ("2M", 2 * MIB),
        ("4096", 4096),
        (4096, 4096),
        ("1.5GiB", 3 * GIB // 2),
        ("  8 kib ", 8 * KIB),
        ("1TB", TIB),
        ("0.5KiB", 512),
        ("0", 0),
        ("12B", 12),
        ("9007199254740993", 2**53 + 1),  # exact, not rounded through a float
    ],
)
def test_parse_size_bytes(text, expected_bytes):
    assert parse_size_bytes(text) == expected_bytes


@pytest.mark.parametrize("text", ["4 gigs", "-1GiB", "abc", "1.5B", "", "GiB", "1e3", "4 G iB"])
def test_parse_size_rejects_nonsense_naming_field_and_text(text):
    with pytest.raises(ConfigError) as caught:
        parse_size_bytes(text, what="vm[2].memory")
    message = str(caught.value)
    assert message.startswith("vm[2].memory:")
    assert repr(text) in message


@pytest.mark.parametrize("value", [-1, True])
def test_parse_size_rejects_bad_python_values(value):
    with pytest.raises(ConfigError, match="host.memory"):
        parse_size_bytes(value, what="host.memory")


def test_parse_size_of_a_huge_number_is_an_integer_not_an_overflow():
    assert parse_size_bytes("9" * 400) == int("9" * 400)


def test_parse_size_pages():
    assert parse_size_pages("8KiB") == 2
    assert parse_size_pages("2MiB") == 512
    with pytest.raises(ConfigError, match="vm.memory.*'6KiB'"):
        parse_size_pages("6KiB", what="vm.memory")


def test_format_size_examples():
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(4 * GIB) == "4 GiB"
    assert format_size(1536 * MIB) == "1.5 GiB"
    assert format_size(PAGE_SIZE_BYTES) == "4 KiB"


_SIZE_SPELLINGS = {
    "": 1, "B": 1, "k": KIB, "KB": KIB, "KiB": KIB, "M": MIB, "MB": MIB, "MiB": MIB,
    "g": GIB, "GB": GIB, "GiB": GIB, "T": TIB, "TB": TIB, "TiB": TIB,
}  # fmt: skip


@given(st.integers(0, 10**6), st.sampled_from(sorted(_SIZE_SPELLINGS)), st.booleans())
def test_parse_size_accepts_every_unit_spelling(number, unit, space):
    text = f"{number}{' ' if space else ''}{unit}"
    assert parse_size_bytes(text) == number * _SIZE_SPELLINGS[unit]


@given(
    st.one_of(
        st.integers(0, 1023),  # bytes
        st.builds(lambda k, unit: k * unit, st.integers(1, 1023), st.sampled_from([KIB, MIB, GIB])),
        st.builds(lambda k: k * TIB, st.integers(1, 10**6)),
    )
)
def test_size_round_trip_for_whole_unit_sizes(size_bytes):
    assert parse_size_bytes(format_size(size_bytes)) == size_bytes


# -- times ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected_ns"),
    [
        ("15s", 15 * NS_PER_S),
        ("250ns", 250),
        ("1.5ms", 1_500_000),
        ("2min", 120 * NS_PER_S),
        ("1h", 3600 * NS_PER_S),
        ("10us", 10 * NS_PER_US),
        ("10µs", 10 * NS_PER_US),
        ("3 sec", 3 * NS_PER_S),
        ("0", 0),
        (0, 0),
        ("0.0", 0),
        ("1.0000000015s", 1_000_000_002),  # rounded to the nearest (even) nanosecond
    ],
)
def test_parse_time_ns(text, expected_ns):
    assert parse_time_ns(text) == expected_ns


@pytest.mark.parametrize("text", ["10", "abc", "-1s", "15 parsecs", "", "1e3s", "s"])
def test_parse_time_rejects_nonsense_naming_field_and_text(text):
    with pytest.raises(ConfigError) as caught:
        parse_time_ns(text, what="policy.balance_period")
    message = str(caught.value)
    assert message.startswith("policy.balance_period:")
    assert repr(text) in message


@pytest.mark.parametrize("value", [10, 1.5, True])
def test_parse_time_rejects_bare_python_numbers(value):
    with pytest.raises(ConfigError, match="run.duration"):
        parse_time_ns(value, what="run.duration")


def test_format_time_examples():
    assert format_time(0) == "0 ns"
    assert format_time(250) == "250 ns"
    assert format_time(1_500_000) == "1.5 ms"
    assert format_time(2_250_000) == "2.25 ms"
    assert format_time(15 * NS_PER_S) == "15 s"
    assert format_time(7200 * NS_PER_S) == "2 h"


def test_format_time_never_uses_exponent_notation():
    # Regression: "{:.3g}" printed 1500.5 s as "1.5e+03 s" and 999.5 us as "1e+03 us".
    assert format_time(1_500_500_000_000) == "1500 s"
    assert format_time(999_500) == "1000 us"


_TIME_UNITS = [(1, 999), (NS_PER_US, 999), (NS_PER_MS, 999), (NS_PER_S, 3599)]


@given(
    st.one_of(
        *(st.integers(0, top).map(lambda k, scale=scale: k * scale) for scale, top in _TIME_UNITS),
        st.integers(1, 10**6).map(lambda k: k * 3600 * NS_PER_S),
    )
)
def test_time_round_trip_for_whole_unit_times(time_ns):
    assert parse_time_ns(format_time(time_ns)) == time_ns


@given(st.integers(1, 10**18))
def test_formatted_time_parses_back_within_rounding(time_ns):
    text = format_time(time_ns)
    assert "e" not in text
    assert parse_time_ns(text) == pytest.approx(time_ns, rel=5e-3)


# -- conversions ----------------------------------------------------------------


def test_page_conversions():
    assert pages_to_mib(256) == 1.0
    assert mib_to_pages(1) == 256
    assert mib_to_pages(1.5) == 384
