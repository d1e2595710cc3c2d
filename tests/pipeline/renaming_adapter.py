"""An adapter for the runtime tests whose instruments change while it runs
(as a Kite feed's do when it follows a new day's contracts): the synthetic
source, renamed once the file ``rename_when`` exists, with
``instruments_version`` bumped so the host re-publishes the names for readers
(the ids moved by ``shift_ids``, to try ids beyond the book table)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from pipeline.adapter import AdapterContext
from pipeline.record import Records
from pipeline.synthetic import factory as synthetic_factory


class Renaming:
    def __init__(self, params: Mapping[str, Any], context: AdapterContext) -> None:
        p = dict(params)
        self.rename_when = Path(p.pop("rename_when"))
        self.shift = int(p.pop("shift_ids", 0))
        self.source = synthetic_factory(p, context)
        self.instruments_version = 0

    def instruments(self) -> dict[int, str]:
        names = self.source.instruments()
        if self.instruments_version:
            return {i + self.shift: f"NEXTDAY:{n}" for i, n in names.items()}
        return names

    async def records(self) -> AsyncIterator[Records]:
        async for batch in self.source.records():
            yield batch
            if not self.instruments_version and self.rename_when.exists():
                self.instruments_version = 1


def factory(params: Mapping[str, Any], context: AdapterContext) -> Renaming:
    return Renaming(params, context)
