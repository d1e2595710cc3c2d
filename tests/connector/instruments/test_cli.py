"""``instruments`` CLI on tmp_path data dirs (click's CliRunner; real files, real loopback HTTP)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.instruments.cli import instruments
from connector.sim.kite_universe import universe_csv
from tests.conftest import shared_fixture
from tests.connector.instruments.support import DAY, small_rows
from tests.connector.instruments.test_service import _Server

pytestmark = pytest.mark.integration


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(instruments, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    csv_path = tmp_path / "instruments.csv.gz"
    csv_path.write_bytes(gzip.compress(universe_csv(small_rows())))
    code, out, err = _run(
        "import", str(csv_path), "--as-of", DAY.isoformat(), "--data-dir", str(tmp_path), "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["version"] == 1 and report["venues"][0]["added"] == len(small_rows())
    return tmp_path


def test_show_by_token_and_exchange_symbol(data_dir: Path) -> None:
    code, out, _ = _run("show", "256265", "--data-dir", str(data_dir), "--json")
    assert code == 0
    nifty = json.loads(out)
    assert nifty["tradingsymbol"] == "NIFTY 50" and nifty["segment"] == "INDICES"
    code, out, _ = _run("show", "NSE:INFY", "--data-dir", str(data_dir), "--json")
    infy = json.loads(out)
    assert infy["instrument_token"] == 408065
    assert infy["tick_size"] == "0.05" and infy["last_price"] == "0"  # decimal strings
    code, out, _ = _run("show", "NSE:INFY", "--data-dir", str(data_dir))
    assert code == 0 and "408065" in out
    code, _, err = _run("show", "NSE:NOPE", "--data-dir", str(data_dir))
    assert code == 1 and "no listed instrument NSE:NOPE" in err


def test_futures_tokens_chain_search_stats(data_dir: Path) -> None:
    rows = small_rows()
    futs = sorted(
        (r for r in rows if r.name == "NIFTY" and r.instrument_type == "FUT"),
        key=lambda r: r.expiry,  # type: ignore[arg-type, return-value]
    )
    d = ["--data-dir", str(data_dir), "--as-of", DAY.isoformat()]
    code, out, _ = _run("futures", "NIFTY", *d, "--json")
    assert [f["tradingsymbol"] for f in json.loads(out)] == [f.tradingsymbol for f in futs]
    code, out, _ = _run("tokens", "NIFTY", *d, "--json")
    assert json.loads(out) == {
        "spot": 256265,
        "current_future": futs[0].instrument_token,
        "next_future": futs[1].instrument_token,
    }
    code, out, _ = _run("chain", "NIFTY", "--spot", "24010.5", "--range", "1", *d, "--json")
    assert code == 0
    chain = json.loads(out)
    assert chain["strike_interval"] == "50"
    assert len(chain["strikes"]) == 3
    atm = chain["atm_strike"]
    assert chain["strikes"][1]["strike"] == atm
    code, out, _ = _run("chain", "NIFTY", "--spot", "24010.5", *d)
    assert code == 0 and "ATM" in out
    code, out, _ = _run("search", "nifty 5", "--data-dir", str(data_dir), "--json")
    assert [i["tradingsymbol"] for i in json.loads(out)] == ["NIFTY 50", "NIFTY 500"]
    code, out, _ = _run("stats", "--data-dir", str(data_dir), "--json")
    stats = json.loads(out)
    assert stats["instruments"] == len(rows) and stats["version"] == 1
    code, out, _ = _run("stats", "--data-dir", str(data_dir))
    assert f"{len(rows):,} instruments" in out


def test_data_dir_from_environment(data_dir: Path) -> None:
    code, out, _ = _run("stats", "--json", env={"CONNECTOR_PIPELINE_DATA_DIR": str(data_dir)})
    assert code == 0 and json.loads(out)["instruments"] == len(small_rows())


def test_empty_data_dir_and_bad_inputs(tmp_path: Path) -> None:
    code, _, err = _run("stats", "--data-dir", str(tmp_path))
    assert code == 1 and "no instruments stored" in err
    bad = tmp_path / "bad.csv"
    header = "instrument_token,exchange_token,tradingsymbol,name,last_price,expiry,strike,"
    header += "tick_size,lot_size,instrument_type,segment,exchange"
    bad.write_text(header + "\n1,0,A24JANFUT,A,1,2024/01/25,0,0.05,1,FUT,NFO-FUT,NFO\n")
    code, _, err = _run("import", str(bad), "--data-dir", str(tmp_path))
    assert code == 1 and "line 2, column expiry" in err
    code, _, err = _run("import", "--data-dir", str(tmp_path))
    assert code == 2  # usage: nothing to import
    code, _, err = _run("chain", "NIFTY", "--spot", "abc", "--data-dir", str(tmp_path))
    assert code == 2 and "invalid decimal" in err


def test_import_from_urls_and_binance_file(tmp_path: Path) -> None:
    server = _Server()
    try:
        server.routes["/instruments"] = (200, universe_csv(small_rows()))
        usdm = shared_fixture("binance/nautilus_examples/http_futures_market_exchange_info.json")
        server.routes["/fapi/v1/exchangeInfo"] = (200, usdm.read_bytes())
        d = ["--data-dir", str(tmp_path)]
        code, out, err = _run("import", "--from-kite", server.url("/instruments"), *d)
        assert code == 0, err
        assert "kite:" in out
        code, out, err = _run(
            "import", "--from-binance", server.url("/fapi/v1/exchangeInfo"), *d, "--json"
        )
        assert code == 0, err
        assert json.loads(out)["venues"][0]["venue"] == "binance-usdm"
    finally:
        server.close()
    spot = shared_fixture("binance/nautilus_examples/http_spot_market_exchange_info.json")
    code, out, err = _run("import", str(spot), "--data-dir", str(tmp_path), "--json")
    assert code == 0, err
    assert json.loads(out)["venues"][0]["venue"] == "binance-spot"
    code, out, _ = _run("show", "BINANCE-USDM:BTCUSDT", "--data-dir", str(tmp_path), "--json")
    btc = json.loads(out)
    assert btc["contract_type"] == "PERPETUAL" and btc["step_size"] == "0.001"
    code, out, _ = _run("show", "binance-spot:ETHUSDT", "--data-dir", str(tmp_path), "--json")
    assert json.loads(out)["tick_size"] == "0.01"
