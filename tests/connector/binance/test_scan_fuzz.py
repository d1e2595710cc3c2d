"""A bounded, seeded fuzz campaign of the C scanner against the reference decoder.

``_scan.scan(frame, out, offset, symbols, recv_ns)`` must, for any bytes,
either write exactly the records :meth:`Decoder.decode` gives (and return
``(event, symbol, n)``), or return the number of records it needs when ``out``
has no room (writing nothing), or decline (None). These tests feed it what a
longer campaign under AddressSanitizer fed it (truncations and byte-level
damage of recorded frames, random events of every shape with odd values,
every small output buffer and offset) with fixed seeds, plus the reproducers
that campaign found, and check each answer against the reference.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from connector.binance import batch as batch_module
from connector.binance.wire import Decoded, DecodeError, Decoder
from pipeline import record as rec
from tests.connector.binance.test_batch import recorded_frames

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(
        not batch_module.SPEEDUP, reason="the C speedup connector.binance._scan is not built"
    ),
]

RECV = 1_700_000_000_000_000_123
SENTINEL = 0xA5
SYMBOLS = {"BTCUSDT": 7, "NKNUSDT": 3, "ETHUSDT": 4_000_000_000}


def _scan() -> Callable[..., Any]:
    from connector.binance import _scan

    scan: Callable[..., Any] = _scan.scan
    return scan


def _reference(decoder: Decoder, frame: bytes) -> Decoded | None:
    try:
        return decoder.decode(frame, RECV)
    except DecodeError:
        return None


def check(
    frame: bytes,
    decoder: Decoder,
    counts: Counter[str],
    cap: int | None = None,
    offset: int | None = None,
) -> None:
    """One scan into a sentinel-filled buffer, held to the contract (see the module doc)."""
    scan = _scan()
    ref = _reference(decoder, frame)
    need = len(ref.records) if ref is not None else 4
    if cap is None or offset is None:
        cap, offset = need + 2, 1
    out = rec.empty(cap)
    raw = out.view(np.uint8)
    raw[:] = SENTINEL
    if not 0 <= offset <= cap:
        # A bad offset is refused (or the frame declined before it matters).
        try:
            result = scan(frame, out, offset, decoder.symbols, RECV)
        except ValueError:
            counts["bad offset"] += 1
        else:
            assert result is None, (frame, offset, cap, result)
        assert (raw == SENTINEL).all(), frame
        return
    result = scan(frame, out, offset, decoder.symbols, RECV)
    if result is None:
        counts["declined"] += 1
        # The records of earlier frames of the batch are never touched.
        assert (raw[: offset * rec.RECORD_SIZE] == SENTINEL).all(), frame
        return
    if type(result) is int:
        counts["no room"] += 1
        assert result > cap - offset, (frame, cap, offset, result)
        assert (raw == SENTINEL).all(), frame
        if ref is not None:
            assert result == need, (frame, result, need)
        return
    counts["accepted"] += 1
    assert ref is not None, (frame, result)
    assert result == (ref.event, ref.symbol, need), (frame, result)
    assert out[offset : offset + need].tobytes() == ref.records.tobytes(), frame
    assert (raw[: offset * rec.RECORD_SIZE] == SENTINEL).all(), frame
    assert (raw[(offset + need) * rec.RECORD_SIZE :] == SENTINEL).all(), frame


# -- inputs --------------------------------------------------------------------------


def _recorded(name: str) -> list[bytes]:
    return list(dict.fromkeys(recorded_frames(name)))


_TOKENS = [
    b",", b":", b"{", b"}", b"[", b"]", b'"', b"\\", b"-", b".", b"0", b"9", b"e", b" ", b"\t",
    b"\n", b"\x00", b"\x7f", b"\x80", b"\xff", b"\xc3\xa9", b"true", b"null", b"-0",
    b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
    b"-9223372036854775809", b"18446744073709551616", b"1e5", b"1.5", b'"\\u0041"',
    b'"e":"trade"', b'"e":"aggTrade"', b'"e":"depthUpdate"', b'"e":"bookTicker"', b'"b":[]',
    b'"b":[["1","2"]]', b'"s":"BTCUSDT"', b'"data":{', b'"stream":"x",', b'"pu":-1',
    b'"T":9223372036854', b'"E":9223372036853', b'"m":true', b'"q":"92233720368.54775807"',
    b'"q":"92233720368.54775808"', b"00", b"[[", b"]]", b'"u":1,"b":"1","A":"1"', b'""',
]  # fmt: skip


def mutate(frame: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """Bit flips, byte insertions and deletions, JSON tokens, copies and splices."""
    b = bytearray(frame)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 6))):
        n = len(b)
        k = rng.randrange(n + 1)
        how = rng.randrange(9)
        if how == 0 and n:
            b[min(k, n - 1)] ^= 1 << rng.randrange(8)
        elif how == 1 and n:
            b[min(k, n - 1)] = rng.randrange(256)
        elif how == 2:
            b[k:k] = bytes([rng.randrange(256)])
        elif how == 3:
            del b[k : k + rng.choice((1, 1, 2, 5, 20))]
        elif how == 4:
            b[k:k] = rng.choice(_TOKENS)
        elif how == 5 and n:
            j = rng.randrange(n)
            b[k:k] = b[min(j, k) : min(j, k) + 32]
        elif how == 6:
            other = rng.choice(pool)
            b = b[:k] + bytearray(other[rng.randrange(len(other) + 1) :])
        elif how == 7 and n:
            b[min(k, n - 1)] = rng.choice(b'"{}[],:0123456789-.eEtfn\\ ')
        else:
            del b[k:]
    return bytes(b)


_ODD_DECIMALS = [
    "0", "0.1", "0.00000001", "92233720368.54775807", "92233720368.54775808", "99999999999",
    "100000000000", "00000000000000001.5", "1.", ".5", "", "1e5", "-1", "+1", "1.000000000",
    "1.123456789", "00.5", "NaN", " 1", "1,0", "12345678901.12345678", "1\\u0030", "1.5\u00e9",
]  # fmt: skip
_ODD_INTS = [0, -1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, 9_223_372_036_854]
_ODD_VALUES = [
    "null", "true", "false", "1.5", "-0", "1e3", "[]", "{}", '"x"', "[1,2]", '{"a":1}', "0.0",
    '"\u00e9"', "18446744073709551615", '"\\n"', "[[[]]]",
]  # fmt: skip
_SHAPES: dict[str, list[tuple[str, str]]] = {
    "depth": [("e", "depthUpdate"), ("E", "ms"), ("T", "ms?"), ("s", "sym"), ("U", "int"),
              ("u", "int"), ("pu", "int?"), ("b", "levels"), ("a", "levels")],
    "trade": [("e", "trade"), ("E", "ms"), ("s", "sym"), ("t", "int"), ("p", "dec"),
              ("q", "dec"), ("b", "int?"), ("a", "int?"), ("T", "ms"), ("m", "bool"),
              ("M", "bool?"), ("X", "MARKET?")],
    "agg": [("e", "aggTrade"), ("E", "ms"), ("s", "sym"), ("a", "int"), ("p", "dec"),
            ("q", "dec"), ("f", "int"), ("l", "int"), ("T", "ms"), ("m", "bool"), ("M", "bool?")],
    "ticker": [("e", "bookTicker?"), ("u", "int"), ("s", "sym"), ("b", "dec"), ("B", "dec"),
               ("a", "dec"), ("A", "dec"), ("T", "ms?"), ("E", "ms?")],
}  # fmt: skip
_WS = ["", "", "", "", " ", "\n", "\t", "\r\n  "]


class _Events:
    """Random events of the four shapes; ``odd`` is how often a value is wrong or strange."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.odd = 0.0

    def string(self, s: str) -> str:
        if self.rng.random() < self.odd / 2:  # escapes the scanner must leave to the reference
            return (
                '"' + "".join(f"\\u{ord(c):04x}" if self.rng.random() < 0.3 else c for c in s) + '"'
            )
        return f'"{s}"'

    def value(self, kind: str) -> str:
        rng, odd = self.rng, self.odd
        r = rng.random()
        if r < odd:
            return rng.choice(_ODD_VALUES)
        if kind == "dec":
            if r < 3 * odd:
                return self.string(rng.choice(_ODD_DECIMALS))
            whole = str(rng.randrange(10 ** rng.randint(1, 12 if odd else 10)))
            d = rng.randint(0, 9 if odd else 8)
            frac = "".join(rng.choice("0123456789") for _ in range(d))
            return self.string(f"{whole}.{frac}" if d else whole)
        if kind in ("int", "ms"):
            if r < 3 * odd:
                return str(rng.choice(_ODD_INTS))
            return str(
                1_700_000_000_000 + rng.randrange(10**6) if kind == "ms" else rng.randrange(10**15)
            )
        if kind == "bool":
            return rng.choice(["true", "false"]) if r >= 2 * odd else rng.choice(["0", '"true"'])
        if kind == "sym":
            if r < 2 * odd:
                return self.string(rng.choice(["btcusdt", "NOPE", "", "BTCUSDT\\u0000"]))
            return self.string(rng.choice(sorted(SYMBOLS)))
        # levels: mostly small, sometimes past 128 values (the reference's other parse road)
        n = rng.choice((0, 0, 1, 2, 3, 5, 20, 70))
        items = []
        for _ in range(n):
            if rng.random() < odd / 4:
                items.append(rng.choice(['["1"]', '["1","2","3"]', "[1,2]", '"1"', "[]", "{}"]))
            else:
                items.append(f"[{self.value('dec')},{self.value('dec')}]")
        return "[" + ",".join(items) + "]"

    def nested(self, depth: int) -> str:
        if self.rng.random() < 0.5:
            return "[" * depth + "]" * depth
        return '{"x":' * depth + "1" + "}" * depth

    def obj(self, members: list[tuple[str, str]]) -> str:
        ws = self.rng.choice
        return (
            "{"
            + ",".join(f"{ws(_WS)}{k}{ws(_WS)}:{ws(_WS)}{v}{ws(_WS)}" for k, v in members)
            + ws(_WS)
            + "}"
        )

    def frame(self, odd: float | None = None) -> bytes:
        """A frame; half of them (or all, with odd=0) clean."""
        rng = self.rng
        self.odd = 0.0 if rng.random() < 0.5 else rng.choice((0.02, 0.05, 0.15))
        if odd is not None:
            self.odd = odd
        members = []
        for key, spec in _SHAPES[rng.choice(sorted(_SHAPES))]:
            kind = spec.rstrip("?")
            if (spec.endswith("?") and rng.random() < 0.5) or rng.random() < self.odd / 4:
                continue
            value = (
                self.value(kind)
                if kind in ("ms", "int", "dec", "bool", "sym", "levels")
                else self.string(kind)
            )
            members.append((self.string(key), value))
        if rng.random() < 0.1:
            rng.shuffle(members)
        r = rng.random() if self.odd else 1.0
        if r < 0.05 and members:
            members.append(rng.choice(members))  # a duplicate key: the last one counts
        elif r < 0.1 and members:
            members.append(
                (rng.choice(members)[0], self.value(rng.choice(["int", "dec", "levels"])))
            )
        elif r < 0.15:  # deep nesting in an ignored field (orjson's limit is 1024)
            members.insert(
                rng.randrange(len(members) + 1), ('"z"', self.nested(rng.choice((2, 1000, 1100))))
            )
        elif r < 0.2:
            members.append(
                (self.string(rng.choice(["stream", "data", "\u00e9", ""])), self.value("dec"))
            )
        body = self.obj(members)
        r = rng.random()
        if r < 0.5:
            envelope = [('"stream"', self.string("btcusdt@x")), ('"data"', body)]
            if rng.random() < self.odd:
                envelope.append(rng.choice(envelope))
            if rng.random() < 0.1:
                envelope.reverse()
            body = self.obj(envelope)
        elif r < 0.55 and self.odd:
            body = (
                '{"stream":"x","data":' + rng.choice(["[]", "1", "null", self.nested(1000)]) + "}"
            )
        elif r < 0.57 and self.odd:
            body = self.nested(1000)
        return (rng.choice(_WS) + body + rng.choice(_WS)).encode()


def _events(seed: int, n: int) -> Iterator[bytes]:
    gen = _Events(random.Random(seed))
    for _ in range(n):
        yield gen.frame()


# -- the campaign -------------------------------------------------------------------


def test_random_events_of_every_shape_equal_the_reference() -> None:
    decoder, counts = Decoder(SYMBOLS), Counter[str]()
    for frame in _events(1, 4000):
        check(frame, decoder, counts)
    # The campaign exercises both answers (else it tests nothing).
    assert counts["accepted"] > 1500 and counts["declined"] > 500, counts


def test_damaged_events_equal_the_reference() -> None:
    rng = random.Random(2)
    decoder, counts = Decoder(SYMBOLS), Counter[str]()
    pool = list(_events(3, 300))
    for _ in range(15000):
        check(mutate(rng.choice(pool), rng, pool), decoder, counts)
    assert counts["accepted"] > 300 and counts["declined"] > 5000, counts


@pytest.mark.parametrize("name", ["BINANCE.ws.1.0", "BINANCE_FUTURES.ws.1.0"])
def test_truncated_and_damaged_recorded_frames_equal_the_reference(name: str) -> None:
    frames = _recorded(name)
    learn = Decoder({}, assign_from=1)
    for f in frames:
        with contextlib.suppress(DecodeError):
            learn.decode(f, 0)
    decoder, counts = Decoder(learn.symbols), Counter[str]()
    rng = random.Random(4)
    for frame in rng.sample(frames, min(30, len(frames))):
        for k in range(len(frame) + 1):
            check(frame[:k], decoder, counts)
    for _ in range(6000):
        check(mutate(rng.choice(frames), rng, frames), decoder, counts)
    assert counts["accepted"] > 100 and counts["declined"] > 5000, counts


def test_every_small_buffer_and_boundary_offset() -> None:
    rng = random.Random(5)
    decoder, counts = Decoder(SYMBOLS), Counter[str]()
    for frame in _events(6, 250):
        ref = _reference(decoder, frame)
        need = len(ref.records) if ref is not None else 5
        caps = range(min(need + 3, 12)) if need < 10 else (0, 1, need - 1, need, need + 1)
        for cap in caps:
            edges = {0, cap - need - 1, cap - need, cap - need + 1, cap - 1, cap, cap + 1, -1}
            for offset in sorted(edges):
                check(frame, decoder, counts, cap, offset)
    assert counts["no room"] > 500 and counts["accepted"] > 500 and counts["bad offset"], counts
    # A whole batch through BatchDecoder, whose scratch array starts too small for it.
    frames = list(_events(7, 300))
    batch = batch_module.BatchDecoder(Decoder(SYMBOLS), speedup=True)
    batch._scratch = rec.empty(rng.randrange(1, 4))
    got = batch.decode(frames, RECV)
    want = [r.records for f in frames if (r := _reference(decoder, f)) is not None]
    assert got.records.tobytes() == np.concatenate(want).tobytes()


# -- reproducers and edge cases -----------------------------------------------------

_DEPTH = b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[["1.0","2.0"]],"a":[]}'
_DEPTH_EMPTY = b'{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[],"a":[]}'
_TICKER_SPACED = b' \t\r\n{"u":1,"s":"BTCUSDT","b":"1","B":"2","a":"3","A":"4"} \n'
_TICKER_E_NULL = b'{"e":null,"u":1,"s":"BTCUSDT","b":"1","B":"2","a":"3","A":"4"}'
_AGG = b'{"e":"aggTrade","E":1,"s":"ETHUSDT","a":1,"p":"1","q":"1","f":1,"l":2,"T":1,"m":false}'
_EDGES = [
    _DEPTH_EMPTY,  # no levels at all (the first scan of a process: no level buffer yet)
    _DEPTH,
    _DEPTH.replace(b'"E":1', b'"E":9223372036853'),
    _DEPTH.replace(b'"E":1', b'"E":9223372036854'),  # ms * 1e6 would overflow int64
    _DEPTH.replace(b'"U":1', b'"U":-9223372036854775808'),
    _DEPTH.replace(b'"U":1', b'"U":-9223372036854775809'),
    _DEPTH.replace(b'"U":1', b'"U":9223372036854775807'),
    _DEPTH.replace(b'"U":1', b'"U":9223372036854775808'),
    _DEPTH.replace(b'"U":1', b'"U":-0'),
    _DEPTH.replace(b'"U":1', b'"U":01'),
    _DEPTH.replace(b'"U":1', b'"U":1.0'),
    _DEPTH.replace(b'"U":1', b'"U":1e0'),
    _DEPTH.replace(b'"1.0"', b'"92233720368.54775807"'),
    _DEPTH.replace(b'"1.0"', b'"92233720368.54775808"'),
    _DEPTH.replace(b'"1.0"', b'"0000000000000000000000001.00000001"'),
    _DEPTH.replace(b'"1.0"', b'"1.000000000"'),
    _DEPTH.replace(b'"1.0"', b'"1."'),
    _DEPTH.replace(b'"1.0"', b'"1\\u002e0"'),
    _DEPTH.replace(b'"s":"BTCUSDT"', b'"s":"BTCUSDT","s":"BTCUSDT"'),
    _DEPTH.replace(b'"s":"BTCUSDT"', b'"s":"BTC\xc3\xa9"'),
    _DEPTH.replace(b'"s":"BTCUSDT"', b'"s":"BTCUSDT","z":' + b"[" * 1000 + b"]" * 1000),
    b'{"stream":"x","data":' + _DEPTH + b"}",
    b'{"data":' + _DEPTH + b',"stream":"x"}',
    b'{"data":' + _DEPTH + b"}",
    b'{"stream":"x","data":' + _DEPTH + b',"data":' + _DEPTH + b"}",
    b'{"stream":"x","data":' + b'{"x":' * 1000 + b"1" + b"}" * 1001,
    _TICKER_SPACED,
    _TICKER_E_NULL,
    b'{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":true,"b":null,"a":2}',
    _AGG,
    b"",
    b"{",
    b"\x00",
]


def test_edge_cases_equal_the_reference() -> None:
    decoder, counts = Decoder(SYMBOLS), Counter[str]()
    for frame in _EDGES:
        for k in range(len(frame) + 1):
            check(frame[:k], decoder, counts)
        check(frame, decoder, counts, 1, 0)
    assert counts["accepted"] >= 10, counts


def test_the_busy_shapes_are_accepted() -> None:
    """Declining is always allowed, so the checks above pass for a scanner that declines
    everything: these frames (every shape, bare and enveloped, odd spacing) must be taken."""
    scan, decoder = _scan(), Decoder(SYMBOLS)
    gen = _Events(random.Random(8))
    clean = [gen.frame(odd=0.0) for _ in range(100)]
    for frame in [
        _DEPTH_EMPTY,
        _DEPTH,
        b'{"data":' + _DEPTH + b',"stream":"x"}',
        _TICKER_SPACED,
        _TICKER_E_NULL,
        _AGG,
        *clean,
    ]:
        ref = _reference(decoder, frame)
        assert ref is not None, frame
        out = rec.empty(len(ref.records))
        assert scan(frame, out, 0, decoder.symbols, RECV) == (ref.event, ref.symbol, len(out))
        assert out.tobytes() == ref.records.tobytes()


def test_bad_arguments_are_refused() -> None:
    scan, out, frame = _scan(), rec.empty(4), _AGG
    read_only = rec.empty(4)
    read_only.flags.writeable = False
    for args, error in [
        ((frame, out, 0, SYMBOLS), TypeError),
        ((frame, out, 0, SYMBOLS, RECV, 1), TypeError),
        ((frame.decode(), out, 0, SYMBOLS, RECV), TypeError),
        ((bytearray(frame), out, 0, SYMBOLS, RECV), TypeError),
        ((frame, out, 0, list(SYMBOLS.items()), RECV), TypeError),
        ((frame, out, "0", SYMBOLS, RECV), TypeError),
        ((frame, out, 2**70, SYMBOLS, RECV), OverflowError),
        ((frame, out, 0, SYMBOLS, 2**64), OverflowError),
        ((frame, read_only, 0, SYMBOLS, RECV), ValueError),
        ((frame, b"x" * 256, 0, SYMBOLS, RECV), BufferError),
        ((frame, np.zeros((4, 32), dtype=np.int32)[:, ::2], 0, SYMBOLS, RECV), ValueError),
        ((frame, out, 5, SYMBOLS, RECV), ValueError),
        ((frame, out, -1, SYMBOLS, RECV), ValueError),
    ]:
        with pytest.raises(error):
            scan(*args)
    # Instrument ids that are not a uint32: the reference decides.
    for inst in (-1, 2**32, 2**70, "7", None):
        assert scan(frame, out, 0, {"ETHUSDT": inst}, RECV) is None
    assert (out.view(np.uint8) == 0).all()
    # Any writable contiguous buffer of whole records will do; a partial record is no room.
    assert scan(frame, bytearray(64 * 2), 0, SYMBOLS, RECV) == ("aggTrade", "ETHUSDT", 2)
    assert scan(frame, bytearray(64 * 2 - 1), 0, SYMBOLS, RECV) == 2


def test_scan_reentered_from_a_symbol_lookup_keeps_its_levels() -> None:
    """Found by the campaign: the symbol lookup can run Python code (a key's __eq__)
    that scans another frame; that scan reused the shared level buffer and the outer
    call wrote the inner frame's prices. A nested scan now declines."""
    scan = _scan()
    inner = _DEPTH.replace(b'"1.0","2.0"', b'"9.0","9.0"')
    nested: list[object] = []

    class Colliding(str):
        __slots__ = ()

        def __hash__(self) -> int:
            return hash("BTCUSDT")

        def __eq__(self, other: object) -> bool:
            nested.append(scan(inner, rec.empty(4), 0, {"BTCUSDT": 3}, RECV))
            return False

    symbols = {Colliding("XBTUSDT"): 9, "BTCUSDT": 3}
    nested.clear()  # building the dict compared the keys already
    out = rec.empty(2)
    assert scan(_DEPTH, out, 0, symbols, RECV) == ("depthUpdate", "BTCUSDT", 2)
    # (Open addressing may probe the colliding key more than once, depending on the hash seed.)
    assert nested and all(result is None for result in nested), nested
    assert out.tobytes() == Decoder({"BTCUSDT": 3}).decode(_DEPTH, RECV).records.tobytes()
    # And the scanner is usable again afterwards.
    assert scan(inner, out, 0, {"BTCUSDT": 3}, RECV) == ("depthUpdate", "BTCUSDT", 2)
