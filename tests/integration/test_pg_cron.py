"""pg_cron on a PostgreSQL 15 cluster of our own: the migrations schedule the maintenance, and it runs."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from nexus_ingest.migrate import load_migrations, migrate
from tests.helpers import free_port, wait_for

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_CRON = Path("/usr/lib/postgresql/15/lib/pg_cron.so")

pytestmark = pytest.mark.skipif(
    not PG_CRON.exists(),
    reason=f"pg_cron for PostgreSQL 15 is not installed ({PG_CRON} missing; "
    "apt-get install postgresql-15-cron)",
)


def _as_cluster_owner(folder: Path) -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a non-root user owning `folder`."""
    if os.geteuid() != 0:
        return []
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user for initdb")
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


def _run(prefix: list[str], *args: str, cwd: Path) -> None:
    subprocess.run([*prefix, *args], cwd=cwd, check=True, capture_output=True, timeout=120)


@contextmanager
def cron_cluster() -> Iterator[str]:
    """A throw-away PostgreSQL 15 with pg_cron preloaded, on a free port; yields its URL."""
    folder = Path(tempfile.mkdtemp(prefix="nexus-pgcron-"))
    data, port = folder / "data", free_port()
    try:
        prefix = _as_cluster_owner(folder)
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
        _run(prefix, *initdb, "--no-sync", "-E", "UTF8", cwd=folder)
        with (data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{folder}'\nfsync = off\n"
                "shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n"
                "cron.use_background_workers = on\n"
            )
        pg_ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log")]
        _run(prefix, *pg_ctl, "-w", "-t", "60", "start", cwd=folder)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run(prefix, *pg_ctl, "-w", "-m", "fast", "stop", cwd=folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def cron_url() -> Iterator[str]:
    """A migrated database on a cluster of our own, with the pg_cron extension created first."""
    with cron_cluster() as url:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_cron")
        migrate(url)
        yield url


def _seconds_syntax(conn: psycopg.Connection) -> bool:
    """Whether this pg_cron takes schedules like '1 seconds' (added in pg_cron 1.5)."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_cron'").fetchone()
    version = tuple(int(part) for part in re.findall(r"\d+", row[0] if row else "0")[:2])
    return version >= (1, 5)


def test_migrations_schedule_the_maintenance(cron_url: str) -> None:
    """With pg_cron in the database, the nightly maintenance job is in cron.job, once."""
    with psycopg.connect(cron_url) as conn:
        jobs = conn.execute(
            "SELECT schedule, command FROM cron.job WHERE jobname = 'nexus-maintenance'"
        ).fetchall()
        scheduled = conn.execute("SELECT nexus.maintenance_scheduled_by_cron()").fetchone()
    assert jobs == [("17 3 * * *", "SELECT nexus.run_maintenance()")]
    assert scheduled == (True,)


def test_reapplying_the_migration_keeps_one_job(cron_url: str) -> None:
    """Running the maintenance migration again replaces the job instead of adding a second."""
    (maintenance,) = [m for m in load_migrations() if m.name == "maintenance"]
    # Rolled back: 007's function is the one 026 replaced with another signature, and the
    # next test's job would find the two ambiguous.
    with (
        psycopg.connect(cron_url, autocommit=True) as conn,
        conn.transaction(force_rollback=True),
    ):
        conn.execute(maintenance.sql)
        count = conn.execute(
            "SELECT count(*) FROM cron.job WHERE jobname = 'nexus-maintenance'"
        ).fetchone()
    assert count == (1,)


@pytest.mark.timeout(180)
def test_pg_cron_runs_the_maintenance(cron_url: str) -> None:
    """A job running the maintenance succeeds under pg_cron and deletes an old archived message."""
    with psycopg.connect(cron_url, autocommit=True) as conn:
        msg_id = conn.execute("SELECT pgmq.send('nexus_prospect_ingestion', '{}')").fetchone()
        conn.execute("SELECT pgmq.archive('nexus_prospect_ingestion', %s::bigint)", msg_id)
        conn.execute(
            "UPDATE pgmq.a_nexus_prospect_ingestion SET archived_at = now() - interval '30 days'"
        )
        # pg_cron before 1.5 has no seconds: its next minute is the soonest it can run a job.
        schedule, patience = ("1 seconds", 30.0) if _seconds_syntax(conn) else ("* * * * *", 90.0)
        job = conn.execute(
            "SELECT cron.schedule('nexus-maintenance-now', %s, 'SELECT nexus.run_maintenance()')",
            (schedule,),
        ).fetchone()

        def ran() -> bool:
            runs = conn.execute(
                "SELECT status FROM cron.job_run_details WHERE jobid = %s", job
            ).fetchall()
            archive = conn.execute("SELECT count(*) FROM pgmq.a_nexus_prospect_ingestion")
            return ("succeeded",) in runs and archive.fetchone() == (0,)

        wait_for(ran, timeout=patience, interval=0.2, what=f"pg_cron to run {schedule!r}")
        conn.execute("SELECT cron.unschedule('nexus-maintenance-now')")
