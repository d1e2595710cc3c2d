"""Venue-agnostic runtime: fixed point, the 64-byte record, shared memory,
rings, the WAL, and (later) the processes that join them. Never imports
``connector``."""
