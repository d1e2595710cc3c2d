"""A WAL-writing process for crash tests: ``python -m tests.pipeline.wal_writer_proc DIR SEGMENT_BYTES SEED FSYNC``.

Resumes after the last sequence number in the WAL, appends deterministic
records (payload derived from seq) in random batch sizes, flushes each batch
and then prints the last seq it flushed, until killed.
"""

from __future__ import annotations

import sys

import numpy as np

from pipeline import wal
from tests.helpers import make_records


def main() -> None:
    directory, segment_bytes, seed, fsync = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
    )
    rng = np.random.default_rng(seed)
    writer = wal.WalWriter(
        directory, wal.WalConfig(segment_bytes=segment_bytes, fsync=fsync, buffer_bytes=64 * 1024)
    )
    writer.register_source(1, "crash-test")
    seq = writer.last_seq(1) + 1
    print(f"start {seq}", flush=True)
    while True:
        n = int(rng.integers(1, 500))
        writer.append_records(make_records(seq, n))
        writer.flush()
        seq += n
        print(seq - 1, flush=True)


if __name__ == "__main__":
    main()
