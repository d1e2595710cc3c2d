"""Zerodha Kite errors, under the project's tree (:mod:`pipeline.errors`).

What a caller can do decides where each one sits:

* :class:`KiteAuthError` (fatal): the venue refused who we are - wrong
  password, wrong TOTP, an expired or revoked token, a bad API secret. A
  human fixes the credentials; retrying the same ones will not help (a
  :class:`TokenExpired` is the exception: a fresh login fixes it, and the
  feed does that when it holds credentials).
* :class:`KiteNetworkError` (retryable): the venue could not be reached or
  answered 5xx / 429; try again later.
* :class:`KiteApiError` (fatal): any other refusal (an ``InputException`` on
  a field, an unexpected answer): the message says which call and why.

Messages name the step, the user id and the venue's own message; they never
carry a password, TOTP secret or value, API secret, request token or access
token (tests check this).
"""

from __future__ import annotations

from pipeline.errors import ConfigError, FatalError, RetryableError


class KiteAuthError(FatalError):
    """The venue refused the credentials or the session."""


class WrongPassword(KiteAuthError):
    """``/api/login`` refused the user id or the password."""


class WrongTotp(KiteAuthError):
    """``/api/twofa`` refused the TOTP (wrong secret, or a clock far off)."""


class TokenExpired(KiteAuthError):
    """A request token or access token is invalid or expired (HTTP 403 ``TokenException``)."""


class BadApiSecret(KiteAuthError):
    """``/session/token`` refused the checksum: the API secret does not match the API key."""


class KiteLoginFlowError(KiteAuthError):
    """The login pages answered something the automated flow does not know
    (no ``request_id``, no redirect carrying ``request_token``...)."""


class MissingCredentials(ConfigError):
    """A ``ZERODHA_*`` environment variable is missing (the message names which)."""


class KiteApiError(FatalError):
    """Any other error answer of the Kite API (message: the call, HTTP status, error_type)."""


class KiteNetworkError(RetryableError):
    """The venue could not be reached, timed out, or answered 5xx / 429."""
