"""Process bodies: the ingest host, the WAL writer and the book builder.

Each runs in its own process started by the supervisor (spawn start method).
Common rules: SIGINT is ignored (Ctrl-C reaches the whole process group; the
supervisor decides the order of shutdown), SIGTERM asks for a clean stop,
the process dies with its parent (PR_SET_PDEATHSIG, SIGTERM: a clean drain),
it reports state, heartbeat and counters in its process-table slot, and a
failure to start is written there (the supervisor shows it) before exiting
with :data:`EXIT_CONFIG` (bad configuration: do not restart) or 1.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from pipeline import book as book_mod
from pipeline import paths
from pipeline import record as rec
from pipeline import ring as ring_mod
from pipeline import wal as wal_mod
from pipeline.adapter import AdapterContext, check_instrument_ids, load_factory
from pipeline.config import Config
from pipeline.errors import ConfigError, PipelineError, WalFullError
from pipeline.runinfo import RunInfo
from pipeline.stats import Counter, ProcessTable, Reporter, State

EXIT_CONFIG = 78  # EX_CONFIG: the configuration is wrong; restarting will not help
HEARTBEAT_S = 0.1
LATENCY_SAMPLES = 200_000

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class RunSpec:
    """Everything a child needs; pickled to it by the spawn start method."""

    config: Config
    run: RunInfo
    parent_pid: int


# ---------------------------------------------------------------------------
# common child setup


class _Stop:
    """Set by SIGTERM; checked by the process loops."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, *_: object) -> None:
        self.requested = True


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies (Linux), then make
    sure it has not already died before the request was made."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if os.getppid() != parent_pid:
        sys.exit(0)


def _setup(spec: RunSpec, name: str) -> tuple[Reporter, _Stop]:
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {name}[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
        force=True,
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    _die_with_parent(spec.parent_pid)
    table = ProcessTable.attach(spec.run.processes)
    return Reporter(table, name), stop


def _fail(reporter: Reporter, exc: BaseException, doing: str = "cannot start") -> None:
    message = str(exc) or type(exc).__name__
    reporter.fail(message)
    log.error("%s: %s", doing, message)
    sys.exit(EXIT_CONFIG if isinstance(exc, ConfigError) else 1)


class _Latency:
    """A bounded record of latency samples (ns), written out at exit for benchmarks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples = np.zeros(LATENCY_SAMPLES, dtype=np.int64)
        self.count = 0

    def add(self, value_ns: int) -> None:
        self.samples[self.count % LATENCY_SAMPLES] = value_ns
        self.count += 1

    def save(self) -> None:
        n = min(self.count, LATENCY_SAMPLES)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.save(self.path, self.samples[:n])
        except OSError as exc:  # diagnostics only (bench pipeline reads them)
            log.warning("latency samples not saved to %s: %s", self.path, exc.strerror)


def _consumer_backoff() -> ring_mod.Backoff:
    """How the WAL writer and book builder wait for data: yield briefly, then
    sleep at most 200 µs. Measured with `bench pipeline` at 10k msg/s: p99
    receive-to-book under 1 ms, at about a fifth of a core per consumer
    while waiting (a longer yield window buys little latency for much CPU)."""
    return ring_mod.Backoff(spin_us=2, yield_us=200, sleep_min_us=50, sleep_max_us=200)


def _consumed(backoff: ring_mod.Backoff, records: int) -> None:
    """After a consumer loop's batch of ``records``: the next idle period
    starts over (sleeping at once in a burst) and, in a burst, the CPU is
    yielded once, so a process sharing this core (a feed, the other
    consumer) runs now rather than after the scheduler's time slice, as
    :meth:`ring.Consumer.wait` does. `bench pipeline` at full speed: about
    +10% records/s persisted (3 alternating pairs)."""
    busy = records >= ring_mod.BUSY_BATCH
    backoff.reset(busy=busy)
    if busy:
        os.sched_yield()


def _ring_done(consumer: ring_mod.Consumer) -> bool:
    """Nothing more will come: closed and drained, or its producer is gone and it is drained."""
    return consumer.at_end or (consumer.lag == 0 and not consumer.producer_alive())


# ---------------------------------------------------------------------------
# ingest host


def run_ingest(spec: RunSpec, feed_name: str) -> None:
    """Run the feed's adapter and publish what it yields to the feed's ring."""
    reporter, stop = _setup(spec, f"ingest:{feed_name}")
    try:
        feed = spec.config.feed(feed_name)
        info = spec.run.feed(feed_name)
        factory = load_factory(feed.adapter)
        max_instruments = spec.config.book.max_instruments
        context = AdapterContext(feed.name, feed.src, spec.config.data_dir, max_instruments)
        adapter = factory(feed.params, context)
        if (instruments := getattr(adapter, "instruments", None)) is not None:
            check_instrument_ids(feed.name, instruments(), max_instruments)
        producer = ring_mod.Producer(info.ring, takeover=True)
        producer.on_wait = reporter.heartbeat  # blocked by a full ring is not hung
        sequencer = ring_mod.Sequencer(producer, src=feed.src)
        _write_instruments(spec, feed_name, adapter)
    except Exception as exc:
        _fail(reporter, exc)
        return
    if producer.tail:
        # A predecessor died: what it had not received is lost at the venue
        # level, so books of this source must wait for fresh snapshots.
        restart = rec.status(
            src=feed.src, reason=rec.StatusReason.PRODUCER_RESTART, ts_recv=time.time_ns()
        )
        sequencer.publish(restart)
        reporter.add(Counter.STATUS_RECORDS)
    reporter.state(State.READY)
    log.info("publishing to %s from seq %d", info.ring, sequencer.next_seq)
    published = getattr(adapter, "instruments_version", 0)

    def republish_instruments() -> None:
        """An adapter whose instruments change while running (a new day's
        contracts) bumps ``instruments_version``: readers get the new names."""
        nonlocal published
        version = getattr(adapter, "instruments_version", 0)
        if version != published:
            published = version
            check_instrument_ids(feed.name, adapter.instruments(), max_instruments)
            _write_instruments(spec, feed_name, adapter)

    try:
        finished = asyncio.run(
            _pump(adapter, sequencer, feed.src, reporter, stop, republish_instruments)
        )
    except (
        ConfigError
    ) as exc:  # e.g. new instrument ids beyond the book table: stop the run, say why
        _fail(reporter, exc, "stopping")
        return
    reporter.state(State.DRAINING)
    sequencer.close()
    reporter.state(State.EXITED)
    log.info(
        "stopped (%s) at seq %d",
        "source finished" if finished else "asked to stop",
        sequencer.next_seq - 1,
    )


async def _pump(
    adapter: Any,
    sequencer: ring_mod.Sequencer,
    src: int,
    reporter: Reporter,
    stop: _Stop,
    on_beat: Callable[[], None] = lambda: None,
) -> bool:
    """Move batches from the adapter to the ring until the source ends (True) or a stop (False)."""
    producer = sequencer.producer
    counters = reporter.counters

    async def beat() -> None:
        while True:
            producer.heartbeat()
            reporter.heartbeat()
            on_beat()
            if stop.requested:
                return
            await asyncio.sleep(HEARTBEAT_S)

    async def pump() -> None:
        async for batch in adapter.records():
            batch["src"] = src
            sequencer.publish(batch)
            counters[Counter.RECORDS_OUT] += len(batch)
            counters[Counter.BATCHES] += 1
            if stop.requested:
                return

    beat_task = asyncio.ensure_future(beat())
    pump_task = asyncio.ensure_future(pump())
    done, _pending = await asyncio.wait({beat_task, pump_task}, return_when=asyncio.FIRST_COMPLETED)
    finished = pump_task in done and not stop.requested
    for task in (beat_task, pump_task):
        task.cancel()
    await asyncio.gather(beat_task, pump_task, return_exceptions=True)
    for task in (pump_task, beat_task):  # neither the adapter's failure nor the host's is silent
        if task in done and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    reporter.set(Counter.DROPPED, producer.stats().dropped)
    return finished


def _write_instruments(spec: RunSpec, feed_name: str, adapter: Any) -> None:
    """Publish the adapter's instrument ids and symbols for readers (``book SYMBOL``)."""
    instruments = getattr(adapter, "instruments", None)
    if instruments is None:
        return
    target = paths.published_instruments(spec.config.data_dir, feed_name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(orjson.dumps({str(k): v for k, v in instruments().items()}))
    os.replace(tmp, target)


# ---------------------------------------------------------------------------
# services


class ServiceContext:
    """What a service target gets besides its params."""

    def __init__(self, reporter: Reporter, stop: _Stop, data_dir: Path) -> None:
        self._reporter = reporter
        self._stop = stop
        self.data_dir = data_dir

    def ready(self) -> None:
        """The service is up (the supervisor starts the feeds only after this)."""
        self._reporter.state(State.READY)

    def stopping(self) -> bool:
        """True once the supervisor asked the service to stop; also heartbeats."""
        self._reporter.heartbeat()
        return self._stop.requested


def run_service(spec: RunSpec, name: str) -> None:
    """Run a configured service (``target(params, context)``) until asked to stop."""
    reporter, stop = _setup(spec, f"service:{name}")
    try:
        service = next(s for s in spec.config.services if s.name == name)
        target = load_factory(service.target)
    except Exception as exc:
        _fail(reporter, exc)
        return
    try:
        target(service.params, ServiceContext(reporter, stop, spec.config.data_dir))  # type: ignore[arg-type]
    except Exception as exc:
        _fail(reporter, exc)
        return
    reporter.state(State.EXITED)


# ---------------------------------------------------------------------------
# WAL writer


def run_wal_writer(spec: RunSpec) -> None:
    """Persist every record of every ring, in order, skipping what is already logged."""
    reporter, stop = _setup(spec, "wal-writer")
    config = spec.config
    try:
        core = config.wal.pin_cpu()
        if core is not None:
            try:
                os.sched_setaffinity(0, {core})
            except OSError as exc:
                raise ConfigError(
                    f"wal.cpu: cannot pin the WAL writer to core {core}: {exc.strerror}"
                ) from None
        writer = wal_mod.WalWriter(
            paths.market_wal_dir(config.data_dir), config.wal.writer_config()
        )
        for feed in spec.run.feeds:
            writer.register_source(feed.src, feed.name)
        consumers = [ring_mod.Consumer(f.ring, "wal", takeover=True) for f in spec.run.feeds]
    except Exception as exc:
        _fail(reporter, exc)
        return
    if writer.recovery.torn_tail_bytes:
        log.warning(
            "zeroed a torn tail of %d bytes in %s",
            writer.recovery.torn_tail_bytes,
            writer.recovery.last_segment,
        )
    for bad in writer.recovery.corrupt:
        log.error(
            "WAL corruption in %s at offset %d: %s (run `replay --verify`)",
            bad.file,
            bad.offset,
            bad.reason,
        )
    latency = _Latency(paths.run_dir(config.data_dir) / "latency" / "wal-writer.npy")
    reporter.state(State.READY)
    counters = reporter.counters
    backoff = _consumer_backoff()
    pending: list[tuple[ring_mod.Consumer, int]] = []
    full = _DiskFull(reporter)
    next_beat = 0.0
    while True:
        pending.clear()
        last_recv = 0
        written = writer.records_written
        try:
            if full.since is None or full.retry_due():
                for c in consumers:
                    batch = c.poll()
                    if len(batch):
                        writer.append_records(batch)
                        last_recv = max(last_recv, int(batch["ts_recv"][-1]))
                        pending.append((c, len(batch)))
                if writer.records_written > written:
                    full.over()  # it wrote past the segment it was stuck in
        except WalFullError as exc:
            # What was appended is flushed; nothing is consumed: the rings hold
            # the rest (the feeds drop and declare it once a ring is full).
            full.hit(exc, sum(c.lag for c in consumers))
            pending.clear()
        counters[Counter.RECORDS_OUT] += writer.records_written - written
        if pending:
            writer.flush()  # in the kernel's hands: a SIGKILL from here on loses nothing
            for c, n in pending:
                c.advance(n)
            counters[Counter.RECORDS_IN] += sum(n for _c, n in pending)
            counters[Counter.BATCHES] += 1
            if last_recv:
                latency.add(time.time_ns() - last_recv)
            _consumed(backoff, sum(n for _c, n in pending))
        else:
            if stop.requested and (full.since is not None or all(_ring_done(c) for c in consumers)):
                break
            backoff.idle()
        now = time.monotonic()
        if now >= next_beat:
            next_beat = now + HEARTBEAT_S
            reporter.heartbeat()
            counters[Counter.SKIPPED] = writer.records_skipped
            counters[Counter.BYTES] = writer.bytes_written
    if full.since is not None:
        log.error(
            "stopping with the disk still full: %d records stay in the rings",
            sum(c.lag for c in consumers),
        )
    reporter.state(State.DRAINING)
    writer.close()
    latency.save()
    reporter.state(State.EXITED)
    log.info(
        "stopped: %d records written, %d already logged",
        writer.records_written,
        writer.records_skipped,
    )


class _DiskFull:
    """The WAL writer's disk-full state: retried every ``RETRY_S``, said
    once when it starts (ERROR, counted), every minute while it lasts, and
    when it ends."""

    RETRY_S = 1.0
    REPEAT_S = 60.0

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self.since: float | None = None
        self._retry_at = 0.0
        self._said_at = 0.0

    def retry_due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def hit(self, exc: WalFullError, waiting: int) -> None:
        now = time.monotonic()
        self._retry_at = now + self.RETRY_S
        if self.since is None:
            self.since = now
            self._reporter.add(Counter.ERRORS)
        elif now - self._said_at < self.REPEAT_S:
            return
        self._said_at = now
        log.error(
            "%s; %d records wait in the rings (a full ring drops and declares what it cannot "
            "take); retrying every %.0f s",
            exc,
            waiting,
            self.RETRY_S,
        )

    def over(self) -> None:
        if self.since is not None:
            log.warning(
                "disk space is back: the WAL resumes after %.0f s", time.monotonic() - self.since
            )
            self.since = None


# ---------------------------------------------------------------------------
# book builder


def checkpoint_path(data_dir: Path) -> Path:
    return data_dir / "books" / "checkpoint.json"


def run_book_builder(spec: RunSpec) -> None:
    """Build L2 books from every ring and publish them in the shared table.

    After a crash it rebuilds from its checkpoint, the WAL and the ring (see
    :func:`recover_books`), so its books equal those of a builder that never
    stopped.
    """
    reporter, stop = _setup(spec, "book-builder")
    config = spec.config
    try:
        table = book_mod.BookTable.attach(spec.run.books)
        consumers = [ring_mod.Consumer(f.ring, "book", takeover=True) for f in spec.run.feeds]
        state = recover_books(spec, consumers)
    except Exception as exc:
        _fail(reporter, exc)
        return
    ckpt = checkpoint_path(config.data_dir)
    now = time.time_ns()
    for b in state.books.values():
        if b.inst < table.slots:
            table.publish(b, now)
    latency = _Latency(paths.run_dir(config.data_dir) / "latency" / "book-builder.npy")
    reporter.state(State.READY)
    log.info("building books from %d rings (%d books recovered)", len(consumers), len(state.books))
    counters = reporter.counters
    backoff = _consumer_backoff()
    interval = config.book.checkpoint_interval_s
    next_checkpoint = time.monotonic() + interval
    next_beat = 0.0
    out_of_table: set[int] = set()
    saver = _Checkpointer(ckpt, spec.run.run_id, reporter)
    while True:
        busy = 0
        for c in consumers:
            batch = c.poll()
            n = len(batch)
            if not n:
                continue
            busy += n
            applied = state.records_applied
            touched = state.apply(batch)
            counters[Counter.RECORDS_OUT] += state.records_applied - applied  # in - out: skipped
            now = time.time_ns()
            for inst in touched:
                b = state.books[inst]
                if not b.consistent:
                    continue  # mid-message (the batch ended at the ring's wrap): publish after its LAST
                if inst >= table.slots:
                    if inst not in out_of_table:
                        out_of_table.add(inst)
                        log.error(
                            "instrument id %d is beyond the book table (%d slots): not published",
                            inst,
                            table.slots,
                        )
                        counters[Counter.ERRORS] += 1
                    continue
                table.publish(b, now)
                counters[Counter.PUBLISHES] += 1
                latency.add(now - b.ts_recv)
            c.advance(n)
            counters[Counter.RECORDS_IN] += n
        if busy:
            _consumed(backoff, busy)
        else:
            if stop.requested and all(_ring_done(c) for c in consumers):
                break
            backoff.idle()
        mono = time.monotonic()
        if mono >= next_beat:
            next_beat = mono + HEARTBEAT_S
            reporter.heartbeat()
            counters[Counter.SKIPPED] = state.records_skipped
        if mono >= next_checkpoint:
            next_checkpoint = mono + interval
            if saver.save(state):
                counters[Counter.CHECKPOINTS] += 1
    reporter.state(State.DRAINING)
    saver.save(state)
    latency.save()
    reporter.state(State.EXITED)
    log.info("stopped: %d records applied, %d books", state.records_applied, len(state.books))


def _checkpoint(state: book_mod.BookState, path: Path, run_id: str) -> None:
    state.run_id = run_id
    book_mod.save_checkpoint(state, path)


class _Checkpointer:
    """The book builder's periodic checkpoint. One that cannot be written (a
    full disk) is an ERROR, counted, said again at most each minute; the
    builder goes on: the previous checkpoint stays whole (written atomically),
    and a restart replays the WAL from it."""

    REPEAT_S = 60.0

    def __init__(self, path: Path, run_id: str, reporter: Reporter) -> None:
        self.path = path
        self.run_id = run_id
        self._reporter = reporter
        self._said_at: float | None = None

    def save(self, state: book_mod.BookState) -> bool:
        try:
            _checkpoint(state, self.path, self.run_id)
        except OSError as exc:
            self._reporter.add(Counter.ERRORS)
            now = time.monotonic()
            if self._said_at is None or now - self._said_at >= self.REPEAT_S:
                self._said_at = now
                log.error("book checkpoint %s not written: %s", self.path, exc.strerror)
            return False
        if self._said_at is not None:
            log.warning("book checkpoint %s written again", self.path)
            self._said_at = None
        return True


def recover_books(spec: RunSpec, consumers: list[ring_mod.Consumer]) -> book_mod.BookState:
    """The book builder's state on start.

    * A new run starts empty, at the WAL's end (every feed sends fresh
      snapshots; books of a previous run would be stale).
    * A restart within the run loads the run's checkpoint, replays the WAL
      after it, and moves each ring cursor back to the WAL writer's cursor if
      it was ahead: records before that cursor are in the WAL, records after
      it are still in the ring (the WAL writer gates them), so nothing is
      missed and the sequence check in :meth:`BookState.apply` skips what was
      already applied.
    """
    ckpt = checkpoint_path(spec.config.data_dir)
    wal_dir = paths.market_wal_dir(spec.config.data_dir)
    state = book_mod.load_checkpoint(ckpt)
    if state is None or state.run_id != spec.run.run_id:
        found = wal_mod.recover(wal_dir)
        state = book_mod.BookState()
        state.run_id = spec.run.run_id
        for feed in spec.run.feeds:
            state.applied[feed.src] = found.last_seq(feed.src)
        _checkpoint(state, ckpt, spec.run.run_id)
        return state
    for feed, consumer in zip(spec.run.feeds, consumers, strict=True):
        _rewind_to_wal(consumer, feed.src, state, wal_dir)
    return state


def _rewind_to_wal(
    consumer: ring_mod.Consumer, src: int, state: book_mod.BookState, wal_dir: Path
) -> None:
    for _attempt in range(100):
        wal_cursor = consumer.consumer_cursor("wal")
        if wal_cursor < consumer.cursor:
            consumer.rewind(wal_cursor)
        _replay_wal(state, src, wal_dir)
        cursor = consumer.cursor
        if cursor >= consumer.tail:
            return
        first = consumer.peek(cursor)
        seq = int(first["seq"][0])
        expected = state.applied.get(src, 0) + 1
        if seq <= expected or (
            int(first["kind"][0]) == rec.Kind.STATUS
            and int(first["aux"][0]) == rec.StatusReason.DROP
            and int(first["px"][0]) <= expected
        ):
            return  # the ring continues where the WAL ends
        # The WAL writer moved on while we rewound: those records are in the WAL now.
    raise PipelineError(f"could not line up ring {consumer.name!r} with the WAL for source {src}")


def _replay_wal(state: book_mod.BookState, src: int, wal_dir: Path) -> None:
    start = state.applied.get(src, 0) + 1
    for batch in wal_mod.WalReader(wal_dir).records(src=src, from_seq=start, strict=False):
        state.apply(batch)


def latency_samples(data_dir: Path, process: str) -> npt.NDArray[np.int64]:
    """Latency samples a process saved at exit (empty if none)."""
    path = paths.run_dir(data_dir) / "latency" / f"{process}.npy"
    try:
        return np.load(path)  # type: ignore[no-any-return]
    except FileNotFoundError:
        return np.zeros(0, dtype=np.int64)
