"""Pipeline configuration: TOML in, frozen dataclasses out.

Unknown keys are errors that name the key and where it is, so a typo never
silently falls back to a default. Secrets do not belong here: adapters read
them from environment variables or a 0600 file.

Example (``config/synthetic.toml``)::

    data_dir = "data"

    [ring]
    capacity = 65536          # records per feed ring (power of two)

    [wal]
    fsync = "interval"        # interval | always | rotate | never
    cpu = 1                   # core the WAL writer is pinned to (-1: no pinning)

    [book]
    depth = 20

    [[feeds]]
    name = "synthetic"
    adapter = "pipeline.synthetic:factory"
    [feeds.params]
    instruments = 50
    rate = 10000
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from pipeline import paths
from pipeline import wal as wal_mod
from pipeline.errors import ConfigError

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,14}")


@dataclass(frozen=True)
class RingConfig:
    capacity: int = 1 << 16
    """Records per feed ring; a power of two."""
    full_wait_ms: float = 5000.0
    """How long a producer waits on a full ring before dropping (and declaring
    it): long enough for a crashed consumer to be restarted and catch up."""

    def __post_init__(self) -> None:
        if self.capacity < 1024 or self.capacity & (self.capacity - 1):
            raise ConfigError(f"ring.capacity must be a power of two >= 1024, got {self.capacity}")
        if self.full_wait_ms < 0:
            raise ConfigError(f"ring.full_wait_ms must be >= 0, got {self.full_wait_ms}")


@dataclass(frozen=True)
class WalSection:
    segment_bytes: int = wal_mod.DEFAULT_SEGMENT_BYTES
    fsync: str = "interval"
    fsync_interval_ms: float = 1000.0
    cpu: int | str = "auto"
    """Core to pin the WAL writer to: a core number, "auto" (the last core this
    process may use, leaving the first to the feeds) or "none"."""

    def __post_init__(self) -> None:
        try:
            self.writer_config()
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("wal ", "wal.", 1)) from None
        if not (
            self.cpu in ("auto", "none")
            or (isinstance(self.cpu, int) and not isinstance(self.cpu, bool) and self.cpu >= 0)
        ):
            raise ConfigError(f'wal.cpu must be a core number, "auto" or "none"; got {self.cpu!r}')

    def pin_cpu(self) -> int | None:
        """The core to pin the WAL writer to, or None."""
        if self.cpu == "none":
            return None
        if self.cpu == "auto":
            cores = sorted(os.sched_getaffinity(0))
            return cores[-1] if len(cores) > 1 else None
        return int(self.cpu)

    def writer_config(self) -> wal_mod.WalConfig:
        return wal_mod.WalConfig(
            segment_bytes=self.segment_bytes,
            fsync=self.fsync,
            fsync_interval_ms=self.fsync_interval_ms,
        )


@dataclass(frozen=True)
class BookSection:
    depth: int = 20
    """Levels per side published in the shared book table."""
    max_instruments: int = 16384
    """Slots in the book table; instrument ids must be below this."""
    checkpoint_interval_s: float = 10.0
    """How often the book builder checkpoints (bounds its recovery time)."""

    def __post_init__(self) -> None:
        if not 1 <= self.depth <= 1000:
            raise ConfigError(f"book.depth must be in 1..1000, got {self.depth}")
        if not 1 <= self.max_instruments <= 1 << 22:
            raise ConfigError(
                f"book.max_instruments must be in 1..4194304, got {self.max_instruments}"
            )
        if self.checkpoint_interval_s <= 0:
            raise ConfigError(
                f"book.checkpoint_interval_s must be positive, got {self.checkpoint_interval_s}"
            )


@dataclass(frozen=True)
class SupervisorSection:
    heartbeat_timeout_s: float = 10.0
    """A child silent for this long is killed and restarted."""
    restart_backoff_ms: float = 250.0
    """First restart delay; doubles per consecutive crash."""
    restart_backoff_max_ms: float = 10_000.0
    stable_after_s: float = 30.0
    """A child running this long is healthy again: its backoff resets."""
    drain_timeout_s: float = 30.0
    """On stop, how long consumers get to empty the rings."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ConfigError(
                    f"supervisor.{f.name} must be positive, got {getattr(self, f.name)}"
                )


@dataclass(frozen=True)
class FeedConfig:
    name: str
    """Feed name: names the ring, the process (``ingest:<name>``) and the WAL source."""
    adapter: str
    """``package.module:factory`` - called in the ingest process with (params, context)."""
    src: int = 0
    """Source id (1..255) in every record and in the WAL; 0: assigned by position."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """Adapter-specific parameters; the adapter rejects keys it does not know."""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"feeds: name {self.name!r} must be 1-15 characters of a-z, 0-9, '-' or '_', starting with a letter or digit"
            )
        if ":" not in self.adapter:
            raise ConfigError(
                f"feeds.{self.name}.adapter must look like 'package.module:factory', got {self.adapter!r}"
            )
        if not 0 <= self.src <= 255:
            raise ConfigError(f"feeds.{self.name}.src must be in 1..255, got {self.src}")


@dataclass(frozen=True)
class ServiceConfig:
    """A helper process the feeds need, run by the supervisor before them and
    stopped after them (e.g. a loopback venue simulator for a demo or a test)."""

    name: str
    target: str
    """``package.module:function`` called as ``function(params, context)``; it
    serves until ``context.stopping()`` and calls ``context.ready()`` once up."""
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError(
                f"services: name {self.name!r} must be 1-15 characters of a-z, 0-9, '-' or '_'"
            )
        if ":" not in self.target:
            raise ConfigError(
                f"services.{self.name}.target must look like 'package.module:function'"
            )


@dataclass(frozen=True)
class Config:
    data_dir: Path = Path("data")
    ring: RingConfig = field(default_factory=RingConfig)
    wal: WalSection = field(default_factory=WalSection)
    book: BookSection = field(default_factory=BookSection)
    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    feeds: tuple[FeedConfig, ...] = ()
    services: tuple[ServiceConfig, ...] = ()
    source: str = "<defaults>"
    """Where this configuration came from (for messages)."""

    def feed(self, name: str) -> FeedConfig:
        for f in self.feeds:
            if f.name == name:
                return f
        raise ConfigError(
            f"no feed named {name!r} in {self.source} (feeds: {', '.join(f.name for f in self.feeds)})"
        )


T = TypeVar("T")


def _section(cls: type[T], raw: Any, where: str) -> T:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown key {where}.{key} (known: {', '.join(sorted(known))})")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        expected = known[key].type
        default = known[key].default
        if isinstance(expected, str) and "|" in expected:
            ok = True  # a union: the dataclass validates it
        elif isinstance(default, bool) or expected in ("bool",):
            ok = isinstance(value, bool)
        elif isinstance(default, float) or expected == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif isinstance(default, int) or expected == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, str) or expected == "str":
            ok = isinstance(value, str)
        else:
            ok = True
        if not ok:
            raise ConfigError(f"{where}.{key} has the wrong type: {value!r}")
        values[key] = value
    return cls(**values)


def load(path: str | Path, *, data_dir: str | Path | None = None) -> Config:
    """Read and validate a TOML config. ``data_dir`` overrides the file's."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return from_dict(raw, source=str(path), data_dir=data_dir)


def from_dict(
    raw: Mapping[str, Any],
    *,
    source: str = "<dict>",
    data_dir: str | Path | None = None,
) -> Config:
    """Validate an already-parsed configuration (tests and tools build these)."""
    top = {"data_dir", "ring", "wal", "book", "supervisor", "feeds", "services"}
    for key in raw:
        if key not in top:
            raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(top))})")
    try:
        feeds_raw = raw.get("feeds", [])
        if not isinstance(feeds_raw, list):
            raise ConfigError("feeds must be an array of tables ([[feeds]])")
        feeds = []
        for i, feed in enumerate(feeds_raw):
            if not isinstance(feed, Mapping):
                raise ConfigError(f"feeds[{i}] must be a table")
            for key in feed:
                if key not in {"name", "adapter", "src", "params"}:
                    raise ConfigError(
                        f"unknown key feeds[{i}].{key} (known: adapter, name, params, src)"
                    )
            for key in ("name", "adapter"):
                if not isinstance(feed.get(key), str):
                    raise ConfigError(f"feeds[{i}].{key} is required and must be a string")
            src = feed.get("src", i + 1)
            if not isinstance(src, int) or isinstance(src, bool):
                raise ConfigError(f"feeds[{i}].src must be an integer")
            params = feed.get("params", {})
            if not isinstance(params, Mapping):
                raise ConfigError(f"feeds[{i}].params must be a table")
            feeds.append(FeedConfig(feed["name"], feed["adapter"], src or i + 1, dict(params)))
        services = _services(raw.get("services", []))
        names = [f.name for f in feeds]
        if len(set(names)) != len(names):
            raise ConfigError(f"feed names must be unique: {names}")
        srcs = [f.src for f in feeds]
        if len(set(srcs)) != len(srcs):
            raise ConfigError(f"feed src ids must be unique: {srcs}")
        file_dir = raw.get("data_dir")
        if file_dir is not None and not isinstance(file_dir, str):
            raise ConfigError("data_dir must be a string")
        # Same order for every command: --data-dir, then the environment, then the file, then ./data.
        if data_dir is not None or os.environ.get(paths.ENV_DATA_DIR) or file_dir is None:
            directory = paths.data_dir(data_dir)
        else:
            directory = Path(file_dir)
        return Config(
            data_dir=directory,
            ring=_section(RingConfig, raw.get("ring", {}), "ring"),
            wal=_section(WalSection, raw.get("wal", {}), "wal"),
            book=_section(BookSection, raw.get("book", {}), "book"),
            supervisor=_section(SupervisorSection, raw.get("supervisor", {}), "supervisor"),
            feeds=tuple(feeds),
            services=services,
            source=source,
        )
    except ConfigError as exc:
        if str(exc).startswith(source):
            raise
        raise ConfigError(f"{source}: {exc}") from None


def _services(raw: Any) -> tuple[ServiceConfig, ...]:
    if not isinstance(raw, list):
        raise ConfigError("services must be an array of tables ([[services]])")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise ConfigError(f"services[{i}] must be a table")
        for key in item:
            if key not in {"name", "target", "params"}:
                raise ConfigError(f"unknown key services[{i}].{key} (known: name, params, target)")
        for key in ("name", "target"):
            if not isinstance(item.get(key), str):
                raise ConfigError(f"services[{i}].{key} is required and must be a string")
        params = item.get("params", {})
        if not isinstance(params, Mapping):
            raise ConfigError(f"services[{i}].params must be a table")
        out.append(ServiceConfig(item["name"], item["target"], dict(params)))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"service names must be unique: {names}")
    return tuple(out)


def replace(config: Config, **changes: Any) -> Config:
    """A copy with some top-level fields changed."""
    return dataclasses.replace(config, **changes)
