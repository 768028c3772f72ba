"""Every pgmq Nexus may meet: none, Supabase's 1.4.4 and 1.5.1 extensions, the 1.13 it bundles as
an extension or SQL-only. Each starting point migrates, takes the seed's Test 2 conversation
through the producer and the worker (`nexus up`, rules extractor), and has the row."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from nexus_ingest.errors import MigrationError
from nexus_ingest.migrate import migrate
from tests.helpers import seed_conversation_to_row
from tests.pgmq_versions import (
    BUNDLED,
    create_extension,
    install_sql_only,
    offered,
    offers_pgmq,
)

CHANNEL = "pgmq.q_nexus_prospect_ingestion.INSERT"


@dataclass(frozen=True)
class Start:
    """A database as Nexus finds it: what the server offers, what is installed before migrating."""

    offer: bool
    offer_bundled: bool
    prepare: Callable[[str], None]
    extension_after: str | None  # the pgmq extension's version once migrated; None: SQL-only


def _nothing(url: str) -> None:
    return None


def _queues_in_use(url: str) -> None:
    """Queues enabled on pgmq 1.4.4, with a queue of the project's own holding a message."""
    create_extension(url, "1.4.4")
    with psycopg.connect(url) as conn:
        conn.execute("SELECT pgmq.create('orders')")
        conn.execute("""SELECT pgmq.send('orders', '{"order": 42}')""")


STARTS = {
    "no pgmq offered": Start(False, False, _nothing, None),
    "Supabase, Queues not enabled": Start(True, False, _nothing, "1.5.1"),
    "Supabase, Queues enabled on 1.4.4": Start(True, False, _queues_in_use, "1.5.1"),
    "Supabase, Queues enabled on 1.5.1": Start(
        True, False, partial(create_extension, version="1.5.1"), "1.5.1"
    ),
    "pgmq 1.13 extension": Start(True, True, partial(create_extension, version=BUNDLED), BUNDLED),
    "SQL-only pgmq 1.13": Start(True, False, install_sql_only, None),
}


@pytest.fixture
def on_1_5_1(empty_db: tuple[str, str], pg_admin_url: str) -> str:
    """A database of a project with Queues enabled on pgmq 1.5.1, migrated."""
    name, url = empty_db
    with offered(pg_admin_url, name):
        create_extension(url, "1.5.1")
        migrate(url)
    return url


@pytest.mark.parametrize("start", list(STARTS.values()), ids=list(STARTS))
def test_each_starting_point_takes_the_seed_conversation_to_a_row(
    start: Start, empty_db: tuple[str, str], pg_admin_url: str, tmp_path: Path
) -> None:
    """Migrating keeps (or updates) the pgmq found, and Test 2 ends as Carlos's row."""
    name, url = empty_db
    if start.offer:
        with offered(pg_admin_url, name, with_bundled=start.offer_bundled):
            _migrate_and_ingest(start, url, tmp_path)
    else:
        if offers_pgmq(url):
            pytest.skip("this server offers pgmq extensions to every database")
        _migrate_and_ingest(start, url, tmp_path)


def _migrate_and_ingest(start: Start, url: str, tmp_path: Path) -> None:
    start.prepare(url)
    migrate(url)
    assert _extension_version(url) == start.extension_after
    assert {"nexus_prospect_ingestion", "nexus_prospect_ingestion_dlq"} <= _queues(url)
    assert seed_conversation_to_row(url, tmp_path) == ("Carlos", 1)


def test_the_projects_own_queue_survives_the_update(
    empty_db: tuple[str, str], pg_admin_url: str
) -> None:
    """Updating pgmq 1.4.4 keeps the project's queue and its message, now with headers."""
    name, url = empty_db
    with offered(pg_admin_url, name):
        _queues_in_use(url)
        migrate(url)
        with psycopg.connect(url) as conn:
            kept = conn.execute("SELECT message, headers FROM pgmq.q_orders").fetchall()
            read = conn.execute("SELECT msg_id FROM pgmq.read('orders', 30, 1)").fetchall()
    assert kept == [({"order": 42}, None)]
    assert len(read) == 1
    assert "orders" in _queues(url)


def test_migrating_twice_on_1_5_1_applies_nothing(on_1_5_1: str) -> None:
    """A second `migrate` on pgmq 1.5.1 finds nothing to do and keeps the extension."""
    assert migrate(on_1_5_1) == []
    assert _extension_version(on_1_5_1) == "1.5.1"


def test_on_1_5_1_an_enqueue_wakes_the_workers_channel(on_1_5_1: str) -> None:
    """pgmq 1.5.1 cannot notify; Nexus's trigger does, on pgmq's channel, throttled per session."""
    with (
        psycopg.connect(on_1_5_1, autocommit=True) as listener,
        psycopg.connect(on_1_5_1, autocommit=True) as producer,
    ):
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
        send = "SELECT pgmq.send('nexus_prospect_ingestion', '{}')"
        producer.execute(send)
        first = list(listener.notifies(timeout=5, stop_after=1))
        # Within the throttle interval of this session's last notification: silent.
        producer.execute(
            "SELECT set_config('nexus.queue_notified_at', "
            "extract(epoch FROM clock_timestamp())::text, false)"
        )
        producer.execute(send)
        silent = list(listener.notifies(timeout=0.5, stop_after=1))
        producer.execute("SELECT set_config('nexus.queue_notified_at', '0', false)")
        producer.execute(send)
        again = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in first + silent + again] == [CHANNEL, CHANNEL]
    assert silent == []


def test_on_1_5_1_reads_leave_last_read_at_alone(on_1_5_1: str) -> None:
    """Where queue tables have no last_read_at (pgmq 1.5.1), the worker's read does not set it."""
    with psycopg.connect(on_1_5_1) as conn:
        definition = conn.execute(
            "SELECT pg_get_functiondef('nexus.read_snapshots(text, integer, integer, uuid, bigint)'"
            "::regprocedure)"
        ).fetchone()
    assert definition is not None and "last_read_at" not in definition[0]
    assert "read_ct = m.read_ct + 1" in definition[0]


def test_a_1_4_4_without_an_update_is_refused_clearly(
    empty_db: tuple[str, str], pg_admin_url: str
) -> None:
    """pgmq 1.4.4 with no update offered stops the migration, saying what is needed."""
    name, url = empty_db
    with offered(pg_admin_url, name, only_1_4_4=True):
        create_extension(url, "1.4.4")
        with pytest.raises(MigrationError, match=r"needs pgmq 1\.5 or newer .* has pgmq 1\.4\.4"):
            migrate(url)
    assert _extension_version(url) == "1.4.4"


def _extension_version(url: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pgmq'").fetchone()
    return row[0] if row else None


def _queues(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT queue_name FROM pgmq.list_queues()")}
