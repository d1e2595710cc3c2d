"""The write-ahead log: framed, CRC32C-checked, preallocated, rotated segments.

Directory layout: ``<dir>/<first-lsn, 20 digits>.wal``, each exactly
``segment_bytes`` long (25 MiB by default), preallocated with
``posix_fallocate`` so appends never extend the file. The LSN counts frames
across the whole log; a segment is named after its first frame's LSN.

Segment = 4096-byte header page, then frames, then zeros::

    header:  magic b"CPWALSEG" | version u16 | record schema u16 | record size u16 |
             header bytes u16 | segment bytes u64 | created ns i64 | first lsn u64 |
             source count u16 | ... | 64: source table, 32 B per source:
             (src u8, pad[7], last seq u64, name 16 B) | 4092: CRC32C of bytes 0..4092

    frame:   magic u32 | payload length u32 | first seq u64 | count u32 | kind u8 |
             src u8 | flags u16 | reserved u32 | CRC32C u32 (of bytes 0..28, then payload)
             payload, zero-padded to a multiple of 8 bytes

A RECORDS frame carries ``count`` 64-byte records of one source; other kinds
carry other payloads (the source-name table, instrument snapshots, padding
that replaces a repaired corrupt region). The segment header carries every
source's last sequence number as of the segment's creation, so recovery
reads only the last segment.

Recovery (:func:`recover`, run by :class:`WalWriter` on open) walks the last
segment; a frame that fails its checks with nothing valid after it is a torn
tail (a crash mid-write): it is zeroed and reported. A bad frame with valid
frames after it is mid-segment corruption: reported with file and offset,
never skipped silently (``repair`` replaces it by a PAD frame, so the loss
shows up as a sequence gap in ``verify``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Final

import crc32c
import numpy as np
import numpy.typing as npt

from pipeline import paths
from pipeline import record as rec
from pipeline.errors import (
    ConfigError,
    WalCorruptError,
    WalError,
    WalFullError,
    WalLockedError,
)
from pipeline.record import RECORD_DTYPE, RECORD_SIZE, Records

SEGMENT_MAGIC: Final = b"CPWALSEG"
SEGMENT_VERSION: Final = 1
SEGMENT_HEADER_BYTES: Final = 4096
DEFAULT_SEGMENT_BYTES: Final = 25 * 1024 * 1024
_SEG_FIXED = struct.Struct("<8sHHHHQqQH")  # magic..source count (42 bytes)
_SEG_SOURCES_AT: Final = 64
_SEG_SOURCE = struct.Struct("<B7xQ16s")
_SEG_CRC_AT: Final = SEGMENT_HEADER_BYTES - 4
MAX_SOURCES: Final = (_SEG_CRC_AT - _SEG_SOURCES_AT) // _SEG_SOURCE.size

FRAME_MAGIC: Final = 0x46574C43  # b"CLWF" little-endian
FRAME = struct.Struct("<IIQIBBHII")
FRAME_HEADER_BYTES: Final = FRAME.size
_FRAME_CRC_AT: Final = 28
SUFFIX: Final = ".wal"
LOCK_NAME: Final = ".writer.lock"

FSYNC_POLICIES: Final = ("interval", "always", "rotate", "never")


class FrameKind(IntEnum):
    RECORDS = 1
    SOURCES = 2
    PAD = 3
    BLOB = 4
    """Opaque payload for other users of this module (instrument snapshots)."""


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _frame_crc(header28: bytes | memoryview, payload: bytes | memoryview) -> int:
    return int(crc32c.crc32c(payload, crc32c.crc32c(header28)))


def encode_frame(
    kind: int, src: int, first_seq: int, count: int, payload: bytes | memoryview
) -> bytes:
    """One complete frame (header + payload + padding) as bytes."""
    length = len(payload)
    head = FRAME.pack(FRAME_MAGIC, length, first_seq, count, kind, src, 0, 0, 0)[:_FRAME_CRC_AT]
    crc = _frame_crc(head, payload)
    return head + struct.pack("<I", crc) + bytes(payload) + b"\0" * (_align8(length) - length)


@dataclass
class SegmentHeader:
    version: int
    schema: int
    record_size: int
    segment_bytes: int
    created_ns: int
    first_lsn: int
    sources: dict[int, tuple[str, int]]  # src -> (name, last seq)

    def encode(self) -> bytes:
        if len(self.sources) > MAX_SOURCES:
            raise WalError(f"at most {MAX_SOURCES} sources per WAL, got {len(self.sources)}")
        buf = bytearray(SEGMENT_HEADER_BYTES)
        _SEG_FIXED.pack_into(
            buf,
            0,
            SEGMENT_MAGIC,
            self.version,
            self.schema,
            self.record_size,
            SEGMENT_HEADER_BYTES,
            self.segment_bytes,
            self.created_ns,
            self.first_lsn,
            len(self.sources),
        )
        for i, (src, (name, last_seq)) in enumerate(sorted(self.sources.items())):
            _SEG_SOURCE.pack_into(
                buf, _SEG_SOURCES_AT + i * _SEG_SOURCE.size, src, last_seq, name.encode()[:16]
            )
        struct.pack_into("<I", buf, _SEG_CRC_AT, crc32c.crc32c(bytes(buf[:_SEG_CRC_AT])))
        return bytes(buf)

    @classmethod
    def decode(cls, data: bytes | memoryview, path: Path) -> SegmentHeader:
        if len(data) < SEGMENT_HEADER_BYTES:
            raise WalCorruptError(f"{path}: shorter than a segment header ({len(data)} bytes)")
        head = bytes(data[:SEGMENT_HEADER_BYTES])
        magic, version, schema, record_size, header_bytes, seg_bytes, created, lsn, nsrc = (
            _SEG_FIXED.unpack_from(head)
        )
        if magic != SEGMENT_MAGIC:
            raise WalCorruptError(f"{path} offset 0: not a WAL segment (bad magic)")
        (crc,) = struct.unpack_from("<I", head, _SEG_CRC_AT)
        if crc != crc32c.crc32c(head[:_SEG_CRC_AT]):
            raise WalCorruptError(f"{path} offset 0: segment header CRC mismatch")
        if (
            version != SEGMENT_VERSION
            or header_bytes != SEGMENT_HEADER_BYTES
            or record_size != RECORD_SIZE
        ):
            raise WalError(
                f"{path}: unsupported segment version {version} / record size {record_size}"
            )
        if nsrc > MAX_SOURCES:
            raise WalCorruptError(f"{path} offset 0: source count {nsrc} out of range")
        sources = {}
        for i in range(nsrc):
            src, last_seq, name = _SEG_SOURCE.unpack_from(
                head, _SEG_SOURCES_AT + i * _SEG_SOURCE.size
            )
            sources[src] = (name.rstrip(b"\0").decode(errors="replace"), last_seq)
        return cls(version, schema, record_size, seg_bytes, created, lsn, sources)


@dataclass(frozen=True)
class Corruption:
    file: str
    offset: int
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "offset": self.offset, "reason": self.reason}


@dataclass(frozen=True)
class FrameInfo:
    offset: int
    kind: int
    src: int
    first_seq: int
    count: int
    length: int

    @property
    def payload_offset(self) -> int:
        return self.offset + FRAME_HEADER_BYTES

    @property
    def end(self) -> int:
        return self.offset + FRAME_HEADER_BYTES + _align8(self.length)


@dataclass
class SegmentScan:
    """What a walk over one segment found."""

    path: Path
    header: SegmentHeader | None
    frames: list[FrameInfo] = field(default_factory=list)
    end: int = SEGMENT_HEADER_BYTES
    """Offset just after the last good frame: where the next frame goes."""
    torn_bytes: int = 0
    """Bytes after ``end`` that are neither zero nor valid frames (a torn write)."""
    garbage_end: int = 0
    """End of the non-zero bytes after ``end`` (equal to ``end`` when there are none)."""
    corrupt: list[Corruption] = field(default_factory=list)
    bad_regions: list[tuple[int, int]] = field(default_factory=list)
    """Corrupt [start, end) byte ranges with valid frames after them."""


def _check_frame(data: memoryview, off: int, size: int) -> tuple[FrameInfo | None, str]:
    """Validate the frame at ``off``: (frame, "") or (None, why not)."""
    if off + FRAME_HEADER_BYTES > size:
        return None, "truncated frame header"
    magic, length, first_seq, count, kind, src, _flags, _res, crc = FRAME.unpack_from(data, off)
    if magic != FRAME_MAGIC:
        return None, "bad frame magic"
    end = off + FRAME_HEADER_BYTES + length
    if end > size:
        return None, f"frame length {length} runs past the end of the segment"
    if kind == FrameKind.RECORDS and length != count * RECORD_SIZE:
        return None, f"records frame length {length} != count {count} x {RECORD_SIZE}"
    if crc != _frame_crc(data[off : off + _FRAME_CRC_AT], data[off + FRAME_HEADER_BYTES : end]):
        return None, "CRC mismatch"
    return FrameInfo(off, kind, src, first_seq, count, length), ""


def _find_next_frame(
    data: memoryview, words32: npt.NDArray[np.uint32], start: int, size: int
) -> FrameInfo | None:
    """The first valid frame at an 8-aligned offset >= ``start``."""
    first = (start + 7) // 8
    candidates = np.flatnonzero(words32[2 * first :: 2] == FRAME_MAGIC)
    for idx in candidates.tolist():
        frame, _ = _check_frame(data, (first + idx) * 8, size)
        if frame is not None:
            return frame
    return None


def _last_nonzero(arr: npt.NDArray[np.uint8], start: int) -> int:
    """Offset just past the last non-zero byte at or after ``start`` (``start`` if none)."""
    end = len(arr)
    chunk = 1 << 20
    while end > start:
        lo = max(start, end - chunk)
        view = arr[lo:end]
        aligned = lo % 8 == 0 and len(view) % 8 == 0
        if (view.view(np.uint64) if aligned else view).any():
            # Copy first: a writer may be filling this very region (a live
            # WAL), and numpy's nonzero counts before it collects.
            nonzero = np.flatnonzero(view.copy())
            if len(nonzero):
                return lo + int(nonzero[-1]) + 1
        end = lo
    return start


def scan_segment(path: Path, data: memoryview, *, last: bool) -> SegmentScan:
    """Walk every frame of one mapped segment and classify what is not a frame."""
    size = len(data)
    try:
        header: SegmentHeader | None = SegmentHeader.decode(data, path)
    except WalCorruptError as exc:
        # The frames carry their own CRCs: read them anyway, report the header.
        header = None
        corrupt_header = Corruption(str(path), 0, str(exc).split(": ", 1)[-1])
    scan = SegmentScan(path, header)
    if header is None:
        scan.corrupt.append(corrupt_header)
        if size <= SEGMENT_HEADER_BYTES:
            return scan
    arr = np.frombuffer(data, dtype=np.uint8)
    words32 = arr[: size - size % 8].view(np.uint32)
    off = SEGMENT_HEADER_BYTES
    frames = scan.frames
    unpack = FRAME.unpack_from
    while off + FRAME_HEADER_BYTES <= size:
        # Fast path: a well-formed frame (magic and CRC checked; length sane).
        magic, length, first_seq, count, kind, src, _f, _r, crc = unpack(data, off)
        end = off + FRAME_HEADER_BYTES + length
        if (
            magic == FRAME_MAGIC
            and end <= size
            and (kind != FrameKind.RECORDS or length == count * RECORD_SIZE)
            and crc
            == _frame_crc(data[off : off + _FRAME_CRC_AT], data[off + FRAME_HEADER_BYTES : end])
        ):
            frames.append(FrameInfo(off, kind, src, first_seq, count, length))
            off = off + FRAME_HEADER_BYTES + _align8(length)
            continue
        if (
            magic == 0
            and length == 0
            and first_seq == 0
            and crc == 0
            and _last_nonzero(arr, off) == off
        ):
            break  # clean end: zeros to the end of the segment
        _, why = _check_frame(data, off, size)
        if magic == 0 and length == 0:
            why = "zeroed bytes"
        nxt = _find_next_frame(data, words32, off + FRAME_HEADER_BYTES, size)
        if nxt is not None:
            scan.corrupt.append(Corruption(str(path), off, why))
            scan.bad_regions.append((off, nxt.offset))
            off = nxt.offset
            continue
        _classify_tail(scan, arr, off, last, why)
        break
    else:
        if off < size:  # fewer bytes left than a frame header (a file cut short)
            _classify_tail(scan, arr, off, last, "truncated frame header")
    scan.end = off
    scan.garbage_end = max(scan.garbage_end, off)
    return scan


def _classify_tail(
    scan: SegmentScan, arr: npt.NDArray[np.uint8], off: int, last: bool, why: str
) -> None:
    """Non-zero bytes after the last good frame: a torn write if this is the
    last segment, corruption otherwise."""
    garbage_end = _last_nonzero(arr, off)
    scan.garbage_end = garbage_end
    if last:
        scan.torn_bytes = garbage_end - off
    elif garbage_end > off:
        scan.corrupt.append(
            Corruption(str(scan.path), off, f"{why} at the end of a sealed segment")
        )


def segment_paths(directory: Path) -> list[Path]:
    """The segments of a WAL directory, in log order."""
    if not directory.is_dir():
        return []
    return sorted(
        p for p in directory.iterdir() if p.name.endswith(SUFFIX) and p.name[:-4].isdigit()
    )


class _Mapped:
    """A read-only mapping of one segment file."""

    def __init__(self, path: Path) -> None:
        import mmap

        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._mmap = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else None
        self.data = memoryview(self._mmap) if self._mmap is not None else memoryview(b"")

    def close(self) -> None:
        self.data.release()
        if self._mmap is not None:
            with contextlib.suppress(BufferError):
                self._mmap.close()

    def __enter__(self) -> _Mapped:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# recovery and repair


@dataclass
class Recovery:
    """State of a WAL directory as found on open."""

    directory: Path
    segments: int = 0
    last_segment: Path | None = None
    end_offset: int = SEGMENT_HEADER_BYTES
    next_lsn: int = 0
    sources: dict[int, tuple[str, int]] = field(default_factory=dict)
    torn_tail_bytes: int = 0
    corrupt: list[Corruption] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def last_seq(self, src: int) -> int:
        return self.sources.get(src, ("", 0))[1]


def _apply_frames(
    sources: dict[int, tuple[str, int]], data: memoryview, frames: list[FrameInfo]
) -> None:
    """Fold frames into the source map (names from SOURCES frames, last seq from records)."""
    for fr in frames:
        if fr.kind == FrameKind.RECORDS and fr.count:
            last_off = fr.payload_offset + (fr.count - 1) * RECORD_SIZE
            (last_seq,) = struct.unpack_from("<Q", data, last_off)
            name = sources.get(fr.src, (f"src{fr.src}", 0))[0]
            sources[fr.src] = (name, last_seq)
        elif fr.kind == FrameKind.SOURCES:
            for src, name in _decode_sources(
                data[fr.payload_offset : fr.payload_offset + fr.length]
            ).items():
                sources[src] = (name, sources.get(src, ("", 0))[1])


def _encode_sources(names: dict[int, str]) -> bytes:
    return b"".join(
        struct.pack("<B15s", src, name.encode()[:15]) for src, name in sorted(names.items())
    )


def _decode_sources(payload: bytes | memoryview) -> dict[int, str]:
    out = {}
    for i in range(0, len(payload) - len(payload) % 16, 16):
        src, name = struct.unpack_from("<B15s", payload, i)
        out[src] = name.rstrip(b"\0").decode(errors="replace")
    return out


def recover(directory: Path | str, *, repair: bool = False) -> Recovery:
    """Find where the log ends and every source's last sequence number.

    Reads the last segment only (older ones are summarised by its header).
    With ``repair``: leftover temporary files and an empty, half-created last
    segment are removed, and a torn tail is zeroed so appends start clean.
    """
    directory = Path(directory)
    result = Recovery(directory)
    if repair and directory.is_dir():
        for tmp in directory.glob("*.wal.tmp"):
            tmp.unlink()
            result.removed.append(tmp.name)
    paths = segment_paths(directory)
    while paths:
        path = paths[-1]
        with _Mapped(path) as m:
            scan = scan_segment(path, m.data, last=True)
            if scan.header is None:
                empty = not scan.frames and not scan.torn_bytes
                if empty and repair:
                    # Crashed while creating it (header never completed): nothing was in it.
                    m.close()
                    path.unlink()
                    result.removed.append(path.name)
                    paths.pop()
                    continue
                raise WalCorruptError(
                    f"{path} offset 0: segment header is corrupt and the segment holds data; "
                    f"run `connector-pipeline replay --wal {directory} --repair` to rebuild it"
                )
            header = scan.header
            result.sources = dict(header.sources)
            _apply_frames(result.sources, m.data, scan.frames)
        result.segments = len(paths)
        result.last_segment = path
        result.end_offset = scan.end
        result.next_lsn = header.first_lsn + len(scan.frames)
        result.torn_tail_bytes = scan.torn_bytes
        result.corrupt = scan.corrupt
        if repair and scan.torn_bytes:
            _zero_range(path, scan.end, scan.end + scan.torn_bytes)
        break
    return result


def _zero_range(path: Path, start: int, end: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        chunk = b"\0" * (1 << 20)
        pos = start
        while pos < end:
            pos += os.pwrite(fd, chunk[: min(len(chunk), end - pos)], pos)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def repair(directory: Path | str) -> dict[str, Any]:
    """Make a damaged WAL usable again without losing any intact frame.

    * a torn tail of the last segment is zeroed, and so are stray bytes after
      the last frame of a sealed segment;
    * each corrupt region between valid frames becomes a PAD frame over the
      same bytes (valid CRC), so readers skip it and ``verify`` shows the lost
      sequence numbers as gaps;
    * an empty, half-created last segment and ``*.wal.tmp`` leftovers are removed;
    * a corrupt segment header is rebuilt: first LSN from the file name,
      source names and last sequence numbers from the segments before it.
    """
    directory = Path(directory)
    actions: dict[str, Any] = {
        "zeroed_tail_bytes": 0,
        "zeroed_sealed_bytes": 0,
        "padded": [],
        "removed": [],
        "rebuilt_headers": [],
    }
    paths = segment_paths(directory)
    for i, path in enumerate(paths):
        with _Mapped(path) as m:
            scan = scan_segment(path, m.data, last=i == len(paths) - 1)
        if scan.header is None and (scan.frames or i < len(paths) - 1):
            _rebuild_header(paths, i)
            actions["rebuilt_headers"].append(str(path))
        if i < len(paths) - 1 and scan.garbage_end > scan.end:
            _zero_range(path, scan.end, scan.garbage_end)
            actions["zeroed_sealed_bytes"] += scan.garbage_end - scan.end
        if scan.bad_regions:
            fd = os.open(path, os.O_RDWR)
            try:
                for start, end in scan.bad_regions:
                    length = end - start - FRAME_HEADER_BYTES
                    payload = os.pread(fd, length, start + FRAME_HEADER_BYTES)
                    head = FRAME.pack(FRAME_MAGIC, length, 0, 0, FrameKind.PAD, 0, 0, 0, 0)[
                        :_FRAME_CRC_AT
                    ]
                    os.pwrite(fd, head + struct.pack("<I", _frame_crc(head, payload)), start)
                    actions["padded"].append(
                        {"file": str(path), "offset": start, "bytes": end - start}
                    )
                os.fdatasync(fd)
            finally:
                os.close(fd)
    rec_ = recover(directory, repair=True)
    actions["zeroed_tail_bytes"] = rec_.torn_tail_bytes
    actions["removed"] = rec_.removed
    _fsync_dir(directory)
    return actions


def _rebuild_header(paths: list[Path], index: int) -> None:
    """Write a fresh header for segment ``index`` from what the earlier segments say."""
    path = paths[index]
    sources: dict[int, tuple[str, int]] = {}
    segment_bytes = path.stat().st_size
    for earlier in paths[:index]:
        with _Mapped(earlier) as m:
            scan = scan_segment(earlier, m.data, last=False)
            if scan.header is not None:
                sources.update(scan.header.sources)
            _apply_frames(sources, m.data, scan.frames)
    header = SegmentHeader(
        SEGMENT_VERSION,
        rec.SCHEMA_VERSION,
        RECORD_SIZE,
        segment_bytes,
        time.time_ns(),
        int(path.name[: -len(SUFFIX)]),
        sources,
    )
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, header.encode(), 0)
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------
# the writer


@dataclass(frozen=True)
class WalConfig:
    """How the WAL writes. ``fsync``: ``interval`` (group commit every
    ``fsync_interval_ms``, in a background thread so appends never wait; the
    default 1 s bounds what a power loss can take, while a process crash
    loses nothing that was flushed; syncing every 50 ms cost about 30% of
    the throughput on the reference disk),
    ``always`` (every flush), ``rotate`` (only when a segment is sealed and on
    close), ``never`` (leave it to the OS)."""

    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    fsync: str = "interval"
    fsync_interval_ms: float = 1000.0
    buffer_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise ConfigError(
                f"wal fsync must be one of {', '.join(FSYNC_POLICIES)}; got {self.fsync!r}"
            )
        if (
            self.segment_bytes < SEGMENT_HEADER_BYTES + FRAME_HEADER_BYTES + RECORD_SIZE
            or self.segment_bytes % 8
        ):
            raise ConfigError(
                f"wal segment_bytes too small or not a multiple of 8: {self.segment_bytes}"
            )
        if self.fsync_interval_ms <= 0:
            raise ConfigError(
                f"wal fsync_interval_ms must be positive, got {self.fsync_interval_ms}"
            )
        if self.buffer_bytes < 4096:
            raise ConfigError(f"wal buffer_bytes must be at least 4096, got {self.buffer_bytes}")


class _Housekeeper:
    """Background work that must never stall an append: periodic fdatasync
    (``interval`` policy), sealing retired segments (fdatasync and close),
    directory fsyncs after a rename, and preallocating the next segment file
    before it is needed. The blocking calls release the GIL."""

    def __init__(self, writer: WalWriter) -> None:
        self._w = writer
        self._tasks: queue.Queue[tuple[str, int]] = queue.Queue()
        self._spare_ready = threading.Condition()
        self.spare: tuple[int, Path] | None = None
        self.preparing = False
        """A "prepare" is queued or running (the writer may wait for its file).
        One that finds no disk space is not an error here: the writer makes
        the file itself when it needs it, and says so if it still can't."""
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="wal-housekeeper", daemon=True)
        self._thread.start()

    def submit(self, task: str, fd: int = -1) -> None:
        if task == "prepare":
            with self._spare_ready:
                self.preparing = True
        self._tasks.put((task, fd))

    def drain(self) -> None:
        """Wait until every submitted task is done."""
        self._tasks.join()

    def take_spare(self, timeout_s: float = 30.0) -> tuple[int, Path] | None:
        """The prepared segment file, or None (the writer then makes one itself)."""
        with self._spare_ready:
            self._spare_ready.wait_for(
                lambda: not self.preparing or self.spare is not None or self.error is not None,
                timeout_s,
            )
            spare, self.spare = self.spare, None
        return spare

    def stop(self) -> None:
        self._tasks.put(("stop", -1))
        self._thread.join()
        if self.spare is not None:  # prepared but never used
            fd, path = self.spare
            os.close(fd)
            path.unlink(missing_ok=True)
            self.spare = None

    def _run(self) -> None:
        w = self._w
        interval = w.config.fsync_interval_ms / 1000 if w.config.fsync == "interval" else None
        next_sync = time.monotonic() + (interval or 0)
        while True:
            try:
                task, fd = self._tasks.get(timeout=interval)
            except queue.Empty:
                task, fd = "", -1
            try:
                if task == "stop":
                    return
                if task == "retire":
                    if w.config.fsync != "never":
                        os.fdatasync(fd)
                        w.syncs += 1
                    os.close(fd)
                elif task == "dirsync":
                    _fsync_dir(w.directory)
                elif task == "prepare":
                    spare = None
                    with contextlib.suppress(WalFullError):  # see `preparing`
                        spare = w._new_spare()
                    with self._spare_ready:
                        self.spare = spare
                        self.preparing = False
                        self._spare_ready.notify_all()
                if interval is not None and time.monotonic() >= next_sync:
                    next_sync = time.monotonic() + interval
                    w._sync_current()
            except BaseException as exc:  # surfaced to the writer on its next flush
                self.error = exc
                with self._spare_ready:
                    self._spare_ready.notify_all()
            finally:
                if task:
                    self._tasks.task_done()


class WalWriter:
    """Appends frames to the log. One writer per directory (an flock enforces it).

    :meth:`append_records` buffers; :meth:`flush` hands everything buffered to
    the kernel. A caller that consumes a ring advances its cursor only after
    ``flush()``: a SIGKILL then loses nothing (the page cache survives the
    process) and on restart the already-written sequences are skipped.
    Rotation takes a segment file preallocated in the background and seals
    the old one in the background, so an append never waits on the disk
    (except with ``fsync = "always"``, whose promise is to wait).
    """

    def __init__(self, directory: Path | str, config: WalConfig | None = None) -> None:
        self.directory = Path(directory)
        self.config = config or WalConfig()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = self._take_lock()
        try:
            self.recovery = recover(self.directory, repair=True)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._last_seq = {src: last for src, (_name, last) in self.recovery.sources.items()}
        self._names = {src: name for src, (name, _last) in self.recovery.sources.items()}
        self._lsn = self.recovery.next_lsn
        self._buf = np.zeros(self.config.buffer_bytes, dtype=np.uint8)
        self._buf_len = 0
        self._fd = -1
        self._file_off = 0
        self._seg_path: Path | None = None
        self._dirty = threading.Event()
        self._closed = False
        self.bytes_written = 0
        self.frames_written = 0
        self.records_written = 0
        self.records_skipped = 0
        self.syncs = 0
        self.segments_created = 0
        if self.recovery.last_segment is not None:
            self._fd = os.open(self.recovery.last_segment, os.O_WRONLY)
            self._file_off = self.recovery.end_offset
            self._seg_path = self.recovery.last_segment
        else:
            self._activate(self._new_spare())
            _fsync_dir(self.directory)
        self._housekeeper = _Housekeeper(self)
        self._housekeeper.submit("prepare")

    # -- setup ---------------------------------------------------------------

    def _take_lock(self) -> int:
        try:
            return paths.pid_lock(self.directory / LOCK_NAME)
        except paths.LockHeld as held:
            raise WalLockedError(
                f"WAL {self.directory} is in use by another writer (pid {held.holder})"
            ) from None

    def _new_spare(self) -> tuple[int, Path]:
        """A preallocated, still unnamed segment file (``*.wal.tmp``: recovery deletes leftovers)."""
        tmp = self.directory / f"spare-{os.getpid()}-{time.monotonic_ns()}{SUFFIX}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.posix_fallocate(fd, 0, self.config.segment_bytes)
        except OSError as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                free = shutil.disk_usage(self.directory).free
                raise WalFullError(
                    f"no disk space for the next WAL segment ({self.config.segment_bytes:,} bytes) "
                    f"in {self.directory}: {free:,} bytes free"
                ) from None
            raise WalError(
                f"cannot preallocate {self.config.segment_bytes} bytes in {self.directory}: {exc.strerror}"
            ) from None
        return fd, tmp

    def _activate(self, spare: tuple[int, Path]) -> None:
        """Write the header into a spare file and give it its final name."""
        fd, tmp = spare
        header = SegmentHeader(
            SEGMENT_VERSION,
            rec.SCHEMA_VERSION,
            RECORD_SIZE,
            self.config.segment_bytes,
            time.time_ns(),
            self._lsn,
            {
                src: (self._names.get(src, f"src{src}"), last)
                for src, last in self._last_seq.items()
            },
        )
        final = self.directory / f"{self._lsn:020d}{SUFFIX}"
        if final.exists():
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise WalError(f"{final} already exists: two writers, or a damaged directory")
        os.pwrite(fd, header.encode(), 0)
        os.rename(tmp, final)
        self._fd = fd
        self._file_off = SEGMENT_HEADER_BYTES
        self._seg_path = final
        self._dirty.set()  # the header must reach the disk with the first sync
        self.segments_created += 1

    # -- appending -----------------------------------------------------------

    def register_source(self, src: int, name: str) -> None:
        """Name a source id (stored in the log so readers can say the feed's name)."""
        if not 0 <= src <= 255:
            raise ValueError(f"source id must be 0..255, got {src}")
        if len(name.encode()) > 15:
            raise ValueError(f"source name must be at most 15 bytes: {name!r}")
        if self._names.get(src) == name:
            return
        if src not in self._names and len(self._names) >= MAX_SOURCES:
            raise WalError(f"at most {MAX_SOURCES} sources per WAL")
        self._names[src] = name
        self._last_seq.setdefault(src, 0)
        payload = _encode_sources(self._names)
        self._append_frame(FrameKind.SOURCES, 0, 0, 0, np.frombuffer(payload, dtype=np.uint8))

    def last_seq(self, src: int) -> int:
        """The last sequence number of ``src`` in the log (0: none yet)."""
        return self._last_seq.get(src, 0)

    @property
    def sources(self) -> dict[int, tuple[str, int]]:
        """src -> (name, last seq)."""
        return {
            src: (self._names.get(src, f"src{src}"), last) for src, last in self._last_seq.items()
        }

    def append_records(self, records: Records) -> int:
        """Append records of one source (seq increasing). Records whose seq is
        already in the log are skipped (a restarted writer re-reading its
        ring). Returns how many were appended.

        Raises :class:`WalFullError` when a new segment is needed and the disk
        has no room for it: the records before it are appended (and flushed),
        so calling again with the same records, once there is room, appends
        exactly the rest."""
        n = len(records)
        if n == 0:
            return 0
        words = records.view(np.uint64).reshape(n, 8)
        src = int(records[0]["src"])
        last = self._last_seq.get(src, 0)
        if int(words[0, 0]) <= last:
            skip = int(np.searchsorted(words[:, 0], last, side="right"))
            self.records_skipped += skip
            records = records[skip:]
            words = words[skip:]
            n -= skip
            if n == 0:
                return 0
        per_frame = (
            self.config.segment_bytes - SEGMENT_HEADER_BYTES - FRAME_HEADER_BYTES
        ) // RECORD_SIZE
        start = 0
        while start < n:
            room = (
                self.config.segment_bytes - self._file_off - self._buf_len - FRAME_HEADER_BYTES
            ) // RECORD_SIZE
            if room <= 0:
                self._rotate()
                continue
            take = min(n - start, room, per_frame)
            chunk = records[start : start + take]
            self._append_frame(
                FrameKind.RECORDS, src, int(words[start, 0]), take, chunk.view(np.uint8)
            )
            start += take
            # Per chunk: the next segment's header must know what the previous one holds.
            self._last_seq[src] = int(words[start - 1, 0])
            self.records_written += take
        return n

    def append_blob(
        self,
        payload: bytes,
        *,
        src: int = 0,
        first_seq: int = 0,
        count: int = 0,
        kind: int = FrameKind.BLOB,
    ) -> None:
        """Append one opaque frame (e.g. an instrument snapshot). It must fit in one segment."""
        size = FRAME_HEADER_BYTES + _align8(len(payload))
        if size > self.config.segment_bytes - SEGMENT_HEADER_BYTES:
            raise WalError(
                f"frame of {len(payload)} bytes does not fit in a {self.config.segment_bytes}-byte segment"
            )
        self._append_frame(kind, src, first_seq, count, np.frombuffer(payload, dtype=np.uint8))

    def _append_frame(
        self, kind: int, src: int, first_seq: int, count: int, payload: npt.NDArray[np.uint8]
    ) -> None:
        length = len(payload)
        size = FRAME_HEADER_BYTES + _align8(length)
        if self._file_off + self._buf_len + size > self.config.segment_bytes:
            self._rotate()
        head = FRAME.pack(FRAME_MAGIC, length, first_seq, count, kind, src, 0, 0, 0)[:_FRAME_CRC_AT]
        crc = crc32c.crc32c(payload, crc32c.crc32c(head))  # type: ignore[arg-type]  # ndarray is a buffer
        if self._buf_len + size > len(self._buf):
            self.flush()
        if size > len(self._buf):
            # Large frame: skip the copy into the buffer, write header and payload directly.
            header = head + struct.pack("<I", crc)
            self._pwritev([header, payload, b"\0" * (size - FRAME_HEADER_BYTES - length)])
        else:
            pos = self._buf_len
            buf = self._buf
            buf[pos : pos + _FRAME_CRC_AT] = np.frombuffer(head, dtype=np.uint8)
            buf[pos + _FRAME_CRC_AT : pos + FRAME_HEADER_BYTES] = np.frombuffer(
                struct.pack("<I", crc), dtype=np.uint8
            )
            buf[pos + FRAME_HEADER_BYTES : pos + FRAME_HEADER_BYTES + length] = payload
            if size > FRAME_HEADER_BYTES + length:
                buf[pos + FRAME_HEADER_BYTES + length : pos + size] = 0
            self._buf_len = pos + size
        self._lsn += 1
        self.frames_written += 1

    def _pwritev(self, parts: list[Any]) -> None:
        total = sum(len(p) if not isinstance(p, np.ndarray) else p.nbytes for p in parts)
        written = os.pwritev(self._fd, parts, self._file_off)
        if written != total:  # a short write: finish it piecewise
            blob = b"".join(bytes(p) for p in parts)
            while written < total:
                written += os.pwrite(self._fd, blob[written:], self._file_off + written)
        self._file_off += total
        self.bytes_written += total
        self._dirty.set()

    def flush(self) -> None:
        """Hand every buffered frame to the kernel (and fsync if the policy is ``always``)."""
        if self._buf_len:
            n = self._buf_len
            self._buf_len = 0
            self._pwritev([self._buf[:n]])
        if self.config.fsync == "always" and self._dirty.is_set():
            self._dirty.clear()
            os.fdatasync(self._fd)
            self.syncs += 1
        if self._housekeeper.error is not None:
            raise WalError(
                f"WAL background work in {self.directory} failed: {self._housekeeper.error}"
            )

    def sync(self) -> None:
        """Flush, then fdatasync everything written so far (sealed segments too), whatever the policy."""
        self.flush()
        self._housekeeper.drain()
        self._dirty.clear()
        os.fdatasync(self._fd)
        self.syncs += 1

    def _sync_current(self) -> None:
        """fdatasync the active segment if anything was written (the housekeeper's interval sync)."""
        # No lock: only the housekeeper closes retired descriptors, after this
        # returns, so whichever descriptor is read here stays open meanwhile.
        fd = self._fd
        if fd < 0 or not self._dirty.is_set():
            return
        self._dirty.clear()
        os.fdatasync(fd)
        self.syncs += 1

    def _rotate(self) -> None:
        self.flush()
        old_fd = self._fd
        # Without a prepared file (the housekeeper found the disk full) try
        # once more here; WalFullError leaves the writer as it was.
        spare = self._housekeeper.take_spare() or self._new_spare()
        if self.config.fsync == "always":
            # The promise is durability before returning: seal and name synchronously.
            os.fdatasync(old_fd)
            self.syncs += 1
            self._activate(spare)
            _fsync_dir(self.directory)
            os.close(old_fd)
        else:
            self._activate(spare)
            self._housekeeper.submit("retire", old_fd)
            self._housekeeper.submit("dirsync")
        self._housekeeper.submit("prepare")

    @property
    def segment_path(self) -> Path | None:
        return self._seg_path

    @property
    def lsn(self) -> int:
        """The LSN the next frame will get."""
        return self._lsn

    def close(self) -> None:
        """Flush, seal and sync (unless the policy is ``never``), and release the directory."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            self._housekeeper.stop()
            if self._fd >= 0:
                if self.config.fsync != "never":
                    os.fdatasync(self._fd)
                    self.syncs += 1
                os.close(self._fd)
                self._fd = -1
            os.close(self._lock_fd)

    def __enter__(self) -> WalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------
# reading and verification


@dataclass(frozen=True)
class Frame:
    """A frame as read: where it is, what it says, and a copy of its payload."""

    file: Path
    offset: int
    lsn: int
    kind: int
    src: int
    first_seq: int
    count: int
    payload: bytes

    def records(self) -> Records:
        if self.kind != FrameKind.RECORDS:
            raise WalError(
                f"frame at {self.file}:{self.offset} is {FrameKind(self.kind).name}, not RECORDS"
            )
        return np.frombuffer(self.payload, dtype=RECORD_DTYPE)


class WalReader:
    """Reads a WAL directory (while a writer appends, too: an incomplete tail
    of the last segment is simply where reading stops)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise WalError(f"WAL directory {self.directory} does not exist")

    def segments(self) -> list[Path]:
        return segment_paths(self.directory)

    def frames(self, *, strict: bool = True) -> Iterator[Frame]:
        """Every good frame in log order. With ``strict``, corruption raises
        :class:`WalCorruptError` naming the file and offset; otherwise it is skipped."""
        paths = self.segments()
        for i, path in enumerate(paths):
            with _Mapped(path) as m:
                scan = scan_segment(path, m.data, last=i == len(paths) - 1)
                if strict and scan.corrupt:
                    c = scan.corrupt[0]
                    raise WalCorruptError(f"{c.file} offset {c.offset}: {c.reason}")
                lsn = scan.header.first_lsn if scan.header else int(path.name[: -len(SUFFIX)])
                for j, fr in enumerate(scan.frames):
                    payload = bytes(m.data[fr.payload_offset : fr.payload_offset + fr.length])
                    yield Frame(
                        path, fr.offset, lsn + j, fr.kind, fr.src, fr.first_seq, fr.count, payload
                    )

    def records(
        self, *, src: int | None = None, from_seq: int = 0, strict: bool = True
    ) -> Iterator[Records]:
        """Record batches in log order, optionally of one source from ``from_seq`` on."""
        paths = self.segments()
        start = 0
        if src is not None and from_seq > 1:
            start = self._first_segment_for(paths, src, from_seq)
        for i, path in enumerate(paths[start:], start):
            with _Mapped(path) as m:
                scan = scan_segment(path, m.data, last=i == len(paths) - 1)
                if strict and scan.corrupt:
                    c = scan.corrupt[0]
                    raise WalCorruptError(f"{c.file} offset {c.offset}: {c.reason}")
                for fr in scan.frames:
                    if fr.kind != FrameKind.RECORDS or (src is not None and fr.src != src):
                        continue
                    batch = np.frombuffer(
                        m.data, dtype=RECORD_DTYPE, count=fr.count, offset=fr.payload_offset
                    ).copy()
                    if from_seq and int(batch["seq"][-1]) < from_seq:
                        continue
                    if from_seq and int(batch["seq"][0]) < from_seq:
                        batch = batch[batch["seq"] >= from_seq]
                    yield batch

    @staticmethod
    def _first_segment_for(paths: list[Path], src: int, seq: int) -> int:
        """Index of the last segment whose header says ``src`` had not reached ``seq`` yet."""
        lo = 0
        for i, path in enumerate(paths):
            with open(path, "rb") as f:
                try:
                    header = SegmentHeader.decode(f.read(SEGMENT_HEADER_BYTES), path)
                except WalError:
                    return lo
            if header.sources.get(src, ("", 0))[1] >= seq:
                return lo
            lo = i
        return lo


ProgressFn = Callable[[int, int], None]


def verify(directory: Path | str, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Check every frame of every segment and every source's sequence.

    Returns the ``replay --verify --json`` report: ``ok`` is false when any
    corruption was found. Per source: ``gaps`` lists every missing seq range,
    ``declared_gaps`` those announced by a STATUS/DROP record,
    ``undeclared_gaps`` the rest, and ``duplicates`` counts records whose seq
    did not increase. ``progress(done_bytes, total_bytes)`` is called per segment.
    """
    directory = Path(directory)
    t0 = time.perf_counter()
    paths = segment_paths(directory)
    if not directory.is_dir():
        raise WalError(f"WAL directory {directory} does not exist")
    total_bytes = sum(p.stat().st_size for p in paths)
    done = 0
    corrupt: list[Corruption] = []
    frames = records = torn = padded = 0
    names: dict[int, str] = {}
    per_src: dict[int, _SourceCheck] = {}
    for i, path in enumerate(paths):
        with _Mapped(path) as m:
            scan = scan_segment(path, m.data, last=i == len(paths) - 1)
            corrupt.extend(scan.corrupt)
            if i == len(paths) - 1:
                torn = scan.torn_bytes
            if scan.header is not None:
                for src, (name, _last) in scan.header.sources.items():
                    names.setdefault(src, name)
            frames += len(scan.frames)
            rec_frames = []
            for fr in scan.frames:
                if fr.kind == FrameKind.RECORDS:
                    if fr.count:
                        rec_frames.append(fr)
                elif fr.kind == FrameKind.SOURCES:
                    names.update(
                        _decode_sources(m.data[fr.payload_offset : fr.payload_offset + fr.length])
                    )
                elif fr.kind == FrameKind.PAD:
                    padded += 1
            header_last = (
                None
                if scan.header is None
                else {src: last for src, (_n, last) in scan.header.sources.items()}
            )
            records += _check_records(m.data, rec_frames, per_src, corrupt, path, header_last)
        done += path.stat().st_size
        if progress is not None:
            progress(done, total_bytes)
    elapsed = time.perf_counter() - t0
    return {
        "ok": not corrupt,
        "segments": len(paths),
        "frames": frames,
        "records": records,
        "records_per_s": round(records / elapsed) if elapsed > 0 else 0,
        "torn_tail_bytes": torn,
        "padded_frames": padded,
        "corrupt": [c.as_dict() for c in corrupt],
        "sources": {
            names.get(src, f"src{src}"): chk.report() for src, chk in sorted(per_src.items())
        },
    }


@dataclass
class _SourceCheck:
    first_seq: int = 0
    last_seq: int = 0
    records: int = 0
    duplicates: int = 0
    gaps: list[list[int]] = field(default_factory=list)
    declared: list[list[int]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        undeclared = _subtract(self.gaps, self.declared)
        return {
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "records": self.records,
            "gaps": self.gaps,
            "declared_gaps": [g for g in self.declared if _overlaps(g, self.gaps)],
            "undeclared_gaps": undeclared,
            "duplicates": self.duplicates,
        }


def _overlaps(gap: list[int], gaps: list[list[int]]) -> bool:
    return any(g[0] <= gap[1] and gap[0] <= g[1] for g in gaps)


def _subtract(gaps: list[list[int]], declared: list[list[int]]) -> list[list[int]]:
    """Parts of ``gaps`` not covered by any ``declared`` range."""
    out: list[list[int]] = []
    cover = sorted(declared)
    for lo, hi in gaps:
        cur = lo
        for dlo, dhi in cover:
            if dhi < cur or dlo > hi:
                continue
            if dlo > cur:
                out.append([cur, dlo - 1])
            cur = max(cur, dhi + 1)
            if cur > hi:
                break
        if cur <= hi:
            out.append([cur, hi])
    return out


def _check_records(
    data: memoryview,
    frames: list[FrameInfo],
    per_src: dict[int, _SourceCheck],
    corrupt: list[Corruption],
    path: Path,
    header_last: dict[int, int] | None,
) -> int:
    """Vectorised sequence checks over every record of one segment.

    A source seen for the first time should continue from what the segment
    header says it had before (0 if it had nothing), so records lost at the
    very start show up as a gap too.
    """
    if not frames:
        return 0
    counts = np.fromiter((f.count for f in frames), dtype=np.int64, count=len(frames))
    starts = np.fromiter((f.payload_offset for f in frames), dtype=np.int64, count=len(frames))
    frame_src = np.fromiter((f.src for f in frames), dtype=np.int64, count=len(frames))
    total = int(counts.sum())
    # Byte offset of every record: frame payload start + 64 * index within the frame.
    first_index = np.cumsum(counts) - counts
    offsets = (
        np.repeat(starts - first_index * RECORD_SIZE, counts)
        + np.arange(total, dtype=np.int64) * RECORD_SIZE
    )
    arr = np.frombuffer(data, dtype=np.uint8)
    words = arr[: len(arr) - len(arr) % 8].view(np.uint64)
    seq = words[offsets // 8]
    src = arr[offsets + 28].astype(np.int64)
    kind = arr[offsets + 29]
    expected_src = np.repeat(frame_src, counts)
    mismatch = np.flatnonzero(src != expected_src)
    if len(mismatch):
        off = int(offsets[mismatch[0]])
        corrupt.append(
            Corruption(
                str(path),
                off,
                f"record src {int(src[mismatch[0]])} in a frame of src {int(expected_src[mismatch[0]])}",
            )
        )
    status_rows = np.flatnonzero(kind == rec.Kind.STATUS)
    for s in np.unique(expected_src).tolist():
        chk = per_src.setdefault(s, _SourceCheck())
        rows = expected_src == s
        sseq = seq[rows].astype(np.int64)
        if chk.records == 0:
            chk.first_seq = int(sseq[0])
            prev = int(sseq[0]) - 1 if header_last is None else header_last.get(s, 0)
        else:
            prev = chk.last_seq
        diffs = np.diff(sseq, prepend=prev)
        bad = np.flatnonzero(diffs != 1)
        for j in bad.tolist():
            d = int(diffs[j])
            if d > 1:
                chk.gaps.append([int(sseq[j]) - d + 1, int(sseq[j]) - 1])
            else:
                chk.duplicates += 1
        chk.last_seq = max(chk.last_seq, int(sseq.max()))
        chk.records += len(sseq)
    for j in status_rows.tolist():
        off = int(offsets[j])
        aux = int(words[(off + 48) // 8])
        if aux == rec.StatusReason.DROP:
            first = int(words[(off + 32) // 8])
            missing = int(words[(off + 40) // 8])
            if missing > 0:
                per_src.setdefault(int(src[j]), _SourceCheck()).declared.append(
                    [first, first + missing - 1]
                )
    return total
