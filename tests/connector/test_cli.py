"""The command line: the JSON contracts, exit codes and messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from pipeline import wal
from tests.helpers import make_records

CLI = Path(sys.executable).parent / "connector-pipeline"


def _make_wal(directory: Path, frames: int = 5) -> None:
    with wal.WalWriter(directory, wal.WalConfig(segment_bytes=16 * 1024)) as w:
        w.register_source(1, "binance-spot")
        for i in range(frames):
            w.append_records(make_records(1 + 100 * i, 100))


@pytest.mark.unit
def test_replay_verify_json_contract(tmp_path: Path) -> None:
    _make_wal(tmp_path)
    result = CliRunner().invoke(main, ["replay", "--wal", str(tmp_path), "--verify", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    for key in (
        "ok",
        "segments",
        "frames",
        "records",
        "records_per_s",
        "torn_tail_bytes",
        "corrupt",
        "sources",
    ):
        assert key in report
    assert report["ok"] is True and report["records"] == 500 and report["corrupt"] == []
    src = report["sources"]["binance-spot"]
    assert (src["first_seq"], src["last_seq"], src["records"], src["gaps"]) == (1, 500, 500, [])


@pytest.mark.unit
def test_replay_exit_code_1_and_names_file_and_offset_on_corruption(tmp_path: Path) -> None:
    _make_wal(tmp_path, frames=30)
    first = wal.segment_paths(tmp_path)[0]
    blob = bytearray(first.read_bytes())
    blob[wal.SEGMENT_HEADER_BYTES + 200] ^= (
        0x10  # inside the first records frame of a sealed segment
    )
    first.write_bytes(bytes(blob))
    runner = CliRunner()
    result = runner.invoke(main, ["replay", "--wal", str(tmp_path), "--verify", "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert (
        report["corrupt"][0]["file"] == str(first)
        and report["corrupt"][0]["reason"] == "CRC mismatch"
    )
    human = runner.invoke(main, ["replay", "--wal", str(tmp_path)])
    assert human.exit_code == 1 and "CORRUPT" in human.stdout and f"{first} offset" in human.stdout
    repaired = runner.invoke(main, ["replay", "--wal", str(tmp_path), "--repair", "--json"])
    assert repaired.exit_code == 0, repaired.output
    report = json.loads(repaired.stdout)
    assert report["ok"] and len(report["repair"]["padded"]) == 1
    assert report["sources"]["binance-spot"]["undeclared_gaps"], "the lost records show as a gap"


@pytest.mark.unit
def test_piped_tables_and_status_are_not_cut_to_80_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Output to a pipe or file: rich would assume 80 columns and shorten the
    # source names in the replay table to "binance-s…".
    monkeypatch.delenv("COLUMNS", raising=False)
    _make_wal(tmp_path / "market_data_wal")
    runner = CliRunner()
    table = runner.invoke(main, ["replay", "--wal", str(tmp_path / "market_data_wal"), "--verify"])
    assert table.exit_code == 0, table.output
    assert "binance-spot" in table.stdout and "…" not in table.stdout
    status = runner.invoke(main, ["status", "--data-dir", str(tmp_path)])
    assert status.exit_code == 0, status.output
    assert "last seq binance-spot 500" in status.stdout and " GB free)" in status.stdout
    report = json.loads(
        runner.invoke(main, ["status", "--data-dir", str(tmp_path), "--json"]).stdout
    )
    assert report["wal"]["free_bytes"] > 0 and report["wal"]["segments"] == 3


@pytest.mark.unit
def test_replay_of_a_directory_without_segments_warns_and_points_to_the_wal(
    tmp_path: Path,
) -> None:
    _make_wal(tmp_path / "market_data_wal")
    result = CliRunner().invoke(main, ["replay", "--wal", str(tmp_path), "--verify", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["segments"] == 0
    assert f"no WAL segments (*.wal) in {tmp_path}" in result.stderr
    assert str(tmp_path / "market_data_wal") in result.stderr


@pytest.mark.unit
def test_replay_of_a_missing_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["replay", "--wal", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


@pytest.mark.unit
def test_help_explains_every_command() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and "replay" in top.stdout and "bench" in top.stdout
    for args in (["replay", "--help"], ["bench", "ring", "--help"], ["bench", "wal", "--help"]):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, args
        assert "--json" in result.stdout, args


@pytest.mark.integration
def test_bench_wal_json_contract(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(CLI),
            "bench",
            "wal",
            "--json",
            "--dir",
            str(tmp_path),
            "--seconds",
            "0.3",
            "--mb",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for key in ("mb_per_s", "baseline_mb_per_s", "ratio", "records_per_s", "fsync"):
        assert key in out
    assert out["fsync"] == "interval" and out["mb_per_s"] > 0 and out["baseline_mb_per_s"] > 0
    assert out["ratio"] == pytest.approx(out["mb_per_s"] / out["baseline_mb_per_s"], rel=0.01)
    assert out["verify_ok"] is True
    assert list(tmp_path.iterdir()) == [], "without --keep nothing is left behind"


@pytest.mark.integration
def test_bench_wal_keep_leaves_a_verifiable_wal(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(CLI),
            "bench",
            "wal",
            "--json",
            "--dir",
            str(tmp_path),
            "--seconds",
            "0.2",
            "--mb",
            "5",
            "--keep",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kept = Path(json.loads(result.stdout)["dir"])
    assert kept.is_dir()
    verify = subprocess.run(
        [str(CLI), "replay", "--wal", str(kept), "--verify", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"]


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_ring_json_contract() -> None:
    result = subprocess.run(
        [str(CLI), "bench", "ring", "--json", "--seconds", "0.3", "--batch", "1", "--batch", "16"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert [r["batch"] for r in rows] == [1, 16]
    for row in rows:
        for key in (
            "records_per_s",
            "baseline_records_per_s",
            "ratio",
            "p50_latency_us",
            "p99_latency_us",
        ):
            assert key in row
        assert row["records_per_s"] > 0 and row["baseline_records_per_s"] > 0
        assert row["drops"] == 0 and row["latency_samples"] > 0
    # One-record latency has its bare-loop baseline beside it; batches do not.
    one, sixteen = rows
    assert 0 < one["baseline_p50_latency_us"] <= one["baseline_p99_latency_us"]
    assert sixteen["baseline_p50_latency_us"] is None
    assert not [p for p in Path("/dev/shm").iterdir() if "bench" in p.name], (
        "bench segments are unlinked"
    )


def _make_book_wal(directory: Path) -> list[int]:
    """A WAL with a snapshot and a few diffs for instruments 1 and 2 of feed 'syn'."""
    from pipeline.synthetic import SyntheticParams, SyntheticSource

    source = SyntheticSource(
        SyntheticParams(instruments=2, levels=3, seed=4, max_messages=200, chunk=50)
    )
    times = []
    with wal.WalWriter(directory) as w:
        w.register_source(3, "syn")
        seq = 1
        for i, batch in enumerate(source.chunks(clock=lambda: 0)):
            batch["src"] = 3
            batch["seq"] = range(seq, seq + len(batch))
            batch["ts_recv"] = 1_000_000_000 * (i + 1)  # one second per batch
            times.append(1_000_000_000 * (i + 1))
            seq += len(batch)
            w.append_records(batch)
    return times


@pytest.mark.unit
def test_replay_books_records_until_and_feed(tmp_path: Path) -> None:
    times = _make_book_wal(tmp_path)
    runner = CliRunner()
    books = runner.invoke(
        main, ["replay", "--wal", str(tmp_path), "--books", "--json", "--depth", "2"]
    )
    assert books.exit_code == 0, books.output
    out = json.loads(books.stdout)
    assert [b["inst"] for b in out["books"]] == [1, 2]
    for b in out["books"]:
        assert b["valid"] and len(b["bids"]) == 2 and b["bids"][0][0] < b["asks"][0][0]
    # --until the first batch: only the snapshot, so every book has all 3 levels a side.
    early = runner.invoke(
        main, ["replay", "--wal", str(tmp_path), "--books", "--json", "--until", str(times[0])]
    )
    assert json.loads(early.stdout)["applied"] == {"3": 14}
    lines = runner.invoke(
        main,
        [
            "replay",
            "--wal",
            str(tmp_path),
            "--records",
            "--feed",
            "syn",
            "--until",
            "1970-01-01T00:00:01Z",
        ],
    )
    assert lines.exit_code == 0, lines.output
    records = [json.loads(x) for x in lines.stdout.splitlines()]
    assert (
        len(records) == 14
        and records[0]["kind"] == "BOOK_CLEAR"
        and records[1]["kind"] == "BOOK_LEVEL"
    )
    assert all(r["ts_recv"] <= 1_000_000_000 for r in records)
    bad_feed = runner.invoke(
        main, ["replay", "--wal", str(tmp_path), "--records", "--feed", "nope"]
    )
    assert (
        bad_feed.exit_code == 2 and "no feed 'nope'" in bad_feed.stderr and "syn" in bad_feed.stderr
    )
    bad_time = runner.invoke(
        main, ["replay", "--wal", str(tmp_path), "--books", "--until", "yesterday"]
    )
    assert bad_time.exit_code == 2 and "ISO 8601" in bad_time.stderr


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_bench_pipeline_json_contract(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(CLI),
            "bench",
            "pipeline",
            "--json",
            "--seconds",
            "1",
            "--rate",
            "2000",
            "--dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    keys = (
        "records_per_s",
        "wal_mb_per_s",
        "drops",
        "p50_book_latency_us",
        "p99_book_latency_us",
        "p99_wal_latency_us",
        "cpu",
    )
    for key in keys:
        assert key in out and key in out["paced"], key
    assert out["records_per_s"] > 0 and out["drops"] == 0 and out["wal_verified"]
    assert set(out["cpu"]) >= {"wal-writer", "book-builder", "ingest:synthetic"}
    assert out["paced"]["records_per_s"] > 0
    assert list(tmp_path.iterdir()) == [], "the runs' data dirs are removed"


@pytest.mark.integration
def test_bench_decode_json_contract() -> None:
    result = subprocess.run(
        [str(CLI), "bench", "decode", "--json", "--seconds", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for name in ("binance_depth", "binance_trade"):
        row = out[name]
        assert row["msgs_per_s"] > 0 and row["baseline_msgs_per_s"] > 0
        assert row["ratio"] == pytest.approx(
            row["msgs_per_s"] / row["baseline_msgs_per_s"], rel=0.01
        )


@pytest.mark.unit
def test_book_symbol_through_the_instrument_store(tmp_path: Path) -> None:
    """``book BINANCE-USDM:BTCUSDT`` finds the id in the store when a feed of the
    run publishes it under its bare symbol; a key the run does not publish, or the
    store does not list, is an error saying which."""
    import datetime as dt

    import orjson

    from connector.cli import _Failed, _resolve_instrument
    from connector.instruments import store
    from connector.instruments.binance_info import parse_exchange_info
    from connector.instruments.model import Venue
    from connector.sim.binance import exchange_info, make_specs
    from pipeline import paths

    tables = {
        venue: parse_exchange_info(
            orjson.dumps(exchange_info(market, make_specs(market, ["BTCUSDT", "ETHUSDT"]), 1200)),
            market,
        )
        for venue, market in ((Venue.BINANCE_SPOT, "spot"), (Venue.BINANCE_USDM, "usdm"))
    }
    snap = store.refresh(tmp_path, tables, as_of=dt.date(2026, 12, 7), now_ns=1).snapshot
    from connector.instruments.universe import Universe

    universe = Universe.from_snapshot(snap)
    spot = universe.inst_of_symbol("BINANCE-SPOT", "BTCUSDT")
    usdm = universe.inst_of_symbol("BINANCE-USDM", "BTCUSDT")
    published = paths.run_dir(tmp_path) / "instruments"
    published.mkdir(parents=True)
    # Both feeds publish BTCUSDT: the bare symbol is ambiguous, the store key is not.
    (published / "binance-spot.json").write_bytes(orjson.dumps({str(spot): "BTCUSDT"}))
    (published / "binance-usdm.json").write_bytes(orjson.dumps({str(usdm): "BTCUSDT"}))
    with pytest.raises(_Failed, match="on several feeds"):
        _resolve_instrument(tmp_path, "BTCUSDT")
    assert _resolve_instrument(tmp_path, "BINANCE-USDM:BTCUSDT") == usdm != spot
    assert _resolve_instrument(tmp_path, "binance-spot:BTCUSDT") == spot
    with pytest.raises(
        _Failed, match=r"BINANCE-SPOT:ETHUSDT is instrument \d+ in the store, but no feed"
    ):
        _resolve_instrument(tmp_path, "BINANCE-SPOT:ETHUSDT")
    with pytest.raises(_Failed, match="no listed instrument BINANCE-SPOT:DOGEUSDT"):
        _resolve_instrument(tmp_path, "BINANCE-SPOT:DOGEUSDT")
    # An unknown name gets the published names it may mean.
    (published / "zerodha.json").write_bytes(
        orjson.dumps({"1": "NSE:NIFTY 50", "474": "NFO:NIFTY26DECFUT", "38": "NSE:INFY"})
    )
    with pytest.raises(_Failed, match=r"did you mean NSE:NIFTY 50, NFO:NIFTY26DECFUT\?$"):
        _resolve_instrument(tmp_path, "nifty")
    with pytest.raises(_Failed, match=r"did you mean BTCUSDT\?$"):
        _resolve_instrument(tmp_path, "BTCUSTD")
    with pytest.raises(_Failed, match=r"also works\)$"):
        _resolve_instrument(tmp_path, "XYZ")


@pytest.mark.unit
def test_tail_lines_render_every_kind() -> None:
    # `tail` without --json prints one line per record; a BOOK_UPDATE once
    # crashed it (its line wanted update-id keys the description lacked).
    from connector.cli import _record_line
    from pipeline import record as rec

    r = rec.empty(len(rec.Kind))
    r["kind"] = list(rec.Kind)
    r["inst"] = 5
    r["px"] = 12_345_000_000
    items = rec.describe(r)
    items[0]["symbol"] = "NSE:INFY"
    lines = [_record_line(item) for item in items]
    for kind, line in zip(rec.Kind, lines, strict=True):
        assert kind.name in line
    assert "NSE:INFY (5)" in lines[0] and "inst 5" in lines[1]
    update = lines[list(rec.Kind).index(rec.Kind.BOOK_UPDATE)]
    assert "ids 12345000000..0 (prev 0)" in update
