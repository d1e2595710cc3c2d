"""What both loopback simulators share about faults: the error they raise when
misconfigured, and a set of fault probabilities checked on every change.

A simulator declares its faults as a dataclass deriving from :class:`FaultSet`:
every field is a probability (0..1) except ``stall_seconds`` (>= 0)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Self

from pipeline.errors import FatalError


class SimulatorError(FatalError):
    """The simulator cannot start or was misconfigured (port busy, bad option, bad host)."""


def parse_pairs(text: str) -> dict[str, str]:
    """``"a=1, b=2"`` -> ``{"a": "1", "b": "2"}``; an item without ``=`` is an error naming it."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise SimulatorError(f"fault {item!r} is not name=value")
        out[key.strip()] = value.strip()
    return out


@dataclass
class FaultSet:
    """Fault probabilities, changeable at any time (``sim.faults.drop = 0.05``);
    a bad value is a :class:`SimulatorError` naming the fault."""

    def __setattr__(self, name: str, value: float) -> None:
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise SimulatorError(f"fault {name!r}: {value!r} is not a number")
        if name == "stall_seconds":
            if value < 0:
                raise SimulatorError(f"stall_seconds {value} is negative")
        elif not 0.0 <= value <= 1.0:
            raise SimulatorError(
                f"fault {name!r}: probability {value} is out of range (not between 0 and 1)"
            )
        super().__setattr__(name, float(value))

    @classmethod
    def parse(cls, text: str) -> Self:
        """``"drop=0.01,duplicate=0.01"`` -> the faults; an unknown name is an error naming it."""
        faults = cls()
        faults.update(parse_pairs(text))
        return faults

    def update(self, values: Mapping[str, str]) -> None:
        """Set faults from name -> text (a query string, a CLI option)."""
        names = {f.name for f in fields(self)}
        for key, raw in values.items():
            if key not in names:
                raise SimulatorError(f"unknown fault {key!r} (known: {', '.join(sorted(names))})")
            try:
                value = float(raw)
            except ValueError:
                raise SimulatorError(f"fault {key!r}: {raw!r} is not a number") from None
            setattr(self, key, value)

    def as_dict(self) -> dict[str, float]:
        """The current fault settings."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
