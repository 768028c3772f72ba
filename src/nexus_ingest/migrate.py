"""Versioned SQL migrations: applied in order, recorded, safe to re-run and to race."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import psycopg
from psycopg import sql

from nexus_ingest.errors import DatabaseUnavailable, MigrationError

# Any constant works; it only keeps two `nexus migrate` runs from interleaving.
_MIGRATION_LOCK_KEY = 7_304_225_114
_MIN_PGMQ = (1, 10)
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


@cache
def latest_version() -> int:
    """The newest migration this package ships: a database at it is up to date."""
    return max(m.version for m in load_migrations())


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
    version = _usable_extension_version(conn)
    if version:
        conn.execute(
            sql.SQL("CREATE EXTENSION IF NOT EXISTS pgmq VERSION {}").format(sql.Literal(version))
        )
        return
    from pgmq.install import get_embedded_install_sql

    with conn.transaction():
        conn.execute(get_embedded_install_sql())


def _usable_extension_version(conn: psycopg.Connection) -> str | None:
    """The newest pgmq extension version the server offers, if it is new enough for us.

    Our SQL needs PGMQ 1.10+ (message headers, last_read_at, throttled insert notifications);
    older extensions (Supabase has shipped 1.4 and 1.5) lose to the bundled SQL-only 1.13.
    """
    rows = conn.execute(
        "SELECT version FROM pg_available_extension_versions WHERE name = 'pgmq'"
    ).fetchall()
    usable = [v for (v,) in rows if _version_tuple(v) >= _MIN_PGMQ]
    return max(usable, key=_version_tuple) if usable else None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


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
