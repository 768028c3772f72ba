"""Helpers for tests: waiting on conditions, running `nexus` as a real process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import psycopg
from psycopg import sql

T = TypeVar("T")
NEXUS = str(Path(sys.executable).with_name("nexus"))


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll `condition` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nexus_env(database_url: str, port: int | None = None, **extra: str) -> dict[str, str]:
    """The environment for a `nexus` process on the given database."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NEXUS_") and k not in ("ANTHROPIC_API_KEY", "DATABASE_URL")
    }
    env.update({"DATABASE_URL": database_url, "NEXUS_LOG_LEVEL": "INFO", **extra})
    if port is not None:
        env["NEXUS_PORT"] = str(port)
    return env


@contextmanager
def nexus_process(
    args: list[str], env: dict[str, str], *, log_path: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `nexus ARGS` as a real process; stop it with SIGTERM (then SIGKILL) on exit."""
    log_file = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen([NEXUS, *args], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log_path:
            log_file.close()  # type: ignore[union-attr]


def wait_healthy(
    base_url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20.0
) -> None:
    """Wait until the producer's health check answers at all (any status)."""

    def answers() -> bool:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"nexus exited early with code {proc.returncode}")
        try:
            httpx.get(f"{base_url}/api/nexus/producer", timeout=1)
            return True
        except httpx.TransportError:
            return False

    wait_for(answers, timeout=timeout, interval=0.05, what=f"{base_url} to answer")


@contextmanager
def running_nexus(
    args: list[str], database_url: str, *, log_path: Path | None = None, **settings: str
) -> Iterator[str]:
    """`nexus ARGS` on a free port with these settings; yields its base URL once it answers."""
    port = free_port()
    env = nexus_env(database_url, port, **settings)
    with nexus_process(args, env, log_path=log_path) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        yield base


SEED_CONVERSATION = {
    "messages": [
        {"role": "user", "content": "Hola"},
        {"role": "assistant", "content": "Hola, ¿en qué puedo ayudarte?"},
        {"role": "user", "content": "Me llamo Carlos y quiero información sobre los paquetes"},
    ],
    "fingerprint": "test-fingerprint-123",
    "sessionId": "test-session-456",
}


@contextmanager
def new_database(admin_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A new, empty database (not the migrated template): its name and URL; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name, psycopg.conninfo.make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def seed_conversation_to_row(url: str, log_dir: Path) -> tuple[str, int] | None:
    """The seed's Test 2 posted to `nexus up` (rules extractor) on `url`: the prospect's name and
    the session's applied snapshot once the row exists."""
    port = free_port()
    env = nexus_env(url, port, NEXUS_EXTRACTOR="rules")
    with nexus_process(["up"], env, log_path=log_dir / "up.log") as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        answer = httpx.post(
            f"http://127.0.0.1:{port}/api/nexus/producer", json=SEED_CONVERSATION, timeout=10
        )
        assert answer.status_code == 202, answer.text
        return wait_for(lambda: _seed_prospect(url), timeout=20, what="the seed's prospect row")


def _seed_prospect(url: str) -> tuple[str, int] | None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT p.nombre, s.applied_seq FROM prospect_data p"
            " JOIN nexus.sessions s ON s.session_id = p.session_id"
            " WHERE p.fingerprint_id = %s",
            (SEED_CONVERSATION["fingerprint"],),
        ).fetchone()
    return (row[0], row[1]) if row else None
