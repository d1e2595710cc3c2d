"""The process table: one shared-memory slot per pipeline process.

Each process writes its own slot (pid, state, heartbeat, counters, last
error); the supervisor writes only each slot's ``restarts`` word. Readers
(``status``, ``monitor``) copy slots without locking: every field is a
single aligned 8-byte word, and a torn read of two different words only
mixes two moments, which is fine for monitoring.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from pipeline import shm
from pipeline.errors import PipelineError

MAGIC: Final = 0x3153544154535043  # b"CPSTATS1"
HEADER_BYTES: Final = 4096
SLOT_WORDS: Final = 64  # 512 bytes
NAME_WORDS: Final = 4  # 32 bytes
ERROR_WORDS: Final = 24  # 192 bytes
COUNTERS: Final = 16
W_NAME, W_PID, W_STATE, W_HEARTBEAT_NS, W_RESTARTS, W_STARTED_NS = 0, 4, 5, 6, 7, 8
W_COUNTERS: Final = 16
W_ERROR: Final = W_COUNTERS + COUNTERS


class State(IntEnum):
    EMPTY = 0
    STARTING = 1
    READY = 2
    DRAINING = 3
    EXITED = 4
    FAILED = 5


class Counter(IntEnum):
    """Counter slots; each process uses those that apply to it."""

    RECORDS_IN = 0
    RECORDS_OUT = 1
    BATCHES = 2
    ERRORS = 3
    DROPPED = 4
    SKIPPED = 5
    """Already persisted/applied (after a restart)."""
    BYTES = 6
    CHECKPOINTS = 7
    PUBLISHES = 8
    STATUS_RECORDS = 9
    CPU_NS = 10
    """User + system CPU time of the process (updated with every heartbeat)."""


@dataclass(frozen=True)
class ProcessInfo:
    slot: int
    name: str
    pid: int
    state: State
    heartbeat_ns: int
    restarts: int
    started_ns: int
    counters: dict[str, int]
    error: str


class ProcessTable:
    def __init__(self, segment: shm.Segment) -> None:
        self.segment = segment
        head = np.frombuffer(segment.buf, dtype=np.uint64, count=4)
        if int(head[0]) != MAGIC:
            raise PipelineError(f"shared memory {segment.name!r} is not a process table")
        self.slots = int(head[1])
        self._t: npt.NDArray[np.uint64] = np.frombuffer(
            segment.buf, dtype=np.uint64, count=self.slots * SLOT_WORDS, offset=HEADER_BYTES
        ).reshape(self.slots, SLOT_WORDS)

    @classmethod
    def create(cls, name: str, names: list[str]) -> ProcessTable:
        """A table with one slot per process name, in this order."""
        seg = shm.create(name, HEADER_BYTES + len(names) * SLOT_WORDS * 8)
        head = np.frombuffer(seg.buf, dtype=np.uint64, count=4)
        head[1] = len(names)
        head[0] = MAGIC
        del head
        table = cls(seg)
        for i, proc_name in enumerate(names):
            raw = proc_name.encode()[: NAME_WORDS * 8].ljust(NAME_WORDS * 8, b"\0")
            table._t[i, W_NAME : W_NAME + NAME_WORDS] = np.frombuffer(raw, dtype=np.uint64)
        return table

    @classmethod
    def attach(cls, name: str) -> ProcessTable:
        return cls(shm.attach(name))

    def slot_of(self, name: str) -> int:
        for i in range(self.slots):
            if self._name(i) == name:
                return i
        raise PipelineError(f"process {name!r} has no slot in the process table")

    def _name(self, i: int) -> str:
        return (
            self._t[i, W_NAME : W_NAME + NAME_WORDS]
            .tobytes()
            .rstrip(b"\0")
            .decode(errors="replace")
        )

    def read(self, i: int) -> ProcessInfo:
        row = self._t[i].copy()
        err = row[W_ERROR : W_ERROR + ERROR_WORDS].tobytes().rstrip(b"\0").decode(errors="replace")
        return ProcessInfo(
            slot=i,
            name=self._name(i),
            pid=int(row[W_PID]),
            state=State(int(row[W_STATE]))
            if int(row[W_STATE]) in State._value2member_map_
            else State.EMPTY,
            heartbeat_ns=int(row[W_HEARTBEAT_NS]),
            restarts=int(row[W_RESTARTS]),
            started_ns=int(row[W_STARTED_NS]),
            counters={c.name.lower(): int(row[W_COUNTERS + c]) for c in Counter},
            error=err,
        )

    def all(self) -> list[ProcessInfo]:
        return [self.read(i) for i in range(self.slots)]

    def set_restarts(self, i: int, restarts: int) -> None:
        """Supervisor only."""
        self._t[i, W_RESTARTS] = restarts

    def reset(self, i: int) -> None:
        """Supervisor, before (re)starting the process of slot ``i``: forget the old state."""
        self._t[i, W_PID] = 0
        self._t[i, W_STATE] = State.EMPTY
        self._t[i, W_ERROR : W_ERROR + ERROR_WORDS] = 0

    def close(self) -> None:
        self.__dict__.pop("_t", None)
        self.segment.close()

    def unlink(self) -> None:
        shm.unlink(self.segment.name)


class Reporter:
    """A process's handle on its own slot."""

    def __init__(self, table: ProcessTable, name: str) -> None:
        self.table = table
        self.slot = table.slot_of(name)
        self._row = table._t[self.slot]
        self._row[W_PID] = os.getpid()
        self._row[W_STARTED_NS] = time.time_ns()
        self._row[W_ERROR : W_ERROR + ERROR_WORDS] = 0
        self.counters: npt.NDArray[np.uint64] = self._row[W_COUNTERS : W_COUNTERS + COUNTERS]
        self.state(State.STARTING)

    def state(self, state: State) -> None:
        self._row[W_STATE] = state
        self.heartbeat()

    def heartbeat(self) -> None:
        self._row[W_HEARTBEAT_NS] = time.monotonic_ns()
        t = os.times()
        self.counters[Counter.CPU_NS] = int((t.user + t.system) * 1e9)

    def add(self, counter: Counter, n: int = 1) -> None:
        self.counters[counter] += n

    def set(self, counter: Counter, value: int) -> None:
        self.counters[counter] = value

    def fail(self, message: str) -> None:
        """Record why this process is giving up (for the supervisor's message)."""
        raw = message.encode(errors="replace")[: ERROR_WORDS * 8 - 1].ljust(ERROR_WORDS * 8, b"\0")
        self._row[W_ERROR : W_ERROR + ERROR_WORDS] = np.frombuffer(raw, dtype=np.uint64)
        self.state(State.FAILED)
