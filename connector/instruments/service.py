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
from connector.instruments.model import InstrumentTable, Venue
from connector.instruments.universe import IST, Universe
from pipeline import paths
from pipeline.errors import PipelineError, RetryableError

log = logging.getLogger("connector.instruments")

KiteFetch = Callable[[], bytes]
BinanceFetch = Callable[[str], bytes]
DEFAULT_REFRESH_AT: Final = dt.time(8, 0)
"""Kite publishes the day's dump before the 09:00 pre-open; 08:00 IST is safely after."""


class InstrumentFetchError(RetryableError):
    """A source could not be fetched (network, HTTP status): the refresh is retried later."""


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
            "Kite refresh configured"
            if self._fetch_kite is not None
            else "no Kite credentials: serving the Kite instruments the WAL holds"
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
            updates[Venue.KITE] = parse_kite_csv(self._fetch_kite())
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
                    if self._stop.wait(self.config.retry_after_s):
                        return
                    continue
            now = dt.datetime.fromtimestamp(self._clock_ns() / 1e9, dt.UTC)
            self.next_refresh_at = next_refresh(now, self.config.refresh_at)
            if self._stop.wait((self.next_refresh_at - now).total_seconds()):
                return
            refresh_now = True
