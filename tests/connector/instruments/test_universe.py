"""Queries checked against independent expectations: the recorded dump, and random
generated universes against a brute-force reference written here."""

from __future__ import annotations

import csv
import datetime as dt
import io
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector.instruments.kite_csv import parse_kite_csv
from connector.instruments.model import InstrumentNotFoundError
from connector.instruments.universe import (
    Universe,
    get_atm_option_chain,
    get_current_month_futures,
    get_next_month_futures,
    get_spot,
    get_subscription_tokens,
    infer_interval,
)
from connector.sim.kite_universe import KiteRow, generate_universe
from pipeline import fixedpoint
from tests.conftest import shared_fixture
from tests.connector.instruments.support import small_rows, table_of

pytestmark = pytest.mark.unit

FX = fixedpoint.SCALE

# Written out independently of the code under test.
SPOTS = {
    "NIFTY": ("NSE", "NIFTY 50", 256265),
    "BANKNIFTY": ("NSE", "NIFTY BANK", 260105),
    "FINNIFTY": ("NSE", "NIFTY FIN SERVICE", 257801),
    "MIDCPNIFTY": ("NSE", "NIFTY MID SELECT", 288009),
    "SENSEX": ("BSE", "SENSEX", 265),
}


def _fixture_universe() -> tuple[Universe, list[dict[str, str]]]:
    raw = shared_fixture("kite/instruments_all.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    table = parse_kite_csv(raw)
    return Universe(table.with_inst(np.arange(1, len(table) + 1, dtype=np.uint32))), rows


def test_fixture_lookups_by_token_and_exchange_symbol() -> None:
    u, rows = _fixture_universe()
    for row in rows:
        inst = u.by_token(int(row["instrument_token"]))
        assert inst.tradingsymbol == row["tradingsymbol"]
        assert u.by_exchange_symbol(f"{row['exchange']}:{row['tradingsymbol']}") == inst
        assert u.inst_of_token(inst.instrument_token) == inst.inst
        assert u.by_inst(inst.inst) == inst
    tokens = np.array([int(r["instrument_token"]) for r in rows] + [7, 0], dtype=np.int64)
    got = u.insts_of_tokens(tokens)
    assert got[:-2].tolist() == [u.inst_of_token(int(t)) for t in tokens[:-2]]
    assert got[-2:].tolist() == [0, 0]
    with pytest.raises(InstrumentNotFoundError):
        u.by_token(7)
    with pytest.raises(InstrumentNotFoundError):
        u.lookup("NSE:NOPE")


def test_fixture_option_chain_banknifty() -> None:
    u, rows = _fixture_universe()
    chain = u.option_chain("BANKNIFTY", 23550 * FX, 2, as_of=dt.date(2018, 1, 1))
    assert chain.expiry == dt.date(2018, 1, 25)
    assert chain.strike_interval == 100 * FX
    assert chain.atm_strike == 23600 * FX  # 23550 is a tie: ties go up
    want = {
        (r["strike"], r["instrument_type"]): int(r["instrument_token"])
        for r in rows
        if r["tradingsymbol"].startswith("BANKNIFTY18JAN")
    }
    for r in chain.rows:
        strike = fixedpoint.format(r.strike) + ".0"
        assert (r.call.instrument_token if r.call else None) == want.get((strike, "CE"))
        assert (r.put.instrument_token if r.put else None) == want.get((strike, "PE"))
    assert [fixedpoint.format(r.strike) for r in chain.rows] == [
        "23400",
        "23500",
        "23600",
        "23700",
        "23800",
    ]
    assert chain.rows[-1].call is None and chain.rows[-1].put is None  # 23800 is not listed
    # November's expiry is the nearest on 2017-11-01.
    assert u.option_chain("BANKNIFTY", 23600 * FX, 0, as_of=dt.date(2017, 11, 1)).expiry == (
        dt.date(2017, 11, 30)
    )
    assert u.expiries("BANKNIFTY", dt.date(2017, 12, 1)) == [
        dt.date(2017, 12, 28),
        dt.date(2018, 1, 25),
    ]


def test_fixture_stock_chain_interval_inferred() -> None:
    u, _ = _fixture_universe()
    chain = u.option_chain("INDIACEM", 226 * FX, 1, as_of=dt.date(2017, 12, 1))
    assert chain.strike_interval == 5 * FX
    assert chain.atm_strike == 225 * FX
    assert [(r.call is not None, r.put is not None) for r in chain.rows] == [
        (False, True),  # 220: only the put is in the dump
        (True, True),
        (True, True),
    ]


def test_fixture_search_and_names() -> None:
    u, rows = _fixture_universe()
    found = u.search("banknifty18", limit=100)
    want = sorted(r["tradingsymbol"] for r in rows if r["tradingsymbol"].startswith("BANKNIFTY18"))
    assert [i.tradingsymbol for i in found] == want
    assert [i.tradingsymbol for i in u.search("banknifty18", limit=2)] == want[:2]
    assert u.search("ZZZ") == []
    assert {i.tradingsymbol for i in u.by_name("COX & KINGS")} == {"COX&KINGS"}


def test_infer_interval_prefers_the_grid_near_spot() -> None:
    strikes = np.array([100, 200, 300, 350, 400, 450, 500, 600, 700], dtype=np.int64) * FX
    assert infer_interval(strikes, 420 * FX) == 50 * FX
    with pytest.raises(InstrumentNotFoundError):
        infer_interval(strikes[:1], 0)


# ---------------------------------------------------------------------------
# generated universes vs a brute-force reference


def _ref_futures(rows: list[KiteRow], und: str, as_of: dt.date) -> list[int]:
    futs = [
        r
        for r in rows
        if r.instrument_type == "FUT" and r.name == und and r.expiry >= as_of  # type: ignore[operator]
    ]
    return [r.instrument_token for r in sorted(futs, key=lambda r: r.expiry)]  # type: ignore[arg-type, return-value]


def _ref_chain(
    rows: list[KiteRow], und: str, spot: Fraction, n: int, interval: Fraction, as_of: dt.date
) -> tuple[dt.date, Fraction, list[tuple[Fraction, int | None, int | None]]]:
    opts = [r for r in rows if r.instrument_type in ("CE", "PE") and r.name == und]
    expiry = min(r.expiry for r in opts if r.expiry >= as_of)  # type: ignore[operator, type-var]
    # ATM: the multiple of the interval nearest the spot, ties up.
    lower = (spot // interval) * interval
    atm = lower + interval if spot - lower >= interval / 2 else lower
    out = []
    for k in range(-n, n + 1):
        strike = atm + k * interval
        tok = {
            r.instrument_type: r.instrument_token
            for r in opts
            if r.expiry == expiry and Fraction(r.strike) == strike
        }
        out.append((strike, tok.get("CE"), tok.get("PE")))
    return expiry, atm, out  # type: ignore[return-value]


UNDERLYINGS = {"NIFTY": 50, "BANKNIFTY": 100, "FINNIFTY": 50, "MIDCPNIFTY": 25, "SENSEX": 100}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    day=st.dates(dt.date(2025, 1, 1), dt.date(2028, 12, 31)),
    seed=st.integers(0, 50),
    und=st.sampled_from(sorted(UNDERLYINGS)),
    offset=st.floats(-0.01, 0.01),
    n=st.integers(0, 4),
    later=st.integers(0, 40),
    explicit_interval=st.booleans(),
)
def test_generated_queries_match_brute_force(
    day: dt.date,
    seed: int,
    und: str,
    offset: float,
    n: int,
    later: int,
    explicit_interval: bool,
) -> None:
    rows = small_rows(day, seed, scale=0.05)
    u = Universe(table_of(rows))
    as_of = day + dt.timedelta(days=later)
    # spot
    exch, symbol, token = SPOTS.get(und, ("NSE", und, 0))
    spot = get_spot(u, und)
    assert (spot.exchange, spot.tradingsymbol) == (exch, symbol)
    assert spot.instrument_token == token
    # futures
    want_futs = _ref_futures(rows, und, as_of)
    got = [f.instrument_token for f in u.futures(und, as_of)]
    assert got == want_futs
    if len(want_futs) >= 2:
        assert get_current_month_futures(u, und, as_of).instrument_token == want_futs[0]
        assert get_next_month_futures(u, und, as_of).instrument_token == want_futs[1]
        assert get_subscription_tokens(u, und, as_of) == (token, want_futs[0], want_futs[1])
    # option chain around a spot near the listed futures price
    opt_expiries = [r.expiry for r in rows if r.name == und and r.instrument_type == "CE"]
    if not any(e >= as_of for e in opt_expiries):  # type: ignore[operator]
        with pytest.raises(InstrumentNotFoundError):
            u.option_chain(und, FX, 1, as_of=as_of)
        return
    fut_px = Fraction(
        next(r.last_price for r in rows if r.name == und and r.instrument_type == "FUT")
    )
    spot_px = (fut_px * Fraction(1 + offset)).limit_denominator(100)
    spot_fx = int(spot_px * FX)
    interval = Fraction(UNDERLYINGS[und])
    chain = get_atm_option_chain(
        u,
        und,
        spot_fx,
        n,
        strike_interval=int(interval * FX) if explicit_interval else None,
        as_of=as_of,
    )
    expiry, atm, ref = _ref_chain(rows, und, Fraction(spot_fx, FX), n, interval, as_of)
    assert chain.expiry == expiry
    assert chain.atm_strike == atm * FX
    assert chain.strike_interval == interval * FX
    got_rows = [
        (
            Fraction(r.strike, FX),
            r.call.instrument_token if r.call else None,
            r.put.instrument_token if r.put else None,
        )
        for r in chain.rows
    ]
    assert got_rows == ref


def test_generated_full_scale_counts_and_real_tokens() -> None:
    rows = generate_universe(dt.date(2026, 3, 2), scale=0.2)
    u = Universe(table_of(rows))
    for und, (exch, symbol, token) in SPOTS.items():
        spot = u.spot(und)
        assert (spot.exchange, spot.tradingsymbol, spot.instrument_token) == (exch, symbol, token)
        assert spot.segment == "INDICES" and spot.instrument_token & 0xFF == 9
    assert u.spot("INFY").instrument_token == 408065  # exchange token 1594 on NSE (segment 1)
    stats = u.stats()
    assert stats["instruments"] == len(rows)
    for segment in ("NSE", "BSE", "NFO-FUT", "NFO-OPT", "BFO-OPT", "MCX-FUT", "CDS-OPT"):
        assert stats["segments"][segment] > 0
    by_name = u.tokens_by_name("NIFTY")
    assert sorted(by_name) == sorted(r.instrument_token for r in rows if r.name == "NIFTY")
