"""The exception tree, in one place, shaped by what a caller can do about it.

* :class:`RetryableError` - try again later (network, 5xx, 429, a busy resource).
* :class:`FatalError` - retrying will not help (bad config, auth refused,
  an unusable data directory): stop and tell the user.
* :class:`DataError` - one piece of input is bad (an undecodable frame, a
  corrupt WAL frame): count it, report it once per kind, skip it, go on.

Venue packages add their own subclasses under these three.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error this project raises on purpose."""


class RetryableError(PipelineError):
    """Transient: the same call may succeed later."""


class FatalError(PipelineError):
    """Permanent: needs a human (config, credentials, environment)."""


class DataError(PipelineError, ValueError):
    """Bad input data: counted and skipped by long-running processes."""


class ConfigError(FatalError):
    """A configuration file or option is wrong; the message names the key."""


class SharedMemoryError(PipelineError, OSError):
    """A shared-memory segment cannot be created or attached."""


class RingError(PipelineError):
    """A ring cannot be used as asked (message says which ring and why)."""


class WalError(PipelineError):
    """The write-ahead log cannot be used as asked."""


class WalLockedError(WalError, RetryableError):
    """Another process holds the WAL directory's writer lock."""


class WalFullError(WalError, RetryableError):
    """No disk space for the WAL's next segment. What was appended before is
    written; the call that raised wrote nothing more: call it again when
    there is room (already logged sequences are skipped)."""


class WalCorruptError(WalError, DataError):
    """WAL bytes fail their checks; the message names the file and offset."""
