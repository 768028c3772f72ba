"""Where an Anthropic request puts its cache breakpoints, and how long its cached prefix must be.

Anthropic caches a prompt prefix only up to a `cache_control` breakpoint (4 at most), only when
that prefix reaches the model's minimum cacheable length, and a later request reads it only if
one of its own breakpoints, or one of the 20 blocks before that breakpoint, ends exactly where
an earlier request wrote an entry. These pure functions place breakpoints with that in mind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Published minimum cacheable prompt lengths, matched on the longest prefix of the model id.
# Claude Haiku 5.5 is not in the published table; it is treated like the newest Haiku that is
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
# An unknown model gets the largest minimum: a longer prefix costs little once it is cached,
# one too short is never cached at all.
UNKNOWN_MODEL_MIN_TOKENS = 4096

MAX_BREAKPOINTS = 4
LOOKBACK_BLOCKS = 20
# Transcript breakpoints also sit on a fixed grid of turns, a little finer than the lookback, so
# a snapshot many turns after the last extracted one still finds an entry within reach.
GRID_TURNS = 16

# Real tokenizers give at least one token per 4 characters of English or Spanish prose (more
# for JSON, and the newer Claude tokenizer about 30% more): estimating 4 and aiming 10% above
# the minimum keeps the prefix over it.
CHARS_PER_TOKEN = 4
PREFIX_MARGIN = 1.1


def estimate_tokens(text: str) -> int:
    """A low estimate of the tokens in `text`."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def min_cacheable_tokens(model: str) -> int:
    """The shortest prefix `model` caches."""
    matches = [family for family in MIN_CACHEABLE_TOKENS if model.startswith(family)]
    if not matches:
        return UNKNOWN_MODEL_MIN_TOKENS
    return MIN_CACHEABLE_TOKENS[max(matches, key=len)]


def examples_to_reach(minimum: int, base_tokens: int, example_tokens: Sequence[int]) -> int:
    """How many worked examples, in order, bring the prefix over `minimum` (with the margin).

    0 if the prefix is long enough already; all of them if even all fall short.
    """
    target = math.ceil(minimum * PREFIX_MARGIN)
    total = base_tokens
    for count, tokens in enumerate(example_tokens):
        if total >= target:
            return count
        total += tokens
    return len(example_tokens)


def transcript_breakpoints(turns: int) -> list[int]:
    """Indices of the turn blocks that carry a breakpoint: the last turn, and the two newest
    grid turns before it (the prompt's fourth breakpoint closes the system prompt).

    The last turn's entry serves the next snapshot when it is up to 20 blocks longer; the grid
    entries, shared by every snapshot that reaches them, serve snapshots further apart: an
    earlier snapshot up to 37 turns shorter is always within some breakpoint's lookback.
    """
    if turns <= 0:
        return []
    last = turns - 1
    grid = [index for index in range(GRID_TURNS - 1, last, GRID_TURNS)]
    return [*grid[-(MAX_BREAKPOINTS - 2) :], last]
