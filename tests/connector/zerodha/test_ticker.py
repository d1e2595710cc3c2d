"""Kite binary ticker decoder (connector/zerodha/ticker.py): fixtures, round
trips through an independent encoder, fuzzing, the CLI and the benchmark.

The kiteconnect-mocks JSON twins name some keys differently from the official
Python client (``last_quantity``, ``average_price``, ``volume``,
``buy_quantity``, ``sell_quantity``, ``timestamp``) and their ``change`` is
not the official client's value: in ``ticker_full.json`` it is the absolute
net change (last - close, as the Go client computes it), and in
``ticker_quote.json`` it is a stale copy of the full one (5.9 although its
own last price and close give 5.35). Normalising therefore renames those
keys, parses the ISO datetimes, and checks ``change`` separately.
"""

from __future__ import annotations

import base64
import json
import struct
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.zerodha import ticker as kt
from connector.zerodha.bench import bench_kite_decode, self_check
from connector.zerodha.decode_cli import decode
from connector.zerodha.ticker import (
    KiteFrameError,
    TickerDecoder,
    packet_divisor,
    parse_text,
    ticks,
)
from pipeline.book import BookState
from pipeline.errors import DataError
from pipeline.record import RECORD_DTYPE, Flag, Kind, OhlcField, Records, Side
from tests.conftest import shared_fixture
from tests.connector.zerodha.kite_encoder import (
    Level,
    WirePacket,
    divisor_of,
    encode_frame,
    encode_packet,
    expected_tick,
)

pytestmark = pytest.mark.unit

KITE = "kite"
S = 10**8
NS = 10**9
RENAMES = {
    "last_quantity": "last_traded_quantity",
    "average_price": "average_traded_price",
    "volume": "volume_traded",
    "buy_quantity": "total_buy_quantity",
    "sell_quantity": "total_sell_quantity",
    "timestamp": "exchange_timestamp",
}
RECORDS_PER_LENGTH = {8: 1, 28: 6, 32: 6, 44: 6, 164: 17, 184: 18}


# --- helpers -----------------------------------------------------------------


def twin(name: str) -> dict[str, Any]:
    """A fixture JSON twin in the official schema (renamed keys, datetimes)."""
    raw = json.loads(shared_fixture(f"{KITE}/{name}").read_text())
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = RENAMES.get(key, key)
        if key in ("last_trade_time", "exchange_timestamp"):
            value = datetime.fromisoformat(value)
        out[key] = value
    return out


def packet_of(name: str) -> bytes:
    return base64.b64decode(shared_fixture(f"{KITE}/{name}").read_text().strip())


def frame_of(name: str) -> bytes:
    return shared_fixture(f"{KITE}/derived/{name}").read_bytes()


def official_change(tick: dict[str, Any]) -> float:
    close = tick["ohlc"]["close"]
    return 0 if close == 0 else (tick["last_price"] - close) * 100 / close


def same_tick(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Equal after normalising; ``change`` checked against the official formula."""
    ours, theirs = dict(ours), dict(theirs)
    if "change" in ours:
        assert ours.pop("change") == official_change(ours)
        theirs.pop("change", None)
    assert ours == theirs


def dec(value: float | int) -> Decimal:
    return Decimal(str(value))


def json_view_of_records(records: Records) -> list[dict[str, Any]]:
    """The fixture-JSON fields read straight from the records, with exact
    decimals (independent of ticks_from_records)."""
    out: list[dict[str, Any]] = []
    rows = records.tolist()
    start = 0
    for end, r in enumerate(rows, 1):
        if not r[7] & Flag.LAST:
            continue
        group = rows[start:end]
        start = end
        by_kind: dict[int, list[tuple[Any, ...]]] = {}
        for row in group:
            by_kind.setdefault(row[5], []).append(row)
        tick = by_kind[Kind.TICK][0]
        view: dict[str, Any] = {
            "instrument_token": tick[3],
            "last_price": Decimal(tick[8]) / S,
        }
        if Kind.STATS in by_kind:
            stats = by_kind[Kind.STATS][0]
            view.update(
                last_quantity=Decimal(tick[9]) / S,
                volume=Decimal(tick[10]) / S,
                average_price=Decimal(stats[8]) / S,
                buy_quantity=Decimal(stats[9]) / S,
                sell_quantity=Decimal(stats[10]) / S,
            )
        if Kind.OHLC in by_kind:
            names = {0: "open", 1: "high", 2: "low", 3: "close"}
            view["ohlc"] = {names[r[11]]: Decimal(r[8]) / S for r in by_kind[Kind.OHLC]}
        if Kind.OI in by_kind:
            oi = by_kind[Kind.OI][0]
            view.update(
                oi=Decimal(oi[9]) / S,
                oi_day_high=Decimal(oi[10]) / S,
                oi_day_low=Decimal(oi[11]) / S,
                last_trade_time=tick[11] // NS,
                timestamp=tick[1] // NS,
            )
        if Kind.BOOK_LEVEL in by_kind:
            view["depth"] = {
                side: [
                    {
                        "price": Decimal(r[8]) / S,
                        "quantity": Decimal(r[9]) / S,
                        "orders": r[10],
                    }
                    for r in by_kind[Kind.BOOK_LEVEL]
                    if r[6] == code
                ]
                for side, code in (("buy", Side.BID), ("sell", Side.ASK))
            }
        out.append(view)
    return out


def json_view_of_fixture(name: str) -> dict[str, Any]:
    """The fixture JSON twin with exact decimals and epoch seconds."""
    raw = json.loads(shared_fixture(f"{KITE}/{name}").read_text())
    view: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("mode", "tradable", "change"):
            continue
        if key in ("last_trade_time", "timestamp"):
            view[key] = int(datetime.fromisoformat(value).timestamp())
        elif key == "ohlc":
            view[key] = {k: dec(v) for k, v in value.items()}
        elif key == "depth":
            view[key] = {
                side: [
                    {k: (v if k == "orders" else dec(v)) for k, v in lv.items()} for lv in levels
                ]
                for side, levels in value.items()
            }
        elif key == "instrument_token":
            view[key] = value
        else:
            view[key] = dec(value)
    return view


def check_counters(decoder: TickerDecoder, calls: int, records: int) -> None:
    c = decoder.counters
    assert c["frames"] + c["heartbeats"] == calls
    assert c["packets"] == sum(c[f"packets_{n}"] for n in kt.PACKET_LENGTHS) + c["unknown_length"]
    assert 0 <= c["errors"] <= c["frames"]
    assert c["records"] == records


def check_records_shape(records: Records) -> None:
    """Every packet's records end with LAST; kinds are valid; src/seq are 0."""
    assert records.dtype == RECORD_DTYPE
    if len(records):
        assert records["flags"][-1] & Flag.LAST
    assert set(records["kind"].tolist()) <= {int(k) for k in Kind}
    assert not records["seq"].any()
    assert not records["src"].any()


# --- fixtures --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ticker_full", "ticker_quote"])
def test_fixture_packet_matches_json_twin_via_ticks(name: str) -> None:
    frame = encode_frame([packet_of(f"{name}.packet")])
    (tick,) = ticks(frame)
    same_tick(tick, twin(f"{name}.json"))


@pytest.mark.parametrize("name", ["ticker_full", "ticker_quote"])
def test_fixture_packet_matches_json_twin_via_records(name: str) -> None:
    frame = encode_frame([packet_of(f"{name}.packet")])
    records = TickerDecoder().decode(frame, 7)
    (view,) = json_view_of_records(records)
    assert view == json_view_of_fixture(f"{name}.json")
    assert (records["ts_recv"] == 7).all()


@pytest.mark.parametrize(
    ("frame_name", "twins"),
    [
        ("ticker_ltp_frame.bin", ["ticker_ltp.json"]),
        ("ticker_quote_frame.bin", ["ticker_quote.json"]),
        ("ticker_full_frame.bin", ["ticker_full.json"]),
        ("ticker_mixed_frame.bin", ["ticker_ltp.json", "ticker_quote.json", "ticker_full.json"]),
    ],
)
def test_derived_frames_match_json_twins(frame_name: str, twins: list[str]) -> None:
    frame = frame_of(frame_name)
    got = ticks(frame)
    assert len(got) == len(twins)
    for tick, name in zip(got, twins, strict=True):
        same_tick(tick, twin(name))
    decoder = TickerDecoder()
    views = json_view_of_records(decoder.decode(frame, 1))
    assert views == [json_view_of_fixture(name) for name in twins]
    assert decoder.counters["packets"] == len(twins)


def test_fixture_change_is_absolute_net_change_not_the_official_percentage() -> None:
    # Documents the mock's `change` (see the module docstring): ours is the
    # official client's percentage.
    raw = json.loads(shared_fixture(f"{KITE}/ticker_full.json").read_text())
    assert raw["change"] == raw["last_price"] - raw["ohlc"]["close"]
    (tick,) = ticks(frame_of("ticker_full_frame.bin"))
    assert tick["change"] == pytest.approx(0.3763235106518747)


def test_full_fixture_records_pinned() -> None:
    """The 18 records of the full fixture, every field, as literals from the README."""
    records = TickerDecoder().decode(frame_of("ticker_full_frame.bin"), 99)
    ts = 1625461887 * NS
    tok = 408065
    snap, last = int(Flag.SNAPSHOT), int(Flag.LAST)

    def p(rupees: str) -> int:
        return int(Decimal(rupees) * S)

    expected = [
        (0, ts, 99, tok, 0, Kind.TICK, 0, 0, p("1573.70"), 7 * S, 1192471 * S, ts),
        (0, ts, 99, tok, 0, Kind.STATS, 0, 0, p("1570.37"), 256443 * S, 363009 * S, 0),
        (0, ts, 99, tok, 0, Kind.OHLC, 0, 0, p("1569.15"), 0, 0, OhlcField.OPEN),
        (0, ts, 99, tok, 0, Kind.OHLC, 0, 0, p("1575.00"), 0, 0, OhlcField.HIGH),
        (0, ts, 99, tok, 0, Kind.OHLC, 0, 0, p("1561.05"), 0, 0, OhlcField.LOW),
        (0, ts, 99, tok, 0, Kind.OHLC, 0, 0, p("1567.80"), 1192471 * S, 0, OhlcField.CLOSE),
        (0, ts, 99, tok, 0, Kind.OI, 0, 0, 0, 0, 0, 0),
        (0, ts, 99, tok, 0, Kind.BOOK_CLEAR, 0, snap, 0, 0, 0, 0),
    ]
    bids = [(5, "1573.40", 1), (140, "1573.00", 2), (2, "1572.95", 1), (219, "1572.90", 7), (50, "1572.85", 1)]  # fmt: skip
    asks = [(172, "1573.70", 3), (44, "1573.75", 3), (302, "1573.85", 3), (141, "1573.90", 2), (724, "1573.95", 5)]  # fmt: skip
    for side, levels in ((Side.BID, bids), (Side.ASK, asks)):
        for i, (qty, price, orders) in enumerate(levels):
            expected.append((0, ts, 99, tok, 0, Kind.BOOK_LEVEL, side, snap, p(price), qty * S, orders, i))  # fmt: skip
    flagged = [*expected[:-1], (*expected[-1][:7], snap | last, *expected[-1][8:])]
    assert records.tolist() == [tuple(int(v) for v in row) for row in flagged]


def test_heartbeat_fixture() -> None:
    decoder = TickerDecoder()
    out = decoder.decode(frame_of("heartbeat.bin"), 1)
    assert len(out) == 0 and out.dtype == RECORD_DTYPE
    assert decoder.decode(b"", 2).shape == (0,)
    assert decoder.counters["heartbeats"] == 2
    assert decoder.counters["frames"] == 0
    assert ticks(frame_of("heartbeat.bin")) == []


# --- hypothesis round trips -------------------------------------------------------

I32 = st.integers(-(2**31), 2**31 - 1)
U32 = st.integers(0, 2**32 - 1)
U16 = st.integers(0, 2**16 - 1)
SEGMENTS = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 10, 255])


@st.composite
def wire_packets(draw: st.DrawFn, length: int | None = None) -> WirePacket:
    length = draw(st.sampled_from(kt.PACKET_LENGTHS)) if length is None else length
    token = (draw(st.integers(0, 2**24 - 1)) << 8) | draw(SEGMENTS)
    levels = st.lists(st.builds(Level, U32, I32, U16), min_size=0, max_size=5).map(tuple)
    return WirePacket(
        length=length,
        token=token,
        last_price=draw(I32),
        last_qty=draw(U32),
        avg_price=draw(I32),
        volume=draw(U32),
        buy_qty=draw(U32),
        sell_qty=draw(U32),
        open=draw(I32),
        high=draw(I32),
        low=draw(I32),
        close=draw(I32),
        change=draw(I32),
        last_trade_time=draw(U32),
        oi=draw(U32),
        oi_day_high=draw(U32),
        oi_day_low=draw(U32),
        exchange_timestamp=draw(U32),
        bids=draw(levels),
        asks=draw(levels),
    )


@st.composite
def frames_of_packets(draw: st.DrawFn) -> list[WirePacket]:
    if draw(st.booleans()):  # one length: the fast path
        length = draw(st.sampled_from(kt.PACKET_LENGTHS))
        return draw(st.lists(wire_packets(length), min_size=1, max_size=12))
    return draw(st.lists(wire_packets(), min_size=1, max_size=12))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_of_packets(), st.integers(0, 2**62))
def test_round_trip_ticks_and_records(packets: list[WirePacket], recv_ns: int) -> None:
    frame = encode_frame([encode_packet(p) for p in packets])
    assert ticks(frame) == [expected_tick(p) for p in packets]
    decoder = TickerDecoder()
    records = decoder.decode(frame, recv_ns)
    check_records_shape(records)
    check_counters(decoder, 1, len(records))
    assert len(records) == sum(RECORDS_PER_LENGTH[p.length] for p in packets)
    assert (records["ts_recv"] == recv_ns).all()
    # Exact fixed point per packet: the TICK price and, where sent, the times.
    start = 0
    for p in packets:
        group = records[start : start + RECORDS_PER_LENGTH[p.length]]
        start += len(group)
        mult = S // divisor_of(p.token)
        assert int(group["flags"][-1]) & Flag.LAST
        assert not (group["flags"][:-1] & Flag.LAST).any()
        assert int(group["kind"][0]) == Kind.TICK
        assert int(group["px"][0]) == p.last_price * mult
        assert (group["inst"] == p.token).all()
        if p.length in (32, 184):
            assert (group["ts_exch"] == p.exchange_timestamp * NS).all()
        else:
            assert not group["ts_exch"].any()
        if p.length in (28, 32):
            extra = group[-1]
            assert int(extra["kind"]) == Kind.EXTRA
            assert int(extra["aux"]) == p.change
            assert int(extra["px"]) == p.change * mult
            assert int(extra["aux2"]) == p.length
        if p.length == 184:
            assert int(group["aux2"][0]) == p.last_trade_time * NS
            oi = group[6]
            assert (int(oi["qty"]), int(oi["aux"]), int(oi["aux2"])) == (
                p.oi * S,
                p.oi_day_high * S,
                p.oi_day_low * S,
            )


@pytest.mark.parametrize("segment", [1, 3, 6, 9])
@pytest.mark.parametrize("length", kt.PACKET_LENGTHS)
def test_every_length_and_divisor_round_trips(length: int, segment: int) -> None:
    p = WirePacket(
        length=length, token=(1234 << 8) | segment, last_price=123456789, last_qty=3,
        avg_price=123456000, volume=10**9, buy_qty=7, sell_qty=8, open=-5, high=2**31 - 1,
        low=-(2**31), close=123000000, change=-42, last_trade_time=1_700_000_000, oi=2**32 - 1,
        oi_day_high=9, oi_day_low=1, exchange_timestamp=1_700_000_001,
        bids=(Level(1, 123456700, 2),), asks=(Level(2**32 - 1, 123456800, 65535),),
    )  # fmt: skip
    frame = encode_frame([encode_packet(p)])
    assert ticks(frame) == [expected_tick(p)]
    records = TickerDecoder().decode(frame, 0)
    assert int(records["px"][0]) == 123456789 * (S // divisor_of(p.token))


def test_packet_divisor() -> None:
    assert packet_divisor(408065) == 100  # NSE
    assert packet_divisor((77 << 8) | 3) == 10**7  # CDS
    assert packet_divisor((77 << 8) | 6) == 10**4  # BCD
    assert packet_divisor(256265) == 100  # NIFTY 50, INDICES
    assert all(packet_divisor(s) == 100 for s in (0, 1, 2, 4, 5, 7, 8, 9, 10, 255))
    assert all((10**8) % packet_divisor(s) == 0 for s in range(256))


def test_index_packets_hlo_c_order_and_change_extra() -> None:
    p = WirePacket(
        length=32, token=256265, last_price=2340685, high=2344195, low=2329595, open=2334445,
        close=2326485, change=-1234, exchange_timestamp=1_718_176_569,
    )  # fmt: skip
    records = TickerDecoder().decode(encode_frame([encode_packet(p)]), 5)
    ohlc = records[records["kind"] == Kind.OHLC]
    assert ohlc["aux2"].tolist() == [0, 1, 2, 3]
    assert ohlc["px"].tolist() == [v * 10**6 for v in (2334445, 2344195, 2329595, 2326485)]
    (tick,) = ticks(encode_frame([encode_packet(p)]))
    assert tick["tradable"] is False and tick["mode"] == "full"
    assert tick["ohlc"] == {"high": 23441.95, "low": 23295.95, "open": 23344.45, "close": 23264.85}
    assert tick["exchange_timestamp"] == datetime.fromisoformat("2024-06-12T12:46:09+05:30")
    # 32 with a zero timestamp is still told apart from 28 (EXTRA.aux2).
    zero = WirePacket(length=32, token=256265, last_price=1)
    (tick,) = ticks(encode_frame([encode_packet(zero)]))
    assert tick["mode"] == "full"


def test_full_depth_becomes_a_book_snapshot_the_book_builder_applies() -> None:
    """Empty levels (qty 0, price 0) are emitted and ignored by the book builder."""
    bids = (Level(10, 10_000, 1), Level(20, 9_995, 2))
    asks = (Level(30, 10_005, 3),)
    packets = [
        WirePacket(length=184, token=(i << 8) | 1, last_price=10_000, bids=bids, asks=asks)
        for i in range(1, 60)
    ]
    frame = encode_frame([encode_packet(p) for p in packets])
    for many in (False, True):  # the book builder's per-record and bulk paths
        records = TickerDecoder().decode(frame, 1)
        if not many:
            records = records[:18]
        records["seq"] = np.arange(1, len(records) + 1)
        state = BookState()
        state.apply(records)
        for inst in set(records["inst"].tolist()):
            book = state.books[inst]
            assert book.top(5) == (
                [(10_000 * 10**6, 10 * S, 1), (9_995 * 10**6, 20 * S, 2)],
                [(10_005 * 10**6, 30 * S, 3)],
            )
            assert book.consistent and book.valid
    levels = records[records["kind"] == Kind.BOOK_LEVEL][:10]
    assert levels["aux2"].tolist() == [0, 1, 2, 3, 4] * 2
    assert levels["side"].tolist() == [Side.BID] * 5 + [Side.ASK] * 5
    assert (levels["flags"][:-1] & Flag.SNAPSHOT).all()


def test_instrument_mapping_and_unknown_tokens() -> None:
    packets = [WirePacket(length=8, token=t, last_price=1) for t in (408065, 256265, 999)]
    frame = encode_frame([encode_packet(p) for p in packets])
    decoder = TickerDecoder({408065: 1, 256265: 2})
    assert decoder.decode(frame, 0)["inst"].tolist() == [1, 2, 999]
    assert decoder.counters["unknown_token"] == 1
    mixed = encode_frame([encode_packet(packets[0]), encode_packet(WirePacket(44, 999, 5))])
    assert decoder.decode(mixed, 0)["inst"].tolist() == [1, *[999] * 6]
    assert decoder.counters["unknown_token"] == 2
    decoder.set_instruments(None)
    assert decoder.decode(frame, 0)["inst"].tolist() == [408065, 256265, 999]
    empty = TickerDecoder({})
    empty.decode(frame, 0)
    assert empty.counters["unknown_token"] == 3
    with pytest.raises(ValueError, match="uint32"):
        TickerDecoder({1: -1})


def test_memoryview_and_bytearray_frames() -> None:
    frame = frame_of("ticker_mixed_frame.bin")
    expected = TickerDecoder().decode(frame, 3)
    for variant in (bytearray(frame), memoryview(frame), memoryview(b"xx" + frame)[2:]):
        assert TickerDecoder().decode(variant, 3).tolist() == expected.tolist()


# --- malformed input ----------------------------------------------------------------


def test_unknown_lengths_are_skipped_and_counted() -> None:
    ltp = encode_packet(WirePacket(8, 408065, 157315))
    quote = encode_packet(WirePacket(44, 408065, 157315))
    frame = encode_frame([ltp, b"\x01" * 12, quote, b"", b"\x02" * 3, ltp])
    decoder = TickerDecoder()
    records = decoder.decode(frame, 0)
    assert len(records) == 1 + 6 + 1
    assert decoder.counters["unknown_length"] == 3
    assert decoder.counters["packets"] == 6
    assert [t["mode"] for t in ticks(frame)] == ["ltp", "quote", "ltp"]
    # A frame of unknown lengths only yields nothing (and is no error).
    assert len(decoder.decode(encode_frame([b"\x00" * 7] * 3), 0)) == 0
    check_counters(decoder, 2, len(records))


def test_trailing_bytes_are_counted() -> None:
    frame = frame_of("ticker_ltp_frame.bin") + b"\x00\x00\x00"
    decoder = TickerDecoder()
    assert len(decoder.decode(frame, 0)) == 1
    assert decoder.counters["trailing"] == 1


def test_every_truncation_of_a_real_frame_raises_with_offsets() -> None:
    frame = frame_of("ticker_mixed_frame.bin")
    decoder = TickerDecoder()
    for cut in range(2, len(frame)):
        with pytest.raises(KiteFrameError, match=r"byte offset \d+") as info:
            decoder.decode(frame[:cut], 0)
        assert isinstance(info.value, DataError)
        assert info.value.frame_len == cut
        assert 0 < info.value.offset <= cut
    assert decoder.counters["errors"] == len(frame) - 2
    assert decoder.counters["packets"] == 0  # a failed frame yields nothing
    check_counters(decoder, len(frame) - 2, 0)
    with pytest.raises(KiteFrameError, match="declares 184 bytes but only 40 remain"):
        TickerDecoder().decode(frame[:100], 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(data: bytes) -> None:
    decoder = TickerDecoder()
    try:
        records = decoder.decode(data, 1)
    except KiteFrameError:
        assert decoder.counters["errors"] == 1
        check_counters(decoder, 1, 0)
        return
    check_records_shape(records)
    check_counters(decoder, 1, len(records))
    ticks(data)


@st.composite
def mutated_real_frames(draw: st.DrawFn) -> bytes:
    name = draw(
        st.sampled_from(
            ["ticker_mixed_frame.bin", "ticker_full_frame.bin", "ticker_quote_frame.bin"]
        )
    )
    frame = bytearray(frame_of(name))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(frame) - 1))
        frame[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    return bytes(frame)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_real_frames(), min_size=1, max_size=5))
def test_mutated_real_frames_never_crash_and_counters_add_up(frames: list[bytes]) -> None:
    decoder = TickerDecoder()
    total = 0
    failed = 0
    for frame in frames:
        try:
            records = decoder.decode(frame, 1)
        except KiteFrameError:
            failed += 1
            continue
        check_records_shape(records)
        total += len(records)
    assert decoder.counters["errors"] == failed
    check_counters(decoder, len(frames), total)


# --- text frames --------------------------------------------------------------------


def test_parse_text() -> None:
    order = {"type": "order", "data": {"order_id": "1", "status": "COMPLETE"}}
    assert parse_text(json.dumps(order)) == order
    assert parse_text(b'{"type":"error","data":"bad token"}') == {
        "type": "error",
        "data": "bad token",
    }
    assert parse_text('{"type":"message","data":"hi"}')["data"] == "hi"
    for bad in ("not json", "[1, 2]", '{"type": "tick"}', '{"data": 1}', b"\xff\xfe"):
        with pytest.raises(KiteFrameError):
            parse_text(bad)


# --- CLI ------------------------------------------------------------------------------


def test_cli_raw_frame_json_and_table() -> None:
    path = shared_fixture(f"{KITE}/derived/ticker_mixed_frame.bin")
    result = CliRunner().invoke(decode, ["kite", str(path), "--json"])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [t["mode"] for t in lines] == ["ltp", "quote", "full"]
    assert lines[2]["exchange_timestamp"] == "2021-07-05T10:41:27+05:30"
    assert lines[2]["depth"]["sell"][4] == {"quantity": 724, "price": 1573.95, "orders": 5}
    table = CliRunner().invoke(decode, ["kite", str(path)])
    assert table.exit_code == 0
    assert len(table.stdout.splitlines()) == 3
    assert "ltp=1573.7" in table.stdout.splitlines()[2]


def test_cli_packet_file() -> None:
    path = shared_fixture(f"{KITE}/ticker_quote.packet")
    result = CliRunner().invoke(decode, ["kite", str(path), "--json"])
    assert result.exit_code == 0, result.output
    (tick,) = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert tick["volume_traded"] == 1175986


def test_cli_lines_with_bad_frames_reports_and_continues(tmp_path: Path) -> None:
    good = frame_of("ticker_full_frame.bin")
    lines = [
        "# recorded by a test",
        f"1000 {base64.b64encode(good).decode()}",
        f"2000 {base64.b64encode(good[:100]).decode()}",
        f"3000 {base64.b64encode(frame_of('heartbeat.bin')).decode()}",
        f"4000 {base64.b64encode(frame_of('ticker_ltp_frame.bin')).decode()}",
    ]
    path = tmp_path / "frames.txt"
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(decode, ["kite", str(path), "--json"])
    assert result.exit_code == 1
    assert [orjson.loads(x)["mode"] for x in result.stdout.splitlines()] == ["full", "ltp"]
    assert f"{path}: frame at line 3" in result.stderr
    assert "byte offset 4 declares 184 bytes but only 96 remain" in result.stderr


def test_cli_length_prefixed(tmp_path: Path) -> None:
    frames = [frame_of("ticker_quote_frame.bin"), frame_of("ticker_ltp_frame.bin")]
    data = b"".join(struct.pack(">qI", 10 + i, len(f)) + f for i, f in enumerate(frames))
    path = tmp_path / "frames.lp"
    path.write_bytes(data + b"\x00\x00")
    result = CliRunner().invoke(decode, ["kite", str(path), "--format", "lp"])
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 2
    assert f"byte offset {len(data)}" in result.stderr


def test_cli_missing_file_is_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(decode, ["kite", str(tmp_path / "nope.bin")])
    assert result.exit_code == 2


# --- benchmark --------------------------------------------------------------------------


def test_bench_returns_its_keys_and_both_sides_agree() -> None:
    result = bench_kite_decode(0.01, packets_per_frame=20, n_tokens=50, pairs=1)
    assert {"packets_per_s", "baseline_packets_per_s", "ratio"} <= result.keys()
    assert result["packets_per_s"] > 0 and result["baseline_packets_per_s"] > 0
    assert self_check()
