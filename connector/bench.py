"""Venue benchmarks (decoding), each beside its baseline measured in the same run."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import orjson

from connector.binance.batch import BatchDecoder
from connector.binance.wire import Decoder

Progress = Callable[[str], None]


def _depth_frames(n: int, rng: random.Random) -> list[bytes]:
    """Spot diff-depth messages like Binance's at 100 ms: 20 bids and 20 asks, 8 decimals (~1.4 KB)."""
    frames = []
    for i in range(n):
        bids = [
            [f"{60000 - j * 0.01 - rng.random():.8f}", f"{rng.random() * 5:.8f}"] for j in range(20)
        ]
        asks = [
            [f"{60000 + j * 0.01 + rng.random():.8f}", f"{rng.random() * 5:.8f}"] for j in range(20)
        ]
        data = {
            "e": "depthUpdate",
            "E": 1_700_000_000_000 + i,
            "s": "BTCUSDT",
            "U": 10 * i,
            "u": 10 * i + 9,
            "b": bids,
            "a": asks,
        }
        frames.append(orjson.dumps({"stream": "btcusdt@depth@100ms", "data": data}))
    return frames


def _trade_frames(n: int, rng: random.Random) -> list[bytes]:
    frames = []
    for i in range(n):
        data = {
            "e": "trade", "E": 1_700_000_000_000 + i, "s": "BTCUSDT", "t": 5_000_000 + i,
            "p": f"{60000 + rng.random():.8f}", "q": f"{rng.random():.8f}", "T": 1_700_000_000_000 + i,
            "m": bool(i % 2), "M": True,
        }  # fmt: skip
        frames.append(orjson.dumps({"stream": "btcusdt@trade", "data": data}))
    return frames


def _rate(run: Callable[[], object], n: int, seconds: float) -> float:
    """Messages per second of ``run`` (which handles ``n`` messages), best of repeats within ``seconds``."""
    best = 0.0
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        run()
        best = max(best, n / (time.perf_counter() - t0))
        if time.perf_counter() >= deadline:
            return best


def bench_decode(
    seconds: float = 2.0, batch: int = 256, progress: Progress = lambda _: None
) -> dict[str, Any]:
    """Decoding throughput against bare ``orjson.loads`` of the same messages.

    Ours is the batch decoder (what the feed runs) over batches of ``batch``
    frames, producing complete records; the baseline only parses the JSON.
    Each side alternates in short runs and keeps its best (the host drifts).
    """
    rng = random.Random(1)
    decoder = BatchDecoder(Decoder({"BTCUSDT": 1}))
    out: dict[str, Any] = {}
    for name, frames in (
        ("binance_depth", _depth_frames(4096, rng)),
        ("binance_trade", _trade_frames(16384, rng)),
    ):
        progress(f"decode {name}: {len(frames)} messages, batches of {batch}")
        chunks = [frames[i : i + batch] for i in range(0, len(frames), batch)]

        def baseline(frames: list[bytes] = frames) -> None:
            loads = orjson.loads
            for f in frames:
                loads(f)

        def ours(chunks: list[list[bytes]] = chunks) -> None:
            for chunk in chunks:
                decoder.decode(chunk, 0)

        base_rate = ours_rate = 0.0
        for _ in range(3):
            base_rate = max(base_rate, _rate(baseline, len(frames), seconds / 6))
            ours_rate = max(ours_rate, _rate(ours, len(frames), seconds / 6))
        out[name] = {
            "msgs_per_s": round(ours_rate),
            "baseline_msgs_per_s": round(base_rate),
            "ratio": round(ours_rate / base_rate, 3),
            "batch": batch,
            "bytes_per_msg": len(frames[0]),
        }
    return out
