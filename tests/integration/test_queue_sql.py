"""The worker's read and save as written-out SQL on the ingestion queue (migration 019).

A statement built at run time (`EXECUTE`) is planned again on every call; a written-out one
keeps its plan where a plan for any value costs no more than one for the values at hand (a
trickle of small reads), and a plan so kept must still read a long backlog through the queue's
key. Any other queue is refused clearly.
"""

from __future__ import annotations

import json
import re
import uuid

import psycopg
import pytest

from nexus_ingest.queries import query
from tests.integration.test_batch_save import explained

QUEUE = "nexus_prospect_ingestion"


def _send(conn: psycopg.Connection, count: int, first: int = 0) -> None:
    conn.execute(
        "SELECT pgmq.send_batch(%s, array_agg(jsonb_build_object('fingerprint', 'fp-' || g)),"
        " array_agg(jsonb_build_object('x-pgmq-group', 's-' || g)))"
        " FROM generate_series(%s::integer, %s::integer) AS g",
        (QUEUE, first + 1, first + count),
    )


def _read(conn: psycopg.Connection, qty: int) -> list[tuple[int, ...]]:
    params = {"queue": QUEUE, "vt": 30, "qty": qty, "token": uuid.uuid4(), "after": 0}
    return conn.execute(query("read_snapshots"), params).fetchall()


def _read_plans(plans: list[str]) -> list[str]:
    return [p for p in plans if "WITH candidates" in p]


@pytest.mark.parametrize(
    "function",
    [
        "nexus.read_snapshots(text, integer, integer, uuid, bigint)",
        "nexus.save_extractions(text, jsonb, boolean)",
        "nexus.merge_extractions(jsonb)",
    ],
)
def test_the_worker_s_statements_are_written_out(db_url: str, function: str) -> None:
    """No statement of a read or a save is built at run time, in the function or in a PGMQ
    function it calls for the queue."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT pg_get_functiondef(%s::regprocedure)", (function,)).fetchone()
    assert row is not None
    body = row[0]
    assert not re.search(r"\bEXECUTE\b", body), body
    assert not re.search(r"pgmq\.(delete|read|set_vt|pop)\(", body), body


def test_a_plan_kept_from_a_trickle_reads_a_backlog_by_key(db_url: str) -> None:
    """After reads of a few messages (where Postgres may keep one plan for any value), 5,000
    messages arrive and a read of 200 still finds them through the queue's key."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        # As autovacuum finds them under a trickle: a few messages at a time, read at once.
        _send(conn, 3)
        conn.execute("ANALYZE pgmq.q_nexus_prospect_ingestion, nexus.sessions")
        plans = explained(conn)
        for round_ in range(1, 9):
            _send(conn, 3, first=round_ * 3)
            assert len(_read(conn, 3)) == 3
        _send(conn, 5000, first=100)
        plans.clear()
        assert len(_read(conn, 200)) == 200
    [plan] = _read_plans(plans)
    assert "q_nexus_prospect_ingestion_pkey" in plan and "Seq Scan" not in plan, plan


def test_a_long_backlog_is_read_by_key_call_after_call(db_url: str) -> None:
    """However Postgres chooses between plans for its values and a kept one, no read of a
    backlog of 5,000 scans the queue."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        _send(conn, 5000)
        conn.execute("ANALYZE pgmq.q_nexus_prospect_ingestion")
        plans = explained(conn)
        taken = [len(_read(conn, 200)) for _ in range(8)]
    assert taken == [200] * 8
    read_plans = _read_plans(plans)
    assert len(read_plans) == 8
    for plan in read_plans:
        assert "q_nexus_prospect_ingestion_pkey" in plan and "Seq Scan" not in plan, plan


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        (
            "SELECT * FROM nexus.read_snapshots(%s, 30, 10, gen_random_uuid())",
            ("another_queue",),
        ),
        ("SELECT * FROM nexus.save_extractions(%s, %s::jsonb)", ("another_queue", "[]")),
        ("SELECT * FROM nexus.read_snapshots(%s, 30, 10, gen_random_uuid())", (None,)),
    ],
)
def test_any_other_queue_is_refused_by_name(
    db_url: str, statement: str, params: tuple[object, ...]
) -> None:
    with (
        psycopg.connect(db_url, autocommit=True) as conn,
        pytest.raises(psycopg.errors.InvalidParameterValue) as refused,
    ):
        conn.execute(statement, params)
    assert "nexus_prospect_ingestion only" in str(refused.value)


def test_a_save_deletes_its_messages_and_no_others(db_url: str) -> None:
    """The written-out acknowledgement removes exactly the saved messages from the queue."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        _send(conn, 5)
        read = _read(conn, 3)
        items = [
            {
                "msg_id": row[0],
                "fingerprint_id": f"fp-x{row[0]}",
                "session_id": f"s-x{row[0]}",
                "data": {"nombre": "Ana"},
                "extractor": "rules",
            }
            for row in read
        ]
        saved = conn.execute(
            "SELECT msg_id, outcome FROM nexus.save_extractions(%s, %s::jsonb)",
            (QUEUE, json.dumps(items)),
        ).fetchall()
        left = conn.execute(
            "SELECT msg_id FROM pgmq.q_nexus_prospect_ingestion ORDER BY msg_id"
        ).fetchall()
    assert sorted(saved) == sorted((row[0], "applied") for row in read)
    assert {m for (m,) in left}.isdisjoint(row[0] for row in read) and len(left) == 2
