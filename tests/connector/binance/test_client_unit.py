"""The Binance client's pure parts: REST weight pacing, stream planning, config."""

from __future__ import annotations

import pytest

from connector.binance.client import (
    USDM_SPLIT_PATHS,
    BinanceFeed,
    RestWeights,
    config_from_params,
    depth_weight,
)
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit


def test_depth_weights_follow_the_limits() -> None:
    assert [depth_weight(n, False) for n in (100, 500, 1000, 5000)] == [5, 25, 50, 250]
    assert [depth_weight(n, True) for n in (50, 100, 500, 1000)] == [2, 5, 10, 20]


def test_weights_wait_for_the_next_minute_when_the_budget_is_spent() -> None:
    w = RestWeights(budget=100, reserve=0.1)  # usable: 90 per minute
    now = 60 * 1000 + 10.0
    for _ in range(3):
        assert w.delay(25, now) == 0
        w.spent(25)
    wait = w.delay(25, now)
    assert 49.9 < wait < 50.2, "until the next minute starts"
    assert w.delay(25, now + wait) == 0, "a new minute, a new budget"


def test_weights_follow_the_venue_header_and_retry_after() -> None:
    w = RestWeights(budget=6000)
    now = 120.0
    w.update(200, {"x-mbx-used-weight-1m": "5390"}, now)
    assert w.delay(50, now) > 0, "the venue says we are near the limit"
    w2 = RestWeights(budget=6000)
    w2.update(429, {"Retry-After": "7"}, now)
    assert w2.delay(1, now) == pytest.approx(7)
    assert w2.throttled == 1
    w2.update(418, {}, now)
    assert w2.delay(1, now) == pytest.approx(120), "a ban without Retry-After waits two minutes"
    assert w2.banned == 1


def test_streams_are_planned_per_path_and_connection_limit() -> None:
    config = config_from_params(
        "f",
        {
            "market": "usdm",
            "ws_url": "ws://127.0.0.1:1",
            "rest_url": "http://127.0.0.1:1",
            "symbols": [f"S{i}USDT" for i in range(5)],
            "streams": ["depth@100ms", "aggTrade", "markPrice@1s"],
            "split_paths": True,
            "streams_per_connection": 4,
        },
    )
    feed = BinanceFeed(config)
    paths = {g.path for g in feed.groups}
    assert paths == {USDM_SPLIT_PATHS["depth"], USDM_SPLIT_PATHS["aggTrade"]}
    assert all(len(g.streams) <= 4 for g in feed.groups)
    planned = sorted(s for g in feed.groups for s in g.streams)
    assert planned == sorted(
        f"s{i}usdt@{x}" for i in range(5) for x in ("depth@100ms", "aggTrade", "markPrice@1s")
    )
    depth_groups = [g for g in feed.groups if g.path == "/public/stream"]
    assert sorted(s for g in depth_groups for s in g.depth_symbols) == [
        f"S{i}USDT" for i in range(5)
    ]
    assert feed.instruments() == {1 + i: f"S{i}USDT" for i in range(5)}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"speed": 1}, "unknown key 'speed'"),
        ({"market": "coinm"}, "market"),
        ({"rest_url": "ftp://x"}, "rest_url"),
        ({"symbols": []}, "no symbols"),
        ({"streams_per_connection": 2000}, "1024"),
        ({"snapshot_limit": 5000, "market": "usdm"}, "snapshot_limit"),
        ({"symbols": "BTCUSDT"}, "wrong type"),
    ],
)
def test_bad_params_name_the_key(params: dict[str, object], match: str) -> None:
    base = {"ws_url": "ws://127.0.0.1:1", "rest_url": "http://127.0.0.1:1", "symbols": ["BTCUSDT"]}
    with pytest.raises(ConfigError, match=match):
        config_from_params("f", {**base, **params})
