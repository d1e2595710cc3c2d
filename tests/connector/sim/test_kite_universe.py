"""The generated Kite instruments universe: realistic, deterministic, in Kite's exact CSV form."""

from __future__ import annotations

import collections
import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest

from connector.sim.kite_universe import (
    KITE_CSV_COLUMNS,
    SEGMENT_IDS,
    generate_universe,
    last_weekday_of_month,
    universe_csv,
)
from tests.conftest import shared_fixture

pytestmark = pytest.mark.unit

DAY = dt.date(2026, 3, 2)
DECIMAL_CELL = re.compile(r"\d+\.\d+")


@pytest.fixture(scope="module")
def full() -> list:  # type: ignore[type-arg]
    return generate_universe(DAY)


def test_about_91k_rows_every_segment(full: list) -> None:  # type: ignore[type-arg]
    assert 85_000 <= len(full) <= 97_000
    segments = collections.Counter(r.segment for r in full)
    for seg in ("NSE", "BSE", "INDICES", "NFO-FUT", "NFO-OPT", "BFO-FUT", "BFO-OPT"):
        assert segments[seg] > 0, seg
    for seg in ("MCX-FUT", "MCX-OPT", "CDS-FUT", "CDS-OPT"):
        assert segments[seg] > 0, seg
    assert 2000 <= segments["NSE"] <= 3000


def test_tokens_follow_the_ticker_layout(full: list) -> None:  # type: ignore[type-arg]
    tokens = [r.instrument_token for r in full]
    assert len(set(tokens)) == len(tokens)
    keys = [(r.exchange, r.tradingsymbol) for r in full]
    assert len(set(keys)) == len(keys)
    for r in full:
        seg = "INDICES" if r.segment == "INDICES" else r.exchange
        assert r.instrument_token == r.exchange_token << 8 | SEGMENT_IDS[seg]
        assert r.instrument_token < 2**32


def test_real_index_rows(full: list) -> None:  # type: ignore[type-arg]
    by_symbol = {(r.exchange, r.tradingsymbol): r for r in full if r.segment == "INDICES"}
    assert by_symbol[("NSE", "NIFTY 50")].instrument_token == 256265
    assert by_symbol[("NSE", "NIFTY BANK")].instrument_token == 260105
    assert by_symbol[("NSE", "NIFTY FIN SERVICE")].instrument_token == 257801
    assert by_symbol[("NSE", "NIFTY MID SELECT")].instrument_token == 288009
    assert by_symbol[("BSE", "SENSEX")].instrument_token == 265
    assert ("BSE", "BANKEX") in by_symbol


@pytest.mark.parametrize(
    ("name", "interval", "weekday"),
    [("NIFTY", 50, 1), ("BANKNIFTY", 100, 1), ("FINNIFTY", 50, 1), ("SENSEX", 100, 3)],
)
def test_index_options_grid_and_expiries(
    full: list,  # type: ignore[type-arg]
    name: str,
    interval: int,
    weekday: int,
) -> None:
    opts = [r for r in full if r.name == name and r.instrument_type in ("CE", "PE")]
    futs = [r for r in full if r.name == name and r.instrument_type == "FUT"]
    assert len(futs) == 3
    for f in futs:  # monthly: the last Tuesday (NFO) / Thursday (BFO) of the month
        assert f.expiry == last_weekday_of_month(f.expiry.year, f.expiry.month, weekday)
        assert f.tradingsymbol == f"{name}{f.expiry:%y}{f.expiry:%b}".upper() + "FUT"
    for o in opts:
        assert Decimal(o.strike) % interval == 0
        assert o.expiry.weekday() == weekday and o.expiry >= DAY
        ce_pe = {(p.instrument_type) for p in opts if p.expiry == o.expiry and p.strike == o.strike}
        assert ce_pe == {"CE", "PE"}
    if name in ("NIFTY", "SENSEX"):  # weeklies: YY + month code + DD in the symbol
        weekly = [o for o in opts if o.expiry not in {f.expiry for f in futs}]
        assert weekly
        o = weekly[0]
        code = "123456789OND"[o.expiry.month - 1]
        assert o.tradingsymbol.startswith(f"{name}{o.expiry:%y}{code}{o.expiry:%d}")


def test_csv_form_matches_the_recorded_dump(full: list) -> None:  # type: ignore[type-arg]
    recorded = shared_fixture("kite/instruments_all.csv").read_text().splitlines()[0]
    data = universe_csv(full[:3000] + full[-3000:]).decode()
    lines = data.splitlines()
    assert lines[0] == recorded == ",".join(KITE_CSV_COLUMNS)
    for row in csv.DictReader(io.StringIO(data)):
        for col in ("last_price", "strike", "tick_size"):
            assert DECIMAL_CELL.fullmatch(row[col]), (col, row)
        if row["instrument_type"] == "EQ":
            assert row["expiry"] == "" and row["strike"] == "0.0"
        else:
            assert dt.date.fromisoformat(row["expiry"]) >= DAY
        assert row["lot_size"].isdigit()


def test_deterministic_and_scaled() -> None:
    a = generate_universe(DAY, seed=3, scale=0.02)
    assert a == generate_universe(DAY, seed=3, scale=0.02)
    assert a != generate_universe(DAY, seed=4, scale=0.02)
    assert len(a) < 2000
    # The next day keeps the same contracts' tokens (as the exchange does).
    b = generate_universe(DAY + dt.timedelta(days=1), seed=3, scale=0.02)
    tok_a = {(r.exchange, r.tradingsymbol): r.instrument_token for r in a}
    tok_b = {(r.exchange, r.tradingsymbol): r.instrument_token for r in b}
    same = set(tok_a) & set(tok_b)
    assert len(same) > len(a) // 2
    assert all(tok_a[k] == tok_b[k] for k in same)
    with pytest.raises(ValueError):
        generate_universe(DAY, scale=0)
