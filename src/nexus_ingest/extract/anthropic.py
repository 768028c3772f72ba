"""Claude through the official `anthropic` SDK: forced tool use, one re-ask, mapped errors.

Requests are laid out for prompt caching: the tool and system prompt (padded with worked
examples up to the model's minimum cacheable length) end in one breakpoint, and the transcript,
one content block per turn, carries the others, so each new snapshot of a chat reads the turns
an earlier snapshot already paid for. A backlog can go through the Message Batches API instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Mapping, Sequence
from functools import partial
from typing import TypeVar

import anthropic
from anthropic.types import (
    CacheControlEphemeralParam,
    Message,
    MessageParam,
    TextBlockParam,
    ToolChoiceParam,
    ToolParam,
    ToolUseBlock,
)
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.messages import MessageBatchIndividualResponse
from anthropic.types.messages.batch_create_params import Request

from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.base import BatchProgress, BatchResult, Extraction, carry_spend
from nexus_ingest.extract.caching import (
    estimate_tokens,
    examples_to_reach,
    min_cacheable_tokens,
    transcript_breakpoints,
)
from nexus_ingest.extract.clamp import clamp_prospect, error_for_status, retry_after_seconds
from nexus_ingest.extract.examples import WORKED_EXAMPLES, examples_text, render_example
from nexus_ingest.extract.prompt import (
    CONVERSATION_CLOSE,
    SYSTEM_PROMPT,
    TOOL_DESCRIPTION,
    TOOL_NAME,
    reask_message,
    tool_input_schema,
    transcript_blocks,
)
from nexus_ingest.extract.reask import TokenUsage, ask_with_one_reask, token_count, within
from nexus_ingest.models import ChatMessage, Prospect

# Stop reasons after which the tool input is cut short or absent, whatever the blocks say.
_UNUSABLE_STOPS = frozenset({"max_tokens", "refusal", "model_context_window_exceeded"})
_BREAKPOINT: CacheControlEphemeralParam = {"type": "ephemeral"}
# Error types of a failed request inside a batch, as the HTTP status the same failure gets.
_BATCH_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

T = TypeVar("T")


def _usage(message: Message) -> TokenUsage:
    # Counts are read defensively: a proxy or compatible server may leave them out or mangle them.
    usage = getattr(message, "usage", None)
    cache_read = token_count(getattr(usage, "cache_read_input_tokens", None))
    cache_write = token_count(getattr(usage, "cache_creation_input_tokens", None))
    # Anthropic's input_tokens leaves out cache reads and writes; count them in so that
    # input_tokens means the whole prompt for every extractor and cached is a share of it.
    whole_prompt = token_count(getattr(usage, "input_tokens", None)) + cache_write + cache_read
    output = token_count(getattr(usage, "output_tokens", None))
    return token_count(whole_prompt), output, cache_read, cache_write


def record_tool() -> ToolParam:
    """The `record_prospect` tool definition."""
    return {"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": tool_input_schema()}


def system_blocks(model: str, tool: ToolParam, *, examples: bool) -> list[TextBlockParam]:
    """The system prompt, padded with worked examples until the tool and system prompt reach
    `model`'s minimum cacheable length, its last block a cache breakpoint."""
    blocks: list[TextBlockParam] = [{"type": "text", "text": SYSTEM_PROMPT}]
    if examples:
        base = estimate_tokens(json.dumps(tool)) + estimate_tokens(SYSTEM_PROMPT)
        sizes = [estimate_tokens(render_example(example)) for example in WORKED_EXAMPLES]
        count = examples_to_reach(min_cacheable_tokens(model), base, sizes)
        if count:
            blocks.append({"type": "text", "text": examples_text(count)})
    blocks[-1]["cache_control"] = _BREAKPOINT
    return blocks


def transcript_content(messages: Sequence[ChatMessage]) -> list[TextBlockParam]:
    """The user turn: a text block per chat turn, breakpoints on the last turn and on grid
    turns, then the closing instruction (never cached: it follows the last breakpoint)."""
    pieces = transcript_blocks(messages)
    blocks: list[TextBlockParam] = [{"type": "text", "text": piece} for piece in pieces]
    for index in transcript_breakpoints(len(blocks)):
        blocks[index]["cache_control"] = _BREAKPOINT
    return [*blocks, {"type": "text", "text": CONVERSATION_CLOSE}]


class AnthropicExtractor:
    """Extracts a prospect with Claude, validating the forced `record_prospect` tool call."""

    name = "anthropic"
    in_process = False

    def __init__(
        self,
        api_key: str,
        base_url: str | None,
        model: str,
        timeout_s: float,
        max_tokens: int,
        *,
        prompt_examples: bool = True,
        phone_region: str | None = None,
    ) -> None:
        # The SDK would retry 429/5xx twice on its own, honouring retry-after without a cap;
        # the worker owns retries (backoff, attempt limit, dead-letter queue) instead.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        self._timeout_s = timeout_s
        self._model = model
        self._max_tokens = max_tokens
        self._tool = record_tool()
        self._system = system_blocks(model, self._tool, examples=prompt_examples)
        self._phone_region = phone_region
        self._tool_choice: ToolChoiceParam = {
            "type": "tool",
            "name": TOOL_NAME,
            "disable_parallel_tool_use": True,
        }
        self._submitted: dict[str, float] = {}

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        """Ask once, re-ask once if the answer is unusable, else raise `Permanent`."""
        return await ask_with_one_reask(
            self.name,
            _first_turns(messages),
            self._create,
            partial(prospect_from_message, phone_region=self._phone_region),
            reask_turns,
            _usage,
            lambda m: m.model,
        )

    def request_params(self, turns: list[MessageParam]) -> MessageCreateParamsNonStreaming:
        """Everything a Messages API request sends, for a direct call or a batch entry."""
        return {
            "model": self._model,
            "max_tokens": self._max_tokens,
            "system": self._system,
            "tools": [self._tool],
            "tool_choice": self._tool_choice,
            "messages": turns,
        }

    async def _create(self, turns: list[MessageParam]) -> Message:
        try:
            return await within(
                self._timeout_s, self._client.messages.create(**self.request_params(turns))
            )
        except anthropic.APIStatusError as exc:
            if not self._rejects_forced_tool(exc):
                delay = retry_after_seconds(exc.response.headers)
                raise error_for_status(exc.status_code, delay, _describe(exc)) from exc
        except anthropic.APIError as exc:
            # Timeouts, refused or dropped connections, and unreadable bodies: all passing.
            raise RetryLater(f"anthropic request failed: {exc.message}") from exc
        # Some models (those that always think) refuse a forced tool. Let them choose, for the
        # rest of this process: blocks are read by type and a text-only answer gets the re-ask.
        self._tool_choice = {"type": "auto", "disable_parallel_tool_use": True}
        return await self._create(turns)

    def _rejects_forced_tool(self, exc: anthropic.APIStatusError) -> bool:
        forced = self._tool_choice["type"] == "tool"
        return forced and exc.status_code == 400 and "tool_choice" in (exc.api_message or "")

    async def submit_batch(self, snapshots: Mapping[str, Sequence[ChatMessage]]) -> str:
        """Send many snapshots as one Message Batch (half price, answered within 24 h); each
        key (a message id) must match ``[a-zA-Z0-9_-]{1,64}`` and comes back with its result.
        Returns the batch id."""
        requests: list[Request] = [
            {"custom_id": key, "params": self.request_params(_first_turns(messages))}
            for key, messages in snapshots.items()
        ]
        batch = await _mapped(self._client.messages.batches.create(requests=requests))
        self._submitted[batch.id] = time.perf_counter()
        return batch.id

    async def batch_progress(self, batch_id: str) -> BatchProgress:
        """Whether the batch has ended, and its request counts."""
        batch = await _mapped(self._client.messages.batches.retrieve(batch_id), batch_id)
        counts = batch.request_counts
        return BatchProgress(
            batch.processing_status == "ended", counts.succeeded, counts.errored, counts.processing
        )

    async def batch_results(self, batch_id: str) -> dict[str, BatchResult]:
        """Each snapshot's Extraction (billed as a batch), or the error it should be settled
        with: `RetryLater` for passing failures, `Permanent` for a refused request or an
        unusable answer (which a direct `extract`, with its one re-ask, may still rescue)."""
        decoder = await _mapped(self._client.messages.batches.results(batch_id), batch_id)
        started = self._submitted.pop(batch_id, None)
        waited_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        return {
            line.custom_id: batch_result(self.name, line, waited_ms, self._phone_region)
            async for line in decoder
        }

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the API to stop a batch; requests not yet answered come back canceled."""
        await _mapped(self._client.messages.batches.cancel(batch_id))

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()


def _first_turns(messages: Sequence[ChatMessage]) -> list[MessageParam]:
    return [{"role": "user", "content": transcript_content(messages)}]


async def _mapped(call: Awaitable[T], batch_id: str | None = None) -> T:
    """A batch endpoint's answer, its failures mapped like a message request's; but a 404 about
    a batch we submitted means the API no longer knows it (expired, deleted): that is no setting
    to fix and wait for, and its snapshots must come back."""
    try:
        return await call
    except anthropic.NotFoundError as exc:
        if batch_id is None:
            raise error_for_status(exc.status_code, None, _describe(exc)) from exc
        raise Permanent(f"batch {batch_id} is unknown to the API: {_describe(exc)}") from exc
    except anthropic.APIStatusError as exc:
        delay = retry_after_seconds(exc.response.headers)
        raise error_for_status(exc.status_code, delay, _describe(exc)) from exc
    except anthropic.APIError as exc:
        raise RetryLater(f"anthropic batch request failed: {exc.message}") from exc


def batch_result(
    name: str,
    line: MessageBatchIndividualResponse,
    waited_ms: float,
    phone_region: str | None = None,
) -> BatchResult:
    """One line of a batch's results as an Extraction or the error that settles it."""
    result = line.result
    if result.type == "succeeded":
        prompt_tokens, output, cache_read, cache_write = _usage(result.message)
        answered = Extraction(
            prospect=Prospect(),
            extractor=name,
            model=result.message.model,
            input_tokens=prompt_tokens,
            output_tokens=output,
            cached_tokens=cache_read,
            cache_write_tokens=cache_write,
            latency_ms=waited_ms,
            batch=True,
        )
        try:
            prospect = prospect_from_message(result.message, phone_region)
        except Permanent as exc:  # billed all the same
            carry_spend(exc, answered)
            return exc
        return answered._replace(prospect=prospect)
    if result.type == "errored":
        error = result.error.error
        status = _BATCH_ERROR_STATUS.get(error.type, 500)
        return error_for_status(status, None, f"{error.type}: {error.message} (in a batch)")
    return RetryLater(f"the batch request was {result.type} before it was answered")


def prospect_from_message(message: Message, phone_region: str | None = None) -> Prospect:
    """The clamped prospect in the `record_prospect` call, or `Permanent` saying what was wrong."""
    if message.stop_reason in _UNUSABLE_STOPS:
        raise Permanent(f"the answer stopped early (stop_reason {message.stop_reason})")
    block = find_tool_use(message)
    if block is None:
        raise Permanent(f"the answer did not call the {TOOL_NAME} tool")
    return clamp_prospect(block.input, phone_region)


def find_tool_use(message: Message) -> ToolUseBlock | None:
    """The `record_prospect` call among the blocks (thinking or text blocks may come first)."""
    for block in message.content:
        if block.type == "tool_use" and block.name == TOOL_NAME:
            return block
    return None


def reask_turns(message: Message, problem: str) -> list[MessageParam]:
    """The bad answer and a user turn saying what was wrong with it."""
    if not message.content:
        # The API refuses an empty assistant turn; consecutive user turns are merged instead.
        return [{"role": "user", "content": reask_message(problem)}]
    block = find_tool_use(message)
    if block is None:
        return [message.to_param(), {"role": "user", "content": reask_message(problem)}]
    # A tool_use turn must be answered by its tool_result, so the complaint goes there.
    result: MessageParam = {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": block.id,
                "is_error": True,
                "content": reask_message(problem),
            }
        ],
    }
    return [message.to_param(), result]


def _describe(exc: anthropic.APIStatusError) -> str:
    return f"{exc.type or 'error'}: {exc.api_message or exc.message} (request-id {exc.request_id})"
