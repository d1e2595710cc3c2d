"""An independent Kite binary ticker encoder, written from PROTOCOLS.md with
``struct`` (not from the decoder), used only by the tests.

A packet is described by :class:`WirePacket`: the raw integers as they go on
the wire (prices in the segment's units, quantities in units, times in epoch
seconds). :func:`expected_tick` turns one into the official client's tick dict
the way pykiteconnect documents it (float price = raw / divisor; change =
percentage of the close; IST datetimes).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

IST = timezone(timedelta(hours=5, minutes=30))


def divisor_of(token: int) -> int:
    """PROTOCOLS.md: 10^7 for CDS (3), 10^4 for BCD (6), else 100."""
    return {3: 10_000_000, 6: 10_000}.get(token & 0xFF, 100)


@dataclass(frozen=True)
class Level:
    quantity: int
    price: int
    orders: int


@dataclass(frozen=True)
class WirePacket:
    """One packet's raw fields; ``length`` picks the layout (8, 28, 32, 44, 164, 184)."""

    length: int
    token: int
    last_price: int
    last_qty: int = 0
    avg_price: int = 0
    volume: int = 0
    buy_qty: int = 0
    sell_qty: int = 0
    open: int = 0
    high: int = 0
    low: int = 0
    close: int = 0
    change: int = 0
    last_trade_time: int = 0
    oi: int = 0
    oi_day_high: int = 0
    oi_day_low: int = 0
    exchange_timestamp: int = 0
    bids: tuple[Level, ...] = field(default=())
    asks: tuple[Level, ...] = field(default=())


def _depth(levels: tuple[Level, ...]) -> bytes:
    padded = list(levels) + [Level(0, 0, 0)] * (5 - len(levels))
    return b"".join(struct.pack(">IiH2x", lv.quantity, lv.price, lv.orders) for lv in padded)


def encode_packet(p: WirePacket) -> bytes:
    """The packet bytes (no length prefix)."""
    if p.length == 8:
        return struct.pack(">Ii", p.token, p.last_price)
    if p.length in (28, 32):
        # Index: token, last price, high, low, open, close, change (H-L-O-C order).
        body = struct.pack(
            ">Iiiiiii", p.token, p.last_price, p.high, p.low, p.open, p.close, p.change
        )
        if p.length == 32:
            body += struct.pack(">I", p.exchange_timestamp)
        return body
    quote = struct.pack(
        ">IiIiIIIiiii",
        p.token,
        p.last_price,
        p.last_qty,
        p.avg_price,
        p.volume,
        p.buy_qty,
        p.sell_qty,
        p.open,
        p.high,
        p.low,
        p.close,
    )
    if p.length == 44:
        return quote
    if p.length == 164:
        return quote + _depth(p.bids) + _depth(p.asks)
    if p.length == 184:
        extra = struct.pack(
            ">IIIII",
            p.last_trade_time,
            p.oi,
            p.oi_day_high,
            p.oi_day_low,
            p.exchange_timestamp,
        )
        return quote + extra + _depth(p.bids) + _depth(p.asks)
    raise ValueError(f"no layout of length {p.length}")


def encode_frame(packets: list[bytes]) -> bytes:
    """A binary frame: int16 count, then int16 length + bytes per packet."""
    parts = [struct.pack(">H", len(packets))]
    for packet in packets:
        parts.append(struct.pack(">H", len(packet)) + packet)
    return b"".join(parts)


def _when(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, IST)


def expected_tick(p: WirePacket) -> dict[str, Any]:
    """The official client's tick dict for ``p`` (IST-aware datetimes; 164
    becomes a full tick with depth and no times/OI)."""
    div = float(divisor_of(p.token))
    tick: dict[str, Any] = {
        "tradable": (p.token & 0xFF) != 9,
        "mode": "ltp",
        "instrument_token": p.token,
        "last_price": p.last_price / div,
    }
    if p.length == 8:
        return tick
    ohlc = {"open": p.open / div, "high": p.high / div, "low": p.low / div, "close": p.close / div}
    change = 0 if ohlc["close"] == 0 else (tick["last_price"] - ohlc["close"]) * 100 / ohlc["close"]
    if p.length in (28, 32):
        tick.update(mode="quote" if p.length == 28 else "full", ohlc=ohlc, change=change)
        if p.length == 32:
            tick["exchange_timestamp"] = _when(p.exchange_timestamp)
        return tick
    tick.update(
        mode="quote" if p.length == 44 else "full",
        last_traded_quantity=p.last_qty,
        average_traded_price=p.avg_price / div,
        volume_traded=p.volume,
        total_buy_quantity=p.buy_qty,
        total_sell_quantity=p.sell_qty,
        ohlc=ohlc,
        change=change,
    )
    if p.length == 184:
        tick.update(
            last_trade_time=_when(p.last_trade_time),
            oi=p.oi,
            oi_day_high=p.oi_day_high,
            oi_day_low=p.oi_day_low,
            exchange_timestamp=_when(p.exchange_timestamp),
        )
    if p.length in (164, 184):

        def side(levels: tuple[Level, ...]) -> list[dict[str, Any]]:
            padded = list(levels) + [Level(0, 0, 0)] * (5 - len(levels))
            return [
                {"quantity": lv.quantity, "price": lv.price / div, "orders": lv.orders}
                for lv in padded
            ]

        tick["depth"] = {"buy": side(p.bids), "sell": side(p.asks)}
    return tick
