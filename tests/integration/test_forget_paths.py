"""`nexus forget` against work already under way: a forgotten visitor stays forgotten whatever
the worker was doing with their snapshots, and whatever they send afterwards (README,
"Forgetting"; migrations 012, 020, 025, 027, 028)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.metered import MeteredExtractor
from nexus_ingest.policy import ExtractionPolicy
from nexus_ingest.store import forget_prospect
from tests.fakes.llm_server import ANTHROPIC_PATH, FakeLLMServer, Text
from tests.worker_kit import FAST, RecordingExtractor, fetch, queue_length, send, until

if TYPE_CHECKING:
    from tests.fakes.fixtures import ManualClock

pytest_plugins = ["tests.fakes.fixtures"]
# Every snapshot is backlog: it goes in a Message Batch, polled every 0.2 s.
BATCHING = dataclasses.replace(FAST, policy=ExtractionPolicy(batch_min_age_s=0), batch_poll_s=0.2)


def processed(outcome: str) -> float:
    return REGISTRY.get_sample_value("nexus_messages_processed_total", {"outcome": outcome}) or 0.0


async def traces_of(pool: AsyncConnectionPool, fingerprint: str, *sessions: str) -> list[Any]:
    """What the database still holds about the visitor's sessions: message events and
    session rows."""
    return await fetch(
        pool,
        "SELECT 'event', session_id, event FROM nexus.message_events WHERE session_id = ANY(%s)"
        " UNION ALL SELECT 'session', session_id, fingerprint_id FROM nexus.sessions"
        " WHERE session_id = ANY(%s) OR fingerprint_id = %s",
        list(sessions),
        list(sessions),
        fingerprint,
    )


async def test_a_failure_after_the_forget_records_nothing(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """The visitor is forgotten while their snapshot is being extracted, and the extraction
    then fails: its retry records no event (`nexus trace`) about their session."""
    extractor = RecordingExtractor(delay=1.0, failures=[RetryLater("the model is overloaded")])
    await send(pool, "inflight", "Valentina Quiroga", fingerprint="fp-inflight")
    retried = processed("retried")
    await running(extractor)
    await until(lambda: asyncio.sleep(0, extractor.in_flight), what="the extraction under way")
    await forget_prospect(pool, "fp-inflight")
    await until(
        lambda: asyncio.sleep(0, processed("retried") > retried), what="the failure settled"
    )
    assert await traces_of(pool, "fp-inflight", "inflight") == []
    assert await queue_length(pool) == 0


async def test_snapshots_sent_after_the_forget_leave_no_session_and_no_event(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A forgotten visitor writes again: one chat's older snapshot is superseded by its newer,
    another chat's fails for good. Both are dropped, and neither their sessions (leased by the
    read) nor their events stay behind."""
    await send(pool, "before", "Valentina Quiroga", fingerprint="fp-back")
    await forget_prospect(pool, "fp-back")
    await send(pool, "again", "Valentina", fingerprint="fp-back")
    await send(pool, "again", "Valentina Quiroga", fingerprint="fp-back")
    await send(pool, "poison", "Valentina Quiroga", fingerprint="fp-back")
    extractor = RecordingExtractor(failures=[Permanent("unusable answer")] * 2)
    await running(extractor)
    await until(lambda: _equal(queue_length(pool), 0), what="every snapshot settled")
    assert await traces_of(pool, "fp-back", "before", "again", "poison") == []
    assert await fetch(pool, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq") == [(0,)]


async def test_a_snapshot_sent_after_the_forget_never_reaches_the_extractor(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """What a forgotten visitor writes afterwards is dropped as it is read: no extractor (an
    LLM's provider, say) is sent the conversation, and it is deleted, not archived."""
    await send(pool, "first", "Valentina Quiroga", fingerprint="fp-later")
    await forget_prospect(pool, "fp-later")
    await send(pool, "later", "Valentina Quiroga, +34 611 222 333", fingerprint="fp-later")
    await send(pool, "other", "Rosa Ibarra", fingerprint="fp-other")
    extractor = RecordingExtractor()
    await running(extractor, dataclasses.replace(FAST, archive=True))
    await until(lambda: _equal(queue_length(pool), 0), what="every snapshot settled")

    assert extractor.calls == ["name: Rosa Ibarra"]
    assert await fetch(
        pool, "SELECT message ->> 'fingerprint' FROM pgmq.a_nexus_prospect_ingestion"
    ) == [("fp-other",)]
    assert await traces_of(pool, "fp-later", "first", "later") == []


async def test_a_forget_during_a_message_batch_sends_the_model_nothing_more(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
    clock: ManualClock,
) -> None:
    """A snapshot waits in a Message Batch whose answer will be unusable when the visitor is
    forgotten. Collecting the batch does not ask the model about it again (a direct call with
    the whole conversation), nor records anything about it."""
    stand_in.script(Text("no tool call here"))
    body = {
        "sessionId": "batched",
        "fingerprint": "fp-batched",
        "messages": [{"role": "user", "content": "Soy Valentina Quiroga, +34 611 222 333"}],
    }
    await queue.enqueue(pool, queue.Snapshot("batched", "fp-batched", body, {}))
    await running(claude, BATCHING)
    await until(lambda: fetch(pool, "SELECT 1 FROM nexus.llm_batches"), what="the batch recorded")
    await forget_prospect(pool, "fp-batched")
    clock.now += 61  # the batch ends
    await until(
        lambda: _equal(fetch(pool, "SELECT count(*) FROM nexus.llm_batches"), [(0,)]),
        what="the batch collected",
    )
    assert [c for c in stand_in.calls if c.path == ANTHROPIC_PATH] == []
    assert await traces_of(pool, "fp-batched", "batched") == []


async def _equal(value: Any, expected: Any) -> bool:
    return await value == expected
