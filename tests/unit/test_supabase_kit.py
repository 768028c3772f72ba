"""The Supabase kit: generated from the migrations, exported with timestamps the CLI accepts,
its config readable by the CLI, and its cron SQL right."""

from __future__ import annotations

import re
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nexus_ingest import supabase
from nexus_ingest.cli import main
from nexus_ingest.migrate import load_migrations

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "supabase"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CLI_FILE = re.compile(r"^([0-9]+)_(.*)\.sql$")  # the Supabase CLI's migration file pattern


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A Supabase project (as `supabase init` leaves it) with two migrations of its own."""
    (tmp_path / "supabase" / "migrations").mkdir(parents=True)
    (tmp_path / "supabase" / "config.toml").write_text('project_id = "shop"\n')
    for name in ("20250101000000_orders.sql", "20260301130000_customers.sql"):
        (tmp_path / "supabase" / "migrations" / name).write_text("SELECT 1;\n")
    return tmp_path


def _versions(folder: Path) -> list[int]:
    return sorted(int(m[1]) for p in folder.iterdir() if (m := CLI_FILE.match(p.name)))


def test_the_kit_is_the_setup_then_every_migration_in_order() -> None:
    """One file prepares PGMQ and the ledger; then each migration, whole, recorded with its checksum."""
    files = supabase.kit_files()
    migrations = load_migrations()

    assert [f.version for f in files] == [0, *(m.version for m in migrations)]
    assert "prepare_pgmq" in files[0].sql and "nexus.schema_migrations" in files[0].sql
    for kit_file, migration in zip(files[1:], migrations, strict=True):
        assert migration.sql.rstrip("\n") in kit_file.sql
        assert f"VALUES ({migration.version}, '{migration.name}', '{migration.checksum}')" in (
            kit_file.sql
        )
        assert f"WHERE version = {migration.version})" in kit_file.sql


def test_export_writes_every_file_after_the_projects_newest_migration(project: Path) -> None:
    """Exported files sort after the project's own (no --include-all), in the kit's order."""
    written = supabase.export(project, now=NOW)
    folder = project / "supabase" / "migrations"

    assert [p.name.split("_", 1)[1] for p in written] == [
        f"nexus_{f.label}.sql" for f in supabase.kit_files()
    ]
    assert _versions(folder)[:2] == [20250101000000, 20260301130000]
    assert [int(p.name.split("_")[0]) for p in written] == _versions(folder)[2:]
    assert int(written[0].name.split("_")[0]) == 20260301130001
    assert written[0].read_text() == supabase.kit_files()[0].sql


def test_exporting_again_writes_only_what_is_missing(project: Path) -> None:
    """Files exported before stay as the CLI applied them; a missing one comes after the newest."""
    first = supabase.export(project, now=NOW)
    first[-1].unlink()  # as if this migration were new in this version of Nexus

    again = supabase.export(project, now=NOW)

    assert supabase.export(project, now=NOW) == []
    assert [p.name.split("_", 1)[1] for p in again] == [first[-1].name.split("_", 1)[1]]
    assert int(again[0].name.split("_")[0]) > int(first[-2].name.split("_")[0])


@pytest.fixture(autouse=True)
def _process_logging_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """`main` configures logging for its process; in-process here it must leave the suite's
    logging as it was (a later test captures debug events)."""
    monkeypatch.setattr("nexus_ingest.logs.configure_logging", lambda *args, **kwargs: None)


def test_export_refuses_a_folder_that_is_not_a_supabase_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without supabase/config.toml, `nexus supabase export` says so and exits 1."""
    code = main(["supabase", "export", str(tmp_path)])

    assert code == 1
    assert "not a Supabase project (no supabase/config.toml)" in capsys.readouterr().err
    assert not (tmp_path / "supabase").exists()


@pytest.mark.parametrize(
    ("latest", "expected"),
    [
        (None, [20260301120000, 20260301120001]),
        (20250101000000, [20260301120000, 20260301120001]),
        (20260301120000, [20260301120001, 20260301120002]),
        (20260301235959, [20260302000000, 20260302000001]),
        (99999999999999999, [100000000000000000, 100000000000000001]),
    ],
)
def test_timestamps_follow_now_or_the_newest_version(
    latest: int | None, expected: list[int]
) -> None:
    """Versions are UTC timestamps from now, or from just after a later existing one."""
    assert supabase.next_stamps(latest, 2, NOW) == expected


def test_the_bundle_is_every_kit_file_in_one_transaction() -> None:
    """The SQL editor script holds each kit file in order between BEGIN and COMMIT."""
    text = supabase.bundle()
    body = text[text.index("BEGIN;") :]

    assert body.startswith("BEGIN;\n") and body.rstrip().endswith("COMMIT;")
    positions = [body.index(f.sql) for f in supabase.kit_files()]
    assert positions == sorted(positions)


def test_bundle_command_writes_the_bundle(tmp_path: Path) -> None:
    """`nexus supabase bundle -o FILE` writes exactly the bundle."""
    target = tmp_path / "nexus.sql"

    assert main(["supabase", "bundle", "-o", str(target)]) == 0
    assert target.read_text() == supabase.bundle()


def test_config_is_what_the_supabase_cli_reads() -> None:
    """config.toml parses, names the database version, keeps migrations on and exposes only public."""
    config = tomllib.loads((KIT / "config.toml").read_text())

    assert config["project_id"]
    assert config["db"]["major_version"] in (15, 17)
    assert config["db"]["migrations"]["enabled"] is True
    assert set(config["api"]["schemas"]) == {"public", "graphql_public"}


def test_the_exported_migrations_are_not_committed() -> None:
    """supabase/migrations is generated (one source): ignored by git, nothing of it in the tree.
    (A file left there sorts before what `nexus supabase export .` writes, and `supabase start`
    applies it first, on a database without Nexus's tables.)"""
    assert "/migrations/" in (KIT / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(
        ["git", "ls-files", "--", "supabase/migrations"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: nothing is tracked")
    assert tracked.stdout == ""


def test_cron_calls_the_consumer_every_ten_seconds_with_its_token() -> None:
    """cron.sql schedules the consumer with pg_cron's seconds syntax and NEXUS_CONSUMER_TOKEN."""
    cron = (KIT / "cron.sql").read_text(encoding="utf-8")

    assert "'10 seconds'" in cron
    assert "NEXUS_CONSUMER_TOKEN" in cron
    assert "anon" not in re.sub(r"--.*", "", cron).lower()
    assert "'nexus-maintenance'" in cron
