"""Migrations: ordered, recorded, idempotent, and the seed's SQL runs as written."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from nexus_ingest.migrate import load_migrations, migrate
from tests.helpers import SEED_CONVERSATION

SEED_STATEMENTS = [
    "SELECT routine_name FROM information_schema.routines WHERE routine_name LIKE 'pgmq_%';",
    "SELECT * FROM pgmq.q_nexus_prospect_ingestion;",
    "SELECT * FROM pgmq_metrics('nexus-prospect-ingestion');",
    "SELECT * FROM prospect_data WHERE fingerprint_id = 'test-fingerprint-123';",
    """SELECT
  queue_name,
  queue_length,
  oldest_msg_age_sec,
  newest_msg_age_sec,
  total_messages
FROM pgmq_metrics('nexus-prospect-ingestion');""",
    "SELECT has_function_privilege('anon', 'pgmq_send(text, jsonb, integer)', 'EXECUTE');",
    "GRANT EXECUTE ON FUNCTION pgmq_send TO anon, authenticated;",
    "SELECT routine_name FROM information_schema.routines WHERE routine_name = 'update_prospect_data';",
]


def test_migrating_again_applies_nothing(db_url: str) -> None:
    """A migrated database is left as it is by another `migrate`."""
    assert migrate(db_url) == []


def test_every_migration_is_recorded_in_order(db_url: str) -> None:
    """The ledger lists each shipped migration once, with its checksum."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT version, checksum FROM nexus.schema_migrations ORDER BY version"
        ).fetchall()
    assert rows == [(m.version, m.checksum) for m in load_migrations()]


@pytest.mark.parametrize("statement", SEED_STATEMENTS)
def test_seed_sql_runs_as_written(db_url: str, statement: str) -> None:
    """Each SQL statement of the seed's deployment guide runs against a migrated database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def test_seed_verification_lists_the_five_wrappers(db_url: str) -> None:
    """The seed's check 'must return the 5 functions' returns exactly the five RPC wrappers."""
    with psycopg.connect(db_url) as conn:
        names = sorted(r[0] for r in conn.execute(SEED_STATEMENTS[0]))  # type: ignore[arg-type]
    assert names == ["pgmq_archive", "pgmq_delete", "pgmq_metrics", "pgmq_read", "pgmq_send"]


def test_queue_metrics_have_the_seed_columns(db_url: str) -> None:
    """pgmq_metrics returns the five columns of the seed's monitoring query."""
    with psycopg.connect(db_url) as conn:
        cur = conn.execute("SELECT * FROM pgmq_metrics('nexus-prospect-ingestion')")
        columns = [d.name for d in cur.description or []]
        row = cur.fetchone()
    assert columns == [
        "queue_name",
        "queue_length",
        "oldest_msg_age_sec",
        "newest_msg_age_sec",
        "total_messages",
    ]
    assert row is not None and row[0] == "nexus-prospect-ingestion" and row[1] == 0


def test_wrappers_accept_both_queue_names(db_url: str) -> None:
    """pgmq_send/read/delete work with the dashed public name and PGMQ's underscored name."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = conn.execute(
            "SELECT pgmq_send('nexus-prospect-ingestion', %s, 0)", (Jsonb(SEED_CONVERSATION),)
        ).fetchone()
        second = conn.execute(
            "SELECT pgmq_send('nexus_prospect_ingestion', %s, 0)", (Jsonb(SEED_CONVERSATION),)
        ).fetchone()
        read = conn.execute(
            "SELECT msg_id FROM pgmq_read('nexus-prospect-ingestion', 30, 10)"
        ).fetchall()
        deleted = conn.execute(
            "SELECT pgmq_delete('nexus_prospect_ingestion', %s)", (read[0][0],)
        ).fetchone()
    assert first and second and second[0] > first[0]
    assert sorted(r[0] for r in read) == [first[0], second[0]]
    assert deleted == (True,)


@pytest.mark.parametrize(
    ("role", "signature", "allowed"),
    [
        ("anon", "pgmq_send(text, jsonb, integer)", True),
        ("authenticated", "pgmq_send(text, jsonb, integer)", True),
        ("anon", "pgmq_read(text, integer, integer)", False),
        ("authenticated", "pgmq_read(text, integer, integer)", False),
        ("anon", "pgmq_delete(text, bigint)", False),
        ("anon", "pgmq_archive(text, bigint)", False),
        ("anon", "pgmq_metrics(text)", False),
        ("service_role", "pgmq_read(text, integer, integer)", True),
    ],
)
def test_only_send_is_granted_to_browsers(
    db_url: str, role: str, signature: str, allowed: bool
) -> None:
    """anon and authenticated may enqueue but never read conversations; service_role may."""
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, signature)
        ).fetchone()
    assert row == (allowed,)


def test_anon_cannot_read_prospects(db_url: str) -> None:
    """With row-level security and no grant, the anon role cannot select from prospect_data."""
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT update_prospect_data('fp-rls', 's-rls', '{\"nombre\": \"Ana\"}')")
        conn.execute("SET ROLE anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM prospect_data")


def test_anon_can_enqueue_through_the_wrapper(db_url: str) -> None:
    """The anon role sends through pgmq_send without any direct right on PGMQ's tables."""
    with psycopg.connect(db_url) as conn:
        conn.execute("SET ROLE anon")
        row = conn.execute(
            "SELECT pgmq_send('nexus-prospect-ingestion', %s, 0)", (Jsonb(SEED_CONVERSATION),)
        ).fetchone()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM pgmq.q_nexus_prospect_ingestion")
    assert row is not None and row[0] > 0
