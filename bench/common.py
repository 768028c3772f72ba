"""What every benchmark needs: a fresh database, a `nexus` process, a table of figures."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pgmq.install import get_embedded_install_sql
from psycopg import sql

from nexus_ingest.migrate import migrate

NEXUS = str(Path(sys.executable).with_name("nexus"))


def admin_url() -> str:
    """The server to benchmark on: DATABASE_URL when set, else the embedded one."""
    from nexus_ingest import embedded

    return embedded.resolve(os.environ.get("DATABASE_URL"), None).url


# Which PGMQ a benchmark database starts with: what `nexus migrate` chooses on this server
# (None), the SQL-only PGMQ of the `pgmq` package, or a version of the pgmq extension.
SQL_ONLY = "sql-only"


@contextmanager
def fresh_database(pgmq: str | None = None) -> Iterator[str]:
    """A new, migrated database on PGMQ `pgmq` (see SQL_ONLY), dropped afterwards."""
    admin = admin_url()
    name = f"nexus_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = psycopg.conninfo.make_conninfo(admin, dbname=name)
    try:
        _install_pgmq(url, pgmq)
        migrate(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _install_pgmq(url: str, pgmq: str | None) -> None:
    if pgmq is None:
        return
    with psycopg.connect(url) as conn:
        if pgmq == SQL_ONLY:
            conn.execute(get_embedded_install_sql())
        else:
            conn.execute(sql.SQL("CREATE EXTENSION pgmq VERSION {}").format(sql.Literal(pgmq)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bench_env(database_url: str, port: int | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUS_")}
    env.update(
        {
            "DATABASE_URL": database_url,
            "NEXUS_LOG_LEVEL": "WARNING",
            "NEXUS_RATE_LIMIT_IP_PER_MINUTE": "0",
            "NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE": "0",
            **extra,
        }
    )
    if port:
        env["NEXUS_PORT"] = str(port)
    return env


@contextmanager
def nexus(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [NEXUS, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_until_serving(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def machine() -> str:
    """One line describing where the figures were measured."""
    with psycopg.connect(admin_url()) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return (
        f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL {row[0] if row else '?'}, {platform.platform()}"
    )


def table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def percentile(sorted_values: list[float], p: float) -> float:
    """The p-th percentile (0..1) of already sorted values, rounded to 0.01."""
    if not sorted_values:
        return 0.0
    return round(sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))], 2)
