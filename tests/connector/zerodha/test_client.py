"""The Kite feed against the loopback Kite simulator: records flow, tokens are
split over connections, reconnects resubscribe, the heartbeat watchdog fires,
a refused token means a new login (or a clear fatal error without credentials)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from connector.sim.kite import IST, Account, KiteSimulator
from connector.zerodha.auth import Credentials, Session, session_expiry
from connector.zerodha.client import (
    KiteConfig,
    KiteFeed,
    LoginAuth,
    StaticAuth,
    config_from_params,
    factory,
    seconds_until,
)
from connector.zerodha.errors import KiteAuthError
from pipeline import paths, wal
from pipeline import record as rec
from pipeline.errors import ConfigError
from pipeline.record import Kind, StatusReason

pytestmark = pytest.mark.integration

T = TypeVar("T")
OPEN = dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST)


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def sim_open(**kwargs: Any) -> KiteSimulator:
    kwargs.setdefault("rate", 20.0)
    kwargs.setdefault("heartbeat_s", 0.1)
    return KiteSimulator(clock=lambda: OPEN, scale=0.02, **kwargs)


def static(sim: KiteSimulator) -> StaticAuth:
    now = dt.datetime.now(dt.UTC)
    session = Session(
        user_id=sim.account.user_id,
        user_name="",
        api_key=sim.account.api_key,
        access_token=sim.issue_access_token(),
        public_token="",
        login_time=now,
        expires_at=session_expiry(now),
        api_url=sim.http_url,
    )
    return StaticAuth(session)


def config(sim: KiteSimulator, tokens: list[int], **kwargs: Any) -> KiteConfig:
    kwargs.setdefault("silence_timeout_s", 1.0)
    kwargs.setdefault("reconnect_delay_ms", 20.0)
    return KiteConfig(
        name="kite",
        ws_url=sim.ws_url,
        symbol_map={str(t): 100 + i for i, t in enumerate(tokens)},
        **kwargs,
    )


class Collector:
    """Reads a feed in the background and keeps every record."""

    def __init__(self, feed: KiteFeed) -> None:
        self.feed = feed
        self.batches: list[rec.Records] = []
        self.error: BaseException | None = None
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        stream: AsyncIterator[rec.Records] = self.feed.records()
        try:
            async for batch in stream:
                self.batches.append(batch)
        except Exception as exc:  # kept for the test to inspect
            self.error = exc

    @property
    def records(self) -> rec.Records:
        return np.concatenate(self.batches) if self.batches else rec.empty(0)

    def statuses(self) -> list[int]:
        r = self.records
        return [int(x) for x in r["aux"][r["kind"] == Kind.STATUS]]

    def data(self) -> rec.Records:
        r = self.records
        data: rec.Records = r[r["kind"] != Kind.STATUS]
        return data

    async def until(
        self, condition: Callable[[], object], what: str, timeout_s: float = 10
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not condition():
            if self.error is not None:
                raise AssertionError(f"the feed failed: {self.error!r}")
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.01)  # poll interval of a condition wait

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def test_records_flow_split_over_connections_and_resubscribe() -> None:
    async def scenario() -> None:
        async with sim_open() as sim:
            tokens = sim.tokens(7, segment="NSE")
            feed = KiteFeed(config(sim, tokens, tokens_per_connection=3), static(sim), seed=1)
            assert [len(c.tokens) for c in feed.conns] == [3, 3, 1]
            reader = Collector(feed)
            try:
                await reader.until(
                    lambda: set(reader.data()["inst"]) == set(range(100, 107)), "all 7 insts"
                )
                assert sorted(c["tokens"] for c in sim.connections()) == [1, 3, 3]
                assert reader.statuses()[:3] == [StatusReason.CONNECTED] * 3
                # Full mode: depth levels are there.
                assert np.any(reader.data()["kind"] == Kind.BOOK_LEVEL)
                # The venue drops everyone: each connection comes back and resubscribes.
                await sim.disconnect_all()
                await reader.until(
                    lambda: reader.statuses().count(StatusReason.CONNECTED) == 6, "reconnects"
                )
                assert reader.statuses().count(StatusReason.DISCONNECTED) == 3
                await reader.until(
                    lambda: sorted(c["tokens"] for c in sim.connections()) == [1, 3, 3],
                    "resubscribed",
                )
                before = len(reader.data())
                await reader.until(lambda: len(reader.data()) > before + 50, "data again")
                # Run-time changes.
                await feed.set_mode("ltp", feed.conns[0].tokens)
                await feed.unsubscribe(feed.conns[2].tokens)
                await reader.until(
                    lambda: sorted(c["tokens"] for c in sim.connections()) == [0, 3, 3],
                    "unsubscribe",
                )
                await reader.until(
                    lambda: any(c["modes"] == {"ltp": 3} for c in sim.connections()), "ltp mode"
                )
                assert feed.counters["connections"] == 6
            finally:
                await reader.close()

    run(scenario())


def test_heartbeat_watchdog_and_decode_errors() -> None:
    async def scenario() -> None:
        async with sim_open() as sim:
            tokens = sim.tokens(2, segment="NSE")
            feed = KiteFeed(config(sim, tokens, silence_timeout_s=0.5), static(sim), seed=2)
            reader = Collector(feed)
            try:
                await reader.until(lambda: len(reader.data()) > 0, "data")
                sim.send_malformed("truncated")
                await reader.until(
                    lambda: StatusReason.DECODE_ERROR in reader.statuses(), "decode error"
                )
                assert feed.counters["decode_errors"] == 1
                # Silence (no data, no heartbeats), the socket stays open: the watchdog acts.
                sim.stall(2.0)
                await reader.until(lambda: StatusReason.STALE in reader.statuses(), "stale")
                sim.unstall()
                await reader.until(
                    lambda: reader.statuses().count(StatusReason.CONNECTED) == 2, "reconnected"
                )
                assert feed.counters["watchdog_closes"] == 1
            finally:
                await reader.close()

    run(scenario())


def test_refused_token_without_credentials_is_fatal() -> None:
    async def scenario() -> None:
        async with sim_open() as sim:
            feed = KiteFeed(config(sim, sim.tokens(1, segment="NSE")), static(sim))
            sim.expire_tokens()
            reader = Collector(feed)
            await asyncio.wait_for(reader.task, 10)
            assert isinstance(reader.error, KiteAuthError)
            assert "HTTP 403" in str(reader.error) and "login zerodha" in str(reader.error)

    run(scenario())


def test_refused_token_with_credentials_logs_in_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = Account()
    tokens_seen: list[str] = []

    async def scenario() -> None:
        async with sim_open(account=account) as sim:
            env = account.env()
            creds = Credentials.from_env(env)
            auth = LoginAuth(tmp_path, creds, login_url=sim.http_url, api_url=sim.http_url)
            feed = KiteFeed(
                config(sim, sim.tokens(4, segment="NSE"), tokens_per_connection=2), auth
            )
            reader = Collector(feed)
            try:
                await reader.until(lambda: len(reader.data()) > 0, "data")
                assert sim.counters["logins"] == 1
                tokens_seen.append((await auth.session()).access_token)
                sim.expire_tokens()
                await sim.disconnect_all()
                await reader.until(
                    lambda: reader.statuses().count(StatusReason.CONNECTED) == 4, "back"
                )
                assert sim.counters["logins"] == 2  # one new login for both connections
                assert feed.counters["handshake_403"] >= 1
                before = len(reader.data())
                await reader.until(lambda: len(reader.data()) > before, "data again")
                tokens_seen.append((await auth.session()).access_token)
            finally:
                await reader.close()
        # Without credentials, the cache alone serves (still valid)...
        cached = LoginAuth(tmp_path, None, api_url=sim.http_url)
        assert (await cached.session()).user_id == account.user_id
        # ...a refused token with nothing newer in the cache is a clear error...
        with pytest.raises(KiteAuthError, match=r"refused.*login zerodha"):
            await cached.session(refresh=True)
        # ...and so is an empty data dir.
        with pytest.raises(KiteAuthError, match="no valid Zerodha session"):
            await LoginAuth(tmp_path / "empty", None).session()

    run(scenario())
    secrets = [*tokens_seen, account.password, account.api_secret, account.totp_secret]
    assert len(set(tokens_seen)) == 2
    for record in caplog.records:
        for secret in secrets:
            assert secret not in record.getMessage(), record.getMessage()


@pytest.mark.unit
def test_config_from_params() -> None:
    cfg = config_from_params(
        "kite",
        {
            "ws_url": "ws://127.0.0.1:1",
            "tokens": [256265, 408065],
            "first_inst": 10,
            "modes": {"256265": "quote"},
        },
    )
    assert cfg.token_map == {256265: 10, 408065: 11}
    assert cfg.mode_of(256265) == "quote" and cfg.mode_of(408065) == "full"
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        config_from_params("kite", {"ws_url": "ws://x", "tokens": [1], "colour": 1})
    with pytest.raises(ConfigError, match="mode 'fast'"):
        config_from_params("kite", {"ws_url": "ws://x", "tokens": [1], "mode": "fast"})
    with pytest.raises(ConfigError, match="at most 9000"):
        config_from_params("kite", {"ws_url": "ws://x", "tokens": list(range(1, 9002))})


@pytest.mark.unit
@pytest.mark.parametrize(
    ("now_ist", "expected_s"),
    [
        ("2026-12-07T08:00:00", 45 * 60),  # later today
        ("2026-12-07T08:45:00", 24 * 3600),  # the minute itself has been: tomorrow's
        ("2026-12-07T09:00:00", 23 * 3600 + 45 * 60),  # tomorrow
        ("2026-12-31T23:59:30", 8 * 3600 + 45 * 60 + 30),  # across a year
    ],
)
def test_seconds_until_the_next_resolution(now_ist: str, expected_s: float) -> None:
    now = dt.datetime.fromisoformat(now_ist).replace(tzinfo=IST).astimezone(dt.UTC)
    assert seconds_until(dt.time(8, 45), now) == expected_s


@pytest.mark.unit
def test_follow_maps_new_tokens_keeps_dropped_ones_ids_and_moves_modes() -> None:
    from connector.instruments.subscribe import Resolution
    from tests.connector.zerodha.kite_encoder import WirePacket, encode_frame, encode_packet

    cfg = config_from_params(
        "kite", {"ws_url": "ws://127.0.0.1:1", "tokens": [101, 102, 103], "first_inst": 1}
    )
    now = dt.datetime.now(dt.UTC)
    session = Session("u", "", "k", "t", "", now, session_expiry(now), "http://127.0.0.1:1")
    feed = KiteFeed(cfg, StaticAuth(session))  # not started: no connection is opened
    nextday = Resolution(
        underlyings=(),
        token_inst={102: 2, 103: 3, 104: 7},
        modes={103: "ltp"},
        names={2: "NFO:B", 3: "NFO:C", 7: "NFO:D"},
    )
    assert asyncio.run(feed.follow(nextday)) == (1, 1)  # +104, -101
    assert feed.modes == {102: "full", 103: "ltp", 104: "full"}
    assert feed.instruments() == {2: "NFO:B", 3: "NFO:C", 7: "NFO:D"}
    assert feed.instruments_version == 1
    # A tick of the dropped token still in flight keeps its old id; the new one has its id.
    frame = encode_frame(
        [encode_packet(WirePacket(length=8, token=t, last_price=100)) for t in (101, 104)]
    )
    assert feed.decoder.decode(frame, 0)["inst"].tolist() == [1, 7]


@pytest.mark.unit
def test_resolve_at_is_checked_before_any_io(tmp_path: Path) -> None:
    from pipeline.adapter import AdapterContext

    params = {
        "ws_url": "ws://127.0.0.1:1",
        "api_url": "http://127.0.0.1:1",
        "subscribe": [{"underlying": "NIFTY", "spot": True}],
    }
    context = AdapterContext("zerodha", 3, tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match=r'feeds\.zerodha\.params\.resolve_at must be "HH:MM"'):
        factory({**params, "resolve_at": "quarter to nine"}, context)
    assert not (tmp_path / "nothing-here").exists()


@pytest.mark.system
def test_the_pipeline_runs_the_kite_feed_on_the_simulator(tmp_path: Path) -> None:
    """The config the README gives: the simulator as a service caching a
    session, the feed without ZERODHA_* credentials, records in the WAL."""

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
            return port

    port, ws_port = free_port(), free_port()
    tokens = [256265, 260105, 738561, 408065]
    config = tmp_path / "kite.toml"
    config.write_text(
        f"""
[ring]
capacity = 8192

[wal]
fsync = "never"
cpu = "none"

[[services]]
name = "sim-kite"
target = "connector.sim.kite:service"
[services.params]
port = {port}
ws_port = {ws_port}
clock = "open"
rate = 10
scale = 0.02
session_cache = true

[[feeds]]
name = "zerodha"
adapter = "connector.zerodha.client:factory"
src = 3
[feeds.params]
ws_url = "ws://127.0.0.1:{ws_port}"
api_url = "http://127.0.0.1:{port}"
login_url = "http://127.0.0.1:{port}"
tokens = {tokens}
first_inst = 201
mode = "full"
"""
    )
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERODHA_")}
    command = [sys.executable, "-m", "connector.cli", "start", "--foreground"]
    command += ["--config", str(config), "--data-dir", str(data), "--duration", "5"]
    done = subprocess.run(
        command,
        capture_output=True,
        timeout=90,
        check=False,
        env=env,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, output[-3000:]
    records = np.concatenate(list(wal.WalReader(paths.market_wal_dir(data)).records(src=3)))
    data_records = records[records["kind"] != Kind.STATUS]
    assert set(data_records["inst"].tolist()) == {201, 202, 203, 204}
    assert np.any(data_records["kind"] == Kind.BOOK_LEVEL)  # full mode depth for equities
    statuses = records[records["kind"] == Kind.STATUS]["aux"].tolist()
    assert statuses[0] == StatusReason.CONNECTED


def test_end_to_end_totp_login_instruments_9000_full_tokens_disconnect_and_stall(
    tmp_path: Path,
) -> None:
    """The issue's whole path: TOTP login, the instruments download, 9000 tokens
    in full mode over 3 connections, then a forced disconnect and a silent stall,
    each recovered with every token resubscribed and the loss declared."""
    import httpx

    from connector.instruments.kite_csv import parse_kite_csv
    from connector.zerodha.auth import ensure_session

    account = Account()

    async def scenario() -> None:
        async with KiteSimulator(
            clock=lambda: OPEN, scale=0.3, rate=2.0, heartbeat_s=0.1, account=account
        ) as sim:
            creds = Credentials.from_env(account.env())
            login = await ensure_session(
                creds, tmp_path, login_url=sim.http_url, api_url=sim.http_url
            )
            assert not login.reused and sim.counters["logins"] == 1
            session = login.session
            async with httpx.AsyncClient() as http:
                resp = await http.get(
                    f"{sim.http_url}/instruments",
                    headers={
                        "X-Kite-Version": "3",
                        "Authorization": f"token {session.api_key}:{session.access_token}",
                    },
                )
            resp.raise_for_status()
            table = parse_kite_csv(resp.content)
            assert len(table) > 9000
            tokens = [int(t) for t in table.col("token")[:9000].tolist()]
            auth = LoginAuth(tmp_path, creds, login_url=sim.http_url, api_url=sim.http_url)
            feed = KiteFeed(config(sim, tokens, mode="full", silence_timeout_s=1.0), auth)
            assert [len(c.tokens) for c in feed.conns] == [3000, 3000, 3000]
            reader = Collector(feed)
            every = set(range(100, 9100))

            def subscribed() -> bool:
                return sorted(c["tokens"] for c in sim.connections()) == [3000, 3000, 3000]

            async def all_tokens_tick() -> None:
                start = len(reader.batches)
                await reader.until(
                    lambda: (
                        every
                        <= set(
                            np.concatenate(reader.batches[start:] or [rec.empty(0)])[
                                "inst"
                            ].tolist()
                        )
                    ),
                    "a tick of every one of the 9000 tokens",
                    timeout_s=30,
                )

            try:
                await all_tokens_tick()
                assert subscribed()
                assert sim.counters["logins"] == 1, "the feed reused the cached session"
                full = reader.data()
                assert np.any(full["kind"] == Kind.BOOK_LEVEL) and np.any(full["kind"] == Kind.OI)
                # A forced disconnect: all three come back with all their tokens.
                await sim.disconnect_all()
                await reader.until(
                    lambda: reader.statuses().count(StatusReason.CONNECTED) == 6, "reconnected"
                )
                assert reader.statuses().count(StatusReason.DISCONNECTED) == 3
                await reader.until(subscribed, "resubscribed after the disconnect")
                await all_tokens_tick()
                # A silent stall (socket open, nothing sent): the watchdog reconnects.
                sim.stall(3.0)
                await reader.until(
                    lambda: reader.statuses().count(StatusReason.STALE) >= 3, "STALE declared"
                )
                sim.unstall()
                await reader.until(
                    lambda: reader.statuses().count(StatusReason.CONNECTED) == 9,
                    "reconnected after the stall",
                    timeout_s=20,
                )
                await reader.until(subscribed, "resubscribed after the stall")
                await all_tokens_tick()
                assert feed.counters["watchdog_closes"] == 3
            finally:
                await reader.close()

    run(scenario(), timeout_s=110)
