"""The extraction policy: when a snapshot is extracted now, later, or in a batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from nexus_ingest.models import ChatMessage
from nexus_ingest.policy import (
    Defer,
    ExtractInBatch,
    ExtractionPolicy,
    ExtractNow,
    SnapshotFacts,
    decide,
    is_hot,
    policy_for,
    turned_hot,
)
from nexus_ingest.settings import Settings

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
POLICY = ExtractionPolicy()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def facts(
    received: float,
    *,
    started: float = 0.0,
    extracted: float | None = None,
    hot: bool = False,
) -> SnapshotFacts:
    return SnapshotFacts(
        received_at=at(received),
        session_started_at=at(started),
        last_extracted_at=None if extracted is None else at(extracted),
        turned_hot=hot,
    )


def chat(*said: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text) for text in said]


def test_defaults_are_the_documented_ones() -> None:
    """First within 5 s, at most one every 30 s while typing, final state after 20 s quiet."""
    assert (POLICY.first_within_s, POLICY.interval_s, POLICY.quiet_s) == (5.0, 30.0, 20.0)
    assert POLICY.hot_at_once and POLICY.batch_min_age_s is None


def test_a_new_session_waits_for_more_turns_until_its_first_deadline() -> None:
    """The first snapshot of a session is deferred to 5 s after the session began."""
    assert decide(facts(0.0), at(2.0), POLICY) == Defer(at(5.0), "first")


def test_a_new_session_is_extracted_once_its_first_deadline_passed() -> None:
    """A later snapshot read after the deadline is extracted at once, as the first."""
    assert decide(facts(4.0), at(6.0), POLICY) == ExtractNow("first")


def test_a_hot_snapshot_is_extracted_at_once_even_before_the_first_deadline() -> None:
    """Contact details or a buying signal skip every wait."""
    assert decide(facts(1.0, hot=True), at(1.0), POLICY) == ExtractNow("hot")
    assert decide(facts(31.0, extracted=30.0, hot=True), at(31.0), POLICY) == ExtractNow("hot")


def test_hot_waits_like_any_snapshot_when_switched_off() -> None:
    """With hot_at_once off, a hot snapshot follows the first-extraction deadline."""
    policy = ExtractionPolicy(hot_at_once=False)
    assert decide(facts(1.0, hot=True), at(1.0), policy) == Defer(at(5.0), "first")


def test_while_the_visitor_types_extractions_are_paced() -> None:
    """After an extraction at 6 s, the next is due 30 s later (36 s), or sooner if the chat
    goes quiet first (20 s after the snapshot)."""
    assert decide(facts(10.0, extracted=6.0), at(10.0), POLICY) == Defer(at(30.0), "quiet")
    assert decide(facts(20.0, extracted=6.0), at(20.0), POLICY) == Defer(at(36.0), "paced")


def test_a_snapshot_left_alone_long_enough_is_the_final_state() -> None:
    """Read again when its quiet time comes, the newest snapshot is extracted."""
    assert decide(facts(28.0, extracted=20.0), at(48.0), POLICY) == ExtractNow("quiet")


def test_the_last_snapshot_is_always_extracted_within_the_quiet_time() -> None:
    """Whatever the last extraction, the newest snapshot is due no later than received + quiet."""
    for extracted in (None, 0.0, 27.0, 100.0):
        decision = decide(facts(100.0, started=0.0, extracted=extracted), at(100.0), POLICY)
        due = decision.until if isinstance(decision, Defer) else at(100.0)
        assert due <= at(100.0 + POLICY.quiet_s)


def test_backlog_goes_to_a_batch_when_batching_is_on() -> None:
    """A snapshot 10 minutes old is batched; a fresh one is not; batching off never batches."""
    policy = ExtractionPolicy(batch_min_age_s=600.0)
    assert decide(facts(0.0), at(600.0), policy) == ExtractInBatch()
    assert decide(facts(0.0), at(599.0), policy) == ExtractNow("first")
    assert decide(facts(0.0), at(600.0), POLICY) == ExtractNow("first")


@pytest.mark.parametrize(
    ("said", "hot"),
    [
        (("Hola, buenas tardes",), False),
        (("Me llamo Ana y solo estoy mirando",), False),
        (("Mi email es ana@example.com",), True),
        (("My number is +34 600 111 222",), True),
        (("¿Cuánto cuesta el plan Pro?",), True),
        (("Can I get a demo next week?",), True),
    ],
)
def test_hot_means_contact_details_or_a_buying_signal(said: tuple[str, ...], hot: bool) -> None:
    """The offline rules decide what is hot: an email or phone, or a price/demo/buy intent."""
    assert is_hot(chat(*said)) is hot


def test_a_chat_turns_hot_once() -> None:
    """Hot when the new turns make it so; not again once the last extraction saw it hot."""
    messages = chat("Hola", "Quiero comprar el plan anual", "Mi email es ana@example.com")
    assert turned_hot(messages[:2], extracted_turns=1)
    assert turned_hot(messages[:2], extracted_turns=None)
    assert not turned_hot(messages, extracted_turns=2)
    assert not turned_hot(messages[:1], extracted_turns=None)


def test_offline_extractors_get_no_policy_and_llms_get_the_settings() -> None:
    """rules and noop extract every snapshot at once; an LLM extractor uses the settings."""
    assert policy_for(Settings(_env_file=None, extractor="rules")) is None
    assert policy_for(Settings(_env_file=None, extractor="noop")) is None
    settings = Settings(
        _env_file=None,
        extractor="anthropic",
        extract_interval_s=12,
        llm_batch=True,
        llm_batch_min_age_s=900,
    )
    assert policy_for(settings) == ExtractionPolicy(interval_s=12.0, batch_min_age_s=900.0)
    openai = Settings(_env_file=None, extractor="openai", llm_batch=True)
    assert policy_for(openai) == ExtractionPolicy()
