"""A loopback Zerodha Kite simulator: the login pages, the Kite Connect API
and the binary ticker, in the venue's wire formats, on 127.0.0.1.

Two ports, like the venue's two hosts (kite.zerodha.com + api.kite.trade on
``sim.http_url``; ws.kite.trade on ``sim.ws_url``)::

    POST /api/login        user_id, password            -> request_id
    POST /api/twofa        user_id, request_id, twofa_value (a real TOTP of
                           the configured secret; the previous and next 30 s
                           windows are accepted)           -> session cookies
    GET  /connect/login?v=3&api_key=K   with the cookies -> 302 /connect/finish
    GET  /connect/finish   -> 302 <redirect_url>?action=login&type=login&status=success&request_token=T
    POST /session/token    api_key, request_token, checksum -> access_token + user
    DELETE /session/token  api_key, access_token      (logout)
    GET  /user/profile     Authorization: token K:A
    GET  /instruments[/<exchange>]   CSV (gzip when asked) of the generated universe
    GET  /sim/stats, /sim/truth?token=T, /sim/control?action=...
    WS   ws://127.0.0.1:WS_PORT/?api_key=K&access_token=A   (the ticker)

Errors have the venue's JSON shape ``{"status": "error", "message": ...,
"data": null, "error_type": "TokenException"|"InputException"|...}`` and its
status codes (403 for a bad or expired token, 400 for bad input). The exact
message texts are the simulator's own: the venue does not publish them.

The ticker: the handshake is refused with HTTP 403 (TokenException body)
for a bad api_key/access_token, and with 429 beyond ``max_connections`` per
API key. Text messages ``{"a": "subscribe"|"unsubscribe", "v": [tokens]}``
and ``{"a": "mode", "v": [mode, [tokens]]}``; new tokens start in quote mode
(the venue's default); at most ``max_tokens`` per connection (the rest of a
subscribe is refused with an ``{"type": "error"}`` text message). Every tick
interval each connection gets one binary frame with a packet per subscribed
token whose market is open (ltp 8, quote 44, full 184 or the old 164 layout,
index quote 28 / index full 32 bytes), and a freshly subscribed token gets
one packet even when its market is closed (its last values, as the venue
does); a connection that got nothing for ``heartbeat_s`` gets a 1-byte
heartbeat. Prices walk per token, seeded, with a consistent 5-level depth
(bids below asks, the last price between them, total quantities covering
the levels).

The market clock (``clock``: a callable returning an aware datetime) decides
when each segment trades (:func:`market_open`); the wall clock
(``wall_clock``) checks TOTPs and token expiry (06:00 IST after login).

Truth for tests: :meth:`KiteSimulator.truth` returns the last values sent for
a token (any connection), and :func:`parse_frame` is the encoder's exact
inverse. Faults on demand: :meth:`disconnect_all`, :meth:`stall`,
:meth:`send_malformed` (truncated frame, unknown packet length),
:meth:`expire_tokens`, :meth:`send_text`; or with probabilities per tick
(:class:`Faults`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gzip
import hashlib
import itertools
import logging
import math
import secrets
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import h11
import numpy as np
import numpy.typing as npt
import orjson
import pyotp
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from connector.sim import _http
from connector.sim.faults import FaultSet, SimulatorError

IST: Final = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
INDICES: Final = 9
MODES: Final = ("ltp", "quote", "full")
MAX_TOKENS: Final = 3000
"""Instruments per ticker connection (the venue's limit)."""
MAX_CONNECTIONS: Final = 3
"""Ticker connections per API key (the venue's limit)."""
HEARTBEAT: Final = b"\x00"
_OUTBOX_MAX: Final = 1000
"""Frames queued on a connection above which it is cut as a slow consumer."""

DEFAULT_USER_ID: Final = "SIM001"
DEFAULT_PASSWORD: Final = "sim-password"
DEFAULT_TOTP_SECRET: Final = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
DEFAULT_API_KEY: Final = "simapikey"
DEFAULT_API_SECRET: Final = "sim-api-secret"
DEFAULT_REDIRECT_URL: Final = "http://127.0.0.1:9/kite/redirect"
"""Never fetched: the login flow stops at the redirect and reads its query."""


_ws_log = logging.getLogger("connector.sim.kite.ws")
# websockets logs handshake request lines at DEBUG; the ticker's carry access tokens.
_ws_log.setLevel(logging.INFO)


# ---------------------------------------------------------------------------
# market hours (pure)


_HOURS: Final = {
    **dict.fromkeys((1, 2, 4, 5, 9), (dt.time(9, 15), dt.time(15, 30))),
    **dict.fromkeys((3, 6), (dt.time(9, 0), dt.time(17, 0))),
    **dict.fromkeys((7, 8), (dt.time(9, 0), dt.time(23, 30))),
}
"""Normal trading session per segment id, IST (NSE/BSE equity, F&O, indices;
currency; commodities)."""


def market_open(segment: int, when: dt.datetime, holidays: Collection[dt.date] = ()) -> bool:
    """The segment trades at ``when`` (aware): a weekday, not a holiday, within its session."""
    local = when.astimezone(IST)
    if local.weekday() >= 5 or local.date() in holidays:
        return False
    start, end = _HOURS.get(segment, _HOURS[1])
    return start <= local.time() < end


def utc_now() -> dt.datetime:
    """The wall clock, aware."""
    return dt.datetime.now(dt.UTC)


def shifted_clock(start: dt.datetime) -> Callable[[], dt.datetime]:
    """A clock that reads ``start`` now and advances in real time."""
    if start.tzinfo is None:
        raise SimulatorError(f"clock start {start} has no timezone")
    origin = time.monotonic()
    return lambda: start + dt.timedelta(seconds=time.monotonic() - origin)


def clock_from_spec(spec: str, holidays: Collection[dt.date] = ()) -> Callable[[], dt.datetime]:
    """``real`` (wall clock), ``open`` (today's or the next trading day's 09:15
    IST, then real pace: about six hours of open market), ``closed`` (the last
    Sunday 12:00 IST), or an ISO datetime with an offset to start from."""
    now = utc_now().astimezone(IST)
    if spec == "real":
        return utc_now
    if spec == "open":
        day = now.date()
        while day.weekday() >= 5 or day in holidays:
            day += dt.timedelta(days=1)
        return shifted_clock(dt.datetime.combine(day, dt.time(9, 15), IST))
    if spec == "closed":
        sunday = now.date() - dt.timedelta(days=(now.weekday() + 1) % 7)
        return shifted_clock(dt.datetime.combine(sunday, dt.time(12, 0), IST))
    try:
        start = dt.datetime.fromisoformat(spec)
    except ValueError:
        raise SimulatorError(
            f"clock {spec!r}: expected real, open, closed or an ISO datetime with an offset"
        ) from None
    return shifted_clock(start)


def token_expiry(login_time: dt.datetime) -> dt.datetime:
    """The first 06:00 IST after ``login_time``."""
    local = login_time.astimezone(IST)
    expiry = dt.datetime.combine(local.date(), dt.time(6, 0), IST)
    return expiry if expiry > local else expiry + dt.timedelta(days=1)


# ---------------------------------------------------------------------------
# wire layouts (big-endian, packed) and the encoder's inverse (pure)


def price_divisor(instrument_token: int) -> int:
    """Price units per rupee: 10**7 for CDS, 10**4 for BCD, else 100 (paise)."""
    segment = instrument_token & 0xFF
    return 10**7 if segment == 3 else 10**4 if segment == 6 else 100


DEPTH_ENTRY: Final = np.dtype(
    [("quantity", ">i4"), ("price", ">i4"), ("orders", ">i2"), ("padding", ">i2")]
)
_QUOTE: Final = [
    ("instrument_token", ">i4"),
    ("last_price", ">i4"),
    ("last_traded_quantity", ">i4"),
    ("average_traded_price", ">i4"),
    ("volume_traded", ">i4"),
    ("total_buy_quantity", ">i4"),
    ("total_sell_quantity", ">i4"),
    ("open", ">i4"),
    ("high", ">i4"),
    ("low", ">i4"),
    ("close", ">i4"),
]
FULL_PACKET: Final = np.dtype(
    [
        *_QUOTE,
        ("last_trade_time", ">i4"),
        ("oi", ">i4"),
        ("oi_day_high", ">i4"),
        ("oi_day_low", ">i4"),
        ("exchange_timestamp", ">i4"),
        ("depth", DEPTH_ENTRY, (10,)),
    ]
)
"""The 184-byte full packet; the 44-byte quote and 8-byte LTP packets are its prefixes."""
INDEX_PACKET: Final = np.dtype(
    [
        ("instrument_token", ">i4"),
        ("last_price", ">i4"),
        ("high", ">i4"),
        ("low", ">i4"),
        ("open", ">i4"),
        ("close", ">i4"),
        ("change", ">i4"),
        ("exchange_timestamp", ">i4"),
    ]
)
"""The 32-byte index full packet; index quote is its first 28 bytes (note H-L-O-C)."""
assert FULL_PACKET.itemsize == 184 and INDEX_PACKET.itemsize == 32
QUOTE_FIELDS: Final = tuple(name for name, _ in _QUOTE)
FULL_FIELDS: Final = (
    *QUOTE_FIELDS,
    "last_trade_time",
    "oi",
    "oi_day_high",
    "oi_day_low",
    "exchange_timestamp",
)
INDEX_FIELDS: Final = tuple(INDEX_PACKET.names or ())


def parse_packet(packet: bytes) -> dict[str, Any]:
    """One packet -> its fields in integer wire units (``length`` and
    ``mode`` added; depth as lists of (quantity, price, orders)). Unknown
    lengths give ``{"length": n}`` only."""
    n = len(packet)
    out: dict[str, Any] = {"length": n}
    if n == 8:
        token, ltp = struct.unpack(">ii", packet)
        out.update(mode="ltp", instrument_token=token, last_price=ltp)
    elif n in (28, 32):
        names = INDEX_FIELDS[: n // 4]
        out.update(zip(names, struct.unpack(f">{n // 4}i", packet), strict=True))
        out["mode"] = "quote" if n == 28 else "full"
    elif n in (44, 164, 184):
        head = 44 if n != 184 else 64
        names = QUOTE_FIELDS if n != 184 else FULL_FIELDS
        out.update(zip(names, struct.unpack(f">{head // 4}i", packet[:head]), strict=True))
        out["mode"] = "quote" if n == 44 else "full"
        if n > 44:
            levels = [struct.unpack_from(">iih", packet, head + 12 * i) for i in range(10)]
            out["bids"], out["asks"] = levels[:5], levels[5:]
    return out


def parse_frame(frame: bytes) -> list[dict[str, Any]]:
    """A binary ticker frame -> its packets (:func:`parse_packet`); a heartbeat
    (under 2 bytes) gives []. ValueError names the offset when the frame is truncated."""
    if len(frame) < 2:
        return []
    (count,) = struct.unpack_from(">h", frame)
    offset, packets = 2, []
    for index in range(count):
        if offset + 2 > len(frame):
            raise ValueError(f"packet {index}: length missing at byte {offset} of {len(frame)}")
        (length,) = struct.unpack_from(">h", frame, offset)
        offset += 2
        if length < 0 or offset + length > len(frame):
            raise ValueError(
                f"packet {index}: {length} bytes at byte {offset}, frame has {len(frame)}"
            )
        packets.append(parse_packet(frame[offset : offset + length]))
        offset += length
    return packets


def encode_frame(blocks: Sequence[npt.NDArray[np.uint8]]) -> bytes:
    """Packets, given as (n, length) byte blocks, as one frame: ``>h`` count,
    then ``>h`` length + bytes per packet."""
    parts = []
    count = 0
    for block in blocks:
        n, width = block.shape
        if n == 0:
            continue
        framed = np.empty((n, width + 2), dtype=np.uint8)
        framed[:, 0] = width >> 8
        framed[:, 1] = width & 0xFF
        framed[:, 2:] = block
        parts.append(framed.tobytes())
        count += n
    return struct.pack(">h", count) + b"".join(parts)


# ---------------------------------------------------------------------------
# instruments


@dataclass(frozen=True)
class SimInstrument:
    """What the ticker needs of one instrument (prices in wire units)."""

    token: int
    tradingsymbol: str
    exchange: str
    segment: str
    tick: int
    start_price: int
    derivative: bool

    @property
    def segment_id(self) -> int:
        """The token's low byte."""
        return self.token & 0xFF


def _units(text: str, divisor: int) -> int:
    try:
        return int(Decimal(text or "0") * divisor)
    except ArithmeticError:
        return 0


def instrument_of(row: Any) -> SimInstrument:
    """A universe row (a ``KiteRow`` or anything with its attribute names) -> SimInstrument."""
    token = int(row.instrument_token)
    divisor = price_divisor(token)
    tick = _units(str(row.tick_size), divisor) or 5 * divisor // 100  # indices list 0: 0.05
    price = _units(str(row.last_price), divisor)
    if price <= 0:
        # Deterministic per token, 10..5000 rupees (indices and unlisted prices).
        price = (10 + (token * 2654435761) % 4990) * divisor
    # int32 on the wire: keep room above for the walk and the asks.
    price = max(tick, min(price, ((2**31 - 1) // tick - 1000) * tick))
    price -= price % tick
    return SimInstrument(
        token=token,
        tradingsymbol=str(row.tradingsymbol),
        exchange=str(row.exchange),
        segment=str(row.segment),
        tick=tick,
        start_price=price,
        derivative=str(row.instrument_type) in ("FUT", "CE", "PE"),
    )


# ---------------------------------------------------------------------------
# the tick state: one FULL_PACKET row per subscribed-once token, walked in numpy


class TickState:
    """Per-token last values as full packets, a seeded random walk with a consistent depth."""

    def __init__(self, seed: int, capacity: int = 1024) -> None:
        self.rng = np.random.default_rng(seed)
        self.rows = np.zeros(capacity, dtype=FULL_PACKET)
        self.tick = np.zeros(capacity, dtype=np.int64)
        self.segment = np.zeros(capacity, dtype=np.int64)
        self.derivative = np.zeros(capacity, dtype=bool)
        self.hidden = np.zeros((capacity, 2), dtype=np.int64)
        """Buy/sell quantity resting beyond the 5 visible levels."""
        self.slot_of: dict[int, int] = {}
        self.size = 0

    @property
    def raw(self) -> npt.NDArray[np.uint8]:
        """The rows as (n, 184) bytes."""
        return self.rows.view(np.uint8).reshape(-1, FULL_PACKET.itemsize)

    def slot(self, inst: SimInstrument, now_s: int) -> int:
        """The slot of a token, created (with opening values) on first use."""
        slot = self.slot_of.get(inst.token)
        if slot is not None:
            return slot
        if self.size == len(self.rows):
            grow = len(self.rows)
            # Not np.concatenate: it would promote the big-endian fields to native order.
            rows = np.zeros(2 * grow, dtype=FULL_PACKET)
            rows[:grow] = self.rows
            self.rows = rows
            self.tick = np.concatenate([self.tick, np.zeros(grow, dtype=np.int64)])
            self.segment = np.concatenate([self.segment, np.zeros(grow, dtype=np.int64)])
            self.derivative = np.concatenate([self.derivative, np.zeros(grow, dtype=bool)])
            self.hidden = np.concatenate([self.hidden, np.zeros((grow, 2), dtype=np.int64)])
        slot = self.size
        self.size += 1
        self.slot_of[inst.token] = slot
        self.tick[slot] = inst.tick
        self.segment[slot] = inst.segment_id
        self.derivative[slot] = inst.derivative
        row = self.rows[slot]
        px = inst.start_price
        close = max(inst.tick, px + int(self.rng.integers(-20, 21)) * inst.tick)
        row["instrument_token"] = inst.token
        for name in ("last_price", "average_traded_price", "open", "high", "low"):
            row[name] = px
        row["close"] = close
        row["last_trade_time"] = row["exchange_timestamp"] = now_s
        if inst.derivative:
            oi = int(self.rng.integers(1000, 100_000))
            row["oi"] = row["oi_day_high"] = row["oi_day_low"] = oi
        if inst.segment_id != INDICES:
            self.hidden[slot] = self.rng.integers(1000, 100_000, size=2)
            self._depth(np.array([slot]))
        return slot

    def step(self, slots: npt.NDArray[np.int64], now_s: int) -> None:
        """One trade per slot: the price moves a few ticks, volume and
        averages follow, the depth is redrawn around the new price."""
        n = len(slots)
        if n == 0:
            return
        rng, rows = self.rng, self.rows
        tick = self.tick[slots]
        ltp = rows["last_price"][slots].astype(np.int64)
        ltp = np.clip(
            ltp + rng.integers(-2, 3, size=n) * tick, tick, ((2**31 - 1) // tick - 64) * tick
        )
        rows["last_price"][slots] = ltp
        rows["high"][slots] = np.maximum(rows["high"][slots].astype(np.int64), ltp)
        rows["low"][slots] = np.minimum(rows["low"][slots].astype(np.int64), ltp)
        rows["exchange_timestamp"][slots] = now_s
        traded = slots[self.segment[slots] != INDICES]
        if len(traded) == 0:
            return
        m = len(traded)
        px = rows["last_price"][traded].astype(np.int64)
        qty = rng.integers(1, 500, size=m)
        volume = rows["volume_traded"][traded].astype(np.int64)
        new_volume = np.minimum(volume + qty, 2**31 - 1)
        avg = rows["average_traded_price"][traded].astype(np.int64)
        rows["average_traded_price"][traded] = (avg * volume + px * qty) // np.maximum(
            new_volume, 1
        )
        rows["volume_traded"][traded] = new_volume
        rows["last_traded_quantity"][traded] = qty
        rows["last_trade_time"][traded] = now_s
        self.hidden[traded] = np.maximum(
            self.hidden[traded] + rng.integers(-500, 501, size=(m, 2)), 0
        )
        deriv = traded[self.derivative[traded]]
        if len(deriv):
            oi = np.maximum(
                rows["oi"][deriv].astype(np.int64) + rng.integers(-50, 51, size=len(deriv)), 0
            )
            rows["oi"][deriv] = oi
            rows["oi_day_high"][deriv] = np.maximum(rows["oi_day_high"][deriv].astype(np.int64), oi)
            rows["oi_day_low"][deriv] = np.minimum(rows["oi_day_low"][deriv].astype(np.int64), oi)
        self._depth(traded)

    def _depth(self, slots: npt.NDArray[np.int64]) -> None:
        """Bids at or one tick under the last price, asks above it (a 1-2 tick
        spread), levels 1-2 ticks apart; empty levels (price <= 0) are zeros."""
        rng, rows = self.rng, self.rows
        n = len(slots)
        tick = self.tick[slots][:, None]
        ltp = rows["last_price"][slots].astype(np.int64)[:, None]
        best_bid = ltp - rng.integers(0, 2, size=(n, 1)) * tick
        best_ask = best_bid + rng.integers(1, 3, size=(n, 1)) * tick
        gaps = rng.integers(1, 3, size=(n, 5))
        gaps[:, 0] = 0
        steps = np.cumsum(gaps, axis=1) * tick
        bid_px = best_bid - steps
        ask_px = best_ask + steps
        qty = rng.integers(1, 2000, size=(n, 10))
        orders = np.minimum(qty, rng.integers(1, 40, size=(n, 10)))
        px = np.concatenate([bid_px, ask_px], axis=1)
        empty = px <= 0
        px[empty] = 0
        qty[empty] = 0
        orders[empty] = 0
        depth = rows["depth"]
        depth["price"][slots] = px
        depth["quantity"][slots] = qty
        depth["orders"][slots] = orders
        rows["total_buy_quantity"][slots] = qty[:, :5].sum(axis=1) + self.hidden[slots, 0]
        rows["total_sell_quantity"][slots] = qty[:, 5:].sum(axis=1) + self.hidden[slots, 1]

    def index_bytes(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """(n, 32) index full packets of ``slots`` (change = last price - close)."""
        rows = self.rows[slots]
        out = np.zeros(len(slots), dtype=INDEX_PACKET)
        for name in ("instrument_token", "last_price", "high", "low", "open", "close"):
            out[name] = rows[name]
        out["change"] = rows["last_price"].astype(np.int64) - rows["close"].astype(np.int64)
        out["exchange_timestamp"] = rows["exchange_timestamp"]
        return out.view(np.uint8).reshape(-1, INDEX_PACKET.itemsize)


def row_values(row: np.void) -> dict[str, Any]:
    """A FULL_PACKET row as a dict of ints (depth as bids/asks (quantity, price, orders))."""
    out: dict[str, Any] = {name: int(row[name]) for name in FULL_FIELDS}
    depth = row["depth"]
    levels = [(int(d["quantity"]), int(d["price"]), int(d["orders"])) for d in depth]
    out["bids"], out["asks"] = levels[:5], levels[5:]
    return out


# ---------------------------------------------------------------------------
# faults


@dataclass
class Faults(FaultSet):
    """Fault probabilities per tick interval (``sim.faults.disconnect = 0.01``)."""

    disconnect: float = 0.0
    """All ticker connections are aborted (no close frame)."""
    stall: float = 0.0
    """Nothing is sent (not even heartbeats) for ``stall_seconds``; connections stay open."""
    stall_seconds: float = 5.0
    malformed: float = 0.0
    """A truncated frame or one with an unknown packet length goes to every connection."""


MALFORMED_KINDS: Final = ("truncated", "unknown_length")


# ---------------------------------------------------------------------------
# HTTP plumbing (h11: the login and session calls are POST/DELETE, which
# websockets' handshake parser does not take)


@dataclass(frozen=True)
class _HttpRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ", "."""
    form: dict[str, str]
    cookies: dict[str, str]


@dataclass(frozen=True)
class _HttpReply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _json(status: int, payload: object, headers: Iterable[tuple[str, str]] = ()) -> _HttpReply:
    return _HttpReply(status, orjson.dumps(payload), headers=tuple(headers))


def kite_error(status: int, error_type: str, message: str) -> _HttpReply:
    """The venue's error shape."""
    return _json(
        status, {"status": "error", "message": message, "data": None, "error_type": error_type}
    )


def _ok(data: object, headers: Iterable[tuple[str, str]] = ()) -> _HttpReply:
    return _json(200, {"status": "success", "data": data}, headers)


def _first(values: Mapping[str, list[str]]) -> dict[str, str]:
    return {k: v[0] for k, v in values.items()}


def _cookies(header: str) -> dict[str, str]:
    out = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out[name] = value
    return out


# ---------------------------------------------------------------------------
# connections


_conn_ids = itertools.count(1)


class _Conn:
    """One ticker client: its tokens and modes, its outbox (sent by its own task)."""

    def __init__(self, ws: ServerConnection, api_key: str, now_s: float) -> None:
        self.id = next(_conn_ids)
        self.ws = ws
        self.api_key = api_key
        self.modes: dict[int, str] = {}
        self.fresh: set[int] = set()
        """Tokens subscribed (or re-moded) since the last frame: sent even if their market is closed."""
        self.groups: dict[str, npt.NDArray[np.int64]] | None = None
        """Slots per packet kind (ltp, quote, full, index_quote, index_full), rebuilt on change."""
        self.outbox: deque[bytes | str] = deque()
        self.wake = asyncio.Event()
        self.last_sent_s = now_s
        self.frames = 0
        self.heartbeats = 0
        self.texts = 0
        self.packets: Counter[int] = Counter()
        self.closed = False

    def info(self) -> dict[str, Any]:
        """What /sim/stats shows of this connection."""
        return {
            "id": self.id,
            "tokens": len(self.modes),
            "modes": dict(Counter(self.modes.values())),
            "frames": self.frames,
            "heartbeats": self.heartbeats,
            "texts": self.texts,
            "packets_by_length": dict(self.packets),
        }


@dataclass
class _AccessToken:
    api_key: str
    user_id: str
    expires_at: dt.datetime
    revoked: bool = False


@dataclass
class _Pending:
    user_id: str
    created_s: float
    used: bool = False


@dataclass
class Account:
    """The one user the simulator knows, and the app it logs in to."""

    user_id: str = DEFAULT_USER_ID
    password: str = field(default=DEFAULT_PASSWORD, repr=False)
    totp_secret: str = field(default=DEFAULT_TOTP_SECRET, repr=False)
    api_key: str = DEFAULT_API_KEY
    api_secret: str = field(default=DEFAULT_API_SECRET, repr=False)
    user_name: str = "Sim User"
    user_shortname: str = "Sim"
    email: str = "sim@example.invalid"
    redirect_url: str = DEFAULT_REDIRECT_URL

    def env(self) -> dict[str, str]:
        """The ``ZERODHA_*`` environment that logs in to this account."""
        return {
            "ZERODHA_USER_ID": self.user_id,
            "ZERODHA_PASSWORD": self.password,
            "ZERODHA_TOTP_SECRET": self.totp_secret,
            "ZERODHA_API_KEY": self.api_key,
            "ZERODHA_API_SECRET": self.api_secret,
        }


# ---------------------------------------------------------------------------
# the simulator


class KiteSimulator:
    """A Zerodha Kite venue on loopback (login, API, instruments, ticker), faults on demand.

    Use as ``async with KiteSimulator(...) as sim:`` or ``await sim.start()``
    / ``await sim.stop()``; it runs on the caller's event loop, and the
    accessors must be called from it.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ws_port: int = 0,
        account: Account | None = None,
        rate: float = 1.0,
        seed: int = 0,
        scale: float = 0.05,
        as_of: dt.date | None = None,
        clock: Callable[[], dt.datetime] = utc_now,
        wall_clock: Callable[[], dt.datetime] = utc_now,
        holidays: Collection[dt.date] = (),
        heartbeat_s: float = 1.0,
        full_layout: int = 184,
        max_tokens: int = MAX_TOKENS,
        max_connections: int = MAX_CONNECTIONS,
        snapshot_on_subscribe: bool = True,
        faults: Faults | str | None = None,
        request_ttl_s: float = 300.0,
    ) -> None:
        try:
            self.host = _http.loopback_host(host)
        except ValueError as exc:
            raise SimulatorError(str(exc)) from None
        for name, value in (("port", port), ("ws_port", ws_port)):
            if not 0 <= value <= 65535:
                raise SimulatorError(f"{name} {value} is out of range")
        if not math.isfinite(rate) or rate <= 0:
            raise SimulatorError(f"rate must be positive (ticks per second), got {rate}")
        if not math.isfinite(heartbeat_s) or heartbeat_s <= 0:
            raise SimulatorError(f"heartbeat_s must be positive, got {heartbeat_s}")
        if full_layout not in (164, 184):
            raise SimulatorError(
                f"full_layout must be 184 or 164 (the old layout), got {full_layout}"
            )
        if max_tokens < 1 or max_connections < 1:
            raise SimulatorError("max_tokens and max_connections must be at least 1")
        self.account = account or Account()
        self._port_arg, self._ws_port_arg = port, ws_port
        self.port = 0
        """The bound HTTP port (login + API), after start."""
        self.ws_port = 0
        """The bound ticker port, after start."""
        self.rate = rate
        self.seed = seed
        self.scale = scale
        self.as_of = as_of
        self.clock = clock
        self.wall_clock = wall_clock
        self.holidays = frozenset(holidays)
        self.heartbeat_s = heartbeat_s
        self.full_layout = full_layout
        """184 (current) or 164 (the older full packet without timestamps and OI)."""
        self.max_tokens = max_tokens
        self.max_connections = max_connections
        self.snapshot_on_subscribe = snapshot_on_subscribe
        self.request_ttl_s = request_ttl_s
        self.faults = faults if isinstance(faults, Faults) else Faults.parse(faults or "")
        self._rng = np.random.default_rng([seed, 7])
        self.instruments: dict[int, SimInstrument] = {}
        self._rows: list[Any] = []
        self._csv: dict[tuple[str, bool], bytes] = {}
        self.state = TickState(seed)
        self.sent = np.zeros(0, dtype=FULL_PACKET)
        """Per slot: the values last sent (the truth)."""
        self.sent_mask = np.zeros(0, dtype=bool)
        self._http_server: asyncio.Server | None = None
        self._http_writers: set[asyncio.StreamWriter] = set()
        self._ws_server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._conns: dict[int, _Conn] = {}
        self._reserved: dict[ServerConnection, str] = {}
        """Handshakes accepted but not yet running: connection -> api_key."""
        self._login_requests: dict[str, _Pending] = {}
        self._web_sessions: dict[str, str] = {}
        """kf_session cookie -> user id."""
        self._request_tokens: dict[str, _Pending] = {}
        self._access: dict[str, _AccessToken] = {}
        self._stalled = False
        self._stall_handle: asyncio.TimerHandle | None = None
        self._paused = False
        self.injected: Counter[str] = Counter()
        """Faults injected, by kind."""
        self.counters: Counter[str] = Counter()
        """Logins, handshakes (accepted / refused by reason), HTTP answers by status..."""
        self._started_s = 0.0

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> KiteSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the universe, listen on both ports, start ticking."""
        if self._http_server is not None:
            raise SimulatorError("the simulator is already running")
        self._load_universe()
        loop = asyncio.get_running_loop()
        try:
            self._http_server = await asyncio.start_server(
                self._http_connection, self.host, self._port_arg
            )
            self._ws_server = await serve(
                self._ws_handler,
                self.host,
                self._ws_port_arg,
                process_request=self._ws_handshake,
                compression=None,
                ping_interval=None,  # the venue sends heartbeats, not pings; a stall must silence all
                ping_timeout=None,
                close_timeout=2.0,
                max_size=2**20,
                server_header=None,
                logger=_ws_log,
            )
        except OSError as exc:
            await self.stop()
            raise SimulatorError(
                f"cannot listen on {self.host} ports {self._port_arg}/{self._ws_port_arg}: "
                f"{exc.strerror or exc}"
            ) from exc
        self.port = self._http_server.sockets[0].getsockname()[1]
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]
        self._started_s = loop.time()
        self._tasks = [loop.create_task(self._tick_loop(), name="kite-sim-ticks")]

    async def subscribed_tokens(self) -> set[int]:
        """Every token some ticker connection is subscribed to now (call on the simulator's loop)."""
        return {token for conn in self._conns.values() for token in conn.modes}

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        self._stalled = False
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._ws_server is not None:
            server, self._ws_server = self._ws_server, None
            server.close()
            await server.wait_closed()
        if self._http_server is not None:
            http_server, self._http_server = self._http_server, None
            http_server.close()
            for writer in list(self._http_writers):
                writer.close()
            await http_server.wait_closed()

    def _load_universe(self) -> None:
        from connector.sim.kite_universe import generate_universe

        as_of = self.as_of or self.clock().astimezone(IST).date()
        try:
            self._rows = generate_universe(as_of, self.seed, self.scale)
        except ValueError as exc:
            raise SimulatorError(f"universe: {exc}") from None
        self.instruments = {}
        for row in self._rows:
            inst = instrument_of(row)
            self.instruments[inst.token] = inst

    @property
    def http_url(self) -> str:
        """``http://127.0.0.1:PORT``: the login base and the API base."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://127.0.0.1:WS_PORT`` (add ``?api_key=...&access_token=...``)."""
        return f"ws://{self.host}:{self.ws_port}"

    def ticker_url(self, access_token: str, api_key: str | None = None) -> str:
        """The ticker URL with its auth query."""
        return (
            f"{self.ws_url}/?api_key={api_key or self.account.api_key}&access_token={access_token}"
        )

    def tokens(
        self, count: int | None = None, *, segment: str | None = None, exchange: str | None = None
    ) -> list[int]:
        """Tokens of the universe (in its order), filtered by segment / exchange."""
        out = [
            inst.token
            for inst in self.instruments.values()
            if (segment is None or inst.segment == segment)
            and (exchange is None or inst.exchange == exchange)
        ]
        return out if count is None else out[:count]

    # -- auth state ------------------------------------------------------------

    def issue_access_token(self) -> str:
        """An access token for the account without the login dance (for tests of other parts)."""
        token = secrets.token_urlsafe(24)
        self._access[token] = _AccessToken(
            self.account.api_key, self.account.user_id, token_expiry(self.wall_clock())
        )
        return token

    def expire_tokens(self) -> int:
        """Invalidate every access token: the next handshake or API call gets 403 TokenException."""
        count = 0
        for access in self._access.values():
            if not access.revoked:
                access.revoked = True
                count += 1
        self.injected["token_expiry"] += 1
        return count

    def _access_ok(self, api_key: str, token: str) -> str:
        """ "" when ``token`` is a live access token of ``api_key``, else the refusal message."""
        access = self._access.get(token)
        if access is None or access.api_key != api_key:
            return "Incorrect `api_key` or `access_token`."
        if access.revoked or self.wall_clock() >= access.expires_at:
            return "Token is invalid or has expired."
        return ""

    # -- faults and control ----------------------------------------------------

    def pause(self) -> None:
        """Stop ticking (heartbeats go on)."""
        self._paused = True

    def resume(self) -> None:
        """Tick again."""
        self._paused = False

    async def disconnect_all(self, timeout_s: float = 5.0) -> int:
        """Abort every ticker connection (no close frame); returns how many."""
        conns = list(self._conns.values())
        for conn in conns:
            self._abort(conn, "disconnect")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(c.id in self._conns for c in conns) and loop.time() < deadline:
            await asyncio.sleep(0.005)  # handlers finish on the next loop turns
        return len(conns)

    def stall(self, seconds: float | None = None) -> None:
        """Send nothing (no ticks, no heartbeats, no replies) for ``seconds``
        or until :meth:`unstall`; connections stay open. Prices do not move meanwhile."""
        if not self._stalled:
            self._stalled = True
            self.injected["stall"] += 1
            for conn in self._conns.values():
                conn.outbox.clear()
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if seconds is not None:
            self._stall_handle = asyncio.get_running_loop().call_later(seconds, self.unstall)

    def unstall(self) -> None:
        """End a stall."""
        if self._stall_handle is not None:
            self._stall_handle.cancel()
            self._stall_handle = None
        if self._stalled:
            self._stalled = False
            now = asyncio.get_running_loop().time()
            for conn in self._conns.values():
                conn.last_sent_s = min(conn.last_sent_s, now - self.heartbeat_s)

    @property
    def stalled(self) -> bool:
        """A stall is in progress."""
        return self._stalled

    def send_malformed(self, kind: str = "truncated") -> int:
        """A bad binary frame to every connection: ``truncated`` (a full packet
        cut short) or ``unknown_length`` (a 13-byte packet, then a valid LTP
        packet a decoder should still read). Returns how many were queued."""
        if kind not in MALFORMED_KINDS:
            raise SimulatorError(f"malformed kind {kind!r}: one of {MALFORMED_KINDS}")
        sent = 0
        for conn in list(self._conns.values()):
            if kind == "truncated":
                frame = struct.pack(">hh", 1, 184) + bytes(range(100))
            else:
                token = next(iter(conn.modes), 256265)
                frame = (
                    struct.pack(">hh", 2, 13) + b"\x7f" * 13 + struct.pack(">hii", 8, token, 12345)
                )
            if self._push(conn, frame):
                sent += 1
        self.injected[f"malformed_{kind}"] += sent
        return sent

    def send_text(self, kind: str, data: Any, conn_id: int | None = None) -> int:
        """A text message ``{"type": kind, "data": data}`` (order, error, message)
        to one connection or all; returns how many were queued."""
        text = orjson.dumps({"type": kind, "data": data}).decode()
        sent = 0
        for conn in list(self._conns.values()):
            if (conn_id is None or conn.id == conn_id) and self._push(conn, text):
                sent += 1
        return sent

    # -- accessors ---------------------------------------------------------------

    def truth(self, token: int) -> dict[str, Any] | None:
        """The last values sent for ``token`` (integer wire units, all fields of
        a full packet plus ``bids``/``asks``), or None if never sent."""
        slot = self.state.slot_of.get(token)
        if slot is None or slot >= len(self.sent_mask) or not self.sent_mask[slot]:
            return None
        return row_values(self.sent[slot])

    def connections(self) -> list[dict[str, Any]]:
        """The open ticker connections."""
        return [c.info() for c in self._conns.values()]

    def stats(self) -> dict[str, Any]:
        """Connections, frames, packets by length, heartbeats, faults, logins, HTTP answers."""
        loop_time = asyncio.get_running_loop().time() if self._http_server else self._started_s
        packets: Counter[int] = Counter()
        for conn in self._conns.values():
            packets.update(conn.packets)
        return {
            "uptime_s": round(loop_time - self._started_s, 3),
            "instruments": len(self.instruments),
            "tokens_walked": self.state.size,
            "stalled": self._stalled,
            "connections": {
                "open": len(self._conns),
                "list": self.connections(),
            },
            "frames_sent": self.counters["frames"],
            "heartbeats_sent": self.counters["heartbeats"],
            "texts_sent": self.counters["texts"],
            "packets_sent": self.counters["packets"],
            "open_packets_by_length": dict(packets),
            "faults": dict(self.injected),
            "faults_config": self.faults.as_dict(),
            "counters": dict(self.counters),
        }

    # -- the tick loop -----------------------------------------------------------

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        period = min(interval, self.heartbeat_s / 4)
        next_tick = loop.time()
        while True:
            now = loop.time()
            if now >= next_tick:
                next_tick = max(next_tick + interval, now)  # no bursts after a slow turn
                self._tick(now)
            else:
                self._heartbeats(now)
            await asyncio.sleep(min(period, max(next_tick - loop.time(), 0.0)))

    def _tick(self, now_s: float) -> None:
        """One tick interval: walk the open tokens, one frame per connection."""
        if self._stalled:
            return
        faults = self.faults
        if faults.disconnect and self._conns and self._rng.random() < faults.disconnect:
            for conn in list(self._conns.values()):
                self._abort(conn, "disconnect")
            return
        if faults.stall and self._rng.random() < faults.stall:
            self.stall(faults.stall_seconds)
            return
        if faults.malformed and self._conns and self._rng.random() < faults.malformed:
            self.send_malformed(MALFORMED_KINDS[int(self._rng.integers(len(MALFORMED_KINDS)))])
        market_now = self.clock()
        exch_s = int(market_now.timestamp())
        open_mask = np.zeros(256, dtype=bool)  # indexed by token & 0xFF
        for seg in _HOURS:
            open_mask[seg] = market_open(seg, market_now, self.holidays)
        per_conn: list[tuple[_Conn, list[tuple[str, npt.NDArray[np.int64]]]]] = []
        active: list[npt.NDArray[np.int64]] = []
        for conn in list(self._conns.values()):
            if conn.closed:
                continue
            groups = self._groups(conn)
            fresh = (
                np.fromiter((self.state.slot_of[t] for t in conn.fresh), dtype=np.int64)
                if conn.fresh and self.snapshot_on_subscribe
                else None
            )
            conn.fresh.clear()
            chosen = []
            for kind, slots in groups.items():
                if not self._paused:
                    take = open_mask[self.state.segment[slots]]
                    if fresh is not None:
                        take |= np.isin(slots, fresh)
                    slots = slots[take]
                elif fresh is not None:
                    slots = slots[np.isin(slots, fresh)]
                else:
                    continue
                if len(slots):
                    chosen.append((kind, slots))
            if chosen:
                per_conn.append((conn, chosen))
                if not self._paused:
                    active.extend(s[open_mask[self.state.segment[s]]] for _, s in chosen)
        if active:
            self.state.step(np.unique(np.concatenate(active)), exch_s)
        sent_slots = []
        for conn, chosen in per_conn:
            frame = self._frame(chosen)
            if self._push(conn, frame):
                conn.last_sent_s = now_s
                for kind, slots in chosen:
                    conn.packets[self._length(kind)] += len(slots)
                    sent_slots.append(slots)
                self.counters["packets"] += sum(len(s) for _, s in chosen)
        if sent_slots:
            self._record_truth(np.unique(np.concatenate(sent_slots)))
        self._heartbeats(now_s)

    def _heartbeats(self, now_s: float) -> None:
        if self._stalled:
            return
        for conn in list(self._conns.values()):
            due = not conn.closed and now_s - conn.last_sent_s >= self.heartbeat_s
            if due and self._push(conn, HEARTBEAT):
                conn.last_sent_s = now_s

    def _record_truth(self, slots: npt.NDArray[np.int64]) -> None:
        size = len(self.state.rows)
        if len(self.sent) < size:
            grown = np.zeros(size, dtype=FULL_PACKET)
            grown[: len(self.sent)] = self.sent
            mask = np.zeros(size, dtype=bool)
            mask[: len(self.sent_mask)] = self.sent_mask
            self.sent, self.sent_mask = grown, mask
        self.sent[slots] = self.state.rows[slots]
        self.sent_mask[slots] = True

    def _length(self, kind: str) -> int:
        return {
            "ltp": 8,
            "quote": 44,
            "full": self.full_layout,
            "index_quote": 28,
            "index_full": 32,
        }[kind]

    def _groups(self, conn: _Conn) -> dict[str, npt.NDArray[np.int64]]:
        if conn.groups is None:
            lists: dict[str, list[int]] = {}
            slot_of = self.state.slot_of
            for token, mode in conn.modes.items():
                kind = mode
                if mode != "ltp" and token & 0xFF == INDICES:
                    kind = f"index_{mode}"
                lists.setdefault(kind, []).append(slot_of[token])
            conn.groups = {k: np.array(v, dtype=np.int64) for k, v in lists.items()}
        return conn.groups

    def _frame(self, chosen: list[tuple[str, npt.NDArray[np.int64]]]) -> bytes:
        raw = self.state.raw
        blocks = []
        for kind, slots in chosen:
            if kind == "ltp":
                blocks.append(raw[slots, :8])
            elif kind == "quote":
                blocks.append(raw[slots, :44])
            elif kind == "full":
                rows = raw[slots]
                if self.full_layout == 164:
                    rows = np.concatenate([rows[:, :44], rows[:, 64:]], axis=1)
                blocks.append(rows)
            else:
                index = self.state.index_bytes(slots)
                blocks.append(index[:, :28] if kind == "index_quote" else index)
        return encode_frame(blocks)

    def _push(self, conn: _Conn, message: bytes | str) -> bool:
        """Queue a message for a connection's sender; False when it is closed or stalled."""
        if conn.closed or self._stalled:
            return False
        if len(conn.outbox) >= _OUTBOX_MAX:
            self._abort(conn, "slow_consumer")
            return False
        conn.outbox.append(message)
        conn.wake.set()
        return True

    def _abort(self, conn: _Conn, reason: str) -> None:
        if conn.closed:
            return
        conn.closed = True
        if reason == "disconnect":
            self.injected["disconnect"] += 1
        else:
            self.counters[f"closed_{reason}"] += 1
        conn.ws.transport.abort()

    # -- the ticker WebSocket ----------------------------------------------------

    def _ws_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        path, query = _http.split_path(request)
        if path not in ("", "/"):
            self.counters["handshake_404"] += 1
            return _http.json_response(
                404,
                {
                    "status": "error",
                    "message": "Route not found",
                    "data": None,
                    "error_type": "GeneralException",
                },
            )
        api_key, token = query.get("api_key", ""), query.get("access_token", "")
        problem = (
            self._access_ok(api_key, token)
            if api_key and token
            else ("Missing `api_key` or `access_token`.")
        )
        if problem:
            self.counters["handshake_403"] += 1
            return _http.json_response(
                403,
                {
                    "status": "error",
                    "message": problem,
                    "data": None,
                    "error_type": "TokenException",
                },
            )
        for pending in [c for c in self._reserved if c.state is State.CLOSED]:
            del self._reserved[pending]  # a handshake that failed after this check
        open_for_key = sum(1 for c in self._conns.values() if c.api_key == api_key) + sum(
            1 for k in self._reserved.values() if k == api_key
        )
        if open_for_key >= self.max_connections:
            self.counters["handshake_429"] += 1
            return _http.json_response(
                429,
                {
                    "status": "error",
                    "message": f"Maximum {self.max_connections} ticker connections per api_key exceeded.",
                    "data": None,
                    "error_type": "NetworkException",
                },
            )
        self._reserved[connection] = api_key
        self.counters["handshake_ok"] += 1
        return None

    async def _ws_handler(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        api_key = self._reserved.pop(ws, "")
        conn = _Conn(ws, api_key, loop.time())
        self._conns[conn.id] = conn
        sender = loop.create_task(self._sender(conn))
        try:
            async for message in ws:
                if conn.closed:
                    break
                # Handled even during a stall (only sending stops): a client that
                # subscribed meanwhile gets its data once the venue recovers.
                self._on_message(conn, message)
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._conns.pop(conn.id, None)
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)

    async def _sender(self, conn: _Conn) -> None:
        ws = conn.ws
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                while conn.outbox and not self._stalled:
                    message = conn.outbox.popleft()
                    if isinstance(message, str):
                        await ws.send(message, text=True)
                        conn.texts += 1
                        self.counters["texts"] += 1
                    else:
                        await ws.send(message, text=False)
                        if message == HEARTBEAT:
                            conn.heartbeats += 1
                            self.counters["heartbeats"] += 1
                        else:
                            conn.frames += 1
                            self.counters["frames"] += 1
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True

    def _error_text(self, conn: _Conn, message: str) -> None:
        self._push(conn, orjson.dumps({"type": "error", "data": message}).decode())

    def _on_message(self, conn: _Conn, message: str | bytes) -> None:
        """A client request (subscribe / unsubscribe / mode)."""
        try:
            msg = orjson.loads(message)
        except orjson.JSONDecodeError:
            self._error_text(conn, "Invalid message: not JSON.")
            return
        action = msg.get("a") if isinstance(msg, dict) else None
        value = msg.get("v") if isinstance(msg, dict) else None
        if action in ("subscribe", "unsubscribe"):
            tokens = self._token_list(value)
            if tokens is None:
                self._error_text(conn, f"Invalid {action} message: v must be a list of tokens.")
                return
            if action == "subscribe":
                self._subscribe(conn, tokens, None)
            else:
                for token in tokens:
                    conn.modes.pop(token, None)
                    conn.fresh.discard(token)
                conn.groups = None
            return
        if action == "mode":
            if not (isinstance(value, list) and len(value) == 2 and value[0] in MODES):
                self._error_text(
                    conn, f"Invalid mode message: v must be [one of {list(MODES)}, [tokens]]."
                )
                return
            tokens = self._token_list(value[1])
            if tokens is None:
                self._error_text(
                    conn, "Invalid mode message: the tokens must be a list of integers."
                )
                return
            self._subscribe(conn, tokens, value[0])
            return
        self._error_text(conn, f"Invalid message: unknown action {action!r}.")

    @staticmethod
    def _token_list(value: Any) -> list[int] | None:
        if not isinstance(value, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in value
        ):
            return None
        return value

    def _subscribe(self, conn: _Conn, tokens: list[int], mode: str | None) -> None:
        """Subscribe (mode None: new tokens in quote mode) or set the mode of
        tokens (subscribing them if needed), up to ``max_tokens`` per connection."""
        now_s = int(self.clock().timestamp())
        refused = 0
        for token in tokens:
            inst = self.instruments.get(token)
            if inst is None:
                self.counters["unknown_tokens"] += 1
                continue
            if token not in conn.modes and len(conn.modes) >= self.max_tokens:
                refused += 1
                continue
            self.state.slot(inst, now_s)
            if mode is not None or token not in conn.modes:
                conn.modes[token] = mode or conn.modes.get(token, "quote")
                conn.fresh.add(token)
        conn.groups = None
        if refused:
            self.counters["tokens_refused"] += refused
            self._error_text(
                conn,
                f"Subscription limit exceeded: at most {self.max_tokens} instruments per connection; "
                f"{refused} instrument(s) not subscribed.",
            )

    # -- HTTP ------------------------------------------------------------------

    async def _http_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._http_writers.add(writer)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                reply = self._http_reply(request)
                self.counters[f"http_{reply.status}"] += 1
                headers = [
                    ("Content-Type", reply.content_type),
                    ("Content-Length", str(len(reply.body))),
                    *reply.headers,
                ]
                writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
                writer.write(conn.send(h11.Data(data=reply.body)))
                writer.write(conn.send(h11.EndOfMessage()))
                await writer.drain()
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError):
            pass
        finally:
            self._http_writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> _HttpRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > 2**20:
                    return None
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                break
            else:
                return None  # ConnectionClosed or PAUSED without a request
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        parts = urlsplit(head.target.decode("latin-1"))
        form = {}
        if "application/x-www-form-urlencoded" in headers.get("content-type", ""):
            form = _first(parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True))
        return _HttpRequest(
            method=head.method.decode("ascii"),
            path=parts.path,
            query=_first(parse_qs(parts.query, keep_blank_values=True)),
            headers=headers,
            form=form,
            cookies=_cookies(headers.get("cookie", "")),
        )

    def _http_reply(self, request: _HttpRequest) -> _HttpReply:
        routes: dict[tuple[str, str], Callable[[_HttpRequest], _HttpReply]] = {
            ("POST", "/api/login"): self._api_login,
            ("POST", "/api/twofa"): self._api_twofa,
            ("GET", "/connect/login"): self._connect_login,
            ("GET", "/connect/finish"): self._connect_finish,
            ("POST", "/session/token"): self._session_token,
            ("DELETE", "/session/token"): self._session_logout,
            ("GET", "/user/profile"): self._user_profile,
        }
        path = request.path.rstrip("/") or "/"
        handler = routes.get((request.method, path))
        if handler is not None:
            return handler(request)
        if request.method == "GET" and (path == "/instruments" or path.startswith("/instruments/")):
            return self._instruments(request, path)
        if request.method == "GET" and path.startswith("/sim/"):
            return self._sim_endpoint(path, request.query)
        if any(p == path for _, p in routes):
            return kite_error(405, "InputException", f"{request.method} is not allowed on {path}")
        return kite_error(404, "GeneralException", "Route not found")

    def _api_login(self, request: _HttpRequest) -> _HttpReply:
        user_id, password = request.form.get("user_id", ""), request.form.get("password", "")
        if not user_id or not password:
            return kite_error(400, "InputException", "Missing `user_id` or `password`.")
        account = self.account
        if user_id != account.user_id or not secrets.compare_digest(password, account.password):
            self.counters["login_wrong_password"] += 1
            return kite_error(400, "InputException", "Invalid `user_id` or `password`.")
        request_id = secrets.token_urlsafe(24)
        self._login_requests[request_id] = _Pending(user_id, self.wall_clock().timestamp())
        return _ok(
            {
                "user_id": user_id,
                "request_id": request_id,
                "twofa_type": "totp",
                "twofa_types": ["totp", "app_code"],
                "twofa_status": "active",
                "profile": {
                    "user_name": account.user_name,
                    "user_shortname": account.user_shortname,
                    "avatar_url": None,
                },
            }
        )

    def _api_twofa(self, request: _HttpRequest) -> _HttpReply:
        form = request.form
        user_id, request_id = form.get("user_id", ""), form.get("request_id", "")
        value = form.get("twofa_value", "")
        if not user_id or not request_id or not value:
            return kite_error(
                400, "InputException", "Missing `user_id`, `request_id` or `twofa_value`."
            )
        now = self.wall_clock()
        pending = self._login_requests.get(request_id)
        if (
            pending is None
            or pending.used
            or pending.user_id != user_id
            or now.timestamp() - pending.created_s > self.request_ttl_s
        ):
            return kite_error(403, "TokenException", "Login request expired. Please log in again.")
        totp = pyotp.TOTP(self.account.totp_secret)
        if not totp.verify(value, for_time=int(now.timestamp()), valid_window=1):
            self.counters["login_wrong_totp"] += 1
            return kite_error(400, "InputException", "Invalid TOTP.")
        pending.used = True
        session = secrets.token_urlsafe(24)
        self._web_sessions[session] = user_id
        self.counters["twofa_ok"] += 1
        cookies = (
            ("Set-Cookie", f"kf_session={session}; Path=/; HttpOnly"),
            ("Set-Cookie", f"user_id={user_id}; Path=/"),
            ("Set-Cookie", f"public_token={secrets.token_hex(16)}; Path=/"),
            ("Set-Cookie", f"enctoken={secrets.token_urlsafe(24)}; Path=/; HttpOnly"),
        )
        return _ok({"profile": {}}, cookies)

    def _login_page(self) -> _HttpReply:
        page = b"<!doctype html><title>Kite - Zerodha</title><form>login</form>"
        return _HttpReply(200, page, "text/html; charset=utf-8")

    def _connect_login(self, request: _HttpRequest) -> _HttpReply:
        api_key = request.query.get("api_key", "")
        if api_key != self.account.api_key:
            return kite_error(400, "InputException", "Invalid `api_key`.")
        session = request.cookies.get("kf_session", "")
        if self._web_sessions.get(session) is None:
            return self._login_page()  # not logged in: the venue shows its login form
        sess_id = secrets.token_urlsafe(12)
        location = f"{self.http_url}/connect/finish?api_key={api_key}&sess_id={sess_id}"
        return _HttpReply(302, b"", "text/html", (("Location", location),))

    def _connect_finish(self, request: _HttpRequest) -> _HttpReply:
        api_key = request.query.get("api_key", "")
        if api_key != self.account.api_key:
            return kite_error(400, "InputException", "Invalid `api_key`.")
        user_id = self._web_sessions.get(request.cookies.get("kf_session", ""))
        if user_id is None:
            return self._login_page()
        token = secrets.token_urlsafe(24)
        self._request_tokens[token] = _Pending(user_id, self.wall_clock().timestamp())
        url = self.account.redirect_url
        sep = "&" if "?" in url else "?"
        location = f"{url}{sep}action=login&type=login&status=success&request_token={token}"
        return _HttpReply(302, b"", "text/html", (("Location", location),))

    def _session_token(self, request: _HttpRequest) -> _HttpReply:
        form = request.form
        api_key, token = form.get("api_key", ""), form.get("request_token", "")
        check = form.get("checksum", "")
        if not api_key or not token or not check:
            return kite_error(
                400, "InputException", "Missing `api_key`, `request_token` or `checksum`."
            )
        account = self.account
        if api_key != account.api_key:
            return kite_error(400, "InputException", "Invalid `api_key`.")
        pending = self._request_tokens.get(token)
        now = self.wall_clock()
        if (
            pending is None
            or pending.used
            or now.timestamp() - pending.created_s > self.request_ttl_s
        ):
            self.counters["session_bad_request_token"] += 1
            return kite_error(403, "TokenException", "Token is invalid or has expired.")
        expected = hashlib.sha256((api_key + token + account.api_secret).encode()).hexdigest()
        if not secrets.compare_digest(check, expected):
            self.counters["session_bad_checksum"] += 1
            return kite_error(400, "InputException", "Invalid `checksum`.")
        pending.used = True
        access = secrets.token_urlsafe(24)
        self._access[access] = _AccessToken(api_key, account.user_id, token_expiry(now))
        self.counters["logins"] += 1
        return _ok(
            {
                "user_type": "individual",
                "email": account.email,
                "user_name": account.user_name,
                "user_shortname": account.user_shortname,
                "broker": "ZERODHA",
                "exchanges": ["NSE", "NFO", "BFO", "CDS", "BSE", "MCX", "BCD", "MF"],
                "products": ["CNC", "NRML", "MIS", "BO", "CO"],
                "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
                "avatar_url": None,
                "user_id": account.user_id,
                "api_key": api_key,
                "access_token": access,
                "public_token": secrets.token_hex(16),
                "enctoken": secrets.token_urlsafe(24),
                "refresh_token": "",
                "silo": "",
                "login_time": now.astimezone(IST).strftime("%Y-%m-%d %H:%M:%S"),
                "meta": {"demat_consent": "physical"},
            }
        )

    def _authorized(self, request: _HttpRequest) -> _HttpReply | None:
        """None when the Authorization header holds a live token, else the 403 answer."""
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        api_key, _, token = credentials.partition(":")
        if scheme.lower() != "token" or not api_key or not token:
            return kite_error(403, "TokenException", "Incorrect `api_key` or `access_token`.")
        problem = self._access_ok(api_key, token)
        return kite_error(403, "TokenException", problem) if problem else None

    def _session_logout(self, request: _HttpRequest) -> _HttpReply:
        token = request.query.get("access_token", "") or request.form.get("access_token", "")
        access = self._access.get(token)
        if access is None:
            return kite_error(403, "TokenException", "Token is invalid or has expired.")
        access.revoked = True
        return _ok(True)

    def _user_profile(self, request: _HttpRequest) -> _HttpReply:
        refusal = self._authorized(request)
        if refusal is not None:
            return refusal
        a = self.account
        return _ok(
            {
                "user_id": a.user_id,
                "user_type": "individual",
                "email": a.email,
                "user_name": a.user_name,
                "user_shortname": a.user_shortname,
                "broker": "ZERODHA",
                "exchanges": ["BFO", "MCX", "NSE", "CDS", "BSE", "BCD", "MF", "NFO"],
                "products": ["CNC", "NRML", "MIS", "BO", "CO"],
                "order_types": ["MARKET", "LIMIT", "SL", "SL-M"],
                "avatar_url": None,
                "meta": {"demat_consent": "physical"},
            }
        )

    def _instruments(self, request: _HttpRequest, path: str) -> _HttpReply:
        """The universe as CSV; an Authorization header, when sent, must be valid."""
        if "authorization" in request.headers:
            refusal = self._authorized(request)
            if refusal is not None:
                return refusal
        exchange = path[len("/instruments/") :].upper() if path != "/instruments" else ""
        exchanges = {row.exchange for row in self._rows}
        if exchange and exchange not in exchanges:
            return kite_error(400, "InputException", f"Invalid `exchange` {exchange!r}.")
        gz = "gzip" in request.headers.get("accept-encoding", "")
        key = (exchange, gz)
        body = self._csv.get(key)
        if body is None:
            from connector.sim.kite_universe import universe_csv

            rows = [r for r in self._rows if not exchange or r.exchange == exchange]
            body = universe_csv(rows)
            if gz:
                body = gzip.compress(body, compresslevel=5, mtime=0)
            self._csv[key] = body
        headers = (("Content-Encoding", "gzip"),) if gz else ()
        return _HttpReply(200, body, "text/csv", headers)

    def _sim_endpoint(self, path: str, query: dict[str, str]) -> _HttpReply:
        """The simulator's own endpoints (no auth, no faults)."""
        try:
            if path == "/sim/stats":
                return _json(200, self.stats())
            if path == "/sim/truth":
                truth = self.truth(int(query.get("token", "0")))
                if truth is None:
                    return _json(404, {"error": "nothing sent for that token yet"})
                return _json(200, truth)
            if path == "/sim/control":
                return _json(200, self._control(query))
        except (ValueError, SimulatorError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(404, {"error": f"no simulator endpoint at {path}"})

    def _control(self, query: dict[str, str]) -> dict[str, Any]:
        action = query.get("action", "")
        if action == "disconnect_all":
            conns = list(self._conns.values())
            for conn in conns:
                self._abort(conn, "disconnect")
            return {"disconnected": len(conns)}
        if action == "stall":
            seconds = query.get("seconds")
            self.stall(float(seconds) if seconds else None)
        elif action == "unstall":
            self.unstall()
        elif action == "pause":
            self.pause()
        elif action == "resume":
            self.resume()
        elif action == "malformed":
            return {"sent": self.send_malformed(query.get("kind", "truncated"))}
        elif action == "expire_tokens":
            return {"expired": self.expire_tokens()}
        elif action == "text":
            data: Any = query.get("data", "")
            return {"sent": self.send_text(query.get("type", "message"), data)}
        else:
            raise SimulatorError(
                f"unknown action {action!r} (disconnect_all, stall, unstall, pause, resume, "
                "malformed, expire_tokens, text)"
            )
        return {"ok": True, "action": action}


serve_until_stopped = _http.serve_until_stopped  # (re-exported: the CLI imports it from here)


def write_session_cache(sim: KiteSimulator, data_dir: Path) -> Path:
    """Issue an access token and cache it as ``login zerodha`` would (for demos
    and for feeds run without credentials against the simulator)."""
    from connector.zerodha.auth import Session, cache_path, save_session

    now = sim.wall_clock()
    session = Session(
        user_id=sim.account.user_id,
        user_name=sim.account.user_name,
        api_key=sim.account.api_key,
        access_token=sim.issue_access_token(),
        public_token="",
        login_time=now,
        expires_at=token_expiry(now),
        api_url=sim.http_url,
    )
    path = cache_path(data_dir)
    save_session(path, session)
    return path


_SERVICE_PARAMS: Final[dict[str, type | tuple[type, ...]]] = {
    "port": int,
    "ws_port": int,
    "rate": (int, float),
    "seed": int,
    "scale": (int, float),
    "clock": str,
    "holidays": list,
    "heartbeat_s": (int, float),
    "full_layout": int,
    "faults": str,
    "user_id": str,
    "password": str,
    "totp_secret": str,
    "api_key": str,
    "api_secret": str,
    "session_cache": bool,
}


def service(params: Mapping[str, Any], context: Any) -> None:
    """Run a Kite simulator on 127.0.0.1 as a supervisor service until it is
    stopped (``[[services]] target = "connector.sim.kite:service"``).

    ``port`` (login + API) and ``ws_port`` (ticker) are required: the feed's
    URLs name them. ``clock`` is ``real`` (default), ``open``, ``closed`` or an
    ISO datetime; ``holidays`` a list of ``YYYY-MM-DD``. Account fields
    default to the simulator's (:class:`Account`). With ``session_cache =
    true`` it writes a session for its account into the data dir's
    ``run/zerodha_session.json`` (replacing any there), so a feed without
    ``ZERODHA_*`` credentials can use the simulator."""
    from pipeline.adapter import check_params
    from pipeline.errors import ConfigError

    check_params(params, _SERVICE_PARAMS, "service")
    for name in ("port", "ws_port"):
        if name not in params:
            raise ConfigError(f"services.params.{name} is required: the feed's URLs name it")
    try:
        holidays = [dt.date.fromisoformat(str(d)) for d in params.get("holidays", [])]
    except ValueError as exc:
        raise ConfigError(f"services.params.holidays: {exc}") from None
    account_fields = {f.name for f in fields(Account)}
    account = Account(**{k: v for k, v in params.items() if k in account_fields})
    kwargs = {
        k: v
        for k, v in params.items()
        if k not in account_fields and k not in ("clock", "holidays", "session_cache")
    }

    from connector.sim.service import serve_as_service

    def make_sim() -> KiteSimulator:
        return KiteSimulator(
            account=account,
            clock=clock_from_spec(str(params.get("clock", "real")), holidays),
            holidays=holidays,
            **kwargs,
        )

    def write_cache(sim: KiteSimulator) -> None:
        write_session_cache(sim, Path(context.data_dir))

    asyncio.run(
        serve_as_service(make_sim, context, write_cache if params.get("session_cache") else None)
    )
