"""The 64-byte record (pipeline.record): layout, V64 copies, word views, STATUS."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import record as rec
from pipeline.record import Flag, Kind, StatusReason

pytestmark = pytest.mark.unit

# (name, offset, dtype string) exactly as the module docstring lays them out.
LAYOUT: list[tuple[str, int, str]] = [
    ("seq", 0, "<u8"),
    ("ts_exch", 8, "<i8"),
    ("ts_recv", 16, "<i8"),
    ("inst", 24, "<u4"),
    ("src", 28, "|u1"),
    ("kind", 29, "|u1"),
    ("side", 30, "|u1"),
    ("flags", 31, "|u1"),
    ("px", 32, "<i8"),
    ("qty", 40, "<i8"),
    ("aux", 48, "<i8"),
    ("aux2", 56, "<i8"),
]


def test_record_is_64_bytes() -> None:
    assert rec.RECORD_DTYPE.itemsize == 64
    assert rec.RECORD_SIZE == 64
    assert rec.V64.itemsize == 64
    assert rec.empty(3).nbytes == 3 * 64


def test_field_table_matches_docstring() -> None:
    fields = rec.RECORD_DTYPE.fields
    assert fields is not None
    assert list(rec.RECORD_DTYPE.names or ()) == [name for name, _, _ in LAYOUT]
    got = [(name, fields[name][1], fields[name][0].str) for name in rec.RECORD_DTYPE.names or ()]
    assert got == LAYOUT
    # The fields tile the 64 bytes with no padding.
    end = 0
    for _, offset, dtype in LAYOUT:
        assert offset == end
        end += np.dtype(dtype).itemsize
    assert end == 64


@pytest.mark.parametrize(("name", "offset", "dtype"), LAYOUT)
def test_field_bytes_are_little_endian_at_offset(name: str, offset: int, dtype: str) -> None:
    size = np.dtype(dtype).itemsize
    signed = np.dtype(dtype).kind == "i"
    value = -0x0102030405060708 if signed else 0x0102030405060708
    value = value if size == 8 else (0x01020304 if size == 4 else 0xA5)
    r = rec.empty(1)
    r[name] = value
    raw = r.tobytes()
    assert raw[offset : offset + size] == value.to_bytes(size, "little", signed=signed)
    assert raw[:offset] == bytes(offset)
    assert raw[offset + size :] == bytes(64 - offset - size)


def random_records(n: int, seed: int) -> rec.Records:
    raw = np.random.default_rng(seed).integers(0, 256, size=n * 64, dtype=np.uint8)
    return raw.view(rec.RECORD_DTYPE).copy()


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_v64_copy_preserves_every_byte(n: int) -> None:
    src = random_records(n, seed=n)
    assert len(src) == n
    dst = rec.empty(n)
    dst.view(rec.V64)[:] = src.view(rec.V64)
    assert dst.tobytes() == src.tobytes()
    for name in rec.RECORD_DTYPE.names or ():
        assert np.array_equal(dst[name], src[name]), name


def test_v64_fancy_index_copy_preserves_records() -> None:
    n = 257
    src = random_records(n, seed=42)
    perm = np.random.default_rng(7).permutation(n)
    dst = rec.empty(n)
    dst.view(rec.V64)[:] = src.view(rec.V64)[perm]
    assert dst.tobytes() == src[perm].tobytes()
    for i in (0, 1, n - 1):
        assert dst[i].tobytes() == src[perm[i]].tobytes()
    # and back through a slice into a larger buffer
    big = rec.empty(n + 10)
    big.view(rec.V64)[5 : 5 + n] = dst.view(rec.V64)
    assert big[5 : 5 + n].tobytes() == dst.tobytes()
    assert big[:5].tobytes() == bytes(5 * 64)
    assert big[5 + n :].tobytes() == bytes(5 * 64)


def test_as_words_is_a_shared_view() -> None:
    records = random_records(5, seed=1)
    words = rec.as_words(records)
    assert words.shape == (5, 8)
    assert words.dtype == np.uint64
    assert np.shares_memory(words, records)
    assert np.array_equal(words[:, rec.WORD_SEQ], records["seq"])
    assert np.array_equal(words[:, rec.WORD_TS_EXCH], records["ts_exch"].view(np.uint64))
    assert np.array_equal(words[:, rec.WORD_TS_RECV], records["ts_recv"].view(np.uint64))
    words[:, 0] = np.arange(100, 105, dtype=np.uint64)
    assert records["seq"].tolist() == [100, 101, 102, 103, 104]
    records["px"][2] = -1
    assert words[2, 4] == np.uint64(2**64 - 1)


def test_as_words_of_empty() -> None:
    assert rec.as_words(rec.empty(0)).shape == (0, 8)


def test_empty_is_zeroed() -> None:
    r = rec.empty(4)
    assert r.dtype == rec.RECORD_DTYPE
    assert r.tobytes() == bytes(4 * 64)


def test_kind_values_unique_and_nonzero() -> None:
    values = [member.value for member in Kind.__members__.values()]
    assert len(values) == len(set(values)), "no aliases among kinds"
    assert all(v != 0 for v in values)
    assert all(0 < v < 256 for v in values), "kind is a u8"
    assert Kind.STATUS in Kind


def test_flags_are_distinct_bits() -> None:
    bits = [int(f) for f in (Flag.LAST, Flag.SNAPSHOT, Flag.AFTER_GAP)]
    assert all(b and (b & (b - 1)) == 0 for b in bits)
    assert len(set(bits)) == 3


def test_status_without_loss() -> None:
    r = rec.status(src=3, reason=StatusReason.CONNECTED, ts_recv=1_700_000_000_123_456_789, inst=17)
    assert r.dtype == rec.RECORD_DTYPE
    assert r.shape == (1,)
    x = r[0]
    assert x["kind"] == Kind.STATUS
    assert x["flags"] == Flag.LAST
    assert not x["flags"] & Flag.AFTER_GAP
    assert x["src"] == 3
    assert x["inst"] == 17
    assert x["ts_recv"] == 1_700_000_000_123_456_789
    assert x["aux"] == StatusReason.CONNECTED
    for name in ("seq", "ts_exch", "side", "px", "qty", "aux2"):
        assert x[name] == 0, name


@pytest.mark.parametrize("reason", [StatusReason.GAP, StatusReason.DROP])
def test_status_declaring_a_loss(reason: StatusReason) -> None:
    r = rec.status(
        src=2,
        reason=reason,
        ts_recv=123,
        inst=9,
        first_missing=1_000_001,
        missing=42,
        detail=-7,
    )
    x = r[0]
    assert x["kind"] == Kind.STATUS
    assert x["flags"] == Flag.LAST | Flag.AFTER_GAP
    assert x["px"] == 1_000_001
    assert x["qty"] == 42
    assert x["aux"] == reason
    assert x["aux2"] == -7
    assert x["src"] == 2
    assert x["inst"] == 9
    assert x["ts_recv"] == 123
    assert x["seq"] == 0
    assert x["ts_exch"] == 0
    assert x["side"] == 0


def test_status_detail_without_loss_has_no_after_gap() -> None:
    x = rec.status(src=1, reason=StatusReason.STALE, ts_recv=5, detail=30)[0]
    assert x["flags"] == Flag.LAST
    assert x["aux2"] == 30
    assert x["qty"] == 0
    assert x["inst"] == 0


def test_describe_names_fields_per_kind() -> None:
    r = rec.empty(3)
    r["kind"] = [Kind.BOOK_LEVEL, Kind.BOOK_UPDATE, Kind.TICK]
    r["side"] = [1, 0, 0]
    r["flags"] = [Flag.SNAPSHOT, 0, Flag.LAST]
    r["inst"] = 7
    r["px"] = [6_512_345_000_000, 3_093_988_482, 10_050_000_000]
    r["qty"] = [150_000_000, 3_093_988_490, 1]
    r["aux"] = [0, 3_093_988_481, 5]
    r["aux2"] = [0, 1_700_000_000_000_000_000, 0]
    level, update, tick = rec.describe(r)
    assert (level["kind"], level["side"], level["flags"]) == ("BOOK_LEVEL", "BID", ["SNAPSHOT"])
    assert (level["px"], level["qty"]) == ("65123.45", "1.5")  # exact decimal strings
    # A BOOK_UPDATE carries update ids, not prices: they are shown as the ids.
    assert {k: update[k] for k in update if k.endswith("_id")} == {
        "first_update_id": 3_093_988_482,
        "last_update_id": 3_093_988_490,
        "prev_update_id": 3_093_988_481,
    }
    assert update["transact_time_ns"] == 1_700_000_000_000_000_000 and "px" not in update
    assert (tick["px"], tick["qty"], tick["flags"]) == ("100.5", "0.00000001", ["LAST"])
    status = rec.describe(
        rec.status(src=2, reason=StatusReason.DROP, ts_recv=1, first_missing=9, missing=4)
    )
    assert {k: status[0][k] for k in ("reason", "first_missing", "missing")} == {
        "reason": "DROP",
        "first_missing": 9,
        "missing": 4,
    }
