"""The databases users point Nexus at, which are not the clean default: another encoding, a DBA's
settings, a role that is not a superuser, a pooler in transaction mode. Each either works fully
or is refused at once, in one line that says what to change, before anything is created."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from nexus_ingest.db import UnsuitableDatabase, open_pool
from nexus_ingest.errors import MigrationError
from nexus_ingest.migrate import latest_version, migrate
from nexus_ingest.settings import InvalidSettings, load_settings
from tests.helpers import (
    NEXUS,
    free_port,
    nexus_env,
    nexus_process,
    wait_for,
    wait_healthy,
)
from tests.pgmq_versions import install_sql_only

# Cyrillic and an emoji: neither fits in LATIN1, and SQL_ASCII would keep neither as text.
WORLDLY = "Hola, soy Carlos Pérez, carlos@example.com. Привет 🚀"


@contextmanager
def _database(admin_url: str, options: sql.Composable | None = None) -> Iterator[str]:
    """A new database created with `options` (`ENCODING 'LATIN1' ...`): its URL; dropped after."""
    name = f"nexus_setup_{os.urandom(5).hex()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} {}").format(sql.Identifier(name), options or sql.SQL(""))
        )
    try:
        yield psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _set(url: str, setting: str, value: str) -> None:
    """`ALTER DATABASE ... SET setting = value` on the database of `url`, as a DBA would."""
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(str(name)), sql.Identifier(setting), sql.Literal(value)
            )
        )


def _schemas(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname IN ('nexus', 'pgmq')"
        ).fetchall()
    return {row[0] for row in rows}


def _nexus_migrate(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEXUS, "migrate"], env=nexus_env(url), capture_output=True, text=True, timeout=60
    )


# --- encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["LATIN1", "SQL_ASCII"])
def test_a_database_not_in_utf8_is_refused_before_anything_is_created(
    pg_admin_url: str, encoding: str
) -> None:
    """Such a database cannot keep a conversation in Cyrillic or with an emoji: a 202 for it
    would be a message lost. `nexus migrate` (which `serve` and `worker` run first) says so in
    one line, and creates nothing."""
    options = sql.SQL("ENCODING {} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0").format(
        sql.Literal(encoding)
    )
    with _database(pg_admin_url, options) as url:
        with pytest.raises(UnsuitableDatabase, match=f"encoding is {encoding}; Nexus needs UTF8"):
            migrate(url)
        done = _nexus_migrate(url)
        assert _schemas(url) == set()
    assert done.returncode == 1
    assert done.stderr.startswith("nexus: error: the database's encoding is")
    assert "ENCODING 'UTF8'" in done.stderr and done.stderr.count("\n") == 1


# --- a DBA's settings -----------------------------------------------------------------------


@contextmanager
def _nexus_up(url: str, tmp_path: Path) -> Iterator[str]:
    """`nexus up` (rules extractor, handled messages archived) on `url`: its base URL."""
    port = free_port()
    env = nexus_env(url, port, NEXUS_EXTRACTOR="rules", NEXUS_ARCHIVE_PROCESSED="true")
    with nexus_process(["up"], env, log_path=tmp_path / "up.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        yield base


def _post_turn(base: str, text: str, fingerprint: str) -> None:
    body = {
        "messages": [{"role": "user", "content": text}],
        "fingerprint": fingerprint,
        "sessionId": f"session-{fingerprint}",
    }
    answer = httpx.post(f"{base}/api/nexus/producer", json=body, timeout=10)
    assert answer.status_code == 202, answer.text


def _landed(url: str, fingerprint: str) -> tuple[str, str] | None:
    """The prospect's name and the text of the archived snapshot, once the turn is handled."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET client_encoding = 'UTF8'")
        row = conn.execute(
            "SELECT p.nombre, a.message->'messages'->0->>'content'"
            " FROM public.prospect_data p, pgmq.a_nexus_prospect_ingestion a"
            " WHERE p.fingerprint_id = %s AND a.message->>'fingerprint' = %s",
            (fingerprint, fingerprint),
        ).fetchone()
    return (row[0], row[1]) if row else None


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("client_encoding", "LATIN1"),
        ("DateStyle", "SQL, DMY"),
        ("IntervalStyle", "sql_standard"),
        ("TimeZone", "Asia/Kolkata"),
        ("search_path", ""),
        ("default_transaction_isolation", "serializable"),
    ],
)
def test_a_turn_lands_whatever_session_defaults_the_database_sets(
    empty_db: tuple[str, str], tmp_path: Path, setting: str, value: str
) -> None:
    """A DBA's `ALTER DATABASE ... SET` changes no stored text and stops no turn: migrated,
    served and extracted, the conversation is kept as it was written."""
    _, url = empty_db
    _set(url, setting, value)
    fingerprint = f"fp-{setting.lower()}"
    with _nexus_up(url, tmp_path) as base:
        _post_turn(base, WORLDLY, fingerprint)
        landed = wait_for(
            lambda: _landed(url, fingerprint), timeout=15, what="the turn in prospect_data"
        )
    assert landed == ("Carlos Pérez", WORLDLY)


@pytest.mark.parametrize(
    ("setting", "value", "probe"),
    [
        ("DateStyle", "SQL, DMY", "SELECT now()"),
        ("DateStyle", "German", "SELECT now()"),
        ("IntervalStyle", "iso_8601", "SELECT interval '1 day 2 hours'"),
    ],
)
async def test_the_pool_reads_dates_in_any_style_the_database_sets(
    db_url: str, setting: str, value: str, probe: str
) -> None:
    """psycopg reads only ISO dates and `postgres` intervals; the pool asks for those."""
    _set(db_url, setting, value)
    pool = await open_pool(db_url, min_size=1, max_size=1)
    try:
        await pool.wait(timeout=10)
        async with pool.connection() as conn:
            row = await (await conn.execute(probe)).fetchone()
    finally:
        await pool.close()
    assert row is not None and row[0] is not None


@pytest.mark.parametrize(
    ("setting", "value"), [("lock_timeout", "10ms"), ("statement_timeout", "50ms")]
)
def test_a_migrator_waits_for_another_whatever_timeouts_the_database_sets(
    empty_db: tuple[str, str], setting: str, value: str
) -> None:
    """`nexus serve` and `nexus worker` started together both migrate: the second waits for the
    first, rather than failing on a timeout a DBA set for the application's queries."""
    _, url = empty_db
    _set(url, setting, value)
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(7304225114)")
        release = threading.Timer(0.5, holder.execute, ["SELECT pg_advisory_unlock(7304225114)"])
        release.start()
        try:
            applied = migrate(url)
        finally:
            release.join()
    assert applied and applied[-1].version == latest_version()


def _objects(url: str) -> set[tuple[str, str]]:
    """Every relation, function and extension of the database, with its schema."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT c.relnamespace::regnamespace::text, c.relname::text FROM pg_class c"
            " UNION SELECT p.pronamespace::regnamespace::text, p.proname::text FROM pg_proc p"
            " UNION SELECT e.extnamespace::regnamespace::text, e.extname::text FROM pg_extension e"
        ).fetchall()
    return {(schema, name) for schema, name in rows if not schema.startswith("pg_")}


@pytest.mark.parametrize("search_path", ["", "nexus, pgmq", '"$user"'])
def test_migrations_put_everything_where_they_would_by_default(
    db_url: str, empty_db: tuple[str, str], search_path: str
) -> None:
    """Whatever search_path the database sets (none, one without public), what the migrations
    create without naming a schema lands where it does on a default database."""
    _, url = empty_db
    install_sql_only(url)  # the PGMQ of the template that db_url is cloned from
    _set(url, "search_path", search_path)
    migrate(url)
    assert _objects(url) == _objects(db_url)  # db_url: migrated with the server's defaults


def test_a_read_only_database_is_refused_saying_so(empty_db: tuple[str, str]) -> None:
    """A read replica by mistake, or `default_transaction_read_only`: one line naming it."""
    _, url = empty_db
    _set(url, "default_transaction_read_only", "on")
    with pytest.raises(UnsuitableDatabase, match="the database is read-only"):
        migrate(url)


# --- roles ----------------------------------------------------------------------------------


@pytest.fixture
def app_role(pg_admin_url: str) -> Iterator[str]:
    """A login role with no attributes, as a DBA creates for an application."""
    name = f"nexus_app_{os.urandom(4).hex()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _as(url: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(url, user=role)


def test_a_role_owning_its_database_migrates_runs_and_forgets(
    pg_admin_url: str, app_role: str, tmp_path: Path
) -> None:
    """No superuser, no CREATEROLE: the owner of its database installs the SQL-only PGMQ, runs
    the pipeline and forgets a visitor."""
    owner = sql.SQL("OWNER {}").format(sql.Identifier(app_role))
    with _database(pg_admin_url, owner) as admin_side:
        url = _as(admin_side, app_role)
        with _nexus_up(url, tmp_path) as base:
            _post_turn(base, WORLDLY, "fp-app")
            wait_for(lambda: _landed(url, "fp-app"), timeout=15, what="the turn in prospect_data")
        forget = subprocess.run(
            [NEXUS, "forget", "fp-app", "--yes"],
            env=nexus_env(url),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert forget.returncode == 0, forget.stderr
        with psycopg.connect(url) as conn:
            left = conn.execute(
                "SELECT count(*) FROM prospect_data WHERE fingerprint_id = 'fp-app'"
            ).fetchone()
    assert left == (0,)


def test_a_role_that_may_not_create_in_public_migrates_nothing(
    pg_admin_url: str, app_role: str
) -> None:
    """On PostgreSQL 15 only the database's owner may create in `public`: a role granted CREATE
    on the database alone is stopped before the first change, not after two migrations."""
    with _database(pg_admin_url) as admin_side:
        name = psycopg.conninfo.conninfo_to_dict(admin_side)["dbname"]
        with psycopg.connect(admin_side, autocommit=True) as conn:
            conn.execute(
                sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                    sql.Identifier(str(name)), sql.Identifier(app_role)
                )
            )
        with pytest.raises(MigrationError) as failure:
            migrate(_as(admin_side, app_role))
        schemas = _schemas(admin_side)
        with psycopg.connect(admin_side, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP OWNED BY {}").format(sql.Identifier(app_role))
            )  # the grant, so the role can be dropped
    assert schemas == set()
    message = str(failure.value)
    assert message.startswith("nothing was migrated: permission denied for schema public")
    assert "run `nexus migrate` as the database's owner" in message


# --- poolers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres.abcd:pw@aws-0-eu-west-1.pooler.supabase.com:6543/postgres",
        "postgresql://postgres:pw@db.abcd.supabase.co:6543/postgres",
    ],
)
def test_supabase_transaction_mode_is_refused_before_connecting(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(InvalidSettings, match=r"DATABASE_URL: port 6543 .* use port 5432"):
        load_settings()


def test_supabase_session_mode_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql://postgres.abcd:pw@aws-0-eu-west-1.pooler.supabase.com:5432/postgres"
    monkeypatch.setenv("DATABASE_URL", url)
    assert load_settings().database_url == url


def _pgbouncer() -> str:
    found = shutil.which(
        "pgbouncer", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin"
    )
    if found is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install -y pgbouncer)")
    return found


@contextmanager
def _pgbouncer_in_front(admin_url: str, mode: str) -> Iterator[int]:
    """A PgBouncer of our own on a free loopback port, in `mode`, before the test's server."""
    target = psycopg.conninfo.conninfo_to_dict(admin_url)
    user = str(target.get("user") or "postgres")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="nexus-pgbouncer-") as folder:
        os.chmod(folder, 0o755)
        users = Path(folder, "users.txt")
        users.write_text(f'"{user}" ""\n')
        config = Path(folder, "pgbouncer.ini")
        config.write_text(
            "[databases]\n"
            f"* = host={target.get('host') or '127.0.0.1'} port={target.get('port') or 5432}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {users}\npool_mode = {mode}\n"
            "default_pool_size = 10\nmax_client_conn = 100\n"
        )
        for path in (users, config):
            path.chmod(0o644)
        as_user = _unprivileged(str(target.get("host") or ""))
        proc = subprocess.Popen(
            [_pgbouncer(), *as_user, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: _answers(port, user, proc), timeout=10, what="pgbouncer to listen")
            yield port
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _unprivileged(host: str) -> list[str]:
    """PgBouncer refuses to run as root (CI runs as root): then it runs as the owner of the
    server's socket folder (the embedded server's user), or as nobody to reach a TCP port."""
    if os.geteuid() != 0:
        return []
    owner = pwd.getpwuid(os.stat(host).st_uid).pw_name if host.startswith("/") else "nobody"
    if owner == "root":
        pytest.skip("the server's socket folder belongs to root, whom PgBouncer refuses to run as")
    return ["-u", owner]


def _answers(port: int, user: str, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"pgbouncer exited with code {proc.returncode}")
    try:
        with psycopg.connect(
            f"postgresql://{user}@127.0.0.1:{port}/postgres", connect_timeout=1
        ) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def _through(url: str, port: int) -> str:
    return psycopg.conninfo.make_conninfo(url, host="127.0.0.1", port=port, sslmode="disable")


def test_a_pooler_in_transaction_mode_is_refused_before_anything_is_created(
    pg_admin_url: str, empty_db: tuple[str, str]
) -> None:
    """Transaction mode hands server sessions around: prepared statements collide, LISTEN is
    lost, the migrators' lock stays with a session nobody has. Found by how it behaves, so any
    such pooler is refused, not only Supabase's port 6543."""
    _, url = empty_db
    with _pgbouncer_in_front(pg_admin_url, "transaction") as port:
        with pytest.raises(UnsuitableDatabase, match="connection pooler in transaction mode"):
            migrate(_through(url, port))
        done = _nexus_migrate(_through(url, port))
    assert _schemas(url) == set()
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "pool_mode = session" in done.stderr


def test_a_pooler_in_session_mode_is_used(
    pg_admin_url: str, empty_db: tuple[str, str], tmp_path: Path
) -> None:
    _, url = empty_db
    with _pgbouncer_in_front(pg_admin_url, "session") as port:
        pooled = _through(url, port)
        with _nexus_up(pooled, tmp_path) as base:
            _post_turn(base, WORLDLY, "fp-pooled")
            wait_for(lambda: _landed(url, "fp-pooled"), timeout=15, what="the pooled turn")


# --- a server shared with other databases ---------------------------------------------------


def test_a_waiting_migrator_names_the_holder_in_its_own_database(
    pg_admin_url: str, empty_db: tuple[str, str]
) -> None:
    """Advisory locks are per database: migrators of other databases on the same server (other
    Nexus instances, other test runs) hold the same key, and are not whom this one waits for."""
    _, url = empty_db
    with contextlib.ExitStack() as stack:
        # Several, so that a holder picked at random would rarely be this database's.
        for _ in range(4):
            other = stack.enter_context(_database(pg_admin_url))
            elsewhere = stack.enter_context(psycopg.connect(other, autocommit=True))
            elsewhere.execute("SELECT pg_advisory_lock(7304225114)")
        holder = stack.enter_context(psycopg.connect(url, autocommit=True))
        holder.execute("SELECT pg_advisory_lock(7304225114)")
        holder_pid = holder.info.backend_pid
        proc = subprocess.Popen(
            [NEXUS, "migrate"], env=nexus_env(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert proc.stderr is not None
            line = json.loads(proc.stderr.readline())
            holder.execute("SELECT pg_advisory_unlock(7304225114)")
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert line["event"] == "migrate.waiting"
    assert line["for_backend_pid"] == holder_pid
