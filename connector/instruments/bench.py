"""Benchmark: WAL -> ready indexes for a ~91K-row universe, beside a plain file read.

``recover_s`` is :func:`store.recover` (scan segments, check CRCs, gather the
parts, decode) plus :class:`Universe` (build every index). ``baseline_s`` reads
the same snapshot's payload bytes from the segment files with plain
``pread`` calls (the physical floor: the bytes have to come off the page cache
at least once). ``lookup_token_ns`` is a token -> dense id lookup (``token_to_inst.get``), averaged over
a loop of random listed tokens, beside ``lookup_baseline_dict_get_ns`` (a bare
``dict.get`` loop over the same tokens: the interpreter's floor for a scalar
lookup); ``lookup_token_batch_ns`` is the per-token cost of the vectorised
:meth:`Universe.insts_of_tokens` on the same tokens at once (how a decoder
holding a frame's tokens should call it). Each timing is the best of ``repeats``.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from connector.instruments import snapshot as snap
from connector.instruments import store
from connector.instruments.kite_csv import parse_kite_csv
from connector.instruments.model import Venue
from connector.instruments.universe import Universe
from connector.sim.kite_universe import KiteRow, generate_universe, universe_csv
from pipeline import paths, wal


def _payload_ranges(directory: Path, version: int) -> list[tuple[Path, int, int]]:
    """(segment, offset, length) of each part's payload of ``version``, in part order."""
    found: dict[int, tuple[Path, int, int]] = {}
    for path in wal.segment_paths(directory):
        data = path.read_bytes()
        view = memoryview(data)
        for fr in wal.scan_segment(path, view, last=True).frames:
            head = snap.part_header(view[fr.payload_offset : fr.payload_offset + 32])
            if head is not None and head.version == version:
                found[head.index] = (
                    path,
                    fr.payload_offset + snap.PART_HEAD.size,
                    fr.length - snap.PART_HEAD.size,
                )
        view.release()
    return [found[i] for i in sorted(found)]


def _read_ranges(ranges: list[tuple[Path, int, int]]) -> bytes:
    chunks = []
    for path, offset, length in ranges:
        fd = os.open(path, os.O_RDONLY)
        try:
            chunks.append(os.pread(fd, length, offset))
        finally:
            os.close(fd)
    return b"".join(chunks)


def bench_instruments(
    directory: Path | str,
    rows: list[KiteRow] | None = None,
    *,
    repeats: int = 3,
    lookups: int = 200_000,
) -> dict[str, Any]:
    """Store ``rows`` (default: the generated ~91K universe) in ``directory`` and time recovery."""
    data_dir = Path(directory)
    as_of = dt.date(2026, 1, 6)
    if rows is None:
        rows = generate_universe(as_of)
    table = parse_kite_csv(universe_csv(rows))
    result = store.refresh(data_dir, {Venue.KITE: table}, as_of=as_of, now_ns=time.time_ns())
    wal_dir = paths.instruments_wal_dir(data_dir)
    ranges = _payload_ranges(wal_dir, result.snapshot.version)
    recover_times, baseline_times = [], []
    universe: Universe | None = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        recovered = store.recover(wal_dir)
        assert recovered.snapshot is not None
        universe = Universe.from_snapshot(recovered.snapshot)
        recover_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        raw = _read_ranges(ranges)
        baseline_times.append(time.perf_counter() - t0)
        assert len(raw) == recovered.payload_bytes
    assert universe is not None
    tokens = universe.table.numeric["token"].tolist()
    sample = random.Random(0).choices(tokens, k=lookups)
    lookup = universe.token_to_inst.get
    best_ns = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for token in sample:
            lookup(token)
        best_ns = min(best_ns, (time.perf_counter_ns() - t0) / lookups)
    # Baseline for the scalar lookup: a bare dict.get loop over the same tokens
    # (on a slow or shared machine the interpreter's per-call cost dominates both).
    bare = dict.fromkeys(tokens, 1).get
    bare_ns = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        for token in sample:
            bare(token)
        bare_ns = min(bare_ns, (time.perf_counter_ns() - t0) / lookups)
    batch = np.asarray(sample, dtype=np.int64)
    batch_ns = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        found = universe.insts_of_tokens(batch)
        batch_ns = min(batch_ns, (time.perf_counter_ns() - t0) / lookups)
    assert bool((found > 0).all())
    t0 = time.perf_counter()
    universe.search_index()
    search_index_s = time.perf_counter() - t0
    recover_s, baseline_s = min(recover_times), min(baseline_times)
    return {
        "instruments": len(universe),
        "payload_bytes": result.payload_bytes,
        "recover_s": round(recover_s, 4),
        "baseline_s": round(baseline_s, 5),
        "ratio": round(recover_s / baseline_s, 1) if baseline_s > 0 else 0.0,
        "lookup_token_ns": round(best_ns, 1),
        "lookup_baseline_dict_get_ns": round(bare_ns, 1),
        "lookup_token_batch_ns": round(batch_ns, 1),
        "search_index_s": round(search_index_s, 4),
        "targets": {"recover_s": 0.3, "lookup_token_ns": 1000},
    }
