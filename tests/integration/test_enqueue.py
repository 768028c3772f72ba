"""nexus.enqueue_snapshots, the producer's write: receipts, numbering, keys and notifications."""

from __future__ import annotations

import random
import threading
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from nexus_ingest import queue
from nexus_ingest.queries import query


def _item(
    session: str, text: str, *, fingerprint: str | None = None, **extra: Any
) -> dict[str, Any]:
    fingerprint = fingerprint or f"fp-{session}"
    body = {
        "sessionId": session,
        "fingerprint": fingerprint,
        "messages": [{"role": "user", "content": text}],
    }
    snapshot = queue.Snapshot(session, fingerprint, body, {"traceparent": f"tp-{text}"}, **extra)
    return snapshot.as_item()


def _enqueue(conn: psycopg.Connection[Any], items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = conn.execute(query("enqueue_snapshots"), {"queue": queue.QUEUE, "items": Jsonb(items)})
    return sorted(rows.fetchall())


def _queued(conn: psycopg.Connection[Any], msg_id: int) -> tuple[str, int | None, str]:
    row = conn.execute(
        "SELECT headers ->> 'x-pgmq-group', (message ->> 'seq')::int,"
        " message -> 'messages' -> 0 ->> 'content' FROM pgmq.q_nexus_prospect_ingestion"
        " WHERE msg_id = %s",
        [msg_id],
    ).fetchone()
    assert row is not None, f"message {msg_id} is not queued"
    return row[0], row[1], row[2]


def test_a_mixed_batch_gets_one_right_receipt_per_snapshot(db_url: str) -> None:
    """Each receipt names the message holding that snapshot, numbered in arrival order."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO nexus.forgotten (fingerprint_id) VALUES ('fp-gone')")
        _enqueue(conn, [_item("b", "earlier", idempotency_key="used", request_hash="h0")])
        batch = [
            _item("b", "b2"),
            _item("a", "a1", idempotency_key="k1", request_hash="h1"),
            _item("c", "c1", fingerprint="fp-gone"),
            _item("a", "a2"),
            _item("a", "a1 again", idempotency_key="k1", request_hash="h1"),
            _item("b", "b3", idempotency_key="used", request_hash="other"),
            _item("a", "a3"),
        ]
        receipts = _enqueue(conn, batch)
        queued = {idx: _queued(conn, msg_id) for idx, msg_id, *_ in receipts}
        first_b = conn.execute(
            "SELECT msg_id FROM nexus.idempotency_keys WHERE key = 'used'"
        ).fetchone()

    assert [r[0] for r in receipts] == list(range(len(batch)))
    assert [(r[2], r[3], r[4]) for r in receipts] == [
        (2, False, False),  # b's second snapshot
        (1, False, False),
        (None, False, False),  # a forgotten visitor's: queued, numbered in no session
        (2, False, False),
        (1, True, False),  # the same key in the same batch: the first one's receipt
        (1, True, True),  # a key used before, with another body
        (3, False, False),
    ]
    assert receipts[4][1] == receipts[1][1]
    assert first_b is not None and receipts[5][1] == first_b[0]
    assert queued[0] == ("b", 2, "b2")
    assert queued[1] == ("a", 1, "a1")
    assert queued[2] == ("c", None, "c1")
    assert queued[3] == ("a", 2, "a2")
    assert queued[6] == ("a", 3, "a3")
    # Within a session, later snapshots are later messages: the queue's order is the chat's.
    assert receipts[1][1] < receipts[3][1] < receipts[6][1]


def test_a_session_belongs_to_its_first_visitor(db_url: str) -> None:
    """A sessionId already numbered under one fingerprint is refused under another, in the same
    batch or a later one: nothing is queued for it, its key is not kept, and the first visitor's
    numbering goes on as if it had not been sent. (Accepted, it would have superseded or been
    superseded by the other visitor's snapshots, and one of the two would have been lost.)"""
    with psycopg.connect(db_url, autocommit=True) as conn:
        _enqueue(conn, [_item("shared", "ana 1", fingerprint="fp-ana")])
        batch = [
            _item("shared", "bob 1", fingerprint="fp-bob", idempotency_key="k", request_hash="h"),
            _item("shared", "ana 2", fingerprint="fp-ana"),
            _item("fresh", "cid 1", fingerprint="fp-cid"),
            _item("fresh", "dan 1", fingerprint="fp-dan"),
        ]
        receipts = _enqueue(conn, batch)
        queued = conn.execute(
            "SELECT message ->> 'fingerprint', (message ->> 'seq')::int"
            " FROM pgmq.q_nexus_prospect_ingestion ORDER BY 1, 2"
        ).fetchall()
        keys = conn.execute("SELECT count(*) FROM nexus.idempotency_keys").fetchone()

    assert [(r[1] is None, r[2], r[3], r[4], r[5]) for r in receipts] == [
        (True, None, False, False, True),  # another visitor's session: refused
        (False, 2, False, False, False),
        (False, 1, False, False, False),
        (True, None, False, False, True),  # taken earlier in the same batch
    ]
    assert queued == [("fp-ana", 1), ("fp-ana", 2), ("fp-cid", 1)]
    assert keys == (0,)


def test_the_anon_path_numbers_like_the_producer(db_url: str) -> None:
    """`nexus.enqueue_snapshot`, one snapshot, continues the numbering batches started."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        _enqueue(conn, [_item("s", "one"), _item("s", "two")])
        row = conn.execute(
            "SELECT msg_id, seq, duplicate, conflict, session_taken FROM nexus.enqueue_snapshot("
            "'nexus-prospect-ingestion', 's', 'fp-s', %s, %s)",
            [Jsonb({"sessionId": "s", "messages": []}), Jsonb({"x-pgmq-group": "s"})],
        ).fetchone()
        assert row is not None
        assert row[1:] == (3, False, False, False)
        assert _queued(conn, row[0])[:2] == ("s", 3)


def test_concurrent_batches_number_every_session_without_gaps(db_url: str) -> None:
    """Four writers posting interleaved sessions: every session is numbered 1..n, in id order."""
    sessions = [f"s{i}" for i in range(12)]
    errors: list[BaseException] = []

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        try:
            with psycopg.connect(db_url, autocommit=True) as conn:
                for round_no in range(25):
                    picks = [rng.choice(sessions) for _ in range(rng.randint(1, 8))]
                    _enqueue(conn, [_item(s, f"{seed}-{round_no}") for s in picks])
        except BaseException as exc:  # reported below; a deadlock would land here
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads) and errors == []

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT headers ->> 'x-pgmq-group', (message ->> 'seq')::int"
            " FROM pgmq.q_nexus_prospect_ingestion ORDER BY msg_id"
        ).fetchall()
        last = dict(conn.execute("SELECT session_id, last_seq FROM nexus.sessions").fetchall())
    numbers: dict[str, list[int]] = {}
    for session, seq in rows:
        numbers.setdefault(session, []).append(seq)
    assert sum(len(n) for n in numbers.values()) == len(rows) > 100
    for session, seqs in numbers.items():
        assert seqs == list(range(1, len(seqs) + 1)), session
        assert last[session] == len(seqs)


def test_the_queue_notifies_once_a_statement_not_once_a_message(db_url: str) -> None:
    """No row trigger on the queue table: a notification costs one trigger call per insert."""
    with psycopg.connect(db_url) as conn:
        triggers = conn.execute(
            "SELECT tgname, (tgtype & 1) = 1 AS per_row FROM pg_trigger"
            " WHERE tgrelid = 'pgmq.q_nexus_prospect_ingestion'::regclass AND NOT tgisinternal"
        ).fetchall()
    assert triggers == [("nexus_notify_insert", False)]


def test_a_batch_wakes_a_listening_worker(db_url: str) -> None:
    """An enqueue notifies pgmq's insert channel, where workers listen."""
    channel = "pgmq.q_nexus_prospect_ingestion.INSERT"
    with (
        psycopg.connect(db_url, autocommit=True) as listener,
        psycopg.connect(db_url, autocommit=True) as producer,
    ):
        listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
        _enqueue(producer, [_item("w", "one"), _item("x", "two")])
        heard = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in heard] == [channel]
