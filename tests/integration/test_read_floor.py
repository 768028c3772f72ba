"""The worker's read under a held xmin horizon: bounded past what is gone, and losing nothing.

A transaction that holds the horizon keeps every deleted message in the queue's index, and an
unbounded read steps over all of them. The worker's reads in between full ones start past the
oldest message a full read saw ready (worker/floor.py, migration 016).
"""

from __future__ import annotations

import re

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.queries import query
from nexus_ingest.worker import WorkerConfig
from nexus_ingest.worker.floor import ReadFloor
from nexus_ingest.worker.plan import BatchPlan
from nexus_ingest.worker.settle import Settler
from tests.integration.test_batch_save import explained
from tests.worker_kit import send

QUEUE = "nexus_prospect_ingestion"
READ = "SELECT msg_id, ready_from FROM nexus.read_snapshots(%s, 30, 200, gen_random_uuid(), %s)"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _settler(pool: AsyncConnectionPool) -> tuple[Settler, Clock]:
    settler = Settler(pool, WorkerConfig(batch_size=200, vt_s=30))
    clock = Clock()
    settler.floor = ReadFloor(clock=clock)
    return settler, clock


def _read_buffers(plans: list[str]) -> int:
    """Buffers the read's own statement touched (its scan of the queue among them)."""
    [plan] = [p for p in plans if "WITH candidates" in p]
    return int(re.search(r"Buffers: shared hit=(\d+)", plan)[1])  # type: ignore[index]


def test_a_bounded_read_skips_what_a_held_transaction_keeps(db_url: str) -> None:
    """With 3,000 read and deleted messages kept by an open transaction, a read bounded by a
    full read's answer touches a small fraction of the buffers the full read does."""
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        psycopg.connect(db_url, autocommit=True) as holder,
    ):
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM nexus.sessions")
        assert conn.execute(
            "SELECT backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = %s",
            (holder.info.backend_pid,),
        ).fetchone() == (True,)
        conn.execute(
            "SELECT pgmq.send_batch(%s, array_agg(jsonb_build_object('fingerprint', 'fp-' || g)),"
            " array_agg(jsonb_build_object('x-pgmq-group', 's-' || g)))"
            " FROM generate_series(1, 3000) AS g",
            (QUEUE,),
        )
        for _ in range(15):
            taken = [row[0] for row in conn.execute(READ, (QUEUE, 0)).fetchall()]
            conn.execute("SELECT pgmq.delete(%s, %s::bigint[])", (QUEUE, taken))
        conn.execute(
            "SELECT pgmq.send_batch(%s, array_agg(jsonb_build_object('fingerprint', 'fp-new' || g)),"
            " array_agg(jsonb_build_object('x-pgmq-group', 's-new' || g)))"
            " FROM generate_series(1, 5) AS g",
            (QUEUE,),
        )
        plans = explained(conn, analyze=True)
        conn.execute("SET auto_explain.log_buffers = on")
        [ready_from] = {
            row[1]
            for row in conn.execute(
                "SELECT msg_id, ready_from FROM nexus.read_snapshots(%s, 30, 1, gen_random_uuid(), 0)",
                (QUEUE,),
            )
        }
        full = _read_buffers(plans)
        plans.clear()
        bounded = conn.execute(READ, (QUEUE, ready_from - 1)).fetchall()
        holder.execute("ROLLBACK")
    assert len(bounded) == 4  # the five new messages, less the one the full read took
    assert _read_buffers(plans) * 10 < full, (_read_buffers(plans), full)


async def test_a_message_committed_late_is_read_by_the_next_full_read(
    pool: AsyncConnectionPool, db_url: str
) -> None:
    """A message whose id is below a full read's answer but which committed after it is skipped
    by bounded reads and taken by the next full read: later, not lost."""
    settler, clock = _settler(pool)
    item = queue.Snapshot(
        "s-late",
        "fp-late",
        {
            "sessionId": "s-late",
            "fingerprint": "fp-late",
            "messages": [{"role": "user", "content": "hola"}],
        },
        {},
    ).as_item()
    async with await psycopg.AsyncConnection.connect(db_url) as late:
        rows = await (
            await late.execute(query("enqueue_snapshots"), {"queue": QUEUE, "items": Jsonb([item])})
        ).fetchall()
        late_id = rows[0][1]
        early_id = await send(pool, "s-early", "Ana")
        assert early_id > late_id

        first = await settler.read(200)  # t=0: full
        assert first is not None and _ids(first) == {early_id}
        clock.now = 1.0
        assert await settler.read(200) is None  # t=1: full, nothing ready
        await late.commit()

    clock.now = 1.5  # bounded by the answer of t=0: past the late message's id
    assert settler.floor.next_after() == early_id - 1
    assert await settler.read(200) is None
    clock.now = 2.0  # full
    again = await settler.read(200)
    assert again is not None and _ids(again) == {late_id}


async def test_the_bound_never_passes_a_message_of_a_leased_session(
    pool: AsyncConnectionPool,
) -> None:
    """A message waiting for its session's lease is ready: full reads count it, so once the
    lease is given back a bounded read takes it."""
    settler, clock = _settler(pool)
    first_id = await send(pool, "s-busy", "Ana")
    first = await settler.read(200)  # t=0: full, leases s-busy
    assert first is not None and _ids(first) == {first_id}
    waiting_id = await send(pool, "s-busy", "Ana Vega", turns=2)
    other_id = await send(pool, "s-other", "Luis")

    clock.now = 1.0  # full: s-busy is leased, so only s-other's message is taken
    second = await settler.read(200)
    assert second is not None and _ids(second) == {other_id}
    clock.now = 2.0  # full: still leased
    assert await settler.read(200) is None
    async with pool.connection() as conn:
        await queue.release_sessions(conn, {first.work[0].message.lease: ["s-busy"]})

    clock.now = 2.5  # bounded by the answer of t=1, which counted the waiting message
    assert settler.floor.next_after() == waiting_id - 1
    third = await settler.read(200)
    assert third is not None and _ids(third) == {waiting_id}


def _ids(plan: BatchPlan) -> set[int]:
    return {item.message.msg_id for item in plan.work} | {m.msg_id for m in plan.superseded}
