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
        [str(CLI), "bench", "ring", "--json", "--seconds", "0.3", "--batch", "16"],
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["results"]
    assert [r["batch"] for r in rows] == [16]
    row = rows[0]
    for key in (
        "records_per_s",
        "baseline_records_per_s",
        "ratio",
        "p50_latency_us",
        "p99_latency_us",
    ):
        assert key in row
    assert row["records_per_s"] > 0 and row["baseline_records_per_s"] > 0 and row["drops"] == 0
    assert row["latency_samples"] > 0
    assert not [p for p in Path("/dev/shm").iterdir() if "bench" in p.name], (
        "bench segments are unlinked"
    )
