"""``verify-capture binance``: run recorded traffic through the real decoders,
the sync state machine and the book builder, and check every bookTicker
against the book built from the diff stream.

A bookTicker carries the update id ``u`` of the book state it shows. After
each applied depth event (which ends at update id ``u``) the built book's best
levels are remembered under that id; a bookTicker is checked when its ``u``
is one of those ids (an exact state match: price and quantity of the best bid
and ask). bookTickers falling between two depth events cannot be checked
exactly and are counted apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from connector.binance import capture
from connector.binance.sync import BookSync, State
from connector.binance.wire import DecodeError, Decoder
from pipeline.book import BookState
from pipeline.record import Kind, Records


@dataclass
class _Symbol:
    sync: BookSync
    tops: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    """update id -> (bid px, bid qty, ask px, ask qty) after the depth event ending there."""
    tickers: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    """(u, bid px, bid qty, ask px, ask qty) of every bookTicker."""


@dataclass
class Report:
    messages: int = 0
    depth_updates: int = 0
    gaps: int = 0
    unexplained_gaps: int = 0
    resyncs: int = 0
    snapshots: int = 0
    bbo_checked: int = 0
    bbo_mismatches: int = 0
    bbo_uncheckable: int = 0
    decode_errors: int = 0
    capture_errors: list[str] = field(default_factory=list)
    decode_error_samples: list[str] = field(default_factory=list)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    symbols: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "depth_updates": self.depth_updates,
            "gaps": self.gaps,
            "unexplained_gaps": self.unexplained_gaps,
            "resyncs": self.resyncs,
            "snapshots": self.snapshots,
            "bbo_checked": self.bbo_checked,
            "bbo_mismatches": self.bbo_mismatches,
            "bbo_uncheckable": self.bbo_uncheckable,
            "decode_errors": self.decode_errors,
            "decode_error_samples": self.decode_error_samples[:10],
            "capture_errors": self.capture_errors[:10],
            "mismatches": self.mismatches[:10],
            "symbols": self.symbols,
        }


class CaptureVerifier:
    def __init__(self, market: str) -> None:
        self.futures = market == "usdm"
        self.decoder = Decoder({}, market=market, assign_from=1)
        self.books = BookState()
        self.symbols: dict[str, _Symbol] = {}
        self.report = Report()
        self._seq = 0
        self._reconnected: set[str] = set()

    def _symbol(self, name: str) -> _Symbol:
        entry = self.symbols.get(name)
        if entry is None:
            inst = self.decoder._inst(name, "capture")
            entry = self.symbols[name] = _Symbol(BookSync(inst, futures=self.futures))
        return entry

    def _publish(self, batches: list[Records]) -> None:
        for batch in batches:
            batch = batch.copy()
            batch["src"] = 1
            batch["seq"] = np.arange(self._seq + 1, self._seq + 1 + len(batch), dtype=np.uint64)
            self._seq += len(batch)
            self.books.apply(batch)

    def _remember_top(self, entry: _Symbol) -> None:
        book = self.books.books.get(entry.sync.inst)
        if book is None or not book.valid:
            return
        bids, asks = book.top(1)
        if bids and asks:
            entry.tops[entry.sync.last_u] = (bids[0][0], bids[0][1], asks[0][0], asks[0][1])

    def feed(self, message: capture.Message) -> None:
        report = self.report
        if message.kind == "open":
            for name, entry in self.symbols.items():
                if entry.sync.state == State.SYNCED:
                    self._reconnected.add(name)
                self._publish(entry.sync.on_disconnect(message.recv_ns).publish)
            return
        report.messages += 1
        try:
            if message.kind == "rest":
                self._snapshot(message)
                return
            decoded = self.decoder.decode(message.body, message.recv_ns)
        except DecodeError as exc:
            report.decode_errors += 1
            report.decode_error_samples.append(f"{message.source}: {exc}")
            return
        if decoded.event == "depthUpdate":
            report.depth_updates += 1
            entry = self._symbol(decoded.symbol)
            decision = entry.sync.on_depth(decoded.records, message.recv_ns)
            if decision.gap:
                report.gaps += 1
                report.resyncs += 1
                if decoded.symbol not in self._reconnected:
                    report.unexplained_gaps += 1
            self._publish(decision.publish)
            if any(int(b[0]["kind"]) == Kind.BOOK_UPDATE for b in decision.publish):
                self._remember_top(entry)
        elif decoded.event == "bookTicker":
            r = decoded.records
            entry = self._symbol(decoded.symbol)
            entry.tickers.append(
                (
                    int(r[0]["aux"]),
                    int(r[0]["px"]),
                    int(r[0]["qty"]),
                    int(r[1]["px"]),
                    int(r[1]["qty"]),
                )
            )

    def _snapshot(self, message: capture.Message) -> None:
        if b"lastUpdateId" not in message.body[:100]:
            return  # another REST response (exchangeInfo, ...)
        symbol = message.symbol or self._attribute(message)
        if not symbol:
            raise DecodeError(
                "a depth snapshot whose symbol cannot be told (no symbol= and no waiting book fits)"
            )
        decoded = self.decoder.snapshot(message.body, symbol, message.recv_ns)
        entry = self._symbol(symbol)
        self.report.snapshots += 1
        decision = entry.sync.on_snapshot(decoded.records, message.recv_ns)
        self._publish(decision.publish)
        self._remember_top(entry)

    def _attribute(self, message: capture.Message) -> str:
        """The symbol a plain-format snapshot belongs to: the waiting book its id fits."""
        import orjson

        last_id = orjson.loads(message.body).get("lastUpdateId")
        waiting = [
            (n, e)
            for n, e in self.symbols.items()
            if e.sync.state == State.BUFFERING and e.sync.buffer
        ]
        fits = []
        for name, entry in waiting:
            first_u = int(entry.sync.buffer[0][0]["px"])
            last_u = int(entry.sync.buffer[-1][0]["qty"])
            if isinstance(last_id, int) and first_u - 10_000 <= last_id <= last_u + 10_000:
                fits.append(name)
        return fits[0] if len(fits) == 1 else (waiting[0][0] if len(waiting) == 1 else "")

    def finish(self) -> Report:
        report = self.report
        for name, entry in self.symbols.items():
            for u, bp, bq, ap, aq in entry.tickers:
                top = entry.tops.get(u)
                if top is None:
                    report.bbo_uncheckable += 1
                    continue
                report.bbo_checked += 1
                if top != (bp, bq, ap, aq):
                    report.bbo_mismatches += 1
                    report.mismatches.append(
                        {"symbol": name, "u": u, "book": list(top), "bookTicker": [bp, bq, ap, aq]}
                    )
            s = entry.sync.stats
            report.symbols[name] = {
                "applied": s.applied,
                "gaps": s.gaps,
                "snapshots": s.snapshots,
                "refetches": s.refetches,
                "dropped_old": s.dropped_old,
                "book_tickers": len(entry.tickers),
            }
        return report


def detect_market(files: list[Path]) -> str:
    """``usdm`` if the capture's diff events carry ``pu`` (or it came from fstream), else ``spot``."""
    for message in capture.read_many(files, []):
        if message.kind == "open" and "fstream" in message.url:
            return "usdm"
        if message.kind == "ws" and b'"depthUpdate"' in message.body:
            return "usdm" if b'"pu":' in message.body else "spot"
    return "spot"


def verify_capture(paths: Iterable[Path], market: str = "auto") -> dict[str, Any]:
    """Verify one or more capture files (merged by receive time); a cryptofeed
    WS capture's REST companion file is read with it."""
    files: list[Path] = []
    for p in paths:
        if not p.is_file():
            raise capture.CaptureError(f"capture {p} does not exist")
        files.append(p)
        files += [c for c in capture.companions(p) if c not in files]
    if market == "auto":
        market = detect_market(files)
    verifier = CaptureVerifier(market)
    for message in capture.read_many(files, verifier.report.capture_errors):
        verifier.feed(message)
    out = verifier.finish().as_dict()
    out["files"] = [str(f) for f in files]
    out["market"] = market
    return out
