"""What ``status`` reports: processes, rings and the WAL of a data dir's run."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from pipeline import paths, runinfo, shm, wal
from pipeline import ring as ring_mod
from pipeline.errors import PipelineError
from pipeline.stats import ProcessTable


def _process(info: Any) -> dict[str, Any]:
    alive = False
    cpu = 0.0
    rss = 0
    if info.pid:
        try:
            proc = psutil.Process(info.pid)
            alive = proc.status() != psutil.STATUS_ZOMBIE
            with proc.oneshot():
                times = proc.cpu_times()
                age = max(1e-9, time.time() - proc.create_time())
                cpu = round((times.user + times.system) / age, 4)
                rss = proc.memory_info().rss
        except psutil.Error:
            alive = False
    return {
        "name": info.name,
        "pid": info.pid,
        "alive": alive,
        "state": info.state.name.lower(),
        "restarts": info.restarts,
        "cpu": cpu,
        "rss_bytes": rss,
        "counters": info.counters,
        "error": info.error,
    }


def collect(data_dir: Path) -> dict[str, Any]:
    """The ``status --json`` report. ``running`` is false (and the rest empty
    or partial) when no live pipeline is recorded in ``data_dir``."""
    wal_dir = paths.market_wal_dir(data_dir)
    segments = wal.segment_paths(wal_dir)
    found = wal.recover(wal_dir) if segments else None
    report: dict[str, Any] = {
        "running": False,
        "run_id": None,
        "data_dir": str(data_dir),
        "processes": [],
        "rings": [],
        "unpersisted": {},
        "wal": {
            "dir": str(wal_dir),
            "segments": len(segments),
            "bytes": sum(p.stat().st_size for p in segments),
            "free_bytes": _free_bytes(wal_dir),
            "last_seq": {name: last for _src, (name, last) in sorted(found.sources.items())}
            if found
            else {},
        },
    }
    info = runinfo.read(data_dir)
    if info is None:
        return report
    if not shm.run_is_alive(info.run_id):
        report["unpersisted"] = _left_in_rings(info)
        return report
    report["running"] = True
    report["run_id"] = info.run_id
    report["supervisor_pid"] = info.pid
    try:
        table = ProcessTable.attach(info.processes)
    except PipelineError:
        return report
    try:
        report["processes"] = [_process(p) for p in table.all()]
    finally:
        table.close()
    for feed, st in _ring_stats(info):
        report["rings"].append(
            {
                "name": feed.name,
                "segment": feed.ring,
                "src": feed.src,
                "tail": st.tail,
                "capacity": st.capacity,
                "drops": st.dropped,
                "drop_events": st.drop_events,
                "closed": st.closed,
                "producer_alive": st.producer_alive,
                "consumers": [
                    {"name": c.name, "cursor": c.cursor, "lag": c.lag} for c in st.consumers
                ],
            }
        )
    return report


def _free_bytes(directory: Path) -> int | None:
    """Free space where the WAL is (or would be) written; None if unknown."""
    for candidate in (directory, *directory.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _left_in_rings(info: runinfo.RunInfo) -> dict[str, int]:
    """Feed -> records a dead run's ring still holds beyond its WAL cursor
    (the next ``start`` salvages them into the WAL)."""
    return {feed.name: st.lag("wal") for feed, st in _ring_stats(info) if st.lag("wal") > 0}


def _ring_stats(info: runinfo.RunInfo) -> Iterator[tuple[runinfo.FeedInfo, ring_mod.RingStats]]:
    """Each feed's ring statistics, for the rings that exist (gone after a reboot)."""
    for feed in info.feeds:
        try:
            with ring_mod.RingView(feed.ring) as ring:
                st = ring.stats()
        except PipelineError:
            continue
        yield feed, st
