"""``connector-pipeline instruments ...``: import, look up and query the instrument universe.

Thin: parse, call one library function, print (``--json`` for data). Exit
codes: 0 ok, 1 a problem (not found, bad file, nothing stored, WAL busy),
2 usage. Every command takes ``--data-dir`` (default:
``$CONNECTOR_PIPELINE_DATA_DIR``, else ``./data``).
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import orjson

from connector.instruments import store
from connector.instruments.binance_info import parse_exchange_info
from connector.instruments.kite_csv import parse_date, parse_kite_csv
from connector.instruments.model import Instrument, InstrumentTable, Venue, days_to_date
from connector.instruments.service import http_exchange_info_fetcher, http_kite_csv_fetcher
from connector.instruments.universe import Universe, today_ist
from pipeline import fixedpoint, paths
from pipeline.errors import PipelineError

EXIT_PROBLEM = 1
DATA_DIR_HELP = "Data directory (default: $CONNECTOR_PIPELINE_DATA_DIR, else ./data)."


class _Problem(click.ClickException):
    exit_code = EXIT_PROBLEM


class _Group(click.Group):
    """The project's expected errors become a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PipelineError as exc:
            raise _Problem(str(exc)) from exc


def _print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def _date(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return days_to_date(parse_date(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _decimal(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return fixedpoint.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _load(data_dir: Path | None) -> Universe:
    root = paths.data_dir(data_dir)
    recovered = store.recover(paths.instruments_wal_dir(root))
    for warning in recovered.warnings:
        click.echo(f"warning: {warning}", err=True)
    if recovered.snapshot is None:
        raise _Problem(
            f"no instruments stored in {paths.instruments_wal_dir(root)}; "
            "run `connector-pipeline instruments import` first"
        )
    return Universe.from_snapshot(recovered.snapshot)


def _line(i: Instrument) -> str:
    expiry = i.expiry.isoformat() if i.expiry else "-"
    strike = fixedpoint.format(i.strike) if i.strike else "-"
    return (
        f"{i.instrument_token:>10}  {i.exchange}:{i.tradingsymbol:<28} {i.instrument_type:<4} "
        f"{expiry:<10} strike {strike:<9} lot {i.lot_size:<6} tick {fixedpoint.format(i.tick_size)}"
        f"  inst {i.inst}"
    )


data_dir_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None, help=DATA_DIR_HELP
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
as_of_option = click.option(
    "--as-of", callback=_date, default=None, help="Trading date (YYYY-MM-DD; default today IST)."
)


@click.group(cls=_Group)
def instruments() -> None:
    """The instrument universe (Kite and Binance) stored in DATA_DIR/instruments_wal."""


@instruments.command("import")
@click.argument("file", required=False, type=click.Path(exists=True, path_type=Path))
@click.option("--from-kite", "kite_url", default=None, help="GET a Kite instruments CSV URL.")
@click.option("--from-binance", "binance_url", default=None, help="GET an exchangeInfo URL.")
@click.option(
    "--market",
    type=click.Choice(["spot", "usdm"]),
    default=None,
    help="Binance market of an exchangeInfo (default: from the URL/file).",
)
@as_of_option
@data_dir_option
@json_option
def import_cmd(
    file: Path | None,
    kite_url: str | None,
    binance_url: str | None,
    market: str | None,
    as_of: dt.date | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """Import FILE (Kite CSV, plain or gzip, or a Binance exchangeInfo JSON), or fetch a URL.

    Writes a new snapshot; prints what changed (added, removed, expired).
    """
    given = [x for x in (file, kite_url, binance_url) if x is not None]
    if len(given) != 1:
        raise click.UsageError("give exactly one of FILE, --from-kite URL, --from-binance URL")
    updates: dict[Venue, InstrumentTable]
    if kite_url is not None:
        updates = {Venue.KITE: parse_kite_csv(http_kite_csv_fetcher(kite_url)())}
    elif binance_url is not None:
        mkt = market or ("usdm" if "/fapi/" in urlsplit(binance_url).path else "spot")
        data = http_exchange_info_fetcher({mkt: binance_url})(mkt)
        table = parse_exchange_info(data, mkt)
        updates = {Venue.BINANCE_SPOT if mkt == "spot" else Venue.BINANCE_USDM: table}
    else:
        assert file is not None
        data = file.read_bytes()
        if data.lstrip()[:1] == b"{":
            mkt = market or ("usdm" if b'"contractType"' in data else "spot")
            table = parse_exchange_info(data, mkt)
            updates = {Venue.BINANCE_SPOT if mkt == "spot" else Venue.BINANCE_USDM: table}
        else:
            updates = {Venue.KITE: parse_kite_csv(data)}
    result = store.refresh(
        paths.data_dir(data_dir), updates, as_of=as_of or today_ist(), now_ns=time.time_ns()
    )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        _print_json({**result.report.as_json(), "payload_bytes": result.payload_bytes})
    else:
        click.echo(result.report.summary())


@instruments.command()
@click.argument("key")
@data_dir_option
@json_option
def show(key: str, data_dir: Path | None, as_json: bool) -> None:
    """Show one instrument: KEY is a token (408065) or EXCHANGE:SYMBOL (NSE:INFY)."""
    inst = _load(data_dir).lookup(key)
    if as_json:
        _print_json(inst.as_json())
    else:
        for k, v in inst.as_json().items():
            click.echo(f"{k:>16}: {v}")


@instruments.command()
@click.argument("text")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@data_dir_option
@json_option
def search(text: str, limit: int, data_dir: Path | None, as_json: bool) -> None:
    """Instruments whose trading symbol starts with TEXT (case-insensitive)."""
    found = _load(data_dir).search(text, limit)
    if as_json:
        _print_json([i.as_json() for i in found])
        return
    for i in found:
        click.echo(_line(i))
    if not found:
        raise _Problem(f"no trading symbol starts with {text!r}")


@instruments.command()
@click.argument("underlying")
@as_of_option
@data_dir_option
@json_option
def futures(underlying: str, as_of: dt.date | None, data_dir: Path | None, as_json: bool) -> None:
    """Futures on UNDERLYING expiring on or after --as-of, nearest first."""
    found = _load(data_dir).futures(underlying, as_of)
    if as_json:
        _print_json([i.as_json() for i in found])
        return
    for i in found:
        click.echo(_line(i))


@instruments.command()
@click.argument("underlying")
@as_of_option
@data_dir_option
@json_option
def tokens(underlying: str, as_of: dt.date | None, data_dir: Path | None, as_json: bool) -> None:
    """Subscription tokens of UNDERLYING: spot, current-month future, next-month future."""
    from connector.instruments.universe import get_subscription_tokens

    spot, current, nxt = get_subscription_tokens(_load(data_dir), underlying, as_of)
    if as_json:
        _print_json({"spot": spot, "current_future": current, "next_future": nxt})
    else:
        click.echo(f"spot {spot}  current future {current}  next future {nxt}")


@instruments.command()
@click.argument("underlying")
@click.option("--spot", "spot", required=True, callback=_decimal, help="Spot price.")
@click.option("--range", "strike_range", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--interval", callback=_decimal, default=None, help="Strike interval (inferred).")
@click.option("--expiry", callback=_date, default=None, help="Expiry (default: the nearest).")
@as_of_option
@data_dir_option
@json_option
def chain(
    underlying: str,
    spot: int,
    strike_range: int,
    interval: int | None,
    expiry: dt.date | None,
    as_of: dt.date | None,
    data_dir: Path | None,
    as_json: bool,
) -> None:
    """The ATM option chain of UNDERLYING: strikes around the spot with their call and put."""
    result = _load(data_dir).option_chain(underlying, spot, strike_range, interval, expiry, as_of)
    if as_json:
        _print_json(result.as_json())
        return
    click.echo(
        f"{underlying} {result.exchange} expiry {result.expiry}  ATM {fixedpoint.format(result.atm_strike)}"
        f"  interval {fixedpoint.format(result.strike_interval)}"
    )
    for r in result.rows:
        mark = "*" if r.strike == result.atm_strike else " "
        call = f"{r.call.tradingsymbol} ({r.call.instrument_token})" if r.call else "-"
        put = f"{r.put.tradingsymbol} ({r.put.instrument_token})" if r.put else "-"
        click.echo(f"{mark}{fixedpoint.format(r.strike):>10}  {call:<36} {put}")


@instruments.command()
@data_dir_option
@json_option
def stats(data_dir: Path | None, as_json: bool) -> None:
    """Counts per segment and type; snapshot version; when each venue was refreshed."""
    t0 = time.perf_counter()
    universe = _load(data_dir)
    info = {**universe.stats(), "load_s": round(time.perf_counter() - t0, 4)}
    if as_json:
        _print_json(info)
        return
    click.echo(
        f"{info['instruments']:,} instruments (version {info['version']}, "
        f"{info['retained']:,} retained ids, next id {info['next_inst']}), loaded in {info['load_s']} s"
    )
    for seg, n in info["segments"].items():
        click.echo(f"  {seg:<14} {n:>8,}")
