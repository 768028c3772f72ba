"""Message Batches through the real worker: backlog snapshots submitted to the billing
stand-in's batch endpoints, collected when the batch ends, even by a worker started after the
one that submitted it."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.extract.metered import MeteredExtractor
from nexus_ingest.policy import ExtractionPolicy
from nexus_ingest.spend import TOKEN_KINDS
from nexus_ingest.worker import Worker
from tests.fakes.llm_server import ANTHROPIC_PATH, BATCHES_PATH, Error, FakeLLMServer, Text
from tests.worker_kit import FAST, fetch, queue_length, until

if TYPE_CHECKING:
    from tests.fakes.fixtures import ManualClock

# stand_in: the billing stand-in, whose batches end 60 s after their creation on `clock`, a
# clock moved by hand; claude: Claude on it.
pytest_plugins = ["tests.fakes.fixtures"]
MODEL = "claude-haiku-5-5"  # the `claude` fixture's
# Every snapshot is backlog: it goes in a batch, polled every 0.2 s.
BATCHING = dataclasses.replace(FAST, policy=ExtractionPolicy(batch_min_age_s=0), batch_poll_s=0.2)


async def post(pool: AsyncConnectionPool, session: str, text: str) -> int:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": "¿Y?"}]
    body = {"sessionId": session, "fingerprint": f"fp-{session}", "messages": messages}
    return (await queue.enqueue(pool, queue.Snapshot(session, f"fp-{session}", body, {}))).msg_id


def submitted(server: FakeLLMServer) -> list[Any]:
    """Every batch the stand-in was asked to create."""
    return [c for c in server.calls if c.method == "POST" and c.path == BATCHES_PATH]


def direct(server: FakeLLMServer) -> list[Any]:
    return [c for c in server.calls if c.path == ANTHROPIC_PATH]


async def saved(pool: AsyncConnectionPool) -> list[tuple[Any, ...]]:
    return await fetch(
        pool, "SELECT msg_id, batch, cost_usd::float8 FROM prospect_extractions ORDER BY msg_id"
    )


async def open_batches(pool: AsyncConnectionPool) -> int:
    return int((await fetch(pool, "SELECT count(*) FROM nexus.llm_batches"))[0][0])


async def settled(pool: AsyncConnectionPool, count: int) -> bool:
    return len(await saved(pool)) == count and await queue_length(pool) == 0


async def test_backlog_goes_in_one_batch_and_comes_back_at_half_price(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    clock: ManualClock,
) -> None:
    """Three backlog snapshots go in one batch, stay hidden with their sessions free while it
    runs, and are saved as batch answers at half the direct price once it ends."""
    ids = [await post(pool, f"b{n}", f"Me llamo Cliente{n}, quiero precios") for n in range(3)]
    await running(claude, BATCHING)
    await until(lambda: _true(len(submitted(stand_in)) == 1), what="a batch")
    await until(lambda: _equal(open_batches(pool), 1), what="the batch recorded")
    assert len(submitted(stand_in)[0].body["requests"]) == 3
    assert await queue_length(pool) == 3 and await saved(pool) == []
    hidden = await fetch(
        pool, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion WHERE vt > clock_timestamp()"
    )
    leased = await fetch(pool, "SELECT count(*) FROM nexus.sessions WHERE lease_token IS NOT NULL")
    assert hidden == [(3,)] and leased == [(0,)]
    clock.now += 61
    await until(lambda: settled(pool, 3), timeout=10, what="the batch's answers saved")
    rows = await saved(pool)
    assert [r[0] for r in rows] == ids and all(r[1] for r in rows)
    assert sum(r[2] for r in rows) == pytest.approx(stand_in.spent_usd())
    assert all(charge.batch for charge in stand_in.ledger)
    assert direct(stand_in) == [] and await open_batches(pool) == 0


async def _true(value: bool) -> bool:
    return value


async def _equal(value: Any, expected: int) -> bool:
    return await value == expected


async def test_a_restarted_worker_collects_the_batch_instead_of_resubmitting_it(
    pool: AsyncConnectionPool,
    db_url: str,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    clock: ManualClock,
) -> None:
    """A worker stopped while its batch runs leaves it recorded; the next worker takes it
    over and saves its answers, and the stand-in never sees a second batch."""
    ids = [await post(pool, f"r{n}", f"Me llamo Cliente{n}") for n in range(2)]
    first = Worker(pool, claude, BATCHING, listen_url=db_url)
    stop = asyncio.Event()
    task = asyncio.create_task(first.run(stop))
    await until(lambda: _equal(open_batches(pool), 1), timeout=10, what="the batch recorded")
    stop.set()
    await asyncio.wait_for(task, timeout=15)
    clock.now += 61  # the batch ends while no worker runs
    assert await saved(pool) == []

    second = Worker(pool, claude, BATCHING, listen_url=db_url)
    stop = asyncio.Event()
    task = asyncio.create_task(second.run(stop))
    try:
        await until(lambda: settled(pool, 2), timeout=15, what="the batch's answers saved")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
    assert len(submitted(stand_in)) == 1 and direct(stand_in) == []
    assert [r[0] for r in await saved(pool)] == ids and await open_batches(pool) == 0


async def test_an_unusable_batch_answer_is_asked_again_directly(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    clock: ManualClock,
) -> None:
    """A batch answer without the tool call is asked again with a direct call (and its
    re-ask), whose answer is saved at the direct price."""
    stand_in.script(Text("no tool call here"))
    spent_before = sum(
        REGISTRY.get_sample_value("nexus_llm_cost_usd_total", {"model": MODEL, "kind": k}) or 0.0
        for k in TOKEN_KINDS
    )
    msg_id = await post(pool, "u1", "Me llamo Uma")
    await running(claude, BATCHING)
    await until(lambda: _equal(open_batches(pool), 1), what="the batch recorded")
    clock.now += 61
    await until(lambda: settled(pool, 1), timeout=10, what="the direct answer saved")
    [(saved_id, batch, cost)] = await saved(pool)
    assert (saved_id, batch) == (msg_id, False) and cost > 0
    assert len(submitted(stand_in)) == 1 and len(direct(stand_in)) == 1
    # /metrics count both answers the provider billed: the unusable one from the batch (at the
    # batch price) and the direct one.
    spent = sum(
        REGISTRY.get_sample_value("nexus_llm_cost_usd_total", {"model": MODEL, "kind": k}) or 0.0
        for k in TOKEN_KINDS
    )
    assert len(stand_in.ledger) == 2
    assert spent - spent_before == pytest.approx(stand_in.spent_usd())


async def test_a_passing_batch_failure_is_retried(
    pool: AsyncConnectionPool, running: Any, stand_in: FakeLLMServer, claude: MeteredExtractor
) -> None:
    """An overloaded batch entry is settled as a retry (a failed attempt), and the snapshot
    goes in a later batch that answers it."""
    stand_in.batch_delay_s = 0.0
    stand_in.script(Error(529))
    msg_id = await post(pool, "o1", "Me llamo Olga")
    await running(claude, BATCHING)
    await until(lambda: settled(pool, 1), timeout=20, what="the retried answer saved")
    events = await fetch(
        pool, "SELECT event FROM nexus.message_events WHERE msg_id = %s ORDER BY id", msg_id
    )
    assert [e for (e,) in events] == ["batched", "failed", "batched"]
    assert len(submitted(stand_in)) == 2 and direct(stand_in) == []
    assert [(r[0], r[1]) for r in await saved(pool)] == [(msg_id, True)]


async def test_a_batch_the_provider_no_longer_knows_gives_its_snapshots_back(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    clock: ManualClock,
) -> None:
    """A batch the provider answers 404 for (expired, deleted) is lost, not retried: its
    snapshot comes back and goes in a new batch, instead of staying hidden for good."""
    msg_id = await post(pool, "lost", "Me llamo Luz")
    await running(claude, BATCHING)
    await until(lambda: _equal(open_batches(pool), 1), what="the batch recorded")
    stand_in._state.batches.clear()  # the provider forgets it
    await until(
        lambda: _true(len(submitted(stand_in)) == 2), timeout=10, what="the snapshot batched again"
    )
    clock.now += 61
    await until(lambda: settled(pool, 1), timeout=10, what="the new batch's answer saved")
    assert [(r[0], r[1]) for r in await saved(pool)] == [(msg_id, True)]


async def test_a_batch_being_collected_is_not_taken_over(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    clock: ManualClock,
) -> None:
    """While one worker collects an ended batch (here: asks its unusable answer again directly,
    a slow call), it keeps its claim: a second worker polling meanwhile does not take the batch
    over and pay for the same snapshot again."""
    config = dataclasses.replace(BATCHING, vt_s=2)  # claims last two seconds
    stand_in.script(Text("no tool call here"))
    stand_in.latency_s = 3.0  # a direct call outlasts the claim
    msg_id = await post(pool, "c1", "Me llamo Cora")
    await running(claude, config)
    await until(lambda: _equal(open_batches(pool), 1), what="the batch recorded")
    await running(claude, config)  # a second worker, polling every 0.2 s
    clock.now += 61
    await until(lambda: settled(pool, 1), timeout=20, what="the direct answer saved")
    assert [(r[0], r[1]) for r in await saved(pool)] == [(msg_id, False)]
    assert len(direct(stand_in)) == 1, "the snapshot was asked for directly once"
