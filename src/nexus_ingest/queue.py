"""PGMQ operations on the ingestion queue: enqueue, grouped reads, acknowledgements, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, NewType
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import DLQ_NAME, QUEUE_NAME
from nexus_ingest.db import connection, storable
from nexus_ingest.queries import query

MsgId = NewType("MsgId", int)

GROUP_HEADER = "x-pgmq-group"


def stored_name(queue_name: str) -> str:
    """PGMQ's name for a queue: table names cannot hold dashes."""
    return queue_name.replace("-", "_")


QUEUE = stored_name(QUEUE_NAME)
DLQ = stored_name(DLQ_NAME)


@dataclass(frozen=True)
class Enqueued:
    """The producer's receipt for one snapshot."""

    msg_id: MsgId
    seq: int
    duplicate: bool
    conflict: bool
    # The sessionId is another visitor's (fingerprint's): nothing was queued.
    session_taken: bool = False


class QueuedMessage(NamedTuple):
    """A message as read from the queue, still invisible to other readers until its timeout.

    A named tuple rather than a frozen dataclass: a worker makes one for every message it
    reads, and a tuple is made in a quarter of the time.
    """

    msg_id: MsgId
    read_ct: int
    enqueued_at: datetime
    body: Any
    headers: Mapping[str, Any]
    lease: UUID | None = None
    last_seq: int | None = None  # the newest snapshot number of the session when read

    @property
    def session_id(self) -> str | None:
        """The FIFO group (session) the producer put this message in."""
        group = self.headers.get(GROUP_HEADER)
        return group if isinstance(group, str) else None


@dataclass(frozen=True)
class QueueMetrics:
    """The seed's monitoring figures."""

    queue_name: str
    queue_length: int
    oldest_msg_age_sec: int | None
    newest_msg_age_sec: int | None
    total_messages: int


@dataclass(frozen=True)
class Snapshot:
    """One snapshot to enqueue, as the producer received it."""

    session_id: str
    fingerprint_id: str
    message: Mapping[str, Any]
    headers: Mapping[str, Any]
    idempotency_key: str | None = None
    request_hash: str | None = None
    delay_ms: int = 0

    def as_item(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "fingerprint_id": self.fingerprint_id,
            "message": self.message,
            "headers": {**self.headers, GROUP_HEADER: self.session_id},
            "idempotency_key": self.idempotency_key,
            "request_hash": self.request_hash,
            "delay_ms": self.delay_ms,
        }


async def enqueue_many(
    pool: AsyncConnectionPool, snapshots: Sequence[Snapshot], *, timeout: float | None = None
) -> list[Enqueued]:
    """Queue snapshots in one round trip and one commit, each numbered within its session."""
    params = {"queue": QUEUE, "items": Jsonb([s.as_item() for s in snapshots])}
    async with connection(pool, timeout=timeout) as conn:
        rows = await (await conn.execute(query("enqueue_snapshots"), params)).fetchall()
    receipts: list[Enqueued | None] = [None] * len(snapshots)
    for idx, msg_id, seq, duplicate, conflict, session_taken in rows:
        receipts[idx] = Enqueued(MsgId(msg_id), seq, duplicate, conflict, session_taken)
    assert all(receipts), "every snapshot gets a receipt"
    return receipts  # type: ignore[return-value]


async def enqueue(
    pool: AsyncConnectionPool, snapshot: Snapshot, *, timeout: float | None = None
) -> Enqueued:
    """Queue one snapshot."""
    return (await enqueue_many(pool, [snapshot], timeout=timeout))[0]


_Waiting = tuple[Snapshot, asyncio.Future[Enqueued]]


class EnqueueBatcher:
    """Groups snapshots that arrive while earlier ones are being written into one round trip.

    Alone, a snapshot is written at once; under load, each write carries everything that queued
    up meanwhile, so commits (and their disk flushes) are shared instead of serialised.

    A group holds at most one snapshot of a session, and a session's next snapshot waits until
    the group holding its previous one is written. Two snapshots of a session in one statement
    lock the session row before the second one's `Idempotency-Key`, while another statement
    (another producer, or a retry in another group) may hold that key and wait for the session:
    a deadlock that failed every request of the losing group. Waiting also keeps a session's
    snapshots numbered in the order they arrived.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        max_batch: int = 100,
        max_flights: int = 4,
        timeout: float | None = None,
    ) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._max_flights = max_flights
        self._timeout = timeout
        self._pending: list[_Waiting] = []
        self._writing: set[str] = set()  # sessions with a snapshot in a group being written
        self._flights = 0

    async def submit(self, snapshot: Snapshot) -> Enqueued:
        """Queue `snapshot` with whatever else is waiting; raises `DatabaseUnavailable` on failure."""
        future: asyncio.Future[Enqueued] = asyncio.get_running_loop().create_future()
        self._pending.append((snapshot, future))
        if self._flights < self._max_flights:
            self._flights += 1
            asyncio.create_task(self._fly())  # noqa: RUF006 - the flight settles every future it takes
        return await future

    async def _fly(self) -> None:
        try:
            while batch := self._take():
                try:
                    await self._write(batch)
                finally:
                    self._writing.difference_update(s.session_id for s, _ in batch)
        finally:
            self._flights -= 1

    def _take(self) -> list[_Waiting]:
        """The oldest waiting snapshots, up to a group, of sessions not being written; a flight
        that finds none ends, and one that finishes a group looks again for its sessions' next."""
        batch: list[_Waiting] = []
        left: list[_Waiting] = []
        for index, waiting in enumerate(self._pending):
            if len(batch) == self._max_batch:
                left.extend(self._pending[index:])
                break
            session = waiting[0].session_id
            if session in self._writing:
                left.append(waiting)
            else:
                self._writing.add(session)
                batch.append(waiting)
        self._pending = left
        return batch

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            receipts = await enqueue_many(self._pool, [s for s, _ in batch], timeout=self._timeout)
        except Exception as exc:  # handed to every waiting request, which answers 503
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), receipt in zip(batch, receipts, strict=True):
            if not future.done():
                future.set_result(receipt)


async def metrics(pool: AsyncConnectionPool, *, timeout: float | None = None) -> QueueMetrics:
    """Length and ages of the ingestion queue."""
    async with connection(pool, timeout=timeout) as conn:
        row = await (await conn.execute(query("queue_metrics"), {"queue": QUEUE_NAME})).fetchone()
    assert row is not None
    return QueueMetrics(row[0], row[1], row[2], row[3], row[4])


@dataclass(frozen=True)
class Read:
    """What a read took and, for a full read (`after` 0), the id of the oldest message it saw
    ready (taken or not)."""

    messages: list[QueuedMessage]
    ready_from: int | None


async def read_snapshots(
    conn: psycopg.AsyncConnection[Any], *, qty: int, vt: int, lease: UUID, after: int = 0
) -> Read:
    """Up to `qty` of the oldest visible messages with ids above `after` (in no particular
    order), of unheld sessions.

    The sessions of the returned messages are leased under `lease` until released or for `vt`
    seconds, so no other worker reads them meanwhile.
    """
    params = {"queue": QUEUE, "qty": qty, "vt": vt, "token": lease, "after": after}
    cursor = await conn.execute(query("read_snapshots"), params)
    rows = await cursor.fetchall()
    messages = [
        QueuedMessage(MsgId(msg_id), read_ct, enqueued_at, body, _headers(headers), lease, last_seq)
        for msg_id, read_ct, enqueued_at, body, headers, last_seq, _ in rows
    ]
    # Every row carries the same figure; without a row there is nothing to learn from.
    return Read(messages, rows[0][6] if rows else None)


def _headers(headers: Any) -> Mapping[str, Any]:
    """A message's headers as the producer writes them, an object; anything else sent to the
    queue by hand (a number, a string, nothing) reads as none, so it cannot fail a read."""
    return headers if type(headers) is dict else {}


async def release_sessions(
    conn: psycopg.AsyncConnection[Any], leases: Mapping[UUID, Iterable[str]]
) -> None:
    """Give sessions back to other workers once their messages are settled."""
    for token, sessions in leases.items():
        ids = sorted(set(sessions))
        if ids:
            await conn.execute(query("release_sessions"), {"session_ids": ids, "token": token})


@dataclass(frozen=True)
class Event:
    """Something that happened to a message, for `nexus trace`."""

    msg_id: int
    session_id: str | None
    event: str
    attempt: int | None
    detail: Mapping[str, Any]


async def hold_off_forgets(conn: psycopg.AsyncConnection[Any]) -> None:
    """Wait for any `nexus forget` under way, and hold off new ones until this transaction ends."""
    await conn.execute(query("hold_off_forgets"))


async def record_events(conn: psycopg.AsyncConnection[Any], events: Sequence[Event]) -> None:
    """Write events in one statement."""
    if events:
        await conn.execute(
            query("record_events"),
            {
                "msg_ids": [e.msg_id for e in events],
                "session_ids": [e.session_id for e in events],
                "events": [e.event for e in events],
                "attempts": [e.attempt for e in events],
                "details": [Jsonb(dict(e.detail)) for e in events],
            },
        )


async def seconds_until_visible(conn: psycopg.AsyncConnection[Any]) -> float | None:
    """How long until the next hidden message becomes readable; None when the queue is empty."""
    row = await (await conn.execute(query("next_visible"))).fetchone()
    return None if row is None or row[0] is None else max(0.0, float(row[0]))


async def acknowledge(
    conn: psycopg.AsyncConnection[Any], msg_ids: Sequence[int], *, archive: bool
) -> None:
    """Remove handled messages from the queue, keeping a copy in the archive when asked."""
    if msg_ids:
        name = "archive_messages" if archive else "delete_messages"
        await conn.execute(query(name), {"queue": QUEUE, "msg_ids": list(msg_ids)})


async def retry_later(conn: psycopg.AsyncConnection[Any], msg_id: int, delay_s: int) -> None:
    """Hide a message for `delay_s` seconds so it is read again after a back-off."""
    await conn.execute(
        query("set_visibility"), {"queue": QUEUE, "msg_id": msg_id, "delay": delay_s}
    )


@dataclass(frozen=True)
class SessionProgress:
    """What the extraction policy needs to know of a session (see `nexus_ingest.policy`)."""

    created_at: datetime | None
    extracted_at: datetime | None
    extracted_turns: int | None


async def session_progress(
    conn: psycopg.AsyncConnection[Any], session_ids: Sequence[str]
) -> tuple[datetime, dict[str, SessionProgress]]:
    """The database's time now, and when each session began and was last extracted."""
    cursor = await conn.execute(query("session_progress"), {"session_ids": list(session_ids)})
    rows = await cursor.fetchall()
    now = rows[0][4]
    return now, {
        session_id: SessionProgress(created_at, extracted_at, extracted_turns)
        for session_id, created_at, extracted_at, extracted_turns, _ in rows
    }


async def defer(
    conn: psycopg.AsyncConnection[Any], deferrals: Sequence[tuple[int, datetime | None]]
) -> None:
    """Hide messages until their time (None: none, readable now), without counting the read
    that found them."""
    if deferrals:
        await conn.execute(
            query("defer_messages"),
            {"msg_ids": [m for m, _ in deferrals], "until": [u for _, u in deferrals]},
        )


async def queued_messages(
    conn: psycopg.AsyncConnection[Any], msg_ids: Sequence[int]
) -> list[QueuedMessage]:
    """Messages still queued, by id, left as they are (hidden or not, their reads uncounted)."""
    cursor = await conn.execute(query("queued_messages"), {"msg_ids": list(msg_ids)})
    return [
        QueuedMessage(MsgId(msg_id), read_ct, enqueued_at, body, headers or {})
        for msg_id, read_ct, enqueued_at, body, headers in await cursor.fetchall()
    ]


@dataclass(frozen=True)
class OpenBatch:
    """A Message Batch submitted and not yet settled, and the messages it answers."""

    batch_id: str
    msg_ids: list[int]
    submitted_at: datetime


async def record_batch(
    conn: psycopg.AsyncConnection[Any],
    batch_id: str,
    msg_ids: Sequence[int],
    *,
    owner: UUID,
    claim_s: float,
) -> None:
    """Remember a submitted batch, claimed by `owner` for `claim_s`; its messages stay hidden."""
    params = {"batch_id": batch_id, "msg_ids": list(msg_ids), "owner": owner, "claim_s": claim_s}
    await conn.execute(query("record_llm_batch"), params)


async def reserve_for_batch(
    conn: psycopg.AsyncConnection[Any], messages: Sequence[QueuedMessage], *, claim_s: float
) -> set[tuple[int, int]]:
    """Hide messages about to be sent in a batch as a recorded batch would; returns the
    (id, read count) of those kept, the ones no other read has taken since."""
    params = {
        "msg_ids": [m.msg_id for m in messages],
        "read_cts": [m.read_ct for m in messages],
        "claim_s": claim_s,
    }
    cursor = await conn.execute(query("reserve_for_llm_batch"), params)
    return {(msg_id, read_ct) for msg_id, read_ct in await cursor.fetchall()}


async def claim_batches(
    conn: psycopg.AsyncConnection[Any], *, owner: UUID, claim_s: float
) -> list[OpenBatch]:
    """Renew `owner`'s claim on its batches and take over those nobody claims any more."""
    cursor = await conn.execute(query("claim_llm_batches"), {"owner": owner, "claim_s": claim_s})
    return [OpenBatch(b, list(ids), at) for b, ids, at in await cursor.fetchall()]


async def release_batches(conn: psycopg.AsyncConnection[Any], *, owner: UUID) -> None:
    """Let any worker take over `owner`'s batches at once."""
    await conn.execute(query("release_llm_batches"), {"owner": owner})


async def forget_batch(conn: psycopg.AsyncConnection[Any], batch_id: str) -> None:
    """A batch whose every result is settled."""
    await conn.execute(query("forget_llm_batch"), {"batch_id": batch_id})


async def lose_batch(conn: psycopg.AsyncConnection[Any], batch_id: str) -> None:
    """A batch the API no longer knows: its messages come back to be read now."""
    await conn.execute(query("lose_llm_batch"), {"batch_id": batch_id})


async def dead_letter(
    conn: psycopg.AsyncConnection[Any], letters: Sequence[tuple[int, Mapping[str, Any]]]
) -> None:
    """Move messages to the dead-letter queue, each with why it failed, archiving the originals.

    The dead letter is built in the database from the queued row, so a body of any shape is
    kept as it was; a forgotten visitor's message is deleted instead.
    """
    if letters:
        await conn.execute(
            query("dead_letter"),
            {
                "queue": QUEUE,
                "dlq": DLQ,
                "msg_ids": [msg_id for msg_id, _ in letters],
                "errors": [Jsonb(storable(dict(error))) for _, error in letters],
            },
        )


@dataclass(frozen=True)
class DeadLetter:
    """A message that could not be processed, with why."""

    msg_id: MsgId
    original_msg_id: int | None
    session_id: str | None
    enqueued_at: datetime
    error: Mapping[str, Any]


async def dead_letters(pool: AsyncConnectionPool, *, limit: int = 100) -> list[DeadLetter]:
    """The oldest dead letters, up to `limit`."""
    async with connection(pool) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("dead_letters"), {"limit": limit})
        rows = await cur.fetchall()
    return [_dead_letter(r) for r in rows]


def _dead_letter(row: Mapping[str, Any]) -> DeadLetter:
    body = row["message"] if isinstance(row["message"], dict) else {}
    original = body.get("original") if isinstance(body.get("original"), dict) else {}
    return DeadLetter(
        msg_id=MsgId(row["msg_id"]),
        original_msg_id=_whole_number(body.get("originalMsgId")),
        session_id=original.get("sessionId") if original else None,
        enqueued_at=row["enqueued_at"],
        error=_error_object(body.get("error")),
    )


# The dead-letter queue is a plain PGMQ queue: a letter sent there by hand or by another tool
# may hold anything where the worker writes a number and an object.
def _whole_number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_object(error: object) -> Mapping[str, Any]:
    if isinstance(error, Mapping):
        return error
    return {"reason": str(error)} if error else {}


async def dead_letter_count(pool: AsyncConnectionPool) -> int:
    """How many messages wait in the dead-letter queue."""
    async with connection(pool) as conn:
        row = await (await conn.execute(query("dead_letter_count"))).fetchone()
    return int(row[0]) if row else 0


async def replay_dead_letters(
    pool: AsyncConnectionPool, *, msg_ids: Sequence[int] = (), replay_all: bool = False
) -> list[tuple[int, int]]:
    """Send dead letters back to the work queue (archiving them); returns (dead letter, new id) pairs."""
    params = {"all": replay_all, "msg_ids": list(msg_ids)}
    async with connection(pool) as conn, conn.transaction():
        rows = await (await conn.execute(query("replay_dead_letters"), params)).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]


async def purge_dead_letters(pool: AsyncConnectionPool) -> int:
    """Delete every dead letter; returns how many there were."""
    async with connection(pool) as conn:
        row = await (await conn.execute(query("purge_dead_letters"))).fetchone()
    return int(row[0]) if row else 0
