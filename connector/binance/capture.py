"""Reading recorded Binance traffic.

Two formats, gzip-compressed or not (detected by content):

* cryptofeed's raw-data recorder (``../shared/fixtures/binance/cryptofeed``):
  ``<wss url> <-> <epoch s>`` opens a connection, ``<epoch s>: <frame>`` is a
  WebSocket message, ``<url> -> <epoch s>: <body>`` a REST response, and
  ``configuration: {...}`` is skipped.
* plain lines ``<receive time ns> <raw message>``, where the message is a
  WebSocket text frame (bare or combined) or a REST depth snapshot body
  (it has ``lastUpdateId``). A plain snapshot does not say its symbol; the
  reader leaves ``symbol`` empty and the consumer attributes it.

Bad lines are reported (line number and why) rather than skipped silently.
"""

from __future__ import annotations

import glob
import gzip
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from pipeline.errors import DataError


@dataclass(frozen=True)
class Message:
    recv_ns: int
    kind: str
    """``ws`` (a stream frame), ``rest`` (a REST response body) or ``open`` (a new connection)."""
    body: bytes
    url: str = ""
    symbol: str = ""
    """For REST depth snapshots from a URL with ``symbol=``; empty otherwise."""
    source: str = ""
    """file:line, for messages about this message."""


class CaptureError(DataError):
    """A line of a capture that cannot be read (file and line named)."""


def _open(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    opener = gzip.open if gz else open
    with opener(path, "rb") as f:
        yield from f


def _seconds_to_ns(text: bytes) -> int:
    whole, _, frac = text.partition(b".")
    return int(whole) * 1_000_000_000 + int((frac + b"000000000")[:9] or b"0")


def read(path: Path | str, errors: list[str] | None = None) -> Iterator[Message]:
    """Messages of one capture file in file order. Unreadable lines raise
    :class:`CaptureError`, or are appended to ``errors`` when it is given."""
    path = Path(path)
    lines = _open(path)
    number = 0
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            return
        except (EOFError, OSError) as exc:  # a truncated gzip (a recorder killed mid-write)
            problem = f"{path}: unreadable after line {number}: {exc}"
            if errors is None:
                raise CaptureError(problem) from None
            errors.append(problem)
            return
        number += 1
        line = raw.rstrip(b"\r\n")
        if not line:
            continue
        where = f"{path}:{number}"
        try:
            message = _parse_line(line, where)
        except (ValueError, IndexError) as exc:
            message = None
            problem = f"{where}: {exc}"
            if errors is None:
                raise CaptureError(problem) from None
            errors.append(problem)
        if message is not None:
            yield message


def _parse_line(line: bytes, where: str) -> Message | None:
    if line.startswith(b"configuration:"):
        return None
    head, sep, body = line.partition(b": ")
    if (b" <-> " in line and not sep) or (b" <-> " in head):
        url, _, ts = line.rpartition(b" <-> ")
        return Message(_seconds_to_ns(ts.strip()), "open", b"", url.decode(), source=where)
    if sep and b" -> " in head:
        url, _, ts = head.rpartition(b" -> ")
        url_text = url.decode()
        symbol = parse_qs(urlparse(url_text).query).get("symbol", [""])[0].upper()
        return Message(_seconds_to_ns(ts.strip()), "rest", body, url_text, symbol, where)
    if sep and head.replace(b".", b"", 1).isdigit():
        return Message(_seconds_to_ns(head), "ws", body, source=where)
    first, space, rest = line.partition(b" ")
    if space and first.isdigit():
        kind = "rest" if b'"lastUpdateId"' in rest[:200] and b'"e"' not in rest[:40] else "ws"
        return Message(int(first), kind, rest, source=where)
    raise ValueError(f"not a capture line: {line[:80]!r}")


def read_many(paths: Iterable[Path | str], errors: list[str] | None = None) -> Iterator[Message]:
    """Several captures merged by receive time (each file in its own order)."""
    return heapq.merge(*(read(p, errors) for p in paths), key=lambda m: m.recv_ns)


def companions(path: Path) -> list[Path]:
    """A cryptofeed WS capture's REST companion: ``X.ws.1.0`` -> ``X.http.0.0`` (if present)."""
    name = path.name
    if ".ws." not in name:
        return []
    stem = name.split(".ws.")[0]
    return sorted(p for p in path.parent.glob(f"{glob.escape(stem)}.http.*") if p.is_file())
