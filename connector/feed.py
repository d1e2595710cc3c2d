"""What every venue feed shares: its configuration and its reconnect policy.

The policy is pure (attempt number and a random source in, delay out) so
it is tested without sockets or clocks.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class FeedConfig:
    """The venue-independent part of a feed's configuration."""

    name: str
    ws_url: str
    symbol_map: Mapping[str, int] = field(default_factory=dict)
    """Venue symbol -> instrument id (the ``inst`` of its records)."""
    max_reconnects: int = 0
    """Consecutive failed connection attempts before giving up (0: never give up)."""
    reconnect_delay_ms: float = 250.0
    """First reconnect delay; doubles per consecutive failure, with jitter."""
    reconnect_max_ms: float = 30_000.0
    silence_timeout_s: float = 30.0
    """No frame (data or ping) for this long: the connection is presumed dead."""

    def __post_init__(self) -> None:
        if not self.ws_url.startswith(("ws://", "wss://")):
            raise ConfigError(
                f"feeds.{self.name}.ws_url must start with ws:// or wss://, got {self.ws_url!r}"
            )
        if self.max_reconnects < 0:
            raise ConfigError(f"feeds.{self.name}.max_reconnects must be >= 0")
        if self.reconnect_delay_ms <= 0 or self.reconnect_max_ms < self.reconnect_delay_ms:
            raise ConfigError(f"feeds.{self.name}: need 0 < reconnect_delay_ms <= reconnect_max_ms")
        if self.silence_timeout_s <= 0:
            raise ConfigError(f"feeds.{self.name}.silence_timeout_s must be positive")


@dataclass
class ReconnectPolicy:
    """Exponential backoff with "equal jitter": the delay after the n-th
    consecutive failure is uniform in [d/2, d] with d = base * 2**(n-1), capped.
    Jitter keeps many clients (or many connections of one client) from
    reconnecting in lockstep after a venue-wide disconnect."""

    base_ms: float = 250.0
    max_ms: float = 30_000.0
    max_attempts: int = 0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    @classmethod
    def from_config(cls, config: FeedConfig, seed: int | None = None) -> ReconnectPolicy:
        return cls(
            config.reconnect_delay_ms,
            config.reconnect_max_ms,
            config.max_reconnects,
            random.Random(seed),
        )

    def failed(self) -> float | None:
        """Record a failure; the seconds to wait before the next attempt, or None to give up."""
        self.failures += 1
        if self.max_attempts and self.failures > self.max_attempts:
            return None
        capped = min(self.base_ms * 2 ** (self.failures - 1), self.max_ms)
        return self.rng.uniform(capped / 2, capped) / 1000

    def succeeded(self) -> None:
        """A connection worked: the next failure starts from the base delay again."""
        self.failures = 0
