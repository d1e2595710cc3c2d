"""pipeline.synthetic: the snapshot-then-diffs stream, its invariants (LAST
on every message, books never cross), determinism by seed, max_messages,
the factory's parameter checks and the paced async stream."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import record as rec
from pipeline.adapter import AdapterContext, load_factory
from pipeline.book import BookState
from pipeline.errors import ConfigError
from pipeline.record import Flag, Kind, Side
from pipeline.synthetic import TICK, SyntheticParams, SyntheticSource, factory

pytestmark = pytest.mark.unit


def source(**params: Any) -> SyntheticSource:
    return SyntheticSource(SyntheticParams(**params), src=1)


def collect(src: SyntheticSource) -> list[rec.Records]:
    batches = list(src.chunks())
    assert batches, "no batches"
    return batches


def is_snapshot(records: rec.Records) -> np.ndarray:
    return (records["flags"] & Flag.SNAPSHOT) != 0


def message_count(records: rec.Records) -> int:
    """Messages outside snapshots: records with LAST and without SNAPSHOT."""
    last = (records["flags"] & Flag.LAST) != 0
    return int(np.count_nonzero(last & ~is_snapshot(records)))


def content(records: rec.Records) -> rec.Records:
    """The records without their timestamps (the only clock-dependent fields)."""
    out = records.copy()
    out["ts_exch"] = 0
    out["ts_recv"] = 0
    return out


def stamp(records: rec.Records, src: int = 1) -> rec.Records:
    """What the ingest host does: a source id and seq 1, 2, 3, ..."""
    out = records.copy()
    out["src"] = src
    out["seq"] = np.arange(1, len(out) + 1, dtype=np.uint64)
    return out


def check_snapshot_block(block: rec.Records, inst: int, levels: int, centre: int | None) -> None:
    """One instrument's snapshot: BOOK_CLEAR, then ``levels`` bids and ``levels`` asks."""
    assert len(block) == 1 + 2 * levels
    assert (block["inst"] == inst).all()
    head, body = block[0], block[1:]
    assert head["kind"] == Kind.BOOK_CLEAR
    assert head["side"] == Side.NONE
    assert head["flags"] & Flag.SNAPSHOT
    assert (body["kind"] == Kind.BOOK_LEVEL).all()
    assert (body["flags"] & Flag.SNAPSHOT).all()
    assert (body["qty"] > 0).all()
    assert (body["aux"] > 0).all()
    # LAST only on the block's last record.
    last = (block["flags"] & Flag.LAST) != 0
    assert last.tolist() == [False] * (len(block) - 1) + [True]
    bids = body[body["side"] == Side.BID]
    asks = body[body["side"] == Side.ASK]
    assert len(bids) == len(asks) == levels
    assert len(set(bids["px"].tolist())) == levels
    assert len(set(asks["px"].tolist())) == levels
    assert bids["px"].max() < asks["px"].min()
    if centre is not None:
        assert (bids["px"] < centre).all()
        assert (asks["px"] > centre).all()
        assert sorted(bids["px"].tolist()) == [centre - k * TICK for k in range(levels, 0, -1)]
        assert sorted(asks["px"].tolist()) == [centre + k * TICK for k in range(1, levels + 1)]


# -- the snapshot -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instruments", "levels", "first_inst"), [(1, 1, 1), (7, 4, 10), (50, 10, 1)]
)
def test_stream_starts_with_a_snapshot_of_every_instrument(
    instruments: int, levels: int, first_inst: int
) -> None:
    src = source(
        instruments=instruments, levels=levels, first_inst=first_inst, seed=3, max_messages=10
    )
    centres = src.centre.copy()
    first = next(src.chunks())
    per = 1 + 2 * levels
    assert len(first) == instruments * per
    assert is_snapshot(first).all()
    for i in range(instruments):
        check_snapshot_block(
            first[i * per : (i + 1) * per], first_inst + i, levels, int(centres[i])
        )
    assert src.sent == 0  # the snapshot is not counted as messages
    assert src.instruments() == {
        first_inst + i: f"SYN{first_inst + i:05d}" for i in range(instruments)
    }


def test_every_later_snapshot_is_complete() -> None:
    """Centre moves bring a fresh snapshot; each is a full BOOK_CLEAR + levels block."""
    levels = 3
    src = source(instruments=4, levels=levels, move_every=20, chunk=64, max_messages=4000, seed=5)
    batches = collect(src)
    later = np.concatenate(batches[1:])
    starts = np.flatnonzero(later["kind"] == Kind.BOOK_CLEAR)
    assert len(starts) >= 5, "expected some centre moves"
    for s in starts.tolist():
        block = later[s : s + 1 + 2 * levels]
        check_snapshot_block(block, int(block[0]["inst"]), levels, None)
    # Nothing but those blocks carries SNAPSHOT.
    assert int(is_snapshot(later).sum()) == len(starts) * (1 + 2 * levels)


# -- messages -----------------------------------------------------------------------------


def test_every_message_ends_with_last() -> None:
    src = source(instruments=10, levels=5, chunk=100, max_messages=3000, move_every=200, seed=7)
    batches = collect(src)
    for batch in batches:
        assert batch[-1]["flags"] & Flag.LAST, "a batch ends mid-message"
    stream = np.concatenate(batches[1:])
    diffs = stream[~is_snapshot(stream)]
    ends = np.flatnonzero(diffs["flags"] & Flag.LAST)
    assert len(ends) == 3000 == src.sent
    starts = np.concatenate(([0], ends[:-1] + 1))
    sizes = ends - starts + 1
    assert sizes.min() >= 1
    assert sizes.max() <= 3
    for lo, hi in zip(starts.tolist(), (ends + 1).tolist(), strict=True):
        msg = diffs[lo:hi]
        assert (msg["inst"] == msg[0]["inst"]).all(), "a message spans instruments"
        kinds = set(msg["kind"].tolist())
        assert kinds in ({int(Kind.TRADE)}, {int(Kind.BOOK_LEVEL)})
        if kinds == {int(Kind.TRADE)}:
            assert len(msg) == 1
    # Trades are there, with increasing ids, and deletes (qty 0) too.
    trades = diffs[diffs["kind"] == Kind.TRADE]
    assert len(trades) > 0
    assert (np.diff(trades["aux"]) == 1).all()
    levels = diffs[diffs["kind"] == Kind.BOOK_LEVEL]
    assert (levels["qty"] == 0).any()
    assert (levels["qty"] >= 0).all()


def test_diffs_and_trades_stay_on_their_side_of_the_centre() -> None:
    """chunk() (no centre moves) against the centres it was made from."""
    src = source(instruments=6, levels=8, seed=11)
    centre_of = dict(zip(src.insts.tolist(), src.centre.tolist(), strict=True))
    batch = src.chunk(5000, now=1)
    centre = np.array([centre_of[i] for i in batch["inst"].tolist()], dtype=np.int64)
    bid = batch["side"] == Side.BID
    ask = batch["side"] == Side.ASK
    assert (bid | ask).all()
    assert (batch["px"][bid] < centre[bid]).all()
    assert (batch["px"][ask] > centre[ask]).all()
    assert (np.abs(batch["px"] - centre) <= 8 * TICK).all()
    trade = batch["kind"] == Kind.TRADE
    assert (np.abs(batch["px"][trade] - centre[trade]) == TICK).all()  # at the touch
    assert (batch["qty"][trade] > 0).all()


def _assert_not_crossed(state: BookState, insts: set[int]) -> None:
    for inst in insts:
        b = state.books[inst]
        assert b.consistent, f"book {inst} not consistent after a LAST"
        assert b.valid
        if b.bids and b.asks:
            assert max(b.bids) < min(b.asks), f"book {inst} crossed: {max(b.bids)} >= {min(b.asks)}"


def test_books_built_from_the_stream_never_cross() -> None:
    src = source(instruments=8, levels=4, chunk=50, move_every=25, max_messages=4000, seed=13)
    batches = [stamp(b) for b in collect(src)]
    stream = np.concatenate(batches)
    stream["seq"] = np.arange(1, len(stream) + 1, dtype=np.uint64)
    moves = int((stream["kind"] == Kind.BOOK_CLEAR).sum()) - 8
    assert moves >= 20, "the run should include centre moves"

    # Message by message (the record-by-record path): every point where all books are consistent.
    per_message = BookState()
    ends = (np.flatnonzero(stream["flags"] & Flag.LAST) + 1).tolist()
    lo = 0
    for hi in ends:
        touched = per_message.apply(stream[lo:hi])
        _assert_not_crossed(per_message, touched)
        lo = hi
    assert lo == len(stream)
    assert all(b.consistent for b in per_message.books.values())
    _assert_not_crossed(per_message, set(per_message.books))

    # Batch by batch (the bulk path): the same books.
    per_batch = BookState()
    offset = 0
    for b in batches:
        part = stream[offset : offset + len(b)]
        offset += len(b)
        per_batch.apply(part)
        _assert_not_crossed(per_batch, set(per_batch.books))
    assert {i: b.as_dict() for i, b in per_batch.books.items()} == {
        i: b.as_dict() for i, b in per_message.books.items()
    }
    assert set(per_batch.books) == set(range(1, 9))


# -- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_the_same_content() -> None:
    params = dict(instruments=12, levels=5, chunk=128, move_every=40, max_messages=3000)
    a = np.concatenate(collect(source(seed=99, **params)))
    b = np.concatenate(collect(source(seed=99, **params)))
    assert len(a) == len(b)
    assert np.array_equal(content(a), content(b))


def test_different_seed_gives_different_content() -> None:
    params = dict(instruments=12, levels=5, chunk=128, move_every=40, max_messages=3000)
    a = np.concatenate(collect(source(seed=1, **params)))
    b = np.concatenate(collect(source(seed=2, **params)))
    assert len(a) != len(b) or not np.array_equal(content(a), content(b))
    # Even the opening snapshot differs (centres and quantities come from the seed).
    snap_a = next(source(seed=1, **params).chunks())
    snap_b = next(source(seed=2, **params).chunks())
    assert not np.array_equal(content(snap_a), content(snap_b))


def test_timestamps_come_from_the_clock() -> None:
    ticks = iter(range(1000, 10**6, 1000))
    src = source(instruments=3, levels=2, chunk=10, max_messages=30, move_every=0)
    batches = list(src.chunks(clock=lambda: next(ticks)))
    assert [int(b["ts_exch"][0]) for b in batches] == [1000, 2000, 3000, 4000]
    for b in batches:
        assert (b["ts_exch"] == b["ts_exch"][0]).all()
        assert (b["ts_recv"] == b["ts_exch"]).all()


# -- max_messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_messages", "chunk"), [(1, 256), (255, 256), (256, 256), (1000, 256), (777, 7)]
)
def test_max_messages_stops_after_exactly_that_many(max_messages: int, chunk: int) -> None:
    src = source(instruments=5, levels=3, chunk=chunk, max_messages=max_messages, move_every=30)
    batches = collect(src)
    assert src.sent == max_messages
    assert sum(message_count(b) for b in batches[1:]) == max_messages
    assert len(batches) == 1 + -(-max_messages // chunk)
    assert list(src.chunks())[1:] == []  # a spent source yields nothing more but its snapshot


# -- factory ----------------------------------------------------------------------------------


@pytest.fixture
def context(tmp_path: Path) -> AdapterContext:
    return AdapterContext(feed="x", src=1, data_dir=tmp_path)


def test_factory_builds_a_source_from_params(context: AdapterContext) -> None:
    ctx = AdapterContext(feed="x", src=42, data_dir=context.data_dir)
    src = factory(
        {
            "instruments": 3,
            "levels": 2,
            "rate": 500,
            "seed": 8,
            "first_inst": 100,
            "trade_ratio": 0,
        },
        ctx,
    )
    assert isinstance(src, SyntheticSource)
    assert src.src == 42
    assert src.params == SyntheticParams(
        instruments=3, levels=2, rate=500, seed=8, first_inst=100, trade_ratio=0
    )
    assert src.instruments() == {100: "SYN00100", 101: "SYN00101", 102: "SYN00102"}
    assert load_factory("pipeline.synthetic:factory") is factory
    assert factory({}, context).params == SyntheticParams()


@pytest.mark.parametrize("key", ["instrument", "speed", "Seed", "levels_"])
def test_factory_rejects_unknown_params(context: AdapterContext, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        factory({"instruments": 2, key: 1}, context)
    assert repr(key) in str(info.value)
    assert "feeds.x" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("instruments", "5"),
        ("instruments", 5.0),
        ("instruments", True),
        ("levels", None),
        ("rate", "fast"),
        ("rate", False),
        ("seed", 1.5),
        ("chunk", [1]),
        ("trade_ratio", "0.2"),
        ("move_every", 1.0),
        ("max_messages", "10"),
        ("first_inst", True),
    ],
)
def test_factory_rejects_wrong_types(context: AdapterContext, key: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        factory({key: value}, context)
    assert f"feeds.x.params.{key}" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"), [("instruments", 0), ("levels", 0), ("chunk", 0), ("rate", -1000)]
)
def test_factory_rejects_invalid_values_with_config_error(
    context: AdapterContext, key: str, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        factory({key: value}, context)
    assert key in str(info.value)


# -- the async stream --------------------------------------------------------------------------


async def _drain(src: SyntheticSource) -> list[rec.Records]:
    return [batch async for batch in src.records()]


def test_paced_records_yield_snapshot_then_batches_at_about_the_rate() -> None:
    rate, max_messages = 2000, 300
    src = source(instruments=4, levels=3, rate=rate, max_messages=max_messages, move_every=0)
    t0 = time.monotonic()
    batches = asyncio.run(_drain(src))
    elapsed = time.monotonic() - t0

    assert batches[0]["kind"][0] == Kind.BOOK_CLEAR
    assert len(batches[0]) == 4 * (1 + 2 * 3)
    assert is_snapshot(batches[0]).all()
    assert len(batches) > 2  # paced: many small batches, not one
    assert all(not is_snapshot(b).any() for b in batches[1:])
    assert sum(message_count(b) for b in batches[1:]) == max_messages
    assert src.sent == max_messages
    # About 2 messages per 1 ms tick: at least roughly max_messages / rate seconds.
    assert elapsed >= 0.5 * max_messages / rate
    stamps = np.concatenate([b["ts_recv"] for b in batches])
    assert (stamps > 0).all()
    assert (np.diff(stamps) >= 0).all()


def test_unpaced_records_yield_everything_and_finish() -> None:
    src = source(instruments=3, levels=2, rate=0, chunk=64, max_messages=500, move_every=0)
    batches = asyncio.run(_drain(src))
    assert is_snapshot(batches[0]).all()
    assert sum(message_count(b) for b in batches[1:]) == 500
    assert len(batches) == 1 + -(-500 // 64)
    assert all(b["ts_recv"][0] > 0 for b in batches)
