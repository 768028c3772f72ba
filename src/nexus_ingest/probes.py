"""Liveness and readiness: what the API, and a worker on its own, answer to an orchestrator.

Liveness (`/healthz`) says the process answers at all and touches nothing else, so a database
outage never gets a healthy process restarted. Readiness (`/readyz`) says it can do its work
now: the database answers and holds every migration this package ships; for a worker, also
that its loop runs and its last database contact was recent.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nexus_ingest.db import schema_version
from nexus_ingest.errors import DatabaseUnavailable
from nexus_ingest.migrate import latest_version
from nexus_ingest.web import QueueMetricsCache, queue_gauges_exposition

_RETRY_AFTER_S = "5"


async def schema_problems(pool: AsyncConnectionPool, *, timeout: float) -> list[str]:
    """Why the database cannot serve this package now; empty when it can."""
    try:
        applied = await schema_version(pool, timeout=timeout)
    except DatabaseUnavailable:
        return ["database unreachable"]
    if applied != latest_version():
        return [f"migrations pending: database at {applied or 0}, package at {latest_version()}"]
    return []


def liveness(request: Request) -> Response:
    """The process is up and its event loop answers; no database call."""
    return JSONResponse({"status": "alive"})


def readiness_answer(problems: list[str]) -> Response:
    """200 `ready`, or 503 `not_ready` with the reasons and a Retry-After."""
    if not problems:
        return JSONResponse({"status": "ready", "reasons": []})
    return JSONResponse(
        {"status": "not_ready", "reasons": problems},
        status_code=503,
        headers={"Retry-After": _RETRY_AFTER_S},
    )


async def api_readiness(request: Request) -> Response:
    """The API can queue snapshots: its database answers and is fully migrated."""
    timeout = request.app.state.settings.db_timeout_s
    return readiness_answer(await schema_problems(request.app.state.pool, timeout=timeout))


class WorkerProbe:
    """A standalone worker's readiness: its loop runs, and the database answered recently."""

    def __init__(
        self, pool: AsyncConnectionPool, *, interval_s: float = 2.0, timeout_s: float = 2.0
    ) -> None:
        self.pool = pool
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.running = False
        self.last_contact: float | None = None
        self.schema: list[str] = ["no database contact yet"]

    async def watch(self, stop: asyncio.Event) -> None:
        """Ask the database every `interval_s` until `stop` is set."""
        while not stop.is_set():
            self.schema = await schema_problems(self.pool, timeout=self.timeout_s)
            if "database unreachable" not in self.schema:
                self.last_contact = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)

    def problems(self, now: float | None = None) -> list[str]:
        """Why the worker is not ready; empty when it is."""
        found = [] if self.running else ["worker loop not running"]
        stale_after = 3 * self.interval_s
        now = time.monotonic() if now is None else now
        if self.last_contact is not None and now - self.last_contact > stale_after:
            found.append(f"no database contact in the last {stale_after:g} s")
        return found + self.schema


def worker_app(probe: WorkerProbe) -> Starlette:
    """A standalone worker's HTTP face: /metrics, /healthz and /readyz."""

    queue_metrics = QueueMetricsCache(probe.pool, ttl_s=probe.interval_s, timeout=probe.timeout_s)

    async def metrics(request: Request) -> Response:
        body = await queue_gauges_exposition(queue_metrics)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def readiness(request: Request) -> Response:
        return readiness_answer(probe.problems())

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/healthz", liveness),
            Route("/readyz", readiness),
        ]
    )
