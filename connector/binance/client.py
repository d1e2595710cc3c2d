"""The Binance feed: WebSocket streams + REST snapshots -> record batches.

A thin asyncio shell around the pure parts (:mod:`.wire` decodes,
:mod:`.sync` keeps each book in sync, :class:`RestWeights` paces REST):

* streams are split over connections (by endpoint path, at most
  ``streams_per_connection`` each), subscribed through the combined-stream
  URL; server pings are answered by the websockets library;
* a watchdog closes a connection silent for ``silence_timeout_s``; a lost
  connection is reconnected with exponential backoff and jitter, each book
  goes stale (STATUS DISCONNECTED) and resyncs from a new snapshot, and a
  jump in trade ids across the outage is declared (STATUS GAP);
* before a connection reaches its age limit (Binance closes at 24 h) a
  replacement is opened for the same streams and both run side by side for a
  moment (make-before-break); what the newcomer delivers ahead of the old
  one waits until it lines up, so the handover has no gap and no duplicate;
* REST snapshots go through one worker that respects the venue's weight
  budget (``X-MBX-USED-WEIGHT-1M``), ``Retry-After`` on 429/418, and spaces
  requests so many symbols resyncing at once do not burst.

Library use: ``async for batch in BinanceFeed(config).records(): ...``.
As a pipeline adapter: ``adapter = "connector.binance.client:factory"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import math
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

from connector.aio import cancel_all, wait_event, with_timeout
from connector.binance.batch import BatchDecoder
from connector.binance.sync import BookSync, State
from connector.binance.wire import Decoded, DecodeError, Decoder
from connector.feed import FeedConfig, ReconnectPolicy
from pipeline import record as rec
from pipeline.adapter import AdapterContext, check_params
from pipeline.errors import ConfigError, FatalError
from pipeline.record import Records, StatusReason

log = logging.getLogger("connector.binance")

USDM_SPLIT_PATHS = {
    "depth": "/public/stream",
    "bookTicker": "/public/stream",
    "aggTrade": "/market/stream",
    "trade": "/market/stream",
    "markPrice": "/market/stream",
    "kline": "/market/stream",
}
"""The 2026 USD-M endpoint split by traffic type (PROTOCOLS.md); opt in with ``split_paths``."""


def depth_weight(limit: int, futures: bool) -> int:
    """REST weight of a depth snapshot by its limit (PROTOCOLS.md)."""
    if futures:
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


@dataclass(frozen=True)
class BinanceConfig(FeedConfig):
    market: str = "spot"
    rest_url: str = ""
    streams: tuple[str, ...] = ("depth@100ms", "trade", "bookTicker")
    """Per-symbol stream suffixes (``<symbol>@<suffix>``)."""
    stream_path: str = "/stream"
    stream_paths: Mapping[str, str] = field(default_factory=dict)
    """Stream type (``depth``, ``trade``, ...) -> path, overriding ``stream_path``."""
    snapshot_limit: int = 1000
    streams_per_connection: int = 200
    max_connection_age_s: float = 23 * 3600.0
    """Rotate (make-before-break) before the venue's 24 h limit."""
    rotation_overlap_s: float = 1.0
    """How long old and new connection run side by side at a rotation."""
    weight_budget: int = 0
    """REST weight per minute (0: the venue's, 6000 spot / 2400 USD-M)."""
    snapshot_spacing_ms: float = 50.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.market not in ("spot", "usdm"):
            raise ConfigError(
                f"feeds.{self.name}.market must be 'spot' or 'usdm', got {self.market!r}"
            )
        if not self.rest_url.startswith(("http://", "https://")):
            raise ConfigError(f"feeds.{self.name}.rest_url must start with http:// or https://")
        if not self.symbol_map:
            raise ConfigError(f"feeds.{self.name}: no symbols")
        if not 1 <= self.streams_per_connection <= 1024:
            raise ConfigError(
                f"feeds.{self.name}.streams_per_connection must be in 1..1024 (Binance's limit)"
            )
        limit_max = 1000 if self.market == "usdm" else 5000
        if not 5 <= self.snapshot_limit <= limit_max:
            raise ConfigError(f"feeds.{self.name}.snapshot_limit must be in 5..{limit_max}")
        if self.rotation_overlap_s <= 0 or self.max_connection_age_s <= self.rotation_overlap_s:
            raise ConfigError(
                f"feeds.{self.name}: need 0 < rotation_overlap_s < max_connection_age_s"
            )

    @property
    def futures(self) -> bool:
        return self.market == "usdm"

    @property
    def budget(self) -> int:
        return self.weight_budget or (2400 if self.futures else 6000)

    @property
    def depth_path(self) -> str:
        return "/fapi/v1/depth" if self.futures else "/api/v3/depth"


class RestWeights:
    """Pure bookkeeping of the REST weight budget (clock passed in, in seconds).

    Binance counts weight per minute and reports the running total in
    ``X-MBX-USED-WEIGHT-1M``; we keep 10% in reserve for what other requests
    of this IP may spend, and obey ``Retry-After`` after a 429 or 418.
    """

    def __init__(self, budget: int, reserve: float = 0.1) -> None:
        self.budget = budget
        self.limit = int(budget * (1 - reserve))
        self.used = 0
        self.window = -1
        self.blocked_until = 0.0
        self.throttled = 0
        self.banned = 0

    def delay(self, weight: int, now: float) -> float:
        """Seconds to wait before spending ``weight``."""
        if now < self.blocked_until:
            return self.blocked_until - now
        window = math.floor(now / 60)
        if window != self.window:
            self.window, self.used = window, 0
        if self.used + weight > self.limit:
            return (window + 1) * 60 - now + 0.05
        return 0.0

    def spent(self, weight: int) -> None:
        self.used += weight

    def update(self, status: int, headers: Mapping[str, str], now: float) -> None:
        used = headers.get("x-mbx-used-weight-1m") or headers.get("X-MBX-USED-WEIGHT-1M")
        if used is not None and used.isdigit():
            self.used = int(used)
            self.window = math.floor(now / 60)
        if status in (429, 418):
            retry = headers.get("retry-after") or headers.get("Retry-After") or ""
            wait = (
                float(retry)
                if retry.replace(".", "", 1).isdigit()
                else (120.0 if status == 418 else 60.0)
            )
            self.blocked_until = max(self.blocked_until, now + wait)
            if status == 429:
                self.throttled += 1
            else:
                self.banned += 1


@dataclass
class _Conn:
    ident: int
    streams: tuple[str, ...]
    url: str
    opened: float = 0.0
    ws: Any = None
    task: asyncio.Task[None] | None = None
    closed_reason: str = ""
    messages: int = 0
    last_frame: float = 0.0
    """time.monotonic() of the last frame received."""


@dataclass
class _Group:
    """Streams served by one connection (and its replacement during a rotation)."""

    path: str
    streams: tuple[str, ...]
    symbols: tuple[str, ...]
    depth_symbols: tuple[str, ...] = ()
    """Symbols whose diff-depth stream is in this group (their books depend on it)."""
    primary: _Conn | None = None
    secondary: _Conn | None = None


@dataclass
class _Seq:
    """Continuity of one id-ordered stream (a symbol's trades, its book)."""

    last: int | None = None
    pending: list[tuple[int, Any]] = field(default_factory=list)


class BinanceFeed:
    def __init__(
        self,
        config: BinanceConfig,
        *,
        seed: int | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.clock = clock
        self.seed = seed
        self.decoder = Decoder(config.symbol_map, market=config.market)
        self.syncs = {
            s.upper(): BookSync(i, futures=config.futures) for s, i in config.symbol_map.items()
        }
        self.weights = RestWeights(config.budget)
        self.counters: dict[str, int] = defaultdict(int)
        self._outbox: list[Records] = []
        """Record batches ready for records() to yield, in order."""
        self._inbox: list[tuple[str | bytes, int, _Conn, _Group]] = []
        """Frames received but not decoded yet: decoded together, in batches."""
        self._wake = asyncio.Event()
        self.batch = BatchDecoder(self.decoder)
        self._snap_queue: asyncio.Queue[str] = asyncio.Queue()
        self._seqs: dict[tuple[str, str], _Seq] = defaultdict(_Seq)
        self._bbo_last: dict[str, int] = {}
        self._time_last: dict[tuple[str, str], int] = {}
        self._conn_ids = 0
        self._decode_errors_seen: set[str] = set()
        self.groups = self._plan_groups()
        self._fatal: BaseException | None = None

    def instruments(self) -> dict[int, str]:
        return {i: s.upper() for s, i in self.config.symbol_map.items()}

    # -- planning ------------------------------------------------------------

    def _plan_groups(self) -> list[_Group]:
        by_path: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for symbol in self.config.symbol_map:
            for suffix in self.config.streams:
                kind = suffix.split("@")[0].split("_")[0]
                path = self.config.stream_paths.get(kind, self.config.stream_path)
                by_path[path].append((symbol.upper(), f"{symbol.lower()}@{suffix}"))
        groups = []
        size = self.config.streams_per_connection
        for path, items in by_path.items():
            for i in range(0, len(items), size):
                chunk = items[i : i + size]
                groups.append(
                    _Group(
                        path,
                        tuple(s for _sym, s in chunk),
                        tuple(dict.fromkeys(sym for sym, _s in chunk)),
                        tuple(dict.fromkeys(sym for sym, s in chunk if "@depth" in s)),
                    )
                )
        return groups

    # -- output ----------------------------------------------------------------

    def _emit(self, records: Records) -> None:
        if len(records):
            self._outbox.append(records)
            self._wake.set()

    def _status(
        self,
        reason: StatusReason,
        *,
        inst: int = 0,
        first_missing: int = 0,
        missing: int = 0,
        detail: int = 0,
    ) -> None:
        self._emit(
            rec.status(
                src=0,
                reason=reason,
                ts_recv=self.clock(),
                inst=inst,
                first_missing=first_missing,
                missing=missing,
                detail=detail,
            )
        )
        self.counters[f"status_{reason.name.lower()}"] += 1

    async def records(self) -> AsyncIterator[Records]:
        """Record batches until cancelled (or a fatal error, raised here)."""
        http = httpx.AsyncClient(base_url=self.config.rest_url, timeout=10.0)
        tasks = [asyncio.ensure_future(self._run_group(g, i)) for i, g in enumerate(self.groups)]
        tasks.append(asyncio.ensure_future(self._snapshot_worker(http)))
        try:
            while True:
                if self._fatal is not None:
                    raise self._fatal
                if not self._inbox and not self._outbox:
                    await wait_event(self._wake, 0.5)
                self._wake.clear()
                self._process_inbox()
                if self._outbox:
                    batch, self._outbox = self._outbox, []
                    yield rec.concat(batch)
        finally:
            await cancel_all(tasks, self.config.name)
            for group in self.groups:
                for conn in (group.primary, group.secondary):
                    if conn is not None and conn.ws is not None:
                        with contextlib.suppress(Exception):
                            await conn.ws.close()
            await http.aclose()

    # -- connections -----------------------------------------------------------

    async def _open(self, group: _Group) -> _Conn:
        self._conn_ids += 1
        url = f"{self.config.ws_url.rstrip('/')}{group.path}?streams={'/'.join(group.streams)}"
        conn = _Conn(self._conn_ids, group.streams, url)
        # Our own keepalive pings detect a dead socket even when the venue is
        # quiet; the silence watchdog in _read catches a server that still
        # answers pings but sends no data. Server pings are answered by the library.
        keepalive = min(20.0, self.config.silence_timeout_s)
        conn.ws = await websockets.connect(
            url,
            compression=None,
            max_size=2**24,
            ping_interval=keepalive,
            ping_timeout=keepalive,
            open_timeout=10,
        )
        conn.opened = time.monotonic()
        conn.task = asyncio.ensure_future(self._read(conn, group))
        self.counters["connections"] += 1
        return conn

    async def _read(self, conn: _Conn, group: _Group) -> None:
        """Frames of one connection until it fails or goes silent.

        Silence is watched by a separate timer task, not a timeout around each
        ``recv``: arming and cancelling a timer per frame cost ~20 us, more
        than decoding the frame.
        """
        watchdog = asyncio.ensure_future(self._watchdog(conn))
        clock, wake = self.clock, self._wake  # (not _inbox: the consumer swaps that list)
        conn.last_frame = time.monotonic()
        try:
            while True:
                # bytes, not str: the batch decoder's fastest road reads raw bytes.
                frame = await conn.ws.recv(decode=False)
                conn.messages += 1
                conn.last_frame = time.monotonic()
                self._inbox.append((frame, clock(), conn, group))
                wake.set()
        except websockets.ConnectionClosed as exc:
            if conn.closed_reason != "silent":
                conn.closed_reason = f"closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except (TimeoutError, OSError) as exc:
            conn.closed_reason = f"network error: {exc}"
        finally:
            await cancel_all([watchdog], self.config.name)

    async def _watchdog(self, conn: _Conn) -> None:
        """Close ``conn`` when no frame came for ``silence_timeout_s``."""
        timeout = self.config.silence_timeout_s
        while True:
            silent_s = time.monotonic() - conn.last_frame
            if silent_s < timeout:
                await asyncio.sleep(timeout - silent_s + 0.01)
                continue
            conn.closed_reason = "silent"
            self.counters["watchdog_closes"] += 1
            try:
                await with_timeout(conn.ws.close(), 2.0)
            except (TimeoutError, OSError):
                conn.ws.transport.abort()  # the peer does not even answer the close
            return

    async def _run_group(self, group: _Group, index: int) -> None:
        policy = ReconnectPolicy.from_config(
            self.config, None if self.seed is None else self.seed + index
        )
        while True:
            try:
                conn = await self._open(group)
            except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
                delay = policy.failed()
                if delay is None:
                    self._fatal = FatalError(
                        f"{self.config.name}: gave up after {policy.failures - 1} failed connection attempts: {exc}"
                    )
                    return
                log.warning(
                    "%s: cannot connect (%s); retrying in %.2f s", self.config.name, exc, delay
                )
                await asyncio.sleep(delay)
                continue
            policy.succeeded()
            group.primary = conn
            self._status(StatusReason.CONNECTED, detail=conn.ident)
            await self._serve(group, conn)

    async def _serve(self, group: _Group, conn: _Conn) -> None:
        """Run ``conn`` until it dies (then return: the caller reconnects) or
        until it is old (then hand over to a fresh connection and go on)."""
        while True:
            assert conn.task is not None
            age_left = conn.opened + self.config.max_connection_age_s - time.monotonic()
            done, _ = await asyncio.wait({conn.task}, timeout=max(0.0, age_left))
            if done:
                self._lost(group, conn)
                return
            try:
                fresh = await self._open(group)
            except (TimeoutError, OSError, websockets.InvalidHandshake) as exc:
                log.warning(
                    "%s: rotation failed (%s); keeping the old connection", self.config.name, exc
                )
                conn.opened = time.monotonic() - self.config.max_connection_age_s + 5.0
                continue
            group.secondary = fresh
            assert fresh.task is not None
            await asyncio.wait({conn.task, fresh.task}, timeout=self.config.rotation_overlap_s)
            # Hand over: the fresh connection becomes primary, the old one goes.
            group.primary, group.secondary = fresh, None
            await conn.ws.close()
            if conn.task is not None:
                await asyncio.gather(conn.task, return_exceptions=True)
            self.counters["rotations"] += 1
            self._status(StatusReason.RECONNECT, detail=fresh.ident)
            self._drain_pending(group)
            conn = fresh

    def _lost(self, group: _Group, conn: _Conn) -> None:
        self._process_inbox()  # what arrived before the loss comes first
        log.warning("%s: connection %d lost: %s", self.config.name, conn.ident, conn.closed_reason)
        self.counters["disconnects"] += 1
        reason = StatusReason.STALE if conn.closed_reason == "silent" else StatusReason.DISCONNECTED
        self._status(reason, detail=conn.ident)
        group.primary = None
        now = self.clock()
        for symbol in group.depth_symbols:
            self._emit_decision(self.syncs[symbol].on_disconnect(now).publish)
            self._seqs[("depth", symbol)] = _Seq()

    # -- messages --------------------------------------------------------------

    def _emit_decision(self, batches: list[Records]) -> None:
        for b in batches:
            self._emit(b)

    def _process_inbox(self) -> None:
        """Decode every frame received so far in one batch, then act on each in order."""
        if not self._inbox:
            return
        frames, self._inbox = self._inbox, []
        batch = self.batch.decode([f[0] for f in frames], [f[1] for f in frames])
        failed = dict(batch.errors)
        events = iter(batch.events)
        for i, (frame, recv_ns, conn, group) in enumerate(frames):
            if i in failed:
                self._decode_error(failed[i], frame, conn)
                continue
            event, symbol, start, end = next(events)
            self._handle(
                Decoded(event, symbol, batch.records[start:end]), recv_ns, conn, group, frame
            )

    def _decode_error(self, exc: DecodeError, frame: str | bytes, conn: _Conn) -> None:
        self.counters["decode_errors"] += 1
        kind = str(exc).split(":")[0]
        if kind not in self._decode_errors_seen:
            self._decode_errors_seen.add(kind)
            log.error("%s: undecodable frame (%s): %r", self.config.name, exc, frame[:200])
        self._status(StatusReason.DECODE_ERROR, detail=conn.ident)

    def _handle(
        self, decoded: Decoded, recv_ns: int, conn: _Conn, group: _Group, frame: str | bytes
    ) -> None:
        primary = conn is group.primary
        event = decoded.event
        self.counters[event] += 1
        if event == "error":
            log.error(
                "%s: the venue refused a request on connection %d: %r",
                self.config.name,
                conn.ident,
                frame[:300],
            )
            self._status(StatusReason.SUBSCRIBE_FAILED, detail=conn.ident)
            return
        if event == "depthUpdate":
            self._depth(decoded, recv_ns, primary)
        elif event in ("trade", "aggTrade"):
            self._trade(decoded, primary)
        elif event == "bookTicker":
            if primary:  # state, not events: the primary's view only
                u = int(decoded.records[0]["aux"])
                if u > self._bbo_last.get(decoded.symbol, -1):
                    self._bbo_last[decoded.symbol] = u
                    self._emit(decoded.records)
        elif event in ("markPriceUpdate", "kline"):
            key = (event, decoded.symbol)
            t = int(decoded.records[0]["ts_exch"])
            if t > self._time_last.get(key, -1) or (
                event == "kline" and t == self._time_last.get(key)
            ):
                self._time_last[key] = t
                self._emit(decoded.records)

    def _depth(self, decoded: Decoded, recv_ns: int, primary: bool) -> None:
        sync = self.syncs[decoded.symbol]
        if (
            not primary
            and sync.state == State.SYNCED
            and not self._continues_book(sync, decoded.records)
        ):
            self._seqs[("depth", decoded.symbol)].pending.append((0, decoded))
            return
        self._apply_depth(sync, decoded, recv_ns)

    def _continues_book(self, sync: BookSync, event: Records) -> bool:
        """The event is old (a duplicate) or the very next one: safe from any connection."""
        head = event[0]
        first, last, prev = int(head["px"]), int(head["qty"]), int(head["aux"])
        if last <= sync.last_u:
            return True
        if sync.first_after_snapshot:
            return sync._fits_first(first, last, sync.last_u)
        return prev == sync.last_u if sync.futures else first == sync.last_u + 1

    def _apply_depth(self, sync: BookSync, decoded: Decoded, recv_ns: int) -> None:
        decision = sync.on_depth(decoded.records, recv_ns)
        if decision.gap:
            self.counters["gaps"] += 1
        self._emit_decision(decision.publish)
        if decision.fetch_snapshot:
            self._snap_queue.put_nowait(decoded.symbol)

    def _trade(self, decoded: Decoded, primary: bool) -> None:
        key = (decoded.event, decoded.symbol)
        seq = self._seqs[key]
        trade_id = int(decoded.records[0]["aux"])
        if seq.last is not None and trade_id <= seq.last:
            self.counters["duplicates"] += 1
            return
        if seq.last is not None and trade_id != seq.last + 1:
            if not primary:
                seq.pending.append((trade_id, decoded))
                return
            # Trades were missed (an outage): declare them.
            inst = int(decoded.records[0]["inst"])
            self._status(
                StatusReason.TRADES_MISSED,
                inst=inst,
                first_missing=seq.last + 1,
                missing=trade_id - seq.last - 1,
            )
        seq.last = trade_id
        self._emit(decoded.records)

    def _drain_pending(self, group: _Group) -> None:
        """After a handover (or a loss), what the newcomer held back is applied in order."""
        now = self.clock()
        for symbol in group.symbols:
            depth = self._seqs[("depth", symbol)]
            held, depth.pending = depth.pending, []
            for _id, decoded in held:
                self._apply_depth(self.syncs[symbol], decoded, now)
            for kind in ("trade", "aggTrade"):
                seq = self._seqs[(kind, symbol)]
                held_trades, seq.pending = sorted(seq.pending, key=lambda item: item[0]), []
                for _id, decoded in held_trades:
                    self._trade(decoded, primary=True)

    # -- REST snapshots ----------------------------------------------------------

    async def _snapshot_worker(self, http: httpx.AsyncClient) -> None:
        weight = depth_weight(self.config.snapshot_limit, self.config.futures)
        spacing = self.config.snapshot_spacing_ms / 1000
        while True:
            symbol = await self._snap_queue.get()
            sync = self.syncs[symbol]
            if sync.state == State.SYNCED:
                continue  # a stale request
            wait = self.weights.delay(weight, time.time())
            if wait > 0:
                self.counters["weight_waits"] += 1
                await asyncio.sleep(wait)
            self.weights.spent(weight)
            try:
                resp = await http.get(
                    self.config.depth_path,
                    params={"symbol": symbol, "limit": self.config.snapshot_limit},
                )
            except httpx.HTTPError as exc:
                log.warning("%s: snapshot of %s failed: %s", self.config.name, symbol, exc)
                self.counters["snapshot_errors"] += 1
                await asyncio.sleep(1.0)
                self._snap_queue.put_nowait(symbol)
                continue
            recv_ns = self.clock()
            self.weights.update(resp.status_code, resp.headers, time.time())
            if resp.status_code != 200:
                self.counters[f"snapshot_http_{resp.status_code}"] += 1
                log.warning(
                    "%s: snapshot of %s: HTTP %d", self.config.name, symbol, resp.status_code
                )
                if resp.status_code not in (429, 418):
                    await asyncio.sleep(1.0)
                self._snap_queue.put_nowait(symbol)
                continue
            try:
                decoded = self.decoder.snapshot(resp.content, symbol, recv_ns)
            except DecodeError as exc:
                self.counters["decode_errors"] += 1
                log.error("%s: bad snapshot for %s: %s", self.config.name, symbol, exc)
                self._snap_queue.put_nowait(symbol)
                await asyncio.sleep(1.0)
                continue
            self.counters["snapshots"] += 1
            decision = sync.on_snapshot(decoded.records, recv_ns)
            self._emit_decision(decision.publish)
            if decision.fetch_snapshot:
                self._snap_queue.put_nowait(symbol)
            await asyncio.sleep(spacing)


# ---------------------------------------------------------------------------
# pipeline adapter

_PARAMS: dict[str, type | tuple[type, ...]] = {
    "market": str,
    "ws_url": str,
    "rest_url": str,
    "symbols": list,
    "symbol_map": dict,
    "first_inst": int,
    "instruments": str,
    "streams": list,
    "stream_path": str,
    "stream_paths": dict,
    "split_paths": bool,
    "snapshot_limit": int,
    "streams_per_connection": int,
    "max_connection_age_s": (int, float),
    "rotation_overlap_s": (int, float),
    "weight_budget": int,
    "snapshot_spacing_ms": (int, float),
    "max_reconnects": int,
    "reconnect_delay_ms": (int, float),
    "reconnect_max_ms": (int, float),
    "silence_timeout_s": (int, float),
}


def config_from_params(name: str, params: Mapping[str, Any]) -> BinanceConfig:
    """A BinanceConfig from a feed's ``params`` table (errors name the key).

    Ids: ``symbol_map`` entries, then ``first_inst`` + position for the other
    ``symbols`` (fixed ids); with ``instruments = "store"`` the factory has put
    the instrument store's ids into ``symbol_map`` already."""
    check_params(params, _PARAMS, name)
    p = dict(params)
    source = p.pop("instruments", "fixed")
    if source not in ("fixed", "store"):
        raise ConfigError(
            f'feeds.{name}.params.instruments must be "fixed" or "store", got {source!r}'
        )
    symbols = p.pop("symbols", [])
    symbol_map = dict(p.pop("symbol_map", {}))
    first = p.pop("first_inst", 1)
    for i, symbol in enumerate(symbols):
        if not isinstance(symbol, str):
            raise ConfigError(f"feeds.{name}.params.symbols must be strings")
        symbol_map.setdefault(symbol.upper(), first + i)
    if p.pop("split_paths", False):
        p.setdefault("stream_paths", USDM_SPLIT_PATHS)
    if "streams" in p:
        p["streams"] = tuple(p["streams"])
    return BinanceConfig(name=name, symbol_map=symbol_map, **p)


def store_symbol_ids(
    feed: str, market: str, symbols: list[str], rest_url: str, data_dir: Path
) -> dict[str, int]:
    """``symbols`` -> the instrument store's dense ids (``BINANCE-SPOT:BTCUSDT``).

    When the store holds no instruments of ``market`` yet, GET the market's
    exchangeInfo from ``rest_url`` and store it first (as the instrument service
    would). A symbol the store does not list as trading is a ConfigError that
    names it: a feed never publishes under an id nobody can look up."""
    from connector.instruments import store
    from connector.instruments.binance_info import MARKETS, parse_exchange_info
    from connector.instruments.model import BINANCE_EXCHANGE, InstrumentTable
    from connector.instruments.service import exchange_info_urls, http_exchange_info_fetcher
    from connector.instruments.universe import Universe

    venue = MARKETS[market]

    def fetch() -> InstrumentTable:
        log.warning(
            "%s: the instrument store holds no %s instruments: fetching exchangeInfo from %s",
            feed,
            market,
            rest_url,
        )
        get = http_exchange_info_fetcher(exchange_info_urls({market: rest_url}))
        return parse_exchange_info(get(market), market)

    now_ns = time.time_ns()
    as_of = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).date()
    snapshot = store.snapshot_with(data_dir, venue, fetch, as_of=as_of, now_ns=now_ns)
    universe = Universe.from_snapshot(snapshot)
    exchange = BINANCE_EXCHANGE[venue]
    ids = {s.upper(): universe.inst_of_symbol(exchange, s.upper()) for s in symbols}
    missing = [s for s, inst in ids.items() if not inst]
    if missing:
        raise ConfigError(
            f"feeds.{feed}: {', '.join(missing)} not listed as trading on {exchange} in the "
            f"instrument store (version {snapshot.version}); check the symbols, or refresh the "
            "store (the instruments service, or `connector-pipeline instruments import` of the "
            "market's exchangeInfo)"
        )
    return ids


def factory(params: Mapping[str, Any], context: AdapterContext) -> BinanceFeed:
    """The adapter entry point: ``connector.binance.client:factory``.

    With ``instruments = "store"`` the symbols take the instrument store's ids
    (stable across restarts, shared with ``book`` and ``tail``); otherwise the
    fixed ids of ``first_inst`` / ``symbol_map``."""
    config = config_from_params(context.feed, params)  # every config error before any I/O
    if params.get("instruments") == "store":
        fixed = [k for k in ("first_inst", "symbol_map") if k in params]
        if fixed:
            raise ConfigError(
                f"feeds.{context.feed}.params: {' and '.join(fixed)} gives fixed ids, "
                'instruments = "store" takes them from the instrument store: use one'
            )
        ids = store_symbol_ids(
            context.feed, config.market, list(config.symbol_map), config.rest_url, context.data_dir
        )
        log.info(
            "%s: %d symbols from the instrument store, ids %s",
            context.feed,
            len(ids),
            ", ".join(f"{s}={i}" for s, i in ids.items()),
        )
        config = dataclasses.replace(config, symbol_map=ids)
    return BinanceFeed(config)
