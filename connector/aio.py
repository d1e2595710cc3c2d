"""Small asyncio helpers shared by the venue clients.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation that arrives
while its timeout expires (cpython gh-86296, fixed in 3.12); a feed whose
shutdown cancel is swallowed never stops. The clients therefore use
``asyncio.timeout`` (which counts cancellations correctly) via these helpers,
and cancel their tasks with :func:`cancel_all`, which insists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


async def with_timeout(awaitable: Awaitable[T], timeout_s: float) -> T:
    """``await awaitable`` or raise ``TimeoutError`` after ``timeout_s``; cancellation-safe."""
    async with asyncio.timeout(timeout_s):
        return await awaitable


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until ``event`` is set or ``timeout_s`` passes; True if it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()
    return event.is_set()


async def cancel_all(tasks: Sequence[asyncio.Future[Any]], owner: str) -> None:
    """Cancel ``tasks`` and wait until they are done, cancelling again if one ignores it."""
    pending = list(tasks)
    for _attempt in range(100):
        pending = [t for t in pending if not t.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)
    log.error("%s: %d tasks ignored cancellation; leaving them", owner, len(pending))
