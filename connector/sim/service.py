"""Simulators as pipeline services: ``[[services]] target = "connector.sim.service:binance"``.

The supervisor starts services before the feeds and stops them after, so a
demo or a test runs the whole product against a loopback venue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from pipeline.errors import ConfigError
from pipeline.processes import ServiceContext

_BINANCE_PARAMS: dict[str, type | tuple[type, ...]] = {
    "port": int,
    "market": str,
    "symbols": list,
    "n_symbols": int,
    "rate": (int, float),
    "seed": int,
    "depth_levels": int,
    "lifetime_s": (int, float),
    "ping_interval_s": (int, float),
    "faults": str,
}


def binance(params: Mapping[str, Any], context: ServiceContext) -> None:
    """Run a Binance simulator on 127.0.0.1 until the supervisor stops it."""
    from connector.sim.binance import BinanceSimulator
    from pipeline.adapter import check_params

    check_params(params, _BINANCE_PARAMS, "service")
    if "port" not in params:
        raise ConfigError("services.params.port is required: the feeds' URLs name it")

    asyncio.run(serve_as_service(lambda: BinanceSimulator(**params), context))


async def serve_as_service(
    make_sim: Callable[[], Any],
    context: ServiceContext,
    after_start: Callable[[Any], object] | None = None,
) -> None:
    """Make and start a simulator (on the running loop), call ``after_start(sim)``,
    report ready, run until the supervisor asks to stop, then stop it."""
    sim = make_sim()
    await sim.start()
    if after_start is not None:
        after_start(sim)
    context.ready()
    try:
        while not context.stopping():
            await asyncio.sleep(0.1)  # poll the stop flag; the simulator runs on this loop
    finally:
        await sim.stop()
