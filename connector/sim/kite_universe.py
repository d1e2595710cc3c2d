"""A deterministic, realistic Kite Connect instruments universe (``GET /instruments``).

:func:`generate_universe` builds about 91K rows for a trading date the way the
real dump looks: NSE and BSE equities, the NSE/BSE indices (real names and
tokens: NIFTY 50 = 256265, NIFTY BANK = 260105, ...), NFO index and stock
futures (3 monthly expiries), NFO/BFO weekly and monthly options around spot
with the real strike intervals, MCX commodity futures and options, CDS
currency futures and options. :func:`universe_csv` writes them in the exact
CSV form Kite serves (``0.0`` for an unset price or strike, empty expiry).

Token layout as the Kite ticker reads it: ``instrument_token =
exchange_token << 8 | segment id`` with the segment ids of pykiteconnect's
``KiteTicker.EXCHANGE_MAP`` (nse 1, nfo 2, cds 3, bse 4, bfo 5, bcd 6, mcx 7,
mcxsx 8, indices 9).

Expiry rules (consistent, holidays ignored): NFO contracts expire on
Tuesdays (monthly: the last Tuesday of the month; NIFTY also weekly every
Tuesday); BFO on Thursdays (SENSEX weekly, monthly on the last Thursday);
CDS futures two weekdays before the last weekday of the month, USDINR weekly
options on Fridays; MCX on a fixed day of the month per commodity, moved back
to a weekday. The same ``(as_of, seed, scale)`` always gives the same rows.
"""

from __future__ import annotations

import calendar
import csv
import datetime as dt
import io
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from connector.instruments.kite_csv import COLUMNS

KITE_CSV_COLUMNS: Final = COLUMNS

SEGMENT_IDS: Final = {
    "NSE": 1,
    "NFO": 2,
    "CDS": 3,
    "BSE": 4,
    "BFO": 5,
    "BCD": 6,
    "MCX": 7,
    "MCXSX": 8,
    "INDICES": 9,
}
"""Low byte of ``instrument_token`` per segment (pykiteconnect ``EXCHANGE_MAP``)."""

_SCALE = 100_000_000  # fixed point used internally: prices are exact ints


@dataclass(frozen=True, slots=True)
class KiteRow:
    """One row of the Kite instruments CSV, column for column.

    Decimal columns (``last_price``, ``strike``, ``tick_size``) are the exact
    strings the CSV carries (``"22500.0"``, ``"0.05"``), so nothing is rounded;
    ``expiry`` is ``None`` where the CSV cell is empty.
    """

    instrument_token: int
    exchange_token: int
    tradingsymbol: str
    name: str
    last_price: str
    expiry: dt.date | None
    strike: str
    tick_size: str
    lot_size: int
    instrument_type: str
    segment: str
    exchange: str

    def csv_cells(self) -> list[str]:
        """The row as CSV cells, in :data:`KITE_CSV_COLUMNS` order."""
        return [
            str(self.instrument_token),
            str(self.exchange_token),
            self.tradingsymbol,
            self.name,
            self.last_price,
            "" if self.expiry is None else self.expiry.isoformat(),
            self.strike,
            self.tick_size,
            str(self.lot_size),
            self.instrument_type,
            self.segment,
            self.exchange,
        ]


def universe_csv(rows: list[KiteRow]) -> bytes:
    """The rows as Kite serves them: header line, then one line per row, ``\\n`` endings."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(KITE_CSV_COLUMNS)
    writer.writerows(row.csv_cells() for row in rows)
    return out.getvalue().encode()


def instrument_token(exchange_token: int, segment_id: int) -> int:
    """The ticker token of an exchange token in a segment."""
    return exchange_token << 8 | segment_id


# ---------------------------------------------------------------------------
# decimals


def _fmt(value: int) -> str:
    """Fixed point -> the CSV's decimal form: at least one fractional digit (``22500.0``)."""
    whole, frac = divmod(value, _SCALE)
    if frac == 0:
        return f"{whole}.0"
    return f"{whole}.{frac:08d}".rstrip("0")


def _fx(text: str) -> int:
    """Decimal literal -> fixed point (for the constants below)."""
    whole, _, frac = text.partition(".")
    return int(whole) * _SCALE + int((frac or "0").ljust(8, "0"))


def _round_to(value: float, tick: int) -> int:
    """A float price snapped to a multiple of ``tick`` (fixed point), at least one tick."""
    return max(tick, round(value * _SCALE / tick) * tick)


def _strike_text(strike: int) -> str:
    """Strike as it appears inside a trading symbol (``21500``, ``83.25``)."""
    whole, frac = divmod(strike, _SCALE)
    return str(whole) if frac == 0 else f"{whole}.{frac:08d}".rstrip("0")


# ---------------------------------------------------------------------------
# expiry calendars

_MONTHS: Final = (
    "JAN",
    "FEB",
    "MAR",
    "APR",
    "MAY",
    "JUN",
    "JUL",
    "AUG",
    "SEP",
    "OCT",
    "NOV",
    "DEC",
)
_WEEKLY_MONTH: Final = "123456789OND"
TUESDAY: Final = 1
THURSDAY: Final = 3
FRIDAY: Final = 4


def last_weekday_of_month(year: int, month: int, weekday: int) -> dt.date:
    """The last ``weekday`` (Monday 0) of a month."""
    last = dt.date(year, month, calendar.monthrange(year, month)[1])
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def _add_months(year: int, month: int, n: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + n
    return index // 12, index % 12 + 1


def monthly_expiries(as_of: dt.date, weekday: int, count: int) -> list[dt.date]:
    """The next ``count`` monthly expiries (last ``weekday`` of the month) on or after ``as_of``."""
    out: list[dt.date] = []
    year, month = as_of.year, as_of.month
    while len(out) < count:
        day = last_weekday_of_month(year, month, weekday)
        if day >= as_of:
            out.append(day)
        year, month = _add_months(year, month, 1)
    return out


def weekly_expiries(as_of: dt.date, weekday: int, count: int) -> list[dt.date]:
    """The next ``count`` ``weekday``s on or after ``as_of``."""
    first = as_of + dt.timedelta(days=(weekday - as_of.weekday()) % 7)
    return [first + dt.timedelta(weeks=i) for i in range(count)]


def _weekday_on_or_before(day: dt.date) -> dt.date:
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def _is_monthly(day: dt.date, weekday: int) -> bool:
    return day == last_weekday_of_month(day.year, day.month, weekday)


def _monthly_code(day: dt.date) -> str:
    return f"{day.year % 100:02d}{_MONTHS[day.month - 1]}"


def _weekly_code(day: dt.date) -> str:
    return f"{day.year % 100:02d}{_WEEKLY_MONTH[day.month - 1]}{day.day:02d}"


# ---------------------------------------------------------------------------
# reference data

# (tradingsymbol, name, NSE exchange token or 0, approx price, BSE scrip code or 0)
_REAL_STOCKS: Final = (
    ("RELIANCE", "RELIANCE INDUSTRIES", 2885, 1290.0, 500325),
    ("INFY", "INFOSYS", 1594, 1570.0, 500209),
    ("TCS", "TATA CONSULTANCY SERV LT", 11536, 3450.0, 532540),
    ("HDFCBANK", "HDFC BANK", 1333, 1720.0, 500180),
    ("ICICIBANK", "ICICI BANK", 4963, 1280.0, 532174),
    ("SBIN", "STATE BANK OF INDIA", 3045, 810.0, 500112),
    ("ITC", "ITC", 1660, 470.0, 500875),
    ("LT", "LARSEN & TOUBRO", 11483, 3600.0, 500510),
    ("AXISBANK", "AXIS BANK", 5900, 1150.0, 532215),
    ("KOTAKBANK", "KOTAK MAHINDRA BANK", 1922, 1760.0, 500247),
    ("BHARTIARTL", "BHARTI AIRTEL", 10604, 1600.0, 532454),
    ("HINDUNILVR", "HINDUSTAN UNILEVER", 1394, 2400.0, 500696),
    ("BAJFINANCE", "BAJAJ FINANCE", 317, 6900.0, 500034),
    ("MARUTI", "MARUTI SUZUKI INDIA", 10999, 11000.0, 532500),
    ("ASIANPAINT", "ASIAN PAINTS", 236, 2450.0, 500820),
    ("TITAN", "TITAN COMPANY", 3506, 3300.0, 500114),
    ("SUNPHARMA", "SUN PHARMACEUTICAL IND L", 3351, 1800.0, 524715),
    ("WIPRO", "WIPRO", 3787, 290.0, 507685),
    ("HCLTECH", "HCL TECHNOLOGIES", 7229, 1850.0, 532281),
    ("ULTRACEMCO", "ULTRATECH CEMENT", 11532, 11200.0, 532538),
    ("NTPC", "NTPC", 11630, 360.0, 532555),
    ("POWERGRID", "POWER GRID CORP. LTD.", 14977, 320.0, 532898),
    ("ONGC", "OIL AND NATURAL GAS CORP.", 2475, 260.0, 500312),
    ("TATASTEEL", "TATA STEEL", 3499, 145.0, 500470),
    ("JSWSTEEL", "JSW STEEL", 11723, 950.0, 500228),
    ("ADANIPORTS", "ADANI PORTS AND SEZ", 15083, 1200.0, 532921),
    ("ADANIENT", "ADANI ENTERPRISES", 25, 2400.0, 512599),
    ("COALINDIA", "COAL INDIA", 20374, 400.0, 533278),
    ("BAJAJFINSV", "BAJAJ FINSERV", 16675, 1650.0, 532978),
    ("M&M", "MAHINDRA & MAHINDRA", 2031, 2900.0, 500520),
    ("TECHM", "TECH MAHINDRA", 13538, 1650.0, 532755),
    ("NESTLEIND", "NESTLE INDIA", 17963, 2250.0, 500790),
    ("GRASIM", "GRASIM INDUSTRIES", 1232, 2600.0, 500300),
    ("CIPLA", "CIPLA", 694, 1500.0, 500087),
    ("DRREDDY", "DR. REDDY S LABORATORIES", 881, 1250.0, 500124),
    ("EICHERMOT", "EICHER MOTORS", 910, 4800.0, 505200),
    ("HEROMOTOCO", "HERO MOTOCORP", 1348, 4500.0, 500182),
    ("BRITANNIA", "BRITANNIA INDUSTRIES", 547, 4900.0, 500825),
    ("DIVISLAB", "DIVI S LABORATORIES", 10940, 5900.0, 532488),
    ("APOLLOHOSP", "APOLLO HOSPITALS ENTER. L", 157, 7000.0, 508869),
    ("TATACONSUM", "TATA CONSUMER PRODUCT LTD", 3432, 1000.0, 500800),
    ("HINDALCO", "HINDALCO  INDUSTRIES", 1363, 650.0, 500440),
    ("INDUSINDBK", "INDUSIND BANK", 5258, 980.0, 532187),
    ("BPCL", "BHARAT PETROLEUM CORP  LT", 526, 290.0, 500547),
    ("SBILIFE", "SBI LIFE INSURANCE CO LTD", 21808, 1450.0, 540719),
    ("HDFCLIFE", "HDFC LIFE INS CO LTD", 467, 640.0, 540777),
    ("SHRIRAMFIN", "SHRIRAM FINANCE LIMITED", 4306, 2900.0, 511218),
    ("TRENT", "TRENT", 1964, 6500.0, 500251),
    ("BEL", "BHARAT ELECTRONICS", 383, 290.0, 500049),
    ("HAL", "HINDUSTAN AERONAUTICS LTD", 2303, 4300.0, 541154),
    ("DLF", "DLF", 14732, 820.0, 532868),
    ("VEDL", "VEDANTA", 3063, 450.0, 500295),
    ("IRCTC", "INDIAN RAIL TOUR CORP LTD", 13611, 800.0, 542830),
    ("ZOMATO", "ZOMATO", 5097, 260.0, 543320),
    ("PNB", "PUNJAB NATIONAL BANK", 10666, 100.0, 532461),
    ("BANKBARODA", "BANK OF BARODA", 4668, 240.0, 532134),
    ("CANBK", "CANARA BANK", 10794, 100.0, 532483),
    ("IDEA", "VODAFONE IDEA LIMITED", 14366, 8.0, 532822),
    ("YESBANK", "YES BANK", 11915, 20.0, 532648),
    ("SUZLON", "SUZLON ENERGY", 12018, 60.0, 532667),
    ("IEX", "INDIAN ENERGY EXC LTD", 220, 180.0, 540750),
    ("CDSL", "CENTRAL DEPO SER (I) LTD", 21174, 1500.0, 0),
    ("BSE", "BSE", 19585, 5200.0, 0),
    ("MCX", "MULTI COMMODITY EXCHANGE", 31181, 6000.0, 534091),
    ("JSWENERGY", "JSW ENERGY", 17869, 620.0, 533148),
    ("TATAPOWER", "TATA POWER CO", 3426, 420.0, 500400),
    ("INDHOTEL", "THE INDIAN HOTELS CO", 1512, 780.0, 500850),
    ("POLYCAB", "POLYCAB INDIA LIMITED", 9590, 6500.0, 542652),
    ("VOLTAS", "VOLTAS", 3718, 1600.0, 500575),
    ("PAGEIND", "PAGE INDUSTRIES", 14413, 45000.0, 532827),
)

# NSE indices with their real exchange tokens (token = exch << 8 | 9).
_NSE_INDICES: Final = (
    ("NIFTY 50", 1001),
    ("NIFTY BANK", 1016),
    ("NIFTY FIN SERVICE", 1007),
    ("NIFTY MID SELECT", 1125),
    ("INDIA VIX", 1035),
    ("NIFTY NEXT 50", 1002),
    ("NIFTY 100", 1012),
    ("NIFTY 200", 1013),
    ("NIFTY 500", 1015),
    ("NIFTY MIDCAP 100", 1011),
    ("NIFTY SMLCAP 100", 1014),
    ("NIFTY IT", 1019),
    ("NIFTY AUTO", 1033),
    ("NIFTY PHARMA", 1024),
    ("NIFTY FMCG", 1021),
    ("NIFTY METAL", 1030),
    ("NIFTY ENERGY", 1020),
    ("NIFTY REALTY", 1031),
    ("NIFTY PSU BANK", 1026),
    ("NIFTY PVT BANK", 1064),
    ("NIFTY INFRA", 1023),
    ("NIFTY MEDIA", 1032),
    ("NIFTY CPSE", 1036),
    ("NIFTY COMMODITIES", 1042),
    ("NIFTY CONSUMPTION", 1043),
    ("NIFTY MIDCAP 50", 1010),
)
_BSE_INDICES: Final = (
    ("SENSEX", 1),
    ("BANKEX", 12),
    ("SENSEX50", 47),
    ("BSE100", 3),
    ("BSE200", 4),
    ("BSE500", 5),
    ("BSEIT", 8),
    ("BSEFMC", 13),
    ("AUTO", 10),
    ("METAL", 15),
)

# underlying: (spot index name, index exchange, derivative exchange, approx spot,
#   strike interval, lot size, weekly options?, strikes per expiry)
_INDEX_DERIVATIVES: Final = (
    ("NIFTY", "NIFTY 50", "NSE", "NFO", 24350.0, 50, 75, True, 160),
    ("BANKNIFTY", "NIFTY BANK", "NSE", "NFO", 52400.0, 100, 35, False, 140),
    ("FINNIFTY", "NIFTY FIN SERVICE", "NSE", "NFO", 24100.0, 50, 65, False, 120),
    ("MIDCPNIFTY", "NIFTY MID SELECT", "NSE", "NFO", 12600.0, 25, 140, False, 120),
    ("SENSEX", "SENSEX", "BSE", "BFO", 80200.0, 100, 20, True, 160),
    ("BANKEX", "BANKEX", "BSE", "BFO", 59800.0, 100, 30, False, 120),
)

# MCX: symbol, name, lot, tick, price, strike interval, expiry day, every n months, options?
_MCX: Final = (
    ("CRUDEOIL", 100, "1.0", 6200.0, 50, 19, 1, True),
    ("CRUDEOILM", 10, "1.0", 6200.0, 0, 19, 1, False),
    ("NATURALGAS", 1250, "0.1", 290.0, 5, 26, 1, True),
    ("NATGASMINI", 250, "0.1", 290.0, 0, 26, 1, False),
    ("GOLD", 1, "1.0", 76500.0, 100, 5, 2, True),
    ("GOLDM", 10, "1.0", 76500.0, 0, 5, 1, False),
    ("GOLDGUINEA", 1, "1.0", 61500.0, 0, 28, 1, False),
    ("GOLDPETAL", 1, "1.0", 7650.0, 0, 28, 1, False),
    ("SILVER", 30, "1.0", 91000.0, 250, 5, 2, True),
    ("SILVERM", 5, "1.0", 91000.0, 0, 28, 2, False),
    ("SILVERMIC", 1, "1.0", 91000.0, 0, 28, 2, False),
    ("COPPER", 2500, "0.05", 810.0, 5, 28, 1, True),
    ("ZINC", 5000, "0.05", 275.0, 2.5, 28, 1, True),
    ("ALUMINIUM", 5000, "0.05", 240.0, 0, 28, 1, False),
    ("LEAD", 5000, "0.05", 180.0, 0, 28, 1, False),
    ("NICKEL", 1500, "0.1", 1400.0, 0, 28, 1, False),
    ("MENTHAOIL", 360, "0.1", 950.0, 0, 28, 1, False),
    ("COTTONCNDY", 48, "10.0", 56000.0, 0, 28, 1, False),
)

# CDS pairs: symbol, price, strike interval, options strikes per expiry, weekly options?
_CDS: Final = (
    ("USDINR", "84.3", "0.25", 60, True),
    ("EURINR", "89.1", "0.25", 30, False),
    ("GBPINR", "106.8", "0.25", 30, False),
    ("JPYINR", "55.6", "0.25", 30, False),
)

_SYLLABLES: Final = (
    "AR", "BA", "CHA", "DA", "DE", "GA", "HI", "IN", "JA", "KA", "KO", "LA", "MA", "ME", "NA",
    "NI", "PA", "PRA", "RA", "RE", "SA", "SHI", "SU", "TA", "TRI", "VA", "VI", "YA", "ZE", "GO",
)  # fmt: skip
_NAME_TAILS: Final = (
    "INDUSTRIES", "FINANCE", "PHARMA", "TEXTILES", "INFRA", "CHEMICALS", "POWER", "STEEL",
    "FOODS", "AUTO", "CEMENT", "TECH", "AGRO", "ENTERPRISES", "PAPERS", "SUGAR", "MOTORS",
)  # fmt: skip
_SUFFIXES: Final = ("IND", "LTD", "FIN", "TECH", "CORP", "")


@dataclass
class _Stock:
    symbol: str
    name: str
    price: float
    nse_token: int
    bse_token: int
    fno: bool


class _Tokens:
    """Unique exchange tokens per segment, from a range, with random gaps (like the real dump)."""

    def __init__(self, rng: random.Random, start: int, reserved: set[int] | None = None) -> None:
        self._rng = rng
        self._next = start
        self._used = set(reserved or ())

    def take(self) -> int:
        self._next += 1 + (self._rng.random() < 0.2) * self._rng.randint(1, 20)
        while self._next in self._used:
            self._next += 1
        self._used.add(self._next)
        return self._next


class _ContractTokens:
    """Exchange tokens for derivative contracts, from a hash of the trading symbol.

    A contract keeps its token from one day's universe to the next (as on the
    real exchange) unless a hash collision with another listed contract pushed
    it along; the range is wide enough for that to be rare.
    """

    def __init__(self, base: int, span: int) -> None:
        self._base = base
        self._span = span
        self._used: set[int] = set()

    def take(self, symbol: str) -> int:
        slot = zlib.crc32(symbol.encode()) % self._span
        while self._base + slot in self._used:
            slot = (slot + 1) % self._span
        self._used.add(self._base + slot)
        return self._base + slot


def _stock_strike_interval(price: float) -> float:
    """Strike interval of NSE stock options by price band (roughly the NSE grid)."""
    for limit, step in (
        (50, 1.0),
        (100, 2.5),
        (250, 5.0),
        (500, 10.0),
        (1000, 20.0),
        (2500, 50.0),
        (5000, 100.0),
        (10000, 250.0),
    ):
        if price < limit:
            return step
    return 500.0


def _synthetic_symbol(rng: random.Random, taken: set[str]) -> str:
    while True:
        sym = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        sym = (sym + rng.choice(_SUFFIXES))[:10]
        if sym not in taken and not sym[-1].isdigit():
            taken.add(sym)
            return sym


def _stocks(rng: random.Random, n_equities: int, n_fno: int) -> list[_Stock]:
    taken = {s[0] for s in _REAL_STOCKS} | {u[0] for u in _INDEX_DERIVATIVES}
    taken |= {m[0] for m in _MCX} | {c[0] for c in _CDS}
    nse_tokens = _Tokens(rng, 100, {s[2] for s in _REAL_STOCKS})
    bse_tokens = _Tokens(rng, 500000, {s[4] for s in _REAL_STOCKS})
    out: list[_Stock] = []
    n_real = min(len(_REAL_STOCKS), n_equities)
    for i, (sym, name, token, price, code) in enumerate(_REAL_STOCKS[:n_real]):
        out.append(_Stock(sym, name, price, token, code or bse_tokens.take(), i < n_fno))
    while len(out) < n_equities:
        sym = _synthetic_symbol(rng, taken)
        name = f"{sym.rstrip('IND').rstrip('LTD') or sym} {rng.choice(_NAME_TAILS)}"
        price = round(10 ** rng.uniform(0.8, 4.2), 2)
        out.append(_Stock(sym, name, price, nse_tokens.take(), bse_tokens.take(), False))
    # F&O eligibility: the real large caps first, then a sample of mid-priced synthetic ones.
    need = max(0, n_fno - sum(s.fno for s in out))
    candidates = [s for s in out[n_real:] if 50 <= s.price <= 8000]
    for s in rng.sample(candidates, min(need, len(candidates))):
        s.fno = True
    return out


# ---------------------------------------------------------------------------
# the generator


def _option_price(spot: float, strike: float, kind: str, days: int) -> float:
    """A plausible premium (intrinsic + a time value that decays away from the money)."""
    intrinsic = max(0.0, spot - strike) if kind == "CE" else max(0.0, strike - spot)
    width = spot * 0.012 * max(1.0, days) ** 0.5
    time_value = spot * 0.004 * max(1.0, days) ** 0.5 / (1.0 + ((strike - spot) / width) ** 2)
    return float(intrinsic + time_value)


def generate_universe(as_of: dt.date, seed: int = 0, scale: float = 1.0) -> list[KiteRow]:
    """A deterministic instruments universe (~91K rows at ``scale=1``) as listed on ``as_of``.

    ``scale`` shrinks the number of equities, F&O stocks and strikes per
    expiry (for fast tests); the indices, index derivatives' expiries and
    every segment are always present. The same arguments give the same rows.
    """
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    rng = random.Random(f"{as_of.isoformat()}:{seed}")
    # Prices drift with the date but not with the seed's reshuffles of names.
    drift = random.Random(f"drift:{as_of.toordinal() // 7}:{seed}").uniform(0.93, 1.07)

    def scaled(n: int, minimum: int) -> int:
        return max(minimum, round(n * scale))

    rows: list[KiteRow] = []
    rows.extend(_indices_rows())
    # Listed companies depend on the seed only, so day-to-day universes differ
    # the way real ones do: by expiries, strikes and prices.
    stock_rng = random.Random(f"stocks:{seed}")
    stocks = _stocks(stock_rng, scaled(2600, 4), scaled(185, 2))
    rows.extend(_equity_rows(stock_rng, stocks, scaled(4200, 2)))
    nfo = _ContractTokens(35000, 4_000_000)
    bfo = _ContractTokens(800000, 1_000_000)
    rows.extend(_index_derivative_rows(rng, as_of, drift, nfo, bfo, scale))
    rows.extend(_stock_derivative_rows(rng, as_of, stocks, nfo, scale))
    rows.extend(_mcx_rows(rng, as_of, drift, scale))
    rows.extend(_cds_rows(rng, as_of, scale))
    return rows


def _indices_rows() -> Iterator[KiteRow]:
    seg = SEGMENT_IDS["INDICES"]
    for exchange, table in (("NSE", _NSE_INDICES), ("BSE", _BSE_INDICES)):
        for name, token in table:
            yield KiteRow(
                instrument_token(token, seg),
                token,
                name,
                name,
                "0.0",
                None,
                "0.0",
                "0.0",
                0,
                "EQ",
                "INDICES",
                exchange,
            )


def _equity_rows(rng: random.Random, stocks: list[_Stock], n_bse_only: int) -> Iterator[KiteRow]:
    nse, bse = SEGMENT_IDS["NSE"], SEGMENT_IDS["BSE"]
    for s in stocks:
        tick = "0.05" if s.price >= 20 else "0.01"
        yield KiteRow(
            instrument_token(s.nse_token, nse),
            s.nse_token,
            s.symbol,
            s.name,
            "0.0",
            None,
            "0.0",
            tick,
            1,
            "EQ",
            "NSE",
            "NSE",
        )
    # About 70% of NSE names also trade on BSE, plus BSE-only scrips.
    taken = {s.symbol for s in stocks}
    codes = _Tokens(rng, 590000)
    always = {r[0] for r in _REAL_STOCKS[:5]}
    for s in stocks:
        if rng.random() < 0.7 or s.symbol in always:
            yield KiteRow(
                instrument_token(s.bse_token, bse),
                s.bse_token,
                s.symbol,
                s.name,
                "0.0",
                None,
                "0.0",
                "0.05" if s.price >= 20 else "0.01",
                1,
                "EQ",
                "BSE",
                "BSE",
            )
    for _ in range(n_bse_only):
        sym = _synthetic_symbol(rng, taken)
        code = codes.take()
        yield KiteRow(
            instrument_token(code, bse),
            code,
            sym,
            f"{sym} {rng.choice(_NAME_TAILS)}",
            "0.0",
            None,
            "0.0",
            rng.choice(("0.01", "0.05")),
            1,
            "EQ",
            "BSE",
            "BSE",
        )


def _future_row(
    tokens: _ContractTokens,
    seg_name: str,
    symbol_code: str,
    name: str,
    expiry: dt.date,
    price: int,
    tick: str,
    lot: int,
) -> KiteRow:
    symbol = f"{name}{symbol_code}FUT"
    token = tokens.take(symbol)
    return KiteRow(
        instrument_token(token, SEGMENT_IDS[seg_name]),
        token,
        symbol,
        name,
        _fmt(price),
        expiry,
        "0.0",
        tick,
        lot,
        "FUT",
        f"{seg_name}-FUT",
        seg_name,
    )


def _option_rows(
    tokens: _ContractTokens,
    seg_name: str,
    name: str,
    expiry_code: str,
    expiry: dt.date,
    as_of: dt.date,
    spot: float,
    interval: int,
    n_strikes: int,
    tick: str,
    lot: int,
) -> Iterator[KiteRow]:
    atm = round(spot * _SCALE / interval) * interval
    tick_fx = _fx(tick)
    days = (expiry - as_of).days
    half = n_strikes // 2
    for k in range(-half, n_strikes - half):
        strike = atm + k * interval
        if strike <= 0:
            continue
        for kind in ("CE", "PE"):
            symbol = f"{name}{expiry_code}{_strike_text(strike)}{kind}"
            token = tokens.take(symbol)
            premium = _option_price(spot, strike / _SCALE, kind, days)
            yield KiteRow(
                instrument_token(token, SEGMENT_IDS[seg_name]),
                token,
                symbol,
                name,
                _fmt(_round_to(premium, tick_fx)),
                expiry,
                _fmt(strike),
                tick,
                lot,
                kind,
                f"{seg_name}-OPT",
                seg_name,
            )


def _index_derivative_rows(
    rng: random.Random,
    as_of: dt.date,
    drift: float,
    nfo: _ContractTokens,
    bfo: _ContractTokens,
    scale: float,
) -> Iterator[KiteRow]:
    for (
        name,
        _spot_name,
        _idx_exch,
        exch,
        base,
        interval,
        lot,
        weekly,
        strikes,
    ) in _INDEX_DERIVATIVES:
        tokens = nfo if exch == "NFO" else bfo
        weekday = TUESDAY if exch == "NFO" else THURSDAY
        spot = base * drift * rng.uniform(0.995, 1.005)
        months = monthly_expiries(as_of, weekday, 3)
        for i, expiry in enumerate(months):
            price = _round_to(spot * (1 + 0.004 * (i + 1)), _fx("0.05"))
            yield _future_row(tokens, exch, _monthly_code(expiry), name, expiry, price, "0.05", lot)
        option_expiries = set(months)
        if weekly:
            option_expiries |= set(weekly_expiries(as_of, weekday, 4))
        n = max(4, round(strikes * scale))
        for expiry in sorted(option_expiries):
            code = _monthly_code(expiry) if _is_monthly(expiry, weekday) else _weekly_code(expiry)
            far = expiry > months[0]
            yield from _option_rows(
                tokens,
                exch,
                name,
                code,
                expiry,
                as_of,
                spot,
                interval * _SCALE,
                n + (n // 4 if far else 0),
                "0.05",
                lot,
            )


def _stock_derivative_rows(
    rng: random.Random, as_of: dt.date, stocks: list[_Stock], nfo: _ContractTokens, scale: float
) -> Iterator[KiteRow]:
    months = monthly_expiries(as_of, TUESDAY, 3)
    per_month = (max(4, round(80 * scale)), max(4, round(70 * scale)), max(4, round(60 * scale)))
    for s in stocks:
        if not s.fno:
            continue
        lot = max(1, round(700_000 / s.price / 25) * 25) if s.price < 28000 else 15
        spot = s.price * rng.uniform(0.97, 1.03)
        interval = _fx(str(_stock_strike_interval(spot)))
        for i, expiry in enumerate(months):
            price = _round_to(spot * (1 + 0.005 * (i + 1)), _fx("0.05"))
            yield _future_row(
                nfo, "NFO", _monthly_code(expiry), s.symbol, expiry, price, "0.05", lot
            )
        for i, expiry in enumerate(months):
            yield from _option_rows(
                nfo,
                "NFO",
                s.symbol,
                _monthly_code(expiry),
                expiry,
                as_of,
                spot,
                interval,
                per_month[i],
                "0.05",
                lot,
            )


def _mcx_rows(rng: random.Random, as_of: dt.date, drift: float, scale: float) -> Iterator[KiteRow]:
    tokens = _ContractTokens(400000, 600_000)
    for symbol, lot, tick, base, interval, day, every, options in _MCX:
        tick_fx = _fx(tick)
        spot = base * drift * rng.uniform(0.98, 1.02)
        expiries: list[dt.date] = []
        year, month = as_of.year, as_of.month
        while len(expiries) < (4 if every == 1 else 3):
            if (month - 1) % every == 0 or every == 1:
                expiry = _weekday_on_or_before(
                    dt.date(year, month, min(day, calendar.monthrange(year, month)[1]))
                )
                if expiry >= as_of:
                    expiries.append(expiry)
            year, month = _add_months(year, month, 1)
        for i, expiry in enumerate(expiries):
            price = _round_to(spot * (1 + 0.006 * i), tick_fx)
            yield _future_row(
                tokens, "MCX", _monthly_code(expiry), symbol, expiry, price, tick, lot
            )
        if not options:
            continue
        step = _fx(str(interval))
        for expiry in expiries[:2]:
            # MCX options expire a few days before their future.
            opt_expiry = _weekday_on_or_before(expiry - dt.timedelta(days=3))
            if opt_expiry < as_of:
                continue
            yield from _option_rows(
                tokens,
                "MCX",
                symbol,
                _monthly_code(expiry),
                opt_expiry,
                as_of,
                spot,
                step,
                max(4, round(60 * scale)),
                tick,
                lot,
            )


def _cds_rows(rng: random.Random, as_of: dt.date, scale: float) -> Iterator[KiteRow]:
    tokens = _ContractTokens(1200, 30_000)
    tick = "0.0025"
    for symbol, base, interval, strikes, weekly in _CDS:
        spot = float(base) * rng.uniform(0.995, 1.005)
        expiries: list[dt.date] = []
        year, month = as_of.year, as_of.month
        while len(expiries) < 12:
            last = _weekday_on_or_before(dt.date(year, month, calendar.monthrange(year, month)[1]))
            expiry = last - dt.timedelta(days=2)
            expiry = _weekday_on_or_before(expiry)
            if expiry >= as_of:
                expiries.append(expiry)
            year, month = _add_months(year, month, 1)
        for i, expiry in enumerate(expiries):
            price = _round_to(spot * (1 + 0.002 * i), _fx(tick))
            yield _future_row(tokens, "CDS", _monthly_code(expiry), symbol, expiry, price, tick, 1)
        option_expiries = [(e, _monthly_code(e)) for e in expiries[:3]]
        if weekly:
            monthly_set = set(expiries)
            option_expiries += [
                (e, _weekly_code(e))
                for e in weekly_expiries(as_of, FRIDAY, 4)
                if e not in monthly_set
            ]
        for expiry, code in sorted(option_expiries):
            yield from _option_rows(
                tokens,
                "CDS",
                symbol,
                code,
                expiry,
                as_of,
                spot,
                _fx(interval),
                max(4, round(strikes * scale)),
                tick,
                1,
            )
