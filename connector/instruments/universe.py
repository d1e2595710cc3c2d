"""Ready indexes over the listed universe, and the queries on them.

Built once per snapshot, vectorised (numpy sorts and group boundaries; the
only Python-level loops are two ``dict(zip(...))`` builds for O(1) token and
exchange-symbol lookups):

* token -> row, inst id -> row;
* exchange symbol (``NSE:INFY``) -> row;
* name -> rows (Kite's ``name``: a company for equities, the underlying for F&O);
* options by (underlying, exchange, expiry, strike) -> (call, put);
* futures by (underlying, exchange) sorted by expiry;
* trading-symbol prefix search (built on first use: the one index only an
  interactive search needs, and the slowest to build).

``as_of`` defaults to today in Asia/Kolkata (the trading day of the Indian
venues); every query takes it as an argument so nothing here reads a clock
unless asked to.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from connector.instruments.model import (
    Instrument,
    InstrumentNotFoundError,
    InstrumentTable,
    date_to_days,
    days_to_date,
)
from connector.instruments.snapshot import Snapshot
from pipeline import fixedpoint

IST: Final = ZoneInfo("Asia/Kolkata")

INDEX_SPOTS: Final = {
    "NIFTY": ("NSE", "NIFTY 50"),
    "BANKNIFTY": ("NSE", "NIFTY BANK"),
    "FINNIFTY": ("NSE", "NIFTY FIN SERVICE"),
    "MIDCPNIFTY": ("NSE", "NIFTY MID SELECT"),
    "NIFTYNXT50": ("NSE", "NIFTY NEXT 50"),
    "SENSEX": ("BSE", "SENSEX"),
    "BANKEX": ("BSE", "BANKEX"),
    "SENSEX50": ("BSE", "SENSEX50"),
}
"""Index derivatives' underlyings -> the spot index row (exchange, tradingsymbol)."""
DERIVATIVE_EXCHANGES: Final = ("NFO", "BFO", "MCX", "CDS", "BCD", "BINANCE-USDM")
"""Preference when an underlying has derivatives on several exchanges."""


def today_ist(now: dt.datetime | None = None) -> dt.date:
    """The date in Asia/Kolkata now (or at ``now``)."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(IST).date()


@dataclass(frozen=True)
class ChainRow:
    strike: int
    call: Instrument | None
    put: Instrument | None


@dataclass(frozen=True)
class OptionChain:
    """Strikes around the ATM strike of one expiry, each with its call and put."""

    underlying: str
    exchange: str
    expiry: dt.date
    atm_strike: int
    strike_interval: int
    rows: tuple[ChainRow, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "underlying": self.underlying,
            "exchange": self.exchange,
            "expiry": self.expiry.isoformat(),
            "atm_strike": fixedpoint.format(self.atm_strike),
            "strike_interval": fixedpoint.format(self.strike_interval),
            "strikes": [
                {
                    "strike": fixedpoint.format(r.strike),
                    "call": None if r.call is None else r.call.as_json(),
                    "put": None if r.put is None else r.put.as_json(),
                }
                for r in self.rows
            ],
        }


@dataclass(frozen=True)
class _Sorted:
    """Rows of one instrument kind sorted by (underlying, exchange, expiry, strike, type)."""

    rows: npt.NDArray[np.int64]
    und: npt.NDArray[np.uint32]
    exch: npt.NDArray[np.uint32]
    expiry: npt.NDArray[np.int32]
    strike: npt.NDArray[np.int64]
    is_put: npt.NDArray[np.bool_]

    @classmethod
    def build(cls, table: InstrumentTable, mask: npt.NDArray[np.bool_]) -> _Sorted:
        rows = np.flatnonzero(mask)
        und = table.strings["underlying"].codes[rows]
        exch = table.strings["exchange"].codes[rows]
        expiry = table.numeric["expiry"][rows]
        strike = table.numeric["strike"][rows]
        types = table.strings["instrument_type"]
        pe = types.code("PE")
        is_put = types.codes[rows] == pe if pe >= 0 else np.zeros(len(rows), dtype=bool)
        order = np.lexsort((is_put, strike, expiry, exch, und))
        return cls(
            rows[order].astype(np.int64),
            und[order],
            exch[order],
            expiry[order],
            strike[order],
            is_put[order],
        )

    def span(self, und: int, exch: int) -> tuple[int, int]:
        lo = int(np.searchsorted(self.und, und, "left"))
        hi = int(np.searchsorted(self.und, und, "right"))
        lo2 = lo + int(np.searchsorted(self.exch[lo:hi], exch, "left"))
        hi2 = lo + int(np.searchsorted(self.exch[lo:hi], exch, "right"))
        return lo2, hi2

    def exchanges_of(self, und: int) -> list[int]:
        lo = int(np.searchsorted(self.und, und, "left"))
        hi = int(np.searchsorted(self.und, und, "right"))
        present: list[int] = np.unique(self.exch[lo:hi]).tolist()
        return present


class Universe:
    """The listed instruments with every index ready (see the module docstring)."""

    def __init__(self, table: InstrumentTable, snapshot: Snapshot | None = None) -> None:
        self.table = table
        self.snapshot = snapshot
        n = len(table)
        num = table.numeric
        token_list = num["token"].tolist()
        self._token_row: dict[int, int] = dict(zip(token_list, range(n), strict=True))
        self._token_row.pop(0, None)  # Binance rows have no token
        inst = num["inst"]
        # The feed's hot path (token -> dense id) is one dict probe, no numpy scalar.
        self._token_inst: dict[int, int] = dict(zip(token_list, inst.tolist(), strict=True))
        self._token_inst.pop(0, None)
        # Batch path (a frame's worth of tokens at once): sorted tokens + searchsorted.
        order = np.argsort(num["token"], kind="stable")
        self._sorted_tokens = num["token"][order]
        self._sorted_inst = inst[order]
        self._inst_row = np.full(int(inst.max()) + 1 if n else 1, -1, dtype=np.int64)
        self._inst_row[inst] = np.arange(n)
        # Exchange symbol: one int key per row, symbol code * 2^16 + exchange code.
        self._sym = table.strings["tradingsymbol"]
        self._exch = table.strings["exchange"]
        self._sym.code("")  # builds the symbol -> code dict now, not on the first lookup
        keys = self._sym.codes.astype(np.int64) << 16 | self._exch.codes.astype(np.int64)
        self._exch_sym_row: dict[int, int] = dict(zip(keys.tolist(), range(n), strict=True))
        # name -> rows: rows grouped by name code.
        name_codes = table.strings["name"].codes
        self._by_name = np.argsort(name_codes, kind="stable")
        self._name_starts = np.searchsorted(
            name_codes[self._by_name], np.arange(len(table.strings["name"].values) + 1)
        )
        types = table.strings["instrument_type"]
        type_codes = types.codes
        ce, pe, fut = types.code("CE"), types.code("PE"), types.code("FUT")
        self._options = _Sorted.build(table, (type_codes == ce) | (type_codes == pe))
        self._futures = _Sorted.build(table, type_codes == fut)
        self._search: tuple[list[str], npt.NDArray[np.int64]] | None = None

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> Universe:
        return cls(snapshot.listed, snapshot)

    def __len__(self) -> int:
        return len(self.table)

    # -- lookups -------------------------------------------------------------

    def row_of_token(self, token: int) -> int:
        """Row of a Kite instrument token, or -1."""
        return self._token_row.get(token, -1)

    @property
    def token_to_inst(self) -> dict[int, int]:
        """Kite token -> dense id (do not modify). A feed binds ``token_to_inst.get`` once:
        one dict probe per token, no method call in between."""
        return self._token_inst

    def inst_of_token(self, token: int) -> int:
        """Dense id of a Kite instrument token, or 0 (the hot path of a feed)."""
        return self._token_inst.get(token, 0)

    def insts_of_tokens(self, tokens: npt.NDArray[np.int64]) -> npt.NDArray[np.uint32]:
        """Dense ids of many Kite tokens at once (0 where unknown), vectorised."""
        tokens = np.asarray(tokens, dtype=np.int64)
        at = np.searchsorted(self._sorted_tokens, tokens)
        at[at >= len(self._sorted_tokens)] = 0
        out = np.zeros(len(tokens), dtype=np.uint32)
        if len(self._sorted_tokens):
            hit = (self._sorted_tokens[at] == tokens) & (tokens != 0)
            out[hit] = self._sorted_inst[at[hit]]
        return out

    def inst_of_symbol(self, exchange: str, tradingsymbol: str) -> int:
        """Dense id of ``EXCHANGE:SYMBOL`` (how a Binance feed maps its symbols), or 0."""
        row = self.row_of_exchange_symbol(exchange, tradingsymbol)
        return 0 if row < 0 else int(self.table.numeric["inst"][row])

    def by_token(self, token: int) -> Instrument:
        row = self._token_row.get(token, -1)
        if row < 0:
            raise InstrumentNotFoundError(f"no listed instrument with token {token}")
        return self.table.row(row)

    def by_inst(self, inst: int) -> Instrument:
        row = int(self._inst_row[inst]) if 0 <= inst < len(self._inst_row) else -1
        if row < 0:
            raise InstrumentNotFoundError(f"no listed instrument with inst id {inst}")
        return self.table.row(row)

    def row_of_exchange_symbol(self, exchange: str, tradingsymbol: str) -> int:
        sym, exch = self._sym.code(tradingsymbol), self._exch.code(exchange)
        if sym < 0 or exch < 0:
            return -1
        return self._exch_sym_row.get(sym << 16 | exch, -1)

    def by_exchange_symbol(self, text: str) -> Instrument:
        """``NSE:INFY`` (exchange and symbol as Kite writes them; case-insensitive exchange)."""
        exchange, sep, symbol = text.partition(":")
        if not sep:
            raise InstrumentNotFoundError(f"{text!r} is not EXCHANGE:SYMBOL")
        row = self.row_of_exchange_symbol(exchange.upper(), symbol)
        if row < 0:
            raise InstrumentNotFoundError(f"no listed instrument {exchange.upper()}:{symbol}")
        return self.table.row(row)

    def lookup(self, key: str) -> Instrument:
        """A token (digits) or an ``EXCHANGE:SYMBOL``."""
        return self.by_token(int(key)) if key.isdigit() else self.by_exchange_symbol(key)

    def by_name(self, name: str) -> list[Instrument]:
        """Every listed instrument whose Kite ``name`` is ``name`` (e.g. all NIFTY F&O)."""
        return [self.table.row(int(r)) for r in self.rows_by_name(name)]

    def rows_by_name(self, name: str) -> npt.NDArray[np.int64]:
        code = self.table.strings["name"].code(name)
        if code < 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = self._name_starts[code], self._name_starts[code + 1]
        return self._by_name[lo:hi].astype(np.int64)

    def tokens_by_name(self, name: str) -> list[int]:
        tokens: list[int] = self.table.numeric["token"][self.rows_by_name(name)].tolist()
        return tokens

    def search_index(self) -> tuple[list[str], npt.NDArray[np.int64]]:
        """Upper-cased symbols sorted, and their rows. Built on first use: a sort of
        every symbol is the slowest index and only the interactive search needs it."""
        if self._search is None:
            upper = [s.upper() for s in self._sym.strings()]
            ranked = sorted(range(len(upper)), key=upper.__getitem__)
            self._search = ([upper[i] for i in ranked], np.asarray(ranked, dtype=np.int64))
        return self._search

    def search(self, text: str, limit: int = 50) -> list[Instrument]:
        """Listed instruments whose trading symbol starts with ``text`` (case-insensitive)."""
        keys, order = self.search_index()
        prefix = text.upper()
        lo = bisect.bisect_left(keys, prefix)
        out: list[Instrument] = []
        for i in range(lo, len(keys)):
            if not keys[i].startswith(prefix) or len(out) >= limit:
                break
            out.append(self.table.row(int(order[i])))
        return out

    # -- derivatives ---------------------------------------------------------

    def _pick_exchange(self, index: _Sorted, underlying: str, exchange: str | None) -> int:
        und = self.table.strings["underlying"].code(underlying)
        if und < 0:
            raise InstrumentNotFoundError(f"no listed derivatives on {underlying!r}")
        present = index.exchanges_of(und)
        if not present:
            raise InstrumentNotFoundError(f"no listed derivatives of that kind on {underlying!r}")
        if exchange is not None:
            code = self._exch.code(exchange.upper())
            if code not in present:
                raise InstrumentNotFoundError(f"no {underlying} derivatives on {exchange}")
            return code
        names = {c: self._exch.values[c] for c in present}
        rank = {e: i for i, e in enumerate(DERIVATIVE_EXCHANGES)}
        return min(present, key=lambda c: (rank.get(names[c], len(rank)), names[c]))

    def futures(
        self, underlying: str, as_of: dt.date | None = None, exchange: str | None = None
    ) -> list[Instrument]:
        """Listed futures on ``underlying`` expiring on or after ``as_of``, nearest first."""
        day = date_to_days(as_of or today_ist())
        idx = self._futures
        exch = self._pick_exchange(idx, underlying, exchange)
        lo, hi = idx.span(self.table.strings["underlying"].code(underlying), exch)
        start = lo + int(np.searchsorted(idx.expiry[lo:hi], day, "left"))
        return [self.table.row(int(r)) for r in idx.rows[start:hi]]

    def expiries(
        self, underlying: str, as_of: dt.date | None = None, exchange: str | None = None
    ) -> list[dt.date]:
        """Option expiries of ``underlying`` on or after ``as_of`` (futures' if it has no options)."""
        day = date_to_days(as_of or today_ist())
        und = self.table.strings["underlying"].code(underlying)
        for idx in (self._options, self._futures):
            if und < 0 or not idx.exchanges_of(und):
                continue
            exch = self._pick_exchange(idx, underlying, exchange)
            lo, hi = idx.span(und, exch)
            days = np.unique(idx.expiry[lo:hi])
            return [d for d in (days_to_date(int(x)) for x in days[days >= day]) if d is not None]
        raise InstrumentNotFoundError(f"no listed derivatives on {underlying!r}")

    def option_chain(
        self,
        underlying: str,
        spot_price: int,
        strike_range: int,
        strike_interval: int | None = None,
        expiry: dt.date | None = None,
        as_of: dt.date | None = None,
        exchange: str | None = None,
    ) -> OptionChain:
        """The ATM strike for ``spot_price`` (fixed point) and ``strike_range`` strikes each side.

        ``expiry`` defaults to the nearest on or after ``as_of``. The interval,
        unless given, is the most common gap between listed strikes near the
        spot (NIFTY lists 50-point strikes near the money and 100-point ones
        further out). ATM is the multiple of the interval nearest the spot,
        ties going up; strikes not listed have no call/put.
        """
        if strike_range < 0:
            raise ValueError("strike_range must be >= 0")
        idx = self._options
        exch = self._pick_exchange(idx, underlying, exchange)
        und = self.table.strings["underlying"].code(underlying)
        lo, hi = idx.span(und, exch)
        exp_days = idx.expiry[lo:hi]
        if expiry is None:
            day = date_to_days(as_of or today_ist())
            at = int(np.searchsorted(exp_days, day, "left"))
            if at >= len(exp_days):
                raise InstrumentNotFoundError(f"no {underlying} options expire on or after {day}")
            exp = int(exp_days[at])
        else:
            exp = date_to_days(expiry)
        elo = lo + int(np.searchsorted(exp_days, exp, "left"))
        ehi = lo + int(np.searchsorted(exp_days, exp, "right"))
        if elo == ehi:
            raise InstrumentNotFoundError(f"no {underlying} options expiring {days_to_date(exp)}")
        strikes = idx.strike[elo:ehi]
        listed = np.unique(strikes)
        interval = strike_interval or infer_interval(listed, spot_price)
        if interval <= 0:
            raise ValueError("strike interval must be positive")
        atm = (spot_price + interval // 2) // interval * interval
        out = []
        for k in range(-strike_range, strike_range + 1):
            strike = atm + k * interval
            a = int(np.searchsorted(strikes, strike, "left"))
            b = int(np.searchsorted(strikes, strike, "right"))
            call = put = None
            for j in range(a, b):
                inst = self.table.row(int(idx.rows[elo + j]))
                if idx.is_put[elo + j]:
                    put = inst
                else:
                    call = inst
            out.append(ChainRow(strike, call, put))
        expiry_date = days_to_date(exp)
        assert expiry_date is not None
        return OptionChain(
            underlying, self._exch.values[exch], expiry_date, atm, interval, tuple(out)
        )

    # -- underlyings -----------------------------------------------------------

    def spot(self, underlying: str) -> Instrument:
        """The spot of an underlying: its index (NIFTY -> NSE:NIFTY 50) or its NSE (else BSE) equity."""
        candidates: Sequence[tuple[str, str]]
        if underlying in INDEX_SPOTS:
            candidates = (INDEX_SPOTS[underlying],)
        else:
            candidates = (("NSE", underlying), ("BSE", underlying))
        for exchange, symbol in candidates:
            row = self.row_of_exchange_symbol(exchange, symbol)
            if row >= 0:
                return self.table.row(row)
        raise InstrumentNotFoundError(f"no spot instrument for {underlying!r}")

    def stats(self) -> dict[str, Any]:
        """Counts per exchange/segment and instrument type; snapshot facts."""
        seg = self.table.strings["segment"]
        counts = np.bincount(seg.codes, minlength=len(seg.values))
        types = self.table.strings["instrument_type"]
        tcounts = np.bincount(types.codes, minlength=len(types.values))
        snap = self.snapshot
        return {
            "instruments": len(self),
            "retained": 0 if snap is None else len(snap.retained),
            "version": 0 if snap is None else snap.version,
            "created_ns": 0 if snap is None else snap.created_ns,
            "next_inst": 0 if snap is None else snap.next_inst,
            "segments": {
                v: int(c) for v, c in sorted(zip(seg.values, counts.tolist(), strict=True)) if c
            },
            "instrument_types": {
                v: int(c) for v, c in sorted(zip(types.values, tcounts.tolist(), strict=True)) if c
            },
            "venues": {} if snap is None else snap.meta,
        }


def infer_interval(strikes: npt.NDArray[np.int64], spot_price: int) -> int:
    """The most common gap between the listed strikes nearest ``spot_price`` (smallest on ties)."""
    if len(strikes) < 2:
        raise InstrumentNotFoundError("cannot infer a strike interval from fewer than 2 strikes")
    at = int(np.searchsorted(strikes, spot_price))
    window = strikes[max(0, at - 6) : at + 6]
    if len(window) < 2:
        window = strikes[-7:] if at >= len(strikes) else strikes[:7]
    gaps = np.diff(window)
    values, counts = np.unique(gaps[gaps > 0], return_counts=True)
    return int(values[int(np.argmax(counts))])


# ---------------------------------------------------------------------------
# the query functions of the issue (thin wrappers, for callers that hold a Universe)


def get_spot(universe: Universe, underlying: str) -> Instrument:
    """NIFTY -> NSE:NIFTY 50, BANKNIFTY -> NSE:NIFTY BANK, ..., stocks -> their NSE equity."""
    return universe.spot(underlying)


def get_current_month_futures(
    universe: Universe, underlying: str, as_of: dt.date | None = None
) -> Instrument:
    """The nearest future expiring on or after ``as_of`` (today in IST by default)."""
    futs = universe.futures(underlying, as_of)
    if not futs:
        raise InstrumentNotFoundError(f"no {underlying} futures expire on or after {as_of}")
    return futs[0]


def get_next_month_futures(
    universe: Universe, underlying: str, as_of: dt.date | None = None
) -> Instrument:
    """The future after the current one."""
    futs = universe.futures(underlying, as_of)
    if len(futs) < 2:
        raise InstrumentNotFoundError(f"no next {underlying} future after {as_of}")
    return futs[1]


def get_subscription_tokens(
    universe: Universe, underlying: str, as_of: dt.date | None = None
) -> tuple[int | None, int | None, int | None]:
    """(spot, current future, next future) instrument tokens; None where there is none."""

    def token(fn: Any) -> int | None:
        try:
            return int(fn().instrument_token)
        except InstrumentNotFoundError:
            return None

    return (
        token(lambda: universe.spot(underlying)),
        token(lambda: get_current_month_futures(universe, underlying, as_of)),
        token(lambda: get_next_month_futures(universe, underlying, as_of)),
    )


def get_atm_option_chain(
    universe: Universe,
    underlying: str,
    spot_price: int,
    strike_range: int,
    strike_interval: int | None = None,
    expiry: dt.date | None = None,
    as_of: dt.date | None = None,
) -> OptionChain:
    """See :meth:`Universe.option_chain` (prices fixed point)."""
    return universe.option_chain(
        underlying, spot_price, strike_range, strike_interval, expiry, as_of
    )
