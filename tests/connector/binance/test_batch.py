"""The batch decoder gives exactly what decoding frame by frame gives."""

from __future__ import annotations

import contextlib
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.binance import batch as batch_module
from connector.binance.batch import Batch, BatchDecoder
from connector.binance.wire import Decoder
from pipeline import record as rec
from tests.conftest import shared_fixture

pytestmark = pytest.mark.unit

ROADS = [
    pytest.param(False, id="python"),
    pytest.param(
        True,
        id="c-speedup",
        marks=pytest.mark.skipif(
            not batch_module.SPEEDUP, reason="the C speedup is not built (no compiler at install)"
        ),
    ),
]
"""Both roads of the batch decoder must give exactly what Decoder.decode gives."""


def assert_as_frame_by_frame(
    got: Batch, decoder: Decoder, frames: list[bytes], recv: list[int]
) -> None:
    """``got`` has the records, events and failed frames of decoding one by one."""
    expected, errors, events = [], [], []
    total = 0
    for i, f in enumerate(frames):
        try:
            d = decoder.decode(f, recv[i])
        except ValueError:
            errors.append(i)
            continue
        expected.append(d.records)
        events.append((d.event, d.symbol, total, total + len(d.records)))
        total += len(d.records)
    want = np.concatenate(expected) if expected else np.zeros(0, dtype=got.records.dtype)
    assert got.records.tobytes() == want.tobytes()
    assert got.events == events
    assert [i for i, _e in got.errors] == errors


def recorded_frames(name: str) -> list[bytes]:
    """The WebSocket frames of a cryptofeed capture in the fixtures."""
    path = shared_fixture(f"binance/cryptofeed/{name}")
    out = []
    for line in path.read_bytes().splitlines():
        if not line or b" <-> " in line or line.startswith(b"configuration:"):
            continue
        out.append(line.partition(b": ")[2])
    return out


def _mutate(frame: bytes, rng: random.Random) -> bytes:
    """Damage a frame the way a bad feed or a bug would."""
    how = rng.randrange(6)
    if how == 0:
        return frame[: rng.randrange(len(frame))]
    msg = json.loads(frame)
    data = msg.get("data", msg)
    key = rng.choice(list(data))
    if how == 1:
        del data[key]
    elif how == 2:
        data[key] = rng.choice([None, True, "x", 1.5, [], 2**64, -5, "1e-5"])
    elif how == 3 and data.get("b") and isinstance(data["b"], list):
        data["b"][0] = rng.choice(
            [["1.5"], ["1", "2", "3"], "12", ["1.5", 2], ["1.5", "2\x00"], ["+1", "-2"]]
        )
    elif how == 4:
        data["s"] = "NOPE"
    else:
        return b"garbage" + frame
    return json.dumps(msg).encode()


@pytest.mark.parametrize("speedup", ROADS)
@pytest.mark.parametrize(
    ("name", "market"), [("BINANCE.ws.1.0", "spot"), ("BINANCE_FUTURES.ws.1.0", "usdm")]
)
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 80), damaged=st.floats(0, 0.3))
def test_batch_equals_frame_by_frame(
    speedup: bool, name: str, market: str, seed: int, size: int, damaged: float
) -> None:
    frames = recorded_frames(name)
    rng = random.Random(seed)
    picked = [rng.choice(frames) for _ in range(size)]
    picked = [_mutate(f, rng) if rng.random() < damaged else f for f in picked]
    recv = [1_700_000_000_000_000_000 + i for i in range(size)]
    one = Decoder({}, market=market, assign_from=1)
    batch_decoder = BatchDecoder(
        Decoder(dict(one.symbols), market=market, assign_from=1), speedup=speedup
    )
    # Same symbol ids on both sides: learn them first from the whole file.
    for f in frames:
        with contextlib.suppress(Exception):
            one.decode(f, 0)
    batch_decoder.decoder.symbols.update(one.symbols)
    got = batch_decoder.decode(picked, recv)
    assert_as_frame_by_frame(got, one, picked, recv)


_ODD = [
    "",
    ".",
    "5.",
    ".5",
    "01.5",
    "00.1",
    "1.2.3",
    "1e5",
    "-1.0",
    " 1.0",
    "1,0",
    "NaN",
    "1.000000001",
]
_ODD += ["123456789012.12345678", "99999999.99999999", "0.12345678", "1.5\\u0030", "1\x00"]


def _decimal(draw_int: int, rng: random.Random) -> str:
    """Mostly plain decimals of every length the float road must split on; some odd ones."""
    if rng.random() < 0.08:
        return rng.choice(_ODD)
    whole = str(rng.randrange(10 ** rng.randint(1, 12)))
    decimals = rng.randint(0, 9) if draw_int % 7 == 0 else rng.randint(1, 8)
    frac = "".join(rng.choice("0123456789") for _ in range(decimals))
    return f"{whole}.{frac}" if decimals or rng.random() < 0.5 else whole


def _compact_depth(i: int, rng: random.Random, market: str) -> bytes:
    sides = [
        [[_decimal(i + j, rng), _decimal(i - j, rng)] for j in range(rng.randint(0, 6))]
        for _side in range(2)
    ]
    data: dict[str, object] = {"e": "depthUpdate", "E": 1_700_000_000_000 + i}
    if market == "usdm":
        data["T"] = 1_700_000_000_000 + i
    data |= {"s": "BTCUSDT", "U": 10 * i, "u": 10 * i + 9}
    if market == "usdm":
        data["pu"] = 10 * i - 1
    data |= {"b": sides[0], "a": sides[1]}
    msg = {"stream": "btcusdt@depth", "data": data} if rng.random() < 0.5 else data
    frame = json.dumps(msg, separators=(",", ":")).encode()
    if rng.random() < 0.1:  # a damaged byte anywhere
        k = rng.randrange(len(frame))
        frame = frame[:k] + bytes([rng.randrange(256)]) + frame[k + 1 :]
    return frame


@pytest.mark.parametrize("speedup", ROADS)
@pytest.mark.parametrize("market", ["spot", "usdm"])
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 60))
def test_raw_bytes_depth_road_equals_frame_by_frame(
    speedup: bool, market: str, seed: int, size: int
) -> None:
    """Compact depth frames (as Binance sends them) with values of every shape."""
    rng = random.Random(seed)
    frames = [_compact_depth(i, rng, market) for i in range(size)]
    recv = [1_700_000_000_000_000_000 + i for i in range(size)]
    got = BatchDecoder(Decoder({"BTCUSDT": 7}, market=market), speedup=speedup).decode(frames, recv)
    assert_as_frame_by_frame(got, Decoder({"BTCUSDT": 7}, market=market), frames, recv)


def test_compact_depth_frames_take_the_raw_bytes_road() -> None:
    """The fast road is really taken by frames shaped like Binance's (else it is dead code)."""
    frame = (
        b'{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT",'
        b'"U":1,"u":2,"b":[["60000.10","1.50000000"]],"a":[["60000.20","0.001"],["60001.0","2.5"]]}}'
    )
    decoder = BatchDecoder(Decoder({"BTCUSDT": 3}), speedup=False)
    batch = decoder.decode([frame], 5)
    assert batch.events == [("depthUpdate", "BTCUSDT", 0, 4)]
    levels = batch.records[1:]
    assert levels["px"].tolist() == [6_000_010_000_000, 6_000_020_000_000, 6_000_100_000_000]
    assert levels["qty"].tolist() == [150_000_000, 100_000, 250_000_000]
    acc = batch_module._Depth()
    assert decoder._depth_raw(frame, 5, 0, acc, {"BTCUSDT": 3}, []) == 4
    assert acc.raw == [True]


_ODD_INTS: list[object] = [
    0,
    -1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    1.5,
    "7",
    None,
    True,
]
_ODD_VALUES: list[object] = [*_ODD, None, 5, True, ["1"], "1.5\u00e9"]


def _value(rng: random.Random, kind: str) -> object:
    """A field value as Binance sends it, or now and then one that is wrong or odd."""
    odd = rng.random() < 0.06
    if kind == "dec":
        return rng.choice(_ODD_VALUES) if odd else _decimal(rng.randrange(100), rng)
    if kind == "ms":
        return (
            rng.choice([*_ODD_INTS, 9_223_372_036_854, 9_223_372_036_855])
            if odd
            else (1_700_000_000_000 + rng.randrange(10**6))
        )
    if kind == "int":
        return rng.choice(_ODD_INTS) if odd else rng.randrange(10**12)
    if kind == "bool":
        return rng.choice([None, 0, 1, "true"]) if odd else rng.random() < 0.5
    return rng.choice(["NOPE", "", None, 5, "BTC\\u0055SDT"]) if odd else "BTCUSDT"


_SHAPES: dict[str, list[tuple[str, str]]] = {
    # Binance's key orders (spot, USD-M), with fields the decoder ignores.
    "trade_spot": [("e", "trade"), ("E", "ms"), ("s", "sym"), ("t", "int"), ("p", "dec"),
                   ("q", "dec"), ("T", "ms"), ("m", "bool"), ("M", "bool")],
    "trade_ids": [("e", "trade"), ("E", "ms"), ("s", "sym"), ("t", "int"), ("p", "dec"),
                  ("q", "dec"), ("b", "int"), ("a", "int"), ("T", "ms"), ("m", "bool")],
    "trade_usdm": [("e", "trade"), ("E", "ms"), ("T", "ms"), ("s", "sym"), ("t", "int"),
                   ("p", "dec"), ("q", "dec"), ("X", "MARKET"), ("m", "bool")],
    "agg_spot": [("e", "aggTrade"), ("E", "ms"), ("s", "sym"), ("a", "int"), ("p", "dec"),
                 ("q", "dec"), ("f", "int"), ("l", "int"), ("T", "ms"), ("m", "bool"),
                 ("M", "bool")],
    "agg_usdm": [("e", "aggTrade"), ("E", "ms"), ("a", "int"), ("s", "sym"), ("p", "dec"),
                 ("q", "dec"), ("f", "int"), ("l", "int"), ("T", "ms"), ("m", "bool")],
    "ticker_spot": [("u", "int"), ("s", "sym"), ("b", "dec"), ("B", "dec"), ("a", "dec"),
                    ("A", "dec")],
    "ticker_usdm": [("e", "bookTicker"), ("u", "int"), ("s", "sym"), ("b", "dec"),
                    ("B", "dec"), ("a", "dec"), ("A", "dec"), ("T", "ms"), ("E", "ms")],
}  # fmt: skip


def _compact_event(rng: random.Random) -> bytes:
    """One compact frame of every shape the speedup reads, sometimes damaged."""
    keys = _SHAPES[rng.choice(sorted(_SHAPES))]
    data: dict[str, object] = {}
    for key, kind in keys:
        if kind in ("dec", "ms", "int", "bool", "sym"):
            data[key] = _value(rng, kind)
        else:
            data[key] = kind
    how = rng.random()
    if how < 0.05 and data:
        del data[rng.choice(list(data))]
    elif how < 0.1:
        data["e"] = rng.choice([None, "trade", "aggTrade", "bookTicker", "kline", 3])
    elif how < 0.15:
        items = list(data.items())
        rng.shuffle(items)
        data = dict(items)
    msg = {"stream": "btcusdt@x", "data": data} if rng.random() < 0.7 else data
    text = json.dumps(msg, separators=(",", ":"), ensure_ascii=rng.random() < 0.9)
    if rng.random() < 0.05:
        text = text.replace(",", ", ").replace(":", " : ")  # JSON whitespace
    if rng.random() < 0.05:  # a duplicate key: the last one counts
        cut = 2 if "stream" in msg else 1
        text = text[:-cut] + ',"p":"1.0"' + text[-cut:]
    frame = text.encode()
    if rng.random() < 0.05:  # a damaged byte anywhere
        k = rng.randrange(len(frame))
        frame = frame[:k] + bytes([rng.randrange(256)]) + frame[k + 1 :]
    return frame


@pytest.mark.parametrize("speedup", ROADS)
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 60))
def test_trades_and_tickers_of_every_shape_equal_frame_by_frame(
    speedup: bool, seed: int, size: int
) -> None:
    rng = random.Random(seed)
    frames = [_compact_event(rng) for _ in range(size)]
    recv = [1_700_000_000_000_000_000 + i for i in range(size)]
    got = BatchDecoder(Decoder({"BTCUSDT": 7}), speedup=speedup).decode(frames, recv)
    assert_as_frame_by_frame(got, Decoder({"BTCUSDT": 7}), frames, recv)


@pytest.mark.skipif(not batch_module.SPEEDUP, reason="the C speedup is not built")
def test_speedup_reads_binance_shaped_frames_itself() -> None:
    """The C scanner really takes the busy events (else it is dead code) and declines the rest."""
    from connector.binance import _scan

    out = rec.empty(8)
    symbols = {"BTCUSDT": 3}
    trade = (
        b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1700000000001,"s":"BTCUSDT",'
        b'"t":12,"p":"60000.10","q":"0.00100000","T":1700000000000,"m":true,"M":true}}'
    )
    assert _scan.scan(trade, out, 0, symbols, 5) == ("trade", "BTCUSDT", 1)
    expected = Decoder(symbols).decode(trade, 5).records
    assert out[:1].tobytes() == expected.tobytes()
    ticker = b'{"u":400900217,"s":"BTCUSDT","b":"25.35","B":"31.21","a":"25.36","A":"40.66"}'
    assert _scan.scan(ticker, out, 1, symbols, 5) == ("bookTicker", "BTCUSDT", 2)
    assert out[1:3].tobytes() == Decoder(symbols).decode(ticker, 5).records.tobytes()
    # Declined: another event, an escape, an unknown symbol, a float, a 9th decimal.
    for frame in (
        b'{"e":"kline","E":1,"s":"BTCUSDT"}',
        trade.replace(b'"BTCUSDT"', b'"BTC\\u0055SDT"'),
        trade.replace(b"BTCUSDT", b"ETHUSDT"),
        trade.replace(b'"t":12', b'"t":12.0'),
        trade.replace(b'"0.00100000"', b'"0.001000000"'),
    ):
        assert _scan.scan(frame, out, 3, symbols, 5) is None
    # No room: says how many records it needs and writes nothing.
    assert _scan.scan(trade, out, 8, symbols, 5) == 1
    with pytest.raises(ValueError, match="offset"):
        _scan.scan(trade, out, 9, symbols, 5)


@pytest.mark.parametrize("speedup", ROADS)
def test_batch_grows_for_big_depth_messages(speedup: bool) -> None:
    """A 1000-level message after small ones: the scratch array grows, nothing is lost."""
    levels = [[f"{60000 + j}.5", "1.25"] for j in range(1000)]
    big = {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 5, "u": 6, "b": levels, "a": levels}
    small = {
        "e": "trade",
        "E": 1,
        "s": "BTCUSDT",
        "t": 1,
        "p": "1.0",
        "q": "2.0",
        "T": 1,
        "m": False,
    }
    frames = [json.dumps(small).encode()] * 3 + [json.dumps(big).encode()] * 5
    got = BatchDecoder(Decoder({"BTCUSDT": 1}), speedup=speedup).decode(frames, 9)
    want = np.concatenate([Decoder({"BTCUSDT": 1}).decode(f, 9).records for f in frames])
    assert len(got.records) == 3 + 5 * 2001
    assert got.records.tobytes() == want.tobytes()
