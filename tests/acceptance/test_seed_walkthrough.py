"""The seed's deployment guide, step by step, against real `nexus` processes."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import free_port, nexus_env, nexus_process, wait_for, wait_healthy

SEED_TEST_1 = "curl http://localhost:3000/api/nexus/producer"
SEED_TEST_2 = """curl -X POST http://localhost:3000/api/nexus/producer \\
  -H "Content-Type: application/json" \\
  -d '{
    "messages": [
      {"role": "user", "content": "Hola"},
      {"role": "assistant", "content": "Hola, ¿en qué puedo ayudarte?"},
      {"role": "user", "content": "Me llamo Carlos y quiero información sobre los paquetes"}
    ],
    "fingerprint": "test-fingerprint-123",
    "sessionId": "test-session-456"
  }'"""
SEED_TEST_4 = """curl -X POST http://localhost:3000/functions/v1/nexus-consumer \\
  -H "Authorization: Bearer <TU_ANON_KEY>" \\
  -H "Content-Type: application/json\""""
SEED_TEST_3 = [
    "SELECT * FROM pgmq.q_nexus_prospect_ingestion;",
    "SELECT * FROM pgmq_metrics('nexus-prospect-ingestion');",
]
SEED_TEST_5 = "SELECT * FROM prospect_data\nWHERE fingerprint_id = 'test-fingerprint-123';"


def _port() -> int:
    """3000 as in the seed when it is free, else another free port substituted into the commands."""
    try:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 3000))
        return 3000
    except OSError:
        return free_port()


def curl(command: str, port: int) -> dict[str, object]:
    args = shlex.split(command.replace("localhost:3000", f"localhost:{port}").replace("\\\n", " "))
    output = subprocess.run(
        [*args, "-s", "--max-time", "10"], capture_output=True, check=True, text=True
    ).stdout
    return json.loads(output)  # type: ignore[no-any-return]


def rows(database_url: str, statement: str) -> list[dict[str, object]]:
    with psycopg.connect(database_url) as conn:
        cur = conn.execute(statement)  # type: ignore[arg-type]
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@pytest.fixture
def up(db_url: str, tmp_path: Path) -> Iterator[int]:
    """`nexus up` (API and worker) with the rules extractor, on the seed's port when free."""
    port = _port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")
    with nexus_process(["up"], env, log_path=tmp_path / "up.log") as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        yield port


def test_seed_tests_1_2_3_5_against_nexus_up(up: int, db_url: str) -> None:
    """Health check, enqueue, queue inspection and the saved prospect, as the seed's guide runs them."""
    health = curl(SEED_TEST_1, up)
    assert health["status"] == "healthy" and health["role"] == "message-producer"
    accepted = curl(SEED_TEST_2, up)
    assert accepted["status"] == "accepted" and isinstance(accepted["messageId"], int)
    for statement in SEED_TEST_3:
        rows(db_url, statement)
    saved = wait_for(lambda: rows(db_url, SEED_TEST_5), timeout=10, what="the prospect row")
    assert saved[0]["nombre"] == "Carlos"
    assert saved[0]["intencion"] == "informacion"
    assert rows(db_url, "SELECT count(*) AS n FROM pgmq.q_nexus_prospect_ingestion") == [{"n": 0}]


def test_seed_test_4_consumer_endpoint(db_url: str, tmp_path: Path) -> None:
    """With only the API running, the seed's consumer call processes the message and returns its shape."""
    port = _port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules", NEXUS_CONSUMER_TOKEN="<TU_ANON_KEY>")
    with nexus_process(["serve"], env, log_path=tmp_path / "serve.log") as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        accepted = curl(SEED_TEST_2, port)
        consumed = curl(SEED_TEST_4, port)
        assert consumed["status"] == "success" and consumed["msgId"] == accepted["messageId"]
        assert consumed["sessionId"] == "test-session-456"
        assert consumed["extractedData"]["nombre"] == "Carlos"  # type: ignore[index]
        assert curl(SEED_TEST_4, port) == {"status": "empty"}
        unauthorized = subprocess.run(
            [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                f"http://localhost:{port}/api/nexus/consumer",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert unauthorized == "401"
    assert rows(db_url, SEED_TEST_5)[0]["nombre"] == "Carlos"
