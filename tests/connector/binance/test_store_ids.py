"""A Binance feed with ``instruments = "store"``: ids from the instrument store,
fetched from a loopback simulator's exchangeInfo when the store has none."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from connector.binance.client import factory
from connector.instruments import store
from connector.instruments.universe import Universe
from connector.sim.binance import BinanceSimulator
from pipeline import paths
from pipeline.adapter import AdapterContext
from pipeline.errors import ConfigError


@contextmanager
def binance_sim(market: str, symbols: list[str]) -> Iterator[BinanceSimulator]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="binance-sim", daemon=True)
    thread.start()
    sim = BinanceSimulator(market=market, symbols=symbols)
    try:
        asyncio.run_coroutine_threadsafe(sim.start(), loop).result(30)
        yield sim
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _params(sim: BinanceSimulator, market: str, symbols: list[str]) -> dict[str, object]:
    return {
        "market": market,
        "ws_url": f"ws://127.0.0.1:{sim.port}",
        "rest_url": f"http://127.0.0.1:{sim.port}",
        "symbols": symbols,
        "instruments": "store",
    }


def _stored_ids(data_dir: Path, exchange: str, symbols: list[str]) -> dict[int, str]:
    snapshot = store.recover(paths.instruments_wal_dir(data_dir)).snapshot
    assert snapshot is not None
    universe = Universe.from_snapshot(snapshot)
    return {universe.inst_of_symbol(exchange, s): s for s in symbols}


@pytest.mark.integration
@pytest.mark.parametrize(
    ("market", "exchange"), [("spot", "BINANCE-SPOT"), ("usdm", "BINANCE-USDM")]
)
def test_ids_come_from_the_store_and_stay_across_restarts(
    tmp_path: Path, market: str, exchange: str
) -> None:
    context = AdapterContext("binance", 1, tmp_path, max_instruments=16384)
    with binance_sim(market, ["BTCUSDT", "ETHUSDT", "SOLUSDT"]) as sim:
        params = _params(sim, market, ["solusdt", "ETHUSDT"])
        first = factory(params, context).instruments()
    # The empty store got the market's exchangeInfo; the feed's ids are its ids.
    assert first == _stored_ids(tmp_path, exchange, ["SOLUSDT", "ETHUSDT"])
    assert all(i > 0 for i in first)
    # The simulator is gone: a restart reads the same ids from the store alone.
    assert factory(params, context).instruments() == first


@pytest.mark.integration
def test_a_symbol_the_store_does_not_list_is_named(tmp_path: Path) -> None:
    context = AdapterContext("binance-spot", 1, tmp_path)
    with (
        binance_sim("spot", ["BTCUSDT"]) as sim,
        pytest.raises(
            ConfigError, match=r"feeds\.binance-spot: DOGEUSDT not listed .*BINANCE-SPOT"
        ),
    ):
        factory(_params(sim, "spot", ["BTCUSDT", "DOGEUSDT"]), context)


@pytest.mark.unit
def test_fixed_ids_and_the_store_do_not_mix(tmp_path: Path) -> None:
    context = AdapterContext("binance-spot", 1, tmp_path)
    base = {"market": "spot", "ws_url": "ws://127.0.0.1:1", "rest_url": "http://127.0.0.1:1"}
    with pytest.raises(ConfigError, match=r"first_inst gives fixed ids.*use one"):
        factory({**base, "symbols": ["BTCUSDT"], "instruments": "store", "first_inst": 5}, context)
    with pytest.raises(ConfigError, match=r'instruments must be "fixed" or "store"'):
        factory({**base, "symbols": ["BTCUSDT"], "instruments": "db"}, context)
    # Config errors come before any I/O: nothing listens on port 1, and no store was made.
    with pytest.raises(ConfigError, match="no symbols"):
        factory({**base, "symbols": [], "instruments": "store"}, context)
    assert not paths.instruments_wal_dir(tmp_path).exists()
