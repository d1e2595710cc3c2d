"""The WAL-backed store: snapshot codec, refresh/recover, stable ids, torn snapshots, pruning."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.instruments import snapshot as snap
from connector.instruments import store
from connector.instruments.kite_csv import parse_kite_csv
from connector.instruments.model import NO_DATE, InstrumentTable, Venue
from connector.instruments.universe import Universe
from connector.sim.kite_universe import KiteRow, universe_csv
from pipeline import paths, wal
from tests.connector.instruments.support import DAY, small_rows

SMALL = store.StoreConfig(segment_bytes=1 << 20, part_bytes=32 << 10)


def _kite(rows: list[KiteRow]) -> dict[Venue, InstrumentTable]:
    return {Venue.KITE: parse_kite_csv(universe_csv(rows))}


def _recover(data_dir: Path) -> store.Recovered:
    return store.recover(paths.instruments_wal_dir(data_dir))


def _ids(snapshot: snap.Snapshot) -> dict[tuple[int, int, str], int]:
    t = snapshot.listed
    return dict(zip(t.identity_keys(), t.numeric["inst"].tolist(), strict=True))


# ---------------------------------------------------------------------------
# the codec


_text = st.text(st.characters(blacklist_characters="\n", blacklist_categories=["Cs"]), max_size=12)


@pytest.mark.unit
@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(0, 30),
    data=st.data(),
)
def test_snapshot_codec_round_trips(n: int, data: st.DataObject) -> None:
    ints = st.integers(-(2**62), 2**62)
    table = InstrumentTable.from_columns(
        n,
        {
            "inst": data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=n, max_size=n)),
            "venue": data.draw(st.lists(st.sampled_from(list(Venue)), min_size=n, max_size=n)),
            "token": data.draw(st.lists(ints, min_size=n, max_size=n)),
            "strike": data.draw(st.lists(ints, min_size=n, max_size=n)),
            "expiry": data.draw(
                st.lists(st.sampled_from([NO_DATE, 0, 20000, 2_900_000]), min_size=n, max_size=n)
            ),
        },
        {
            "tradingsymbol": data.draw(st.lists(_text, min_size=n, max_size=n)),
            "name": data.draw(st.lists(_text, min_size=n, max_size=n)),
        },
    )
    original = snap.Snapshot(7, 123, 99, table, table.take(np.arange(n // 2)), {"k": {"x": 1}})
    payload = snap.encode(original)
    back = snap.decode(payload)
    assert (back.version, back.created_ns, back.next_inst, back.meta) == (
        7,
        123,
        99,
        {"k": {"x": 1}},
    )
    assert back.listed.rows() == table.rows()
    assert back.retained.rows() == original.retained.rows()
    parts = snap.split_parts(7, payload, 100)
    heads = [snap.part_header(p) for p in parts]
    assert [h.index for h in heads if h] == list(range(len(parts)))
    assert b"".join(p[snap.PART_HEAD.size :] for p in parts) == payload


@pytest.mark.unit
@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_snapshot_decode_random_bytes_is_a_data_error(data: bytes) -> None:
    from connector.instruments.model import InstrumentDataError

    with pytest.raises(InstrumentDataError):
        snap.decode(snap.MAGIC + data)


# ---------------------------------------------------------------------------
# refresh and recovery


@pytest.mark.integration
def test_refresh_then_recover_gives_the_same_universe(tmp_path: Path) -> None:
    rows = small_rows()
    result = store.refresh(tmp_path, _kite(rows), as_of=DAY, now_ns=1, config=SMALL)
    assert result.snapshot.version == 1
    assert result.report.venues[0].added == len(rows)
    recovered = _recover(tmp_path)
    assert recovered.warnings == []
    assert recovered.snapshot is not None
    assert recovered.snapshot.listed.rows() == result.snapshot.listed.rows()
    ids = recovered.snapshot.listed.numeric["inst"]
    assert sorted(ids.tolist()) == list(range(1, len(rows) + 1))
    assert recovered.snapshot.next_inst == len(rows) + 1


@pytest.mark.integration
def test_ids_stable_across_refreshes_and_never_reused(tmp_path: Path) -> None:
    day1, day2, day3 = DAY, DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=40)
    r1 = store.refresh(tmp_path, _kite(small_rows(day1)), as_of=day1, now_ns=1, config=SMALL)
    r2 = store.refresh(tmp_path, _kite(small_rows(day2)), as_of=day2, now_ns=2, config=SMALL)
    ids1, ids2 = _ids(r1.snapshot), _ids(r2.snapshot)
    common = set(ids1) & set(ids2)
    assert len(common) > len(ids1) // 2
    assert all(ids1[k] == ids2[k] for k in common)
    new = set(ids2) - set(ids1)
    assert all(ids2[k] > max(ids1.values()) for k in new)  # new ones get new ids
    # The report: added = new keys, removed/expired = keys gone.
    ch = r2.report.venues[0]
    assert ch.added == len(new)
    assert ch.removed + ch.expired == len(set(ids1) - set(ids2))
    # Forty days later the first month has expired.
    r3 = store.refresh(tmp_path, _kite(small_rows(day3)), as_of=day3, now_ns=3, config=SMALL)
    assert r3.report.venues[0].expired > 0
    all_ids = list(_ids(r3.snapshot).values())
    assert len(set(all_ids)) == len(all_ids)
    assert max(all_ids) < r3.snapshot.next_inst
    # Whatever the registry still knows (listed or retained) keeps its id when listed
    # again; expired contracts were dropped from it (they never come back).
    retained = r3.snapshot.retained
    known = set(_ids(r3.snapshot)) | set(retained.identity_keys())
    again = store.refresh(tmp_path, _kite(small_rows(day1)), as_of=day1, now_ns=4, config=SMALL)
    ids_again = _ids(again.snapshot)
    kept = [k for k in ids1 if k in known]
    assert kept and all(ids_again[k] == ids1[k] for k in kept)
    assert all(ids_again[k] >= r3.snapshot.next_inst for k in ids_again if k not in known)


@pytest.mark.integration
def test_retained_instrument_gets_its_id_back(tmp_path: Path) -> None:
    rows = small_rows()
    infy = next(r for r in rows if r.tradingsymbol == "INFY" and r.exchange == "NSE")
    first = store.refresh(tmp_path, _kite(rows), as_of=DAY, now_ns=1, config=SMALL)
    without = [r for r in rows if r is not infy]
    second = store.refresh(tmp_path, _kite(without), as_of=DAY, now_ns=2, config=SMALL)
    assert second.report.venues[0].removed == 1
    assert second.report.venues[0].removed_examples == ("INFY",)
    assert len(second.snapshot.retained) == 1
    renamed = dataclasses.replace(rows[1], tradingsymbol=rows[1].tradingsymbol + "X")
    third_rows = [*rows[:1], renamed, *rows[2:]]  # INFY back, one symbol renamed on its token
    third = store.refresh(tmp_path, _kite(third_rows), as_of=DAY, now_ns=3, config=SMALL)
    key = (int(Venue.KITE), infy.instrument_token, "INFY")
    assert _ids(third.snapshot)[key] == _ids(first.snapshot)[key]
    # A recycled token under another symbol is another instrument: a new id.
    new_key = (int(Venue.KITE), renamed.instrument_token, renamed.tradingsymbol)
    assert _ids(third.snapshot)[new_key] == second.snapshot.next_inst


@pytest.mark.integration
def test_binance_and_kite_share_one_registry(tmp_path: Path) -> None:
    from connector.instruments.binance_info import parse_exchange_info
    from tests.conftest import shared_fixture

    spot = shared_fixture("binance/nautilus_examples/http_spot_market_exchange_info.json")
    store.refresh(tmp_path, _kite(small_rows()), as_of=DAY, now_ns=1, config=SMALL)
    r = store.refresh(
        tmp_path,
        {Venue.BINANCE_SPOT: parse_exchange_info(spot.read_bytes(), "spot")},
        as_of=DAY,
        now_ns=2,
        config=SMALL,
    )
    u = Universe.from_snapshot(r.snapshot)
    btc = u.by_exchange_symbol("BINANCE-SPOT:BTCUSDT")
    assert btc.inst == len(small_rows()) + 1
    assert u.spot("NIFTY").inst == 1  # the Kite rows were kept as they were
    assert set(r.snapshot.meta) == {"kite", "binance_spot"}


# ---------------------------------------------------------------------------
# torn snapshots


def _blob_frames(wal_dir: Path) -> list[tuple[Path, wal.FrameInfo, snap.PartHeader]]:
    out = []
    for path in wal.segment_paths(wal_dir):
        data = path.read_bytes()
        view = memoryview(data)
        for fr in wal.scan_segment(path, view, last=True).frames:
            head = snap.part_header(view[fr.payload_offset : fr.payload_offset + 32])
            if head is not None:
                out.append((path, fr, head))
        view.release()
    return out


@pytest.mark.integration
@pytest.mark.parametrize("damage", ["flip", "cut"])
def test_torn_snapshot_is_ignored_with_a_warning(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = store.refresh(tmp_path, _kite(small_rows()), as_of=DAY, now_ns=1, config=SMALL)
    day2 = DAY + dt.timedelta(days=1)
    store.refresh(tmp_path, _kite(small_rows(day2)), as_of=day2, now_ns=2, config=SMALL)
    wal_dir = paths.instruments_wal_dir(tmp_path)
    path, frame, head = _blob_frames(wal_dir)[-1]
    assert head.version == 2 and head.count > 1
    fd = os.open(path, os.O_RDWR)
    try:
        if damage == "flip":  # a byte of the last part's payload changed: CRC mismatch
            at = frame.payload_offset + 100
            os.pwrite(fd, bytes([os.pread(fd, 1, at)[0] ^ 0xFF]), at)
        else:  # the last part only half written, the rest zeros (a crash mid-pwrite)
            half = frame.payload_offset + frame.length // 2
            os.pwrite(fd, b"\0" * (frame.end - half), half)
    finally:
        os.close(fd)
    with caplog.at_level(logging.WARNING, logger="connector.instruments"):
        recovered = _recover(tmp_path)
    assert recovered.snapshot is not None
    assert recovered.snapshot.version == 1
    assert recovered.snapshot.listed.rows() == v1.snapshot.listed.rows()
    assert any("version 2 is torn" in w for w in recovered.warnings)
    assert any("version 2 is torn" in r.getMessage() for r in caplog.records)
    # The next refresh numbers past the torn version and builds on version 1.
    r3 = store.refresh(tmp_path, _kite(small_rows(day2)), as_of=day2, now_ns=3, config=SMALL)
    assert r3.snapshot.version == 3
    assert r3.report.previous_version == 1
    again = _recover(tmp_path)
    assert again.snapshot is not None and again.snapshot.version == 3


@pytest.mark.integration
def test_old_segments_are_pruned_and_recovery_reads_few(tmp_path: Path) -> None:
    config = store.StoreConfig(segment_bytes=256 << 10, part_bytes=32 << 10)
    for i in range(8):
        day = DAY + dt.timedelta(days=i)
        store.refresh(tmp_path, _kite(small_rows(day)), as_of=day, now_ns=i + 1, config=config)
    wal_dir = paths.instruments_wal_dir(tmp_path)
    versions = sorted({h.version for _, _, h in _blob_frames(wal_dir)})
    assert versions[-1] == 8
    assert 8 - versions[0] <= 3  # only the newest snapshots' segments remain
    recovered = _recover(tmp_path)
    assert recovered.snapshot is not None and recovered.snapshot.version == 8
    assert recovered.segments_read <= 2
    assert [v for v, _ in store.snapshot_payloads(wal_dir)][-1] == 8


@pytest.mark.unit
def test_empty_directory_recovers_nothing(tmp_path: Path) -> None:
    recovered = _recover(tmp_path)
    assert recovered.snapshot is None and recovered.max_version == 0


@pytest.mark.unit
def test_duplicate_identity_in_an_update_is_an_error() -> None:
    from connector.instruments.model import InstrumentDataError

    table = _kite(small_rows())[Venue.KITE]
    doubled = InstrumentTable.concat([table, table.take(np.array([3]))])
    with pytest.raises(InstrumentDataError, match="listed twice"):
        store.merge(None, {Venue.KITE: doubled}, version=1, as_of=DAY, created_ns=0)


@pytest.mark.unit
def test_an_empty_update_never_delists_a_venue() -> None:
    from connector.instruments.model import InstrumentDataError

    first, _ = store.merge(None, _kite(small_rows()), version=1, as_of=DAY, created_ns=0)
    empty = {Venue.KITE: parse_kite_csv(universe_csv([]))}
    with pytest.raises(InstrumentDataError, match="refusing to delist"):
        store.merge(first, empty, version=2, as_of=DAY, created_ns=0)
    # Binance rows are looked up by exchange symbol.
    from connector.instruments.universe import Universe

    u = Universe.from_snapshot(first)
    assert u.inst_of_symbol("NSE", "INFY") == u.by_token(408065).inst
    assert u.inst_of_symbol("NSE", "NOPE") == 0
