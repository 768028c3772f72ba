"""The door to Postgres: the connection pool, error translation, and the prospect tables."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

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
    url: str, *, min_size: int, max_size: int, timeout: float = 2.0
) -> AsyncConnectionPool:
    """A connection pool that opens in the background, so a server starts even while Postgres is down."""
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max(min_size, max_size),
        timeout=timeout,
        open=False,
        reconnect_timeout=0,  # keep retrying for ever: an outage must not kill the pool
        kwargs={"autocommit": True, "connect_timeout": 3, "prepare_threshold": _PREPARE_THRESHOLD},
        name="nexus",
    )
    await pool.open(wait=False)
    return pool


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
    """One extraction to merge into `prospect_data`."""

    msg_id: int | None
    fingerprint_id: str
    session_id: str
    seq: int | None
    extraction: Extraction
    enqueued_at: datetime | None = None


def save_params(request: SaveRequest) -> dict[str, Any]:
    """The parameters of `update_prospect_data` for one extraction."""
    extraction = request.extraction
    return {
        "fingerprint_id": request.fingerprint_id,
        "session_id": request.session_id,
        "data": Jsonb(extraction.prospect.model_dump(mode="json")),
        "msg_id": request.msg_id,
        "seq": request.seq,
        "extractor": extraction.extractor,
        "model": extraction.model,
        "input_tokens": extraction.input_tokens,
        "output_tokens": extraction.output_tokens,
        "cached_tokens": extraction.cached_tokens,
        "latency_ms": extraction.latency_ms,
        "enqueued_at": request.enqueued_at,
    }


async def save_extractions(
    conn: psycopg.AsyncConnection[Any], requests: Sequence[SaveRequest]
) -> list[SaveOutcome]:
    """Merge extractions in the caller's transaction, pipelined into one round trip."""
    outcomes: list[SaveOutcome] = []
    async with conn.cursor() as cur:
        await cur.executemany(
            query("update_prospect_data"), [save_params(r) for r in requests], returning=True
        )
        while True:
            row = await cur.fetchone()
            outcomes.append(cast(SaveOutcome, row[0] if row else "duplicate"))
            if not cur.nextset():
                break
    return outcomes


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
