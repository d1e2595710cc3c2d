"""The WAL-backed instrument store: versioned snapshots, recovery, dense ids.

Each refresh writes a whole snapshot (:mod:`connector.instruments.snapshot`)
as BLOB frames through :mod:`pipeline.wal` into ``<data dir>/instruments_wal/``
and syncs it. Start-up walks the segments from the newest backwards and takes
the newest version whose parts are all present and CRC-clean; a torn or
partial newer version (a crash mid-write) is ignored with a warning and the
previous one is used. After a write, segments holding only versions older than
the previous complete one are deleted, so recovery reads one or two segments
however long the service has run.

A refresh runs as one transaction under the WAL writer's directory lock:
recover the latest snapshot, merge the new venue tables into it (dense ids:
the same identity keeps its id, new identities get ``next_inst`` and up, ids
are never reused), write, sync.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import mmap
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np

from connector.instruments import snapshot as snap
from connector.instruments.model import (
    NO_DATE,
    InstrumentDataError,
    InstrumentTable,
    Venue,
    date_to_days,
)
from connector.instruments.snapshot import Snapshot
from pipeline import paths, wal
from pipeline.errors import RetryableError, WalError, WalLockedError

log = logging.getLogger("connector.instruments")

FIRST_INST: Final = 1
"""Dense ids start here (0 means "no instrument" in a record)."""
DEFAULT_PART_BYTES: Final = 4 << 20
EXAMPLES: Final = 20
"""How many symbols a change report lists per kind of change."""


@dataclass(frozen=True)
class StoreConfig:
    """How snapshots are written: WAL segment size and the size of each part (frame)."""

    segment_bytes: int = wal.DEFAULT_SEGMENT_BYTES
    part_bytes: int = DEFAULT_PART_BYTES

    def wal_config(self) -> wal.WalConfig:
        # Durability is explicit: the writer syncs once the last part is written.
        return wal.WalConfig(segment_bytes=self.segment_bytes, fsync="rotate")


@dataclass
class Recovered:
    """What recovery found: the latest complete snapshot (or None) and why others were skipped."""

    snapshot: Snapshot | None
    max_version: int = 0
    warnings: list[str] = field(default_factory=list)
    segments_read: int = 0
    payload_bytes: int = 0


@dataclass
class _Part:
    segment: int
    offset: int
    length: int
    header: snap.PartHeader


def _map(path: Path) -> mmap.mmap | None:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else None


def _complete(parts: dict[int, _Part]) -> bool:
    first = next(iter(parts.values())).header
    return len(parts) == first.count and sum(p.length for p in parts.values()) == first.total


def recover(directory: Path | str) -> Recovered:
    """The newest complete snapshot in ``directory`` (a WAL); never modifies anything."""
    directory = Path(directory)
    result = Recovered(None)
    segments = wal.segment_paths(directory)
    maps: dict[int, mmap.mmap] = {}
    by_version: dict[int, dict[int, _Part]] = {}
    chosen: int | None = None
    try:
        for i in range(len(segments) - 1, -1, -1):
            path = segments[i]
            try:
                mapped = _map(path)
            except FileNotFoundError:
                continue  # pruned by a writer while we listed: older than what we need
            if mapped is None:
                continue
            maps[i] = mapped
            result.segments_read += 1
            view = memoryview(mapped)
            try:
                scan = wal.scan_segment(path, view, last=i == len(segments) - 1)
                for c in scan.corrupt:
                    result.warnings.append(
                        f"instruments WAL {c.file} offset {c.offset}: {c.reason}"
                    )
                if scan.torn_bytes:
                    result.warnings.append(
                        f"instruments WAL {path}: torn tail of {scan.torn_bytes} bytes after "
                        f"offset {scan.end} (a write was interrupted)"
                    )
                for fr in scan.frames:
                    if fr.kind != wal.FrameKind.BLOB:
                        continue
                    head = snap.part_header(view[fr.payload_offset : fr.payload_offset + 32])
                    if head is None:
                        continue
                    result.max_version = max(result.max_version, head.version)
                    by_version.setdefault(head.version, {})[head.index] = _Part(
                        i,
                        fr.payload_offset + snap.PART_HEAD.size,
                        fr.length - snap.PART_HEAD.size,
                        head,
                    )
            finally:
                view.release()
            complete = [v for v, parts in by_version.items() if _complete(parts)]
            if complete:
                chosen = max(complete)
                break
        for version in sorted(v for v in by_version if chosen is None or v > chosen):
            have = by_version[version]
            count = next(iter(have.values())).header.count
            using = "no earlier snapshot" if chosen is None else f"using version {chosen}"
            result.warnings.append(
                f"instruments snapshot version {version} is torn ({len(have)} of {count} parts "
                f"intact): ignored, {using}"
            )
        if chosen is not None:
            parts = by_version[chosen]
            payload = b"".join(
                maps[p.segment][p.offset : p.offset + p.length] for _, p in sorted(parts.items())
            )
            result.payload_bytes = len(payload)
            result.snapshot = snap.decode(payload)
    finally:
        for m in maps.values():
            with contextlib.suppress(BufferError):
                m.close()
    for w in result.warnings:
        log.warning("%s", w)
    return result


def snapshot_payloads(directory: Path | str) -> Iterator[tuple[int, bytes]]:
    """(version, payload) of every complete snapshot still in the WAL, oldest first (slow path)."""
    by_version: dict[int, dict[int, bytes]] = {}
    counts: dict[int, tuple[int, int]] = {}
    for frame in wal.WalReader(directory).frames(strict=False):
        if frame.kind != wal.FrameKind.BLOB:
            continue
        head = snap.part_header(frame.payload)
        if head is None:
            continue
        by_version.setdefault(head.version, {})[head.index] = frame.payload[snap.PART_HEAD.size :]
        counts[head.version] = (head.count, head.total)
    for version in sorted(by_version):
        parts = by_version[version]
        count, total = counts[version]
        if len(parts) == count:
            payload = b"".join(parts[i] for i in range(count))
            if len(payload) == total:
                yield version, payload


# ---------------------------------------------------------------------------
# merging a refresh into the previous snapshot


@dataclass(frozen=True)
class VenueChanges:
    """What a refresh changed for one venue."""

    venue: Venue
    rows: int
    added: int
    removed: int
    expired: int
    added_examples: tuple[str, ...] = ()
    removed_examples: tuple[str, ...] = ()
    expired_examples: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "venue": self.venue.name.lower().replace("_", "-"),
            "rows": self.rows,
            "added": self.added,
            "removed": self.removed,
            "expired": self.expired,
            "added_examples": list(self.added_examples),
            "removed_examples": list(self.removed_examples),
            "expired_examples": list(self.expired_examples),
        }


@dataclass(frozen=True)
class ChangeReport:
    """The changes of one refresh, per venue refreshed."""

    version: int
    previous_version: int
    venues: tuple[VenueChanges, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "previous_version": self.previous_version,
            "venues": [v.as_json() for v in self.venues],
        }

    def summary(self) -> str:
        parts = [
            f"{v.venue.name.lower()}: {v.rows:,} rows, +{v.added:,} added, "
            f"-{v.removed:,} removed, {v.expired:,} expired"
            for v in self.venues
        ]
        return f"instruments v{self.version}: " + "; ".join(parts)


def merge(
    previous: Snapshot | None,
    updates: Mapping[Venue, InstrumentTable],
    *,
    version: int,
    as_of: dt.date,
    created_ns: int,
) -> tuple[Snapshot, ChangeReport]:
    """The next snapshot: ``updates`` replace their venues' rows; ids stay stable. Pure.

    Rows of a refreshed venue that disappear are *expired* if their expiry is
    before ``as_of`` (dropped from the registry: they never come back) and
    *removed* otherwise (kept in the retained registry with their id).
    """
    old_listed = previous.listed if previous else InstrumentTable.empty()
    old_retained = previous.retained if previous else InstrumentTable.empty()
    next_inst = previous.next_inst if previous else FIRST_INST
    today = date_to_days(as_of)
    ids: dict[tuple[int, int, str], int] = {}
    for table in (old_retained, old_listed):
        ids.update(zip(table.identity_keys(), table.numeric["inst"].tolist(), strict=True))
    venues_old = old_listed.numeric["venue"]
    keep_listed = [old_listed.take(~np.isin(venues_old, [int(v) for v in updates]))]
    keep_retained = [old_retained]
    changes = []
    meta = dict(previous.meta) if previous else {}
    for venue, table in sorted(updates.items()):
        if len(table) and not np.all(table.numeric["venue"] == venue):
            raise ValueError(f"update for {venue.name} holds rows of another venue")
        if not len(table) and np.any(venues_old == venue):
            # An empty dump is a broken source, not a venue that delisted everything.
            raise InstrumentDataError(
                f"{venue.name}: the update is empty; refusing to delist every instrument"
            )
        keys = table.identity_keys()
        if len(set(keys)) != len(keys):
            seen: set[tuple[int, int, str]] = set()
            dup = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise InstrumentDataError(
                f"{venue.name}: instrument {dup[2]!r} (token {dup[1]}) is listed twice"
            )
        new_keys = set(keys)
        inst = np.empty(len(keys), dtype=np.uint32)
        for i, key in enumerate(keys):
            got = ids.get(key)
            if got is None:
                got = ids[key] = next_inst
                next_inst += 1
            inst[i] = got
        old_rows = np.flatnonzero(venues_old == venue)
        old_keys = old_listed.take(old_rows).identity_keys() if len(old_rows) else []
        old_key_set = set(old_keys)
        added = [k[2] for k in keys if k not in old_key_set]
        gone = np.array([k not in new_keys for k in old_keys], dtype=bool)
        gone_rows = old_rows[gone]
        expiry = old_listed.numeric["expiry"][gone_rows]
        expired_mask = (expiry != NO_DATE) & (expiry < today)
        symbols = old_listed.strings["tradingsymbol"]
        expired = [symbols.at(int(r)) for r in gone_rows[expired_mask]]
        removed = [symbols.at(int(r)) for r in gone_rows[~expired_mask]]
        keep_listed.append(table.with_inst(inst))
        if len(gone_rows[~expired_mask]):
            keep_retained.append(old_listed.take(gone_rows[~expired_mask]))
        changes.append(
            VenueChanges(
                venue,
                len(table),
                len(added),
                len(removed),
                len(expired),
                tuple(added[:EXAMPLES]),
                tuple(removed[:EXAMPLES]),
                tuple(expired[:EXAMPLES]),
            )
        )
        meta[venue.name.lower()] = {
            "refreshed_ns": created_ns,
            "as_of": as_of.isoformat(),
            "rows": len(table),
        }
    listed = InstrumentTable.concat(keep_listed)
    retained = InstrumentTable.concat(keep_retained)
    # The retained registry: not listed again, and not expired by now.
    listed_keys = set(listed.identity_keys())
    r_exp = retained.numeric["expiry"]
    keep = (r_exp == NO_DATE) | (r_exp >= today)
    keep &= np.array([k not in listed_keys for k in retained.identity_keys()], dtype=bool)
    if len(retained):
        retained = retained.take(np.flatnonzero(keep))
    result = Snapshot(version, created_ns, next_inst, listed, retained, meta)
    report = ChangeReport(version, previous.version if previous else 0, tuple(changes))
    return result, report


# ---------------------------------------------------------------------------
# writing


def write_snapshot(
    writer: wal.WalWriter,
    snapshot: Snapshot,
    part_bytes: int,
    on_part: Callable[[int, int], None] | None = None,
) -> int:
    """Append ``snapshot`` as parts, flushing each, then sync. Returns the payload size."""
    payload = snap.encode(snapshot)
    parts = snap.split_parts(snapshot.version, payload, part_bytes)
    for i, part in enumerate(parts):
        writer.append_blob(part, first_seq=snapshot.version, count=i)
        writer.flush()
        if on_part is not None:
            on_part(i, len(parts))
    writer.sync()
    return len(payload)


def prune(directory: Path | str, keep_versions: int = 2) -> list[str]:
    """Delete segments that hold nothing of the newest ``keep_versions`` complete snapshots.

    Only whole segments strictly before the first part of the oldest version
    kept are removed; the active segment is never among them.
    """
    directory = Path(directory)
    segments = wal.segment_paths(directory)
    first_segment: dict[int, int] = {}
    parts: dict[int, dict[int, int]] = {}
    counts: dict[int, int] = {}
    keep_from: int | None = None
    for i in range(len(segments) - 1, -1, -1):
        mapped = _map(segments[i])
        if mapped is None:
            continue
        view = memoryview(mapped)
        try:
            scan = wal.scan_segment(segments[i], view, last=i == len(segments) - 1)
            for fr in scan.frames:
                if fr.kind != wal.FrameKind.BLOB:
                    continue
                head = snap.part_header(view[fr.payload_offset : fr.payload_offset + 32])
                if head is None:
                    continue
                parts.setdefault(head.version, {})[head.index] = i
                counts[head.version] = head.count
                first_segment[head.version] = min(first_segment.get(head.version, i), i)
        finally:
            view.release()
            mapped.close()
        complete = sorted((v for v, p in parts.items() if len(p) == counts[v]), reverse=True)[
            :keep_versions
        ]
        if len(complete) == keep_versions:
            keep_from = min(first_segment[v] for v in complete)
            break
    removed: list[str] = []
    if keep_from is None:
        return removed
    for path in segments[:keep_from]:
        path.unlink(missing_ok=True)
        removed.append(path.name)
    return removed


@dataclass(frozen=True)
class RefreshResult:
    snapshot: Snapshot
    report: ChangeReport
    warnings: tuple[str, ...]
    payload_bytes: int
    pruned: tuple[str, ...]


def refresh(
    data_dir: Path | str,
    updates: Mapping[Venue, InstrumentTable],
    *,
    as_of: dt.date,
    now_ns: int,
    config: StoreConfig | None = None,
    on_part: Callable[[int, int], None] | None = None,
) -> RefreshResult:
    """Merge ``updates`` into the stored universe and write the new snapshot (one transaction).

    Raises :class:`pipeline.errors.WalLockedError` if another process is writing.
    """
    config = config or StoreConfig()
    directory = paths.instruments_wal_dir(Path(data_dir))
    writer = wal.WalWriter(directory, config.wal_config())
    try:
        recovered = recover(directory)
        new, report = merge(
            recovered.snapshot,
            updates,
            version=recovered.max_version + 1,
            as_of=as_of,
            created_ns=now_ns,
        )
        size = write_snapshot(writer, new, config.part_bytes, on_part)
        try:  # still under the writer's lock: no other refresh is appending meanwhile
            pruned = prune(directory)
        except (OSError, WalError) as exc:  # housekeeping: never fail a good refresh
            log.warning("instruments WAL %s: pruning old segments failed: %s", directory, exc)
            pruned = []
    finally:
        writer.close()
    return RefreshResult(new, report, tuple(recovered.warnings), size, tuple(pruned))


def snapshot_with(
    data_dir: Path | str,
    venue: Venue,
    fetch: Callable[[], InstrumentTable],
    *,
    as_of: dt.date,
    now_ns: int,
) -> Snapshot:
    """The stored universe, holding ``venue``: when it does not yet (no
    instrument service ran), ``fetch()`` the venue's table and store it first,
    as the service would. A feed calls this at start. If another process is
    writing the store meanwhile, a RetryableError: its snapshot will do."""
    snapshot = recover(paths.instruments_wal_dir(Path(data_dir))).snapshot
    if snapshot is not None and venue.name.lower() in snapshot.meta:
        return snapshot
    table = fetch()
    try:
        result = refresh(data_dir, {venue: table}, as_of=as_of, now_ns=now_ns)
    except WalLockedError as exc:
        raise RetryableError(f"the instrument store is being written: {exc}") from None
    log.info("%s", result.report.summary())
    return result.snapshot
