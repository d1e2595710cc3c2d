"""Exact decimal <-> int64 fixed point at scale 10**8.

Every price and quantity in the pipeline is an ``int64`` holding
``value * 10**8``. Venues send decimal strings (``"0.00012345"``); converting
them through ``float`` would round, so this module converts digit by digit.

Accepted grammar (the plain decimal forms venues send)::

    [+|-] digits [ "." digits* ]   |   [+|-] "." digits

At most 8 significant fractional digits: zeros beyond the 8th place are
accepted because they change nothing (``"1.000000000"``); any non-zero digit
there is an error, never a silent rounding. The magnitude must fit in int64
(up to 92,233,720,368.54775807). Empty strings, exponent forms (``"1e-5"``),
whitespace, repeated or misplaced signs, ``nan``/``inf`` and anything else
raise :class:`ValueError` naming the offending input.

:func:`parse` converts one value; :func:`parse_many` converts a whole batch in
a handful of numpy calls (the hot path for depth levels: every level of a
message, or of several messages, in one call). :func:`format` and
:func:`format_many` go back to the shortest exact decimal string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

SCALE: Final = 100_000_000
DECIMALS: Final = 8
INT64_MAX: Final = (1 << 63) - 1

Px = int
"""A price in fixed point (value * 10**8)."""
Qty = int
"""A quantity in fixed point (value * 10**8)."""

_GRAMMAR = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?")
_POW10 = np.array([10**e for e in range(19)], dtype=np.uint64)
_ASCII_0 = 48
_ASCII_DOT = 46
_ASCII_MINUS = 45
_ASCII_PLUS = 43


def _explain(text: str) -> str:
    """Why ``text`` is not an acceptable decimal (for the error message)."""
    if text == "":
        return "empty"
    if text != text.strip():
        return "surrounding whitespace"
    lowered = text.lower()
    if lowered.lstrip("+-") in ("nan", "inf", "infinity"):
        return "not a finite decimal"
    if "e" in lowered and any(c.isdigit() for c in lowered):
        return "exponent form is not allowed"
    if text.count("-") + text.count("+") > 1 or text[1:].find("-") >= 0 or text[1:].find("+") >= 0:
        return "misplaced or repeated sign"
    if text.count(".") > 1:
        return "more than one decimal point"
    if not any(c.isdigit() for c in text):
        return "no digits"
    return "not a plain decimal number"


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse(value: str | bytes) -> int:
    """Convert one decimal string (or ASCII bytes) to int64 fixed point, exactly.

    >>> parse("0.00012345")
    12345
    """
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            text = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"invalid decimal {_show(bytes(value))}: not ASCII") from None
    elif isinstance(value, str):
        text = value
    else:
        raise TypeError(f"expected str or bytes, got {type(value).__name__}")
    match = _GRAMMAR.fullmatch(text)
    if match is None or not (match.group(2) or match.group(3)) or not text.isascii():
        raise ValueError(f"invalid decimal {_show(value)}: {_explain(text)}")
    sign, int_digits, frac_digits = match.group(1), match.group(2).lstrip("0"), match.group(3) or ""
    if len(int_digits) > 11:  # int64 at scale 1e8 has at most 11 integer digits
        raise ValueError(f"invalid decimal {_show(value)}: overflows int64 at scale 1e8")
    if len(frac_digits) > DECIMALS:
        if frac_digits[DECIMALS:].strip("0"):
            raise ValueError(
                f"invalid decimal {_show(value)}: more than {DECIMALS} decimals would be rounded"
            )
        frac_digits = frac_digits[:DECIMALS]
    magnitude = int(int_digits or "0") * SCALE + int(frac_digits.ljust(DECIMALS, "0") or "0")
    if magnitude > INT64_MAX:
        raise ValueError(f"invalid decimal {_show(value)}: overflows int64 at scale 1e8")
    return -magnitude if sign == "-" else magnitude


def format(value: int) -> str:
    """The shortest exact decimal string for a fixed-point value.

    >>> format(12345)
    '0.00012345'
    >>> format(-150000000)
    '-1.5'
    """
    value = int(value)
    sign = "-" if value < 0 else ""
    whole, frac = divmod(abs(value), SCALE)
    if frac == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac:08d}".rstrip("0")


def to_float(value: int) -> float:
    """Nearest float, for display and statistics only (never for storage)."""
    return int(value) / SCALE


def _code_matrix(
    values: Sequence[str | bytes] | npt.NDArray[np.generic],
) -> tuple[npt.NDArray[np.generic], npt.NDArray[np.int64]]:
    """The input as a fixed-width array and an (n, width) int matrix of its character codes."""
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.dtype.kind in "SU":
        # The character view needs contiguous items in native byte order.
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "S":
        codes = arr.view(np.uint8)
    elif arr.dtype.kind == "U":
        codes = arr.view(np.uint32)
    else:
        # Mixed or non-string input: fall back to one-by-one so the error names the value.
        return arr, np.empty((0, 0), dtype=np.int64)
    width = arr.dtype.itemsize // codes.itemsize
    return arr, codes.reshape(len(arr), width).astype(np.int64)


def parse_many(values: Sequence[str | bytes] | npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    """Convert many decimal strings to an int64 array in one vectorised pass.

    Same grammar and errors as :func:`parse`; the error names the first bad
    input and its index. Accepts a list of ``str`` or ``bytes``, or a numpy
    ``S``/``U`` array (which avoids a conversion when the caller has one).
    """
    if isinstance(values, list):
        if not values:
            return np.zeros(0, dtype=np.int64)
        if len(values) < SMALL_LIST:
            return np.array([_parse_small(v, i) for i, v in enumerate(values)], dtype=np.int64)
        fast = _parse_plain_list(values)
        if fast is not None:
            return fast
        # Not all plain decimals: one by one, so errors name the value (and
        # no NUL can hide in numpy's fixed-width strings, which drop trailing NULs).
        return np.array([_parse_indexed(v, i) for i, v in enumerate(values)], dtype=np.int64)
    arr, mat = _code_matrix(values)
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if mat.size == 0:
        return np.array([_parse_indexed(v, i) for i, v in enumerate(arr.tolist())], dtype=np.int64)
    width = mat.shape[1]
    cols = np.arange(width)
    # numpy pads fixed-width strings with NULs at the end: length = last non-NUL + 1.
    nonzero = mat != 0
    length = width - np.argmax(nonzero[:, ::-1], axis=1)
    length[~nonzero.any(axis=1)] = 0
    inside = cols < length[:, None]
    is_digit = (mat >= _ASCII_0) & (mat <= _ASCII_0 + 9)
    is_dot = mat == _ASCII_DOT
    is_sign = ((mat == _ASCII_MINUS) | (mat == _ASCII_PLUS)) & (cols == 0)
    has_dot = is_dot.any(axis=1)
    dot_at = np.where(has_dot, np.argmax(is_dot, axis=1), length)
    # Exponent of each digit at scale 1e8: d + 7 - i left of the point, d + 8 - i right of it.
    exponent = dot_at[:, None] + 7 - cols + (cols > dot_at[:, None])
    digit = np.where(is_digit & inside, mat - _ASCII_0, 0)
    in_range = (exponent >= 0) & (exponent <= 18)
    bad = (
        ((inside & ~(is_digit | is_dot | is_sign)).any(axis=1))
        | (is_dot.sum(axis=1) > 1)
        | ((is_digit & inside).sum(axis=1) == 0)
        | ((digit != 0) & ~in_range).any(axis=1)
    )
    magnitude = (digit.astype(np.uint64) * _POW10[np.clip(exponent, 0, 18)] * in_range).sum(
        axis=1, dtype=np.uint64
    )
    bad |= magnitude > np.uint64(INT64_MAX)
    if bad.any():
        first = int(np.argmax(bad))
        _parse_indexed(arr[first].item(), first)
        raise ValueError(f"invalid decimal {_show(arr[first].item())} at index {first}")
    result: npt.NDArray[np.int64] = magnitude.astype(np.int64)
    negative = mat[:, 0] == _ASCII_MINUS
    if negative.any():
        result[negative] = -result[negative]
    return result


SMALL_LIST: Final = 128
"""Below this many values a plain Python loop beats every numpy route (call overhead)."""
_SCALE_BY_DECIMALS = [10 ** (8 - d) for d in range(9)]


def _parse_small(value: str | bytes, index: int) -> int:
    """One value: the plain-decimal shortcut, else the full parser (exact errors)."""
    if isinstance(value, str):
        whole, _, frac = value.partition(".")
        if 0 < len(whole) <= 11 and len(frac) <= 8:
            digits = whole + frac
            if digits.isascii() and digits.isdigit():
                result = int(whole) * SCALE + (
                    int(frac) * _SCALE_BY_DECIMALS[len(frac)] if frac else 0
                )
                if result <= INT64_MAX:
                    return result
    return _parse_indexed(value, index)


_SPACE, _DOT = 32, 46
_POW10_I64 = np.array([10**e for e in range(9)], dtype=np.int64)


def _parse_plain_list(values: list[str | bytes]) -> npt.NDArray[np.int64] | None:
    """The fast path for the common case, or None if any value is not plain.

    Plain: ASCII digits with at most one dot, at most 8 decimals, at most 18
    digits, no sign. The values are joined with spaces and parsed by numpy's
    C integer reader with the dots removed; each result is then scaled by
    10**(8 - its decimals). Measured on the reference machine: ~6x faster
    than a per-value loop at 4000 values, ~1.6x at 80 (one Binance depth
    message), ~5x faster than the character-matrix path below.
    """
    try:
        text = " ".join(values) if isinstance(values[0], str) else b" ".join(values).decode("ascii")  # type: ignore[arg-type]
    except (TypeError, UnicodeDecodeError):
        return None
    raw = np.frombuffer(text.encode("ascii", errors="replace"), dtype=np.uint8)
    if not text.isascii():
        return None
    digit = (raw >= _ASCII_0) & (raw <= _ASCII_0 + 9)
    if not np.all(digit | (raw == _DOT) | (raw == _SPACE)):
        return None
    ends = np.append(np.flatnonzero(raw == _SPACE), len(raw))
    if len(ends) != len(values):
        return None
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    dots = np.flatnonzero(raw == _DOT)
    owner = np.searchsorted(ends, dots)  # the token each dot belongs to
    decimals = np.zeros(len(ends), dtype=np.intp)
    decimals[owner] = ends[owner] - dots - 1
    lengths = ends - starts - (np.bincount(owner, minlength=len(ends)) if len(dots) else 0)
    if (
        (len(dots) and (np.any(np.diff(owner) == 0) or np.any(dots == starts[owner])))
        or np.any(decimals > 8)
        or np.any(lengths < 1)
        or np.any(lengths > 18)
    ):
        return None  # two dots in a value, ".5", too many decimals or digits, or empty
    ints = np.fromstring(text.replace(".", ""), dtype=np.int64, sep=" ")
    if len(ints) != len(values):
        return None
    scaled = ints * _POW10_I64[8 - decimals]
    if np.any(ints > INT64_MAX // _POW10_I64[8 - decimals]):
        return None  # overflows at scale 1e8: the slow path says so
    return scaled


def _parse_indexed(value: object, index: int) -> int:
    try:
        if not isinstance(value, (str, bytes)):
            raise ValueError(f"invalid decimal {_show(value)}: not a string")
        return parse(value)
    except ValueError as exc:
        raise ValueError(f"{exc} (at index {index})") from None


def format_many(values: npt.ArrayLike) -> list[str]:
    """Exact decimal strings for an array of fixed-point values."""
    return [format(v) for v in np.asarray(values, dtype=np.int64).tolist()]
