"""L2 books from records, and the shared book table any process can read.

:class:`BookState` is the pure core: records in, books updated, the set of
instruments whose book is consistent (its last record carried LAST) out. It
is venue-agnostic: it only knows BOOK_CLEAR, BOOK_LEVEL, BBO and STATUS.
A book becomes *stale* when its source declares a loss (STATUS DROP, GAP,
RESYNC, DISCONNECTED or PRODUCER_RESTART) and valid again with the next
snapshot (BOOK_CLEAR).

:class:`BookTable` is a shared-memory table with one slot per instrument id,
each guarded by a seqlock: the writer makes the counter odd, writes, makes it
even; a reader copies the slot between two reads of an even, unchanged
counter (x86-64 keeps stores in order and loads in order, see ring.py).
"""

from __future__ import annotations

import heapq
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson

from pipeline import shm
from pipeline.errors import PipelineError
from pipeline.record import Flag, Kind, Records, Side, StatusReason

SMALL_BATCH: Final = 128
"""Below this many records a batch is applied record by record (see apply)."""

# A level is (qty, orders) keyed by price.
Levels = dict[int, tuple[int, int]]

_STALE_REASONS = frozenset(
    int(r)
    for r in (
        StatusReason.DROP,
        StatusReason.GAP,
        StatusReason.RESYNC,
        StatusReason.DISCONNECTED,
        StatusReason.PRODUCER_RESTART,
        StatusReason.STALE,
    )
)
# Plain ints for the hot loop: enum attribute access and IntFlag arithmetic
# cost more than the book update itself.
_BOOK_LEVEL, _BOOK_CLEAR, _BBO, _STATUS = (
    int(Kind.BOOK_LEVEL),
    int(Kind.BOOK_CLEAR),
    int(Kind.BBO),
    int(Kind.STATUS),
)
_BID, _ASK, _LAST = int(Side.BID), int(Side.ASK), int(Flag.LAST)


@dataclass
class L2Book:
    """One instrument's book."""

    src: int
    inst: int
    bids: Levels = field(default_factory=dict)
    asks: Levels = field(default_factory=dict)
    bbo: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Best bid px, qty, best ask px, qty from BBO records (venues that send them)."""
    valid: bool = False
    """False until a snapshot arrived, and after a declared loss until the next one."""
    consistent: bool = True
    """The last record applied carried LAST: the book may be published."""
    last_seq: int = 0
    ts_exch: int = 0
    ts_recv: int = 0
    updates: int = 0

    def top(self, depth: int) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
        """The best ``depth`` levels per side as (px, qty, orders), best first."""
        bid_px = (
            heapq.nlargest(depth, self.bids)
            if len(self.bids) > depth
            else sorted(self.bids, reverse=True)
        )
        ask_px = heapq.nsmallest(depth, self.asks) if len(self.asks) > depth else sorted(self.asks)
        return (
            [(p, *self.bids[p]) for p in bid_px],
            [(p, *self.asks[p]) for p in ask_px],
        )

    def flat_top(self, depth: int) -> tuple[list[int], list[int]]:
        """Like :meth:`top` but flat [px, qty, orders, px, ...] per side (the table's layout)."""
        return _flat(self.bids, depth, True), _flat(self.asks, depth, False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "inst": self.inst,
            "bids": sorted(([p, q, o] for p, (q, o) in self.bids.items()), reverse=True),
            "asks": sorted([p, q, o] for p, (q, o) in self.asks.items()),
            "bbo": list(self.bbo),
            "valid": self.valid,
            "consistent": self.consistent,
            "last_seq": self.last_seq,
            "ts_exch": self.ts_exch,
            "ts_recv": self.ts_recv,
            "updates": self.updates,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> L2Book:
        return cls(
            src=d["src"],
            inst=d["inst"],
            bids={p: (q, o) for p, q, o in d["bids"]},
            asks={p: (q, o) for p, q, o in d["asks"]},
            bbo=tuple(d["bbo"]),
            valid=d["valid"],
            consistent=d["consistent"],
            last_seq=d["last_seq"],
            ts_exch=d["ts_exch"],
            ts_recv=d["ts_recv"],
            updates=d["updates"],
        )


def _flat(levels: Levels, depth: int, best_is_high: bool) -> list[int]:
    if len(levels) > depth:
        prices = heapq.nlargest(depth, levels) if best_is_high else heapq.nsmallest(depth, levels)
    else:
        prices = sorted(levels, reverse=best_is_high)
    out: list[int] = []
    for p in prices:
        q, o = levels[p]
        out += (p, q, o)
    return out


class BookState:
    """Every book, and the last sequence number applied per source."""

    def __init__(self) -> None:
        self.books: dict[int, L2Book] = {}
        self.applied: dict[int, int] = {}
        """src -> last seq applied (records at or below it are skipped: replays are idempotent)."""
        self.records_applied = 0
        self.records_skipped = 0
        self.run_id = ""
        """The run these books belong to (checkpoints of another run are not resumed)."""

    def _book(self, src: int, inst: int) -> L2Book:
        book = self.books.get(inst)
        if book is None:
            book = self.books[inst] = L2Book(src, inst)
        return book

    def apply(self, records: Records) -> set[int]:
        """Apply records in order; returns the instruments touched.

        Records whose seq is not above the source's last applied seq are
        skipped, so a batch can be applied again after a crash without effect.
        """
        n = len(records)
        if n == 0:
            return set()
        src = int(records["src"][0])
        done = self.applied.get(src, 0)
        seqs = records["seq"]
        if int(seqs[0]) <= done:
            start = int(np.searchsorted(seqs, done, side="right"))
            self.records_skipped += start
            records = records[start:]
            if not len(records):
                return set()
        if len(records) < SMALL_BATCH:
            small = self._apply_sequential(records)
            self.applied[src] = int(records["seq"][-1])
            self.records_applied += len(records)
            return small
        kinds = records["kind"]
        is_level = kinds == _BOOK_LEVEL
        books = self.books
        affecting = is_level | (kinds == _BOOK_CLEAR) | (kinds == _BBO)
        for inst in np.unique(records["inst"][affecting]).tolist():
            if inst not in books:
                self._book(src, inst)
        is_bbo = kinds == _BBO
        if bool(is_bbo.any()):
            self._apply_bbo(records[is_bbo])
        # CLEAR and STATUS must happen in order relative to the levels around
        # them; between two of them, levels are applied in bulk.
        breaks = np.flatnonzero((kinds == _BOOK_CLEAR) | (kinds == _STATUS)).tolist()
        start = 0
        for b in [*breaks, len(records)]:
            if b > start:
                self._apply_levels(records[start:b][is_level[start:b]])
            if b < len(records):
                self._apply_special(records[b])
            start = b + 1
        # Per-book metadata comes from the last record that touched each book:
        # set once per book per batch, not once per record.
        affecting = is_level | (kinds == _BOOK_CLEAR) | (kinds == _BBO)
        rows = np.flatnonzero(affecting)
        if not len(rows):
            self.applied[src] = int(records["seq"][-1])
            self.records_applied += len(records)
            return set()
        insts = records["inst"][rows]
        uniq, first_from_end, counts = np.unique(insts[::-1], return_index=True, return_counts=True)
        last_rows = rows[len(rows) - 1 - first_from_end]
        meta = records[last_rows]
        touched: set[int] = set()
        for inst, seq, ts_exch, ts_recv, flags, count in zip(
            uniq.tolist(),
            meta["seq"].tolist(),
            meta["ts_exch"].tolist(),
            meta["ts_recv"].tolist(),
            meta["flags"].tolist(),
            counts.tolist(),
            strict=True,
        ):
            book = books[inst]
            book.consistent = (flags & _LAST) != 0
            book.last_seq = seq
            book.ts_exch = ts_exch
            book.ts_recv = ts_recv
            book.updates += count
            touched.add(inst)
        self.applied[src] = int(records["seq"][-1])
        self.records_applied += len(records)
        return touched

    def _apply_sequential(self, records: Records) -> set[int]:
        """Record by record: cheaper than the bulk path's fixed numpy cost for
        the small batches of a quiet feed (where latency matters most)."""
        touched: set[int] = set()
        books = self.books
        for seq, ts_exch, ts_recv, inst, rsrc, kind, side, flags, px, qty, aux in zip(
            records["seq"].tolist(),
            records["ts_exch"].tolist(),
            records["ts_recv"].tolist(),
            records["inst"].tolist(),
            records["src"].tolist(),
            records["kind"].tolist(),
            records["side"].tolist(),
            records["flags"].tolist(),
            records["px"].tolist(),
            records["qty"].tolist(),
            records["aux"].tolist(),
            strict=True,
        ):
            if kind == _BOOK_LEVEL:
                book = books.get(inst) or self._book(rsrc, inst)
                side_levels = book.bids if side == _BID else book.asks
                if qty:
                    side_levels[px] = (qty, aux)
                else:
                    side_levels.pop(px, None)
            elif kind == _BOOK_CLEAR:
                book = books.get(inst) or self._book(rsrc, inst)
                if side != _ASK:
                    book.bids.clear()
                if side != _BID:
                    book.asks.clear()
                book.valid = True
            elif kind == _BBO:
                book = books.get(inst) or self._book(rsrc, inst)
                b = book.bbo
                book.bbo = (px, qty, b[2], b[3]) if side == _BID else (b[0], b[1], px, qty)
            else:
                if kind == _STATUS and aux in _STALE_REASONS:
                    self._mark_stale(rsrc, inst)
                continue
            book.consistent = (flags & _LAST) != 0
            book.last_seq = seq
            book.ts_exch = ts_exch
            book.ts_recv = ts_recv
            book.updates += 1
            touched.add(inst)
        return touched

    def _apply_levels(self, levels: Records) -> None:
        """Apply level updates in bulk. Each update sets a level absolutely (or
        deletes it), so only the last update of each (instrument, side, price)
        in the run matters: find those with one sort, then update each side's
        dict with C-speed bulk operations."""
        n = len(levels)
        if n == 0:
            return
        inst = levels["inst"][::-1]
        side = levels["side"][::-1]
        px = levels["px"][::-1]
        order = np.lexsort((px, side, inst))  # stable: the latest update comes first per key
        i_s, s_s, p_s = inst[order], side[order], px[order]
        first = np.ones(n, dtype=bool)
        first[1:] = (i_s[1:] != i_s[:-1]) | (s_s[1:] != s_s[:-1]) | (p_s[1:] != p_s[:-1])
        pick = order[first]
        i_k, s_k = i_s[first], s_s[first]
        qty = levels["qty"][::-1][pick]
        orders = levels["aux"][::-1][pick]
        group = np.flatnonzero(
            np.concatenate(([True], (i_k[1:] != i_k[:-1]) | (s_k[1:] != s_k[:-1])))
        )
        bounds = [*group.tolist(), len(pick)]
        px_l = p_s[first].tolist()
        level_l = list(zip(qty.tolist(), orders.tolist(), strict=True))
        deleted = np.flatnonzero(qty == 0).tolist()
        inst_l, side_l = i_k[group].tolist(), s_k[group].tolist()
        books = self.books
        d = 0
        for inst_, side_, lo, hi in zip(inst_l, side_l, bounds, bounds[1:], strict=False):
            book = books[inst_]
            side_levels = book.bids if side_ == _BID else book.asks
            side_levels.update(zip(px_l[lo:hi], level_l[lo:hi], strict=True))
            # Deletions were stored as (0, orders) above; remove them now.
            while d < len(deleted) and deleted[d] < hi:
                del side_levels[px_l[deleted[d]]]
                d += 1

    def _apply_bbo(self, bbo: Records) -> None:
        """The last BBO per (instrument, side) wins."""
        books = self.books
        for inst, side, px, qty in zip(
            bbo["inst"].tolist(),
            bbo["side"].tolist(),
            bbo["px"].tolist(),
            bbo["qty"].tolist(),
            strict=True,
        ):
            book = books[inst]
            b = book.bbo
            book.bbo = (px, qty, b[2], b[3]) if side == _BID else (b[0], b[1], px, qty)

    def _apply_special(self, r: np.void) -> None:
        kind, inst, side = int(r["kind"]), int(r["inst"]), int(r["side"])
        if kind == _BOOK_CLEAR:
            book = self.books[inst]
            if side != _ASK:
                book.bids.clear()
            if side != _BID:
                book.asks.clear()
            book.valid = True
        elif int(r["aux"]) in _STALE_REASONS:
            self._mark_stale(int(r["src"]), inst)

    def _mark_stale(self, src: int, inst: int) -> None:
        """A declared loss: the instrument's book (or every book of the source) is stale."""
        if inst:
            book = self.books.get(inst)
            if book is not None:
                book.valid = False
            return
        for book in self.books.values():
            if book.src == src:
                book.valid = False

    # -- checkpoints ---------------------------------------------------------

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "run_id": self.run_id,
                "applied": {str(k): v for k, v in self.applied.items()},
                "books": [b.as_dict() for b in self.books.values()],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> BookState:
        raw = orjson.loads(data)
        if raw.get("version") != 1:
            raise PipelineError(f"book checkpoint version {raw.get('version')} not supported")
        state = cls()
        state.run_id = raw.get("run_id", "")
        state.applied = {int(k): v for k, v in raw["applied"].items()}
        for d in raw["books"]:
            book = L2Book.from_dict(d)
            state.books[book.inst] = book
        return state


def save_checkpoint(state: BookState, path: Path) -> None:
    """Write atomically: a crash leaves the previous checkpoint or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(state.to_bytes())
            f.flush()
            os.fdatasync(f.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)  # e.g. a full disk: leave no half file behind
        raise
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_checkpoint(path: Path) -> BookState | None:
    """The checkpoint at ``path``, or None if there is none (a corrupt one raises)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return BookState.from_bytes(data)
    except Exception as exc:  # any malformed content: one clear error naming the file
        raise PipelineError(f"book checkpoint {path} is unreadable: {exc}") from None


# ---------------------------------------------------------------------------
# the shared table

TABLE_MAGIC: Final = 0x3142414B4F4F4243  # b"CBOOKAB1"
TABLE_VERSION: Final = 1
TABLE_HEADER_BYTES: Final = 4096
# slot words
S_SEQLOCK, S_INST_SRC, S_LAST_SEQ, S_TS_EXCH, S_TS_RECV, S_TS_PUBLISH, S_COUNTS, S_UPDATES = range(
    8
)
S_BBO: Final = 8  # bid px, bid qty, ask px, ask qty
S_LEVELS: Final = 16  # then depth x (px, qty, orders) bids, then asks
VALID_BIT: Final = 1 << 40
_ZEROS: Final = [0] * 6000


@dataclass(frozen=True)
class BookSnapshot:
    """A consistent copy of one slot."""

    inst: int
    src: int
    valid: bool
    last_seq: int
    ts_exch: int
    ts_recv: int
    ts_publish: int
    updates: int
    bbo: tuple[int, int, int, int]
    bids: list[tuple[int, int, int]]
    asks: list[tuple[int, int, int]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "inst": self.inst,
            "src": self.src,
            "valid": self.valid,
            "last_seq": self.last_seq,
            "ts_exch": self.ts_exch,
            "ts_recv": self.ts_recv,
            "ts_publish": self.ts_publish,
            "updates": self.updates,
            "bbo": list(self.bbo),
            "bids": [list(x) for x in self.bids],
            "asks": [list(x) for x in self.asks],
        }


class BookTable:
    """The shared table: ``slots`` instruments (id = slot index) x ``depth`` levels."""

    def __init__(self, segment: shm.Segment, owner: bool) -> None:
        self.segment = segment
        self.owner = owner
        head = np.frombuffer(segment.buf, dtype=np.uint64, count=8)
        if int(head[0]) != TABLE_MAGIC or int(head[1]) != TABLE_VERSION:
            raise PipelineError(f"shared memory {segment.name!r} is not a book table")
        self.depth = int(head[2])
        self.slots = int(head[3])
        self.slot_words = int(head[4])
        body = np.frombuffer(
            segment.buf,
            dtype=np.int64,
            count=self.slots * self.slot_words,
            offset=TABLE_HEADER_BYTES,
        )
        self._t: npt.NDArray[np.int64] = body.reshape(self.slots, self.slot_words)
        # The writer's fast path: the table as signed 8-byte words and as bytes.
        table_bytes = memoryview(segment.buf)[
            TABLE_HEADER_BYTES : TABLE_HEADER_BYTES + self.slots * self.slot_words * 8
        ]
        self._bytes = table_bytes
        self._words = table_bytes.cast("q")
        self._pack = struct.Struct(f"<{self.slot_words - 1}q").pack_into

    @staticmethod
    def size_for(slots: int, depth: int) -> tuple[int, int]:
        words = S_LEVELS + 6 * depth
        words += -words % 8  # whole cache lines per slot
        return words, TABLE_HEADER_BYTES + slots * words * 8

    @classmethod
    def create(cls, name: str, slots: int, depth: int) -> BookTable:
        words, size = cls.size_for(slots, depth)
        seg = shm.create(name, size)
        head = np.frombuffer(seg.buf, dtype=np.uint64, count=8)
        head[1:5] = (TABLE_VERSION, depth, slots, words)
        head[0] = TABLE_MAGIC
        del head
        return cls(seg, owner=True)

    @classmethod
    def attach(cls, name: str) -> BookTable:
        return cls(shm.attach(name), owner=False)

    # -- writer --------------------------------------------------------------

    def publish(self, book: L2Book, ts_publish: int) -> None:
        """Write one book's top levels into its slot under the seqlock."""
        inst = book.inst
        if inst >= self.slots:
            raise PipelineError(
                f"instrument id {inst} is beyond the book table ({self.slots} slots)"
            )
        depth = self.depth
        bids, asks = book.flat_top(depth)
        # One struct call packs the whole slot image (numpy element writes
        # would cost more than the book update that caused the publish).
        values = [
            inst | (book.src << 32) | (VALID_BIT if book.valid else 0),
            book.last_seq,
            book.ts_exch,
            book.ts_recv,
            ts_publish,
            len(bids) // 3 | (len(asks) // 3 << 32),
            book.updates,
            *book.bbo,
            0,
            0,
            0,
            0,
            *bids,
        ]
        values += _ZEROS[: 3 * depth - len(bids)]
        values += asks
        values += _ZEROS[: self.slot_words - 1 - len(values)]
        base = inst * self.slot_words
        lock = self._words
        lock[base] += 1  # odd: writing
        self._pack(self._bytes, (base + 1) * 8, *values)
        lock[base] += 1  # even: consistent

    # -- readers -------------------------------------------------------------

    def read(self, inst: int, *, retries: int = 10_000) -> BookSnapshot | None:
        """A consistent copy of one slot, or None if nothing was ever published there."""
        if not 0 <= inst < self.slots:
            raise PipelineError(
                f"instrument id {inst} is outside the book table (0..{self.slots - 1})"
            )
        row = self._t[inst]
        for _ in range(retries):
            before = int(row[S_SEQLOCK])
            if before & 1:
                continue
            copy = row.copy()
            if int(row[S_SEQLOCK]) == before:
                break
        else:
            raise PipelineError(f"book slot {inst} kept changing; could not read a consistent copy")
        if before == 0:
            return None
        inst_src = int(copy[S_INST_SRC])
        counts = int(copy[S_COUNTS])
        nb, na = counts & 0xFFFFFFFF, counts >> 32
        levels = copy[S_LEVELS:]
        bids = [tuple(x) for x in levels[: 3 * nb].reshape(-1, 3).tolist()]
        asks = [
            tuple(x)
            for x in levels[3 * self.depth : 3 * self.depth + 3 * na].reshape(-1, 3).tolist()
        ]
        return BookSnapshot(
            inst=inst_src & 0xFFFFFFFF,
            src=(inst_src >> 32) & 0xFF,
            valid=bool(inst_src & VALID_BIT),
            last_seq=int(copy[S_LAST_SEQ]),
            ts_exch=int(copy[S_TS_EXCH]),
            ts_recv=int(copy[S_TS_RECV]),
            ts_publish=int(copy[S_TS_PUBLISH]),
            updates=int(copy[S_UPDATES]),
            bbo=tuple(int(x) for x in copy[S_BBO : S_BBO + 4]),  # type: ignore[arg-type]
            bids=bids,
            asks=asks,
        )

    def published(self) -> list[int]:
        """Instrument ids whose slot was ever written."""
        return np.flatnonzero(self._t[:, S_SEQLOCK]).tolist()

    def close(self) -> None:
        for view in ("_words", "_bytes"):
            mv = self.__dict__.pop(view, None)
            if mv is not None:
                mv.release()
        self.__dict__.pop("_t", None)
        self.segment.close()

    def unlink(self) -> None:
        shm.unlink(self.segment.name)


def replay_books(batches: Iterable[Records], until_ns: int | None = None) -> BookState:
    """Rebuild books from record batches (e.g. a WAL), optionally up to a receive time."""
    state = BookState()
    for batch in batches:
        if until_ns is not None:
            batch = batch[batch["ts_recv"] <= until_ns]
        state.apply(batch)
    return state
