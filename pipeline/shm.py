"""Named POSIX shared-memory segments, created 0600, attached without the resource tracker.

Why not :class:`multiprocessing.shared_memory.SharedMemory` as it is: on
Python 3.11 and 3.12 every *attach* registers the segment with the attaching
process's resource tracker, which unlinks it when that process exits
(cpython gh-82300): a ``tail`` command would destroy the ring it read. This
module opens segments with the same ``shm_open`` call but registers nothing;
whoever creates a segment owns it and unlinks it. Segments of runs whose
creator died are found by name (``cp-<run-id>-<part>``, the run id starts with
the creator's pid) and removed by :func:`cleanup_stale`.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from pipeline.errors import SharedMemoryError

try:  # The C module behind multiprocessing.shared_memory on POSIX.
    import _posixshmem  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - non-POSIX platforms are not supported
    _posixshmem = None

PREFIX: Final = "cp-"
PAGE_SIZE: Final = mmap.PAGESIZE
_SHM_DIR: Final = Path("/dev/shm")


def new_run_id() -> str:
    """A run id: the creator's pid, ``x``, and random hex (no ``-``: it separates name parts)."""
    return f"{os.getpid()}x{secrets.token_hex(3)}"


def segment_name(run_id: str, part: str) -> str:
    """The segment name of one part (a ring, ``books``) of one run."""
    if "-" in run_id or "/" in run_id or "/" in part:
        raise ValueError(f"bad run id or part for a segment name: {run_id!r}, {part!r}")
    return f"{PREFIX}{run_id}-{part}"


class Segment:
    """One mapped segment. ``buf`` is the writable mapping; views of it must be
    released before :meth:`close` (numpy arrays keep the mapping alive)."""

    def __init__(self, name: str, mapping: mmap.mmap, created: bool) -> None:
        self.name = name
        self.size = len(mapping)
        self.created = created
        self._mmap: mmap.mmap | None = mapping

    @property
    def buf(self) -> mmap.mmap:
        if self._mmap is None:
            raise SharedMemoryError(f"shared memory {self.name!r} is closed")
        return self._mmap

    def close(self) -> None:
        """Unmap. Safe to call twice. If numpy views still exist the mapping is
        left for the garbage collector (it is freed with the last view)."""
        mapping, self._mmap = self._mmap, None
        if mapping is not None:
            with contextlib.suppress(BufferError):
                mapping.close()

    def unlink(self) -> None:
        """Remove the name (the memory lives until every process unmaps it)."""
        unlink(self.name)

    def __enter__(self) -> Segment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, size={self.size})"


def _require_posix() -> None:
    if _posixshmem is None:  # pragma: no cover
        raise SharedMemoryError("POSIX shared memory is not available on this platform")


def create(name: str, size: int, *, pretouch: bool = True) -> Segment:
    """Create a new segment of ``size`` bytes, mode 0600, zero-filled.

    ``pretouch`` writes one byte per page so first-touch page faults happen
    here, not on the hot path (they cost about 10x a warm write).
    """
    _require_posix()
    if size <= 0:
        raise ValueError(f"shared memory {name!r}: size must be positive, got {size}")
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    except FileExistsError:
        raise SharedMemoryError(f"shared memory {name!r} already exists") from None
    except OSError as exc:
        raise SharedMemoryError(f"cannot create shared memory {name!r}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # the umask may have narrowed it; never wider than 0600
        _reserve(fd, name, size)
        mapping = mmap.mmap(fd, size)
    except OSError as exc:
        os.close(fd)
        unlink(name)
        if isinstance(exc, SharedMemoryError):
            raise
        raise SharedMemoryError(
            f"cannot size shared memory {name!r} to {size} bytes: {exc}"
        ) from None
    os.close(fd)
    if pretouch:
        np.frombuffer(mapping, dtype=np.uint8)[::PAGE_SIZE] = 0
    return Segment(name, mapping, created=True)


def _reserve(fd: int, name: str, size: int) -> None:
    """Size the segment and reserve its memory now. ``ftruncate`` alone
    reserves nothing: on a full ``/dev/shm`` (Docker gives containers 64 MB)
    the first write to a missing page kills the process with SIGBUS."""
    free = _shm_free_bytes()
    if free is not None and size > free:
        raise SharedMemoryError(_no_room(name, size, free))
    os.ftruncate(fd, size)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise SharedMemoryError(_no_room(name, size, _shm_free_bytes())) from None
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: pretouch only
            raise


def _shm_free_bytes() -> int | None:
    try:
        st = os.statvfs(_SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _no_room(name: str, size: int, free: int | None) -> str:
    left = "" if free is None else f" ({free:,} bytes free)"
    return (
        f"cannot create shared memory {name!r} of {size:,} bytes: {_SHM_DIR} is too small{left}; "
        "make it larger (docker run --shm-size=...) or lower ring.capacity / book.max_instruments"
    )


def attach(name: str) -> Segment:
    """Map an existing segment read-write, without registering it anywhere."""
    _require_posix()
    try:
        fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    except FileNotFoundError:
        raise SharedMemoryError(
            f"shared memory {name!r} does not exist (is the pipeline running?)"
        ) from None
    except PermissionError:
        raise SharedMemoryError(f"no permission to open shared memory {name!r}") from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise SharedMemoryError(f"shared memory {name!r} is empty (being created?)")
        mapping = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    return Segment(name, mapping, created=False)


def unlink(name: str) -> bool:
    """Remove a segment name; False if it did not exist."""
    _require_posix()
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def exists(name: str) -> bool:
    """Whether a segment of this name exists."""
    return (_SHM_DIR / name).exists()


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    run_id: str
    part: str
    size: int
    ctime_s: float
    mode: int


def list_segments(prefix: str = PREFIX) -> list[SegmentInfo]:
    """Segments whose names start with ``prefix`` (Linux: read from /dev/shm)."""
    out: list[SegmentInfo] = []
    if not _SHM_DIR.is_dir():
        return out
    for entry in os.scandir(_SHM_DIR):
        if not entry.name.startswith(prefix):
            continue
        rest = entry.name[len(PREFIX) :] if entry.name.startswith(PREFIX) else entry.name
        run_id, _, part = rest.partition("-")
        try:
            st = entry.stat()
        except FileNotFoundError:
            continue
        out.append(
            SegmentInfo(entry.name, run_id, part, st.st_size, st.st_ctime, stat.S_IMODE(st.st_mode))
        )
    return sorted(out, key=lambda s: s.name)


def run_is_alive(run_id: str, created_s: float | None = None) -> bool:
    """Whether the process that created run ``run_id`` still runs.

    The pid comes from the run id; if ``created_s`` (the segment's ctime) is
    given, a process that started after it is a reused pid, not the creator.
    """
    pid_text = run_id.partition("x")[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return not (created_s is not None and proc.create_time() > created_s + 1.0)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # AccessDenied (restricted /proc): never delete what may be alive
        return True


def cleanup_stale(prefix: str = PREFIX, keep_run: str | None = None) -> list[str]:
    """Unlink every segment whose creating run is dead. Returns the names removed."""
    removed: list[str] = []
    for seg in list_segments(prefix):
        if seg.run_id == keep_run or run_is_alive(seg.run_id, seg.ctime_s):
            continue
        if unlink(seg.name):
            removed.append(seg.name)
    return removed
