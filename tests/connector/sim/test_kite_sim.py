"""The loopback Kite simulator, driven by raw clients (websockets, httpx) on
port 0; its frames are checked with its own inverse (:func:`parse_frame`)
and with the project's decoder (connector/zerodha/ticker.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import hashlib
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import orjson
import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from connector.sim.kite import (
    FULL_PACKET,
    IST,
    Faults,
    KiteSimulator,
    SimulatorError,
    TickState,
    clock_from_spec,
    encode_frame,
    instrument_of,
    market_open,
    parse_frame,
    price_divisor,
    service,
    token_expiry,
)
from connector.sim.kite_universe import generate_universe
from connector.zerodha.ticker import KiteFrameError, TickerDecoder, parse_text, ticks
from pipeline.errors import ConfigError
from tests.conftest import Children
from tests.helpers import run_bounded as run
from tests.helpers import until

T = TypeVar("T")

OPEN = dt.datetime(2026, 11, 25, 10, 0, tzinfo=IST)  # a Wednesday, 10:00 IST
SUNDAY = dt.datetime(2026, 11, 29, 12, 0, tzinfo=IST)


def sim_at(when: dt.datetime, **kwargs: Any) -> KiteSimulator:
    """A simulator whose market clock stands still at ``when``."""
    kwargs.setdefault("rate", 20.0)
    kwargs.setdefault("heartbeat_s", 0.2)
    return KiteSimulator(clock=lambda: when, **kwargs)


async def send(ws: ClientConnection, action: str, value: Any) -> None:
    await ws.send(orjson.dumps({"a": action, "v": value}).decode())


async def next_binary(ws: ClientConnection, *, data: bool = True, timeout_s: float = 5.0) -> bytes:
    """The next binary frame (a data frame when ``data``: heartbeats skipped); texts skipped."""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes) and (len(message) > 1 or not data):
                return message


async def next_text(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            message = await ws.recv()
            if isinstance(message, str):
                return parse_text(message)


async def quiet_frame(ws: ClientConnection, timeout_s: float = 5.0) -> bytes:
    """After ``sim.pause()``: the last data frame before a heartbeat, i.e. the last one sent."""
    last = b""
    async with asyncio.timeout(timeout_s):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes):
                if len(message) == 1:
                    if last:
                        return last
                else:
                    last = message


async def login_token(sim: KiteSimulator) -> str:
    return sim.issue_access_token()


def assert_matches_truth(sim: KiteSimulator, frame: bytes) -> int:
    """Every packet of ``frame`` equals the simulator's truth for its token,
    raw (parse_frame) and through the project's decoder (ticks); returns the count."""
    packets = parse_frame(frame)
    decoded = ticks(frame)
    assert len(decoded) == len(packets)
    for packet, tick in zip(packets, decoded, strict=True):
        token = packet["instrument_token"]
        truth = sim.truth(token)
        assert truth is not None
        for name, value in packet.items():
            if name in ("length", "mode", "change"):
                continue
            assert truth[name] == value, (token, name)
        divisor = price_divisor(token)
        assert tick["instrument_token"] == token
        assert tick["last_price"] == pytest.approx(truth["last_price"] / divisor)
        if packet["length"] == 184:
            assert tick["volume_traded"] == truth["volume_traded"]
            assert tick["oi"] == truth["oi"]
            assert [(d["quantity"], d["orders"]) for d in tick["depth"]["buy"]] == [
                (q, o) for q, _, o in truth["bids"]
            ]
            assert [d["price"] for d in tick["depth"]["sell"]] == pytest.approx(
                [p / divisor for _, p, _ in truth["asks"]]
            )
    return len(packets)


# ---------------------------------------------------------------------------
# pure parts


@pytest.mark.unit
def test_market_hours_per_segment() -> None:
    nse, cds, mcx, indices = 1, 3, 7, 9
    monday = dt.datetime(2026, 11, 23, tzinfo=IST)

    def at(hour: int, minute: int) -> dt.datetime:
        return monday.replace(hour=hour, minute=minute)

    assert market_open(nse, at(9, 15)) and market_open(nse, at(15, 29))
    assert not market_open(nse, at(9, 14)) and not market_open(nse, at(15, 30))
    assert market_open(indices, at(10, 0))
    assert market_open(cds, at(9, 0)) and not market_open(cds, at(17, 0))
    assert market_open(mcx, at(23, 29)) and not market_open(mcx, at(23, 30))
    assert not market_open(mcx, at(8, 59))
    assert not market_open(nse, SUNDAY) and not market_open(mcx, SUNDAY)
    assert not market_open(nse, at(10, 0), holidays={monday.date()})
    # Aware datetimes in any zone: 04:00 UTC is 09:30 IST.
    assert market_open(nse, dt.datetime(2026, 11, 23, 4, 0, tzinfo=dt.UTC))


@pytest.mark.unit
def test_token_expiry_is_next_six_am_ist() -> None:
    assert token_expiry(OPEN) == dt.datetime(2026, 11, 26, 6, 0, tzinfo=IST)
    early = dt.datetime(2026, 11, 25, 5, 59, tzinfo=IST)
    assert token_expiry(early) == dt.datetime(2026, 11, 25, 6, 0, tzinfo=IST)
    six = dt.datetime(2026, 11, 25, 6, 0, tzinfo=IST)
    assert token_expiry(six) == dt.datetime(2026, 11, 26, 6, 0, tzinfo=IST)


@pytest.mark.unit
def test_clock_specs() -> None:
    assert clock_from_spec("real")().tzinfo is not None
    opened = clock_from_spec("open")()
    assert market_open(1, opened)
    assert not market_open(1, clock_from_spec("closed")())
    assert clock_from_spec("2026-11-25T10:00:00+05:30")() >= OPEN
    with pytest.raises(SimulatorError, match="clock 'noon'"):
        clock_from_spec("noon")
    with pytest.raises(SimulatorError, match="no timezone"):
        clock_from_spec("2026-11-25T10:00:00")


@pytest.mark.unit
def test_faults_parse() -> None:
    faults = Faults.parse("disconnect=0.5, stall_seconds=2")
    assert faults.disconnect == 0.5 and faults.stall_seconds == 2.0
    with pytest.raises(SimulatorError, match="nope"):
        Faults.parse("nope=1")
    with pytest.raises(SimulatorError, match="out of range"):
        Faults.parse("malformed=2")


@pytest.mark.unit
@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([8, 28, 32, 44, 164, 184, 13]), st.integers(0, 4)),
        max_size=6,
    ),
    st.randoms(use_true_random=False),
)
def test_encode_parse_round_trip(blocks: list[tuple[int, int]], rnd: Any) -> None:
    arrays = [
        np.frombuffer(rnd.randbytes(width * n), dtype=np.uint8).reshape(n, width)
        for width, n in blocks
    ]
    frame = encode_frame(arrays)
    packets = parse_frame(frame)
    assert [p["length"] for p in packets] == [w for w, n in blocks for _ in range(n)]
    raw = [bytes(row) for a in arrays for row in a]
    for packet, data in zip(packets, raw, strict=True):
        if packet["length"] != 13:
            token = int.from_bytes(data[:4], "big", signed=True)
            assert packet["instrument_token"] == token
    if packets:  # every truncation is caught, at every byte
        with pytest.raises(ValueError, match=r"frame has|length missing"):
            parse_frame(frame[: len(frame) - 1])


@pytest.mark.unit
def test_walk_keeps_a_consistent_book() -> None:
    rows = generate_universe(OPEN.date(), 3, 0.02)
    state = TickState(seed=5, capacity=16)  # grows: byte order must survive
    instruments = [instrument_of(r) for r in rows]
    slots = np.array([state.slot(inst, 0) for inst in instruments], dtype=np.int64)
    for step in range(200):
        state.step(slots, 1000 + step)
    r = state.rows[: state.size]
    traded = np.array([inst.segment_id != 9 for inst in instruments])
    ltp = r["last_price"].astype(np.int64)
    tick = state.tick[: state.size]
    assert np.all(ltp % tick == 0) and np.all(ltp > 0)
    assert np.all((r["low"] <= ltp) & (ltp <= r["high"]))
    px = r["depth"]["price"].astype(np.int64)[traded]
    qty = r["depth"]["quantity"].astype(np.int64)[traded]
    bids, asks = px[:, :5], px[:, 5:]
    live = bids > 0
    assert np.all(np.diff(np.where(live, bids, -1), axis=1) <= 0)  # best first
    assert np.all(np.diff(asks, axis=1) > 0)
    assert np.all(bids[:, 0] < asks[:, 0])
    assert np.all((bids[:, 0] <= ltp[traded]) & (ltp[traded] <= asks[:, 0]))
    assert np.all(r["total_buy_quantity"][traded] >= qty[:, :5].sum(axis=1))
    assert np.all(r["total_sell_quantity"][traded] >= qty[:, 5:].sum(axis=1))
    assert np.all(r["volume_traded"][traded] > 0)
    assert r.dtype == FULL_PACKET


# ---------------------------------------------------------------------------
# the ticker against raw clients


@pytest.mark.integration
def test_three_connections_of_3000_full_tokens_and_the_limits() -> None:
    async def scenario() -> None:
        async with sim_at(OPEN, scale=0.25, rate=5.0) as sim:
            tokens = [t for t in sim.tokens() if t & 0xFF != 9][:9001]
            assert len(tokens) == 9001
            access = await login_token(sim)
            url = sim.ticker_url(access)
            conns = [await connect(url, max_size=2**21) for _ in range(3)]
            try:
                # A 4th connection for the same API key is refused at the handshake.
                with pytest.raises(InvalidStatus) as refused:
                    await connect(url)
                assert refused.value.response.status_code == 429
                for i, ws in enumerate(conns):
                    chunk = tokens[i * 3000 : (i + 1) * 3000]
                    await send(ws, "subscribe", chunk)
                    await send(ws, "mode", ["full", chunk])
                # The 3001st token of a connection is refused with an error message.
                await send(conns[0], "subscribe", [tokens[9000]])
                error = await next_text(conns[0])
                assert error["type"] == "error" and "3000" in error["data"]
                for ws in conns:
                    frame = await next_binary(ws)
                    packets = parse_frame(frame)
                    assert len(packets) == 3000
                    assert {p["length"] for p in packets} == {184}
                sim.pause()
                checked = 0
                for ws in conns:
                    checked += assert_matches_truth(sim, await quiet_frame(ws))
                assert checked == 9000
                assert sim.counters["tokens_refused"] == 1
                assert sum(c["tokens"] for c in sim.connections()) == 9000
            finally:
                for ws in conns:
                    await ws.close()

    run(scenario(), 60)


@pytest.mark.integration
def test_every_packet_size_and_the_old_full_layout() -> None:
    async def scenario(layout: int) -> None:
        async with sim_at(OPEN, full_layout=layout) as sim:
            nse = sim.tokens(3, segment="NSE")
            cds = sim.tokens(1, segment="CDS-FUT")
            nifty, bank = 256265, 260105
            async with connect(sim.ticker_url(await login_token(sim))) as ws:
                await send(ws, "subscribe", [*nse, *cds, nifty, bank])
                await send(ws, "mode", ["ltp", [nse[0]]])
                await send(ws, "mode", ["full", [nse[1], *cds, bank]])
                sim.pause()
                frame = await quiet_frame(ws)
                lengths = sorted(p["length"] for p in parse_frame(frame))
                assert lengths == sorted([8, 44, layout, layout, 28, 32])
                assert assert_matches_truth(sim, frame) == 6
                decoder = TickerDecoder()
                decoder.decode(frame, 0)
                assert decoder.counters[f"packets_{layout}"] == 2
                assert decoder.counters["packets_28"] == decoder.counters["packets_32"] == 1
                by_token = {t["instrument_token"]: t for t in ticks(frame)}
                assert by_token[cds[0]]["last_price"] == pytest.approx(
                    sim.truth(cds[0])["last_price"] / 10**7  # type: ignore[index]
                )
                assert by_token[nifty]["tradable"] is False and by_token[nse[2]]["mode"] == "quote"
                await send(ws, "unsubscribe", [nse[2], nifty])
                sim.resume()
                await until(lambda: sim.connections()[0]["tokens"] == 4, what="unsubscribe")

    run(scenario(184))
    run(scenario(164))


@pytest.mark.integration
def test_closed_market_snapshot_then_heartbeats() -> None:
    async def scenario() -> None:
        async with sim_at(SUNDAY, heartbeat_s=0.1) as sim:
            token = sim.tokens(1, segment="NSE")[0]
            async with connect(sim.ticker_url(await login_token(sim))) as ws:
                await send(ws, "subscribe", [token])
                first = await next_binary(ws)
                assert [p["instrument_token"] for p in parse_frame(first)] == [token]
                assert_matches_truth(sim, first)
                heartbeats = 0
                async with asyncio.timeout(5):
                    while heartbeats < 3:
                        message = await ws.recv()
                        assert message == b"\x00", "no data while the market is closed"
                        heartbeats += 1
                assert sim.stats()["heartbeats_sent"] >= 3

    run(scenario())


@pytest.mark.integration
def test_handshake_auth_and_token_expiry() -> None:
    async def scenario() -> None:
        async with sim_at(OPEN) as sim:
            with pytest.raises(InvalidStatus) as bad:
                await connect(sim.ticker_url("not-a-token"))
            assert bad.value.response.status_code == 403
            assert orjson.loads(bad.value.response.body)["error_type"] == "TokenException"
            access = await login_token(sim)
            async with connect(sim.ticker_url(access)) as ws:
                await send(ws, "subscribe", sim.tokens(1, segment="NSE"))
                await next_binary(ws)
                assert sim.expire_tokens() == 1
                with pytest.raises(InvalidStatus) as expired:
                    await connect(sim.ticker_url(access))
                assert expired.value.response.status_code == 403
                async with httpx.AsyncClient() as client:
                    response = await client.get(
                        f"{sim.http_url}/user/profile",
                        headers={"Authorization": f"token {sim.account.api_key}:{access}"},
                    )
                assert response.status_code == 403
                assert response.json() == {
                    "status": "error",
                    "message": "Token is invalid or has expired.",
                    "data": None,
                    "error_type": "TokenException",
                }
                # The open connection keeps streaming (the venue checks at the handshake).
                await next_binary(ws)

    run(scenario())


@pytest.mark.integration
def test_faults_disconnect_stall_malformed_text() -> None:
    async def scenario() -> None:
        async with sim_at(OPEN, heartbeat_s=0.1) as sim:
            token = sim.tokens(1, segment="NSE")[0]
            url = sim.ticker_url(await login_token(sim))
            async with connect(url) as ws:
                await send(ws, "subscribe", [token])
                await next_binary(ws)
                # Malformed: a truncated frame, then an unknown packet length.
                assert sim.send_malformed("truncated") == 1
                decoder = TickerDecoder()
                with pytest.raises(KiteFrameError):
                    while True:
                        decoder.decode(await next_binary(ws), 0)
                assert sim.send_malformed("unknown_length") == 1
                while True:
                    frame = await next_binary(ws)
                    if len(parse_frame(frame)) == 2:
                        break
                records = decoder.decode(frame, 0)
                assert decoder.counters["unknown_length"] == 1 and len(records) == 1
                # Text messages on demand.
                assert sim.send_text("order", {"order_id": "1", "status": "COMPLETE"}) == 1
                order = await next_text(ws)
                assert order == {"type": "order", "data": {"order_id": "1", "status": "COMPLETE"}}
                # Stall: nothing at all (not even heartbeats), the connection stays open.
                sim.stall(2.0)
                while True:  # what was already on the wire arrives, then silence
                    try:
                        await asyncio.wait_for(ws.recv(), 0.3)
                    except TimeoutError:
                        break
                assert sim.stalled
                await until(lambda: not sim.stalled, 5, "the stall to end by itself")
                await next_binary(ws, data=False, timeout_s=5)  # after the stall: data again
                assert sim.injected["stall"] == 1
                # Disconnect: the connection is aborted.
                assert await sim.disconnect_all() == 1
                with pytest.raises(ConnectionClosed):
                    async with asyncio.timeout(5):
                        while True:
                            await ws.recv()
            assert sim.injected["disconnect"] == 1
            # A new connection works afterwards.
            async with connect(url) as ws:
                await send(ws, "subscribe", [token])
                await next_binary(ws)

    run(scenario())


@pytest.mark.integration
def test_bad_client_messages_get_error_texts() -> None:
    async def scenario() -> None:
        sim = sim_at(OPEN)
        async with sim, connect(sim.ticker_url(await login_token(sim))) as ws:
            for message in (
                "not json",
                '{"a": "subscribe", "v": "x"}',
                '{"a": "mode", "v": ["fast", [1]]}',
                '{"a": "dance"}',
            ):
                await ws.send(message)
                reply = await next_text(ws)
                assert reply["type"] == "error" and reply["data"].startswith("Invalid")
            # Unknown tokens are ignored (counted).
            await send(ws, "subscribe", [123])
            await until(lambda: sim.counters["unknown_tokens"] == 1, what="unknown token")

    run(scenario())


# ---------------------------------------------------------------------------
# REST


@pytest.mark.integration
def test_instruments_csv_gzip_and_errors() -> None:
    async def scenario() -> None:
        async with sim_at(OPEN) as sim, httpx.AsyncClient(base_url=sim.http_url) as client:
            plain = await client.get("/instruments", headers={"Accept-Encoding": "identity"})
            assert plain.status_code == 200
            assert plain.headers["content-type"] == "text/csv"
            lines = plain.text.splitlines()
            assert lines[0].startswith("instrument_token,exchange_token,tradingsymbol")
            assert len(lines) - 1 == len(sim.instruments)
            zipped = await client.get("/instruments", headers={"Accept-Encoding": "gzip"})
            assert zipped.headers["content-encoding"] == "gzip"
            assert zipped.text == plain.text  # httpx inflated it
            async with client.stream(
                "GET", "/instruments", headers={"Accept-Encoding": "gzip"}
            ) as stream:
                body = b"".join([chunk async for chunk in stream.aiter_raw()])
            assert gzip.decompress(body).decode() == plain.text
            raw = await client.get("/instruments/nse", headers={"Accept-Encoding": "gzip"})
            nse = raw.text.splitlines()[1:]
            assert nse and all(line.endswith(",NSE") for line in nse)
            bad = await client.get("/instruments/XYZ")
            assert bad.status_code == 400 and bad.json()["error_type"] == "InputException"
            missing = await client.get("/nowhere")
            assert missing.status_code == 404 and missing.json()["status"] == "error"
            denied = await client.get("/user/profile")
            assert denied.status_code == 403
            assert denied.json()["error_type"] == "TokenException"
            stats = (await client.get("/sim/stats")).json()
            assert stats["counters"]["http_200"] >= 3
            control = await client.get("/sim/control", params={"action": "expire_tokens"})
            assert control.json() == {"expired": 0}

    run(scenario())


# ---------------------------------------------------------------------------
# the command and the service


@pytest.mark.integration
def test_simulate_kite_command(children: Children) -> None:
    code = "from connector.sim.kite_cli import kite; kite()"
    proc = children.popen(
        [sys.executable, "-c", code, "--json", "--clock", "open", "--scale", "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    info = orjson.loads(proc.stdout.readline())
    assert info["env"]["ZERODHA_USER_ID"] == "SIM001" and info["example_tokens"]
    response = httpx.get(f"{info['api_url']}/instruments/NSE", timeout=5)
    assert response.status_code == 200
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr is not None and b"stopped:" in proc.stderr.read()


class _Context:
    """A stand-in for the supervisor's ServiceContext (ready / stopping)."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self.data_dir = data_dir or Path("/nonexistent")
        self.is_ready = threading.Event()
        self.stop = threading.Event()

    def ready(self) -> None:
        self.is_ready.set()

    def stopping(self) -> bool:
        return self.stop.is_set()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.integration
def test_service_entry_point(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ws_port"):
        service({"port": 1}, _Context())
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        service({"port": 1, "ws_port": 2, "colour": "red"}, _Context())
    port, ws_port = _free_port(), _free_port()
    context = _Context(tmp_path)
    params = {
        "port": port,
        "ws_port": ws_port,
        "scale": 0.02,
        "clock": "open",
        "api_key": "k1",
        "session_cache": True,
    }
    errors: list[BaseException] = []

    def body() -> None:
        try:
            service(params, context)
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    try:
        assert context.is_ready.wait(10), errors
        stats = httpx.get(f"http://127.0.0.1:{port}/sim/stats", timeout=5).json()
        assert stats["instruments"] > 0
        # The session it cached works on its API.
        cached = orjson.loads((tmp_path / "run" / "zerodha_session.json").read_bytes())
        assert cached["api_key"] == "k1" and cached["api_url"] == f"http://127.0.0.1:{port}"
        profile = httpx.get(
            f"http://127.0.0.1:{port}/user/profile",
            headers={"Authorization": f"token k1:{cached['access_token']}"},
            timeout=5,
        )
        assert profile.status_code == 200
    finally:
        context.stop.set()
        thread.join(10)
    assert not thread.is_alive() and not errors


@pytest.mark.unit
def test_bad_options_are_clear() -> None:
    with pytest.raises(SimulatorError, match="loopback"):
        KiteSimulator(host="8.8.8.8")
    with pytest.raises(SimulatorError, match="full_layout"):
        KiteSimulator(full_layout=100)
    with pytest.raises(SimulatorError, match="rate"):
        KiteSimulator(rate=0)


@pytest.mark.integration
def test_answers_have_the_recorded_mock_shapes() -> None:
    """/session/token and /user/profile carry the keys of the kiteconnect mocks."""
    from tests.conftest import shared_fixture

    def keys(relative: str) -> set[str]:
        return set(orjson.loads(shared_fixture(relative).read_bytes())["data"])

    session_keys, profile_keys = keys("kite/generate_session.json"), keys("kite/profile.json")

    async def scenario() -> None:
        async with sim_at(OPEN) as sim, httpx.AsyncClient(base_url=sim.http_url) as client:
            account = sim.account
            login = await client.post(
                "/api/login", data={"user_id": account.user_id, "password": account.password}
            )
            request_id = login.json()["data"]["request_id"]
            totp = pyotp.TOTP(account.totp_secret).now()
            form = {"user_id": account.user_id, "request_id": request_id, "twofa_value": totp}
            assert (await client.post("/api/twofa", data=form)).status_code == 200
            redirect = await client.get(
                "/connect/login", params={"v": "3", "api_key": account.api_key}
            )
            assert redirect.status_code == 302
            final = await client.get(redirect.headers["location"])
            location = httpx.URL(final.headers["location"])
            assert location.host == "127.0.0.1" and location.path == "/kite/redirect"
            assert location.params["status"] == "success"
            token = location.params["request_token"]
            check = hashlib.sha256((account.api_key + token + account.api_secret).encode())
            session = await client.post(
                "/session/token",
                data={
                    "api_key": account.api_key,
                    "request_token": token,
                    "checksum": check.hexdigest(),
                },
            )
            data = session.json()["data"]
            assert set(data) == session_keys
            again = await client.post(
                "/session/token",
                data={
                    "api_key": account.api_key,
                    "request_token": token,
                    "checksum": check.hexdigest(),
                },
            )
            assert again.status_code == 403  # a request token is good once
            profile = await client.get(
                "/user/profile",
                headers={"Authorization": f"token {account.api_key}:{data['access_token']}"},
            )
            assert set(profile.json()["data"]) == profile_keys
            logout = await client.delete(
                "/session/token",
                params={"api_key": account.api_key, "access_token": data["access_token"]},
            )
            assert logout.json() == {"status": "success", "data": True}
            assert sim.counters["logins"] == 1

    run(scenario())
