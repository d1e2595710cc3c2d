"""Feed subscriptions by instrument query instead of a token list (pure).

A feed's ``subscribe`` parameter lists what it wants per underlying::

    subscribe = [
      {underlying = "NIFTY", spot = true, futures = 2, chain_range = 5},
      {underlying = "BANKNIFTY", futures = 1, chain_range = 3, expiries = 1, mode = "quote"},
    ]

* ``spot`` (default true): the underlying's spot (NIFTY -> NSE:NIFTY 50);
* ``futures`` (default 0): that many nearest futures (2 = current + next month);
* ``chain_range`` (default: no options): the ATM strike and that many strikes
  each side, calls and puts, of the ``expiries`` (default 1) nearest expiries;
* ``exchange``: where the derivatives trade (default: NFO before BFO, ...);
* ``mode``: the ticker mode of these tokens (default: the feed's).

:func:`resolve` turns the list into tokens and the store's dense ids at a
given date with given spot prices: no clock, no I/O. The ATM strike needs
a spot price: the caller's (e.g. a live quote), else the spot instrument's
``last_price`` in the instruments dump, else the current future's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from connector.instruments.model import Instrument, InstrumentNotFoundError
from connector.instruments.universe import OptionChain, Universe
from pipeline import fixedpoint
from pipeline.errors import ConfigError

_KEYS: Final[dict[str, type | tuple[type, ...]]] = {
    "underlying": str,
    "spot": bool,
    "futures": int,
    "chain_range": int,
    "expiries": int,
    "exchange": str,
    "mode": str,
}


class SubscriptionError(ConfigError):
    """A ``subscribe`` entry cannot be resolved against the stored universe (says which)."""


@dataclass(frozen=True)
class SubscriptionSpec:
    """What one ``subscribe`` entry asks for (see the module docstring)."""

    underlying: str
    spot: bool = True
    futures: int = 0
    chain_range: int | None = None
    expiries: int = 1
    exchange: str | None = None
    mode: str | None = None

    def __post_init__(self) -> None:
        if not self.underlying:
            raise ConfigError("subscribe: underlying must not be empty")
        if self.futures < 0:
            raise ConfigError(f"subscribe {self.underlying}: futures must be >= 0")
        if self.chain_range is not None and self.chain_range < 0:
            raise ConfigError(f"subscribe {self.underlying}: chain_range must be >= 0")
        if self.expiries < 1:
            raise ConfigError(f"subscribe {self.underlying}: expiries must be >= 1")
        if not self.spot and not self.futures and self.chain_range is None:
            raise ConfigError(
                f"subscribe {self.underlying}: asks for nothing "
                "(set spot = true, futures = N or chain_range = N)"
            )

    @classmethod
    def from_params(cls, raw: Any, where: str) -> SubscriptionSpec:
        """One entry of a feed's ``subscribe`` list; errors name ``where`` and the key."""
        if not isinstance(raw, Mapping):
            raise ConfigError(f'{where} must be a table like {{underlying = "NIFTY", ...}}')
        for key, value in raw.items():
            expected = _KEYS.get(key)
            if expected is None:
                raise ConfigError(
                    f"{where}: unknown key {key!r} (known: {', '.join(sorted(_KEYS))})"
                )
            if isinstance(value, bool) is not (expected is bool) or not isinstance(value, expected):
                raise ConfigError(f"{where}.{key} has the wrong type: {value!r}")
        if "underlying" not in raw:
            raise ConfigError(f"{where}.underlying is required")
        try:
            return cls(**dict(raw))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class ResolvedUnderlying:
    """What one entry resolved to."""

    spec: SubscriptionSpec
    spot: Instrument | None
    futures: tuple[Instrument, ...]
    chains: tuple[OptionChain, ...]
    spot_price: int
    """Fixed point; 0 when no chain was asked for and no price was known."""

    def instruments(self) -> list[Instrument]:
        """Every instrument, in order: spot, futures, then each chain's calls and puts."""
        out = [self.spot] if self.spot is not None else []
        out.extend(self.futures)
        for chain in self.chains:
            for row in chain.rows:
                out.extend(i for i in (row.call, row.put) if i is not None)
        return out

    def summary(self) -> str:
        """One log line: ``NIFTY -> 25 tokens (spot ..., futures ..., chain ...)``."""
        parts = []
        if self.spot is not None:
            parts.append(f"spot {self.spot.exchange_symbol}")
        if self.futures:
            parts.append("futures " + ", ".join(str(f.expiry) for f in self.futures))
        for chain in self.chains:
            n = sum((r.call is not None) + (r.put is not None) for r in chain.rows)
            parts.append(
                f"{chain.exchange} options {chain.expiry}: ATM {fixedpoint.format(chain.atm_strike)}"
                f" +-{len(chain.rows) // 2} x {fixedpoint.format(chain.strike_interval)}"
                f" ({n} options, spot price {fixedpoint.format(self.spot_price)})"
            )
        return f"{self.spec.underlying} -> {len(self.instruments())} tokens ({'; '.join(parts)})"


@dataclass(frozen=True)
class Resolution:
    """Every entry resolved: token -> dense id, token -> mode (where the entry set one)."""

    underlyings: tuple[ResolvedUnderlying, ...]
    token_inst: Mapping[int, int]
    modes: Mapping[int, str]
    names: Mapping[int, str]
    """Dense id -> ``EXCHANGE:SYMBOL`` (what readers look books up by)."""


def spot_price_of(
    universe: Universe,
    spec: SubscriptionSpec,
    spot: Instrument | None,
    futures: Sequence[Instrument],
    prices: Mapping[int, int],
    as_of: dt.date,
) -> int:
    """The price to centre the chain on: ``prices`` (by token), else the dump's last prices."""
    if spot is None:
        try:
            spot = universe.spot(spec.underlying)
        except InstrumentNotFoundError:
            spot = None
    candidates: list[Instrument] = [spot] if spot is not None else []
    if not futures:
        try:
            futures = universe.futures(spec.underlying, as_of, spec.exchange)[:1]
        except InstrumentNotFoundError:
            futures = []
    candidates.extend(futures[:1])
    for inst in candidates:
        price = prices.get(inst.instrument_token, 0)
        if price > 0:
            return price
    for inst in candidates:
        if inst.last_price > 0:
            return inst.last_price
    raise SubscriptionError(
        f"subscribe {spec.underlying}: no price to find the ATM strike with "
        "(no quote, and the instruments dump has no last_price for its spot or future)"
    )


def resolve_one(
    universe: Universe,
    spec: SubscriptionSpec,
    as_of: dt.date,
    prices: Mapping[int, int] | None = None,
) -> ResolvedUnderlying:
    """One entry against ``universe`` on ``as_of`` (raises :class:`SubscriptionError`)."""
    prices = prices or {}
    name = spec.underlying
    try:
        spot = universe.spot(name) if spec.spot else None
        futures: tuple[Instrument, ...] = ()
        if spec.futures:
            futures = tuple(universe.futures(name, as_of, spec.exchange)[: spec.futures])
            if len(futures) < spec.futures:
                raise SubscriptionError(
                    f"subscribe {name}: {spec.futures} futures asked, "
                    f"{len(futures)} listed on or after {as_of}"
                )
        chains: list[OptionChain] = []
        price = 0
        if spec.chain_range is not None:
            price = spot_price_of(universe, spec, spot, futures, prices, as_of)
            expiries = universe.expiries(name, as_of, spec.exchange)[: spec.expiries]
            if len(expiries) < spec.expiries:
                raise SubscriptionError(
                    f"subscribe {name}: {spec.expiries} option expiries asked, "
                    f"{len(expiries)} listed on or after {as_of}"
                )
            for expiry in expiries:
                chains.append(
                    universe.option_chain(
                        name,
                        price,
                        spec.chain_range,
                        expiry=expiry,
                        as_of=as_of,
                        exchange=spec.exchange,
                    )
                )
    except InstrumentNotFoundError as exc:
        raise SubscriptionError(f"subscribe {name}: {exc}") from None
    return ResolvedUnderlying(spec, spot, futures, tuple(chains), price)


def resolve(
    universe: Universe,
    specs: Sequence[SubscriptionSpec],
    as_of: dt.date,
    prices: Mapping[int, int] | None = None,
    extra_tokens: Sequence[int] = (),
) -> Resolution:
    """Every entry, plus ``extra_tokens`` (a feed's plain ``tokens``), to tokens and dense ids.

    A token asked for by two entries is subscribed once; its mode is the
    first entry's that sets one.
    """
    resolved = tuple(resolve_one(universe, s, as_of, prices) for s in specs)
    token_inst: dict[int, int] = {}
    modes: dict[int, str] = {}
    names: dict[int, str] = {}

    def add(inst: Instrument, mode: str | None) -> None:
        token = inst.instrument_token
        if token not in token_inst:
            token_inst[token] = inst.inst
            names[inst.inst] = inst.exchange_symbol
        if mode is not None:
            modes.setdefault(token, mode)

    for r in resolved:
        for inst in r.instruments():
            add(inst, r.spec.mode)
    for token in extra_tokens:
        try:
            add(universe.by_token(token), None)
        except InstrumentNotFoundError:
            raise SubscriptionError(
                f"token {token} is not in the stored instruments (tokens map to their dense ids "
                "when subscribe is used)"
            ) from None
    return Resolution(resolved, token_inst, modes, names)
