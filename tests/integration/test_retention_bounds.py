"""Retention bounds every table: once a load has aged out, only what is kept by design remains.

A Nexus that runs for weeks must not grow a table by every snapshot it ever saw. Each table
of the schema is either trimmed by `nexus.run_maintenance` or bounded by what it holds (one row
per visitor, per queue, per batch in flight); a new table has to say which here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.errors import Permanent
from nexus_ingest.extract.base import Extraction
from nexus_ingest.maintenance import Retention, run_maintenance
from nexus_ingest.models import ChatMessage, Prospect
from nexus_ingest.worker import WorkerConfig
from nexus_ingest.worker.once import consume_once
from tests.worker_kit import fetch, queue_length

# The settings' defaults: archived messages a week, dead letters a month, history 90 days.
RETENTION = Retention(archive_days=7, history_days=90, dead_letter_days=30)

# Every table retention trims, with the column its age is read from.
TRIMMED = {
    "pgmq.a_nexus_prospect_ingestion": "archived_at",
    "pgmq.q_nexus_prospect_ingestion_dlq": "enqueued_at",
    "pgmq.a_nexus_prospect_ingestion_dlq": "archived_at",
    "public.prospect_extractions": "created_at",
    "nexus.idempotency_keys": "created_at",
    "nexus.message_events": "at",
    "nexus.sessions": "updated_at",
}
# Every table retention leaves alone, and what bounds it instead.
BOUNDED_BY_DESIGN = {
    "pgmq.q_nexus_prospect_ingestion": "the backlog: workers delete or archive what they settle",
    "public.prospect_data": "one row per visitor: the leads sales people keep",
    "nexus.forgotten": "one tombstone per visitor erased with `nexus forget`",
    "nexus.llm_batches": "one row per Message Batch in flight, deleted when collected or lost",
    "nexus.schema_migrations": "one row per migration",
    "pgmq.meta": "one row per queue",
    "pgmq.notify_insert_throttle": "one row per queue that notifies",
    "pgmq.topic_bindings": "one row per topic binding (Nexus makes none)",
}

ARCHIVING = WorkerConfig(batch_size=50, archive=True)


class PoisonOrName:
    """Offline: takes the name from the last turn; a turn saying `poison` fails for good."""

    name = "poison-or-name"
    in_process = True

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        last = messages[-1].content
        if last == "poison":
            raise Permanent("refused on purpose")
        return Extraction(Prospect(nombre=last), extractor=self.name)

    async def aclose(self) -> None:
        return None


def _snapshot(session: str, turns: list[str], key: str) -> queue.Snapshot:
    fingerprint = f"fp-{session}"
    body = {
        "sessionId": session,
        "fingerprint": fingerprint,
        "messages": [{"role": "user", "content": t} for t in turns],
    }
    return queue.Snapshot(
        session, fingerprint, body, {}, idempotency_key=key, request_hash=f"hash-{key}"
    )


async def _work_a_day(pool: AsyncConnectionPool, sessions: int) -> None:
    """A day's traffic: every session posts twice (with idempotency keys), every fourth one's
    last snapshot is poison; all of it processed, archived or dead-lettered."""
    snapshots = []
    for n in range(sessions):
        last = "poison" if n % 4 == 0 else f"Ana{n}"
        snapshots.append(_snapshot(f"day-{n}", ["Hola"], f"day-{n}-1"))
        snapshots.append(_snapshot(f"day-{n}", ["Hola", last], f"day-{n}-2"))
    await queue.enqueue_many(pool, snapshots)
    for _ in range(20):
        if await queue_length(pool) == 0:
            return
        await consume_once(pool, PoisonOrName(), ARCHIVING)
    raise AssertionError("the day's snapshots were not all settled")


async def _age_everything(pool: AsyncConnectionPool, days: int) -> None:
    """Move every trimmed table's rows `days` days into the past, as weeks of uptime would."""
    async with pool.connection() as conn:
        for table, column in TRIMMED.items():
            await conn.execute(
                f"UPDATE {table} SET {column} = {column} - make_interval(days => %s)",
                (days,),
            )


async def _rows(pool: AsyncConnectionPool, table: str) -> int:
    return int((await fetch(pool, f"SELECT count(*) FROM {table}"))[0][0])


async def test_every_table_is_trimmed_or_bounded_by_design(pool: AsyncConnectionPool) -> None:
    """No table of the schema is left out: each is trimmed by retention or bounded by design."""
    rows: list[Any] = await fetch(
        pool,
        "SELECT n.nspname || '.' || c.relname FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname IN ('nexus', 'public', 'pgmq')",
    )
    tables = {r[0] for r in rows}

    assert tables == set(TRIMMED) | set(BOUNDED_BY_DESIGN)


async def test_a_day_of_load_leaves_nothing_but_the_prospects_once_it_ages_out(
    pool: AsyncConnectionPool,
) -> None:
    """After a worked day has aged past every retention period, one maintenance run empties
    every trimmed table (dead letters included); the prospects stay."""
    await _work_a_day(pool, sessions=40)
    dead = await _rows(pool, "pgmq.q_nexus_prospect_ingestion_dlq")
    assert dead == 10, "every fourth session was dead-lettered"
    prospects = await _rows(pool, "public.prospect_data")

    await _age_everything(pool, days=365)
    counts = await run_maintenance(pool, RETENTION)

    left = {table: await _rows(pool, table) for table in TRIMMED}
    assert left == dict.fromkeys(TRIMMED, 0)
    assert counts["q_nexus_prospect_ingestion_dlq"] == dead
    assert await _rows(pool, "public.prospect_data") == prospects


async def test_recent_dead_letters_stay_and_old_ones_go_with_their_sessions(
    pool: AsyncConnectionPool,
) -> None:
    """A dead letter is kept for its own period from when it died, longer than an archived
    message, then goes; an idle old session it was holding goes with it, one whose dead letter
    is recent stays."""
    await _work_a_day(pool, sessions=8)  # sessions day-0 and day-4 are dead-lettered
    await _age_everything(pool, days=100)
    async with pool.connection() as conn:  # day-4 died 10 days ago: older than a week's archive
        await conn.execute(
            "UPDATE pgmq.q_nexus_prospect_ingestion_dlq SET enqueued_at = now() - interval '10 days'"
            " WHERE headers ->> 'x-pgmq-group' = 'day-4'"
        )

    await run_maintenance(pool, RETENTION)

    groups = await fetch(
        pool, "SELECT headers ->> 'x-pgmq-group' FROM pgmq.q_nexus_prospect_ingestion_dlq"
    )
    assert [g[0] for g in groups] == ["day-4"]
    sessions = await fetch(pool, "SELECT session_id FROM nexus.sessions")
    assert [s[0] for s in sessions] == ["day-4"]
