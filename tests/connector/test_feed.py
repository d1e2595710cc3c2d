"""The shared feed configuration and the reconnect policy (pure)."""

from __future__ import annotations

import random

import pytest

from connector.feed import FeedConfig, ReconnectPolicy
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit


def test_backoff_doubles_with_jitter_and_caps() -> None:
    policy = ReconnectPolicy(base_ms=100, max_ms=1000, rng=random.Random(1))
    delays = [policy.failed() for _ in range(8)]
    caps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    for delay, cap in zip(delays, caps, strict=True):
        assert delay is not None and cap / 2 <= delay <= cap
    assert len({round(d, 6) for d in delays if d is not None}) > 4, "jitter makes delays differ"
    policy.succeeded()
    first = policy.failed()
    assert first is not None and first <= 0.1


def test_backoff_gives_up_after_max_attempts() -> None:
    policy = ReconnectPolicy(base_ms=10, max_ms=100, max_attempts=3, rng=random.Random(2))
    assert all(policy.failed() is not None for _ in range(3))
    assert policy.failed() is None


def test_same_seed_same_delays() -> None:
    a = ReconnectPolicy(rng=random.Random(7))
    b = ReconnectPolicy(rng=random.Random(7))
    assert [a.failed() for _ in range(5)] == [b.failed() for _ in range(5)]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ws_url": "http://x"}, "ws_url"),
        ({"ws_url": "ws://x", "max_reconnects": -1}, "max_reconnects"),
        ({"ws_url": "ws://x", "reconnect_delay_ms": 0}, "reconnect_delay_ms"),
        ({"ws_url": "ws://x", "silence_timeout_s": 0}, "silence_timeout_s"),
    ],
)
def test_feed_config_errors_name_the_key(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        FeedConfig(name="f", **kwargs)  # type: ignore[arg-type]
