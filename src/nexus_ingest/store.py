"""The door to Postgres: the connection pool, error translation, and the prospect tables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from nexus_ingest.errors import DatabaseUnavailable
from nexus_ingest.extract.base import Extraction
from nexus_ingest.queries import query

# orjson is several times faster than the standard library for the snapshots we move.
set_json_dumps(orjson.dumps)
set_json_loads(orjson.loads)

SaveOutcome = Literal["applied", "stale", "duplicate"]

# psycopg prepares a statement server-side after this many uses; the hot queries run
# thousands of times, so preparing early saves parsing and planning on every call.
_PREPARE_THRESHOLD = 2


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    timeout: float = 2.0,
    synchronous_commit: bool = True,
) -> AsyncConnectionPool:
    """A connection pool that opens in the background, so a server starts even while Postgres is down.

    With `synchronous_commit` off, commits return before their WAL reaches the disk: a database
    crash may forget the last fraction of a second of them, each whole. Only for work that a
    redelivery repeats harmlessly (the worker's), never for what a client was told is stored.
    """
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max(min_size, max_size),
        timeout=timeout,
        open=False,
        reconnect_timeout=0,  # keep retrying for ever: an outage must not kill the pool
        kwargs={"autocommit": True, "connect_timeout": 3, "prepare_threshold": _PREPARE_THRESHOLD},
        configure=None if synchronous_commit else _commit_without_waiting,
        name="nexus",
    )
    await pool.open(wait=False)
    return pool


async def _commit_without_waiting(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(query("commit_without_waiting"))


@asynccontextmanager
async def connection(
    pool: AsyncConnectionPool, *, timeout: float | None = None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection; any failure to reach the database becomes `DatabaseUnavailable`."""
    try:
        async with asyncio.timeout(timeout), pool.connection() as conn:
            yield conn
    except (psycopg.OperationalError, PoolTimeout, TimeoutError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc


async def ping(pool: AsyncConnectionPool, *, timeout: float = 1.0) -> None:
    """Raise `DatabaseUnavailable` unless the database answers within `timeout` seconds."""
    async with connection(pool, timeout=timeout) as conn:
        await conn.execute(query("ping"))


@dataclass(frozen=True)
class SaveRequest:
    """One extraction to merge into `prospect_data`, and the queued message it came from."""

    msg_id: int
    fingerprint_id: str
    session_id: str
    seq: int | None
    extraction: Extraction
    enqueued_at: datetime | None = None
    lease: UUID | None = None

    def as_item(self) -> dict[str, Any]:
        """The request as one item of `nexus.save_extractions`; absent keys read as null or 0."""
        extraction = self.extraction
        item: dict[str, Any] = {
            "msg_id": self.msg_id,
            "fingerprint_id": self.fingerprint_id,
            "session_id": self.session_id,
            "data": extraction.prospect.model_dump(mode="json", exclude_none=True),
            "extractor": extraction.extractor,
            "latency_ms": extraction.latency_ms,
        }
        # Every byte is parsed again by the server, so nulls and zero counts are left out.
        for key, value in (
            ("seq", self.seq),
            ("lease", self.lease),
            ("model", extraction.model),
            ("input_tokens", extraction.input_tokens),
            ("output_tokens", extraction.output_tokens),
            ("cached_tokens", extraction.cached_tokens),
            ("enqueued_at", self.enqueued_at),
        ):
            if value:
                item[key] = value
        return item


async def save_extractions(
    conn: psycopg.AsyncConnection[Any],
    requests: Sequence[SaveRequest],
    *,
    queue: str,
    archive: bool,
) -> list[SaveOutcome]:
    """Merge extractions, record their history, acknowledge their messages and release their
    sessions, in one statement and the caller's transaction; one outcome per request, in order.
    """
    if not requests:
        return []
    params = {"queue": queue, "items": Jsonb([r.as_item() for r in requests]), "archive": archive}
    rows = await (await conn.execute(query("save_extractions"), params)).fetchall()
    outcomes = {msg_id: cast(SaveOutcome, outcome) for msg_id, outcome in rows}
    return [outcomes[r.msg_id] for r in requests]


async def fetch_prospect(
    pool: AsyncConnectionPool, fingerprint_id: str
) -> Mapping[str, Any] | None:
    """The merged prospect row of one visitor, or None."""
    async with connection(pool) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("prospect_by_fingerprint"), {"fingerprint_id": fingerprint_id})
        return await cur.fetchone()


async def forget_prospect(pool: AsyncConnectionPool, fingerprint_id: str) -> dict[str, int]:
    """Erase one visitor everywhere; returns how many rows went from each place."""
    async with connection(pool) as conn, conn.transaction():
        row = await (
            await conn.execute(query("forget_prospect"), {"fingerprint_id": fingerprint_id})
        ).fetchone()
    return dict(row[0]) if row else {}
