"""The billing stand-in's rules: tokens and prompt caching counted as Anthropic documents them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes.billing import (
    CachingError,
    PromptCache,
    Usage,
    charge_usd,
    count_tokens,
    min_cacheable_tokens,
    prompt_blocks,
)

MODEL = "claude-haiku-5-5"
BREAKPOINT = {"type": "ephemeral"}


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def text(tokens: int, tag: str = "x", *, cached: bool = False) -> dict[str, Any]:
    """A text block of exactly `tokens` tokens (4 characters each)."""
    block: dict[str, Any] = {"type": "text", "text": (tag * 4 * tokens)[: 4 * tokens]}
    if cached:
        block["cache_control"] = BREAKPOINT
    return block


def request(
    system: list[dict[str, Any]], turns: list[dict[str, Any]], **extra: Any
) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "system": system,
        "messages": [{"role": "user", "content": turns}],
        **extra,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def cache(clock: Clock) -> PromptCache:
    return PromptCache(clock)


def bill(cache: PromptCache, body: dict[str, Any]) -> Usage:
    return cache.bill(body, output_tokens=10, answered_in=0.0)


def test_tokens_are_four_characters_rounded_up() -> None:
    """count_tokens is ceil(len / 4), the documented approximation."""
    assert [count_tokens(""), count_tokens("abcd"), count_tokens("abcde")] == [0, 1, 2]


def test_minimum_lengths_follow_the_published_table() -> None:
    """Haiku 4.5 needs 4,096 tokens, Haiku 5.5 is treated like it, Sonnet 4.5 needs 1,024."""
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-haiku-5-5") == 4096
    assert min_cacheable_tokens("claude-3-5-haiku-20241022") == 2048
    assert min_cacheable_tokens("claude-sonnet-4-5-20250929") == 1024


def test_nothing_is_cached_without_a_breakpoint(cache: PromptCache) -> None:
    """Two identical long requests without cache_control are both billed as plain input."""
    body = request([text(5000)], [text(10)])
    usages = [bill(cache, body), bill(cache, body)]
    assert [(u.input_tokens, u.cache_read_input_tokens) for u in usages] == [(5010, 0)] * 2
    assert {u.cache_creation_input_tokens for u in usages} == {0}


def test_a_prefix_under_the_minimum_is_ignored_silently(cache: PromptCache) -> None:
    """4,095 tokens before the breakpoint on a 4,096 model: no write, no read, no error."""
    body = request([text(4095, cached=True)], [text(10)])
    usages = [bill(cache, body), bill(cache, body)]
    assert [(u.input_tokens, u.cache_creation_input_tokens) for u in usages] == [(4105, 0)] * 2
    assert usages[1].cache_read_input_tokens == 0


def test_a_prefix_at_the_minimum_is_written_then_read(cache: PromptCache) -> None:
    """At exactly 4,096 tokens the first request writes the prefix and the second reads it."""
    body = request([text(4096, cached=True)], [text(10)])
    first, second = bill(cache, body), bill(cache, body)
    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens) == (4096, 0)
    assert (second.cache_creation_input_tokens, second.cache_read_input_tokens) == (0, 4096)
    assert first.input_tokens == second.input_tokens == 10
    assert first.prompt_tokens == second.prompt_tokens == 4106


def test_the_minimum_counts_everything_before_the_breakpoint(cache: PromptCache) -> None:
    """Tools and system count toward a messages breakpoint: its cumulative prefix is what
    must reach the minimum."""
    body = request([text(4000)], [text(200, cached=True), text(5)])
    usage = bill(cache, body)
    assert (usage.cache_creation_input_tokens, usage.input_tokens) == (4200, 5)


def test_a_hit_needs_an_entry_an_earlier_answered_request_wrote(clock: Clock) -> None:
    """A request sent before the writing request was answered misses the entry."""
    cache = PromptCache(clock)
    body = request([text(4096, cached=True)], [text(10)])
    cache.bill(body, output_tokens=1, answered_in=2.0)
    clock.now += 1.0
    assert cache.bill(body, output_tokens=1, answered_in=2.0).cache_read_input_tokens == 0
    clock.now += 1.5
    assert cache.bill(body, output_tokens=1, answered_in=2.0).cache_read_input_tokens == 4096


def test_entries_live_five_minutes_from_their_last_use(clock: Clock, cache: PromptCache) -> None:
    """A hit at 4:59 refreshes the entry for 5 more minutes; 5:01 after the last use misses."""
    body = request([text(4096, cached=True)], [text(10)])
    bill(cache, body)
    clock.now += 299
    assert bill(cache, body).cache_read_input_tokens == 4096
    clock.now += 299
    assert bill(cache, body).cache_read_input_tokens == 4096
    clock.now += 301
    missed = bill(cache, body)
    assert (missed.cache_read_input_tokens, missed.cache_creation_input_tokens) == (0, 4096)


def test_one_hour_entries_outlive_five_minutes_and_cost_twice(
    clock: Clock, cache: PromptCache
) -> None:
    """A "1h" breakpoint's entry is read after 30 minutes; its write is billed at 2x input."""
    block = text(4096)
    block["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    body = request([block], [text(10)])
    written = bill(cache, body)
    clock.now += 1800
    assert bill(cache, body).cache_read_input_tokens == 4096
    assert (written.ephemeral_1h_input_tokens, written.ephemeral_5m_input_tokens) == (4096, 0)
    assert charge_usd(MODEL, written, batch=False) == pytest.approx(
        (10 + 2 * 4096) * 0.10 / 1e6 + 10 * 0.50 / 1e6
    )


def test_lookback_reaches_twenty_blocks_back_and_no_further(clock: Clock) -> None:
    """An entry 20 blocks before a breakpoint is read; one 21 blocks before is not."""
    system = [text(4096, cached=True)]
    turns = [text(10, str(i)) for i in range(30)]

    def read_after_first_write(breakpoint: int) -> int:
        cache = PromptCache(clock)
        bill(cache, request(system, [*turns[:5], {**turns[5], "cache_control": BREAKPOINT}]))
        later = [*turns[:breakpoint], {**turns[breakpoint], "cache_control": BREAKPOINT}]
        return bill(cache, request(system, later)).cache_read_input_tokens

    assert read_after_first_write(25) == 4096 + 60
    assert read_after_first_write(26) == 4096


def test_the_prefix_order_is_tools_system_messages(cache: PromptCache) -> None:
    """A changed tool invalidates everything after it; a changed turn keeps the system cache."""
    tool = {"name": "t", "description": "d", "input_schema": {"type": "object"}}
    body = request([text(4096, cached=True)], [text(10, cached=True)], tools=[tool])
    bill(cache, body)
    changed_tool = {**body, "tools": [{**tool, "description": "e"}]}
    changed_turn = {**body, "messages": [{"role": "user", "content": [text(10, "y")]}]}
    assert bill(cache, changed_tool).cache_read_input_tokens == 0
    assert bill(cache, changed_turn).cache_read_input_tokens > 4096 - 1


def test_tool_choice_changes_keep_the_system_cache_but_not_the_messages(
    cache: PromptCache,
) -> None:
    """Switching tool_choice reads tools and system from the cache, the turns again."""
    forced = request(
        [text(4096, cached=True)],
        [text(100, cached=True)],
        tool_choice={"type": "tool", "name": "t"},
    )
    bill(cache, forced)
    auto = {**forced, "tool_choice": {"type": "auto"}}
    assert bill(cache, forced).cache_read_input_tokens == 4196
    assert bill(cache, auto).cache_read_input_tokens == 4096


def test_models_do_not_share_entries(cache: PromptCache) -> None:
    """The same prompt to another model is a miss."""
    body = request([text(4096, cached=True)], [text(10)])
    bill(cache, body)
    assert bill(cache, {**body, "model": "claude-haiku-4-5"}).cache_read_input_tokens == 0


def test_top_level_cache_control_marks_the_last_block(cache: PromptCache) -> None:
    """Automatic caching puts the breakpoint on the prompt's last block."""
    body = request([text(4096)], [text(10)], cache_control=BREAKPOINT)
    assert bill(cache, body).cache_creation_input_tokens == 4106
    assert bill(cache, body).cache_read_input_tokens == 4106


def test_a_fifth_breakpoint_is_refused() -> None:
    """More than 4 cache_control blocks is an invalid request."""
    body = request([text(10, cached=True)], [text(1, str(i), cached=True) for i in range(4)])
    with pytest.raises(CachingError, match="maximum of 4"):
        prompt_blocks(body)


def test_a_one_hour_breakpoint_may_not_follow_a_five_minute_one() -> None:
    """Longer lifetimes come first in the prompt."""
    late = text(1)
    late["cache_control"] = {"type": "ephemeral", "ttl": "1h"}
    with pytest.raises(CachingError, match="1h"):
        prompt_blocks(request([text(10, cached=True)], [late]))


def test_prices_follow_the_documented_multipliers() -> None:
    """Writes 1.25x, reads 0.1x, output 5x input on Haiku 5.5; a batch answer costs half."""
    usage = Usage(
        input_tokens=1_000_000,
        cache_creation_input_tokens=1_000_000,
        cache_read_input_tokens=1_000_000,
        output_tokens=1_000_000,
        ephemeral_5m_input_tokens=1_000_000,
    )
    assert charge_usd(MODEL, usage, batch=False) == pytest.approx(0.10 + 0.125 + 0.01 + 0.50)
    assert charge_usd(MODEL, usage, batch=True) == pytest.approx((0.10 + 0.125 + 0.01 + 0.50) / 2)
    assert charge_usd("claude-haiku-4-5-20251001", usage, batch=False) == pytest.approx(7.35)
