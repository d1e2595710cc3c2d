"""The 64-byte record: the one unit every part of the pipeline moves.

Layout (little-endian, 8-byte aligned, exactly 64 bytes)::

    off  field    type  meaning
      0  seq      u64   per-source sequence, +1 per record, continuous across restarts
      8  ts_exch  i64   exchange event time, ns since the epoch (0: the venue gives none)
     16  ts_recv  i64   local receive time of the wire frame, ns since the epoch
     24  inst     u32   dense instrument id from the instrument registry
     28  src      u8    source id (one per feed, from the configuration)
     29  kind     u8    :class:`Kind`
     30  side     u8    :class:`Side`
     31  flags    u8    :class:`Flag` bits
     32  px       i64   price, fixed point 1e8 (see :mod:`pipeline.fixedpoint`)
     40  qty      i64   quantity, fixed point 1e8
     48  aux      i64   kind-specific (below)
     56  aux2     i64   kind-specific (below)

One wire message becomes one or more records; the last one carries
``Flag.LAST`` (the book is consistent after it). Every field a venue sent must
be recoverable from the records.

Field use per kind (fields not named are 0):

``BOOK_CLEAR``
    Forget the book of ``inst`` (both sides unless ``side`` names one). Sent
    before a snapshot's levels. ``aux`` = the venue's book version / update id
    the snapshot is at, where it has one.
``BOOK_LEVEL``
    Set one price level: ``side``, ``px``, ``qty`` (absolute; 0 deletes the
    level). ``aux`` = number of orders at the level where the venue gives it,
    else 0. ``aux2`` = level index (0 = best) for fixed-depth venues, else -1.
    Snapshot levels carry ``Flag.SNAPSHOT``.
``TRADE``
    ``px``, ``qty``, ``side`` = aggressor side (BUY: the buyer took liquidity),
    ``aux`` = venue trade id, ``aux2`` = venue-specific second id (e.g. the last
    trade id of an aggregated trade), else 0.
``BBO``
    Best bid/offer: two records per quote: ``side`` BID then ASK, each with
    ``px``/``qty``; ``aux`` = the venue's update id where it has one.
``TICK``
    Last traded price (``px``) and quantity (``qty``); ``aux`` = cumulative day
    volume (fixed point), ``aux2`` = last trade time, ns since the epoch.
``STATS``
    ``px`` = average traded price, ``qty`` = total buy quantity, ``aux`` = total
    sell quantity (all fixed point).
``OHLC``
    Four records per bar, ``aux2`` = :class:`OhlcField` (OPEN, HIGH, LOW, CLOSE),
    ``px`` = that price; ``qty`` = the bar's volume on the CLOSE record;
    ``aux`` = the bar's open time, ns since the epoch.
``OI``
    ``qty`` = open interest; ``px`` = 0; ``aux`` = day high OI, ``aux2`` = day low OI.
``MARK``
    ``px`` = mark price, ``qty`` = index price, ``aux`` = funding rate (fixed
    point), ``aux2`` = next funding time, ns since the epoch.
``BOOK_UPDATE``
    Opens a book diff message and carries the venue's update ids for the
    BOOK_LEVEL records that follow in the same message: ``px`` = first update
    id, ``qty`` = last update id, ``aux`` = the previous message's last id
    where the venue sends it (else -1), ``aux2`` = transaction time in ns
    (else 0). The book builder ignores it; sync checks and audits use it.
``EXTRA``
    More fields of the record before it in the same message, for venues that
    send more than one record holds; the layout per message type is
    documented by the venue's decoder (e.g. an aggregated trade's first and
    last trade ids). Ignored by the book builder.
``STATUS``
    Something happened to the feed rather than the market. ``aux`` =
    :class:`StatusReason`; ``inst`` = the instrument concerned, 0 for the whole
    source. For ``GAP`` and ``DROP``: ``px`` = first missing sequence number
    (of the source's own ``seq`` for DROP; of the venue's update id for GAP),
    ``qty`` = how many are missing, ``aux2`` = reason-specific detail.
    The record carries ``Flag.AFTER_GAP`` when it declares a loss.

Copy records through a ``V64`` view (:data:`V64`): numpy copies an opaque
64-byte dtype about 7x faster than the structured dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum, IntFlag
from typing import Final

import numpy as np
import numpy.typing as npt

RECORD_SIZE: Final = 64
SCHEMA_VERSION: Final = 1

RECORD_DTYPE: Final = np.dtype(
    [
        ("seq", "<u8"),
        ("ts_exch", "<i8"),
        ("ts_recv", "<i8"),
        ("inst", "<u4"),
        ("src", "u1"),
        ("kind", "u1"),
        ("side", "u1"),
        ("flags", "u1"),
        ("px", "<i8"),
        ("qty", "<i8"),
        ("aux", "<i8"),
        ("aux2", "<i8"),
    ],
    align=True,
)
assert RECORD_DTYPE.itemsize == RECORD_SIZE

V64: Final = np.dtype("V64")
"""Opaque 64-byte dtype for fast copies of records."""

Records = npt.NDArray[np.void]
"""An array of :data:`RECORD_DTYPE`."""

# Word offsets (in u64 units) for code that works on an (n, 8) uint64 view.
WORD_SEQ: Final = 0
WORD_TS_EXCH: Final = 1
WORD_TS_RECV: Final = 2


class Kind(IntEnum):
    """What a record says. 0 is never a valid kind (it marks unwritten memory)."""

    BOOK_CLEAR = 1
    BOOK_LEVEL = 2
    TRADE = 3
    BBO = 4
    TICK = 5
    STATS = 6
    OHLC = 7
    OI = 8
    MARK = 9
    STATUS = 10
    BOOK_UPDATE = 11
    EXTRA = 12


class Side(IntEnum):
    NONE = 0
    BID = 1
    ASK = 2
    BUY = 1
    SELL = 2


class Flag(IntFlag):
    LAST = 1
    """Last record of one wire event: the book is consistent after it."""
    SNAPSHOT = 2
    """Part of a snapshot (levels after a BOOK_CLEAR)."""
    AFTER_GAP = 4
    """The first record after a loss; or a STATUS record declaring one."""


class StatusReason(IntEnum):
    """``aux`` of a STATUS record."""

    CONNECTED = 1
    DISCONNECTED = 2
    GAP = 3
    """The venue's own sequence jumped (update ids): the book must resync."""
    RESYNC = 4
    SNAPSHOT_APPLIED = 5
    DROP = 6
    """The ring was full past its bound: ``qty`` records from seq ``px`` were dropped."""
    RECONNECT = 7
    DECODE_ERROR = 8
    STALE = 9
    """No data or heartbeat within the watchdog limit."""
    PRODUCER_RESTART = 10
    TRADES_MISSED = 11
    """Trades with ids ``px`` .. ``px + qty - 1`` never arrived (an outage); books are unaffected."""
    SUBSCRIBE_FAILED = 12
    """The venue refused a subscription (``aux2`` = its error code)."""


class OhlcField(IntEnum):
    OPEN = 0
    HIGH = 1
    LOW = 2
    CLOSE = 3


def empty(n: int) -> Records:
    """A zeroed array of ``n`` records."""
    return np.zeros(n, dtype=RECORD_DTYPE)


def concat(parts: Sequence[Records]) -> Records:
    """One array of many record arrays.

    Through the opaque 64-byte view: ``np.concatenate`` of structured arrays
    promotes their dtypes field by field, ~20 us per part (measured: it was
    a venue feed's biggest cost, called once per small batch).
    """
    if not parts:
        return empty(0)
    if len(parts) == 1:
        return parts[0]
    out: Records = np.concatenate([p.view(V64) for p in parts]).view(RECORD_DTYPE)
    return out


def as_words(records: Records) -> npt.NDArray[np.uint64]:
    """The records as an (n, 8) uint64 view (no copy)."""
    return records.view(np.uint64).reshape(len(records), 8)


def status(
    *,
    src: int,
    reason: StatusReason,
    ts_recv: int,
    inst: int = 0,
    first_missing: int = 0,
    missing: int = 0,
    detail: int = 0,
) -> Records:
    """One STATUS record (LAST set; AFTER_GAP set when it declares a loss)."""
    rec = empty(1)
    rec["ts_recv"] = ts_recv
    rec["inst"] = inst
    rec["src"] = src
    rec["kind"] = Kind.STATUS
    flags = Flag.LAST
    if missing > 0:
        flags |= Flag.AFTER_GAP
    rec["flags"] = flags
    rec["px"] = first_missing
    rec["qty"] = missing
    rec["aux"] = reason
    rec["aux2"] = detail
    return rec


_KIND_NAMES = {int(k): k.name for k in Kind}
_SIDE_NAMES = {0: "NONE", 1: "BID", 2: "ASK"}
_REASON_NAMES = {int(r): r.name for r in StatusReason}


def describe(records: Records) -> list[dict[str, object]]:
    """Records as JSON-able dicts: names for kind/side/flags/reason, exact decimal strings for prices."""
    from pipeline.fixedpoint import format as fmt

    out: list[dict[str, object]] = []
    for r in records.tolist():
        seq, ts_exch, ts_recv, inst, src, kind, side, flags, px, qty, aux, aux2 = r
        item: dict[str, object] = {
            "seq": seq,
            "src": src,
            "kind": _KIND_NAMES.get(kind, str(kind)),
            "inst": inst,
            "side": _SIDE_NAMES.get(side, str(side)),
            "flags": [f.name for f in Flag if flags & f],
            "ts_exch": ts_exch,
            "ts_recv": ts_recv,
        }
        if kind == Kind.STATUS:
            item.update(
                reason=_REASON_NAMES.get(aux, str(aux)), first_missing=px, missing=qty, detail=aux2
            )
        elif kind == Kind.BOOK_UPDATE:  # ids, not prices
            item.update(
                first_update_id=px, last_update_id=qty, prev_update_id=aux, transact_time_ns=aux2
            )
        else:
            item.update(px=fmt(px), qty=fmt(qty), aux=aux, aux2=aux2)
        out.append(item)
    return out
