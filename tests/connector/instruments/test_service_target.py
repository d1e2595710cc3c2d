"""The instrument service as a supervisor service target, against the loopback
Kite and Binance simulators: it refreshes into the WAL before saying it is
ready, a restart recovers the same ids, and without a session it serves the WAL."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from connector.instruments import store
from connector.instruments.model import Venue
from connector.instruments.service import exchange_info_urls, parse_refresh_at, service
from connector.zerodha.auth import ENV_VARS
from pipeline import paths
from pipeline.errors import ConfigError
from tests.connector.instruments.loopback import (
    Sims,
    context,
    run_service,
    running_sims,
    stop_service,
)

pytestmark = pytest.mark.integration


def params(sims: Sims) -> dict[str, object]:
    return {
        "api_url": sims.kite.http_url,
        "binance": {"spot": sims.binance_rest},
        "refresh_at": "08:00",
    }


def test_refreshes_before_ready_and_a_restart_recovers_the_same_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "connector.instruments")
    with running_sims() as sims:
        sims.cache_session(tmp_path)
        ctx, thread = run_service(params(sims), tmp_path)
        # ready means the store already holds both venues
        first = store.recover(paths.instruments_wal_dir(tmp_path)).snapshot
        assert first is not None and first.version == 1
        assert {"kite", "binance_spot"} <= set(first.meta)
        assert len(first.listed) == len(sims.kite.instruments) + 2
        assert any("instruments v1: kite:" in m for m in caplog.messages)
        assert any("+2 added" in m for m in caplog.messages)
        stop_service(ctx, thread)
        ids = dict(
            zip(first.listed.identity_keys(), first.listed.numeric["inst"].tolist(), strict=True)
        )

        caplog.clear()
        ctx, thread = run_service(params(sims), tmp_path)
        stop_service(ctx, thread)
    second = store.recover(paths.instruments_wal_dir(tmp_path)).snapshot
    assert second is not None and second.version == 2
    assert any("recovered v1" in m for m in caplog.messages)
    assert any("+0 added, -0 removed" in m for m in caplog.messages)
    again = dict(
        zip(second.listed.identity_keys(), second.listed.numeric["inst"].tolist(), strict=True)
    )
    assert again == ids  # same instruments, same dense ids
    assert second.next_inst == first.next_inst


def test_without_a_session_it_serves_the_wal_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ENV_VARS.values():
        monkeypatch.delenv(var, raising=False)  # no credentials: the cache is the only source
    caplog.set_level(logging.INFO, "connector.instruments")
    with running_sims() as sims:
        sims.cache_session(tmp_path)
        ctx, thread = run_service(params(sims), tmp_path)
        stop_service(ctx, thread)
        paths.run_dir(tmp_path).joinpath("zerodha_session.json").unlink()
        caplog.clear()
        ctx, thread = run_service(params(sims), tmp_path)
        stop_service(ctx, thread)
    text = "\n".join(caplog.messages)
    assert "no Zerodha session" in text and "serving the Kite instruments the WAL holds" in text
    snap = store.recover(paths.instruments_wal_dir(tmp_path)).snapshot
    assert snap is not None and snap.version == 2  # Binance refreshed, Kite kept from v1
    venues = set(snap.listed.numeric["venue"].tolist())
    assert venues == {int(Venue.KITE), int(Venue.BINANCE_SPOT)}


def test_an_unreachable_source_still_gets_ready_on_what_the_wal_holds(tmp_path: Path) -> None:
    with running_sims() as sims:
        dead = f"http://127.0.0.1:{sims.spot.port}"
    # the simulators are gone: the refresh fails, the service is ready on an empty store
    ctx, thread = run_service({"binance": {"spot": dead}, "retry_after_s": 60}, tmp_path)
    stop_service(ctx, thread)
    assert store.recover(paths.instruments_wal_dir(tmp_path)).snapshot is None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"refresh_at": "8am"}, "HH:MM"),
        ({"binance": {"coinm": "http://127.0.0.1:1"}}, "unknown market 'coinm'"),
        ({"url": "x"}, "unknown key 'url'"),
    ],
)
def test_bad_params_are_config_errors(tmp_path: Path, bad: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        service(bad, context(tmp_path))


def test_param_helpers() -> None:
    assert parse_refresh_at("07:45").hour == 7
    assert exchange_info_urls({"spot": "http://h:1/", "usdm": "http://h:2"}) == {
        "spot": "http://h:1/api/v3/exchangeInfo",
        "usdm": "http://h:2/fapi/v1/exchangeInfo",
    }
    full = "http://h:1/fapi/v1/exchangeInfo"
    assert exchange_info_urls({"usdm": full}) == {"usdm": full}
