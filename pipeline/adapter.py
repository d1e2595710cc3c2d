"""What the ingest host expects of a feed adapter.

An adapter turns one venue connection (or a simulator, or the synthetic
source) into batches of 64-byte records. The host imports it by the
``package.module:factory`` string in the config and calls
``factory(params, context)`` inside the ingest process; the adapter then
yields record batches from :meth:`Adapter.records`. The host stamps ``src``
and ``seq``, publishes to the feed's ring, heartbeats and counts.

An adapter sets every other field, including ``ts_recv`` (when the wire
frame arrived) and LAST on the last record of each wire message, and emits
STATUS records for what happens to its connection (connected, gaps,
resyncs). Library use needs no host: ``async for batch in adapter.records()``.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import ConfigError
from pipeline.record import Records


@dataclass(frozen=True)
class AdapterContext:
    """What the host tells an adapter about where it runs."""

    feed: str
    src: int
    data_dir: Path
    max_instruments: int | None = None
    """Slots of the book table (instrument ids 0 .. max_instruments - 1); None
    outside a pipeline run (library use)."""


def check_instrument_ids(feed: str, instruments: Mapping[int, str], max_instruments: int) -> None:
    """Every id an adapter publishes must have a book-table slot: a ConfigError
    naming the feed, the instrument and the fix, rather than books that never fill."""
    beyond = [i for i in instruments if not 0 <= i < max_instruments]
    if beyond:
        worst = max(beyond)
        raise ConfigError(
            f"feeds.{feed}: instrument {instruments[worst]!r} has id {worst}, but the book "
            f"table has {max_instruments} slots (ids 0..{max_instruments - 1}); raise [book] "
            f"max_instruments above {worst} or give the feed lower ids"
        )


class Adapter(Protocol):
    def records(self) -> AsyncIterator[Records]:
        """Record batches, forever (or until the source ends)."""
        ...

    def instruments(self) -> Mapping[int, str]:
        """Instrument id -> symbol for what this adapter publishes (for readers)."""
        ...


Factory = Callable[[Mapping[str, Any], AdapterContext], Adapter]


def load_factory(spec: str) -> Factory:
    """Import ``package.module:factory``; errors name the spec and what is wrong."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"adapter {spec!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"adapter {spec!r}: cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"adapter {spec!r}: {module_name} has no callable {attr!r}")
    return factory  # type: ignore[no-any-return]


def check_params(
    params: Mapping[str, Any], known: Mapping[str, type | tuple[type, ...]], feed: str
) -> None:
    """Reject unknown or mistyped adapter parameters with a message naming the key."""
    for key, value in params.items():
        if key not in known:
            raise ConfigError(
                f"feeds.{feed}.params: unknown key {key!r} (known: {', '.join(sorted(known))})"
            )
        expected = known[key]
        if isinstance(value, bool) and expected is not bool:
            raise ConfigError(f"feeds.{feed}.params.{key} has the wrong type: {value!r}")
        if not isinstance(value, expected):
            raise ConfigError(f"feeds.{feed}.params.{key} has the wrong type: {value!r}")
