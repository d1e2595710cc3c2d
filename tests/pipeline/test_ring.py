"""The shared-memory ring: protocol in one process, then real processes."""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

import numpy as np
import pytest

from pipeline import record as rec
from pipeline import ring as ring_mod
from pipeline.errors import RingError
from pipeline.record import V64, Kind, StatusReason
from tests.helpers import make_records, payload_ok, wait_until
from tests.pipeline import ring_workers


@pytest.fixture
def make_ring(shm_name):  # type: ignore[no-untyped-def]
    rings: list[ring_mod.Ring] = []

    def make(
        capacity: int = 64, consumers: tuple[str, ...] = ("wal", "book"), **kw: object
    ) -> ring_mod.Ring:
        r = ring_mod.Ring.create(shm_name(f"r{len(rings)}"), capacity, list(consumers), **kw)  # type: ignore[arg-type]
        rings.append(r)
        return r

    yield make
    for r in rings:
        r.close()
        r.unlink()


# ---------------------------------------------------------------------------
# single process: the protocol


@pytest.mark.unit
def test_publish_consume_in_order_across_wraps(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=64, consumers=("wal",))
    seq = ring_mod.Sequencer(ring_mod.Producer(ring.name))
    c = ring_mod.Consumer(ring.name, "wal")
    expected = 1
    for n in [1, 5, 17, 40, 63, 64, 3, 60, 7] * 5:
        seq.publish(make_records(seq.next_seq, n))
        got = 0
        while got < n:
            batch = c.poll()
            assert len(batch), "published records must be visible at once"
            assert batch["seq"][0] == expected + got
            assert payload_ok(batch)
            got += len(batch)
            c.advance(len(batch))
        expected += n
    assert c.lag == 0
    assert seq.next_seq == expected
    seq.close()
    c.close()


@pytest.mark.unit
def test_producer_never_overwrites_unconsumed_records(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=32, consumers=("wal", "book"), full_wait_ms=1)
    p = ring_mod.Producer(ring.name)
    wal = ring_mod.Consumer(ring.name, "wal")
    book = ring_mod.Consumer(ring.name, "book")
    assert p.publish(make_records(1, 32))
    wal.advance(32)  # book has consumed nothing: the ring is still full for the producer
    assert not p.publish(make_records(33, 1)), "a full ring must refuse, not overwrite"
    assert ring.stats().dropped == 1 and ring.stats().drop_events == 1
    assert book.poll()["seq"][0] == 1  # untouched
    book.advance(10)
    assert p.publish(make_records(33, 10))
    assert not p.publish(make_records(43, 1), wait=False)
    p.close()
    wal.close()
    book.close()


@pytest.mark.unit
def test_drop_consumes_seqs_and_is_declared_by_a_status_record(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=16, consumers=("wal",), full_wait_ms=1, max_batch=8)
    drops: list[int] = []
    seq = ring_mod.Sequencer(ring_mod.Producer(ring.name, on_drop=drops.append))
    c = ring_mod.Consumer(ring.name, "wal")
    assert seq.publish(make_records(0, 16)) == 1
    assert seq.publish(make_records(0, 5)) == 17  # dropped: seqs 17..21
    assert seq.publish(make_records(0, 3)) == 22  # ring still full: dropped at once, 22..24
    assert drops == [5, 3]
    assert ring.stats().dropped == 8 and ring.stats().drop_events == 2
    c.advance(16)
    assert seq.publish(make_records(0, 2)) == 26  # STATUS takes 25, then 26..27
    batch = c.poll()
    assert list(batch["seq"]) == [25, 26, 27]
    status = batch[0]
    assert status["kind"] == Kind.STATUS and status["aux"] == StatusReason.DROP
    assert (status["px"], status["qty"]) == (17, 8), "declares the whole missing range"
    assert status["flags"] & rec.Flag.AFTER_GAP
    assert seq.next_seq == 28
    seq.close()
    c.close()


@pytest.mark.unit
def test_a_producer_waiting_on_a_full_ring_keeps_calling_on_wait(make_ring) -> None:  # type: ignore[no-untyped-def]
    # The ingest host heartbeats from on_wait: a wait as long as full_wait_ms
    # must not make the supervisor take the feed for hung.
    ring = make_ring(capacity=16, consumers=("wal",), full_wait_ms=300)
    p = ring_mod.Producer(ring.name)
    c = ring_mod.Consumer(ring.name, "wal")
    beats: list[int] = []
    p.on_wait = lambda: beats.append(time.monotonic_ns())
    assert p.publish(make_records(1, 16))
    started = time.monotonic_ns()
    assert not p.publish(make_records(17, 1))  # waits out 300 ms, then drops
    assert beats and all(b - started >= ring_mod.WAIT_BEAT_NS for b in beats[:1])
    assert ring.stats().full_waits == 1
    p.close()
    c.close()


@pytest.mark.unit
def test_after_a_drop_batches_do_not_wait_again_until_one_gets_through(make_ring) -> None:  # type: ignore[no-untyped-def]
    # A stalled consumer (a WAL writer on a full disk) frees no room; room for
    # the STATUS record alone must not make every later batch wait out the bound.
    ring = make_ring(capacity=16, consumers=("wal",), full_wait_ms=1, max_batch=8)
    seq = ring_mod.Sequencer(ring_mod.Producer(ring.name))
    c = ring_mod.Consumer(ring.name, "wal")
    seq.publish(make_records(0, 16))
    c.advance(1)  # room for the STATUS, not for a batch
    assert seq.publish(make_records(0, 5)) == 17  # waits out the bound, dropped
    assert ring.stats().full_waits == 1
    assert seq.publish(make_records(0, 3)) == 23  # STATUS 22 goes in; the batch is dropped at once
    assert seq.publish(make_records(0, 3)) == 26  # no room even for a STATUS: at once
    assert ring.stats().full_waits == 1, "a dropping producer waited again"
    assert ring.stats().dropped == 11
    c.advance(14)
    assert seq.publish(make_records(0, 2)) == 30  # STATUS 29 declares 23..28, then 30..31
    assert seq.publish(make_records(0, 8)) == 32
    c.advance(1)
    assert seq.publish(make_records(0, 8)) == 40  # got through before: waits (and drops) again
    assert ring.stats().full_waits == 2
    records = c.poll()
    statuses = records[records["kind"] == Kind.STATUS]
    assert [(int(s["seq"]), int(s["px"]), int(s["qty"])) for s in statuses] == [
        (22, 17, 5),
        (29, 23, 6),
    ]
    seq.close()
    c.close()


@pytest.mark.unit
def test_sequencer_continues_after_producer_takeover(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=64, consumers=("wal",), first_seq=1000, full_wait_ms=1)
    first = ring_mod.Sequencer(ring_mod.Producer(ring.name))
    assert first.publish(make_records(0, 10)) == 1000
    first.producer.detach()  # a crash: no close, nothing persisted beyond the slots
    second = ring_mod.Sequencer(ring_mod.Producer(ring.name))
    assert second.next_seq == 1010
    second.publish(make_records(0, 54))  # fills the ring
    assert second.publish(make_records(0, 4)) == 1064  # dropped, pending in the header
    second.producer.detach()
    third = ring_mod.Sequencer(ring_mod.Producer(ring.name))
    assert third.next_seq == 1068, "dropped numbers are never reused"
    c = ring_mod.Consumer(ring.name, "wal")
    c.advance(64)
    third.publish(make_records(0, 1))
    batch = c.poll()
    assert batch[0]["kind"] == Kind.STATUS and (batch[0]["px"], batch[0]["qty"]) == (1064, 4)
    assert list(batch["seq"]) == [1068, 1069]
    third.close()
    c.close()


@pytest.mark.unit
def test_reader_reports_overrun_and_never_returns_overwritten_data(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=64, consumers=(), max_batch=8)
    seq = ring_mod.Sequencer(ring_mod.Producer(ring.name))
    r = ring_mod.Reader(ring.name, start="tail")
    seq.publish(make_records(seq.next_seq, 8))
    batch, overrun = r.read()
    assert overrun == 0 and list(batch["seq"]) == list(range(1, 9))
    for _ in range(30):  # 240 records: laps the 64-slot ring several times
        seq.publish(make_records(seq.next_seq, 8))
    batch, overrun = r.read()
    # Readable window: the newest capacity - max_batch records.
    assert len(batch) == 64 - 8
    assert overrun == 240 - 56
    assert batch["seq"][0] == 248 - 56 + 1 and batch["seq"][-1] == 248
    assert payload_ok(batch)
    assert r.overruns == overrun
    seq.close()
    r.close()


@pytest.mark.unit
def test_close_lets_consumers_finish_then_end(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=64, consumers=("wal",))
    seq = ring_mod.Sequencer(ring_mod.Producer(ring.name))
    c = ring_mod.Consumer(ring.name, "wal")
    seq.publish(make_records(0, 10))
    seq.close()
    assert ring.closed and not c.at_end
    assert [len(b) for b in c.batches(timeout_s=5)] == [10]
    assert c.at_end
    assert len(c.wait(timeout_s=5)) == 0  # returns at once at the end, no waiting out the timeout
    with pytest.raises(RingError, match="closed"):
        ring_mod.Producer(ring.name)
    c.close()


@pytest.mark.unit
def test_a_parked_waiter_is_flagged_and_sees_a_record_from_another_thread(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=64, consumers=("wal",))
    p = ring_mod.Producer(ring.name)
    c = ring_mod.Consumer(ring.name, "wal")

    def publish_once_parked() -> None:
        # The consumer spins, yields, then parks (sleeps) and flags its slot;
        # only then does a record arrive.
        wait_until(lambda: ring.consumers()[0].waiting, timeout_s=10, what="consumer parked")
        p.publish(make_records(0, 3).view(V64))

    t = threading.Thread(target=publish_once_parked)
    t.start()
    try:
        got = c.wait(timeout_s=30)
    finally:
        t.join(timeout=30)
    assert list(got["seq"]) == [0, 1, 2] and not c.busy
    assert ring.consumers()[0].waiting is False  # cleared on the way out
    c.advance(len(got))
    # Nothing more: the wait times out with nothing, and not before its deadline.
    start = time.monotonic()
    assert len(c.wait(timeout_s=0.05)) == 0
    assert time.monotonic() - start >= 0.05
    c.close()
    p.close()


@pytest.mark.unit
def test_wait_returns_what_was_published_before_the_close(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=64, consumers=("wal",))
    p = ring_mod.Producer(ring.name)
    c = ring_mod.Consumer(ring.name, "wal")
    p.publish(make_records(0, 4).view(V64))
    p.close()
    assert list(c.wait(timeout_s=5)["seq"]) == [0, 1, 2, 3]
    c.advance(4)
    assert c.at_end and len(c.wait()) == 0  # no timeout needed: it ends
    c.close()


@pytest.mark.unit
def test_attach_errors_name_the_ring_and_the_problem(make_ring, shm_name) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=64, consumers=("wal",))
    with pytest.raises(RingError, match=r"no consumer 'book'.*'wal'"):
        ring_mod.Consumer(ring.name, "book")
    p = ring_mod.Producer(ring.name)
    with pytest.raises(RingError, match="already has a live producer"):
        # A second producer in another (live) process is refused; fake it by
        # writing a live foreign pid (our parent) into the header.
        p._hq[ring_mod.W_PRODUCER_PID] = os.getppid()
        ring_mod.Producer(ring.name)
    from pipeline import shm

    bogus = shm.create(shm_name("bogus"), 8192)
    with pytest.raises(RingError, match="not a ring"):
        ring_mod.Consumer(bogus.name, "wal")
    bogus.close()
    with pytest.raises(ValueError, match="power of two"):
        ring_mod.Ring.create(shm_name("bad"), 100, ["wal"])
    p.close()


@pytest.mark.unit
def test_liveness_pid_and_heartbeat(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=64, consumers=("wal",))
    assert not ring.producer_alive()
    p = ring_mod.Producer(ring.name)
    assert ring.producer_alive() and ring.producer_pid == os.getpid()
    assert ring.producer_alive(stale_after_s=60)
    p._hq[ring_mod.W_HEARTBEAT_NS] = 1  # long ago
    assert not ring.producer_alive(stale_after_s=1)
    p.heartbeat()
    assert ring.producer_alive(stale_after_s=1)
    info = ring.consumers()[0]
    assert info.name == "wal" and info.cursor == 0 and not info.alive
    p.close()


@pytest.mark.unit
def test_backoff_goes_from_spinning_to_sleeping() -> None:
    b = ring_mod.Backoff(spin_us=0, yield_us=0, sleep_min_us=10, sleep_max_us=20)
    b.reset()
    assert b.idle() is False  # the first call only starts the clock
    assert b.idle() is True  # then it parks (sleeps), capped
    b = ring_mod.Backoff(spin_us=1e6, yield_us=1e6, sleep_min_us=10, sleep_max_us=20)
    b.reset()
    b.park()  # a caller that spun and yielded its own way
    assert b.idle() is True  # sleeps at once


@pytest.mark.unit
def test_v64_fast_path_wraps_and_never_passes_the_slowest_consumer(make_ring) -> None:  # type: ignore[no-untyped-def]
    # V64 batches take publish()'s fast path, which trusts a cached room limit:
    # it must still wrap correctly and refuse rather than overwrite.
    ring = make_ring(capacity=64, consumers=("wal", "book"), full_wait_ms=1, max_batch=32)
    p = ring_mod.Producer(ring.name)
    wal = ring_mod.Consumer(ring.name, "wal")
    book = ring_mod.Consumer(ring.name, "book")
    nxt = 1
    for n in [1, 5, 17, 30, 3, 32, 8, 2, 31, 64, 50] * 4:  # 64 and 50 are chunked by 32
        batch = make_records(nxt, n)
        # alternate the exact V64 dtype (fast path), an equal but distinct one, the structured one
        kind = nxt % 3
        arg = batch.view(V64) if kind == 0 else batch.view(np.dtype("V64")) if kind == 1 else batch
        assert p.publish(arg)
        for c in (wal, book):
            got = 0
            while got < n:
                out = c.poll()
                assert len(out) and out["seq"][0] == nxt + got and payload_ok(out)
                got += len(out)
                c.advance(len(out))
        nxt += n
    wal.advance(0)
    assert p.publish(make_records(nxt, 32).view(V64))
    assert p.publish(make_records(nxt + 32, 32).view(V64))  # now full for both
    wal.advance(64)  # book has not moved: still full
    assert not p.publish(make_records(nxt + 64, 1).view(V64), wait=False)
    assert not p.publish(make_records(nxt + 64, 1).view(V64)), "waits 1 ms, then drops"
    assert ring.stats().dropped == 2
    first = book.poll(1)
    assert first["seq"][0] == nxt and payload_ok(first), "unconsumed records untouched"
    book.advance(10)
    assert p.publish(make_records(nxt + 64, 10).view(V64), wait=False)
    assert not p.publish(make_records(nxt + 74, 1).view(V64), wait=False)
    rest = []
    while book.lag:
        rest.append(book.poll().copy())
        book.advance(len(rest[-1]))
    out = np.concatenate(rest)
    assert list(out["seq"]) == list(range(nxt + 10, nxt + 74)) and payload_ok(out)
    p.close()
    wal.close()
    book.close()


@pytest.mark.unit
def test_consumer_wait_switches_between_latency_and_throughput(make_ring) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=1 << 14, consumers=("wal",))
    p = ring_mod.Producer(ring.name)
    c = ring_mod.Consumer(ring.name, "wal")
    assert not c.busy and c.busy_batch == 1024  # a sixteenth of this ring
    block = make_records(1, 1024).view(V64)
    got = 0

    def burst() -> bool:
        nonlocal got
        until = time.monotonic_ns() + 10 * ring_mod.RATE_WINDOW_NS
        while time.monotonic_ns() < until:
            p.publish(block)
            while c.lag:  # the block may end at the wrap
                batch = c.wait(timeout_s=1)
                got += len(batch)
                c.advance(len(batch))
        return c.busy

    # Millions of records per second: throughput regime (judged per window,
    # so a descheduled moment only delays the switch).
    wait_until(burst, timeout_s=30, what="throughput regime at full speed")
    assert got == c.cursor == p.tail
    # A trickle: back to the latency regime.
    single = make_records(1, 1).view(V64)

    def trickle() -> bool:
        p.publish(single)
        assert len(c.wait(timeout_s=1)) == 1
        c.advance(1)
        # The trickle's pace: the next record only after a whole rate window.
        after = time.monotonic_ns() + ring_mod.RATE_WINDOW_NS
        wait_until(lambda: time.monotonic_ns() >= after, 5, "a rate window to pass")
        return not c.busy

    wait_until(trickle, timeout_s=30, what="latency regime at a trickle")
    assert c.lag == 0
    p.close()
    c.close()


@pytest.mark.unit
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is a Linux feature")
def test_a_waiter_tightens_its_timer_slack_before_sleeping() -> None:
    pr_set_timerslack, pr_get_timerslack = 29, 30
    libc = ctypes.CDLL(None, use_errno=True)
    seen: list[int] = []

    def waiter() -> None:  # a thread of its own: the slack is per thread (and inherited)
        libc.prctl(pr_set_timerslack, 50_000, 0, 0, 0)  # the kernel's default
        seen.append(libc.prctl(pr_get_timerslack, 0, 0, 0, 0))
        b = ring_mod.Backoff(spin_us=0, yield_us=0, sleep_min_us=10, sleep_max_us=20)
        b.idle()
        assert b.idle() is True  # slept
        seen.append(libc.prctl(pr_get_timerslack, 0, 0, 0, 0))

    t = threading.Thread(target=waiter)
    t.start()
    t.join(timeout=10)
    assert seen == [50_000, ring_mod.TIMER_SLACK_NS]


# ---------------------------------------------------------------------------
# real processes


def _run_soak(children, make_ring, total: int, max_batch: int, capacity: int) -> None:  # type: ignore[no-untyped-def]
    ring = make_ring(capacity=capacity, consumers=("wal", "book"), full_wait_ms=60_000)
    ctx = children.ctx
    pipes = [ctx.Pipe(duplex=False) for _ in range(4)]
    children.spawn(ring_workers.consumer, ring.name, "wal", pipes[1][1])
    children.spawn(ring_workers.consumer, ring.name, "book", pipes[2][1])
    children.spawn(ring_workers.reader, ring.name, pipes[3][1])
    children.spawn(ring_workers.producer, ring.name, total, max_batch, 42, pipes[0][1])
    timeout = max(120.0, total / 200_000)
    results = []
    for recv, _send in pipes:
        assert recv.poll(timeout), "a ring worker did not report in time"
        results.append(recv.recv())
    prod, wal, book, reader = results
    assert prod["sent"] == total and prod["drops"] == 0
    for c in (wal, book):
        assert c["bad"] == 0, "every seq exactly once, in order, with its payload"
        assert c["got"] == total and c["first"] == prod["first"]
        assert c["checksum"] == prod["checksum"]
    assert reader["bad"] == 0, "a reader never sees torn or reordered records"
    assert reader["last"] == prod["first"] + total - 1
    assert reader["got"] + reader["overruns"] <= total
    assert reader["got"] > 0


@pytest.mark.integration
def test_one_million_records_two_consumers_and_a_reader(children, make_ring) -> None:  # type: ignore[no-untyped-def]
    _run_soak(children, make_ring, total=1_000_000, max_batch=300, capacity=1 << 12)


@pytest.mark.bench
@pytest.mark.timeout(3600)
def test_hundred_million_records_two_consumers_and_a_reader(children, make_ring) -> None:  # type: ignore[no-untyped-def]
    _run_soak(children, make_ring, total=100_000_000, max_batch=512, capacity=1 << 16)


@pytest.mark.integration
def test_consumer_killed_with_sigkill_resumes_at_its_cursor(children, make_ring) -> None:  # type: ignore[no-untyped-def]
    total = 200_000
    ring = make_ring(capacity=1 << 10, consumers=("wal", "book"), full_wait_ms=60_000)
    ctx = children.ctx
    prod_r, prod_w = ctx.Pipe(duplex=False)
    book_r, book_w = ctx.Pipe(duplex=False)
    dead_r, dead_w = ctx.Pipe(duplex=False)
    victim = children.spawn(ring_workers.consumer, ring.name, "wal", dead_w, 50_000)
    children.spawn(ring_workers.consumer, ring.name, "book", book_w)
    children.spawn(ring_workers.producer, ring.name, total, 100, 7, prod_w)
    victim.join(timeout=120)
    assert victim.exitcode == -9, "the consumer died by SIGKILL mid-batch"
    cursor_at_death = ring.consumers()[0].cursor
    assert 0 < cursor_at_death < total
    again_r, again_w = ctx.Pipe(duplex=False)
    children.spawn(ring_workers.consumer, ring.name, "wal", again_w)
    assert again_r.poll(120)
    again = again_r.recv()
    assert prod_r.poll(120)
    prod = prod_r.recv()
    assert again["start_cursor"] == cursor_at_death
    assert again["bad"] == 0
    assert again["first"] == prod["first"] + cursor_at_death, "resumes exactly at its cursor"
    assert again["got"] == total - cursor_at_death, "and gets everything after it: no loss"
    assert book_r.poll(120) and book_r.recv()["got"] == total
    assert prod["drops"] == 0
    assert not dead_r.poll(0)


@pytest.mark.unit
def test_wait_yields_the_cpu_between_batches_of_a_burst_only(
    make_ring,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In a burst, a consumer gives a process that shares its core (the
    # producer, the other consumer) the CPU between two batches; a record of
    # a slow feed is returned at once, without yielding.
    ring = make_ring(capacity=1 << 16, consumers=("wal",), max_batch=4096)
    p = ring_mod.Producer(ring.name)
    c = ring_mod.Consumer(ring.name, "wal")
    yields: list[int] = []
    real_yield = os.sched_yield
    monkeypatch.setattr(ring_mod.os, "sched_yield", lambda: (yields.append(1), real_yield()))
    burst = make_records(1, 4096)

    def take_burst() -> bool:
        assert p.publish(burst)
        c.advance(len(c.wait(timeout_s=1.0, max_records=4096)))
        return c.busy

    wait_until(take_burst, 10, "the burst regime")
    yields.clear()
    assert p.publish(burst)
    assert len(c.wait(timeout_s=1.0, max_records=4096)) == 4096
    assert yields, "no yield between batches of a burst"
    c.advance(4096)

    def calm() -> bool:
        c.wait(timeout_s=0.001)
        return not c.busy

    wait_until(calm, 10, "the latency regime")
    yields.clear()
    assert p.publish(make_records(1, 1))
    assert len(c.wait(timeout_s=1.0)) == 1 and not yields
    p.close()
    c.close()
