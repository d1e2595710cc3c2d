"""Kite instruments CSV import: the recorded dump, date forms, gzip, errors naming the line."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import gzip
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.instruments.kite_csv import parse_date, parse_kite_csv, underlying_of
from connector.instruments.model import NO_DATE, InstrumentDataError, days_to_date
from connector.sim.kite_universe import KITE_CSV_COLUMNS, generate_universe, universe_csv
from pipeline import fixedpoint
from tests.conftest import shared_fixture

pytestmark = pytest.mark.unit

HEADER = ",".join(KITE_CSV_COLUMNS)


def _csv(*lines: str) -> bytes:
    return ("\n".join((HEADER, *lines)) + "\n").encode()


def test_recorded_dump_every_cell_round_trips() -> None:
    path = shared_fixture("kite/instruments_all.csv")
    raw = path.read_bytes()
    table = parse_kite_csv(raw)
    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    assert len(table) == len(rows) == 99
    for i, row in enumerate(rows):
        inst = table.row(i)
        assert inst.instrument_token == int(row["instrument_token"])
        assert inst.exchange_token == int(row["exchange_token"])
        assert inst.tradingsymbol == row["tradingsymbol"]
        assert inst.name == row["name"]
        assert inst.last_price == fixedpoint.parse(row["last_price"])
        assert inst.strike == fixedpoint.parse(row["strike"])
        assert inst.tick_size == fixedpoint.parse(row["tick_size"])
        assert inst.lot_size == int(row["lot_size"])
        assert (inst.expiry.isoformat() if inst.expiry else "") == row["expiry"]
        assert (inst.instrument_type, inst.segment, inst.exchange) == (
            row["instrument_type"],
            row["segment"],
            row["exchange"],
        )
        # The token layout the ticker relies on: exchange token << 8 | segment id.
        assert inst.instrument_token >> 8 == inst.exchange_token


def test_recorded_dump_underlying_from_symbol_when_name_is_empty() -> None:
    table = parse_kite_csv(shared_fixture("kite/instruments_all.csv").read_bytes())
    und = {table.row(i).tradingsymbol: table.row(i).underlying for i in range(len(table))}
    assert und["BANKNIFTY18JAN23500CE"] == "BANKNIFTY"
    assert und["ADANIPORTS17DEC490PE"] == "ADANIPORTS"
    assert und["INDIACEM17DEC225CE"] == "INDIACEM"
    assert und["CENTRALBK-BE"] == ""  # equities have no underlying


@pytest.mark.parametrize(
    ("symbol", "name", "kind", "expected"),
    [
        ("NIFTY24JANFUT", "", "FUT", "NIFTY"),
        ("NIFTY2411821500CE", "", "CE", "NIFTY"),
        ("NIFTY24D0521500PE", "", "PE", "NIFTY"),
        ("USDINR24JAN83.25CE", "", "CE", "USDINR"),
        ("M&M24FEBFUT", "", "FUT", "M&M"),
        ("WHATEVER", "BANKNIFTY", "CE", "BANKNIFTY"),
        ("INFY", "INFOSYS", "EQ", ""),
    ],
)
def test_underlying_of(symbol: str, name: str, kind: str, expected: str) -> None:
    assert underlying_of(symbol, name, kind) == expected


def test_dates_iso_and_spreadsheet_form() -> None:
    data = _csv(
        "1,0,A24JANFUT,A,1.5,2024-01-25,0.0,0.05,10,FUT,NFO-FUT,NFO",
        "2,0,B24JANFUT,B,1.5,25-01-2024,0.0,0.05,10,FUT,NFO-FUT,NFO",
        "3,0,C,C,0.0,,0.0,0.05,1,EQ,NSE,NSE",
    )
    table = parse_kite_csv(data)
    assert table.row(0).expiry == table.row(1).expiry == dt.date(2024, 1, 25)
    assert table.row(2).expiry is None


@pytest.mark.parametrize("bad", ["2024/01/25", "25-01-24", "2024-13-01", "31-02-2024", "soon"])
def test_bad_date_names_the_line(bad: str) -> None:
    data = _csv(
        "1,0,A,A,0.0,,0.0,0.05,1,EQ,NSE,NSE",
        "2,0,B,B,0.0,,0.0,0.05,1,EQ,NSE,NSE",
        f"3,0,C24JANFUT,C,1.0,{bad},0.0,0.05,10,FUT,NFO-FUT,NFO",
    )
    with pytest.raises(InstrumentDataError, match=r"line 4, column expiry") as info:
        parse_kite_csv(data)
    assert repr(bad) in str(info.value)


def test_bad_decimal_and_integer_name_the_line() -> None:
    with pytest.raises(InstrumentDataError, match=r"line 2, column strike"):
        parse_kite_csv(_csv("1,0,A,A,0.0,,1e5,0.05,1,EQ,NSE,NSE"))
    with pytest.raises(InstrumentDataError, match=r"line 3, column lot_size"):
        parse_kite_csv(_csv("1,0,A,A,0.0,,0.0,0.05,1,EQ,NSE,NSE", "2,0,B,B,0,,0,0.05,x,EQ,NSE,NSE"))
    with pytest.raises(InstrumentDataError, match=r"line 2: 3 cells, expected 12"):
        parse_kite_csv(_csv("1,2,3"))
    with pytest.raises(InstrumentDataError, match=r"missing column\(s\) exchange"):
        parse_kite_csv(HEADER.rsplit(",", 1)[0].encode() + b"\n")


def test_spreadsheet_integers_accepted_when_exact() -> None:
    table = parse_kite_csv(_csv("256265.0,1001,NIFTY 50,NIFTY 50,0,,0,0,0.0,EQ,INDICES,NSE"))
    assert table.row(0).instrument_token == 256265
    with pytest.raises(InstrumentDataError, match="line 2, column lot_size"):
        parse_kite_csv(_csv("1,0,A,A,0,,0,0.05,1.5,EQ,NSE,NSE"))


def test_gzip_and_plain_give_the_same_table() -> None:
    raw = universe_csv(generate_universe(dt.date(2026, 3, 2), scale=0.02))
    plain, zipped = parse_kite_csv(raw), parse_kite_csv(gzip.compress(raw))
    assert plain.identity_keys() == zipped.identity_keys()
    assert plain.row(len(plain) - 1) == zipped.row(len(zipped) - 1)
    with pytest.raises(InstrumentDataError, match="gzip"):
        parse_kite_csv(gzip.compress(raw)[:100])


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(
        st.dates(dt.date(1971, 1, 1), dt.date(2099, 12, 31)).map(lambda d: (d, d.isoformat())),
        st.dates(dt.date(1971, 1, 1), dt.date(2099, 12, 31)).map(
            lambda d: (d, d.strftime("%d-%m-%Y"))
        ),
    )
)
def test_parse_date_both_forms(case: tuple[dt.date, str]) -> None:
    day, text = case
    assert days_to_date(parse_date(text)) == day
    assert parse_date("") == NO_DATE


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(data: bytes) -> None:
    with contextlib.suppress(InstrumentDataError):
        parse_kite_csv(data)


@settings(max_examples=8, deadline=None)
@given(
    st.dates(dt.date(2024, 1, 1), dt.date(2030, 12, 31)),
    st.integers(0, 1000),
)
def test_generated_universe_round_trips_exactly(day: dt.date, seed: int) -> None:
    rows = generate_universe(day, seed=seed, scale=0.01)
    table = parse_kite_csv(universe_csv(rows))
    assert len(table) == len(rows)
    for i in range(0, len(rows), 7):
        got, want = table.row(i), rows[i]
        assert got.instrument_token == want.instrument_token
        assert got.tradingsymbol == want.tradingsymbol
        assert got.expiry == want.expiry
        assert got.strike == fixedpoint.parse(want.strike)
        assert got.last_price == fixedpoint.parse(want.last_price)
        assert got.tick_size == fixedpoint.parse(want.tick_size)


def test_duplicate_token_names_both_lines() -> None:
    data = _csv(
        "256265,1001,NIFTY 50,NIFTY 50,0.0,,0.0,0.0,0,EQ,INDICES,NSE",
        "408065,1594,INFY,INFOSYS,0.0,,0.0,0.05,1,EQ,NSE,NSE",
        "256265,1001,NIFTY 50X,NIFTY 50,0.0,,0.0,0.0,0,EQ,INDICES,NSE",
    )
    with pytest.raises(
        InstrumentDataError, match=r"line 4, column instrument_token: 256265 is already on line 2"
    ):
        parse_kite_csv(data)
