"""A venue-free source of realistic book diffs and trades, for running,
testing and benchmarking the runtime on its own.

Each instrument has a centre price; bids live at centre - k ticks and asks
at centre + k ticks (k = 1..levels), so books never cross. The stream starts
with a snapshot of every instrument (BOOK_CLEAR, then every level with
SNAPSHOT), then sends messages: depth diffs that set or delete 1-3 levels,
and trades at the touch. Now and then an instrument's centre moves and it
gets a fresh snapshot. The content is a pure function of the seed (only the
timestamps come from the clock), generated in vectorised chunks so it can
outrun the pipeline (tens of millions of records per second).

``rate`` is in messages per second (0: as fast as the ring takes them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import record as rec
from pipeline.adapter import AdapterContext, check_params
from pipeline.errors import ConfigError
from pipeline.record import Flag, Kind, Records, Side

TICK = 1_000_000  # 0.01 in fixed point
LOT = 100_000_000  # 1.0


@dataclass(frozen=True)
class SyntheticParams:
    instruments: int = 100
    first_inst: int = 1
    levels: int = 10
    rate: float = 0.0
    seed: int = 1
    chunk: int = 256
    """Messages generated per batch at full speed."""
    trade_ratio: float = 0.2
    move_every: int = 5000
    """On average one centre move (and re-snapshot) per this many messages; 0: never."""
    max_messages: int = 0
    """Stop after this many messages (0: never)."""


_PARAM_TYPES: dict[str, type | tuple[type, ...]] = {
    "instruments": int,
    "first_inst": int,
    "levels": int,
    "rate": (int, float),
    "seed": int,
    "chunk": int,
    "trade_ratio": (int, float),
    "move_every": int,
    "max_messages": int,
}


class SyntheticSource:
    """The generator; :meth:`chunks` is the pure core, :meth:`records` paces it."""

    def __init__(self, params: SyntheticParams, src: int = 0) -> None:
        if params.instruments < 1 or params.levels < 1 or params.chunk < 1:
            raise ValueError("instruments, levels and chunk must be positive")
        self.params = params
        self.src = src
        self.rng = np.random.default_rng(params.seed)
        n = params.instruments
        self.insts = np.arange(params.first_inst, params.first_inst + n, dtype=np.uint32)
        self.centre = (self.rng.integers(1_000, 100_000, n) * TICK).astype(np.int64)
        self.trade_id = 0
        self.sent = 0

    def instruments(self) -> dict[int, str]:
        return {int(i): f"SYN{int(i):05d}" for i in self.insts}

    def snapshot(self, idx: np.ndarray, now: int) -> Records:
        """BOOK_CLEAR + every level for the instruments at positions ``idx``."""
        levels = self.params.levels
        per = 1 + 2 * levels
        out = rec.empty(len(idx) * per)
        inst = np.repeat(self.insts[idx], per)
        out["inst"] = inst
        out["ts_exch"] = now
        out["ts_recv"] = now
        kind = np.full(per, Kind.BOOK_LEVEL, dtype=np.uint8)
        kind[0] = Kind.BOOK_CLEAR
        out["kind"] = np.tile(kind, len(idx))
        k = np.concatenate([[0], np.arange(1, levels + 1), np.arange(1, levels + 1)])
        side = np.concatenate([[0], np.full(levels, Side.BID), np.full(levels, Side.ASK)])
        sign = np.where(side == Side.BID, -1, 1)
        out["side"] = np.tile(side, len(idx))
        centre = np.repeat(self.centre[idx], per)
        out["px"] = np.where(
            np.tile(k, len(idx)) > 0, centre + np.tile(sign * k, len(idx)) * TICK, 0
        )
        qty = self.rng.integers(1, 500, len(out)) * LOT
        out["qty"] = np.where(out["kind"] == Kind.BOOK_LEVEL, qty, 0)
        out["aux"] = np.where(out["kind"] == Kind.BOOK_LEVEL, self.rng.integers(1, 20, len(out)), 0)
        out["aux2"] = -1
        flags = np.full(per, Flag.SNAPSHOT, dtype=np.uint8)
        flags[-1] |= Flag.LAST
        out["flags"] = np.tile(flags, len(idx))
        return out

    def chunk(self, n_messages: int, now: int) -> Records:
        """``n_messages`` messages (1 to 3 records each) as one record batch.

        Two draws of uniforms per chunk (per message, then per record): numpy
        call overhead, not arithmetic, is what a small chunk costs."""
        p = self.params
        per_msg = self.rng.random((3, n_messages))
        idx = (per_msg[0] * p.instruments).astype(np.intp)
        is_trade = per_msg[1] < p.trade_ratio
        counts = np.where(is_trade, 1, 1 + (per_msg[2] * 3).astype(np.intp))
        ends = np.cumsum(counts)
        total = int(ends[-1])
        msg = np.repeat(np.arange(n_messages), counts)
        per_rec = self.rng.random((5, total))
        trade = is_trade[msg]
        bid = per_rec[0] < 0.5
        k = np.where(trade, 1, 1 + (per_rec[1] * p.levels).astype(np.int64))
        deleted = (per_rec[2] < 0.1) & ~trade
        out = rec.empty(total)
        out["inst"] = self.insts[idx[msg]]
        out["ts_exch"] = now
        out["ts_recv"] = now
        out["side"] = np.where(bid, Side.BID, Side.ASK)
        out["px"] = self.centre[idx[msg]] + np.where(bid, -k, k) * TICK
        out["qty"] = np.where(deleted, 0, (1 + (per_rec[3] * 499).astype(np.int64)) * LOT)
        out["kind"] = np.where(trade, Kind.TRADE, Kind.BOOK_LEVEL)
        trade_ids = self.trade_id + np.cumsum(trade)
        self.trade_id = int(trade_ids[-1])
        orders = 1 + (per_rec[4] * 19).astype(np.int64)
        out["aux"] = np.where(trade, trade_ids, np.where(deleted, 0, orders))
        out["aux2"] = np.where(trade, 0, -1)
        out["flags"][ends - 1] = Flag.LAST
        self.sent += n_messages
        return out

    def messages(self, n_messages: int, now: int) -> Records:
        """A chunk of messages, sometimes followed by a centre move and its fresh snapshot."""
        batch = self.chunk(n_messages, now)
        move_every = self.params.move_every
        if move_every and self.rng.random() < n_messages / move_every:
            i = int(self.rng.integers(0, self.params.instruments))
            self.centre[i] += int(self.rng.integers(-5, 6)) * TICK
            batch = np.concatenate([batch, self.snapshot(np.array([i]), now)])
        return batch

    @staticmethod
    def _received(batch: Records) -> Records:
        """Stamp the receive time as the batch leaves the generator: generating
        stands in for the venue, not for our decoding, so it is not latency."""
        batch["ts_recv"] = time.time_ns()
        return batch

    def _remaining(self, n: int) -> int:
        limit = self.params.max_messages
        return n if not limit else min(n, limit - self.sent)

    def _done(self) -> bool:
        return bool(self.params.max_messages) and self.sent >= self.params.max_messages

    def chunks(self, clock: Any = time.time_ns) -> Iterator[Records]:
        """Snapshots first, then batches of ``chunk`` messages (unpaced)."""
        yield self.snapshot(np.arange(self.params.instruments), clock())
        while not self._done():
            yield self.messages(self._remaining(self.params.chunk), clock())

    async def records(self) -> AsyncIterator[Records]:
        """The stream, paced to ``rate`` messages per second (0: unpaced)."""
        p = self.params
        if not p.rate:
            for batch in self.chunks():
                yield self._received(batch)
                await asyncio.sleep(0)  # let the host's heartbeat and signals run
            return
        # Paced: a batch per millisecond tick with that tick's messages; the
        # schedule is absolute, so the mean rate holds even after a stall.
        yield self._received(self.snapshot(np.arange(p.instruments), time.time_ns()))
        per_tick = p.rate / 1000.0
        owed = 0.0
        start = time.monotonic()
        tick = 0
        while not self._done():
            tick += 1
            delay = start + tick / 1000.0 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            owed += per_tick
            n = int(owed)
            if n:
                owed -= n
                yield self._received(self.messages(self._remaining(n), time.time_ns()))


_PARAM_RANGES: dict[str, tuple[float, float]] = {
    "instruments": (1, 1 << 22),
    "first_inst": (1, (1 << 32) - 1),  # 0 means "the whole source" in STATUS records
    "levels": (1, 1000),
    "rate": (0, 1e8),
    "chunk": (1, 1 << 16),
    "trade_ratio": (0, 1),
    "move_every": (0, 1 << 62),
    "max_messages": (0, 1 << 62),
}


def factory(params: Mapping[str, Any], context: AdapterContext) -> SyntheticSource:
    """The adapter entry point named in configs: ``pipeline.synthetic:factory``."""
    check_params(params, _PARAM_TYPES, context.feed)
    for key, value in params.items():
        low, high = _PARAM_RANGES.get(key, (-float("inf"), float("inf")))
        if not low <= value <= high:
            raise ConfigError(
                f"feeds.{context.feed}.params.{key} must be in {low:g}..{high:g}, got {value!r}"
            )
    return SyntheticSource(SyntheticParams(**params), src=context.src)
