"""Subscriptions by query: spec parsing and resolution against a generated universe,
checked against expectations computed from the generator's rows directly."""

from __future__ import annotations

import datetime as dt

import pytest

from connector.instruments.subscribe import (
    SubscriptionError,
    SubscriptionSpec,
    resolve,
)
from connector.instruments.universe import Universe
from pipeline import fixedpoint
from pipeline.errors import ConfigError
from tests.connector.instruments.loopback import expected_tokens
from tests.connector.instruments.support import DAY, small_rows, table_of

pytestmark = pytest.mark.unit

ROWS = small_rows()


@pytest.fixture(scope="module")
def universe() -> Universe:
    return Universe(table_of(ROWS))


def test_nifty_spot_futures_and_chain_are_exactly_what_the_rows_say(universe: Universe) -> None:
    spec = SubscriptionSpec("NIFTY", spot=True, futures=2, chain_range=5)
    got = resolve(universe, [spec], DAY)
    spot, futs, chain, atm = expected_tokens(ROWS, DAY, "NIFTY", "NIFTY 50", 2, 5, 50)
    (r,) = got.underlyings
    assert r.spot is not None and r.spot.instrument_token == spot
    assert [f.instrument_token for f in r.futures] == futs
    assert len(futs) == 2 and futs[0] != futs[1]
    assert fixedpoint.format(r.chains[0].atm_strike) == str(atm)
    chain_tokens = sorted(t for t in got.token_inst if t not in (spot, *futs))
    assert chain_tokens == chain and chain
    assert set(got.token_inst) == {spot, *futs, *chain}
    # ids are the universe's dense ids, names what readers look up
    for token, inst in got.token_inst.items():
        assert universe.inst_of_token(token) == inst
        assert got.names[inst] == universe.by_token(token).exchange_symbol
    assert "NIFTY -> " in r.summary() and "ATM" in r.summary()


def test_modes_dedup_and_extra_tokens(universe: Universe) -> None:
    specs = [
        SubscriptionSpec("NIFTY", futures=1, mode="quote"),
        SubscriptionSpec("NIFTY", spot=True, futures=2, mode="ltp"),
    ]
    infy = next(r for r in ROWS if r.segment == "NSE" and r.instrument_type == "EQ")
    got = resolve(universe, specs, DAY, extra_tokens=[infy.instrument_token])
    first = got.underlyings[0].futures[0].instrument_token
    second = got.underlyings[1].futures[1].instrument_token
    assert got.modes[first] == "quote"  # the first entry that names it wins
    assert got.modes[second] == "ltp"
    assert infy.instrument_token in got.token_inst and infy.instrument_token not in got.modes
    assert len(got.token_inst) == 4  # spot, 2 futures, the equity: each once


def test_a_given_price_moves_the_atm(universe: Universe) -> None:
    spot = universe.spot("NIFTY")
    high = spot.last_price + fixedpoint.parse("500")
    got = resolve(
        universe,
        [SubscriptionSpec("NIFTY", spot=False, chain_range=0)],
        DAY,
        prices={spot.instrument_token: high},
    )
    chain = got.underlyings[0].chains[0]
    assert chain.atm_strike == (high + chain.strike_interval // 2) // chain.strike_interval * (
        chain.strike_interval
    )
    assert len(chain.rows) == 1


def test_more_expiries(universe: Universe) -> None:
    got = resolve(universe, [SubscriptionSpec("NIFTY", spot=False, chain_range=1, expiries=2)], DAY)
    expiries = [c.expiry for c in got.underlyings[0].chains]
    assert len(expiries) == 2 and expiries[0] < expiries[1]
    assert expiries == universe.expiries("NIFTY", DAY)[:2]


def test_unknown_underlying_and_too_many_futures_say_what(universe: Universe) -> None:
    with pytest.raises(SubscriptionError, match="NOSUCH"):
        resolve(universe, [SubscriptionSpec("NOSUCH", futures=1)], DAY)
    with pytest.raises(SubscriptionError, match="9 futures asked"):
        resolve(universe, [SubscriptionSpec("NIFTY", futures=9)], DAY)
    with pytest.raises(SubscriptionError, match="token 7 is not in the stored"):
        resolve(universe, [SubscriptionSpec("NIFTY")], DAY, extra_tokens=[7])
    late = DAY + dt.timedelta(days=4000)
    with pytest.raises(SubscriptionError, match="NIFTY"):
        resolve(universe, [SubscriptionSpec("NIFTY", spot=False, futures=1)], late)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"spot": True}, "underlying is required"),
        ({"underlying": "NIFTY", "strikes": 3}, "unknown key 'strikes'"),
        ({"underlying": "NIFTY", "futures": True}, "futures has the wrong type"),
        ({"underlying": "NIFTY", "spot": 1}, "spot has the wrong type"),
        ({"underlying": "NIFTY", "futures": -1}, "futures must be >= 0"),
        ({"underlying": "NIFTY", "spot": False}, "asks for nothing"),
        ({"underlying": "NIFTY", "chain_range": 2, "expiries": 0}, "expiries must be >= 1"),
        ("NIFTY", "must be a table"),
    ],
)
def test_spec_errors_name_the_entry_and_key(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        SubscriptionSpec.from_params(raw, "feeds.z.params.subscribe[0]")
    assert "subscribe[0]" in str(info.value)


def test_spec_from_params() -> None:
    spec = SubscriptionSpec.from_params(
        {"underlying": "BANKNIFTY", "futures": 2, "chain_range": 3, "mode": "quote"}, "x"
    )
    assert spec == SubscriptionSpec("BANKNIFTY", True, 2, 3, 1, None, "quote")
