"""The Kite feed subscribing by instrument query (``subscribe``) through the
instrument store, against the loopback simulators: exactly the tokens the
queries give, the store's dense ids (stable across restarts), records for
every one of them; the store filled by the feed itself when empty; the
book-table limit; and the whole thing under the supervisor."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
import pytest

from connector.instruments import store
from connector.instruments.universe import IST, Universe
from connector.sim.kite_universe import generate_universe
from connector.zerodha.auth import ENV_VARS
from connector.zerodha.client import (
    KiteFeed,
    blocking_session,
    factory,
    resolve_subscriptions,
    spot_quotes,
)
from connector.zerodha.errors import KiteAuthError
from pipeline import fixedpoint, paths, wal
from pipeline.adapter import AdapterContext
from pipeline.errors import ConfigError
from pipeline.record import Kind, Records
from tests.connector.instruments.loopback import (
    Sims,
    expected_tokens,
    run_service,
    running_sims,
    stop_service,
)

pytestmark = pytest.mark.integration

SCALE = 0.02


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)  # the session cache is the only source


def feed_params(sims: Sims, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "ws_url": sims.kite.ws_url,
        "api_url": sims.kite.http_url,
        "login_url": sims.kite.http_url,
        "subscribe": [{"underlying": "NIFTY", "spot": True, "futures": 2, "chain_range": 2}],
        "silence_timeout_s": 2.0,
    }
    params.update(extra)
    return params


def expectation(sims: Sims) -> set[int]:
    """The NIFTY tokens from the generator's rows for the simulator's day."""
    day = sims.kite.clock().astimezone(IST).date()
    rows = generate_universe(day, seed=0, scale=SCALE)
    spot, futs, chain, _ = expected_tokens(rows, day, "NIFTY", "NIFTY 50", 2, 2, 50)
    assert len(futs) == 2 and chain
    return {spot, *futs, *chain}


def stored_universe(data_dir: Path) -> Universe:
    snap = store.recover(paths.instruments_wal_dir(data_dir)).snapshot
    assert snap is not None
    return Universe.from_snapshot(snap)


def refresh_store(sims: Sims, data_dir: Path) -> None:
    ctx, thread = run_service(
        {"api_url": sims.kite.http_url, "binance": {"spot": sims.binance_rest}}, data_dir
    )
    stop_service(ctx, thread)


async def collect(feed: KiteFeed, insts: set[int], timeout_s: float = 20.0) -> set[int]:
    """Read the feed until every id in ``insts`` had a data record (or the timeout)."""
    seen: set[int] = set()
    # records() is an async generator: aclose() runs its clean-up (closes the ticker sockets)
    stream = cast(AsyncGenerator[Records, None], feed.records())

    async def read() -> None:
        async for batch in stream:
            data = batch[batch["kind"] != Kind.STATUS]
            seen.update(data["inst"].tolist())
            if insts <= seen:
                return

    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read(), timeout_s)
    finally:
        await stream.aclose()
    return seen


def test_subscribe_resolves_through_the_store_and_records_flow_with_stable_ids(
    tmp_path: Path,
) -> None:
    with running_sims(scale=SCALE) as sims:
        sims.cache_session(tmp_path)
        refresh_store(sims, tmp_path)
        equity = next(t for t, i in sims.kite.instruments.items() if t & 0xFF == 1)
        params = feed_params(sims, tokens=[equity], mode="quote")
        feed = factory(params, AdapterContext("zerodha", 3, tmp_path))
        universe = stored_universe(tmp_path)
        want = expectation(sims) | {equity}
        tokens = feed.config.token_map
        assert set(tokens) == want
        assert tokens == {t: universe.inst_of_token(t) for t in want}  # the store's dense ids
        assert all(0 < i < universe.snapshot.next_inst for i in tokens.values())  # type: ignore[union-attr]
        names = feed.instruments()
        assert names[tokens[256265]] == "NSE:NIFTY 50"
        assert all(
            n == universe.by_token(t).exchange_symbol
            for t, n in zip(tokens, (names[i] for i in tokens.values()), strict=True)
        )
        seen = asyncio.run(collect(feed, set(tokens.values())))
        assert seen == set(tokens.values())

        # a restart (after the next refresh) resolves to the same ids
        refresh_store(sims, tmp_path)
        assert stored_universe(tmp_path).snapshot.version == 2  # type: ignore[union-attr]
        again = factory(params, AdapterContext("zerodha", 3, tmp_path))
        assert again.config.token_map == tokens


def test_the_subscription_follows_a_new_resolution(tmp_path: Path) -> None:
    """What the daily re-resolution does (here with another underlying standing
    for the next day's contracts): the venue gets the new tokens and loses the
    old ones, records carry the new ids, readers get the new names."""
    with running_sims(scale=SCALE) as sims:
        sims.cache_session(tmp_path)
        refresh_store(sims, tmp_path)
        feed = factory(feed_params(sims), AdapterContext("zerodha", 3, tmp_path))
        assert feed.resolver is not None and feed.resolve_at == dt.time(8, 45)
        first = dict(feed.token_inst)
        as_of = sims.kite.clock().astimezone(IST).date()
        bank_params = feed_params(
            sims,
            subscribe=[{"underlying": "BANKNIFTY", "spot": True, "futures": 1, "chain_range": 1}],
        )
        nextday = resolve_subscriptions(
            "zerodha", bank_params, stored_universe(tmp_path), as_of, {}
        )
        assert not set(nextday.token_inst) & set(first)
        feed.resolver = lambda: nextday

        async def run() -> tuple[tuple[int, int], set[int], set[int]]:
            stream = cast(AsyncGenerator[Records, None], feed.records())
            seen: set[int] = set()

            async def read_until(insts: set[int]) -> None:
                async for batch in stream:
                    seen.update(batch[batch["kind"] != Kind.STATUS]["inst"].tolist())
                    if insts <= seen:
                        return

            try:
                await asyncio.wait_for(read_until(set(first.values())), 20)
                moved = await feed.resolve_again()
                seen.clear()
                await asyncio.wait_for(read_until(set(nextday.token_inst.values())), 20)
                venue = await asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(sims.kite.subscribed_tokens(), sims.loop)
                )
            finally:
                await stream.aclose()
            return moved, venue, seen

        moved, venue, seen = asyncio.run(run())
        assert moved == (len(nextday.token_inst), len(first))
        assert venue == set(nextday.token_inst)
        assert set(nextday.token_inst.values()) <= seen
        # Ticks of the dropped tokens still in flight keep their ids: no record
        # falls back to a raw token.
        assert seen <= set(first.values()) | set(nextday.token_inst.values())
        assert feed.instruments() == dict(nextday.names)
        assert feed.instruments_version == 1


def test_the_daily_resolution_runs_at_its_time_and_retries_a_failure(tmp_path: Path) -> None:
    with running_sims(scale=SCALE) as sims:
        sims.cache_session(tmp_path)
        refresh_store(sims, tmp_path)
        feed = factory(
            feed_params(sims, resolve_at="08:45"), AdapterContext("zerodha", 3, tmp_path)
        )
        resolution = feed.resolver() if feed.resolver is not None else None
        assert resolution is not None
        # The feed's clock says 08:44:59.7 IST: the resolution is 0.3 s away.
        at = dt.datetime.combine(dt.date(2026, 12, 7), dt.time(8, 45), tzinfo=IST)
        feed.clock = lambda: int(at.timestamp() * 1e9) - 300_000_000
        feed.resolve_retry_s = 0.05
        attempts: list[int] = []

        def flaky() -> Any:
            attempts.append(len(attempts))
            if len(attempts) == 1:
                raise OSError("the instrument store is being written")
            return resolution

        feed.resolver = flaky

        async def run() -> None:
            stream = cast(AsyncGenerator[Records, None], feed.records())

            async def until_followed() -> None:
                async for _batch in stream:
                    if feed.instruments_version:
                        return

            try:
                await asyncio.wait_for(until_followed(), 20)
            finally:
                await stream.aclose()

        asyncio.run(run())
        assert len(attempts) == 2 and feed.counters["resolution_errors"] == 1
        assert feed.instruments_version == 1 and feed.counters["resolutions"] == 1


def test_an_empty_store_is_filled_by_the_feed_with_its_session(tmp_path: Path) -> None:
    with running_sims(scale=SCALE) as sims:
        sims.cache_session(tmp_path)
        feed = factory(feed_params(sims), AdapterContext("zerodha", 3, tmp_path))
        universe = stored_universe(tmp_path)
        assert len(universe) == len(sims.kite.instruments)
        assert set(feed.config.token_map) == expectation(sims)
        assert feed.config.token_map == {
            t: universe.inst_of_token(t) for t in feed.config.token_map
        }


def test_no_store_and_no_session_is_a_clear_error(tmp_path: Path) -> None:
    with (
        running_sims(scale=SCALE) as sims,
        pytest.raises(KiteAuthError, match="holds no Kite instruments"),
    ):
        factory(feed_params(sims), AdapterContext("zerodha", 3, tmp_path))


def test_ids_beyond_the_book_table_and_mixed_numbering_are_config_errors(tmp_path: Path) -> None:
    with running_sims(scale=SCALE) as sims:
        sims.cache_session(tmp_path)
        refresh_store(sims, tmp_path)
        with pytest.raises(ConfigError, match="max_instruments"):
            factory(feed_params(sims, max_inst=3), AdapterContext("zerodha", 3, tmp_path))
        with pytest.raises(ConfigError, match="first_inst cannot go with subscribe"):
            factory(feed_params(sims, first_inst=5), AdapterContext("zerodha", 3, tmp_path))
        with pytest.raises(ConfigError, match="NOSUCH"):
            factory(
                feed_params(sims, subscribe=[{"underlying": "NOSUCH", "futures": 1}]),
                AdapterContext("zerodha", 3, tmp_path),
            )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.system
def test_the_supervisor_runs_the_instrument_service_then_the_subscribing_feed(
    tmp_path: Path,
) -> None:
    port, ws_port = _free_port(), _free_port()
    config = tmp_path / "kite.toml"
    config.write_text(
        f"""
[ring]
capacity = 8192

[wal]
fsync = "never"
cpu = "none"

[book]
max_instruments = 4096

[[services]]
name = "sim-kite"
target = "connector.sim.kite:service"
[services.params]
port = {port}
ws_port = {ws_port}
clock = "open"
rate = 10
scale = {SCALE}
session_cache = true

[[services]]
name = "instruments"
target = "connector.instruments.service:service"
[services.params]
api_url = "http://127.0.0.1:{port}"

[[feeds]]
name = "zerodha"
adapter = "connector.zerodha.client:factory"
src = 3
[feeds.params]
ws_url = "ws://127.0.0.1:{ws_port}"
api_url = "http://127.0.0.1:{port}"
login_url = "http://127.0.0.1:{port}"
subscribe = [{{ underlying = "NIFTY", spot = true, futures = 2, chain_range = 2 }}]
mode = "full"
"""
    )
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERODHA_")}
    command = [sys.executable, "-m", "connector.cli", "start", "--foreground"]
    command += ["--config", str(config), "--data-dir", str(data), "--duration", "5"]
    done = subprocess.run(command, capture_output=True, timeout=90, check=False, env=env)
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output[-3000:]
    assert "NIFTY -> " in output and "instruments v1: kite:" in output
    universe = stored_universe(data)
    day = dt.datetime.now(dt.UTC).astimezone(IST).date()
    # the simulator's universe day is today or the next trading day
    rows_day = next(d for d in (day + dt.timedelta(days=i) for i in range(4)) if d.weekday() < 5)
    rows = generate_universe(rows_day, seed=0, scale=SCALE)
    spot, futs, chain, _ = expected_tokens(rows, rows_day, "NIFTY", "NIFTY 50", 2, 2, 50)
    want = {universe.inst_of_token(t) for t in (spot, *futs, *chain)}
    assert 0 not in want
    records = np.concatenate(list(wal.WalReader(paths.market_wal_dir(data)).records(src=3)))
    data_records = records[records["kind"] != Kind.STATUS]
    assert set(data_records["inst"].tolist()) == want


class _QuoteServer:
    """A loopback Kite API answering ``/quote/ltp`` in the venue's shape."""

    def __init__(self, prices: dict[str, tuple[int, float]]) -> None:
        import http.server
        import threading
        from urllib.parse import parse_qs, urlsplit

        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                outer.requests.append((url.path, self.headers.get("Authorization", "")))
                keys = parse_qs(url.query).get("i", [])
                data = {
                    k: {"instrument_token": prices[k][0], "last_price": prices[k][1]}
                    for k in keys
                    if k in prices
                }
                body = orjson.dumps({"status": "success", "data": data})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


def test_a_live_quote_centres_the_chain_and_a_missing_one_falls_back(tmp_path: Path) -> None:
    with running_sims(scale=SCALE) as sims:
        sims.cache_session(tmp_path)
        refresh_store(sims, tmp_path)
        universe = stored_universe(tmp_path)
        session = blocking_session(tmp_path, api_url=sims.kite.http_url)
        assert session is not None
        params = feed_params(sims)
        # the simulator has no /quote/ltp: no prices, the dump's are used
        assert spot_quotes("zerodha", params, universe, session, sims.kite.http_url) == {}
    quotes = _QuoteServer({"NSE:NIFTY 50": (256265, 23012.35)})
    try:
        prices = spot_quotes("zerodha", params, universe, session, quotes.url)
    finally:
        quotes.close()
    assert prices == {256265: fixedpoint.parse("23012.35")}
    assert quotes.requests == [("/quote/ltp", session.authorization)]
    day = dt.datetime.now(dt.UTC).astimezone(IST).date()
    got = resolve_subscriptions("zerodha", params, universe, day, prices)
    chain = got.underlyings[0].chains[0]
    assert chain.atm_strike == fixedpoint.parse("23000")
    assert got.underlyings[0].spot_price == prices[256265]
