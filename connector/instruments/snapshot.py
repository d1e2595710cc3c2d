"""Instrument snapshots: a compact binary encoding of the universe, and its WAL parts. Pure.

A snapshot is the listed universe, the retained registry (instruments no
longer listed whose dense ids must not change should they come back) and a
small JSON header (version, creation time, next free dense id, when each
venue was refreshed). Encoding::

    b"CPINSNAP" | header length u32 | pad u32 | header JSON, padded to 8
    sections, each: name length u16 | kind u8 | dtype length u8 | count u64 | nbytes u64
                    name | dtype | pad to 8 | data | pad to 8

Numeric columns are raw little-endian arrays (decoding is ``np.frombuffer``,
no copy); a string column is a ``uint32`` code array plus its distinct values
joined by ``\\n`` (decoding is one ``split``).

In the WAL a snapshot is a run of BLOB frames (parts), each starting with
``b"INSP" | version u64 | part u32 | parts u32 | total bytes u64``; the frame's
``first_seq`` is the version and ``count`` the part index. A snapshot is usable
only when every part of its version is present (a crash mid-write leaves
some parts, never a wrong universe).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import orjson

from connector.instruments.model import (
    NUMERIC_COLUMNS,
    STRING_COLUMNS,
    InstrumentDataError,
    InstrumentTable,
    StringColumn,
)

MAGIC: Final = b"CPINSNAP"
_HEAD = struct.Struct("<8sII")
_SECTION = struct.Struct("<HBBQQ")
PART_MAGIC: Final = b"INSP"
PART_HEAD = struct.Struct("<4sQIIQ")
FORMAT_VERSION: Final = 1
_KIND_ARRAY = 0
_KIND_STRINGS = 1
TABLES: Final = ("listed", "retained")


@dataclass(frozen=True)
class Snapshot:
    """One version of the universe as stored."""

    version: int
    created_ns: int
    next_inst: int
    listed: InstrumentTable
    retained: InstrumentTable
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form facts: per venue ``{"refreshed_ns", "as_of", "rows"}``."""


def _pad8(n: int) -> bytes:
    return b"\0" * (-n % 8)


def encode(snapshot: Snapshot) -> bytes:
    """The snapshot's bytes (see the module docstring)."""
    header = orjson.dumps(
        {
            "format": FORMAT_VERSION,
            "version": snapshot.version,
            "created_ns": snapshot.created_ns,
            "next_inst": snapshot.next_inst,
            "meta": snapshot.meta,
        }
    )
    parts: list[bytes] = [_HEAD.pack(MAGIC, len(header), 0), header, _pad8(len(header))]

    def section(name: str, kind: int, dtype: str, count: int, data: bytes) -> None:
        raw_name = name.encode()
        raw_dtype = dtype.encode()
        head = _SECTION.pack(len(raw_name), kind, len(raw_dtype), count, len(data))
        meta = head + raw_name + raw_dtype
        parts.extend((meta, _pad8(len(meta)), data, _pad8(len(data))))

    for prefix, table in (("listed", snapshot.listed), ("retained", snapshot.retained)):
        for name in NUMERIC_COLUMNS:
            arr = np.ascontiguousarray(table.numeric[name])
            arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
            section(f"{prefix}.{name}", _KIND_ARRAY, arr.dtype.str, len(arr), arr.tobytes())
        for name in STRING_COLUMNS:
            col = table.strings[name]
            if any("\n" in v for v in col.values):
                bad = next(v for v in col.values if "\n" in v)
                raise InstrumentDataError(f"{name} value {bad!r} contains a newline")
            codes = np.ascontiguousarray(col.codes, dtype="<u4")
            section(f"{prefix}.{name}.codes", _KIND_ARRAY, "<u4", len(codes), codes.tobytes())
            joined = "\n".join(col.values).encode()
            section(f"{prefix}.{name}.values", _KIND_STRINGS, "", len(col.values), joined)
    return b"".join(parts)


def decode(data: bytes | memoryview) -> Snapshot:
    """Inverse of :func:`encode`. Arrays are read-only views of ``data`` (keep it alive).

    Anything malformed is an :class:`InstrumentDataError` (the CRCs make that
    a bug or a foreign frame, never a torn write).
    """
    try:
        return _decode(data)
    except InstrumentDataError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, struct.error) as exc:
        raise InstrumentDataError(f"malformed instrument snapshot: {exc}") from None


def _decode(data: bytes | memoryview) -> Snapshot:
    view = memoryview(data)
    if len(view) < _HEAD.size:
        raise InstrumentDataError("snapshot shorter than its header")
    magic, head_len, _ = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise InstrumentDataError("not an instrument snapshot (bad magic)")
    off = _HEAD.size
    header = orjson.loads(bytes(view[off : off + head_len]))
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        found = header.get("format") if isinstance(header, dict) else header
        raise InstrumentDataError(f"unsupported snapshot format {found!r}")
    off += head_len + (-head_len % 8)
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    strings: dict[str, list[str]] = {}
    size = len(view)
    while off < size:
        if off + _SECTION.size > size:
            raise InstrumentDataError(f"snapshot section header cut at offset {off}")
        name_len, kind, dtype_len, count, nbytes = _SECTION.unpack_from(view, off)
        p = off + _SECTION.size
        name = bytes(view[p : p + name_len]).decode()
        dtype = bytes(view[p + name_len : p + name_len + dtype_len]).decode()
        meta_len = _SECTION.size + name_len + dtype_len
        p = off + meta_len + (-meta_len % 8)
        if p + nbytes > size:
            raise InstrumentDataError(f"snapshot section {name} runs past the end")
        if kind == _KIND_ARRAY:
            arrays[name] = np.frombuffer(view, dtype=np.dtype(dtype), count=count, offset=p)
        elif kind == _KIND_STRINGS:
            values = bytes(view[p : p + nbytes]).decode().split("\n") if count else []
            if len(values) != count:
                raise InstrumentDataError(f"snapshot section {name}: {len(values)} != {count}")
            strings[name] = values
        else:
            raise InstrumentDataError(f"snapshot section {name}: unknown kind {kind}")
        off = p + nbytes + (-nbytes % 8)
    tables = []
    for prefix in TABLES:
        try:
            numeric = {k: arrays[f"{prefix}.{k}"] for k in NUMERIC_COLUMNS}
            cols = {
                k: StringColumn(arrays[f"{prefix}.{k}.codes"], strings[f"{prefix}.{k}.values"])
                for k in STRING_COLUMNS
            }
        except KeyError as exc:
            raise InstrumentDataError(f"snapshot lacks section {exc.args[0]}") from None
        tables.append(InstrumentTable(numeric, cols))
    return Snapshot(
        version=int(header["version"]),
        created_ns=int(header["created_ns"]),
        next_inst=int(header["next_inst"]),
        listed=tables[0],
        retained=tables[1],
        meta=dict(header.get("meta", {})),
    )


def split_parts(version: int, payload: bytes, part_bytes: int) -> list[bytes]:
    """The WAL frame payloads of one snapshot: a part header, then up to ``part_bytes`` of it."""
    if part_bytes <= 0:
        raise ValueError("part_bytes must be positive")
    total = len(payload)
    count = max(1, -(-total // part_bytes))
    return [
        PART_HEAD.pack(PART_MAGIC, version, i, count, total)
        + payload[i * part_bytes : (i + 1) * part_bytes]
        for i in range(count)
    ]


@dataclass(frozen=True)
class PartHeader:
    version: int
    index: int
    count: int
    total: int


def part_header(frame_payload: bytes | memoryview) -> PartHeader | None:
    """The part header of a BLOB frame's payload, or None if it is not a snapshot part."""
    if len(frame_payload) < PART_HEAD.size:
        return None
    magic, version, index, count, total = PART_HEAD.unpack_from(frame_payload, 0)
    if magic != PART_MAGIC or index >= count:
        return None
    return PartHeader(version, index, count, total)
