"""Loopback Kite and Binance simulators on a background event loop, for tests that
drive blocking code (the instrument service, the feed's factory) against them."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from connector.instruments.service import service
from connector.sim.binance import BinanceSimulator
from connector.sim.kite import KiteSimulator, clock_from_spec, write_session_cache
from connector.sim.kite_universe import KiteRow


@dataclass
class Sims:
    kite: KiteSimulator
    spot: BinanceSimulator
    loop: asyncio.AbstractEventLoop

    @property
    def binance_rest(self) -> str:
        return f"http://127.0.0.1:{self.spot.port}"

    def cache_session(self, data_dir: Path) -> Path:
        """What ``session_cache = true`` does: a simulator session in the data dir."""
        return asyncio.run_coroutine_threadsafe(self._cache(data_dir), self.loop).result(10)

    async def _cache(self, data_dir: Path) -> Path:
        return write_session_cache(self.kite, data_dir)


@dataclass
class Ctx:
    """The service context the supervisor passes (ready / stopping), for a thread."""

    data_dir: Path
    stop: threading.Event
    is_ready: threading.Event

    def ready(self) -> None:
        self.is_ready.set()

    def stopping(self) -> bool:
        return self.stop.is_set()


def context(data_dir: Path) -> Ctx:
    return Ctx(data_dir, threading.Event(), threading.Event())


@contextmanager
def running_sims(**kite: Any) -> Iterator[Sims]:
    """A Kite simulator (``clock = "open"``: today's or the next trading day's open, so
    its universe is listed on or after today, as a feed resolving today expects) and a
    Binance spot simulator."""
    kite.setdefault("scale", 0.02)
    kite.setdefault("rate", 20.0)
    kite.setdefault("heartbeat_s", 0.2)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="sims", daemon=True)
    thread.start()

    async def start() -> Sims:
        k = KiteSimulator(clock=clock_from_spec("open"), **kite)
        s = BinanceSimulator(market="spot", symbols=["BTCUSDT", "ETHUSDT"])
        await k.start()
        await s.start()
        return Sims(k, s, loop)

    sims = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield sims
    finally:

        async def stop() -> None:
            await sims.kite.stop()
            await sims.spot.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def run_service(params: dict[str, object], data_dir: Path) -> tuple[Ctx, threading.Thread]:
    """Start the instrument service in a thread; return once it said ready (or failed)."""
    ctx = context(data_dir)
    errors: list[BaseException] = []

    def body() -> None:
        try:
            service(params, ctx)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
            ctx.ready()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    assert ctx.is_ready.wait(60), "the service never said it was ready"
    if errors:
        raise errors[0]
    return ctx, thread


def stop_service(ctx: Ctx, thread: threading.Thread) -> None:
    ctx.stop.set()
    thread.join(30)
    assert not thread.is_alive()


def expected_tokens(
    rows: list[KiteRow],
    as_of: dt.date,
    underlying: str,
    spot_symbol: str,
    futures: int,
    k: int,
    step: int,
) -> tuple[int, list[int], list[int], Decimal]:
    """Spot, nearest futures and ATM +-k chain tokens straight from the generator's rows
    (the independent answer to a ``subscribe`` entry): (spot, futures, chain, ATM)."""
    spot = next(r for r in rows if r.exchange == "NSE" and r.tradingsymbol == spot_symbol)
    futs = sorted(
        (
            r
            for r in rows
            if r.exchange == "NFO"
            and r.instrument_type == "FUT"
            and r.name == underlying
            and r.expiry is not None
            and r.expiry >= as_of
        ),
        key=lambda r: r.expiry or as_of,
    )
    options = [
        r
        for r in rows
        if r.exchange == "NFO"
        and r.instrument_type in ("CE", "PE")
        and r.name == underlying
        and r.expiry is not None
        and r.expiry >= as_of
    ]
    nearest = min(r.expiry for r in options if r.expiry is not None)
    # Index rows carry no last price in the dump (0.0): the current future's centres the chain.
    price = Decimal(spot.last_price) or Decimal(futs[0].last_price)
    assert price > 0
    atm = int((price + Decimal(step) / 2) // step * step)
    wanted = {Decimal(atm + i * step) for i in range(-k, k + 1)}
    chain = [
        r.instrument_token for r in options if r.expiry == nearest and Decimal(r.strike) in wanted
    ]
    return (
        spot.instrument_token,
        [f.instrument_token for f in futs[:futures]],
        sorted(chain),
        Decimal(atm),
    )
