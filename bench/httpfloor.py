"""The HTTP floor: `nexus serve` minus the database, and the naive producer beside it.

`python -m bench.httpfloor floor` runs `nexus serve` itself (the same settings, uvicorn
configuration, app, middleware, body parsing, limits and 202 answer) with one part swapped
after start-up: the enqueue batcher, so a valid snapshot is answered without any round trip
to Postgres. Its latency is what the stack costs before the database; the producer's p99 over
this one's is the figure to watch.

`python -m bench.httpfloor naive` swaps the batcher for one `pgmq.send` and commit per request
on a pooled connection: what the shared commit of the real batcher is worth.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import api, queue
from nexus_ingest.db import connection
from nexus_ingest.settings import Settings


class FloorBatcher:
    """Answers every snapshot at once with a made-up receipt: no database."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def submit(self, snapshot: queue.Snapshot) -> queue.Enqueued:
        return queue.Enqueued(queue.MsgId(next(self._ids)), 1, False, False)


class NaiveBatcher:
    """One `pgmq.send` per snapshot, each on its own pooled connection and commit."""

    def __init__(self, pool: AsyncConnectionPool, timeout: float) -> None:
        self._pool, self._timeout = pool, timeout

    async def submit(self, snapshot: queue.Snapshot) -> queue.Enqueued:
        item = snapshot.as_item()
        params = {"queue": queue.QUEUE, "message": Jsonb(item["message"])}
        async with connection(self._pool, timeout=self._timeout) as conn:
            cursor = await conn.execute(
                "SELECT pgmq.send(%(queue)s, %(message)s, %(headers)s)",
                {**params, "headers": Jsonb(item["headers"])},
            )
            row = await cursor.fetchone()
        return queue.Enqueued(queue.MsgId(row[0] if row else 0), 1, False, False)


Batcher = Callable[[FastAPI, Settings], Any]

BATCHERS: dict[str, Batcher] = {
    "floor": lambda app, settings: FloorBatcher(),
    "naive": lambda app, settings: NaiveBatcher(app.state.pool, settings.db_timeout_s),
}


def with_batcher(make: Batcher) -> Callable[[Settings, str], FastAPI]:
    """`api.create_app`, with the batcher that its start-up builds replaced by `make`'s."""
    create_app = api.create_app

    def create(settings: Settings, database_url: str) -> FastAPI:
        app = create_app(settings, database_url)
        started: Callable[[FastAPI], AbstractAsyncContextManager[Any]]
        started = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[Any]:
            async with started(app) as state:
                app.state.batcher = make(app, settings)
                yield state

        app.router.lifespan_context = lifespan
        return app

    return create


def main(kind: str) -> int:
    """`nexus serve` with the batcher of `kind`."""
    from nexus_ingest import cli

    api.create_app = with_batcher(BATCHERS[kind])  # type: ignore[assignment]
    return cli.main(["serve"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
