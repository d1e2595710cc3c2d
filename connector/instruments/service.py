"""The instrument service: serves the stored universe, refreshes it daily.

At start it recovers the latest complete snapshot from the WAL (a torn newer
one is ignored with a warning). A background thread refreshes at a configured
Asia/Kolkata time each day: the Kite dump when a Kite source is configured
(credentials exist), Binance exchangeInfo per market. Without a Kite source
it serves what the WAL holds and says so in :meth:`InstrumentService.status`.

Sources are plain callables, so the service is tested against loopback HTTP
servers and does not depend on the Kite login code: ``fetch_kite_csv() ->
bytes`` and ``fetch_binance_exchange_info(market) -> bytes``.
:func:`http_kite_csv_fetcher` and :func:`http_exchange_info_fetcher` build them
over httpx.

Under the supervisor, :func:`service` (``[[services]] target =
"connector.instruments.service:service"``) runs it: recover, refresh from
the Kite API (with the Zerodha session of the moment) and Binance
exchangeInfo, log the change report, then report ready, so the feeds started
after it resolve their subscriptions against a fresh store.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx

from connector.instruments import store
from connector.instruments.binance_info import MARKETS, parse_exchange_info
from connector.instruments.kite_csv import parse_kite_csv
from connector.instruments.model import InstrumentError, InstrumentTable, Venue
from connector.instruments.universe import IST, Universe
from pipeline import paths
from pipeline.errors import ConfigError, PipelineError, RetryableError

log = logging.getLogger("connector.instruments")

KiteFetch = Callable[[], bytes]
BinanceFetch = Callable[[str], bytes]
DEFAULT_REFRESH_AT: Final = dt.time(8, 0)
"""Kite publishes the day's dump before the 09:00 pre-open; 08:00 IST is safely after."""


class InstrumentFetchError(RetryableError):
    """A source could not be fetched (network, HTTP status): the refresh is retried later."""


class SourceUnavailable(InstrumentError):
    """A source cannot be asked now (no Kite session): the refresh goes on without it and
    the stored instruments of that venue are served (the message says why)."""


def next_refresh(now: dt.datetime, refresh_at: dt.time) -> dt.datetime:
    """The next ``refresh_at`` (Asia/Kolkata wall time) strictly after ``now`` (aware). Pure."""
    local = now.astimezone(IST)
    candidate = dt.datetime.combine(local.date(), refresh_at, tzinfo=IST)
    if candidate <= local:
        candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), refresh_at, IST)
    return candidate


def _get(client: httpx.Client, url: str, headers: Mapping[str, str]) -> bytes:
    try:
        resp = client.get(url, headers=dict(headers))
    except httpx.HTTPError as exc:
        raise InstrumentFetchError(f"GET {url}: {type(exc).__name__}: {exc}") from None
    if resp.status_code != 200:
        raise InstrumentFetchError(f"GET {url}: HTTP {resp.status_code}")
    return resp.content


def http_kite_csv_fetcher(
    url: str,
    auth_header: Callable[[], str | None] = lambda: None,
    timeout_s: float = 60.0,
) -> KiteFetch:
    """``GET url`` (``/instruments``) with ``X-Kite-Version: 3`` and, when ``auth_header()``
    gives one, ``Authorization: token api_key:access_token`` (never logged)."""

    def fetch() -> bytes:
        headers = {"X-Kite-Version": "3"}
        auth = auth_header()
        if auth:
            headers["Authorization"] = auth
        with httpx.Client(timeout=timeout_s, follow_redirects=False) as client:
            return _get(client, url, headers)

    return fetch


def http_exchange_info_fetcher(urls: Mapping[str, str], timeout_s: float = 30.0) -> BinanceFetch:
    """``market -> GET urls[market]`` (the full exchangeInfo URL of each market)."""

    def fetch(market: str) -> bytes:
        if market not in urls:
            raise ValueError(f"no exchangeInfo URL configured for market {market!r}")
        with httpx.Client(timeout=timeout_s) as client:
            return _get(client, urls[market], {})

    return fetch


@dataclass(frozen=True)
class ServiceConfig:
    """When and what the service refreshes."""

    refresh_at: dt.time = DEFAULT_REFRESH_AT
    binance_markets: Sequence[str] = ("spot", "usdm")
    retry_after_s: float = 300.0
    store: store.StoreConfig = field(default_factory=store.StoreConfig)

    def __post_init__(self) -> None:
        unknown = [m for m in self.binance_markets if m not in MARKETS]
        if unknown:
            raise ValueError(f"unknown Binance market(s) {unknown}; known: {list(MARKETS)}")


class InstrumentService:
    """Holds the current :class:`Universe`; refreshes it now or daily in a background thread."""

    def __init__(
        self,
        data_dir: Path | str,
        *,
        fetch_kite_csv: KiteFetch | None = None,
        fetch_binance_exchange_info: BinanceFetch | None = None,
        config: ServiceConfig | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config or ServiceConfig()
        self._fetch_kite = fetch_kite_csv
        self._fetch_binance = fetch_binance_exchange_info
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._universe: Universe | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_report: store.ChangeReport | None = None
        self.last_error: str = ""
        self.next_refresh_at: dt.datetime | None = None
        self.warnings: tuple[str, ...] = ()
        self.refreshes = 0
        self.kite_unavailable = ""
        """Why the last refresh went without Kite (no session), or ""."""
        self.first_attempt = threading.Event()
        """Set once the background thread tried its first refresh (or decided not to)."""

    # -- state ---------------------------------------------------------------

    @property
    def universe(self) -> Universe | None:
        """The current universe (None before anything was ever stored)."""
        return self._universe

    def load(self) -> Universe | None:
        """Recover the latest complete snapshot from the WAL and index it."""
        recovered = store.recover(paths.instruments_wal_dir(self.data_dir))
        self.warnings = tuple(recovered.warnings)
        with self._lock:
            self._universe = (
                Universe.from_snapshot(recovered.snapshot) if recovered.snapshot else None
            )
        return self._universe

    def status(self) -> dict[str, Any]:
        """What is served, where it came from, and what happens next."""
        u = self._universe
        kite_note = (
            "no Kite credentials: serving the Kite instruments the WAL holds"
            if self._fetch_kite is None
            else f"{self.kite_unavailable}: serving the Kite instruments the WAL holds"
            if self.kite_unavailable
            else "Kite refresh configured"
        )
        return {
            "instruments": 0 if u is None else len(u),
            "version": 0 if u is None or u.snapshot is None else u.snapshot.version,
            "kite": kite_note,
            "binance_markets": list(self.config.binance_markets)
            if self._fetch_binance is not None
            else [],
            "refreshes": self.refreshes,
            "last_report": None if self.last_report is None else self.last_report.as_json(),
            "last_error": self.last_error,
            "next_refresh_at": None
            if self.next_refresh_at is None
            else self.next_refresh_at.isoformat(),
            "warnings": list(self.warnings),
        }

    # -- refreshing ----------------------------------------------------------

    def fetch_updates(self) -> dict[Venue, InstrumentTable]:
        """Fetch and parse every configured source (raises on the first failure)."""
        updates: dict[Venue, InstrumentTable] = {}
        if self._fetch_kite is not None:
            try:
                updates[Venue.KITE] = parse_kite_csv(self._fetch_kite())
                self.kite_unavailable = ""
            except SourceUnavailable as exc:
                self.kite_unavailable = str(exc)
                log.warning("instruments: %s; serving the Kite instruments the WAL holds", exc)
        if self._fetch_binance is not None:
            for market in self.config.binance_markets:
                updates[MARKETS[market]] = parse_exchange_info(self._fetch_binance(market), market)
        return updates

    def refresh_now(self) -> store.RefreshResult | None:
        """Fetch, merge, write a snapshot and swap the served universe. None if nothing is configured."""
        updates = self.fetch_updates()
        if not updates:
            log.info("instruments: no source configured; serving the stored universe")
            return None
        now_ns = self._clock_ns()
        as_of = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC).astimezone(IST).date()
        result = store.refresh(
            self.data_dir, updates, as_of=as_of, now_ns=now_ns, config=self.config.store
        )
        universe = Universe.from_snapshot(result.snapshot)
        with self._lock:
            self._universe = universe
            self.last_report = result.report
            self.refreshes += 1
        log.info("%s", result.report.summary())
        return result

    def start(self, *, refresh_on_start: bool = False) -> None:
        """Load the WAL, then refresh daily at ``refresh_at`` IST in a background thread."""
        self.load()
        if self._universe is None:
            log.warning("instruments: the WAL in %s holds no snapshot yet", self.data_dir)
        else:
            snapshot = self._universe.snapshot
            log.info(
                "instruments: recovered v%d (%d instruments, next id %d) from the WAL",
                0 if snapshot is None else snapshot.version,
                len(self._universe),
                0 if snapshot is None else snapshot.next_inst,
            )
        if self._fetch_kite is None:
            log.warning(
                "instruments: no Kite credentials; serving the Kite instruments the WAL holds"
            )
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, args=(refresh_on_start,), name="instrument-refresh", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self) -> InstrumentService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, refresh_now: bool) -> None:
        try:
            self._loop(refresh_now)
        finally:
            self.first_attempt.set()

    def _loop(self, refresh_now: bool) -> None:
        while not self._stop.is_set():
            if refresh_now:
                try:
                    self.refresh_now()
                    self.last_error = ""
                except Exception as exc:  # the thread must outlive any one bad refresh
                    self.last_error = str(exc) or type(exc).__name__
                    if isinstance(exc, PipelineError):
                        log.warning("instruments refresh failed (retrying later): %s", exc)
                    else:
                        log.exception("instruments refresh failed unexpectedly (retrying later)")
                    retry = dt.datetime.fromtimestamp(
                        self._clock_ns() / 1e9, dt.UTC
                    ) + dt.timedelta(seconds=self.config.retry_after_s)
                    self.next_refresh_at = retry.astimezone(IST)
                    self.first_attempt.set()
                    if self._stop.wait(self.config.retry_after_s):
                        return
                    continue
            now = dt.datetime.fromtimestamp(self._clock_ns() / 1e9, dt.UTC)
            self.next_refresh_at = next_refresh(now, self.config.refresh_at)
            self.first_attempt.set()
            if self._stop.wait((self.next_refresh_at - now).total_seconds()):
                return
            refresh_now = True


# ---------------------------------------------------------------------------
# as a pipeline service: [[services]] target = "connector.instruments.service:service"

EXCHANGE_INFO_PATHS: Final = {"spot": "/api/v3/exchangeInfo", "usdm": "/fapi/v1/exchangeInfo"}

_SERVICE_PARAMS: Final[dict[str, type | tuple[type, ...]]] = {
    "refresh_at": str,
    "api_url": str,
    "login_url": str,
    "binance": dict,
    "retry_after_s": (int, float),
    "timeout_s": (int, float),
}


def parse_refresh_at(text: str, key: str = "services.params.refresh_at") -> dt.time:
    """``"HH:MM"`` (Asia/Kolkata wall time); a ConfigError naming ``key`` otherwise."""
    try:
        hour, minute = (int(x) for x in text.split(":"))
        return dt.time(hour, minute)
    except ValueError:
        raise ConfigError(f'{key} must be "HH:MM" (IST), got {text!r}') from None


def exchange_info_urls(binance: Mapping[str, Any]) -> dict[str, str]:
    """market -> exchangeInfo URL from market -> REST base (or a full ``.../exchangeInfo`` URL)."""
    urls = {}
    for market, base in binance.items():
        if market not in EXCHANGE_INFO_PATHS:
            raise ConfigError(
                f"services.params.binance: unknown market {market!r} "
                f"(known: {', '.join(EXCHANGE_INFO_PATHS)})"
            )
        if not isinstance(base, str):
            raise ConfigError(f"services.params.binance.{market} must be a URL string")
        base = base.rstrip("/")
        urls[market] = (
            base if base.endswith("/exchangeInfo") else base + EXCHANGE_INFO_PATHS[market]
        )
    return urls


def kite_session_header(data_dir: Path, api_url: str, login_url: str) -> Callable[[], str | None]:
    """The ``Authorization`` header for each Kite download, looked up at each refresh (the
    access token dies at 06:00 IST): ``ZERODHA_*`` credentials (cached session or a fresh
    login), else the session cache (``connector-pipeline login zerodha``, or a simulator
    with ``session_cache = true``). Neither: :class:`SourceUnavailable`."""
    from connector.zerodha.client import blocking_session, env_credentials

    def header() -> str | None:
        credentials = env_credentials()
        session = blocking_session(
            data_dir, api_url=api_url, login_url=login_url, credentials=credentials
        )
        if session is None:
            raise SourceUnavailable(
                "no Zerodha session (no ZERODHA_* credentials and no valid cached session)"
            )
        return session.authorization

    return header


def service(params: Mapping[str, Any], context: Any) -> None:
    """The instrument service under the supervisor (``connector.instruments.service:service``).

    Recovers the store, refreshes from the Kite API (``api_url``; with the
    session of :func:`kite_session_header`) and Binance exchangeInfo
    (``binance = {spot = URL, usdm = URL}``, REST bases), then says it is
    ready, so feeds started after it find a fresh store; refreshes daily at
    ``refresh_at`` (``"HH:MM"`` IST, default 08:00); a failed refresh is
    retried after ``retry_after_s``. Without ``api_url`` or a session it
    serves the Kite instruments the WAL holds, and logs so.
    """
    from pipeline.adapter import check_params

    check_params(params, _SERVICE_PARAMS, "service")
    data_dir = Path(context.data_dir)
    timeout_s = float(params.get("timeout_s", 60.0))
    binance = exchange_info_urls(params.get("binance", {}))
    fetch_kite: KiteFetch | None = None
    if "api_url" in params:
        api_url = str(params["api_url"]).rstrip("/")
        header = kite_session_header(data_dir, api_url, str(params.get("login_url", api_url)))
        fetch_kite = http_kite_csv_fetcher(f"{api_url}/instruments", header, timeout_s)
    svc = InstrumentService(
        data_dir,
        fetch_kite_csv=fetch_kite,
        fetch_binance_exchange_info=http_exchange_info_fetcher(binance, timeout_s)
        if binance
        else None,
        config=ServiceConfig(
            refresh_at=parse_refresh_at(str(params.get("refresh_at", "08:00"))),
            binance_markets=tuple(binance),
            retry_after_s=float(params.get("retry_after_s", 300.0)),
        ),
    )
    svc.start(refresh_on_start=fetch_kite is not None or bool(binance))
    try:
        # Ready once the first refresh was tried: feeds started after us read a fresh store.
        while not svc.first_attempt.wait(0.1):
            if context.stopping():  # also the heartbeat while a large dump downloads
                return
        status = svc.status()
        log.info(
            "instruments: serving v%d, %d instruments; %s; next refresh %s",
            status["version"],
            status["instruments"],
            status["kite"],
            status["next_refresh_at"],
        )
        context.ready()
        while not context.stopping():
            time.sleep(0.1)
    finally:
        svc.stop(timeout_s=5.0)
