"""sql/schema.sql is the schema a migrated database has, so a reader can trust it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dumper() -> ModuleType:
    """scripts/dump_schema.py, imported from its file (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "dump_schema", ROOT / "scripts" / "dump_schema.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _same_major_as_pg_dump(url: str, dumper: ModuleType) -> bool:
    """The file is generated on the embedded server; another major version prints it otherwise."""
    version = subprocess.run(
        [str(dumper.pg_dump_path()), "--version"], check=True, capture_output=True, text=True
    ).stdout
    with psycopg.connect(url) as conn:
        server = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    return version.split()[-1].split(".")[0] == str(server)


def test_schema_file_matches_a_migrated_database(db_url: str) -> None:
    """The committed schema.sql equals a dump of a freshly migrated database (rerun
    `python scripts/dump_schema.py` after changing a migration if this fails)."""
    dumper = _dumper()
    if not _same_major_as_pg_dump(db_url, dumper):
        pytest.skip("schema.sql is generated on the embedded PostgreSQL, not on this server")

    assert dumper.dump_schema(db_url) == dumper.SCHEMA_FILE.read_text(encoding="utf-8")


def test_schema_file_notices_a_schema_change(db_url: str) -> None:
    """A change to the schema that the file does not show makes the comparison fail."""
    dumper = _dumper()
    if not _same_major_as_pg_dump(db_url, dumper):
        pytest.skip("schema.sql is generated on the embedded PostgreSQL, not on this server")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.prospect_data ADD COLUMN mood text")

    assert dumper.dump_schema(db_url) != dumper.SCHEMA_FILE.read_text(encoding="utf-8")
