"""Retention against a real database: what ages out goes, what is recent or still needed stays."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from structlog.testing import capture_logs

from nexus_ingest.maintenance import (
    MAINTENANCE_LOCK_KEY,
    Retention,
    cron_schedules_maintenance,
    maintenance_loop,
    run_maintenance,
    tables_autovacuum_skips,
    try_run_maintenance,
)

QUEUE = "nexus_prospect_ingestion"
# The settings' defaults.
RETENTION = Retention(archive_days=7, history_days=90, dead_letter_days=30)
DLQ = "nexus_prospect_ingestion_dlq"


async def eventually(
    condition: Callable[[], Awaitable[Any]], *, timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Await `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def execute(pool: AsyncConnectionPool, statement: str, *params: Any) -> Any:
    """Run one statement; the first column of its first row, when it returns one."""
    async with pool.connection() as conn:
        cur = await conn.execute(statement, params or None)
        row = await cur.fetchone() if cur.description else None
        return row[0] if row else None


async def archived(pool: AsyncConnectionPool, queue: str, *, days_ago: int) -> int:
    """Send and archive one message, dated `days_ago` days back; its msg_id."""
    msg_id = await execute(pool, "SELECT pgmq.send(%s, '{}'::jsonb)", queue)
    await execute(pool, "SELECT pgmq.archive(%s, %s::bigint)", queue, msg_id)
    await execute(
        pool,
        f"UPDATE pgmq.a_{queue} SET archived_at = now() - make_interval(days => %s)"
        " WHERE msg_id = %s",
        days_ago,
        msg_id,
    )
    return int(msg_id)


async def extraction(pool: AsyncConnectionPool, fingerprint: str, *, days_ago: int) -> None:
    """Merge one extraction for `fingerprint` and date its history row `days_ago` days back."""
    await execute(
        pool,
        "SELECT public.update_prospect_data(%s, %s, %s)",
        fingerprint,
        f"s-{fingerprint}",
        Jsonb({"nombre": "Carlos"}),
    )
    await execute(
        pool,
        "UPDATE public.prospect_extractions SET created_at = now() - make_interval(days => %s)"
        " WHERE fingerprint_id = %s",
        days_ago,
        fingerprint,
    )


async def idempotency_key(pool: AsyncConnectionPool, key: str, *, hours_ago: int) -> None:
    """Remember an idempotency key created `hours_ago` hours back."""
    await execute(
        pool,
        "INSERT INTO nexus.idempotency_keys (key, request_hash, created_at)"
        " VALUES (%s, 'h', now() - make_interval(hours => %s))",
        key,
        hours_ago,
    )


async def session(
    pool: AsyncConnectionPool, session_id: str, *, days_ago: int, leased: bool = False
) -> None:
    """A session row last touched `days_ago` days back, optionally leased right now."""
    await execute(
        pool,
        "INSERT INTO nexus.sessions (session_id, fingerprint_id, last_seq, updated_at, leased_until)"
        " VALUES (%s, 'fp', 3, now() - make_interval(days => %s),"
        " CASE WHEN %s THEN now() + interval '1 minute' END)",
        session_id,
        days_ago,
        leased,
    )


async def queued(pool: AsyncConnectionPool, queue: str, session_id: str) -> None:
    """A message of `session_id` waiting in `queue`."""
    await execute(
        pool,
        "SELECT pgmq.send(%s, '{}'::jsonb, %s::jsonb)",
        queue,
        Jsonb({"x-pgmq-group": session_id}),
    )


async def ids(pool: AsyncConnectionPool, statement: str) -> set[Any]:
    """The first column of every row of `statement`."""
    async with pool.connection() as conn:
        return {row[0] for row in await (await conn.execute(statement)).fetchall()}


@pytest.fixture
async def blocker(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A second connection, in a transaction, for holding locks that the test lets go of."""
    conn = await psycopg.AsyncConnection.connect(db_url)
    yield conn
    await conn.rollback()
    await conn.close()


async def lock_waiters(pool: AsyncConnectionPool) -> int:
    """How many backends of this database wait for a heavyweight lock."""
    return int(
        await execute(
            pool,
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
    )


async def test_old_archived_messages_go_and_recent_ones_stay(pool: AsyncConnectionPool) -> None:
    """Archived messages older than the archive period are deleted from both archives."""
    await archived(pool, QUEUE, days_ago=8)
    recent = await archived(pool, QUEUE, days_ago=1)
    await archived(pool, DLQ, days_ago=30)
    recent_dead = await archived(pool, DLQ, days_ago=2)

    counts = await run_maintenance(pool, RETENTION)

    assert await ids(pool, f"SELECT msg_id FROM pgmq.a_{QUEUE}") == {recent}
    assert await ids(pool, f"SELECT msg_id FROM pgmq.a_{DLQ}") == {recent_dead}
    assert counts["a_nexus_prospect_ingestion"] == 1
    assert counts["a_nexus_prospect_ingestion_dlq"] == 1


async def test_old_history_goes_but_prospects_stay(pool: AsyncConnectionPool) -> None:
    """Extraction history past the history period is deleted; the prospect rows are untouched."""
    await extraction(pool, "fp-old", days_ago=91)
    await extraction(pool, "fp-new", days_ago=10)

    counts = await run_maintenance(pool, RETENTION)

    assert {"fp-new"} == await ids(pool, "SELECT fingerprint_id FROM public.prospect_extractions")
    assert {"fp-old", "fp-new"} == await ids(
        pool, "SELECT fingerprint_id FROM public.prospect_data"
    )
    assert counts["prospect_extractions"] == 1


async def test_expired_idempotency_keys_go(pool: AsyncConnectionPool) -> None:
    """Idempotency keys older than a day are deleted, newer ones kept."""
    await idempotency_key(pool, "old", hours_ago=25)
    await idempotency_key(pool, "new", hours_ago=1)

    counts = await run_maintenance(pool, RETENTION)

    assert {"new"} == await ids(pool, "SELECT key FROM nexus.idempotency_keys")
    assert counts["idempotency_keys"] == 1


async def test_old_message_events_go(pool: AsyncConnectionPool) -> None:
    """The per-message event log is kept for the history period, like the extractions."""
    for days in (91, 3):
        await execute(
            pool,
            "INSERT INTO nexus.message_events (msg_id, event, at)"
            " VALUES (%s, 'retried', now() - make_interval(days => %s))",
            days,
            days,
        )

    counts = await run_maintenance(pool, RETENTION)

    assert await ids(pool, "SELECT msg_id FROM nexus.message_events") == {3}
    assert counts["message_events"] == 1


async def test_only_idle_old_sessions_go(pool: AsyncConnectionPool) -> None:
    """Old sessions go unless a snapshot of theirs is queued or dead-lettered, or they are leased."""
    for name in ("idle", "queued", "dead", "leased"):
        await session(pool, name, days_ago=100, leased=name == "leased")
    await session(pool, "recent", days_ago=5)
    await queued(pool, QUEUE, "queued")
    await queued(pool, DLQ, "dead")

    counts = await run_maintenance(pool, RETENTION)

    remaining = await ids(pool, "SELECT session_id FROM nexus.sessions")
    assert {"queued", "dead", "leased", "recent"} == remaining
    assert counts["sessions"] == 1


async def test_counts_cover_every_table(pool: AsyncConnectionPool) -> None:
    """The result names each table it cleans, with zero when nothing aged out."""
    counts = await run_maintenance(pool, RETENTION)

    assert counts == {
        "a_nexus_prospect_ingestion": 0,
        "q_nexus_prospect_ingestion_dlq": 0,
        "a_nexus_prospect_ingestion_dlq": 0,
        "prospect_extractions": 0,
        "idempotency_keys": 0,
        "message_events": 0,
        "sessions": 0,
    }


async def test_negative_retention_is_refused(pool: AsyncConnectionPool) -> None:
    """A negative period is an error, not a licence to delete everything."""
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        await run_maintenance(
            pool, Retention(archive_days=-1, history_days=90, dead_letter_days=30)
        )


async def test_without_pg_cron_workers_do_the_maintenance(pool: AsyncConnectionPool) -> None:
    """A database without pg_cron reports that no cron job runs the maintenance."""
    assert await cron_schedules_maintenance(pool) is False


async def test_a_held_lock_skips_the_run(pool: AsyncConnectionPool, db_url: str) -> None:
    """While another session holds the maintenance lock, a run is skipped and deletes nothing."""
    await idempotency_key(pool, "old", hours_ago=48)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as other:
        await other.execute("SELECT pg_advisory_lock(%s)", (MAINTENANCE_LOCK_KEY,))
        result = await try_run_maintenance(pool, RETENTION)

    assert result is None
    assert {"old"} == await ids(pool, "SELECT key FROM nexus.idempotency_keys")


async def test_loop_runs_once_and_stops_on_the_event(pool: AsyncConnectionPool) -> None:
    """The loop cleans up at once, then waits for its interval and returns when stopped."""
    await idempotency_key(pool, "old", hours_ago=48)
    stop = asyncio.Event()
    loop = asyncio.create_task(maintenance_loop(pool, RETENTION, interval_s=3600, stop=stop))

    async def cleaned() -> bool:
        return not await ids(pool, "SELECT key FROM nexus.idempotency_keys")

    await eventually(cleaned, what="the old key to be deleted")
    stop.set()
    await asyncio.wait_for(loop, timeout=5)


async def test_a_stop_does_not_wait_for_a_blocked_turn(
    pool: AsyncConnectionPool, blocker: psycopg.AsyncConnection[Any]
) -> None:
    """A turn blocked in the database (a table lock held by someone else, or a connection cut
    off in a partition) does not hold up the worker's stop: the turn is cancelled."""
    await blocker.execute("LOCK TABLE nexus.idempotency_keys IN ACCESS EXCLUSIVE MODE")
    stop = asyncio.Event()
    loop = asyncio.create_task(maintenance_loop(pool, RETENTION, interval_s=3600, stop=stop))

    async def blocked() -> bool:
        return await lock_waiters(pool) >= 1

    await eventually(blocked, what="the turn to wait for the lock")
    stop.set()
    await asyncio.wait_for(loop, timeout=10)
    assert await lock_waiters(pool) == 0


async def test_two_loops_run_it_once(
    pool: AsyncConnectionPool, blocker: psycopg.AsyncConnection[Any]
) -> None:
    """Of two workers' loops, one runs the maintenance and the other skips it (advisory lock)."""
    await idempotency_key(pool, "old", hours_ago=48)
    await blocker.execute("LOCK TABLE nexus.idempotency_keys IN ACCESS EXCLUSIVE MODE")
    stops = [asyncio.Event(), asyncio.Event()]
    with capture_logs() as logs:
        first = asyncio.create_task(
            maintenance_loop(pool, RETENTION, interval_s=3600, stop=stops[0])
        )
        # The first run takes the lock, then waits behind the blocker's table lock.
        await eventually(lambda: lock_waiters(pool), what="the first run to block")
        second = asyncio.create_task(
            maintenance_loop(pool, RETENTION, interval_s=3600, stop=stops[1])
        )

        async def events(name: str) -> list[MutableMapping[str, Any]]:
            return [e for e in logs if e["event"] == name]

        await eventually(lambda: events("maintenance.skipped"))
        assert await lock_waiters(pool) == 1
        await blocker.rollback()
        done = await eventually(lambda: events("maintenance.done"), what="the first run to end")
        for stop in stops:
            stop.set()
        await asyncio.wait_for(asyncio.gather(first, second), timeout=5)

    assert len(done) == 1 and done[0]["idempotency_keys"] == 1
    assert len(await events("maintenance.skipped")) == 1


async def logs_until(pool: AsyncConnectionPool, event: str) -> list[MutableMapping[str, Any]]:
    """Run the maintenance loop until it logs `event`, check it is still running, stop it; the
    lines it logged."""
    stop = asyncio.Event()
    with capture_logs() as logs:
        loop = asyncio.create_task(maintenance_loop(pool, RETENTION, interval_s=3600, stop=stop))

        async def logged() -> bool:
            return any(e["event"] == event for e in logs)

        await eventually(logged, what=f"the loop to log {event}")
        assert not loop.done()
        stop.set()
        await asyncio.wait_for(loop, timeout=5)
    return logs


async def test_loop_leaves_the_work_to_pg_cron(pool: AsyncConnectionPool) -> None:
    """When pg_cron holds the maintenance job, the workers' loop deletes nothing."""
    await idempotency_key(pool, "old", hours_ago=48)
    await execute(
        pool,
        "CREATE OR REPLACE FUNCTION nexus.maintenance_scheduled_by_cron() RETURNS boolean"
        " LANGUAGE sql AS 'SELECT true'",
    )
    await logs_until(pool, "maintenance.left_to_pg_cron")

    assert await ids(pool, "SELECT key FROM nexus.idempotency_keys") == {"old"}


async def test_a_failing_run_does_not_end_the_loop(pool: AsyncConnectionPool) -> None:
    """A database error is logged and the loop keeps going until it is stopped."""
    await execute(pool, "DROP FUNCTION nexus.run_maintenance(integer, integer, integer, integer)")
    logs = await logs_until(pool, "maintenance.failed")

    assert [e["error"] for e in logs if e["event"] == "maintenance.failed"] == ["UndefinedFunction"]


async def autovacuum_is_on(pool: AsyncConnectionPool) -> bool:
    return bool(await execute(pool, "SELECT current_setting('autovacuum')::boolean"))


async def test_a_busy_table_without_autovacuum_is_named(pool: AsyncConnectionPool) -> None:
    """The queue's table with autovacuum turned off is reported with its dead rows; the other
    tables are reported only where the whole server runs without autovacuum."""
    await execute(pool, f"ALTER TABLE pgmq.q_{QUEUE} SET (autovacuum_enabled = off)")
    for _ in range(3):
        await queued(pool, QUEUE, "s-1")
    await execute(pool, f"DELETE FROM pgmq.q_{QUEUE}")

    skipped = await eventually(
        lambda: _with_dead_rows(pool, f"pgmq.q_{QUEUE}"), what="the deletes to be counted"
    )

    assert skipped[f"pgmq.q_{QUEUE}"] == 3
    others = {"nexus.sessions", "prospect_data", "prospect_extractions"}
    if await autovacuum_is_on(pool):
        assert not others & set(skipped)
    else:
        assert others <= set(skipped)


async def _with_dead_rows(pool: AsyncConnectionPool, table: str) -> dict[str, int] | None:
    skipped = await tables_autovacuum_skips(pool)
    return skipped if skipped.get(table) else None


async def warnings_of_one_turn(pool: AsyncConnectionPool) -> list[MutableMapping[str, Any]]:
    """The `maintenance.autovacuum_off` lines of the loop's first turn."""
    logs = await logs_until(pool, "maintenance.done")
    return [e for e in logs if e["event"] == "maintenance.autovacuum_off"]


async def test_the_loop_warns_of_a_table_autovacuum_skips(pool: AsyncConnectionPool) -> None:
    """A maintenance turn names the busy tables autovacuum skips, by name and count only."""
    await execute(pool, "ALTER TABLE nexus.sessions SET (autovacuum_enabled = false)")

    [warning] = await warnings_of_one_turn(pool)

    assert "nexus.sessions" in warning["tables"]
    assert isinstance(warning["dead_tuples"], int)
    assert set(warning) == {"event", "log_level", "tables", "dead_tuples", "hint"}


async def test_the_loop_is_quiet_where_autovacuum_covers_every_table(
    pool: AsyncConnectionPool,
) -> None:
    """No warning where autovacuum runs for the server and no table turns it off."""
    if not await autovacuum_is_on(pool):
        pytest.skip("this server runs without autovacuum")

    assert await warnings_of_one_turn(pool) == []
