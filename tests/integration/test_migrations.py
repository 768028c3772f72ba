"""Migrations: ordered, recorded, idempotent, and the seed's SQL runs as written."""

from __future__ import annotations

import json
import select
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from nexus_ingest.errors import MigrationError
from nexus_ingest.migrate import load_migrations, migrate
from tests.helpers import NEXUS, SEED_CONVERSATION, new_database, nexus_env
from tests.pgmq_versions import install_sql_only

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


@pytest.fixture
def plain_role(pg_admin_url: str) -> Iterator[str]:
    """A login role with no attributes: neither superuser nor CREATEROLE."""
    name = f"nexus_plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def _as(admin_url: str, database: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(admin_url, dbname=database, user=role)


def _admin(admin_url: str) -> str:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def test_a_role_that_may_not_create_in_the_database_is_told_as_whom_to_migrate(
    pg_admin_url: str, empty_db: tuple[str, str], plain_role: str
) -> None:
    """Migrating as a role that may only connect fails with the project's one-line error,
    naming the role and the database's owner, not the driver's own exception."""
    name, _ = empty_db

    with pytest.raises(MigrationError) as failure:
        migrate(_as(pg_admin_url, name, plain_role))

    message = str(failure.value)
    assert "permission denied for database" in message
    assert f"the role {plain_role} may not" in message
    assert f"the database's owner ({_admin(pg_admin_url)})" in message
    assert "\n" not in message


def test_pgmq_of_another_role_is_named_without_the_servers_sql(
    pg_admin_url: str, plain_role: str
) -> None:
    """A PGMQ that an administrator installed is named with its owner, and the error leaves
    out the SQL the server was running (its CONTEXT)."""
    with new_database(pg_admin_url, "nexus_owned") as (name, admin_side):
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(name), sql.Identifier(plain_role)
                )
            )
        install_sql_only(admin_side)

        with pytest.raises(MigrationError) as failure:
            migrate(_as(pg_admin_url, name, plain_role))

    message = str(failure.value)
    assert message.startswith("PGMQ could not be prepared: permission denied for schema pgmq")
    assert f"owns the database ({plain_role}) and PGMQ ({_admin(pg_admin_url)})" in message
    assert "PL/pgSQL" not in message and "CONTEXT" not in message


def test_a_migrator_waiting_its_turn_says_for_whom(empty_db: tuple[str, str]) -> None:
    """While another migrator holds the lock, `nexus migrate` says at once which backend it
    waits for, then migrates as soon as the lock is free."""
    _, url = empty_db
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(7304225114)")
        proc = subprocess.Popen(
            [NEXUS, "migrate"], env=nexus_env(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stderr is not None
            readable, _, _ = select.select([proc.stderr], [], [], 30)
            assert readable, "nothing said within 30 s"
            line = json.loads(proc.stderr.readline())
            assert line["event"] == "migrate.waiting"
            assert line["for_backend_pid"] == holder.info.backend_pid
            assert proc.poll() is None  # still waiting
            holder.execute("SELECT pg_advisory_unlock(7304225114)")
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with psycopg.connect(url) as conn:
        applied = conn.execute("SELECT max(version) FROM nexus.schema_migrations").fetchone()
    assert applied == (max(m.version for m in load_migrations()),)
