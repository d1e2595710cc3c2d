"""The supervisor: ``connector-pipeline start``.

It owns the run: it creates the shared memory (rings, book table, process
table), starts one process per feed plus the WAL writer and the book builder
(spawn start method), watches exit codes and heartbeats, restarts a crashed
child with exponential backoff, and on SIGINT/SIGTERM drains in order:
ingest stops (rings close), the consumers empty the rings and exit (the WAL
syncs, the book builder checkpoints), then the shared memory is removed.

At start it also cleans up after a previous run of the same data dir that
died without stopping (e.g. SIGKILL): records still in that run's rings are
salvaged into the WAL, its segments and those of any other dead run are
removed, the WAL's torn tail is repaired, and sequences continue from the WAL.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from pipeline import book as book_mod
from pipeline import paths, processes, runinfo, shm
from pipeline import ring as ring_mod
from pipeline import wal as wal_mod
from pipeline.config import Config
from pipeline.errors import FatalError, PipelineError
from pipeline.processes import EXIT_CONFIG, RunSpec
from pipeline.stats import ProcessTable, State

log = logging.getLogger("pipeline.supervisor")

EXIT_OK = 0
EXIT_CHILD_FAILED = 1
EXIT_CANNOT_START = 2
STARTUP_TIMEOUT_S = 60.0
TICK_S = 0.05

Progress = Callable[[dict[str, Any]], None]


@dataclass
class Child:
    name: str
    target: Callable[..., None]
    args: tuple[Any, ...]
    slot: int
    proc: BaseProcess | None = None
    started: float = 0.0
    restarts: int = 0
    crashes_in_a_row: int = 0
    restart_at: float = 0.0
    finished: bool = False
    last_exit: int | None = None
    history: list[str] = field(default_factory=list)

    @property
    def is_ingest(self) -> bool:
        return self.name.startswith("ingest:")

    @property
    def is_service(self) -> bool:
        return self.name.startswith("service:")


class Supervisor:
    def __init__(
        self, config: Config, *, config_path: str = "", progress: Progress | None = None
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.data_dir = config.data_dir.resolve()
        self.progress = progress
        self.ctx = mp.get_context("spawn")
        self.stop_requested = False
        self.stop_reason = ""
        self.children: list[Child] = []
        self._lock_fd = -1
        self._segments: list[str] = []
        self.run: runinfo.RunInfo | None = None
        self.table: ProcessTable | None = None
        self.salvaged = 0
        self.removed_segments: list[str] = []
        self.final_processes: list[Any] = []
        self.final_rings: dict[str, ring_mod.RingStats] = {}
        self.unpersisted: dict[str, int] = {}
        """Feed -> records its ring still held, not in the WAL, after the
        drain (the WAL writer could not finish, e.g. the disk was full). Those
        rings are kept for the next start to salvage."""

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Prepare everything and start the children; raises FatalError if it cannot."""
        self._check_data_dir()
        self._take_lock()
        try:
            self._recover_previous_run()
            self._create_run()
            self._spawn_all()
            self._wait_ready()
        except BaseException:
            self._teardown()
            raise

    def run_until_stopped(self, duration_s: float | None = None) -> int:
        """Supervise until a signal, ``duration_s``, or every feed finished; then drain."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        exit_code = EXIT_OK
        try:
            deadline = time.monotonic() + duration_s if duration_s else None
            next_progress = time.monotonic()
            while not self.stop_requested:
                exit_code = self._watch() or exit_code
                if deadline is not None and time.monotonic() >= deadline:
                    self._request_stop(f"ran for {duration_s:g} s")
                ingest = [c for c in self.children if c.is_ingest]
                if ingest and all(c.finished for c in ingest):
                    self._request_stop("every feed finished")
                if self.progress is not None and time.monotonic() >= next_progress:
                    next_progress = time.monotonic() + 1.0
                    self.progress(self.snapshot())
                time.sleep(TICK_S)
            log.info("stopping: %s", self.stop_reason)
            self._drain()
            self._capture_final()
            if self.unpersisted:
                exit_code = EXIT_CHILD_FAILED
        finally:
            self._teardown()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return exit_code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._request_stop(f"received {signal.Signals(signum).name}")

    def _request_stop(self, reason: str) -> None:
        if not self.stop_requested:
            self.stop_requested = True
            self.stop_reason = reason

    # -- start-up ------------------------------------------------------------

    def _check_data_dir(self) -> None:
        try:
            paths.run_dir(self.data_dir).mkdir(parents=True, exist_ok=True)
            probe = paths.run_dir(self.data_dir) / ".write-test"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            raise FatalError(
                f"data dir {self.data_dir} is not writable: {exc.strerror or exc}"
            ) from None

    def _take_lock(self) -> None:
        try:
            self._lock_fd = paths.pid_lock(paths.run_dir(self.data_dir) / "supervisor.pid")
        except paths.LockHeld as held:
            raise FatalError(
                f"a pipeline is already running on {self.data_dir} (pid {held.holder})"
            ) from None

    def _recover_previous_run(self) -> None:
        """Salvage the rings of a dead previous run into the WAL, then remove stale segments."""
        previous = runinfo.read(self.data_dir)
        if previous is not None:
            wal_dir = paths.market_wal_dir(self.data_dir)
            writer = wal_mod.WalWriter(wal_dir, self.config.wal.writer_config())
            try:
                if writer.recovery.torn_tail_bytes:
                    log.warning(
                        "repaired a torn WAL tail of %d bytes", writer.recovery.torn_tail_bytes
                    )
                for feed in previous.feeds:
                    writer.register_source(feed.src, feed.name)
                    self.salvaged += _salvage_ring(feed.ring, writer)
                writer.flush()
            finally:
                writer.close()
            if self.salvaged:
                log.warning(
                    "salvaged %d records from the rings of the previous run %s",
                    self.salvaged,
                    previous.run_id,
                )
            for name in [f.ring for f in previous.feeds] + [previous.books, previous.processes]:
                if shm.unlink(name):
                    self.removed_segments.append(name)
            runinfo.remove(self.data_dir)
        self.removed_segments += shm.cleanup_stale()

    def _create_run(self) -> None:
        config = self.config
        found = wal_mod.recover(paths.market_wal_dir(self.data_dir))
        run_id = shm.new_run_id()
        feeds = []
        for feed in config.feeds:
            name = shm.segment_name(run_id, feed.name)
            ring = ring_mod.Ring.create(
                name,
                config.ring.capacity,
                ["wal", "book"],
                first_seq=found.last_seq(feed.src) + 1,
                full_wait_ms=config.ring.full_wait_ms,
                src=feed.src,
            )
            ring.close()
            self._segments.append(name)
            feeds.append(runinfo.FeedInfo(feed.name, feed.src, name))
        books_name = shm.segment_name(run_id, "books")
        book_mod.BookTable.create(
            books_name, config.book.max_instruments, config.book.depth
        ).close()
        self._segments.append(books_name)
        names = (
            [f"service:{s.name}" for s in config.services]
            + ["wal-writer", "book-builder"]
            + [f"ingest:{f.name}" for f in config.feeds]
        )
        procs_name = shm.segment_name(run_id, "procs")
        self.table = ProcessTable.create(procs_name, names)
        self._segments.append(procs_name)
        self.run = runinfo.RunInfo(
            run_id=run_id,
            pid=os.getpid(),
            data_dir=str(self.data_dir),
            started_ns=time.time_ns(),
            config=self.config_path,
            feeds=feeds,
            books=books_name,
            book_depth=config.book.depth,
            processes=procs_name,
            process_names=names,
        )
        runinfo.write(self.run)
        spec = RunSpec(
            config=_with_data_dir(config, self.data_dir), run=self.run, parent_pid=os.getpid()
        )
        slot = {name: i for i, name in enumerate(names)}
        self.children = (
            [
                Child(
                    f"service:{s.name}",
                    processes.run_service,
                    (spec, s.name),
                    slot[f"service:{s.name}"],
                )
                for s in config.services
            ]
            + [
                Child("wal-writer", processes.run_wal_writer, (spec,), slot["wal-writer"]),
                Child("book-builder", processes.run_book_builder, (spec,), slot["book-builder"]),
            ]
            + [
                Child(
                    f"ingest:{f.name}",
                    processes.run_ingest,
                    (spec, f.name),
                    slot[f"ingest:{f.name}"],
                )
                for f in config.feeds
            ]
        )
        log.info("run %s: %d feeds, data dir %s", run_id, len(feeds), self.data_dir)

    def _spawn(self, child: Child) -> None:
        assert self.table is not None
        self.table.reset(child.slot)
        proc = self.ctx.Process(target=child.target, args=child.args, name=child.name, daemon=False)
        proc.start()
        child.proc = proc
        child.started = time.monotonic()
        child.finished = False

    def _spawn_all(self) -> None:
        # Services, then the consumers, then the feeds: each waits for what it needs.
        for child in self.children:
            self._spawn(child)
            if not child.is_ingest:
                self._wait_ready([child])

    def _wait_ready(self, which: list[Child] | None = None) -> None:
        assert self.table is not None
        children = which or self.children
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            pending = []
            for child in children:
                info = self.table.read(child.slot)
                assert child.proc is not None
                if info.state == State.FAILED or (
                    child.proc.exitcode is not None and info.state != State.EXITED
                ):
                    child.proc.join(5)
                    why = (
                        info.error or f"exited with code {child.proc.exitcode} (see its log above)"
                    )
                    raise FatalError(f"{child.name} could not start: {why}")
                if info.state not in (State.READY, State.EXITED):
                    pending.append(child.name)
            if not pending:
                return
            if time.monotonic() > deadline:
                raise FatalError(
                    f"timed out after {STARTUP_TIMEOUT_S:.0f} s waiting for {', '.join(pending)} to start"
                )
            time.sleep(TICK_S)

    # -- watching ------------------------------------------------------------

    def _watch(self) -> int:
        """One pass: reap exits, restart crashes (with backoff), kill the silent."""
        assert self.table is not None
        sup = self.config.supervisor
        now = time.monotonic()
        status = EXIT_OK
        for child in self.children:
            proc = child.proc
            if child.finished:
                continue
            if proc is None:
                if now >= child.restart_at and not self.stop_requested:
                    self._spawn(child)
                continue
            if proc.exitcode is None:
                info = self.table.read(child.slot)
                silent_s = (time.monotonic_ns() - info.heartbeat_ns) / 1e9
                if info.state == State.READY and silent_s > sup.heartbeat_timeout_s:
                    log.error(
                        "%s (pid %d) silent for %.1f s: killing it", child.name, proc.pid, silent_s
                    )
                    child.history.append(f"killed after {silent_s:.1f} s without heartbeat")
                    os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
                continue
            code = proc.exitcode
            proc.join()
            child.proc = None
            child.last_exit = code
            info = self.table.read(child.slot)
            if code == 0 and info.state == State.EXITED:
                child.finished = True
                log.info("%s finished", child.name)
                continue
            if code == EXIT_CONFIG:
                log.error("%s failed: %s", child.name, info.error or "configuration error")
                self._request_stop(f"{child.name} failed: {info.error or 'configuration error'}")
                status = EXIT_CHILD_FAILED
                continue
            ran_s = now - child.started
            child.crashes_in_a_row = (
                1 if ran_s >= sup.stable_after_s else child.crashes_in_a_row + 1
            )
            delay_ms = min(
                sup.restart_backoff_ms * 2 ** (child.crashes_in_a_row - 1),
                sup.restart_backoff_max_ms,
            )
            child.restart_at = now + delay_ms / 1000
            child.restarts += 1
            self.table.set_restarts(child.slot, child.restarts)
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            child.history.append(how)
            log.warning(
                "%s died (%s) after %.1f s; restart %d in %.0f ms",
                child.name,
                how,
                ran_s,
                child.restarts,
                delay_ms,
            )
        return status

    def snapshot(self) -> dict[str, Any]:
        """Counters for progress output."""
        assert self.table is not None and self.run is not None
        procs = {p.name: p for p in self.table.all()}
        wal = procs.get("wal-writer")
        book = procs.get("book-builder")
        ingest = [p for name, p in procs.items() if name.startswith("ingest:")]
        drops = 0
        for feed in self.run.feeds:
            try:
                with ring_mod.RingView(feed.ring) as r:
                    drops += r.stats().dropped
            except PipelineError:
                pass
        return {
            "elapsed_s": (time.time_ns() - self.run.started_ns) / 1e9,
            "published": sum(p.counters["records_out"] for p in ingest),
            "persisted": wal.counters["records_out"] if wal else 0,
            "book_records": book.counters["records_in"] if book else 0,
            "drops": drops,
            "restarts": sum(c.restarts for c in self.children),
        }

    # -- stopping ------------------------------------------------------------

    def _drain(self) -> None:
        """Ingest stops first (closing the rings); then consumers finish the rings and exit."""
        timeout = self.config.supervisor.drain_timeout_s
        ingest = [c for c in self.children if c.is_ingest]
        services = [c for c in self.children if c.is_service]
        consumers = [c for c in self.children if not c.is_ingest and not c.is_service]
        self._terminate(ingest, timeout)
        self._terminate(consumers, timeout)
        self._terminate(services, timeout)

    def _capture_final(self) -> None:
        """What the run did, read after the drain and before the shared memory goes."""
        assert self.table is not None and self.run is not None
        self.final_processes = self.table.all()
        self.final_rings = {}
        for feed in self.run.feeds:
            with ring_mod.RingView(feed.ring) as r:
                stats = self.final_rings[feed.name] = r.stats()
            left = stats.lag("wal")
            if left > 0:
                self.unpersisted[feed.name] = left
                log.error(
                    "%d records of %s are not in the WAL: its ring %s is kept in shared memory "
                    "and the next `start` on %s writes them to the WAL (a reboot loses them)",
                    left,
                    feed.name,
                    feed.ring,
                    self.data_dir,
                )

    def _terminate(self, children: list[Child], timeout_s: float) -> None:
        live = [c for c in children if c.proc is not None and c.proc.exitcode is None]
        for c in live:
            assert c.proc is not None and c.proc.pid is not None
            os.kill(c.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for c in live:
            assert c.proc is not None
            c.proc.join(max(0.0, deadline - time.monotonic()))
            if c.proc.exitcode is None:
                log.error("%s did not stop within %.0f s: killing it", c.name, timeout_s)
                c.proc.kill()
                c.proc.join()

    def _teardown(self) -> None:
        """Stop anything still running and remove what this run created."""
        for c in self.children:
            if c.proc is not None and c.proc.exitcode is None:
                c.proc.kill()
                c.proc.join()
        if self.table is not None:
            self.table.close()
            self.table = None
        keep = {f.ring for f in self.run.feeds if f.name in self.unpersisted} if self.run else set()
        for name in self._segments:
            if name not in keep:
                shm.unlink(name)
        self._segments.clear()
        if self.run is not None and not keep:  # else the next start salvages from it
            current = runinfo.read(self.data_dir)
            if current is not None and current.run_id == self.run.run_id:
                runinfo.remove(self.data_dir)
        if self._lock_fd >= 0:
            os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = -1


def _salvage_ring(name: str, writer: wal_mod.WalWriter) -> int:
    """Append what a dead run's ring holds beyond its WAL cursor. Returns records appended."""
    try:
        consumer = ring_mod.Consumer(name, "wal", takeover=True)
    except PipelineError:
        return 0  # gone (the machine restarted) or not a ring
    appended = 0
    try:
        while True:
            batch = consumer.poll()
            if not len(batch):
                break
            appended += writer.append_records(batch)
            consumer.advance(len(batch))
    finally:
        consumer.close()
    return appended


def _with_data_dir(config: Config, data_dir: Path) -> Config:
    from pipeline.config import replace

    return replace(config, data_dir=data_dir)


def stop(
    data_dir: Path, timeout_s: float = 60.0, progress: Callable[[str], None] | None = None
) -> int:
    """Ask the supervisor of ``data_dir`` to drain and stop; wait for it. Returns its pid."""
    info = runinfo.require(data_dir)
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    next_note = time.monotonic() + 1.0
    while shm.run_is_alive(info.run_id):
        if time.monotonic() > deadline:
            raise PipelineError(f"pipeline pid {info.pid} did not stop within {timeout_s:.0f} s")
        if progress is not None and time.monotonic() >= next_note:
            next_note = time.monotonic() + 1.0
            progress(f"waiting for pid {info.pid} to drain its rings")
        time.sleep(0.05)
    return info.pid


def configure_logging(stream: Any = sys.stderr) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s supervisor[%(process)d] %(levelname)s %(message)s",
        stream=stream,
        force=True,
    )
