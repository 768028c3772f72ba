"""What Nexus shows of its own work (the dashboard's figures, /metrics) against what truly
happened: the snapshots sent, and the rows the database holds."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.dashboard import data
from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.metered import MeteredExtractor
from nexus_ingest.policy import ExtractionPolicy
from nexus_ingest.spend import TOKEN_KINDS
from tests.fakes.llm_server import FakeLLMServer
from tests.worker_kit import FAST, RecordingExtractor, fetch, send, until

if TYPE_CHECKING:
    from tests.fakes.fixtures import ManualClock

pytest_plugins = ["tests.fakes.fixtures"]  # stand_in: the billing stand-in; claude: on it
CLAUDE_MODEL = "claude-haiku-5-5"  # the `claude` fixture's


async def _received_last_hour(pool: AsyncConnectionPool) -> int:
    return sum(m.received for m in await data.throughput(pool))


async def test_a_snapshot_received_hours_ago_is_not_received_again_when_it_is_retried(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A snapshot queued two hours ago whose attempt fails now is no snapshot received in the
    last hour: the chart counts a message at its receipt, not at its latest trace."""
    msg_id = await send(pool, "old", "Ana")
    await fetch(
        pool,
        "UPDATE pgmq.q_nexus_prospect_ingestion SET enqueued_at = enqueued_at - interval '2 hours'"
        " WHERE msg_id = %s RETURNING 1",
        msg_id,
    )
    assert await _received_last_hour(pool) == 0
    extractor = RecordingExtractor(failures=[RetryLater("busy")])
    await running(extractor, dataclasses.replace(FAST, policy=None))
    await until(
        lambda: fetch(pool, "SELECT 1 FROM nexus.message_events WHERE event = 'failed'"),
        what="the failed attempt recorded",
    )
    assert await _received_last_hour(pool) == 0


async def test_a_dead_letter_of_hours_ago_replayed_now_is_not_received_in_the_hour(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A snapshot received and dead-lettered two hours ago, replayed and saved now, was not
    received in the last hour: neither its original nor its replay counts."""
    msg_id = await send(pool, "late", "Ana")
    await running(
        RecordingExtractor(failures=[Permanent("bad")]), dataclasses.replace(FAST, policy=None)
    )
    await until(
        lambda: fetch(pool, "SELECT 1 FROM pgmq.q_nexus_prospect_ingestion_dlq"),
        what="the dead letter",
    )
    for table, column in (
        ("pgmq.q_nexus_prospect_ingestion_dlq", "enqueued_at"),
        ("nexus.message_events", "at"),
    ):
        await fetch(
            pool, f"UPDATE {table} SET {column} = {column} - interval '2 hours' RETURNING 1"
        )
    assert await _received_last_hour(pool) == 0
    [(_, replayed)] = await queue.replay_dead_letters(pool, replay_all=True)
    await until(
        lambda: fetch(pool, "SELECT 1 FROM prospect_extractions WHERE msg_id = %s", replayed),
        what="the replay saved",
    )
    assert msg_id != replayed
    assert await _received_last_hour(pool) == 0


BATCHING = dataclasses.replace(FAST, policy=ExtractionPolicy(batch_min_age_s=0), batch_poll_s=0.2)


def _billed_now(model: str) -> dict[tuple[str, str], float]:
    names = ("nexus_llm_billed_tokens_total", "nexus_llm_cost_usd_total")
    return {
        (name, kind): REGISTRY.get_sample_value(name, {"model": model, "kind": kind}) or 0.0
        for name in names
        for kind in TOKEN_KINDS
    }


async def test_a_batch_collected_twice_is_counted_once_on_metrics(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    clock: ManualClock,
) -> None:
    """When saving a batch's answers fails and the worker fetches its results again at the next
    poll, /metrics still count the batch's tokens and cost once, as the provider bills them."""
    for n in range(2):
        body = {
            "sessionId": f"bt{n}",
            "fingerprint": f"fp-bt{n}",
            "messages": [{"role": "user", "content": f"Me llamo Cliente{n}"}],
        }
        await queue.enqueue(pool, queue.Snapshot(f"bt{n}", f"fp-bt{n}", body, {}))
    before = _billed_now(CLAUDE_MODEL)
    await running(claude, BATCHING)
    await until(lambda: fetch(pool, "SELECT 1 FROM nexus.llm_batches"), what="a batch recorded")
    await _execute(pool, _RENAME_SAVE % ("save_extractions", "save_extractions_off"))
    clock.now += 61
    await until(lambda: _results_fetched(stand_in, 2), timeout=15, what="two collections")
    await _execute(pool, _RENAME_SAVE % ("save_extractions_off", "save_extractions"))
    await until(
        lambda: _count(pool, "SELECT count(*) FROM prospect_extractions", 2),
        timeout=15,
        what="the batch's answers saved",
    )
    after = _billed_now(CLAUDE_MODEL)
    ledger = stand_in.ledger
    assert len(ledger) == 2 and all(charge.batch for charge in ledger)
    tokens = sum(after[("nexus_llm_billed_tokens_total", k)] for k in TOKEN_KINDS) - sum(
        before[("nexus_llm_billed_tokens_total", k)] for k in TOKEN_KINDS
    )
    cost = sum(after[("nexus_llm_cost_usd_total", k)] for k in TOKEN_KINDS) - sum(
        before[("nexus_llm_cost_usd_total", k)] for k in TOKEN_KINDS
    )
    assert tokens == sum(
        c.usage.input_tokens
        + c.usage.cache_creation_input_tokens
        + c.usage.cache_read_input_tokens
        + c.usage.output_tokens
        for c in ledger
    )
    assert round(cost, 6) == round(stand_in.spent_usd(), 6)
    [(recorded,)] = await fetch(pool, "SELECT sum(cost_usd)::float8 FROM prospect_extractions")
    assert round(recorded, 6) == round(stand_in.spent_usd(), 6)


# The worker's saves fail while the function is away, as they would on a database refusing them.
_RENAME_SAVE = "ALTER FUNCTION nexus.%s(text, jsonb, boolean) RENAME TO %s"


async def _execute(pool: AsyncConnectionPool, statement: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(statement)


async def _results_fetched(server: FakeLLMServer, times: int) -> bool:
    return sum(1 for c in server.calls if c.path.endswith("/results")) >= times


async def _count(pool: AsyncConnectionPool, sql: str, expected: int) -> bool:
    return bool((await fetch(pool, sql))[0][0] == expected)
