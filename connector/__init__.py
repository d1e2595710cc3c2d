"""Venues (Binance, Zerodha Kite), instruments, simulators and the CLI."""
