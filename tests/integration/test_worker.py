"""The worker against a real database: saves, coalescing, per-session order, retries, dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.base import Extraction
from nexus_ingest.models import ChatMessage
from nexus_ingest.queries import query
from nexus_ingest.retry import RetryPolicy
from nexus_ingest.worker import Worker, WorkerConfig, consume_once
from tests.worker_kit import (
    FAST,
    RecordingExtractor,
    fetch,
    queue_length,
    send,
    snapshot,
    until,
)


async def test_a_snapshot_becomes_a_prospect_row(pool: AsyncConnectionPool, running: Any) -> None:
    """A queued snapshot is extracted, merged into prospect_data, recorded in history and deleted."""
    msg_id = await send(pool, "s1", "Carlos")
    await running(RecordingExtractor())
    rows = await until(
        lambda: fetch(
            pool, "SELECT nombre, last_msg_id FROM prospect_data WHERE fingerprint_id = 'fp-s1'"
        ),
        what="row",
    )
    assert rows == [("Carlos", msg_id)]
    assert await fetch(pool, "SELECT msg_id, outcome FROM prospect_extractions") == [
        (msg_id, "applied")
    ]
    await until(lambda: _is_zero(queue_length(pool)), what="empty queue")


async def _is_zero(value: Awaitable[int]) -> bool:
    return await value == 0


async def test_superseded_snapshots_are_not_extracted(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """Five snapshots of one session queued together cost one extraction, of the newest one."""
    for turn in range(1, 6):
        await send(pool, "chatty", f"Name{turn}", turns=turn)
    extractor = RecordingExtractor()
    await running(extractor)
    await until(lambda: _is_zero(queue_length(pool)), what="empty queue")
    assert extractor.calls == ["name: Name5"]
    assert await fetch(pool, "SELECT nombre FROM prospect_data") == [("Name5",)]


async def test_one_session_is_never_in_flight_twice(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """While a session's snapshot is being extracted, a newer one waits, even with several workers."""
    extractor = RecordingExtractor(delay=0.3)
    for _ in range(3):
        await running(extractor)
    await send(pool, "ordered", "First")
    await until(lambda: _truthy(extractor.in_flight), what="first extraction to start")
    await send(pool, "ordered", "Second")
    await send(pool, "other", "Parallel")
    await until(lambda: _is_zero(queue_length(pool)), what="empty queue")
    assert extractor.max_overlap_per_session == 0
    assert extractor.calls[0] == "name: First" and extractor.calls[-1] in (
        "name: Second",
        "name: Parallel",
    )
    rows = await fetch(
        pool, "SELECT fingerprint_id, nombre FROM prospect_data ORDER BY fingerprint_id"
    )
    assert rows == [("fp-ordered", "Second"), ("fp-other", "Parallel")]


async def _truthy(value: Any) -> Any:
    return value


async def test_passing_failure_is_retried_then_saved(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """RetryLater hides the message for a back-off; the next read saves it."""
    extractor = RecordingExtractor(failures=[RetryLater("429", delay=1)])
    await send(pool, "flaky", "Rosa")
    await running(extractor)
    rows = await until(
        lambda: fetch(pool, "SELECT nombre FROM prospect_data"), timeout=10, what="row after retry"
    )
    assert rows == [("Rosa",)] and len(extractor.calls) == 2


async def test_permanent_failure_goes_to_the_dead_letter_queue(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """Permanent moves the message to the DLQ with its reason and archives the original."""
    msg_id = await send(pool, "broken", "Nadie")
    await running(RecordingExtractor(failures=[Permanent("invalid output twice")]))
    dlq = await until(
        lambda: fetch(pool, "SELECT message FROM pgmq.q_nexus_prospect_ingestion_dlq"),
        what="dead letter",
    )
    assert dlq[0][0]["originalMsgId"] == msg_id
    assert (
        dlq[0][0]["error"]["kind"] == "permanent"
        and "invalid output twice" in dlq[0][0]["error"]["reason"]
    )
    assert await fetch(pool, "SELECT msg_id FROM pgmq.a_nexus_prospect_ingestion") == [(msg_id,)]
    assert await queue_length(pool) == 0


async def test_attempts_are_bounded(pool: AsyncConnectionPool, running: Any) -> None:
    """A message that keeps failing for passing reasons is dead-lettered after max_attempts reads."""
    extractor = RecordingExtractor(failures=[RetryLater("500", delay=0)] * 5)
    config = WorkerConfig(
        concurrency=2,
        batch_size=5,
        vt_s=30,
        poll_interval_s=0.05,
        retry=RetryPolicy(max_attempts=2, base_s=1.0, cap_s=1.0),
    )
    await send(pool, "doomed", "X")
    await running(extractor, config)
    dlq = await until(
        lambda: fetch(pool, "SELECT message FROM pgmq.q_nexus_prospect_ingestion_dlq"),
        timeout=10,
        what="dead letter",
    )
    assert dlq[0][0]["error"]["attempts"] == 2 and dlq[0][0]["error"]["kind"] == "retryable"
    assert len(extractor.calls) == 2


async def test_undecodable_payload_is_dead_lettered(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A message that is not a snapshot goes straight to the DLQ without an extraction."""
    async with pool.connection() as conn:
        # Straight into PGMQ: pgmq_send itself refuses bodies that are not snapshots.
        await conn.execute("SELECT pgmq.send('nexus_prospect_ingestion', '{\"junk\": true}')")
    extractor = RecordingExtractor()
    await running(extractor)
    dlq = await until(
        lambda: fetch(pool, "SELECT message FROM pgmq.q_nexus_prospect_ingestion_dlq"),
        what="dead letter",
    )
    assert dlq[0][0]["error"]["kind"] == "permanent" and extractor.calls == []


async def test_notification_wakes_an_idle_worker(pool: AsyncConnectionPool, running: Any) -> None:
    """With a 30 s poll interval, a new snapshot is still processed at once thanks to LISTEN/NOTIFY."""
    config = WorkerConfig(concurrency=2, batch_size=5, vt_s=30, poll_interval_s=30)
    worker = await running(RecordingExtractor(), config)

    async def idle() -> bool:
        return worker.pausing_for == 30  # past its hot polling, in the long wait

    await until(idle, timeout=10, what="the worker to go idle")
    started = time.monotonic()
    await send(pool, "woken", "Iris")
    await until(lambda: fetch(pool, "SELECT 1 FROM prospect_data"), timeout=5, what="row")
    assert time.monotonic() - started < 2.0


def _counting_reads(worker: Worker) -> tuple[list[int], asyncio.Event]:
    """Count the worker's reads, each with what it found, and flag the first that finds any."""
    found: list[int] = []
    found_some = asyncio.Event()
    read = worker.settler.read

    async def counted(qty: int) -> Any:
        plan = await read(qty)
        found.append(plan.size if plan is not None else 0)
        if plan is not None:
            found_some.set()
        return plan

    worker.settler.read = counted  # type: ignore[method-assign]
    return found, found_some


async def _silent_send(db_url: str, session: str, name: str) -> None:
    """Queue a snapshot whose insert notifies no one: its database session notified a moment
    ago, as far as the insert notification's throttle knows (migration 011)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute(
            "SELECT set_config('nexus.queue_notified_at', "
            "extract(epoch FROM clock_timestamp())::text, false)"
        )
        items = [snapshot(session, name).as_item()]
        await conn.execute(
            query("enqueue_snapshots"), {"queue": queue.QUEUE, "items": Jsonb(items)}
        )


async def test_a_snapshot_the_notification_throttle_kept_silent_is_read_at_once(
    pool: AsyncConnectionPool, db_url: str, running: Any
) -> None:
    """An insert within the throttle's interval of its session's last notification sends none;
    the worker, busy with the notified snapshot, polls long enough after it to find the silent
    one in seconds, not its 30 s poll interval."""
    worker = await running(
        RecordingExtractor(), WorkerConfig(concurrency=2, vt_s=30, poll_interval_s=30)
    )
    _, found_some = _counting_reads(worker)
    await until(lambda: _truthy(worker.pausing_for == 30), timeout=10, what="the worker to go idle")
    await send(pool, "loud", "Ana")
    await asyncio.wait_for(found_some.wait(), timeout=10)
    await _silent_send(db_url, "silent", "Bea")
    rows = await until(
        lambda: fetch(pool, "SELECT nombre FROM prospect_data WHERE fingerprint_id = 'fp-silent'"),
        timeout=3,
        what="the silent snapshot's row",
    )
    assert rows == [("Bea",)]


async def test_a_worker_stops_polling_soon_after_its_last_snapshot(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """After one snapshot the worker reads for twice the notification throttle's interval,
    then waits for the next notification: a few reads, not a poll every 20 ms for a second."""
    worker = await running(
        RecordingExtractor(), WorkerConfig(concurrency=2, vt_s=30, poll_interval_s=30)
    )
    reads, found_some = _counting_reads(worker)
    await until(lambda: _truthy(worker.pausing_for == 30), timeout=10, what="the worker to go idle")
    await send(pool, "once", "Ana")
    await asyncio.wait_for(found_some.wait(), timeout=10)
    after_it = len(reads)
    await until(lambda: _truthy(worker.pausing_for == 30), timeout=10, what="the worker to go idle")
    polls = reads[after_it:]
    assert sum(polls) == 0, "nothing else was queued"
    # 0.2 s of polls every 20 ms, and a read at once after the snapshot's: about 11.
    assert 3 <= len(polls) <= 20, polls


async def test_a_snapshot_of_a_held_session_does_not_keep_a_worker_polling(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A snapshot whose session another worker holds (a long LLM call, or a crash until its
    lease runs out) is not readable: an idle worker waits for the lease or its poll interval,
    instead of reading every few milliseconds until the lease ends."""
    await send(pool, "held", "Ana")
    async with pool.connection() as conn:  # a worker that read it and went silent
        await conn.execute(
            "SELECT * FROM nexus.read_snapshots('nexus_prospect_ingestion', 30, 10,"
            " gen_random_uuid())"
        )
    await send(pool, "held", "Ana", turns=2)
    worker = await running(
        RecordingExtractor(), WorkerConfig(concurrency=2, vt_s=30, poll_interval_s=30)
    )
    reads, _ = _counting_reads(worker)
    await until(lambda: _truthy((worker.pausing_for or 0) > 5), timeout=5, what="a long idle pause")
    assert sum(reads) == 0 and len(reads) <= 20, reads


async def test_a_worker_reads_its_own_held_session_again_once_it_is_saved(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """While an LLM call holds a session, a newer snapshot of it waits without the worker
    polling for it; once the call's result is saved, the worker reads the newer one at once,
    not after its poll interval."""
    extractor = RecordingExtractor(delay=1.0)
    worker = await running(extractor, WorkerConfig(concurrency=2, vt_s=30, poll_interval_s=30))
    reads, _ = _counting_reads(worker)
    await send(pool, "typing", "Ana")
    await until(lambda: _truthy(extractor.in_flight), what="the first extraction")
    before = len(reads)
    await send(pool, "typing", "Anabel", turns=2)
    rows = await until(
        lambda: fetch(pool, "SELECT nombre FROM prospect_data WHERE nombre = 'Anabel'"),
        timeout=5,
        what="the newer snapshot's row",
    )
    assert rows == [("Anabel",)]
    assert extractor.calls == ["name: Ana", "name: Anabel"]
    # Hot polling after the notification and after each find (about ten reads each), and a
    # read after the save: some twenty, where polling until the lease ended made hundreds.
    assert len(reads) - before <= 40, reads[before:]


async def test_an_extraction_never_outlasts_its_sessions_lease(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """An LLM extraction slower than the visibility timeout is given up before the lease ends
    and retried later, instead of running on while another read of the same snapshot starts a
    second, paid, call beside it."""
    extractor = RecordingExtractor(delay=3.0)
    config = dataclasses.replace(FAST, vt_s=2)
    msg_id = await send(pool, "slow", "Ana")
    await running(extractor, config)
    failed = await until(
        lambda: fetch(
            pool,
            "SELECT detail ->> 'error' FROM nexus.message_events"
            " WHERE msg_id = %s AND event = 'failed'",
            msg_id,
        ),
        timeout=10,
        what="the first attempt given up",
    )
    assert failed[0][0] == "RetryLater"  # the recording extractor itself never fails
    assert extractor.max_overlap_per_session == 0
    assert len(extractor.calls) == 1


async def test_shutdown_finishes_in_flight_work(pool: AsyncConnectionPool, db_url: str) -> None:
    """Stopping a worker mid-extraction lets the extraction finish and be saved within the grace period."""
    extractor = RecordingExtractor(delay=0.5)
    worker = Worker(pool, extractor, FAST, listen_url=None)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await send(pool, "late", "Olga")
    await until(lambda: _truthy(extractor.in_flight), what="extraction to start")
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert await fetch(pool, "SELECT nombre FROM prospect_data") == [("Olga",)]
    assert await queue_length(pool) == 0


async def test_consume_once_returns_the_seed_shape(pool: AsyncConnectionPool) -> None:
    """The HTTP-driven consumer processes queued work and answers like the seed's edge function."""
    assert await consume_once(pool, RecordingExtractor(), FAST) == {"status": "empty"}
    msg_id = await send(pool, "once", "Tomás")
    result = await consume_once(pool, RecordingExtractor(), FAST)
    assert (
        result["status"] == "success"
        and result["msgId"] == msg_id
        and result["sessionId"] == "once"
    )
    assert result["extractedData"]["nombre"] == "Tomás"
    assert await fetch(pool, "SELECT nombre FROM prospect_data") == [("Tomás",)]


async def test_redelivered_message_is_not_applied_twice(
    pool: AsyncConnectionPool, db_url: str
) -> None:
    """A message read again after its timeout (a crashed worker) is saved once only."""
    msg_id = await send(pool, "again", "Uno")
    async with pool.connection() as conn:
        await conn.execute(
            "SELECT update_prospect_data('fp-again', 'again', '{\"nombre\": \"Uno\"}', %s, 1)",
            (msg_id,),
        )
    result = await consume_once(pool, RecordingExtractor(), FAST)
    assert result["status"] == "success"
    rows = await fetch(pool, "SELECT msg_id, outcome FROM prospect_extractions")
    assert rows == [(msg_id, "applied")]
    assert await fetch(pool, "SELECT extraction_count FROM prospect_data") == [(1,)]


class SlowComputation(RecordingExtractor):
    """An in-process extractor that computes for a while (it blocks, as a CPU-bound one would)."""

    in_process = True

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        time.sleep(0.003)
        return await super().extract(messages)


async def test_stopping_an_in_process_worker_leaves_nothing_leased(
    pool: AsyncConnectionPool,
) -> None:
    """A worker stopped mid-drain finishes what it read (and read ahead): no message stays hidden."""
    for n in range(200):
        await send(pool, f"bulk-{n}", f"N{n}")
    worker = Worker(pool, SlowComputation(), FAST, listen_url=None)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))

    async def some_saved() -> bool:
        return bool((await fetch(pool, "SELECT count(*) FROM prospect_data"))[0][0])

    await until(some_saved, what="the first saves")
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    saved = (await fetch(pool, "SELECT count(*) FROM prospect_data"))[0][0]
    hidden = await fetch(
        pool, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion WHERE vt > clock_timestamp()"
    )
    leased = await fetch(
        pool, "SELECT count(*) FROM nexus.sessions WHERE leased_until > clock_timestamp()"
    )
    assert 0 < saved < 200 and saved + await queue_length(pool) == 200
    assert hidden == [(0,)] and leased == [(0,)]


class WatchesTheNextRead(RecordingExtractor):
    """An in-process extractor that, while it computes the first snapshot, watches from its own
    connection whether the worker's next read has reached the database."""

    in_process = True

    def __init__(self, db_url: str, expected: int) -> None:
        super().__init__()
        self.db_url = db_url
        self.expected = expected
        self.read_while_extracting: int | None = None

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        if self.read_while_extracting is None:
            self.read_while_extracting = self._leased_within(deadline=time.monotonic() + 5)
        return await super().extract(messages)

    def _leased_within(self, deadline: float) -> int:
        """Blocks, as a CPU-bound extraction would: nothing else runs on the worker's loop."""
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion WHERE read_ct > 0"
                ).fetchone()
                leased = int(row[0]) if row else 0
                if leased >= self.expected or time.monotonic() > deadline:
                    return leased
                time.sleep(0.01)


async def test_the_next_read_runs_while_a_batch_is_extracted(
    pool: AsyncConnectionPool, db_url: str
) -> None:
    """An in-process extractor holds the worker's thread: the read ahead must already be with
    the database when extraction starts, or the database idles while the worker computes."""
    config = dataclasses.replace(FAST, batch_size=5)
    for n in range(10):
        await send(pool, f"ahead-{n}", f"N{n}")
    extractor = WatchesTheNextRead(db_url, expected=10)
    worker = Worker(pool, extractor, config, listen_url=None)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await until(lambda: _is_zero(queue_length(pool)), what="empty queue")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert extractor.read_while_extracting == 10
