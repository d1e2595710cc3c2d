"""The whole runtime as a user runs it: `start` in a real process tree, SIGKILLs,
`stop`, then proof from the WAL that nothing was lost or duplicated."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from pipeline import book as book_mod
from pipeline import paths, runinfo, shm, status, wal
from pipeline import record as rec
from pipeline.processes import checkpoint_path
from pipeline.stats import ProcessTable
from pipeline.synthetic import SyntheticParams, SyntheticSource
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "connector.cli"]


def write_config(
    path: Path,
    *,
    rate: float = 20000,
    max_messages: int = 0,
    extra: str = "",
    feeds: int = 1,
    full_wait_ms: int = 60000,
) -> Path:
    feed_tables = "".join(
        f"""
[[feeds]]
name = "syn{i}"
adapter = "pipeline.synthetic:factory"
[feeds.params]
instruments = 20
levels = 8
rate = {rate}
seed = {7 + i}
first_inst = {1 + 100 * i}
max_messages = {max_messages}
"""
        for i in range(feeds)
    )
    path.write_text(
        f"""
[ring]
capacity = 8192
full_wait_ms = {full_wait_ms}

[wal]
segment_bytes = 1048576

[book]
depth = 10
max_instruments = 1024
checkpoint_interval_s = 0.5

[supervisor]
restart_backoff_ms = 50
restart_backoff_max_ms = 400
{extra}
{feed_tables}
"""
    )
    return path


class Run:
    """A pipeline started with `start --foreground` in a subprocess."""

    def __init__(self, config: Path, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [
                *CLI,
                "start",
                "--foreground",
                "--config",
                str(config),
                "--data-dir",
                str(data_dir),
                *args,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, timeout_s: float = 60) -> runinfo.RunInfo:
        def ready() -> runinfo.RunInfo | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"start exited with {self.proc.returncode}: {self.output()}")
            info = runinfo.read(self.data_dir)
            if info is None or info.pid != self.proc.pid:
                return None
            procs = self.processes()
            return info if procs and all(p["state"] == "ready" for p in procs) else None

        return wait_until(ready, timeout_s, "the pipeline to be ready")  # type: ignore[return-value]

    def processes(self) -> list[dict[str, Any]]:
        return status.collect(self.data_dir)["processes"]

    def pid_of(self, name: str) -> int:
        return next(p["pid"] for p in self.processes() if p["name"] == name)

    def counter(self, name: str, counter: str) -> int:
        return next(p["counters"][counter] for p in self.processes() if p["name"] == name)

    def stop(self, timeout_s: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float = 60) -> int:
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the pipeline did not stop within {timeout_s} s") from None
        return self.proc.returncode

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        out, err = self.proc.communicate()
        return (out + err).decode(errors="replace")[-4000:]


def kill_run(data_dir: Path) -> None:
    """SIGKILL a data dir's supervisor and every process in its table; remove its shared memory."""
    info = runinfo.read(data_dir)
    if info is None:
        return
    pids = [info.pid]
    with contextlib.suppress(Exception):
        table = ProcessTable.attach(info.processes)
        pids += [p.pid for p in table.all() if p.pid]
        table.close()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).wait(10)
    for name in [f.ring for f in info.feeds] + [info.books, info.processes]:
        shm.unlink(name)


def kill_after_progress(run: Run, victim: str, records: int) -> None:
    """SIGKILL ``victim`` once the WAL has taken ``records`` more; wait for its restart."""
    target = run.counter("wal-writer", "records_out") + records
    wait_until(lambda: run.counter("wal-writer", "records_out") >= target, 60, "progress")
    pid = run.pid_of(victim)
    os.kill(pid, signal.SIGKILL)
    wait_until(
        lambda: any(
            p["name"] == victim and p["pid"] not in (0, pid) and p["state"] == "ready"
            for p in run.processes()
        ),
        60,
        f"{victim} to be restarted",
    )


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
        kill_run(run.data_dir)
        for stream in (run.proc.stdout, run.proc.stderr):
            if stream is not None:
                stream.close()


def start_foreground(config: Path, data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    """`start --foreground` expected to end by itself (a failure to start)."""
    return subprocess.run(
        [*CLI, "start", "--foreground", "--config", str(config), "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )


def verify(data_dir: Path) -> dict[str, Any]:
    result = subprocess.run(
        [*CLI, "replay", "--wal", str(paths.market_wal_dir(data_dir)), "--verify", "--json"],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def assert_nothing_lost(report: dict[str, Any]) -> None:
    assert report["ok"], report["corrupt"]
    for name, src in report["sources"].items():
        assert src["duplicates"] == 0, f"{name}: a record was logged twice"
        assert src["undeclared_gaps"] == [], (
            f"{name}: records lost without a STATUS record saying so"
        )
        assert src["first_seq"] == 1


def wal_books(data_dir: Path) -> dict[int, Any]:
    state = book_mod.replay_books(wal.WalReader(paths.market_wal_dir(data_dir)).records())
    return {inst: (b.bids, b.asks, b.valid, b.last_seq) for inst, b in state.books.items()}


def checkpoint_books(data_dir: Path) -> dict[int, Any]:
    state = book_mod.load_checkpoint(checkpoint_path(data_dir))
    assert state is not None
    return {inst: (b.bids, b.asks, b.valid, b.last_seq) for inst, b in state.books.items()}


# ---------------------------------------------------------------------------


@pytest.mark.system
@pytest.mark.timeout(300)
def test_sigkill_every_process_several_times_loses_nothing(tmp_path: Path, runs: list[Run]) -> None:
    config = write_config(tmp_path / "p.toml", feeds=2)
    data = tmp_path / "data"
    run = Run(config, data)
    runs.append(run)
    run.wait_ready()
    rng = random.Random(5)
    victims = ["wal-writer", "book-builder", "ingest:syn0", "ingest:syn1"] * 3
    rng.shuffle(victims)
    for victim in victims:
        # A random moment: after a random amount of further progress.
        kill_after_progress(run, victim, rng.randrange(1, 20000))
    restarts = {p["name"]: p["restarts"] for p in run.processes()}
    assert all(restarts[v] >= 3 for v in set(victims)), restarts
    assert run.stop() == 0, run.output()
    report = verify(data)
    assert_nothing_lost(report)
    assert set(report["sources"]) == {"syn0", "syn1"}
    assert all(s["records"] > 10_000 for s in report["sources"].values())
    # The book builder was killed mid-stream three times; its final books must
    # equal books rebuilt from the WAL by a builder that never stopped.
    assert checkpoint_books(data) == wal_books(data)
    assert not [
        s
        for s in shm.list_segments()
        if s.run_id == str(run.proc.pid) or s.name.startswith(f"cp-{run.proc.pid}x")
    ]


@pytest.mark.system
@pytest.mark.timeout(180)
def test_graceful_stop_persists_everything_published(tmp_path: Path, runs: list[Run]) -> None:
    config = write_config(tmp_path / "p.toml", rate=0, max_messages=30_000)
    data = tmp_path / "data"
    run = Run(config, data)
    runs.append(run)
    # The feed finishes by itself; the supervisor then drains and exits 0.
    assert run.wait(120) == 0, run.output()
    got = np.concatenate(list(wal.WalReader(paths.market_wal_dir(data)).records()))
    source = SyntheticSource(SyntheticParams(instruments=20, levels=8, seed=7, max_messages=30_000))
    expected = np.concatenate(list(source.chunks()))
    assert len(got) == len(expected), "every published record, and nothing else"
    assert list(got["seq"]) == list(range(1, len(expected) + 1))
    for name in ("inst", "kind", "side", "flags", "px", "qty", "aux", "aux2"):
        assert np.array_equal(got[name], expected[name]), name
    assert not (paths.run_dir(data) / "pipeline.json").exists()


@pytest.mark.system
@pytest.mark.timeout(180)
def test_start_after_sigkill_of_the_supervisor_recovers(tmp_path: Path, runs: list[Run]) -> None:
    config = write_config(tmp_path / "p.toml")
    data = tmp_path / "data"
    first = Run(config, data)
    runs.append(first)
    info = first.wait_ready()
    children = [p["pid"] for p in first.processes()]
    wait_until(
        lambda: first.counter("wal-writer", "records_out") > 5000, 60, "some records persisted"
    )
    first.proc.kill()
    first.proc.wait()
    # No orphans: the children notice the supervisor's death and exit.
    wait_until(
        lambda: (
            not any(
                psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                for p in children
            )
        ),
        30,
        "the children to exit",
    )
    assert shm.exists(info.feeds[0].ring), "the dead run's segments are still there"
    last_before = wal.recover(paths.market_wal_dir(data)).last_seq(1)
    second = Run(config, data)
    runs.append(second)
    second.wait_ready()
    assert not shm.exists(info.feeds[0].ring), "stale segments of the dead run were removed"
    wait_until(
        lambda: second.counter("wal-writer", "records_out") > 5000, 60, "the second run to persist"
    )
    assert second.stop() == 0, second.output()
    report = verify(data)
    assert_nothing_lost(report)
    assert report["sources"]["syn0"]["last_seq"] > last_before + 5000, (
        "sequences continued across the restart"
    )


@pytest.mark.system
@pytest.mark.timeout(180)
def test_readers_attach_and_detach_without_disturbing_the_pipeline(
    tmp_path: Path, runs: list[Run]
) -> None:
    config = write_config(tmp_path / "p.toml")
    data = tmp_path / "data"
    run = Run(config, data)
    runs.append(run)
    info = run.wait_ready()
    segments_before = sorted(s.name for s in shm.list_segments(f"cp-{info.run_id}-"))
    for i in range(6):
        tail = subprocess.run(
            [
                *CLI,
                "tail",
                "--data-dir",
                str(data),
                "--json",
                "--count",
                "20",
                *(["--from-oldest"] if i % 2 else []),
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert tail.returncode == 0, tail.stderr.decode()
        lines = [json.loads(x) for x in tail.stdout.decode().splitlines()]
        assert len(lines) == 20
        seqs = [x["seq"] for x in lines]
        assert seqs == sorted(seqs) and len(set(seqs)) == 20
        # Named as the feed published them (book records carry their instrument).
        named = [x for x in lines if x["kind"] != "STATUS"]
        assert named and all(x["symbol"] == f"SYN{x['inst']:05d}" for x in named)
        book = subprocess.run(
            [*CLI, "book", "SYN00003", "--data-dir", str(data), "--json", "--depth", "3"],
            cwd=ROOT,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert book.returncode == 0, book.stderr.decode()
        snap = json.loads(book.stdout)
        assert snap["inst"] == 3 and snap["valid"] and len(snap["bids"]) == 3
        assert float(snap["bids"][0][0]) < float(snap["asks"][0][0]), "a consistent, uncrossed book"
    text = subprocess.run(
        [*CLI, "tail", "--data-dir", str(data), "--count", "5"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert text.returncode == 0, text.stderr.decode()
    shown = text.stdout.decode().splitlines()
    assert len(shown) == 5 and all(re.search(r" SYN\d{5} \(\d+\) ", x) for x in shown), shown
    assert sorted(s.name for s in shm.list_segments(f"cp-{info.run_id}-")) == segments_before, (
        "no reader leaked a segment"
    )
    procs = run.processes()
    assert all(p["restarts"] == 0 and p["alive"] for p in procs)
    assert run.stop() == 0
    assert_nothing_lost(verify(data))
    assert all(r["drops"] == 0 for r in status.collect(data)["rings"])


@pytest.mark.system
@pytest.mark.timeout(120)
def test_start_fails_clearly(tmp_path: Path, runs: list[Run]) -> None:
    bad_key = write_config(tmp_path / "bad.toml", extra="[bogus]\nx = 1\n")
    result = start_foreground(bad_key, tmp_path / "d1")
    assert result.returncode == 2 and b"unknown key 'bogus'" in result.stderr
    bad_param = tmp_path / "param.toml"
    bad_param.write_text(
        write_config(tmp_path / "x.toml").read_text().replace("levels = 8", "levels = 8\nspeed = 3")
    )
    result = start_foreground(bad_param, tmp_path / "d2")
    assert result.returncode == 2
    assert (
        b"ingest:syn0 could not start" in result.stderr and b"unknown key 'speed'" in result.stderr
    )
    # Instrument ids beyond the book table: refused at start, not books that never fill.
    beyond = tmp_path / "beyond.toml"
    beyond.write_text(
        write_config(tmp_path / "y.toml").read_text().replace("first_inst = 1", "first_inst = 1020")
    )
    result = start_foreground(beyond, tmp_path / "d3")
    assert result.returncode == 2
    assert b"ingest:syn0 could not start" in result.stderr
    assert b"id 1039" in result.stderr and b"max_instruments" in result.stderr
    # A data dir that cannot be created (its parent is a file; works as root too).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = start_foreground(bad_param, blocker / "d")
    assert result.returncode == 2 and b"not writable" in result.stderr
    assert not [s for s in shm.list_segments() if not shm.run_is_alive(s.run_id)], (
        "failed starts leave no segments"
    )


@pytest.mark.system
@pytest.mark.timeout(120)
def test_second_start_on_the_same_data_dir_is_refused(tmp_path: Path, runs: list[Run]) -> None:
    config = write_config(tmp_path / "p.toml")
    data = tmp_path / "data"
    run = Run(config, data)
    runs.append(run)
    run.wait_ready()
    second = start_foreground(config, data)
    assert second.returncode == 2 and b"already running" in second.stderr
    report = status.collect(data)
    assert report["running"] and len(report["processes"]) == 3
    for key in ("run_id", "processes", "rings", "wal"):
        assert key in report
    for p in report["processes"]:
        assert {"name", "pid", "alive", "restarts", "cpu", "rss_bytes"} <= set(p)
    ring = report["rings"][0]
    assert {"name", "tail", "drops", "consumers"} <= set(ring)
    assert [c["name"] for c in ring["consumers"]] == ["wal", "book"]
    assert {"dir", "segments", "bytes", "last_seq"} <= set(report["wal"])
    assert run.stop() == 0


@pytest.mark.system
@pytest.mark.timeout(120)
def test_services_start_before_the_feeds_and_stop_after_them(
    tmp_path: Path, runs: list[Run]
) -> None:
    log = tmp_path / "service.log"
    config = write_config(
        tmp_path / "p.toml",
        rate=0,
        max_messages=20_000,
        extra=f'[[services]]\nname = "helper"\ntarget = "tests.pipeline.service_target:run"\n[services.params]\nlog = "{log}"\n',
    )
    data = tmp_path / "data"
    run = Run(config, data)
    runs.append(run)
    assert run.wait(120) == 0, run.output()
    started, stopped = (int(line.split()[1]) for line in log.read_text().splitlines())
    # Every record was received while the service was up.
    got = np.concatenate(list(wal.WalReader(paths.market_wal_dir(data)).records()))
    assert len(got) > 20_000
    assert started < int(got["ts_recv"].min()) and int(got["ts_recv"].max()) < stopped


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.system
@pytest.mark.timeout(240)
def test_binance_feeds_on_the_simulator_survive_sigkills(tmp_path: Path, runs: list[Run]) -> None:
    spot, usdm = _free_port(), _free_port()
    config = tmp_path / "binance.toml"
    config.write_text(
        f"""
[ring]
capacity = 8192
full_wait_ms = 60000

[supervisor]
restart_backoff_ms = 50
restart_backoff_max_ms = 400

[[services]]
name = "sim-spot"
target = "connector.sim.service:binance"
[services.params]
port = {spot}
market = "spot"
symbols = ["BTCUSDT", "ETHUSDT"]
rate = 50

[[services]]
name = "sim-usdm"
target = "connector.sim.service:binance"
[services.params]
port = {usdm}
market = "usdm"
symbols = ["BTCUSDT"]
rate = 50

[[feeds]]
name = "spot"
adapter = "connector.binance.client:factory"
[feeds.params]
market = "spot"
ws_url = "ws://127.0.0.1:{spot}"
rest_url = "http://127.0.0.1:{spot}"
symbols = ["BTCUSDT", "ETHUSDT"]
silence_timeout_s = 5.0

[[feeds]]
name = "usdm"
adapter = "connector.binance.client:factory"
[feeds.params]
market = "usdm"
ws_url = "ws://127.0.0.1:{usdm}"
rest_url = "http://127.0.0.1:{usdm}"
symbols = ["BTCUSDT"]
first_inst = 101
streams = ["depth@100ms", "aggTrade", "bookTicker", "markPrice@1s"]
"""
    )
    data = tmp_path / "data"
    run = Run(config, data)
    runs.append(run)
    run.wait_ready()
    for victim in ["ingest:spot", "wal-writer", "ingest:usdm", "book-builder", "ingest:spot"]:
        kill_after_progress(run, victim, 300)

    def resyncs_after_restarts(strict: bool) -> list[set[int]]:
        """Per spot restart, the instruments snapshotted after it (before the next one)."""
        records = np.concatenate(
            list(wal.WalReader(paths.market_wal_dir(data)).records(src=1, strict=strict))
            or [np.zeros(0, dtype=rec.RECORD_DTYPE)]
        )
        restarts = records["seq"][(records["kind"] == 10) & (records["aux"] == 10)].tolist()
        clears = records[records["kind"] == 1]
        bounds = [*restarts, int(records["seq"].max()) + 1 if len(records) else 0]
        return [
            set(clears["inst"][(clears["seq"] > a) & (clears["seq"] < b)].tolist())
            for a, b in itertools.pairwise(bounds)
        ]

    # Progress alone is not enough: the usdm feed can make it while the last
    # restarted spot ingest still waits for its snapshots. (The live WAL is
    # read as far as it is complete: the writer may be mid-frame.)
    wait_until(
        lambda: (r := resyncs_after_restarts(strict=False)) and len(r) == 2 and r[-1] == {1, 2},
        60,
        "the spot books to resync after the last restart",
    )
    assert run.stop() == 0, run.output()
    report = verify(data)
    assert_nothing_lost(report)
    assert set(report["sources"]) == {"spot", "usdm"}
    # Each restarted ingest said so (two PRODUCER_RESTART records on the spot
    # feed), and then resynced both its books from snapshots. (The first
    # ingest may be killed before its second snapshot: no assertion on it.)
    assert resyncs_after_restarts(strict=True) == [{1, 2}, {1, 2}]
    assert checkpoint_books(data) == wal_books(data)


@pytest.mark.system
@pytest.mark.timeout(120)
def test_monitor_shows_the_live_rings_with_rates(tmp_path: Path, runs: list[Run]) -> None:
    from click.testing import CliRunner

    from connector.cli import main

    config = write_config(tmp_path / "p.toml")
    data = tmp_path / "data"
    run = Run(config, data)
    runs.append(run)
    run.wait_ready()
    result = CliRunner().invoke(
        main, ["monitor", "--data-dir", str(data), "--count", "2", "--interval", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "running: run" in result.output and "records/s" in result.output
    assert "syn0" in result.output and "wal lag" in result.output
    # The book builder's "out" column: records applied to books.
    wait_until(lambda: run.counter("book-builder", "records_out") > 0, 60, "books applied")
    assert run.counter("book-builder", "records_out") <= run.counter("book-builder", "records_in")
    assert run.stop() == 0
    idle = CliRunner().invoke(main, ["monitor", "--data-dir", str(data), "--count", "1"])
    assert idle.exit_code == 0 and "not running" in idle.output


def renaming_config(tmp_path: Path, shift_ids: int = 0) -> tuple[Path, Path]:
    """A run of the renaming test adapter (5 instruments, ids 11..15, a
    1024-slot book table); it renames them once the returned trigger file exists."""
    config = tmp_path / "renaming.toml"
    trigger = tmp_path / "next-day"
    config.write_text(
        f"""
[book]
max_instruments = 1024

[[feeds]]
name = "renaming"
adapter = "tests.pipeline.renaming_adapter:factory"
[feeds.params]
instruments = 5
first_inst = 11
rate = 2000
rename_when = "{trigger}"
shift_ids = {shift_ids}
"""
    )
    return config, trigger


@pytest.mark.system
@pytest.mark.timeout(180)
def test_an_adapter_whose_instruments_change_is_republished_for_readers(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, trigger = renaming_config(tmp_path)
    data_dir = tmp_path / "data"
    run = Run(config, data_dir)
    runs.append(run)
    published = paths.run_dir(data_dir) / "instruments" / "renaming.json"

    def names() -> dict[str, str] | None:
        try:
            return dict(json.loads(published.read_bytes()))
        except (FileNotFoundError, ValueError):
            return None

    run.wait_ready()
    first = names()
    assert first == {str(i): f"SYN{i:05d}" for i in range(11, 16)}
    trigger.touch()
    renamed = {i: f"NEXTDAY:{n}" for i, n in first.items()}
    wait_until(lambda: names() == renamed, 30, "the new names published")
    assert run.stop() == 0, run.output()


@pytest.mark.system
@pytest.mark.timeout(180)
def test_new_instrument_ids_beyond_the_book_table_stop_the_run_and_say_why(
    tmp_path: Path, runs: list[Run]
) -> None:
    config, trigger = renaming_config(tmp_path, shift_ids=5000)
    run = Run(config, tmp_path / "data")
    runs.append(run)
    run.wait_ready()
    trigger.touch()
    assert run.wait(60) != 0
    output = run.output()
    assert "renaming failed" in output and "the book table has 1024 slots" in output, output


@pytest.mark.system
@pytest.mark.timeout(240)
def test_a_full_disk_stalls_the_wal_without_losing_anything_silently(
    tmp_path: Path, small_disk: Path, runs: list[Run]
) -> None:
    # 6 MiB with 3 MiB of ballast: room for two or three 1 MiB segments.
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (3 << 20))
    config = write_config(tmp_path / "p.toml", rate=2000, full_wait_ms=300)
    data = small_disk / "data"
    run = Run(config, data)
    runs.append(run)
    run.wait_ready()

    def ring_drops() -> int:
        return sum(r["drops"] for r in status.collect(data)["rings"])

    # The WAL writer says the disk is full and waits; the ring fills, the feed
    # drops and declares; nobody is restarted (nor killed as hung).
    wait_until(lambda: run.counter("wal-writer", "errors") >= 1, 60, "the disk to fill")
    stuck = run.counter("wal-writer", "records_out")
    wait_until(lambda: ring_drops() > 0, 60, "the full ring to drop")
    assert run.counter("wal-writer", "records_out") == stuck
    # Not a byte left: the book builder's checkpoints fail too, and it goes on.
    filler = small_disk / "filler"
    with open(filler, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
    wait_until(lambda: run.counter("book-builder", "errors") >= 1, 60, "a failed checkpoint")
    filler.unlink()
    assert all(p["restarts"] == 0 and p["alive"] for p in run.processes()), run.processes()

    ballast.unlink()  # room again: the writer resumes by itself (and fills the disk again)
    wait_until(lambda: run.counter("wal-writer", "records_out") > stuck, 60, "the WAL to resume")
    wait_until(lambda: run.counter("wal-writer", "errors") >= 2, 60, "the disk to fill again")
    assert all(p["restarts"] == 0 for p in run.processes())

    # Stopped while full: what the ring holds is kept for the next start (exit 1, said).
    info = runinfo.read(data)
    assert info is not None
    assert run.stop() == 1
    output = run.output()
    assert "records are not in the WAL yet" in output, output
    kept = [s.name for s in shm.list_segments(f"cp-{info.run_id}-")]
    assert runinfo.read(data) is not None and kept == [info.feeds[0].ring]
    left = status.collect(data)
    assert not left["running"] and left["unpersisted"]["syn0"] > 0, left["unpersisted"]

    subprocess.run(["mount", "-o", "remount,size=24m", str(small_disk)], check=True)
    second = Run(config, data, "--duration", "1")
    runs.append(second)
    assert second.wait(120) == 0, second.output()
    assert "salvaged" in second.output()
    assert not shm.list_segments(f"cp-{info.run_id}-")
    assert status.collect(data)["unpersisted"] == {}
    report = verify(data)
    assert_nothing_lost(report)  # every gap in seq is declared by a STATUS record
    assert report["sources"]["syn0"]["declared_gaps"], "the drops are in the WAL, declared"
