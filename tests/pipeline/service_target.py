"""A service for the runtime tests: records when it started and stopped."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.processes import ServiceContext


def run(params: Mapping[str, Any], context: ServiceContext) -> None:
    log = Path(params["log"])
    with log.open("a") as f:
        f.write(f"started {time.time_ns()}\n")
    context.ready()
    while not context.stopping():
        time.sleep(0.01)  # poll interval of the stop flag
    with log.open("a") as f:
        f.write(f"stopped {time.time_ns()}\n")
