"""The batch decoder gives exactly what decoding frame by frame gives."""

from __future__ import annotations

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
        try:
            one.decode(f, 0)
        except Exception:
            pass
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
