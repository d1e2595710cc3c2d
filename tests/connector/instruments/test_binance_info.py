"""Binance exchangeInfo import against recorded responses."""

from __future__ import annotations

import contextlib
import datetime as dt

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.instruments.binance_info import parse_exchange_info
from connector.instruments.model import InstrumentDataError, Venue
from pipeline import fixedpoint
from tests.conftest import shared_fixture

pytestmark = pytest.mark.unit


def _cryptofeed_body(name: str) -> bytes:
    """The JSON body of the first line (``<url> -> <ts>: <json>``) of a cryptofeed capture."""
    line = shared_fixture(f"binance/cryptofeed/{name}").read_bytes().split(b"\n", 1)[0]
    return line.split(b": ", 1)[1]


def test_spot_recorded_exchange_info() -> None:
    body = _cryptofeed_body("BINANCE.0")
    doc = orjson.loads(body)
    table = parse_exchange_info(body, "spot")
    trading = [s for s in doc["symbols"] if s["status"] == "TRADING"]
    assert len(table) == len(trading) == 1262  # 433 in BREAK are not listed
    by_symbol = {table.row(i).tradingsymbol: table.row(i) for i in range(len(table))}
    for s in trading[::37]:
        inst = by_symbol[s["symbol"]]
        price = next(f for f in s["filters"] if f["filterType"] == "PRICE_FILTER")
        lot = next(f for f in s["filters"] if f["filterType"] == "LOT_SIZE")
        assert inst.tick_size == fixedpoint.parse(price["tickSize"])
        assert inst.step_size == fixedpoint.parse(lot["stepSize"])
        assert (inst.base_asset, inst.quote_asset) == (s["baseAsset"], s["quoteAsset"])
        assert inst.exchange == "BINANCE-SPOT" and inst.venue == Venue.BINANCE_SPOT
        assert inst.expiry is None and inst.instrument_type == "SPOT"


def test_usdm_recorded_exchange_info() -> None:
    path = shared_fixture("binance/nautilus_examples/http_futures_market_exchange_info.json")
    table = parse_exchange_info(path.read_bytes(), "usdm")
    rows = {table.row(i).tradingsymbol: table.row(i) for i in range(len(table))}
    perp, quarter = rows["BTCUSDT"], rows["BTCUSDT_220325"]
    assert perp.contract_type == "PERPETUAL" and perp.expiry is None and perp.delivery_ms == 0
    assert perp.tick_size == fixedpoint.parse("0.10")
    assert perp.step_size == fixedpoint.parse("0.001")
    assert quarter.contract_type == "CURRENT_QUARTER"
    assert quarter.delivery_ms == 1648195200000
    assert quarter.expiry == dt.date(2022, 3, 25)
    assert quarter.as_json()["delivery_date"].startswith("2022-03-25T08:00:00")
    recorded = parse_exchange_info(_cryptofeed_body("BINANCE_FUTURES.0"), "usdm")
    assert len(recorded) == 121  # one PENDING_TRADING symbol is not listed yet


def test_errors() -> None:
    with pytest.raises(InstrumentDataError, match="not JSON"):
        parse_exchange_info(b"{", "spot")
    with pytest.raises(InstrumentDataError, match="no 'symbols'"):
        parse_exchange_info(b"{}", "spot")
    bad = orjson.dumps(
        {
            "symbols": [
                {
                    "symbol": "XY",
                    "status": "TRADING",
                    "filters": [{"filterType": "PRICE_FILTER", "tickSize": "1e-8"}],
                }
            ]
        }
    )
    with pytest.raises(InstrumentDataError, match=r"'XY'.*PRICE_FILTER\.tickSize"):
        parse_exchange_info(bad, "spot")
    with pytest.raises(ValueError, match="market"):
        parse_exchange_info(b"{}", "coinm")


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(InstrumentDataError):
        parse_exchange_info(data, "usdm")
