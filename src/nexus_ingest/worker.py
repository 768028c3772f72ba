"""The consumer: reads snapshots, extracts prospects, merges them, acknowledges the messages."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID, uuid4

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nexus_ingest import queue
from nexus_ingest.errors import DatabaseUnavailable, Permanent, RetryLater
from nexus_ingest.extract.base import Extraction, Extractor
from nexus_ingest.metrics import (
    EXTRACTION_SECONDS,
    LLM_CALLS,
    LLM_TOKENS,
    PROCESSED,
    PROCESSING_SECONDS,
)
from nexus_ingest.models import ChatMessage
from nexus_ingest.queue import QueuedMessage
from nexus_ingest.retry import RetryPolicy
from nexus_ingest.settings import Settings
from nexus_ingest.store import SaveRequest, connection, save_extractions
from nexus_ingest.telemetry import span
from nexus_ingest.tracing import trace_id

log = structlog.get_logger("nexus.worker")

NOTIFY_CHANNEL = f"pgmq.q_{queue.QUEUE}.INSERT"
_SAVE_BATCH = 200
# Insert notifications are throttled (see 002_queues.sql): after activity, poll briefly so a
# snapshot the throttle stayed silent about waits milliseconds, not a whole poll interval.
_HOT_WINDOW_S = 1.0
_HOT_POLL_S = 0.02
_SAVE_ATTEMPTS = 4
_SAVE_FLIGHTS = 2

Outcome = Literal["saved", "superseded", "duplicate", "stale", "retried", "dead_lettered"]


class QueuedSnapshot(BaseModel):
    """The body the producer puts on the queue."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    session_id: str = Field(alias="sessionId", min_length=1)
    fingerprint: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    seq: int | None = None


@dataclass(frozen=True)
class WorkItem:
    """The newest snapshot of one session in a batch, decoded."""

    message: QueuedMessage
    snapshot: QueuedSnapshot


@dataclass(frozen=True)
class BatchPlan:
    """What to do with one read: extract some, acknowledge superseded ones, dead-letter poison."""

    work: list[WorkItem] = field(default_factory=list)
    superseded: list[QueuedMessage] = field(default_factory=list)
    undecodable: list[tuple[QueuedMessage, str]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """How many messages the read returned."""
        return len(self.work) + len(self.superseded) + len(self.undecodable)


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker reads and paces itself."""

    concurrency: int = 8
    batch_size: int = 200
    vt_s: int = 60
    poll_interval_s: float = 1.0
    shutdown_grace_s: float = 10.0
    archive: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def worker_config(settings: Settings) -> WorkerConfig:
    """The worker's settings, taken from the global ones."""
    return WorkerConfig(
        concurrency=settings.worker_concurrency,
        batch_size=settings.worker_batch_size,
        vt_s=settings.worker_vt_s,
        poll_interval_s=settings.worker_poll_interval_s,
        shutdown_grace_s=settings.worker_shutdown_grace_s,
        archive=settings.archive_processed,
        retry=RetryPolicy(
            max_attempts=settings.max_attempts,
            base_s=settings.retry_base_s,
            cap_s=settings.retry_cap_s,
        ),
    )


def read_size(config: WorkerConfig, extractor: Extractor, *, in_flight: int = 0) -> int:
    """How many messages to read at once: a batch for an offline extractor, but never more than
    an LLM worker can start at once, so none waits for a slot while its visibility timeout runs."""
    if extractor.in_process:
        return config.batch_size
    return max(1, min(config.batch_size, config.concurrency - in_flight))


def decode(message: QueuedMessage) -> QueuedSnapshot | str:
    """The snapshot in a message, or why it cannot be read."""
    try:
        return QueuedSnapshot.model_validate(message.body)
    except ValidationError as exc:
        return f"undecodable payload: {exc.error_count()} validation errors"


def plan_batch(messages: Sequence[QueuedMessage]) -> BatchPlan:
    """Keep only each session's newest snapshot; older ones are superseded without extraction.

    A snapshot holds the whole conversation so far, so a newer one of the same session (in
    this batch, or already queued behind it per the message's `last_seq`) makes it redundant.
    """
    plan = BatchPlan()
    newest: dict[str, WorkItem] = {}
    for message in messages:
        snapshot = decode(message)
        if isinstance(snapshot, str):
            plan.undecodable.append((message, snapshot))
            continue
        current = newest.get(snapshot.session_id)
        if current is None or _seq(snapshot) > _seq(current.snapshot):
            if current is not None:
                plan.superseded.append(current.message)
            newest[snapshot.session_id] = WorkItem(message, snapshot)
        else:
            plan.superseded.append(message)
    for item in newest.values():
        if _seq(item.snapshot) < (item.message.last_seq or 0):
            plan.superseded.append(item.message)
        else:
            plan.work.append(item)
    return plan


def _seq(snapshot: QueuedSnapshot) -> int:
    return snapshot.seq or 0


# A finished extraction waiting to be saved: the item, what was extracted, when work on it began.
Done = tuple[WorkItem, Extraction, float]


@dataclass(frozen=True)
class Handled:
    """The result of handling one work item."""

    item: WorkItem
    outcome: Outcome
    extraction: Extraction | None = None
    error: str | None = None
    exception: BaseException | None = None


class Worker:
    """One consumer process's loop; several may run against the same queue."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        extractor: Extractor,
        config: WorkerConfig,
        listen_url: str | None = None,
    ) -> None:
        self.pool = pool
        self.extractor = extractor
        self.config = config
        self.listen_url = listen_url
        self._wake = asyncio.Event()
        self.idle_pause: float | None = None  # how long the reader is waiting now, if it is
        self._slots = asyncio.Semaphore(config.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        # Finished extractions waiting to be saved, a list per put: a whole batch when
        # extraction runs inline, one item from each concurrent task otherwise.
        self._saves: asyncio.Queue[list[Done]] = asyncio.Queue(maxsize=16)

    async def run(self, stop: asyncio.Event) -> None:
        """Process messages until `stop` is set, then finish in-flight work within the grace period."""
        background = [asyncio.create_task(self._save_loop())]
        if self.listen_url:
            background.append(asyncio.create_task(self._listen_loop(self.listen_url)))
        log.info(
            "🟢 [CONSUMIDOR] worker started",
            extractor=self.extractor.name,
            concurrency=self.config.concurrency,
        )
        try:
            await self._read_loop(stop)
        finally:
            await self._drain_in_flight()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            log.info("worker stopped")

    async def _read_loop(self, stop: asyncio.Event) -> None:
        backoff, hot_until = 0.5, 0.0
        ahead: asyncio.Task[BatchPlan | None] | None = None
        try:
            while not stop.is_set():
                try:
                    pending, ahead = ahead, None  # a failed read must not be awaited again
                    plan = await (pending if pending is not None else self._read_batch())
                    if plan is not None and self.extractor.in_process:
                        # Read the next batch while this one is extracted, so the database
                        # works on it meanwhile instead of waiting for us.
                        ahead = asyncio.create_task(self._read_batch())
                    found = await self._dispatch(plan) if plan is not None else 0
                    backoff = 0.5
                except DatabaseUnavailable:
                    log.warning("database unavailable; retrying", wait_s=backoff)
                    await _wait_any(stop, None, backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                now = time.monotonic()
                if found or self._wake.is_set():
                    hot_until = now + _HOT_WINDOW_S
                if found:
                    continue
                pause = _HOT_POLL_S if now < hot_until else await self._idle_pause()
                self.idle_pause = pause
                await _wait_any(stop, self._wake, pause)
                self.idle_pause = None
        finally:
            if ahead is not None:  # what was read ahead is leased to us: finish it too
                with contextlib.suppress(DatabaseUnavailable):
                    plan = await ahead
                    if plan is not None:
                        await self._dispatch(plan)

    async def _idle_pause(self) -> float:
        """Sleep until the next held-back snapshot becomes readable, or one poll interval."""
        try:
            async with connection(self.pool) as conn:
                due = await queue.seconds_until_visible(conn)
        except DatabaseUnavailable:
            return self.config.poll_interval_s
        if due is None:
            return self.config.poll_interval_s
        return min(self.config.poll_interval_s, due + 0.005)

    async def _read_batch(self) -> BatchPlan | None:
        """Read a batch and settle what needs no extraction; None when nothing was readable."""
        qty = await self._room()
        self._wake.clear()
        async with connection(self.pool) as conn:
            messages = await queue.read_snapshots(conn, qty=qty, vt=self.config.vt_s, lease=uuid4())
            if not messages:
                return None
            plan = plan_batch(messages)
            await _settle_plan(conn, plan, archive=self.config.archive)
        return plan

    async def _dispatch(self, plan: BatchPlan) -> int:
        """Start work on a batch; returns how many messages it held."""
        if self.extractor.in_process:
            # Pure computation: tasks would only add overhead, and nothing waits on I/O.
            done = [result for item in plan.work if (result := await self._process(item))]
            if done:
                await self._saves.put(done)
        else:
            for item in plan.work:
                await self._slots.acquire()
                task = asyncio.create_task(self._process_in_slot(item))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return plan.size

    async def _room(self) -> int:
        """How many messages to read now; an LLM worker first waits for a free slot."""
        if not self.extractor.in_process:
            await self._slots.acquire()
            self._slots.release()
        return read_size(self.config, self.extractor, in_flight=len(self._tasks))

    async def _process_in_slot(self, item: WorkItem) -> None:
        try:
            result = await self._process(item)
        finally:
            self._slots.release()
        if result is not None:
            await self._saves.put([result])

    async def _process(self, item: WorkItem) -> Done | None:
        """Extract one snapshot; a failure is settled (retried or dead-lettered) and gives None."""
        started = time.perf_counter()
        if log.is_enabled_for(logging.INFO):
            log.info(
                "🟢 [CONSUMIDOR] processing",
                **log_ids(item.message),
                attempt=item.message.read_ct,
                turns=len(item.snapshot.messages),
            )
        try:
            headers = {"traceparent": str(item.message.headers.get("traceparent", ""))}
            with span(
                "nexus.extract",
                headers,
                msg_id=item.message.msg_id,
                attempt=item.message.read_ct,
                extractor=self.extractor.name,
            ):
                extraction = await extract_with_metrics(self.extractor, item.snapshot.messages)
        except Exception as exc:  # every failure is settled: retried or dead-lettered
            await self._settle_failure(item, exc)
            return None
        return item, extraction, started

    async def _settle_failure(self, item: WorkItem, exc: BaseException) -> None:
        try:
            async with connection(self.pool) as conn:
                outcome = await settle_failure(conn, item.message, exc, self.config.retry)
            PROCESSED.labels(outcome=outcome).inc()
        except DatabaseUnavailable:
            log.warning("could not record failure; message will reappear", **log_ids(item.message))

    async def _save_loop(self) -> None:
        """Write finished extractions in batches, two transactions at a time.

        A session is leased to one worker, so concurrent batches never touch the same session.
        """
        flights = asyncio.Semaphore(_SAVE_FLIGHTS)
        pending: set[asyncio.Task[None]] = set()
        while True:
            batch, puts = await self._saves.get(), 1
            while len(batch) < _SAVE_BATCH and not self._saves.empty():
                batch, puts = batch + self._saves.get_nowait(), puts + 1
            await flights.acquire()
            task = asyncio.create_task(self._flush_and_release(batch, puts, flights))
            pending.add(task)
            task.add_done_callback(pending.discard)

    async def _flush_and_release(
        self, batch: list[Done], puts: int, flights: asyncio.Semaphore
    ) -> None:
        try:
            await self._flush(batch)
        finally:
            flights.release()
            for _ in range(puts):
                self._saves.task_done()

    async def _flush(self, batch: list[Done]) -> None:
        for attempt in range(_SAVE_ATTEMPTS):
            try:
                async with connection(self.pool) as conn:
                    outcomes = await save_and_acknowledge(
                        conn, [(i, e) for i, e, _ in batch], archive=self.config.archive
                    )
                break
            except (DatabaseUnavailable, psycopg.Error) as exc:
                log.warning(
                    "save failed; retrying",
                    attempt=attempt + 1,
                    error=type(exc).__name__,
                    size=len(batch),
                )
                await asyncio.sleep(0.25 * 2**attempt)
        else:
            log.error("❌ [CONSUMIDOR] save failed; messages will be redelivered", size=len(batch))
            return
        now = time.perf_counter()
        for label, count in Counter(_outcome_label(o) for o in outcomes).items():
            PROCESSED.labels(outcome=label).inc(count)
        for _, _, started in batch:
            PROCESSING_SECONDS.observe(now - started)
        if log.is_enabled_for(logging.INFO):
            for (item, _, _), outcome in zip(batch, outcomes, strict=True):
                log.info(
                    "✅ [CONSUMIDOR] saved",
                    **log_ids(item.message),
                    seq=item.snapshot.seq,
                    outcome=outcome,
                )

    async def _listen_loop(self, url: str) -> None:
        """Wake the reader on every insert notification; reconnect with back-off if the link drops."""
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                    backoff = 0.5
                    self._wake.set()  # catch anything that arrived while we were not listening
                    async for _ in conn.notifies():
                        self._wake.set()
            except psycopg.Error:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _drain_in_flight(self) -> None:
        """Give in-flight work the grace period, then cancel it: its messages reappear after the timeout."""
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.config.shutdown_grace_s)
            for task in late:
                task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._saves.join(), timeout=max(1.0, self.config.shutdown_grace_s)
            )


async def _settle_plan(
    conn: psycopg.AsyncConnection[Any], plan: BatchPlan, *, archive: bool
) -> None:
    """Acknowledge superseded snapshots and dead-letter poison ones; neither needs the extractor.

    Sessions left with nothing to extract are released at once, in the same transaction.
    """
    if not plan.superseded and not plan.undecodable:
        return
    async with conn.transaction():
        await _settle_plan_now(conn, plan, archive=archive)


async def _settle_plan_now(
    conn: psycopg.AsyncConnection[Any], plan: BatchPlan, *, archive: bool
) -> None:
    await queue.acknowledge(conn, [m.msg_id for m in plan.superseded], archive=archive)
    await queue.release_sessions(conn, _idle_leases(plan))
    await queue.record_events(
        conn,
        [queue.Event(m.msg_id, m.session_id, "superseded", m.read_ct, {}) for m in plan.superseded],
    )
    PROCESSED.labels(outcome="superseded").inc(len(plan.superseded))
    for message, reason in plan.undecodable:
        await queue.dead_letter(
            conn, message, {"reason": reason, "kind": "permanent", "attempts": message.read_ct}
        )
        PROCESSED.labels(outcome="dead_lettered").inc()
        log.error(
            "❌ [CONSUMIDOR] dead-lettered",
            **log_ids(message),
            kind="permanent",
            reason="undecodable",
        )


def log_ids(message: QueuedMessage) -> dict[str, Any]:
    """What every log line about a message carries: ids only, never its content."""
    return {
        "msg_id": message.msg_id,
        "session_id": message.session_id,
        "trace_id": trace_id(message.headers.get("traceparent")),
    }


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
    settled = [*plan.superseded, *(message for message, _ in plan.undecodable)]
    return _leases(m for m in settled if m.session_id not in busy)


def _outcome_label(outcome: str) -> Outcome:
    return "saved" if outcome == "applied" else "stale" if outcome == "stale" else "duplicate"


@dataclass(frozen=True)
class _ExtractorMetrics:
    """The metric series of one extractor, bound once: label lookups cost more than the noop."""

    seconds: Any
    ok: Any
    error: Any
    tokens: dict[str, Any]


@functools.cache
def _extractor_metrics(name: str) -> _ExtractorMetrics:
    return _ExtractorMetrics(
        seconds=EXTRACTION_SECONDS.labels(extractor=name),
        ok=LLM_CALLS.labels(extractor=name, result="ok"),
        error=LLM_CALLS.labels(extractor=name, result="error"),
        tokens={
            k: LLM_TOKENS.labels(extractor=name, kind=k) for k in ("input", "output", "cached")
        },
    )


async def extract_with_metrics(extractor: Extractor, messages: Sequence[ChatMessage]) -> Extraction:
    """Run the extractor and record its latency, tokens and result."""
    metrics = _extractor_metrics(extractor.name)
    started = time.perf_counter()
    try:
        extraction = await extractor.extract(messages)
    except Exception:
        metrics.error.inc()
        raise
    metrics.seconds.observe(time.perf_counter() - started)
    metrics.ok.inc()
    for kind, count in (
        ("input", extraction.input_tokens),
        ("output", extraction.output_tokens),
        ("cached", extraction.cached_tokens),
    ):
        if count:
            metrics.tokens[kind].inc(count)
    return extraction


async def save_and_acknowledge(
    conn: psycopg.AsyncConnection[Any],
    done: Sequence[tuple[WorkItem, Extraction]],
    *,
    archive: bool,
) -> list[str]:
    """Merge extractions and remove their messages in one statement: both happen or neither."""
    requests = [
        SaveRequest(
            item.message.msg_id,
            item.snapshot.fingerprint,
            item.snapshot.session_id,
            item.snapshot.seq,
            extraction,
            item.message.enqueued_at,
            item.message.lease,
        )
        for item, extraction in done
    ]
    return list(await save_extractions(conn, requests, queue=queue.QUEUE, archive=archive))


async def settle_failure(
    conn: psycopg.AsyncConnection[Any],
    message: QueuedMessage,
    exc: BaseException,
    policy: RetryPolicy,
) -> Outcome:
    """Retry a failed message after a back-off, or dead-letter it when it cannot or may not retry."""
    async with conn.transaction():
        outcome = await _settle_failure_now(conn, message, exc, policy)
        await queue.release_sessions(conn, _leases([message]))
    return outcome


async def _settle_failure_now(
    conn: psycopg.AsyncConnection[Any],
    message: QueuedMessage,
    exc: BaseException,
    policy: RetryPolicy,
) -> Outcome:
    kind = "permanent" if isinstance(exc, Permanent) else "retryable"
    reason = f"{type(exc).__name__}: {exc}"[:500]
    if kind == "permanent" or policy.exhausted(message.read_ct):
        error = {"reason": reason, "kind": kind, "attempts": message.read_ct}
        await queue.dead_letter(conn, message, error)
        await queue.record_events(
            conn,
            [
                queue.Event(
                    message.msg_id,
                    message.session_id,
                    "dead_lettered",
                    message.read_ct,
                    {"kind": kind, "error": type(exc).__name__},
                )
            ],
        )
        log.error(
            "❌ [CONSUMIDOR] dead-lettered",
            **log_ids(message),
            kind=kind,
            attempts=message.read_ct,
        )
        return "dead_lettered"
    hint = exc.delay if isinstance(exc, RetryLater) else None
    delay = policy.delay(message.read_ct, at_least=hint)
    await queue.retry_later(conn, message.msg_id, delay)
    await queue.record_events(
        conn,
        [
            queue.Event(
                message.msg_id,
                message.session_id,
                "failed",
                message.read_ct,
                {"error": type(exc).__name__, "retry_in_s": delay},
            )
        ],
    )
    log.warning(
        "❌ [CONSUMIDOR] extraction failed; will retry",
        **log_ids(message),
        attempt=message.read_ct,
        retry_in_s=delay,
        error=type(exc).__name__,
    )
    return "retried"


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event | None, timeout: float) -> None:
    waiters = [asyncio.create_task(stop.wait())]
    if wake is not None:
        waiters.append(asyncio.create_task(wake.wait()))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()


async def consume_once(
    pool: AsyncConnectionPool, extractor: Extractor, config: WorkerConfig
) -> dict[str, Any]:
    """Process what is queued now, once (the seed's HTTP-driven consumer); the seed's response shape."""
    qty = read_size(config, extractor)
    async with connection(pool) as conn:
        messages = await queue.read_snapshots(conn, qty=qty, vt=config.vt_s, lease=uuid4())
        if not messages:
            return {"status": "empty"}
        plan = plan_batch(messages)
        await _settle_plan(conn, plan, archive=config.archive)
    handled = await asyncio.gather(*(_extract_item(extractor, item) for item in plan.work))
    async with connection(pool) as conn:
        for result in handled:
            await _settle_handled(conn, result, config)
    return _seed_response(handled, len(messages))


async def _extract_item(extractor: Extractor, item: WorkItem) -> Handled:
    try:
        return Handled(
            item, "saved", extraction=await extract_with_metrics(extractor, item.snapshot.messages)
        )
    except Exception as exc:  # settled by the caller: retried or dead-lettered
        return Handled(item, "retried", error=f"{type(exc).__name__}: {exc}", exception=exc)


async def _settle_handled(
    conn: psycopg.AsyncConnection[Any], result: Handled, config: WorkerConfig
) -> None:
    if result.extraction is not None:
        outcomes = await save_and_acknowledge(
            conn, [(result.item, result.extraction)], archive=config.archive
        )
        PROCESSED.labels(outcome=_outcome_label(outcomes[0])).inc()
    elif result.exception is not None:
        PROCESSED.labels(
            outcome=await settle_failure(conn, result.item.message, result.exception, config.retry)
        ).inc()


def _seed_response(handled: Sequence[Handled], read: int) -> dict[str, Any]:
    if not handled:
        return {"status": "success", "processed": 0, "read": read}
    first = handled[0]
    body: dict[str, Any] = {
        "status": "success" if first.extraction else "error",
        "msgId": first.item.message.msg_id,
        "sessionId": first.item.snapshot.session_id,
        "processed": len(handled),
        "read": read,
    }
    if first.extraction:
        body["extractedData"] = first.extraction.prospect.model_dump(mode="json")
    else:
        body["error"] = first.error
    return body
