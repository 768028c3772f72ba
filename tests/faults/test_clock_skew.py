"""Time across processes: each worker host keeps its own clock and Postgres its own, so every
"when may this run again" is decided on the database's clock, and every wait in a worker is a
duration, and nothing a worker holds outlives the lease it read it under. These tests run real
workers against a real Postgres, with the worker's wall clock ten minutes off or its work
slower than a lease, and check that no snapshot is held back past its time, read in a loop, or
paid for twice."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.extract.metered import MeteredExtractor
from nexus_ingest.models import ChatMessage
from nexus_ingest.policy import ExtractionPolicy
from tests.fakes.llm_server import ANTHROPIC_PATH, BATCHES_PATH, FakeLLMServer, Text
from tests.worker_kit import FAST, fetch, queue_length, until

if TYPE_CHECKING:
    from tests.fakes.fixtures import ManualClock

# stand_in: the billing stand-in, whose batches end 60 s after their creation on `clock`, a
# clock moved by hand; claude: Claude on it.
pytest_plugins = ["tests.fakes.fixtures"]

# Every snapshot is backlog, sent in a Message Batch; claims last two seconds (the lease), so a
# wait of a few seconds in the worker outlasts a read's lease.
BATCHING = dataclasses.replace(
    FAST, vt_s=2, policy=ExtractionPolicy(batch_min_age_s=0), batch_poll_s=0.2
)


async def post(pool: AsyncConnectionPool, session: str, text: str) -> int:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": "¿Y?"}]
    body = {"sessionId": session, "fingerprint": f"fp-{session}", "messages": messages}
    return (await queue.enqueue(pool, queue.Snapshot(session, f"fp-{session}", body, {}))).msg_id


def batched_ids(server: FakeLLMServer) -> list[str]:
    """Every message id sent in any Message Batch, once per batch that carried it."""
    return [
        request["custom_id"]
        for call in server.calls
        if call.method == "POST" and call.path == BATCHES_PATH
        for request in call.body["requests"]
    ]


def direct(server: FakeLLMServer) -> list[Any]:
    return [c for c in server.calls if c.path == ANTHROPIC_PATH]


async def reads(pool: AsyncConnectionPool, msg_id: int) -> int | None:
    rows = await fetch(
        pool, "SELECT read_ct FROM pgmq.q_nexus_prospect_ingestion WHERE msg_id = %s", msg_id
    )
    return rows[0][0] if rows else None


async def dead_letters(pool: AsyncConnectionPool) -> int:
    return int(
        (await fetch(pool, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq"))[0][0]
    )


async def open_batches(pool: AsyncConnectionPool) -> int:
    return int((await fetch(pool, "SELECT count(*) FROM nexus.llm_batches"))[0][0])


async def test_a_backlog_snapshot_read_while_a_batch_is_collected_is_batched_at_once(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    clock: ManualClock,
) -> None:
    """Collecting an ended batch may take minutes (each unusable answer is asked again
    directly). A backlog snapshot read meanwhile is submitted within its lease all the same:
    waiting behind the collection, its lease ran out again and again and every new read of it
    counted toward the dead-letter queue, though it was never sent to the model."""
    stand_in.script(Text("no tool call here"))  # the first batch's answer: asked again directly
    stand_in.latency_s = 4.5  # that direct call outlasts two leases
    await post(pool, "c1", "Me llamo Cora")
    await running(claude, BATCHING)
    await until(lambda: _equal(open_batches(pool), 1), what="the first batch recorded")
    clock.now += 61  # the first batch ends
    await until(lambda: _true(len(direct(stand_in)) == 1), what="the collection under way")
    later = await post(pool, "c2", "Me llamo Dora")
    await until(lambda: _true(str(later) in batched_ids(stand_in)), timeout=15, what="a batch")
    assert await reads(pool, later) == 1, "the snapshot was read once, and batched"
    assert await dead_letters(pool) == 0
    assert batched_ids(stand_in).count(str(later)) == 1


async def test_a_batch_submitted_slowly_does_not_pay_twice_for_a_snapshot(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch's upload may outlast the lease of the reads it carries (a thousand snapshots of
    25 KB each). Its snapshots are kept hidden, by the database's clock, before the upload
    starts: none of them comes back meanwhile to be read and sent in a second batch."""
    submit = claude.submit_batch

    async def slow_submit(snapshots: Mapping[str, Sequence[ChatMessage]]) -> str:
        await asyncio.sleep(3.0)  # the upload: longer than the reads' two-second lease
        return await submit(snapshots)

    monkeypatch.setattr(claude, "submit_batch", slow_submit)
    msg_id = await post(pool, "s1", "Me llamo Sara")
    await running(claude, BATCHING)
    await until(lambda: _equal(open_batches(pool), 1), what="the batch recorded")
    deadline = time.monotonic() + 5.0  # a second batch would have gone by now
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        assert batched_ids(stand_in).count(str(msg_id)) <= 1, "paid for twice"
    assert await reads(pool, msg_id) == 1
    assert await open_batches(pool) == 1


@pytest.mark.parametrize("skew_s", [-600.0, 600.0])
async def test_a_worker_whose_wall_clock_is_off_paces_by_the_database_clock(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    monkeypatch: pytest.MonkeyPatch,
    skew_s: float,
) -> None:
    """A worker host ten minutes ahead or behind holds a new chat back for the policy's
    second, by Postgres's clock, and extracts it once: not at once, not ten minutes late, and
    not deferred again and again."""
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew_s)
    policy = ExtractionPolicy(first_within_s=1.0, hot_at_once=False)
    await running(claude, dataclasses.replace(FAST, policy=policy))
    msg_id = await post(pool, "k1", "Hola, buenas tardes")
    await until(lambda: _equal(queue_length(pool), 0), timeout=10, what="the extraction")
    [(waited, deferrals)] = await fetch(
        pool,
        "SELECT extract(epoch FROM e.created_at - e.enqueued_at)::float8,"
        " (SELECT count(*) FROM nexus.message_events m"
        "  WHERE m.msg_id = e.msg_id AND m.event = 'deferred')"
        " FROM prospect_extractions e WHERE e.msg_id = %s",
        msg_id,
    )
    assert 1.0 <= waited < 5.0
    assert deferrals == 1 and len(direct(stand_in)) == 1


async def _equal(value: Any, expected: Any) -> bool:
    return await value == expected


async def _true(value: object) -> bool:
    return bool(value)
