"""Faults injected for real: killed workers, failing LLM calls, dead letters replayed."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from nexus_ingest import queue
from nexus_ingest.db import open_pool
from tests.fakes.llm_server import FakeLLMServer, Hang
from tests.helpers import NEXUS, free_port, nexus_env, nexus_process, wait_for

MESSAGES = 2000
KILLS = 20


def query(url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(statement).fetchall()  # type: ignore[arg-type]


def scalar(url: str, statement: str) -> Any:
    return query(url, statement)[0][0]


async def _fill(url: str, count: int, prefix: str) -> list[int]:
    pool = await open_pool(url, min_size=1, max_size=2)
    ids: list[int] = []
    try:
        for offset in range(0, count, 500):
            batch = []
            for i in range(offset, min(count, offset + 500)):
                sid = f"{prefix}-{i}"
                body = {
                    "sessionId": sid,
                    "fingerprint": sid,
                    "messages": [
                        {"role": "user", "content": f"Me llamo Persona{i} y quiero precios"}
                    ],
                }
                batch.append(queue.Snapshot(sid, sid, body, {}))
            ids += [r.msg_id for r in await queue.enqueue_many(pool, batch)]
    finally:
        await pool.close()
    return ids


def fill(url: str, count: int, prefix: str = "crash") -> list[int]:
    return asyncio.run(_fill(url, count, prefix))


def claude_env(url: str, fake: FakeLLMServer, **extra: str) -> dict[str, str]:
    return nexus_env(
        url,
        NEXUS_EXTRACTOR="anthropic",
        ANTHROPIC_API_KEY="sk-ant-test",
        ANTHROPIC_BASE_URL=fake.base_url,
        NEXUS_COALESCE_WINDOW_S="0",
        **extra,
    )


# Twenty worker start-ups (each importing the provider SDK) and a 2,000-message drain take
# 90-130 s on a loaded 2-core machine; the test's own waits bound it, not the suite's 120 s.
@pytest.mark.timeout(300)
def test_worker_killed_20_times_loses_and_repeats_nothing(db_url: str, tmp_path: Path) -> None:
    """SIGKILL at random moments while draining 2,000 messages: each is applied exactly once."""
    ids = fill(db_url, MESSAGES)
    rng = random.Random(7)
    with FakeLLMServer("anthropic", latency_s=0.02) as fake:
        env = claude_env(
            db_url,
            fake,
            NEXUS_WORKER_VT_S="2",
            NEXUS_WORKER_CONCURRENCY="4",
            NEXUS_MAX_ATTEMPTS="50",
            NEXUS_LOG_LEVEL="WARNING",
        )
        kills = 0
        while kills < KILLS:
            proc = subprocess.Popen(
                [NEXUS, "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            before = len(fake.calls)
            wait_for(
                lambda b=before, p=proc: len(fake.calls) > b or p.poll() is not None,
                timeout=30,
                what="work",
            )
            time.sleep(
                rng.uniform(0.0, 0.4)
            )  # a random moment inside the drain, not a wait for a condition
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        with nexus_process(["worker"], env):
            wait_for(
                lambda: scalar(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion") == 0,
                timeout=120,
                interval=0.2,
                what="the drain to finish",
            )
    applied = [
        r[0]
        for r in query(db_url, "SELECT msg_id FROM prospect_extractions WHERE outcome = 'applied'")
    ]
    dead = scalar(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq")
    assert kills == KILLS
    assert dead == 0
    assert sorted(applied) == sorted(ids), "every message applied, none twice"
    assert scalar(db_url, "SELECT count(*) FROM prospect_data") == MESSAGES
    assert scalar(db_url, "SELECT max(extraction_count) FROM prospect_data") == 1


@pytest.fixture
def faulty_run(
    db_url: str, tmp_path: Path
) -> Iterator[tuple[FakeLLMServer, list[int], dict[str, str]]]:
    with FakeLLMServer("anthropic") as fake:
        fake.fail_randomly(0.3, seed=3, hang_s=3)
        env = claude_env(
            db_url,
            fake,
            NEXUS_MAX_ATTEMPTS="3",
            NEXUS_RETRY_BASE_S="1",
            NEXUS_RETRY_CAP_S="1",
            NEXUS_LLM_TIMEOUT_S="1",
        )
        ids = fill(db_url, 200, prefix="fault")
        with nexus_process(["worker"], env, log_path=tmp_path / "worker.log"):
            wait_for(
                lambda: scalar(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion") == 0,
                timeout=90,
                interval=0.2,
                what="every message saved or dead-lettered",
            )
        yield fake, ids, env


def test_llm_failing_30_percent_ends_saved_or_dead_lettered(faulty_run: Any, db_url: str) -> None:
    """With 30% mixed LLM failures each message is saved or in the DLQ with a reason; replay saves the rest."""
    fake, ids, env = faulty_run
    saved = {r[0] for r in query(db_url, "SELECT msg_id FROM prospect_extractions")}
    letters = [
        r[0] for r in query(db_url, "SELECT message FROM pgmq.q_nexus_prospect_ingestion_dlq")
    ]
    dead = {letter["originalMsgId"] for letter in letters}
    assert saved | dead == set(ids) and not saved & dead
    assert all(letter["error"]["reason"] and letter["error"]["attempts"] >= 1 for letter in letters)
    fake.fail_randomly(0.0)
    replay = subprocess.run(
        [NEXUS, "dlq", "replay", "--all"], env=env, capture_output=True, text=True, timeout=60
    )
    assert replay.returncode == 0, replay.stderr
    assert f"{len(letters)} replayed" in replay.stdout
    with nexus_process(["worker"], env):
        wait_for(
            lambda: scalar(db_url, "SELECT count(*) FROM prospect_data") == len(ids),
            timeout=60,
            interval=0.2,
            what="replayed messages saved",
        )
    assert scalar(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq") == 0
    listing = subprocess.run(
        [NEXUS, "dlq", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listing.returncode == 0 and listing.stdout.strip() == ""


def test_failure_simulation_switch_is_loud_and_dead_letters(db_url: str, tmp_path: Path) -> None:
    """NEXUS_FAULT_RATE=1 with permanent mode dead-letters every message and warns at start-up."""
    fill(db_url, 5, prefix="drill")
    env = nexus_env(
        db_url, NEXUS_EXTRACTOR="rules", NEXUS_FAULT_RATE="1", NEXUS_FAULT_MODE="permanent"
    )
    log = tmp_path / "worker.log"
    with nexus_process(["worker"], env, log_path=log):
        wait_for(
            lambda: scalar(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq") == 5,
            timeout=30,
            what="dead letters",
        )
    assert "FAILURE SIMULATION ON" in log.read_text()
    purge = subprocess.run(
        [NEXUS, "dlq", "purge", "--yes"], env=env, capture_output=True, text=True, timeout=60
    )
    assert purge.returncode == 0 and "5 purged" in purge.stdout


def test_a_stopped_worker_gives_back_the_snapshots_it_could_not_finish(
    db_url: str, tmp_path: Path
) -> None:
    """SIGTERM while three LLM calls hang: past the grace period the calls are cut, and their
    snapshots are readable again at once, sessions released and the read not counted, rather
    than hidden for the rest of a 60 s visibility timeout."""
    ids = fill(db_url, 3, prefix="stopping")
    with FakeLLMServer("anthropic") as fake:
        fake.set_default(Hang(60))
        env = claude_env(db_url, fake, NEXUS_WORKER_VT_S="60", NEXUS_WORKER_SHUTDOWN_GRACE_S="1")
        with nexus_process(["worker"], env, log_path=tmp_path / "worker.log") as worker:
            fake.wait_for_calls(3, timeout=30)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
    ready = query(
        db_url,
        "SELECT msg_id, read_ct, vt <= clock_timestamp() FROM pgmq.q_nexus_prospect_ingestion"
        " ORDER BY msg_id",
    )
    assert ready == [(msg_id, 0, True) for msg_id in sorted(ids)]
    leased = scalar(
        db_url,
        "SELECT count(*) FROM nexus.sessions"
        " WHERE session_id LIKE 'stopping-%' AND leased_until > clock_timestamp()",
    )
    assert leased == 0


@pytest.mark.parametrize("command", ["worker", "up"])
def test_a_second_signal_stops_at_once_and_still_gives_back(
    db_url: str, tmp_path: Path, command: str
) -> None:
    """SIGTERM, then SIGTERM again, while LLM calls hang and the grace period is a minute: the
    process exits within seconds, not after the grace, and what it held is readable again.
    (`nexus up` passes the second signal on to its worker process.)"""
    ids = fill(db_url, 3, prefix=f"hurried-{command}")
    with FakeLLMServer("anthropic") as fake:
        fake.set_default(Hang(120))
        env = claude_env(
            db_url,
            fake,
            NEXUS_WORKER_VT_S="120",
            NEXUS_WORKER_SHUTDOWN_GRACE_S="60",
            NEXUS_PORT=str(free_port()),
        )
        with nexus_process([command], env, log_path=tmp_path / "nexus.log") as proc:
            fake.wait_for_calls(3, timeout=60)
            proc.send_signal(signal.SIGTERM)

            def stopped() -> bool:
                if proc.poll() is not None:
                    return True
                # Again: two signals sent at once may arrive as one.
                proc.send_signal(signal.SIGTERM)
                return False

            wait_for(stopped, timeout=20, interval=0.5, what="a stop at the second signal")
            assert proc.returncode == 0
    ready = query(
        db_url,
        "SELECT msg_id, read_ct, vt <= clock_timestamp() FROM pgmq.q_nexus_prospect_ingestion"
        " ORDER BY msg_id",
    )
    assert ready == [(msg_id, 0, True) for msg_id in sorted(ids)]
