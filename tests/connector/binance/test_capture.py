"""Reading recorded Binance traffic (connector/binance/capture.py)."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.binance import capture
from connector.binance.capture import CaptureError, Message
from pipeline.errors import DataError
from tests.conftest import shared_fixture

pytestmark = pytest.mark.unit

CRYPTOFEED = "binance/cryptofeed"
WSS = "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade"
DEPTH = '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512068,"s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}}'
SNAP = '{"lastUpdateId":499869752,"bids":[["0.35210000","672.00000000"]],"asks":[]}'
FUT_SNAP = '{"lastUpdateId":600859605926,"E":1626992741264,"T":1626992741261,"bids":[],"asks":[]}'
REST_URL = "https://api.binance.com/api/v3/depth?symbol=btcusdt&limit=1000"


def write(path: Path, lines: list[str], *, gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fields(m: Message) -> tuple[int, str, bytes, str, str]:
    """A message without its source (which names the file)."""
    return (m.recv_ns, m.kind, m.body, m.url, m.symbol)


CRYPTOFEED_LINES = [
    f"{WSS} <-> 1633998511.159679",
    f"1633998512.0633569: {DEPTH}",
    f"{REST_URL} -> 1633998512.320639: {SNAP}",
    "",
    'configuration: {"l2_book":["BTC-USDT"]}',
    f"1633998513: {DEPTH}",
]


def test_cryptofeed_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "BINANCE.ws.1.0", CRYPTOFEED_LINES)
    messages = list(capture.read(path))
    assert [fields(m) for m in messages] == [
        (1633998511_159679000, "open", b"", WSS, ""),
        (1633998512_063356900, "ws", DEPTH.encode(), "", ""),
        (1633998512_320639000, "rest", SNAP.encode(), REST_URL, "BTCUSDT"),
        (1633998513_000000000, "ws", DEPTH.encode(), "", ""),
    ]
    assert [m.source for m in messages] == [f"{path}:{n}" for n in (1, 2, 3, 6)]
    assert all(isinstance(m.recv_ns, int) for m in messages)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("capture") / "times"


@settings(max_examples=200, deadline=None)
@given(whole=st.integers(0, 4_000_000_000), frac=st.from_regex(r"\A[0-9]{0,9}\Z"))
def test_receive_time_is_exact_decimal_seconds(scratch: Path, whole: int, frac: str) -> None:
    text = f"{whole}.{frac}" if frac else str(whole)
    expected = int(Decimal(text) * 10**9)
    write(scratch, [f"{WSS} <-> {text}", f"{text}: {DEPTH}", f"{REST_URL} -> {text}: {SNAP}"])
    messages = list(capture.read(scratch))
    assert [(m.kind, m.recv_ns) for m in messages] == [
        ("open", expected),
        ("ws", expected),
        ("rest", expected),
    ]


def test_receive_time_has_no_float_rounding(tmp_path: Path) -> None:
    cases = {
        "1633998512.0633569": 1633998512063356900,
        "1626992741.301402": 1626992741301402000,
        "1633998512.999999999": 1633998512999999999,
        "1633998512.000000001": 1633998512000000001,
    }
    path = write(tmp_path / "c", [f"{ts}: {DEPTH}" for ts in cases])
    assert [m.recv_ns for m in capture.read(path)] == list(cases.values())
    assert float("1633998512.000000001") * 1e9 != 1633998512000000001, "float would round"


def test_rest_symbol_comes_from_the_url_query(tmp_path: Path) -> None:
    lines = [
        f"https://fapi.binance.com/fapi/v1/depth?limit=1000&symbol=SUSHIUSDT -> 1626992741.301402: {FUT_SNAP}",
        'https://api.binance.com/api/v3/exchangeInfo -> 1634000000.5: {"symbols":[]}',
    ]
    first, second = capture.read(write(tmp_path / "r", lines))
    assert (first.kind, first.symbol, first.body) == ("rest", "SUSHIUSDT", FUT_SNAP.encode())
    assert first.url == "https://fapi.binance.com/fapi/v1/depth?limit=1000&symbol=SUSHIUSDT"
    assert (second.kind, second.symbol, second.recv_ns) == ("rest", "", 1634000000_500000000)


def test_plain_lines_ws_or_rest_by_last_update_id(tmp_path: Path) -> None:
    bare = '{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"pu":0,"b":[],"a":[]}'
    trade = '{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":true}'
    pretty = '{"lastUpdateId": 5, "bids": [], "asks": []}'
    lines = [
        f"1633998512063356900 {DEPTH}",
        f"1633998512063356901 {SNAP}",
        f"1633998512063356902 {bare}",
        f"1633998512063356903 {FUT_SNAP}",
        f"1633998512063356904 {trade}",
        f"1633998512063356905 {pretty}",
        '1633998512063356906 {"result":null,"id":1}',
    ]
    messages = list(capture.read(write(tmp_path / "plain", lines)))
    assert [(m.recv_ns, m.kind) for m in messages] == [
        (1633998512063356900, "ws"),
        (1633998512063356901, "rest"),
        (1633998512063356902, "ws"),
        (1633998512063356903, "rest"),
        (1633998512063356904, "ws"),
        (1633998512063356905, "rest"),
        (1633998512063356906, "ws"),
    ]
    assert [m.body for m in messages] == [line.split(" ", 1)[1].encode() for line in lines]
    assert all(m.symbol == "" and m.url == "" for m in messages), "a plain snapshot has no symbol"


@pytest.mark.parametrize("name", ["capture.txt", "capture.gz", "capture"])
def test_gzip_is_detected_by_content_not_name(tmp_path: Path, name: str) -> None:
    plain = list(capture.read(write(tmp_path / "reference", CRYPTOFEED_LINES)))
    packed = write(tmp_path / name, CRYPTOFEED_LINES, gz=True)
    assert packed.read_bytes()[:2] == b"\x1f\x8b"
    assert [fields(m) for m in capture.read(packed)] == [fields(m) for m in plain]
    # And plain text named like a gzip file is read as plain text.
    fake = write(tmp_path / f"plain-{name}.gz", CRYPTOFEED_LINES)
    assert [fields(m) for m in capture.read(fake)] == [fields(m) for m in plain]


def test_crlf_and_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "crlf"
    path.write_bytes(f"1633998512.5: {DEPTH}\r\n\r\n".encode())
    (message,) = capture.read(path)
    assert message.body == DEPTH.encode()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert list(capture.read(empty)) == []


BAD_LINES = [
    "garbage here",
    "12a {}",
    "1633998512.x: {}",
    f"{WSS} <-> notatime",
    f"{REST_URL} -> 12.5x: {SNAP}",
    "-5 {}",
]


@pytest.mark.parametrize("bad", BAD_LINES)
def test_bad_line_raises_capture_error_naming_file_and_line(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path / "bad", [f"1633998512.1: {DEPTH}", bad, f"1633998512.2: {DEPTH}"])
    reader = capture.read(path)
    assert next(reader).recv_ns == 1633998512_100000000
    with pytest.raises(CaptureError, match=f"^{path}:2: "):
        next(reader)
    assert issubclass(CaptureError, DataError)


@pytest.mark.parametrize("bad", BAD_LINES)
def test_bad_line_goes_to_the_errors_list(tmp_path: Path, bad: str) -> None:
    path = write(
        tmp_path / "bad", [f"1633998512.1: {DEPTH}", bad, "", bad, f"1633998512.2: {DEPTH}"]
    )
    errors: list[str] = []
    messages = list(capture.read(path, errors))
    assert [m.recv_ns for m in messages] == [1633998512_100000000, 1633998512_200000000]
    assert len(errors) == 2
    assert errors[0].startswith(f"{path}:2: ") and errors[1].startswith(f"{path}:4: ")


def test_read_many_merges_by_receive_time(tmp_path: Path) -> None:
    a = write(tmp_path / "a", [f"1.{n}: {DEPTH}" for n in (1, 3, 5, 5)])
    b = write(tmp_path / "b", [f"{REST_URL} -> 1.{n}: {SNAP}" for n in (2, 4, 5, 6)], gz=True)
    c = write(tmp_path / "c", [f"1000000000{n} {SNAP}" for n in (0, 7)])
    errors: list[str] = []
    merged = list(capture.read_many([a, b, c], errors))
    assert [m.recv_ns for m in merged] == sorted(m.recv_ns for m in merged)
    assert len(merged) == 10 and errors == []
    at_5 = [m.source for m in merged if m.recv_ns == 1_500_000_000]
    assert at_5 == [f"{a}:3", f"{a}:4", f"{b}:3"], "ties keep file order, then argument order"
    # Every file's own order survives the merge.
    for path in (a, b, c):
        own = [m.source for m in merged if m.source.startswith(f"{path}:")]
        assert own == [m.source for m in capture.read(path)]


def test_read_many_collects_errors_of_every_file(tmp_path: Path) -> None:
    a = write(tmp_path / "a", [f"1.1: {DEPTH}", "bad a"])
    b = write(tmp_path / "b", ["bad b", f"1.2: {DEPTH}"])
    errors: list[str] = []
    assert len(list(capture.read_many([a, b], errors))) == 2
    assert sorted(e.split(": ")[0] for e in errors) == [f"{a}:2", f"{b}:1"]


def test_companions(tmp_path: Path) -> None:
    for name in ["BINANCE.ws.1.0", "BINANCE.http.0.0", "BINANCE.http.0.1", "BINANCE_FUTURES.http.0.0",
                 "BINANCE.0", "OTHER.ws.1.0.gz", "OTHER.http.0.0.gz"]:  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "BINANCE.http.dir").mkdir()
    assert capture.companions(tmp_path / "BINANCE.ws.1.0") == [
        tmp_path / "BINANCE.http.0.0",
        tmp_path / "BINANCE.http.0.1",
    ]
    assert capture.companions(tmp_path / "OTHER.ws.1.0.gz") == [tmp_path / "OTHER.http.0.0.gz"]
    assert capture.companions(tmp_path / "BINANCE.http.0.0") == []
    assert capture.companions(tmp_path / "BINANCE.0") == []
    (tmp_path / "LONE.ws.1.0").write_bytes(b"")
    assert capture.companions(tmp_path / "LONE.ws.1.0") == []


# -- the recorded captures -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "opens", "frames", "first_ns"),
    [
        ("BINANCE.ws.1.0", 1, 265, 1633998512_063356900),
        ("BINANCE_FUTURES.ws.1.0", 1, 1535, 1626992741_062170000),
    ],
)
def test_recorded_ws_captures(name: str, opens: int, frames: int, first_ns: int) -> None:
    path = shared_fixture(f"{CRYPTOFEED}/{name}")
    messages = list(capture.read(path))
    assert [m.kind for m in messages] == ["open"] * opens + ["ws"] * frames
    assert messages[0].url.startswith("wss://") and "streams=" in messages[0].url
    assert messages[1].recv_ns == first_ns
    assert [m.recv_ns for m in messages[1:]] == sorted(m.recv_ns for m in messages[1:])
    for m in messages[1:]:
        envelope = json.loads(m.body)
        assert set(envelope) == {"stream", "data"}, m.source


@pytest.mark.parametrize(
    ("name", "symbols"),
    [
        ("BINANCE.http.0.0", ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]),
        ("BINANCE_FUTURES.http.0.0", ["SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT"]),
    ],
)
def test_recorded_rest_captures(name: str, symbols: list[str]) -> None:
    messages = list(capture.read(shared_fixture(f"{CRYPTOFEED}/{name}")))
    assert [m.kind for m in messages] == ["rest"] * 4
    assert [m.symbol for m in messages] == symbols
    assert all("lastUpdateId" in json.loads(m.body) for m in messages)


def test_recorded_exchange_info_capture_skips_configuration() -> None:
    messages = list(capture.read(shared_fixture(f"{CRYPTOFEED}/BINANCE.0")))
    assert len(messages) == 1
    (info,) = messages
    assert (info.kind, info.symbol) == ("rest", "")
    assert info.url == "https://api.binance.com/api/v3/exchangeInfo"
    assert len(json.loads(info.body)["symbols"]) == 1695


def test_recorded_companions_and_merge() -> None:
    ws = shared_fixture(f"{CRYPTOFEED}/BINANCE.ws.1.0")
    http = shared_fixture(f"{CRYPTOFEED}/BINANCE.http.0.0")
    assert capture.companions(ws) == [http]
    futures = shared_fixture(f"{CRYPTOFEED}/BINANCE_FUTURES.ws.1.0")
    assert capture.companions(futures) == [futures.parent / "BINANCE_FUTURES.http.0.0"]
    errors: list[str] = []
    merged = list(capture.read_many([ws, http], errors))
    assert errors == [] and len(merged) == 266 + 4
    assert [m.recv_ns for m in merged] == sorted(m.recv_ns for m in merged)
    rest = [m for m in merged if m.kind == "rest"]
    assert [m.symbol for m in rest] == ["NKNUSDT", "BLZETH", "LRCBTC", "RUNEEUR"]
    # The NKNUSDT snapshot lands between the frames received around it.
    i = merged.index(rest[0])
    assert merged[i - 1].recv_ns <= rest[0].recv_ns == 1633998512_320639000 <= merged[i + 1].recv_ns


def test_recorded_capture_gzipped_in_tmp_reads_the_same(tmp_path: Path) -> None:
    source = shared_fixture(f"{CRYPTOFEED}/BINANCE.ws.1.0")
    packed = tmp_path / "BINANCE.ws.1.0"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    assert [fields(m) for m in capture.read(packed)] == [fields(m) for m in capture.read(source)]


# -- bugs found ----------------------------------------------------------------


def test_truncated_gzip_is_reported_as_a_capture_error(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(b"%d %s\n" % (10**18 + i, DEPTH.encode()) for i in range(3000)))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    errors: list[str] = []
    messages = list(capture.read(path, errors))
    assert messages and len(errors) == 1 and str(path) in errors[0]
    with pytest.raises(CaptureError, match=str(path)):
        list(capture.read(path))


def test_companions_with_glob_characters_in_the_name(tmp_path: Path) -> None:
    (tmp_path / "BINANCE[1].ws.1.0").write_bytes(b"")
    (tmp_path / "BINANCE[1].http.0.0").write_bytes(b"")
    assert capture.companions(tmp_path / "BINANCE[1].ws.1.0") == [tmp_path / "BINANCE[1].http.0.0"]
