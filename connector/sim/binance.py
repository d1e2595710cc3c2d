"""A loopback Binance exchange simulator: REST and WebSocket on one 127.0.0.1 port,
speaking Binance's real wire format (spot or USD-M futures).

What it serves (``sim.rest_url`` / ``sim.ws_url``, same port)::

    GET /api/v3/depth?symbol=X&limit=N      (usdm: /fapi/v1/depth; with E and T)
    GET /api/v3/exchangeInfo                (usdm: /fapi/v1/exchangeInfo)
    GET /api/v3/time, /api/v3/ping          (usdm: /fapi/v1/time, /fapi/v1/ping)
    WS  /stream?streams=a/b/c               combined: {"stream": ..., "data": ...}
    WS  /ws/<stream>  (or /ws and SUBSCRIBE) raw events
    WS  usdm also /public/... (depth, bookTicker) and /market/... (the rest)
    GET /sim/truth?symbol=X[&at=ID]         the exact book (all levels) and its id
    GET /sim/stats                          connections, frames, faults injected
    GET /sim/faults?drop=0.1&...            read or set the fault probabilities
    GET /sim/control?action=...             disconnect_all, stall, unstall, pause,
                                            resume, malformed, inject, fail_rest

Streams: ``<sym>@depth[@100ms|@1000ms|@250ms|@500ms]`` (every generated event
is sent; U/u/pu stay consistent), ``<sym>@depth5|10|20[@...]``, ``@trade``,
``@aggTrade``, ``@bookTicker`` (spot without ``e``/``E``), ``@kline_<i>``,
usdm ``@markPrice[@1s]``.

The books are seeded random walks (:class:`SimBook`, pure): every depth
event changes a few levels (absolute quantities, "0" deletes) and advances
the update id by a random positive amount (spot: ``U`` = previous ``u`` + 1;
USD-M: ``U`` jumps, ``pu`` = previous ``u``). A REST snapshot holds the
current book and its ``lastUpdateId`` is the ``u`` of the last event
generated (USD-M with ``snapshot_next_u``: sometimes the next event's ``U``
instead, as recorded snapshots show), so a client following the sync rules
in PROTOCOLS.md rebuilds the exact book. Each book
keeps the inverse of its recent events, so the truth at any recent id can be
reconstructed (:meth:`BinanceSimulator.truth` with ``at_update_id``).

Faults (:class:`Faults`, settable at runtime: ``sim.faults.drop = 0.05``,
planned with :meth:`BinanceSimulator.inject`, or by HTTP): drop, duplicate and
reorder act on the depth events of one symbol for every connection; malformed
adds a garbage frame on a connection; disconnect aborts a connection (no close
frame); stall stops all sending (data and the server's pings) without
closing, so only the client's data-silence watchdog notices (with
``blackhole=True`` it also stops reading: client pings go unanswered); REST
429 / 418 / 500 on demand. Every injection is counted (``sim.stats()``).

Connection rules as Binance's: ping every ``ping_interval_s`` and close if the
pong is late; a lifetime after which the server closes; at most
``MAX_STREAMS`` streams and ``MAX_INCOMING_PER_S`` incoming messages per
second per connection (pongs are answered by the protocol layer and not
counted); a request-weight budget per minute with 429, then 418.

Replay mode (``replay=path``) serves a recorded capture instead: every client
gets the recorded frames in order (those of its streams, or all when it named
none), and depth requests get the snapshot recorded for the symbol.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import math
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from connector.binance import capture
from connector.binance.wire import INTERVAL_SECONDS
from connector.sim import _http
from connector.sim.faults import FaultSet, SimulatorError
from pipeline import fixedpoint as fp

MARKETS: Final = ("spot", "usdm")
MAX_STREAMS: Final = 1024
"""Streams per connection (Binance's limit)."""
MAX_INCOMING_PER_S: Final = 5
"""Incoming messages per second per connection; one more closes the connection."""
WEIGHT_LIMITS: Final = {"spot": 6000, "usdm": 2400}
"""REST request weight per minute."""
DEFAULT_SYMBOLS: Final = ("BTCUSDT", "ETHUSDT", "BNBUSDT")
SCALE: Final = fp.SCALE
BID: Final = 0
ASK: Final = 1
_PERPETUAL_DELIVERY_MS: Final = 4133404800000
"""The deliveryDate Binance gives perpetual contracts (2100-12-25)."""
_FUNDING_PERIOD_MS: Final = 8 * 3600 * 1000
_OUTBOX_HIGH: Final = 1000
"""Frames queued on a connection above which an unpaced generator waits (rate=0)."""
_OUTBOX_MAX: Final = 200_000
"""Frames queued on a connection above which it is dropped as a slow consumer (paced)."""


# ---------------------------------------------------------------------------
# symbols


def _decimals_of(text: str) -> int:
    """Decimals as written: ``"0.10"`` -> 2, ``"1"`` -> 0."""
    return len(text.partition(".")[2])


def fmt(value_fp: int, decimals: int) -> str:
    """A non-negative fixed-point (1e8) value as a decimal string with exactly
    ``decimals`` decimals, like Binance writes prices and quantities."""
    whole, frac = divmod(value_fp, SCALE)
    if decimals >= 8:
        return f"{whole}.{frac:08d}"
    if decimals <= 0:
        return str(whole)
    # Ticks and steps have at most ``decimals`` decimals, so nothing is cut.
    return f"{whole}.{frac // _POW10[8 - decimals]:0{decimals}d}"


_POW10: Final = tuple(10**e for e in range(9))


_QUOTES: Final = ("USDT", "USDC", "FDUSD", "BUSD", "BTC", "ETH", "BNB", "EUR", "TRY")


def _split_assets(symbol: str) -> tuple[str, str]:
    name = symbol.partition("_")[0]
    for quote in _QUOTES:
        if name.endswith(quote) and len(name) > len(quote):
            return name[: -len(quote)], quote
    return name[:-4] or name, name[-4:]


@dataclass(frozen=True)
class SymbolSpec:
    """One simulated instrument: names, tick and step sizes, wire decimals."""

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: str
    step_size: str
    start_price: str
    price_decimals: int
    """Decimals of prices on the wire (spot: always 8; USD-M: the symbol's pricePrecision)."""
    qty_decimals: int
    contract_type: str = "PERPETUAL"
    delivery_date_ms: int = _PERPETUAL_DELIVERY_MS

    @functools.cached_property
    def tick_fp(self) -> int:
        """The tick size in fixed point (cached: it is used for every level sent)."""
        return fp.parse(self.tick_size)

    @functools.cached_property
    def step_fp(self) -> int:
        """The step size in fixed point."""
        return fp.parse(self.step_size)


_KNOWN: Final = {
    # symbol: (spot tick, spot step, usdm tick, usdm step, start price)
    "BTCUSDT": ("0.01", "0.00001", "0.10", "0.001", "60000"),
    "ETHUSDT": ("0.01", "0.0001", "0.01", "0.001", "3000"),
    "BNBUSDT": ("0.01", "0.001", "0.010", "0.01", "600"),
    "SOLUSDT": ("0.01", "0.001", "0.0100", "1", "150"),
    "XRPUSDT": ("0.0001", "0.1", "0.0001", "0.1", "0.6"),
}


def _delivery_ms(symbol: str) -> int | None:
    """``BTCUSDT_260327`` -> 2026-03-27 08:00 UTC in ms (Binance's delivery time)."""
    _, sep, suffix = symbol.partition("_")
    if not sep or len(suffix) != 6 or not suffix.isdigit():
        return None
    import datetime as dt

    day = dt.datetime(2000 + int(suffix[:2]), int(suffix[2:4]), int(suffix[4:]), 8, tzinfo=dt.UTC)
    return int(day.timestamp() * 1000)


def make_specs(
    market: str,
    symbols: Sequence[str] | None = None,
    n_symbols: int | None = None,
    tick_size: str | None = None,
    step_size: str | None = None,
) -> list[SymbolSpec]:
    """Instrument specs: the named symbols (known ones get realistic sizes),
    or ``n_symbols`` names (the known ones first, then ``SIM0001USDT``...)."""
    if symbols is None:
        if n_symbols is None:
            names = list(DEFAULT_SYMBOLS)
        else:
            if n_symbols < 1:
                raise SimulatorError(f"n_symbols must be at least 1, got {n_symbols}")
            known = list(_KNOWN)
            names = known[:n_symbols] + [
                f"SIM{i:04d}USDT" for i in range(1, n_symbols - len(known) + 1)
            ]
    else:
        names = [s.upper() for s in symbols]
        if not names:
            raise SimulatorError("symbols is empty")
        bad = [s for s in names if not s.replace("_", "").isalnum()]
        if bad or len(set(names)) != len(names):
            raise SimulatorError(f"bad or repeated symbol names: {bad or names}")
    specs = []
    for index, name in enumerate(names):
        spot_tick, spot_step, usdm_tick, usdm_step, start = _KNOWN.get(
            name.partition("_")[0], ("0.001", "0.01", "0.001", "1", str(1 + index % 50))
        )
        tick = tick_size or (spot_tick if market == "spot" else usdm_tick)
        step = step_size or (spot_step if market == "spot" else usdm_step)
        for what, value in (("tick size", tick), ("step size", step)):
            try:
                ok = fp.parse(value) > 0
            except ValueError as exc:
                raise SimulatorError(f"{what} {value!r}: {exc}") from None
            if not ok:
                raise SimulatorError(f"{what} {value!r} must be positive")
        base, quote = _split_assets(name)
        delivery = _delivery_ms(name) if market == "usdm" else None
        specs.append(
            SymbolSpec(
                symbol=name,
                base_asset=base,
                quote_asset=quote,
                tick_size=tick,
                step_size=step,
                start_price=start,
                price_decimals=8 if market == "spot" else _decimals_of(tick),
                qty_decimals=8 if market == "spot" else _decimals_of(step),
                contract_type="CURRENT_QUARTER" if delivery else "PERPETUAL",
                delivery_date_ms=delivery or _PERPETUAL_DELIVERY_MS,
            )
        )
    return specs


# ---------------------------------------------------------------------------
# the book (pure: a seeded random walk, no clock, no I/O)


@dataclass(frozen=True)
class DepthEvent:
    """One diff event in ticks and steps (qty 0 deletes), best first per side."""

    first_id: int
    """``U``"""
    last_id: int
    """``u``"""
    prev_last_id: int
    """``pu``: the previous event's ``u`` (or the initial id)."""
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


class SimBook:
    """A random-walk L2 book in integer ticks (price) and steps (quantity).

    Bids sit at or below a boundary ``m`` and asks at or above ``m + 1``, so
    the book is never crossed; ``m`` moves by one tick at a time, deleting
    the level it crosses. Bids stay above ``m - band`` and asks at or
    below ``m + band`` (``band`` = 2 x the target levels per side).
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        start_ticks: int,
        levels: int = 50,
        futures: bool = False,
        history: int = 1000,
        max_qty_steps: int = 10_000,
    ) -> None:
        if levels < 2:
            raise ValueError("levels must be at least 2")
        self.rng = rng
        self.futures = futures
        self.levels = levels
        self.band = 2 * levels
        self.max_qty_steps = max_qty_steps
        self.m = max(start_ticks, self.band + 2)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.last_update_id = (
            rng.randrange(10**11, 10**12) if futures else rng.randrange(10**9, 10**10)
        )
        self.next_first_id = self._first_after(self.last_update_id)
        """The U of the next event (drawn ahead: USD-M snapshots may be labelled with it)."""
        self.events = 0
        self._history: deque[tuple[int, int, int, list[int]]] = deque(
            maxlen=max(history, 0) or None
        )
        """(id before, U, u, inverse as flat [side, px, old qty, ...]) per event."""
        self._keep_history = history > 0
        for k in range(self.band):
            if k == 0 or rng.random() < 0.5:
                self.bids[self.m - k] = self._qty()
            if k == 0 or rng.random() < 0.5:
                self.asks[self.m + 1 + k] = self._qty()

    def _qty(self) -> int:
        # random() arithmetic, not randint(): this runs several times per event.
        return 1 + int(self.rng.random() * self.max_qty_steps)

    def best(self) -> tuple[int, int, int, int]:
        """Best bid px, qty, best ask px, qty (ticks, steps)."""
        bid = max(self.bids)
        ask = min(self.asks)
        return bid, self.bids[bid], ask, self.asks[ask]

    def top(self, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best ``depth`` levels per side, best first."""
        bids = (
            heapq.nlargest(depth, self.bids)
            if len(self.bids) > depth
            else sorted(self.bids, reverse=True)
        )
        asks = heapq.nsmallest(depth, self.asks) if len(self.asks) > depth else sorted(self.asks)
        return [(p, self.bids[p]) for p in bids], [(p, self.asks[p]) for p in asks]

    def _pick(self, side: dict[int, int], is_bid: bool) -> int:
        """An existing level, near the top more often than not (where books
        change most): the first level at or behind a random distance from
        the boundary, found by probing prices (the book is dense, so a few)."""
        rng = self.rng
        if rng.random() < 0.6:
            distance = int(rng.expovariate(0.25))
            px, direction = (self.m - distance, -1) if is_bid else (self.m + 1 + distance, 1)
            for _ in range(self.band - distance):
                if px in side:
                    return px
                px += direction
        return rng.choice(list(side))

    def step(self) -> DepthEvent:
        """Generate and apply one event."""
        rng = self.rng
        changes: dict[tuple[int, int], int] = {}
        inverse: list[int] = []

        def put(side: int, px: int, qty: int) -> None:
            book = self.bids if side == BID else self.asks
            key = (side, px)
            if key not in changes:
                inverse.extend((side, px, book.get(px, 0)))
            if qty:
                book[px] = qty
            else:
                book.pop(px, None)
            changes[key] = qty

        # The boundary moves a tick: the level it crosses goes, and so does
        # the one that falls out of the band on the other side.
        if rng.random() < 0.35:
            if rng.random() < 0.5:
                self.m += 1
                if self.m in self.asks:  # the best ask was taken out
                    put(ASK, self.m, 0)
                if self.m - self.band in self.bids:
                    put(BID, self.m - self.band, 0)
            elif self.m > self.band + 2:
                if self.m in self.bids:
                    put(BID, self.m, 0)
                if self.m + self.band in self.asks:
                    put(ASK, self.m + self.band, 0)
                self.m -= 1
        for _ in range(1 + int(rng.random() * 4)):
            side = BID if rng.random() < 0.5 else ASK
            book = self.bids if side == BID else self.asks
            # Adds and deletes lean towards the target size, so the book
            # neither empties nor fills the whole band over a long run.
            fill = len(book) / self.levels
            op = rng.random()
            if op < 0.5 and book:
                put(side, self._pick(book, side == BID), self._qty())
            elif op < 0.5 + 0.5 / (1 + fill * fill) or len(book) <= 2:
                for _ in range(3):  # look for an empty price, else update the last one tried
                    depth = min(int(rng.expovariate(2.0 / self.levels)), self.band - 1)
                    px = self.m - depth if side == BID else self.m + 1 + depth
                    if px not in book:
                        break
                put(side, px, self._qty())
            else:
                put(side, self._pick(book, side == BID), 0)
        if not self.bids:
            put(BID, self.m, self._qty())
        if not self.asks:
            put(ASK, self.m + 1, self._qty())

        prev = self.last_update_id
        first = self.next_first_id
        last = first + int(rng.random() * (2001 if self.futures else 5))
        self.last_update_id = last
        self.next_first_id = self._first_after(last)
        self.events += 1
        if self._keep_history:
            self._history.append((prev, first, last, inverse))
        bids = sorted(((p, q) for (s, p), q in changes.items() if s == BID), reverse=True)
        asks = sorted((p, q) for (s, p), q in changes.items() if s == ASK)
        return DepthEvent(first, last, prev, bids, asks)

    def _first_after(self, last: int) -> int:
        """The next event's U: spot ids are contiguous; USD-M ids are shared
        across symbols, so U jumps past pu + 1."""
        return last + 1 + (int(self.rng.random() * 2001) if self.futures else 0)

    def at(self, update_id: int) -> tuple[dict[int, int], dict[int, int]]:
        """The book with every event whose ``u`` is at most ``update_id``
        applied. KeyError when ``update_id`` is inside an event's [U, u)
        range, ahead of the book, or older than the kept history."""
        bids, asks = dict(self.bids), dict(self.asks)
        state_id, next_first = self.last_update_id, self.next_first_id
        history = reversed(self._history)
        while update_id < state_id:
            entry = next(history, None)
            if entry is None:
                raise KeyError(update_id)  # older than the history
            before, first, _, inverse = entry
            for i in range(0, len(inverse), 3):
                side, px, qty = inverse[i], inverse[i + 1], inverse[i + 2]
                book = bids if side == BID else asks
                if qty:
                    book[px] = qty
                else:
                    book.pop(px, None)
            state_id, next_first = before, first
        if update_id >= next_first:
            raise KeyError(update_id)  # inside the next event, or not generated yet
        return bids, asks


# ---------------------------------------------------------------------------
# faults


@dataclass
class Faults(FaultSet):
    """Fault probabilities, changeable at any time (``sim.faults.drop = 0.05``)."""

    drop: float = 0.0
    """Per depth event of a symbol: not sent (the ids still advance: a gap)."""
    duplicate: float = 0.0
    """Per depth event: sent twice."""
    reorder: float = 0.0
    """Per depth event: held back and sent after the next one."""
    malformed: float = 0.0
    """Per frame sent on a connection: a garbage or truncated JSON frame goes before it."""
    disconnect: float = 0.0
    """Per generation round: one connection is aborted (no close frame)."""
    stall: float = 0.0
    """Per generation round: every connection stalls for ``stall_seconds``."""
    stall_seconds: float = 5.0
    rest_error: float = 0.0
    """Per REST request: HTTP 500."""


INJECTABLE: Final = ("drop", "duplicate", "reorder")
"""Faults :meth:`BinanceSimulator.inject` can plan for the next depth events of a symbol."""


# ---------------------------------------------------------------------------
# REST request weight (pure: time is an argument)


class WeightLimiter:
    """Binance's per-minute request weight: fixed windows, 429 over the budget
    (Retry-After = rest of the window), and a ban (418) for a client that
    keeps asking while it gets 429s: after ``ban_after`` 429 answers in a
    window, the next request over the budget is banned for ``ban_s``."""

    def __init__(
        self, limit: int, *, window_s: float = 60.0, ban_after: int = 3, ban_s: float = 120.0
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.ban_after = ban_after
        self.ban_s = ban_s
        self.window = -1
        self.used = 0
        self.violations = 0
        self.banned_until = 0.0

    def charge(self, weight: int, now_s: float) -> tuple[int, int, int]:
        """(status 200/429/418, weight used in this window, Retry-After seconds)."""
        window = int(now_s // self.window_s)
        if window != self.window:
            self.window, self.used, self.violations = window, 0, 0
        if now_s < self.banned_until:
            return 418, self.used, max(1, math.ceil(self.banned_until - now_s))
        self.used += weight
        if self.used <= self.limit:
            return 200, self.used, 0
        self.violations += 1
        if self.violations > self.ban_after:
            self.banned_until = now_s + self.ban_s
            self.violations = 0
            return 418, self.used, max(1, math.ceil(self.ban_s))
        return 429, self.used, max(1, math.ceil((window + 1) * self.window_s - now_s))


def depth_weight(market: str, limit: int) -> int:
    """Request weight of a depth snapshot by ``limit``."""
    if market == "spot":
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


# ---------------------------------------------------------------------------
# stream names


@dataclass(frozen=True)
class StreamName:
    """A parsed stream name: ``btcusdt@depth@100ms`` -> symbol BTCUSDT, kind depth."""

    name: str
    symbol: str
    kind: str
    """depth, partial, trade, aggTrade, bookTicker, kline, markPrice."""
    param: str = ""
    """The kline interval, the partial depth's level count, the markPrice speed."""

    @property
    def public(self) -> bool:
        """USD-M's 2026 split: depth and bookTicker go on /public, the rest on /market."""
        return self.kind in ("depth", "partial", "bookTicker")


_SPEEDS: Final = {"spot": ("100ms", "1000ms"), "usdm": ("100ms", "250ms", "500ms")}


def parse_stream(name: str, market: str) -> StreamName:
    """Validate a stream name for ``market``; ValueError says what is wrong."""
    symbol, sep, rest = name.partition("@")
    if not sep or not symbol or not symbol.replace("_", "").isalnum():
        raise ValueError(f"invalid stream name {name!r}")
    symbol = symbol.lower()
    canonical = f"{symbol}@{rest}"
    kind, _, speed = rest.partition("@")
    upper = symbol.upper()
    if kind == "depth" or (kind.startswith("depth") and kind[5:] in ("5", "10", "20")):
        if speed and speed not in _SPEEDS[market]:
            raise ValueError(f"invalid update speed in {name!r}")
        if kind == "depth":
            return StreamName(canonical, upper, "depth")
        return StreamName(canonical, upper, "partial", kind[5:])
    if speed and kind != "markPrice":
        raise ValueError(f"invalid stream name {name!r}")
    if kind in ("trade", "aggTrade", "bookTicker"):
        return StreamName(canonical, upper, kind)
    if kind.startswith("kline_") and kind[6:] in INTERVAL_SECONDS:
        return StreamName(canonical, upper, "kline", kind[6:])
    if kind == "markPrice" and market == "usdm" and speed in ("", "1s"):
        return StreamName(canonical, upper, "markPrice", speed or "3s")
    raise ValueError(f"unknown stream type in {name!r} for {market}")


@dataclass(frozen=True)
class Truth:
    """The simulator's exact book for a symbol at an update id."""

    symbol: str
    last_update_id: int
    bids: list[tuple[str, str]]
    """(price, quantity) as wire strings, best first."""
    asks: list[tuple[str, str]]

    def fixed(self) -> tuple[dict[int, int], dict[int, int]]:
        """Bids and asks as {price: quantity} in fixed point (1e8), like pipeline books."""
        return (
            {fp.parse(p): fp.parse(q) for p, q in self.bids},
            {fp.parse(p): fp.parse(q) for p, q in self.asks},
        )

    def as_dict(self) -> dict[str, Any]:
        """The JSON of /sim/truth (Binance's snapshot names)."""
        return {
            "symbol": self.symbol,
            "lastUpdateId": self.last_update_id,
            "bids": [list(x) for x in self.bids],
            "asks": [list(x) for x in self.asks],
        }


# ---------------------------------------------------------------------------
# replay


def _family(stream: StreamName) -> str:
    """Streams that carry the same events: every depth speed is one family."""
    sym = stream.symbol.lower()
    if stream.kind in ("depth", "markPrice"):
        return f"{sym}@{stream.kind}"
    if stream.kind == "partial":
        return f"{sym}@depth{stream.param}"
    if stream.kind == "kline":
        return f"{sym}@kline_{stream.param}"
    return f"{sym}@{stream.kind}"


def _event_family(event: dict[str, Any]) -> str:
    """The family of a bare recorded event (plain captures have no stream names)."""
    symbol = event.get("s")
    if not isinstance(symbol, str):
        return ""
    sym = symbol.lower()
    kind = event.get("e")
    if kind == "depthUpdate":
        return f"{sym}@depth"
    if kind == "markPriceUpdate":
        return f"{sym}@markPrice"
    if kind == "kline" and isinstance(event.get("k"), dict):
        return f"{sym}@kline_{event['k'].get('i')}"
    if kind in ("trade", "aggTrade", "bookTicker") or (
        kind is None and "u" in event and "A" in event
    ):
        return f"{sym}@{kind or 'bookTicker'}"
    return ""


@dataclass(frozen=True)
class _ReplayFrame:
    recv_ns: int
    raw: bytes
    """The frame exactly as recorded."""
    stream: str
    """The recorded stream name ("" for bare frames)."""
    family: str
    data: bytes
    """The event alone, for raw /ws clients."""


class _Replay:
    """A capture loaded for replay: frames in order, snapshots per symbol."""

    def __init__(self, paths: Sequence[Path], market: str | None) -> None:
        files: list[Path] = []
        for path in paths:
            if not path.is_file():
                raise SimulatorError(f"replay capture {path} does not exist")
            files += [p for p in [path, *capture.companions(path)] if p not in files]
        if market is None:
            from connector.binance.verify import detect_market

            market = detect_market(files)
        self.market = market
        self.files = files
        self.frames: list[_ReplayFrame] = []
        self.snapshots: dict[str, list[bytes]] = defaultdict(list)
        self.exchange_info: bytes | None = None
        self.urls: list[str] = []
        self.unattributed = 0
        loose: list[bytes] = []
        for message in capture.read_many(files):
            if message.kind == "open":
                self.urls.append(message.url)
            elif message.kind == "ws":
                self.frames.append(self._frame(message))
            elif b'"lastUpdateId"' in message.body[:100]:
                if message.symbol:
                    self.snapshots[message.symbol].append(message.body)
                else:
                    loose.append(message.body)
            elif urlsplit(message.url).path.endswith("/exchangeInfo"):
                self.exchange_info = message.body
        ranges = self._depth_ranges() if loose else {}
        for body in loose:
            symbol = self._attribute(body, ranges)
            if symbol:
                self.snapshots[symbol].append(body)
            else:
                self.unattributed += 1
        self.symbols = sorted(
            {f.family.partition("@")[0].upper() for f in self.frames if f.family}
            | set(self.snapshots)
        )
        self._served: Counter[str] = Counter()

    def _frame(self, message: capture.Message) -> _ReplayFrame:
        try:
            msg = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            return _ReplayFrame(message.recv_ns, message.body, "", "", message.body)
        if isinstance(msg, dict) and isinstance(msg.get("stream"), str) and "data" in msg:
            stream = msg["stream"]
            try:
                family = _family(parse_stream(stream, self.market))
            except ValueError:
                family = stream  # a stream we do not generate: replayed to "all streams" clients
            data = orjson.dumps(msg["data"])
            return _ReplayFrame(message.recv_ns, message.body, stream, family, data)
        family = _event_family(msg) if isinstance(msg, dict) else ""
        return _ReplayFrame(message.recv_ns, message.body, "", family, message.body)

    def _depth_ranges(self) -> dict[str, tuple[int, int]]:
        """Per symbol, the lowest U and highest u of its recorded depth events."""
        ranges: dict[str, tuple[int, int]] = {}
        for frame in self.frames:
            if frame.family.endswith("@depth"):
                event = orjson.loads(frame.data)
                symbol = frame.family.partition("@")[0].upper()
                lo, hi = ranges.get(symbol, (event["U"], event["u"]))
                ranges[symbol] = (min(lo, event["U"]), max(hi, event["u"]))
        return ranges

    @staticmethod
    def _attribute(body: bytes, ranges: dict[str, tuple[int, int]]) -> str:
        """The symbol of a plain-format snapshot (no symbol= in a URL): the
        only one whose depth ids cover its lastUpdateId, else ""."""
        last_id = orjson.loads(body).get("lastUpdateId")
        if not isinstance(last_id, int):
            return ""
        fits = [s for s, (lo, hi) in ranges.items() if lo - 1 <= last_id <= hi]
        return fits[0] if len(fits) == 1 else ""

    def snapshot(self, symbol: str) -> bytes | None:
        """The recorded snapshots of a symbol, one per request (the last repeats)."""
        bodies = self.snapshots.get(symbol)
        if not bodies:
            return None
        body = bodies[min(self._served[symbol], len(bodies) - 1)]
        self._served[symbol] += 1
        return body


# ---------------------------------------------------------------------------
# connections


_conn_ids = itertools.count(1)


class _Conn:
    """One WebSocket client: its streams and its outbox (sent by its own task)."""

    def __init__(self, ws: ServerConnection, combined: bool, path: str, opened_s: float) -> None:
        self.id = next(_conn_ids)
        self.ws = ws
        self.combined = combined
        self.path = path
        self.opened_s = opened_s
        self.category = ""
        """USD-M split endpoints: "public" or "market" ("" for the legacy /stream and /ws)."""
        self.streams: dict[str, StreamName] = {}
        self.outbox: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.drained = asyncio.Event()
        self.drained.set()
        self.incoming: deque[float] = deque()
        self.sent = 0
        self.pings = 0
        self.closed = False

    def info(self) -> dict[str, Any]:
        """What /sim/stats shows of this connection."""
        return {
            "id": self.id,
            "path": self.path,
            "streams": sorted(self.streams),
            "sent": self.sent,
            "pings": self.pings,
            "queued": len(self.outbox),
        }


def _error(code: int, msg: str, request_id: Any) -> bytes:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": request_id})


_GARBAGE: Final = (
    b'{"e":"depthUpdate","E":',
    b"[1,2,3]",
    b"not json at all",
    b'{"e":"noSuchEvent"}',
)


# ---------------------------------------------------------------------------
# the simulator


@dataclass
class _Candle:
    interval: str
    open_ms: int
    close_ms: int
    o: int
    h: int
    l: int  # noqa: E741 - Binance's name
    c: int
    v: int = 0
    """Base volume in steps."""
    q: int = 0
    """Quote volume in fixed point."""
    n: int = 0
    taker_v: int = 0
    taker_q: int = 0
    first_id: int = -1
    last_id: int = -1


@dataclass
class _Symbol:
    """One symbol's generator state (book, trades, candles) and fault bookkeeping."""

    spec: SymbolSpec
    book: SimBook
    trade_rng: random.Random
    trade_id: int
    agg_id: int
    last_price: int
    last_best: tuple[int, int, int, int] = (0, 0, 0, 0)
    held: bytes | None = None
    """A depth event held back by the reorder fault."""
    last_dropped: bool = False
    planned: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    candles: dict[str, _Candle] = field(default_factory=dict)


class BinanceSimulator:
    """A Binance venue on loopback: synthetic books (or a replayed capture),
    REST and WebSocket on one port, faults on demand.

    Use as ``async with BinanceSimulator(...) as sim:`` or ``await sim.start()``
    / ``await sim.stop()``; everything runs on the caller's event loop, and
    the Python accessors (:meth:`truth`, :meth:`stats`) must be called from it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        market: str | None = None,
        symbols: Sequence[str] | None = None,
        n_symbols: int | None = None,
        rate: float = 10.0,
        seed: int = 0,
        depth_levels: int = 50,
        tick_size: str | None = None,
        step_size: str | None = None,
        lifetime_s: float = 86400.0,
        ping_interval_s: float = 20.0,
        pong_timeout_s: float = 60.0,
        close_timeout_s: float = 2.0,
        max_streams: int = MAX_STREAMS,
        max_incoming_per_s: int = MAX_INCOMING_PER_S,
        weight_limit: int | None = None,
        weight_window_s: float = 60.0,
        ban_after: int = 3,
        ban_s: float = 120.0,
        faults: Faults | str | None = None,
        trade_probability: float = 0.3,
        truth_history: int = 1000,
        snapshot_next_u: float = 0.0,
        replay: Path | str | Sequence[Path | str] | None = None,
        replay_speed: float = 0.0,
    ) -> None:
        try:
            self.host = _http.loopback_host(host)
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        if not 0 <= port <= 65535:
            raise SimulatorError(f"port {port} is out of range")
        if depth_levels < 2:
            raise SimulatorError(f"depth_levels must be at least 2, got {depth_levels}")
        for name, probability in (
            ("trade_probability", trade_probability),
            ("snapshot_next_u", snapshot_next_u),
        ):
            if not 0.0 <= probability <= 1.0:
                raise SimulatorError(f"{name} {probability} is not between 0 and 1")
        if max_streams < 1 or max_incoming_per_s < 1 or truth_history < 0 or close_timeout_s <= 0:
            raise SimulatorError(
                "max_streams, max_incoming_per_s and close_timeout_s must be positive"
            )
        for name, value in (
            ("rate", rate),
            ("lifetime_s", lifetime_s),
            ("ping_interval_s", ping_interval_s),
            ("pong_timeout_s", pong_timeout_s),
            ("replay_speed", replay_speed),
        ):
            if not math.isfinite(value) or value < 0 or (value == 0 and name.endswith("_s")):
                raise SimulatorError(
                    f"{name} must be {'positive' if name.endswith('_s') else 'zero or more'}, got {value}"
                )
        self._replay: _Replay | None = None
        if replay is not None:
            paths = [replay] if isinstance(replay, (str, Path)) else list(replay)
            if market is not None and market not in MARKETS:
                raise SimulatorError(f"market must be one of {MARKETS}, got {market!r}")
            self._replay = _Replay([Path(p) for p in paths], market)
            market = self._replay.market
        market = market or "spot"
        if market not in MARKETS:
            raise SimulatorError(f"market must be one of {MARKETS}, got {market!r}")
        self.market = market
        self._port_arg = port
        self.port = 0
        """The bound port (after start)."""
        self.rate = rate
        self.seed = seed
        self.lifetime_s = lifetime_s
        self.ping_interval_s = ping_interval_s
        self.pong_timeout_s = pong_timeout_s
        self.close_timeout_s = close_timeout_s
        self.max_streams = max_streams
        self.max_incoming_per_s = max_incoming_per_s
        self.trade_probability = trade_probability
        self.snapshot_next_u = snapshot_next_u
        """USD-M: probability that a snapshot is labelled with the next event's U, not the last u."""
        self.replay_speed = replay_speed
        self.faults = faults if isinstance(faults, Faults) else Faults.parse(faults or "")
        self.limiter = WeightLimiter(
            weight_limit or WEIGHT_LIMITS[market],
            window_s=weight_window_s,
            ban_after=ban_after,
            ban_s=ban_s,
        )
        replay_names = self._replay.symbols if self._replay else None
        self.specs = make_specs(market, replay_names or symbols, n_symbols, tick_size, step_size)
        self._symbols: dict[str, _Symbol] = {}
        if self._replay is None:
            for spec in self.specs:
                rng = random.Random(f"{seed}:{spec.symbol}:book")
                book = SimBook(
                    rng,
                    start_ticks=fp.parse(spec.start_price) // spec.tick_fp,
                    levels=depth_levels,
                    futures=market == "usdm",
                    history=truth_history,
                )
                trade_rng = random.Random(f"{seed}:{spec.symbol}:trades")
                self._symbols[spec.symbol] = _Symbol(
                    spec=spec,
                    book=book,
                    trade_rng=trade_rng,
                    trade_id=trade_rng.randrange(10**8, 10**9),
                    agg_id=trade_rng.randrange(10**7, 10**8),
                    last_price=book.m,
                )
        self._rng = random.Random(f"{seed}:faults")
        self._server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: dict[int, _Conn] = {}
        self._subs: dict[str, set[_Conn]] = defaultdict(set)
        self._streams_of: dict[str, dict[str, StreamName]] = defaultdict(dict)
        """Symbol -> the streams of it that have subscribers."""
        self._active: dict[str, dict[str, list[StreamName]]] = {}
        self._paused = False
        self._stalled = False
        self._stall_epoch = 0
        self._blackhole = False
        self._unstall_handle: asyncio.TimerHandle | None = None
        self._rest_plan: deque[tuple[int, int]] = deque()
        """Planned REST failures: (status, Retry-After seconds)."""
        self.injected: Counter[str] = Counter()
        """Faults injected, by kind (drop, duplicate, reorder, malformed, disconnect, stall, rest_429, ...)."""
        self.closes: Counter[str] = Counter()
        """Connections the server closed, by reason."""
        self._counters: Counter[str] = Counter()
        self._started_s = 0.0
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._wakeup = asyncio.Event()
        """Set when generation may run (resumed, or a subscriber appeared for rate 0)."""

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> BinanceSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on the port and start generating."""
        if self._server is not None:
            raise SimulatorError("the simulator is already running")
        loop = asyncio.get_running_loop()
        try:
            self._server = await serve(
                self._handler,
                self.host,
                self._port_arg,
                process_request=self._process_request,
                compression=None,  # Binance streams are not compressed
                ping_interval=None,  # our own pings: they must stop during a stall
                ping_timeout=None,
                close_timeout=self.close_timeout_s,
                max_size=2**16,
                server_header=None,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise SimulatorError(
                f"cannot listen on {self.host}:{self._port_arg}: {reason}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        self._started_s = loop.time()
        if self._replay is None:
            self._tasks = [
                loop.create_task(self._generate_loop(), name="sim-generate"),
                loop.create_task(self._ticker_loop(), name="sim-ticker"),
            ]

    async def stop(self) -> None:
        """Close every connection (code 1001) and stop listening."""
        if self._server is None:
            return
        self.unstall()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        server, self._server = self._server, None
        server.close()
        await server.wait_closed()

    @property
    def running(self) -> bool:
        """Listening (between start and stop)."""
        return self._server is not None

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:PORT`` (append /stream?streams=... or /ws/<stream>)."""
        return f"ws://{self._netloc}"

    @property
    def rest_url(self) -> str:
        """``http://127.0.0.1:PORT`` (append /api/v3/... or /fapi/v1/...)."""
        return f"http://{self._netloc}"

    @property
    def _netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def rest_prefix(self) -> str:
        """``/api/v3`` (spot) or ``/fapi/v1`` (USD-M)."""
        return "/api/v3" if self.market == "spot" else "/fapi/v1"

    def stream_url(self, streams: Iterable[str], *, path: str = "/stream") -> str:
        """The combined-stream URL for ``streams``."""
        return f"{self.ws_url}{path}?streams={'/'.join(streams)}"

    @property
    def symbols(self) -> list[str]:
        """The simulated (or replayed) symbols."""
        return [s.symbol for s in self.specs]

    # -- control -------------------------------------------------------------

    def pause(self) -> None:
        """Stop generating events (connections stay open; a held reorder stays held)."""
        self._paused = True

    def resume(self) -> None:
        """Generate again."""
        self._paused = False
        self._wake()

    def advance(self, rounds: int = 1) -> None:
        """Generate ``rounds`` events per symbol now (works while paused)."""
        self._require_synthetic("advance")
        for _ in range(rounds):
            self._round()

    def inject(self, kind: str, symbol: str | None = None, count: int = 1) -> None:
        """Plan ``count`` faults (drop, duplicate, reorder) on the next depth
        events of ``symbol`` (every symbol when None) that someone subscribes to."""
        if kind not in INJECTABLE:
            raise SimulatorError(f"cannot inject {kind!r}; one of {INJECTABLE}")
        for sym in [self._symbol(symbol)] if symbol else self._symbols.values():
            sym.planned[kind] += count

    def send_malformed(self, count: int = 1) -> int:
        """Send ``count`` garbage frames on every connection now; returns how many were queued."""
        sent = 0
        for conn in list(self._conns.values()):
            for _ in range(count):
                if self._stalled:
                    break
                conn.outbox.append(self._garbage(b'{"e":"depthUpdate","E":1}'))
                conn.wake.set()
                sent += 1
        self.injected["malformed"] += sent
        return sent

    async def disconnect_all(self, timeout_s: float = 5.0) -> int:
        """Abort every connection (TCP closed, no close frame); returns how many."""
        conns = list(self._conns.values())
        for conn in conns:
            self._abort(conn, "disconnect")
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(c.id in self._conns for c in conns):
            if asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.005)  # handlers finish on the next loop turns
        return len(conns)

    def stall(self, seconds: float | None = None, *, blackhole: bool = False) -> None:
        """Stop sending on every connection (data, replies and the server's
        pings) without closing it, for ``seconds`` or until :meth:`unstall`.
        Frames generated meanwhile are lost for those connections.

        The client's own pings are still answered (by the protocol layer),
        so only a watchdog on data silence notices. ``blackhole`` also stops
        reading: the client's pings and close handshakes go unanswered too,
        like a dead network path."""
        loop = asyncio.get_running_loop()
        if not self._stalled:
            self._stalled = True
            self._blackhole = blackhole
            self._stall_epoch += 1
            self._unstalled.clear()
            self.injected["stall"] += 1
            for conn in self._conns.values():
                self._counters["stall_discarded"] += len(conn.outbox)
                conn.outbox.clear()
                conn.drained.set()
                if blackhole:
                    conn.ws.transport.pause_reading()
        if self._unstall_handle is not None:
            self._unstall_handle.cancel()
            self._unstall_handle = None
        if seconds is not None:
            self._unstall_handle = loop.call_later(seconds, self.unstall)

    def unstall(self) -> None:
        """End a stall: sending, pinging and reading resume."""
        if self._unstall_handle is not None:
            self._unstall_handle.cancel()
            self._unstall_handle = None
        if not self._stalled:
            return
        self._stalled = False
        self._unstalled.set()
        for conn in self._conns.values():
            if self._blackhole and not conn.closed:
                conn.ws.transport.resume_reading()
            conn.wake.set()

    @property
    def stalled(self) -> bool:
        """A stall is in progress."""
        return self._stalled

    def fail_rest(self, status: int, count: int = 1, retry_after_s: int = 1) -> None:
        """The next ``count`` REST requests (not /sim/) get ``status`` (429,
        418, 500, 503...); 429 and 418 carry ``Retry-After: retry_after_s``
        (short by default: a planned fault should not stall a test for a minute)."""
        if status < 400 or status > 599:
            raise SimulatorError(f"fail_rest: {status} is not an error status")
        if retry_after_s < 0:
            raise SimulatorError(f"fail_rest: retry_after_s {retry_after_s} is negative")
        self._rest_plan.extend([(status, retry_after_s)] * count)

    # -- accessors -----------------------------------------------------------

    def truth(self, symbol: str, at_update_id: int | None = None) -> Truth:
        """The exact book of ``symbol`` now, or right after the event ending at
        ``at_update_id`` (KeyError if that is not a recent book state)."""
        self._require_synthetic("truth")
        sym = self._symbol(symbol)
        book = sym.book
        update_id = book.last_update_id if at_update_id is None else at_update_id
        bids, asks = book.at(update_id)
        spec = sym.spec
        tick, step = spec.tick_fp, spec.step_fp
        pd, qd = spec.price_decimals, spec.qty_decimals
        return Truth(
            spec.symbol,
            update_id,
            [(fmt(p * tick, pd), fmt(bids[p] * step, qd)) for p in sorted(bids, reverse=True)],
            [(fmt(p * tick, pd), fmt(asks[p] * step, qd)) for p in sorted(asks)],
        )

    def last_update_id(self, symbol: str) -> int:
        """The u of the last event generated for ``symbol``."""
        self._require_synthetic("last_update_id")
        return self._symbol(symbol).book.last_update_id

    def symbol_stats(self, symbol: str) -> dict[str, int]:
        """Per symbol: the last u and the next U, events generated, and the
        faults injected (drop, drop_gaps = drops right after a sent event, duplicate, reorder)."""
        sym = self._symbol(symbol)
        return {
            "last_update_id": sym.book.last_update_id,
            "next_first_id": sym.book.next_first_id,
            "events": sym.book.events,
            **{k: sym.counts[k] for k in ("drop", "drop_gaps", "duplicate", "reorder")},
        }

    def stats(self) -> dict[str, Any]:
        """Connections, frames sent, faults injected, REST use."""
        loop_time = asyncio.get_running_loop().time() if self._server else self._started_s
        return {
            "market": self.market,
            "mode": "replay" if self._replay else "synthetic",
            "uptime_s": round(loop_time - self._started_s, 3),
            "connections": {
                "open": len(self._conns),
                "total": self._counters["connections"],
                "list": [c.info() for c in self._conns.values()],
            },
            "frames_sent": self._counters["frames_sent"],
            "events_generated": sum(s.book.events for s in self._symbols.values()),
            "stall_discarded": self._counters["stall_discarded"],
            "faults": dict(self.injected),
            "faults_config": self.faults.as_dict(),
            "closes": dict(self.closes),
            "rest": {
                "requests": self._counters["rest_requests"],
                "used_weight": self.limiter.used,
                "weight_limit": self.limiter.limit,
                "by_status": {k[5:]: v for k, v in self._counters.items() if k.startswith("http_")},
            },
            "symbols": {name: self.symbol_stats(name) for name in self._symbols},
        }

    def connections(self) -> list[dict[str, Any]]:
        """The open connections (id, path, streams, frames sent, pings sent)."""
        return [c.info() for c in self._conns.values()]

    def _symbol(self, symbol: str) -> _Symbol:
        sym = self._symbols.get(symbol.upper())
        if sym is None:
            raise KeyError(f"unknown symbol {symbol!r}")
        return sym

    def _require_synthetic(self, what: str) -> None:
        if self._replay is not None:
            raise SimulatorError(f"{what}: not available in replay mode")

    # -- generation ----------------------------------------------------------

    def _wake(self) -> None:
        self._wakeup.set()

    async def _generate_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self.rate == 0:
            await self._generate_unpaced()
            return
        interval = 1.0 / self.rate
        next_s = loop.time()
        while True:
            if self._paused:
                self._wakeup.clear()
                await self._wakeup.wait()
                next_s = loop.time()
                continue
            now = loop.time()
            if now < next_s:
                await asyncio.sleep(next_s - now)
                continue
            # Catch up a little after a slow turn, but never burst after a long one.
            rounds = min(int((now - next_s) / interval) + 1, 10)
            for _ in range(rounds):
                self._round()
            next_s += rounds * interval
            if loop.time() - next_s > 1.0:
                next_s = loop.time()

    async def _generate_unpaced(self) -> None:
        """rate 0: as fast as the slowest subscribed connection takes it."""
        while True:
            if self._paused or not self._subs:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            for _ in range(16):
                self._round()
            for conn in list(self._conns.values()):
                if not conn.drained.is_set() and not conn.closed:
                    await conn.drained.wait()
            await asyncio.sleep(0)

    def _round(self) -> None:
        """One event per symbol, then the per-round faults."""
        now_ms = int(time.time() * 1000)
        for sym in self._symbols.values():
            self._step_symbol(sym, now_ms)
        faults = self.faults
        if faults.disconnect and self._conns and self._rng.random() < faults.disconnect:
            self._abort(self._rng.choice(list(self._conns.values())), "disconnect")
        if faults.stall and not self._stalled and self._rng.random() < faults.stall:
            self.stall(faults.stall_seconds)

    def _step_symbol(self, sym: _Symbol, now_ms: int) -> None:
        event = sym.book.step()
        spec = sym.spec
        active = self._active.get(spec.symbol, {})
        depth = active.get("depth")
        if depth:
            self._publish_depth(sym, depth, self._depth_json(sym, event, now_ms))
        for stream in active.get("partial", ()):
            self._publish(stream.name, self._partial_json(sym, event, now_ms, int(stream.param)))
        tickers = active.get("bookTicker")
        trade = sym.trade_rng.random() < self.trade_probability
        if tickers or trade:  # the best levels cost a scan of the book: only when needed
            best = sym.book.best()
            if tickers and best != sym.last_best:
                data = self._book_ticker_json(sym, best, event.last_id, now_ms)
                for stream in tickers:
                    self._publish(stream.name, data)
            sym.last_best = best
            if trade:
                self._trade(sym, best, now_ms, active)

    def _publish_depth(self, sym: _Symbol, streams: list[StreamName], data: bytes) -> None:
        """Send a depth event through the drop / duplicate / reorder faults."""

        def emit(payload: bytes) -> None:
            for stream in streams:
                self._publish(stream.name, payload)

        if sym.held is not None:
            # The reordered event goes right after the one that overtook it.
            emit(data)
            emit(sym.held)
            sym.held = None
            sym.last_dropped = False
            return
        fault = next((k for k in INJECTABLE if sym.planned[k]), None)
        if fault is not None:
            sym.planned[fault] -= 1
        else:
            f = self.faults
            if f.drop or f.duplicate or f.reorder:
                r = self._rng.random()
                if r < f.drop:
                    fault = "drop"
                elif r < f.drop + f.duplicate:
                    fault = "duplicate"
                elif r < f.drop + f.duplicate + f.reorder:
                    fault = "reorder"
        if fault is not None:
            sym.counts[fault] += 1
            self.injected[fault] += 1
        if fault == "drop":
            if not sym.last_dropped:
                sym.counts["drop_gaps"] += 1  # consecutive drops make one gap
            sym.last_dropped = True
            return
        sym.last_dropped = False
        if fault == "reorder":
            sym.held = data
            return
        emit(data)
        if fault == "duplicate":
            emit(data)

    def _levels(self, spec: SymbolSpec, levels: Iterable[tuple[int, int]]) -> list[list[str]]:
        tick, step, pd, qd = spec.tick_fp, spec.step_fp, spec.price_decimals, spec.qty_decimals
        return [[fmt(p * tick, pd), fmt(q * step, qd)] for p, q in levels]

    def _depth_json(self, sym: _Symbol, event: DepthEvent, now_ms: int) -> bytes:
        spec = sym.spec
        if self.market == "spot":
            return orjson.dumps(
                {
                    "e": "depthUpdate",
                    "E": now_ms,
                    "s": spec.symbol,
                    "U": event.first_id,
                    "u": event.last_id,
                    "b": self._levels(spec, event.bids),
                    "a": self._levels(spec, event.asks),
                }
            )
        return orjson.dumps(
            {
                "e": "depthUpdate",
                "E": now_ms,
                "T": now_ms - 1,
                "s": spec.symbol,
                "U": event.first_id,
                "u": event.last_id,
                "pu": event.prev_last_id,
                "b": self._levels(spec, event.bids),
                "a": self._levels(spec, event.asks),
            }
        )

    def _partial_json(self, sym: _Symbol, event: DepthEvent, now_ms: int, depth: int) -> bytes:
        """Partial book: spot sends a bare snapshot, USD-M a depthUpdate with the top levels."""
        bids, asks = sym.book.top(depth)
        spec = sym.spec
        if self.market == "spot":
            return orjson.dumps(
                {
                    "lastUpdateId": event.last_id,
                    "bids": self._levels(spec, bids),
                    "asks": self._levels(spec, asks),
                }
            )
        return orjson.dumps(
            {
                "e": "depthUpdate",
                "E": now_ms,
                "T": now_ms - 1,
                "s": spec.symbol,
                "U": event.first_id,
                "u": event.last_id,
                "pu": event.prev_last_id,
                "b": self._levels(spec, bids),
                "a": self._levels(spec, asks),
            }
        )

    def _book_ticker_json(
        self, sym: _Symbol, best: tuple[int, int, int, int], update_id: int, now_ms: int
    ) -> bytes:
        spec = sym.spec
        tick, step, pd, qd = spec.tick_fp, spec.step_fp, spec.price_decimals, spec.qty_decimals
        bid, bid_qty, ask, ask_qty = best
        prices = {
            "b": fmt(bid * tick, pd),
            "B": fmt(bid_qty * step, qd),
            "a": fmt(ask * tick, pd),
            "A": fmt(ask_qty * step, qd),
        }
        if self.market == "spot":  # spot bookTicker has neither "e" nor "E"
            return orjson.dumps({"u": update_id, "s": spec.symbol, **prices})
        return orjson.dumps(
            {
                "e": "bookTicker",
                "u": update_id,
                "s": spec.symbol,
                **prices,
                "T": now_ms - 1,
                "E": now_ms,
            }
        )

    def _trade(
        self,
        sym: _Symbol,
        best: tuple[int, int, int, int],
        now_ms: int,
        active: dict[str, list[StreamName]],
    ) -> None:
        rng = sym.trade_rng
        buyer_is_maker = rng.random() < 0.5  # a sell hitting the bid
        px, level_qty = (best[0], best[1]) if buyer_is_maker else (best[2], best[3])
        qty = rng.randint(1, max(1, min(level_qty, 1000)))
        sym.trade_id += 1
        sym.agg_id += 1
        sym.last_price = px
        spec = sym.spec
        tick, step = spec.tick_fp, spec.step_fp
        for candle in sym.candles.values():
            if candle.n == 0:
                candle.o = candle.h = candle.l = candle.c = px
                candle.first_id = sym.trade_id
            candle.h, candle.l, candle.c = max(candle.h, px), min(candle.l, px), px
            candle.v += qty
            quote = px * tick * qty * step // SCALE
            candle.q += quote
            candle.n += 1
            candle.last_id = sym.trade_id
            if not buyer_is_maker:
                candle.taker_v += qty
                candle.taker_q += quote
        p, q = fmt(px * tick, spec.price_decimals), fmt(qty * step, spec.qty_decimals)
        spot = self.market == "spot"
        trades = active.get("trade")
        if trades:
            trade: dict[str, Any] = {"e": "trade", "E": now_ms}
            if not spot:
                trade["T"] = now_ms
            trade.update(s=spec.symbol, t=sym.trade_id, p=p, q=q)
            if spot:
                trade.update(T=now_ms, m=buyer_is_maker, M=True)
            else:
                trade.update(X="MARKET", m=buyer_is_maker)
            data = orjson.dumps(trade)
            for stream in trades:
                self._publish(stream.name, data)
        aggs = active.get("aggTrade")
        if aggs:
            agg: dict[str, Any] = {
                "e": "aggTrade",
                "E": now_ms,
                "s": spec.symbol,
                "a": sym.agg_id,
                "p": p,
                "q": q,
                "f": sym.trade_id,
                "l": sym.trade_id,
                "T": now_ms,
                "m": buyer_is_maker,
            }
            if spot:
                agg["M"] = True
            data = orjson.dumps(agg)
            for stream in aggs:
                self._publish(stream.name, data)

    async def _ticker_loop(self) -> None:
        """Klines every second; markPrice every second (@1s) or every 3 s."""
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            if self._paused:
                continue
            now_ms = int(time.time() * 1000)
            for sym in self._symbols.values():
                active = self._active.get(sym.spec.symbol, {})
                self._push_klines(sym, active.get("kline", []), now_ms)
                for stream in active.get("markPrice", ()):
                    if stream.param == "1s" or ticks % 3 == 0:
                        self._publish(stream.name, self._mark_json(sym, now_ms))

    def _push_klines(self, sym: _Symbol, streams: list[StreamName], now_ms: int) -> None:
        wanted = {s.param for s in streams}
        for interval in list(sym.candles):
            if interval not in wanted:
                del sym.candles[interval]
        for stream in streams:
            interval = stream.param
            candle = sym.candles.get(interval)
            if candle is not None and now_ms > candle.close_ms:
                self._publish(stream.name, self._kline_json(sym, candle, now_ms, closed=True))
                candle = None
            if candle is None:
                period_ms = INTERVAL_SECONDS[interval] * 1000
                open_ms = now_ms - now_ms % period_ms
                px = sym.last_price
                candle = sym.candles[interval] = _Candle(
                    interval, open_ms, open_ms + period_ms - 1, px, px, px, px
                )
            self._publish(stream.name, self._kline_json(sym, candle, now_ms, closed=False))

    def _kline_json(self, sym: _Symbol, k: _Candle, now_ms: int, *, closed: bool) -> bytes:
        spec = sym.spec
        tick, step, pd, qd = spec.tick_fp, spec.step_fp, spec.price_decimals, spec.qty_decimals
        quote_decimals = 8 if self.market == "spot" else min(8, pd + qd)
        return orjson.dumps(
            {
                "e": "kline",
                "E": now_ms,
                "s": spec.symbol,
                "k": {
                    "t": k.open_ms,
                    "T": k.close_ms,
                    "s": spec.symbol,
                    "i": k.interval,
                    "f": k.first_id,
                    "L": k.last_id,
                    "o": fmt(k.o * tick, pd),
                    "c": fmt(k.c * tick, pd),
                    "h": fmt(k.h * tick, pd),
                    "l": fmt(k.l * tick, pd),
                    "v": fmt(k.v * step, qd),
                    "n": k.n,
                    "x": closed,
                    "q": fmt(k.q, quote_decimals),
                    "V": fmt(k.taker_v * step, qd),
                    "Q": fmt(k.taker_q, quote_decimals),
                    "B": "0",
                },
            }
        )

    def _mark_json(self, sym: _Symbol, now_ms: int) -> bytes:
        bid, _, ask, _ = sym.book.best()
        tick = sym.spec.tick_fp
        mark = (bid + ask) * tick // 2
        index = mark + self._rng.randint(-3, 3) * tick
        funding = 10_000 + self._rng.randint(-5000, 5000)  # around 0.0001
        next_funding = (now_ms // _FUNDING_PERIOD_MS + 1) * _FUNDING_PERIOD_MS
        return orjson.dumps(
            {
                "e": "markPriceUpdate",
                "E": now_ms,
                "s": sym.spec.symbol,
                "p": fmt(mark, 8),
                "i": fmt(max(index, 0), 8),
                "P": fmt(mark, 8),
                "r": fmt(funding, 8),
                "T": next_funding,
            }
        )

    # -- fan-out -------------------------------------------------------------

    def _publish(self, stream: str, data: bytes) -> None:
        conns = self._subs.get(stream)
        if not conns:
            return
        envelope = None
        for conn in conns:
            if conn.combined:
                if envelope is None:
                    envelope = b'{"stream":"' + stream.encode() + b'","data":' + data + b"}"
                self._push(conn, envelope)
            else:
                self._push(conn, data)

    def _push(self, conn: _Conn, frame: bytes) -> None:
        if conn.closed:
            return
        if self._stalled:
            self._counters["stall_discarded"] += 1
            return
        if self.faults.malformed and self._rng.random() < self.faults.malformed:
            conn.outbox.append(self._garbage(frame))
            self.injected["malformed"] += 1
        conn.outbox.append(frame)
        conn.wake.set()
        queued = len(conn.outbox)
        if queued > _OUTBOX_HIGH:
            conn.drained.clear()
            if queued > _OUTBOX_MAX and self.rate > 0:
                self._abort(
                    conn, "slow_consumer"
                )  # like Binance: a client that cannot keep up is cut

    def _garbage(self, frame: bytes) -> bytes:
        """Invalid for any Binance decoder, but valid UTF-8 (a text frame must be)."""
        choice = self._rng.randrange(len(_GARBAGE) + 1)
        return frame[: max(1, len(frame) // 2)] if choice == len(_GARBAGE) else _GARBAGE[choice]

    def _abort(self, conn: _Conn, reason: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        if reason == "disconnect":
            self.injected["disconnect"] += 1
        else:
            self.closes[reason] += 1
        conn.ws.transport.abort()

    # -- subscriptions -------------------------------------------------------

    def _reindex(self, symbols: Iterable[str]) -> None:
        """Rebuild the active-stream index of ``symbols`` (after (un)subscribing):
        the generator looks streams up by symbol and kind, once per event."""
        for symbol in set(symbols):
            by_kind: dict[str, list[StreamName]] = defaultdict(list)
            for stream in self._streams_of.get(symbol, {}).values():
                by_kind[stream.kind].append(stream)
            if by_kind:
                self._active[symbol] = dict(by_kind)
            else:
                self._active.pop(symbol, None)

    def _subscribe(self, conn: _Conn, streams: Iterable[StreamName]) -> None:
        touched = []
        for stream in streams:
            if stream.name not in conn.streams:
                conn.streams[stream.name] = stream
                self._subs[stream.name].add(conn)
                self._streams_of[stream.symbol][stream.name] = stream
                touched.append(stream.symbol)
        self._reindex(touched)
        if touched:
            self._wake()

    def _unsubscribe(self, conn: _Conn, names: Iterable[str]) -> None:
        touched = []
        for name in names:
            stream = conn.streams.pop(name, None)
            if stream is None:
                continue
            subscribers = self._subs.get(name)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self._subs[name]
                    self._streams_of[stream.symbol].pop(name, None)
                    if not self._streams_of[stream.symbol]:
                        del self._streams_of[stream.symbol]
            touched.append(stream.symbol)
        self._reindex(touched)

    def _check_stream(self, name: str, category: str) -> StreamName:
        stream = parse_stream(name, self.market)
        if category == "public" and not stream.public:
            raise ValueError(
                f"stream {name!r} is market data: it is served on /market, not /public"
            )
        if category == "market" and stream.public:
            raise ValueError(f"stream {name!r} is served on /public, not /market")
        return stream

    # -- WebSocket connections -----------------------------------------------

    def _ws_route(self, path: str, query: dict[str, str]) -> tuple[bool, str, list[StreamName]]:
        """(combined, category, streams) of a WebSocket path; ValueError when
        the path or a stream is invalid, LookupError when it is not a stream path."""
        category = ""
        if self.market == "usdm":
            head, _, tail = path[1:].partition("/")
            if head in ("public", "market"):
                category, path = head, "/" + tail
            elif head == "private":
                raise LookupError("user data streams (/private) are not simulated")
        if path == "/stream":
            combined, names = True, query.get("streams", "").split("/")
        elif path == "/ws":
            combined, names = False, []
        elif path.startswith("/ws/"):
            combined, names = False, path[4:].split("/")
        else:
            raise LookupError(f"no WebSocket endpoint at {path}")
        streams = {}
        for name in filter(None, names):
            stream = self._check_stream(name, category)
            streams[stream.name] = stream
        if len(streams) > self.max_streams:
            raise ValueError(f"{len(streams)} streams; at most {self.max_streams} per connection")
        return combined, category, list(streams.values())

    async def _handler(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        request = ws.request
        assert request is not None  # the handshake is done
        path, query = _http.split_path(request)
        try:
            combined, category, streams = self._ws_route(path, query)
        except (
            LookupError,
            ValueError,
        ) as exc:  # checked at the handshake; limits may change since
            await ws.close(1008, str(exc)[:120])
            return
        conn = _Conn(ws, combined, request.path, loop.time())
        conn.category = category
        self._conns[conn.id] = conn
        self._counters["connections"] += 1
        self._subscribe(conn, streams)
        if self._stalled and self._blackhole:
            ws.transport.pause_reading()
        tasks = [
            loop.create_task(self._sender(conn)),
            loop.create_task(self._pinger(conn)),
            loop.create_task(self._lifetime(conn)),
        ]
        if self._replay is not None:
            tasks.append(loop.create_task(self._replay_to(conn)))
        try:
            async for message in ws:
                if not self._allow_incoming(conn, loop.time()):
                    self.closes["too_many_messages"] += 1
                    conn.closed = True
                    await ws.close(1008, "Too many messages")
                    break
                reply = self._on_message(conn, message)
                if reply is not None:
                    self._push(conn, reply)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            conn.drained.set()
            self._unsubscribe(conn, list(conn.streams))
            self._conns.pop(conn.id, None)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _allow_incoming(self, conn: _Conn, now_s: float) -> bool:
        incoming = conn.incoming
        incoming.append(now_s)
        while incoming and incoming[0] <= now_s - 1.0:
            incoming.popleft()
        return len(incoming) <= self.max_incoming_per_s

    def _on_message(self, conn: _Conn, message: str | bytes) -> bytes | None:
        """A client request -> the reply Binance would send."""
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            return _error(3, f"Invalid JSON: {exc}", None)
        if not isinstance(msg, dict):
            return _error(3, "Invalid JSON: expected an object", None)
        request_id = msg.get("id")
        if request_id is not None and (
            isinstance(request_id, bool) or not isinstance(request_id, (int, str))
        ):
            return _error(1, "Invalid value type: id must be an integer or a string", None)
        method = msg.get("method")
        params = msg.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return _error(
                    1, "Invalid value type: params must be a list of stream names", request_id
                )
            try:
                streams = [self._check_stream(p, conn.category) for p in params]
            except ValueError as exc:
                return _error(2, f"Invalid request: {exc}", request_id)
            if method == "SUBSCRIBE":
                new = {s.name for s in streams} - conn.streams.keys()
                if len(conn.streams) + len(new) > self.max_streams:
                    return _error(
                        2,
                        f"Invalid request: at most {self.max_streams} streams per connection",
                        request_id,
                    )
                self._subscribe(conn, streams)
            else:
                self._unsubscribe(conn, [s.name for s in streams])
            return orjson.dumps({"result": None, "id": request_id})
        if method == "LIST_SUBSCRIPTIONS":
            return orjson.dumps({"result": sorted(conn.streams), "id": request_id})
        if method == "SET_PROPERTY":
            if not (
                isinstance(params, list)
                and len(params) == 2
                and params[0] == "combined"
                and isinstance(params[1], bool)
            ):
                return _error(
                    2, "Invalid request: SET_PROPERTY takes ['combined', true|false]", request_id
                )
            conn.combined = params[1]
            return orjson.dumps({"result": None, "id": request_id})
        if method == "GET_PROPERTY":
            if params != ["combined"]:
                return _error(2, "Invalid request: GET_PROPERTY takes ['combined']", request_id)
            return orjson.dumps({"result": conn.combined, "id": request_id})
        return _error(2, f"Invalid request: unknown method {method!r}", request_id)

    async def _sender(self, conn: _Conn) -> None:
        ws = conn.ws
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                while conn.outbox and not self._stalled:
                    await ws.send(conn.outbox.popleft(), text=True)
                    conn.sent += 1
                    self._counters["frames_sent"] += 1
                    if len(conn.outbox) < _OUTBOX_HIGH // 2:
                        conn.drained.set()
                conn.drained.set()
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            conn.drained.set()

    async def _pinger(self, conn: _Conn) -> None:
        """Ping every interval; close when the pong is later than the timeout.
        No pings during a stall, and a stall forgives a late pong (it held it back)."""
        ws = conn.ws
        try:
            while True:
                await asyncio.sleep(self.ping_interval_s)
                await self._unstalled.wait()
                epoch = self._stall_epoch
                pong = await ws.ping()
                conn.pings += 1
                try:
                    await asyncio.wait_for(asyncio.shield(pong), self.pong_timeout_s)
                except TimeoutError:
                    if self._stall_epoch != epoch or self._stalled:
                        continue
                    self.closes["pong_timeout"] += 1
                    conn.closed = True
                    await ws.close(1008, "Pong timeout")
                    return
        except ConnectionClosed:
            pass

    async def _lifetime(self, conn: _Conn) -> None:
        """Binance closes every connection after 24 h."""
        await asyncio.sleep(self.lifetime_s)
        self.closes["lifetime"] += 1
        conn.closed = True
        with contextlib.suppress(ConnectionClosed):
            await conn.ws.close(1000, "Connection lifetime exceeded")

    async def _replay_to(self, conn: _Conn) -> None:
        """The capture's frames to one client: those of its streams (all when it named none)."""
        assert self._replay is not None
        loop = asyncio.get_running_loop()
        frames = self._replay.frames
        start_s = loop.time()
        first_ns = frames[0].recv_ns if frames else 0
        for n, frame in enumerate(frames):
            if self.replay_speed > 0:
                delay = start_s + (frame.recv_ns - first_ns) / 1e9 / self.replay_speed - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if conn.closed:
                return
            name = frame.stream or frame.family
            if conn.streams:
                match = [s.name for s in conn.streams.values() if _family(s) == frame.family]
                if not match:
                    continue
                name = frame.stream if frame.stream in match else match[0]
            if not conn.combined:
                out = frame.data
            elif frame.stream and frame.stream == name:
                out = frame.raw  # byte for byte as recorded
            else:
                out = b'{"stream":"' + name.encode() + b'","data":' + frame.data + b"}"
            self._push(conn, out)
            if not conn.drained.is_set():
                await conn.drained.wait()
            elif n % 256 == 255:
                await asyncio.sleep(0)  # let the sender and other clients run
        self._counters["replays_finished"] += 1

    # -- HTTP ----------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """REST answers, and the check of WebSocket paths before the upgrade."""
        path, query = _http.split_path(request)
        if _http.is_upgrade(request):
            try:
                self._ws_route(path, query)
            except LookupError as exc:
                return _http.json_response(404, {"code": -1, "msg": str(exc)})
            except ValueError as exc:
                return _http.json_response(400, {"code": 2, "msg": f"Invalid request: {exc}"})
            return None  # accept the WebSocket
        if request.method != "GET":
            return _http.json_response(
                405, {"code": -1, "msg": f"{request.method} is not simulated"}
            )
        if path.startswith("/sim/"):
            return self._sim_endpoint(path, query)
        self._counters["rest_requests"] += 1
        result = self._rest(path, query)
        self._counters[f"http_{result.status_code}"] += 1
        return result

    def _rest(self, path: str, query: dict[str, str]) -> Response:
        prefix = self.rest_prefix
        if not path.startswith(prefix + "/"):
            if path.startswith(("/api/", "/fapi/")):
                other = "usdm" if self.market == "spot" else "spot"
                msg = (
                    f"{path} is a {other} path; this simulator serves {self.market} ({prefix}/...)"
                )
            else:
                msg = f"no REST endpoint at {path}"
            return _http.json_response(404, {"code": -1, "msg": msg})
        endpoint = path[len(prefix) + 1 :]
        limit, limit_error = self._limit(query)
        weights = {
            "depth": depth_weight(self.market, limit),
            "exchangeInfo": 20 if self.market == "spot" else 1,
            "time": 1,
            "ping": 1,
        }
        weight = weights.get(endpoint)
        if weight is None:
            return _http.json_response(404, {"code": -1, "msg": f"{path} is not simulated"})
        status, used, retry_after = self.limiter.charge(weight, time.time())
        headers = [("X-MBX-USED-WEIGHT-1M", str(used)), ("X-MBX-USED-WEIGHT", str(used))]
        if status == 200 and self._rest_plan:
            status, retry_after = self._rest_plan.popleft()
            self.injected[f"rest_{status}"] += 1
        elif (
            status == 200 and self.faults.rest_error and self._rng.random() < self.faults.rest_error
        ):
            status = 500
            self.injected["rest_500"] += 1
        if status == 429:
            return _http.json_response(
                429,
                {
                    "code": -1003,
                    "msg": f"Too many requests; current limit of IP(127.0.0.1) is {self.limiter.limit} "
                    "requests per minute. Please use the websocket for live updates to avoid polling the API.",
                },
                headers=[*headers, ("Retry-After", str(retry_after))],
            )
        if status == 418:
            until_ms = int((time.time() + retry_after) * 1000)
            return _http.json_response(
                418,
                {
                    "code": -1003,
                    "msg": f"Way too many requests; IP(127.0.0.1) banned until {until_ms}. "
                    "Please use the websocket for live updates to avoid bans.",
                },
                headers=[*headers, ("Retry-After", str(retry_after))],
            )
        if status != 200:
            return _http.json_response(
                status,
                {"code": -1000, "msg": "An unknown error occurred while processing the request."},
                headers=headers,
            )
        if endpoint == "time":
            return _http.json_response(
                200, {"serverTime": int(time.time() * 1000)}, headers=headers
            )
        if endpoint == "ping":
            return _http.json_response(200, {}, headers=headers)
        if endpoint == "exchangeInfo":
            return self._exchange_info(query, headers)
        if limit_error:
            return _http.json_response(400, {"code": -1100, "msg": limit_error}, headers=headers)
        return self._depth(query, limit, headers)

    def _limit(self, query: dict[str, str]) -> tuple[int, str]:
        """The depth ``limit`` (spot: default 100, at most 5000; usdm: 500, 1000) and an error."""
        default, most = (100, 5000) if self.market == "spot" else (500, 1000)
        text = query.get("limit", "")
        if not text:
            return default, ""
        if not text.isdigit() or len(text) > 20:
            return (
                default,
                "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.",
            )
        return max(1, min(int(text), most)), ""

    def _depth(self, query: dict[str, str], limit: int, headers: list[tuple[str, str]]) -> Response:
        symbol = query.get("symbol", "").upper()
        if not symbol:
            return _http.json_response(
                400,
                {
                    "code": -1102,
                    "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
                },
                headers=headers,
            )
        if self._replay is not None:
            body = self._replay.snapshot(symbol)
            if body is None:
                return _http.json_response(
                    400, {"code": -1121, "msg": "Invalid symbol."}, headers=headers
                )
            return _http.json_response(200, body, headers=headers)
        sym = self._symbols.get(symbol)
        if sym is None:
            return _http.json_response(
                400, {"code": -1121, "msg": "Invalid symbol."}, headers=headers
            )
        bids, asks = sym.book.top(limit)
        snapshot: dict[str, Any] = {"lastUpdateId": self._snapshot_id(sym)}
        if self.market == "usdm":
            now_ms = int(time.time() * 1000)
            snapshot.update(E=now_ms, T=now_ms - 1)
        snapshot["bids"] = self._levels(sym.spec, bids)
        snapshot["asks"] = self._levels(sym.spec, asks)
        return _http.json_response(200, snapshot, headers=headers)

    def _snapshot_id(self, sym: _Symbol) -> int:
        """The u of the last event in the snapshot. With ``snapshot_next_u``
        a USD-M snapshot is sometimes labelled with the next event's U
        instead, as recorded ones are (SUSHIUSDT in the cryptofeed capture):
        the sync rule ``U <= lastUpdateId <= u`` then picks that next event.
        An id strictly between two events of a symbol would fit no event, so
        it is never used."""
        book = sym.book
        if (
            self.market == "usdm"
            and self.snapshot_next_u
            and self._rng.random() < self.snapshot_next_u
        ):
            return book.next_first_id
        return book.last_update_id

    def _exchange_info(self, query: dict[str, str], headers: list[tuple[str, str]]) -> Response:
        if self._replay is not None and self._replay.exchange_info is not None and not query:
            return _http.json_response(200, self._replay.exchange_info, headers=headers)
        specs = self.specs
        wanted: list[str] = []
        if "symbol" in query:
            wanted = [query["symbol"].upper()]
        elif "symbols" in query:
            try:
                parsed = orjson.loads(query["symbols"])
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
                return _http.json_response(
                    400,
                    {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."},
                    headers=headers,
                )
            wanted = [s.upper() for s in parsed]
        if wanted:
            by_name = {s.symbol: s for s in specs}
            if any(w not in by_name for w in wanted):
                return _http.json_response(
                    400, {"code": -1121, "msg": "Invalid symbol."}, headers=headers
                )
            specs = [by_name[w] for w in wanted]
        return _http.json_response(
            200, exchange_info(self.market, specs, self.limiter.limit), headers=headers
        )

    def _sim_endpoint(self, path: str, query: dict[str, str]) -> Response:
        """The simulator's own endpoints: truth, stats, faults, control (no weight, no faults)."""
        try:
            if path == "/sim/truth":
                symbol = query.get("symbol", "")
                at = query.get("at")
                truth = self.truth(symbol, int(at) if at else None)
                return _http.json_response(200, truth.as_dict())
            if path == "/sim/stats":
                return _http.json_response(200, self.stats())
            if path == "/sim/faults":
                self.faults.update(query)
                return _http.json_response(200, self.faults.as_dict())
            if path == "/sim/control":
                return _http.json_response(200, self._control(query))
        except KeyError as exc:
            return _http.json_response(404, {"error": f"not found: {exc.args[0]}"})
        except (ValueError, SimulatorError) as exc:
            return _http.json_response(400, {"error": str(exc)})
        return _http.json_response(404, {"error": f"no simulator endpoint at {path}"})

    def _control(self, query: dict[str, str]) -> dict[str, Any]:
        """``/sim/control?action=...``: the fault and generation controls over HTTP."""
        action = query.get("action", "")
        count = int(query.get("count", "1"))
        if action == "disconnect_all":
            conns = list(self._conns.values())
            for conn in conns:
                self._abort(conn, "disconnect")
            return {"disconnected": len(conns)}
        if action == "stall":
            seconds = query.get("seconds")
            blackhole = query.get("blackhole", "") in ("1", "true")
            self.stall(float(seconds) if seconds else None, blackhole=blackhole)
        elif action == "unstall":
            self.unstall()
        elif action == "pause":
            self.pause()
        elif action == "resume":
            self.resume()
        elif action == "malformed":
            return {"sent": self.send_malformed(count)}
        elif action == "inject":
            self.inject(query.get("kind", ""), query.get("symbol") or None, count)
        elif action == "fail_rest":
            retry_after = int(query.get("retry_after", "1"))
            self.fail_rest(int(query.get("status", "500")), count, retry_after)
        else:
            raise SimulatorError(
                f"unknown action {action!r} (disconnect_all, stall, unstall, pause, resume, malformed, inject, fail_rest)"
            )
        return {"ok": True, "action": action}


def exchange_info(market: str, specs: Sequence[SymbolSpec], weight_limit: int) -> dict[str, Any]:
    """``GET /api/v3/exchangeInfo`` or ``/fapi/v1/exchangeInfo`` in Binance's shape."""
    now_ms = int(time.time() * 1000)
    if market == "spot":
        return {
            "timezone": "UTC",
            "serverTime": now_ms,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": weight_limit,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {
                    "rateLimitType": "RAW_REQUESTS",
                    "interval": "MINUTE",
                    "intervalNum": 5,
                    "limit": 61000,
                },
            ],
            "exchangeFilters": [],
            "symbols": [
                {
                    "symbol": s.symbol,
                    "status": "TRADING",
                    "baseAsset": s.base_asset,
                    "baseAssetPrecision": 8,
                    "quoteAsset": s.quote_asset,
                    "quotePrecision": 8,
                    "quoteAssetPrecision": 8,
                    "baseCommissionPrecision": 8,
                    "quoteCommissionPrecision": 8,
                    "orderTypes": [
                        "LIMIT",
                        "LIMIT_MAKER",
                        "MARKET",
                        "STOP_LOSS_LIMIT",
                        "TAKE_PROFIT_LIMIT",
                    ],
                    "icebergAllowed": True,
                    "ocoAllowed": True,
                    "quoteOrderQtyMarketAllowed": True,
                    "allowTrailingStop": True,
                    "cancelReplaceAllowed": True,
                    "isSpotTradingAllowed": True,
                    "isMarginTradingAllowed": False,
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": fmt(s.tick_fp, 8),
                            "maxPrice": "1000000.00000000",
                            "tickSize": fmt(s.tick_fp, 8),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": fmt(s.step_fp, 8),
                            "maxQty": "9000.00000000",
                            "stepSize": fmt(s.step_fp, 8),
                        },
                    ],
                    "permissions": [],
                    "permissionSets": [["SPOT"]],
                    "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                    "allowedSelfTradePreventionModes": [
                        "EXPIRE_TAKER",
                        "EXPIRE_MAKER",
                        "EXPIRE_BOTH",
                    ],
                }
                for s in specs
            ],
        }
    return {
        "timezone": "UTC",
        "serverTime": now_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": weight_limit,
            },
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [
            {
                "symbol": s.symbol,
                "pair": s.symbol.partition("_")[0],
                "contractType": s.contract_type,
                "deliveryDate": s.delivery_date_ms,
                "onboardDate": 1569398400000,
                "status": "TRADING",
                "maintMarginPercent": "2.5000",
                "requiredMarginPercent": "5.0000",
                "baseAsset": s.base_asset,
                "quoteAsset": s.quote_asset,
                "marginAsset": s.quote_asset,
                "pricePrecision": s.price_decimals,
                "quantityPrecision": s.qty_decimals,
                "baseAssetPrecision": 8,
                "quotePrecision": 8,
                "underlyingType": "COIN",
                "underlyingSubType": [],
                "settlePlan": 0,
                "triggerProtect": "0.0500",
                "liquidationFee": "0.012500",
                "marketTakeBound": "0.05",
                "filters": [
                    {
                        "minPrice": s.tick_size,
                        "maxPrice": "1000000",
                        "filterType": "PRICE_FILTER",
                        "tickSize": s.tick_size,
                    },
                    {
                        "stepSize": s.step_size,
                        "filterType": "LOT_SIZE",
                        "maxQty": "1000",
                        "minQty": s.step_size,
                    },
                ],
                "orderTypes": [
                    "LIMIT",
                    "MARKET",
                    "STOP",
                    "STOP_MARKET",
                    "TAKE_PROFIT",
                    "TAKE_PROFIT_MARKET",
                ],
                "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
            }
            for s in specs
        ],
    }


serve_until_stopped = _http.serve_until_stopped  # (re-exported: the CLI imports it from here)
