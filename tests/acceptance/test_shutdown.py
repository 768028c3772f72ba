"""Stopping: SIGTERM to `nexus serve` or `nexus up` while chats are posted answers what it took
in, keeps every snapshot it acknowledged, and exits 0 promptly."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import NEXUS, free_port, nexus_env, wait_for, wait_healthy

SENDERS = 3


def _keep_posting(base: str, sender: int, stop: threading.Event, answers: list[int | None]) -> None:
    """Post new chats one after another until `stop`, noting each 202's messageId."""
    with httpx.Client(timeout=10) as client:
        n = 0
        while not stop.is_set():
            n += 1
            body = {
                "messages": [{"role": "user", "content": f"Hola {sender}-{n}"}],
                "fingerprint": f"fp-{sender}-{n}",
                "sessionId": f"s-{sender}-{n}",
            }
            try:
                response = client.post(f"{base}/api/nexus/producer", json=body)
            except httpx.TransportError:
                continue  # the server has stopped listening
            answers.append(response.json()["messageId"] if response.status_code == 202 else None)


def _kept(db_url: str) -> set[int]:
    """Every snapshot queued, whether still waiting or already handled."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT msg_id FROM pgmq.q_nexus_prospect_ingestion"
            " UNION ALL SELECT msg_id FROM prospect_extractions WHERE msg_id IS NOT NULL"
        ).fetchall()
    return {r[0] for r in rows}


@pytest.mark.parametrize("command", ["serve", "up"])
def test_sigterm_under_load_keeps_every_acknowledged_snapshot(
    db_url: str, tmp_path: Path, command: str
) -> None:
    """Every POST answered 202 before or during the stop is in the database, no request is
    answered otherwise than 202, and the process exits 0 within its grace period."""
    port = free_port()
    env = nexus_env(
        db_url,
        port,
        NEXUS_EXTRACTOR="rules",
        NEXUS_RATE_LIMIT_IP_PER_MINUTE="0",
        NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0",
    )
    base = f"http://127.0.0.1:{port}"
    stop, answers = threading.Event(), list[int | None]()
    senders = [
        threading.Thread(target=_keep_posting, args=(base, n, stop, answers))
        for n in range(SENDERS)
    ]
    with open(tmp_path / "nexus.log", "wb") as log:
        proc = subprocess.Popen([NEXUS, command], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_healthy(base, proc)
            for sender in senders:
                sender.start()
            wait_for(lambda: len(answers) >= 20, what="some chats posted")
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=20)
            took = time.monotonic() - started
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for sender in senders:
        if sender.ident is not None:  # started
            sender.join(timeout=10)

    assert code == 0
    assert took < 10
    assert None not in answers
    assert set(answers) <= _kept(db_url)
