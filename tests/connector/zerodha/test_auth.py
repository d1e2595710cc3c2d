"""Zerodha login against the loopback Kite simulator (real TOTP, real HTTP on
port 0): the flow end to end, the 0600 cache and its reuse, expiry at 06:00
IST with an injected clock, one distinct error per failure, and no secret in
any message, repr or log record."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import socket
import stat
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from click.testing import CliRunner

from connector.sim.kite import Account, KiteSimulator
from connector.zerodha import auth
from connector.zerodha.auth import (
    IST,
    Credentials,
    Session,
    cache_path,
    checksum,
    ensure_session,
    load_session,
    save_session,
    session_expiry,
)
from connector.zerodha.errors import (
    BadApiSecret,
    KiteAuthError,
    KiteNetworkError,
    MissingCredentials,
    TokenExpired,
    WrongPassword,
    WrongTotp,
)
from connector.zerodha.login_cli import login as login_group
from pipeline.errors import FatalError, RetryableError

T = TypeVar("T")

ACCOUNT = Account(
    user_id="AB1234",
    password="correct horse battery",
    totp_secret="GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ",
    api_key="kitekey123",
    api_secret="s3cr3t-api-secret",
)
CREDS = Credentials(
    user_id=ACCOUNT.user_id,
    password=ACCOUNT.password,
    totp_secret=ACCOUNT.totp_secret,
    api_key=ACCOUNT.api_key,
    api_secret=ACCOUNT.api_secret,
)


def run(coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


class Clock:
    """An injectable clock the test moves by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def with_(creds: Credentials, **changes: str) -> Credentials:
    return Credentials(**{**{k: getattr(creds, k) for k in auth.ENV_VARS}, **changes})


def secrets_of(creds: Credentials) -> list[str]:
    return [creds.password, creds.totp_secret, creds.api_secret]


# ---------------------------------------------------------------------------
# pure parts


@pytest.mark.unit
def test_expiry_is_the_next_six_am_ist() -> None:
    day = dt.date(2026, 11, 25)

    def at(hour: int, minute: int) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hour, minute), IST)

    assert session_expiry(at(10, 0)) == dt.datetime(2026, 11, 26, 6, 0, tzinfo=IST)
    assert session_expiry(at(5, 59)) == at(6, 0)
    assert session_expiry(at(6, 0)) == dt.datetime(2026, 11, 26, 6, 0, tzinfo=IST)
    # 23:00 UTC on the 25th is 04:30 IST on the 26th: expiry 06:00 IST on the 26th.
    late = dt.datetime(2026, 11, 25, 23, 0, tzinfo=dt.UTC)
    assert session_expiry(late) == dt.datetime(2026, 11, 26, 6, 0, tzinfo=IST)


@pytest.mark.unit
def test_checksum_is_sha256_of_the_concatenation() -> None:
    import hashlib

    assert checksum("k", "r", "s") == hashlib.sha256(b"krs").hexdigest()
    assert len(checksum("k", "r", "s")) == 64


@pytest.mark.unit
def test_credentials_from_env_and_repr() -> None:
    env = {var: f"value-of-{name}" for name, var in auth.ENV_VARS.items()}
    creds = Credentials.from_env(env)
    assert creds.user_id == "value-of-user_id" and creds.api_key == "value-of-api_key"
    text = repr(creds) + str(creds)
    for secret in creds.secrets():
        assert secret not in text
    del env["ZERODHA_PASSWORD"], env["ZERODHA_API_SECRET"]
    with pytest.raises(MissingCredentials) as missing:
        Credentials.from_env(env)
    assert "ZERODHA_PASSWORD" in str(missing.value) and "ZERODHA_API_SECRET" in str(missing.value)
    assert "value-of" not in str(missing.value)


@pytest.mark.unit
def test_cache_file_is_private_atomic_and_checked(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST)
    session = Session(
        user_id=CREDS.user_id,
        user_name="A B",
        api_key=CREDS.api_key,
        access_token="access-token-value",
        public_token="public-token-value",
        login_time=now,
        expires_at=session_expiry(now),
        api_url="http://127.0.0.1:1",
    )
    assert "access-token-value" not in repr(session)
    path = cache_path(tmp_path)
    save_session(path, session)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    assert load_session(path, CREDS, "http://127.0.0.1:1/", now) == session
    assert load_session(path, CREDS, "http://127.0.0.1:2", now) is None  # another API
    assert load_session(path, with_(CREDS, user_id="ZZ9999"), "http://127.0.0.1:1", now) is None
    assert load_session(path, CREDS, "http://127.0.0.1:1", session.expires_at) is None
    os.chmod(path, 0o644)
    assert load_session(path, CREDS, "http://127.0.0.1:1", now) is None  # readable by others
    path.write_bytes(b"{not json")
    os.chmod(path, 0o600)
    assert load_session(path, CREDS, "http://127.0.0.1:1", now) is None


# ---------------------------------------------------------------------------
# against the simulator


def simulator(clock: Clock | None = None) -> KiteSimulator:
    wall = clock or (lambda: dt.datetime.now(dt.UTC))
    return KiteSimulator(account=ACCOUNT, scale=0.02, wall_clock=wall)


@pytest.mark.integration
def test_login_end_to_end_then_cache_reuse(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with simulator() as sim:
            go = functools.partial(
                ensure_session, CREDS, tmp_path, login_url=sim.http_url, api_url=sim.http_url
            )
            first = await go()
            assert not first.reused and sim.counters["logins"] == 1
            session = first.session
            assert (session.user_id, session.user_name) == ("AB1234", "Sim User")
            assert session.expires_at == session_expiry(session.login_time)
            assert first.cache_path == tmp_path / "run" / "zerodha_session.json"
            assert stat.S_IMODE(first.cache_path.stat().st_mode) == 0o600
            profile = await auth.profile(session)
            assert profile["user_id"] == "AB1234"
            # The token works on the ticker too.
            from websockets.asyncio.client import connect

            async with connect(session.ticker_url(sim.ws_url)):
                pass
            second = await go()
            assert second.reused and second.session == session
            assert sim.counters["logins"] == 1  # no second login
            forced = await go(force=True)
            assert not forced.reused and sim.counters["logins"] == 2
            # A revoked token in the cache: verified, refused, logged in again.
            sim.expire_tokens()
            third = await go()
            assert not third.reused and sim.counters["logins"] == 3

    run(scenario())


@pytest.mark.integration
def test_cached_session_expires_at_six_ist_next_day(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST))

    async def scenario() -> None:
        async with simulator(clock) as sim:
            go = functools.partial(
                ensure_session,
                CREDS,
                tmp_path,
                login_url=sim.http_url,
                api_url=sim.http_url,
                now=clock,
            )
            first = await go()
            assert first.session.expires_at == dt.datetime(2026, 11, 26, 6, 0, tzinfo=IST)
            clock.now = dt.datetime(2026, 11, 26, 5, 59, 59, tzinfo=IST)
            assert (await go()).reused
            clock.now = dt.datetime(2026, 11, 26, 6, 0, 0, tzinfo=IST)
            again = await go()
            assert not again.reused and sim.counters["logins"] == 2
            assert again.session.expires_at == dt.datetime(2026, 11, 27, 6, 0, tzinfo=IST)
            assert again.session.access_token != first.session.access_token

    run(scenario())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nobody listens there now


@pytest.mark.integration
def test_each_failure_is_distinct_and_carries_no_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: dict[str, BaseException] = {}

    async def attempt(name: str, creds: Credentials, url: str) -> None:
        with pytest.raises(Exception) as info:
            await ensure_session(creds, tmp_path, login_url=url, api_url=url, force=True)
        seen[name] = info.value

    async def scenario() -> str:
        async with simulator() as sim:
            url = sim.http_url
            await attempt("password", with_(CREDS, password="wrong password!"), url)
            await attempt("totp", with_(CREDS, totp_secret="JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"), url)
            await attempt("secret", with_(CREDS, api_secret="not-the-api-secret"), url)
            await attempt("network", CREDS, f"http://127.0.0.1:{_closed_port()}")
            good = await ensure_session(CREDS, tmp_path, login_url=url, api_url=url)
            sim.expire_tokens()
            with pytest.raises(TokenExpired) as expired:
                await auth.profile(good.session)
            seen["token"] = expired.value
            access = good.session.access_token
            assert sim.counters["login_wrong_password"] == 1
            assert sim.counters["login_wrong_totp"] == 1
            assert sim.counters["session_bad_checksum"] == 1
            return access

    access = run(scenario())
    kinds = {
        "password": WrongPassword,
        "totp": WrongTotp,
        "secret": BadApiSecret,
        "network": KiteNetworkError,
        "token": TokenExpired,
    }
    for name, kind in kinds.items():
        exc = seen[name]
        assert type(exc) is kind, (name, exc)
        others = [k for k in kinds.values() if k is not kind]
        assert not isinstance(exc, tuple(others))
        assert isinstance(exc, RetryableError if name == "network" else KiteAuthError)
        assert isinstance(exc, RetryableError) != isinstance(exc, FatalError)
    assert "AB1234" in str(seen["password"]) and "Invalid" in str(seen["password"])
    assert "TOTP" in str(seen["totp"]) and "ZERODHA_API_SECRET" in str(seen["secret"])
    forbidden = [
        *secrets_of(CREDS),
        "wrong password!",
        "not-the-api-secret",
        "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
        access,
    ]
    texts = [str(e) + repr(e) for e in seen.values()]
    texts += [record.getMessage() for record in caplog.records]
    assert any("logged in as AB1234" in t for t in texts)
    for text in texts:
        for secret in forbidden:
            assert secret not in text, f"a secret leaked into {text!r}"


# ---------------------------------------------------------------------------
# the command


@pytest.fixture
def sim_in_thread() -> Iterator[KiteSimulator]:
    """A simulator on its own event loop in a thread (the command runs its own loop)."""
    sim = simulator()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(sim.start(), loop).result(10)
    try:
        yield sim
    finally:
        asyncio.run_coroutine_threadsafe(sim.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.integration
def test_login_zerodha_command(tmp_path: Path, sim_in_thread: KiteSimulator) -> None:
    sim = sim_in_thread
    env = ACCOUNT.env()
    args = ["zerodha", "--data-dir", str(tmp_path), "--login-url", sim.http_url]
    args += ["--api-url", sim.http_url]
    runner = CliRunner()
    result = runner.invoke(login_group, [*args, "--json"], env=env)
    assert result.exit_code == 0, result.output
    info = orjson.loads(result.output)
    assert info["user"] == "AB1234" and info["user_name"] == "Sim User"
    assert info["cache_path"] == str(tmp_path / "run" / "zerodha_session.json")
    assert dt.datetime.fromisoformat(info["expiry"]).time() == dt.time(6, 0)
    assert info["reused"] is False
    again = runner.invoke(login_group, args, env=env)
    assert again.exit_code == 0 and "reused the cached session: AB1234 (Sim User)" in again.output
    assert sim.counters["logins"] == 1
    bad = runner.invoke(
        login_group, [*args, "--force"], env={**env, "ZERODHA_PASSWORD": "nope-nope"}
    )
    assert bad.exit_code == 2 and "refused the user id or password" in bad.output
    assert "nope-nope" not in bad.output
    missing = runner.invoke(login_group, args, env={**env, "ZERODHA_TOTP_SECRET": ""})
    assert missing.exit_code == 2 and "ZERODHA_TOTP_SECRET" in missing.output
