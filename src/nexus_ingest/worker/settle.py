"""Settlement: the database side of every outcome, each in one place, for both consumer paths.

Reading a batch settles at once what needs no extractor (superseded and undecodable snapshots);
then each extraction is saved and acknowledged, or retried, or dead-lettered. Whatever the path
(the loop or the one-shot consumer), an outcome is written, counted and logged here only.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal
from uuid import UUID, uuid4

import psycopg
import structlog
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.db import connection
from nexus_ingest.errors import DatabaseUnavailable, Permanent, RetryLater, SaveFailed, SaveRejected
from nexus_ingest.metrics import DEFERRED, PROCESSED, PROCESSING_SECONDS
from nexus_ingest.queue import OpenBatch, QueuedMessage, SessionProgress
from nexus_ingest.retry import RetryPolicy
from nexus_ingest.spend import extraction_cost_usd
from nexus_ingest.store import SaveOutcome, SaveRequest, save_extractions
from nexus_ingest.worker.config import WorkerConfig
from nexus_ingest.worker.floor import ReadFloor
from nexus_ingest.worker.plan import BatchPlan, Deferral, WorkItem, decode, plan_batch
from nexus_ingest.worker.process import Extracted, Failed, log_ids, to_keep

log = structlog.get_logger("nexus.worker")

Outcome = Literal[
    "saved", "stale", "duplicate", "forgotten", "superseded", "retried", "dead_lettered"
]

# The database says what the merge did; logs and metrics say what became of the message.
_SAVED_AS: dict[SaveOutcome, Outcome] = {
    "applied": "saved",
    "stale": "stale",
    "duplicate": "duplicate",
    "forgotten": "forgotten",
}


class Settler:
    """Reads batches and settles their messages, on one pool, as one worker's config says."""

    def __init__(self, pool: AsyncConnectionPool, config: WorkerConfig) -> None:
        self.pool = pool
        self.config = config
        self.floor = ReadFloor()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection whose use may last no longer than a lease.

        Past a lease, the messages a call concerns are another reader's anyway. And a
        connection cut off without a reset (a failover, a dropped route) never answers: an
        unbounded call on it would hold the worker for ever. Its pool-mates were most likely
        cut with it, so the pool is renewed rather than each of them waited out in turn.
        """
        try:
            async with connection(self.pool, timeout=self.config.vt_s) as conn:
                yield conn
        except DatabaseUnavailable as exc:
            if isinstance(exc.__cause__, TimeoutError):
                log.warning("worker.database_call_timed_out", after_s=self.config.vt_s)
                await self.pool.drain()
            raise

    async def read(self, qty: int) -> BatchPlan | None:
        """Read and lease up to `qty` messages and settle what needs no extractor; None if none."""
        after = self.floor.next_after()
        async with self._connection() as conn:
            read = await queue.read_snapshots(
                conn, qty=qty, vt=self.config.vt_s, lease=uuid4(), after=after
            )
            self.floor.learn(after, read.ready_from)
            messages = read.messages
            if not messages:
                return None
            plan = plan_batch(messages, max_reads=self.config.retry.max_attempts)
            if plan.superseded or plan.undecodable or plan.exhausted:
                async with conn.transaction():
                    await _settle_without_extraction(conn, plan, archive=self.config.archive)
        return plan

    async def save(self, done: Sequence[Extracted]) -> list[Outcome]:
        """Merge extractions and remove their messages in one statement: both happen or neither.

        A batch the database refuses for what it holds is split until the refused extractions
        are found: they alone are dead-lettered, each with its extraction kept so a replay need
        not ask the model again, and the rest are saved in the same pass.
        """
        try:
            return await self._save_batch(done)
        except SaveRejected:
            if len(done) == 1:
                return [await self._dead_letter_unsaveable(done[0])]
        middle = len(done) // 2
        return [*await self.save(done[:middle]), *await self.save(done[middle:])]

    async def _save_batch(self, done: Sequence[Extracted]) -> list[Outcome]:
        requests = [_save_request(d, self.config) for d in done]
        async with self._connection() as conn:
            results = await save_extractions(
                conn, requests, queue=queue.QUEUE, archive=self.config.archive
            )
        outcomes = [_SAVED_AS[r] for r in results]
        _record_saved(done, outcomes)
        return outcomes

    async def _dead_letter_unsaveable(self, done: Extracted) -> Outcome:
        message = done.item.message
        error = {
            "reason": "the database refused the extraction",
            "kind": "permanent",
            "attempts": message.read_ct,
            "extraction": to_keep(done.extraction),
        }
        try:
            async with self._connection() as conn, conn.transaction():
                await queue.dead_letter(conn, [(message.msg_id, error)])
                await queue.release_sessions(conn, _leases([message]))
        except psycopg.Error as exc:
            raise SaveFailed(f"dead-lettering failed: {type(exc).__name__}") from exc
        PROCESSED.labels(outcome="dead_lettered").inc()
        log.error(
            "message.dead_lettered", **log_ids(message), kind="permanent", reason="unsaveable"
        )
        return "dead_lettered"

    async def fail(self, failed: Failed) -> Outcome | None:
        """Retry a failed message after a back-off, or dead-letter it when it cannot or may not
        retry; None when the database could not be told (the message then reappears anyway)."""
        message = failed.item.message
        try:
            async with self._connection() as conn, conn.transaction():
                await queue.hold_off_forgets(conn)
                outcome = await _retry_or_dead_letter(
                    conn, message, failed.error, self.config.retry
                )
                await queue.release_sessions(conn, _leases([message]))
        except (DatabaseUnavailable, psycopg.Error) as exc:
            log.warning("message.settle_failed", **log_ids(message), error=type(exc).__name__)
            return None
        PROCESSED.labels(outcome=outcome).inc()
        return outcome

    async def give_back(self, items: Sequence[WorkItem]) -> None:
        """Make snapshots whose extraction a shutdown cut short readable at once, their sessions
        released and their read not counted: a worker stopping is no failed attempt."""
        messages = [item.message for item in items]
        async with self._connection() as conn, conn.transaction():
            await queue.defer(conn, [(m.msg_id, None) for m in messages])
            await queue.release_sessions(conn, _leases(messages))
        log.info("worker.gave_back", messages=len(messages))

    async def seconds_until_visible(self) -> float | None:
        """How long until the next held-back message becomes readable; None when none is queued."""
        async with self._connection() as conn:
            return await queue.seconds_until_visible(conn)

    async def session_progress(
        self, session_ids: Sequence[str]
    ) -> tuple[datetime, dict[str, SessionProgress]]:
        """The database's time, and when each session began and was last extracted."""
        async with self._connection() as conn:
            return await queue.session_progress(conn, session_ids)

    async def defer(self, deferrals: Sequence[Deferral]) -> None:
        """Hide snapshots the extraction policy holds back until their time and release their
        sessions; the read that found them is given back, as a deferral is no attempt."""
        messages = [d.item.message for d in deferrals]
        events = [
            queue.Event(
                d.item.message.msg_id,
                d.item.message.session_id,
                "deferred",
                None,
                {"reason": d.reason, "until": d.until.isoformat()},
            )
            for d in deferrals
        ]
        async with self._connection() as conn, conn.transaction():
            await queue.hold_off_forgets(conn)
            await queue.defer(conn, [(d.item.message.msg_id, d.until) for d in deferrals])
            await queue.release_sessions(conn, _leases(messages))
            await queue.record_events(conn, events)
        for deferral in deferrals:
            DEFERRED.labels(reason=deferral.reason).inc()
            if log.is_enabled_for(logging.INFO):
                log.info(
                    "message.deferred",
                    **log_ids(deferral.item.message),
                    reason=deferral.reason,
                    until=deferral.until.isoformat(),
                )

    async def batched(
        self, batch_id: str, items: Sequence[WorkItem], *, owner: UUID, claim_s: float
    ) -> None:
        """Remember a submitted Message Batch and keep its messages hidden while it runs. Their
        sessions are released: a newer snapshot need not wait for the batch's answer."""
        messages = [item.message for item in items]
        events = [
            queue.Event(m.msg_id, m.session_id, "batched", m.read_ct, {"batch_id": batch_id})
            for m in messages
        ]
        async with self._connection() as conn, conn.transaction():
            await queue.hold_off_forgets(conn)
            ids = [m.msg_id for m in messages]
            await queue.record_batch(conn, batch_id, ids, owner=owner, claim_s=claim_s)
            await queue.release_sessions(conn, _leases(messages))
            await queue.record_events(conn, events)

    async def reserve_for_batch(self, items: Sequence[WorkItem], claim_s: float) -> list[WorkItem]:
        """The items still this worker's to send in a batch, each once, hidden from now on as
        a recorded batch's are; a lease that ran out and was read again is another read's."""
        async with self._connection() as conn:
            kept = await queue.reserve_for_batch(conn, [i.message for i in items], claim_s=claim_s)
        chosen: dict[int, WorkItem] = {}
        for item in items:
            if (item.message.msg_id, item.message.read_ct) in kept:
                chosen.setdefault(item.message.msg_id, item)
        return list(chosen.values())

    async def claim_batches(self, owner: UUID, claim_s: float) -> list[OpenBatch]:
        """The batches `owner` is to poll now: its own, and those whose worker stopped."""
        async with self._connection() as conn:
            return await queue.claim_batches(conn, owner=owner, claim_s=claim_s)

    async def release_batches(self, owner: UUID) -> None:
        """Let any other worker take `owner`'s batches over at once."""
        async with self._connection() as conn:
            await queue.release_batches(conn, owner=owner)

    async def batch_settled(self, batch_id: str) -> None:
        """Forget a batch whose every result is saved or settled otherwise."""
        async with self._connection() as conn:
            await queue.forget_batch(conn, batch_id)

    async def batch_lost(self, batch_id: str) -> None:
        """Forget a batch the API no longer knows, and give its snapshots back at once."""
        async with self._connection() as conn:
            await queue.lose_batch(conn, batch_id)

    async def queued_items(self, msg_ids: Sequence[int]) -> list[WorkItem]:
        """The snapshots still queued among `msg_ids`, decoded, as a read would give them."""
        async with self._connection() as conn:
            messages = await queue.queued_messages(conn, msg_ids)
        decoded = [(m, decode(m)) for m in messages]
        return [WorkItem(m, s) for m, s in decoded if not isinstance(s, str)]


def _save_request(done: Extracted, config: WorkerConfig) -> SaveRequest:
    item, extraction = done.item, done.extraction
    cost = None
    if extraction.model is not None:
        cost = extraction_cost_usd(extraction, config.prices, config.batch_discount)
    return SaveRequest(
        item.message.msg_id,
        item.snapshot.fingerprint,
        item.snapshot.session_id,
        item.snapshot.seq,
        extraction,
        item.message.enqueued_at,
        item.message.lease,
        item.snapshot.received_at,
        cost,
        len(item.snapshot.messages),
    )


def _record_saved(done: Sequence[Extracted], outcomes: Sequence[Outcome]) -> None:
    now = time.perf_counter()
    for label, count in Counter(outcomes).items():
        PROCESSED.labels(outcome=label).inc(count)
    for d in done:
        PROCESSING_SECONDS.observe(now - d.started)
    if log.is_enabled_for(logging.INFO):
        for d, outcome in zip(done, outcomes, strict=True):
            log.info(f"message.{outcome}", **log_ids(d.item.message), seq=d.item.snapshot.seq)


async def _settle_without_extraction(
    conn: psycopg.AsyncConnection[Any], plan: BatchPlan, *, archive: bool
) -> None:
    """Acknowledge superseded snapshots and dead-letter poison ones; sessions left with nothing
    to extract are released in the same transaction."""
    # Its events and dead letters take the forgets' lock after its rows: take it first, or a
    # forget waiting for those rows while holding it deadlocks with this transaction.
    await queue.hold_off_forgets(conn)
    await queue.acknowledge(conn, [m.msg_id for m in plan.superseded], archive=archive)
    await queue.release_sessions(conn, _idle_leases(plan))
    await queue.record_events(
        conn,
        [queue.Event(m.msg_id, m.session_id, "superseded", m.read_ct, {}) for m in plan.superseded],
    )
    PROCESSED.labels(outcome="superseded").inc(len(plan.superseded))
    letters = [
        *((m, reason, "undecodable") for m, reason in plan.undecodable),
        *((m, f"read {m.read_ct} times", "exhausted") for m in plan.exhausted),
    ]
    await queue.dead_letter(
        conn,
        [
            (m.msg_id, {"reason": reason, "kind": "permanent", "attempts": m.read_ct})
            for m, reason, _ in letters
        ],
    )
    await queue.record_events(
        conn,
        [
            queue.Event(m.msg_id, m.session_id, "dead_lettered", m.read_ct, {"reason": why})
            for m, _, why in letters
        ],
    )
    for message, _, why in letters:
        PROCESSED.labels(outcome="dead_lettered").inc()
        log.error("message.dead_lettered", **log_ids(message), kind="permanent", reason=why)


async def _retry_or_dead_letter(
    conn: psycopg.AsyncConnection[Any],
    message: QueuedMessage,
    exc: BaseException,
    policy: RetryPolicy,
) -> Outcome:
    kind = "permanent" if isinstance(exc, Permanent) else "retryable"
    if kind == "permanent" or policy.exhausted(message.read_ct):
        reason = f"{type(exc).__name__}: {exc}"[:500]
        await queue.dead_letter(
            conn, [(message.msg_id, {"reason": reason, "kind": kind, "attempts": message.read_ct})]
        )
        await _record_event(
            conn, message, "dead_lettered", {"kind": kind, "error": type(exc).__name__}
        )
        log.error("message.dead_lettered", **log_ids(message), kind=kind, attempts=message.read_ct)
        return "dead_lettered"
    hint = exc.delay if isinstance(exc, RetryLater) else None
    delay = policy.delay(message.read_ct, at_least=hint)
    await queue.retry_later(conn, message.msg_id, delay)
    await _record_event(conn, message, "failed", {"error": type(exc).__name__, "retry_in_s": delay})
    log.warning(
        "message.retried",
        **log_ids(message),
        attempt=message.read_ct,
        retry_in_s=delay,
        error=type(exc).__name__,
    )
    return "retried"


async def _record_event(
    conn: psycopg.AsyncConnection[Any], message: QueuedMessage, event: str, detail: dict[str, Any]
) -> None:
    await queue.record_events(
        conn, [queue.Event(message.msg_id, message.session_id, event, message.read_ct, detail)]
    )


def _leases(messages: Iterable[QueuedMessage]) -> dict[UUID, list[str]]:
    """The sessions to release, by the lease they were read under."""
    leases: dict[UUID, list[str]] = {}
    for message in messages:
        if message.lease is not None and message.session_id is not None:
            leases.setdefault(message.lease, []).append(message.session_id)
    return leases


def _idle_leases(plan: BatchPlan) -> dict[UUID, list[str]]:
    """Sessions read in this batch that have no extraction to wait for."""
    busy = {item.message.session_id for item in plan.work}
    settled = [*plan.superseded, *(m for m, _ in plan.undecodable), *plan.exhausted]
    return _leases(m for m in settled if m.session_id not in busy)
