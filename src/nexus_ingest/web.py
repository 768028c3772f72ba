"""What the API and the dashboard both need: bounded bodies, token checks, health and its
shared queue metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import time

from psycopg_pool import AsyncConnectionPool
from starlette.requests import ClientDisconnect, Request

from nexus_ingest import queue
from nexus_ingest.errors import DatabaseUnavailable
from nexus_ingest.metrics import QUEUE_LENGTH, QUEUE_OLDEST_AGE, exposition
from nexus_ingest.queue import QueueMetrics
from nexus_ingest.settings import Settings


class BodyTooLarge(Exception):
    """The request body is larger than allowed."""


class BodyTooSlow(Exception):
    """The request body did not arrive in time."""


# nginx's status for a request whose client closed the connection before it was answered:
# nobody reads it, but /metrics and the logs tell a hang-up from the server's own 408.
CLIENT_CLOSED_REQUEST = 499


class ClientGone(BodyTooSlow):
    """The client closed the connection before its body arrived.

    A kind of `BodyTooSlow` (the body never arrives), so every caller already answers it
    without a traceback; nobody is listening for that answer anyway."""


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` bytes (before reading it all),
    or once it has taken more than `timeout` seconds, however steadily it trickles in;
    `ClientGone` when the client hangs up before sending it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow from None
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)


def token_matches(supplied: str | None, expected: str | None) -> bool:
    """Constant-time comparison; no token configured (or none supplied) never matches."""
    if not supplied or not expected:
        return False
    return hmac.compare_digest(supplied.encode(), expected.encode())


def bearer_matches(request: Request, expected: str | None) -> bool:
    """Whether `Authorization: Bearer <token>` carries the expected token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_matches(token.strip(), expected)


class QueueMetricsCache:
    """The queue's length and ages, counted at most once per `ttl_s` however many ask: health
    checks, Prometheus scrapes and dashboard polls (all unauthenticated but the last) share one
    count, and concurrent callers share the one in flight."""

    def __init__(self, pool: AsyncConnectionPool, *, ttl_s: float, timeout: float) -> None:
        self._pool = pool
        self._ttl_s = ttl_s
        self._timeout = timeout
        self._latest: tuple[float, QueueMetrics] | None = None
        self._reading: asyncio.Task[QueueMetrics] | None = None

    async def get(self) -> QueueMetrics:
        """Metrics at most `ttl_s` old; `DatabaseUnavailable` (never cached) when they cannot be read."""
        if self._latest is not None and time.monotonic() - self._latest[0] < self._ttl_s:
            return self._latest[1]
        if self._reading is None:
            self._reading = asyncio.create_task(self._read())
            # Read here too, so a failure nobody waited for is not reported as never retrieved.
            self._reading.add_done_callback(lambda task: task.cancelled() or task.exception())
        # Shielded: a caller that gives up must not cancel the count the others wait for.
        return await asyncio.shield(self._reading)

    async def _read(self) -> QueueMetrics:
        try:
            metrics = await queue.metrics(self._pool, timeout=self._timeout)
        finally:
            self._reading = None
        self._latest = (time.monotonic(), metrics)
        return metrics


def health_reasons(m: QueueMetrics, settings: Settings) -> list[str]:
    """Which alert thresholds the queue crosses now."""
    reasons = []
    if m.queue_length > settings.alert_queue_length:
        reasons.append(f"queue_length {m.queue_length} > {settings.alert_queue_length}")
    if (m.oldest_msg_age_sec or 0) > settings.alert_oldest_age_s:
        reasons.append(f"oldest_msg_age_sec {m.oldest_msg_age_sec} > {settings.alert_oldest_age_s}")
    return reasons


async def queue_gauges_exposition(cache: QueueMetricsCache) -> bytes:
    """Every metric of this process (or of all `nexus up`'s), with the queue's length and age
    read now: a process that never set them would report an empty queue. When the database
    does not answer the scrape still does, the gauges keeping their last value."""
    with contextlib.suppress(DatabaseUnavailable):
        m = await cache.get()
        QUEUE_LENGTH.set(m.queue_length)
        QUEUE_OLDEST_AGE.set(m.oldest_msg_age_sec or 0)
    return exposition()
