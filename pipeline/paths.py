"""Where things live on disk. Every command finds the data dir the same way."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

ENV_DATA_DIR: Final = "CONNECTOR_PIPELINE_DATA_DIR"


def data_dir(option: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` if given, else ``$CONNECTOR_PIPELINE_DATA_DIR``, else ``./data``."""
    if option:
        return Path(option)
    env = os.environ.get(ENV_DATA_DIR)
    return Path(env) if env else Path("data")


def market_wal_dir(root: Path) -> Path:
    return root / "market_data_wal"


def instruments_wal_dir(root: Path) -> Path:
    return root / "instruments_wal"


def run_dir(root: Path) -> Path:
    return root / "run"


def published_instruments(root: Path, feed: str | None = None) -> Path:
    """Where the running ingest process of ``feed`` publishes its instrument
    ids and symbols for readers (JSON ``{"id": "symbol"}``); without ``feed``,
    the folder of them all."""
    folder = run_dir(root) / "instruments"
    return folder if feed is None else folder / f"{feed}.json"


class LockHeld(Exception):
    """Another live process holds the lock; ``holder`` is the pid it wrote."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by pid {holder}")
        self.holder = holder


def pid_lock(path: Path) -> int:
    """Take an exclusive lock on ``path`` (created 0600) and write our pid in it.

    Returns the open descriptor: the lock lasts until it is closed or the
    process dies (so a SIGKILL never leaves a stale lock behind).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise LockHeld(path, holder) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
