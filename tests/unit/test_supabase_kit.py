"""The Supabase kit: its migrations are ours, exported unchanged, and its cron SQL is right."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from nexus_ingest.migrate import load_migrations

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "supabase"


def _exporter() -> ModuleType:
    """scripts/export_supabase.py, imported from its file (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "export_supabase", ROOT / "scripts" / "export_supabase.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def _contents(folder: Path) -> dict[str, str]:
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(folder.glob("*.sql"))}


def test_committed_kit_equals_a_fresh_export(tmp_path: Path) -> None:
    """supabase/migrations/ is exactly what the export script writes now (rerun it if this fails)."""
    _exporter().export(tmp_path)

    assert _contents(tmp_path) == _contents(KIT / "migrations")


def test_each_migration_is_exported_unchanged() -> None:
    """Every migration's SQL appears whole in its Supabase file, recorded with its checksum."""
    kit = _contents(KIT / "migrations")
    for migration in load_migrations():
        (text,) = [t for name, t in kit.items() if name.endswith(f"_nexus_{migration.name}.sql")]
        assert migration.sql in text
        assert f"VALUES ({migration.version}, '{migration.name}', '{migration.checksum}')" in text


def test_the_kit_starts_with_the_pgmq_extension() -> None:
    """The first Supabase migration creates the pgmq extension before anything uses it."""
    first_name, first = next(iter(_contents(KIT / "migrations").items()))

    assert first_name.startswith("20251010000000_")
    assert "create extension if not exists pgmq;" in first


def test_timestamps_keep_the_migrations_in_order() -> None:
    """Supabase applies files by timestamp; ours follow the migration numbers."""
    names = list(_contents(KIT / "migrations"))
    versions = [int(re.match(r"^(\d{14})_", n)[1]) - 20251010000000 for n in names]  # type: ignore[index]

    assert versions == [0, *(m.version for m in load_migrations())]


def test_cron_calls_the_consumer_every_ten_seconds_with_its_token() -> None:
    """cron.sql schedules the consumer with pg_cron's seconds syntax and NEXUS_CONSUMER_TOKEN."""
    cron = (KIT / "cron.sql").read_text(encoding="utf-8")

    assert "'10 seconds'" in cron
    assert "NEXUS_CONSUMER_TOKEN" in cron
    assert "anon" not in re.sub(r"--.*", "", cron).lower()
    assert "'nexus-maintenance'" in cron
