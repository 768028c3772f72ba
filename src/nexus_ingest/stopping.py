"""How a process is asked to stop: gracefully at the first SIGINT/SIGTERM, at once at the second."""

from __future__ import annotations

import asyncio


class Stop(asyncio.Event):
    """Set by the first signal: finish what is in flight within the grace period, then exit.
    Its `hurried` event is set by the second: give in-flight work back now and exit, as a
    person pressing Ctrl-C twice means."""

    def __init__(self) -> None:
        super().__init__()
        self.hurried = asyncio.Event()

    def signal(self) -> None:
        (self.hurried if self.is_set() else self).set()


def hurried(stop: asyncio.Event) -> asyncio.Event | None:
    """The event a second signal sets, for a stop that has one."""
    return stop.hurried if isinstance(stop, Stop) else None
