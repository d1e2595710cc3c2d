"""The shipped configuration files load, and every feed's params pass its adapter's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.binance import client as binance_client
from connector.zerodha import client as kite_client
from pipeline import config
from pipeline.adapter import check_params

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("name", ["default.toml", "live.toml.example", "synthetic.toml"])
def test_shipped_config_loads_and_feed_params_are_valid(name: str) -> None:
    loaded = config.load(CONFIGS / name)
    assert loaded.feeds, "a config without feeds runs nothing"
    for feed in loaded.feeds:
        if feed.adapter == "connector.binance.client:factory":
            cfg = binance_client.config_from_params(feed.name, feed.params)
            assert cfg.symbol_map
        elif feed.adapter == "connector.zerodha.client:factory":
            check_params(feed.params, kite_client._PARAMS, feed.name)
            assert feed.params.get("subscribe") or feed.params.get("tokens")
    insts = [
        feed.params["first_inst"] + i
        for feed in loaded.feeds
        if "first_inst" in feed.params
        for i in range(len(feed.params.get("symbols", [])) or feed.params.get("instruments", 1))
    ]
    assert len(insts) == len(set(insts)), "two feeds share instrument ids"
    assert all(i < loaded.book.max_instruments for i in insts)
