"""The extraction policy applied by the real worker: Claude's API faked on loopback (the billing
stand-in), a real Postgres, short policy settings or a clock moved by hand."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.extract.metered import MeteredExtractor
from nexus_ingest.policy import ExtractionPolicy
from nexus_ingest.worker import WorkerConfig
from tests.fakes.llm_server import ANTHROPIC_PATH, FakeLLMServer
from tests.worker_kit import FAST, fetch, queue_length, until

pytest_plugins = ["tests.fakes.fixtures"]  # stand_in: the billing stand-in; claude: on it

CALM = ["Hola, buenas tardes", "Estoy mirando vuestro CRM", "Somos una inmobiliaria"]


def paced(**policy: Any) -> WorkerConfig:
    """The test worker's config with an extraction policy."""
    return dataclasses.replace(FAST, policy=ExtractionPolicy(**policy))


def chat(said: list[str]) -> list[dict[str, str]]:
    """A chat in which the visitor said `said`, each turn answered."""
    turns: list[dict[str, str]] = []
    for text in said:
        turns += [{"role": "user", "content": text}, {"role": "assistant", "content": "¿Y?"}]
    return turns


async def post(pool: AsyncConnectionPool, session: str, said: list[str]) -> int:
    """Queue a snapshot as the producer does (numbered, stamped with its receipt time)."""
    body = {"sessionId": session, "fingerprint": f"fp-{session}", "messages": chat(said)}
    return (await queue.enqueue(pool, queue.Snapshot(session, f"fp-{session}", body, {}))).msg_id


def direct_calls(server: FakeLLMServer) -> list[Any]:
    return [call for call in server.calls if call.path == ANTHROPIC_PATH]


async def events(pool: AsyncConnectionPool, msg_id: int) -> list[str]:
    rows = await fetch(
        pool, "SELECT event FROM nexus.message_events WHERE msg_id = %s ORDER BY id", msg_id
    )
    return [event for (event,) in rows]


async def saved_ids(pool: AsyncConnectionPool) -> set[int]:
    return {m for (m,) in await fetch(pool, "SELECT msg_id FROM prospect_extractions")}


async def empty(pool: AsyncConnectionPool) -> bool:
    return await queue_length(pool) == 0


async def test_a_paced_chat_costs_fewer_calls_and_its_last_snapshot_is_extracted(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
) -> None:
    """Two chats typing a turn every 0.25 s get at most half as many calls as snapshots, and
    each one's last snapshot is extracted and merged."""
    await running(claude, paced(first_within_s=0.4, interval_s=1.2, quiet_s=0.8))
    said = [*CALM, "Tenemos 10 agentes", "Usamos Excel", "¿Tenéis app?", "Gracias", "Adiós"]
    last: dict[str, int] = {}
    for turn in range(1, len(said) + 1):
        for session in ("p1", "p2"):
            last[session] = await post(pool, session, said[:turn])
        await asyncio.sleep(0.25)
    await until(lambda: empty(pool), timeout=20, what="every snapshot settled")
    calls = len(direct_calls(stand_in))
    assert 2 <= calls <= len(said)  # at most half the snapshots (3 a chat expected)
    assert set(last.values()) <= await saved_ids(pool)
    assert await fetch(pool, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq") == [(0,)]
    resumen = await fetch(pool, "SELECT resumen FROM prospect_data ORDER BY fingerprint_id")
    assert all("Adiós" in text for (text,) in resumen)


@dataclasses.dataclass
class MovableClock:
    """The time the policy judges by: the real time plus an offset moved by hand."""

    offset: timedelta = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


async def test_deferrals_never_count_as_attempts(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
) -> None:
    """A snapshot deferred many more times than the attempts allowed is never dead-lettered:
    each deferral gives its read back, and it is extracted once its time comes."""
    clock = MovableClock(offset=-timedelta(hours=1))  # the policy's time lags: always too early
    config = dataclasses.replace(paced(first_within_s=0.05, hot_at_once=False), policy_clock=clock)
    msg_id = await post(pool, "waits", CALM)
    await running(claude, config)

    async def deferred_often() -> bool:
        return (await events(pool, msg_id)).count("deferred") > 3 * FAST.retry.max_attempts

    await until(deferred_often, timeout=20, what="many deferrals")
    [(reads,)] = await fetch(
        pool, "SELECT read_ct FROM pgmq.q_nexus_prospect_ingestion WHERE msg_id = %s", msg_id
    )
    assert reads <= 1 and direct_calls(stand_in) == []
    clock.offset = timedelta(0)
    await until(lambda: empty(pool), timeout=10, what="the extraction")
    assert await saved_ids(pool) == {msg_id}
    assert "dead_lettered" not in await events(pool, msg_id)
    assert len(direct_calls(stand_in)) == 1


async def test_a_newer_snapshot_supersedes_a_deferred_one(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
) -> None:
    """A first snapshot held back for a second is replaced by a newer, hot one extracted at
    once; when the deferred one comes back it is acknowledged without a call."""
    await running(claude, paced(first_within_s=1.0))
    first = await post(pool, "tab", CALM[:1])
    await until(lambda: _has(pool, first, "deferred"), what="the first deferral")
    second = await post(pool, "tab", [*CALM[:1], "Mi email es ana@inmo.example"])
    await until(lambda: _has(pool, first, "superseded"), timeout=10, what="superseding")
    await until(lambda: empty(pool), what="an empty queue")
    calls = direct_calls(stand_in)
    assert len(calls) == 1 and "ana@inmo.example" in str(calls[0].body["messages"])
    assert await saved_ids(pool) == {second}
    assert await events(pool, first) == ["deferred", "superseded"]


async def _has(pool: AsyncConnectionPool, msg_id: int, event: str) -> bool:
    return event in await events(pool, msg_id)


async def test_a_hot_snapshot_is_extracted_at_once(
    pool: AsyncConnectionPool,
    running: Any,
    claude: MeteredExtractor,
    stand_in: FakeLLMServer,
) -> None:
    """With first extractions held back 30 s, a chat that gives an email is extracted at once
    while a calm one waits."""
    await running(claude, paced(first_within_s=30, interval_s=30, quiet_s=30))
    calm = await post(pool, "calm", CALM)
    hot = await post(pool, "hot", [*CALM[:1], "Quiero contratar, mi email es leo@inmo.example"])
    await until(lambda: saved_ids(pool), timeout=10, what="the hot chat's row")
    await until(lambda: _has(pool, calm, "deferred"), what="the calm chat's deferral")
    assert await saved_ids(pool) == {hot}
    assert len(direct_calls(stand_in)) == 1
    [(reason,)] = await fetch(
        pool, "SELECT detail ->> 'reason' FROM nexus.message_events WHERE msg_id = %s", calm
    )
    assert reason == "first"
