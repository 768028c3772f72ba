"""The producer's writes racing each other: batches of several producers on one database."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.db import open_pool
from tests.helpers import running_nexus

SESSION = "chat-1"
FINGERPRINT = "fp-1"


def _snapshot(key: str, text: str, session: str = SESSION) -> queue.Snapshot:
    body = {
        "sessionId": session,
        "fingerprint": FINGERPRINT,
        "messages": [{"role": "user", "content": text}],
    }
    return queue.Snapshot(
        session, FINGERPRINT, body, {}, idempotency_key=key, request_hash=f"hash-{text}"
    )


@pytest.fixture
async def second_pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    """Another producer's connections to the same database."""
    p = await open_pool(db_url, min_size=1, max_size=4)
    await p.wait(timeout=10)
    yield p
    await p.close()


async def _enqueues_waiting(db_url: str, count: int) -> None:
    """Wait until `count` enqueue statements wait on a lock."""
    async with (
        asyncio.timeout(10),
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn,
    ):
        while True:
            cursor = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE %s",
                ["%enqueue_snapshots%"],
            )
            row = await cursor.fetchone()
            if row is not None and row[0] >= count:
                return
            await asyncio.sleep(0.02)


async def test_keyed_snapshots_of_one_session_never_deadlock_across_producers(
    db_url: str, pool: AsyncConnectionPool, second_pool: AsyncConnectionPool
) -> None:
    """Two snapshots of a session grouped by one producer while another producer sends one of
    them again (a retry) are all queued: the groups do not lock the session and its keys in
    opposite orders, which deadlocked and failed every request of the losing group."""
    # Longer than Postgres's deadlock_timeout, so a deadlock fails a group instead of a timeout.
    first = queue.EnqueueBatcher(pool, timeout=8)
    second = queue.EnqueueBatcher(second_pool, timeout=8)
    await queue.enqueue(pool, _snapshot("k0", "turn 0"))
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as holder:
        # Hold the session so both producers line up behind it in a known order.
        await holder.execute("BEGIN")
        await holder.execute(
            "SELECT 1 FROM nexus.sessions WHERE session_id = %s FOR UPDATE", [SESSION]
        )
        grouped = asyncio.gather(
            first.submit(_snapshot("k1", "turn 1")),
            first.submit(_snapshot("k2", "turn 2")),
            return_exceptions=True,
        )
        await _enqueues_waiting(db_url, 1)
        retried = asyncio.ensure_future(second.submit(_snapshot("k2", "turn 2")))
        await _enqueues_waiting(db_url, 2)
        await holder.execute("COMMIT")
        receipts = [*await grouped, *await asyncio.gather(retried, return_exceptions=True)]

    assert [type(r) for r in receipts] == [queue.Enqueued] * 3, receipts
    k1, k2, k2_again = receipts
    assert isinstance(k1, queue.Enqueued) and isinstance(k2, queue.Enqueued)
    assert isinstance(k2_again, queue.Enqueued)
    assert sorted([k1.seq, k2.seq]) == [2, 3]
    assert (k2_again.msg_id, k2_again.seq) == (k2.msg_id, k2.seq)
    assert sorted([k2.duplicate, k2_again.duplicate]) == [False, True]


URL = "/api/nexus/producer"


@pytest.fixture
def two_servers(db_url: str) -> Iterator[list[str]]:
    """Two `nexus serve` processes on one database, as a deployment scaled out runs them."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                running_nexus(
                    ["serve"],
                    db_url,
                    NEXUS_EXTRACTOR="rules",
                    NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0",
                    NEXUS_RATE_LIMIT_IP_PER_MINUTE="0",
                )
            )
            for _ in range(2)
        ]


def _chat(session: str, text: str, fingerprint: str = FINGERPRINT) -> bytes:
    turns = [{"role": "user", "content": text}]
    return json.dumps(
        {"messages": turns, "fingerprint": fingerprint, "sessionId": session}
    ).encode()


async def _post_all(
    servers: list[str], posts: list[tuple[bytes, str | None]]
) -> list[tuple[int, dict[str, Any]]]:
    """POST every (body, Idempotency-Key) at once, spread over the servers."""
    limits = httpx.Limits(max_connections=len(posts))
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def post(index: int, content: bytes, key: str | None) -> tuple[int, dict[str, Any]]:
            headers = {
                "content-type": "application/json",
                **({"idempotency-key": key} if key else {}),
            }
            answer = await client.post(
                servers[index % len(servers)] + URL, content=content, headers=headers
            )
            return answer.status_code, answer.json()

        return await asyncio.gather(*(post(i, *p) for i, p in enumerate(posts)))


def _queued_seqs(db_url: str, session: str) -> list[int | None]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT (message ->> 'seq')::int FROM pgmq.q_nexus_prospect_ingestion"
            " WHERE headers ->> 'x-pgmq-group' = %s ORDER BY 1",
            [session],
        ).fetchall()
    return [r[0] for r in rows]


async def test_one_key_posted_at_once_to_two_servers_queues_one_message(
    db_url: str, two_servers: list[str]
) -> None:
    """The same keyed snapshot posted 40 times at once is queued once, every answer naming it;
    the same key with other bodies is refused as reused."""
    same = await _post_all(two_servers, [(_chat("same", "hola"), "key-1")] * 40)
    reused = await _post_all(
        two_servers, [(_chat("reused", f"hola {i}"), "key-2") for i in range(20)]
    )

    assert {status for status, _ in same} == {202}
    assert len({answer["messageId"] for _, answer in same}) == 1
    assert _queued_seqs(db_url, "same") == [1]
    assert Counter((s, a.get("error")) for s, a in reused) == {
        (202, None): 1,
        (422, "idempotency_key_reused"): 19,
    }
    assert _queued_seqs(db_url, "reused") == [1]


async def test_snapshots_of_one_session_at_once_on_two_servers_are_numbered_without_gaps(
    db_url: str, two_servers: list[str]
) -> None:
    """Snapshots of a session posted at once, some keyed and sent twice (a retry racing its
    first try), are each queued once and numbered 1..n, every request answered 202."""
    posts: list[tuple[bytes, str | None]] = [(_chat("busy", f"turn {i}"), None) for i in range(30)]
    posts += [(_chat("busy", f"keyed {i}"), f"key-{i}") for i in range(15) for _ in range(2)]
    posts += [(_chat(f"other-{i}", "hola", f"fp-other-{i}"), None) for i in range(30)]
    random.Random(7).shuffle(posts)

    answers = await _post_all(two_servers, posts)

    assert Counter(status for status, _ in answers) == {202: len(posts)}
    busy = {a["messageId"]: a["sequence"] for _, a in answers if a["sessionId"] == "busy"}
    assert sorted(busy.values()) == list(range(1, 46))
    assert _queued_seqs(db_url, "busy") == list(range(1, 46))


async def test_two_visitors_claiming_one_new_session_at_once_one_wins(
    db_url: str, two_servers: list[str]
) -> None:
    """Of two fingerprints posting a new sessionId at the same moment, one is queued and the
    other refused with nothing of it queued."""
    for round_ in range(10):
        session = f"claimed-{round_}"
        answers = await _post_all(
            two_servers, [(_chat(session, "hola", f"fp-{v}"), f"k-{v}") for v in "ab"]
        )
        assert sorted((s, a.get("error")) for s, a in answers) == [
            (202, None),
            (422, "session_of_another_visitor"),
        ]
        with psycopg.connect(db_url) as conn:
            fingerprints = conn.execute(
                "SELECT message ->> 'fingerprint' FROM pgmq.q_nexus_prospect_ingestion"
                " WHERE headers ->> 'x-pgmq-group' = %s",
                [session],
            ).fetchall()
        winner = next(f"fp-{v}" for v, (s, _) in zip("ab", answers, strict=True) if s == 202)
        assert fingerprints == [(winner,)]


async def test_snapshots_of_one_session_submitted_together_are_numbered_in_arrival_order(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """A session's snapshots waiting together go out one group after another, numbered in the
    order they arrived, between other sessions' snapshots."""
    batcher = queue.EnqueueBatcher(pool, timeout=8)
    snapshots = [_snapshot(f"k{i}", f"turn {i}") for i in range(6)]
    snapshots[1:1] = [_snapshot("other", "hola", session="chat-2")]

    receipts = await asyncio.gather(*(batcher.submit(s) for s in snapshots))

    assert [r.seq for r in receipts] == [1, 1, 2, 3, 4, 5, 6]
    assert _queued_seqs(db_url, SESSION) == [1, 2, 3, 4, 5, 6]
