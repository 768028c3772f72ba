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
