"""The Zerodha Kite feed: ticker WebSockets -> record batches.

A thin asyncio shell around the pure decoder (:mod:`.ticker`) and the login
(:mod:`.auth`):

* tokens are split over at most ``max_connections`` connections (3 per API
  key at the venue) of at most ``tokens_per_connection`` (3000) each; each
  connection subscribes its tokens and sets their modes as soon as it opens,
  so a reconnect resubscribes by itself;
* the venue sends a 1-byte heartbeat about every second when idle, and the
  official client notices nothing when they stop: here a watchdog closes a
  connection silent for ``silence_timeout_s`` (STATUS STALE) and reconnects
  with exponential backoff and jitter (STATUS DISCONNECTED / CONNECTED);
* a handshake refused with 403 means the access token died (06:00 IST, or
  revoked): with credentials the feed logs in again and goes on, without it
  stops with a FatalError that says what to run;
* undecodable frames are counted, logged once per kind, and declared with
  STATUS DECODE_ERROR; the stream goes on.

Library use: ``async for batch in KiteFeed(config, auth).records(): ...``.
As a pipeline adapter: ``adapter = "connector.zerodha.client:factory"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from connector.aio import cancel_all, wait_event, with_timeout
from connector.feed import FeedConfig, ReconnectPolicy
from connector.instruments import store
from connector.instruments.kite_csv import parse_kite_csv
from connector.instruments.model import InstrumentNotFoundError, InstrumentTable, Venue
from connector.instruments.service import (
    InstrumentFetchError,
    http_kite_csv_fetcher,
    parse_refresh_at,
)
from connector.instruments.subscribe import Resolution, SubscriptionSpec, resolve
from connector.instruments.universe import IST, Universe
from connector.zerodha.auth import (
    DEFAULT_API_URL,
    DEFAULT_LOGIN_URL,
    Clock,
    Credentials,
    Session,
    cache_path,
    ensure_session,
    load_session,
    utc_now,
)
from connector.zerodha.errors import KiteAuthError, MissingCredentials
from connector.zerodha.ticker import KiteFrameError, TickerDecoder, parse_text
from pipeline import fixedpoint
from pipeline import record as rec
from pipeline.adapter import AdapterContext, check_params
from pipeline.errors import ConfigError, FatalError, PipelineError, RetryableError
from pipeline.record import Records, StatusReason

log = logging.getLogger("connector.zerodha")
_ws_log = logging.getLogger("connector.zerodha.ws")
# websockets logs the handshake request line at DEBUG, and the ticker URL
# carries the access token in its query: never below INFO.
_ws_log.setLevel(logging.INFO)

MODES: Final = ("ltp", "quote", "full")
MAX_TOKENS_PER_CONNECTION: Final = 3000
MAX_CONNECTIONS: Final = 3
_SUBSCRIBE_CHUNK: Final = 1000
"""Tokens per subscribe / mode message (keeps each text frame small)."""


@dataclass(frozen=True)
class KiteConfig(FeedConfig):
    """A Kite feed. ``symbol_map`` keys are instrument tokens as strings
    (the venue's identifier); values are the records' ``inst``."""

    mode: str = "full"
    """Mode of every token without an entry in ``modes``."""
    modes: Mapping[int, str] = field(default_factory=dict)
    tokens_per_connection: int = MAX_TOKENS_PER_CONNECTION
    max_connections: int = MAX_CONNECTIONS
    silence_timeout_s: float = 5.0
    """No frame (data or heartbeat, ~1/s) for this long: the connection is dead."""
    open_timeout_s: float = 10.0
    names: Mapping[int, str] = field(default_factory=dict)
    """inst -> what readers call it (``NFO:NIFTY25DEC24500CE``); the token where absent."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.symbol_map:
            raise ConfigError(f"feeds.{self.name}: no instrument tokens")
        for key in self.symbol_map:
            if not str(key).isdigit():
                raise ConfigError(f"feeds.{self.name}: token {key!r} is not an integer")
        for token, mode in [(0, self.mode), *self.modes.items()]:
            if mode not in MODES:
                raise ConfigError(
                    f"feeds.{self.name}: mode {mode!r} of {token or 'the feed'} is not one of {MODES}"
                )
        if not 1 <= self.tokens_per_connection <= MAX_TOKENS_PER_CONNECTION:
            raise ConfigError(
                f"feeds.{self.name}.tokens_per_connection must be in 1..{MAX_TOKENS_PER_CONNECTION}"
            )
        if not 1 <= self.max_connections <= MAX_CONNECTIONS:
            raise ConfigError(f"feeds.{self.name}.max_connections must be in 1..{MAX_CONNECTIONS}")
        capacity = self.tokens_per_connection * self.max_connections
        if len(self.symbol_map) > capacity:
            raise ConfigError(
                f"feeds.{self.name}: {len(self.symbol_map)} tokens, but at most {capacity} "
                f"({self.max_connections} connections x {self.tokens_per_connection})"
            )

    @property
    def token_map(self) -> dict[int, int]:
        """Instrument token -> inst."""
        return {int(k): v for k, v in self.symbol_map.items()}

    def mode_of(self, token: int) -> str:
        """The mode a token is subscribed in."""
        return self.modes.get(token, self.mode)


# ---------------------------------------------------------------------------
# where the access token comes from


class KiteAuth(Protocol):
    """A source of sessions for the feed."""

    @property
    def can_login(self) -> bool:
        """A refused token can be replaced by logging in again."""
        ...

    async def session(self, refresh: bool = False) -> Session:
        """A valid session (``refresh``: the last one was refused, get a new one)."""
        ...


class StaticAuth:
    """One fixed session (no credentials: a refused token is fatal)."""

    can_login = False

    def __init__(self, session: Session) -> None:
        self._session = session

    async def session(self, refresh: bool = False) -> Session:
        """The session (the same one, even when ``refresh``)."""
        return self._session


class LoginAuth:
    """Sessions from the cache under ``data_dir``, logging in with
    ``credentials`` when there is none or it was refused. Without credentials
    only the cache serves: a refused token is replaced only if the cache holds
    a newer one (``connector-pipeline login zerodha`` run meanwhile), else it
    is a fatal error that says so."""

    can_login = True

    def __init__(
        self,
        data_dir: Path,
        credentials: Credentials | None = None,
        *,
        login_url: str = DEFAULT_LOGIN_URL,
        api_url: str = DEFAULT_API_URL,
        now: Clock = utc_now,
    ) -> None:
        self.data_dir = data_dir
        self.credentials = credentials
        self.login_url = login_url
        self.api_url = api_url
        self.now = now
        self._last: Session | None = None

    async def session(self, refresh: bool = False) -> Session:
        """The cached session, or a fresh login (always a fresh one when ``refresh``)."""
        if self.credentials is not None:
            result = await ensure_session(
                self.credentials,
                self.data_dir,
                login_url=self.login_url,
                api_url=self.api_url,
                now=self.now,
                force=refresh,
                verify=False,  # the ticker handshake checks it
            )
            self._last = result.session
            return result.session
        cached = self._cached()
        if cached is None or (refresh and self._last is not None and cached == self._last):
            what = (
                "the cached Zerodha session was refused" if cached else "no valid Zerodha session"
            )
            raise KiteAuthError(
                f"{what} and there are no ZERODHA_* credentials to log in: "
                "set them, or run `connector-pipeline login zerodha`"
            )
        self._last = cached
        return cached

    def _cached(self) -> Session | None:
        return cached_session(self.data_dir, self.api_url, self.now())


def cached_session(data_dir: Path, api_url: str, now: dt.datetime) -> Session | None:
    """The cache file's session if valid for ``api_url`` at ``now`` (any user: none is configured)."""
    path = cache_path(data_dir)
    try:
        data = orjson.loads(path.read_bytes())
        owner = Credentials(str(data["user_id"]), "", "", str(data["api_key"]), "")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return load_session(path, owner, api_url, now)


def blocking_session(
    data_dir: Path,
    *,
    api_url: str = DEFAULT_API_URL,
    login_url: str = DEFAULT_LOGIN_URL,
    credentials: Credentials | None = None,
    now: Clock = utc_now,
) -> Session | None:
    """A session for calls outside the feed's event loop (the instruments download):
    with ``credentials`` the cached one or a fresh login; without, the cached one
    or None. Runs its own event loop: do not call it from inside one."""
    if credentials is None:
        return cached_session(data_dir, api_url, now())
    result = asyncio.run(
        ensure_session(
            credentials, data_dir, login_url=login_url, api_url=api_url, now=now, verify=False
        )
    )
    return result.session


def env_credentials() -> Credentials | None:
    """``ZERODHA_*`` credentials from the environment, or None when they are not all set."""
    try:
        return Credentials.from_env()
    except MissingCredentials:
        return None


# ---------------------------------------------------------------------------
# the feed


@dataclass
class _Conn:
    index: int
    tokens: list[int]
    ws: ClientConnection | None = None
    opened: int = 0
    frames: int = 0
    closed_reason: str = ""


RESOLVE_RETRY_S: Final = 300.0
DEFAULT_RESOLVE_AT: Final = dt.time(8, 45)
"""After the instrument service's daily refresh (08:00 IST), before the 09:15 open."""


def seconds_until(at: dt.time, now: dt.datetime) -> float:
    """Seconds from ``now`` (aware) to the next ``at`` IST (today's if still ahead)."""
    local = now.astimezone(IST)
    target = dt.datetime.combine(local.date(), at, tzinfo=IST)
    if target <= local:
        target = dt.datetime.combine(local.date() + dt.timedelta(days=1), at, tzinfo=IST)
    return (target - local).total_seconds()


class KiteFeed:
    """Kite ticker connections -> record batches (see the module docstring)."""

    def __init__(
        self,
        config: KiteConfig,
        auth: KiteAuth,
        *,
        seed: int | None = None,
        clock: Callable[[], int] = time.time_ns,
        resolver: Callable[[], Resolution] | None = None,
        resolve_at: dt.time | None = None,
    ) -> None:
        self.config = config
        self.auth = auth
        self.seed = seed
        self.clock = clock
        self.resolver = resolver
        """Resolves the feed's ``subscribe`` again (blocking: run in a thread)."""
        self.resolve_at = resolve_at
        """Daily IST time at which :attr:`resolver` runs and the subscription follows it."""
        self.resolve_retry_s = RESOLVE_RETRY_S
        """After a failed resolution, try again this much later (until it works)."""
        self.token_inst: dict[int, int] = config.token_map
        self.names: dict[int, str] = dict(config.names)
        self.instruments_version = 0
        """Bumped whenever :meth:`instruments` changes (hosts re-publish it)."""
        self.decoder = TickerDecoder(config.token_map)
        self.counters: dict[str, int] = defaultdict(int)
        tokens = sorted(config.token_map)
        size = config.tokens_per_connection
        self.conns = [
            _Conn(i, tokens[start : start + size])
            for i, start in enumerate(range(0, len(tokens), size))
        ]
        self.modes: dict[int, str] = {t: config.mode_of(t) for t in tokens}
        self._outbox: list[Records] = []
        self._wake = asyncio.Event()
        self._fatal: BaseException | None = None
        self._session: Session | None = None
        self._session_lock = asyncio.Lock()
        self._errors_seen: set[str] = set()
        self.texts: list[dict[str, Any]] = []
        """Recent text messages from the venue (order updates, errors, messages), newest last."""
        self._tasks: list[asyncio.Future[None]] = []
        self._running = False

    def instruments(self) -> dict[int, str]:
        """inst -> ``EXCHANGE:SYMBOL`` when resolved through the instrument store, else the
        instrument token (as text)."""
        names = self.names
        return {inst: names.get(inst, str(token)) for token, inst in self.token_inst.items()}

    # -- subscriptions while running ---------------------------------------------

    async def subscribe(self, tokens: Iterable[int], mode: str | None = None) -> None:
        """Add tokens (to connections with room) in ``mode`` (default: the feed's)."""
        mode = mode or self.config.mode
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        new = [t for t in tokens if t not in self.modes]
        for token in new:
            conn = next(
                (c for c in self.conns if len(c.tokens) < self.config.tokens_per_connection), None
            )
            if conn is None:
                if len(self.conns) >= self.config.max_connections:
                    raise ValueError(
                        f"no room for token {token}: {self.config.max_connections} connections "
                        f"x {self.config.tokens_per_connection} tokens are full"
                    )
                conn = _Conn(len(self.conns), [])
                self.conns.append(conn)
                if self._running:
                    self._tasks.append(asyncio.ensure_future(self._run_conn(conn)))
            conn.tokens.append(token)
            self.modes[token] = mode
            if conn.ws is not None:
                await self._send(conn.ws, "subscribe", [token])
                await self._send(conn.ws, "mode", [mode, [token]])
        self._map_unknown(new)

    async def unsubscribe(self, tokens: Iterable[int]) -> None:
        """Drop tokens."""
        for token in list(tokens):
            if self.modes.pop(token, None) is None:
                continue
            for conn in self.conns:
                if token in conn.tokens:
                    conn.tokens.remove(token)
                    if conn.ws is not None:
                        await self._send(conn.ws, "unsubscribe", [token])

    async def set_mode(self, mode: str, tokens: Iterable[int]) -> None:
        """Change the mode of subscribed tokens."""
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {MODES}")
        for conn in self.conns:
            mine = [t for t in tokens if t in conn.tokens]
            for token in mine:
                self.modes[token] = mode
            if mine and conn.ws is not None:
                await self._send(conn.ws, "mode", [mode, mine])

    async def follow(self, resolution: Resolution) -> tuple[int, int]:
        """Move the subscription to ``resolution`` (a new day's contracts): the
        tokens get its ids and names, new ones are subscribed in their modes,
        the ones it no longer lists are unsubscribed. Returns (added, removed)."""
        old, new = set(self.modes), set(resolution.token_inst)
        previous = self.token_inst
        self.token_inst = dict(resolution.token_inst)
        self.names = dict(resolution.names)
        # Before any tick of a new token; the dropped ones keep their ids for
        # the ticks still in flight when they are unsubscribed.
        gone = {t: previous[t] for t in old - new if t in previous}
        self.decoder.set_instruments({**gone, **self.token_inst})
        await self.unsubscribe(sorted(old - new))
        by_mode: dict[str, list[int]] = defaultdict(list)
        for token in sorted(new - old):
            by_mode[resolution.modes.get(token, self.config.mode_of(token))].append(token)
        for mode, tokens in by_mode.items():
            await self.subscribe(tokens, mode)
        remoded: dict[str, list[int]] = defaultdict(list)
        for token in sorted(new & old):
            mode = resolution.modes.get(token, self.config.mode_of(token))
            if self.modes.get(token) != mode:
                remoded[mode].append(token)
        for mode, tokens in remoded.items():
            await self.set_mode(mode, tokens)
        self.decoder.set_instruments({**gone, **self.token_inst})  # subscribe() remapped
        self.instruments_version += 1
        self.counters["resolutions"] += 1
        log.info(
            "%s: subscription follows the instrument store: +%d -%d tokens, %d in all",
            self.config.name,
            len(new - old),
            len(old - new),
            len(self.modes),
        )
        return len(new - old), len(old - new)

    async def resolve_again(self) -> tuple[int, int]:
        """Run :attr:`resolver` (in a thread) and :meth:`follow` what it gives."""
        if self.resolver is None:
            raise ValueError(f"{self.config.name}: no resolver (the feed has no subscribe)")
        return await self.follow(await asyncio.to_thread(self.resolver))

    async def _resolve_daily(self) -> None:
        """At :attr:`resolve_at` IST each day: resolve again (after the instrument
        service's morning refresh, before the open). A failure is logged, counted
        and retried every :attr:`resolve_retry_s` until it works; the feed goes
        on with the tokens it has meanwhile."""
        assert self.resolve_at is not None
        while True:
            now = dt.datetime.fromtimestamp(self.clock() / 1e9, dt.UTC)
            await asyncio.sleep(seconds_until(self.resolve_at, now))
            while True:
                try:
                    await self.resolve_again()
                    break
                except Exception as exc:  # the feed goes on with today's tokens; say why
                    self.counters["resolution_errors"] += 1
                    log.error(
                        "%s: resolving the subscription again failed: %s", self.config.name, exc
                    )
                    await asyncio.sleep(self.resolve_retry_s)
            await asyncio.sleep(60)  # past the minute of resolve_at

    def _map_unknown(self, tokens: list[int]) -> None:
        """Tokens added at run time keep ``inst`` = token unless the config maps them."""
        if tokens:
            mapping = dict(self.token_inst)
            for token in self.modes:
                mapping.setdefault(token, token)
            self.decoder.set_instruments(mapping)

    # -- output --------------------------------------------------------------------

    def _emit(self, records: Records) -> None:
        if len(records):
            self._outbox.append(records)
            self._wake.set()

    def _status(self, reason: StatusReason, detail: int = 0) -> None:
        self._emit(rec.status(src=0, reason=reason, ts_recv=self.clock(), detail=detail))
        self.counters[f"status_{reason.name.lower()}"] += 1

    async def records(self) -> AsyncIterator[Records]:
        """Record batches until cancelled (or a fatal error, raised here)."""
        self._running = True
        self._tasks = [asyncio.ensure_future(self._run_conn(c)) for c in self.conns]
        if self.resolver is not None and self.resolve_at is not None:
            self._tasks.append(asyncio.ensure_future(self._resolve_daily()))
        try:
            while True:
                if self._fatal is not None:
                    raise self._fatal
                if not self._outbox:
                    await wait_event(self._wake, 0.5)
                self._wake.clear()
                if self._outbox:
                    batch, self._outbox = self._outbox, []
                    yield rec.concat(batch)
        finally:
            await cancel_all(self._tasks, self.config.name)
            for conn in self.conns:
                if conn.ws is not None:
                    with contextlib.suppress(Exception):
                        await conn.ws.close()
            self._running = False

    # -- connections ---------------------------------------------------------------

    async def _get_session(self, refresh: bool) -> Session:
        """One login at a time: connections refused together share the new session."""
        stale = self._session
        async with self._session_lock:
            if self._session is None or (refresh and self._session is stale):
                self._session = await self.auth.session(refresh=refresh)
                if refresh:
                    self.counters["relogins"] += 1
            return self._session

    async def _run_conn(self, conn: _Conn) -> None:
        policy = ReconnectPolicy.from_config(
            self.config, None if self.seed is None else self.seed + conn.index
        )
        refresh = False
        while True:
            delay: float | None = 0.0
            try:
                session = await self._get_session(refresh)
                refresh = False
                ws = await websockets.connect(
                    session.ticker_url(self.config.ws_url),
                    compression=None,
                    max_size=2**24,
                    open_timeout=self.config.open_timeout_s,
                    additional_headers={"X-Kite-Version": "3"},
                    logger=_ws_log,
                    # The venue's heartbeats are the liveness signal; our pings
                    # also catch a dead TCP path when the venue is quiet.
                    ping_interval=self.config.silence_timeout_s,
                    ping_timeout=self.config.silence_timeout_s,
                )
            except websockets.InvalidStatus as exc:
                status = exc.response.status_code
                if status == 403:
                    self.counters["handshake_403"] += 1
                    if not self.auth.can_login:
                        self._fail(
                            KiteAuthError(
                                f"{self.config.name}: the ticker refused the access token (HTTP 403) "
                                "and there are no credentials to log in again: set ZERODHA_* or run "
                                "`connector-pipeline login zerodha`"
                            )
                        )
                        return
                    refresh = True
                    log.warning(
                        "%s: the ticker refused the token; logging in again", self.config.name
                    )
                    delay = policy.failed()
                else:
                    delay = self._retry(policy, f"handshake HTTP {status}")
            except (TimeoutError, OSError, websockets.InvalidHandshake, RetryableError) as exc:
                delay = self._retry(policy, type(exc).__name__)
            except PipelineError as exc:  # a login that cannot succeed
                self._fail(exc)
                return
            else:
                policy.succeeded()
                await self._serve(conn, ws)
                # The first retry after a working connection waits the base
                # delay (with jitter: three connections must not reconnect in step).
                delay = policy.failed()
            if delay is None:
                self._fail(
                    FatalError(
                        f"{self.config.name}: gave up after {policy.failures - 1} failed connection attempts"
                    )
                )
                return
            await asyncio.sleep(delay)

    def _retry(self, policy: ReconnectPolicy, why: str) -> float | None:
        delay = policy.failed()
        if delay is not None:
            log.warning("%s: cannot connect (%s); retrying in %.2f s", self.config.name, why, delay)
        return delay

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._wake.set()

    async def _send(self, ws: ClientConnection, action: str, value: Any) -> None:
        await ws.send(orjson.dumps({"a": action, "v": value}).decode())

    async def _serve(self, conn: _Conn, ws: ClientConnection) -> None:
        """Subscribe, then read until the connection dies or goes silent."""
        conn.ws = ws
        conn.opened += 1
        self.counters["connections"] += 1
        self._status(StatusReason.CONNECTED, detail=conn.index)
        try:
            tokens = list(conn.tokens)
            by_mode: dict[str, list[int]] = defaultdict(list)
            for token in tokens:
                by_mode[self.modes.get(token, self.config.mode)].append(token)
            for i in range(0, len(tokens), _SUBSCRIBE_CHUNK):
                await self._send(ws, "subscribe", tokens[i : i + _SUBSCRIBE_CHUNK])
            for mode, group in by_mode.items():
                for i in range(0, len(group), _SUBSCRIBE_CHUNK):
                    await self._send(ws, "mode", [mode, group[i : i + _SUBSCRIBE_CHUNK]])
            while True:
                try:
                    message = await with_timeout(ws.recv(), self.config.silence_timeout_s)
                except TimeoutError:
                    conn.closed_reason = "silent"
                    self.counters["watchdog_closes"] += 1
                    with contextlib.suppress(TimeoutError, websockets.ConnectionClosed):
                        await with_timeout(ws.close(), 2.0)
                    break
                recv_ns = self.clock()
                conn.frames += 1
                if isinstance(message, bytes):
                    self._binary(message, recv_ns, conn)
                else:
                    self._text(message, conn)
        except asyncio.CancelledError:
            # The feed is stopping (records() closed): drop the socket now; clearing
            # conn.ws below would otherwise leave it open for good.
            ws.transport.abort()
            raise
        except websockets.ConnectionClosed as exc:
            conn.closed_reason = f"closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"
        except OSError as exc:
            conn.closed_reason = f"network error: {exc.strerror or type(exc).__name__}"
        finally:
            conn.ws = None
        log.warning("%s: connection %d lost: %s", self.config.name, conn.index, conn.closed_reason)
        self.counters["disconnects"] += 1
        reason = StatusReason.STALE if conn.closed_reason == "silent" else StatusReason.DISCONNECTED
        self._status(reason, detail=conn.index)

    def _binary(self, frame: bytes, recv_ns: int, conn: _Conn) -> None:
        try:
            records = self.decoder.decode(frame, recv_ns)
        except KiteFrameError as exc:
            self.counters["decode_errors"] += 1
            kind = str(exc).split(":")[0]
            if kind not in self._errors_seen:
                self._errors_seen.add(kind)
                log.error("%s: undecodable ticker frame: %s", self.config.name, exc)
            self._status(StatusReason.DECODE_ERROR, detail=conn.index)
            return
        self._emit(records)

    def _text(self, message: str, conn: _Conn) -> None:
        try:
            data = parse_text(message)
        except KiteFrameError as exc:
            self.counters["decode_errors"] += 1
            log.warning("%s: unexpected text frame: %s", self.config.name, exc)
            return
        kind = data["type"]
        self.counters[f"text_{kind}"] += 1
        self.texts = [*self.texts[-99:], data]
        if kind == "error":
            log.warning("%s: the ticker says: %s", self.config.name, data.get("data"))
            if "limit" in str(data.get("data", "")).lower():
                self._status(StatusReason.SUBSCRIBE_FAILED, detail=conn.index)


# ---------------------------------------------------------------------------
# the adapter

_PARAMS: dict[str, type | tuple[type, ...]] = {
    "ws_url": str,
    "api_url": str,
    "login_url": str,
    "tokens": list,
    "token_map": dict,
    "first_inst": int,
    "subscribe": list,
    "max_inst": int,
    "resolve_at": str,
    "mode": str,
    "modes": dict,
    "tokens_per_connection": int,
    "max_connections": int,
    "max_reconnects": int,
    "reconnect_delay_ms": (int, float),
    "reconnect_max_ms": (int, float),
    "silence_timeout_s": (int, float),
}
_NOT_FEED_CONFIG: Final = ("api_url", "login_url", "subscribe", "max_inst", "resolve_at")


def subscription_specs(name: str, params: Mapping[str, Any]) -> list[SubscriptionSpec]:
    """The feed's ``subscribe`` entries, checked (empty when it has none)."""
    raw = params.get("subscribe", [])
    if not isinstance(raw, list):
        raise ConfigError(f"feeds.{name}.params.subscribe must be a list of tables")
    specs = [
        SubscriptionSpec.from_params(item, f"feeds.{name}.params.subscribe[{i}]")
        for i, item in enumerate(raw)
    ]
    if "subscribe" in params:
        if not specs:
            raise ConfigError(f"feeds.{name}.params.subscribe is empty")
        for key in ("first_inst", "token_map"):
            if key in params:
                raise ConfigError(
                    f"feeds.{name}.params.{key} cannot go with subscribe: instrument ids come "
                    "from the instrument store"
                )
    return specs


def config_from_params(
    name: str, params: Mapping[str, Any], resolution: Resolution | None = None
) -> KiteConfig:
    """A KiteConfig from a feed's ``params`` table (errors name the key).

    With ``subscribe`` the tokens, their ids and modes come from ``resolution``
    (:func:`resolve_subscriptions`); plain ``tokens`` are numbered from ``first_inst``.
    """
    check_params(params, _PARAMS, name)
    specs = subscription_specs(name, params)
    p = {k: v for k, v in params.items() if k not in _NOT_FEED_CONFIG}
    tokens = p.pop("tokens", [])
    for token in tokens:
        if not isinstance(token, int) or isinstance(token, bool):
            raise ConfigError(f"feeds.{name}.params.tokens must be integers")
    symbol_map = {str(k): int(v) for k, v in p.pop("token_map", {}).items()}
    first = p.pop("first_inst", 1)
    modes = p.pop("modes", {})
    try:
        p["modes"] = {int(k): str(v) for k, v in modes.items()}
    except ValueError:
        raise ConfigError(f"feeds.{name}.params.modes keys must be instrument tokens") from None
    if specs:
        if resolution is None:
            raise ConfigError(
                f"feeds.{name}: subscribe needs the instrument store (resolve_subscriptions)"
            )
        symbol_map = {str(t): i for t, i in resolution.token_inst.items()}
        p["modes"] = {**resolution.modes, **p["modes"]}
        p["names"] = dict(resolution.names)
        max_inst = params.get("max_inst")
        if max_inst is not None:
            check_inst_limit(name, resolution, max_inst)
    else:
        for i, token in enumerate(tokens):
            symbol_map.setdefault(str(token), first + i)
    return KiteConfig(name=name, symbol_map=symbol_map, **p)


def check_inst_limit(name: str, resolution: Resolution, limit: int) -> None:
    """Every resolved id must have a book-table slot (ids < ``limit``)."""
    beyond = {i: n for i, n in resolution.names.items() if i >= limit}
    if beyond:
        worst = max(beyond)
        raise ConfigError(
            f"feeds.{name}: the instrument store gives {beyond[worst]} id {worst}, but the book "
            f"table has {limit} slots (ids 0..{limit - 1}); raise [book] max_instruments above "
            f"the store's next id (`connector-pipeline instruments stats` shows next_inst)"
        )


def load_universe(
    data_dir: Path,
    *,
    api_url: str,
    login_url: str,
    credentials: Credentials | None,
    now_ns: int,
) -> Universe:
    """The instrument store's universe; when the store holds no Kite instruments yet,
    download the dump with the feed's session and store it (dense ids from then on)."""

    def download() -> InstrumentTable:
        session = blocking_session(
            data_dir, api_url=api_url, login_url=login_url, credentials=credentials
        )
        if session is None:
            raise KiteAuthError(
                f"the instrument store in {data_dir} holds no Kite instruments, and there is no "
                "Zerodha session to download them: set ZERODHA_*, run `connector-pipeline login "
                "zerodha`, or run the instruments service first"
            )
        log.warning(
            "the instrument store holds no Kite instruments: downloading %s/instruments", api_url
        )
        fetch = http_kite_csv_fetcher(
            f"{api_url.rstrip('/')}/instruments", lambda: session.authorization
        )
        return parse_kite_csv(fetch())

    as_of = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).astimezone(IST).date()
    return Universe.from_snapshot(
        store.snapshot_with(data_dir, Venue.KITE, download, as_of=as_of, now_ns=now_ns)
    )


def quote_ltp(
    api_url: str, session: Session, keys: Iterable[str], timeout_s: float = 5.0
) -> dict[int, int]:
    """Kite ``GET /quote/ltp?i=NSE:NIFTY 50&i=...``: instrument token -> last price (fixed point)."""
    with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
        resp = client.get(
            f"{api_url.rstrip('/')}/quote/ltp",
            params=[("i", k) for k in keys],
            headers=session.headers(),
        )
    if resp.status_code != 200:
        raise InstrumentFetchError(f"GET {api_url}/quote/ltp: HTTP {resp.status_code}")
    data = orjson.loads(resp.content)["data"]
    return {
        int(v["instrument_token"]): fixedpoint.parse(str(v["last_price"])) for v in data.values()
    }


def spot_quotes(
    name: str,
    params: Mapping[str, Any],
    universe: Universe,
    session: Session | None,
    api_url: str,
) -> dict[int, int]:
    """Live last prices of the spots whose option chains are asked for ({} when there
    is no session or the API does not answer: the dump's last prices are used then)."""
    keys = []
    for spec in subscription_specs(name, params):
        if spec.chain_range is not None:
            with contextlib.suppress(InstrumentNotFoundError):
                keys.append(universe.spot(spec.underlying).exchange_symbol)
    if not keys or session is None:
        return {}
    try:
        return quote_ltp(api_url, session, keys)
    except (httpx.HTTPError, PipelineError, ValueError, KeyError, TypeError) as exc:
        log.info(
            "%s: no live quote for the ATM strikes (%s): using the instruments dump's prices",
            name,
            str(exc) or type(exc).__name__,
        )
        return {}


def resolve_subscriptions(
    name: str,
    params: Mapping[str, Any],
    universe: Universe,
    as_of: dt.date,
    prices: Mapping[int, int] | None = None,
) -> Resolution:
    """The feed's ``subscribe`` (and plain ``tokens``) resolved against ``universe``."""
    specs = subscription_specs(name, params)
    tokens = [int(t) for t in params.get("tokens", [])]
    try:
        return resolve(universe, specs, as_of, prices, tokens)
    except ConfigError as exc:
        raise ConfigError(f"feeds.{name}: {exc}") from None


def factory(params: Mapping[str, Any], context: AdapterContext) -> KiteFeed:
    """The adapter entry point: ``connector.zerodha.client:factory``. Credentials
    from the ``ZERODHA_*`` environment when set, else the cached session only.

    With ``subscribe`` the feed resolves its instruments through the instrument
    store in the data dir (downloading the dump itself if the store is empty);
    the chain's ATM uses the spot's live ``/quote/ltp`` when the API answers,
    else the instruments dump's last prices. It resolves again every day at
    ``resolve_at`` (IST, default 08:45: after the instrument service's refresh,
    before the open; ``"never"`` to keep the first day's tokens) and moves its
    subscription to the new contracts.
    """
    credentials = env_credentials()
    api_url = str(params.get("api_url", DEFAULT_API_URL))
    login_url = str(params.get("login_url", DEFAULT_LOGIN_URL))
    resolution = None
    resolver = None
    resolve_at = None
    if "subscribe" in params:
        check_params(params, _PARAMS, context.feed)
        subscription_specs(context.feed, params)  # config errors before any I/O
        when = str(params.get("resolve_at", DEFAULT_RESOLVE_AT.strftime("%H:%M")))
        if when != "never":
            resolve_at = parse_refresh_at(when, f"feeds.{context.feed}.params.resolve_at")
        limit = params.get("max_inst") or context.max_instruments

        def resolver() -> Resolution:
            """``subscribe`` against the store as it is now (today's contracts and ATM)."""
            now_ns = time.time_ns()
            universe = load_universe(
                context.data_dir,
                api_url=api_url,
                login_url=login_url,
                credentials=credentials,
                now_ns=now_ns,
            )
            as_of = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).astimezone(IST).date()
            session = blocking_session(
                context.data_dir, api_url=api_url, login_url=login_url, credentials=credentials
            )
            prices = spot_quotes(context.feed, params, universe, session, api_url)
            resolved = resolve_subscriptions(context.feed, params, universe, as_of, prices)
            if limit is not None:
                check_inst_limit(context.feed, resolved, int(limit))
            version = 0 if universe.snapshot is None else universe.snapshot.version
            for r in resolved.underlyings:
                log.info("%s: %s", context.feed, r.summary())
            log.info(
                "%s: %d tokens from instruments v%d, ids %d..%d",
                context.feed,
                len(resolved.token_inst),
                version,
                min(resolved.token_inst.values()),
                max(resolved.token_inst.values()),
            )
            return resolved

        resolution = resolver()
    config = config_from_params(context.feed, params, resolution)
    auth = LoginAuth(context.data_dir, credentials, login_url=login_url, api_url=api_url)
    return KiteFeed(config, auth, resolver=resolver, resolve_at=resolve_at)
