"""``connector-pipeline simulate kite``: run the Kite simulator in the foreground.

Registered by connector/cli.py with ``simulate.add_command(kite)``. Thin:
parse, build :class:`connector.sim.kite.KiteSimulator`, print its URLs and
the credentials it accepts, run until Ctrl-C.
"""

from __future__ import annotations

import datetime as dt

import click
import orjson

from connector.sim.kite import (
    Account,
    KiteSimulator,
    clock_from_spec,
    serve_until_stopped,
)
from pipeline.errors import PipelineError


class _Failed(click.ClickException):
    exit_code = 2


def _holidays(values: tuple[str, ...]) -> list[dt.date]:
    try:
        return [dt.date.fromisoformat(v) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--holiday") from None


@click.command("kite")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback address.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Login + API port (0 picks a free one).",
)
@click.option(
    "--ws-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Ticker WebSocket port (0 picks a free one).",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Tick frames per second per connection.",
)
@click.option(
    "--tokens",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="How many tokens of the universe to print, for a feed's config (one per segment first).",
)
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=0.05,
    show_default=True,
    help="Size of the instruments universe (1 = about 91K rows).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--clock",
    default="real",
    show_default=True,
    help="Market clock: real, open (starts at 09:15 IST), closed, or an ISO datetime with offset.",
)
@click.option(
    "--holiday", "holidays", multiple=True, help="Exchange holiday YYYY-MM-DD (repeatable)."
)
@click.option(
    "--old-full-layout", is_flag=True, help="Send the old 164-byte full packets (no OI/timestamps)."
)
@click.option("--faults", default="", help="e.g. disconnect=0.001,stall=0.001,malformed=0.01.")
@click.option("--user-id", default=Account.user_id, show_default=True)
@click.option("--password", default=Account.password, show_default=True)
@click.option("--totp-secret", default=Account.totp_secret, show_default=True, help="Base32.")
@click.option("--api-key", default=Account.api_key, show_default=True)
@click.option("--api-secret", default=Account.api_secret, show_default=True)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the URLs and credentials as one JSON line."
)
def kite(
    host: str,
    port: int,
    ws_port: int,
    rate: float,
    tokens: int,
    scale: float,
    seed: int,
    clock: str,
    holidays: tuple[str, ...],
    old_full_layout: bool,
    faults: str,
    user_id: str,
    password: str,
    totp_secret: str,
    api_key: str,
    api_secret: str,
    as_json: bool,
) -> None:
    """Run a loopback Zerodha Kite simulator: login pages, Kite Connect API,
    instruments and the binary ticker, with /sim/stats, /sim/truth and
    /sim/control for tests. The credentials are test values, printed so a
    client can use them. Ctrl-C stops it.

    \b
    Exit code 2 when it cannot start (port busy, non-loopback host, bad option).
    """
    import asyncio
    import contextlib

    days = _holidays(holidays)
    account = Account(
        user_id=user_id,
        password=password,
        totp_secret=totp_secret,
        api_key=api_key,
        api_secret=api_secret,
    )
    try:
        sim = KiteSimulator(
            host=host,
            port=port,
            ws_port=ws_port,
            account=account,
            rate=rate,
            seed=seed,
            scale=scale,
            clock=clock_from_spec(clock, days),
            holidays=days,
            full_layout=164 if old_full_layout else 184,
            faults=faults,
        )
    except PipelineError as exc:
        raise _Failed(str(exc)) from exc

    def ready(sim: KiteSimulator) -> None:
        examples = []
        for segment in ("INDICES", "NSE", "NFO-FUT", "CDS-FUT", "MCX-FUT"):
            examples += sim.tokens(1, segment=segment)
        examples += [t for t in sim.tokens(tokens + len(examples)) if t not in examples]
        examples = examples[:tokens]
        info = {
            "http_url": sim.http_url,
            "login_url": sim.http_url,
            "api_url": sim.http_url,
            "ws_url": sim.ws_url,
            "instruments": len(sim.instruments),
            "example_tokens": examples,
            "env": account.env(),
        }
        if as_json:
            click.echo(orjson.dumps(info).decode())
            return
        click.echo(
            f"Kite simulator on {sim.host}: login+API {sim.http_url}, ticker {sim.ws_url} "
            f"({len(sim.instruments):,} instruments, {rate:g} ticks/s, clock {clock})"
        )
        click.echo("  credentials it accepts (test values):")
        for name, value in account.env().items():
            click.echo(f"    export {name}={value}")
        click.echo(
            f"  login:       connector-pipeline login zerodha --login-url {sim.http_url} "
            f"--api-url {sim.http_url}"
        )
        click.echo(f"  instruments: {sim.http_url}/instruments")
        click.echo(f"  ticker:      {sim.ws_url}/?api_key={account.api_key}&access_token=<token>")
        click.echo(f"  tokens:      {examples}")
        click.echo(f"  stats:       {sim.http_url}/sim/stats")
        click.echo("Ctrl-C stops it.", err=True)

    try:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop
            asyncio.run(serve_until_stopped(sim, ready))
    except PipelineError as exc:
        raise _Failed(str(exc)) from exc
    stats = sim.counters
    click.echo(
        f"stopped: {stats['logins']} logins, {stats['frames']:,} frames, "
        f"{stats['heartbeats']:,} heartbeats sent",
        err=True,
    )
