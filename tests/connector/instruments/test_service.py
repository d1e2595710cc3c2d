"""The service against real loopback HTTP servers: refresh, background schedule, no
credentials, failures retried; the schedule computed in Asia/Kolkata."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from connector.instruments import store
from connector.instruments.model import Venue
from connector.instruments.service import (
    InstrumentFetchError,
    InstrumentService,
    ServiceConfig,
    http_exchange_info_fetcher,
    http_kite_csv_fetcher,
    next_refresh,
)
from connector.instruments.universe import IST
from connector.sim.kite_universe import universe_csv
from tests.conftest import shared_fixture
from tests.connector.instruments.support import small_rows
from tests.helpers import wait_until

SMALL = store.StoreConfig(segment_bytes=1 << 20, part_bytes=64 << 10)
# 2026-03-02 10:00 IST, as the service's clock.
NOW_NS = int(dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST).timestamp() * 1e9)


class _Server:
    """A loopback HTTP server answering GETs from a path -> (status, body) table."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, dict(self.headers)))
                status, body = outer.routes.get(self.path, (404, b"not found"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(10)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    try:
        yield srv
    finally:
        srv.close()


def _serve_all(server: _Server) -> None:
    server.routes["/instruments"] = (200, universe_csv(small_rows()))
    spot = shared_fixture("binance/nautilus_examples/http_spot_market_exchange_info.json")
    usdm = shared_fixture("binance/nautilus_examples/http_futures_market_exchange_info.json")
    server.routes["/api/v3/exchangeInfo"] = (200, spot.read_bytes())
    server.routes["/fapi/v1/exchangeInfo"] = (200, usdm.read_bytes())


def _service(server: _Server, tmp_path: Path, **kwargs: object) -> InstrumentService:
    return InstrumentService(
        tmp_path,
        fetch_kite_csv=http_kite_csv_fetcher(
            server.url("/instruments"), lambda: "token key:not-a-real-secret"
        ),
        fetch_binance_exchange_info=http_exchange_info_fetcher(
            {
                "spot": server.url("/api/v3/exchangeInfo"),
                "usdm": server.url("/fapi/v1/exchangeInfo"),
            }
        ),
        config=ServiceConfig(store=SMALL, **kwargs),  # type: ignore[arg-type]
        clock_ns=lambda: NOW_NS,
    )


@pytest.mark.integration
def test_refresh_now_from_loopback_servers(server: _Server, tmp_path: Path) -> None:
    _serve_all(server)
    svc = _service(server, tmp_path)
    result = svc.refresh_now()
    assert result is not None
    venues = {v.venue: v for v in result.report.venues}
    assert venues[Venue.KITE].rows == len(small_rows())
    assert venues[Venue.BINANCE_SPOT].rows == 2 and venues[Venue.BINANCE_USDM].rows == 3
    u = svc.universe
    assert u is not None
    assert u.spot("NIFTY").instrument_token == 256265
    assert u.by_exchange_symbol("BINANCE-USDM:BTCUSDT_220325").expiry == dt.date(2022, 3, 25)
    kite_req = next(h for p, h in server.requests if p == "/instruments")
    assert kite_req["X-Kite-Version"] == "3"
    assert kite_req["Authorization"] == "token key:not-a-real-secret"
    # as_of is the IST date of the clock: the snapshot says so.
    assert result.snapshot.meta["kite"]["as_of"] == "2026-03-02"
    # A fresh service serves it from the WAL.
    again = InstrumentService(tmp_path)
    loaded = again.load()
    assert loaded is not None and len(loaded) == len(u)


@pytest.mark.integration
def test_no_credentials_serves_the_wal_and_says_so(server: _Server, tmp_path: Path) -> None:
    _serve_all(server)
    _service(server, tmp_path).refresh_now()
    svc = InstrumentService(tmp_path)  # no sources at all
    assert svc.refresh_now() is None
    svc.load()
    status = svc.status()
    assert "no Kite credentials" in status["kite"]
    assert status["instruments"] == len(small_rows()) + 5
    assert status["version"] == 1


@pytest.mark.integration
def test_background_refresh_on_start_and_failure_is_retried(
    server: _Server, tmp_path: Path
) -> None:
    server.routes["/instruments"] = (503, b"busy")
    svc = _service(server, tmp_path, binance_markets=(), retry_after_s=0.05)
    svc.start(refresh_on_start=True)
    try:
        wait_until(lambda: "HTTP 503" in svc.last_error, 30, "the failed refresh")
        assert svc.universe is None
        _serve_all(server)  # the venue is back: the retry succeeds
        wait_until(lambda: svc.refreshes >= 1, 30, "the retried refresh")
        assert svc.universe is not None and len(svc.universe) == len(small_rows())
        wait_until(lambda: svc.next_refresh_at is not None and svc.last_error == "", 30, "idle")
        assert svc.next_refresh_at == dt.datetime(2026, 3, 3, 8, 0, tzinfo=IST)
    finally:
        svc.stop()
    assert svc._thread is None


@pytest.mark.unit
def test_fetch_error_is_retryable(server: _Server) -> None:
    with pytest.raises(InstrumentFetchError, match="HTTP 404"):
        http_kite_csv_fetcher(server.url("/missing"))()
    # Nothing listens on port 1: a connection error, also retryable, no secret in it.
    fetch = http_kite_csv_fetcher("http://127.0.0.1:1/instruments", lambda: "token k:SECRET")
    with pytest.raises(InstrumentFetchError) as info:
        fetch()
    assert "SECRET" not in str(info.value)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 07:59 IST -> today 08:00; 08:00 exactly -> tomorrow; 23:00 UTC is 04:30 IST next day.
        (dt.datetime(2026, 3, 2, 7, 59, tzinfo=IST), dt.datetime(2026, 3, 2, 8, 0, tzinfo=IST)),
        (dt.datetime(2026, 3, 2, 8, 0, tzinfo=IST), dt.datetime(2026, 3, 3, 8, 0, tzinfo=IST)),
        (
            dt.datetime(2026, 3, 1, 23, 0, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 2, 8, 0, tzinfo=IST),
        ),
    ],
)
def test_next_refresh_in_ist(now: dt.datetime, expected: dt.datetime) -> None:
    assert next_refresh(now, dt.time(8, 0)) == expected


@pytest.mark.unit
def test_config_rejects_unknown_market() -> None:
    with pytest.raises(ValueError, match="coinm"):
        ServiceConfig(binance_markets=("coinm",))
