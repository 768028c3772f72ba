"""Pure decisions of the pipeline: back-off, rate limits, coalescing, trace context, query files."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from nexus_ingest.queries import all_queries, parse_queries
from nexus_ingest.queue import MsgId, QueuedMessage
from nexus_ingest.ratelimit import RateLimiter, retry_after_header
from nexus_ingest.retry import RetryPolicy
from nexus_ingest.traceparent import continue_traceparent, new_traceparent, trace_id
from nexus_ingest.worker.plan import plan_batch


def message(
    msg_id: int, session: str | None, seq: int, body: object = None, last_seq: int | None = None
) -> QueuedMessage:
    content = (
        body
        if body is not None
        else {
            "sessionId": session,
            "fingerprint": "fp",
            "messages": [{"role": "user", "content": "hola"}],
            "seq": seq,
        }
    )
    return QueuedMessage(
        MsgId(msg_id),
        1,
        datetime.now(UTC),
        content,
        {"x-pgmq-group": session} if session else {},
        last_seq=last_seq,
    )


def test_backoff_grows_exponentially_within_jitter_and_cap() -> None:
    """Delays double per attempt, jittered between half and all of the ceiling, never above the cap."""
    policy = RetryPolicy(max_attempts=5, base_s=2, cap_s=30)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16), (5, 30), (9, 30)]:
        delays = [policy.delay(attempt, rng=rng) for _ in range(50)]
        assert all(max(1, round(ceiling / 2)) <= d <= ceiling for d in delays)


def test_backoff_honours_retry_after_up_to_the_cap() -> None:
    """A provider's retry-after is a floor for the delay, but the cap still holds."""
    policy = RetryPolicy(base_s=1, cap_s=60)
    assert policy.delay(1, at_least=20) == 20
    assert policy.delay(1, at_least=10_000) == 60


def test_attempts_are_exhausted_at_the_maximum() -> None:
    """The policy gives up once a message was read max_attempts times."""
    policy = RetryPolicy(max_attempts=3)
    assert [policy.exhausted(n) for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_rate_limiter_allows_a_burst_then_refills() -> None:
    """A key gets `burst` requests at once, then one per refill interval, with the wait told."""
    now = [0.0]
    limiter = RateLimiter(60, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("ip") for _ in range(2)] == [0.0, 0.0]
    wait = limiter.acquire("ip")
    assert wait == pytest.approx(1.0)
    assert limiter.acquire("other") == 0.0
    now[0] += 1.0
    assert limiter.acquire("ip") == 0.0
    assert retry_after_header(0.2) == "1" and retry_after_header(2.1) == "3"


def test_rate_limiter_memory_is_bounded() -> None:
    """Past max_keys the least recently seen keys are forgotten."""
    limiter = RateLimiter(60, burst=1, max_keys=3)
    for key in "abcd":
        limiter.acquire(key)
    assert len(limiter._buckets) == 3


def test_rate_limit_zero_disables() -> None:
    """A rate of zero never limits."""
    limiter = RateLimiter(0, burst=1)
    assert all(limiter.acquire("x") == 0.0 for _ in range(100))


def test_plan_keeps_only_each_sessions_newest_snapshot() -> None:
    """Within a batch, older snapshots of a session are superseded by its newest one."""
    batch = [
        message(1, "a", 1, last_seq=3),
        message(2, "a", 2, last_seq=3),
        message(3, "b", 1, last_seq=1),
        message(4, "a", 3, last_seq=3),
    ]
    plan = plan_batch(batch)
    assert sorted(i.message.msg_id for i in plan.work) == [3, 4]
    assert sorted(m.msg_id for m in plan.superseded) == [1, 2]


def test_plan_supersedes_when_a_newer_snapshot_is_queued_elsewhere() -> None:
    """A snapshot older than the session's last handed-out number is not extracted."""
    plan = plan_batch([message(1, "a", 2, last_seq=5)])
    assert plan.work == [] and [m.msg_id for m in plan.superseded] == [1]


def test_plan_sets_aside_undecodable_messages() -> None:
    """A body that is not a snapshot is marked for the dead-letter queue with a reason."""
    plan = plan_batch([message(1, None, 0, body={"junk": True}), message(2, "a", 1, last_seq=1)])
    assert [m.msg_id for m, _ in plan.undecodable] == [1]
    assert "undecodable" in plan.undecodable[0][1]
    assert [i.message.msg_id for i in plan.work] == [2]


def test_traceparent_is_continued_or_started() -> None:
    """A valid incoming traceparent keeps its trace id; junk starts a new trace."""
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    continued = continue_traceparent(incoming)
    assert trace_id(continued) == "4bf92f3577b34da6a3ce929d0e0e4736" and continued != incoming
    fresh = continue_traceparent("garbage")
    assert trace_id(fresh) and trace_id(fresh) != trace_id(new_traceparent())
    assert trace_id("00-" + "0" * 32 + "-00f067aa0ba902b7-01") == "0" * 32
    assert trace_id(continue_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01")) != "0" * 32
    # The W3C format is lower-case hex, and an all-zero parent id is invalid: such a header is
    # ignored, not continued.
    upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"
    assert trace_id(continue_traceparent(upper)) != "4bf92f3577b34da6a3ce929d0e0e4736"
    no_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"
    assert trace_id(continue_traceparent(no_parent)) != "4bf92f3577b34da6a3ce929d0e0e4736"


def test_query_files_parse_into_named_queries() -> None:
    """Named blocks split on `-- name:` lines, and every shipped query has a unique name."""
    parsed = parse_queries("-- name: one\nSELECT 1;\n\n-- name: two\nSELECT 2;\n")
    assert parsed == {"one": "SELECT 1;", "two": "SELECT 2;"}
    assert {"enqueue_snapshots", "read_snapshots", "save_extractions"} <= set(all_queries())
