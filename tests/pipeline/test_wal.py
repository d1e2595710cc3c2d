"""The WAL: framing, rotation, reading, recovery from torn writes, bit rot and SIGKILL."""

from __future__ import annotations

import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline import record as rec
from pipeline import wal
from pipeline.errors import ConfigError, WalCorruptError, WalFullError, WalLockedError
from tests.helpers import make_records, payload_ok

SMALL = 16 * 1024  # tiny segments: rotation after a handful of frames


def write_wal(
    directory: Path, batches: list[tuple[int, int, int]], segment_bytes: int = SMALL, **cfg: object
) -> None:
    """Write batches of (src, first seq, count) and close."""
    with wal.WalWriter(directory, wal.WalConfig(segment_bytes=segment_bytes, **cfg)) as w:  # type: ignore[arg-type]
        for src in sorted({b[0] for b in batches}):
            w.register_source(src, f"feed-{src}")
        for src, first, count in batches:
            w.append_records(make_records(first, count, src=src))
            w.flush()


def all_records(directory: Path, src: int | None = None) -> rec.Records:
    batches = list(wal.WalReader(directory).records(src=src, strict=False))
    return np.concatenate(batches) if batches else rec.empty(0)


def frame_map(directory: Path) -> list[tuple[Path, wal.FrameInfo]]:
    """Every frame of a healthy WAL with its file, for computing expectations."""
    out = []
    for path in wal.segment_paths(directory):
        data = path.read_bytes()
        scan = wal.scan_segment(path, memoryview(data), last=False)
        assert not scan.corrupt
        out.extend((path, f) for f in scan.frames)
    return out


# ---------------------------------------------------------------------------
# writing and reading


@pytest.mark.unit
def test_round_trip_two_sources(tmp_path: Path) -> None:
    write_wal(
        tmp_path,
        [(1, 1, 100), (2, 1, 7), (1, 101, 50), (2, 8, 300)],
        segment_bytes=wal.DEFAULT_SEGMENT_BYTES,
    )
    got1, got2 = all_records(tmp_path, 1), all_records(tmp_path, 2)
    assert list(got1["seq"]) == list(range(1, 151)) and payload_ok(got1)
    assert list(got2["seq"]) == list(range(1, 308)) and payload_ok(got2)
    assert np.all(got2["src"] == 2)
    report = wal.verify(tmp_path)
    assert report["ok"] and report["records"] == 457
    assert report["sources"]["feed-1"]["last_seq"] == 150
    assert report["sources"]["feed-2"] == {
        "first_seq": 1,
        "last_seq": 307,
        "records": 307,
        "gaps": [],
        "declared_gaps": [],
        "undeclared_gaps": [],
        "duplicates": 0,
    }


@pytest.mark.unit
def test_segments_are_exactly_their_size_and_frames_never_straddle(tmp_path: Path) -> None:
    write_wal(tmp_path, [(1, 1 + 50 * i, 50) for i in range(40)])
    paths = wal.segment_paths(tmp_path)
    assert len(paths) >= 6
    assert all(p.stat().st_size == SMALL for p in paths)
    for path in paths:
        scan = wal.scan_segment(path, memoryview(path.read_bytes()), last=path == paths[-1])
        assert not scan.corrupt and scan.torn_bytes == 0
        assert all(f.end <= SMALL for f in scan.frames)
        if path != paths[-1]:
            # Full: a batch that did not fit was split so this segment is used up to the last record.
            assert SMALL - scan.end < wal.FRAME_HEADER_BYTES + rec.RECORD_SIZE
    # Names are the LSN of their first frame, consecutive.
    lsns = [int(p.name[:-4]) for p in paths]
    counts = [
        len(wal.scan_segment(p, memoryview(p.read_bytes()), last=False).frames) for p in paths
    ]
    assert lsns == [sum(counts[:i]) for i in range(len(paths))]
    got = all_records(tmp_path)
    assert list(got["seq"]) == list(range(1, 2001)) and payload_ok(got)


@pytest.mark.unit
def test_reader_starts_at_any_seq_across_segments(tmp_path: Path) -> None:
    write_wal(tmp_path, [(1, 1 + 37 * i, 37) for i in range(60)] + [(2, 1, 10)])
    reader = wal.WalReader(tmp_path)
    last = 37 * 60
    for start in [1, 2, 37, 38, 500, 1111, last - 1, last, last + 5]:
        batches = list(reader.records(src=1, from_seq=start))
        seqs = np.concatenate(batches)["seq"] if batches else np.zeros(0)
        assert list(seqs) == list(range(start, last + 1)), start


@pytest.mark.unit
def test_restarted_writer_skips_what_is_already_logged(tmp_path: Path) -> None:
    write_wal(tmp_path, [(1, 1, 100)])
    with wal.WalWriter(tmp_path, wal.WalConfig(segment_bytes=SMALL)) as w:
        assert w.last_seq(1) == 100
        assert w.append_records(make_records(61, 60)) == 20  # 61..100 are in the log already
        assert w.records_skipped == 40
        assert w.append_records(make_records(90, 5)) == 0
    got = all_records(tmp_path)
    assert list(got["seq"]) == list(range(1, 121))
    assert wal.verify(tmp_path)["sources"]["feed-1"]["duplicates"] == 0


@pytest.mark.unit
def test_last_seq_of_a_quiet_source_survives_in_segment_headers(tmp_path: Path) -> None:
    # Source 2 writes once, then source 1 fills many segments: recovery reads
    # only the last segment, whose header still knows source 2.
    write_wal(tmp_path, [(2, 1, 9)] + [(1, 1 + 100 * i, 100) for i in range(30)])
    assert len(wal.segment_paths(tmp_path)) > 5
    found = wal.recover(tmp_path)
    assert found.last_seq(2) == 9 and found.last_seq(1) == 3000
    assert found.sources[2][0] == "feed-2"


@pytest.mark.unit
@pytest.mark.parametrize("policy", wal.FSYNC_POLICIES)
def test_every_fsync_policy_writes_a_valid_log(tmp_path: Path, policy: str) -> None:
    write_wal(tmp_path, [(1, 1 + 64 * i, 64) for i in range(20)], fsync=policy, fsync_interval_ms=1)
    assert wal.verify(tmp_path)["records"] == 1280


@pytest.mark.unit
def test_bad_config_names_the_key() -> None:
    with pytest.raises(ConfigError, match="fsync must be one of"):
        wal.WalConfig(fsync="sometimes")
    with pytest.raises(ConfigError, match="segment_bytes"):
        wal.WalConfig(segment_bytes=100)


@pytest.mark.unit
def test_one_writer_per_directory(tmp_path: Path) -> None:
    with wal.WalWriter(tmp_path), pytest.raises(WalLockedError, match=f"pid {os.getpid()}"):
        wal.WalWriter(tmp_path)
    with wal.WalWriter(tmp_path):  # released on close
        pass


@pytest.mark.unit
def test_blob_frames_round_trip(tmp_path: Path) -> None:
    with wal.WalWriter(tmp_path, wal.WalConfig(segment_bytes=SMALL)) as w:
        w.append_blob(b"instrument snapshot v1", src=9, first_seq=1, count=3)
        with pytest.raises(wal.WalError, match="does not fit"):
            w.append_blob(b"x" * SMALL)
    frames = [f for f in wal.WalReader(tmp_path).frames() if f.kind == wal.FrameKind.BLOB]
    assert [(f.payload, f.src, f.first_seq, f.count) for f in frames] == [
        (b"instrument snapshot v1", 9, 1, 3)
    ]


@pytest.mark.unit
def test_verify_reports_declared_and_undeclared_gaps_and_duplicates(tmp_path: Path) -> None:
    with wal.WalWriter(tmp_path) as w:
        w.register_source(1, "feed")
        w.append_records(make_records(1, 10))
        status = rec.status(
            src=1, reason=rec.StatusReason.DROP, ts_recv=1, first_missing=11, missing=5
        )
        status["seq"] = 16
        w.append_records(status)
        w.append_records(make_records(17, 4))
        w.append_records(make_records(23, 2))  # 21, 22 missing, nobody said so
        # A duplicate can only come from a bug or a hand-made frame: write one raw.
        dup = make_records(24, 1)
        w._append_frame(wal.FrameKind.RECORDS, 1, 24, 1, dup.view(np.uint8))
    src = wal.verify(tmp_path)["sources"]["feed"]
    assert src["gaps"] == [[11, 15], [21, 22]]
    assert src["declared_gaps"] == [[11, 15]]
    assert src["undeclared_gaps"] == [[21, 22]]
    assert src["duplicates"] == 1


# ---------------------------------------------------------------------------
# damage


def _small_last_segment(tmp_path: Path) -> tuple[Path, list[wal.FrameInfo], int]:
    """A WAL whose last segment holds a few frames; returns it, its frames, and its data end."""
    write_wal(tmp_path, [(1, 1, 200), (1, 201, 3), (1, 204, 1), (1, 205, 2)], segment_bytes=SMALL)
    last = wal.segment_paths(tmp_path)[-1]
    scan = wal.scan_segment(last, memoryview(last.read_bytes()), last=True)
    assert 3 <= len(scan.frames) <= 6, "the test wants a few frames in the last segment"
    return last, scan.frames, scan.end


@pytest.mark.unit
def test_torn_write_at_every_byte_offset_of_the_last_segment(tmp_path: Path) -> None:
    src_dir = tmp_path / "orig"
    last, frames, end = _small_last_segment(src_dir)
    original = last.read_bytes()
    total_before = len(all_records(src_dir)) - sum(f.count for f in frames)
    work = tmp_path / "work"
    shutil.copytree(src_dir, work)
    target = work / last.name
    for cut in range(wal.SEGMENT_HEADER_BYTES, end + 1):
        for how in ("zeroed", "truncated"):
            # Zeroing bytes that were zero anyway leaves a frame intact.
            unharmed = {
                f.offset
                for f in frames
                if f.end <= cut or (how == "zeroed" and not original[cut : f.end].strip(b"\0"))
            }
            intact = [f for f in frames if f.offset in unharmed]
            partial = next(
                (f for f in frames if f.offset < cut < f.end and f.offset not in unharmed), None
            )
            data = original[:cut] + (b"\0" * (len(original) - cut) if how == "zeroed" else b"")
            target.write_bytes(data)
            found = wal.recover(work)
            assert found.end_offset == (intact[-1].end if intact else wal.SEGMENT_HEADER_BYTES), (
                cut,
                how,
            )
            # Torn bytes: up to the last non-zero byte of the partial frame.
            piece = original[partial.offset : cut] if partial else b""
            torn = len(piece.rstrip(b"\0"))
            assert found.torn_tail_bytes == torn, (cut, how)
            assert not found.corrupt, (cut, how)
            got = all_records(work)
            assert len(got) == total_before + sum(f.count for f in intact), (cut, how)
            assert payload_ok(got)
    # And the writer repairs the tail and appends after the intact frames.
    cut = frames[1].offset + 40
    target.write_bytes(original[:cut] + b"\0" * (len(original) - cut))
    last_intact = int(all_records(work)["seq"][-1])
    with wal.WalWriter(work, wal.WalConfig(segment_bytes=SMALL)) as w:
        assert w.recovery.torn_tail_bytes == len(original[frames[1].offset : cut].rstrip(b"\0")) > 0
        w.append_records(make_records(last_intact + 1, 5))
    report = wal.verify(work)
    assert report["ok"] and report["torn_tail_bytes"] == 0
    got = all_records(work)
    assert list(got["seq"]) == list(range(1, last_intact + 6)) and payload_ok(got)


@pytest.mark.unit
def test_random_bit_flips_recover_exactly_the_intact_frames(tmp_path: Path) -> None:
    orig = tmp_path / "orig"
    write_wal(orig, [(1 + i % 2, 1 + 40 * (i // 2), 40) for i in range(50)], segment_bytes=SMALL)
    frames = frame_map(orig)
    paths = wal.segment_paths(orig)
    last = paths[-1]
    total = sum(f.count for _p, f in frames)
    rng = random.Random(int(os.environ.get("FLIPSEED", "1234")))
    work = tmp_path / "work"
    for trial in range(int(os.environ.get("FLIPS", "150"))):
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(orig, work)
        path = rng.choice(paths)
        # Bias half the flips into the written part, where they matter most.
        data_end = max((f.end for p, f in frames if p == path), default=wal.SEGMENT_HEADER_BYTES)
        pos = rng.randrange(data_end) if rng.random() < 0.5 else rng.randrange(SMALL)
        blob = bytearray((work / path.name).read_bytes())
        blob[pos] ^= 1 << rng.randrange(8)
        (work / path.name).write_bytes(bytes(blob))

        hit = next((f for p, f in frames if p == path and f.offset <= pos < f.end), None)
        report = wal.verify(work)
        got = all_records(work)
        lost = hit.count if hit is not None and hit.kind == wal.FrameKind.RECORDS else 0
        assert len(got) == total - lost, (trial, path.name, pos)
        assert payload_ok(got)
        where = [(Path(c["file"]).name, c["offset"]) for c in report["corrupt"]]
        last_frame = max((f for p, f in frames if p == last), key=lambda f: f.offset)
        if pos < wal.SEGMENT_HEADER_BYTES:
            assert where == [(path.name, 0)], (trial, pos)
        elif hit is not None and not (path == last and hit is last_frame):
            assert where == [(path.name, hit.offset)], (trial, pos)
            assert not report["ok"]
        elif hit is not None or path == last:
            # The last frame of the log, or garbage after it: a torn tail, not corruption.
            assert where == [] and report["torn_tail_bytes"] > 0, (trial, pos)
        else:
            assert where == [(path.name, data_end)], (
                trial,
                pos,
            )  # garbage after a sealed segment's end
        # Repair keeps every intact frame and makes the log verify.
        wal.repair(work)
        again = wal.verify(work)
        assert again["ok"] and again["torn_tail_bytes"] == 0, (trial, pos, again["corrupt"])
        assert len(all_records(work)) == total - lost


@pytest.mark.unit
def test_repair_pads_a_corrupt_middle_frame_and_verify_shows_the_gap(tmp_path: Path) -> None:
    write_wal(
        tmp_path, [(1, 1 + 10 * i, 10) for i in range(8)], segment_bytes=wal.DEFAULT_SEGMENT_BYTES
    )
    path, frames = (
        wal.segment_paths(tmp_path)[0],
        [f for _p, f in frame_map(tmp_path) if f.kind == wal.FrameKind.RECORDS],
    )
    victim = frames[3]  # seqs 31..40
    blob = bytearray(path.read_bytes())
    blob[victim.payload_offset + 100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(WalCorruptError, match=f"{path.name} offset {victim.offset}: CRC mismatch"):
        list(wal.WalReader(tmp_path).records())
    report = wal.verify(tmp_path)
    assert not report["ok"] and report["corrupt"] == [
        {"file": str(path), "offset": victim.offset, "reason": "CRC mismatch"}
    ]
    actions = wal.repair(tmp_path)
    assert actions["padded"] == [
        {"file": str(path), "offset": victim.offset, "bytes": victim.end - victim.offset}
    ]
    report = wal.verify(tmp_path)
    assert report["ok"] and report["padded_frames"] == 1
    assert report["sources"]["feed-1"]["undeclared_gaps"] == [[31, 40]]
    assert len(list(wal.WalReader(tmp_path).records())) == 7  # strict reading works again


@pytest.mark.unit
def test_half_created_segment_and_temp_files_are_removed_on_open(tmp_path: Path) -> None:
    write_wal(tmp_path, [(1, 1, 100)])
    segments = wal.segment_paths(tmp_path)
    # A crash between creating the next segment and writing its header (or a
    # power loss before the data reached the disk) leaves zeros, or a .tmp file.
    (tmp_path / f"{99:020d}.wal").write_bytes(b"\0" * SMALL)
    (tmp_path / f"{98:020d}.wal.tmp").write_bytes(b"\0" * 100)
    with wal.WalWriter(tmp_path, wal.WalConfig(segment_bytes=SMALL)) as w:
        assert sorted(w.recovery.removed) == [f"{98:020d}.wal.tmp", f"{99:020d}.wal"]
        assert w.last_seq(1) == 100
        w.append_records(make_records(101, 5))
    assert wal.segment_paths(tmp_path) == segments
    assert list(all_records(tmp_path)["seq"]) == list(range(1, 106))


@pytest.mark.unit
def test_corrupt_header_of_the_last_segment_stops_the_writer_until_repaired(tmp_path: Path) -> None:
    write_wal(tmp_path, [(1, 1 + 50 * i, 50) for i in range(10)])
    last = wal.segment_paths(tmp_path)[-1]
    blob = bytearray(last.read_bytes())
    blob[100] ^= 4  # inside the source table
    last.write_bytes(bytes(blob))
    with pytest.raises(WalCorruptError, match=r"offset 0: segment header is corrupt.*--repair"):
        wal.WalWriter(tmp_path, wal.WalConfig(segment_bytes=SMALL))
    actions = wal.repair(tmp_path)
    assert actions["rebuilt_headers"] == [str(last)]
    with wal.WalWriter(tmp_path, wal.WalConfig(segment_bytes=SMALL)) as w:
        assert w.last_seq(1) == 500
        w.append_records(make_records(501, 10))
    assert wal.verify(tmp_path)["ok"]
    assert list(all_records(tmp_path)["seq"]) == list(range(1, 511))


# ---------------------------------------------------------------------------
# SIGKILL of a real writer process


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_sigkill_of_the_writer_at_random_moments_leaves_a_verifiable_prefix(
    tmp_path: Path, children
) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(99)
    root = Path(__file__).resolve().parents[2]
    segment = 64 * 1024
    flushed = 0
    for kill in range(24):
        policy = ("never", "interval", "always", "rotate")[kill % 4]
        proc = children.popen(
            [
                sys.executable,
                "-m",
                "tests.pipeline.wal_writer_proc",
                str(tmp_path),
                str(segment),
                str(kill),
                policy,
            ],
            cwd=root,
            stdout=__import__("subprocess").PIPE,
            stderr=__import__("subprocess").PIPE,
        )
        assert proc.stdout is not None
        start_line = proc.stdout.readline().decode()
        assert start_line.startswith("start "), proc.stderr.read().decode() if proc.stderr else ""
        assert int(start_line.split()[1]) == flushed + 1, (
            "resumes right after the last logged record"
        )
        # Kill after a random number of flushed batches (0: right at start-up).
        for _ in range(rng.choice([0, 1, 3, 20, 150])):
            flushed = int(proc.stdout.readline())
        proc.kill()
        proc.wait()
        report = wal.verify(tmp_path)
        assert report["ok"], report["corrupt"]
        got = all_records(tmp_path)
        last = int(got["seq"][-1]) if len(got) else 0
        assert list(got["seq"]) == list(range(1, last + 1)), "a prefix: no gap, no duplicate"
        assert payload_ok(got)
        assert last >= flushed, "everything flushed before the kill survives it"
        flushed = last
    assert len(wal.segment_paths(tmp_path)) > 3, "kills happened across rotations"


@pytest.mark.integration
def test_a_full_disk_raises_wal_full_and_the_same_call_later_appends_exactly_the_rest(
    small_disk: Path,
) -> None:
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (3 << 20))  # 6 MiB disk: room for two 1 MiB segments, not three
    directory = small_disk / "wal"
    records = make_records(1, 60_000)  # 3.7 MB of records
    w = wal.WalWriter(directory, wal.WalConfig(segment_bytes=1 << 20))
    try:
        w.register_source(1, "feed")
        with pytest.raises(WalFullError, match="no disk space for the next WAL segment") as full:
            w.append_records(records)
        assert str(directory) in str(full.value) and "bytes free" in str(full.value)
        written = w.last_seq(1)
        assert 0 < written < 60_000 and w.records_written == written
        with pytest.raises(WalFullError):  # still full: nothing more, nothing twice
            w.append_records(records)
        assert w.last_seq(1) == written
        ballast.unlink()
        assert w.append_records(records) == 60_000 - written  # the call again: only the rest
        assert w.records_written == 60_000 and w.records_skipped == 2 * written  # two calls again
    finally:
        w.close()
    got = all_records(directory)
    assert list(got["seq"]) == list(range(1, 60_001)) and payload_ok(got)
    assert wal.verify(directory)["ok"]
