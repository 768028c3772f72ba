"""Hostile input: schemathesis against /openapi.json, and no personal data in the logs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import NEXUS, free_port, nexus_env, nexus_process, wait_for, wait_healthy

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


# Its own subprocess allows 600 s; on a busy 2-core machine the run can pass the default 120 s.
@pytest.mark.timeout(660)
def test_schemathesis_finds_no_server_error(db_url: str, tmp_path: Path) -> None:
    """At least 1,000 generated requests never get a 5xx, and every answer matches the documented schema."""
    port = free_port()
    env = nexus_env(
        db_url,
        port,
        NEXUS_EXTRACTOR="rules",
        NEXUS_RATE_LIMIT_IP_PER_MINUTE="0",
        NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0",
        NEXUS_LOG_LEVEL="WARNING",
    )
    with nexus_process(["serve"], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        report = tmp_path / "events.ndjson"
        run = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                f"{base}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--max-examples",
                "1000",
                "--include-path",
                "/api/nexus/producer",
                "--seed",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(report),
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stdout[-3000:]
    cases = sum(
        1
        for line in report.read_text().splitlines()
        if '"ScenarioFinished"' in line or '"status":' in line
    )
    sent = _requests_sent(report)
    assert sent >= 1000, f"only {sent} requests were generated ({cases} events)"


def _requests_sent(report: Path) -> int:
    count = 0
    for line in report.read_text().splitlines():
        count += len(re.findall(r'"request":\s*\{', line))
    return count


PERSONAL = [
    "Valentina Quiroga",
    "valentina.quiroga@example.org",
    "+34 611 222 333",
    "Calle Falsa 123",
]


def test_logs_hold_no_personal_data(db_url: str, tmp_path: Path) -> None:
    """After an end-to-end run, including refused and failing requests, no personal data is in the logs."""
    port = free_port()
    log = tmp_path / "up.log"
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules", NEXUS_CONSUMER_TOKEN="secret-token-xyz")
    body = {
        "messages": [
            {
                "role": "user",
                "content": f"Soy {PERSONAL[0]}, mi email es {PERSONAL[1]}, "
                f"teléfono {PERSONAL[2]}, vivo en {PERSONAL[3]}",
            }
        ],
        "fingerprint": "pii-fp",
        "sessionId": "pii-session",
    }
    with nexus_process(["up"], env, log_path=log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        assert httpx.post(f"{base}/api/nexus/producer", json=body).status_code == 202
        bad = {**body, "messages": [{"role": "robot", "content": PERSONAL[1]}]}
        assert httpx.post(f"{base}/api/nexus/producer", json=bad).status_code == 422
        assert (
            httpx.post(
                f"{base}/api/nexus/producer",
                content=json.dumps(body)[:-3],
                headers={"Content-Type": "application/json"},
            ).status_code
            == 400
        )
        with psycopg.connect(db_url) as conn:
            wait_for(
                lambda: conn.execute("SELECT email FROM prospect_data").fetchall(), what="the row"
            )
        extract = subprocess.run(
            [NEXUS, "extract", "-"],
            input=json.dumps(body),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert extract.returncode == 0
    text = log.read_text() + extract.stderr
    assert "pii-session" in text, "the logs do carry ids"
    for secret in [*PERSONAL, "valentina", "611 222 333", "secret-token-xyz"]:
        assert secret.lower() not in text.lower(), f"{secret!r} leaked into the logs"


def test_forget_erases_a_prospect_everywhere(db_url: str, tmp_path: Path) -> None:
    """`nexus forget` removes the row, its history, sessions, and queued, archived and dead messages."""
    port = free_port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules", NEXUS_ARCHIVE_PROCESSED="true")
    body = {
        "messages": [{"role": "user", "content": "Me llamo Olvido"}],
        "fingerprint": "gone",
        "sessionId": "g1",
    }
    with nexus_process(["up"], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        httpx.post(f"{base}/api/nexus/producer", json=body)
        with psycopg.connect(db_url) as conn:
            wait_for(lambda: conn.execute("SELECT 1 FROM prospect_data").fetchall(), what="the row")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pgmq_send('nexus-prospect-ingestion', %s::jsonb, 0)", (json.dumps(body),)
        )
        conn.execute(
            "SELECT pgmq.send('nexus_prospect_ingestion_dlq', %s::jsonb)",
            (json.dumps({"original": body, "originalMsgId": 1, "error": {}}),),
        )
    result = subprocess.run(
        [NEXUS, "forget", "gone", "--yes"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "prospect_data: 1" in result.stdout and "archived: 1" in result.stdout
    with psycopg.connect(db_url) as conn:
        left = conn.execute(
            "SELECT (SELECT count(*) FROM prospect_data) + (SELECT count(*) FROM prospect_extractions)"
            " + (SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion)"
            " + (SELECT count(*) FROM pgmq.a_nexus_prospect_ingestion)"
            " + (SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq) + (SELECT count(*) FROM nexus.sessions)"
        ).fetchone()
    assert left == (0,)
