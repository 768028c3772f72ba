"""nexus.save_extractions, the worker's one-statement batch merge, against the one-row merge.

`update_prospect_data` (checked against a plain model of the rules in test_merge_properties) is
the oracle: any sequence of extractions, cut into batches anywhere, must leave the same prospect
rows and the same history as merging them one call at a time.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nexus_ingest.queries import query

QUEUE = "nexus_prospect_ingestion"
PROSPECT_COLUMNS = (
    "fingerprint_id, session_id, nombre, email, telefono, empresa, cargo, ubicacion, "
    "productos_interes, presupuesto, plazo, nivel_interes, intencion, idioma, resumen, "
    "last_msg_id, extraction_count, last_received_at"
)

words = st.sampled_from(["Ana", "Luis", "ana@x.io", "ACME", "  ", "", "Globex"])
data = st.fixed_dictionaries(
    {},
    optional={
        "nombre": st.one_of(st.none(), words),
        "email": st.one_of(st.none(), words),
        "empresa": st.one_of(st.none(), words),
        "productos_interes": st.one_of(
            st.none(),
            st.lists(st.sampled_from(["crm", "CRM", "seo", " hosting", ""]), max_size=3),
            st.sampled_from(["crm", "seo"]),
        ),
        "nivel_interes": st.one_of(st.none(), st.integers(-3, 14), st.sampled_from(["7", "x"])),
        "intencion": st.one_of(st.none(), st.sampled_from(["compra", "Queja ", "otra cosa", ""])),
    },
)
# A session belongs to one visitor, except in the rare bad input where it does not.
sessions = st.sampled_from([("fp-a", "s-1"), ("fp-a", "s-2"), ("fp-b", "s-3"), ("fp-b", "s-1")])
extraction = st.tuples(sessions, st.one_of(st.none(), st.integers(1, 6)), data)
# When the producer received the snapshot: arrival order and receipt order need not agree.
received = st.one_of(st.none(), st.sampled_from([f"2026-01-01T00:00:0{n}Z" for n in range(6)]))


@st.composite
def deliveries(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Extractions in arrival order, some of them redelivered later with the same message id,
    and now and then a visitor forgotten between two of them."""
    items: list[dict[str, Any]] = []
    for (fingerprint, session), seq, payload in draw(st.lists(extraction, min_size=1, max_size=9)):
        if items and draw(st.booleans()) and draw(st.booleans()):
            items.append(dict(draw(st.sampled_from([i for i in items if "msg_id" in i]))))
        if draw(st.integers(0, 9)) == 0:
            items.append({"forget": fingerprint})
        items.append(
            {
                "msg_id": len(items) + 1,
                "fingerprint_id": fingerprint,
                "session_id": session,
                "seq": seq,
                "data": payload,
                "extractor": "rules",
                "latency_ms": 1.5,
                "received_at": draw(received),
            }
        )
    return items


def merged_state(conn: psycopg.Connection[Any]) -> tuple[list[Any], list[Any]]:
    prospects = conn.execute(
        f"SELECT {PROSPECT_COLUMNS} FROM prospect_data ORDER BY fingerprint_id"
    ).fetchall()
    history = conn.execute(
        "SELECT msg_id, fingerprint_id, session_id, seq, outcome, extractor, latency_ms, result"
        " FROM prospect_extractions ORDER BY msg_id"
    ).fetchall()
    return prospects, history


def forget(conn: psycopg.Connection[Any], fingerprint: str) -> None:
    conn.execute("SELECT nexus.forget_prospect(%s)", (fingerprint,))


def one_at_a_time(conn: psycopg.Connection[Any], items: list[dict[str, Any]]) -> list[Any]:
    outcomes = []
    for item in items:
        if "forget" in item:
            forget(conn, item["forget"])
            continue
        row = conn.execute(
            "SELECT update_prospect_data(%s::text, %s::text, %s::jsonb, %s::bigint, %s::integer,"
            " %s::text, NULL, 0, 0, 0, %s::real, %s::timestamptz)",
            (
                item["fingerprint_id"],
                item["session_id"],
                json.dumps(item["data"]),
                item["msg_id"],
                item["seq"],
                item["extractor"],
                item["latency_ms"],
                item["received_at"],
            ),
        ).fetchone()
        outcomes.append((item["msg_id"], row[0] if row else None))
    return outcomes


def in_batches(
    conn: psycopg.Connection[Any], items: list[dict[str, Any]], cuts: list[int]
) -> list[Any]:
    """Each run of extractions between two forgets, cut into batches at `cuts`."""
    outcomes = []
    forgets = [n for n, item in enumerate(items) if "forget" in item]
    bounds = sorted(
        {0, len(items), *forgets, *(n + 1 for n in forgets), *(c % (len(items) + 1) for c in cuts)}
    )
    for start, end in itertools.pairwise(bounds):
        if "forget" in items[start]:
            forget(conn, items[start]["forget"])
            continue
        rows = conn.execute(
            "SELECT msg_id, outcome FROM nexus.save_extractions(%s, %s::jsonb)",
            (QUEUE, json.dumps(items[start:end])),
        ).fetchall()
        outcomes += rows
    return outcomes


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=deliveries(), cuts=st.lists(st.integers(0, 20), max_size=4))
def test_batches_merge_exactly_as_one_call_each(
    db_url: str, items: list[dict[str, Any]], cuts: list[int]
) -> None:
    """Wherever the batches are cut, whatever the receipt times and forgets, rows, history and
    outcomes match one call per extraction."""
    with psycopg.connect(db_url) as conn:  # each side is rolled back: one database serves all
        try:
            expected_outcomes = one_at_a_time(conn, items)
            expected = merged_state(conn)
        finally:
            conn.rollback()
        try:
            outcomes = in_batches(conn, items, cuts)
            actual = merged_state(conn)
        finally:
            conn.rollback()
    assert actual == expected
    assert sorted(outcomes) == sorted(expected_outcomes)


def test_save_acknowledges_the_messages_and_releases_only_its_own_leases(db_url: str) -> None:
    """Saved messages leave the queue; leases taken under the batch's tokens end, others stay."""
    ours, theirs = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(db_url, autocommit=True) as conn:
        msg_ids = [
            conn.execute(
                "SELECT pgmq.send(%s, %s::jsonb, %s::jsonb)",
                (QUEUE, json.dumps({"n": n}), json.dumps({"x-pgmq-group": f"s-{n}"})),
            ).fetchone()[0]  # type: ignore[index]
            for n in range(3)
        ]
        conn.execute(
            "INSERT INTO nexus.sessions (session_id, fingerprint_id, last_seq, applied_seq,"
            " leased_until, lease_token) VALUES"
            " ('s-0', 'fp-0', 1, 0, now() + interval '1 minute', %(ours)s),"
            " ('s-1', 'fp-1', 1, 5, now() + interval '1 minute', %(ours)s),"
            " ('s-2', 'fp-2', 1, 0, now() + interval '1 minute', %(theirs)s)",
            {"ours": ours, "theirs": theirs},
        )
        items = [
            {"msg_id": msg_ids[0], "fingerprint_id": "fp-0", "session_id": "s-0", "seq": 1},
            {"msg_id": msg_ids[1], "fingerprint_id": "fp-1", "session_id": "s-1", "seq": 1},
            {"msg_id": msg_ids[2], "fingerprint_id": "fp-2", "session_id": "s-2", "seq": 1},
        ]
        for item in items:
            item |= {"lease": str(ours), "data": {"nombre": "Ana"}}
        params = {"queue": QUEUE, "items": json.dumps(items), "archive": False}
        outcomes: dict[int, str] = dict(conn.execute(query("save_extractions"), params).fetchall())
        leases: dict[str, bool] = dict(
            conn.execute(
                "SELECT session_id, lease_token IS NOT NULL FROM nexus.sessions"
            ).fetchall()
        )
        queued = conn.execute(
            "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion WHERE msg_id = ANY(%s)",
            (msg_ids,),
        ).fetchone()
    assert outcomes == {msg_ids[0]: "applied", msg_ids[1]: "stale", msg_ids[2]: "applied"}
    assert leases == {"s-0": False, "s-1": False, "s-2": True}
    assert queued == (0,)


def _session_items(count: int) -> list[dict[str, Any]]:
    """Extractions of `count` distinct sessions and visitors, message ids 1..count."""
    return [
        {"msg_id": n, "fingerprint_id": f"fp-{n}", "session_id": f"s-{n}", "seq": 1}
        for n in range(1, count + 1)
    ]


def explained(conn: psycopg.Connection[Any], *, analyze: bool = False) -> list[str]:
    """The plans of every statement `conn` runs from now on, nested ones too (auto_explain),
    with the rows and loops of each step when `analyze`; the list fills as they run."""
    plans: list[str] = []
    conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    conn.execute("SET auto_explain.log_level = notice")
    if analyze:
        conn.execute("SET auto_explain.log_analyze = on")
        conn.execute("SET auto_explain.log_timing = off")
    return plans


def test_a_save_reads_its_rows_by_key_however_large_the_tables(db_url: str) -> None:
    """No statement of a save scans a whole table: its cost follows the batch, not the history."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO nexus.sessions (session_id, fingerprint_id, last_seq)"
            " SELECT 's-' || g, 'fp-' || g, 1 FROM generate_series(1, 5000) AS g"
        )
        conn.execute("ANALYZE nexus.sessions")
        plans = explained(conn)
        rows = conn.execute(
            "SELECT outcome FROM nexus.save_extractions(%s, %s::jsonb)",
            (QUEUE, json.dumps(_session_items(200))),
        ).fetchall()
    assert rows == [("applied",)] * 200
    merge_plans = [p for p in plans if "prospect_extractions" in p]
    assert merge_plans, "auto_explain showed the merge's plan"
    assert not [p for p in merge_plans if "Seq Scan" in p], merge_plans


def test_a_redelivered_batch_is_duplicate_and_merges_nothing(db_url: str) -> None:
    """The same messages saved again (a worker that died before its commit was seen) are each
    a duplicate: no second history row, no second merge."""
    items = _session_items(3)
    for item in items:
        item["data"] = {"nombre": "Ana"}
    save = "SELECT msg_id, outcome FROM nexus.save_extractions(%s, %s::jsonb)"
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = dict(conn.execute(save, (QUEUE, json.dumps(items))).fetchall())
        again = dict(conn.execute(save, (QUEUE, json.dumps(items))).fetchall())
        counts = conn.execute(
            "SELECT sum(extraction_count), (SELECT count(*) FROM prospect_extractions)"
            " FROM prospect_data"
        ).fetchone()
    assert first == {1: "applied", 2: "applied", 3: "applied"}
    assert again == {1: "duplicate", 2: "duplicate", 3: "duplicate"}
    assert counts == (3, 3)


def test_a_save_rescans_no_intermediate_result_per_item(db_url: str) -> None:
    """A 200-item merge reads each of its intermediate results once: a plan that rescans one
    for every item (a nested loop over two of them) costs the square of the batch."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        plans = explained(conn, analyze=True)
        rows = conn.execute(
            "SELECT outcome FROM nexus.save_extractions(%s, %s::jsonb)",
            (QUEUE, json.dumps(_session_items(200))),
        ).fetchall()
    assert rows == [("applied",)] * 200
    [merge] = [p for p in plans if "INSERT INTO public.prospect_extractions" in p]
    rescans = re.findall(r"CTE Scan on \w+ \w+ .*loops=([0-9]+)", merge)
    assert rescans and all(int(loops) == 1 for loops in rescans), merge


def test_a_read_finds_its_messages_by_key_however_long_the_backlog(db_url: str) -> None:
    """No statement of a read scans the whole queue table: a read of 200 costs the same at a
    backlog of 5,000 as at 200."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pgmq.send_batch(%s, array_agg(jsonb_build_object('fingerprint', 'fp-' || g)),"
            " array_agg(jsonb_build_object('x-pgmq-group', 's-' || g)))"
            " FROM generate_series(1, 5000) AS g",
            (QUEUE,),
        )
        conn.execute("ANALYZE pgmq.q_nexus_prospect_ingestion")
        plans = explained(conn)
        read = conn.execute(
            query("read_snapshots"),
            {"queue": QUEUE, "vt": 30, "qty": 200, "token": uuid.uuid4(), "after": 0},
        ).fetchall()
    assert len(read) == 200
    [plan] = [p for p in plans if "UPDATE pgmq." in p]
    assert "q_nexus_prospect_ingestion_pkey" in plan and "Seq Scan" not in plan, plan
