"""What LLM extractions cost, as the worker records it: every history row's tokens by kind and
money, summed per session, day and model, and counted on /metrics, checked against the billing
stand-in's own invoice."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue, store
from nexus_ingest.dashboard import data
from nexus_ingest.extract.metered import MeteredExtractor
from nexus_ingest.spend import TOKEN_KINDS
from tests.fakes.llm_server import Error, FakeLLMServer, Text
from tests.worker_kit import FAST, fetch, until

pytest_plugins = ["tests.fakes.fixtures"]  # stand_in: the billing stand-in; claude: on it

MODEL = "claude-haiku-5-5"  # the `claude` fixture's
SAID = ["Hola", "Me llamo Ana Gil", "Mi email es ana@inmo.example", "¿Precio del plan Pro?"]


async def post(pool: AsyncConnectionPool, session: str, turns: int) -> int:
    messages: list[dict[str, str]] = []
    for text in SAID[:turns]:
        messages += [{"role": "user", "content": text}, {"role": "assistant", "content": "¿Y?"}]
    body = {"sessionId": session, "fingerprint": f"fp-{session}", "messages": messages}
    return (await queue.enqueue(pool, queue.Snapshot(session, f"fp-{session}", body, {}))).msg_id


def metric(name: str, kind: str) -> float:
    return REGISTRY.get_sample_value(name, {"model": MODEL, "kind": kind}) or 0.0


def _metrics_now() -> dict[tuple[str, str], float]:
    names = ("nexus_llm_billed_tokens_total", "nexus_llm_cost_usd_total")
    return {(n, k): metric(n, k) for n in names for k in TOKEN_KINDS}


@pytest.fixture
async def billed(
    pool: AsyncConnectionPool, running: Any, claude: MeteredExtractor, stand_in: FakeLLMServer
) -> dict[tuple[str, str], float]:
    """Two chats extracted snapshot by snapshot (3 and 2 calls); the /metrics counters'
    increase meanwhile."""
    before = _metrics_now()
    await running(claude, dataclasses.replace(FAST, policy=None))
    for session, turns in (("a", 3), ("b", 2)):
        for turn in range(1, turns + 1):
            msg_id = await post(pool, session, turn)
            await until(lambda m=msg_id: _saved(pool, m), what=f"{session}#{turn} saved")
    return {key: value - before[key] for key, value in _metrics_now().items()}


async def _saved(pool: AsyncConnectionPool, msg_id: int) -> bool:
    return bool(await fetch(pool, "SELECT 1 FROM prospect_extractions WHERE msg_id = %s", msg_id))


def invoice(server: FakeLLMServer) -> dict[str, float]:
    """The stand-in's ledger, summed by kind as Nexus names them."""
    ledger = server.ledger
    return {
        "input": sum(c.usage.input_tokens for c in ledger),
        "cache_write": sum(c.usage.cache_creation_input_tokens for c in ledger),
        "cache_read": sum(c.usage.cache_read_input_tokens for c in ledger),
        "output": sum(c.usage.output_tokens for c in ledger),
        "usd": sum(c.usd for c in ledger),
    }


async def test_every_history_row_carries_its_bill(
    pool: AsyncConnectionPool, billed: Any, stand_in: FakeLLMServer
) -> None:
    """Each extraction records its cache writes and reads and its cost; together they are the
    stand-in's invoice, and each session remembers when it was extracted and on how many turns."""
    rows = await fetch(
        pool,
        "SELECT session_id, seq, cache_write_tokens, cached_tokens, batch, cost_usd::float8"
        " FROM prospect_extractions ORDER BY id",
    )
    assert [(r[0], r[1]) for r in rows] == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
    assert rows[0][2] > 0  # the first call writes the prompt prefix to the cache
    assert all(r[3] > 0 for r in rows[1:])  # every later one reads it
    assert not any(r[4] for r in rows) and all(r[5] > 0 for r in rows)
    assert sum(r[5] for r in rows) == pytest.approx(invoice(stand_in)["usd"])
    sessions = await fetch(
        pool,
        "SELECT session_id, extracted_turns, extracted_at IS NOT NULL FROM nexus.sessions"
        " ORDER BY session_id",
    )
    assert sessions == [("a", 6, True), ("b", 4, True)]


async def test_spend_is_summed_per_day_model_and_session(
    pool: AsyncConnectionPool, billed: Any, stand_in: FakeLLMServer
) -> None:
    """Today's row for the model, and each session's row on its visitor's page, add up to the
    stand-in's invoice, token kind by token kind."""
    [today] = await store.spend(pool, days=7)
    expected = invoice(stand_in)
    assert (today.model, today.extractions, today.batched) == (MODEL, 5, 0)
    for kind in TOKEN_KINDS:
        assert getattr(today, kind) == expected[kind], kind
    assert today.cost_usd == pytest.approx(expected["usd"]) and today.unpriced == 0
    detail = await data.prospect_detail(pool, "fp-a")
    assert detail is not None
    [session] = detail.spend
    assert (session.session_id, session.model, session.extractions) == ("a", MODEL, 3)
    assert 0 < session.cost_usd < today.cost_usd


async def test_metrics_count_billed_tokens_and_their_cost(
    billed: dict[tuple[str, str], float], stand_in: FakeLLMServer
) -> None:
    """The /metrics counters grew by the stand-in's invoice: tokens and dollars by kind."""
    expected = invoice(stand_in)
    for kind in TOKEN_KINDS:
        assert billed[("nexus_llm_billed_tokens_total", kind)] == expected[kind], kind
    cost = sum(billed[("nexus_llm_cost_usd_total", kind)] for kind in TOKEN_KINDS)
    assert cost == pytest.approx(expected["usd"])
    assert billed[("nexus_llm_cost_usd_total", "output")] > 0


async def test_an_answer_paid_for_before_a_failure_is_counted(
    pool: AsyncConnectionPool, running: Any, claude: MeteredExtractor, stand_in: FakeLLMServer
) -> None:
    """An unusable answer is paid for even when its re-ask fails (here a 429) and the snapshot
    is extracted on a later attempt: /metrics count both answers, as the provider bills them."""
    stand_in.script(Text("no tool call here"), Error(429, retry_after="1"))
    before = _metrics_now()
    await running(claude, dataclasses.replace(FAST, policy=None))
    msg_id = await post(pool, "paid-twice", 2)
    await until(lambda: _saved(pool, msg_id), timeout=15, what="the retried snapshot saved")
    billed = {key: value - before[key] for key, value in _metrics_now().items()}
    expected = invoice(stand_in)
    assert len(stand_in.ledger) == 2  # the unusable answer and the good one
    for kind in TOKEN_KINDS:
        assert billed[("nexus_llm_billed_tokens_total", kind)] == expected[kind], kind
    cost = sum(billed[("nexus_llm_cost_usd_total", kind)] for kind in TOKEN_KINDS)
    assert cost == pytest.approx(expected["usd"])
