"""The prompt laid out for caching: stable transcript prefixes, breakpoints, a long enough prefix."""

from __future__ import annotations

import json

import pytest

from nexus_ingest.extract.anthropic import record_tool, system_blocks, transcript_content
from nexus_ingest.extract.caching import (
    MAX_BREAKPOINTS,
    estimate_tokens,
    examples_to_reach,
    min_cacheable_tokens,
    transcript_breakpoints,
)
from nexus_ingest.extract.examples import WORKED_EXAMPLES
from nexus_ingest.extract.prompt import (
    CONVERSATION_CLOSE,
    MAX_TRANSCRIPT_CHARS,
    OMIT_STEP,
    first_kept_turn,
    render_conversation,
    transcript_blocks,
)
from nexus_ingest.models import ChatMessage, Prospect


def chat(turns: int, size: int = 40) -> list[ChatMessage]:
    return [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"{i:04d} " + "x" * size)
        for i in range(turns)
    ]


def test_a_longer_snapshot_starts_with_the_shorter_ones_blocks() -> None:
    """Old turns render byte for byte the same as the chat grows: one block per turn."""
    short, longer = transcript_blocks(chat(6)), transcript_blocks(chat(9))
    assert longer[: len(short)] == short
    assert len(longer) == 9


def test_the_instruction_follows_the_transcript() -> None:
    """The single-text form (OpenAI) is the blocks then the closing instruction."""
    messages = chat(3)
    text = render_conversation(messages)
    assert text == "".join(transcript_blocks(messages)) + CONVERSATION_CLOSE
    assert text.startswith("<conversation>\n<turn ")
    assert text.index("</conversation>") < text.index("Extract the prospect")


def test_long_chats_leave_out_old_turns_in_steps() -> None:
    """The cut moves by OMIT_STEP turns, so consecutive snapshots mostly share their start."""
    sizes = [1000] * 200
    cuts = [first_kept_turn(sizes[:n], MAX_TRANSCRIPT_CHARS) for n in range(50, 200)]
    assert all(cut % OMIT_STEP == 0 for cut in cuts)
    assert cuts == sorted(cuts)
    assert len(set(cuts)) <= len(cuts) // OMIT_STEP + 1
    assert all(
        sum(sizes[cut:n]) <= MAX_TRANSCRIPT_CHARS
        for cut, n in zip(cuts, range(50, 200), strict=True)
    )


def test_the_newest_turn_is_kept_even_if_alone_it_is_too_long() -> None:
    """A single oversized turn is still sent."""
    assert first_kept_turn([10, 10, 10_000_000], 100) == 2
    assert first_kept_turn([10, 10], 100) == 0


def test_left_out_turns_are_announced_and_the_start_is_stable_between_steps() -> None:
    """The <omitted/> marker counts the turns left out; it changes only at a step."""
    base = chat(150, size=900)
    first, second = transcript_blocks(base), transcript_blocks([*base, *chat(1, size=900)])
    assert first[0].startswith('<conversation>\n<omitted turns="')
    assert second[: len(first)] == first


def test_breakpoints_sit_on_the_last_turn_and_two_grid_turns() -> None:
    """Last turn always; grid turns every 16 behind it, never more than the limit allows."""
    assert transcript_breakpoints(1) == [0]
    assert transcript_breakpoints(16) == [15]
    assert transcript_breakpoints(17) == [15, 16]
    assert transcript_breakpoints(50) == [31, 47, 49]
    assert all(len(transcript_breakpoints(n)) <= MAX_BREAKPOINTS - 1 for n in range(200))


def test_every_turn_is_within_reach_of_a_breakpoint() -> None:
    """Each of the last 37 turn boundaries is within 20 blocks before some breakpoint, so an
    earlier snapshot up to 37 turns shorter is found by the lookback."""
    for turns in range(1, 120):
        marks = transcript_breakpoints(turns)
        reach = {i for mark in marks for i in range(max(0, mark - 20), mark + 1)}
        assert set(range(max(0, turns - 37), turns)) <= reach


def test_transcript_content_marks_breakpoints_and_closes_uncached() -> None:
    """cache_control on the chosen turn blocks, none on the closing instruction."""
    content = transcript_content(chat(20))
    marked = [i for i, block in enumerate(content) if "cache_control" in block]
    assert marked == [15, 19]
    assert content[-1] == {"type": "text", "text": CONVERSATION_CLOSE}


@pytest.mark.parametrize("model", ["claude-haiku-5-5", "claude-haiku-4-5-20251001", "other"])
def test_the_cached_prefix_reaches_the_models_minimum(model: str) -> None:
    """Tool and system prompt, estimated low, reach the model's minimum cacheable length."""
    tool = record_tool()
    blocks = system_blocks(model, tool, examples=True)
    prefix = estimate_tokens(json.dumps(tool)) + sum(estimate_tokens(b["text"]) for b in blocks)
    assert prefix >= min_cacheable_tokens(model)
    assert [("cache_control" in block) for block in blocks] == [False] * (len(blocks) - 1) + [True]


def test_no_examples_where_the_prompt_already_reaches_the_minimum() -> None:
    """A 1,024-token model needs no padding; examples off means none at all."""
    assert len(system_blocks("claude-sonnet-4-5", record_tool(), examples=True)) == 1
    assert len(system_blocks("claude-haiku-5-5", record_tool(), examples=False)) == 1


def test_examples_to_reach_adds_examples_until_the_target_with_margin() -> None:
    """Enough examples to pass 110% of the minimum; none if already there; all if short."""
    assert examples_to_reach(1000, 1200, [100, 100]) == 0
    assert examples_to_reach(1000, 900, [100, 100, 100, 100]) == 2
    assert examples_to_reach(10_000, 900, [100, 100]) == 2


def test_worked_examples_are_valid_records_in_both_languages() -> None:
    """Every example's record is a valid Prospect; both Spanish and English appear."""
    languages = {Prospect.model_validate(e.record).idioma for e in WORKED_EXAMPLES}
    assert {"es", "en"} <= languages
