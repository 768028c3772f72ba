"""Property tests of update_prospect_data's merge rules, checked against a plain model of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TEXT_FIELDS = ["nombre", "email", "empresa"]
words = st.sampled_from(["Ana", "Luis", "ana@x.io", "ACME", "Globex", "  ", ""])
products = st.lists(st.sampled_from(["crm", "CRM", "hosting", "seo", "paquetes"]), max_size=3)
extraction = st.fixed_dictionaries(
    {},
    optional={
        **{f: st.one_of(st.none(), words) for f in TEXT_FIELDS},
        "productos_interes": st.one_of(st.none(), products),
        "nivel_interes": st.one_of(st.none(), st.integers(min_value=-5, max_value=20)),
    },
)
# Each step: (extraction, sequence number); messages arrive in any order.
steps = st.lists(
    st.tuples(extraction, st.integers(min_value=1, max_value=8)), min_size=1, max_size=6
)


def model(history: list[tuple[dict[str, Any], int]]) -> dict[str, Any]:
    """The merge rules of the SPEC, applied in arrival order."""
    row: dict[str, Any] = {f: None for f in TEXT_FIELDS} | {
        "productos_interes": [],
        "nivel_interes": None,
    }
    applied = 0
    for data, seq in history:
        if seq <= applied:
            continue  # an older snapshot never overwrites a newer one
        applied = seq
        for f in TEXT_FIELDS:
            value = (data.get(f) or "").strip()
            if value:
                row[f] = value
        seen = {p.lower() for p in row["productos_interes"]}
        for p in data.get("productos_interes") or []:
            if p.lower() not in seen:
                row["productos_interes"].append(p)
                seen.add(p.lower())
        if data.get("nivel_interes") is not None:
            row["nivel_interes"] = max(1, min(10, data["nivel_interes"]))
    return row


@pytest.fixture(scope="module")
def conn(pg_admin_url: str, template_db: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(psycopg.conninfo.make_conninfo(pg_admin_url, dbname=template_db)) as c:
        yield c
        c.rollback()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=steps)
def test_merge_matches_the_rules(
    conn: psycopg.Connection[Any], history: list[tuple[dict[str, Any], int]]
) -> None:
    """Any arrival order of extractions merges as the rules say: null never erases, lists union, newest wins."""
    try:
        for msg_id, (data, seq) in enumerate(history, start=1):
            conn.execute(
                "SELECT update_prospect_data('fp', 's', %s::jsonb, %s, %s)",
                (json.dumps(data), msg_id, seq),
            )
        conn.execute(
            "SELECT update_prospect_data('fp', 's', '{\"nombre\": \"X\"}', 1, 99)"
        )  # a replay of msg 1
        cur = conn.execute(
            "SELECT nombre, email, empresa, productos_interes, nivel_interes FROM prospect_data"
        )
        row = dict(
            zip(
                [*TEXT_FIELDS, "productos_interes", "nivel_interes"],
                cur.fetchone() or (),
                strict=True,
            )
        )
        applied_seqs = conn.execute(
            "SELECT count(*) FROM prospect_extractions WHERE outcome = 'applied'"
        ).fetchone()
    finally:
        conn.rollback()
    expected = model(history)
    assert row == expected
    assert applied_seqs is not None and applied_seqs[0] >= 1


FORGET = "forget"
# One visitor, several sessions (tabs, returns); each snapshot has its session, its number in
# the session and when the producer received it; a forget may come between any two.
visit = st.tuples(
    st.sampled_from(["tab-1", "tab-2", "tab-3"]),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=0, max_value=9),
    extraction,
)
visits = st.lists(st.one_of(visit, st.just(FORGET)), min_size=1, max_size=8)


def cross_session_model(history: list[Any]) -> dict[str, Any] | None:
    """The merge rules across sessions, in arrival order: within a session an older snapshot is
    stale; across sessions the newer receipt's values replace, an older one only fills gaps;
    after a forget nothing of the visitor is kept."""
    row: dict[str, Any] | None = None
    row_at = -1
    applied: dict[str, int] = {}
    for step in history:
        if step == FORGET:
            return None
        session, seq, at, data = step
        if seq <= applied.get(session, 0):
            continue
        applied[session] = seq
        row = row or (
            {f: None for f in TEXT_FIELDS} | {"productos_interes": [], "nivel_interes": None}
        )
        newer = at >= row_at
        row_at = max(row_at, at)
        for f in TEXT_FIELDS:
            value = (data.get(f) or "").strip()
            if value and (newer or row[f] is None):
                row[f] = value
        seen = {p.lower() for p in row["productos_interes"]}
        for p in data.get("productos_interes") or []:
            if p.lower() not in seen:
                row["productos_interes"].append(p)
                seen.add(p.lower())
        if data.get("nivel_interes") is not None and (newer or row["nivel_interes"] is None):
            row["nivel_interes"] = max(1, min(10, data["nivel_interes"]))
    return row


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=visits)
def test_merge_across_sessions_follows_receipt_time(
    conn: psycopg.Connection[Any], history: list[Any]
) -> None:
    """Snapshots of one visitor's sessions, arriving in any order, merge by when the producer
    received them: the newest receipt's values are never overwritten by an older one's; and a
    forgotten visitor's later snapshots bring nothing back."""
    try:
        for msg_id, step in enumerate(history, start=1):
            if step == FORGET:
                conn.execute("SELECT nexus.forget_prospect('fp')")
                continue
            session, seq, at, data = step
            conn.execute(
                "SELECT update_prospect_data('fp', %s, %s::jsonb, %s, %s,"
                " p_enqueued_at => '2026-01-01'::timestamptz + make_interval(secs => %s))",
                (session, json.dumps(data), msg_id, seq, at),
            )
        cur = conn.execute(
            "SELECT nombre, email, empresa, productos_interes, nivel_interes FROM prospect_data"
        )
        found = cur.fetchone()
        leftovers = conn.execute(
            "SELECT (SELECT count(*) FROM prospect_extractions) + (SELECT count(*) FROM nexus.sessions)"
        ).fetchone()
    finally:
        conn.rollback()
    expected = cross_session_model(history)
    columns = [*TEXT_FIELDS, "productos_interes", "nivel_interes"]
    assert (dict(zip(columns, found, strict=True)) if found else None) == expected
    if expected is None and FORGET in history:
        assert leftovers == (0,)
