"""The merge rules of update_prospect_data, in SQL against a real database."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest


def merge(
    conn: psycopg.Connection[Any],
    data: dict[str, Any],
    *,
    msg_id: int | None = None,
    seq: int | None = None,
    fingerprint: str = "fp-1",
    session: str = "s-1",
) -> str:
    row = conn.execute(
        "SELECT update_prospect_data(%s, %s, %s::jsonb, %s, %s)",
        (fingerprint, session, json.dumps(data), msg_id, seq),
    ).fetchone()
    assert row is not None
    return str(row[0])


def prospect(conn: psycopg.Connection[Any], fingerprint: str = "fp-1") -> dict[str, Any]:
    cur = conn.execute("SELECT * FROM prospect_data WHERE fingerprint_id = %s", (fingerprint,))
    row = cur.fetchone()
    assert row is not None
    return dict(zip([d.name for d in cur.description or []], row, strict=True))


@pytest.fixture
def conn(db_url: str) -> Any:
    with psycopg.connect(db_url, autocommit=True) as c:
        yield c


def test_new_value_replaces_and_null_never_erases(conn: psycopg.Connection[Any]) -> None:
    """A later non-null value wins; a later null or empty string leaves the known value."""
    merge(conn, {"nombre": "Carlos", "email": "c@x.io"}, msg_id=1, seq=1)
    merge(conn, {"nombre": None, "email": "carlos@acme.com", "empresa": ""}, msg_id=2, seq=2)
    row = prospect(conn)
    assert (row["nombre"], row["email"], row["empresa"]) == ("Carlos", "carlos@acme.com", None)


def test_lists_are_unioned(conn: psycopg.Connection[Any]) -> None:
    """productos_interes keeps every product ever named, once, in first-seen order."""
    merge(conn, {"productos_interes": ["paquetes", "CRM"]}, msg_id=1, seq=1)
    merge(conn, {"productos_interes": ["crm", "hosting"]}, msg_id=2, seq=2)
    merge(conn, {"productos_interes": None}, msg_id=3, seq=3)
    assert prospect(conn)["productos_interes"] == ["paquetes", "CRM", "hosting"]


def test_same_message_twice_is_a_no_op(conn: psycopg.Connection[Any]) -> None:
    """A redelivered message id changes nothing and says 'duplicate'."""
    assert merge(conn, {"nombre": "Ana", "productos_interes": ["a"]}, msg_id=7, seq=1) == "applied"
    assert (
        merge(conn, {"nombre": "Otra", "productos_interes": ["b"]}, msg_id=7, seq=2) == "duplicate"
    )
    row = prospect(conn)
    assert (row["nombre"], row["productos_interes"], row["extraction_count"]) == ("Ana", ["a"], 1)


def test_older_snapshot_never_overwrites_newer(conn: psycopg.Connection[Any]) -> None:
    """A snapshot numbered before one already merged for the session is recorded as stale and ignored."""
    assert merge(conn, {"nombre": "Nuevo", "nivel_interes": 8}, msg_id=2, seq=5) == "applied"
    assert (
        merge(conn, {"nombre": "Viejo", "nivel_interes": 2, "email": "old@x.io"}, msg_id=1, seq=4)
        == "stale"
    )
    row = prospect(conn)
    assert (row["nombre"], row["nivel_interes"], row["email"]) == ("Nuevo", 8, None)


def test_sessions_of_one_visitor_merge_into_one_row(conn: psycopg.Connection[Any]) -> None:
    """Two sessions of the same fingerprint build one prospect; each session's order is its own."""
    merge(conn, {"nombre": "Eva"}, msg_id=1, seq=3, session="a")
    merge(conn, {"telefono": "+34600111222"}, msg_id=2, seq=1, session="b")
    row = prospect(conn)
    assert (row["nombre"], row["telefono"], row["extraction_count"]) == ("Eva", "+34600111222", 2)


def test_out_of_range_values_are_clamped(conn: psycopg.Connection[Any]) -> None:
    """nivel_interes is kept within 1-10 and an unknown intent becomes 'otro', never an error."""
    merge(conn, {"nivel_interes": 42, "intencion": "comprar ya"}, msg_id=1)
    row = prospect(conn)
    assert (row["nivel_interes"], row["intencion"]) == (10, "otro")


def test_every_extraction_is_kept_in_history(conn: psycopg.Connection[Any]) -> None:
    """The history keeps message, outcome, extractor, model, tokens, latency and result."""
    conn.execute(
        "SELECT update_prospect_data('fp-h', 's-h', '{\"nombre\": \"Leo\"}', 11, 1,"
        " 'anthropic', 'claude-haiku-5-5', 120, 30, 100, 812.5)"
    )
    merge(conn, {"nombre": "Leo"}, msg_id=10, seq=0, fingerprint="fp-h", session="s-h")
    rows = conn.execute(
        "SELECT msg_id, outcome, extractor, model, input_tokens, output_tokens, cached_tokens, latency_ms, result"
        " FROM prospect_extractions WHERE fingerprint_id = 'fp-h' ORDER BY id"
    ).fetchall()
    assert rows == [
        (11, "applied", "anthropic", "claude-haiku-5-5", 120, 30, 100, 812.5, {"nombre": "Leo"}),
        (10, "stale", None, None, 0, 0, 0, None, {"nombre": "Leo"}),
    ]


@pytest.mark.parametrize(("fingerprint", "session"), [(None, "s-1"), ("fp-1", None)])
def test_a_missing_visitor_or_session_is_refused(
    conn: psycopg.Connection[Any], fingerprint: str | None, session: str | None
) -> None:
    """A merge without its visitor or session is an error, not a silent no-op."""
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="update_prospect_data"):
        conn.execute(
            "SELECT update_prospect_data(%s, %s, %s::jsonb)",
            (fingerprint, session, json.dumps({"nombre": "X"})),
        )
    assert conn.execute("SELECT count(*) FROM prospect_data").fetchone() == (0,)
