"""What `nexus send` decides before and after each POST: parsing lines, keys, waits, batches."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx

from nexus_ingest.cli import replay_batches
from nexus_ingest.sender import (
    BadLine,
    Conversation,
    Outcome,
    json_documents,
    parse_conversations,
    refusal,
    retry_after,
)

CHAT = {"messages": [{"role": "user", "content": "Hola"}], "fingerprint": "f", "sessionId": "s"}


def test_a_whole_file_is_one_conversation_even_over_several_lines() -> None:
    """A pretty-printed JSON object is one conversation, line 1, with the defaults filled in."""
    text = json.dumps({"messages": CHAT["messages"]}, indent=2)
    good, bad = parse_conversations(text, session="s-9", fingerprint="f-9")
    assert bad == [] and [c.line for c in good] == [1]
    assert good[0].body["sessionId"] == "s-9" and good[0].body["fingerprint"] == "f-9"


def test_every_bad_json_line_is_reported_with_its_number() -> None:
    """JSON Lines: each bad line is named, the good ones are kept with their line numbers."""
    text = "\n".join([json.dumps(CHAT), "{oops", "", "42", json.dumps({**CHAT, "sessionId": "t"})])
    good, bad = parse_conversations(text)
    assert [c.line for c in good] == [1, 5]
    assert [b.line for b in bad] == [2, 4]
    assert bad[0].reason.startswith("not valid JSON") and "JSON object" in bad[1].reason


def test_an_empty_input_is_a_bad_line() -> None:
    """Nothing to send is reported, not silently accepted."""
    assert parse_conversations("  \n") == ([], [BadLine(1, "no JSON found")])


def test_a_line_no_encoder_can_send_is_a_bad_line() -> None:
    """A lone-surrogate escape parses as JSON but cannot be sent: its line is bad, found now."""
    surrogate = json.dumps(CHAT).replace("Hola", "\\ud800")
    good, bad = parse_conversations("\n".join([json.dumps(CHAT), surrogate]))
    assert [c.line for c in good] == [1] and [b.line for b in bad] == [2]
    assert "surrogate" in bad[0].reason
    single, bad = parse_conversations(surrogate)
    assert single == [] and [b.line for b in bad] == [1]


def test_a_line_nested_too_deeply_is_a_bad_line() -> None:
    """JSON deeper than Python can parse is a bad line, not an error that ends the run."""
    deep = "[" * 100_000 + "]" * 100_000
    good, bad = parse_conversations("\n".join([json.dumps(CHAT), deep]))
    assert [c.line for c in good] == [1] and [b.line for b in bad] == [2]
    assert "nested too deeply" in bad[0].reason
    assert json_documents(deep) == ([], [BadLine(1, bad[0].reason)])


def test_the_idempotency_key_depends_on_the_content_only() -> None:
    """The same conversation gets the same key (whatever its key order); another gets another."""
    same = Conversation(7, dict(reversed(list(CHAT.items()))))
    assert Conversation(1, CHAT).idempotency_key() == same.idempotency_key()
    other = Conversation(1, {**CHAT, "sessionId": "other"})
    assert Conversation(1, CHAT).idempotency_key() != other.idempotency_key()
    assert len(Conversation(1, CHAT).idempotency_key()) <= 255


def _with_retry_after(value: str) -> httpx.Response:
    return httpx.Response(429, headers={"Retry-After": value})


def test_retry_after_reads_seconds_and_dates_within_bounds() -> None:
    """Seconds or an HTTP date are honoured; nonsense waits a second; nothing waits over a minute."""
    assert retry_after(_with_retry_after("3")) == 3.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= retry_after(_with_retry_after(soon)) <= 30
    assert retry_after(_with_retry_after("soon")) == 1.0
    assert retry_after(_with_retry_after("86400")) == 60.0
    assert retry_after(_with_retry_after("-5")) == 0.0


def test_a_refusal_names_status_error_and_fields() -> None:
    """A 422's field errors are listed; an unreachable producer says so."""
    answer = {"error": "invalid_snapshot", "detail": [{"loc": ["messages"], "msg": "too short"}]}
    assert refusal(Outcome(2, 422, answer, 1)) == (
        "refused (HTTP 422 invalid_snapshot): messages: too short"
    )
    assert refusal(Outcome(2, 0, {"message": "cannot reach"}, 5)) == "cannot reach"


def test_replay_batches_keep_a_session_together_oldest_first() -> None:
    """Dead letters are batched by about `size`, in id order, never splitting a session."""
    letters = [(5, "a"), (1, "a"), (2, "b"), (3, "c"), (4, "b"), (6, None), (7, None)]
    batches = replay_batches(letters, size=3)
    assert batches == [[1, 5], [2, 4, 3], [6, 7]]
    assert sorted(i for batch in batches for i in batch) == [1, 2, 3, 4, 5, 6, 7]
