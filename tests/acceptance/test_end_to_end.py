"""The whole pipeline as processes: producer, workers, and Claude's API faked on loopback."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from nexus_ingest.extract.anthropic import AnthropicExtractor
from nexus_ingest.models import ChatMessage
from tests.fakes.llm_server import FakeLLMServer
from tests.helpers import (
    SEED_CONVERSATION,
    free_port,
    nexus_env,
    nexus_process,
    wait_for,
    wait_healthy,
)

SESSIONS = 200
TURNS = 5
WORKERS = 4


def claude_env(database_url: str, fake: FakeLLMServer, port: int | None = None) -> dict[str, str]:
    return nexus_env(
        database_url,
        port,
        NEXUS_EXTRACTOR="anthropic",
        ANTHROPIC_API_KEY="sk-ant-test",
        ANTHROPIC_BASE_URL=fake.base_url,
        NEXUS_RATE_LIMIT_IP_PER_MINUTE="0",
        NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0",
    )


def query(database_url: str, statement: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(statement).fetchall()  # type: ignore[arg-type]


def test_seed_conversation_through_claude(db_url: str, tmp_path: Path) -> None:
    """Seed Test 2 through `nexus up` with the Anthropic extractor gives nombre = Carlos, its
    tokens and cost recorded in the history and counted on /metrics."""
    with FakeLLMServer("anthropic") as fake:
        port = free_port()
        with nexus_process(
            ["up"], claude_env(db_url, fake, port), log_path=tmp_path / "up.log"
        ) as proc:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, proc)
            assert (
                httpx.post(f"{base}/api/nexus/producer", json=SEED_CONVERSATION).status_code == 202
            )
            select = (
                "SELECT nombre FROM prospect_data WHERE fingerprint_id = 'test-fingerprint-123'"
            )
            wait_for(lambda: query(db_url, select), timeout=15, what="the prospect row")
            metrics = httpx.get(f"{base}/metrics").text
        assert query(db_url, select) == [("Carlos",)]
        assert len(fake.calls) == 1
    history = query(
        db_url,
        "SELECT extractor, model, input_tokens, output_tokens, cache_write_tokens,"
        " cost_usd::float8 FROM prospect_extractions",
    )
    extractor, model, prompt, output, written, cost = history[0]
    assert (extractor, model) == ("anthropic", "claude-haiku-5-5")
    assert prompt > written > 0 and output > 0  # the first call writes the prompt to the cache
    assert cost == pytest.approx(fake.spent_usd())
    counted = re.search(
        r'nexus_llm_cost_usd_total\{kind="output",model="claude-haiku-5-5"\} ([0-9.e-]+)', metrics
    )
    assert counted is not None and float(counted[1]) > 0


def conversation(session: int, turns: int) -> list[dict[str, str]]:
    """A sales chat in which the prospect gives one more detail each turn."""
    said = [
        "Hola, buenas tardes",
        f"Me llamo Cliente{session:03d}",
        f"Mi email es cliente{session:03d}@example.com",
        f"Mi teléfono es +34 600 {session:03d} 123",
        "Quiero comprar el plan anual, ¿cuál es el precio?",
    ]
    messages: list[dict[str, str]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": said[turn]})
        messages.append({"role": "assistant", "content": "Perfecto, soy Sofía. ¿Algo más?"})
    return messages


def post_burst(client: httpx.Client, turn: int) -> list[int]:
    def post(session: int) -> int:
        body = {
            "messages": conversation(session, turn),
            "fingerprint": f"fp-{session}",
            "sessionId": f"s-{session}",
        }
        return client.post("/api/nexus/producer", json=body).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(post, range(SESSIONS)))


async def expected_rows() -> dict[str, dict[str, Any]]:
    """What Claude (the same fake) extracts from each session's last snapshot."""
    with FakeLLMServer("anthropic") as oracle:
        extractor = AnthropicExtractor(
            api_key="sk-ant-test",
            base_url=oracle.base_url,
            model="claude-haiku-5-5",
            timeout_s=10,
            max_tokens=1024,
        )
        rows = {}
        for session in range(SESSIONS):
            messages = [ChatMessage.model_validate(m) for m in conversation(session, TURNS)]
            rows[f"fp-{session}"] = (await extractor.extract(messages)).prospect.model_dump()
        await extractor.aclose()
    return rows


@pytest.fixture
def bursty_run(db_url: str, tmp_path: Path) -> Iterator[int]:
    """Post 200 sessions x 5 snapshots in bursts to an API with four worker processes; yield the LLM calls."""
    with FakeLLMServer("anthropic", latency_s=0.05) as fake, ExitStack() as stack:
        port = free_port()
        env = claude_env(db_url, fake, port)
        api = stack.enter_context(nexus_process(["serve"], env, log_path=tmp_path / "api.log"))
        for n in range(WORKERS):
            stack.enter_context(
                nexus_process(["worker"], env, log_path=tmp_path / f"worker{n}.log")
            )
        wait_healthy(f"http://127.0.0.1:{port}", api)
        logs = [tmp_path / f"worker{n}.log" for n in range(WORKERS)]
        wait_for(
            lambda: all("worker.started" in log.read_text() for log in logs),
            timeout=30,
            what="workers",
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for turn in range(1, TURNS + 1):
                assert set(post_burst(client, turn)) == {202}
        wait_for(lambda: _settled(db_url), timeout=60, interval=0.2, what="every snapshot handled")
        yield len(fake.calls)


def _settled(database_url: str) -> bool:
    [(queued, saved)] = query(
        database_url,
        "SELECT (SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion), (SELECT count(*) FROM prospect_data)",
    )
    return queued == 0 and saved == SESSIONS


def test_bursts_with_four_workers_end_in_the_last_snapshots_extraction(
    bursty_run: int, db_url: str
) -> None:
    """With 4 workers, every final row equals the extraction of its session's last snapshot, at fewer LLM calls."""
    calls = bursty_run
    expected = anyio.run(expected_rows)
    columns = [
        "fingerprint_id",
        "nombre",
        "email",
        "telefono",
        "nivel_interes",
        "intencion",
        "idioma",
        "resumen",
    ]
    for row in query(db_url, f"SELECT {', '.join(columns)} FROM prospect_data"):
        actual = dict(zip(columns, row, strict=True))
        want = expected[actual.pop("fingerprint_id")]
        assert actual == {k: want[k] for k in actual}
    applied = query(db_url, "SELECT count(*) FROM prospect_extractions")[0][0]
    dead = query(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq")[0][0]
    print(f"\n{SESSIONS * TURNS} snapshots, {calls} LLM calls ({calls / SESSIONS:.2f} per session)")
    assert dead == 0
    assert calls == applied, "each LLM call is recorded once in the history"
    # Snapshots of a session arrive well within the 2 s coalescing window of each other.
    assert SESSIONS <= calls < 2 * SESSIONS
