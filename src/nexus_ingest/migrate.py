"""Versioned SQL migrations: applied in order, recorded, safe to re-run and to race."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources import files

import psycopg

from nexus_ingest.errors import DatabaseUnavailable, MigrationError

# Any constant works; it only keeps two `nexus migrate` runs from interleaving.
_MIGRATION_LOCK_KEY = 7_304_225_114
_FILE_NAME = re.compile(r"^(\d{3})_(\w+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Every migration shipped with the package, in order."""
    folder = files("nexus_ingest").joinpath("sql", "migrations")
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


def migrate(url: str) -> list[Migration]:
    """Bring the database at `url` up to date; returns the migrations applied now."""
    try:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        try:
            return _apply_pending(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))


def _apply_pending(conn: psycopg.Connection) -> list[Migration]:
    _ensure_ledger(conn)
    _ensure_pgmq(conn)
    done = {row[0] for row in conn.execute("SELECT version FROM nexus.schema_migrations")}
    applied = []
    for migration in load_migrations():
        if migration.version not in done:
            _apply(conn, migration)
            applied.append(migration)
    return applied


def _ensure_ledger(conn: psycopg.Connection) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS nexus")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS nexus.schema_migrations ("
        " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    )


def _ensure_pgmq(conn: psycopg.Connection) -> None:
    """Install PGMQ: the extension when the server has it, else the SQL-only PGMQ we ship."""
    if _pgmq_installed(conn):
        return
    has_extension = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq'"
    ).fetchone()
    if has_extension:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgmq")
        return
    from pgmq.install import get_embedded_install_sql

    with conn.transaction():
        conn.execute(get_embedded_install_sql())


def _pgmq_installed(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'pgmq')"
    ).fetchone()
    return bool(row and row[0])


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(migration.sql)
            conn.execute(
                "INSERT INTO nexus.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
    except psycopg.Error as exc:
        raise MigrationError(
            f"migration {migration.version:03d}_{migration.name} failed: {exc}"
        ) from exc
