"""The pipeline's promises as invariants over random (seeded) interleavings.

Three in-process workers (two calling an extractor that fails now and then, retryably or for
good, one of those slowly and the other in process; the third archiving), a producer posting
snapshots of many visitors' chats through the real HTTP app (some with an Idempotency-Key,
some retried), `nexus forget` on some visitors while they write (some of whom write again),
`nexus dlq replay` of the dead letters and maintenance turns all run at once. Then the chaos
stops, the workers drain, and what the database holds is checked against what was queued
(README: "Failures", "Poison", "Forgetting", "Scaling out"):

- nothing acknowledged with a 202 is lost: each session's newest snapshot is applied, and
  every other one is older than it (superseded), once the dead letters are replayed;
- a session is extracted by one worker at a time;
- a visitor's row holds the newest snapshot's values (merges follow the producer's receive
  time) and the products of every applied one;
- a forgotten visitor leaves nothing anywhere, and nothing they wrote after the forget reaches
  an extractor (what they wrote before may have been in flight: that is allowed);
- no session stays leased once everything is idle.

The seed fixes every choice the test makes; the database's timing still varies between runs.
The last tests are the defects it found, each made deterministic.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.api import create_app
from nexus_ingest.cli import replay_batches
from nexus_ingest.db import open_pool
from nexus_ingest.errors import RetryLater
from nexus_ingest.extract.base import Extraction, Extractor
from nexus_ingest.extract.faults import FaultyExtractor
from nexus_ingest.maintenance import Retention, run_maintenance
from nexus_ingest.models import ChatMessage, Prospect
from nexus_ingest.queries import query
from nexus_ingest.settings import Settings
from nexus_ingest.store import forget_prospect
from nexus_ingest.worker.process import Failed
from nexus_ingest.worker.settle import Settler
from tests.worker_kit import FAST, fetch, until

SEEDS = [11, 23, 42]
VISITORS = 36
CHAOS_S = 5.0
DRAIN_S = 25.0
RETENTION = Retention(archive_days=7, history_days=90, dead_letter_days=30)
WORKER = dataclasses.replace(FAST, concurrency=4, batch_size=20)

# Every row the queue ever held, as committed (a trigger's row rolls back with its insert):
# the producer's receive time of each snapshot is known only there.
WITNESS_SQL = """
CREATE SCHEMA witness;
CREATE TABLE witness.queued (msg_id bigint PRIMARY KEY, message jsonb NOT NULL);
CREATE FUNCTION witness.keep() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO witness.queued VALUES (NEW.msg_id, NEW.message);
    RETURN NULL;
END;
$$;
CREATE TRIGGER witness AFTER INSERT ON pgmq.q_nexus_prospect_ingestion
    FOR EACH ROW EXECUTE FUNCTION witness.keep();
"""


@dataclass
class Post:
    """One POST of a snapshot whose last turn names `name`."""

    fingerprint: str
    session: str
    name: str
    started: float
    ended: float = 0.0
    status: int = 0
    msg_id: int | None = None


@dataclass
class Record:
    """What happened, as the test saw it."""

    posts: dict[str, Post] = field(default_factory=dict)  # by name
    forgets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)  # names the extractors were given
    in_flight: set[str] = field(default_factory=set)
    overlaps: list[str] = field(default_factory=list)
    replayed: int = 0
    maintenance_turns: int = 0


class Named:
    """Takes the prospect's name from the last turn ('name: X')."""

    name = "named"
    in_process = True

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        name = messages[-1].content.removeprefix("name: ")
        return Extraction(Prospect(nombre=name, productos_interes=[name]), extractor=self.name)

    async def aclose(self) -> None:
        return None


class Witness:
    """Records every call (failing ones too) and whether two overlap on one session."""

    name = "witness"

    def __init__(
        self, record: Record, inner: Extractor, *, in_process: bool, slow_s: float, seed: int
    ) -> None:
        self.record = record
        self.inner = inner
        self.in_process = in_process
        self.slow_s = slow_s
        self._rng = random.Random(seed)

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        session = messages[0].content
        self.record.calls.append(messages[-1].content.removeprefix("name: "))
        if session in self.record.in_flight:
            self.record.overlaps.append(session)
        self.record.in_flight.add(session)
        try:
            if self.slow_s and self._rng.random() < 0.3:
                await asyncio.sleep(self._rng.uniform(0, self.slow_s))
            return await self.inner.extract(messages)
        finally:
            self.record.in_flight.discard(session)

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def producer(db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The real HTTP app, in this event loop."""
    settings = Settings(
        database_url=db_url,
        extractor="rules",
        coalesce_window_s=0,
        rate_limit_ip_per_minute=0,
        rate_limit_fingerprint_per_minute=0,
        db_timeout_s=10,
    )
    app = create_app(settings, db_url)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://nexus.test"
        ) as client,
    ):
        yield client


@pytest.fixture
async def side_pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    """Connections for the forgets, replays, maintenance and checks, apart from the workers'."""
    p = await open_pool(db_url, min_size=1, max_size=4)
    await p.wait(timeout=10)
    async with p.connection() as conn:
        await conn.execute(WITNESS_SQL)
    yield p
    await p.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("seed", SEEDS)
async def test_promises_hold_under_random_interleavings(
    seed: int,
    pool: AsyncConnectionPool,
    side_pool: AsyncConnectionPool,
    producer: httpx.AsyncClient,
    running: Any,
) -> None:
    """Chaos for a few seconds, a drain with the failures off, then every promise checked."""
    rng = random.Random(seed)
    record = Record()
    faulty = [
        FaultyExtractor(Named(), rate=0.25, mode="mixed", seed=seed),
        FaultyExtractor(Named(), rate=0.15, mode="mixed", seed=seed + 1),
    ]
    await running(Witness(record, faulty[0], in_process=False, slow_s=0.3, seed=seed), WORKER)
    await running(Witness(record, faulty[1], in_process=True, slow_s=0.0, seed=seed), WORKER)
    archiving = dataclasses.replace(WORKER, archive=True)
    await running(Witness(record, Named(), in_process=False, slow_s=0.05, seed=seed), archiving)

    stop = asyncio.Event()
    fingerprints = [f"fp{seed}v{v}" for v in range(VISITORS)]
    chaos = [
        *(_visitor(producer, record, fp, random.Random(rng.random()), stop) for fp in fingerprints),
        _forgetter(side_pool, record, fingerprints, random.Random(rng.random()), stop),
        _replayer(side_pool, record, random.Random(rng.random()), stop),
        _maintainer(side_pool, record, random.Random(rng.random()), stop),
    ]
    tasks = [asyncio.create_task(c) for c in chaos]
    await asyncio.sleep(CHAOS_S)  # how long the chaos lasts, not a wait for a condition
    stop.set()
    await asyncio.gather(*tasks)

    # Calm: no more failures; whatever died is replayed until nothing is left.
    for extractor in faulty:
        extractor.rate = 0.0
    deadline = time.monotonic() + DRAIN_S
    while True:
        await until(lambda: _idle(side_pool), timeout=deadline - time.monotonic(), what="drain")
        replayed = await _replay_all(side_pool)
        if not replayed:
            break
        record.replayed += replayed
    await until(lambda: _no_leases(side_pool), timeout=5, what="every lease given back")

    await _check(side_pool, record)


async def _visitor(
    client: httpx.AsyncClient, record: Record, fp: str, rng: random.Random, stop: asyncio.Event
) -> None:
    """A visitor chatting in one to three sessions, now and then in two tabs at once."""
    sessions = [f"{fp}s{i}" for i in range(rng.randint(1, 3))]
    turn = 0
    await asyncio.sleep(rng.uniform(0, 0.5))
    while not stop.is_set():
        chosen = rng.sample(sessions, k=2 if len(sessions) > 1 and rng.random() < 0.2 else 1)
        posts = []
        for session in chosen:
            turn += 1
            posts.append(_post(client, record, fp, session, f"{session}t{turn}", rng))
        await asyncio.gather(*posts)
        await asyncio.sleep(rng.uniform(0.02, 0.4))


async def _post(
    client: httpx.AsyncClient, record: Record, fp: str, session: str, name: str, rng: random.Random
) -> None:
    post = Post(fp, session, name, time.monotonic())
    record.posts[name] = post
    body = {
        "sessionId": session,
        "fingerprint": fp,
        "messages": [
            {"role": "user", "content": session},
            {"role": "user", "content": f"name: {name}"},
        ],
    }
    headers = {"Idempotency-Key": f"k-{name}"} if rng.random() < 0.3 else {}
    for _ in range(2 if headers and rng.random() < 0.3 else 1):  # a retried POST, now and then
        response = await client.post("/api/nexus/producer", json=body, headers=headers)
        assert response.status_code == 202, response.text
        msg_id = response.json()["messageId"]
        if post.msg_id not in (None, msg_id):
            # A forgotten visitor's key goes with the rest of them (the forget's, or the read
            # that drops their later snapshot): the retry is a new snapshot, dropped in turn.
            assert _forgotten_by(record, fp, time.monotonic()), (
                "a retried POST gets the first messageId"
            )
        post.msg_id, post.status = msg_id, response.status_code
    post.ended = time.monotonic()


def _forgotten_by(record: Record, fp: str, moment: float) -> bool:
    """Whether a forget of `fp` had begun by `moment`."""
    return any(started <= moment for started, _ in record.forgets.get(fp, []))


async def _forgetter(
    pool: AsyncConnectionPool,
    record: Record,
    fingerprints: list[str],
    rng: random.Random,
    stop: asyncio.Event,
) -> None:
    """Forget a visitor now and then, whatever they are doing; some twice."""
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.05, 0.3))
        fp = rng.choice(fingerprints[: len(fingerprints) // 2])
        forgets = record.forgets.setdefault(fp, [])
        # Marked before the call: a POST may see its effect before this coroutine resumes.
        forgets.append((time.monotonic(), math.inf))
        await forget_prospect(pool, fp)
        forgets[-1] = (forgets[-1][0], time.monotonic())


async def _replayer(
    pool: AsyncConnectionPool, record: Record, rng: random.Random, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.3, 1.0))
        record.replayed += await _replay_all(pool)


async def _replay_all(pool: AsyncConnectionPool) -> int:
    """`nexus dlq replay --all`, as the command does it; how many were replayed."""
    letters = await queue.dead_letters(pool, limit=max(1, await queue.dead_letter_count(pool)))
    batches = replay_batches((int(d.msg_id), d.session_id) for d in letters)
    done = await asyncio.gather(*(queue.replay_dead_letters(pool, msg_ids=b) for b in batches))
    return sum(len(d) for d in done)


async def _maintainer(
    pool: AsyncConnectionPool, record: Record, rng: random.Random, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        await asyncio.sleep(rng.uniform(0.2, 0.8))
        await run_maintenance(pool, RETENTION)
        record.maintenance_turns += 1


async def _idle(pool: AsyncConnectionPool) -> bool:
    rows = await fetch(
        pool,
        "SELECT (SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion)"
        " + (SELECT count(*) FROM nexus.llm_batches)",
    )
    return bool(rows[0][0] == 0)


async def _no_leases(pool: AsyncConnectionPool) -> bool:
    rows = await fetch(pool, "SELECT count(*) FROM nexus.sessions WHERE lease_token IS NOT NULL")
    return bool(rows[0][0] == 0)


@dataclass(frozen=True)
class Queued:
    msg_id: int
    fingerprint: str
    session: str
    seq: int | None
    received_at: datetime
    name: str
    replayed_from: int | None


async def _queued(pool: AsyncConnectionPool) -> list[Queued]:
    rows = await fetch(
        pool,
        "SELECT msg_id, message ->> 'fingerprint', message ->> 'sessionId',"
        " (message ->> 'seq')::int, (message ->> 'receivedAt')::timestamptz,"
        " message -> 'messages' -> -1 ->> 'content', (message ->> 'replayedFrom')::bigint"
        " FROM witness.queued ORDER BY msg_id",
    )
    return [
        Queued(m, fp, s, seq, at, text.removeprefix("name: "), again)
        for m, fp, s, seq, at, text, again in rows
    ]


async def _check(pool: AsyncConnectionPool, record: Record) -> None:
    queued = await _queued(pool)
    forgotten = set(record.forgets)
    assert forgotten and record.calls and record.replayed, "the chaos did what it is for"

    # One worker at a time on a session.
    assert record.overlaps == [], "a session was extracted by two workers at once"

    # Nothing a visitor wrote after being forgotten reached an extractor.
    for name in record.calls:
        post = record.posts[name]
        after = [e for _, e in record.forgets.get(post.fingerprint, []) if e < post.started]
        assert not after, f"{name} was written after its visitor was forgotten, yet extracted"

    # Nothing acknowledged is lost from the queue's record.
    first_sent = {q.msg_id for q in queued if q.replayed_from is None}
    acked = [p for p in record.posts.values() if p.msg_id is not None]
    assert all(p.msg_id in first_sent for p in acked), "a 202 with no queued snapshot"

    await _check_forgotten(pool, forgotten, queued)
    await _check_kept(pool, forgotten, queued, acked)


async def _check_forgotten(
    pool: AsyncConnectionPool, forgotten: set[str], queued: list[Queued]
) -> None:
    fps = sorted(forgotten)
    sessions = sorted({q.session for q in queued if q.fingerprint in forgotten})
    left = await fetch(
        pool,
        "SELECT 'prospect_data', fingerprint_id FROM prospect_data WHERE fingerprint_id = ANY(%s)"
        " UNION ALL SELECT 'prospect_extractions', fingerprint_id FROM prospect_extractions"
        "   WHERE fingerprint_id = ANY(%s) OR session_id = ANY(%s)"
        " UNION ALL SELECT 'sessions', session_id FROM nexus.sessions"
        "   WHERE fingerprint_id = ANY(%s) OR session_id = ANY(%s)"
        " UNION ALL SELECT 'idempotency_keys', session_id FROM nexus.idempotency_keys"
        "   WHERE fingerprint_id = ANY(%s)"
        " UNION ALL SELECT 'message_events', session_id FROM nexus.message_events"
        "   WHERE session_id = ANY(%s)"
        " UNION ALL SELECT 'queue', message ->> 'fingerprint'"
        "   FROM pgmq.q_nexus_prospect_ingestion WHERE message ->> 'fingerprint' = ANY(%s)"
        " UNION ALL SELECT 'archive', message ->> 'fingerprint'"
        "   FROM pgmq.a_nexus_prospect_ingestion WHERE message ->> 'fingerprint' = ANY(%s)"
        " UNION ALL SELECT 'dead_letters', message -> 'original' ->> 'fingerprint'"
        "   FROM pgmq.q_nexus_prospect_ingestion_dlq"
        "   WHERE message -> 'original' ->> 'fingerprint' = ANY(%s)"
        " UNION ALL SELECT 'archived_dead_letters', message -> 'original' ->> 'fingerprint'"
        "   FROM pgmq.a_nexus_prospect_ingestion_dlq"
        "   WHERE message -> 'original' ->> 'fingerprint' = ANY(%s)",
        fps,
        fps,
        sessions,
        fps,
        sessions,
        fps,
        sessions,
        fps,
        fps,
        fps,
        fps,
    )
    assert left == [], "a forgotten visitor left something behind"


async def _check_kept(
    pool: AsyncConnectionPool, forgotten: set[str], queued: list[Queued], acked: list[Post]
) -> None:
    kept = [q for q in queued if q.fingerprint not in forgotten and q.replayed_from is None]
    assert {p.msg_id for p in acked if p.fingerprint not in forgotten} <= {q.msg_id for q in kept}
    assert await fetch(pool, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq") == [(0,)]

    newest: dict[str, Queued] = {}
    for q in kept:
        assert q.seq is not None, f"{q.name} of a visitor never forgotten was not numbered"
        if q.session not in newest or q.seq > newest[q.session].seq:  # type: ignore[operator]
            newest[q.session] = q
    applied = await fetch(
        pool,
        "SELECT session_id, seq, result ->> 'nombre' FROM prospect_extractions"
        " WHERE outcome = 'applied'",
    )
    applied_seqs = {(s, seq) for s, seq, _ in applied}
    for session, q in newest.items():
        assert (session, q.seq) in applied_seqs, f"the newest snapshot of {session} was lost"
    sessions = await fetch(
        pool, "SELECT session_id, last_seq, applied_seq FROM nexus.sessions ORDER BY 1"
    )
    assert sessions == [(s, q.seq, q.seq) for s, q in sorted(newest.items())]

    by_visitor: dict[str, list[Queued]] = defaultdict(list)
    for q in kept:
        by_visitor[q.fingerprint].append(q)
    names_applied: dict[str, set[str]] = defaultdict(set)
    for session, _, name in applied:
        names_applied[session].add(name)
    rows = await fetch(
        pool,
        "SELECT fingerprint_id, session_id, nombre, productos_interes, last_received_at"
        " FROM prospect_data ORDER BY 1",
    )
    expected = []
    for fp, snapshots in sorted(by_visitor.items()):
        last = max(snapshots, key=lambda q: q.received_at)
        products = set().union(*(names_applied[s] for s in {q.session for q in snapshots}))
        expected.append((fp, last.session, last.name, products, last.received_at))
    assert [(fp, s, n, set(p), at) for fp, s, n, p, at in rows] == expected


async def test_a_chat_begun_as_its_visitor_is_forgotten_leaves_no_session(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A visitor's first snapshot of a new chat is being queued when they are forgotten: the
    forget cannot see the session the producer is creating, and the producer's transaction
    checked the tombstone before there was one. Once the worker has read (and dropped) that
    snapshot, nothing of the visitor is left: not its session either."""
    snapshot = _snapshot("racing-chat", "fp-racing", "Soy Valentina Quiroga")
    items = {"queue": queue.QUEUE, "items": Jsonb([snapshot.as_item()])}
    async with pool.connection() as producer, producer.transaction():
        await producer.execute(query("enqueue_snapshots"), items)
        await forget_prospect(pool, "fp-racing")  # commits first: nothing it sees is locked
    record = Record()
    await running(Witness(record, Named(), in_process=True, slow_s=0, seed=0), WORKER)
    await until(lambda: _idle(pool), what="the snapshot dropped")
    assert await _anything_of(pool, "fp-racing") == []
    assert record.calls == []


async def test_a_key_sent_after_the_forget_goes_with_its_snapshot(
    pool: AsyncConnectionPool, producer: httpx.AsyncClient, running: Any
) -> None:
    """A forgotten visitor writes again, with an Idempotency-Key: the producer answers as
    usual, and once the worker has dropped the snapshot the key (their fingerprint and chat)
    is gone with it."""
    await forget_prospect(pool, "fp-keyed")
    body = {
        "sessionId": "keyed-chat",
        "fingerprint": "fp-keyed",
        "messages": [{"role": "user", "content": "Soy Valentina Quiroga"}],
    }
    response = await producer.post(
        "/api/nexus/producer", json=body, headers={"Idempotency-Key": "turn-1"}
    )
    assert response.status_code == 202
    await running(Named(), WORKER)
    await until(lambda: _idle(pool), what="the snapshot dropped")
    assert await _anything_of(pool, "fp-keyed") == []


async def _anything_of(pool: AsyncConnectionPool, fingerprint: str) -> list[Any]:
    """Session rows, keys and queued snapshots of one visitor."""
    return await fetch(
        pool,
        "SELECT 'session', session_id FROM nexus.sessions WHERE fingerprint_id = %s"
        " UNION ALL SELECT 'key', key FROM nexus.idempotency_keys WHERE fingerprint_id = %s"
        " UNION ALL SELECT 'queued', msg_id::text FROM pgmq.q_nexus_prospect_ingestion"
        "   WHERE message ->> 'fingerprint' = %s",
        fingerprint,
        fingerprint,
        fingerprint,
    )


async def test_a_failure_settled_as_its_visitor_is_forgotten_deadlocks_neither(
    pool: AsyncConnectionPool,
) -> None:
    """A worker settles a failed extraction (the message hidden for a retry, an event
    recorded, the session released) while `nexus forget` erases its visitor. The settlement
    must not lock the message and then wait for the tombstones' lock, which the forget holds
    while it waits for that message: each would wait for the other until Postgres killed one,
    failing the forget or leaving the session leased for a whole visibility timeout."""
    await queue.enqueue(pool, _snapshot("retrying", "fp-retrying", "Soy Valentina Quiroga"))
    async with pool.connection() as conn:
        await conn.execute("INSERT INTO prospect_data (fingerprint_id) VALUES ('fp-retrying')")
    settler = Settler(pool, WORKER)
    plan = await settler.read(1)
    assert plan is not None and len(plan.work) == 1
    async with pool.connection() as holder, holder.transaction():
        # Holds the forget after it took the tombstones' lock, before it reaches the queue.
        await holder.execute(
            "SELECT 1 FROM prospect_data WHERE fingerprint_id = 'fp-retrying' FOR UPDATE"
        )
        forget = asyncio.create_task(forget_prospect(pool, "fp-retrying"))
        await until(lambda: _waiting(pool, "%forget_prospect%"), what="the forget under way")
        failing = asyncio.create_task(settler.fail(Failed(plan.work[0], RetryLater("429"))))
        await until(lambda: _waiting(pool, "%message_events%", "%forgotten%"), timeout=0.5)
    assert await asyncio.wait_for(failing, timeout=10) is not None, "the settlement failed"
    assert (await asyncio.wait_for(forget, timeout=10))["queued"] == 1
    assert (
        await fetch(
            pool,
            "SELECT session_id FROM nexus.sessions"
            " UNION ALL SELECT msg_id::text FROM pgmq.q_nexus_prospect_ingestion"
            " UNION ALL SELECT session_id FROM nexus.message_events",
        )
        == []
    )


def _snapshot(session: str, fingerprint: str, text: str) -> queue.Snapshot:
    body = {
        "sessionId": session,
        "fingerprint": fingerprint,
        "messages": [{"role": "user", "content": text}],
    }
    return queue.Snapshot(session, fingerprint, body, {})


async def _waiting(pool: AsyncConnectionPool, *patterns: str) -> bool:
    """Whether a statement like one of `patterns` waits for a lock."""
    rows = await fetch(
        pool,
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        " AND query LIKE ANY(%s)",
        list(patterns),
    )
    return bool(rows[0][0] > 0)
