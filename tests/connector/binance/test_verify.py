"""verify-capture on the recorded Binance sessions (../shared/fixtures)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.binance.verify import verify_capture
from connector.cli import main
from tests.conftest import shared_fixture

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("capture", "market"), [("BINANCE.ws.1.0", "spot"), ("BINANCE_FUTURES.ws.1.0", "usdm")]
)
def test_every_fixture_capture_verifies(capture: str, market: str) -> None:
    path = shared_fixture(f"binance/cryptofeed/{capture}")
    report = verify_capture([path])
    assert report["market"] == market
    assert report["decode_errors"] == 0 and report["capture_errors"] == []
    assert report["gaps"] == 0 and report["unexplained_gaps"] == 0
    assert report["snapshots"] == 4, "the REST companion file was read"
    assert report["bbo_mismatches"] == 0
    assert report["bbo_checked"] >= 20, (
        "enough bookTickers line up with a depth event to mean something"
    )
    assert all(s["applied"] > 0 for s in report["symbols"].values())


def test_cli_json_contract_and_exit_code() -> None:
    path = shared_fixture("binance/cryptofeed/BINANCE.ws.1.0")
    result = CliRunner().invoke(main, ["verify-capture", "binance", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in (
        "messages",
        "depth_updates",
        "gaps",
        "resyncs",
        "bbo_checked",
        "bbo_mismatches",
        "decode_errors",
    ):
        assert isinstance(out[key], int), key


def _to_plain(ws: Path, http: Path, target: Path) -> None:
    """Rewrite a cryptofeed capture as plain `<ns> <raw>` lines (snapshots without symbols), gzipped."""
    lines = []
    for source in (ws, http):
        for line in source.read_text().splitlines():
            if not line or " <-> " in line or line.startswith("configuration:"):
                continue
            head, _, body = line.partition(": ")
            ts = head.rpartition(" -> ")[2] if " -> " in head else head
            whole, _, frac = ts.partition(".")
            ns = int(whole) * 10**9 + int((frac + "000000000")[:9])
            lines.append((ns, body))
    lines.sort()
    with gzip.open(target, "wt") as f:
        for ns, body in lines:
            f.write(f"{ns} {body}\n")


def test_plain_gzip_capture_gives_the_same_result(tmp_path: Path) -> None:
    ws = shared_fixture("binance/cryptofeed/BINANCE.ws.1.0")
    http = shared_fixture("binance/cryptofeed/BINANCE.http.0.0")
    plain = tmp_path / "capture.txt.gz"
    _to_plain(ws, http, plain)
    a = verify_capture([ws])
    b = verify_capture([plain])
    for key in (
        "depth_updates",
        "gaps",
        "snapshots",
        "bbo_checked",
        "bbo_mismatches",
        "decode_errors",
    ):
        assert a[key] == b[key], key


def test_a_dropped_diff_is_found_as_a_gap(tmp_path: Path) -> None:
    ws = shared_fixture("binance/cryptofeed/BINANCE.ws.1.0")
    lines = ws.read_text().splitlines(keepends=True)
    nkn = [i for i, line in enumerate(lines) if "nknusdt@depth" in line]
    del lines[nkn[40]]  # lose one diff in the middle of a synced stream
    damaged = tmp_path / "BINANCE.ws.1.0"
    damaged.write_text("".join(lines))
    (tmp_path / "BINANCE.http.0.0").write_bytes(
        shared_fixture("binance/cryptofeed/BINANCE.http.0.0").read_bytes()
    )
    report = verify_capture([damaged])
    assert report["gaps"] == 1 and report["unexplained_gaps"] == 1
    assert report["symbols"]["NKNUSDT"]["gaps"] == 1
    result = CliRunner().invoke(main, ["verify-capture", "binance", str(damaged)])
    assert result.exit_code == 1


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["verify-capture", "binance", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
