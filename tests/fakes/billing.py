"""How the Anthropic API counts and bills a request's tokens, prompt caching included.

The fake Anthropic server (`tests.fakes.llm_server`) bills every request through `PromptCache`,
so tests and the spend benchmark see what a real invoice would say. The rules follow
Anthropic's prompt-caching and pricing documentation:

- A prompt is a sequence of blocks in the order tools → system → messages: one block per tool,
  per system text block (a plain-string system is one block) and per message content block (a
  plain-string content is one block).
- Caching needs a breakpoint: `cache_control` on a block, or top-level `cache_control`
  (automatic caching), which marks the last block of the prompt. At most 4 breakpoints; a 5th
  is a 400. A 1-hour breakpoint may not follow a 5-minute one.
- A breakpoint whose prefix (everything up to and including its block) is shorter than the
  model's minimum cacheable length is ignored: nothing is written, nothing read, no error.
- A write stores an entry at a breakpoint. A later request hits when, at one of its breakpoints
  or at one of the 20 block boundaries before it, its prefix is byte-identical to an entry an
  earlier request wrote (same model; tool_choice is part of the messages' prefix). The entry
  becomes readable once the writing request has been answered.
- An entry lives 5 minutes (or 1 hour with `"ttl": "1h"`), counted again from each hit.
- Usage: `cache_read_input_tokens` is the longest hit prefix, `cache_creation_input_tokens` the
  tokens from there up to the last breakpoint that counts, `input_tokens` the rest (after that
  breakpoint). The three add up to the whole prompt.
- Price: uncached input at the model's base input rate, 5-minute writes at 1.25x, 1-hour writes
  at 2x, reads at 0.1x, output at the model's output rate (5x input for the Haiku models);
  requests in a Message Batch at half of all that.

Token counts are an approximation, deterministic and documented: a text block counts one token
per 4 characters (rounded up), any other block (tool, tool_use, tool_result) one per 4
characters of its compact JSON. Real tokenizers differ (Claude Haiku 5.5's counts about 30%
more tokens than Haiku 4.5's for the same text); figures compared as ratios are not affected.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

CHARS_PER_TOKEN = 4
MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20

Ttl = Literal["5m", "1h"]
TTL_SECONDS: dict[Ttl, float] = {"5m": 300.0, "1h": 3600.0}
WRITE_MULTIPLIER: dict[Ttl, float] = {"5m": 1.25, "1h": 2.0}
READ_MULTIPLIER = 0.1
BATCH_MULTIPLIER = 0.5

# Minimum cacheable prompt length by model family (the longest matching prefix of the model id
# wins). Written from Anthropic's published table, not shared with nexus_ingest's own copy, so
# that a wrong value there fails the tests against this stand-in instead of agreeing with it.
# Claude Haiku 5.5 is not in the published table: it is treated like the newest Haiku in it
# (Haiku 4.5, 4,096 tokens).
MIN_CACHEABLE_TOKENS: dict[str, int] = {
    "claude-haiku-5-5": 4096,
    "claude-haiku-4-5": 4096,
    "claude-opus-4-5": 4096,
    "claude-opus-4-6": 4096,
    "claude-opus-4-7": 4096,
    "claude-sonnet-4-6": 2048,
    "claude-3-5-haiku": 2048,
    "claude-3-haiku": 2048,
    "claude-sonnet-4-5": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4": 1024,
    "claude-sonnet-4": 1024,
    "claude-3-7-sonnet": 1024,
}
DEFAULT_MIN_CACHEABLE_TOKENS = 1024

# Base input and output prices, US dollars per million tokens (prompts under 100,000 tokens).
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-5-5": (0.10, 0.50),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-haiku": (0.25, 1.25),
    "claude-sonnet-4-5": (3.00, 15.00),
}
DEFAULT_PRICES_PER_MTOK = PRICES_PER_MTOK["claude-haiku-5-5"]


class CachingError(ValueError):
    """The request's cache_control markers break a documented limit (the API answers 400)."""


def count_tokens(text: str) -> int:
    """Tokens in a piece of text: one per 4 characters, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _family_value(model: str, table: Mapping[str, Any], default: Any) -> Any:
    matches = [key for key in table if model.startswith(key)]
    return table[max(matches, key=len)] if matches else default


def min_cacheable_tokens(model: str) -> int:
    """The model's minimum cacheable prompt length."""
    return int(_family_value(model, MIN_CACHEABLE_TOKENS, DEFAULT_MIN_CACHEABLE_TOKENS))


def prices_per_mtok(model: str) -> tuple[float, float]:
    """The model's base input and output prices in dollars per million tokens."""
    value: tuple[float, float] = _family_value(model, PRICES_PER_MTOK, DEFAULT_PRICES_PER_MTOK)
    return value


@dataclass(frozen=True)
class PromptBlock:
    """One block of a prompt: its tokens, the digest of the prefix it ends, its breakpoint."""

    tokens: int
    digest: str
    breakpoint: Ttl | None


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _without_cache_control(block: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in block.items() if key != "cache_control"}


def _block_tokens(block: Mapping[str, Any]) -> int:
    if block.get("type") == "text":
        return count_tokens(str(block.get("text", "")))
    return count_tokens(_compact(_without_cache_control(block)))


def _ttl_of(block: Mapping[str, Any]) -> Ttl | None:
    marker = block.get("cache_control")
    if not isinstance(marker, Mapping):
        return None
    return "1h" if marker.get("ttl") == "1h" else "5m"


def _as_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [block for block in content or [] if isinstance(block, dict)]


def _sections(body: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, block) for every block of the prompt, in cache order."""
    for tool in body.get("tools") or []:
        yield "tool", tool
    for block in _as_blocks(body.get("system")):
        yield "system", block
    for index, message in enumerate(body.get("messages") or []):
        for block in _as_blocks(message.get("content")):
            yield f"message {index} {message.get('role')}", block


def prompt_blocks(body: Mapping[str, Any]) -> list[PromptBlock]:
    """The request's prompt as blocks, each with the digest of everything up to it."""
    chain = hashlib.sha256(_compact(body.get("model")).encode())
    blocks: list[PromptBlock] = []
    in_messages = False
    for where, block in _sections(body):
        if where.startswith("message") and not in_messages:
            # Changing tool_choice keeps the tools and system cache but not the messages'.
            chain.update(_compact(body.get("tool_choice")).encode())
            in_messages = True
        chain.update(_compact([where, _without_cache_control(block)]).encode())
        blocks.append(PromptBlock(_block_tokens(block), chain.hexdigest(), _ttl_of(block)))
    if body.get("cache_control") and blocks:
        last = blocks[-1]
        blocks[-1] = PromptBlock(last.tokens, last.digest, last.breakpoint or _ttl_of(body))
    _check_breakpoints(blocks)
    return blocks


def _check_breakpoints(blocks: list[PromptBlock]) -> None:
    ttls = [block.breakpoint for block in blocks if block.breakpoint]
    if len(ttls) > MAX_BREAKPOINTS:
        raise CachingError(
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {len(ttls)}."
        )
    first_short = ttls.index("5m") if "5m" in ttls else len(ttls)
    if "1h" in ttls[first_short:]:
        raise CachingError("a cache_control ttl of 1h must not follow one of 5m")


@dataclass(frozen=True)
class Usage:
    """The usage fields of one answer."""

    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    output_tokens: int
    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt: uncached, written and read tokens."""
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens

    def as_json(self, service_tier: str) -> dict[str, Any]:
        """The `usage` object of the API's answer."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.ephemeral_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.ephemeral_1h_input_tokens,
            },
            "service_tier": service_tier,
        }


@dataclass(frozen=True)
class Charge:
    """One billed answer: the model, its usage, whether it ran in a batch, what it cost."""

    model: str
    usage: Usage
    batch: bool
    usd: float


def charge_usd(model: str, usage: Usage, *, batch: bool) -> float:
    """What an answer costs at the model's documented prices."""
    input_price, output_price = prices_per_mtok(model)
    weighted_input = (
        usage.input_tokens
        + WRITE_MULTIPLIER["5m"] * usage.ephemeral_5m_input_tokens
        + WRITE_MULTIPLIER["1h"] * usage.ephemeral_1h_input_tokens
        + READ_MULTIPLIER * usage.cache_read_input_tokens
    )
    usd = (weighted_input * input_price + usage.output_tokens * output_price) / 1_000_000
    return usd * (BATCH_MULTIPLIER if batch else 1.0)


@dataclass
class _Entry:
    ttl: Ttl
    readable_at: float
    expires_at: float


@dataclass
class PromptCache:
    """Cache entries shared by every request to one server, and the bill of each request."""

    clock: Callable[[], float]
    min_cacheable_override: int | None = None
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def minimum(self, model: str) -> int:
        """The minimum cacheable length applied to `model`."""
        if self.min_cacheable_override is not None:
            return self.min_cacheable_override
        return min_cacheable_tokens(model)

    def bill(self, body: Mapping[str, Any], output_tokens: int, answered_in: float) -> Usage:
        """Read and write cache entries for this request; its usage.

        Entries written here become readable `answered_in` seconds from now, when the answer
        is sent: a request that starts before then misses them.
        """
        blocks = prompt_blocks(body)
        ends = _cumulative(blocks)
        minimum = self.minimum(str(body.get("model")))
        counted = [i for i, block in enumerate(blocks) if block.breakpoint and ends[i] >= minimum]
        with self._lock:
            now = self.clock()
            hit = self._longest_hit(blocks, counted, now)
            self._write(blocks, counted, now, answered_in)
        read = ends[hit] if hit is not None else 0
        last = counted[-1] if counted else None
        cached_to = ends[last] if last is not None else 0
        by_ttl = _written_by_ttl(blocks, ends, counted, read)
        return Usage(
            input_tokens=(ends[-1] if ends else 0) - max(read, cached_to),
            cache_creation_input_tokens=max(0, cached_to - read),
            cache_read_input_tokens=read,
            output_tokens=output_tokens,
            ephemeral_5m_input_tokens=by_ttl["5m"],
            ephemeral_1h_input_tokens=by_ttl["1h"],
        )

    def _longest_hit(self, blocks: list[PromptBlock], counted: list[int], now: float) -> int | None:
        candidates = {
            position
            for breakpoint in counted
            for position in range(max(0, breakpoint - LOOKBACK_BLOCKS), breakpoint + 1)
        }
        for position in sorted(candidates, reverse=True):
            entry = self._entries.get(blocks[position].digest)
            if entry and entry.readable_at <= now < entry.expires_at:
                entry.expires_at = now + TTL_SECONDS[entry.ttl]  # a hit refreshes the entry
                return position
        return None

    def _write(
        self, blocks: list[PromptBlock], counted: list[int], now: float, answered_in: float
    ) -> None:
        for position in counted:
            block = blocks[position]
            assert block.breakpoint is not None
            entry = self._entries.get(block.digest)
            expires = now + TTL_SECONDS[block.breakpoint]
            if entry and entry.expires_at > now:
                entry.expires_at = max(entry.expires_at, expires)
            else:
                self._entries[block.digest] = _Entry(block.breakpoint, now + answered_in, expires)


def _cumulative(blocks: list[PromptBlock]) -> list[int]:
    ends: list[int] = []
    total = 0
    for block in blocks:
        total += block.tokens
        ends.append(total)
    return ends


def _written_by_ttl(
    blocks: list[PromptBlock], ends: list[int], counted: list[int], read: int
) -> dict[Ttl, int]:
    """Written tokens split by the lifetime of the breakpoint that closes each stretch."""
    written: dict[Ttl, int] = {"5m": 0, "1h": 0}
    start = read
    for position in counted:
        ttl = blocks[position].breakpoint
        assert ttl is not None
        if ends[position] > start:
            written[ttl] += ends[position] - start
            start = ends[position]
    return written
