"""Many Binance frames -> records in one pass (the feed's hot path).

Decoding frame by frame builds a small numpy array per message, and numpy's
per-call cost (microseconds) then dwarfs the work: a 40-level depth message
took ~190 us, a trade ~30 us, against 10 us and 2 us for ``orjson.loads``.
Here each frame is only parsed (``orjson.loads``) and its fields appended to
Python lists; then every decimal of the batch is converted by one
:func:`pipeline.fixedpoint.parse_many` call and the records of the whole
batch are filled column by column. The result is identical to
:meth:`Decoder.decode` frame by frame (a property test checks it); message
types that are rare on the wire (kline, markPrice, replies) and anything
malformed go through :meth:`Decoder.decode` itself.

Where the optional C speedup (``_scan.c``, built at install when a compiler
is found) is present, each frame goes to it first: it writes the records of
depthUpdate, trade, aggTrade and bookTicker events straight into the batch's
array, and declines anything it is not sure of, which then takes the road
below frame by frame. The pure-Python road is the reference: tests check
that both give exactly what :meth:`Decoder.decode` gives.

Without the speedup, depth messages (bytes) take a faster road still: their price levels never
become Python objects. The header (everything before ``"b"``) is parsed by
``orjson``; the level arrays are checked with a C-speed byte operation (the
skeleton left after deleting the digits must be exactly ``[".","."]``
repeated), so the level bytes of a batch joined by commas hold only digits,
one point per value, and commas. One numpy pass finds each value's integer
and decimal digit counts; with the points removed numpy's C integer reader
parses them all, and each is scaled by ``10**(8 - decimals)``. Values with
more than 8 decimals or 10 integer digits (or none) send the batch's levels
to the exact parser. Anything else - odd spacing, other key orders, text
frames - takes the path above.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from connector.binance.wire import MS, Decoded, DecodeError, Decoder
from pipeline import fixedpoint as fp
from pipeline import record as rec
from pipeline.record import Flag, Kind, Records, Side

try:
    from connector.binance import _scan
except ImportError:  # built without a C compiler: the pure-Python roads below
    _scan = None  # type: ignore[assignment]
if _scan is not None and (
    _scan.RECORD_SIZE != rec.RECORD_SIZE
    or dict(_scan.LAYOUT) != {k: v[1] for k, v in (rec.RECORD_DTYPE.fields or {}).items()}
):
    raise RuntimeError("connector.binance._scan was built for another record layout: reinstall")
SPEEDUP: bool = _scan is not None
"""Whether the C speedup is built (``connector-pipeline bench decode`` says so too)."""

_I64 = 1 << 63
_DIGITS = b"0123456789"
_MID = b'],"a":['
_LEVEL = b'[".","."]'
_DEPTH_HEAD = re.compile(
    rb'(\{"stream":"[ !#-\[\]-~]*","data":)?\{"e":"depthUpdate","E":(0|[1-9][0-9]{0,15}),'
    rb'(?:"T":(0|[1-9][0-9]{0,15}),)?"s":"([A-Z0-9_]{1,40})",'
    rb'"U":(0|[1-9][0-9]{0,17}),"u":(0|[1-9][0-9]{0,17}),(?:"pu":(-?(?:0|[1-9][0-9]{0,17})),)?"b":\['
)
"""A depthUpdate header in Binance's key order, up to the bid array: printable ASCII
without escapes in the stream name, JSON integers (no leading zeros) of at most 18
digits (so in int64). Anything else takes the orjson road."""
_SKELETONS: dict[tuple[int, int], bytes] = {}
"""(position of ``_MID``, length) of a digit-free level body -> the only valid body."""
_INT_DIGITS = 10
"""Integer digits a value may have on the fast road: 10 + 8 decimals fit int64 at scale 1e8."""
_POW10 = np.array([10**e for e in range(9)], dtype=np.int64)
_COMMA, _POINT = 44, 46
_MAX_MS = _I64 // MS
_LIST = {list}
_TWO = {2}


@dataclass
class Batch:
    """The decoded batch: all records in frame order, and where each frame's are."""

    records: Records
    events: list[tuple[str, str, int, int]]
    """(event type, symbol, start, end) per decoded frame, in frame order."""
    errors: list[tuple[int, DecodeError]] = field(default_factory=list)
    """(frame index, error) for frames that could not be decoded."""

    def event_records(self, i: int) -> Records:
        _event, _symbol, start, end = self.events[i]
        return self.records[start:end]


def _is_int(v: Any) -> bool:
    return type(v) is int and -_I64 <= v < _I64


def _is_ms(v: Any) -> bool:
    return type(v) is int and 0 <= v < _MAX_MS


def _skeleton(mid: int, length: int) -> bytes:
    """The digit-free level body with ``mid`` bid levels' worth of prefix (cached)."""
    bids, asks = (mid + 1) // 10, (length - mid - 6) // 10
    expected = b",".join([_LEVEL] * bids) + _MID + b",".join([_LEVEL] * asks)
    if len(_SKELETONS) < 65536:  # bounded: level counts are few in practice
        _SKELETONS[(mid, length)] = expected
    return expected


class _Depth:
    __slots__ = (
        "a",
        "b",
        "e",
        "first",
        "inst",
        "last",
        "n_bid",
        "prev",
        "raw",
        "raw_parts",
        "recv",
        "start",
        "t",
    )

    def __init__(self) -> None:
        self.start: list[int] = []
        self.inst: list[int] = []
        self.e: list[int] = []
        self.first: list[int] = []
        self.last: list[int] = []
        self.prev: list[int] = []
        self.t: list[int] = []
        self.recv: list[int] = []
        self.n_bid: list[int] = []
        self.b: list[int] = []  # level counts (bids + asks) per message
        self.a: list[str] = []  # the decimals of messages parsed by orjson, flattened
        self.raw: list[bool] = []  # per message: levels read by the raw-bytes road
        self.raw_parts: list[bytes] = []  # their level values as JSON numbers, comma-separated


class _Trades:
    __slots__ = (
        "aux",
        "aux2",
        "e",
        "extra",
        "extra_px",
        "extra_qty",
        "inst",
        "recv",
        "side",
        "start",
        "strings",
    )

    def __init__(self) -> None:
        self.start: list[int] = []
        self.inst: list[int] = []
        self.e: list[int] = []  # ts_exch (T)
        self.recv: list[int] = []
        self.side: list[int] = []
        self.aux: list[int] = []
        self.aux2: list[int] = []  # E as ns
        self.strings: list[str] = []  # p, q
        self.extra: list[int] = []  # start of the EXTRA record, -1 if none
        self.extra_px: list[int] = []
        self.extra_qty: list[int] = []


class _Tickers:
    __slots__ = ("aux", "aux2", "e", "inst", "recv", "start", "strings")

    def __init__(self) -> None:
        self.start: list[int] = []
        self.inst: list[int] = []
        self.e: list[int] = []
        self.recv: list[int] = []
        self.aux: list[int] = []
        self.aux2: list[int] = []
        self.strings: list[str] = []  # b, B, a, A


def _depth_head(d: dict[str, Any], symbols: dict[str, int]) -> tuple[int, ...] | None:
    """(inst, E ns, U, u, pu, T ns) of a depthUpdate, or None if anything is off."""
    get: Callable[..., Any] = d.get  # JSON values: Any, validated below
    inst = symbols.get(get("s"))
    first, last, e = get("U"), get("u"), get("E")
    prev = get("pu", -1)
    t = get("T", 0)
    if inst is None or not (
        _is_int(first) and _is_int(last) and _is_ms(e) and _is_int(prev) and _is_ms(t)
    ):
        return None
    return inst, e * MS, first, last, prev, t * MS


def _add_depth(
    acc: _Depth, head: tuple[int, ...], start: int, recv: int, n_bid: int, n_ask: int
) -> None:
    inst, e, first, last, prev, t = head
    acc.start.append(start)
    acc.inst.append(inst)
    acc.e.append(e)
    acc.first.append(first)
    acc.last.append(last)
    acc.prev.append(prev)
    acc.t.append(t)
    acc.recv.append(recv)
    acc.n_bid.append(n_bid)
    acc.b.append(n_bid + n_ask)


class BatchDecoder:
    """Batch decoding over a :class:`Decoder` (which owns the symbol map).

    ``speedup``: use the C scanner (default: when it is built); False forces
    the pure-Python road.
    """

    def __init__(self, decoder: Decoder, speedup: bool | None = None) -> None:
        self.decoder = decoder
        if speedup and _scan is None:
            raise RuntimeError("the C speedup connector.binance._scan is not built")
        self.speedup = SPEEDUP if speedup is None else speedup
        self._scratch = rec.empty(4096)

    def decode(self, frames: Sequence[bytes | str], recv_ns: Sequence[int] | int) -> Batch:
        """Records of every frame in frame order, the events, and the frames that failed."""
        if self.speedup:
            return self._decode_scanned(frames, recv_ns)
        return self._decode_python(frames, recv_ns)

    def _decode_scanned(self, frames: Sequence[bytes | str], recv_ns: Sequence[int] | int) -> Batch:
        """The C scanner per frame; what it declines, :meth:`Decoder.decode`."""
        out = self._scratch
        scan, symbols, decode = _scan.scan, self.decoder.symbols, self.decoder.decode
        events: list[tuple[str, str, int, int]] = []
        errors: list[tuple[int, DecodeError]] = []
        total = 0
        one_time = isinstance(recv_ns, int)
        for i, frame in enumerate(frames):
            recv: int = recv_ns if one_time else recv_ns[i]  # type: ignore[assignment,index]
            if type(frame) is bytes:
                done = scan(frame, out, total, symbols, recv)
                if type(done) is int:  # no room
                    out = self._grow(total, done)
                    done = scan(frame, out, total, symbols, recv)
                if done is not None:
                    event, symbol, n = done  # type: ignore[misc]
                    events.append((event, symbol, total, total + n))
                    total += n
                    continue
            try:
                decoded = decode(frame, recv)
            except DecodeError as exc:
                errors.append((i, exc))
                continue
            n = len(decoded.records)
            if total + n > len(out):
                out = self._grow(total, n)
            out[total : total + n].view(rec.V64)[:] = decoded.records.view(rec.V64)
            events.append((decoded.event, decoded.symbol, total, total + n))
            total += n
        # The scratch array is reused (warm pages, no allocation per batch): the
        # batch gets its own copy, through the opaque V64 view (numpy copies
        # structured records field by field, 20x slower).
        records: Records = out[:total].view(rec.V64).copy().view(rec.RECORD_DTYPE)
        return Batch(records, events, errors)

    def _grow(self, used: int, needed: int) -> Records:
        """A larger scratch array holding the first ``used`` records."""
        grown = rec.empty(max(2 * len(self._scratch), used + needed))
        grown[:used].view(rec.V64)[:] = self._scratch[:used].view(rec.V64)
        self._scratch = grown
        return grown

    def _decode_python(self, frames: Sequence[bytes | str], recv_ns: Sequence[int] | int) -> Batch:
        symbols = self.decoder.symbols
        depth, trades, tickers = _Depth(), _Trades(), _Tickers()
        slow: list[tuple[int, Decoded]] = []  # (start, decoded) of frames decoded one by one
        events: list[tuple[str, str, int, int]] = []
        errors: list[tuple[int, DecodeError]] = []
        total = 0
        for i, frame in enumerate(frames):
            recv = recv_ns if isinstance(recv_ns, int) else recv_ns[i]
            try:
                if type(frame) is bytes and (
                    n := self._depth_raw(frame, recv, total, depth, symbols, events)
                ):
                    total += n
                    continue
                msg = orjson.loads(frame)
                data = (
                    msg["data"] if type(msg) is dict and "data" in msg and "stream" in msg else msg
                )
                e = data.get("e") if type(data) is dict else None
                n = 0
                if e == "depthUpdate":
                    n = self._depth(data, recv, total, depth, symbols)
                elif e == "trade" or e == "aggTrade":
                    n = self._trade(data, recv, total, trades, symbols, e == "aggTrade")
                elif (
                    e is None and type(data) is dict and "u" in data and "A" in data and "b" in data
                ):
                    n = self._ticker(data, recv, total, tickers, symbols)
                if n:
                    events.append(("bookTicker" if e is None else e, data["s"], total, total + n))
                    total += n
                    continue
                decoded = self.decoder.decode(frame, recv)
            except DecodeError as exc:
                errors.append((i, exc))
                continue
            except (orjson.JSONDecodeError, TypeError, ValueError, KeyError, AttributeError):
                # Malformed in a way the fast path does not explain: let the
                # careful decoder name the problem.
                try:
                    decoded = self.decoder.decode(frame, recv)
                except DecodeError as exc:
                    errors.append((i, exc))
                    continue
            events.append((decoded.event, decoded.symbol, total, total + len(decoded.records)))
            slow.append((total, decoded))
            total += len(decoded.records)
        out = rec.empty(total)
        try:
            if depth.start:
                self._fill_depth(out, depth)
            if trades.start:
                self._fill_trades(out, trades)
            if tickers.start:
                self._fill_tickers(out, tickers)
        except DecodeError:
            # A bad decimal somewhere: find which frame, one by one (rare).
            return self._one_by_one(frames, recv_ns)
        for start, decoded in slow:
            out[start : start + len(decoded.records)] = decoded.records
        return Batch(out, events, errors)

    def _one_by_one(self, frames: Sequence[bytes | str], recv_ns: Sequence[int] | int) -> Batch:
        parts: list[Records] = []
        events: list[tuple[str, str, int, int]] = []
        errors: list[tuple[int, DecodeError]] = []
        total = 0
        for i, frame in enumerate(frames):
            try:
                decoded = self.decoder.decode(
                    frame, recv_ns if isinstance(recv_ns, int) else recv_ns[i]
                )
            except DecodeError as exc:
                errors.append((i, exc))
                continue
            events.append((decoded.event, decoded.symbol, total, total + len(decoded.records)))
            parts.append(decoded.records)
            total += len(decoded.records)
        return Batch(np.concatenate(parts) if parts else rec.empty(0), events, errors)

    # -- collecting (per frame: only Python appends; anything odd -> slow path) --

    @staticmethod
    def _depth(
        d: dict[str, Any], recv: int, start: int, acc: _Depth, symbols: dict[str, int]
    ) -> int:
        head = _depth_head(d, symbols)
        bids, asks = d.get("b"), d.get("a")
        if head is None or type(bids) is not list or type(asks) is not list:
            return 0
        # Every level must be a [px, qty] list: checked with C-speed set/map
        # (a per-level Python loop cost more than the rest of the message).
        for side in (bids, asks):
            if side and (set(map(type, side)) != _LIST or set(map(len, side)) != _TWO):
                return 0
        acc.a += chain.from_iterable(bids)
        acc.a += chain.from_iterable(asks)
        acc.raw.append(False)
        _add_depth(acc, head, start, recv, len(bids), len(asks))
        return 1 + len(bids) + len(asks)

    @staticmethod
    def _depth_raw(
        frame: bytes,
        recv: int,
        start: int,
        acc: _Depth,
        symbols: dict[str, int],
        events: list[tuple[str, str, int, int]],
    ) -> int:
        """A depth message whose levels are read without making Python objects, or 0."""
        m = _DEPTH_HEAD.match(frame)
        if m is not None:
            # Binance's own key order (most frames): the header without orjson.
            envelope, e_ms, t_ms, symbol, first, last, prev = m.groups()
            if not frame.endswith(b"]}}" if envelope else b"]}"):
                return 0
            body = frame[m.end() : -3 if envelope else -2]
            name = symbol.decode()
            inst = symbols.get(name)
            e, t = int(e_ms), int(t_ms) if t_ms else 0
            if inst is None or e >= _MAX_MS or t >= _MAX_MS:
                return 0
            head: tuple[int, ...] | None = (
                inst,
                e * MS,
                int(first),
                int(last),
                -1 if prev is None else int(prev),
                t * MS,
            )
        else:
            p = frame.find(b'"b":[')
            if p < 1 or frame[p - 1] != 44:  # the ',' before "b": a key, not text in a string
                return 0
            if frame.endswith(b"]}}"):
                head_text, body = frame[: p - 1] + b"}}", frame[p + 5 : -3]
            elif frame.endswith(b"]}"):
                head_text, body = frame[: p - 1] + b"}", frame[p + 5 : -2]
            else:
                return 0
            try:
                msg = orjson.loads(head_text)
            except orjson.JSONDecodeError:
                return 0
            data = msg["data"] if type(msg) is dict and "data" in msg and "stream" in msg else msg
            if type(data) is not dict or data.get("e") != "depthUpdate":
                return 0
            head = _depth_head(data, symbols)
            name = data.get("s")
        if head is None:
            return 0
        skeleton = body.translate(None, _DIGITS)
        mid, length = skeleton.find(_MID), len(skeleton)
        if mid < 0 or skeleton != (_SKELETONS.get((mid, length)) or _skeleton(mid, length)):
            return 0
        n_bid, n_ask = (mid + 1) // 10, (length - mid - 6) // 10
        if n_bid + n_ask:
            acc.raw_parts.append(body.translate(None, b'"[]a:').strip(b","))
        acc.raw.append(True)
        _add_depth(acc, head, start, recv, n_bid, n_ask)
        events.append(("depthUpdate", name, start, start + 1 + n_bid + n_ask))
        return 1 + n_bid + n_ask

    @staticmethod
    def _trade(
        d: dict[str, Any], recv: int, start: int, acc: _Trades, symbols: dict[str, int], agg: bool
    ) -> int:
        get: Callable[..., Any] = d.get  # JSON values: Any, validated below
        inst = symbols.get(get("s"))
        ident = get("a" if agg else "t")
        maker, t, e = get("m"), get("T"), get("E")
        p, q = get("p"), get("q")
        if (
            inst is None
            or type(maker) is not bool
            or not (_is_int(ident) and _is_ms(t) and _is_ms(e))
            or type(p) is not str
            or type(q) is not str
        ):
            return 0
        extra_keys = ("f", "l") if agg else ("b", "a")
        has_extra = agg or ("b" in d and "a" in d)
        if has_extra:
            x_px, x_qty = get(extra_keys[0]), get(extra_keys[1])
            if not (_is_int(x_px) and _is_int(x_qty)):
                return 0
        acc.start.append(start)
        acc.inst.append(inst)
        acc.e.append(t * MS)
        acc.recv.append(recv)
        acc.side.append(Side.SELL if maker else Side.BUY)
        acc.aux.append(ident)
        acc.aux2.append(e * MS)
        acc.strings += (p, q)
        if has_extra:
            acc.extra.append(start + 1)
            acc.extra_px.append(x_px)
            acc.extra_qty.append(x_qty)
            return 2
        return 1

    @staticmethod
    def _ticker(
        d: dict[str, Any], recv: int, start: int, acc: _Tickers, symbols: dict[str, int]
    ) -> int:
        get: Callable[..., Any] = d.get  # JSON values: Any, validated below
        inst = symbols.get(get("s"))
        u = get("u")
        e, t = get("E", 0), get("T", 0)
        strings = (get("b"), get("B"), get("a"), get("A"))
        if (
            inst is None
            or not (_is_int(u) and _is_ms(e) and _is_ms(t))
            or not all(type(s) is str for s in strings)
        ):
            return 0
        acc.start.append(start)
        acc.inst.append(inst)
        acc.e.append(e * MS)
        acc.recv.append(recv)
        acc.aux.append(u)
        acc.aux2.append(t * MS)
        acc.strings += strings
        return 2

    # -- filling (per batch: a few numpy calls per column) ---------------------

    @staticmethod
    def _values(strings: list[str], what: str) -> npt.NDArray[np.int64]:
        try:
            return fp.parse_many(strings)
        except ValueError as exc:
            raise DecodeError(f"{what}: {exc}") from None

    @staticmethod
    def _raw_values(parts: list[bytes], count: int) -> npt.NDArray[np.int64]:
        text = b",".join(parts)
        chars = np.frombuffer(text, dtype=np.uint8)
        ends = np.append(np.flatnonzero(chars == _COMMA), len(chars))
        points = np.flatnonzero(chars == _POINT)  # the skeleton left exactly one per value
        if len(points) != len(ends) or len(ends) != count:
            raise DecodeError("depthUpdate: level count mismatch on the raw-bytes road")
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        decimals, digits = ends - points - 1, points - starts
        if (
            decimals.min() < 1
            or decimals.max() > fp.DECIMALS
            or digits.min() < 1
            or digits.max() > _INT_DIGITS
        ):
            # Not plain or too long for int64 at scale 1e8 (rare): the exact
            # parser, value by value; its error names the bad value.
            words = [text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
            try:
                return fp.parse_many(words)
            except ValueError as exc:
                raise DecodeError(f"depthUpdate: {exc}") from None
        # Digits only now (the points dropped): numpy's C integer reader, then
        # each value scaled by 10**(8 - its decimals). At most 10 + 8 digits: no overflow.
        ints = np.fromstring(text.replace(b".", b""), dtype=np.int64, sep=",")
        if len(ints) != count:
            raise DecodeError("depthUpdate: level count mismatch on the raw-bytes road")
        scaled: npt.NDArray[np.int64] = ints * _POW10[fp.DECIMALS - decimals]
        return scaled

    def _fill_depth(self, out: Records, acc: _Depth) -> None:
        counts = np.array(acc.b, dtype=np.int64)
        raw = np.array(acc.raw, dtype=bool)
        if raw.all():
            values = self._raw_values(acc.raw_parts, 2 * int(counts.sum()))
        elif not raw.any():
            values = self._values(acc.a, "depthUpdate")
        else:
            on_raw = np.repeat(raw, 2 * counts)
            values = np.empty(len(on_raw), dtype=np.int64)
            values[on_raw] = self._raw_values(acc.raw_parts, int(on_raw.sum()))
            values[~on_raw] = self._values(acc.a, "depthUpdate")
        start = np.array(acc.start, dtype=np.int64)
        out["kind"][start] = Kind.BOOK_UPDATE
        out["px"][start] = acc.first
        out["qty"][start] = acc.last
        out["aux"][start] = acc.prev
        out["aux2"][start] = acc.t
        out["inst"][start] = acc.inst
        out["ts_exch"][start] = acc.e
        out["ts_recv"][start] = acc.recv
        last = start + counts  # the last record of each message
        n = int(counts.sum())
        if n:
            # Level j of message k sits at start[k] + 1 + j. Columns are filled
            # one by one: fancy indexing a structured array copies whole records.
            local = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
            pos = np.repeat(start + 1, counts) + local
            is_bid = local < np.repeat(np.array(acc.n_bid, dtype=np.int64), counts)
            out["kind"][pos] = Kind.BOOK_LEVEL
            out["side"][pos] = np.where(is_bid, Side.BID, Side.ASK)
            out["px"][pos] = values[0::2]
            out["qty"][pos] = values[1::2]
            out["aux2"][pos] = -1
            out["inst"][pos] = np.repeat(np.array(acc.inst, dtype=np.uint32), counts)
            out["ts_exch"][pos] = np.repeat(np.array(acc.e, dtype=np.int64), counts)
            out["ts_recv"][pos] = np.repeat(np.array(acc.recv, dtype=np.int64), counts)
        out["flags"][last] = Flag.LAST

    def _fill_trades(self, out: Records, acc: _Trades) -> None:
        values = self._values(acc.strings, "trade")
        start = np.array(acc.start, dtype=np.int64)
        t = out[start]
        t["kind"] = Kind.TRADE
        t["inst"] = acc.inst
        t["ts_exch"] = acc.e
        t["ts_recv"] = acc.recv
        t["side"] = acc.side
        t["px"] = values[0::2]
        t["qty"] = values[1::2]
        t["aux"] = acc.aux
        t["aux2"] = acc.aux2
        out[start] = t
        if acc.extra:
            extra = np.array(acc.extra, dtype=np.int64)
            owner = np.searchsorted(start, extra) - 1  # the trade each EXTRA follows
            x = out[extra]
            x["kind"] = Kind.EXTRA
            x["px"] = acc.extra_px
            x["qty"] = acc.extra_qty
            x["inst"] = np.array(acc.inst)[owner]
            x["ts_exch"] = np.array(acc.e)[owner]
            x["ts_recv"] = np.array(acc.recv)[owner]
            out[extra] = x
            has_extra = np.zeros(len(start), dtype=bool)
            has_extra[owner] = True
            out["flags"][np.where(has_extra, start + 1, start)] = Flag.LAST
        else:
            out["flags"][start] = Flag.LAST

    def _fill_tickers(self, out: Records, acc: _Tickers) -> None:
        values = self._values(acc.strings, "bookTicker")
        start = np.array(acc.start, dtype=np.int64)
        pos = np.repeat(start, 2) + np.tile(np.array([0, 1]), len(start))
        r = out[pos]
        r["kind"] = Kind.BBO
        r["side"] = np.tile(np.array([Side.BID, Side.ASK], dtype=np.uint8), len(start))
        r["px"] = values[
            np.tile(np.array([0, 2]), len(start)) + np.repeat(np.arange(len(start)) * 4, 2)
        ]
        r["qty"] = values[
            np.tile(np.array([1, 3]), len(start)) + np.repeat(np.arange(len(start)) * 4, 2)
        ]
        r["inst"] = np.repeat(np.array(acc.inst, dtype=np.uint32), 2)
        r["ts_exch"] = np.repeat(np.array(acc.e, dtype=np.int64), 2)
        r["ts_recv"] = np.repeat(np.array(acc.recv, dtype=np.int64), 2)
        r["aux"] = np.repeat(np.array(acc.aux, dtype=np.int64), 2)
        r["aux2"] = np.repeat(np.array(acc.aux2, dtype=np.int64), 2)
        out[pos] = r
        out["flags"][start + 1] = Flag.LAST
