"""Any OpenAI-compatible server (Ollama, vLLM, llama.cpp, OpenAI) with strict JSON-schema output."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.base import Extraction
from nexus_ingest.extract.clamp import (
    clamp_prospect,
    error_for_status,
    parse_json_object,
    retry_after_seconds,
)
from nexus_ingest.extract.prompt import (
    SYSTEM_PROMPT,
    reask_message,
    render_conversation,
    strict_json_schema,
)
from nexus_ingest.extract.reask import TokenUsage, ask_with_one_reask, token_count, within
from nexus_ingest.models import ChatMessage, Prospect


def _usage(completion: ChatCompletion) -> TokenUsage:
    # Several compatible servers omit usage, or its details, altogether, or send odd numbers.
    usage = getattr(completion, "usage", None)
    details = getattr(usage, "prompt_tokens_details", None)
    # Compatible servers report no cache writes (OpenAI bills none on most models).
    return (
        token_count(getattr(usage, "prompt_tokens", None)),
        token_count(getattr(usage, "completion_tokens", None)),
        token_count(getattr(details, "cached_tokens", None)),
        0,
    )


class OpenAIExtractor:
    """Extracts a prospect through chat completions constrained by a strict JSON schema."""

    name = "openai"
    in_process = False

    def __init__(
        self,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float,
        max_tokens: int,
        phone_region: str | None = None,
    ) -> None:
        # The SDK would retry 429/5xx twice on its own; the worker owns retries instead.
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0
        )
        self._timeout_s = timeout_s
        self._model = model
        self._max_tokens = max_tokens
        self._phone_region = phone_region
        self._format: ResponseFormatJSONSchema = {
            "type": "json_schema",
            "json_schema": {"name": "prospect", "strict": True, "schema": strict_json_schema()},
        }

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        """Ask once, re-ask once if the answer is unusable, else raise `Permanent`."""
        turns: list[ChatCompletionMessageParam] = [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": render_conversation(messages)},
        ]
        return await ask_with_one_reask(
            self.name,
            turns,
            self._create,
            partial(prospect_from_completion, phone_region=self._phone_region),
            reask_turns,
            _usage,
            lambda c: c.model,
        )

    async def _create(self, turns: list[ChatCompletionMessageParam]) -> ChatCompletion:
        try:
            # max_tokens rather than max_completion_tokens: it is the one that Ollama, vLLM and
            # llama.cpp all read. temperature 0 keeps small local models on the schema.
            return await within(
                self._timeout_s,
                self._client.chat.completions.create(
                    model=self._model,
                    messages=turns,
                    response_format=self._format,
                    max_tokens=self._max_tokens,
                    temperature=0,
                ),
            )
        except openai.APIStatusError as exc:
            delay = retry_after_seconds(exc.response.headers)
            raise error_for_status(exc.status_code, delay, _describe(exc)) from exc
        except openai.APIError as exc:
            # Timeouts, refused or dropped connections, and unreadable bodies: all passing.
            raise RetryLater(f"openai-compatible request failed: {exc.message}") from exc

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()


def prospect_from_completion(
    completion: ChatCompletion, phone_region: str | None = None
) -> Prospect:
    """The clamped prospect in the first choice, or `Permanent` saying what was wrong."""
    if not completion.choices:
        raise Permanent("the answer had no choices")
    choice = completion.choices[0]
    if choice.finish_reason == "length":
        raise Permanent("the answer was cut off at max_tokens (finish_reason length)")
    if choice.message.refusal:
        raise Permanent(f"the model refused: {choice.message.refusal}")
    if not choice.message.content:
        raise Permanent(f"the answer was empty (finish_reason {choice.finish_reason})")
    return clamp_prospect(parse_json_object(choice.message.content), phone_region)


def reask_turns(completion: ChatCompletion, problem: str) -> list[ChatCompletionMessageParam]:
    """The bad answer and a user turn saying what was wrong with it."""
    answer = completion.choices[0].message.content if completion.choices else None
    complaint: ChatCompletionMessageParam = {"role": "user", "content": reask_message(problem)}
    if not answer:
        return [complaint]
    return [{"role": "assistant", "content": answer}, complaint]


def _describe(exc: openai.APIStatusError) -> str:
    request_id = exc.response.headers.get("x-request-id")
    return f"{exc.message} (x-request-id {request_id})"
