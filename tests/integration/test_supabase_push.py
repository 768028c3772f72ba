"""The Supabase kit applied as `supabase db push` applies it: exported into a project by
`nexus supabase export`, then each file in its own transaction, in timestamp order, with
`psql -v ON_ERROR_STOP=1`. (The Supabase CLI itself cannot be installed here.)"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psycopg
import pytest

from nexus_ingest import supabase
from nexus_ingest.migrate import load_migrations
from tests.helpers import NEXUS, nexus_env, seed_conversation_to_row
from tests.pgmq_versions import (
    BUNDLED,
    create_extension,
    install_sql_only,
    offered,
    offers_pgmq,
)
from tests.supabase_project import (
    SEND_PATH,
    browser_functions,
    browser_grants,
    db_push,
    make_supabase_like,
    new_project,
    psql,
)


def nexus_migrate(url: str) -> str:
    done = subprocess.run(
        [NEXUS, "migrate"], env=nexus_env(url), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A Supabase project with this repository's config.toml and a migration of its own."""
    folder = new_project(tmp_path / "shop")
    (folder / "supabase" / "migrations" / "20250101000000_orders.sql").write_text(
        "CREATE TABLE public.orders (id bigint PRIMARY KEY);\n"
    )
    return folder


STARTS: dict[str, tuple[Callable[[str], None], bool, bool]] = {
    # name: (what is installed first, whether the bundled 1.13 is offered, run the worker)
    "Queues enabled on 1.4.4": (partial(create_extension, version="1.4.4"), False, True),
    "Queues enabled on 1.5.1": (partial(create_extension, version="1.5.1"), False, True),
    "Queues not enabled": (lambda url: None, False, False),
    "pgmq 1.13 extension": (partial(create_extension, version=BUNDLED), True, False),
    "SQL-only pgmq 1.13": (install_sql_only, False, False),
}


@pytest.mark.parametrize(("prepare", "bundled", "work"), list(STARTS.values()), ids=list(STARTS))
def test_the_kit_applies_in_order_and_nexus_migrate_then_applies_nothing(
    prepare: Callable[[str], None],
    bundled: bool,
    work: bool,
    project: Path,
    empty_db: tuple[str, str],
    pg_admin_url: str,
    tmp_path: Path,
) -> None:
    """Every kit file applies on this pgmq in a project with Supabase's roles and default
    privileges, leaving browsers only the enqueue; `nexus migrate` afterwards has nothing to do."""
    name, url = empty_db
    make_supabase_like(url)
    with offered(pg_admin_url, name, with_bundled=bundled):
        prepare(url)
        supabase.export(project)
        db_push(url, project)
        # The project's own table is open to them, as Supabase's defaults have it.
        assert {name for _, name in browser_grants(url)} == {"orders"}
        assert browser_functions(url) == SEND_PATH
        assert nexus_migrate(url) == "migrations applied: none"
        if work:
            assert seed_conversation_to_row(url, tmp_path) == ("Carlos", 1)
    with psycopg.connect(url) as conn:
        recorded = [
            r[0] for r in conn.execute("SELECT version FROM nexus.schema_migrations ORDER BY 1")
        ]
        orders = conn.execute("SELECT to_regclass('public.orders') IS NOT NULL").fetchone()
    assert recorded == [m.version for m in load_migrations()]
    assert orders == (True,)


def test_after_nexus_migrate_the_kit_skips_every_migration(
    project: Path, empty_db: tuple[str, str], pg_admin_url: str
) -> None:
    """`supabase db push` after `nexus migrate` applies nothing twice: each file says it skipped."""
    name, url = empty_db
    with offered(pg_admin_url, name):
        create_extension(url, "1.5.1")
        nexus_migrate(url)
        supabase.export(project)
        notices = db_push(url, project)
    skipped = [n for n in notices if "is applied already; skipped" in n]
    assert len(skipped) == len(load_migrations())


def test_the_sql_editor_bundle_applies_and_runs_again_harmlessly(
    empty_db: tuple[str, str], pg_admin_url: str, tmp_path: Path
) -> None:
    """The pasteable bundle applies on pgmq 1.5.1 in one go, and a second run changes nothing."""
    name, url = empty_db
    script = tmp_path / "nexus.sql"
    script.write_text(supabase.bundle())
    with offered(pg_admin_url, name):
        create_extension(url, "1.5.1")
        first = psql(url, file=script)
        second = psql(url, file=script)
    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("is applied already; skipped") == len(load_migrations())
    assert nexus_migrate(url) == "migrations applied: none"


def test_without_any_pgmq_the_kit_stops_at_its_first_file_saying_why(
    project: Path, empty_db: tuple[str, str]
) -> None:
    """On a server with no pgmq extension the first file fails, pointing to `nexus migrate`."""
    _, url = empty_db
    if offers_pgmq(url):
        pytest.skip("this server offers pgmq extensions to every database")
    supabase.export(project)
    first = min((project / "supabase" / "migrations").glob("*_nexus_000_setup.sql"))
    done = psql(url, file=first, one_transaction=True)
    assert done.returncode != 0
    assert "Nexus needs PGMQ" in done.stderr and "nexus migrate" in done.stderr
