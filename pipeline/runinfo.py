"""``data/run/pipeline.json``: how a running pipeline is found by other processes.

Written by the supervisor (mode 0600) when a run starts and removed when it
stops; ``tail``, ``book``, ``status`` and ``stop`` read it to find the run's
shared-memory segments by feed name.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline import paths
from pipeline.errors import PipelineError

FILE_NAME = "pipeline.json"


@dataclass(frozen=True)
class FeedInfo:
    name: str
    src: int
    ring: str


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    pid: int
    data_dir: str
    started_ns: int
    config: str
    feeds: list[FeedInfo]
    books: str
    book_depth: int
    processes: str
    process_names: list[str] = field(default_factory=list)

    @property
    def wal_dir(self) -> Path:
        return paths.market_wal_dir(Path(self.data_dir))

    def feed(self, name: str | None) -> FeedInfo:
        if name is None:
            if len(self.feeds) == 1:
                return self.feeds[0]
            raise PipelineError(
                f"this run has several feeds; choose one with --feed ({', '.join(f.name for f in self.feeds)})"
            )
        for f in self.feeds:
            if f.name == name:
                return f
        raise PipelineError(
            f"no feed {name!r} in this run (feeds: {', '.join(f.name for f in self.feeds)})"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def path_for(data_dir: Path) -> Path:
    return paths.run_dir(data_dir) / FILE_NAME


def write(info: RunInfo) -> Path:
    path = path_for(Path(info.data_dir))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(info.as_dict(), option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
    return path


def read(data_dir: Path) -> RunInfo | None:
    """The run recorded in ``data_dir``, or None (it may be dead: check ``pid``)."""
    try:
        raw = orjson.loads(path_for(data_dir).read_bytes())
    except FileNotFoundError:
        return None
    except orjson.JSONDecodeError as exc:
        raise PipelineError(f"{path_for(data_dir)} is damaged: {exc}") from None
    raw["feeds"] = [FeedInfo(**f) for f in raw["feeds"]]
    return RunInfo(**raw)


def require(data_dir: Path) -> RunInfo:
    """The live run of ``data_dir`` or a clear error saying there is none."""
    info = read(data_dir)
    if info is None:
        raise PipelineError(
            f"no pipeline is running on {data_dir} (no {path_for(data_dir)}); start one with `connector-pipeline start`"
        )
    from pipeline.shm import run_is_alive

    if not run_is_alive(info.run_id):
        raise PipelineError(
            f"the pipeline recorded in {path_for(data_dir)} (pid {info.pid}) is not running"
        )
    return info


def remove(data_dir: Path) -> None:
    path_for(data_dir).unlink(missing_ok=True)
