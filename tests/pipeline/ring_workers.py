"""Process bodies for the multi-process ring tests (importable by spawned children)."""

from __future__ import annotations

import os
import signal
from multiprocessing.connection import Connection

import numpy as np

from pipeline import ring as ring_mod
from tests.helpers import make_records, payload_ok


def producer(name: str, total: int, max_batch: int, seed: int, out: Connection) -> None:
    """Publish ``total`` records through a Sequencer in random batch sizes."""
    rng = np.random.default_rng(seed)
    seq = ring_mod.Sequencer(ring_mod.Producer(name))
    first = seq.next_seq
    sent = 0
    checksum = 0
    while sent < total:
        n = int(min(total - sent, rng.integers(1, max_batch + 1)))
        batch = make_records(
            seq.next_seq, n
        )  # the payload derives from the seq the sequencer will stamp
        given = seq.publish(batch)
        assert given == first + sent
        checksum ^= int(np.bitwise_xor.reduce(batch["px"]))
        sent += n
    drops = seq.producer.stats().dropped
    seq.close()
    out.send({"first": first, "sent": sent, "checksum": checksum, "drops": drops})


def consumer(name: str, consumer_name: str, out: Connection, die_after: int = -1) -> None:
    """Consume to the end, checking order, payload and a checksum.

    With ``die_after`` >= 0 the process SIGKILLs itself once it has consumed
    at least that many records - after reading a batch but before advancing
    past it, the worst moment.
    """
    c = ring_mod.Consumer(name, consumer_name, takeover=True)
    expected = None
    got = 0
    checksum = 0
    bad = 0
    start_cursor = c.cursor
    while True:
        batch = c.wait(timeout_s=30)
        n = len(batch)
        if n == 0:
            if c.at_end:
                break
            raise AssertionError(f"consumer {consumer_name}: no data for 30 s and ring not closed")
        seqs = batch["seq"]
        if expected is None:
            expected = int(seqs[0])
        if not (
            int(seqs[0]) == expected
            and int(seqs[-1]) == expected + n - 1
            and np.all(np.diff(seqs.astype(np.int64)) == 1)
        ):
            bad += 1
        if not payload_ok(batch):
            bad += 1
        if 0 <= die_after <= got + n:
            os.kill(os.getpid(), signal.SIGKILL)
        checksum ^= int(np.bitwise_xor.reduce(batch["px"]))
        expected += n
        got += n
        c.advance(n)
    out.send(
        {
            "got": got,
            "first": None if expected is None else expected - got,
            "checksum": checksum,
            "bad": bad,
            "start_cursor": start_cursor,
        }
    )
    c.close()


def reader(name: str, out: Connection) -> None:
    """Follow the ring as a non-gating reader; every record it returns must be intact."""
    r = ring_mod.Reader(name, start="oldest")
    got = 0
    bad = 0
    last = 0
    while True:
        batch, _overrun = r.wait(timeout_s=30)
        if len(batch):
            seqs = batch["seq"].astype(np.int64)
            if not payload_ok(batch) or int(seqs[0]) <= last or np.any(np.diff(seqs) != 1):
                bad += 1
            last = int(seqs[-1])
            got += len(batch)
        elif r.at_end:
            break
    out.send({"got": got, "overruns": r.overruns, "bad": bad, "last": last})
    r.close()
