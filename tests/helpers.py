"""Small helpers for tests: waiting on conditions, deterministic payloads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from pipeline import record as rec


def wait_until(
    condition: Callable[[], object], timeout_s: float = 30.0, what: str = "condition"
) -> object:
    """Poll ``condition`` until it is truthy; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(delay)  # poll interval of a condition wait, not a fixed sleep
        delay = min(delay * 2, 0.05)


T = TypeVar("T")


async def until(
    condition: Callable[[], object], timeout_s: float = 10.0, what: str = "condition"
) -> None:
    """``wait_until`` on the running event loop: poll ``condition``, fail after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.005)  # poll interval of a condition wait, not a fixed sleep


def run_bounded(coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
    """Run one async scenario on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


_MIX = np.uint64(0x9E3779B97F4A7C15)


def payload_px(seq: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """A deterministic, seq-dependent price: any misplaced byte shows."""
    with np.errstate(over="ignore"):
        return ((seq.astype(np.uint64) * _MIX) >> np.uint64(1)).astype(np.int64)


def make_records(first_seq: int, n: int, src: int = 1) -> rec.Records:
    """Records with seq first..first+n-1 and payload fields derived from seq."""
    out = rec.empty(n)
    seq = np.arange(first_seq, first_seq + n, dtype=np.uint64)
    out["seq"] = seq
    out["src"] = src
    out["kind"] = rec.Kind.TRADE
    out["px"] = payload_px(seq)
    out["qty"] = seq.astype(np.int64) * 3
    out["aux"] = -seq.astype(np.int64)
    out["ts_recv"] = seq.astype(np.int64) + 1_700_000_000_000_000_000
    out["flags"] = rec.Flag.LAST
    return out


def payload_ok(batch: rec.Records) -> bool:
    """Every record's payload matches its seq."""
    seq = batch["seq"]
    return bool(
        np.array_equal(batch["px"], payload_px(seq))
        and np.array_equal(batch["qty"], seq.astype(np.int64) * 3)
        and np.array_equal(batch["aux"], -seq.astype(np.int64))
    )
