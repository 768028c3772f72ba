"""The ask-then-re-ask-once loop shared by the LLM extractors, whatever the provider's types."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.base import Extraction, carry_spend
from nexus_ingest.models import Prospect

Turn = TypeVar("Turn")
Response = TypeVar("Response")

ATTEMPTS = 2  # the first answer, and one re-ask telling the model what was wrong

TokenUsage = tuple[int, int, int, int]  # whole prompt, output, cache reads, cache writes
MAX_TOKENS_COUNTED = 2**31 - 1  # the history's token columns are 32-bit integers


async def within(seconds: float, call: Awaitable[Response]) -> Response:
    """`call`'s answer, or `RetryLater` once it has taken `seconds` in all. The SDKs' own timeout
    bounds each read of the connection, so an answer that trickles in a few bytes at a time
    would hold its session's lease past the visibility timeout, and be paid for again by the
    next reader."""
    try:
        async with asyncio.timeout(seconds):
            return await call
    except TimeoutError:
        raise RetryLater(f"no whole answer within {seconds:g} s") from None


def token_count(value: object) -> int:
    """A provider's token count as a whole number from 0 to `MAX_TOKENS_COUNTED`: a missing,
    negative or non-numeric count is 0, a fraction is cut, a huge count is capped. A bad count
    must never cost a good extraction."""
    if isinstance(value, str):
        value = _number(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:  # NaN
        return 0
    return int(max(0, min(MAX_TOKENS_COUNTED, value)))


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


async def ask_with_one_reask(
    name: str,
    turns: list[Turn],
    create: Callable[[list[Turn]], Awaitable[Response]],
    parse: Callable[[Response], Prospect],
    reask: Callable[[Response, str], list[Turn]],
    usage: Callable[[Response], TokenUsage],
    model: Callable[[Response], str],
) -> Extraction:
    """Ask once, re-ask once if the answer is unusable, else raise `Permanent`; tokens summed."""
    started = time.perf_counter()
    spent = [0, 0, 0, 0]
    answered_by: str | None = None  # the model of the last answer, paid for
    problem = ""

    def billed(prospect: Prospect) -> Extraction:
        return Extraction(
            prospect=prospect,
            extractor=name,
            model=answered_by,
            input_tokens=spent[0],
            output_tokens=spent[1],
            cached_tokens=spent[2],
            cache_write_tokens=spent[3],
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    try:
        for _ in range(ATTEMPTS):
            response = await create(turns)
            answered_by = model(response)
            spent = [
                token_count(total + used)
                for total, used in zip(spent, usage(response), strict=True)
            ]
            try:
                prospect = parse(response)
            except Permanent as exc:
                problem = str(exc)
                turns.extend(reask(response, problem))
                continue
            return billed(prospect)
        raise Permanent(f"unusable answer after one re-ask: {problem}")
    except Exception as exc:
        if answered_by is not None:  # an answer came, and was billed, before the failure
            carry_spend(exc, billed(Prospect()))
        raise
