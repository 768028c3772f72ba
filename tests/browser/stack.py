"""What the browser tests run against: `nexus up` on a fresh database, and queries on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import free_port, nexus_env, nexus_process, wait_healthy

TOKEN = "browser-admin-token"


@dataclass
class Nexus:
    """A running `nexus up` and its database."""

    base: str
    db_url: str
    log: Path


@contextmanager
def running_nexus(db_url: str, log: Path) -> Iterator[Nexus]:
    """`nexus up` with the rules extractor, the dashboard on, and processed messages archived."""
    port = free_port()
    env = nexus_env(
        db_url,
        port,
        NEXUS_EXTRACTOR="rules",
        NEXUS_ADMIN_TOKEN=TOKEN,
        NEXUS_ARCHIVE_PROCESSED="true",
    )
    with nexus_process(["up"], env, log_path=log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        yield Nexus(base, db_url, log)


def sql(db_url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def saved_prospect(db_url: str, fingerprint: str) -> tuple[Any, ...] | None:
    """(nombre, email) of the visitor's row, once it has an email."""
    rows = sql(
        db_url,
        "SELECT nombre, email FROM prospect_data WHERE fingerprint_id = %s AND email IS NOT NULL",
        (fingerprint,),
    )
    return rows[0] if rows else None
