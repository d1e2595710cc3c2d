"""The instrument benchmark: a quick run on a small universe, and the full 91K run (bench)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.instruments.bench import bench_instruments
from tests.connector.instruments.support import small_rows

KEYS = {"instruments", "recover_s", "baseline_s", "ratio", "lookup_token_ns"}


@pytest.mark.integration
def test_bench_small_universe_reports_every_figure(tmp_path: Path) -> None:
    rows = small_rows()
    result = bench_instruments(tmp_path, rows, repeats=1, lookups=1000)
    assert set(result) >= KEYS
    assert result["instruments"] == len(rows)
    assert result["recover_s"] > 0 and result["baseline_s"] > 0
    assert result["ratio"] > 0
    assert 0 < result["lookup_token_ns"] < 1e6


@pytest.mark.bench
def test_bench_full_universe_meets_the_targets(tmp_path: Path) -> None:
    result = bench_instruments(tmp_path)
    print(result)
    assert result["instruments"] > 85_000
    assert result["recover_s"] < 0.3
