"""Where the worker's reads start: past the messages a full read showed to be gone.

A read scans the queue in id order from a bound (see migrations/016_read_floor.sql). Deleted
messages stay in the index until vacuum removes them, and a transaction that holds the xmin
horizon (a stuck report, a replication slot) keeps vacuum from removing any: an unbounded read
would step over all of them, every time.

Once a second the read is full (no bound) and returns the id of the oldest message ready to be
read. Reads in between start past the oldest such id from a full read at least a second old, so
a message that was not yet ready or not yet committed then, and has a lower id than the oldest
that was, is still found: at the latest by the next full read. A message whose session was
leased is ready, so the bound never passes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# How often a read is full, and how old a full read must be before its answer bounds others.
# The age covers a producer's transaction that took an id before the full read and commits
# after it; one that takes longer still is read by the next full read.
FULL_READ_EVERY_S = 1.0


@dataclass
class ReadFloor:
    """The bound for the next read, learnt from full reads."""

    clock: Callable[[], float] = time.monotonic
    every_s: float = FULL_READ_EVERY_S
    _floor: int = 0
    _last_full_at: float | None = None
    _pending: list[tuple[float, int]] = field(default_factory=list)

    def next_after(self) -> int:
        """The id the next read starts after: 0 when it is due to be a full read."""
        now = self.clock()
        if self._last_full_at is None or now - self._last_full_at >= self.every_s:
            self._last_full_at = now
            return 0
        self._settle(now)
        return self._floor

    def learn(self, after: int, ready_from: int | None) -> None:
        """What a read that started after `after` said of the oldest ready message."""
        if after == 0 and ready_from is not None:
            self._pending.append((self.clock(), ready_from - 1))

    def _settle(self, now: float) -> None:
        # A full read's answer counts once it is old enough; the newest such answer wins.
        while self._pending and now - self._pending[0][0] >= self.every_s:
            self._floor = self._pending.pop(0)[1]
