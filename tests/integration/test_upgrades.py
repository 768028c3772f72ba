"""Upgrading: a database that an earlier revision migrated, with work queued in it, is brought by
`nexus migrate` to the schema a new database gets, and what it had queued is then processed.

The earlier revisions come from the repository's history (`git show`); without it, these skip.
The starting points are the revisions just before a migration that databases had applied was
changed: `nexus migrate` never applies a recorded migration again, so those are the databases
that could be left behind.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from nexus_ingest.migrate import migrate
from nexus_ingest.queries import query
from tests.helpers import new_database, nexus_env, nexus_process, wait_for
from tests.pgmq_versions import install_sql_only

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS = "src/nexus_ingest/sql/migrations"
_FILE_NAME = re.compile(r"/(\d{3})_(\w+)\.sql$")

# What a database's schema is made of, each object as (kind, name, definition, grants): the
# same rows whatever order the objects were created or granted in, and whatever order a table's
# columns were added in. The ledger's checksums are history, not schema, and are left out.
SCHEMA_OBJECTS = """
WITH ns AS (
    SELECT oid, nspname FROM pg_catalog.pg_namespace WHERE nspname IN ('nexus', 'public', 'pgmq')
), grants AS (
    SELECT a.acl, (SELECT pg_catalog.string_agg(x::text, ',' ORDER BY x::text)
                   FROM pg_catalog.unnest(a.acl) x) AS sorted
    FROM (SELECT DISTINCT proacl AS acl FROM pg_catalog.pg_proc
          UNION SELECT DISTINCT relacl FROM pg_catalog.pg_class) a
)
SELECT 'function', p.oid::regprocedure::text, pg_catalog.pg_get_functiondef(p.oid),
       COALESCE(g.sorted, '')
FROM pg_catalog.pg_proc p JOIN ns ON ns.oid = p.pronamespace
LEFT JOIN grants g ON g.acl = p.proacl
WHERE p.prokind IN ('f', 'p')
UNION ALL
SELECT 'relation', c.oid::regclass::text, c.relkind::text || COALESCE(c.reloptions::text, ''),
       COALESCE(g.sorted, '')
FROM pg_catalog.pg_class c JOIN ns ON ns.oid = c.relnamespace
LEFT JOIN grants g ON g.acl = c.relacl
WHERE c.relkind IN ('r', 'v', 'm', 'S', 'p')
UNION ALL
SELECT 'column', a.attrelid::regclass::text || '.' || a.attname,
       pg_catalog.format_type(a.atttypid, a.atttypmod) || ' not null ' || a.attnotnull::text
           || ' default ' || COALESCE(pg_catalog.pg_get_expr(d.adbin, d.adrelid), ''), ''
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'v', 'p')
UNION ALL
SELECT 'index', i.indexrelid::regclass::text, pg_catalog.pg_get_indexdef(i.indexrelid), ''
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
JOIN ns ON ns.oid = c.relnamespace
UNION ALL
SELECT 'constraint', k.conrelid::regclass::text || '.' || k.conname,
       pg_catalog.pg_get_constraintdef(k.oid), ''
FROM pg_catalog.pg_constraint k JOIN ns ON ns.oid = k.connamespace
UNION ALL
SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname, pg_catalog.pg_get_triggerdef(t.oid), ''
FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN ns ON ns.oid = c.relnamespace
WHERE NOT t.tgisinternal
"""


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _starting_points() -> list[str]:
    """The revision before each commit that changed a migration already committed."""
    changed = _git("log", "--diff-filter=M", "--format=%h", "--", f"{MIGRATIONS}/*.sql")
    return [f"{commit}^" for commit in (changed or "").split()]


def _points_or_skip(points: list[str]) -> list[object]:
    if points:
        return list(points)
    return [pytest.param(None, marks=pytest.mark.skip(reason="no git history of the migrations"))]


STARTING_POINTS = _starting_points()


def _migrations_at(revision: str) -> list[tuple[int, str, str]]:
    """The numbered migrations of `revision`: version, name and text, in order."""
    listing = _git("ls-tree", "--name-only", revision, f"{MIGRATIONS}/")
    if listing is None:
        pytest.skip(f"revision {revision} is not in this repository's history")
    found = []
    for path in listing.split():
        match = _FILE_NAME.search(path)
        text = _git("show", f"{revision}:{path}") if match else None
        if match and text is not None:
            found.append((int(match[1]), match[2], text))
    return sorted(found)


def _migrate_as_at(url: str, revision: str) -> None:
    """What `nexus migrate` of `revision` left on a server without a pgmq extension."""
    install_sql_only(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(query("create_ledger"))
        for version, name, text in _migrations_at(revision):
            with conn.transaction():
                conn.execute(text)
                conn.execute(
                    query("record_migration"),
                    {
                        "version": version,
                        "name": name,
                        "checksum": hashlib.sha256(text.encode()).hexdigest(),
                    },
                )


@pytest.fixture
def old_database(pg_admin_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new database migrated as the revision the test is given (`request.param`) did."""
    with new_database(pg_admin_url, "nexus_old") as (_, url):
        _migrate_as_at(url, request.param)
        yield url


def _schema(url: str) -> set[tuple[str, str, str, str]]:
    with psycopg.connect(url) as conn:
        return set(conn.execute(SCHEMA_OBJECTS).fetchall())


@pytest.mark.parametrize("old_database", _points_or_skip(STARTING_POINTS), indirect=True)
def test_an_upgraded_database_has_the_schema_of_a_new_one(old_database: str, db_url: str) -> None:
    """Every table, column, function, grant, index and trigger a new database has, an upgraded
    one has alike, and nothing more (no function of an earlier signature left beside its
    successor)."""
    migrate(old_database)

    fresh, upgraded = _schema(db_url), _schema(old_database)

    assert (fresh - upgraded, upgraded - fresh) == (set(), set())


def _queue_snapshots(url: str, names: dict[str, str]) -> None:
    """Snapshots queued as the seed queues them (`pgmq_send`), one session a name."""
    with psycopg.connect(url, autocommit=True) as conn:
        for session, name in names.items():
            body = {
                "messages": [{"role": "user", "content": f"Me llamo {name} y quiero paquetes"}],
                "fingerprint": f"fp-{session}",
                "sessionId": session,
            }
            conn.execute("SELECT pgmq_send('nexus-prospect-ingestion', %s, 0)", (Jsonb(body),))


def _rows(url: str) -> dict[str, str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT fingerprint_id, nombre FROM prospect_data").fetchall()
    return {fingerprint: name for fingerprint, name in rows}


@pytest.mark.parametrize(
    "old_database", _points_or_skip(STARTING_POINTS[-1:] + STARTING_POINTS[:1]), indirect=True
)
def test_snapshots_queued_before_an_upgrade_are_saved_after_it(
    old_database: str, tmp_path: Path
) -> None:
    """What an earlier revision queued stays queued through `nexus migrate`, and the current
    worker saves every snapshot of it and of what is queued after the upgrade, beside the
    prospect rows the database had."""
    with psycopg.connect(old_database, autocommit=True) as conn:
        conn.execute(
            "SELECT update_prospect_data('fp-kept', 'kept', %s)", (Jsonb({"nombre": "Rosa"}),)
        )
    queued = {"s1": "Bruno", "s2": "Carla", "s3": "Diego"}
    _queue_snapshots(old_database, queued)

    migrate(old_database)
    _queue_snapshots(old_database, after := {"s4": "Elena"})
    env = nexus_env(old_database, NEXUS_EXTRACTOR="rules")
    with nexus_process(["worker"], env, log_path=tmp_path / "worker.log"):
        rows = wait_for(
            lambda: len(seen := _rows(old_database)) == 5 and seen,
            timeout=20,
            what="every queued snapshot saved",
        )

    expected = {f"fp-{s}": name for s, name in (queued | after).items()}
    assert rows == {"fp-kept": "Rosa", **expected}
