"""What weeks of uptime bring a worker: its database going away and coming back, its LISTEN
connection cut by the server. New work must still be picked up at once, not on a poll interval
or a back-off grown long during the outage."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb
from structlog.testing import capture_logs

from nexus_ingest.worker import Worker
from tests.worker_kit import FAST, RecordingExtractor, until

QUEUE = "nexus_prospect_ingestion"


def _database_of(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


async def _admin(admin_url: str, statement: sql.Composed | sql.SQL, *params: object) -> None:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(statement, params or None)


@pytest.fixture
async def outage(
    pg_admin_url: str, db_url: str
) -> AsyncIterator[Callable[[bool], Awaitable[None]]]:
    """Turn the test's database away (every connection cut, no new one let in) or back on:
    an outage of this database alone, on a server other tests share."""
    name = sql.Identifier(_database_of(db_url))

    async def set_down(down: bool) -> None:
        allow = sql.SQL("false" if down else "true")
        await _admin(
            pg_admin_url, sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(name, allow)
        )
        if down:
            await _admin(
                pg_admin_url,
                sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                ),
                _database_of(db_url),
            )

    yield set_down
    await set_down(False)


async def _enqueue(url: str, session: str) -> None:
    """Queue one snapshot over a connection of its own (the worker's pool may be recovering)."""
    turns = [{"role": "user", "content": session}, {"role": "user", "content": f"name: {session}"}]
    body = {"sessionId": session, "fingerprint": f"fp-{session}", "messages": turns}
    item = {
        "session_id": session,
        "fingerprint_id": f"fp-{session}",
        "message": body,
        "headers": {"x-pgmq-group": session},
    }
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("SELECT nexus.enqueue_snapshots(%s, %s::jsonb)", (QUEUE, Jsonb([item])))


async def _pickup_seconds(url: str, extractor: RecordingExtractor, session: str) -> float:
    """Queue a snapshot and time how long until the worker has begun extracting it."""
    started = time.monotonic()
    await _enqueue(url, session)

    async def extracted() -> bool:
        return f"name: {session}" in extractor.calls

    await until(extracted, timeout=20, what=f"{session} extracted")
    return time.monotonic() - started


async def _backing_off(logs: list[MutableMapping[str, Any]], *, at_least_s: float) -> bool:
    return any(
        e["event"] == "worker.database_unavailable" and e["retry_in_s"] >= at_least_s for e in logs
    )


async def _listeners(admin_url: str, db_url: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query ILIKE 'LISTEN%%'",
            (_database_of(db_url),),
        )
        return [r[0] for r in await cur.fetchall()]


async def test_new_work_is_picked_up_at_once_when_the_database_is_back_after_an_outage(
    db_url: str,
    outage: Callable[[bool], Awaitable[None]],
    running: Callable[..., Awaitable[Worker]],
) -> None:
    """An outage long enough for the reader's back-off to grow past several seconds: once the
    database is back, a new snapshot is extracted within a few seconds, not when a back-off
    of up to 30 s (grown while nothing answered) runs out."""
    extractor = RecordingExtractor()
    await running(extractor, replace(FAST, poll_interval_s=1.0))
    assert await _pickup_seconds(db_url, extractor, "before") < 2.0

    with capture_logs() as logs:
        await outage(True)
        # Each read waits up to 2 s for a connection, then the reader backs off 0.5, 1, 2, 4,
        # 8 s...: the outage lasts until it has begun a wait of 8 s (some 16 s in).
        await until(lambda: _backing_off(logs, at_least_s=8.0), timeout=40, what="a long back-off")
        await outage(False)

        assert await _pickup_seconds(db_url, extractor, "after") < 4.0


async def test_a_listen_connection_cut_by_the_server_comes_back_and_wakes_the_worker(
    pg_admin_url: str, db_url: str, running: Callable[..., Awaitable[Worker]]
) -> None:
    """pg_terminate_backend on the worker's LISTEN connection: it reconnects, and new work is
    still picked up in well under the poll interval (30 s here), by notification."""
    extractor = RecordingExtractor()
    await running(extractor, replace(FAST, poll_interval_s=30.0))
    first = await until(lambda: _listeners(pg_admin_url, db_url), what="the worker listening")
    assert await _pickup_seconds(db_url, extractor, "warm") < 2.0

    for pid in first:
        await _admin(pg_admin_url, sql.SQL("SELECT pg_terminate_backend(%s)"), pid)
    again = await until(lambda: _listeners(pg_admin_url, db_url), what="the worker listening again")
    assert set(again).isdisjoint(first)

    assert await _pickup_seconds(db_url, extractor, "after-cut") < 2.0
