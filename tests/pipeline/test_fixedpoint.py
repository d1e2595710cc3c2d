"""Exact decimal <-> int64 fixed point (pipeline.fixedpoint): examples, a
decimal.Decimal reference, and parse_many checked against parse."""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline import fixedpoint as fp

pytestmark = pytest.mark.unit

INT64_MAX = 2**63 - 1
DIGITS = "0123456789"


def shown(value: object) -> str:
    """What an error message must contain to name ``value``: its repr
    (fixedpoint cuts reprs longer than 60 characters to 57 + "...")."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57]


def reference(s: str) -> int | None:
    """The fixed-point value of a plain decimal string by decimal.Decimal, or
    None when it must be rejected (not integral at 1e8, or beyond int64).
    Only valid for strings of the grammar [+-] digits [. digits] with a digit."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[decimal.Inexact] = True
        ctx.traps[decimal.Rounded] = True
        scaled = decimal.Decimal(s) * (10**8)
        if scaled != scaled.to_integral_value():
            return None
        value = int(scaled)
    return value if abs(value) <= INT64_MAX else None


def exact_decimal(v: int) -> str:
    """v / 1e8 as a decimal string, computed independently of fixedpoint.format."""
    sign = "-" if v < 0 else ""
    whole, frac = divmod(abs(v), 10**8)
    return f"{sign}{whole}.{frac:08d}"


# ---------------------------------------------------------------------------
# parse: examples

VALID_EXAMPLES: list[tuple[str | bytes, int]] = [
    ("0.00012345", 12345),
    ("-1.5", -150_000_000),
    ("1.", 100_000_000),
    (".5", 50_000_000),
    ("+2", 200_000_000),
    ("-.5", -50_000_000),
    ("+.00000001", 1),
    ("0", 0),
    ("-0", 0),
    ("-0.0", 0),
    ("007", 700_000_000),
    ("00000000000000000000000000042.10", 4_210_000_000),
    ("0000.00000001", 1),
    ("92233720368.54775807", INT64_MAX),
    ("-92233720368.54775807", -INT64_MAX),
    ("00092233720368.5477580700000", INT64_MAX),
    ("1.000000000", 100_000_000),
    ("1.00000000000000000000", 100_000_000),
    ("0.123456780", 12_345_678),
    ("12345678901", 12_345_678_901 * 10**8),
    (b"0.00012345", 12345),
    (b"-1.5", -150_000_000),
    (b"+.5", 50_000_000),
]


@pytest.mark.parametrize(("text", "expected"), VALID_EXAMPLES)
def test_parse_examples(text: str | bytes, expected: int) -> None:
    assert fp.parse(text) == expected


def test_parse_accepts_bytearray_and_memoryview() -> None:
    assert fp.parse(bytearray(b"2.5")) == 250_000_000
    assert fp.parse(memoryview(b"-0.1")) == -10_000_000


INVALID_EXAMPLES: list[str | bytes] = [
    "",
    " 1",
    "1 ",
    " ",
    "\t1",
    "1\n",
    "1e5",
    "1E-3",
    "1e-5",
    "--1",
    "+-1",
    "-+1",
    "++1",
    "1-",
    "1+",
    "1-2",
    "-",
    "+",
    ".",
    "-.",
    "+.",
    "..5",
    "1..5",
    "1.2.3",
    "nan",
    "NaN",
    "-nan",
    "inf",
    "-inf",
    "Infinity",
    "1,5",
    "1,000",
    "0x10",
    "1_000",
    "abc",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: \d in a str regex, but not ASCII
    "1\u0665",  # 1 and ARABIC-INDIC DIGIT FIVE
    "\u0660.5",
    "\u0661.0",
    "\uff11",  # FULLWIDTH DIGIT ONE
    "92233720368.54775808",  # INT64_MAX + 1 at scale 1e8
    "-92233720368.54775808",  # int64 min is not accepted: magnitude limit is 2**63-1
    "100000000000",  # 1e11 * 1e8 = 1e19 > int64
    "99999999999999999999",
    "1.000000001",  # non-zero 9th decimal: never rounded
    "0.000000005",
    "0.1234567891",
    "-1.0000000000001",
    b"",
    b" 1",
    b"1e5",
    b"--1",
    b"nan",
    b"\xd9\xa1",  # "\u0661" as UTF-8: not ASCII
    b"\xff",
    b"92233720368.54775808",
    b"1.000000001",
]


@pytest.mark.parametrize("text", INVALID_EXAMPLES)
def test_parse_rejects_with_value_error_naming_input(text: str | bytes) -> None:
    with pytest.raises(ValueError) as info:
        fp.parse(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("value", [1.5, 1, None, ["1"], np.float64(2.0), np.int64(3)])
def test_parse_rejects_non_string_types_with_type_error(value: object) -> None:
    with pytest.raises(TypeError):
        fp.parse(value)  # type: ignore[arg-type]


def test_parse_long_input_message_is_truncated_but_names_input() -> None:
    text = "1" * 200
    with pytest.raises(ValueError) as info:
        fp.parse(text)
    message = str(info.value)
    assert shown(text) in message
    assert len(message) < 200, "the message should not carry an arbitrarily long input"


def test_parse_many_leading_zeros_beyond_int_str_digit_limit() -> None:
    text = "0" * 4301 + "1.5"
    assert fp.parse_many([text]).tolist() == [150_000_000]
    assert fp.parse(text) == 150_000_000


def test_parse_huge_integer_part_error_names_input() -> None:
    text = "1" * 4301
    with pytest.raises(ValueError) as info:
        fp.parse(text)
    assert shown(text) in str(info.value)


# ---------------------------------------------------------------------------
# format


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12345, "0.00012345"),
        (-150_000_000, "-1.5"),
        (0, "0"),
        (1, "0.00000001"),
        (-1, "-0.00000001"),
        (100_000_000, "1"),
        (-100_000_000, "-1"),
        (12_345_678_901 * 10**8, "12345678901"),
        (INT64_MAX, "92233720368.54775807"),
        (-INT64_MAX, "-92233720368.54775807"),
        (np.int64(250_000_000), "2.5"),
    ],
)
def test_format_examples(value: int, expected: str) -> None:
    assert fp.format(value) == expected


@settings(max_examples=500, deadline=None)
@given(st.integers(min_value=-INT64_MAX, max_value=INT64_MAX))
def test_format_round_trip(v: int) -> None:
    text = fp.format(v)
    assert fp.parse(text) == v
    # the shortest form: no trailing fractional zero, no trailing point
    assert not text.endswith(".")
    if "." in text:
        assert not text.endswith("0")
    assert fp.parse(text.encode()) == v


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-INT64_MAX, max_value=INT64_MAX), max_size=30))
def test_format_many_matches_format(values: list[int]) -> None:
    expected = [fp.format(v) for v in values]
    assert fp.format_many(values) == expected
    assert fp.format_many(np.array(values, dtype=np.int64)) == expected


def test_format_many_empty() -> None:
    assert fp.format_many([]) == []


# ---------------------------------------------------------------------------
# parse against a decimal.Decimal reference


@st.composite
def grammar_decimals(draw: Callable[..., Any]) -> str:
    """Strings of the accepted grammar (and its digit-less edge): sign, integer
    digits, optional point, 0..12 fraction digits, optional trailing zeros."""
    sign = draw(st.sampled_from(["", "", "+", "-"]))
    int_digits = draw(
        st.one_of(
            st.text(DIGITS, max_size=4),
            st.text(DIGITS, min_size=9, max_size=13),  # near and past the int64 limit
            st.builds(lambda z, d: "0" * z + d, st.integers(0, 20), st.text(DIGITS, max_size=12)),
        )
    )
    has_point = draw(st.booleans())
    frac = ""
    if has_point:
        frac = draw(st.text(DIGITS, max_size=12))
        frac += "0" * draw(st.sampled_from([0, 0, 1, 5, 10]))
    return sign + int_digits + ("." + frac if has_point else "")


@settings(max_examples=800, deadline=None)
@given(grammar_decimals())
def test_parse_matches_decimal_reference(s: str) -> None:
    has_digit = any(c.isdigit() for c in s)
    expected = reference(s) if has_digit else None
    if expected is None:
        with pytest.raises(ValueError) as info:
            fp.parse(s)
        assert shown(s) in str(info.value)
        with pytest.raises(ValueError, match=r"at index 0"):
            fp.parse_many([s])
    else:
        assert fp.parse(s) == expected
        assert fp.parse(s.encode()) == expected
        assert fp.parse_many([s]).tolist() == [expected]


@settings(max_examples=500, deadline=None)
@given(
    st.integers(min_value=-INT64_MAX - 10_000, max_value=INT64_MAX + 10_000)
    | st.integers(min_value=INT64_MAX - 10_000, max_value=INT64_MAX + 10_000)
    | st.integers(min_value=-INT64_MAX - 10_000, max_value=-INT64_MAX + 10_000),
    st.integers(0, 3),
    st.integers(0, 3),
)
def test_parse_near_int64_limit(v: int, leading_zeros: int, trailing_zeros: int) -> None:
    text = exact_decimal(v)
    if v < 0:
        text = "-" + "0" * leading_zeros + text[1:] + "0" * trailing_zeros
    else:
        text = "0" * leading_zeros + text + "0" * trailing_zeros
    if abs(v) <= INT64_MAX:
        assert fp.parse(text) == v
        assert fp.parse_many([text]).tolist() == [v]
    else:
        with pytest.raises(ValueError, match="overflow"):
            fp.parse(text)
        with pytest.raises(ValueError, match=r"at index 0"):
            fp.parse_many([text])


# ---------------------------------------------------------------------------
# parse_many against parse

VALID_TEXT = st.one_of(
    st.integers(min_value=-INT64_MAX, max_value=INT64_MAX).map(fp.format),
    st.integers(min_value=-(10**12), max_value=10**12).map(fp.format),
    st.integers(min_value=-INT64_MAX, max_value=INT64_MAX).map(exact_decimal),
    st.sampled_from([s for s, _ in VALID_EXAMPLES if isinstance(s, str)]),
)
INVALID_TEXT = st.sampled_from([s for s in INVALID_EXAMPLES if isinstance(s, str)])


def as_forms(texts: list[str]) -> list[tuple[str, Sequence[str | bytes] | np.ndarray]]:
    """The same inputs as a list of str, a list of bytes, and numpy U and S arrays."""
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    return [
        ("list[str]", list(texts)),
        ("list[bytes]", encoded),
        ("U array", np.array(texts, dtype=np.str_)),
        ("S array", np.array(encoded, dtype=np.bytes_)),
    ]


def first_bad_index(texts: list[str]) -> int | None:
    for i, t in enumerate(texts):
        try:
            fp.parse(t)
        except ValueError:
            return i
    return None


@settings(max_examples=300, deadline=None)
@given(st.lists(VALID_TEXT, min_size=1, max_size=25))
def test_parse_many_matches_parse_on_valid_lists(texts: list[str]) -> None:
    expected = [fp.parse(t) for t in texts]
    for form, values in as_forms(texts):
        got = fp.parse_many(values)
        assert got.dtype == np.int64, form
        assert got.shape == (len(texts),), form
        assert got.tolist() == expected, form


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(VALID_TEXT, VALID_TEXT, VALID_TEXT, INVALID_TEXT), min_size=1, max_size=20),
    st.data(),
)
def test_parse_many_reports_first_bad_index(texts: list[str], data: st.DataObject) -> None:
    if first_bad_index(texts) is None:
        # make sure at least one bad element is present
        at = data.draw(st.integers(0, len(texts)), label="insert bad at")
        texts.insert(at, data.draw(INVALID_TEXT, label="bad"))
    bad = first_bad_index(texts)
    assert bad is not None
    for form, values in as_forms(texts):
        with pytest.raises(ValueError) as info:
            fp.parse_many(values)
        message = str(info.value)
        assert f"at index {bad}" in message, (form, message)
        bad_text = texts[bad]
        named = (
            bad_text
            if form in ("list[str]", "U array")
            else bad_text.encode("utf-8", "surrogatepass")
        )
        assert shown(named) in message, (form, message)


def test_parse_many_example_error_index() -> None:
    with pytest.raises(ValueError, match=r"'1e5'.*at index 2"):
        fp.parse_many(["1", "2.5", "1e5", "nan"])
    with pytest.raises(ValueError, match=r"b'--1'.*at index 1"):
        fp.parse_many(np.array([b"1", b"--1", b"x"]))


@pytest.mark.parametrize(
    "empty",
    [[], (), np.array([], dtype="U8"), np.array([], dtype="S8"), np.array([], dtype=object)],
    ids=["list", "tuple", "U", "S", "object"],
)
def test_parse_many_empty(empty: Sequence[str]) -> None:
    got = fp.parse_many(empty)
    assert got.dtype == np.int64
    assert got.shape == (0,)


def test_parse_many_dtype_and_values() -> None:
    got = fp.parse_many(["0.00012345", "-1.5", "92233720368.54775807", "-92233720368.54775807"])
    assert got.dtype == np.int64
    assert got.tolist() == [12345, -150_000_000, INT64_MAX, -INT64_MAX]


def test_parse_many_non_string_elements_raise_value_error() -> None:
    with pytest.raises(ValueError, match="at index 0"):
        fp.parse_many([1, 2])  # type: ignore[list-item]


def test_parse_many_2d_arrays_are_flattened_in_c_order() -> None:
    grid = np.array([["1", "2"], ["3", "4.5"]])
    expected = [100_000_000, 200_000_000, 300_000_000, 450_000_000]
    assert fp.parse_many(grid).tolist() == expected
    assert fp.parse_many(np.asfortranarray(grid)).tolist() == expected
    assert fp.parse_many(np.char.encode(grid, "ascii")).tolist() == expected


@pytest.mark.parametrize("kind", ["U", "S"])
def test_parse_many_non_contiguous_arrays(kind: str) -> None:
    grid = np.array([["1.5", "2"], ["3", "4.25"]], dtype=f"{kind}4")
    assert fp.parse_many(grid[:, 1]).tolist() == [200_000_000, 425_000_000]
    flat = np.array(["1", "x", "2.5", "y", "-3"], dtype=f"{kind}3")
    assert fp.parse_many(flat[::2]).tolist() == [100_000_000, 250_000_000, -300_000_000]


def test_parse_many_big_endian_unicode_array() -> None:
    arr = np.array(["1", "2.5"], dtype=">U3")
    assert fp.parse_many(arr).tolist() == [100_000_000, 250_000_000]


# ---------------------------------------------------------------------------
# fuzz: arbitrary text
#
# "\x00" is excluded: numpy fixed-width string arrays strip trailing NULs, so
# "1\x00" becomes "1" inside parse_many's array while parse sees the NUL.

FUZZ_TEXT = st.one_of(
    st.text(alphabet="0123456789.-+eE ,_xa", max_size=16),
    st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=16),
    st.text(alphabet=st.characters(exclude_characters="\x00", codec="ascii"), max_size=16),
    st.text(alphabet="0123456789.-+\u0661\u0662\uff13", max_size=16),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FUZZ_TEXT)
def test_fuzz_parse_only_value_error_and_parse_many_agrees(s: str) -> None:
    try:
        expected: int | None = fp.parse(s)
    except ValueError as exc:
        expected = None
        assert shown(s) in str(exc)
    if expected is not None:
        assert -INT64_MAX <= expected <= INT64_MAX
        assert re.fullmatch(r"[+-]?[0-9]*(\.[0-9]*)?", s)
    for form, values in as_forms([s]):
        if expected is None:
            with pytest.raises(ValueError, match="at index 0"):
                fp.parse_many(values)
        else:
            assert fp.parse_many(values).tolist() == [expected], form


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=16))
def test_fuzz_parse_bytes(b: bytes) -> None:
    assume(not b.endswith(b"\x00"))
    try:
        expected: int | None = fp.parse(b)
    except ValueError as exc:
        expected = None
        assert shown(b) in str(exc)
    if expected is None:
        with pytest.raises(ValueError, match="at index 0"):
            fp.parse_many(np.array([b], dtype=np.bytes_))
    else:
        assert fp.parse(b.decode("ascii")) == expected
        assert fp.parse_many(np.array([b], dtype=np.bytes_)).tolist() == [expected]


def test_to_float() -> None:
    assert fp.to_float(150_000_000) == 1.5
    assert fp.to_float(-12345) == pytest.approx(-0.00012345)
