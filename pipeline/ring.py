"""Single-producer shared-memory ring of 64-byte records.

One producer process publishes; named *gating* consumers (the WAL writer,
the book builder) are never overtaken: the producer waits for the slowest of
them. Any other process may attach a non-gating :class:`Reader` (``tail``,
``book``, a monitor): it follows the tail and, if the producer laps it, is
told exactly how many records it missed.

Layout of the segment::

    [0, 4096)            header page, in 128-byte lines (one writer per line)
      line 0             constants: magic, version, record size, capacity, ...
      line 1             tail (written by the producer only)
      line 2             producer state: pid, heartbeat, closed, drops, ...
      lines 4..4+N       one line per gating consumer: name, cursor, pid,
                         heartbeat, waiting (each written by its consumer only)
    [4096, 4096+64*cap)  the record slots

Positions are absolute record counts (u64, never wrap); slot = position &
(capacity - 1). The producer writes slots, then stores the new tail; a
consumer reads up to the tail, processes, then stores its cursor. Every word
has exactly one writer, so no compare-and-swap is needed.

Memory ordering: an aligned 8-byte numpy store is a single ``mov`` on x86-64,
whose total store order keeps the slot stores before the tail store and the
consumer's loads after its tail load. On weakly ordered CPUs (ARM64) a
release fence before the tail store and an acquire fence after the tail load
would be needed; this module does not issue them and checks at import that
it runs on x86-64 unless ``CP_ALLOW_WEAK_ORDERING=1`` is set.

Full ring: the producer waits up to ``full_wait_ms``; past that it drops the
batch, counts it, and the next successful publish starts with a STATUS/DROP
record naming the first dropped sequence number and the count, so the loss is
explicit downstream. Dropped records still consume sequence numbers, so a
gap in ``seq`` is always declared by such a record.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from pipeline import record as rec
from pipeline import shm
from pipeline.errors import RingError
from pipeline.record import RECORD_DTYPE, RECORD_SIZE, V64, Records

if (
    platform.machine().lower() not in ("x86_64", "amd64")
    and os.environ.get("CP_ALLOW_WEAK_ORDERING") != "1"
):
    raise ImportError(
        "pipeline.ring relies on x86-64 store ordering; set CP_ALLOW_WEAK_ORDERING=1 to run "
        f"on {platform.machine()} at your own risk"
    )

MAGIC: Final = 0x31474E4952504301  # b"\x01CPRING1"
VERSION: Final = 1
HEADER_BYTES: Final = 4096
LINE_WORDS: Final = 16  # 128-byte lines: no false sharing, even with adjacent-line prefetch
MAX_CONSUMERS: Final = 8
NAME_BYTES: Final = 32

# line 0: constants
(
    W_MAGIC,
    W_VERSION,
    W_RECORD_SIZE,
    W_CAPACITY,
    W_MAX_BATCH,
    W_CREATED_NS,
    W_FULL_WAIT_NS,
    W_NCONSUMERS,
) = range(8)
# line 1: the tail
W_TAIL: Final = 1 * LINE_WORDS
# line 2: producer state
(
    W_CLOSED,
    W_PRODUCER_PID,
    W_HEARTBEAT_NS,
    W_NEXT_SEQ,
    W_DROPPED,
    W_DROP_EVENTS,
    W_PENDING_FIRST,
    W_PENDING_COUNT,
    W_FULL_WAITS,
    W_SRC,
) = range(2 * LINE_WORDS, 2 * LINE_WORDS + 10)
# consumer lines
W_CONSUMERS: Final = 4 * LINE_WORDS
C_NAME, C_CURSOR, C_PID, C_HEARTBEAT_NS, C_WAITING, C_REGISTERED = 0, 4, 5, 6, 7, 8

EMPTY: Final = np.zeros(0, dtype=RECORD_DTYPE)
BUSY_BATCH: Final = 256
"""For loops that drive a :class:`Backoff` themselves: a consumer whose last
batch had at least this many records is in the throughput regime; when it
catches up it sleeps briefly instead of spinning (``Backoff.reset(busy=True)``)."""
BUSY_RATE: Final = 500_000
"""Records per second above which :meth:`Consumer.wait` is in the throughput
regime, judged over windows of at least :data:`RATE_WINDOW_NS`. Far above a
live feed's steady rate (a few 10k/s), which stays in the low-latency regime;
bursts, replays and benchmarks cross it."""
RATE_WINDOW_NS: Final = 200_000
BUSY_SLEEP_US: Final = 200.0
"""How long :meth:`Consumer.wait` sleeps in the throughput regime to let a
batch grow (the default backoff's ``busy_sleep_us``)."""
BUSY_TARGET_BATCH: Final = 4096
"""The batch :meth:`Consumer.wait` lets grow in the throughput regime (at most
a sixteenth of the ring, so a sleeping consumer never fills it)."""
WAIT_BEAT_NS: Final = 100_000_000
"""How often a producer waiting on a full ring refreshes its heartbeat and
calls :attr:`Producer.on_wait`."""
TIMER_SLACK_NS: Final = 1_000
"""Timer slack of a waiting thread. Linux lets a sleep overrun by the thread's
timer slack, 50 µs by default, which would turn a 50 µs nap into up to 100 µs."""

_PR_SET_TIMERSLACK: Final = 29
_slack = threading.local()


def _now_ns() -> int:
    return time.monotonic_ns()


def set_timer_slack(slack_ns: int = TIMER_SLACK_NS) -> bool:
    """Set the calling thread's timer slack (Linux ``prctl(PR_SET_TIMERSLACK)``),
    so its short sleeps end when asked. Returns False where unsupported.
    (0 would mean "the default" to the kernel, so at least 1 ns is set.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_TIMERSLACK, max(1, slack_ns), 0, 0, 0)) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


def _tighten_timer_slack() -> None:
    """Once per thread: the first time a waiter is about to sleep."""
    if not getattr(_slack, "done", False):
        _slack.done = True
        set_timer_slack()


class Backoff:
    """Adaptive wait: spin, then yield the CPU, then sleep with a capped doubling.

    Time-based phases, so behaviour does not depend on how fast a loop turns.
    Two cores are shared by every process: the cap bounds the cost of an idle
    waiter to a few wakeups per millisecond. The waiting thread's timer slack
    is set to :data:`TIMER_SLACK_NS` before its first sleep.
    """

    __slots__ = (
        "_idle_since",
        "_sleep_s",
        "busy_sleep_s",
        "sleep_max_s",
        "sleep_min_s",
        "spin_ns",
        "yield_ns",
    )

    def __init__(
        self,
        spin_us: float = 2.0,
        yield_us: float = 500.0,
        sleep_min_us: float = 50.0,
        sleep_max_us: float = 500.0,
        busy_sleep_us: float | None = None,
    ) -> None:
        self.spin_ns = int(spin_us * 1000)
        self.yield_ns = int(yield_us * 1000)
        self.sleep_min_s = sleep_min_us / 1e6
        self.sleep_max_s = sleep_max_us / 1e6
        self.busy_sleep_s = self.sleep_min_s if busy_sleep_us is None else busy_sleep_us / 1e6
        self._idle_since = 0
        self._sleep_s = self.sleep_min_s

    def reset(self, busy: bool = False) -> None:
        """Work arrived: the next idle period starts with spinning again, or,
        when ``busy`` (data comes in large batches, so the producer is fast and
        latency is not the concern), directly with a sleep of ``busy_sleep_us``
        (default ``sleep_min_us``), which leaves the cores to the producer and
        lets the next batch grow."""
        if busy:
            self._idle_since = _now_ns() - self.yield_ns
            self._sleep_s = self.busy_sleep_s
        else:
            self._idle_since = 0

    def park(self) -> None:
        """Skip the spinning and yielding: the next :meth:`idle` sleeps,
        starting at ``sleep_min_us`` (for a caller that already spun and
        yielded its own way)."""
        self._idle_since = _now_ns() - self.yield_ns
        self._sleep_s = self.sleep_min_s

    def idle(self) -> bool:
        """Wait a little. Returns True when in the sleeping phase (the waiter is parked)."""
        now = _now_ns()
        if self._idle_since == 0:
            self._idle_since = now
            self._sleep_s = self.sleep_min_s
            return False
        idle_ns = now - self._idle_since
        if idle_ns < self.spin_ns:
            return False
        if idle_ns < self.yield_ns:
            os.sched_yield()
            return False
        _tighten_timer_slack()
        time.sleep(self._sleep_s)
        self._sleep_s = min(self._sleep_s * 2, self.sleep_max_s)
        return True


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RingView:
    """A handle on a ring that only observes it (``status``, ``monitor``); the
    base of the producer, consumer and reader handles: maps the segment,
    checks the header, builds the views."""

    def __init__(self, name: str, segment: shm.Segment | None = None) -> None:
        self.name = name
        self._seg = segment or shm.attach(name)
        self._owns_seg = segment is None
        buf = self._seg.buf
        if self._seg.size < HEADER_BYTES:
            raise RingError(f"ring {name!r}: segment too small ({self._seg.size} bytes)")
        self._h: npt.NDArray[np.uint64] = np.frombuffer(
            buf, dtype=np.uint64, count=HEADER_BYTES // 8
        )
        # The same header as a memoryview of u64: item reads/writes give/take
        # Python ints without numpy scalar overhead (the hot paths use this).
        self._mv = memoryview(buf)
        self._hq = self._mv[:HEADER_BYTES].cast("Q")
        h = self._h
        if int(h[W_MAGIC]) != MAGIC:
            raise RingError(f"ring {name!r}: not a ring (bad magic {int(h[W_MAGIC]):#x})")
        if int(h[W_VERSION]) != VERSION or int(h[W_RECORD_SIZE]) != RECORD_SIZE:
            raise RingError(
                f"ring {name!r}: version {int(h[W_VERSION])} / record size {int(h[W_RECORD_SIZE])} "
                f"not supported (expected {VERSION} / {RECORD_SIZE})"
            )
        self.capacity = int(h[W_CAPACITY])
        self.mask = self.capacity - 1
        self.max_batch = int(h[W_MAX_BATCH])
        if self._seg.size < HEADER_BYTES + self.capacity * RECORD_SIZE:
            raise RingError(f"ring {name!r}: segment smaller than its capacity says")
        data = np.frombuffer(
            buf, dtype=np.uint8, count=self.capacity * RECORD_SIZE, offset=HEADER_BYTES
        )
        self._slots: npt.NDArray[np.void] = data.view(V64)
        self._records: Records = data.view(RECORD_DTYPE)
        self._words: npt.NDArray[np.uint64] = data.view(np.uint64).reshape(self.capacity, 8)

    def _consumer_base(self, name: str) -> int:
        wanted = name.encode()
        for i in range(int(self._h[W_NCONSUMERS])):
            base = W_CONSUMERS + i * LINE_WORDS
            if self._read_name(base) == wanted:
                return base
        known = ", ".join(repr(c.name) for c in self.consumers()) or "none"
        raise RingError(f"ring {self.name!r} has no consumer {name!r} (registered: {known})")

    def _read_name(self, base: int) -> bytes:
        return self._h[base + C_NAME : base + C_NAME + NAME_BYTES // 8].tobytes().rstrip(b"\0")

    @property
    def tail(self) -> int:
        return int(self._hq[W_TAIL])

    @property
    def closed(self) -> bool:
        return bool(self._hq[W_CLOSED])

    @property
    def producer_pid(self) -> int:
        return int(self._hq[W_PRODUCER_PID])

    def producer_alive(self, stale_after_s: float | None = None) -> bool:
        """Producer process exists (and, if given, heartbeated within ``stale_after_s``)."""
        if not _pid_alive(self.producer_pid):
            return False
        if stale_after_s is None:
            return True
        return _now_ns() - int(self._h[W_HEARTBEAT_NS]) <= stale_after_s * 1e9

    def consumer_cursor(self, name: str) -> int:
        """The cursor of gating consumer ``name``."""
        return int(self._hq[self._consumer_base(name) + C_CURSOR])

    def consumers(self) -> list[ConsumerInfo]:
        """The gating consumers with their cursors and lag."""
        tail = self.tail
        out = []
        for i in range(int(self._h[W_NCONSUMERS])):
            base = W_CONSUMERS + i * LINE_WORDS
            cursor = int(self._h[base + C_CURSOR])
            pid = int(self._h[base + C_PID])
            out.append(
                ConsumerInfo(
                    name=self._read_name(base).decode(),
                    cursor=cursor,
                    lag=tail - cursor,
                    pid=pid,
                    alive=_pid_alive(pid),
                    heartbeat_ns=int(self._h[base + C_HEARTBEAT_NS]),
                    waiting=bool(self._h[base + C_WAITING]),
                )
            )
        return out

    def stats(self) -> RingStats:
        h = self._h
        return RingStats(
            name=self.name,
            capacity=self.capacity,
            tail=int(h[W_TAIL]),
            next_seq=int(h[W_NEXT_SEQ]),
            dropped=int(h[W_DROPPED]),
            drop_events=int(h[W_DROP_EVENTS]),
            full_waits=int(h[W_FULL_WAITS]),
            closed=bool(h[W_CLOSED]),
            producer_pid=int(h[W_PRODUCER_PID]),
            producer_alive=_pid_alive(int(h[W_PRODUCER_PID])),
            consumers=self.consumers(),
        )

    def close(self) -> None:
        """Release this process's mapping (never unlinks)."""
        for attr in ("_hq", "_mv"):
            view = self.__dict__.pop(attr, None)
            if view is not None:
                view.release()
        for attr in ("_h", "_slots", "_records", "_words"):
            self.__dict__.pop(attr, None)
        if self._owns_seg:
            self._seg.close()

    def __enter__(self) -> RingView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ConsumerInfo:
    name: str
    cursor: int
    lag: int
    pid: int
    alive: bool
    heartbeat_ns: int
    waiting: bool


@dataclass(frozen=True)
class RingStats:
    name: str
    capacity: int
    tail: int
    next_seq: int
    dropped: int
    drop_events: int
    full_waits: int
    closed: bool
    producer_pid: int
    producer_alive: bool
    consumers: list[ConsumerInfo]

    def lag(self, consumer: str) -> int:
        """Records published that gating ``consumer`` has not consumed (0 if no such consumer)."""
        return next((c.lag for c in self.consumers if c.name == consumer), 0)


class Ring(RingView):
    """The owner's handle: creates the segment and unlinks it at the end."""

    @classmethod
    def create(
        cls,
        name: str,
        capacity: int,
        consumers: list[str] | tuple[str, ...] = (),
        *,
        first_seq: int = 1,
        max_batch: int | None = None,
        full_wait_ms: float = 1000.0,
        src: int = 0,
    ) -> Ring:
        """Create ring ``name`` with ``capacity`` records (a power of two) and
        the given gating consumers. Sequences start at ``first_seq``."""
        if capacity < 16 or capacity & (capacity - 1):
            raise ValueError(
                f"ring {name!r}: capacity must be a power of two >= 16, got {capacity}"
            )
        if len(consumers) > MAX_CONSUMERS:
            raise ValueError(
                f"ring {name!r}: at most {MAX_CONSUMERS} consumers, got {len(consumers)}"
            )
        if len(set(consumers)) != len(consumers):
            raise ValueError(f"ring {name!r}: duplicate consumer names {list(consumers)}")
        for consumer in consumers:
            if not consumer or len(consumer.encode()) > NAME_BYTES:
                raise ValueError(
                    f"ring {name!r}: consumer name must be 1..{NAME_BYTES} bytes: {consumer!r}"
                )
        if first_seq < 1:
            raise ValueError(f"ring {name!r}: first_seq must be >= 1, got {first_seq}")
        max_batch = max_batch or min(capacity // 4, 4096)
        if not 1 <= max_batch <= capacity // 2:
            raise ValueError(f"ring {name!r}: max_batch must be in 1..capacity/2, got {max_batch}")
        seg = shm.create(name, HEADER_BYTES + capacity * RECORD_SIZE)
        h = np.frombuffer(seg.buf, dtype=np.uint64, count=HEADER_BYTES // 8)
        h[W_VERSION] = VERSION
        h[W_RECORD_SIZE] = RECORD_SIZE
        h[W_CAPACITY] = capacity
        h[W_MAX_BATCH] = max_batch
        h[W_CREATED_NS] = time.time_ns()
        h[W_FULL_WAIT_NS] = int(full_wait_ms * 1e6)
        h[W_NEXT_SEQ] = first_seq
        h[W_SRC] = src
        for i, consumer in enumerate(consumers):
            base = W_CONSUMERS + i * LINE_WORDS
            raw = consumer.encode().ljust(NAME_BYTES, b"\0")
            h[base + C_NAME : base + C_NAME + NAME_BYTES // 8] = np.frombuffer(raw, dtype=np.uint64)
            h[base + C_REGISTERED] = 1
        h[W_NCONSUMERS] = len(consumers)
        h[W_MAGIC] = MAGIC  # last: an attacher never sees a half-written header as valid
        del h
        ring = cls(name, seg)
        ring._owns_seg = True
        return ring

    def unlink(self) -> None:
        """Remove the segment name (mappings in other processes stay valid)."""
        shm.unlink(self.name)


class Producer(RingView):
    """The one writer of a ring: moves opaque 64-byte records, knows nothing of
    their content. (:class:`Sequencer` on top numbers them and declares drops.)

    Attaching takes over from a dead predecessor; a live one is an error
    unless ``takeover`` is set.
    """

    def __init__(
        self,
        name: str,
        *,
        on_drop: Callable[[int], None] | None = None,
        segment: shm.Segment | None = None,
        takeover: bool = False,
    ) -> None:
        super().__init__(name, segment)
        hq = self._hq
        previous = hq[W_PRODUCER_PID]
        if previous and previous != os.getpid() and _pid_alive(previous) and not takeover:
            raise RingError(f"ring {name!r} already has a live producer (pid {previous})")
        if hq[W_CLOSED]:
            raise RingError(f"ring {name!r} is closed")
        self.on_drop = on_drop
        """Called with the number of records dropped, each time a batch is dropped."""
        self.on_wait: Callable[[], None] | None = None
        """Called every :data:`WAIT_BEAT_NS` while a publish waits on a full
        ring (the wait may last ``full_wait_ms``): a host heartbeats from it,
        so a producer blocked by a stalled consumer is not taken for hung."""
        self._full_wait_ns = hq[W_FULL_WAIT_NS]
        self._gate_words = [
            W_CONSUMERS + i * LINE_WORDS + C_CURSOR for i in range(hq[W_NCONSUMERS])
        ]
        self._backoff = Backoff(spin_us=2, yield_us=200, sleep_min_us=50, sleep_max_us=1000)
        hq[W_PRODUCER_PID] = os.getpid()
        hq[W_HEARTBEAT_NS] = _now_ns()
        self.publish = self._make_publish()

    def _min_cursor(self) -> int:
        if not self._gate_words:
            return 1 << 62  # no gating consumer: never full
        hq = self._hq
        return min([hq[w] for w in self._gate_words])

    def heartbeat(self) -> None:
        """Tell readers and the supervisor this producer is alive (call when idle)."""
        self._hq[W_HEARTBEAT_NS] = _now_ns()

    def last_published(self) -> Records:
        """The last record published (empty if none): lets a successor continue from it."""
        tail = self._hq[W_TAIL]
        if not tail:
            return EMPTY
        slot = (tail - 1) & self.mask
        return self._records[slot : slot + 1].copy()

    def _make_publish(self) -> Callable[..., bool]:
        """Build :meth:`publish` as a closure over its state.

        This is the hot path of every feed: closure cells are read several
        times faster than instance attributes, and at 16 records per call the
        interpreter overhead, not the copy, is what costs. So the common case
        is one comparison, one copy and one store: ``limit`` caches the first
        position the next batch may not reach, the lesser of the end of the
        current lap (no wrap) and the slowest gating consumer's cursor plus
        the capacity (room) as last read. Everything else (a wrap, a cursor
        to re-read, a full ring, a structured dtype, a batch larger than
        ``max_batch``) takes the slow path, which refreshes ``limit``.
        """
        slots = self._slots
        hq = self._hq
        capacity = self.capacity
        mask = self.mask
        max_batch = self.max_batch
        wait_for_space = self._wait_for_space
        drop = self.count_drop
        v64 = V64
        w_tail = W_TAIL
        tail = hq[W_TAIL]
        gate = self._min_cursor()
        limit = min(gate + capacity, tail - (tail & mask) + capacity)

        def publish(records: Records | npt.NDArray[np.void], wait: bool = True) -> bool:
            """Copy records into the ring and make them visible. Returns False
            if the ring stayed full past the bound (at once if ``wait`` is
            False): the batch is then dropped and counted.

            ``records``: a :data:`~pipeline.record.V64` array (fastest: keep
            the V64 view of a reused batch buffer) or a RECORD_DTYPE array.
            More than ``max_batch`` records are published in chunks; the
            result is then False if any chunk was dropped.
            """
            nonlocal tail
            n = len(records)
            end = tail + n
            if end <= limit and n <= max_batch and records.dtype is v64:
                slots[tail & mask : (tail & mask) + n] = records
                tail = end
                hq[w_tail] = end  # the release: the slots written above become visible
                return True
            return publish_slow(records, wait)

        def publish_slow(records: Records | npt.NDArray[np.void], wait: bool) -> bool:
            nonlocal tail, gate, limit
            if records.dtype.names is not None:
                records = records.view(V64)
            n = len(records)
            if n > max_batch:
                return all(
                    [publish(records[lo : lo + max_batch], wait) for lo in range(0, n, max_batch)]
                )
            if tail + n - capacity > gate:
                gate = wait_for_space(tail + n - capacity, wait)
                if tail + n - capacity > gate:
                    limit = min(gate + capacity, tail - (tail & mask) + capacity)
                    return drop(n)
            start = tail & mask
            end = start + n
            if end <= capacity:
                slots[start:end] = records
            else:
                split = capacity - start
                slots[start:] = records[:split]
                slots[: end - capacity] = records[split:]
            tail += n
            hq[w_tail] = tail  # the release: the slots written above become visible
            limit = min(gate + capacity, tail - (tail & mask) + capacity)
            return True

        return publish

    def _wait_for_space(self, needed_cursor: int, wait: bool) -> int:
        """Wait (bounded) until every gating consumer is at or past
        ``needed_cursor``; returns the slowest cursor seen last."""
        gate = self._min_cursor()
        if gate >= needed_cursor or not wait:
            return gate
        hq = self._hq
        hq[W_FULL_WAITS] += 1
        backoff = self._backoff
        backoff.reset()
        now = _now_ns()
        deadline = now + self._full_wait_ns
        beat_at = now + WAIT_BEAT_NS
        while True:
            backoff.idle()
            gate = self._min_cursor()
            if gate >= needed_cursor:
                return gate
            now = _now_ns()
            if now >= deadline:
                hq[W_HEARTBEAT_NS] = now
                return gate
            if now >= beat_at:
                beat_at = now + WAIT_BEAT_NS
                hq[W_HEARTBEAT_NS] = now
                if self.on_wait is not None:
                    self.on_wait()

    def has_room(self, n: int) -> bool:
        """Whether ``n`` records can be published now without waiting."""
        return self._hq[W_TAIL] + n - self.capacity <= self._min_cursor()

    def count_drop(self, n: int) -> bool:
        """Account for ``n`` dropped records (counters, ``on_drop``); returns False."""
        hq = self._hq
        hq[W_DROPPED] += n
        hq[W_DROP_EVENTS] += 1
        if self.on_drop is not None:
            self.on_drop(n)
        return False

    def close(self) -> None:
        """Mark the ring closed (consumers end after draining) and detach."""
        if hasattr(self, "_hq"):
            self._hq[W_CLOSED] = 1
        self.detach()

    def detach(self) -> None:
        """Detach without closing (another producer may take over)."""
        super().close()


class Sequencer:
    """Numbers the records of one source and publishes them through a Producer.

    * ``seq`` is stamped here: strictly +1 per record, continuing after the
      last record in the ring (or the ring's ``first_seq``) when a new
      producer process takes over.
    * A dropped batch still consumes its numbers; the next batch that gets
      through is preceded by a STATUS/DROP record (``px`` = first missing seq,
      ``qty`` = count), so every gap in ``seq`` is declared in-band. While
      the ring stays full, later batches are dropped at once rather than each
      waiting out the bound again (the feed must not stall).
    """

    def __init__(self, producer: Producer, src: int | None = None) -> None:
        self.producer = producer
        hq = producer._hq
        self._hq = hq
        self.src = hq[W_SRC] if src is None else src
        self._next_seq = hq[W_NEXT_SEQ]
        last = producer.last_published()
        if len(last):
            self._next_seq = max(self._next_seq, int(last["seq"][0]) + 1)
        self._pending_first = hq[W_PENDING_FIRST]
        self._pending_count = hq[W_PENDING_COUNT]
        if self._pending_count and len(last) and self._declares_pending(last):
            self._set_pending(0, 0)  # the predecessor published the STATUS but died before clearing
        self._window_len = max(4 * producer.max_batch, 1 << 16)
        self._new_window(self._next_seq)
        self._dropping = False
        """A batch waited out the bound and was dropped, and none got through
        since: the next ones do not wait (room for the STATUS record alone
        does not end it)."""

    @property
    def next_seq(self) -> int:
        """The sequence number the next record will get."""
        return self._next_seq

    def _declares_pending(self, last: Records) -> bool:
        r = last[0]
        return (
            int(r["kind"]) == rec.Kind.STATUS
            and int(r["aux"]) == rec.StatusReason.DROP
            and int(r["px"]) == self._pending_first
            and int(r["qty"]) == self._pending_count
        )

    def _set_pending(self, first: int, count: int) -> None:
        self._pending_first, self._pending_count = first, count
        self._hq[W_PENDING_FIRST] = first
        self._hq[W_PENDING_COUNT] = count

    def _new_window(self, first: int) -> None:
        self._window_base = first
        self._window = np.arange(first, first + self._window_len, dtype=np.uint64)

    def _stamp(self, records: Records, first: int) -> None:
        n = len(records)
        off = first - self._window_base
        if off + n > self._window_len:
            if n > self._window_len:
                records["seq"] = np.arange(first, first + n, dtype=np.uint64)
                return
            self._new_window(first)
            off = 0
        records["seq"] = self._window[off : off + n]

    def publish(self, records: Records) -> int:
        """Stamp ``seq`` into ``records`` (modified in place) and publish them.
        Returns the first sequence number given (used even if dropped)."""
        n = len(records)
        max_batch = self.producer.max_batch
        if n > max_batch:
            # Chunk here, not in the producer: each chunk is dropped or not on its own.
            firsts = [self.publish(records[lo : lo + max_batch]) for lo in range(0, n, max_batch)]
            return firsts[0]
        if self._pending_count and not self._publish_pending():
            first = self._next_seq
            self.producer.count_drop(n)
            self._dropped(first, n)
            return first
        first = self._next_seq
        if n == 0:
            return first
        self._stamp(records, first)
        self._next_seq = first + n
        if self.producer.publish(records, wait=not self._dropping):
            self._dropping = False
        else:
            self._dropping = True
            self._dropped(first, n)
        return first

    def _dropped(self, first: int, n: int) -> None:
        self._next_seq = first + n
        self._hq[W_NEXT_SEQ] = self._next_seq  # dropped numbers are not in any slot: persist them
        if self._pending_count:
            self._set_pending(self._pending_first, self._pending_count + n)
        else:
            self._set_pending(first, n)

    def _publish_pending(self) -> bool:
        status = rec.status(
            src=self.src,
            reason=rec.StatusReason.DROP,
            ts_recv=time.time_ns(),
            first_missing=self._pending_first,
            missing=self._pending_count,
        )
        status["seq"] = self._next_seq
        if not self.producer.has_room(1):
            return False
        self.producer.publish(status)
        self._next_seq += 1
        self._set_pending(0, 0)
        return True

    def close(self) -> None:
        """Declare a pending drop if there is room, remember the next seq, close the ring."""
        if self._pending_count:
            self._publish_pending()
        self._hq[W_NEXT_SEQ] = self._next_seq
        self.producer.close()

    def detach(self) -> None:
        self._hq[W_NEXT_SEQ] = self._next_seq
        self.producer.detach()


class Consumer(RingView):
    """A named gating consumer. Records returned by :meth:`poll`/:meth:`wait`
    are views into the ring, valid until :meth:`advance` moves past them;
    the cursor is stored only by :meth:`advance`, so a consumer killed while
    processing re-reads the same records when it attaches again."""

    def __init__(
        self,
        name: str,
        consumer: str,
        *,
        segment: shm.Segment | None = None,
        backoff: Backoff | None = None,
        takeover: bool = False,
    ) -> None:
        super().__init__(name, segment)
        self.consumer = consumer
        self._base = self._consumer_base(consumer)
        hq = self._hq
        previous = hq[self._base + C_PID]
        if previous and previous != os.getpid() and _pid_alive(previous) and not takeover:
            raise RingError(
                f"ring {name!r}: consumer {consumer!r} is already attached by live pid {previous}"
            )
        self._cursor_word = self._base + C_CURSOR
        self._cursor = hq[self._cursor_word]
        self._backoff = backoff or Backoff(busy_sleep_us=BUSY_SLEEP_US)
        self._parked = False
        self._last_beat = 0
        # The arrival rate for wait(): records it returned since the window
        # began, judged when a wait() starts at least RATE_WINDOW_NS later.
        self._window_start = _now_ns()
        self._window_records = 0
        self._busy = False
        self.busy_batch = min(BUSY_TARGET_BATCH, self.capacity // 16)
        """In the throughput regime, :meth:`wait` lets the backlog grow to this many records."""
        hq[self._base + C_PID] = os.getpid()
        hq[self._base + C_HEARTBEAT_NS] = _now_ns()

    @property
    def cursor(self) -> int:
        return self._cursor

    @property
    def lag(self) -> int:
        return self.tail - self._cursor

    @property
    def busy(self) -> bool:
        """Whether :meth:`wait` is in the throughput regime (see there)."""
        return self._busy

    @property
    def at_end(self) -> bool:
        """The producer closed the ring and everything has been consumed."""
        return bool(self._hq[W_CLOSED]) and self._cursor >= self._hq[W_TAIL]

    def poll(self, max_records: int = 1 << 16) -> Records:
        """Available records (a view, contiguous: may stop at the wrap), or empty."""
        cursor = self._cursor
        avail = self._hq[W_TAIL] - cursor
        if avail <= 0:
            return EMPTY
        start = cursor & self.mask
        n = min(avail, max_records, self.capacity - start)
        return self._records[start : start + n]

    def wait(self, timeout_s: float | None = None, max_records: int = 1 << 16) -> Records:
        """Like :meth:`poll` but waits adaptively for data; empty on timeout or at end.

        Two regimes, chosen from the arrival rate (records returned per
        second, judged over windows of at least :data:`RATE_WINDOW_NS`):

        * below :data:`BUSY_RATE`, latency: it spins, then yields, then sleeps,
          so a record is seen within microseconds of its publication;
        * above, throughput: the producer is in a burst, and taking records
          in small batches as they appear would cost it most of a core (a
          batch costs the consumer microseconds whatever its size, so the
          batch size would settle at what arrives during that overhead). So
          the consumer sleeps ``busy_sleep_us`` of its backoff whenever fewer
          than :attr:`busy_batch` records are waiting, and when it has caught
          up, leaving the cores to the producer; latency is then bounded by
          that sleep. Between two batches it yields the CPU once: with more
          busy processes than cores, the producer or another consumer sharing
          this core then runs now rather than at the end of the scheduler's
          time slice (milliseconds, in which the ring fills and the producer
          waits). Measured at batch 256 (producer, two consumers and a reader
          on two vCPUs, 6 alternating pairs): 0.48-0.54 of the bare copy loop
          without the yield, 0.64-0.72 with it; batch 16 and the latency
          regime unchanged.
        """
        hq = self._hq
        now = _now_ns()
        if now - self._window_start >= RATE_WINDOW_NS:
            elapsed = now - self._window_start
            self._busy = self._window_records * 1_000_000_000 >= BUSY_RATE * elapsed
            self._window_start = now
            self._window_records = 0
        if self._busy:
            os.sched_yield()  # between batches of a burst: see the docstring
        avail = hq[W_TAIL] - self._cursor
        if avail > 0:
            if self._busy and avail < min(self.busy_batch, max_records) and not hq[W_CLOSED]:
                _tighten_timer_slack()
                time.sleep(self._backoff.busy_sleep_s)  # let the batch grow
            return self._take(max_records)
        if self.at_end:
            return EMPTY
        backoff = self._backoff
        deadline = None if timeout_s is None else now + int(timeout_s * 1e9)
        if self._busy:
            backoff.reset(busy=True)
        elif self._watch_tail(now, deadline):
            return self._take(max_records)
        elif deadline is not None and _now_ns() >= deadline:
            return EMPTY
        else:
            backoff.park()
        while True:
            if backoff.idle():
                if not self._parked:
                    self._parked = True
                    hq[self._base + C_WAITING] = 1
                now = _now_ns()
                if now - self._last_beat > 100_000_000:
                    self._last_beat = now
                    hq[self._base + C_HEARTBEAT_NS] = now
            batch = self.poll(max_records)
            if len(batch):
                break
            if self.at_end or (deadline is not None and _now_ns() >= deadline):
                break
        if self._parked:
            self._parked = False
            hq[self._base + C_WAITING] = 0
        self._window_records += len(batch)
        return batch

    def _take(self, max_records: int) -> Records:
        """:meth:`poll`, counted into the arrival-rate window of :meth:`wait`."""
        batch = self.poll(max_records)
        self._window_records += len(batch)
        return batch

    def _watch_tail(self, now: int, deadline: int | None) -> bool:
        """The latency regime's wait: spin for the backoff's ``spin_us``, then
        yield the CPU until ``yield_us`` from ``now`` (or the deadline), reading
        the tail word alone. True when records arrived.

        A bare loop on purpose: with two waiters and the producer sharing two
        cores, each turn of a waiter delays whoever shares its core, so a turn
        is one load, one clock read and one ``sched_yield``."""
        hq = self._hq
        cursor = self._cursor
        backoff = self._backoff
        spin_end = now + backoff.spin_ns
        yield_end = now + backoff.yield_ns
        if deadline is not None and deadline < yield_end:
            yield_end = deadline
        clock = time.monotonic_ns
        sched_yield = os.sched_yield
        while hq[W_TAIL] == cursor:
            t = clock()
            if t >= spin_end:
                if t >= yield_end:
                    return False
                sched_yield()
        return True

    def advance(self, n: int) -> None:
        """Mark ``n`` more records consumed (the producer may now reuse their slots)."""
        self._cursor += n
        self._hq[self._cursor_word] = self._cursor

    def heartbeat(self) -> None:
        self._hq[self._base + C_HEARTBEAT_NS] = _now_ns()

    def rewind(self, position: int) -> None:
        """Move this cursor back to ``position`` to read records again.

        Only records at or after the slowest *other* gating consumer's cursor
        are guaranteed intact; check what you read (the seq) if you rewind
        behind your own cursor while the others move on.
        """
        if position > self._cursor:
            raise RingError(
                f"ring {self.name!r}: rewind to {position} is ahead of the cursor {self._cursor}"
            )
        self._cursor = position
        self._hq[self._cursor_word] = position

    def peek(self, position: int) -> Records:
        """A copy of the record at ``position`` (which must be below the tail)."""
        if not 0 <= position < self.tail:
            raise RingError(f"ring {self.name!r}: position {position} is not published yet")
        slot = position & self.mask
        return self._records[slot : slot + 1].copy()

    def batches(
        self, timeout_s: float | None = None, max_records: int = 1 << 16
    ) -> Iterator[Records]:
        """Yield batches until the ring is closed and drained (or a wait times out);
        each batch is consumed (cursor stored) when the loop asks for the next."""
        while True:
            batch = self.wait(timeout_s, max_records)
            if not len(batch):
                return
            yield batch
            self.advance(len(batch))

    def close(self) -> None:
        if "_hq" in self.__dict__:
            self._hq[self._base + C_WAITING] = 0
        super().close()


class Reader(RingView):
    """A non-gating reader: never slows the producer; reports overruns.

    The producer may be writing up to ``max_batch`` slots ahead of the tail,
    so records older than ``tail - capacity + max_batch`` may be torn; a read
    copies, re-reads the tail and discards (counting as overrun) whatever the
    producer may have overwritten meanwhile.
    """

    def __init__(
        self,
        name: str,
        *,
        start: str = "tail",
        segment: shm.Segment | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(name, segment)
        tail = self.tail
        if start == "tail":
            self._pos = tail
        elif start == "oldest":
            self._pos = max(0, tail - self.capacity + self.max_batch)
        else:
            raise ValueError(f"start must be 'tail' or 'oldest', got {start!r}")
        self.overruns = 0
        """Total records missed because the producer lapped this reader."""
        # Readers are for humans and services (tail, book, monitor): they never
        # spin, so they cost the pipeline's cores next to nothing when idle.
        self._backoff = backoff or Backoff(
            spin_us=0, yield_us=0, sleep_min_us=200, sleep_max_us=2000
        )

    @property
    def position(self) -> int:
        return self._pos

    @property
    def at_end(self) -> bool:
        return bool(self._hq[W_CLOSED]) and self._pos >= self._hq[W_TAIL]

    def read(self, max_records: int = 1 << 16) -> tuple[Records, int]:
        """Copy out available records. Returns (records, overrun) where overrun
        is how many records were skipped (lapped) before these."""
        tail = self._hq[W_TAIL]
        safe = tail - self.capacity + self.max_batch
        overrun = 0
        if self._pos < safe:
            overrun = safe - self._pos
            self._pos = safe
        n = min(tail - self._pos, max_records)
        if n <= 0:
            self.overruns += overrun
            return EMPTY, overrun
        start = self._pos & self.mask
        end = start + n
        out = np.empty(n, dtype=RECORD_DTYPE)
        outv = out.view(V64)
        if end <= self.capacity:
            outv[:] = self._slots[start:end]
        else:
            split = self.capacity - start
            outv[:split] = self._slots[start:]
            outv[split:] = self._slots[: end - self.capacity]
        safe = self._hq[W_TAIL] - self.capacity + self.max_batch
        torn = safe - self._pos
        if torn > 0:
            overrun += min(torn, n)
            out = out[torn:]
        self._pos += n
        if torn > n:
            self._pos = safe
            overrun += torn - n
        self.overruns += overrun
        return out, overrun

    def wait(
        self, timeout_s: float | None = None, max_records: int = 1 << 16
    ) -> tuple[Records, int]:
        """Like :meth:`read` but waits adaptively; empty on timeout or when closed and drained."""
        backoff = self._backoff
        backoff.reset()
        deadline = None if timeout_s is None else _now_ns() + int(timeout_s * 1e9)
        missed = 0
        while True:
            batch, overrun = self.read(max_records)
            missed += overrun
            if len(batch) or self.at_end or (deadline is not None and _now_ns() >= deadline):
                return batch, missed
            backoff.idle()
