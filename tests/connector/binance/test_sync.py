"""Binance order book sync (connector/binance/sync.py) against the rules in PROTOCOLS.md.

Depth events and snapshots are built as Binance JSON and decoded with
wire.Decoder, so BookSync sees exactly what the client sees. The levels are
chosen so that the book is a function of the last update id: update id ``n``
sets the price level ``n % 50 + 1`` to quantity ``n`` (bids for residues below
25, asks above), and a snapshot at ``L`` holds, per level, the largest id <= L.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from connector.binance.sync import BookSync, Decision, State
from connector.binance.wire import Decoder
from pipeline.book import BookState
from pipeline.record import Flag, Kind, Records, StatusReason

pytestmark = pytest.mark.unit

SYMBOL, INST = "BTCUSDT", 7
SCALE = 10**8
RECV = 1_700_000_000_000_000_000
LAST, SNAPSHOT, AFTER_GAP = int(Flag.LAST), int(Flag.SNAPSHOT), int(Flag.AFTER_GAP)
FIRST_ID = 1  # update ids before an event stream's own start exist from here on


def level(n: int) -> tuple[str, list[str]]:
    """The side and [px, qty] that update id n sets."""
    residue = n % 50
    return ("b" if residue < 25 else "a"), [str(residue + 1), str(n)]


def depth(
    first: int, last: int, prev: int | None = None, *, ids: list[int] | None = None
) -> Records:
    """A decoded depthUpdate covering update ids first..last (``prev``: USD-M ``pu``)."""
    msg: dict[str, object] = {"e": "depthUpdate", "E": 1_700_000_000_000, "s": SYMBOL,
                              "U": first, "u": last, "b": [], "a": []}  # fmt: skip
    for n in range(first, last + 1) if ids is None else ids:
        side, lvl = level(n)
        msg[side].append(lvl)  # type: ignore[union-attr]
    market = "spot"
    if prev is not None:
        msg["pu"], msg["T"], market = prev, 1_699_999_999_999, "usdm"
    return Decoder({SYMBOL: INST}, market=market).decode(orjson.dumps(msg), RECV).records


def book_at(last: int, exists: set[int] | None = None) -> dict[int, dict[int, int]]:
    """The true book after every update id <= last: {side: {px: qty}} in fixed point."""
    out: dict[int, dict[int, int]] = {1: {}, 2: {}}
    seen: set[int] = set()
    n = last
    while n >= FIRST_ID and len(seen) < 50:
        if (exists is None or n in exists) and n % 50 not in seen:
            seen.add(n % 50)
            side, (px, qty) = level(n)
            out[1 if side == "b" else 2][int(px) * SCALE] = int(qty) * SCALE
        n -= 1
    return out


def snapshot(
    last_update_id: int, exists: set[int] | None = None, *, futures: bool = False
) -> Records:
    book = book_at(last_update_id, exists)
    body: dict[str, object] = {
        "lastUpdateId": last_update_id,
        "bids": [[str(p // SCALE), str(q // SCALE)] for p, q in sorted(book[1].items())],
        "asks": [[str(p // SCALE), str(q // SCALE)] for p, q in sorted(book[2].items())],
    }
    if futures:
        body["E"], body["T"] = 1_700_000_000_001, 1_700_000_000_000
    market = "usdm" if futures else "spot"
    return Decoder({SYMBOL: INST}, market=market).snapshot(orjson.dumps(body), SYMBOL, RECV).records


def updates(decision: Decision) -> list[tuple[int, int]]:
    """(U, u) of the BOOK_UPDATE records a decision publishes."""
    out = decision.records()
    heads = out[out["kind"] == Kind.BOOK_UPDATE]
    return list(zip(heads["px"].tolist(), heads["qty"].tolist(), strict=True))


def statuses(decision: Decision) -> list[tuple[int, int, int, int]]:
    """(reason, px, qty, flags) of the STATUS records a decision publishes."""
    out = decision.records()
    st_ = out[out["kind"] == Kind.STATUS]
    return list(zip(st_["aux"].tolist(), st_["px"].tolist(), st_["qty"].tolist(), st_["flags"].tolist(), strict=True))  # fmt: skip


def clears(decision: Decision) -> list[tuple[int, int]]:
    """(lastUpdateId, flags) of the BOOK_CLEAR records a decision publishes."""
    out = decision.records()
    c = out[out["kind"] == Kind.BOOK_CLEAR]
    return list(zip(c["aux"].tolist(), c["flags"].tolist(), strict=True))


def spot_events(*ranges: tuple[int, int]) -> list[Records]:
    return [depth(a, b) for a, b in ranges]


def usdm_events(*ranges: tuple[int, int, int]) -> list[Records]:
    return [depth(a, b, pu) for a, b, pu in ranges]


def synced_spot(last: int = 12) -> BookSync:
    """A spot BookSync synced at update id ``last`` through snapshot ``last - 3``."""
    sync = BookSync(INST)
    sync.on_depth(depth(last - 2, last), RECV)
    decision = sync.on_snapshot(snapshot(last - 3), RECV)
    assert updates(decision) == [(last - 2, last)] and sync.state == State.SYNCED
    return sync


def synced_usdm(last: int = 12) -> BookSync:
    sync = BookSync(INST, futures=True)
    sync.on_depth(depth(last - 2, last, last - 3), RECV)
    decision = sync.on_snapshot(snapshot(last - 1, futures=True), RECV)
    assert updates(decision) == [(last - 2, last)] and sync.state == State.SYNCED
    return sync


# -- buffering and the first snapshot -----------------------------------------


@pytest.mark.parametrize("futures", [False, True])
def test_buffers_before_the_snapshot_and_asks_for_it_once(futures: bool) -> None:
    sync = BookSync(INST, futures=futures)
    events = (
        usdm_events((1, 3, 0), (4, 6, 3), (7, 9, 6))
        if futures
        else spot_events((1, 3), (4, 6), (7, 9))
    )
    fetches = []
    for event in events:
        decision = sync.on_depth(event, RECV)
        assert decision.publish == [] and not decision.gap
        fetches.append(decision.fetch_snapshot)
    assert fetches == [True, False, False]
    assert sync.state == State.BUFFERING and len(sync.buffer) == 3
    assert sync.stats.applied == 0


def test_spot_snapshot_drops_events_up_to_last_update_id() -> None:
    sync = BookSync(INST)
    for event in spot_events((1, 3), (4, 6), (7, 9), (10, 12)):
        sync.on_depth(event, RECV)
    decision = sync.on_snapshot(snapshot(6), RECV)
    assert not decision.fetch_snapshot and not decision.gap
    assert clears(decision) == [(6, SNAPSHOT)]
    assert updates(decision) == [(7, 9), (10, 12)]
    assert statuses(decision) == [(StatusReason.SNAPSHOT_APPLIED, 6, 0, LAST)]
    out = decision.records()
    assert out["kind"].tolist()[0] == Kind.BOOK_CLEAR
    assert sync.stats.dropped_old == 2 and sync.stats.applied == 2 and sync.stats.snapshots == 1
    assert sync.state == State.SYNCED and sync.last_u == 12


def test_usdm_snapshot_keeps_the_event_ending_at_last_update_id() -> None:
    sync = BookSync(INST, futures=True)
    for event in usdm_events((1, 3, 0), (4, 6, 3), (7, 9, 6)):
        sync.on_depth(event, RECV)
    decision = sync.on_snapshot(snapshot(6, futures=True), RECV)
    assert updates(decision) == [(4, 6), (7, 9)], "u == lastUpdateId is applied for USD-M"
    assert sync.stats.dropped_old == 1 and sync.last_u == 9


@pytest.mark.parametrize(
    ("futures", "snapshot_id", "first_applied"),
    [
        # spot: drop u <= L, first applied has U <= L+1 <= u
        (False, 3, (4, 6)), (False, 4, (4, 6)), (False, 5, (4, 6)), (False, 6, (7, 9)),
        # usdm: drop u < L, first applied has U <= L <= u
        (True, 3, (1, 3)), (True, 4, (4, 6)), (True, 5, (4, 6)), (True, 6, (4, 6)), (True, 7, (7, 9)),
    ],
)  # fmt: skip
def test_first_applied_event_rule(
    futures: bool, snapshot_id: int, first_applied: tuple[int, int]
) -> None:
    sync = BookSync(INST, futures=futures)
    events = (
        usdm_events((1, 3, 0), (4, 6, 3), (7, 9, 6))
        if futures
        else spot_events((1, 3), (4, 6), (7, 9))
    )
    for event in events:
        sync.on_depth(event, RECV)
    decision = sync.on_snapshot(snapshot(snapshot_id, futures=futures), RECV)
    applied = updates(decision)
    assert applied[0] == first_applied and applied[-1] == (7, 9)
    assert not decision.gap and sync.state == State.SYNCED


@pytest.mark.parametrize("futures", [False, True])
def test_snapshot_older_than_the_first_buffered_event_is_fetched_again(futures: bool) -> None:
    sync = BookSync(INST, futures=futures)
    first = depth(10, 12, 9) if futures else depth(10, 12)
    assert sync.on_depth(first, RECV).fetch_snapshot
    too_old = 8 if futures else 7  # spot needs L >= 9 (U <= L+1), usdm L >= 10 (U <= L)
    decision = sync.on_snapshot(snapshot(too_old, futures=futures), RECV)
    assert decision.publish == [] and decision.fetch_snapshot
    assert sync.stats.refetches == 1 and sync.state == State.BUFFERING
    more = depth(13, 14, 12) if futures else depth(13, 14)
    assert not sync.on_depth(more, RECV).fetch_snapshot, "one request at a time"
    decision = sync.on_snapshot(snapshot(11, futures=futures), RECV)
    assert updates(decision) == [(10, 12), (13, 14)]
    assert sync.stats.refetches == 1 and sync.state == State.SYNCED


def test_empty_buffer_snapshot_then_events() -> None:
    sync = BookSync(INST)
    sync.on_depth(depth(1, 3), RECV)
    decision = sync.on_snapshot(snapshot(20), RECV)  # everything buffered is old
    assert updates(decision) == [] and clears(decision) == [(20, SNAPSHOT)]
    assert sync.on_depth(depth(15, 20), RECV).publish == [], "u <= L: old"
    assert updates(sync.on_depth(depth(19, 22), RECV)) == [(19, 22)]
    assert updates(sync.on_depth(depth(23, 23), RECV)) == [(23, 23)]


# -- continuity and gaps -------------------------------------------------------


def test_spot_continuity_and_gap() -> None:
    sync = synced_spot(12)
    assert updates(sync.on_depth(depth(13, 15), RECV)) == [(13, 15)]
    decision = sync.on_depth(depth(20, 22), RECV)  # 16..19 missing
    assert decision.gap and decision.fetch_snapshot and updates(decision) == []
    assert statuses(decision) == [(StatusReason.GAP, 16, 4, LAST | AFTER_GAP)]
    gap = decision.records()[0]
    assert int(gap["inst"]) == INST and int(gap["kind"]) == Kind.STATUS
    assert sync.state == State.BUFFERING and sync.stats.gaps == 1
    # More events wait for the snapshot; no second request.
    assert not sync.on_depth(depth(23, 25), RECV).fetch_snapshot
    decision = sync.on_snapshot(snapshot(21), RECV)
    assert clears(decision) == [(21, SNAPSHOT | AFTER_GAP)]
    assert updates(decision) == [(20, 22), (23, 25)]
    assert sync.state == State.SYNCED and sync.stats.resyncs == 1


def test_spot_overlapping_event_is_a_gap() -> None:
    """PROTOCOLS.md: after the first event every event must have U == previous u + 1."""
    sync = synced_spot(12)
    decision = sync.on_depth(depth(11, 14), RECV)
    assert decision.gap and statuses(decision) == [(StatusReason.GAP, 13, 1, LAST | AFTER_GAP)]


def test_usdm_continuity_is_by_pu_only() -> None:
    sync = synced_usdm(12)
    # USD-M ids jump: U need not be previous u + 1, pu must be previous u.
    assert updates(sync.on_depth(depth(20, 25, 12), RECV)) == [(20, 25)]
    assert updates(sync.on_depth(depth(31, 31, 25), RECV)) == [(31, 31)]
    decision = sync.on_depth(depth(32, 35, 30), RECV)  # U == 31 + 1, but pu 30 != 31
    assert decision.gap and decision.fetch_snapshot and updates(decision) == []
    assert [s[:2] for s in statuses(decision)] == [(StatusReason.GAP, 32)]
    assert statuses(decision)[0][2] >= 1 and statuses(decision)[0][3] == LAST | AFTER_GAP


def test_spot_ignores_pu() -> None:
    sync = synced_spot(12)
    assert updates(sync.on_depth(depth(13, 14, 999), RECV)) == [(13, 14)]


def test_gap_inside_the_buffer_at_snapshot_time() -> None:
    sync = BookSync(INST)
    for event in spot_events((7, 9), (13, 15)):
        sync.on_depth(event, RECV)
    decision = sync.on_snapshot(snapshot(6), RECV)
    assert clears(decision) == [(6, SNAPSHOT)] and updates(decision) == [(7, 9)]
    assert decision.gap and decision.fetch_snapshot
    assert (StatusReason.GAP, 10, 3, LAST | AFTER_GAP) in statuses(decision)
    assert sync.state == State.BUFFERING


@pytest.mark.parametrize("futures", [False, True])
def test_duplicates_are_dropped_without_a_gap(futures: bool) -> None:
    sync = synced_usdm(12) if futures else synced_spot(12)
    nxt = depth(13, 15, 12) if futures else depth(13, 15)
    assert updates(sync.on_depth(nxt, RECV)) == [(13, 15)]
    dropped = sync.stats.dropped_old
    for old in [
        nxt,
        depth(10, 12, 9) if futures else depth(10, 12),
        depth(1, 2, 0) if futures else depth(1, 2),
    ]:
        decision = sync.on_depth(old, RECV)
        assert decision.publish == [] and not decision.gap and not decision.fetch_snapshot
    assert sync.stats.dropped_old == dropped + 3 and sync.stats.gaps == 0
    assert sync.last_u == 15 and sync.state == State.SYNCED


def test_snapshot_when_synced_is_ignored() -> None:
    sync = synced_spot(12)
    decision = sync.on_snapshot(snapshot(30), RECV)
    assert decision.publish == [] and not decision.fetch_snapshot
    assert sync.stats.ignored_snapshots == 1 and sync.last_u == 12 and sync.state == State.SYNCED
    assert updates(sync.on_depth(depth(13, 13), RECV)) == [(13, 13)]


def test_disconnect_when_synced_publishes_status_and_buffers_again() -> None:
    sync = synced_spot(12)
    decision = sync.on_disconnect(RECV + 5)
    assert statuses(decision) == [(StatusReason.DISCONNECTED, 0, 0, LAST)]
    out = decision.records()
    assert int(out[0]["inst"]) == INST and int(out[0]["ts_recv"]) == RECV + 5
    assert sync.state == State.BUFFERING and sync.buffer == []
    assert sync.on_depth(depth(40, 41), RECV).fetch_snapshot
    decision = sync.on_snapshot(snapshot(39), RECV)
    assert clears(decision) == [(39, SNAPSHOT | AFTER_GAP)], "the book was stale: a loss"
    assert updates(decision) == [(40, 41)]


def test_disconnect_while_buffering_publishes_nothing() -> None:
    sync = BookSync(INST)
    assert sync.on_depth(depth(1, 2), RECV).fetch_snapshot
    assert sync.on_disconnect(RECV).publish == []
    assert sync.buffer == [] and sync.on_depth(depth(5, 6), RECV).fetch_snapshot


def test_non_depth_records_are_refused() -> None:
    sync = BookSync(INST)
    with pytest.raises(ValueError):
        sync.on_depth(snapshot(5), RECV)
    with pytest.raises(ValueError):
        sync.on_snapshot(depth(1, 2), RECV)


def test_book_from_published_records_matches_the_true_book() -> None:
    sync, books, seq = BookSync(INST), BookState(), 0

    def publish(decision: Decision) -> None:
        nonlocal seq
        out = decision.records()
        if len(out):
            out["src"] = 1
            out["seq"] = np.arange(seq + 1, seq + 1 + len(out))
            seq += len(out)
            books.apply(out)

    for a, b in [(1, 3), (4, 6), (7, 9)]:
        publish(sync.on_depth(depth(a, b), RECV))
    publish(sync.on_snapshot(snapshot(5), RECV))
    for a, b in [(10, 60), (61, 61), (62, 140)]:
        publish(sync.on_depth(depth(a, b), RECV))
    book = books.books[INST]
    assert book.valid and {p: q for p, (q, _o) in book.bids.items()} == book_at(140)[1]
    assert {p: q for p, (q, _o) in book.asks.items()} == book_at(140)[2]
    publish(sync.on_depth(depth(150, 151), RECV))
    assert not books.books[INST].valid, "the GAP status marks the book stale"


# -- the property: random streams ---------------------------------------------


@dataclass
class Checker:
    """Reads the published records as a consumer would and checks the sync rules."""

    futures: bool
    covered: int | None = None
    """The update id the published book is at (None: no snapshot yet)."""
    first: bool = False
    lost: bool = True
    after_gap_due: bool = False
    loss_since_clear: bool = False
    clears: int = 0
    log: list[str] = field(default_factory=list)

    def synced(self) -> bool:
        return self.covered is not None and not self.lost

    def fits(self, first: int, last: int) -> bool:
        assert self.covered is not None
        if self.futures:
            return first <= self.covered <= last
        return first <= self.covered + 1 <= last

    def continues(self, first: int, prev: int) -> bool:
        assert self.covered is not None
        return prev == self.covered if self.futures else first == self.covered + 1

    def old(self, last: int) -> bool:
        assert self.covered is not None
        if self.first and self.futures:
            return last < self.covered
        return last <= self.covered

    def read(self, out: Records) -> None:
        for r in out.tolist():
            _seq, _te, _tr, inst, _src, kind, _side, flags, px, qty, aux, _aux2 = r
            assert inst == INST
            if kind == Kind.BOOK_CLEAR:
                # (b) a resync happens only after an announced loss, and says so
                assert self.clears == 0 or self.loss_since_clear, "resync without GAP/DISCONNECTED"
                if self.after_gap_due:
                    assert flags & AFTER_GAP, "first snapshot after a gap lacks AFTER_GAP"
                self.covered, self.first, self.lost = aux, True, False
                self.after_gap_due = self.loss_since_clear = False
                self.clears += 1
            elif kind == Kind.BOOK_UPDATE:
                assert not self.lost, "an update was published while the book is stale"
                assert self.covered is not None
                # (a) contiguity by the market's rule
                if self.first:
                    assert self.fits(px, qty), (px, qty, self.covered)
                else:
                    assert self.continues(px, aux), (px, qty, aux, self.covered)
                self.covered, self.first = qty, False
            elif kind == Kind.STATUS and aux == StatusReason.GAP:
                if self.covered is not None and not self.lost:
                    assert px == self.covered + 1, "GAP names the first missing id"
                assert qty >= 1 and flags & AFTER_GAP
                self.lost = self.loss_since_clear = self.after_gap_due = True
            elif kind == Kind.STATUS and aux == StatusReason.DISCONNECTED:
                assert self.synced(), "DISCONNECTED is published only when synced"
                self.lost = self.loss_since_clear = self.after_gap_due = True
            elif kind == Kind.STATUS and aux == StatusReason.SNAPSHOT_APPLIED:
                assert px == self.covered


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    futures = draw(st.booleans())
    sizes = draw(st.lists(st.integers(1, 4), min_size=3, max_size=40))
    base = 1000
    events: list[tuple[int, int, int]] = []  # the true stream: (U, u, pu)
    prev = base - 1
    for size in sizes:
        jump = draw(st.integers(0, 2)) if futures else 0  # USD-M ids are not contiguous
        first = prev + 1 + jump
        events.append((first, first + size - 1, prev))
        prev = first + size - 1
    plan = draw(
        st.lists(
            st.sampled_from(["keep"] * 6 + ["drop", "drop", "dup", "swap"]),
            min_size=len(events),
            max_size=len(events),
        )
    )
    delivered: list[int] = []
    late: dict[int, list[int]] = {}
    for k, op in enumerate(plan):
        delivered += late.pop(k, [])
        if op == "drop":
            continue
        delivered.append(k)
        if op == "dup":
            late.setdefault(k + draw(st.integers(0, 3)), []).append(k)
        elif op == "swap" and len(delivered) >= 2:
            delivered[-1], delivered[-2] = delivered[-2], delivered[-1]
    for k in sorted(late):
        delivered += late[k]
    return {"futures": futures, "events": events, "delivered": delivered}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), data=st.data())
def test_random_streams_keep_the_sync_rules(
    scenario: dict[str, object], data: st.DataObject
) -> None:
    futures: bool = scenario["futures"]  # type: ignore[assignment]
    events: list[tuple[int, int, int]] = scenario["events"]  # type: ignore[assignment]
    delivered: list[int] = scenario["delivered"]  # type: ignore[assignment]
    base, top = events[0][0], events[-1][1]
    exists = set(range(FIRST_ID, base)) | {n for a, b, _ in events for n in range(a, b + 1)}
    decoded = [
        depth(a, b, pu if futures else None, ids=[n for n in range(a, b + 1) if n in exists])
        for a, b, pu in events
    ]
    sync, checker, books, seq = BookSync(INST, futures=futures), Checker(futures), BookState(), 0
    pending = False  # a snapshot request is outstanding
    position = base - 1  # the venue's latest id the client has seen

    def take(decision: Decision) -> None:
        nonlocal seq, pending
        if decision.fetch_snapshot:
            assert not pending, "a second request while one is outstanding"
            pending = True
        out = decision.records()
        checker.read(out)
        if len(out):
            out["src"] = 1
            out["seq"] = np.arange(seq + 1, seq + 1 + len(out))
            seq += len(out)
            books.apply(out)
        # (c) the published book is the true book at the id it claims to be at
        book = books.books.get(INST)
        if checker.synced():
            assert checker.covered is not None and book is not None and book.valid
            true = book_at(checker.covered, exists)
            assert {p: q for p, (q, _o) in book.bids.items()} == true[1]
            assert {p: q for p, (q, _o) in book.asks.items()} == true[2]
        elif book is not None:
            assert not book.valid

    def serve_snapshot() -> None:
        nonlocal pending
        snapshot_id = min(top, max(base - 1, position + data.draw(st.integers(-8, 6))))
        pending = False
        was_synced = checker.synced()
        decision = sync.on_snapshot(snapshot(snapshot_id, exists, futures=futures), RECV)
        if was_synced:
            assert decision.publish == [], "a snapshot nobody asked for changed a synced book"
        take(decision)

    for k in delivered:
        action = data.draw(st.sampled_from(["none"] * 6 + ["snapshot", "snapshot", "disconnect"]))
        if action == "snapshot" and (pending or checker.synced()):
            serve_snapshot()
        elif action == "disconnect":
            pending = False  # the answer to an old request is not used after a reconnect
            take(sync.on_disconnect(RECV))
            assert sync.state == State.BUFFERING
        first, last, prev = events[k]
        position = max(position, last)
        before = (checker.synced(), checker.covered, checker.first)
        decision = sync.on_depth(decoded[k], RECV)
        published = updates(decision)
        take(decision)
        was_synced, covered, first_mode = before
        if not was_synced:
            assert published == [], "published while buffering"
            assert pending, "buffering without a snapshot request"
            continue
        assert covered is not None
        old = (last < covered) if (futures and first_mode) else (last <= covered)
        if first_mode:
            ok = first <= covered <= last if futures else first <= covered + 1 <= last
        else:
            ok = prev == covered if futures else first == covered + 1
        if old:
            assert decision.publish == [] and not decision.gap, "an old event did something"
        elif ok:
            assert published == [(first, last)] and not decision.gap, "a good event was not applied"
        else:
            # (b) the missing range is announced
            assert decision.gap and pending
            assert [s[:2] for s in statuses(decision)] == [(StatusReason.GAP, covered + 1)]
            if not futures:
                assert statuses(decision)[0][2] == max(1, first - covered - 1)
    # Liveness: a snapshot at the stream's end always brings the book back.
    if not checker.synced():
        decision = sync.on_snapshot(snapshot(top, exists, futures=futures), RECV)
        take(decision)
    assert checker.synced() and sync.state == State.SYNCED
    assert checker.covered == sync.last_u
    stats = sync.stats
    note_event(f"gaps: {min(stats.gaps, 3)}")
    note_event(f"refetches: {min(stats.refetches, 2)}")
    note_event(f"ignored snapshots: {min(stats.ignored_snapshots, 1)}")
    note_event(f"clears: {min(checker.clears, 4)}")
