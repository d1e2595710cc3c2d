"""Shared test fixtures: unique shared-memory names cleaned up after each
test, child processes killed after each test, and the recorded fixtures."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline import shm

SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


def shared_fixture(relative: str) -> Path:
    """A file under ../shared/fixtures, or skip the test saying what is missing."""
    path = SHARED_FIXTURES / relative
    if not path.exists():
        pytest.skip(
            f"recorded fixture {path} is not available (needs ../shared/fixtures next to the checkout)"
        )
    return path


@pytest.fixture
def shm_name() -> Iterator[Callable[[str], str]]:
    """Factory of unique segment names; every segment of this test is unlinked afterwards."""
    run_id = shm.new_run_id()

    def make(part: str) -> str:
        return shm.segment_name(run_id, part)

    yield make
    for seg in shm.list_segments(f"{shm.PREFIX}{run_id}-"):
        shm.unlink(seg.name)


class Children:
    """Every process a test starts, killed (SIGKILL) and reaped at teardown."""

    def __init__(self) -> None:
        self.ctx = mp.get_context("spawn")
        self.procs: list[mp.process.BaseProcess] = []
        self.popens: list[subprocess.Popen[bytes]] = []

    def spawn(self, target: Callable[..., object], *args: object) -> mp.process.BaseProcess:
        proc = self.ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        self.procs.append(proc)
        return proc

    def popen(self, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, **kwargs)  # type: ignore[call-overload]
        self.popens.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=10)
        for p in self.popens:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=10)
            for stream in (p.stdin, p.stdout, p.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def children() -> Iterator[Children]:
    kids = Children()
    try:
        yield kids
    finally:
        kids.cleanup()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB filesystem (tmpfs) to fill up; unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a disk that really fills up) needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(disk)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
