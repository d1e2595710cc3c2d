"""Crash test: a real process writing a snapshot is SIGKILLed mid-write; recovery
gives the previous snapshot, fully usable, and the next refresh goes on from it."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from connector.instruments import snapshot as snap
from connector.instruments import store
from connector.instruments.kite_csv import parse_kite_csv
from connector.instruments.model import Venue
from connector.instruments.universe import Universe
from connector.sim.kite_universe import generate_universe, universe_csv
from pipeline import paths, wal
from tests.conftest import Children
from tests.connector.instruments.support import DAY, small_rows
from tests.helpers import wait_until

pytestmark = pytest.mark.integration

CONFIG = store.StoreConfig(segment_bytes=4 << 20, part_bytes=16 << 10)

# The child refreshes with a big universe in small parts; after the first part
# reaches the file it blocks on stdin (which the parent never writes), so the
# SIGKILL lands while the snapshot is half written, every time.
CHILD = textwrap.dedent(
    """
    import datetime as dt, sys
    from connector.instruments import store
    from connector.instruments.kite_csv import parse_kite_csv
    from connector.instruments.model import Venue
    from connector.sim.kite_universe import generate_universe, universe_csv

    data_dir, day = sys.argv[1], dt.date.fromisoformat(sys.argv[2])
    table = parse_kite_csv(universe_csv(generate_universe(day, scale=0.1)))

    def on_part(index, count):
        if index == 1 and sys.argv[3] == "block":
            sys.stdin.readline()

    store.refresh(
        data_dir,
        {Venue.KITE: table},
        as_of=day,
        now_ns=2,
        config=store.StoreConfig(segment_bytes=4 << 20, part_bytes=16 << 10),
        on_part=on_part,
    )
    print("finished", flush=True)
    """
)


def _versions_on_disk(wal_dir: Path) -> dict[int, int]:
    """version -> parts present (complete frames only)."""
    out: dict[int, int] = {}
    for path in wal.segment_paths(wal_dir):
        data = path.read_bytes()
        view = memoryview(data)
        for fr in wal.scan_segment(path, view, last=True).frames:
            head = snap.part_header(view[fr.payload_offset : fr.payload_offset + 32])
            if head is not None:
                out[head.version] = out.get(head.version, 0) + 1
        view.release()
    return out


def test_sigkill_mid_snapshot_recovers_previous(tmp_path: Path, children: Children) -> None:
    first_rows = small_rows()
    first = store.refresh(
        tmp_path,
        {Venue.KITE: parse_kite_csv(universe_csv(first_rows))},
        as_of=DAY,
        now_ns=1,
        config=CONFIG,
    )
    wal_dir = paths.instruments_wal_dir(tmp_path)
    day2 = DAY + dt.timedelta(days=1)
    child = children.popen(
        [sys.executable, "-c", CHILD, str(tmp_path), day2.isoformat(), "block"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    # Kill as soon as version 2's first bytes are in the file.
    wait_until(lambda: _versions_on_disk(wal_dir).get(2, 0) >= 1, 60, "the child's first part")
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert child.stdout is not None and b"finished" not in child.stdout.read()

    on_disk = _versions_on_disk(wal_dir)
    assert 1 <= on_disk[2] <= 2  # a torn version 2: some parts, far from all
    recovered = store.recover(wal_dir)
    assert recovered.snapshot is not None
    assert recovered.snapshot.version == 1
    assert any("version 2 is torn" in w for w in recovered.warnings)
    assert recovered.snapshot.listed.rows() == first.snapshot.listed.rows()
    # Fully usable: every query answers as before the crash.
    u = Universe.from_snapshot(recovered.snapshot)
    before = Universe.from_snapshot(first.snapshot)
    assert u.spot("NIFTY") == before.spot("NIFTY")
    assert u.futures("NIFTY", DAY) == before.futures("NIFTY", DAY)
    for row in first_rows[::50]:
        assert u.by_token(row.instrument_token).tradingsymbol == row.tradingsymbol
    # The writer's lock died with the child: the next refresh goes ahead, past version 2.
    third = store.refresh(
        tmp_path,
        {Venue.KITE: parse_kite_csv(universe_csv(small_rows(day2)))},
        as_of=day2,
        now_ns=3,
        config=CONFIG,
    )
    assert third.snapshot.version == 3
    assert third.report.previous_version == 1
    final = store.recover(wal_dir)
    assert final.snapshot is not None and final.snapshot.version == 3
    assert final.warnings == [] or all("version 2" in w for w in final.warnings)


def test_sigkill_at_a_random_point_leaves_one_complete_version(
    tmp_path: Path, children: Children
) -> None:
    """Without blocking, the kill lands wherever the child is: the store then holds
    version 1 or version 2, each complete and exactly as written."""
    first = store.refresh(
        tmp_path,
        {Venue.KITE: parse_kite_csv(universe_csv(small_rows()))},
        as_of=DAY,
        now_ns=1,
        config=CONFIG,
    )
    wal_dir = paths.instruments_wal_dir(tmp_path)
    day2 = DAY + dt.timedelta(days=1)
    child = children.popen(
        [sys.executable, "-c", CHILD, str(tmp_path), day2.isoformat(), "race"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    wait_until(lambda: _versions_on_disk(wal_dir).get(2, 0) >= 1, 60, "the child's first part")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    recovered = store.recover(wal_dir)
    assert recovered.snapshot is not None
    if recovered.snapshot.version == 1:
        assert recovered.snapshot.listed.rows() == first.snapshot.listed.rows()
        assert any("version 2 is torn" in w for w in recovered.warnings)
    else:
        assert recovered.snapshot.version == 2
        want = parse_kite_csv(universe_csv(generate_universe(day2, scale=0.1)))
        assert recovered.snapshot.listed.identity_keys() == want.identity_keys()
