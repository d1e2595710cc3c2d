"""The venue benchmarks run end to end and report their contract keys (no timing asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.bench import bench_binance, bench_decode

pytestmark = pytest.mark.bench


def test_bench_decode_reports_every_decoder_beside_its_baseline() -> None:
    result = bench_decode(seconds=0.6, batch=64)
    for name in ("binance_depth", "binance_trade"):
        assert {"msgs_per_s", "baseline_msgs_per_s", "ratio"} <= set(result[name])
        assert result[name]["msgs_per_s"] > 0 and result[name]["baseline_msgs_per_s"] > 0
    assert {"packets_per_s", "baseline_packets_per_s", "ratio"} <= set(result["kite_full"])


def test_bench_binance_runs_the_pipeline_on_the_simulator(tmp_path: Path) -> None:
    result = bench_binance(seconds=2.0, directory=tmp_path)
    assert {"msgs_per_s", "baseline_msgs_per_s", "ratio", "drops"} <= set(result)
    assert result["msgs_per_s"] > 0 and result["baseline_msgs_per_s"] > 0
    assert result["drops"] == 0
    assert result["wal_verified"]
    assert list(tmp_path.iterdir()) == [], "the temporary data dir was removed"
