"""The instrument model: one type for Kite and Binance, held column-wise.

:class:`Instrument` is one row, for people and the CLI. :class:`InstrumentTable`
is the whole universe as numpy columns (the store keeps ~91K rows; a list of
91K objects would make recovery and indexing slow). Strings are categorical:
a ``uint32`` code per row into a list of distinct values, so comparisons and
grouping run on integers.

Prices and sizes are fixed point at scale 1e8 (:mod:`pipeline.fixedpoint`);
dates are days since 1970-01-01 (``NO_DATE`` when absent).

Identity: a Kite instrument is ``(venue, instrument_token, tradingsymbol)``,
a Binance one ``(venue, 0, symbol)``. The tradingsymbol is part of a Kite
identity because the exchange recycles tokens of expired contracts: a
recycled token names a different contract, so it gets a new dense id and
records written under the old id stay unambiguous.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from pipeline import fixedpoint
from pipeline.errors import DataError, PipelineError

NO_DATE: Final = -(2**31)
"""``expiry`` of an instrument that does not expire."""
EPOCH: Final = dt.date(1970, 1, 1)


class Venue(IntEnum):
    """Where an instrument's data comes from (one registry across venues)."""

    KITE = 1
    BINANCE_SPOT = 2
    BINANCE_USDM = 3


BINANCE_EXCHANGE: Final = {Venue.BINANCE_SPOT: "BINANCE-SPOT", Venue.BINANCE_USDM: "BINANCE-USDM"}
"""The ``exchange`` of Binance instruments (the feed names, upper case): ``BINANCE-USDM:BTCUSDT``."""


class InstrumentError(PipelineError):
    """Base of the instrument service's errors."""


class InstrumentNotFoundError(InstrumentError, LookupError):
    """No listed instrument matches the query (the message says what was asked)."""


class InstrumentDataError(InstrumentError, DataError):
    """An instruments file or exchangeInfo document cannot be imported (names the line or symbol)."""


def date_to_days(day: dt.date | None) -> int:
    return NO_DATE if day is None else (day - EPOCH).days


def days_to_date(days: int) -> dt.date | None:
    return None if days == NO_DATE else EPOCH + dt.timedelta(days=int(days))


@dataclass(frozen=True)
class Instrument:
    """One instrument, Kite's columns plus Binance's extras (empty/0 where n/a).

    ``last_price``, ``strike``, ``tick_size``, ``step_size`` are fixed point
    (1e8). ``underlying`` is what the derivative is on (Kite's ``name`` for
    F&O; derived from the trading symbol when the dump leaves ``name`` empty).
    """

    inst: int
    venue: Venue
    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: int
    expiry: dt.date | None
    strike: int
    tick_size: int
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str
    underlying: str = ""
    base_asset: str = ""
    quote_asset: str = ""
    step_size: int = 0
    contract_type: str = ""
    delivery_ms: int = 0

    @property
    def exchange_symbol(self) -> str:
        """``NSE:INFY``, ``BINANCE-USDM:BTCUSDT``."""
        return f"{self.exchange}:{self.tradingsymbol}"

    def as_json(self) -> dict[str, Any]:
        """Kite CSV column names; prices as exact decimal strings; Binance extras when set."""
        out: dict[str, Any] = {
            "instrument_token": self.instrument_token,
            "exchange_token": self.exchange_token,
            "tradingsymbol": self.tradingsymbol,
            "name": self.name,
            "last_price": fixedpoint.format(self.last_price),
            "expiry": "" if self.expiry is None else self.expiry.isoformat(),
            "strike": fixedpoint.format(self.strike),
            "tick_size": fixedpoint.format(self.tick_size),
            "lot_size": self.lot_size,
            "instrument_type": self.instrument_type,
            "segment": self.segment,
            "exchange": self.exchange,
            "inst": self.inst,
            "venue": self.venue.name.lower().replace("_", "-"),
        }
        if self.underlying:
            out["underlying"] = self.underlying
        if self.venue != Venue.KITE:
            out["base_asset"] = self.base_asset
            out["quote_asset"] = self.quote_asset
            out["step_size"] = fixedpoint.format(self.step_size)
            out["contract_type"] = self.contract_type
            out["delivery_date"] = (
                ""
                if not self.delivery_ms
                else dt.datetime.fromtimestamp(self.delivery_ms / 1000, dt.UTC).isoformat()
            )
        return out


# ---------------------------------------------------------------------------
# the columnar table

NUMERIC_COLUMNS: Final[Mapping[str, npt.DTypeLike]] = {
    "inst": np.uint32,
    "venue": np.uint8,
    "token": np.int64,
    "exchange_token": np.int64,
    "last_price": np.int64,
    "expiry": np.int32,
    "strike": np.int64,
    "tick_size": np.int64,
    "lot_size": np.int64,
    "step_size": np.int64,
    "delivery_ms": np.int64,
}
STRING_COLUMNS: Final = (
    "tradingsymbol",
    "name",
    "instrument_type",
    "segment",
    "exchange",
    "underlying",
    "base_asset",
    "quote_asset",
    "contract_type",
)


@dataclass(frozen=True)
class StringColumn:
    """A categorical string column: ``values[codes[i]]`` is row i's string."""

    codes: npt.NDArray[np.uint32]
    values: list[str]
    _lookup: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> StringColumn:
        lookup: dict[str, int] = {}
        codes = np.fromiter((lookup.setdefault(s, len(lookup)) for s in strings), dtype=np.uint32)
        return cls(codes, list(lookup), lookup)

    def code(self, value: str) -> int:
        """The code of ``value`` or -1 (no row has it)."""
        if not self._lookup and self.values:
            self._lookup.update(zip(self.values, range(len(self.values)), strict=True))
        return self._lookup.get(value, -1)

    def at(self, row: int) -> str:
        return self.values[int(self.codes[row])]

    def strings(self) -> list[str]:
        """Every row's string (a list of ``len(codes)``)."""
        values = self.values
        return [values[c] for c in self.codes.tolist()]

    def take(self, rows: npt.NDArray[np.intp]) -> StringColumn:
        """The rows given, re-coded compactly (unused values dropped)."""
        used, codes = np.unique(self.codes[rows], return_inverse=True)
        return StringColumn(codes.astype(np.uint32), [self.values[u] for u in used.tolist()])


@dataclass(frozen=True)
class InstrumentTable:
    """Instruments as columns (see :data:`NUMERIC_COLUMNS`, :data:`STRING_COLUMNS`)."""

    numeric: dict[str, npt.NDArray[Any]]
    strings: dict[str, StringColumn]

    def __post_init__(self) -> None:
        n = len(self)
        for name, arr in self.numeric.items():
            if len(arr) != n:
                raise ValueError(f"column {name} has {len(arr)} rows, expected {n}")
        for name, col in self.strings.items():
            if len(col.codes) != n:
                raise ValueError(f"column {name} has {len(col.codes)} rows, expected {n}")

    def __len__(self) -> int:
        return len(self.numeric["inst"])

    def col(self, name: str) -> npt.NDArray[Any]:
        return self.numeric[name]

    def row(self, i: int) -> Instrument:
        """Row ``i`` as an :class:`Instrument`."""
        num = self.numeric
        s = self.strings
        return Instrument(
            inst=int(num["inst"][i]),
            venue=Venue(int(num["venue"][i])),
            instrument_token=int(num["token"][i]),
            exchange_token=int(num["exchange_token"][i]),
            tradingsymbol=s["tradingsymbol"].at(i),
            name=s["name"].at(i),
            last_price=int(num["last_price"][i]),
            expiry=days_to_date(int(num["expiry"][i])),
            strike=int(num["strike"][i]),
            tick_size=int(num["tick_size"][i]),
            lot_size=int(num["lot_size"][i]),
            instrument_type=s["instrument_type"].at(i),
            segment=s["segment"].at(i),
            exchange=s["exchange"].at(i),
            underlying=s["underlying"].at(i),
            base_asset=s["base_asset"].at(i),
            quote_asset=s["quote_asset"].at(i),
            step_size=int(num["step_size"][i]),
            contract_type=s["contract_type"].at(i),
            delivery_ms=int(num["delivery_ms"][i]),
        )

    def rows(self) -> list[Instrument]:
        return [self.row(i) for i in range(len(self))]

    def take(self, rows: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> InstrumentTable:
        """A new table of the rows selected (indices or a boolean mask)."""
        idx: npt.NDArray[np.intp] = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows  # type: ignore[assignment]
        return InstrumentTable(
            {k: v[idx] for k, v in self.numeric.items()},
            {k: v.take(idx) for k, v in self.strings.items()},
        )

    def with_inst(self, inst: npt.NDArray[np.uint32]) -> InstrumentTable:
        return InstrumentTable({**self.numeric, "inst": inst}, self.strings)

    def identity_keys(self) -> list[tuple[int, int, str]]:
        """``(venue, token, tradingsymbol)`` per row: what a dense id is bound to."""
        return list(
            zip(
                self.numeric["venue"].tolist(),
                self.numeric["token"].tolist(),
                self.strings["tradingsymbol"].strings(),
                strict=True,
            )
        )

    @classmethod
    def empty(cls) -> InstrumentTable:
        return cls.from_columns(0, {}, {})

    @classmethod
    def from_columns(
        cls,
        n: int,
        numeric: Mapping[str, Sequence[int] | npt.NDArray[Any]],
        strings: Mapping[str, Sequence[str]],
    ) -> InstrumentTable:
        """Build from per-column lists; missing columns are zeros / empty strings."""
        num: dict[str, npt.NDArray[Any]] = {}
        for name, dtype in NUMERIC_COLUMNS.items():
            if name in numeric:
                num[name] = np.asarray(numeric[name], dtype=dtype)
            elif name == "expiry":
                num[name] = np.full(n, NO_DATE, dtype=dtype)
            else:
                num[name] = np.zeros(n, dtype=dtype)
        strs: dict[str, StringColumn] = {}
        for name in STRING_COLUMNS:
            if name in strings:
                strs[name] = StringColumn.from_strings(strings[name])
            else:
                strs[name] = StringColumn(np.zeros(n, dtype=np.uint32), [""])
        unknown = (set(numeric) - set(NUMERIC_COLUMNS)) | (set(strings) - set(STRING_COLUMNS))
        if unknown:
            raise ValueError(f"unknown instrument columns: {sorted(unknown)}")
        return cls(num, strs)

    @classmethod
    def concat(cls, tables: Sequence[InstrumentTable]) -> InstrumentTable:
        """Rows of every table, in order."""
        tables = [t for t in tables if len(t)] or list(tables[:1]) or [cls.empty()]
        if len(tables) == 1:
            return tables[0]
        numeric = {k: np.concatenate([t.numeric[k] for t in tables]) for k in NUMERIC_COLUMNS}
        strings = {
            k: StringColumn.from_strings(s for t in tables for s in t.strings[k].strings())
            for k in STRING_COLUMNS
        }
        return cls(numeric, strings)
