"""A Supabase project as far as Nexus can tell: its roles and default privileges in the
database, a folder with supabase/config.toml, and `supabase db push` done as the CLI does it
(the CLI itself cannot be installed here): each migration file in its own transaction, in
version order, stopping at the first error."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("anon", "authenticated", "service_role")
# What every Supabase project has: new functions, tables and sequences in public are granted to
# the API roles by name.
DEFAULT_PRIVILEGES = [
    "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public"
    f" GRANT ALL ON {kind} TO anon, authenticated, service_role"
    for kind in ("FUNCTIONS", "TABLES", "SEQUENCES")
]


def make_supabase_like(url: str) -> None:
    """Supabase's API roles and default privileges in the database at `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        for role in ROLES:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        for statement in DEFAULT_PRIVILEGES:
            conn.execute(statement)  # type: ignore[arg-type]


# What Supabase Studio's "Expose Queues via PostgREST" grants, beside the pgmq_public wrappers it
# creates (packages/pg-meta/src/sql/studio/database/queues.ts): schema pgmq usable by the API
# roles, pgmq's queue functions executable by them, and every sequence in pgmq readable and
# settable by them, now and by default later.
EXPOSE_QUEUES = [
    "CREATE SCHEMA IF NOT EXISTS pgmq_public",
    "GRANT USAGE ON SCHEMA pgmq_public TO postgres, anon, authenticated, service_role",
    *(
        f"GRANT EXECUTE ON FUNCTION pgmq.{function} TO postgres, service_role, anon, authenticated"
        for function in (
            "pop(text)",
            "send(text, jsonb, integer)",
            "send_batch(text, jsonb[], integer)",
            "archive(text, bigint)",
            "delete(text, bigint)",
        )
    ),
    "GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA pgmq TO postgres, service_role",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq GRANT ALL PRIVILEGES ON TABLES TO postgres, service_role",
    "GRANT USAGE ON SCHEMA pgmq TO postgres, anon, authenticated, service_role",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA pgmq TO anon, authenticated, service_role",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA pgmq GRANT USAGE, SELECT, UPDATE ON SEQUENCES"
    " TO anon, authenticated, service_role",
]
# pgmq.read as Studio grants it: with the `conditional` argument from pgmq 1.5 on.
_READ = ("pgmq.read(text, integer, integer, jsonb)", "pgmq.read(text, integer, integer)")


def expose_queues(url: str) -> None:
    """Turn on "Expose Queues via PostgREST" in the database at `url` (pgmq installed), as far as
    the API roles' privileges go."""
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in EXPOSE_QUEUES:
            conn.execute(statement)  # type: ignore[arg-type]
        for read in _READ:
            if conn.execute("SELECT to_regprocedure(%s)", (read,)).fetchone() != (None,):
                conn.execute(
                    sql.SQL("GRANT EXECUTE ON FUNCTION {} TO anon, authenticated").format(
                        sql.SQL(read)  # type: ignore[arg-type]
                    )
                )
                break


# Every table, view and sequence that anon or authenticated hold any privilege on, in the schemas
# that hold Nexus's data.
BROWSER_GRANTS = """
SELECT r.role, c.oid::regclass::text
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace,
     unnest(ARRAY['anon', 'authenticated']) AS r(role)
WHERE n.nspname IN ('public', 'nexus', 'pgmq') AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND CASE WHEN c.relkind = 'S'
           THEN has_sequence_privilege(r.role, c.oid, 'USAGE, SELECT, UPDATE')
           ELSE has_any_column_privilege(r.role, c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
                OR has_table_privilege(r.role, c.oid, 'DELETE, TRUNCATE, TRIGGER')
      END
ORDER BY 1, 2
"""


def browser_grants(url: str) -> list[tuple[str, str]]:
    """(role, relation) for every privilege of anon or authenticated on Nexus's schemas' relations."""
    with psycopg.connect(url) as conn:
        return [(role, name) for role, name in conn.execute(BROWSER_GRANTS)]


# Every function of public, nexus and pgmq that anon or authenticated may call.
BROWSER_FUNCTIONS = """
SELECT DISTINCT p.oid::regprocedure::text
FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace,
     unnest(ARRAY['anon', 'authenticated']) AS r(role)
WHERE n.nspname IN ('public', 'nexus', 'pgmq')
  AND has_function_privilege(r.role, p.oid, 'EXECUTE')
  AND has_schema_privilege(r.role, n.oid, 'USAGE')
ORDER BY 1
"""
# What a browser may call: the seed's enqueue wrapper and what it runs as its caller.
SEND_PATH = [
    "nexus.send_snapshot(jsonb,integer)",
    "nexus.stored_queue_name(text)",
    "pgmq_send(text,jsonb,integer)",
]


def browser_functions(url: str) -> list[str]:
    """The functions of Nexus's schemas that anon or authenticated may call."""
    with psycopg.connect(url) as conn:
        return [name for (name,) in conn.execute(BROWSER_FUNCTIONS)]


def new_project(folder: Path) -> Path:
    """A project folder as `supabase init` leaves it (with this repository's config.toml)."""
    (folder / "supabase" / "migrations").mkdir(parents=True)
    shutil.copy(ROOT / "supabase" / "config.toml", folder / "supabase" / "config.toml")
    return folder


def psql(
    url: str, *, file: Path | None = None, script: str | None = None, one_transaction: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a SQL file or script with psql, stopping at the first error."""
    found = shutil.which("psql")
    if found is None:
        pytest.skip("psql is not installed")
    args = [found, "-X", "-v", "ON_ERROR_STOP=1", *(["-1"] if one_transaction else [])]
    args += ["-f", str(file) if file else "-", url]
    return subprocess.run(args, input=script, capture_output=True, text=True, timeout=120)


def db_push(url: str, project: Path) -> list[str]:
    """Apply the project's migrations as `supabase db push` does; returns each file's notices."""
    folder = project / "supabase" / "migrations"
    notices = []
    for path in sorted(folder.glob("*.sql"), key=lambda p: int(p.name.split("_")[0])):
        done = psql(url, file=path, one_transaction=True)
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
        notices.append(done.stderr)
    return notices
