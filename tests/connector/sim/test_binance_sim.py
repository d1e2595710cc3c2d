"""The loopback Binance simulator, driven by real clients (websockets, httpx,
a sans-I/O protocol client) on port 0 and checked with the project's own
decoder, book-sync state machine and book builder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.uri import parse_uri

from connector.binance import capture
from connector.binance.sync import BookSync, Decision, State
from connector.binance.wire import DecodeError, Decoder
from connector.cli import main
from connector.sim.binance import (
    BinanceSimulator,
    Faults,
    SimBook,
    SimulatorError,
    WeightLimiter,
    depth_weight,
    parse_stream,
)
from pipeline import fixedpoint as fp
from pipeline.book import BookState
from tests.conftest import Children, shared_fixture
from tests.helpers import run_bounded as run
from tests.helpers import until

pytestmark = pytest.mark.integration

T = TypeVar("T")
CLI = Path(sys.executable).parent / "connector-pipeline"


async def recv_json(ws: ClientConnection, timeout_s: float = 5.0) -> Any:
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def reply_to(ws: ClientConnection, request_id: int, timeout_s: float = 5.0) -> Any:
    """The reply with ``id`` (stream frames may come first)."""
    async with asyncio.timeout(timeout_s):
        while True:
            msg = orjson.loads(await ws.recv())
            if isinstance(msg, dict) and msg.get("id") == request_id:
                return msg


class SyncClient:
    """A client following PROTOCOLS.md's sync rules with the project's Decoder,
    BookSync and BookState; records get src=1 and increasing seq like
    connector/binance/verify.py's _publish."""

    def __init__(self, sim: BinanceSimulator, symbols: list[str], limit: int = 1000) -> None:
        self.sim = sim
        self.inst = {s: i for i, s in enumerate(symbols, 1)}
        self.decoder = Decoder(self.inst, market=sim.market)
        self.syncs = {s: BookSync(i, futures=sim.market == "usdm") for s, i in self.inst.items()}
        self.books = BookState()
        self.seq = 0
        self.gaps: Counter[str] = Counter()
        self.decode_errors = 0
        self.snapshot_errors: list[Exception] = []
        self.frames = 0
        self.url = sim.stream_url(f"{s.lower()}@depth@100ms" for s in symbols)
        self.depth_url = sim.rest_url + sim.rest_prefix + "/depth"
        self.limit = limit
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SyncClient:
        self.http = httpx.AsyncClient()
        self.ws = await connect(self.url)
        self.reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in [self.reader, *self._tasks]:
            task.cancel()
        await asyncio.gather(self.reader, *self._tasks, return_exceptions=True)
        await self.ws.close()
        await self.http.aclose()

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                self.frames += 1
                now = time.time_ns()
                try:
                    decoded = self.decoder.decode(frame, now)
                except DecodeError:
                    self.decode_errors += 1
                    continue
                if decoded.event == "depthUpdate":
                    sync = self.syncs[decoded.symbol]
                    self._apply(decoded.symbol, sync.on_depth(decoded.records, now))

    def _apply(self, symbol: str, decision: Decision) -> None:
        if decision.gap:
            self.gaps[symbol] += 1
        for batch in decision.publish:
            batch = batch.copy()
            batch["src"] = 1
            batch["seq"] = np.arange(self.seq + 1, self.seq + 1 + len(batch), dtype=np.uint64)
            self.seq += len(batch)
            self.books.apply(batch)
        if decision.fetch_snapshot:
            task = asyncio.create_task(self._snapshot(symbol))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _snapshot(self, symbol: str) -> None:
        try:
            params = {"symbol": symbol, "limit": self.limit}
            response = await self.http.get(self.depth_url, params=params)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.snapshot_errors.append(exc)  # the tests assert there are none
            return
        now = time.time_ns()
        decoded = self.decoder.snapshot(response.content, symbol, now)
        self._apply(symbol, self.syncs[symbol].on_snapshot(decoded.records, now))

    def book(self, symbol: str) -> tuple[dict[int, int], dict[int, int]]:
        book = self.books.books[self.inst[symbol]]
        return {p: q for p, (q, _) in book.bids.items()}, {p: q for p, (q, _) in book.asks.items()}

    def synced(self, symbol: str, applied: int = 1) -> bool:
        sync = self.syncs[symbol]
        book = self.books.books.get(self.inst[symbol])
        return (
            sync.state == State.SYNCED
            and book is not None
            and book.valid
            and sync.stats.applied >= applied
        )

    def matches_truth(self, symbol: str) -> bool:
        """The built book equals the simulator's book at the client's last applied id."""
        if not self.synced(symbol):
            return False
        try:
            truth = self.sim.truth(symbol, at_update_id=self.syncs[symbol].last_u)
        except KeyError:
            return False  # a USD-M snapshot labelled with the next event's U: no event applied yet
        return self.book(symbol) == truth.fixed()


# ---------------------------------------------------------------------------
# pure cores (fast)


@pytest.mark.parametrize("futures", [False, True])
def test_sim_book_is_never_crossed_and_ids_chain(futures: bool) -> None:
    book = SimBook(
        random.Random(7), start_ticks=6_000_000, levels=20, futures=futures, history=5000
    )
    states = {book.last_update_id: (dict(book.bids), dict(book.asks))}
    prev_u = book.last_update_id
    for _ in range(3000):
        event = book.step()
        assert event.prev_last_id == prev_u
        assert event.first_id > prev_u and event.last_id >= event.first_id
        if not futures:
            assert event.first_id == prev_u + 1, "spot: U == previous u + 1"
        assert max(book.bids) < min(book.asks), "never crossed"
        assert [p for p, _ in event.bids] == sorted((p for p, _ in event.bids), reverse=True)
        assert len({p for p, _ in event.bids}) == len(event.bids), "one change per price"
        prev_u = event.last_id
        if len(states) < 50 and random.Random(prev_u).random() < 0.05:
            states[prev_u] = (dict(book.bids), dict(book.asks))
    for update_id, state in states.items():
        assert book.at(update_id) == state, "the inverse history rebuilds past books"
    with pytest.raises(KeyError):
        book.at(book.next_first_id)  # the next event's changes are not known yet
    if futures and book.next_first_id > prev_u + 1:
        assert book.at(prev_u + 1) == (book.bids, book.asks), "ids between events: the last state"
    with pytest.raises(KeyError):
        book.at(min(states) - 1)  # older than the history
    assert 5 <= len(book.bids) <= 45 and 5 <= len(book.asks) <= 45, "the book stays near its size"


def test_same_seed_same_book_different_seed_different_book() -> None:
    a = BinanceSimulator(seed=3)
    b = BinanceSimulator(seed=3)
    c = BinanceSimulator(seed=4)
    a.advance(50)
    b.advance(50)
    c.advance(50)
    assert a.truth("BTCUSDT") == b.truth("BTCUSDT")
    assert a.truth("BTCUSDT") != c.truth("BTCUSDT")


def test_faults_parse_and_validate() -> None:
    faults = Faults.parse("drop=0.01, duplicate=0.02,stall_seconds=3")
    assert (faults.drop, faults.duplicate, faults.stall_seconds) == (0.01, 0.02, 3.0)
    with pytest.raises(SimulatorError, match="unknown fault 'dorp'"):
        Faults.parse("dorp=0.1")
    with pytest.raises(SimulatorError, match="between 0 and 1"):
        faults.drop = 1.5
    with pytest.raises(SimulatorError, match="loopback"):
        BinanceSimulator(host="0.0.0.0")


def test_weight_limiter_429_then_418_then_a_new_window() -> None:
    limiter = WeightLimiter(10, window_s=60, ban_after=2, ban_s=120)
    assert [limiter.charge(5, 0.5)[:2] for _ in range(2)] == [(200, 5), (200, 10)]
    status, used, retry = limiter.charge(5, 1.0)
    assert (status, used, retry) == (429, 15, 59)
    assert limiter.charge(5, 2.0)[0] == 429
    status, _, retry = limiter.charge(5, 3.0)
    assert (status, retry) == (418, 120), "kept asking while told to slow down: banned"
    assert limiter.charge(1, 61.0)[0] == 418, "a ban outlives the window"
    assert limiter.charge(1, 124.0)[:2] == (200, 1)
    assert [depth_weight("spot", n) for n in (100, 500, 1000, 5000)] == [5, 25, 50, 250]
    assert [depth_weight("usdm", n) for n in (50, 100, 500, 1000)] == [2, 5, 10, 20]


def test_stream_names() -> None:
    assert parse_stream("BTCUSDT@depth@100ms", "spot").name == "btcusdt@depth@100ms"
    assert parse_stream("btcusdt@kline_1m", "usdm").param == "1m"
    assert parse_stream("btcusdt@markPrice@1s", "usdm").kind == "markPrice"
    for bad, market in [
        ("btcusdt@markPrice", "spot"),
        ("btcusdt@depth@250ms", "spot"),
        ("btcusdt@kline_7m", "spot"),
        ("btcusdt", "spot"),
        ("@trade", "spot"),
    ]:
        with pytest.raises(ValueError):
            parse_stream(bad, market)


# ---------------------------------------------------------------------------
# wire format


def _streams(market: str, symbol: str) -> list[str]:
    s = symbol.lower()
    names = [f"{s}@depth@100ms", f"{s}@trade", f"{s}@aggTrade", f"{s}@bookTicker", f"{s}@kline_1m"]
    return names + ([f"{s}@markPrice@1s"] if market == "usdm" else [])


EVENTS = {"spot": {"depthUpdate", "trade", "aggTrade", "bookTicker", "kline"}}
EVENTS["usdm"] = EVENTS["spot"] | {"markPriceUpdate"}


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_every_stream_type_decodes_with_zero_errors(market: str) -> None:
    async def scenario() -> None:
        async with BinanceSimulator(market=market, rate=40, seed=1) as sim:
            decoder = Decoder({"BTCUSDT": 1, "ETHUSDT": 2}, market=market)
            streams = _streams(market, "BTCUSDT") + _streams(market, "ETHUSDT")
            urls = [sim.stream_url(streams)]
            if (
                market == "usdm"
            ):  # the 2026 split: depth and bookTicker on /public, the rest on /market
                urls.append(
                    sim.stream_url(
                        [s for s in streams if "depth" in s or "bookTicker" in s],
                        path="/public/stream",
                    )
                )
                urls.append(
                    sim.stream_url(
                        [s for s in streams if not ("depth" in s or "bookTicker" in s)],
                        path="/market/stream",
                    )
                )
            seen: Counter[tuple[str, str]] = Counter()
            errors = 0
            raw_tickers: list[dict[str, Any]] = []
            for url in urls:
                async with connect(url) as ws:
                    wanted = {(e, s) for e in EVENTS[market] for s in ("BTCUSDT", "ETHUSDT")}
                    if "/public/" in url:
                        wanted = {w for w in wanted if w[0] in ("depthUpdate", "bookTicker")}
                    elif "/market/" in url:
                        wanted = {w for w in wanted if w[0] not in ("depthUpdate", "bookTicker")}
                    got: set[tuple[str, str]] = set()
                    async with asyncio.timeout(8):
                        while not wanted <= got:
                            frame = await ws.recv()
                            envelope = orjson.loads(frame)
                            assert set(envelope) == {"stream", "data"}
                            try:
                                decoded = decoder.decode(frame, time.time_ns())
                            except DecodeError:
                                errors += 1
                                continue
                            assert decoded.stream == envelope["stream"]
                            got.add((decoded.event, decoded.symbol))
                            seen[decoded.event] += 1
                            if decoded.event == "bookTicker":
                                raw_tickers.append(envelope["data"])
            assert errors == 0
            assert set(seen) == EVENTS[market]
            if market == "spot":
                assert all("e" not in t and "E" not in t for t in raw_tickers), (
                    "spot bookTicker has no e/E"
                )
            else:
                assert all(t["e"] == "bookTicker" and "E" in t and "T" in t for t in raw_tickers)

            # A raw /ws/<stream> connection gets bare events; SUBSCRIBE/UNSUBSCRIBE at runtime.
            async with connect(f"{sim.ws_url}/ws/btcusdt@depth@100ms") as ws:
                event = await recv_json(ws)
                assert event["e"] == "depthUpdate" and event["s"] == "BTCUSDT"
                assert ("pu" in event) == (market == "usdm") and ("T" in event) == (
                    market == "usdm"
                )
                decoder.decode_event(event, 0)
                await ws.send(
                    orjson.dumps(
                        {"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 7}
                    ).decode()
                )
                assert await reply_to(ws, 7) == {"result": None, "id": 7}
                await ws.send(
                    orjson.dumps(
                        {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 8}
                    ).decode()
                )
                assert await reply_to(ws, 8) == {"result": None, "id": 8}
                await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 9}).decode())
                assert await reply_to(ws, 9) == {"result": ["ethusdt@aggTrade"], "id": 9}
                await ws.send(
                    b'{"method": "SUBSCRIBE", "params": ["btcusdt@nope"], "id": 10}'.decode()
                )
                assert (await reply_to(ws, 10))["error"]["code"] == 2

            # Decimals like Binance: spot always 8; USD-M the symbol's precision (BTCUSDT 0.10 / 0.001).
            truth = sim.truth("BTCUSDT")
            price, qty = truth.bids[0]
            if market == "spot":
                assert len(price.split(".")[1]) == 8 and len(qty.split(".")[1]) == 8
            else:
                assert len(price.split(".")[1]) == 2 and len(qty.split(".")[1]) == 3
                assert fp.parse(price) % fp.parse("0.10") == 0

            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                info = (await http.get(f"{sim.rest_prefix}/exchangeInfo")).json()
                btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
                assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == (
                    "TRADING",
                    "BTC",
                    "USDT",
                )
                filters = {f["filterType"]: f for f in btc["filters"]}
                assert fp.parse(filters["PRICE_FILTER"]["tickSize"]) > 0
                assert fp.parse(filters["LOT_SIZE"]["stepSize"]) > 0
                if market == "usdm":
                    assert btc["contractType"] == "PERPETUAL" and isinstance(
                        btc["deliveryDate"], int
                    )
                assert "serverTime" in (await http.get(f"{sim.rest_prefix}/time")).json()

    run(scenario())


def test_partial_depth_has_binance_shape() -> None:
    async def scenario() -> None:
        async with (
            BinanceSimulator(market="spot", rate=50) as sim,
            connect(f"{sim.ws_url}/ws/btcusdt@depth5@100ms") as ws,
        ):
            event = await recv_json(ws)
            assert set(event) == {"lastUpdateId", "bids", "asks"}
            assert len(event["bids"]) == 5 and len(event["asks"]) == 5

    run(scenario())


# ---------------------------------------------------------------------------
# book sync against the truth


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_a_client_following_the_sync_rules_rebuilds_the_exact_book(market: str) -> None:
    symbols = ["BTCUSDT", "ETHUSDT"]

    async def scenario() -> None:
        async with (
            # USD-M snapshots labelled with the next event's U, as some recorded ones are
            # (the other tests use the last u, as the rest are).
            BinanceSimulator(market=market, rate=100, seed=2, snapshot_next_u=1.0) as sim,
            SyncClient(sim, symbols) as client,
        ):
            for symbol in symbols:
                await until(lambda s=symbol: client.synced(s, applied=30), what=f"{symbol} synced")
                assert client.matches_truth(symbol)
            # Checked again while events keep flowing, after each new event applied.
            for _ in range(20):
                applied = client.syncs["BTCUSDT"].stats.applied
                await until(
                    lambda a=applied: client.syncs["BTCUSDT"].stats.applied > a, what="an event"
                )
                assert all(client.matches_truth(s) for s in symbols)
            # Paused: the client catches up to the simulator's last id and equals its current book.
            sim.pause()
            for symbol in symbols:
                last = sim.last_update_id(symbol)
                await until(lambda s=symbol, u=last: client.syncs[s].last_u == u, what="caught up")
                assert client.book(symbol) == sim.truth(symbol).fixed()
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                body = (await http.get("/sim/truth", params={"symbol": "BTCUSDT"})).json()
                assert body == sim.truth("BTCUSDT").as_dict()
                # The snapshot is the current book, labelled with the last event's u
                # (USD-M here: with the next event's U, see snapshot_next_u).
                params = {"symbol": "BTCUSDT", "limit": 5}
                snapshot = (await http.get(f"{sim.rest_prefix}/depth", params=params)).json()
                truth = sim.truth("BTCUSDT")
                ids = sim.symbol_stats("BTCUSDT")
                label = ids["last_update_id"] if market == "spot" else ids["next_first_id"]
                assert (
                    snapshot["lastUpdateId"] == label
                    and truth.last_update_id == ids["last_update_id"]
                )
                assert snapshot["bids"] == [list(x) for x in truth.bids[:5]]
                assert snapshot["asks"] == [list(x) for x in truth.asks[:5]]
                assert ("E" in snapshot and "T" in snapshot) == (market == "usdm")
            assert client.decode_errors == 0 and sum(client.gaps.values()) == 0
            assert client.snapshot_errors == []

    run(scenario())


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_each_dropped_event_is_one_gap_and_the_client_resyncs(market: str) -> None:
    async def scenario() -> None:
        async with (
            BinanceSimulator(market=market, rate=100, seed=3) as sim,
            SyncClient(sim, ["BTCUSDT", "ETHUSDT"]) as client,
        ):
            await until(
                lambda: client.synced("BTCUSDT", 5) and client.synced("ETHUSDT", 5), what="synced"
            )
            for n in range(1, 4):
                applied = client.syncs["BTCUSDT"].stats.applied
                sim.inject("drop", "BTCUSDT")
                await until(lambda n=n: client.gaps["BTCUSDT"] == n, what=f"gap {n}")
                await until(
                    lambda a=applied: client.synced("BTCUSDT", a + 3),
                    what=f"resynced after gap {n}",
                )
                assert client.matches_truth("BTCUSDT")
            stats = sim.symbol_stats("BTCUSDT")
            assert stats["drop"] == stats["drop_gaps"] == 3 == client.gaps["BTCUSDT"]
            assert client.gaps["ETHUSDT"] == 0 and sim.symbol_stats("ETHUSDT")["drop"] == 0

            # Random drops: never more gaps than the simulator made, at least one, and the book converges.
            sim.faults.drop = 0.2
            await until(lambda: sim.symbol_stats("ETHUSDT")["drop_gaps"] >= 5, what="random drops")
            sim.faults.drop = 0.0
            made = sim.symbol_stats("ETHUSDT")["drop_gaps"]
            await until(lambda: client.gaps["ETHUSDT"] >= 1, what="a gap seen")
            await until(
                lambda: (
                    client.matches_truth("ETHUSDT") and client.syncs["ETHUSDT"].stats.applied > 0
                ),
                what="converged",
            )
            assert 1 <= client.gaps["ETHUSDT"] <= made
            assert sim.stats()["faults"]["drop"] >= 3 + made

    run(scenario())


def test_duplicates_are_dropped_as_old_and_reorders_cause_one_resync() -> None:
    async def scenario() -> None:
        async with (
            BinanceSimulator(market="spot", rate=100, seed=4) as sim,
            SyncClient(sim, ["BTCUSDT"]) as client,
        ):
            sync = client.syncs["BTCUSDT"]
            await until(lambda: client.synced("BTCUSDT", 5), what="synced")
            old = sync.stats.dropped_old
            sim.inject("duplicate", "BTCUSDT", count=3)
            await until(lambda: sync.stats.dropped_old >= old + 3, what="duplicates dropped")
            assert client.gaps["BTCUSDT"] == 0 and client.matches_truth("BTCUSDT")
            assert sim.symbol_stats("BTCUSDT")["duplicate"] == 3

            applied = sync.stats.applied
            sim.inject("reorder", "BTCUSDT")
            await until(lambda: client.gaps["BTCUSDT"] == 1, what="the reorder is a gap")
            await until(lambda: client.synced("BTCUSDT", applied + 5), what="resynced")
            assert client.matches_truth("BTCUSDT")
            assert sim.symbol_stats("BTCUSDT")["reorder"] == 1 and client.gaps["BTCUSDT"] == 1

    run(scenario())


# ---------------------------------------------------------------------------
# connection faults


def test_malformed_frames_are_decode_errors_counted_exactly() -> None:
    async def scenario() -> None:
        async with (
            BinanceSimulator(market="spot", rate=100, seed=5) as sim,
            SyncClient(sim, ["BTCUSDT"]) as client,
        ):
            await until(lambda: client.synced("BTCUSDT", 5), what="synced")
            assert sim.send_malformed(4) == 4
            sim.faults.malformed = 0.2
            await until(lambda: sim.injected["malformed"] >= 15, what="random garbage")
            sim.faults.malformed = 0.0
            sim.pause()
            conn = sim.connections()[0]
            await until(
                lambda: (
                    client.frames == sim.connections()[0]["sent"]
                    and not sim.connections()[0]["queued"]
                ),
                what="all frames received",
            )
            assert conn["id"] == sim.connections()[0]["id"]
            assert client.decode_errors == sim.injected["malformed"]
            assert client.gaps["BTCUSDT"] == 0, "garbage frames are extra frames, not lost events"
            assert client.matches_truth("BTCUSDT")

    run(scenario())


def test_disconnect_closes_without_a_close_frame_and_stall_keeps_the_socket_open() -> None:
    async def scenario() -> None:
        async with BinanceSimulator(market="spot", rate=100, ping_interval_s=0.2) as sim:
            async with connect(sim.stream_url(["btcusdt@depth@100ms"]), ping_interval=None) as ws:
                await recv_json(ws)
                pings = sim.connections()[0]["pings"]
                sim.stall()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.6)  # silent for 3 ping intervals
                assert sim.connections()[0]["pings"] == pings, "no server pings during a stall"
                # A data stall: the connection still answers pings, only a data watchdog notices.
                await asyncio.wait_for(await ws.ping(), 2)
                assert sim.stats()["connections"]["open"] == 1 and ws.close_code is None
                sim.unstall()
                assert (await recv_json(ws))["data"]["e"] == "depthUpdate"
                assert sim.stats()["stall_discarded"] > 0 and sim.injected["stall"] == 1

                # A blackhole: nothing read either, so our pings go unanswered until it ends.
                sim.stall(blackhole=True)
                pong = await ws.ping()
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(pong), 0.4)
                assert ws.close_code is None, "no close frame"
                sim.unstall()
                await asyncio.wait_for(pong, 2)
                assert (await recv_json(ws))["data"]["e"] == "depthUpdate"

            async with connect(sim.stream_url(["btcusdt@depth@100ms"])) as ws:
                await recv_json(ws)
                assert await sim.disconnect_all() == 1
                with pytest.raises(ConnectionClosedError) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is None, "aborted: no close frame"
                assert sim.injected["disconnect"] == 1 and sim.stats()["connections"]["open"] == 0

            # Stalls on a timer end by themselves.
            async with connect(sim.stream_url(["btcusdt@depth@100ms"])) as ws:
                await recv_json(ws)
                sim.stall(0.3)
                assert sim.stalled
                await until(lambda: not sim.stalled, timeout_s=3, what="the stall to end")
                assert (await recv_json(ws))["stream"] == "btcusdt@depth@100ms"

    run(scenario())


class RawClient:
    """A WebSocket client at the protocol level (websockets' sans-I/O
    ClientProtocol): websockets' asyncio client always answers pings in its
    protocol layer, so a client that does not is built from the protocol."""

    def __init__(self, url: str, *, answer_pings: bool) -> None:
        self.uri = parse_uri(url)
        self.answer_pings = answer_pings
        self.pings: list[float] = []
        self.messages = 0
        self.closed_at: float | None = None

    async def __aenter__(self) -> RawClient:
        self.reader, self.writer = await asyncio.open_connection(self.uri.host, self.uri.port)
        self.protocol = ClientProtocol(self.uri)
        self.protocol.send_request(self.protocol.connect())
        self.writer.write(b"".join(self.protocol.data_to_send()))
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        handshake_done = False
        while True:
            data = await self.reader.read(65536)
            if not data:
                self.closed_at = loop.time()
                return
            self.protocol.receive_data(data)
            for event in self.protocol.events_received():
                if isinstance(event, Frame) and event.opcode == Opcode.PING:
                    self.pings.append(loop.time())
                elif isinstance(event, Frame) and event.opcode == Opcode.TEXT:
                    self.messages += 1
                else:
                    handshake_done = True
            outgoing = self.protocol.data_to_send()
            if self.answer_pings or not handshake_done:
                self.writer.write(b"".join(outgoing))


def test_server_pings_at_the_interval_and_drops_a_client_that_never_pongs() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with BinanceSimulator(
            market="spot", rate=20, ping_interval_s=0.3, pong_timeout_s=0.5, close_timeout_s=0.3
        ) as sim:
            url = sim.stream_url(["btcusdt@depth@100ms"])
            async with RawClient(url, answer_pings=True) as good:
                await until(lambda: len(good.pings) >= 4, what="4 pings")
                gaps = np.diff(good.pings)
                assert (gaps >= 0.25).all() and (gaps <= 1.0).all(), gaps
                assert good.closed_at is None and good.messages > 0
            started = loop.time()
            async with RawClient(url, answer_pings=False) as silent:
                await until(
                    lambda: silent.closed_at is not None,
                    what="the server to drop the silent client",
                )
                assert silent.pings, "it was pinged"
                assert silent.closed_at is not None
                elapsed = silent.closed_at - started
                assert 0.3 + 0.5 <= elapsed <= 4.0, elapsed
            assert sim.closes["pong_timeout"] == 1

    run(scenario())


def test_the_server_closes_a_connection_after_its_lifetime() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with BinanceSimulator(market="usdm", rate=20, lifetime_s=1.5) as sim:
            started = loop.time()
            async with connect(sim.stream_url(["btcusdt@depth@100ms"])) as ws:
                frames = 0
                with contextlib.suppress(ConnectionClosed):
                    async for _ in ws:
                        frames += 1
                elapsed = loop.time() - started
                assert 1.5 <= elapsed <= 5.0, elapsed
                assert (
                    frames > 5 and ws.close_code == 1000 and "lifetime" in (ws.close_reason or "")
                )
            assert sim.closes["lifetime"] == 1

    run(scenario())


def test_too_many_incoming_messages_or_streams() -> None:
    async def scenario() -> None:
        async with BinanceSimulator(market="spot", rate=10) as sim:
            async with connect(f"{sim.ws_url}/ws") as ws:
                for i in range(6):  # the 6th in one second is one too many
                    await ws.send(orjson.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}).decode())
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            assert sim.closes["too_many_messages"] == 1

            many = [f"s{i}usdt@trade" for i in range(1025)]
            async with connect(f"{sim.ws_url}/ws") as ws:
                await ws.send(
                    orjson.dumps({"method": "SUBSCRIBE", "params": many, "id": 1}).decode()
                )
                reply = await recv_json(ws)
                assert reply["id"] == 1 and "1024" in reply["error"]["msg"]
                await ws.send(
                    orjson.dumps({"method": "SUBSCRIBE", "params": many[:1024], "id": 2}).decode()
                )
                assert await recv_json(ws) == {"result": None, "id": 2}
            # 1024 streams do not fit in a URL: websockets (like Binance) limits
            # the request line to 8 KiB. The stream limit on URLs, with a smaller limit:
            with pytest.raises(InvalidStatus) as rejected:
                await connect(f"{sim.ws_url}/stream?streams={'/'.join(many)}")
            assert rejected.value.response.status_code == 414
            sim.max_streams = 3
            with pytest.raises(InvalidStatus) as rejected:
                await connect(f"{sim.ws_url}/stream?streams={'/'.join(many[:4])}")
            assert rejected.value.response.status_code == 400
            assert b"at most 3" in rejected.value.response.body
            with pytest.raises(InvalidStatus) as rejected:
                await connect(f"{sim.ws_url}/stream?streams=btcusdt@nonsense")
            assert rejected.value.response.status_code == 400

    run(scenario())


# ---------------------------------------------------------------------------
# REST


def test_rest_weight_header_429_then_418_and_planned_errors() -> None:
    async def scenario() -> None:
        async with (
            BinanceSimulator(market="spot", rate=10, weight_limit=30, ban_after=2, ban_s=30) as sim,
            httpx.AsyncClient(base_url=sim.rest_url) as http,
        ):
            assert (await http.get("/api/v3/depth", params={"symbol": "NOPE"})).json()[
                "code"
            ] == -1121
            assert (await http.get("/api/v3/depth")).json()["code"] == -1102
            sim.fail_rest(500)
            failed = await http.get("/api/v3/time")
            assert failed.status_code == 500 and "X-MBX-USED-WEIGHT-1M" in failed.headers
            sim.fail_rest(429, retry_after_s=2)
            throttled = await http.get("/api/v3/time")
            assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "2"
            fine = await http.get("/api/v3/time")
            assert fine.status_code == 200, "one planned failure"
            assert (
                await http.get("/fapi/v1/depth", params={"symbol": "BTCUSDT"})
            ).status_code == 404
            used = [int(fine.headers["X-MBX-USED-WEIGHT-1M"])]
            while True:
                response = await http.get(
                    "/api/v3/depth", params={"symbol": "BTCUSDT", "limit": 100}
                )
                if response.status_code != 200:
                    break
                assert response.json()["lastUpdateId"] > 0
                used.append(int(response.headers["X-MBX-USED-WEIGHT-1M"]))
            assert used == sorted(used) and len(set(used)) == len(used), (
                "the weight grows with each request"
            )
            assert used[-1] <= 30 < used[-1] + 5
            assert response.status_code == 429 and int(response.headers["Retry-After"]) > 0
            assert response.json()["code"] == -1003
            statuses = [(await http.get("/api/v3/time")).status_code for _ in range(2)]
            assert statuses == [429, 418], "kept asking after two 429s: banned"
            banned = await http.get("/api/v3/time")
            assert banned.status_code == 418 and 0 < int(banned.headers["Retry-After"]) <= 30
            # The simulator's own endpoints are never limited.
            stats = (await http.get("/sim/stats")).json()
            assert stats["rest"]["by_status"]["418"] == 2 and stats["faults"]["rest_500"] == 1
            assert stats["faults"]["rest_429"] == 1

    run(scenario())


# ---------------------------------------------------------------------------
# replay


@pytest.mark.parametrize(
    ("capture_name", "market"), [("BINANCE.ws.1.0", "spot"), ("BINANCE_FUTURES.ws.1.0", "usdm")]
)
def test_replay_serves_the_recorded_frames_and_snapshots(capture_name: str, market: str) -> None:
    path = shared_fixture(f"binance/cryptofeed/{capture_name}")
    messages = list(capture.read_many([path, *capture.companions(path)]))
    recorded = [m.body.decode() for m in messages if m.kind == "ws"]
    url = next(m.url for m in messages if m.kind == "open")
    snapshots = {m.symbol: m.body for m in messages if m.kind == "rest"}

    async def scenario() -> None:
        async with BinanceSimulator(replay=path) as sim:
            assert sim.market == market, "detected from the capture"
            recorded_url = urlsplit(url)
            assert recorded_url.path == "/stream"
            async with connect(f"{sim.ws_url}/stream?{recorded_url.query}") as ws:
                got = [await asyncio.wait_for(ws.recv(), 5) for _ in recorded]
                assert got == recorded, "the same frames, byte for byte, in order"
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(ws.recv(), 0.2)  # and nothing more
            symbol = sorted(snapshots)[0]
            async with httpx.AsyncClient(base_url=sim.rest_url) as http:
                params = {"symbol": symbol, "limit": 1000}
                body = (await http.get(f"{sim.rest_prefix}/depth", params=params)).content
                assert body == snapshots[symbol]
            await _replay_syncs(sim, sorted(snapshots))

    run(scenario())


async def _replay_syncs(sim: BinanceSimulator, symbols: list[str]) -> None:
    """A syncing client over the replay: no gaps, every book built."""
    async with SyncClient(sim, symbols) as client:
        await until(lambda: all(client.synced(s) for s in symbols), what="every book synced")
        assert sum(client.gaps.values()) == 0 and client.decode_errors == 0
        assert client.snapshot_errors == []


def test_replay_of_plain_lines_attributes_the_snapshots(tmp_path: Path) -> None:
    """Plain ``<ns> <raw>`` captures name no symbol for snapshots: the
    simulator attributes each to the symbol whose depth ids cover it."""
    ws = shared_fixture("binance/cryptofeed/BINANCE.ws.1.0")
    messages = list(capture.read_many([ws, *capture.companions(ws)]))
    plain = tmp_path / "plain.txt"
    plain.write_bytes(
        b"".join(b"%d %s\n" % (m.recv_ns, m.body) for m in messages if m.kind != "open")
    )

    async def scenario() -> None:
        async with BinanceSimulator(replay=plain) as sim:
            symbols = sorted(m.symbol for m in messages if m.kind == "rest")
            await _replay_syncs(sim, symbols)
            assert sim.stats()["mode"] == "replay"

    run(scenario())


def test_control_over_http() -> None:
    """Another process (a connector under test) can drive the faults over HTTP."""

    async def scenario() -> None:
        async with (
            BinanceSimulator(market="spot", rate=50) as sim,
            httpx.AsyncClient(base_url=sim.rest_url) as http,
        ):
            faults = (await http.get("/sim/faults", params={"drop": "0.25"})).json()
            assert faults["drop"] == 0.25 == sim.faults.drop
            bad = await http.get("/sim/faults", params={"dorp": "1"})
            assert bad.status_code == 400 and "dorp" in bad.json()["error"]
            async with connect(sim.stream_url(["btcusdt@depth@100ms"])) as ws:
                await recv_json(ws)
                params = {"action": "inject", "kind": "duplicate", "symbol": "BTCUSDT"}
                assert (await http.get("/sim/control", params=params)).json()["ok"]
                await until(lambda: sim.injected["duplicate"] == 1, what="the duplicate")
                assert (
                    await http.get("/sim/control", params={"action": "pause"})
                ).status_code == 200
                params = {"action": "disconnect_all"}
                assert (await http.get("/sim/control", params=params)).json() == {"disconnected": 1}
            assert (await http.get("/sim/control", params={"action": "nope"})).status_code == 400
            assert (await http.get("/sim/truth", params={"symbol": "NOPE"})).status_code == 404
            too_old = await http.get("/sim/truth", params={"symbol": "BTCUSDT", "at": "1"})
            assert too_old.status_code == 404

    run(scenario())


# ---------------------------------------------------------------------------
# CLI


def test_cli_help_and_refusals() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", "binance", "--help"])
    assert result.exit_code == 0 and "--faults" in result.output and "--replay" in result.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(main, ["simulate", "binance", "--port", str(port)])
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    result = runner.invoke(main, ["simulate", "binance", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "loopback" in result.stderr
    result = runner.invoke(main, ["simulate", "binance", "--faults", "drop=2"])
    assert result.exit_code == 2 and "between 0 and 1" in result.stderr


def test_cli_runs_in_the_foreground_and_stops_on_ctrl_c(children: Children) -> None:
    proc = children.popen(
        [
            str(CLI),
            "simulate",
            "binance",
            "--json",
            "--symbols",
            "2",
            "--rate",
            "20",
            "--market",
            "usdm",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    ready = orjson.loads(proc.stdout.readline())  # blocks until the URLs are printed
    assert ready["market"] == "usdm" and ready["symbols"] == ["BTCUSDT", "ETHUSDT"]
    response = httpx.get(
        f"{ready['rest_url']}/fapi/v1/depth", params={"symbol": "ETHUSDT", "limit": 5}
    )
    assert response.status_code == 200 and len(response.json()["bids"]) == 5
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=10) == 0
