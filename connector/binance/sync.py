"""Binance local order book sync, as a state machine per symbol (sans-I/O).

Spot (PROTOCOLS.md): buffer diff events; fetch a snapshot (``lastUpdateId``
= L); drop buffered events with ``u <= L``; the first applied event must have
``U <= L + 1 <= u``; after that every event must have ``U == previous u + 1``.
USD-M futures: drop events with ``u < L``; the first applied event has
``U <= L <= u``; after that each event's ``pu`` must equal the previous ``u``.
A snapshot older than the first buffered event is fetched again.

Events in and decisions out: :meth:`BookSync.on_depth` and
:meth:`BookSync.on_snapshot` return a :class:`Decision` holding the records
to publish (snapshot levels, applicable diffs, STATUS records for gaps and
resyncs) and whether a snapshot must be fetched. A gap is a decision, not a
log line: it produces a STATUS/GAP record (the book builder marks the book
stale) and a request for a fresh snapshot, whose BOOK_CLEAR carries
AFTER_GAP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from pipeline import record as rec
from pipeline.record import Flag, Kind, Records, StatusReason

MAX_BUFFERED: Final = 10_000
"""Diff events kept while waiting for a snapshot (older ones are dropped, and a refetch follows)."""


class State(enum.Enum):
    BUFFERING = "buffering"
    """Waiting for a snapshot; diff events are buffered."""
    SYNCED = "synced"


@dataclass
class Decision:
    publish: list[Records] = field(default_factory=list)
    """Record batches to publish, in order."""
    fetch_snapshot: bool = False
    """The caller must fetch a REST snapshot for this symbol (now, or as its rate limits allow)."""
    gap: bool = False
    """A gap was detected by this event."""

    def records(self) -> Records:
        return rec.concat(self.publish)


@dataclass
class SyncStats:
    applied: int = 0
    dropped_old: int = 0
    gaps: int = 0
    resyncs: int = 0
    snapshots: int = 0
    refetches: int = 0
    overflowed: int = 0
    ignored_snapshots: int = 0


def _ids(event: Records) -> tuple[int, int, int]:
    """(U, u, pu) of a depth event's BOOK_UPDATE record."""
    head = event[0]
    if int(head["kind"]) != Kind.BOOK_UPDATE:
        raise ValueError("a depth event starts with its BOOK_UPDATE record")
    return int(head["px"]), int(head["qty"]), int(head["aux"])


class BookSync:
    """The sync state of one symbol's book."""

    def __init__(self, inst: int, *, futures: bool = False) -> None:
        self.inst = inst
        self.futures = futures
        self.state = State.BUFFERING
        self.buffer: list[Records] = []
        self.snapshot_pending = False
        self.last_u = 0
        """The last update id applied (the snapshot's lastUpdateId right after one)."""
        self.first_after_snapshot = False
        self.after_gap = False
        self.stats = SyncStats()

    # -- helpers -------------------------------------------------------------

    def _status(
        self, reason: StatusReason, recv_ns: int, first_missing: int = 0, missing: int = 0
    ) -> Records:
        return rec.status(
            src=0,
            reason=reason,
            ts_recv=recv_ns,
            inst=self.inst,
            first_missing=first_missing,
            missing=missing,
        )

    def _fits_first(self, first: int, last: int, snapshot_id: int) -> bool:
        if self.futures:
            return first <= snapshot_id <= last
        return first <= snapshot_id + 1 <= last

    def _is_old(self, last: int, snapshot_id: int) -> bool:
        return last < snapshot_id if self.futures else last <= snapshot_id

    def _continues(self, first: int, prev: int) -> bool:
        return prev == self.last_u if self.futures else first == self.last_u + 1

    def _request(self, decision: Decision) -> Decision:
        if not self.snapshot_pending:
            self.snapshot_pending = True
            decision.fetch_snapshot = True
        return decision

    # -- events --------------------------------------------------------------

    def on_depth(self, event: Records, recv_ns: int) -> Decision:
        """A decoded depthUpdate (BOOK_UPDATE + levels)."""
        first, last, prev = _ids(event)
        decision = Decision()
        if self.state == State.BUFFERING:
            self.buffer.append(event)
            if len(self.buffer) > MAX_BUFFERED:
                self.buffer.pop(0)
                self.stats.overflowed += 1
            return self._request(decision)
        if self.first_after_snapshot:
            # (USD-M: an event ending exactly at the snapshot's id is the first one to apply.)
            old = self._is_old(last, self.last_u)
            ok = self._fits_first(first, last, self.last_u)
        else:
            old = last <= self.last_u
            ok = self._continues(first, prev)
        if old:
            self.stats.dropped_old += 1  # a duplicate, or a late event the book already covers
            return decision
        if ok:
            self.first_after_snapshot = False
            self.last_u = last
            self.stats.applied += 1
            decision.publish.append(event)
            return decision
        # A gap: the book is wrong from here until a new snapshot. Spot ids
        # are per symbol, so the missing count is exact; USD-M ids are shared
        # by all symbols, so only "at least one event" is known. Either way
        # aux2 holds the first id received after the gap.
        expected = self.last_u + 1
        missing = 1 if self.futures else max(1, first - expected)
        self.stats.gaps += 1
        self.stats.resyncs += 1
        decision.gap = True
        gap = self._status(StatusReason.GAP, recv_ns, expected, missing)
        gap["aux2"] = first
        decision.publish.append(gap)
        self.state = State.BUFFERING
        self.buffer = [event]
        self.after_gap = True
        self.snapshot_pending = False
        return self._request(decision)

    def on_snapshot(self, snapshot: Records, recv_ns: int) -> Decision:
        """A decoded REST snapshot (BOOK_CLEAR + levels)."""
        head = snapshot[0]
        if int(head["kind"]) != Kind.BOOK_CLEAR:
            raise ValueError("a snapshot starts with its BOOK_CLEAR record")
        snapshot_id = int(head["aux"])
        decision = Decision()
        if self.state == State.SYNCED:
            self.stats.ignored_snapshots += 1  # nobody asked: a late duplicate
            return decision
        self.snapshot_pending = False
        kept = [e for e in self.buffer if not self._is_old(_ids(e)[1], snapshot_id)]
        self.stats.dropped_old += len(self.buffer) - len(kept)
        if kept and not self._fits_first(_ids(kept[0])[0], _ids(kept[0])[1], snapshot_id):
            # Not old (u is past the snapshot) and not fitting: the first
            # buffered event starts after the snapshot. It is too old: again.
            self.buffer = kept
            self.stats.refetches += 1
            return self._request(decision)
        self.stats.snapshots += 1
        if self.after_gap:
            snapshot = snapshot.copy()
            snapshot["flags"][0] |= Flag.AFTER_GAP
            self.after_gap = False
        decision.publish.append(snapshot)
        decision.publish.append(self._status(StatusReason.SNAPSHOT_APPLIED, recv_ns, snapshot_id))
        self.state = State.SYNCED
        self.last_u = snapshot_id
        self.first_after_snapshot = True
        self.buffer = []
        for event in kept:
            more = self.on_depth(event, recv_ns)
            decision.publish += more.publish
            decision.gap |= more.gap
            decision.fetch_snapshot |= more.fetch_snapshot
        return decision

    def on_disconnect(self, recv_ns: int) -> Decision:
        """The stream is gone: the book is stale until the next snapshot."""
        decision = Decision()
        if self.state == State.SYNCED:
            decision.publish.append(self._status(StatusReason.DISCONNECTED, recv_ns))
        self.state = State.BUFFERING
        self.buffer = []
        self.snapshot_pending = False
        self.after_gap = True
        return decision
