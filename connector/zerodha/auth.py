"""Zerodha Kite login for automation: user id + password + TOTP -> access token,
cached on disk until the venue expires it (06:00 IST the next day).

The flow (PROTOCOLS.md, "Zerodha Kite Connect")::

    POST {login}/api/login       user_id, password              -> request_id
    POST {login}/api/twofa       user_id, request_id, twofa_value (current TOTP)
                                                                -> session cookies
    GET  {login}/connect/login?v=3&api_key=...  (redirects, cookies sent)
                                 -> Location: <app redirect URL>?...&request_token=...
    POST {api}/session/token     api_key, request_token,
                                 checksum = sha256(api_key + request_token + api_secret)
                                                                -> access_token, user

The app's redirect URL is never fetched: the flow stops at the redirect that
carries ``request_token`` and reads it from the query.

Time is an argument (``now``: a callable returning an aware datetime) so
expiry is tested with an injected clock; the TOTP is computed for ``now()``
too. Secrets (password, TOTP secret and values, API secret, request and
access tokens) never reach a log record, an exception message or a repr.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pyotp

from connector.zerodha.errors import (
    BadApiSecret,
    KiteApiError,
    KiteLoginFlowError,
    KiteNetworkError,
    MissingCredentials,
    TokenExpired,
    WrongPassword,
    WrongTotp,
)
from pipeline.paths import data_dir as default_data_dir
from pipeline.paths import run_dir

log = logging.getLogger(__name__)

IST: Final = timezone(timedelta(hours=5, minutes=30), "IST")
"""India has no daylight saving: a fixed offset is exact (and needs no tzdata)."""
EXPIRY_TIME_IST: Final = time(6, 0)
DEFAULT_LOGIN_URL: Final = "https://kite.zerodha.com"
DEFAULT_API_URL: Final = "https://api.kite.trade"
SESSION_FILE: Final = "zerodha_session.json"
KITE_VERSION: Final = "3"
MAX_REDIRECTS: Final = 10
_CACHE_VERSION: Final = 1

ENV_VARS: Final = {
    "user_id": "ZERODHA_USER_ID",
    "password": "ZERODHA_PASSWORD",
    "totp_secret": "ZERODHA_TOTP_SECRET",
    "api_key": "ZERODHA_API_KEY",
    "api_secret": "ZERODHA_API_SECRET",
}

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock, aware (the default ``now``)."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Credentials:
    """What the automated login needs. ``repr`` shows only the user id and API key."""

    user_id: str
    password: str = field(repr=False)
    totp_secret: str = field(repr=False)
    api_key: str
    api_secret: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Credentials:
        """From ``ZERODHA_USER_ID``, ``ZERODHA_PASSWORD``, ``ZERODHA_TOTP_SECRET``,
        ``ZERODHA_API_KEY``, ``ZERODHA_API_SECRET``; MissingCredentials names the missing ones."""
        source = os.environ if env is None else env
        values = {name: source.get(var, "").strip() for name, var in ENV_VARS.items()}
        missing = [ENV_VARS[name] for name, value in values.items() if not value]
        if missing:
            raise MissingCredentials(
                f"Zerodha login needs the environment variable(s) {', '.join(missing)}"
            )
        return cls(**values)

    def secrets(self) -> tuple[str, ...]:
        """The values that must never be shown."""
        return (self.password, self.totp_secret, self.api_secret)


def checksum(api_key: str, request_token: str, api_secret: str) -> str:
    """The ``/session/token`` checksum: SHA-256 hex of api_key + request_token + api_secret."""
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


def session_expiry(login_time: datetime) -> datetime:
    """The first 06:00 IST after ``login_time`` (Kite tokens die then, whenever they were made)."""
    local = login_time.astimezone(IST)
    expiry = datetime.combine(local.date(), EXPIRY_TIME_IST, IST)
    if expiry <= local:
        expiry += timedelta(days=1)
    return expiry


@dataclass(frozen=True)
class Session:
    """A logged-in Kite session. ``repr`` hides the tokens."""

    user_id: str
    user_name: str
    api_key: str
    access_token: str = field(repr=False)
    public_token: str = field(repr=False)
    login_time: datetime
    expires_at: datetime
    api_url: str
    """The API base this session belongs to (a simulator's token is no good on the venue)."""

    def valid_at(self, now: datetime) -> bool:
        """Not expired at ``now``."""
        return now < self.expires_at

    @property
    def authorization(self) -> str:
        """The ``Authorization`` header value: ``token <api_key>:<access_token>``."""
        return f"token {self.api_key}:{self.access_token}"

    def headers(self) -> dict[str, str]:
        """Headers for an authenticated Kite API call."""
        return {"X-Kite-Version": KITE_VERSION, "Authorization": self.authorization}

    def ticker_url(self, ws_url: str) -> str:
        """The ticker WebSocket URL with the auth query (``?api_key=...&access_token=...``)."""
        return f"{ws_url.rstrip('/')}?api_key={self.api_key}&access_token={self.access_token}"

    def to_json(self) -> dict[str, Any]:
        """The cache file's content."""
        return {
            "version": _CACHE_VERSION,
            "user_id": self.user_id,
            "user_name": self.user_name,
            "api_key": self.api_key,
            "api_url": self.api_url,
            "access_token": self.access_token,
            "public_token": self.public_token,
            "login_time": self.login_time.isoformat(),
            "expires_at": self.expires_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Session:
        """The inverse of :meth:`to_json`; ValueError/KeyError/TypeError when it does not fit."""
        if data.get("version") != _CACHE_VERSION:
            raise ValueError(f"cache version {data.get('version')!r}")
        login_time = datetime.fromisoformat(data["login_time"])
        expires_at = datetime.fromisoformat(data["expires_at"])
        if login_time.tzinfo is None or expires_at.tzinfo is None:
            raise ValueError("naive timestamps in the cache")
        strings = ("user_id", "user_name", "api_key", "api_url", "access_token", "public_token")
        if not all(isinstance(data[k], str) for k in strings):
            raise TypeError("a cache field is not a string")
        return cls(**{k: data[k] for k in strings}, login_time=login_time, expires_at=expires_at)


@dataclass(frozen=True)
class LoginResult:
    """Who is logged in, until when, and where the session is cached."""

    session: Session
    cache_path: Path
    reused: bool
    """True when the cached session was still valid (no login happened)."""

    def as_dict(self) -> dict[str, Any]:
        """For ``--json`` output (no tokens)."""
        s = self.session
        return {
            "user": s.user_id,
            "user_name": s.user_name,
            "api_key": s.api_key,
            "login_time": s.login_time.isoformat(),
            "expiry": s.expires_at.isoformat(),
            "cache_path": str(self.cache_path),
            "reused": self.reused,
        }


# ---------------------------------------------------------------------------
# HTTP answers -> data or the right exception


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """Belt and braces: a venue message that echoes a secret gets it masked."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _where(url: str | httpx.URL) -> str:
    """A URL without its query (queries carry tokens)."""
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _error_of(response: httpx.Response) -> tuple[str, str]:
    """(error_type, message) of a Kite error answer, or ("", a short description)."""
    try:
        body = response.json()
    except ValueError:
        return "", f"a non-JSON answer ({response.headers.get('content-type', 'no content type')})"
    if isinstance(body, dict):
        return str(body.get("error_type") or ""), str(body.get("message") or "")
    return "", "an unexpected JSON answer"


def _check(
    response: httpx.Response,
    step: str,
    secrets: Iterable[str],
    refusal: Callable[[str, str], Exception],
) -> dict[str, Any]:
    """The ``data`` of a successful Kite JSON answer; else the exception for
    the failure: 5xx/429 retryable, a 4xx refusal from ``refusal(error_type, text)``."""
    status = response.status_code
    if status == 200:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "success":
            data = body.get("data")
            return data if isinstance(data, dict) else {"value": data}
    error_type, message = _error_of(response)
    text = _scrub(
        f"{step}: HTTP {status}{' ' + error_type if error_type else ''}: {message or 'no message'}",
        secrets,
    )
    if status >= 500 or status == 429:
        raise KiteNetworkError(f"{text} (try again later)")
    raise refusal(error_type, text)


async def _call(
    client: httpx.AsyncClient, method: str, url: str, step: str, **kwargs: Any
) -> httpx.Response:
    """One request; transport failures become KiteNetworkError naming the step and host."""
    try:
        return await client.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise KiteNetworkError(f"{step}: {_where(url)} timed out") from None
    except httpx.TransportError as exc:
        # The class name, not str(exc): httpx messages may quote the request.
        raise KiteNetworkError(
            f"{step}: cannot reach {_where(url)} ({type(exc).__name__})"
        ) from None


# ---------------------------------------------------------------------------
# the login flow


async def login(
    credentials: Credentials,
    *,
    login_url: str = DEFAULT_LOGIN_URL,
    api_url: str = DEFAULT_API_URL,
    now: Clock = utc_now,
    timeout_s: float = 10.0,
) -> Session:
    """Run the whole automated login and return the new session (no cache)."""
    c = credentials
    login_url, api_url = login_url.rstrip("/"), api_url.rstrip("/")
    secrets = c.secrets()
    async with httpx.AsyncClient(timeout=timeout_s, follow_redirects=False) as client:
        response = await _call(
            client,
            "POST",
            f"{login_url}/api/login",
            "login",
            data={"user_id": c.user_id, "password": c.password},
        )

        def password_refused(error_type: str, text: str) -> Exception:
            return WrongPassword(f"Zerodha refused the user id or password of {c.user_id}: {text}")

        data = _check(response, "POST /api/login", secrets, password_refused)
        request_id = data.get("request_id")
        if not isinstance(request_id, str) or not request_id:
            raise KiteLoginFlowError("POST /api/login: the answer has no request_id")

        totp = pyotp.TOTP(c.totp_secret).at(int(now().timestamp()))
        secrets = (*secrets, totp, request_id)
        response = await _call(
            client,
            "POST",
            f"{login_url}/api/twofa",
            "twofa",
            data={
                "user_id": c.user_id,
                "request_id": request_id,
                "twofa_value": totp,
                "twofa_type": "totp",
            },
        )

        def totp_refused(error_type: str, text: str) -> Exception:
            if error_type == "TokenException":
                return KiteLoginFlowError(f"the login request expired before the TOTP: {text}")
            return WrongTotp(
                f"Zerodha refused the TOTP of {c.user_id} (check ZERODHA_TOTP_SECRET and the clock): {text}"
            )

        _check(response, "POST /api/twofa", secrets, totp_refused)

        request_token = await _request_token(client, login_url, c.api_key, secrets)
        secrets = (*secrets, request_token)
        login_time = now()
        response = await _call(
            client,
            "POST",
            f"{api_url}/session/token",
            "session token",
            headers={"X-Kite-Version": KITE_VERSION},
            data={
                "api_key": c.api_key,
                "request_token": request_token,
                "checksum": checksum(c.api_key, request_token, c.api_secret),
            },
        )

        def token_refused(error_type: str, text: str) -> Exception:
            if error_type == "TokenException":
                return TokenExpired(f"the request token was refused (expired or used): {text}")
            if "checksum" in text.lower():
                return BadApiSecret(
                    f"Zerodha refused the checksum: ZERODHA_API_SECRET does not match the API key {c.api_key}: {text}"
                )
            return KiteApiError(text)

        data = _check(response, "POST /session/token", secrets, token_refused)
    access_token = data.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise KiteLoginFlowError("POST /session/token: the answer has no access_token")
    session = Session(
        user_id=str(data.get("user_id") or c.user_id),
        user_name=str(data.get("user_name") or ""),
        api_key=c.api_key,
        access_token=access_token,
        public_token=str(data.get("public_token") or ""),
        login_time=login_time,
        # From our clock, not the server's login_time (naive IST text, and a
        # simulator may run a shifted market clock).
        expires_at=session_expiry(login_time),
        api_url=api_url,
    )
    log.info("Zerodha: logged in as %s until %s", session.user_id, session.expires_at.isoformat())
    return session


async def _request_token(
    client: httpx.AsyncClient, login_url: str, api_key: str, secrets: Iterable[str]
) -> str:
    """Follow ``/connect/login`` redirects (with the session cookies) until
    one points at a URL carrying ``request_token``; that URL is not fetched."""
    origin = urlsplit(login_url)
    url = f"{login_url}/connect/login?v={KITE_VERSION}&api_key={api_key}"
    for _ in range(MAX_REDIRECTS):
        response = await _call(client, "GET", url, "connect/login")
        if response.is_redirect:
            location = str(response.url.join(response.headers["location"]))
            target = urlsplit(location)
            query = parse_qs(target.query)
            token = query.get("request_token", [""])[0]
            if token:
                status = query.get("status", ["success"])[0]
                if status != "success":
                    raise KiteLoginFlowError(f"connect/login redirected with status {status!r}")
                return token
            if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
                raise KiteLoginFlowError(
                    f"connect/login redirected to {_where(location)} without a request_token"
                )
            url = location
            continue
        if response.status_code == 200:
            raise KiteLoginFlowError(
                "connect/login answered a page instead of redirecting with a request_token: "
                "the login session was not accepted"
            )

        def refused(error_type: str, text: str) -> Exception:
            if error_type == "TokenException":
                return TokenExpired(text)
            return KiteApiError(f"{text} (is ZERODHA_API_KEY right?)")

        _check(response, "GET /connect/login", secrets, refused)
        raise KiteLoginFlowError(f"GET {_where(url)}: unexpected HTTP {response.status_code}")
    raise KiteLoginFlowError(f"connect/login: more than {MAX_REDIRECTS} redirects")


async def profile(session: Session, *, timeout_s: float = 10.0) -> dict[str, Any]:
    """``GET /user/profile``; TokenExpired when the access token is no longer accepted."""
    async with httpx.AsyncClient(timeout=timeout_s) as client:
        response = await _call(
            client, "GET", f"{session.api_url}/user/profile", "profile", headers=session.headers()
        )

    def refused(error_type: str, text: str) -> Exception:
        if error_type == "TokenException" or response.status_code == 403:
            return TokenExpired(f"the access token of {session.user_id} was refused: {text}")
        return KiteApiError(text)

    return _check(
        response, "GET /user/profile", (session.access_token, session.public_token), refused
    )


# ---------------------------------------------------------------------------
# the cache


def cache_path(root: Path) -> Path:
    """``<data dir>/run/zerodha_session.json``."""
    return run_dir(root) / SESSION_FILE


def save_session(path: Path, session: Session) -> None:
    """Write the session atomically, 0600 from the first byte (never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, orjson.dumps(session.to_json(), option=orjson.OPT_INDENT_2))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_session(
    path: Path, credentials: Credentials, api_url: str, now: datetime
) -> Session | None:
    """The cached session if it belongs to these credentials and API, is
    still valid at ``now`` and the file is private; else None (and why is logged)."""
    try:
        st = path.stat()
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("Zerodha: cannot read the session cache %s (%s)", path, exc.strerror)
        return None
    if st.st_mode & 0o077:
        log.warning("Zerodha: ignoring the session cache %s: it is readable by others", path)
        return None
    try:
        session = Session.from_json(orjson.loads(raw))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning(
            "Zerodha: ignoring the session cache %s: unreadable (%s)", path, type(exc).__name__
        )
        return None
    if (session.user_id, session.api_key, session.api_url) != (
        credentials.user_id,
        credentials.api_key,
        api_url.rstrip("/"),
    ):
        log.info("Zerodha: the cached session is for another user, API key or API URL")
        return None
    if not session.valid_at(now):
        log.info("Zerodha: the cached session expired at %s", session.expires_at.isoformat())
        return None
    return session


async def ensure_session(
    credentials: Credentials,
    root: Path,
    *,
    login_url: str = DEFAULT_LOGIN_URL,
    api_url: str = DEFAULT_API_URL,
    now: Clock = utc_now,
    force: bool = False,
    verify: bool = True,
    timeout_s: float = 10.0,
) -> LoginResult:
    """The cached session when still valid (checked with ``/user/profile``
    when ``verify``), else a fresh login, cached under ``<root>/run/``."""
    path = cache_path(root)
    cached = None if force else load_session(path, credentials, api_url, now())
    if cached is not None:
        try:
            if verify:
                await profile(cached, timeout_s=timeout_s)
        except TokenExpired:
            log.info("Zerodha: the cached session was revoked; logging in again")
        else:
            log.info(
                "Zerodha: reusing the session of %s (valid until %s)",
                cached.user_id,
                cached.expires_at.isoformat(),
            )
            return LoginResult(cached, path, reused=True)
    session = await login(
        credentials, login_url=login_url, api_url=api_url, now=now, timeout_s=timeout_s
    )
    save_session(path, session)
    return LoginResult(session, path, reused=False)


def login_zerodha(
    data_dir: Path | str | None = None,
    *,
    credentials: Credentials | None = None,
    login_url: str = DEFAULT_LOGIN_URL,
    api_url: str = DEFAULT_API_URL,
    now: Clock = utc_now,
    force: bool = False,
    verify: bool = True,
) -> LoginResult:
    """Log in to Zerodha (or reuse the cached session): who is logged in and
    until when. Credentials default to the ``ZERODHA_*`` environment variables.
    Blocking: runs its own event loop (use :func:`ensure_session` inside one)."""
    creds = credentials or Credentials.from_env()
    root = default_data_dir(data_dir)
    return asyncio.run(
        ensure_session(
            creds,
            root,
            login_url=login_url,
            api_url=api_url,
            now=now,
            force=force,
            verify=verify,
        )
    )
