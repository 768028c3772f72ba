"""A Supabase project as far as Nexus can tell: its roles and default privileges in the
database, a folder with supabase/config.toml, and `supabase db push` done as the CLI does it
(the CLI itself cannot be installed here): each migration file in its own transaction, in
version order, stopping at the first error."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("anon", "authenticated", "service_role")
# What every Supabase project has: new functions, tables and sequences in public are granted to
# the API roles by name.
DEFAULT_PRIVILEGES = [
    "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public"
    f" GRANT ALL ON {kind} TO anon, authenticated, service_role"
    for kind in ("FUNCTIONS", "TABLES", "SEQUENCES")
]


def make_supabase_like(url: str) -> None:
    """Supabase's API roles and default privileges in the database at `url`."""
    with psycopg.connect(url, autocommit=True) as conn:
        for role in ROLES:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        for statement in DEFAULT_PRIVILEGES:
            conn.execute(statement)  # type: ignore[arg-type]


def new_project(folder: Path) -> Path:
    """A project folder as `supabase init` leaves it (with this repository's config.toml)."""
    (folder / "supabase" / "migrations").mkdir(parents=True)
    shutil.copy(ROOT / "supabase" / "config.toml", folder / "supabase" / "config.toml")
    return folder


def psql(
    url: str, *, file: Path | None = None, script: str | None = None, one_transaction: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a SQL file or script with psql, stopping at the first error."""
    found = shutil.which("psql")
    if found is None:
        pytest.skip("psql is not installed")
    args = [found, "-X", "-v", "ON_ERROR_STOP=1", *(["-1"] if one_transaction else [])]
    args += ["-f", str(file) if file else "-", url]
    return subprocess.run(args, input=script, capture_output=True, text=True, timeout=120)


def db_push(url: str, project: Path) -> list[str]:
    """Apply the project's migrations as `supabase db push` does; returns each file's notices."""
    folder = project / "supabase" / "migrations"
    notices = []
    for path in sorted(folder.glob("*.sql"), key=lambda p: int(p.name.split("_")[0])):
        done = psql(url, file=path, one_transaction=True)
        assert done.returncode == 0, f"{path.name}: {done.stderr}"
        notices.append(done.stderr)
    return notices
