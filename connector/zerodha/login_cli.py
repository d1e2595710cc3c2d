"""``connector-pipeline login zerodha``: log in (or reuse the cached session).

Registered by connector/cli.py with ``main.add_command(login)``. Thin: parse,
call :func:`connector.zerodha.auth.login_zerodha`, print.
"""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from connector.zerodha.auth import DEFAULT_API_URL, DEFAULT_LOGIN_URL, login_zerodha
from pipeline.errors import PipelineError

EXIT_USAGE = 2


class _LoginFailed(click.ClickException):
    exit_code = EXIT_USAGE


@click.group("login")
def login() -> None:
    """Log in to a venue and cache the session under the data directory."""


@login.command("zerodha")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data directory (default: $CONNECTOR_PIPELINE_DATA_DIR, else ./data).",
)
@click.option(
    "--login-url",
    default=DEFAULT_LOGIN_URL,
    show_default=True,
    help="Base of /api/login, /api/twofa, /connect/login (a simulator's URL for tests).",
)
@click.option(
    "--api-url",
    default=DEFAULT_API_URL,
    show_default=True,
    help="Base of the Kite Connect API (/session/token, /user/profile).",
)
@click.option("--force", is_flag=True, help="Log in again even if the cached session is valid.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def login_zerodha_command(
    data_dir: Path | None, login_url: str, api_url: str, force: bool, as_json: bool
) -> None:
    """Log in to Zerodha Kite with ZERODHA_USER_ID, ZERODHA_PASSWORD,
    ZERODHA_TOTP_SECRET, ZERODHA_API_KEY and ZERODHA_API_SECRET.

    The access token is cached (0600) in <data dir>/run/zerodha_session.json
    until 06:00 IST the next day and reused while valid.

    \b
    Exit code 2 when the login fails (the message says which step and why).
    """
    try:
        result = login_zerodha(data_dir, login_url=login_url, api_url=api_url, force=force)
    except PipelineError as exc:
        raise _LoginFailed(str(exc)) from exc
    info = result.as_dict()
    if as_json:
        click.echo(orjson.dumps(info).decode())
        return
    how = "reused the cached session" if result.reused else "logged in"
    click.echo(f"Zerodha: {how}: {info['user']} ({info['user_name']})")
    click.echo(f"  expires:  {info['expiry']}")
    click.echo(f"  cache:    {info['cache_path']}")
