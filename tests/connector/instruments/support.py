"""Helpers shared by the instrument tests: small generated universes and tables."""

from __future__ import annotations

import datetime as dt

import numpy as np

from connector.instruments.kite_csv import parse_kite_csv
from connector.instruments.model import InstrumentTable
from connector.sim.kite_universe import KiteRow, generate_universe, universe_csv

DAY = dt.date(2026, 3, 2)  # a Monday


def small_rows(day: dt.date = DAY, seed: int = 0, scale: float = 0.02) -> list[KiteRow]:
    return generate_universe(day, seed=seed, scale=scale)


def table_of(rows: list[KiteRow], first_inst: int = 1) -> InstrumentTable:
    """The rows imported, with dense ids 1.. (as a fresh store would assign)."""
    table = parse_kite_csv(universe_csv(rows))
    return table.with_inst(np.arange(first_inst, first_inst + len(table), dtype=np.uint32))
