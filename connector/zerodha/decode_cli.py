"""``connector-pipeline decode kite FILE``: print the ticks of recorded Kite
binary ticker frames. Thin: read the file, call the pure decoder, print.

The lead registers the group in connector/cli.py with ``main.add_command(decode)``.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson

from connector.zerodha.ticker import KiteFrameError, TickerDecoder, ticks_from_records

EXIT_PROBLEM = 1
FORMATS = ("auto", "raw", "lines", "lp", "packet")
_LP_HEADER = struct.Struct(">qI")
_LINE = re.compile(rb"^\s*(-?\d+)\s+([A-Za-z0-9+/=]+)\s*$")
_B64 = re.compile(rb"^\s*([A-Za-z0-9+/=]+)\s*$")


@dataclass(frozen=True)
class Frame:
    """One binary frame read from a file, with where it came from."""

    recv_ns: int
    data: bytes
    where: str
    """``byte offset N`` or ``line N``: for error messages."""


class FrameFileError(KiteFrameError):
    """A frame file that cannot be split into frames (message names the place)."""


def _text_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Non-empty, non-comment lines with their 1-based numbers."""
    for number, line in enumerate(data.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith(b"#"):
            yield number, stripped


def detect_format(data: bytes) -> str:
    """``lines`` or ``packet`` when every line looks like one, else ``raw``."""
    lines = [line for _, line in _text_lines(data)]
    if not lines:
        return "raw"
    if all(_LINE.match(line) for line in lines):
        return "lines"
    if all(_B64.match(line) for line in lines):
        return "packet"
    return "raw"


def read_frames(path: Path, fmt: str = "auto") -> Iterator[Frame | FrameFileError]:
    """The frames of a file; a part that cannot be read yields a
    :class:`FrameFileError` in its place (reading goes on where it can)."""
    data = path.read_bytes()
    if fmt == "auto":
        fmt = detect_format(data)
    if fmt == "raw":
        yield Frame(0, data, "byte offset 0")
    elif fmt == "lp":
        pos = 0
        while pos < len(data):
            if pos + _LP_HEADER.size > len(data):
                yield FrameFileError(
                    f"{path}: byte offset {pos}: {len(data) - pos} trailing bytes, "
                    f"not a {_LP_HEADER.size}-byte frame header",
                    pos,
                    len(data),
                )
                return
            recv_ns, length = _LP_HEADER.unpack_from(data, pos)
            start = pos + _LP_HEADER.size
            if start + length > len(data):
                yield FrameFileError(
                    f"{path}: byte offset {pos}: frame declares {length} bytes but only "
                    f"{len(data) - start} remain",
                    pos,
                    len(data),
                )
                return
            yield Frame(recv_ns, data[start : start + length], f"byte offset {start}")
            pos = start + length
    else:
        for number, line in _text_lines(data):
            match = (_LINE if fmt == "lines" else _B64).match(line)
            try:
                if match is None:
                    raise ValueError("not in the expected form")
                if fmt == "lines":
                    recv_ns, body = int(match.group(1)), match.group(2)
                else:
                    recv_ns, body = 0, match.group(1)
                raw = base64.b64decode(body, validate=True)
            except (ValueError, binascii.Error) as exc:
                yield FrameFileError(f"{path}: line {number}: {exc}", 0, 0)
                continue
            if fmt == "packet":
                # A bare packet (the kiteconnect-mocks .packet files): frame it.
                raw = struct.pack(">HH", 1, len(raw)) + raw
            yield Frame(recv_ns, raw, f"line {number}")


def _table_line(tick: dict[str, Any]) -> str:
    parts = [f"{tick['mode']:<5}", f"{tick['instrument_token']:>10}", f"ltp={tick['last_price']}"]
    if "last_traded_quantity" in tick:
        parts.append(f"qty={tick['last_traded_quantity']} vol={tick['volume_traded']}")
        parts.append(f"avg={tick['average_traded_price']}")
    if "ohlc" in tick:
        o = tick["ohlc"]
        parts.append(f"o={o['open']} h={o['high']} l={o['low']} c={o['close']}")
        parts.append(f"chg={tick['change']:.2f}%")
    if "oi" in tick:
        parts.append(f"oi={tick['oi']}")
    depth = tick.get("depth")
    if depth:
        bid, ask = depth["buy"][0], depth["sell"][0]
        parts.append(f"bid={bid['quantity']}@{bid['price']} ask={ask['quantity']}@{ask['price']}")
    if tick.get("exchange_timestamp") is not None:
        parts.append(tick["exchange_timestamp"].isoformat())
    return " ".join(parts)


@click.group("decode")
def decode() -> None:
    """Decode recorded venue wire data and print it."""


@decode.command("kite")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per tick per line.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="How FILE holds frames (see above).",
)
def decode_kite(file: Path, as_json: bool, fmt: str) -> None:
    """Print the ticks of the Kite binary ticker frames in FILE, one per line
    (the official client's tick fields; times in IST).

    \b
    FILE formats (--format; auto picks lines or packet when every line
    fits, else raw):
      raw     the whole file is one frame, as the WebSocket delivered it
              (int16 packet count, then int16 length + packet, ...)
      lines   one frame per line: "<recv_ns> <base64 frame>" (blank lines
              and lines starting with # are skipped)
      lp      length-prefixed binary: repeated [int64 recv_ns][uint32 n]
              [n frame bytes], big-endian
      packet  one bare packet per line, base64 (no frame header), like the
              kiteconnect-mocks ticker_*.packet files

    A bad frame is reported on stderr with the file and its place (line or
    byte offset; the message gives the offset inside the frame); decoding
    goes on with the next frame and the exit code is 1. Heartbeats (frames
    under 2 bytes) print nothing.
    """
    decoder = TickerDecoder()
    failures = 0
    out = sys.stdout
    for item in read_frames(file, fmt):
        if isinstance(item, FrameFileError):
            click.echo(f"error: {item}", err=True)
            failures += 1
            continue
        try:
            records = decoder.decode(item.data, item.recv_ns)
        except KiteFrameError as exc:
            click.echo(f"error: {file}: frame at {item.where}: {exc}", err=True)
            failures += 1
            continue
        for tick in ticks_from_records(records):
            if as_json:
                out.write(orjson.dumps(tick).decode() + "\n")
            else:
                out.write(_table_line(tick) + "\n")
    unknown = decoder.counters["unknown_length"]
    if unknown:
        click.echo(f"note: skipped {unknown} packets of unknown length", err=True)
    if failures:
        click.echo(f"{failures} bad frame(s) in {file}", err=True)
        sys.exit(EXIT_PROBLEM)
