"""In-process workers for tests: a recording extractor, sending, waiting, and a fixture that runs workers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.extract.base import Extraction
from nexus_ingest.models import ChatMessage, Prospect
from nexus_ingest.retry import RetryPolicy
from nexus_ingest.worker import Worker, WorkerConfig


class RecordingExtractor:
    """Takes the prospect's name from the last user turn ('name: X'), recording every call."""

    name = "recording"
    in_process = False  # it may sleep

    def __init__(self, delay: float = 0.0, failures: Sequence[Exception] = ()) -> None:
        self.calls: list[str] = []
        self.in_flight: set[str] = set()
        self.max_overlap_per_session = 0
        self.delay = delay
        self.failures = list(failures)

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        session = messages[0].content
        self.calls.append(messages[-1].content)
        if session in self.in_flight:
            self.max_overlap_per_session = 2
        self.in_flight.add(session)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.failures:
                raise self.failures.pop(0)
            name = messages[-1].content.removeprefix("name: ")
            return Extraction(
                Prospect(nombre=name, productos_interes=[name.lower()]), extractor=self.name
            )
        finally:
            self.in_flight.discard(session)

    async def aclose(self) -> None:
        return None


FAST = WorkerConfig(
    concurrency=4,
    batch_size=20,
    vt_s=30,
    poll_interval_s=0.05,
    shutdown_grace_s=5,
    retry=RetryPolicy(max_attempts=3, base_s=1.0, cap_s=1.0),
)


def snapshot(
    session: str, name: str, *, turns: int = 1, fingerprint: str | None = None
) -> queue.Snapshot:
    """A snapshot whose last user turn gives the name RecordingExtractor takes."""
    messages = [{"role": "user", "content": session}] + [
        {"role": "user", "content": f"name: {name}"}
    ] * turns
    fingerprint = fingerprint or f"fp-{session}"
    body = {"sessionId": session, "fingerprint": fingerprint, "messages": messages}
    return queue.Snapshot(session, fingerprint, body, {})


async def send(
    pool: AsyncConnectionPool,
    session: str,
    name: str,
    *,
    turns: int = 1,
    fingerprint: str | None = None,
) -> int:
    result = await queue.enqueue(
        pool, snapshot(session, name, turns=turns, fingerprint=fingerprint)
    )
    return result.msg_id


async def until(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def fetch(pool: AsyncConnectionPool, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    async with pool.connection() as conn:
        return await (await conn.execute(sql, params)).fetchall()  # type: ignore[arg-type]


async def queue_length(pool: AsyncConnectionPool) -> int:
    return (await fetch(pool, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion"))[0][0]


@pytest.fixture
async def running(
    pool: AsyncConnectionPool, db_url: str
) -> AsyncIterator[Callable[..., Awaitable[Worker]]]:
    """Start workers in this event loop; all are stopped at the end of the test."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(extractor: Any, config: WorkerConfig = FAST, listen: bool = True) -> Worker:
        worker = Worker(pool, extractor, config, listen_url=db_url if listen else None)
        stop = asyncio.Event()
        stops.append((stop, asyncio.create_task(worker.run(stop))))
        return worker

    yield start
    for stop, _ in stops:
        stop.set()
    await asyncio.wait_for(asyncio.gather(*(t for _, t in stops)), timeout=15)
