"""Retention: delete archived messages and old history, by pg_cron where it runs, else by a worker."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from nexus_ingest.db import connection
from nexus_ingest.errors import DatabaseUnavailable
from nexus_ingest.queries import query

log = structlog.get_logger("nexus.maintenance")

# Any constant works; it only keeps two workers from running the maintenance at once.
MAINTENANCE_LOCK_KEY = 7_304_225_115
# After a failure (database down at start-up, say) the next try comes sooner than the interval.
_RETRY_AFTER_FAILURE_S = 60.0


@dataclass(frozen=True)
class Retention:
    """How long each kind of row is kept: the `NEXUS_RETENTION_*` settings."""

    archive_days: int
    history_days: int
    dead_letter_days: int


async def run_maintenance(pool: AsyncConnectionPool, retention: Retention) -> dict[str, int]:
    """Delete what has aged out now; returns how many rows went from each table."""
    async with connection(pool) as conn:
        return await _run(conn, retention)


async def try_run_maintenance(
    pool: AsyncConnectionPool, retention: Retention
) -> dict[str, int] | None:
    """Run the maintenance unless another worker is running it; None when it was skipped."""
    async with connection(pool) as conn, conn.transaction():
        locked = await _fetch_value(conn, "try_maintenance_lock", {"key": MAINTENANCE_LOCK_KEY})
        if not locked:
            return None
        return await _run(conn, retention)


async def cron_schedules_maintenance(pool: AsyncConnectionPool) -> bool:
    """Whether pg_cron holds the `nexus-maintenance` job for this database."""
    async with connection(pool) as conn:
        return bool(await _fetch_value(conn, "maintenance_scheduled_by_cron"))


async def tables_autovacuum_skips(pool: AsyncConnectionPool) -> dict[str, int]:
    """Nexus's busy tables that autovacuum leaves alone, with their dead row versions."""
    async with connection(pool) as conn:
        cur = await conn.execute(query("tables_autovacuum_skips"))
        return {str(table): int(dead) for table, dead in await cur.fetchall()}


async def maintenance_loop(
    pool: AsyncConnectionPool,
    retention: Retention,
    *,
    interval_s: float,
    stop: asyncio.Event,
) -> None:
    """Run the maintenance now and every `interval_s` seconds until `stop`, unless pg_cron does.

    A turn in progress when `stop` comes is cancelled (its deletes roll back, to be done by the
    next run): one blocked on a lock, or on a connection cut off, must not hold up the stop.
    """
    while not stop.is_set():
        turn = asyncio.create_task(_maintain_once(pool, retention))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({turn, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not turn.done():
            turn.cancel()
            with contextlib.suppress(asyncio.CancelledError, DatabaseUnavailable, psycopg.Error):
                await turn
            return
        ok = turn.result()
        pause = interval_s if ok else min(interval_s, _RETRY_AFTER_FAILURE_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=pause)


async def _maintain_once(pool: AsyncConnectionPool, retention: Retention) -> bool:
    """One turn of the loop; False when it failed and should be tried again soon."""
    try:
        await _warn_unless_autovacuumed(pool)
        if await cron_schedules_maintenance(pool):
            log.debug("maintenance.left_to_pg_cron")
            return True
        deleted = await try_run_maintenance(pool, retention)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        log.warning("maintenance.failed", error=type(exc).__name__)
        return False
    if deleted is None:
        log.info("maintenance.skipped", reason="another worker is running it")
    else:
        log.info("maintenance.done", **deleted)
    return True


async def _warn_unless_autovacuumed(pool: AsyncConnectionPool) -> None:
    # Retention deletes what has aged out; only VACUUM gives the space back. Without
    # autovacuum, the queue's table and index grow by every message ever acknowledged.
    skipped = await tables_autovacuum_skips(pool)
    if skipped:
        log.warning(
            "maintenance.autovacuum_off",
            tables=sorted(skipped),
            dead_tuples=sum(skipped.values()),
            hint="turn autovacuum on for these tables, or VACUUM them on a schedule",
        )


async def _run(conn: psycopg.AsyncConnection[Any], retention: Retention) -> dict[str, int]:
    params = {
        "archive_days": retention.archive_days,
        "history_days": retention.history_days,
        "dead_letter_days": retention.dead_letter_days,
    }
    counts = await _fetch_value(conn, "run_maintenance", params)
    return {str(table): int(count) for table, count in dict(counts).items()}


async def _fetch_value(
    conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any] | None = None
) -> Any:
    row = await (await conn.execute(query(name), params)).fetchone()
    return row[0] if row else None
