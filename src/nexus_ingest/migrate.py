"""Versioned SQL migrations: applied in order, recorded, safe to re-run and to race."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import psycopg
import structlog

from nexus_ingest.db import check_usable, named
from nexus_ingest.errors import DatabaseUnavailable, MigrationError
from nexus_ingest.queries import query

log = structlog.get_logger("nexus.migrate")

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

    @property
    def label(self) -> str:
        """The file's name without `.sql`, as people refer to it: `005_prospects`."""
        return f"{self.version:03d}_{self.name}"


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
    conn = _connect(url)
    with conn:
        # Before any SET: through a pooler in transaction mode it would stay on a server
        # session that other clients get next.
        check_usable(conn, lambda: _connect(url))
        conn.execute(query("migrator_session"))
        _take_turn(conn)
        try:
            return _apply_pending(conn)
        finally:
            conn.execute(query("unlock_migrations"))


def _connect(url: str) -> psycopg.Connection:
    try:
        return psycopg.connect(
            named(url, "nexus migrate"),
            autocommit=True,
            connect_timeout=10,
            # Whatever the database or role sets: the migrations' text is UTF-8.
            client_encoding="UTF8",
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc


def _take_turn(conn: psycopg.Connection) -> None:
    """Hold the migrators' lock; while another holds it, say so once, then wait for it.

    Two processes started at once take turns; one left hanging (killed while its backend
    still runs, or blocked on a lock of its own) would otherwise keep this one silent."""
    row = conn.execute(query("try_lock_migrations")).fetchone()
    if row and row[0]:
        return
    holder = conn.execute(query("migration_lock_holder")).fetchone()
    log.info("migrate.waiting", for_backend_pid=holder[0] if holder else None)
    conn.execute(query("wait_without_lock_timeout"))
    conn.execute(query("lock_migrations"))
    conn.execute(query("restore_lock_timeout"))


def _apply_pending(conn: psycopg.Connection) -> list[Migration]:
    _refuse_unless_privileged(conn)
    try:
        conn.execute(query("create_ledger"))
    except psycopg.Error as exc:
        raise _failure(conn, "the ledger of migrations could not be created", exc) from exc
    _ensure_pgmq(conn)
    done = {row[0] for row in conn.execute(query("applied_migrations"))}
    applied = []
    for migration in load_migrations():
        if migration.version not in done:
            _apply(conn, migration)
            applied.append(migration)
    return applied


def _refuse_unless_privileged(conn: psycopg.Connection) -> None:
    """Stop before the first change when the role lacks a privilege a pending migration needs:
    failing half-way would leave some migrations applied, by a role that then owns them."""
    row = conn.execute(query("migrator_lacks")).fetchone()
    lacking = row[0] if row else []
    if lacking and _has_pending(conn):
        raise MigrationError(
            f"nothing was migrated: {'; '.join(lacking)}; {_whom_to_migrate_as(conn)}"
        )


def _has_pending(conn: psycopg.Connection) -> bool:
    """Whether a migration of this package is missing from the database's ledger (or the
    ledger itself is, or the role may not read it)."""
    try:
        done = {row[0] for row in conn.execute(query("applied_migrations"))}
    except (psycopg.errors.UndefinedTable, psycopg.errors.InsufficientPrivilege):
        return True
    return any(m.version not in done for m in load_migrations())


def _ensure_pgmq(conn: psycopg.Connection) -> None:
    """PGMQ as the extension the server offers (created or updated, see `prepare_pgmq`), else
    the SQL-only PGMQ that the `pgmq` package ships."""
    try:
        conn.execute(query("prepare_pgmq"))
        row = conn.execute(query("pgmq_installed")).fetchone()
        if not (row and row[0]):
            # Imported here: the `pgmq` package takes ~60 ms to import, and every start of
            # `nexus` migrates, while only a server without PGMQ needs it, once.
            from pgmq.install import get_embedded_install_sql

            with conn.transaction():
                conn.execute(get_embedded_install_sql())
    except psycopg.Error as exc:
        raise _failure(conn, "PGMQ could not be prepared", exc) from exc


def _apply(conn: psycopg.Connection, migration: Migration) -> None:
    try:
        with conn.transaction():
            conn.execute(migration.sql)
            conn.execute(
                query("record_migration"),
                {
                    "version": migration.version,
                    "name": migration.name,
                    "checksum": migration.checksum,
                },
            )
    except psycopg.Error as exc:
        raise _failure(conn, f"migration {migration.label} failed", exc) from exc


def _failure(conn: psycopg.Connection, what: str, exc: psycopg.Error) -> MigrationError:
    """One line: what failed and why, without the server's CONTEXT (the SQL that ran, which
    says nothing to someone running `nexus migrate`); for a missing privilege, as whom to
    migrate instead."""
    diag = exc.diag
    why = diag.message_primary or str(exc).splitlines()[0]
    why += "".join(f" ({extra})" for extra in (diag.message_detail, diag.message_hint) if extra)
    message = f"{what}: {why}"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        message += f"; {_whom_to_migrate_as(conn)}"
    return MigrationError(message)


def _whom_to_migrate_as(conn: psycopg.Connection) -> str:
    """The roles that own what migrating changes, read from the server (best effort: the
    connection may be gone by now)."""
    try:
        row = conn.execute(query("migration_owners")).fetchone()
    except psycopg.Error:
        row = None
    if row is None:
        return "run `nexus migrate` as the database's owner or as a superuser"
    user, database_owner, pgmq_owner, missing_roles = row
    who = f"the database's owner ({database_owner})"
    if pgmq_owner is not None and pgmq_owner != database_owner:
        who = f"a role that owns the database ({database_owner}) and PGMQ ({pgmq_owner})"
    if missing_roles:
        who += f", with CREATEROLE to create {', '.join(missing_roles)}"
    return f"the role {user} may not: run `nexus migrate` as {who}, or as a superuser"
