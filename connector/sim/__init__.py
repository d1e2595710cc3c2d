"""Loopback venue simulators for tests, demos and benchmarks (127.0.0.1 only).

``connector.sim.binance.BinanceSimulator``: Binance spot / USD-M REST and
WebSocket on one port, in the venue's wire format, with fault injection and a
truth endpoint; ``connector-pipeline simulate binance`` runs it from the shell.

``connector.sim.kite.KiteSimulator``: Zerodha Kite login (password, TOTP),
session token, instruments CSV of a generated universe
(``connector.sim.kite_universe``) and the binary ticker WebSocket, with a
market clock and fault injection; ``connector-pipeline simulate kite``.
"""
