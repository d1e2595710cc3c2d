from typing import Final

RECORD_SIZE: Final[int]
LAYOUT: Final[tuple[tuple[str, int], ...]]
"""(field, byte offset) of the record as the C code writes it."""

def scan(
    frame: bytes, out: object, offset: int, symbols: dict[str, int], recv_ns: int, /
) -> tuple[str, str, int] | int | None: ...
