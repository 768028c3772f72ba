"""The save buffer: finished extractions on their way to the database, written in batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import structlog

from nexus_ingest.errors import DatabaseUnavailable, SaveFailed
from nexus_ingest.worker.process import Extracted

log = structlog.get_logger("nexus.worker")

SaveBatch = Callable[[Sequence[Extracted]], Awaitable[object]]


class SaveBuffer:
    """Gathers what is put into batches of up to `batch_size`, saves `flights` batches at a time,
    retries a failed save a few times with back-off, and drains before the worker exits.

    A session is leased to one worker, so concurrent batches never touch the same session. A
    batch that still cannot be saved is dropped: its messages stay queued and come back after
    their visibility timeout.
    """

    def __init__(
        self,
        save: SaveBatch,
        *,
        batch_size: int = 400,
        flights: int = 2,
        attempts: int = 4,
        capacity: int = 16,
        on_saved: Callable[[], object] | None = None,
    ) -> None:
        self._save = save
        self._on_saved = on_saved
        self._batch_size = batch_size
        self._flights = asyncio.Semaphore(flights)
        self._attempts = attempts
        # A list per put: a whole batch when extraction runs inline, one item from each
        # concurrent task otherwise. Bounded, so a slow database slows the readers down.
        self._puts: asyncio.Queue[list[Extracted]] = asyncio.Queue(maxsize=capacity)
        self._saving: set[asyncio.Task[None]] = set()

    async def put(self, done: list[Extracted]) -> None:
        """Queue finished extractions for saving; waits while the buffer is full."""
        await self._puts.put(done)

    async def run(self) -> None:
        """Save what is put, until cancelled."""
        while True:
            batch, puts = await self._puts.get(), 1
            while len(batch) < self._batch_size and not self._puts.empty():
                batch, puts = batch + self._puts.get_nowait(), puts + 1
            await self._flights.acquire()
            task = asyncio.create_task(self._save_and_release(batch, puts))
            self._saving.add(task)
            task.add_done_callback(self._saving.discard)

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for everything put so far to be saved (or given up)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._puts.join(), timeout=timeout)

    async def _save_and_release(self, batch: list[Extracted], puts: int) -> None:
        try:
            await self._save_with_retries(batch)
        finally:
            self._flights.release()
            for _ in range(puts):
                self._puts.task_done()

    async def _save_with_retries(self, batch: list[Extracted]) -> None:
        for attempt in range(self._attempts):
            try:
                await self._save(batch)
                if self._on_saved is not None:
                    self._on_saved()
                return
            except (DatabaseUnavailable, SaveFailed) as exc:
                log.warning("save.retrying", attempt=attempt + 1, error=str(exc), size=len(batch))
                await asyncio.sleep(0.25 * 2**attempt)
        log.error("save.abandoned", size=len(batch))
