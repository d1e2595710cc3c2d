"""The Binance client against the loopback simulator: sync, faults, rotation."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from connector.binance.client import BinanceFeed, config_from_params
from connector.binance.sync import State
from connector.sim.binance import BinanceSimulator
from pipeline import record as rec
from pipeline.book import BookState
from pipeline.record import Kind, StatusReason
from tests.helpers import until

pytestmark = pytest.mark.integration

SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]


class Run:
    """A feed consuming from a simulator, its records applied to books as the pipeline would."""

    def __init__(self, sim: BinanceSimulator, market: str, **params: Any) -> None:
        trade = "aggTrade" if market == "usdm" else "trade"
        config = config_from_params(
            "test",
            {
                "market": market,
                "ws_url": sim.ws_url,
                "rest_url": sim.rest_url,
                "symbols": SYMBOLS,
                "streams": ["depth@100ms", trade, "bookTicker"],
                "snapshot_limit": 1000,
                "silence_timeout_s": 5.0,
                "reconnect_delay_ms": 50.0,
                "reconnect_max_ms": 400.0,
                "snapshot_spacing_ms": 5.0,
                **params,
            },
        )
        self.sim = sim
        self.feed = BinanceFeed(config, seed=3)
        self.books = BookState()
        self.records: list[rec.Records] = []
        self.applied_u: dict[int, int] = {}
        """inst -> last venue update id applied to our books (snapshot or diff)."""
        self._seq = 0
        self.task = asyncio.ensure_future(self._consume())

    async def _consume(self) -> None:
        async for batch in self.feed.records():
            batch = batch.copy()
            batch["src"] = 1
            batch["seq"] = np.arange(self._seq + 1, self._seq + 1 + len(batch), dtype=np.uint64)
            self._seq += len(batch)
            self.books.apply(batch)
            self.records.append(batch)
            for r in batch[
                (batch["kind"] == Kind.BOOK_UPDATE) | (batch["kind"] == Kind.BOOK_CLEAR)
            ].tolist():
                inst, kind, qty, aux = r[3], r[5], r[9], r[10]
                self.applied_u[inst] = qty if kind == Kind.BOOK_UPDATE else aux

    def all(self) -> rec.Records:
        return np.concatenate(self.records) if self.records else rec.empty(0)

    def statuses(self, reason: StatusReason) -> rec.Records:
        r = self.all()
        return r[(r["kind"] == Kind.STATUS) & (r["aux"] == reason)]

    def synced(self) -> bool:
        return all(s.state == State.SYNCED for s in self.feed.syncs.values())

    async def converge(self, timeout_s: float = 30.0) -> None:
        """Pause the venue, wait until every book caught up, compare with the truth, resume.

        Clean traffic first: a fault on the last event before a pause (a drop, a held
        reorder) only shows when the next event arrives, so every symbol must move on.
        """
        start = {s: self.sim.last_update_id(s) for s in SYMBOLS}
        await until(
            lambda: all(self.sim.last_update_id(s) > start[s] + 2 for s in SYMBOLS),
            timeout_s,
            "clean venue traffic",
        )
        await until(self.synced, timeout_s, "every book synced")
        self.sim.pause()
        try:
            insts = {s: self.feed.config.symbol_map[s] for s in SYMBOLS}
            await until(
                lambda: all(
                    self.applied_u.get(insts[s]) == self.sim.last_update_id(s) for s in SYMBOLS
                ),
                timeout_s,
                "the books to reach the venue's last update",
            )
            for symbol in SYMBOLS:
                inst = self.feed.config.symbol_map[symbol]
                book = self.books.books[inst]
                bids, asks = self.sim.truth(symbol).fixed()
                assert book.valid, symbol
                assert {p: q for p, (q, _o) in book.bids.items()} == bids, f"{symbol} bids"
                assert {p: q for p, (q, _o) in book.asks.items()} == asks, f"{symbol} asks"
        finally:
            self.sim.resume()

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_books_follow_the_venue_exactly(market: str) -> None:
    async def scenario() -> None:
        async with BinanceSimulator(
            market=market, symbols=SYMBOLS, rate=40, seed=1, depth_levels=30
        ) as sim:
            run = Run(sim, market)
            try:
                await run.converge()
                await run.converge()  # and again after more traffic (converge waits for it)
                assert len(run.statuses(StatusReason.GAP)) == 0
                kinds = set(run.all()["kind"].tolist())
                assert {
                    Kind.BOOK_CLEAR,
                    Kind.BOOK_UPDATE,
                    Kind.BOOK_LEVEL,
                    Kind.TRADE,
                    Kind.BBO,
                } <= kinds
            finally:
                await run.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_every_fault_is_declared_and_the_books_recover(market: str) -> None:
    async def scenario() -> None:
        async with BinanceSimulator(
            market=market, symbols=SYMBOLS, rate=40, seed=2, depth_levels=30
        ) as sim:
            run = Run(sim, market, silence_timeout_s=1.0)
            try:
                await run.converge()
                # Drops: each one is a gap the client declares, then resyncs.
                sim.inject("drop", "ETHUSDT", count=2)
                await until(lambda: len(run.statuses(StatusReason.GAP)) >= 1, 20, "a declared gap")
                await run.converge()
                gaps = run.statuses(StatusReason.GAP)
                eth = run.feed.config.symbol_map["ETHUSDT"]
                assert set(gaps["inst"].tolist()) == {eth}
                assert sim.symbol_stats("ETHUSDT")["drop"] == 2
                # Duplicates are dropped without a gap; a reorder is a gap and a resync.
                before = len(run.statuses(StatusReason.GAP))
                sim.inject("duplicate", "BTCUSDT", count=3)
                await until(
                    lambda: sim.symbol_stats("BTCUSDT")["duplicate"] == 3, 20, "duplicates sent"
                )
                await run.converge()
                assert len(run.statuses(StatusReason.GAP)) == before
                sim.inject("reorder", "BNBUSDT")
                # The swapped pair has gone out once the client saw the later event first.
                await until(
                    lambda: len(run.statuses(StatusReason.GAP)) > before,
                    20,
                    "the reorder seen as a gap",
                )
                assert sim.symbol_stats("BNBUSDT")["reorder"] == 1
                await run.converge()
                # Malformed frames are counted and declared, nothing else breaks.
                sent = sim.send_malformed(3)
                await until(
                    lambda: run.feed.counters["decode_errors"] >= sent, 20, "decode errors counted"
                )
                assert len(run.statuses(StatusReason.DECODE_ERROR)) >= sent
                await run.converge()
                # A dropped connection: books go stale, reconnect, resync.
                connections = run.feed.counters["connections"]
                await sim.disconnect_all()
                await until(
                    lambda: run.feed.counters["connections"] > connections, 20, "a reconnection"
                )
                assert len(run.statuses(StatusReason.DISCONNECTED)) >= 1
                await run.converge()
                # A silent (stalled) connection: the watchdog notices, reconnects.
                sim.stall(2.5)
                await until(
                    lambda: run.feed.counters["watchdog_closes"] >= 1, 20, "the silence watchdog"
                )
                await until(
                    lambda: len(run.statuses(StatusReason.STALE)) >= 1, 20, "STALE declared"
                )
                await until(lambda: not sim.stalled, 20, "the stall to end")
                await run.converge()
                # REST throttling on the resync path: honoured, then it works.
                sim.fail_rest(429, 1)
                sim.inject("drop", "BTCUSDT")
                await until(lambda: run.feed.counters["snapshot_http_429"] >= 1, 20, "a 429 seen")
                await run.converge(timeout_s=60)
            finally:
                await run.stop()

    asyncio.run(scenario())


def test_rotation_before_the_venue_limit_loses_and_repeats_nothing() -> None:
    async def scenario() -> None:
        async with BinanceSimulator(
            market="spot", symbols=SYMBOLS, rate=60, seed=4, depth_levels=20, lifetime_s=4.0
        ) as sim:
            run = Run(sim, "spot", max_connection_age_s=1.0, rotation_overlap_s=0.3)
            try:
                await until(lambda: run.feed.counters["rotations"] >= 4, 30, "several rotations")
                await run.converge()
            finally:
                await run.stop()
            assert sim.closes.get("lifetime", 0) == 0, (
                "the client rotated before the venue closed it"
            )
            records = run.all()
            assert len(run.statuses(StatusReason.GAP)) == 0
            assert len(run.statuses(StatusReason.DISCONNECTED)) == 0
            for symbol in SYMBOLS:
                inst = run.feed.config.symbol_map[symbol]
                mine = records[records["inst"] == inst]
                assert int((mine["kind"] == Kind.BOOK_CLEAR).sum()) == 1, "one snapshot, no resync"
                heads = mine[mine["kind"] == Kind.BOOK_UPDATE]
                first, last = heads["px"].astype(np.int64), heads["qty"].astype(np.int64)
                assert np.all(first[1:] == last[:-1] + 1), (
                    f"{symbol}: diff ids contiguous, none twice"
                )
                trades = mine[mine["kind"] == Kind.TRADE]["aux"].astype(np.int64)
                assert len(trades) > 10 and np.all(np.diff(trades) == 1), (
                    f"{symbol}: trade ids contiguous"
                )

    asyncio.run(scenario())


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_all_faults_at_once_then_the_books_recover(market: str) -> None:
    async def scenario() -> None:
        async with BinanceSimulator(
            market=market, symbols=SYMBOLS, rate=40, seed=7, depth_levels=30
        ) as sim:
            run = Run(sim, market, silence_timeout_s=1.0)
            faults = sim.faults
            try:
                await run.converge()
                # Stream faults together on a healthy connection: each one is seen.
                faults.drop = faults.duplicate = faults.reorder = 0.05
                faults.malformed = 0.02
                await until(
                    lambda: all(
                        sim.injected.get(k, 0) >= 2
                        for k in ("drop", "duplicate", "reorder", "malformed")
                    ),
                    60,
                    "stream faults injected",
                )
                faults.drop = faults.duplicate = faults.reorder = faults.malformed = 0.0
                await run.converge(timeout_s=60)
                assert len(run.statuses(StatusReason.GAP)) >= 2, "drops and reorders were declared"
                assert run.feed.counters["decode_errors"] >= 1
                # Then everything at once, connection faults and REST errors included.
                faults.drop = faults.duplicate = faults.reorder = 0.03
                faults.malformed = faults.disconnect = 0.01
                faults.rest_error = 0.2
                faults.stall = 0.005
                faults.stall_seconds = 1.5
                connections = run.feed.counters["connections"]
                await until(
                    lambda: run.feed.counters["connections"] > connections, 60, "a connection fault"
                )
                for name in (
                    "drop",
                    "duplicate",
                    "reorder",
                    "malformed",
                    "disconnect",
                    "rest_error",
                    "stall",
                ):
                    setattr(faults, name, 0.0)
                await until(lambda: not sim.stalled, 20, "any stall to end")
                await run.converge(timeout_s=60)
            finally:
                await run.stop()

    asyncio.run(scenario())
