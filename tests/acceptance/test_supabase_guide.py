"""docs/SUPABASE.md, step by step: every block the guide marks `<!-- test: NAME -->` runs as
written (shell with bash, SQL with psql) against a database set up as a Supabase project is:
its roles and default privileges, pgmq 1.4.4 and 1.5.1 offered. `supabase db push`, which cannot
be installed here, is done as the CLI does it (tests/supabase_project.py)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import (
    NEXUS,
    free_port,
    new_database,
    nexus_env,
    nexus_process,
    wait_for,
    wait_healthy,
)
from tests.pgmq_versions import create_extension, offered
from tests.supabase_project import db_push, make_supabase_like, new_project, psql

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "SUPABASE.md").read_text(encoding="utf-8")
TOKEN = "a-consumer-token"


def block(name: str) -> str:
    """The fenced block of the guide marked `<!-- test: name -->`."""
    match = re.search(rf"<!-- test: {name} -->\n```\w*\n(.*?)```", GUIDE, re.DOTALL)
    assert match, f"docs/SUPABASE.md has no block marked {name!r}"
    return match[1]


def shell(command: str, url: str, cwd: Path, port: int = 0) -> str:
    """Run a shell block as a user would, with the guide's variables set; returns its output."""
    env = nexus_env(url, NEXUS_URL=f"http://localhost:{port}", NEXUS_CONSUMER_TOKEN=TOKEN)
    env["PATH"] = f"{Path(NEXUS).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        ["bash", "-ec", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def sql_block(name: str, url: str) -> str:
    done = psql(url, script=block(name))
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def supabase_db(pg_admin_url: str) -> Iterator[tuple[str, str]]:
    """A Supabase-like database (name, URL) whose project has enabled Queues on pgmq 1.4.4."""
    with new_database(pg_admin_url, "nexus_guide") as (name, url), offered(pg_admin_url, name):
        make_supabase_like(url)
        create_extension(url, "1.4.4")
        yield name, url


def test_the_guide_from_an_existing_project_to_a_lead(
    supabase_db: tuple[str, str], tmp_path: Path
) -> None:
    """Export and push, the checks, the long-running worker, then the cron style: Carlos's row."""
    _, url = supabase_db
    project = new_project(tmp_path / "project")
    for line in block("export").strip().splitlines():
        if line == "supabase db push":
            db_push(url, project)
        else:
            shell(line, url, project)
    assert shell(block("migrate"), url, project).strip() == "migrations applied: none"
    assert sql_block("verify", url).count("pgmq_") == 5
    pgmq = sql_block("pgmq", url)
    assert re.search(r"1\.5\.1\s*\|\s*t", pgmq) and "nexus_prospect_ingestion" in pgmq
    assert "pgmq_send" in sql_block("anon", url)

    port = free_port()
    env = nexus_env(url, port, NEXUS_EXTRACTOR="rules")
    with nexus_process(shlex.split(block("up"))[1:], env, log_path=tmp_path / "up.log") as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        assert json.loads(shell(block("send"), url, project, port))["status"] == "accepted"
        # The checks list the queue too, where Carlos's snapshot is before any worker read it.
        wait_for(lambda: _drained_to_carlos(url), timeout=30, what="Carlos's row, queue empty")
        assert "Carlos" in sql_block("checks", url)

    env = nexus_env(url, port, NEXUS_EXTRACTOR="rules", NEXUS_CONSUMER_TOKEN=TOKEN)
    with nexus_process(
        shlex.split(block("serve"))[1:], env, log_path=tmp_path / "serve.log"
    ) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        accepted = json.loads(shell(block("send"), url, project, port))
        consumed = json.loads(shell(block("consume"), url, project, port))
    assert consumed["status"] == "success" and consumed["msgId"] == accepted["messageId"]
    assert consumed["extractedData"]["nombre"] == "Carlos"


def _drained_to_carlos(url: str) -> bool:
    """The worker has taken every message (the anon check's too) and saved Carlos's row."""
    with psycopg.connect(url) as conn:
        queued = conn.execute("SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion").fetchone()
        name = conn.execute(
            "SELECT nombre FROM prospect_data WHERE session_id = 'test-session-456'"
        ).fetchone()
    return queued == (0,) and name == ("Carlos",)


def test_the_sql_editor_script_then_nexus_migrate(
    supabase_db: tuple[str, str], tmp_path: Path
) -> None:
    """The bundle written by the guide's command applies as one paste; `nexus migrate` then has nothing to do."""
    _, url = supabase_db
    shell(block("bundle"), url, tmp_path)
    done = psql(url, file=tmp_path / "nexus.sql")
    assert done.returncode == 0, done.stderr
    assert shell(block("migrate"), url, tmp_path).strip() == "migrations applied: none"
    assert sql_block("verify", url).count("pgmq_") == 5
