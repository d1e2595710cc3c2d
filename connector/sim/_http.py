"""Small HTTP helpers for simulators that answer plain GETs through
websockets' ``process_request`` hook (REST and WebSocket on one port).

websockets parses the request line and headers only; a response returned
from ``process_request`` is written as is and the connection is closed after
it (``Connection: close``), so every REST call is one short TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response


def loopback_host(host: str) -> str:
    """``host`` if it is a loopback address (``localhost`` becomes 127.0.0.1),
    else ValueError: the simulators must never be reachable from another machine."""
    if host == "localhost":
        # Binding "localhost" can open both 127.0.0.1 and ::1, each with its
        # own ephemeral port; one address keeps the port unambiguous.
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host {host!r} is not an IP address; use 127.0.0.1") from None
    if not address.is_loopback:
        raise ValueError(
            f"host {host!r} is not a loopback address; the simulator only serves 127.0.0.1"
        )
    return host


def is_upgrade(request: Request) -> bool:
    """The request asks for a WebSocket (not a plain REST GET)."""
    return "websocket" in request.headers.get("Upgrade", "").lower()


def split_path(request: Request) -> tuple[str, dict[str, str]]:
    """The path and its query parameters (the first value of each)."""
    parts = urlsplit(request.path)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return parts.path, query


def response(
    status: int,
    body: bytes,
    *,
    content_type: str = "application/json;charset=UTF-8",
    headers: Iterable[tuple[str, str]] = (),
) -> Response:
    """A complete HTTP response (the connection closes after it)."""
    status_enum = http.HTTPStatus(status)
    all_headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            *headers,
        ]
    )
    return Response(status_enum.value, status_enum.phrase, all_headers, body)


def json_response(
    status: int, payload: object, *, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """A JSON response; ``payload`` may be pre-encoded bytes."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return response(status, body, headers=headers)


class _Simulator(Protocol):
    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, *exc: object) -> Any: ...


S = TypeVar("S", bound=_Simulator)


async def serve_until_stopped(
    sim: S, ready: Callable[[S], Awaitable[None] | None] | None = None
) -> None:
    """Run a simulator until the task is cancelled (Ctrl-C under asyncio.run) or SIGTERM."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    try:
        async with sim:
            if ready is not None:
                result = ready(sim)
                if result is not None:
                    await result
            await stop.wait()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
