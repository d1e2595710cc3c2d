"""Kite Connect binary ticker frames -> 64-byte records. Pure: bytes in,
records out; the receive time is an argument.

Wire format (PROTOCOLS.md, checked against pykiteconnect ``_split_packets`` /
``_parse_binary``): a binary WebSocket message of fewer than 2 bytes is a
heartbeat. Otherwise, big-endian: uint16 number of packets, then per packet a
uint16 length and the packet. The first int32 of every packet is the
``instrument_token``; ``segment = instrument_token & 0xFF`` selects the price
divisor (:func:`packet_divisor`): 10**7 for CDS (3), 10**4 for BCD (6), else
100 (paise). Field names below are the official client's tick-dict keys.

Numbers. Prices are signed int32 on the wire (the official client reads them
unsigned, which would turn a negative price into ~42.9 million; we keep the
sign) and become fixed point exactly: ``raw * (10**8 // divisor)`` (the
divisors all divide 10**8, so no rounding ever happens). Quantities, volumes
and OI are unsigned int32 integer units, times 10**8. Times are unsigned int32
epoch seconds, times 10**9 (ns). Every record: ``ts_recv`` = the frame's
receive time, ``src`` = 0 and ``seq`` = 0 (the ingest host stamps both),
``inst`` = the dense id of the token (or the token itself, see
:class:`TickerDecoder`). The last record of each packet carries ``Flag.LAST``.

Records per packet length (``ts_exch`` = 0 unless stated):

8 bytes, LTP (mode ``ltp``)
    TICK (px = last_price).
44 bytes, quote (mode ``quote``)
    TICK (px = last_price, qty = last_traded_quantity, aux = volume_traded,
    aux2 = 0); STATS (px = average_traded_price, qty = total_buy_quantity,
    aux = total_sell_quantity); OHLC x4 in the order OPEN, HIGH, LOW, CLOSE
    (aux2 = :class:`~pipeline.record.OhlcField`, px = the price; CLOSE's
    qty = volume_traded again, as record.py asks; aux = 0: Kite gives no bar
    open time). Kite's ``close`` is the previous session's close.
184 bytes, full (mode ``full``)
    The 6 quote records with TICK.aux2 = last_trade_time (ns); then OI
    (qty = oi, aux = oi_day_high, aux2 = oi_day_low); then the 5+5 depth as
    a fixed-depth snapshot: BOOK_CLEAR (both sides, Flag.SNAPSHOT), then 10
    BOOK_LEVEL with Flag.SNAPSHOT: 5 bids (side BID) then 5 asks (side ASK),
    best first, px = price, qty = quantity, aux = orders, aux2 = level index
    0..4 within the side. ``ts_exch`` = exchange_timestamp (ns) on all 18
    records. The 2 padding bytes after each depth entry's orders are dropped.
    Empty depth entries (Kite sends quantity 0, price 0 for missing levels)
    are emitted like any other level: a qty-0 BOOK_LEVEL deletes a level
    that, right after the BOOK_CLEAR, does not exist, so the book builder
    ignores it, and all 10 entries stay recoverable (also their ``orders``).
164 bytes, older full layout (mode ``full``)
    The 6 quote records, then BOOK_CLEAR + 10 BOOK_LEVEL as above (17
    records; no last trade time, no OI record, ``ts_exch`` = 0). The official
    Python client silently drops these packets.
28 bytes, index quote (mode ``quote``, segment INDICES)
    TICK (px = last_price); OHLC x4 (OPEN, HIGH, LOW, CLOSE records, from the
    wire's high, low, open, close order); EXTRA (px = the packet's own
    ``change`` field scaled like a price, aux = that int32 raw, aux2 = 28, the
    packet length: it tells 28 from 32 even when the timestamp is 0). The
    official client ignores the wire ``change`` and computes a percentage.
32 bytes, index full (mode ``full``)
    As 28, EXTRA.aux2 = 32, ``ts_exch`` = exchange_timestamp (ns) on all 6.
Any other length
    Skipped by its length, counted in ``counters["unknown_length"]``.

The mode follows from the record kinds of a packet (a lone TICK; TICK+STATS;
OI; BOOK_CLEAR; EXTRA with aux2 28/32), so :func:`ticks` rebuilds every tick
from the records alone: that is how this module proves nothing is lost.

Speed: a frame usually holds many packets of one length. The fast path
checks all length fields with one strided numpy view and reads the packets
in place through strided big-endian word views (no copy); the layouts are
tables (below), so a group of packets becomes records in about a dozen
whole-array numpy steps whatever its size. Mixed frames walk the packet
boundaries in Python once (the only per-packet Python loop), copy each
length's packets together, decode each group as above and scatter the
records back into packet order. The fixed cost per frame is a few tens of
microseconds, so the official client's per-field ``struct`` loop is faster
on frames of one or two packets; from about three packets up this wins, by
~50x at 200 full packets (see connector/zerodha/bench.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from pipeline.errors import DataError
from pipeline.record import RECORD_DTYPE, Flag, Kind, OhlcField, Records, Side

SCALE: Final = 10**8
NS_PER_S: Final = 10**9

EXCHANGE_MAP: Final = {
    "nse": 1,
    "nfo": 2,
    "cds": 3,
    "bse": 4,
    "bfo": 5,
    "bcd": 6,
    "mcx": 7,
    "mcxsx": 8,
    "indices": 9,
}
"""Segment codes (``instrument_token & 0xFF``), as in the official clients."""
SEGMENT_CDS: Final = EXCHANGE_MAP["cds"]
SEGMENT_BCD: Final = EXCHANGE_MAP["bcd"]
SEGMENT_INDICES: Final = EXCHANGE_MAP["indices"]
DIVISOR_CDS: Final = 10**7
DIVISOR_BCD: Final = 10**4
DIVISOR_DEFAULT: Final = 100

IST: Final = timezone(timedelta(hours=5, minutes=30), "IST")
"""India Standard Time (no daylight saving, so a fixed offset is exact)."""

PACKET_LENGTHS: Final = (8, 28, 32, 44, 164, 184)
MODE_LTP: Final = "ltp"
MODE_QUOTE: Final = "quote"
MODE_FULL: Final = "full"


class KiteFrameError(DataError):
    """A truncated or malformed binary frame (or a text frame that is not the
    ticker's JSON); the message names the byte offset and the lengths."""

    def __init__(self, message: str, offset: int = 0, frame_len: int = 0) -> None:
        super().__init__(message)
        self.offset = offset
        self.frame_len = frame_len


def packet_divisor(instrument_token: int) -> int:
    """The price divisor of a token's segment: 10**7 (CDS), 10**4 (BCD), else 100."""
    segment = instrument_token & 0xFF
    if segment == SEGMENT_CDS:
        return DIVISOR_CDS
    if segment == SEGMENT_BCD:
        return DIVISOR_BCD
    return DIVISOR_DEFAULT


# --- wire schemas (big-endian, packed; names are the official tick keys) -----

_QUOTE_FIELDS: Final = [
    ("instrument_token", ">u4"),
    ("last_price", ">i4"),
    ("last_traded_quantity", ">u4"),
    ("average_traded_price", ">i4"),
    ("volume_traded", ">u4"),
    ("total_buy_quantity", ">u4"),
    ("total_sell_quantity", ">u4"),
    ("open", ">i4"),
    ("high", ">i4"),
    ("low", ">i4"),
    ("close", ">i4"),
]
DEPTH_DTYPE: Final = np.dtype(
    [("quantity", ">u4"), ("price", ">i4"), ("orders", ">u2"), ("padding", "V2")]
)
LTP_DTYPE: Final = np.dtype([("instrument_token", ">u4"), ("last_price", ">i4")])
INDEX_QUOTE_DTYPE: Final = np.dtype(
    [
        ("instrument_token", ">u4"),
        ("last_price", ">i4"),
        ("high", ">i4"),
        ("low", ">i4"),
        ("open", ">i4"),
        ("close", ">i4"),
        ("change", ">i4"),
    ]
)
INDEX_FULL_DTYPE: Final = np.dtype([*INDEX_QUOTE_DTYPE.descr, ("exchange_timestamp", ">u4")])
QUOTE_DTYPE: Final = np.dtype(_QUOTE_FIELDS)
FULL_DTYPE: Final = np.dtype(
    [
        *_QUOTE_FIELDS,
        ("last_trade_time", ">u4"),
        ("oi", ">u4"),
        ("oi_day_high", ">u4"),
        ("oi_day_low", ">u4"),
        ("exchange_timestamp", ">u4"),
        ("depth", DEPTH_DTYPE, (10,)),
    ]
)
OLD_FULL_DTYPE: Final = np.dtype([*_QUOTE_FIELDS, ("depth", DEPTH_DTYPE, (10,))])

# --- the layouts as data: wire words -> columns -> record words -------------------
#
# Every packet is a run of 4-byte big-endian words (a depth entry is three:
# quantity, price, orders + 2 padding bytes). Decoding a group of n packets of
# one length is a handful of whole-array steps, whatever the layout:
#   1. gather the words into an (n, columns) int64 matrix (a wire word may
#      feed two columns, e.g. the index ``change`` as a price and raw),
#   2. read prices (and other signed fields) as int32, the rest as uint32,
#      and take the orders' high 16 bits,
#   3. scale (qty x 10**8, times x 10**9, prices x 10**8 // divisor per packet),
#   4. append a zero column, the receive time, the constant words (aux2
#      codes) and one header word per record type (inst + kind/side/flags),
#   5. gather the matrix into the (n, records x 8) words of the records:
#      one np.take, whose result is the records' memory.

_PRICE, _QTY_U, _TIME, _UNSIGNED, _SIGNED, _ORDERS = range(6)
_PRICE_FIELDS: Final = frozenset(
    {"last_price", "average_traded_price", "open", "high", "low", "close", "change", "price"}
)
_TIME_FIELDS: Final = frozenset({"last_trade_time", "exchange_timestamp"})
_WORD_TS_EXCH, _WORD_TS_RECV, _WORD_HDR = 1, 2, 3
_RECORD_WORD: Final = {"px": 4, "qty": 5, "aux": 6, "aux2": 7}

I64 = npt.NDArray[np.int64]
IntP = npt.NDArray[np.intp]


def _wire_words(dtype: np.dtype[np.void]) -> list[tuple[str, int]]:
    """(column name, conversion) for each 4-byte word of a packet dtype."""
    words: list[tuple[str, int]] = []
    assert dtype.names is not None
    for name in dtype.names:
        sub = dtype.fields[name][0] if dtype.fields else None
        if sub is not None and sub.subdtype is not None:  # the depth array
            for i in range(sub.shape[0]):
                side, level = ("bid", i) if i < 5 else ("ask", i - 5)
                words += [
                    (f"{side}{level}_quantity", _QTY_U),
                    (f"{side}{level}_price", _PRICE),
                    (f"{side}{level}_orders", _ORDERS),
                ]
        elif name == "instrument_token":
            words.append((name, _UNSIGNED))
        elif name in _PRICE_FIELDS:
            words.append((name, _PRICE))
        elif name in _TIME_FIELDS:
            words.append((name, _TIME))
        else:
            words.append((name, _QTY_U))
    return words


@dataclass(frozen=True)
class _Row:
    """One record of a packet: constants and the column feeding each word."""

    kind: Kind
    side: Side = Side.NONE
    flags: int = 0
    px: str = ""
    qty: str = ""
    aux: str = ""
    aux2: str | int = 0


class _Layout:
    """How one packet length becomes records (built once, at import)."""

    def __init__(
        self,
        dtype: np.dtype[np.void],
        rows: list[_Row],
        ts_exch: str = "",
        extra_columns: tuple[tuple[str, str, int], ...] = (),
    ) -> None:
        self.length = dtype.itemsize
        self.dtype = dtype
        wire = _wire_words(dtype)
        names = [name for name, _ in wire]
        columns = [(name, i, conv) for i, (name, conv) in enumerate(wire)]
        # (new column, the wire field it reads, conversion)
        columns += [(new, names.index(of), conv) for new, of, conv in extra_columns]
        col = {name: j for j, (name, _, _) in enumerate(columns)}
        self.n_columns = n = len(columns)
        self.zero, self.recv = n, n + 1
        self.col_words: IntP = np.array([w for _, w, _ in columns], dtype=np.intp)
        convs = [c for _, _, c in columns]
        self.orders: IntP = np.array(
            [j for j, c in enumerate(convs) if c == _ORDERS], dtype=np.intp
        )
        self.prices: IntP = np.array([j for j, c in enumerate(convs) if c == _PRICE], dtype=np.intp)
        self.scale: I64 = np.array(
            [{_QTY_U: SCALE, _TIME: NS_PER_S}.get(c, 1) for c in convs], dtype=np.int64
        )
        self.price_words: IntP = self.col_words[self.prices]
        self.raw_signed: IntP = np.array(
            [j for j, c in enumerate(convs) if c == _SIGNED], dtype=np.intp
        )
        self.raw_signed_words: IntP = self.col_words[self.raw_signed]
        self.plain = len(columns) == len(wire)
        self.n_records = len(rows)
        # Columns after the data: zero, receive time, then one per distinct
        # constant word (aux2 codes) and one per distinct header (inst plus
        # kind/side/flags bits), so one gather builds every record word.
        consts: dict[int, int] = {}
        headers: dict[int, int] = {}
        src = np.full((len(rows), 8), self.zero, dtype=np.intp)
        for j, row in enumerate(rows):
            flags = row.flags | (Flag.LAST if j == len(rows) - 1 else 0)
            header = (int(row.kind) << 40) | (int(row.side) << 48) | (int(flags) << 56)
            src[j, _WORD_HDR] = -1 - headers.setdefault(header, len(headers))
            src[j, _WORD_TS_RECV] = self.recv
            if ts_exch:
                src[j, _WORD_TS_EXCH] = col[ts_exch]
            for word_name, word in _RECORD_WORD.items():
                value = getattr(row, word_name)
                if isinstance(value, str):
                    if value:
                        src[j, word] = col[value]
                elif value:
                    src[j, word] = n + 2 + consts.setdefault(value, len(consts))
        first_header = n + 2 + len(consts)
        src[src < 0] = first_header - 1 - src[src < 0]
        self.consts: I64 = np.array(list(consts), dtype=np.int64)
        self.headers: I64 = np.array(list(headers), dtype=np.int64)
        self.const_cols = slice(n + 2, first_header)
        self.header_cols = slice(first_header, first_header + len(headers))
        self.width = first_header + len(headers)
        self.src: IntP = src.reshape(-1)

    def records(
        self,
        unsigned: npt.NDArray[np.uint32],
        signed: npt.NDArray[np.int32],
        recv_ns: int,
        inst_of: Callable[[I64], I64],
    ) -> I64:
        """The (n, records x 8) int64 words of the records of ``n`` packets,
        given their 4-byte words read as big-endian uint32 and as int32."""
        n, cols = len(unsigned), self.n_columns
        v = np.empty((n, self.width), dtype=np.int64)
        if self.plain:
            v[:, :cols] = unsigned
        else:
            v[:, :cols] = unsigned[:, self.col_words]
        tokens = v[:, 0].copy()
        v[:, :cols] *= self.scale
        if len(self.orders):
            v[:, self.orders] >>= 16  # orders is the high half-word; the rest is padding
        v[:, self.prices] = signed[:, self.price_words] * _MULT_BY_SEGMENT[tokens & 0xFF][:, None]
        if len(self.raw_signed):
            v[:, self.raw_signed] = signed[:, self.raw_signed_words]
        v[:, self.zero] = 0
        v[:, self.recv] = recv_ns
        v[:, self.const_cols] = self.consts
        v[:, self.header_cols] = inst_of(tokens)[:, None] + self.headers
        # take() returns C order (plain fancy indexing here would give F order
        # and cost a transposing copy later).
        return np.take(v, self.src, axis=1)


_MULT_BY_SEGMENT: Final = np.full(256, SCALE // DIVISOR_DEFAULT, dtype=np.int64)
"""Raw wire price -> fixed point multiplier, by segment (all divisors divide 10**8)."""
_MULT_BY_SEGMENT[SEGMENT_CDS] = SCALE // DIVISOR_CDS
_MULT_BY_SEGMENT[SEGMENT_BCD] = SCALE // DIVISOR_BCD

_OHLC_ROWS: Final = [
    _Row(Kind.OHLC, px="open", aux2=int(OhlcField.OPEN)),
    _Row(Kind.OHLC, px="high", aux2=int(OhlcField.HIGH)),
    _Row(Kind.OHLC, px="low", aux2=int(OhlcField.LOW)),
]
_QUOTE_ROWS: Final = [
    _Row(Kind.TICK, px="last_price", qty="last_traded_quantity", aux="volume_traded"),
    _Row(
        Kind.STATS, px="average_traded_price", qty="total_buy_quantity", aux="total_sell_quantity"
    ),
    *_OHLC_ROWS,
    _Row(Kind.OHLC, px="close", qty="volume_traded", aux2=int(OhlcField.CLOSE)),
]
_BOOK_ROWS: Final = [
    _Row(Kind.BOOK_CLEAR, flags=Flag.SNAPSHOT),
    *[
        _Row(
            Kind.BOOK_LEVEL,
            side,
            Flag.SNAPSHOT,
            px=f"{name}{i}_price",
            qty=f"{name}{i}_quantity",
            aux=f"{name}{i}_orders",
            aux2=i,
        )
        for side, name in ((Side.BID, "bid"), (Side.ASK, "ask"))
        for i in range(5)
    ],
]


def _index_rows(length: int) -> list[_Row]:
    return [
        _Row(Kind.TICK, px="last_price"),
        *_OHLC_ROWS,
        _Row(Kind.OHLC, px="close", aux2=int(OhlcField.CLOSE)),
        _Row(Kind.EXTRA, px="change", aux="change_raw", aux2=length),
    ]


_CHANGE_RAW: Final = (("change_raw", "change", _SIGNED),)
LAYOUTS: Final[dict[int, _Layout]] = {
    8: _Layout(LTP_DTYPE, [_Row(Kind.TICK, px="last_price")]),
    28: _Layout(INDEX_QUOTE_DTYPE, _index_rows(28), extra_columns=_CHANGE_RAW),
    32: _Layout(INDEX_FULL_DTYPE, _index_rows(32), "exchange_timestamp", _CHANGE_RAW),
    44: _Layout(QUOTE_DTYPE, _QUOTE_ROWS),
    164: _Layout(OLD_FULL_DTYPE, [*_QUOTE_ROWS, *_BOOK_ROWS]),
    184: _Layout(
        FULL_DTYPE,
        [
            _Row(
                Kind.TICK,
                px="last_price",
                qty="last_traded_quantity",
                aux="volume_traded",
                aux2="last_trade_time",
            ),
            *_QUOTE_ROWS[1:],
            _Row(Kind.OI, qty="oi", aux="oi_day_high", aux2="oi_day_low"),
            *_BOOK_ROWS,
        ],
        "exchange_timestamp",
    ),
}
for _length, _layout in LAYOUTS.items():
    assert _layout.length == _length, (_length, _layout.length)

_RECORDS_BY_LENGTH: Final = np.zeros(1 << 16, dtype=np.intp)
"""Records per packet, by packet length (0: an unknown length, skipped)."""
for _length, _layout in LAYOUTS.items():
    _RECORDS_BY_LENGTH[_length] = _layout.n_records
_COUNTER_KEYS: Final = (
    "frames",
    "packets",
    "records",
    "heartbeats",
    "unknown_length",
    "unknown_token",
    "errors",
    "trailing",
    *(f"packets_{n}" for n in PACKET_LENGTHS),
)


class TickerDecoder:
    """Binary ticker frames -> 64-byte records. Pure: no I/O, time is an argument.

    ``inst_of`` maps instrument_token -> dense instrument id; ``None`` keeps
    the token itself as ``inst``. A token missing from a given mapping is
    still decoded (``inst`` = token) and counted in ``counters["unknown_token"]``.

    ``counters``: ``frames`` (binary frames of 2+ bytes, failed ones
    included), ``heartbeats`` (frames under 2 bytes), ``errors`` (frames that
    raised :class:`KiteFrameError`; they yield nothing), ``packets`` (every
    packet of a good frame, unknown lengths included: ``packets`` equals the
    sum of the ``packets_<length>`` counts plus ``unknown_length``),
    ``records``, ``unknown_token``, ``trailing`` (good frames with bytes
    left after the declared packets; those bytes are ignored).
    """

    def __init__(self, inst_of: Mapping[int, int] | None = None) -> None:
        self.counters: dict[str, int] = dict.fromkeys(_COUNTER_KEYS, 0)
        self._keys: npt.NDArray[np.int64] | None = None
        self._values: npt.NDArray[np.int64] | None = None
        if inst_of is not None:
            self.set_instruments(inst_of)

    def set_instruments(self, inst_of: Mapping[int, int] | None) -> None:
        """Replace the token -> inst mapping (``None``: inst = token)."""
        if inst_of is None:
            self._keys = self._values = None
            return
        for token, inst in inst_of.items():
            if not (0 <= token < 1 << 32 and 0 <= inst < 1 << 32):
                raise ValueError(f"token {token} -> inst {inst}: both must fit in uint32")
        keys = np.fromiter(inst_of.keys(), dtype=np.int64, count=len(inst_of))
        values = np.fromiter(inst_of.values(), dtype=np.int64, count=len(inst_of))
        order = np.argsort(keys)
        self._keys, self._values = keys[order], values[order]

    def _inst(self, tokens: I64) -> I64:
        if self._keys is None or self._values is None:
            return tokens
        if len(self._keys) == 0:
            self.counters["unknown_token"] += len(tokens)
            return tokens
        at = np.minimum(np.searchsorted(self._keys, tokens), len(self._keys) - 1)
        found = self._keys[at] == tokens
        self.counters["unknown_token"] += len(tokens) - int(np.count_nonzero(found))
        return np.where(found, self._values[at], tokens)

    def decode(self, frame: bytes | bytearray | memoryview, recv_ns: int) -> Records:
        """All records of one binary frame, in packet order (empty for a heartbeat)."""
        if isinstance(frame, memoryview) and (frame.format != "B" or frame.ndim != 1):
            frame = frame.cast("B")
        size = len(frame)
        counters = self.counters
        if size < 2:
            counters["heartbeats"] += 1
            return np.zeros(0, dtype=RECORD_DTYPE)
        counters["frames"] += 1
        count = (frame[0] << 8) | frame[1]
        try:
            words, end = self._decode_body(frame, size, count, recv_ns)
        except KiteFrameError:
            counters["errors"] += 1
            raise
        if end != size:
            counters["trailing"] += 1
        out = words.reshape(-1).view(RECORD_DTYPE)
        counters["records"] += len(out)
        return out

    def _decode_body(
        self, frame: bytes | bytearray | memoryview, size: int, count: int, recv_ns: int
    ) -> tuple[I64, int]:
        if count == 0:
            return np.zeros(0, dtype=np.int64), 2
        # Fast path: every packet has the first packet's length and the frame
        # ends right after the last one (one strided view checks all lengths,
        # another reads the packets in place).
        if size >= 4:
            first_len = (frame[2] << 8) | frame[3]
            stride = first_len + 2
            layout = LAYOUTS.get(first_len)
            if layout is not None and size == 2 + count * stride:
                lengths = np.ndarray((count,), ">u2", frame, 2, (stride,))
                if bool((lengths == first_len).all()):
                    shape, strides = (count, first_len // 4), (stride, 4)
                    out = layout.records(
                        np.ndarray(shape, ">u4", frame, 4, strides),
                        np.ndarray(shape, ">i4", frame, 4, strides),
                        recv_ns,
                        self._inst,
                    )
                    self.counters["packets"] += count
                    self.counters[f"packets_{first_len}"] += count
                    return out, size
        return self._decode_mixed(frame, size, count, recv_ns)

    def _decode_mixed(
        self, frame: bytes | bytearray | memoryview, size: int, count: int, recv_ns: int
    ) -> tuple[I64, int]:
        # The only Python loop: packet boundaries (each depends on the last).
        starts: list[int] = []
        append = starts.append
        pos = 2
        for i in range(count):
            if pos + 2 > size:
                raise KiteFrameError(
                    f"truncated Kite frame: packet {i + 1} of {count} needs a 2-byte length at "
                    f"byte offset {pos} but the frame is {size} bytes",
                    pos,
                    size,
                )
            length = (frame[pos] << 8) | frame[pos + 1]
            append(pos + 2)
            pos += 2 + length
            if pos > size:
                raise KiteFrameError(
                    f"truncated Kite frame: packet {i + 1} of {count} at byte offset {pos - length} "
                    f"declares {length} bytes but only {size - pos + length} remain (frame is "
                    f"{size} bytes)",
                    pos - length,
                    size,
                )
        offsets = np.array(starts, dtype=np.intp)
        lengths = np.diff(offsets, append=pos + 2) - 2
        per_packet = _RECORDS_BY_LENGTH[lengths]
        known = per_packet > 0
        n_known = int(np.count_nonzero(known))
        counters = self.counters
        counters["packets"] += count
        counters["unknown_length"] += count - n_known
        first_record = np.zeros(count, dtype=np.intp)
        np.cumsum(per_packet[:-1], out=first_record[1:])
        out = np.empty((int(first_record[-1] + per_packet[-1]), 8), dtype=np.int64)
        for length in np.unique(lengths[known]).tolist():
            layout = LAYOUTS[length]
            pick = lengths == length
            offs = offsets[pick]
            counters[f"packets_{length}"] += len(offs)
            # Slicing and joining copies at C speed; a numpy byte gather is slower.
            joined = b"".join([frame[o : o + length] for o in offs.tolist()])
            data = np.frombuffer(joined, dtype=np.uint8).reshape(len(offs), length)
            words = layout.records(data.view(">u4"), data.view(">i4"), recv_ns, self._inst)
            # Back into packet order, whole 64-byte records at a time.
            dest = first_record[pick][:, None] + np.arange(layout.n_records, dtype=np.intp)
            out[dest] = words.reshape(len(offs), layout.n_records, 8)
        return out, pos


# --- text frames ----------------------------------------------------------------

TEXT_TYPES: Final = frozenset({"order", "error", "message"})


def parse_text(message: str | bytes) -> dict[str, Any]:
    """A server text frame: ``{"type": "order"|"error"|"message", "data": ...}``.

    Raises :class:`KiteFrameError` when it is not JSON, not an object, or its
    ``type`` is not one of those three.
    """
    try:
        data = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise KiteFrameError(f"Kite text frame is not JSON: {exc}", 0, len(message)) from None
    if not isinstance(data, dict):
        raise KiteFrameError(
            f"Kite text frame is JSON but not an object ({type(data).__name__})", 0, len(message)
        )
    kind = data.get("type")
    if kind not in TEXT_TYPES:
        raise KiteFrameError(
            f"Kite text frame has type {kind!r}, expected one of {sorted(TEXT_TYPES)}",
            0,
            len(message),
        )
    return data


# --- the official tick-dict schema, rebuilt from the records --------------------


def _when(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NS_PER_S, IST)


def _change(last_price: float, close: float) -> float:
    # The official client's formula (a percentage of the previous close).
    return 0 if close == 0 else (last_price - close) * 100 / close


def ticks_from_records(records: Records) -> list[dict[str, Any]]:
    """Tick dicts in the official pykiteconnect schema, from the records of
    :class:`TickerDecoder` built without an instrument mapping (``inst`` =
    token). Packets end at ``Flag.LAST``.

    Same keys, nesting and float prices as pykiteconnect ``_parse_binary``,
    with two deliberate differences: datetimes are timezone-aware in IST
    (the official client returns naive host-local times), and 164-byte
    packets yield a ``full`` tick with depth (the official client drops them).
    """
    out: list[dict[str, Any]] = []
    group: list[tuple[int, ...]] = []
    for row in records.tolist():
        group.append(row)
        if row[7] & Flag.LAST:
            out.append(_tick(group))
            group = []
    return out


def _tick(group: list[tuple[int, ...]]) -> dict[str, Any]:
    # row: seq, ts_exch, ts_recv, inst, src, kind, side, flags, px, qty, aux, aux2
    token = group[0][3]
    tick: dict[str, Any] = {
        "tradable": (token & 0xFF) != SEGMENT_INDICES,
        "mode": MODE_LTP,
        "instrument_token": token,
        "last_price": group[0][8] / SCALE,
    }
    kinds = [row[5] for row in group]
    if len(group) == 1:
        return tick
    ts_exch = group[0][1]
    if kinds[-1] == Kind.EXTRA:
        ohlc = {row[11]: row[8] / SCALE for row in group[1:5]}
        tick["mode"] = MODE_FULL if group[-1][11] == 32 else MODE_QUOTE
        tick["ohlc"] = {
            "high": ohlc[OhlcField.HIGH],
            "low": ohlc[OhlcField.LOW],
            "open": ohlc[OhlcField.OPEN],
            "close": ohlc[OhlcField.CLOSE],
        }
        tick["change"] = _change(tick["last_price"], tick["ohlc"]["close"])
        if tick["mode"] == MODE_FULL:
            tick["exchange_timestamp"] = _when(ts_exch)
        return tick
    first, stats = group[0], group[1]
    ohlc = {row[11]: row[8] / SCALE for row in group[2:6]}
    full = Kind.BOOK_CLEAR in kinds
    tick["mode"] = MODE_FULL if full else MODE_QUOTE
    tick.update(
        last_traded_quantity=first[9] // SCALE,
        average_traded_price=stats[8] / SCALE,
        volume_traded=first[10] // SCALE,
        total_buy_quantity=stats[9] // SCALE,
        total_sell_quantity=stats[10] // SCALE,
        ohlc={
            "open": ohlc[OhlcField.OPEN],
            "high": ohlc[OhlcField.HIGH],
            "low": ohlc[OhlcField.LOW],
            "close": ohlc[OhlcField.CLOSE],
        },
    )
    tick["change"] = _change(tick["last_price"], tick["ohlc"]["close"])
    if not full:
        return tick
    if kinds[6] == Kind.OI:
        oi = group[6]
        tick["last_trade_time"] = _when(first[11])
        tick["oi"] = oi[9] // SCALE
        tick["oi_day_high"] = oi[10] // SCALE
        tick["oi_day_low"] = oi[11] // SCALE
        tick["exchange_timestamp"] = _when(ts_exch)
    depth: dict[str, list[dict[str, Any]]] = {"buy": [], "sell": []}
    for row in group[-10:]:
        depth["buy" if row[6] == Side.BID else "sell"].append(
            {"quantity": row[9] // SCALE, "price": row[8] / SCALE, "orders": row[10]}
        )
    tick["depth"] = depth
    return tick


def ticks(frame: bytes | bytearray | memoryview) -> list[dict[str, Any]]:
    """The official pykiteconnect tick dicts of one binary frame (see
    :func:`ticks_from_records`); ``[]`` for a heartbeat; unknown packet
    lengths are skipped; a truncated frame raises :class:`KiteFrameError`."""
    return ticks_from_records(TickerDecoder().decode(frame, 0))
