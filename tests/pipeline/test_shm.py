"""Named POSIX shared memory (pipeline.shm): creation, attach, and above all
that an attaching process never destroys the segment when it exits
(cpython gh-82300), plus finding and removing segments of dead runs."""

from __future__ import annotations

import os
import re
import secrets
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import numpy as np
import psutil
import pytest

from pipeline import shm
from pipeline.errors import SharedMemoryError
from tests.helpers import wait_until

ShmName = Callable[[str], str]
CHILD_TIMEOUT_S = 60


def shm_path(name: str) -> str:
    return f"/dev/shm/{name}"


def run_id_of(name: str) -> str:
    assert name.startswith(shm.PREFIX)
    return name[len(shm.PREFIX) :].partition("-")[0]


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    for _ in range(20):
        proc = subprocess.Popen(["true"])
        proc.wait(timeout=CHILD_TIMEOUT_S)
        if not psutil.pid_exists(proc.pid):
            return proc.pid
    raise AssertionError("could not get a pid that stays dead")  # pragma: no cover


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in an independent interpreter; stdout and stderr captured.

    communicate() reads both pipes to EOF, so any helper process the child
    started that inherited them (the resource tracker does) has exited too."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
    )


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test; restored afterwards."""
    original = os.umask(0o022)
    os.umask(original)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    try:
        yield set_mask
    finally:
        os.umask(original)


# ---------------------------------------------------------------------------
# create / attach in one process


@pytest.mark.unit
@pytest.mark.parametrize("size", [1, 4096, 3 * shm.PAGE_SIZE + 17])
@pytest.mark.parametrize("pretouch", [True, False])
def test_create_size_mode_and_zero_fill(shm_name: ShmName, size: int, pretouch: bool) -> None:
    name = shm_name("seg")
    seg = shm.create(name, size, pretouch=pretouch)
    try:
        assert seg.name == name
        assert seg.size == size
        assert seg.created is True
        assert len(seg.buf) == size
        st = os.stat(shm_path(name))
        assert st.st_size == size
        assert st.st_mode & 0o777 == 0o600
        assert stat.S_ISREG(st.st_mode)
        assert shm.exists(name)
        assert bytes(seg.buf[:]) == bytes(size)
    finally:
        seg.close()


@pytest.mark.unit
@pytest.mark.parametrize("mask", [0o000, 0o277, 0o077])
def test_create_mode_is_exactly_0600_whatever_the_umask(
    shm_name: ShmName, umask: Callable[[int], None], mask: int
) -> None:
    name = shm_name(f"mask{mask:o}")
    umask(mask)
    seg = shm.create(name, 4096)
    seg.close()
    assert os.stat(shm_path(name)).st_mode & 0o777 == 0o600


@pytest.mark.unit
def test_create_twice_raises_naming_the_segment(shm_name: ShmName) -> None:
    name = shm_name("dup")
    seg = shm.create(name, 4096)
    try:
        seg.buf[0] = 9
        with pytest.raises(SharedMemoryError, match=re.escape(repr(name))):
            shm.create(name, 4096)
        with pytest.raises(SharedMemoryError, match=re.escape(repr(name))):
            shm.create(name, 8192)
        # the failed attempts left the original alone
        assert seg.buf[0] == 9
        assert os.stat(shm_path(name)).st_size == 4096
    finally:
        seg.close()


@pytest.mark.unit
def test_shared_memory_error_is_an_os_error() -> None:
    assert issubclass(SharedMemoryError, OSError)


@pytest.mark.unit
def test_attach_missing_raises_naming_the_segment(shm_name: ShmName) -> None:
    name = shm_name("missing")
    assert not shm.exists(name)
    with pytest.raises(SharedMemoryError, match=re.escape(repr(name))):
        shm.attach(name)
    assert not shm.exists(name), "attach must never create"


@pytest.mark.unit
def test_attach_empty_segment_raises(shm_name: ShmName) -> None:
    name = shm_name("empty")
    fd = os.open(shm_path(name), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.close(fd)
    with pytest.raises(SharedMemoryError, match=re.escape(repr(name))):
        shm.attach(name)


@pytest.mark.unit
@pytest.mark.parametrize("size", [0, -1, -4096])
def test_create_non_positive_size_raises_value_error(shm_name: ShmName, size: int) -> None:
    name = shm_name("bad")
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        shm.create(name, size)
    assert not shm.exists(name)


@pytest.mark.unit
def test_write_through_one_mapping_visible_through_another(shm_name: ShmName) -> None:
    name = shm_name("two")
    size = 2 * shm.PAGE_SIZE
    a = shm.create(name, size)
    b = shm.attach(name)
    try:
        assert b.created is False
        assert b.size == size
        a.buf[100:105] = b"hello"
        assert bytes(b.buf[100:105]) == b"hello"
        b.buf[size - 3 :] = b"end"
        assert bytes(a.buf[size - 3 :]) == b"end"
        view_a = np.frombuffer(a.buf, dtype=np.uint64)
        view_b = np.frombuffer(b.buf, dtype=np.uint64)
        view_a[1000] = 0xDEADBEEF
        assert view_b[1000] == 0xDEADBEEF
        del view_a, view_b
    finally:
        b.close()
        a.close()


@pytest.mark.unit
def test_unlink_and_exists(shm_name: ShmName) -> None:
    name = shm_name("gone")
    with shm.create(name, 4096) as seg:
        assert seg.buf is not None
        assert shm.exists(name)
        seg.unlink()
        assert not shm.exists(name)
        seg.buf[0] = 1  # the memory lives on while mapped
        assert seg.buf[0] == 1
    assert shm.unlink(name) is False


@pytest.mark.unit
def test_close_twice_and_with_a_live_numpy_view(shm_name: ShmName) -> None:
    name = shm_name("close")
    seg = shm.create(name, 4096)
    view = np.frombuffer(seg.buf, dtype=np.uint8)
    seg.close()  # a view is alive: must not raise
    seg.close()
    with pytest.raises(SharedMemoryError, match=re.escape(repr(name))):
        _ = seg.buf
    # the mapping stays valid for the view that keeps it alive
    view[10] = 77
    other = shm.attach(name)
    try:
        assert other.buf[10] == 77
    finally:
        other.close()
    del view

    plain = shm.create(shm_name("close2"), 4096)
    plain.close()
    plain.close()
    with pytest.raises(SharedMemoryError):
        _ = plain.buf


@pytest.mark.unit
def test_segment_name_and_run_id() -> None:
    run_id = shm.new_run_id()
    assert re.fullmatch(rf"{os.getpid()}x[0-9a-f]{{6}}", run_id)
    assert shm.segment_name(run_id, "ring") == f"cp-{run_id}-ring"
    for bad_run, bad_part in [("1-2", "ring"), ("1/2", "ring"), ("12xab", "a/b")]:
        with pytest.raises(ValueError):
            shm.segment_name(bad_run, bad_part)


# ---------------------------------------------------------------------------
# other processes: the segment outlives an attaching process (gh-82300)

ATTACH_WITH_PIPELINE_SHM = """
    import sys

    import psutil

    from pipeline import shm

    seg = shm.attach(sys.argv[1])
    seg.buf[0:5] = b"child"
    seg.buf[len(seg.buf) - 4:] = b"tail"
    helpers = psutil.Process().children(recursive=True)
    seg.close()
    print(f"size={seg.size} helpers={len(helpers)}")
"""

ATTACH_WITH_MULTIPROCESSING = """
    import sys
    from multiprocessing import shared_memory

    mem = shared_memory.SharedMemory(sys.argv[1])  # attach: registers with the resource tracker
    mem.buf[0:5] = b"child"
    mem.close()
    print("attached and closed")
"""


@pytest.mark.integration
def test_segment_survives_unrelated_attaching_process(shm_name: ShmName) -> None:
    name = shm_name("survive")
    size = 2 * shm.PAGE_SIZE
    seg = shm.create(name, size)
    try:
        result = run_child(ATTACH_WITH_PIPELINE_SHM, name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"size={size} helpers=0", (result.stdout, result.stderr)
        assert "resource_tracker" not in result.stderr
        assert "leaked" not in result.stderr
        # the child (and anything it started) is gone, the segment is not
        assert shm.exists(name)
        assert bytes(seg.buf[0:5]) == b"child"
        assert bytes(seg.buf[size - 4 :]) == b"tail"
        # and a fresh attach still finds it
        again = shm.attach(name)
        try:
            assert bytes(again.buf[0:5]) == b"child"
        finally:
            again.close()
    finally:
        seg.close()
        seg.unlink()
    assert not shm.exists(name), "no segment leaked"


@pytest.mark.integration
@pytest.mark.skipif(
    sys.version_info >= (3, 13),
    reason="gh-82300 control: Python >= 3.13 has SharedMemory(track=...) and the bug no longer applies",
)
def test_control_multiprocessing_attach_unlinks_at_child_exit(shm_name: ShmName) -> None:
    """The bug pipeline.shm avoids: on Python < 3.13 a plain attach through
    multiprocessing.shared_memory registers the segment with the child's
    resource tracker, which unlinks it when the child exits."""
    name = shm_name("control")
    seg = shm.create(name, 4096)
    try:
        result = run_child(ATTACH_WITH_MULTIPROCESSING, name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "attached and closed"
        wait_until(
            lambda: not shm.exists(name),
            timeout_s=30,
            what=f"{name} unlinked by the child's resource tracker",
        )
        assert not shm.exists(name)
        # the child's write reached our mapping before its tracker removed the name
        assert bytes(seg.buf[0:5]) == b"child"
        # the child's resource tracker reports the "leak" it removed (captured here)
        assert "resource_tracker" in result.stderr
        assert "leaked shared_memory" in result.stderr
    finally:
        seg.close()
        shm.unlink(name)
    assert not shm.exists(name), "no segment leaked"


# ---------------------------------------------------------------------------
# runs: listing, liveness, stale cleanup


@pytest.mark.unit
def test_list_segments_parses_run_and_part(shm_name: ShmName) -> None:
    ring_name, books_name = shm_name("ring"), shm_name("books")
    run_id = run_id_of(ring_name)
    before = time.time()
    shm.create(ring_name, 4096).close()
    shm.create(books_name, 3 * 4096).close()
    segs = shm.list_segments(f"{shm.PREFIX}{run_id}-")
    assert [s.name for s in segs] == sorted([ring_name, books_name])
    by_part = {s.part: s for s in segs}
    assert set(by_part) == {"ring", "books"}
    assert by_part["ring"].size == 4096
    assert by_part["books"].size == 3 * 4096
    for s in segs:
        assert s.run_id == run_id
        assert s.mode == 0o600
        assert before - 5 <= s.ctime_s <= time.time() + 5
    everything = {s.name for s in shm.list_segments()}
    assert {ring_name, books_name} <= everything
    assert shm.list_segments(f"{shm.PREFIX}{run_id}-nothing") == []


@pytest.mark.unit
def test_run_is_alive_for_our_run() -> None:
    run_id = shm.new_run_id()
    assert shm.run_is_alive(run_id) is True
    assert shm.run_is_alive(run_id, created_s=time.time()) is True


@pytest.mark.unit
def test_run_is_alive_treats_a_younger_process_as_pid_reuse() -> None:
    # a segment made long before this process started cannot be ours
    assert (
        shm.run_is_alive(shm.new_run_id(), created_s=psutil.Process().create_time() - 3600) is False
    )


@pytest.mark.unit
@pytest.mark.parametrize("run_id", ["garbage", "", "x123", "-1xab", "abcx12"])
def test_run_is_alive_garbage(run_id: str) -> None:
    assert shm.run_is_alive(run_id) is False


@pytest.mark.integration
def test_run_is_alive_for_dead_pid() -> None:
    pid = dead_pid()
    assert shm.run_is_alive(f"{pid}xabcdef") is False
    assert shm.run_is_alive(f"{pid}x{secrets.token_hex(3)}", created_s=time.time()) is False


@pytest.mark.integration
def test_cleanup_stale_removes_dead_runs_and_keeps_live_ones(shm_name: ShmName) -> None:
    pid = dead_pid()
    dead_run = f"{pid}x{secrets.token_hex(3)}"
    dead_name = shm.segment_name(dead_run, "ring")
    dead_books = shm.segment_name(dead_run, "books")
    live_name = shm_name("ring")
    live_run = run_id_of(live_name)
    try:
        shm.create(dead_name, 4096).close()
        shm.create(dead_books, 4096).close()
        shm.create(live_name, 4096).close()

        # A live run (ours) is kept.
        assert shm.cleanup_stale(prefix=f"{shm.PREFIX}{live_run}-") == []
        assert shm.exists(live_name)

        # keep_run protects even a dead run.
        assert shm.cleanup_stale(prefix=f"{shm.PREFIX}{dead_run}-", keep_run=dead_run) == []
        assert shm.exists(dead_name) and shm.exists(dead_books)

        # A dead run's segments are removed, and their names returned.
        removed = shm.cleanup_stale(prefix=f"{shm.PREFIX}{dead_run}-")
        assert sorted(removed) == sorted([dead_name, dead_books])
        assert not shm.exists(dead_name)
        assert not shm.exists(dead_books)
        assert shm.exists(live_name)

        # Nothing left to remove the second time.
        assert shm.cleanup_stale(prefix=f"{shm.PREFIX}{dead_run}-") == []
    finally:
        shm.unlink(dead_name)
        shm.unlink(dead_books)
    assert not shm.exists(dead_name)


@pytest.mark.integration
def test_a_too_small_dev_shm_is_a_clear_error_not_a_sigbus() -> None:
    # Docker gives containers a 64 MB /dev/shm. Sizing a segment reserves
    # nothing there: the first write to a page it cannot back was a SIGBUS.
    # Here a private 4 MiB /dev/shm (a mount namespace: the host's is untouched).
    script = textwrap.dedent(
        """
        from pipeline import shm
        from pipeline.errors import SharedMemoryError
        small = shm.create("cp-smalltest-a", 1 << 20)
        try:
            shm.create("cp-smalltest-b", 16 << 20)
        except SharedMemoryError as exc:
            print("ERROR", exc)
        print("LEFT", sorted(s.name for s in shm.list_segments("cp-smalltest-")))
        """
    )
    mount = "mount -t tmpfs -o size=4m tmpfs /dev/shm"
    if os.geteuid() != 0:
        pytest.skip("a private /dev/shm (mount namespace) needs root")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", f'{mount} && exec "$0" -c "$1"', sys.executable, script],
        capture_output=True,
        timeout=60,
        check=False,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, (result.returncode, out, result.stderr.decode())
    assert "ERROR cannot create shared memory 'cp-smalltest-b' of 16,777,216 bytes" in out
    assert "/dev/shm is too small" in out and "--shm-size" in out
    assert "LEFT ['cp-smalltest-a']" in out, "the failed segment is not left behind"
