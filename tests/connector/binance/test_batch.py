"""The batch decoder gives exactly what decoding frame by frame gives."""

from __future__ import annotations

import contextlib
import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.binance.batch import BatchDecoder
from connector.binance.wire import Decoder
from tests.conftest import shared_fixture

pytestmark = pytest.mark.unit


def _frames(name: str) -> list[bytes]:
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


@pytest.mark.parametrize(
    ("name", "market"), [("BINANCE.ws.1.0", "spot"), ("BINANCE_FUTURES.ws.1.0", "usdm")]
)
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 80), damaged=st.floats(0, 0.3))
def test_batch_equals_frame_by_frame(
    name: str, market: str, seed: int, size: int, damaged: float
) -> None:
    frames = _frames(name)
    rng = random.Random(seed)
    picked = [rng.choice(frames) for _ in range(size)]
    picked = [_mutate(f, rng) if rng.random() < damaged else f for f in picked]
    recv = [1_700_000_000_000_000_000 + i for i in range(size)]
    one = Decoder({}, market=market, assign_from=1)
    batch_decoder = BatchDecoder(Decoder(dict(one.symbols), market=market, assign_from=1))
    # Same symbol ids on both sides: learn them first from the whole file.
    for f in frames:
        with contextlib.suppress(Exception):
            one.decode(f, 0)
    batch_decoder.decoder.symbols.update(one.symbols)
    expected, errors, events = [], [], []
    total = 0
    for i, f in enumerate(picked):
        try:
            d = one.decode(f, recv[i])
        except ValueError:
            errors.append(i)
            continue
        events.append((d.event, d.symbol, total, total + len(d.records)))
        total += len(d.records)
        expected.append(d.records)
    got = batch_decoder.decode(picked, recv)
    want = np.concatenate(expected) if expected else np.zeros(0, dtype=got.records.dtype)
    assert got.records.tobytes() == want.tobytes()
    assert got.events == events
    assert [i for i, _e in got.errors] == errors


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


@pytest.mark.parametrize("market", ["spot", "usdm"])
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 60))
def test_raw_bytes_depth_road_equals_frame_by_frame(market: str, seed: int, size: int) -> None:
    """Compact depth frames (as Binance sends them) with values of every shape."""
    rng = random.Random(seed)
    frames = [_compact_depth(i, rng, market) for i in range(size)]
    recv = [1_700_000_000_000_000_000 + i for i in range(size)]
    one = Decoder({"BTCUSDT": 7}, market=market)
    expected, errors = [], []
    for i, f in enumerate(frames):
        try:
            expected.append(one.decode(f, recv[i]).records)
        except ValueError:
            errors.append(i)
    got = BatchDecoder(Decoder({"BTCUSDT": 7}, market=market)).decode(frames, recv)
    want = np.concatenate(expected) if expected else np.zeros(0, dtype=got.records.dtype)
    assert got.records.tobytes() == want.tobytes()
    assert [i for i, _e in got.errors] == errors


def test_compact_depth_frames_take_the_raw_bytes_road() -> None:
    """The fast road is really taken by frames shaped like Binance's (else it is dead code)."""
    frame = (
        b'{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1700000000000,"s":"BTCUSDT",'
        b'"U":1,"u":2,"b":[["60000.10","1.50000000"]],"a":[["60000.20","0.001"],["60001.0","2.5"]]}}'
    )
    decoder = BatchDecoder(Decoder({"BTCUSDT": 3}))
    batch = decoder.decode([frame], 5)
    assert batch.events == [("depthUpdate", "BTCUSDT", 0, 4)]
    levels = batch.records[1:]
    assert levels["px"].tolist() == [6_000_010_000_000, 6_000_020_000_000, 6_000_100_000_000]
    assert levels["qty"].tolist() == [150_000_000, 100_000, 250_000_000]
    from connector.binance import batch as batch_module

    acc = batch_module._Depth()
    assert decoder._depth_raw(frame, 5, 0, acc, {"BTCUSDT": 3}, []) == 4
    assert acc.raw == [True]
