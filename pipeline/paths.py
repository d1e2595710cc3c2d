"""Where things live on disk. Every command finds the data dir the same way."""

from __future__ import annotations

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
