"""The Anthropic extractor's caching layout and Message Batches, through the official SDK,
against the billing stand-in on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anthropic
import pytest

from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.anthropic import AnthropicExtractor
from nexus_ingest.extract.base import Extraction
from nexus_ingest.models import ChatMessage
from nexus_ingest.spend import DEFAULT_PRICES, extraction_cost
from tests.fakes.llm_server import Error, FakeLLMServer, Text

if TYPE_CHECKING:
    from tests.fakes.fixtures import LoopbackGuard, ManualClock

pytest_plugins = ["tests.fakes.fixtures"]

MODEL = "claude-haiku-5-5"
MINIMUM = 4096


@pytest.fixture(autouse=True)
def _stay_on_loopback(loopback_only: LoopbackGuard) -> LoopbackGuard:
    return loopback_only


def claude_on(server: FakeLLMServer, *, examples: bool = True) -> AnthropicExtractor:
    return AnthropicExtractor(
        "test-key", server.base_url, MODEL, 5.0, 512, prompt_examples=examples
    )


@pytest.fixture
async def claude(stand_in: FakeLLMServer) -> AsyncIterator[AnthropicExtractor]:
    extractor = claude_on(stand_in)
    yield extractor
    await extractor.aclose()


def chat(turns: int, session: str = "a") -> list[ChatMessage]:
    """A chat of `turns` turns, user and assistant in turn, different per session."""
    return [
        ChatMessage(
            role="user" if i % 2 == 0 else "assistant",
            content=f"[{session}] turno {i}: me interesa el plan de hosting para mi tienda",
        )
        for i in range(turns)
    ]


def cached_part(extraction: Extraction) -> int:
    """The prompt tokens up to the last breakpoint (all but the closing instruction)."""
    return extraction.input_tokens - extraction.uncached_input_tokens


async def test_the_prefix_reaches_the_minimum_and_every_chat_shares_it(
    claude: AnthropicExtractor,
) -> None:
    """The first call writes at least the minimum; another chat's first call reads it."""
    first = await claude.extract(chat(1, "a"))
    other = await claude.extract(chat(1, "b"))
    assert first.cache_write_tokens >= MINIMUM
    assert first.cached_tokens == 0
    assert other.cached_tokens >= MINIMUM
    assert other.cache_write_tokens == cached_part(other) - other.cached_tokens > 0


async def test_a_second_snapshot_reads_the_first_snapshots_transcript(
    claude: AnthropicExtractor,
) -> None:
    """The next snapshot of a chat reads everything the previous one cached and writes only
    its new turns."""
    earlier = await claude.extract(chat(3))
    later = await claude.extract(chat(5))
    assert later.cached_tokens == cached_part(earlier)
    assert 0 < later.cache_write_tokens < 100
    assert later.uncached_input_tokens == earlier.uncached_input_tokens


async def test_a_snapshot_many_turns_later_still_reads_the_cache(
    claude: AnthropicExtractor,
) -> None:
    """35 turns after the last extraction, beyond the 20-block lookback of the last turn, the
    grid breakpoints still reach the earlier entry."""
    earlier = await claude.extract(chat(5))
    later = await claude.extract(chat(40))
    assert later.cached_tokens == cached_part(earlier)


async def test_nothing_is_cached_under_the_minimum(stand_in: FakeLLMServer) -> None:
    """Without the worked examples the prefix is under 4,096 tokens: no write, no read."""
    extractor = claude_on(stand_in, examples=False)
    extractions = [await extractor.extract(chat(3)) for _ in range(2)]
    await extractor.aclose()
    assert [(e.cache_write_tokens, e.cached_tokens) for e in extractions] == [(0, 0), (0, 0)]
    assert extractions[0].input_tokens < MINIMUM


async def test_the_cache_expires_after_five_idle_minutes(
    claude: AnthropicExtractor, clock: ManualClock
) -> None:
    """A snapshot 4 minutes later reads the cache; 6 idle minutes after that it writes again."""
    await claude.extract(chat(3))
    clock.now += 240
    warm = await claude.extract(chat(4))
    clock.now += 360
    cold = await claude.extract(chat(5))
    assert warm.cached_tokens > MINIMUM
    assert (cold.cached_tokens, cold.cache_write_tokens) == (0, cached_part(cold))


async def test_the_cost_function_agrees_with_the_stand_ins_invoice(
    claude: AnthropicExtractor, stand_in: FakeLLMServer
) -> None:
    """Summed over several snapshots, our cost at the default prices is the stand-in's bill."""
    extractions = [await claude.extract(chat(turns)) for turns in (1, 2, 4, 4, 7)]
    costs = [extraction_cost(extraction, DEFAULT_PRICES) for extraction in extractions]
    assert sum(cost.total for cost in costs if cost) == pytest.approx(stand_in.spent_usd())
    assert len(stand_in.ledger) == 5


async def test_a_fifth_breakpoint_is_a_400_through_the_sdk(stand_in: FakeLLMServer) -> None:
    """The stand-in refuses more than 4 cache_control blocks, as the API does."""
    client = anthropic.AsyncAnthropic(api_key="k", base_url=stand_in.base_url, max_retries=0)
    marked: list[Any] = [
        {"type": "text", "text": f"block {i}", "cache_control": {"type": "ephemeral"}}
        for i in range(5)
    ]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4"):
        await client.messages.create(
            model=MODEL, max_tokens=10, messages=[{"role": "user", "content": marked}]
        )
    await client.close()


async def test_a_batch_comes_back_as_extractions_at_half_price(
    claude: AnthropicExtractor, stand_in: FakeLLMServer, clock: ManualClock
) -> None:
    """Snapshots keyed by message id go in one batch; once it ends each comes back as a
    batch Extraction, billed at half the price of the same direct call."""
    snapshots = {"101": chat(2, "x"), "102": chat(3, "y"), "103": chat(4, "z")}
    batch_id = await claude.submit_batch(snapshots)
    assert not (await claude.batch_progress(batch_id)).ended
    clock.now += 61
    progress = await claude.batch_progress(batch_id)
    results = await claude.batch_results(batch_id)
    assert (progress.ended, progress.succeeded, progress.errored) == (True, 3, 0)
    assert set(results) == set(snapshots)
    extractions = [result for result in results.values() if isinstance(result, Extraction)]
    assert len(extractions) == 3 and all(e.batch for e in extractions)
    assert all(charge.batch for charge in stand_in.ledger)
    clock.now += 1000  # cold again, so the direct call is billed like the first batch entry
    direct = await claude.extract(chat(2, "x"))
    batched = results["101"]
    assert isinstance(batched, Extraction)
    full, half = extraction_cost(direct, DEFAULT_PRICES), extraction_cost(batched, DEFAULT_PRICES)
    assert full is not None and half is not None
    assert half.total == pytest.approx(full.total / 2)


async def test_batch_failures_become_retry_later_or_permanent(
    claude: AnthropicExtractor, stand_in: FakeLLMServer, clock: ManualClock
) -> None:
    """An overloaded entry retries later; a refused one or an unusable answer is Permanent."""
    stand_in.script(Error(529), Error(400, message="bad"), Text("no tool call"))
    batch_id = await claude.submit_batch({"1": chat(1), "2": chat(2), "3": chat(3)})
    clock.now += 61
    results = await claude.batch_results(batch_id)
    assert isinstance(results["1"], RetryLater)
    assert isinstance(results["2"], Permanent) and "invalid_request_error" in str(results["2"])
    assert isinstance(results["3"], Permanent) and "record_prospect" in str(results["3"])


async def test_a_canceled_batch_comes_back_to_be_retried(
    claude: AnthropicExtractor, stand_in: FakeLLMServer
) -> None:
    """Entries of a batch canceled before it ended are RetryLater, and nothing was billed."""
    batch_id = await claude.submit_batch({"7": chat(2)})
    await claude.cancel_batch(batch_id)
    results = await claude.batch_results(batch_id)
    assert isinstance(results["7"], RetryLater) and "canceled" in str(results["7"])
    assert stand_in.ledger == []


async def test_a_batch_key_that_is_not_a_custom_id_is_refused(
    claude: AnthropicExtractor, stand_in: FakeLLMServer
) -> None:
    """custom_id allows letters, digits, - and _ only: the stand-in answers 400 (Permanent)."""
    with pytest.raises(Permanent, match="custom_id"):
        await claude.submit_batch({"msg 1": chat(1)})
    assert stand_in.ledger == []
