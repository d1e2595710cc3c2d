"""Zerodha Kite: ``ticker`` (pure binary decoder), ``auth`` (login, TOTP, session
cache), ``client`` (the KiteFeed), ``errors`` (the Kite exception tree)."""
