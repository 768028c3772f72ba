"""Claude through the official `anthropic` SDK: forced tool use, one re-ask, mapped errors."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import anthropic
from anthropic.types import (
    Message,
    MessageParam,
    ToolChoiceParam,
    ToolParam,
    ToolUseBlock,
)

from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.base import Extraction
from nexus_ingest.extract.clamp import clamp_prospect, error_for_status, retry_after_seconds
from nexus_ingest.extract.prompt import (
    SYSTEM_PROMPT,
    TOOL_DESCRIPTION,
    TOOL_NAME,
    reask_message,
    render_conversation,
    tool_input_schema,
)
from nexus_ingest.extract.reask import TokenUsage, ask_with_one_reask, token_count
from nexus_ingest.models import ChatMessage, Prospect

# Stop reasons after which the tool input is cut short or absent, whatever the blocks say.
_UNUSABLE_STOPS = frozenset({"max_tokens", "refusal", "model_context_window_exceeded"})


def _usage(message: Message) -> TokenUsage:
    # Counts are read defensively: a proxy or compatible server may leave them out or mangle them.
    usage = getattr(message, "usage", None)
    cache_read = token_count(getattr(usage, "cache_read_input_tokens", None))
    cache_write = token_count(getattr(usage, "cache_creation_input_tokens", None))
    # Anthropic's input_tokens leaves out cache reads and writes; count them in so that
    # input_tokens means the whole prompt for every extractor and cached is a share of it.
    whole_prompt = token_count(getattr(usage, "input_tokens", None)) + cache_write + cache_read
    return token_count(whole_prompt), token_count(getattr(usage, "output_tokens", None)), cache_read


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
        phone_region: str | None = None,
    ) -> None:
        # The SDK would retry 429/5xx twice on its own, honouring retry-after without a cap;
        # the worker owns retries (backoff, attempt limit, dead-letter queue) instead.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0
        )
        self._model = model
        self._max_tokens = max_tokens
        self._phone_region = phone_region
        self._tool: ToolParam = {
            "name": TOOL_NAME,
            "description": TOOL_DESCRIPTION,
            "input_schema": tool_input_schema(),
        }
        self._tool_choice: ToolChoiceParam = {
            "type": "tool",
            "name": TOOL_NAME,
            "disable_parallel_tool_use": True,
        }

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        """Ask once, re-ask once if the answer is unusable, else raise `Permanent`."""
        turns: list[MessageParam] = [{"role": "user", "content": render_conversation(messages)}]
        return await ask_with_one_reask(
            self.name,
            turns,
            self._create,
            partial(prospect_from_message, phone_region=self._phone_region),
            reask_turns,
            _usage,
            lambda m: m.model,
        )

    async def _create(self, turns: list[MessageParam]) -> Message:
        try:
            return await self._client.messages.create(
                model=self._model,
                max_tokens=self._max_tokens,
                system=[
                    {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
                ],
                tools=[self._tool],
                tool_choice=self._tool_choice,
                messages=turns,
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

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()


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
