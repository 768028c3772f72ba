"""Poison: no body, model answer or error text can stop, block or loop the pipeline, and a
forgotten visitor stays forgotten whatever is in flight."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.errors import Permanent
from nexus_ingest.extract.base import Extraction
from nexus_ingest.models import ChatMessage, Prospect
from nexus_ingest.retry import RetryPolicy
from nexus_ingest.store import forget_prospect
from nexus_ingest.worker import WorkerConfig
from tests.helpers import NEXUS, free_port, nexus_env, nexus_process, wait_for, wait_healthy
from tests.worker_kit import FAST, RecordingExtractor, fetch, queue_length, send, until

QUICK_RETRY = WorkerConfig(
    concurrency=4,
    batch_size=20,
    vt_s=2,
    poll_interval_s=0.05,
    shutdown_grace_s=5,
    retry=RetryPolicy(max_attempts=3, base_s=1.0, cap_s=1.0),
)


def _raw_send(url: str, body: str) -> int:
    """A message put on the queue by hand, as anyone with SQL access could."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pgmq.send('nexus_prospect_ingestion', %s::jsonb)",
            (body,),  # type: ignore[arg-type]
        ).fetchone()
    assert row is not None
    return int(row[0])


def _scalar(url: str, statement: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(statement).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


HEALTHY_TURN = "Me llamo Ana y quiero precios de hosting"
POISON_BODIES = [
    '{"n": 1e400}',  # a number no float holds
    '{"sessionId": "s", "fingerprint": "f", "messages": [{"role": "user", "content": "x"}],'
    ' "seq": 10000000000}',  # a snapshot number no integer column holds
    '"just a string"',
    "[1, 2, 3]",
    '{"sessionId": "s2", "fingerprint": "f2", "messages": [{"role": "user", "content": "y"}],'
    ' "seq": 1e400}',
    "[" * 900 + "]" * 900,  # deeper than a JSON parser's recursion limit
]


def test_raw_poison_bodies_among_healthy_ones_stop_nothing(db_url: str, tmp_path: Path) -> None:
    """Undecodable raw bodies are dead-lettered one by one; the healthy messages queued with them
    are saved, and the worker process keeps running."""
    healthy = []
    for i in range(5):
        sid = f"healthy-{i}"
        body = {
            "sessionId": sid,
            "fingerprint": sid,
            "messages": [{"role": "user", "content": HEALTHY_TURN}],
        }
        healthy.append(_raw_send(db_url, json.dumps(body)))
        _raw_send(db_url, POISON_BODIES[i % len(POISON_BODIES)])
    _raw_send(db_url, POISON_BODIES[-1])
    env = nexus_env(db_url, NEXUS_EXTRACTOR="rules")
    with nexus_process(["worker"], env, log_path=tmp_path / "worker.log") as proc:
        wait_for(
            lambda: _scalar(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion") == 0,
            timeout=30,
            what="the queue to empty",
        )
        assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-2000:]
    assert _scalar(db_url, "SELECT count(*) FROM prospect_data WHERE nombre = 'Ana'") == 5
    dead = _scalar(
        db_url,
        "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq"
        " WHERE message -> 'error' ->> 'reason' IS NOT NULL",
    )
    assert dead == 6
    # The dead letter keeps the body as it was queued, the number no float holds included.
    kept = _scalar(
        db_url,
        "SELECT (message -> 'original' ->> 'n')::numeric = 1e400"
        " FROM pgmq.q_nexus_prospect_ingestion_dlq WHERE message -> 'original' ? 'n'",
    )
    assert kept is True
    _every_view_reads_the_dead_letters(db_url, healthy_ids=healthy)


def _every_view_reads_the_dead_letters(db_url: str, *, healthy_ids: list[int]) -> None:
    """`nexus dlq list`, `nexus trace` and the dashboard's dead-letter page read such bodies."""
    env = nexus_env(db_url, NEXUS_EXTRACTOR="rules", NEXUS_ADMIN_TOKEN="admin-token")
    listed = subprocess.run(
        [NEXUS, "dlq", "list", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 6
    poison_id = _scalar(
        db_url,
        "SELECT (message ->> 'originalMsgId')::bigint FROM pgmq.q_nexus_prospect_ingestion_dlq"
        " WHERE message -> 'original' ? 'n'",
    )
    traced = subprocess.run(
        [NEXUS, "trace", str(poison_id)], env=env, capture_output=True, text=True, timeout=60
    )
    assert traced.returncode == 0, traced.stderr
    port = free_port()
    with nexus_process(["serve"], {**env, "NEXUS_PORT": str(port)}) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        page = httpx.get(
            f"{base}/dashboard/dead-letters", headers={"Authorization": "Bearer admin-token"}
        )
    assert page.status_code == 200


class ScriptedExtractor(RecordingExtractor):
    """Answers per session: a value for `nombre` from `answers`, else the recorded name."""

    def __init__(self, answers: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers = answers
        self.usage: dict[str, Any] = {}

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        extraction = await super().extract(messages)
        session = messages[0].content
        if session in self.answers:
            return Extraction(
                Prospect(nombre=self.answers[session]), extractor=self.name, **self.usage
            )
        return extraction


async def test_a_nul_in_an_answer_among_healthy_ones_is_saved_once(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A model answer holding a NUL character is cleaned and saved with its batch; no message is
    extracted twice."""
    for i in range(20):
        await send(pool, f"s{i}", f"Name{i}")
    extractor = ScriptedExtractor({"s3": "Ro\x00sa", "s11": "\x00"})
    await running(extractor, QUICK_RETRY)
    await until(lambda: _is_zero(queue_length(pool)), timeout=20, what="empty queue")
    names = dict(await fetch(pool, "SELECT fingerprint_id, nombre FROM prospect_data"))
    assert len(names) == 20 and names["fp-s3"] == "Rosa" and names["fp-s0"] == "Name0"
    assert len(extractor.calls) == 20


async def test_out_of_range_usage_is_bounded_not_fatal(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """Token counts no integer column holds (1e10, negative) are bounded, and the extraction saved."""
    for i in range(5):
        await send(pool, f"u{i}", f"Name{i}")
    extractor = ScriptedExtractor({"u2": "Luis"})
    extractor.usage = {"input_tokens": 10**10, "output_tokens": -5, "cached_tokens": 2**40}
    await running(extractor, QUICK_RETRY)
    await until(lambda: _is_zero(queue_length(pool)), timeout=20, what="empty queue")
    rows = await fetch(
        pool,
        "SELECT input_tokens, output_tokens FROM prospect_extractions WHERE fingerprint_id = 'fp-u2'",
    )
    assert rows == [(2**31 - 1, 0)]
    assert len(extractor.calls) == 5


async def test_an_item_that_cannot_be_saved_is_dead_lettered_alone(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A save the database refuses for one item (here a constraint the owner added) dead-letters
    that item alone, with its extraction kept; the rest of its batch is saved in the same pass,
    and a replay after the fix saves it without asking the model again."""
    async with pool.connection() as conn:
        await conn.execute(
            "ALTER TABLE prospect_data ADD CONSTRAINT no_boom CHECK (nombre IS DISTINCT FROM 'Boom')"
        )
    for i in range(12):
        await send(pool, f"b{i}", "Boom" if i == 7 else f"Name{i}")
    extractor = RecordingExtractor()
    await running(extractor, QUICK_RETRY)
    await until(lambda: _is_zero(queue_length(pool)), timeout=20, what="empty queue")
    assert len(await fetch(pool, "SELECT 1 FROM prospect_data")) == 11
    dead = await fetch(pool, "SELECT message -> 'error' FROM pgmq.q_nexus_prospect_ingestion_dlq")
    assert len(dead) == 1 and dead[0][0]["extraction"]["prospect"]["nombre"] == "Boom"
    assert len(extractor.calls) == 12
    async with pool.connection() as conn:
        await conn.execute("ALTER TABLE prospect_data DROP CONSTRAINT no_boom")
    await queue.replay_dead_letters(pool, replay_all=True)
    await until(
        lambda: fetch(pool, "SELECT 1 FROM prospect_data WHERE nombre = 'Boom'"),
        timeout=20,
        what="the replayed row",
    )
    assert len(extractor.calls) == 12


async def test_a_failure_whose_text_holds_a_nul_is_dead_lettered_once(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A permanent failure whose reason holds a NUL (the provider's text) is dead-lettered with a
    clean reason, after one call, instead of being retried for ever."""
    await send(pool, "nul-error", "Ana")
    extractor = RecordingExtractor(failures=[Permanent("model said \x00 nothing useful")])
    await running(extractor, QUICK_RETRY)
    reasons = await until(
        lambda: fetch(
            pool, "SELECT message -> 'error' ->> 'reason' FROM pgmq.q_nexus_prospect_ingestion_dlq"
        ),
        timeout=20,
        what="the dead letter",
    )
    assert "\x00" not in reasons[0][0] and "nothing useful" in reasons[0][0]
    assert len(extractor.calls) == 1


class GatedExtractor(RecordingExtractor):
    """Holds every extraction until the test opens the gate: a slow model."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        self.in_flight.add(messages[0].content)
        await self.gate.wait()
        return await super().extract(messages)


async def test_forget_during_a_slow_extraction_stays_forgotten(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A visitor forgotten while their snapshot is being extracted does not come back when the
    model answers: no prospect row, no history, no session; later snapshots are dropped too."""
    await send(pool, "tab", "Carla", fingerprint="fp-forget")
    await send(pool, "other", "Otto")
    extractor = GatedExtractor()
    await running(extractor, FAST)
    await until(lambda: _truthy("tab" in extractor.in_flight), what="the extraction to start")
    counts = await forget_prospect(pool, "fp-forget")
    assert counts["prospect_data"] == 0
    extractor.gate.set()
    await until(lambda: _is_zero(queue_length(pool)), timeout=20, what="empty queue")
    await send(pool, "tab", "Carla again", fingerprint="fp-forget", turns=2)
    await until(lambda: _is_zero(queue_length(pool)), timeout=20, what="empty queue again")
    for table in ("public.prospect_data", "public.prospect_extractions", "nexus.sessions"):
        rows = await fetch(pool, f"SELECT 1 FROM {table} WHERE fingerprint_id = 'fp-forget'")
        assert rows == [], table
    dead = await fetch(pool, "SELECT 1 FROM pgmq.q_nexus_prospect_ingestion_dlq")
    assert dead == []
    assert await fetch(pool, "SELECT nombre FROM prospect_data") == [("Otto",)]


async def test_a_replay_after_a_newer_session_does_not_overwrite_it(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """A dead letter of an older session, replayed after the visitor came back in a new session,
    fills gaps but never overwrites what the newer session said."""
    await send(pool, "old-tab", "Viejo", fingerprint="fp-back")
    failing = RecordingExtractor(failures=[Permanent("provider down for this one")])
    await running(failing, QUICK_RETRY)
    await until(
        lambda: fetch(pool, "SELECT 1 FROM pgmq.q_nexus_prospect_ingestion_dlq"),
        what="the dead letter",
    )
    await send(pool, "new-tab", "Nuevo", fingerprint="fp-back")
    await until(
        lambda: fetch(pool, "SELECT 1 FROM prospect_data WHERE nombre = 'Nuevo'"),
        what="the newer session's row",
    )
    await queue.replay_dead_letters(pool, replay_all=True)
    await until(
        lambda: fetch(pool, "SELECT 1 FROM prospect_extractions WHERE session_id = 'old-tab'"),
        timeout=20,
        what="the replayed extraction",
    )
    rows = await fetch(
        pool, "SELECT nombre, productos_interes FROM prospect_data WHERE fingerprint_id = 'fp-back'"
    )
    assert rows == [("Nuevo", ["nuevo", "viejo"])]


async def test_a_message_read_too_often_is_dead_lettered_before_extraction(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """Past the maximum receive count a message goes to the dead-letter queue whatever made the
    earlier reads fail (crashes, lost saves), without another extraction."""
    msg_id = await send(pool, "crashy", "Ana")
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE pgmq.q_nexus_prospect_ingestion SET read_ct = 3 WHERE msg_id = %s", (msg_id,)
        )
    extractor = RecordingExtractor()
    await running(extractor, QUICK_RETRY)
    errors = await until(
        lambda: fetch(pool, "SELECT message -> 'error' FROM pgmq.q_nexus_prospect_ingestion_dlq"),
        what="the dead letter",
    )
    assert errors[0][0]["attempts"] == 4 and "read 4 times" in errors[0][0]["reason"]
    assert extractor.calls == []


@pytest.mark.parametrize("headers", ['{"x-pgmq-group": "odd", "traceparent": 5}', "7", '"x"'])
def test_a_message_with_odd_headers_stops_nothing(
    db_url: str, tmp_path: Path, headers: str
) -> None:
    """Headers that are not what the producer writes (a traceparent that is no string, headers
    that are no object), sent by hand, neither fail the reads they are in nor hold the messages
    read with them: every snapshot is saved and the queue empties."""
    sessions = ["odd", "fine-1", "fine-2", "fine-3"]
    for sid in sessions:
        body = {
            "sessionId": sid,
            "fingerprint": sid,
            "messages": [{"role": "user", "content": HEALTHY_TURN}],
        }
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pgmq.send('nexus_prospect_ingestion', %s::jsonb, %s::jsonb)",
                (json.dumps(body), headers if sid == "odd" else json.dumps({"x-pgmq-group": sid})),
            )
    env = nexus_env(db_url, NEXUS_EXTRACTOR="rules", NEXUS_WORKER_VT_S="1")
    with nexus_process(["worker"], env, log_path=tmp_path / "worker.log") as proc:
        wait_for(
            lambda: _scalar(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion") == 0,
            timeout=30,
            what="the queue to empty",
        )
        assert proc.poll() is None
    log = (tmp_path / "worker.log").read_text()
    assert "unexpected_error" not in log, log[-2000:]
    saved = _scalar(
        db_url, "SELECT array_agg(fingerprint_id ORDER BY fingerprint_id) FROM prospect_data"
    )
    assert saved == sorted(sessions)


async def test_a_forgotten_visitors_snapshots_are_not_archived(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """With NEXUS_ARCHIVE_PROCESSED, handled messages are kept in the archive, but not a
    forgotten visitor's: those arriving after `nexus forget` are dropped, superseded or not."""
    await forget_prospect(pool, "fp-gone")
    await send(pool, "gone-tab", "Carla", fingerprint="fp-gone")
    await send(pool, "gone-tab", "Carla", fingerprint="fp-gone", turns=2)
    await send(pool, "kept-tab", "Otto", fingerprint="fp-kept")
    await running(RecordingExtractor(), dataclasses.replace(FAST, archive=True))
    await until(lambda: _is_zero(queue_length(pool)), timeout=20, what="empty queue")
    archived = await fetch(
        pool,
        "SELECT message ->> 'fingerprint' FROM pgmq.a_nexus_prospect_ingestion ORDER BY msg_id",
    )
    assert archived == [("fp-kept",)]


async def test_forget_erases_a_visitors_message_events(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """`nexus trace` reads message events by session: forgetting a visitor erases those of
    their sessions, and only those."""
    for fingerprint, session in (("fp-gone", "gone-tab"), ("fp-kept", "kept-tab")):
        await send(pool, session, "Carla", fingerprint=fingerprint)
        await send(pool, session, "Carla", fingerprint=fingerprint, turns=2)
    await running(RecordingExtractor())
    await until(lambda: _is_zero(queue_length(pool)), timeout=20, what="empty queue")
    events = "SELECT DISTINCT session_id FROM nexus.message_events ORDER BY 1"
    assert await fetch(pool, events) == [("gone-tab",), ("kept-tab",)]  # each superseded one
    counts = await forget_prospect(pool, "fp-gone")
    assert counts["message_events"] == 1
    assert await fetch(pool, events) == [("kept-tab",)]


async def _is_zero(value: Any) -> bool:
    return await value == 0


async def _truthy(value: Any) -> Any:
    return value
