"""Kite ticker decoding throughput beside the official client's algorithm,
measured in the same run on the same frames."""

from __future__ import annotations

import statistics
import struct
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np

from connector.zerodha.ticker import EXCHANGE_MAP, FULL_DTYPE, TickerDecoder, ticks


def full_frames(n_frames: int, packets_per_frame: int, n_tokens: int, seed: int = 1) -> list[bytes]:
    """Frames of full-mode (184-byte) packets with random but plausible values:
    NSE/NFO tokens, prices around a few thousand rupees in paise, a 5+5 book."""
    rng = np.random.default_rng(seed)
    segments = np.array([EXCHANGE_MAP["nse"], EXCHANGE_MAP["nfo"]], dtype=np.uint32)
    pool = (rng.integers(1, 1 << 20, n_tokens, dtype=np.uint32) << 8) | rng.choice(
        segments, n_tokens
    )
    n = n_frames * packets_per_frame
    p = np.zeros(n, dtype=FULL_DTYPE)
    ltp = rng.integers(10_000, 500_000, n)
    p["instrument_token"] = rng.choice(pool, n)
    p["last_price"] = ltp
    p["last_traded_quantity"] = rng.integers(1, 5_000, n)
    p["average_traded_price"] = ltp + rng.integers(-500, 500, n)
    p["volume_traded"] = rng.integers(0, 50_000_000, n)
    p["total_buy_quantity"] = rng.integers(0, 5_000_000, n)
    p["total_sell_quantity"] = rng.integers(0, 5_000_000, n)
    p["open"] = ltp + rng.integers(-2_000, 2_000, n)
    p["high"] = ltp + rng.integers(0, 3_000, n)
    p["low"] = ltp - rng.integers(0, 3_000, n)
    p["close"] = ltp + rng.integers(-2_000, 2_000, n)
    now = 1_700_000_000 + rng.integers(0, 20_000, n)
    p["last_trade_time"] = now - rng.integers(0, 5, n)
    p["oi"] = rng.integers(0, 10_000_000, n)
    p["oi_day_high"] = p["oi"] + rng.integers(0, 100_000, n)
    p["oi_day_low"] = p["oi"] - np.minimum(p["oi"], rng.integers(0, 100_000, n))
    p["exchange_timestamp"] = now
    steps = np.arange(1, 6)
    p["depth"]["price"][:, :5] = ltp[:, None] - 5 * steps
    p["depth"]["price"][:, 5:] = ltp[:, None] + 5 * steps
    p["depth"]["quantity"] = rng.integers(1, 10_000, (n, 10))
    p["depth"]["orders"] = rng.integers(1, 100, (n, 10))
    raw = p.tobytes()
    frames = []
    for f in range(n_frames):
        parts = [struct.pack(">H", packets_per_frame)]
        for i in range(f * packets_per_frame, (f + 1) * packets_per_frame):
            parts.append(struct.pack(">H", 184))
            parts.append(raw[i * 184 : (i + 1) * 184])
        frames.append(b"".join(parts))
    return frames


class OfficialParser:
    """The official pykiteconnect ``_split_packets`` + ``_parse_binary``
    algorithm, re-implemented step for step for the baseline: one
    ``struct.unpack`` of a slice per field, float division by the segment
    divisor, ``datetime.fromtimestamp``, and a dict per tick."""

    MODE_FULL, MODE_QUOTE, MODE_LTP = "full", "quote", "ltp"

    def _unpack_int(self, data: bytes, start: int, end: int, byte_format: str = "I") -> Any:
        return struct.unpack(">" + byte_format, data[start:end])[0]

    def _split_packets(self, data: bytes) -> list[bytes]:
        if len(data) < 2:
            return []
        count = self._unpack_int(data, 0, 2, byte_format="H")
        packets = []
        j = 2
        for _ in range(count):
            length = self._unpack_int(data, j, j + 2, byte_format="H")
            packets.append(data[j + 2 : j + 2 + length])
            j = j + 2 + length
        return packets

    def _time(self, packet: bytes, start: int) -> datetime | None:
        try:
            return datetime.fromtimestamp(self._unpack_int(packet, start, start + 4))
        except Exception:
            return None

    def parse_binary(self, data: bytes) -> list[dict[str, Any]]:
        """Ticks of one frame, the official way."""
        out: list[dict[str, Any]] = []
        u = self._unpack_int
        for packet in self._split_packets(data):
            token = u(packet, 0, 4)
            segment = token & 0xFF
            if segment == EXCHANGE_MAP["cds"]:
                divisor = 10000000.0
            elif segment == EXCHANGE_MAP["bcd"]:
                divisor = 10000.0
            else:
                divisor = 100.0
            tradable = segment != EXCHANGE_MAP["indices"]
            size = len(packet)
            if size == 8:
                out.append(
                    {
                        "tradable": tradable,
                        "mode": self.MODE_LTP,
                        "instrument_token": token,
                        "last_price": u(packet, 4, 8) / divisor,
                    }
                )
            elif size in (28, 32):
                d: dict[str, Any] = {
                    "tradable": tradable,
                    "mode": self.MODE_QUOTE if size == 28 else self.MODE_FULL,
                    "instrument_token": token,
                    "last_price": u(packet, 4, 8) / divisor,
                    "ohlc": {
                        "high": u(packet, 8, 12) / divisor,
                        "low": u(packet, 12, 16) / divisor,
                        "open": u(packet, 16, 20) / divisor,
                        "close": u(packet, 20, 24) / divisor,
                    },
                }
                d["change"] = 0
                if d["ohlc"]["close"] != 0:
                    d["change"] = (d["last_price"] - d["ohlc"]["close"]) * 100 / d["ohlc"]["close"]
                if size == 32:
                    d["exchange_timestamp"] = self._time(packet, 28)
                out.append(d)
            elif size in (44, 184):
                d = {
                    "tradable": tradable,
                    "mode": self.MODE_QUOTE if size == 44 else self.MODE_FULL,
                    "instrument_token": token,
                    "last_price": u(packet, 4, 8) / divisor,
                    "last_traded_quantity": u(packet, 8, 12),
                    "average_traded_price": u(packet, 12, 16) / divisor,
                    "volume_traded": u(packet, 16, 20),
                    "total_buy_quantity": u(packet, 20, 24),
                    "total_sell_quantity": u(packet, 24, 28),
                    "ohlc": {
                        "open": u(packet, 28, 32) / divisor,
                        "high": u(packet, 32, 36) / divisor,
                        "low": u(packet, 36, 40) / divisor,
                        "close": u(packet, 40, 44) / divisor,
                    },
                }
                d["change"] = 0
                if d["ohlc"]["close"] != 0:
                    d["change"] = (d["last_price"] - d["ohlc"]["close"]) * 100 / d["ohlc"]["close"]
                if size == 184:
                    d["last_trade_time"] = self._time(packet, 44)
                    d["oi"] = u(packet, 48, 52)
                    d["oi_day_high"] = u(packet, 52, 56)
                    d["oi_day_low"] = u(packet, 56, 60)
                    d["exchange_timestamp"] = self._time(packet, 60)
                    depth: dict[str, list[dict[str, Any]]] = {"buy": [], "sell": []}
                    for i, q in enumerate(range(64, size, 12)):
                        depth["sell" if i >= 5 else "buy"].append(
                            {
                                "quantity": u(packet, q, q + 4),
                                "price": u(packet, q + 4, q + 8) / divisor,
                                "orders": u(packet, q + 8, q + 10, byte_format="H"),
                            }
                        )
                    d["depth"] = depth
                out.append(d)
        return out


def _timed(run: Callable[[], object], budget_s: float) -> tuple[int, float]:
    """Call ``run`` until ``budget_s`` passed (at least once): (calls, seconds)."""
    calls = 0
    t0 = time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= budget_s:
            return calls, elapsed


def bench_kite_decode(
    seconds: float, packets_per_frame: int = 200, n_tokens: int = 5000, pairs: int = 7
) -> dict[str, Any]:
    """Full-mode packets/s of :class:`TickerDecoder` (every field into records)
    vs the official client's algorithm (tick dicts), same frames, same run.

    Runs ``pairs`` alternating measurements (baseline, ours, baseline, ours
    ...) within about ``seconds`` and reports the median of the per-pair
    ratios, so drift on a shared machine hits both sides alike.
    """
    frames = full_frames(64, packets_per_frame, n_tokens)
    packets_per_pass = len(frames) * packets_per_frame
    # A realistic decoder: it maps every token to a dense instrument id.
    tokens = np.unique(
        np.concatenate([np.ndarray((packets_per_frame,), ">u4", f, 4, (186,)) for f in frames])
    )
    decoder = TickerDecoder({int(t): i for i, t in enumerate(tokens.tolist(), 1)})
    official = OfficialParser()

    def ours() -> None:
        for frame in frames:
            decoder.decode(frame, 1)

    def baseline() -> None:
        for frame in frames:
            official.parse_binary(frame)

    budget = max(seconds, 0.0) / (2 * pairs)
    rates_ours: list[float] = []
    rates_base: list[float] = []
    ratios: list[float] = []
    for _ in range(pairs):
        calls, elapsed = _timed(baseline, budget)
        base_rate = calls * packets_per_pass / elapsed
        calls, elapsed = _timed(ours, budget)
        our_rate = calls * packets_per_pass / elapsed
        rates_base.append(base_rate)
        rates_ours.append(our_rate)
        ratios.append(our_rate / base_rate)
    return {
        "packets_per_s": round(statistics.median(rates_ours)),
        "baseline_packets_per_s": round(statistics.median(rates_base)),
        "ratio": round(statistics.median(ratios), 2),
        "pairs": pairs,
        "packets_per_frame": packets_per_frame,
        "packet_bytes": 184,
        "distinct_tokens": n_tokens,
    }


def self_check(seed: int = 2) -> bool:
    """Both sides read the same numbers from the same frame (the tests call it)."""
    frame = full_frames(1, 20, 50, seed)[0]
    ours = ticks(frame)
    theirs = OfficialParser().parse_binary(frame)
    for a, b in zip(ours, theirs, strict=True):
        for key in ("last_price", "volume_traded", "depth", "ohlc", "change", "oi"):
            if a[key] != b[key]:
                return False
    return len(ours) == len(theirs) == 20
