"""Binance wire messages -> 64-byte records. Pure: bytes in, records out;
the receive time is an argument.

Field names follow Binance's own (``E``, ``U``, ``u``, ``pu``, ``lastUpdateId``)
so anyone can check them against the venue docs. Every field Binance sends
is kept (the record layout per message below); the one exception is the
field Binance documents as "Ignore" (``M`` of trades, ``B`` of klines).
Times are converted from ms to ns since the epoch; prices and quantities to
exact fixed point (1e8). ``src`` and ``seq`` are left 0 for the host.

Records per message:

``depthUpdate`` (spot, USD-M)
    BOOK_UPDATE (px=U, qty=u, aux=pu or -1, aux2=T ns or 0; ts_exch=E),
    then one BOOK_LEVEL per level (bids then asks; qty 0 deletes; aux=0
    orders unknown, aux2=-1). LAST on the last record.
REST depth snapshot (``lastUpdateId``)
    BOOK_CLEAR (aux=lastUpdateId, aux2=T ns or 0; ts_exch=E or 0), then the
    levels with SNAPSHOT. LAST on the last record.
``trade``
    TRADE (px=p, qty=q, side=aggressor: SELL when the buyer is the maker
    ``m``, else BUY; aux=t, aux2=E ns; ts_exch=T); plus EXTRA (px=b buyer
    order id, qty=a seller order id) when the event carries them.
``aggTrade``
    TRADE (px=p, qty=q, side as above, aux=a, aux2=E ns; ts_exch=T), then
    EXTRA (px=f first trade id, qty=l last trade id).
``bookTicker``
    BBO for the bid (px=b, qty=B) then the ask (px=a, qty=A); aux=u,
    aux2=T ns or 0 (spot sends neither E nor T); ts_exch=E or 0.
``markPriceUpdate`` (USD-M)
    MARK (px=p mark, qty=i index, aux=r funding rate in fixed point,
    aux2=T next funding time ns; ts_exch=E), then EXTRA (px=P estimated
    settle price) when sent.
``<symbol>@depth5/10/20`` (spot partial depth)
    BOOK_CLEAR (aux=lastUpdateId) then the levels with aux2 = level index
    (0 = best), not flagged SNAPSHOT: each message is the whole top of book.
    (USD-M partial depth arrives as depthUpdate events that are not diffs:
    do not subscribe to it through this decoder.)
``kline``
    OHLC x4 (aux2 = OhlcField): OPEN (px=o, qty=v, aux=t open time ns),
    HIGH (px=h, qty=q quote volume, aux=T close time ns), LOW (px=l, qty=V
    taker buy volume, aux=n trades), CLOSE (px=c, qty=Q taker buy quote
    volume, aux=x closed 0/1); then EXTRA (px=f, qty=L first/last trade id,
    aux=interval in seconds, aux2=interval code: the index in INTERVALS).
    ts_exch=E.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from pipeline import fixedpoint as fp
from pipeline import record as rec
from pipeline.errors import DataError
from pipeline.record import Flag, Kind, OhlcField, Records, Side

MS: Final = 1_000_000
INTERVALS: Final = (
    "1s",
    "1m",
    "3m",
    "5m",
    "15m",
    "30m",
    "1h",
    "2h",
    "4h",
    "6h",
    "8h",
    "12h",
    "1d",
    "3d",
    "1w",
    "1M",
)
INTERVAL_SECONDS: Final = {
    "1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200, "1w": 604800,
    "1M": 2592000,
}  # fmt: skip
_BOOK_UPDATE, _BOOK_LEVEL, _BOOK_CLEAR = (
    int(Kind.BOOK_UPDATE),
    int(Kind.BOOK_LEVEL),
    int(Kind.BOOK_CLEAR),
)
_LAST, _SNAPSHOT = int(Flag.LAST), int(Flag.SNAPSHOT)


class DecodeError(DataError):
    """A frame that is not a Binance message we understand (counted, skipped)."""


@dataclass(frozen=True)
class Decoded:
    """One decoded message: its type, symbol and records."""

    event: str
    """depthUpdate, snapshot, trade, aggTrade, bookTicker, markPriceUpdate, kline, result."""
    symbol: str
    records: Records
    stream: str = ""


_I64 = 1 << 63


def _int(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"{what}: field {key!r} missing or not an integer ({value!r})")
    if not -_I64 <= value < _I64:
        raise DecodeError(f"{what}: field {key!r} does not fit 64 bits ({value})")
    return value


def _ms(obj: Mapping[str, Any], key: str, what: str) -> int:
    """A millisecond time field as ns since the epoch."""
    value = _int(obj, key, what)
    if not 0 <= value < _I64 // MS:
        raise DecodeError(f"{what}: field {key!r} is not a plausible time in ms ({value})")
    return value * MS


def _dec(obj: Mapping[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if not isinstance(value, str):
        raise DecodeError(f"{what}: field {key!r} missing or not a decimal string ({value!r})")
    try:
        return fp.parse(value)
    except ValueError as exc:
        raise DecodeError(f"{what}: field {key!r}: {exc}") from None


def _levels(obj: Mapping[str, Any], key: str, what: str) -> list[str]:
    """A side's [[px, qty], ...] flattened to [px, qty, px, qty, ...]."""
    levels = obj.get(key)
    if not isinstance(levels, list):
        raise DecodeError(f"{what}: field {key!r} missing or not a list")
    flat: list[str] = []
    for level in levels:
        if not (
            isinstance(level, list)
            and len(level) == 2
            and isinstance(level[0], str)
            and isinstance(level[1], str)
        ):
            raise DecodeError(f"{what}: bad level in {key!r}: {level!r}")
        flat += level
    return flat


class Decoder:
    """Decodes one market's frames. ``symbols`` maps the venue symbol
    (``BTCUSDT``) to the instrument id; other symbols are a DecodeError."""

    def __init__(
        self, symbols: Mapping[str, int], *, market: str = "spot", assign_from: int | None = None
    ) -> None:
        if market not in ("spot", "usdm"):
            raise ValueError(f"market must be 'spot' or 'usdm', got {market!r}")
        self.market = market
        self.symbols = {s.upper(): i for s, i in symbols.items()}
        self.assign_from = assign_from
        """If set, unknown symbols get the next free id from here (tools reading captures)."""

    def _inst(self, symbol: Any, what: str) -> int:
        if not isinstance(symbol, str):
            raise DecodeError(f"{what}: field 's' missing or not a string")
        inst = self.symbols.get(symbol)
        if inst is None:
            if self.assign_from is None or not symbol:
                raise DecodeError(f"{what}: symbol {symbol!r} is not subscribed")
            inst = self.symbols[symbol] = max([self.assign_from - 1, *self.symbols.values()]) + 1
        return inst

    # -- entry points --------------------------------------------------------

    def decode(self, frame: bytes | str, recv_ns: int) -> Decoded:
        """One WebSocket text frame (combined-stream envelope or bare event)."""
        try:
            msg = orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"not JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise DecodeError(f"not a JSON object: {type(msg).__name__}")
        stream = ""
        if "stream" in msg and "data" in msg:
            stream = msg["stream"] if isinstance(msg["stream"], str) else ""
            msg = msg["data"]
            if not isinstance(msg, dict):
                raise DecodeError(f"stream {stream!r}: data is not an object")
        return self.decode_event(msg, recv_ns, stream)

    def decode_event(self, msg: Mapping[str, Any], recv_ns: int, stream: str = "") -> Decoded:
        """An already-parsed event object."""
        event = msg.get("e")
        if event == "depthUpdate":
            return Decoded("depthUpdate", msg.get("s", ""), self._depth(msg, recv_ns), stream)
        if event == "trade":
            return Decoded("trade", msg.get("s", ""), self._trade(msg, recv_ns, agg=False), stream)
        if event == "aggTrade":
            return Decoded(
                "aggTrade", msg.get("s", ""), self._trade(msg, recv_ns, agg=True), stream
            )
        if event == "markPriceUpdate":
            return Decoded("markPriceUpdate", msg.get("s", ""), self._mark(msg, recv_ns), stream)
        if event == "kline":
            return Decoded("kline", msg.get("s", ""), self._kline(msg, recv_ns), stream)
        if event == "bookTicker" or (event is None and "u" in msg and "b" in msg and "A" in msg):
            # Spot bookTicker events have no "e".
            return Decoded("bookTicker", msg.get("s", ""), self._book_ticker(msg, recv_ns), stream)
        if event is None and "result" in msg and "id" in msg:
            return Decoded("result", "", rec.empty(0), stream)
        if event is None and "error" in msg and "id" in msg:
            # A refused SUBSCRIBE/UNSUBSCRIBE: not market data, the client reports it.
            return Decoded("error", "", rec.empty(0), stream)
        if event is None and "lastUpdateId" in msg and stream:
            # Spot partial book depth (<symbol>@depth5/10/20): a small snapshot per message.
            decoded = self.snapshot(msg, symbol_of_stream(stream), recv_ns)
            records = decoded.records
            records["flags"] = records["flags"] & ~_SNAPSHOT
            levels = records[1:]
            side_start = np.flatnonzero(levels["side"] == Side.ASK)
            first_ask = int(side_start[0]) if len(side_start) else len(levels)
            levels["aux2"][:first_ask] = np.arange(first_ask)
            levels["aux2"][first_ask:] = np.arange(len(levels) - first_ask)
            return Decoded("depthPartial", decoded.symbol, records, stream)
        raise DecodeError(
            f"unknown event type {event!r}" + (f" on stream {stream!r}" if stream else "")
        )

    def snapshot(self, body: bytes | str | Mapping[str, Any], symbol: str, recv_ns: int) -> Decoded:
        """A REST depth snapshot body (``lastUpdateId``, ``bids``, ``asks``)."""
        if isinstance(body, (bytes, str)):
            try:
                body = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise DecodeError(f"snapshot for {symbol}: not JSON: {exc}") from None
        if not isinstance(body, Mapping):
            raise DecodeError(f"snapshot for {symbol}: not a JSON object")
        what = f"snapshot for {symbol}"
        inst = self._inst(symbol.upper(), what)
        last_update_id = _int(body, "lastUpdateId", what)
        bids = _levels(body, "bids", what)
        asks = _levels(body, "asks", what)
        values = self._parse_levels(bids + asks, what)
        n = (len(bids) + len(asks)) // 2
        out = rec.empty(1 + n)
        out["inst"] = inst
        out["ts_recv"] = recv_ns
        out["ts_exch"] = _ms(body, "E", what) if "E" in body else 0
        out["kind"][0] = _BOOK_CLEAR
        out["aux"][0] = last_update_id
        out["aux2"][0] = _ms(body, "T", what) if "T" in body else 0
        self._fill_levels(out[1:], values, len(bids) // 2)
        out["flags"] = _SNAPSHOT
        out["flags"][-1] |= _LAST
        return Decoded("snapshot", symbol.upper(), out)

    # -- message types -------------------------------------------------------

    @staticmethod
    def _parse_levels(flat: list[str], what: str) -> np.ndarray:
        if not flat:
            return np.zeros(0, dtype=np.int64)
        try:
            return fp.parse_many(flat)
        except ValueError as exc:
            raise DecodeError(f"{what}: {exc}") from None

    @staticmethod
    def _fill_levels(out: Records, values: np.ndarray, n_bids: int) -> None:
        out["kind"] = _BOOK_LEVEL
        out["side"][:n_bids] = Side.BID
        out["side"][n_bids:] = Side.ASK
        out["px"] = values[0::2]
        out["qty"] = values[1::2]
        out["aux2"] = -1

    def _depth(self, msg: Mapping[str, Any], recv_ns: int) -> Records:
        what = "depthUpdate"
        inst = self._inst(msg.get("s"), what)
        first = _int(msg, "U", what)
        last = _int(msg, "u", what)
        event_ns = _ms(msg, "E", what)
        bids = _levels(msg, "b", what)
        asks = _levels(msg, "a", what)
        values = self._parse_levels(bids + asks, what)
        n = (len(bids) + len(asks)) // 2
        out = rec.empty(1 + n)
        out["inst"] = inst
        out["ts_recv"] = recv_ns
        out["ts_exch"] = event_ns
        head = out[0]
        head["kind"] = _BOOK_UPDATE
        head["px"] = first
        head["qty"] = last
        head["aux"] = _int(msg, "pu", what) if "pu" in msg else -1
        head["aux2"] = _ms(msg, "T", what) if "T" in msg else 0
        if n:
            self._fill_levels(out[1:], values, len(bids) // 2)
        out["flags"][-1] = _LAST
        return out

    def _trade(self, msg: Mapping[str, Any], recv_ns: int, *, agg: bool) -> Records:
        what = "aggTrade" if agg else "trade"
        inst = self._inst(msg.get("s"), what)
        maker = msg.get("m")
        if not isinstance(maker, bool):
            raise DecodeError(f"{what}: field 'm' missing or not a boolean")
        extra = agg or ("b" in msg and "a" in msg)
        out = rec.empty(2 if extra else 1)
        out["inst"] = inst
        out["ts_recv"] = recv_ns
        out["ts_exch"] = _ms(msg, "T", what)
        t = out[0]
        t["kind"] = Kind.TRADE
        t["side"] = Side.SELL if maker else Side.BUY
        t["px"] = _dec(msg, "p", what)
        t["qty"] = _dec(msg, "q", what)
        t["aux"] = _int(msg, "a" if agg else "t", what)
        t["aux2"] = _ms(msg, "E", what)
        if extra:
            x = out[1]
            x["kind"] = Kind.EXTRA
            x["px"] = _int(msg, "f" if agg else "b", what)
            x["qty"] = _int(msg, "l" if agg else "a", what)
        out["flags"][-1] = _LAST
        return out

    def _book_ticker(self, msg: Mapping[str, Any], recv_ns: int) -> Records:
        what = "bookTicker"
        inst = self._inst(msg.get("s"), what)
        out = rec.empty(2)
        out["inst"] = inst
        out["ts_recv"] = recv_ns
        out["ts_exch"] = _ms(msg, "E", what) if "E" in msg else 0
        out["kind"] = Kind.BBO
        out["side"] = (Side.BID, Side.ASK)
        out["px"] = (_dec(msg, "b", what), _dec(msg, "a", what))
        out["qty"] = (_dec(msg, "B", what), _dec(msg, "A", what))
        out["aux"] = _int(msg, "u", what)
        out["aux2"] = _ms(msg, "T", what) if "T" in msg else 0
        out["flags"][-1] = _LAST
        return out

    def _mark(self, msg: Mapping[str, Any], recv_ns: int) -> Records:
        what = "markPriceUpdate"
        inst = self._inst(msg.get("s"), what)
        settle = "P" in msg
        out = rec.empty(2 if settle else 1)
        out["inst"] = inst
        out["ts_recv"] = recv_ns
        out["ts_exch"] = _ms(msg, "E", what)
        m = out[0]
        m["kind"] = Kind.MARK
        m["px"] = _dec(msg, "p", what)
        m["qty"] = _dec(msg, "i", what) if "i" in msg else 0
        m["aux"] = _dec(msg, "r", what) if msg.get("r") not in (None, "") else 0
        m["aux2"] = _ms(msg, "T", what) if "T" in msg else 0
        if settle:
            out[1]["kind"] = Kind.EXTRA
            out[1]["px"] = _dec(msg, "P", what)
        out["flags"][-1] = _LAST
        return out

    def _kline(self, msg: Mapping[str, Any], recv_ns: int) -> Records:
        what = "kline"
        inst = self._inst(msg.get("s"), what)
        k = msg.get("k")
        if not isinstance(k, dict):
            raise DecodeError(f"{what}: field 'k' missing or not an object")
        interval = k.get("i")
        if not isinstance(interval, str) or interval not in INTERVAL_SECONDS:
            raise DecodeError(f"{what}: unknown interval {interval!r}")
        closed = k.get("x")
        if not isinstance(closed, bool):
            raise DecodeError(f"{what}: field 'x' missing or not a boolean")
        out = rec.empty(5)
        out["inst"] = inst
        out["ts_recv"] = recv_ns
        out["ts_exch"] = _ms(msg, "E", what)
        out["kind"][:4] = Kind.OHLC
        out["aux2"][:4] = (OhlcField.OPEN, OhlcField.HIGH, OhlcField.LOW, OhlcField.CLOSE)
        out["px"][:4] = [_dec(k, f, what) for f in ("o", "h", "l", "c")]
        out["qty"][:4] = [_dec(k, f, what) for f in ("v", "q", "V", "Q")]
        out["aux"][:4] = (
            _ms(k, "t", what),
            _ms(k, "T", what),
            _int(k, "n", what),
            int(closed),
        )
        x = out[4]
        x["kind"] = Kind.EXTRA
        x["px"] = _int(k, "f", what)
        x["qty"] = _int(k, "L", what)
        x["aux"] = INTERVAL_SECONDS[interval]
        x["aux2"] = INTERVALS.index(interval)
        out["flags"][-1] = _LAST
        return out


def symbol_of_stream(stream: str) -> str:
    """``btcusdt@depth@100ms`` -> ``BTCUSDT``."""
    return stream.partition("@")[0].upper()
