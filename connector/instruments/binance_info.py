"""Binance ``exchangeInfo`` (spot ``/api/v3``, USD-M ``/fapi/v1``) -> :class:`InstrumentTable`. Pure.

Field names are Binance's (``symbol``, ``status``, ``baseAsset``,
``quoteAsset``, ``contractType``, ``deliveryDate``, filters ``PRICE_FILTER``
``tickSize`` and ``LOT_SIZE`` ``stepSize``). Only symbols with ``status`` =
``TRADING`` are listed: a symbol in ``BREAK`` or ``SETTLING`` is not tradable
and drops out of the listed universe (its dense id is kept should it return).
``connector/binance/wire.py`` has no exchangeInfo decoder yet, so this module is it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import orjson

from connector.instruments.model import (
    BINANCE_EXCHANGE,
    InstrumentDataError,
    InstrumentTable,
    Venue,
    date_to_days,
)
from pipeline import fixedpoint

MARKETS: Final = {"spot": Venue.BINANCE_SPOT, "usdm": Venue.BINANCE_USDM}
PERPETUAL_DELIVERY_MS: Final = 4_000_000_000_000
"""USD-M perpetuals carry a far-future ``deliveryDate`` (2100): treat anything past this as none."""


def _filter(symbol: Mapping[str, Any], kind: str, key: str) -> int:
    for f in symbol.get("filters", ()):
        if isinstance(f, Mapping) and f.get("filterType") == kind and key in f:
            try:
                return fixedpoint.parse(str(f[key]))
            except ValueError as exc:
                raise InstrumentDataError(
                    f"exchangeInfo symbol {symbol.get('symbol')!r}: {kind}.{key}: {exc}"
                ) from None
    return 0


def parse_exchange_info(data: bytes, market: str) -> InstrumentTable:
    """Parse an exchangeInfo body of ``market`` (``spot`` or ``usdm``) into a table (``inst`` 0)."""
    venue = MARKETS.get(market)
    if venue is None:
        raise ValueError(f"market must be one of {', '.join(MARKETS)}, got {market!r}")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InstrumentDataError(f"exchangeInfo ({market}): not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("symbols"), list):
        raise InstrumentDataError(f"exchangeInfo ({market}): no 'symbols' list")
    numeric: dict[str, list[int]] = {
        k: [] for k in ("tick_size", "step_size", "expiry", "delivery_ms", "lot_size")
    }
    strings: dict[str, list[str]] = {
        k: []
        for k in (
            "tradingsymbol",
            "name",
            "instrument_type",
            "segment",
            "exchange",
            "base_asset",
            "quote_asset",
            "contract_type",
        )
    }
    seen: set[str] = set()
    for i, sym in enumerate(doc["symbols"]):
        if not isinstance(sym, dict) or not isinstance(sym.get("symbol"), str):
            raise InstrumentDataError(f"exchangeInfo ({market}): symbols[{i}] has no 'symbol'")
        name = sym["symbol"]
        if sym.get("status") != "TRADING":
            continue
        if name in seen:
            raise InstrumentDataError(f"exchangeInfo ({market}): symbol {name!r} listed twice")
        seen.add(name)
        base, quote = str(sym.get("baseAsset", "")), str(sym.get("quoteAsset", ""))
        contract = str(sym.get("contractType", "")) if venue == Venue.BINANCE_USDM else ""
        delivery = sym.get("deliveryDate", 0) if venue == Venue.BINANCE_USDM else 0
        if (
            not isinstance(delivery, int)
            or isinstance(delivery, bool)
            or not 0 < delivery < PERPETUAL_DELIVERY_MS
        ):
            delivery = 0
        expiry = (
            date_to_days(dt.datetime.fromtimestamp(delivery / 1000, dt.UTC).date())
            if delivery
            else date_to_days(None)
        )
        numeric["tick_size"].append(_filter(sym, "PRICE_FILTER", "tickSize"))
        numeric["step_size"].append(_filter(sym, "LOT_SIZE", "stepSize"))
        numeric["expiry"].append(expiry)
        numeric["delivery_ms"].append(delivery)
        numeric["lot_size"].append(1)
        strings["tradingsymbol"].append(name)
        strings["name"].append(f"{base}/{quote}")
        strings["instrument_type"].append(contract or "SPOT")
        strings["segment"].append(market.upper())
        strings["exchange"].append(BINANCE_EXCHANGE[venue])
        strings["base_asset"].append(base)
        strings["quote_asset"].append(quote)
        strings["contract_type"].append(contract)
    n = len(strings["tradingsymbol"])
    return InstrumentTable.from_columns(
        n, {**numeric, "venue": np.full(n, venue, dtype=np.uint8)}, strings
    )
