"""pipeline.book: BookState (all three apply paths against a brute-force
reference model), idempotent replays, checkpoints, and the shared BookTable
with its seqlock (read by this process while another one writes)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import book as book_mod
from pipeline import record as rec
from pipeline import shm
from pipeline.book import BookSnapshot, BookState, BookTable, L2Book
from pipeline.errors import PipelineError, SharedMemoryError
from pipeline.record import Flag, Kind, Side, StatusReason
from tests.conftest import Children

pytestmark = pytest.mark.unit

ShmName = Callable[[str], str]

SRC = 3
INSTS = (1, 2, 3, 4, 5)
PX_GRID = tuple(100 + 10 * i for i in range(8))  # few prices: the same level repeats often
STALE = (
    StatusReason.DROP,
    StatusReason.GAP,
    StatusReason.RESYNC,
    StatusReason.DISCONNECTED,
    StatusReason.PRODUCER_RESTART,
    StatusReason.STALE,
)
NOT_STALE = (
    StatusReason.CONNECTED,
    StatusReason.SNAPSHOT_APPLIED,
    StatusReason.RECONNECT,
    StatusReason.DECODE_ERROR,
)
STATUS_REASONS = (*STALE, *NOT_STALE)
STALE_INTS = frozenset(int(r) for r in STALE)


# -- a brute-force reference model ----------------------------------------------


@dataclass
class RefBook:
    src: int
    inst: int
    bids: dict[int, tuple[int, int]] = field(default_factory=dict)
    asks: dict[int, tuple[int, int]] = field(default_factory=dict)
    bbo: tuple[int, int, int, int] = (0, 0, 0, 0)
    valid: bool = False
    consistent: bool = True
    last_seq: int = 0
    ts_exch: int = 0
    ts_recv: int = 0
    updates: int = 0


class RefState:
    """The module docstring's semantics, record by record, no cleverness."""

    def __init__(self) -> None:
        self.books: dict[int, RefBook] = {}
        self.applied: dict[int, int] = {}

    def apply(self, records: rec.Records) -> None:
        for r in records.tolist():
            seq, ts_exch, ts_recv, inst, src, kind, side, flags, px, qty, aux, _aux2 = r
            if seq <= self.applied.get(src, 0):
                continue
            self.applied[src] = seq
            if kind == Kind.STATUS:
                if aux in STALE_INTS:
                    for b in self.books.values():
                        if (inst == 0 and b.src == src) or b.inst == inst:
                            b.valid = False
                continue
            if kind not in (Kind.BOOK_LEVEL, Kind.BOOK_CLEAR, Kind.BBO):
                continue
            b = self.books.setdefault(inst, RefBook(src, inst))
            if kind == Kind.BOOK_LEVEL:
                levels = b.bids if side == Side.BID else b.asks
                if qty == 0:
                    levels.pop(px, None)
                else:
                    levels[px] = (qty, aux)
            elif kind == Kind.BOOK_CLEAR:
                if side in (Side.NONE, Side.BID):
                    b.bids = {}
                if side in (Side.NONE, Side.ASK):
                    b.asks = {}
                b.valid = True
            else:
                if side == Side.BID:
                    b.bbo = (px, qty, b.bbo[2], b.bbo[3])
                else:
                    b.bbo = (b.bbo[0], b.bbo[1], px, qty)
            b.consistent = bool(flags & Flag.LAST)
            b.last_seq = seq
            b.ts_exch = ts_exch
            b.ts_recv = ts_recv
            b.updates += 1


def view(books: dict[int, Any]) -> dict[int, dict[str, Any]]:
    """Books (real or reference) as comparable plain data."""
    return {
        inst: {
            "src": b.src,
            "inst": b.inst,
            "bids": dict(b.bids),
            "asks": dict(b.asks),
            "bbo": tuple(b.bbo),
            "valid": b.valid,
            "consistent": b.consistent,
            "last_seq": b.last_seq,
            "ts_exch": b.ts_exch,
            "ts_recv": b.ts_recv,
            "updates": b.updates,
        }
        for inst, b in books.items()
    }


def affected_insts(records: rec.Records) -> set[int]:
    kinds = records["kind"]
    mask = (kinds == Kind.BOOK_LEVEL) | (kinds == Kind.BOOK_CLEAR) | (kinds == Kind.BBO)
    return set(records["inst"][mask].tolist())


# -- building streams ---------------------------------------------------------------

# One record as (kind, side, inst, px, qty, aux, last): inst 0 on STATUS means the
# whole source; aux is the number of orders on levels and the reason on STATUS.
Row = tuple[int, int, int, int, int, int, bool]


def build(
    rows: Iterable[Row], *, first_seq: int = 1, gaps: Iterable[int] | None = None
) -> rec.Records:
    rows = list(rows)
    out = rec.empty(len(rows))
    gap_list = list(gaps) if gaps is not None else [1] * len(rows)
    seq = first_seq
    for i, (kind, side, inst, px, qty, aux, last) in enumerate(rows):
        out[i]["seq"] = seq
        out[i]["ts_exch"] = 1_000_000 + 7 * seq
        out[i]["ts_recv"] = 2_000_000 + 11 * seq
        out[i]["inst"] = inst
        out[i]["src"] = SRC
        out[i]["kind"] = kind
        out[i]["side"] = side
        out[i]["flags"] = Flag.LAST if last else 0
        out[i]["px"] = px
        out[i]["qty"] = qty
        out[i]["aux"] = aux
        out[i]["aux2"] = -1
        seq += gap_list[i] if i < len(gap_list) else 1
    return out


def random_rows(rng: random.Random, n: int, weights: tuple[int, ...]) -> list[Row]:
    """``n`` rows; ``weights`` for LEVEL, CLEAR, BBO, STATUS, TRADE."""
    kinds = rng.choices(
        [Kind.BOOK_LEVEL, Kind.BOOK_CLEAR, Kind.BBO, Kind.STATUS, Kind.TRADE], weights, k=n
    )
    rows: list[Row] = []
    for kind in kinds:
        last = rng.random() < 0.6
        inst = rng.choice(INSTS)
        if kind == Kind.BOOK_LEVEL:
            qty = 0 if rng.random() < 0.3 else rng.randint(1, 9)
            side = rng.choice((Side.BID, Side.ASK))
            rows.append((kind, side, inst, rng.choice(PX_GRID), qty, rng.randint(0, 4), last))
        elif kind == Kind.BOOK_CLEAR:
            side = rng.choice((Side.NONE, Side.BID, Side.ASK))
            rows.append((kind, side, inst, 0, 0, rng.randint(0, 99), last))
        elif kind == Kind.BBO:
            side = rng.choice((Side.BID, Side.ASK))
            rows.append((kind, side, inst, rng.choice(PX_GRID), rng.randint(1, 9), 0, last))
        elif kind == Kind.STATUS:
            target = 0 if rng.random() < 0.4 else rng.choice((*INSTS, 9))
            reason = rng.choice(STATUS_REASONS)
            rows.append((kind, Side.NONE, target, 0, 0, int(reason), True))
        else:
            side = rng.choice((Side.BUY, Side.SELL))
            rows.append((kind, side, inst, rng.choice(PX_GRID), rng.randint(1, 9), 7, last))
    return rows


def split(n: int, sizes: Iterable[int]) -> list[tuple[int, int]]:
    """Cut 0..n into consecutive [lo, hi) pieces of the given sizes (the rest last)."""
    out, lo = [], 0
    for s in sizes:
        if lo >= n:
            break
        out.append((lo, min(n, lo + s)))
        lo += s
    if lo < n:
        out.append((lo, n))
    return out


def check_all_paths(records: rec.Records, chunk_sizes: list[int], rng: random.Random) -> None:
    """One batch, random chunks, overlapping chunks and the reference all agree."""
    ref = RefState()
    ref.apply(records)
    expected = view(ref.books)
    n = len(records)

    whole = BookState()
    touched = whole.apply(records)
    assert view(whole.books) == expected
    assert touched == affected_insts(records)
    assert whole.records_applied == n
    assert whole.records_skipped == 0

    chunked = BookState()
    union: set[int] = set()
    for lo, hi in split(n, chunk_sizes):
        part = records[lo:hi]
        got = chunked.apply(part)
        assert got == affected_insts(part), (lo, hi)
        union |= got
    assert view(chunked.books) == expected
    assert union == affected_insts(records)
    assert chunked.records_applied == n

    # Overlapping chunks: each may start before the previous one ended.
    overlapped = BookState()
    lo = end = skipped = 0
    while end < n:
        lo = max(0, end - rng.randint(0, 200)) if rng.random() < 0.7 else end
        hi = min(n, max(end + 1, lo + rng.choice((1, 5, 60, 127, 128, 200, 400))))
        overlapped.apply(records[lo:hi])
        skipped += end - lo
        end = hi
    assert view(overlapped.books) == expected
    assert overlapped.records_skipped == skipped
    assert overlapped.records_applied == n

    if n:
        for state in (whole, chunked, overlapped):
            assert state.applied == ref.applied == {SRC: int(records["seq"][-1])}


CHUNK_SIZES = st.lists(
    st.one_of(st.integers(1, book_mod.SMALL_BATCH - 1), st.integers(book_mod.SMALL_BATCH, 320)),
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(0, 600),
    weights=st.tuples(
        st.integers(1, 30),  # BOOK_LEVEL
        st.integers(0, 4),  # BOOK_CLEAR
        st.integers(0, 6),  # BBO
        st.integers(0, 3),  # STATUS
        st.integers(0, 4),  # TRADE
    ),
    max_gap=st.sampled_from([1, 1, 3, 1000]),
    chunk_sizes=CHUNK_SIZES,
)
def test_apply_paths_agree_with_reference_model(
    seed: int, n: int, weights: tuple[int, ...], max_gap: int, chunk_sizes: list[int]
) -> None:
    rng = random.Random(seed)
    rows = random_rows(rng, n, weights)
    gaps = [rng.randint(1, max_gap) for _ in range(n)]
    records = build(rows, first_seq=rng.randint(1, 10**6), gaps=gaps)
    check_all_paths(records, chunk_sizes, rng)


ROW = st.one_of(
    st.tuples(
        st.just(int(Kind.BOOK_LEVEL)),
        st.sampled_from([int(Side.BID), int(Side.ASK)]),
        st.sampled_from(INSTS[:3]),
        st.sampled_from(PX_GRID[:4]),
        st.integers(0, 3),
        st.integers(0, 2),
        st.booleans(),
    ),
    st.tuples(
        st.just(int(Kind.BOOK_CLEAR)),
        st.sampled_from([int(Side.NONE), int(Side.BID), int(Side.ASK)]),
        st.sampled_from(INSTS[:3]),
        st.just(0),
        st.just(0),
        st.just(0),
        st.booleans(),
    ),
    st.tuples(
        st.just(int(Kind.BBO)),
        st.sampled_from([int(Side.BID), int(Side.ASK)]),
        st.sampled_from(INSTS[:3]),
        st.sampled_from(PX_GRID[:4]),
        st.integers(1, 3),
        st.just(0),
        st.booleans(),
    ),
    st.tuples(
        st.just(int(Kind.STATUS)),
        st.just(int(Side.NONE)),
        st.sampled_from([0, *INSTS[:3]]),
        st.just(0),
        st.just(0),
        st.sampled_from([int(r) for r in STATUS_REASONS]),
        st.just(True),
    ),
    st.tuples(
        st.just(int(Kind.TRADE)),
        st.sampled_from([int(Side.BUY), int(Side.SELL)]),
        st.sampled_from(INSTS[:3]),
        st.sampled_from(PX_GRID[:4]),
        st.integers(1, 3),
        st.just(0),
        st.booleans(),
    ),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prefix=st.lists(ROW, max_size=20),
    body=st.lists(ROW, min_size=book_mod.SMALL_BATCH, max_size=260),
    chunk_sizes=CHUNK_SIZES,
    seed=st.integers(0, 1000),
)
def test_apply_paths_agree_with_reference_model_shrinkable(
    prefix: list[Row], body: list[Row], chunk_sizes: list[int], seed: int
) -> None:
    """The same property on explicitly drawn records (shrinks to a minimal stream)."""
    records = build(prefix + body)
    check_all_paths(records, chunk_sizes, random.Random(seed))


# -- targeted cases of apply ------------------------------------------------------------

L, C, B, S, T = Kind.BOOK_LEVEL, Kind.BOOK_CLEAR, Kind.BBO, Kind.STATUS, Kind.TRADE
BID, ASK, NONE = Side.BID, Side.ASK, Side.NONE


def padded(rows: list[Row], bulk: bool) -> list[Row]:
    """The rows, followed (when ``bulk``) by enough TRADEs to take the bulk path."""
    if not bulk:
        return rows
    return rows + [(T, Side.BUY, 1, 100, 1, 0, True)] * book_mod.SMALL_BATCH


@pytest.mark.parametrize("bulk", [False, True], ids=["sequential", "bulk"])
def test_snapshot_then_updates_then_loss_then_snapshot(bulk: bool) -> None:
    rows: list[Row] = [
        (C, NONE, 1, 0, 0, 0, False),
        (L, BID, 1, 99, 5, 2, False),
        (L, BID, 1, 98, 6, 1, False),
        (L, ASK, 1, 101, 7, 3, True),
        (L, BID, 1, 99, 0, 0, False),  # delete
        (L, BID, 1, 97, 4, 1, False),
        (L, ASK, 1, 101, 8, 4, True),  # overwrite
        (B, BID, 1, 98, 6, 0, False),
        (B, ASK, 1, 101, 8, 0, True),
    ]
    state = BookState()
    state.apply(build(padded(rows, bulk)))
    b = state.books[1]
    assert b.valid
    assert b.consistent
    assert b.bids == {98: (6, 1), 97: (4, 1)}
    assert b.asks == {101: (8, 4)}
    assert b.bbo == (98, 6, 101, 8)
    assert b.updates == 9
    assert b.last_seq == 9
    assert b.src == SRC

    loss: list[Row] = [(S, NONE, 0, 0, 0, int(StatusReason.GAP), True)]
    state.apply(build(padded(loss, bulk), first_seq=1000))
    assert not state.books[1].valid
    assert state.books[1].bids == {98: (6, 1), 97: (4, 1)}  # stale, not forgotten

    again: list[Row] = [(C, BID, 1, 0, 0, 0, False), (L, BID, 1, 90, 1, 1, True)]
    state.apply(build(padded(again, bulk), first_seq=5000))
    b = state.books[1]
    assert b.valid
    assert b.bids == {90: (1, 1)}
    assert b.asks == {101: (8, 4)}  # a one-sided clear keeps the other side


@pytest.mark.parametrize("bulk", [False, True], ids=["sequential", "bulk"])
def test_non_stale_status_and_trades_leave_books_alone(bulk: bool) -> None:
    state = BookState()
    state.apply(build([(C, NONE, 2, 0, 0, 0, False), (L, ASK, 2, 105, 3, 1, True)]))
    before = view(state.books)
    rows: list[Row] = [(S, NONE, 0, 0, 0, int(r), True) for r in NOT_STALE]
    rows += [(S, NONE, 2, 0, 0, int(r), True) for r in NOT_STALE]
    rows += [(T, Side.BUY, 2, 105, 1, 1, True)]
    touched = state.apply(build(padded(rows, bulk), first_seq=100))
    assert touched == set()
    assert view(state.books) == before


@pytest.mark.parametrize("bulk", [False, True], ids=["sequential", "bulk"])
def test_source_wide_loss_only_marks_books_of_that_source(bulk: bool) -> None:
    state = BookState()
    mine = build([(C, NONE, 1, 0, 0, 0, True)])
    other = mine.copy()
    other["src"] = SRC + 1
    other["inst"] = 50
    state.apply(mine)
    state.apply(other)
    assert state.books[1].valid and state.books[50].valid
    loss = build(padded([(S, NONE, 0, 0, 0, int(StatusReason.DROP), True)], bulk), first_seq=10)
    loss["src"] = SRC + 1
    state.apply(loss)
    assert state.books[1].valid
    assert not state.books[50].valid
    assert state.applied == {SRC: 1, SRC + 1: int(loss["seq"][-1])}


def test_empty_batch_is_a_no_op() -> None:
    state = BookState()
    assert state.apply(rec.empty(0)) == set()
    assert state.books == {}
    assert state.applied == {}
    assert state.records_applied == 0


# -- idempotence ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [50, 400])
def test_reapplying_a_batch_changes_nothing(n: int) -> None:
    records = build(random_rows(random.Random(n), n, (20, 2, 3, 1, 2)))
    state = BookState()
    state.apply(records)
    before = view(state.books)
    applied_before = dict(state.applied)

    assert state.apply(records) == set()
    assert view(state.books) == before
    assert state.applied == applied_before
    assert state.records_skipped == n
    assert state.records_applied == n

    assert state.apply(records[n // 2 :]) == set()
    assert state.records_skipped == n + (n - n // 2)
    assert view(state.books) == before


@pytest.mark.parametrize(("n", "overlap"), [(100, 30), (500, 200), (500, 1)])
def test_overlapping_batch_applies_only_the_new_records(n: int, overlap: int) -> None:
    records = build(random_rows(random.Random(7), n, (20, 2, 3, 1, 2)))
    half = n // 2
    expected = BookState()
    expected.apply(records)

    state = BookState()
    state.apply(records[:half])
    state.apply(records[half - overlap :])
    assert view(state.books) == view(expected.books)
    assert state.records_skipped == overlap
    assert state.records_applied == n


def test_replay_books_up_to_a_receive_time() -> None:
    records = build(random_rows(random.Random(3), 300, (20, 2, 3, 1, 2)))
    cut = int(records["ts_recv"][199])
    batches = [records[i : i + 70] for i in range(0, 300, 70)]
    expected = BookState()
    expected.apply(records[:200])
    got = book_mod.replay_books(batches, until_ns=cut)
    assert view(got.books) == view(expected.books)
    assert view(book_mod.replay_books(batches).books) == view(_applied(records).books)


def _applied(records: rec.Records) -> BookState:
    state = BookState()
    state.apply(records)
    return state


# -- L2Book.top ---------------------------------------------------------------------------

LEVELS = st.dictionaries(
    st.integers(-(10**12), 10**12),
    st.tuples(st.integers(1, 10**9), st.integers(0, 50)),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(bids=LEVELS, asks=LEVELS, depth=st.integers(1, 50))
def test_top_is_best_first_and_limited_to_depth(
    bids: dict[int, tuple[int, int]], asks: dict[int, tuple[int, int]], depth: int
) -> None:
    b = L2Book(1, 1, bids=bids, asks=asks)
    top_bids, top_asks = b.top(depth)
    assert top_bids == [(p, *bids[p]) for p in sorted(bids, reverse=True)[:depth]]
    assert top_asks == [(p, *asks[p]) for p in sorted(asks)[:depth]]


def test_top_small_example() -> None:
    b = L2Book(1, 1, bids={10: (1, 1), 12: (2, 2), 11: (3, 3)}, asks={15: (4, 4), 13: (5, 5)})
    assert b.top(2) == ([(12, 2, 2), (11, 3, 3)], [(13, 5, 5), (15, 4, 4)])
    assert b.top(10) == ([(12, 2, 2), (11, 3, 3), (10, 1, 1)], [(13, 5, 5), (15, 4, 4)])


# -- checkpoints ---------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    state = BookState()
    state.run_id = "run-42"
    state.apply(build(random_rows(random.Random(11), 500, (20, 2, 4, 1, 2))))
    other = build([(C, NONE, 77, 0, 0, 0, True), (B, ASK, 77, 5, 6, 0, True)], first_seq=9)
    other["src"] = 200
    state.apply(other)
    assert len(state.books) >= 5

    path = tmp_path / "deep" / "er" / "books.ckpt"
    book_mod.save_checkpoint(state, path)
    loaded = book_mod.load_checkpoint(path)
    assert loaded is not None
    assert loaded.run_id == "run-42"
    assert loaded.applied == state.applied == {SRC: 500, 200: 10}
    assert view(loaded.books) == view(state.books)
    assert all(isinstance(b.bbo, tuple) for b in loaded.books.values())

    # A loaded state goes on exactly like the original.
    more = build(random_rows(random.Random(12), 300, (20, 2, 4, 1, 2)), first_seq=400)
    state.apply(more)
    loaded.apply(more)
    assert view(loaded.books) == view(state.books)
    assert loaded.records_skipped == state.records_skipped == 101  # seq 400..500
    assert loaded.applied == state.applied


def test_checkpoint_overwrite_is_atomic_and_leaves_no_tmp(tmp_path: Path) -> None:
    path = tmp_path / "books.ckpt"
    state = BookState()
    state.run_id = "first"
    book_mod.save_checkpoint(state, path)
    state.apply(build([(C, NONE, 1, 0, 0, 0, True), (L, BID, 1, 50, 1, 1, True)]))
    state.run_id = "second"
    book_mod.save_checkpoint(state, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["books.ckpt"]
    assert not list(tmp_path.rglob("*.tmp"))
    loaded = book_mod.load_checkpoint(path)
    assert loaded is not None
    assert loaded.run_id == "second"
    assert loaded.books[1].bids == {50: (1, 1)}


def test_load_checkpoint_of_missing_file_is_none(tmp_path: Path) -> None:
    assert book_mod.load_checkpoint(tmp_path / "none.ckpt") is None


@pytest.mark.parametrize(
    "data",
    [
        b"garbage\x00\xff",
        b"",
        b"{",
        b'{"version": 1}',
        b'{"version": 1, "applied": {}, "books": [{}]}',
    ],
    ids=["binary", "empty", "truncated", "no-applied", "book-without-fields"],
)
def test_load_checkpoint_of_garbage_raises_naming_the_path(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "books.ckpt"
    path.write_bytes(data)
    with pytest.raises(PipelineError) as info:
        book_mod.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_checkpoint_of_truncated_real_checkpoint_raises(tmp_path: Path) -> None:
    state = BookState()
    state.apply(build(random_rows(random.Random(5), 200, (20, 2, 4, 1, 2))))
    path = tmp_path / "books.ckpt"
    book_mod.save_checkpoint(state, path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(PipelineError) as info:
        book_mod.load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "data",
    [
        b"[1, 2]",
        b"null",
        b'{"version": 1, "applied": [], "books": []}',
        b'{"version": 1, "applied": {"x": 1}, "books": []}',
    ],
    ids=["array", "null", "applied-list", "applied-bad-key"],
)
def test_load_checkpoint_of_wrong_shaped_json_raises_pipeline_error(
    tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "books.ckpt"
    path.write_bytes(data)
    with pytest.raises(PipelineError) as info:
        book_mod.load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_checkpoint_of_other_version_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "books.ckpt"
    path.write_bytes(b'{"version": 2, "applied": {}, "books": []}')
    with pytest.raises(PipelineError) as info:
        book_mod.load_checkpoint(path)
    assert str(path) in str(info.value)


# -- the shared table ----------------------------------------------------------------------


def sample_book(inst: int = 2, n_bids: int = 7, n_asks: int = 3, valid: bool = True) -> L2Book:
    return L2Book(
        src=200,
        inst=inst,
        bids={1000 - 10 * k: (k + 1, k + 2) for k in range(n_bids)},
        asks={1010 + 10 * k: (5 * k + 1, k) for k in range(n_asks)},
        bbo=(1000, 1, 1010, 2),
        valid=valid,
        consistent=True,
        last_seq=123_456_789_012,
        ts_exch=1_700_000_000_000_000_001,
        ts_recv=1_700_000_000_000_000_002,
        updates=99,
    )


def assert_snapshot_of(snap: BookSnapshot | None, b: L2Book, depth: int, ts_publish: int) -> None:
    assert snap is not None
    bids, asks = b.top(depth)
    assert snap.inst == b.inst
    assert snap.src == b.src
    assert snap.valid == b.valid
    assert snap.last_seq == b.last_seq
    assert snap.ts_exch == b.ts_exch
    assert snap.ts_recv == b.ts_recv
    assert snap.ts_publish == ts_publish
    assert snap.updates == b.updates
    assert snap.bbo == b.bbo
    assert snap.bids == bids
    assert snap.asks == asks


def test_table_publish_and_read(shm_name: ShmName) -> None:
    table = BookTable.create(shm_name("books"), slots=8, depth=5)
    try:
        assert (table.slots, table.depth) == (8, 5)
        assert table.published() == []
        for inst in range(8):
            assert table.read(inst) is None

        b = sample_book(inst=2, n_bids=7, n_asks=3)
        table.publish(b, ts_publish=42)
        snap = table.read(2)
        assert_snapshot_of(snap, b, 5, 42)
        assert snap is not None
        assert len(snap.bids) == 5  # only the best `depth` of 7
        assert snap.bids[0][0] == max(b.bids)
        assert len(snap.asks) == 3
        assert snap.as_dict()["bids"] == [list(x) for x in snap.bids]
        assert table.read(1) is None
        assert table.read(3) is None
        assert table.published() == [2]

        stale = sample_book(inst=7, n_bids=0, n_asks=9, valid=False)
        table.publish(stale, ts_publish=43)
        assert_snapshot_of(table.read(7), stale, 5, 43)
        assert table.published() == [2, 7]

        # A smaller book in the same slot: no leftover levels of the larger one.
        smaller = sample_book(inst=2, n_bids=1, n_asks=0)
        smaller.last_seq = 5
        table.publish(smaller, ts_publish=44)
        assert_snapshot_of(table.read(2), smaller, 5, 44)
    finally:
        table.close()
        table.unlink()


def test_table_rejects_out_of_range_instruments(shm_name: ShmName) -> None:
    table = BookTable.create(shm_name("books"), slots=4, depth=3)
    try:
        with pytest.raises(PipelineError, match="4"):
            table.publish(sample_book(inst=4), ts_publish=1)
        with pytest.raises(PipelineError):
            table.publish(sample_book(inst=1000), ts_publish=1)
        with pytest.raises(PipelineError):
            table.read(4)
        with pytest.raises(PipelineError):
            table.read(-1)
        assert table.published() == []
    finally:
        table.close()
        table.unlink()


def test_table_attach_sees_the_same_data(shm_name: ShmName) -> None:
    name = shm_name("books")
    table = BookTable.create(name, slots=16, depth=4)
    reader = BookTable.attach(name)
    try:
        assert (reader.slots, reader.depth, reader.slot_words) == (16, 4, table.slot_words)
        b = sample_book(inst=15)
        table.publish(b, ts_publish=7)
        assert_snapshot_of(reader.read(15), b, 4, 7)
        assert reader.published() == [15]
        # And the other way round: the attached side writes, the creator reads.
        c = sample_book(inst=0, n_bids=2, n_asks=2)
        reader.publish(c, ts_publish=8)
        assert_snapshot_of(table.read(0), c, 4, 8)
    finally:
        reader.close()
        table.close()
        table.unlink()


def test_table_close_then_unlink_removes_it(shm_name: ShmName) -> None:
    name = shm_name("books")
    table = BookTable.create(name, slots=2, depth=2)
    table.publish(sample_book(inst=1), ts_publish=1)
    table.close()
    assert shm.exists(name)
    table.unlink()
    assert not shm.exists(name)
    with pytest.raises(SharedMemoryError):
        BookTable.attach(name)


def test_attach_to_something_else_is_an_error(shm_name: ShmName) -> None:
    name = shm_name("notbooks")
    seg = shm.create(name, 8192)
    try:
        with pytest.raises(PipelineError, match="not a book table"):
            BookTable.attach(name)
    finally:
        seg.close()


# -- the seqlock under a concurrent writer ---------------------------------------------------

SEQLOCK_DEPTH = 16
SEQLOCK_SLOT = 3


def versioned_book(i: int, inst: int = SEQLOCK_SLOT) -> L2Book:
    """Book number ``i``: every field derives from ``i``, level counts vary with it."""
    nb = 1 + i % SEQLOCK_DEPTH
    na = 1 + (i * 7) % SEQLOCK_DEPTH
    return L2Book(
        src=9,
        inst=inst,
        bids={i * 100 - k: (i, i + k) for k in range(nb)},
        asks={i * 100 + 1 + k: (i, i + k) for k in range(na)},
        bbo=(i, i, i, i),
        valid=i % 2 == 0,
        last_seq=i,
        ts_exch=2 * i,
        ts_recv=3 * i,
        updates=i,
    )


def seqlock_writer(name: str, stop: Any, limit: int) -> None:
    """Publish book 1, 2, 3, ... to one slot until ``stop`` is set (or ``limit``)."""
    table = BookTable.attach(name)
    try:
        i = 0
        while not stop.is_set() and i < limit:
            i += 1
            table.publish(versioned_book(i), ts_publish=i)
    finally:
        table.close()


def test_seqlock_reader_never_sees_a_torn_book(shm_name: ShmName, children: Children) -> None:
    name = shm_name("books")
    table = BookTable.create(name, slots=8, depth=SEQLOCK_DEPTH)
    stop = children.ctx.Event()
    try:
        writer = children.spawn(seqlock_writer, name, stop, 50_000_000)
        deadline = time.monotonic() + 60
        while table.read(SEQLOCK_SLOT) is None:  # wait for the writer's first publish
            assert writer.is_alive() or writer.exitcode == 0, "writer died"
            assert time.monotonic() < deadline, "writer never published"
            time.sleep(0.001)  # poll interval of a condition wait
        reads, versions, last = 0, set(), 0
        while reads < 20_000 or len(versions) < 200:
            snap = table.read(SEQLOCK_SLOT)
            assert snap is not None
            i = snap.last_seq
            want = versioned_book(i)
            bids, asks = want.top(SEQLOCK_DEPTH)
            assert (snap.bids, snap.asks) == (bids, asks), f"torn read at version {i}"
            assert snap.bbo == (i, i, i, i)
            assert (snap.ts_exch, snap.ts_recv, snap.ts_publish, snap.updates) == (
                2 * i,
                3 * i,
                i,
                i,
            )
            assert snap.valid == (i % 2 == 0)
            assert (snap.inst, snap.src) == (SEQLOCK_SLOT, 9)
            assert i >= last, "a reader went back in time"
            last = i
            versions.add(i)
            reads += 1
            assert time.monotonic() < deadline, f"only {len(versions)} versions in {reads} reads"
        assert table.read(0) is None  # the other slots were never touched
    finally:
        stop.set()
    writer.join(timeout=30)
    assert writer.exitcode == 0
    table.close()
    table.unlink()
