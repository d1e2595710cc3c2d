"""Kite instruments CSV (``GET /instruments``) -> :class:`InstrumentTable`. Pure.

Accepts the dump as served (plain or gzip). Dates are ISO (``2024-01-25``)
or the ``DD-MM-YYYY`` form a spreadsheet writes back; anything else is an
:class:`InstrumentDataError` naming the line (the header is line 1).
Decimals convert exactly to fixed point; a value with more than 8 decimals
or not a plain decimal is an error naming the line and column.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import re
from typing import Final

import numpy as np

from connector.instruments.model import (
    NO_DATE,
    InstrumentDataError,
    InstrumentTable,
    Venue,
    date_to_days,
)
from pipeline import fixedpoint

COLUMNS: Final = (
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
)
DERIVATIVE_TYPES: Final = frozenset({"FUT", "CE", "PE"})

_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_DMY = re.compile(r"(\d{2})-(\d{2})-(\d{4})")
# NIFTY24JANFUT, NIFTY24JAN21500CE, NIFTY2411821500CE (weekly: YY, month 1-9/O/N/D, DD).
_DERIVATIVE_SYMBOL = re.compile(
    r"(?P<und>.+?)\d{2}(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|[1-9OND]\d{2})"
    r"(?:FUT|\d+(?:\.\d+)?(?:CE|PE))"
)


def parse_date(text: str) -> int:
    """A CSV expiry cell -> days since the epoch (``NO_DATE`` if empty); ValueError if malformed."""
    if not text:
        return NO_DATE
    if m := _ISO.fullmatch(text):
        year, month, day = int(m[1]), int(m[2]), int(m[3])
    elif m := _DMY.fullmatch(text):
        day, month, year = int(m[1]), int(m[2]), int(m[3])
    else:
        raise ValueError(f"expiry {text!r} is neither YYYY-MM-DD nor DD-MM-YYYY")
    try:
        return date_to_days(dt.date(year, month, day))
    except ValueError as exc:
        raise ValueError(f"expiry {text!r}: {exc}") from None


def underlying_of(tradingsymbol: str, name: str, instrument_type: str) -> str:
    """What a derivative is on: Kite's ``name``, else parsed from the symbol; "" for others."""
    if instrument_type not in DERIVATIVE_TYPES:
        return ""
    if name:
        return name
    m = _DERIVATIVE_SYMBOL.fullmatch(tradingsymbol)
    return m["und"] if m else tradingsymbol


def _decode(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InstrumentDataError(f"instruments CSV: bad gzip data: {exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InstrumentDataError(
            f"instruments CSV line {line}: not UTF-8 (byte {exc.start})"
        ) from None


def parse_kite_csv(data: bytes) -> InstrumentTable:
    """Parse a Kite instruments dump (plain or gzip bytes) into a table (``inst`` left 0)."""
    text = _decode(data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise InstrumentDataError("instruments CSV: empty file (no header line)") from None
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InstrumentDataError(
            f"instruments CSV line 1: missing column(s) {', '.join(missing)}; header is {header}"
        )
    pos = [header.index(c) for c in COLUMNS]
    width = len(header)
    cols: list[list[str]] = [[] for _ in COLUMNS]
    lines: list[int] = []
    for row in reader:
        if not row:
            continue  # a blank line (e.g. the trailing newline of a spreadsheet export)
        if len(row) != width:
            raise InstrumentDataError(
                f"instruments CSV line {reader.line_num}: {len(row)} cells, expected {width}"
            )
        for out, p in zip(cols, pos, strict=True):
            out.append(row[p])
        lines.append(reader.line_num)
    (
        tokens,
        exch_tokens,
        symbols,
        names,
        last_prices,
        expiries,
        strikes,
        ticks,
        lots,
        types,
        segments,
        exchanges,
    ) = cols
    n = len(lines)

    def fail(index: int, column: str, why: str) -> InstrumentDataError:
        return InstrumentDataError(f"instruments CSV line {lines[index]}, column {column}: {why}")

    def integers(values: list[str], column: str) -> list[int]:
        out = []
        for i, v in enumerate(values):
            try:
                out.append(int(v))
            except ValueError:
                # Spreadsheets write integers as "25.0": accept an exact float form.
                try:
                    fx = fixedpoint.parse(v)
                except ValueError:
                    raise fail(i, column, f"{v!r} is not an integer") from None
                if fx % fixedpoint.SCALE:
                    raise fail(i, column, f"{v!r} is not an integer") from None
                out.append(fx // fixedpoint.SCALE)
        return out

    def decimals(values: list[str], column: str) -> list[int]:
        try:
            return fixedpoint.parse_many(values).tolist() if values else []
        except ValueError:
            pass
        out = []
        for i, v in enumerate(values):
            try:
                out.append(fixedpoint.parse(v))
            except ValueError as exc:
                raise fail(i, column, str(exc)) from None
        return out

    days_of: dict[str, int] = {}
    expiry_days = []
    for i, v in enumerate(expiries):
        d = days_of.get(v)
        if d is None:
            try:
                d = days_of[v] = parse_date(v)
            except ValueError as exc:
                raise fail(i, "expiry", str(exc)) from None
        expiry_days.append(d)
    token_list = integers(tokens, "instrument_token")
    first_line: dict[int, int] = {}
    for i, t in enumerate(token_list):
        if not 0 < t < 2**32:
            raise fail(i, "instrument_token", f"{t} is outside 1..2^32-1")
        seen = first_line.setdefault(t, lines[i])
        if seen != lines[i]:
            raise fail(i, "instrument_token", f"{t} is already on line {seen}")
    underlyings = [
        underlying_of(s, nm, ty) for s, nm, ty in zip(symbols, names, types, strict=True)
    ]
    return InstrumentTable.from_columns(
        n,
        {
            "venue": np.full(n, Venue.KITE, dtype=np.uint8),
            "token": token_list,
            "exchange_token": integers(exch_tokens, "exchange_token"),
            "last_price": decimals(last_prices, "last_price"),
            "expiry": expiry_days,
            "strike": decimals(strikes, "strike"),
            "tick_size": decimals(ticks, "tick_size"),
            "lot_size": integers(lots, "lot_size"),
        },
        {
            "tradingsymbol": symbols,
            "name": names,
            "instrument_type": types,
            "segment": segments,
            "exchange": exchanges,
            "underlying": underlyings,
        },
    )
