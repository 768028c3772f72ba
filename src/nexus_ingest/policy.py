"""When to spend an LLM call on a chat snapshot: now, later, or in a batch.

A snapshot holds the whole chat so far, so extracting every one of them pays for the same
turns again and again. The policy spends where a sales team looks:

- a new session's first extraction comes soon (its lead is visible within seconds), waiting a
  few seconds first so that the call reads more than a greeting;
- a chat that turns hot (contact details, or a purchase, demo or price intent) is extracted
  at once;
- while the visitor keeps typing, a session is extracted at most once per interval;
- once the chat goes quiet, its final state is extracted: every session's last snapshot is.

Deferring means hiding the snapshot until the returned time; a newer snapshot of the session
supersedes it meanwhile, and whichever is newest when its time comes is extracted. Offline
extractors cost nothing, so they get no policy: every snapshot is extracted at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from nexus_ingest.extract.rules import extract_prospect
from nexus_ingest.models import ChatMessage
from nexus_ingest.settings import Settings

Reason = Literal["first", "hot", "paced", "quiet", "backlog"]
HOT_INTEREST = 7


@dataclass(frozen=True)
class ExtractionPolicy:
    """How soon and how often a session is extracted (seconds)."""

    first_within_s: float = 5.0
    interval_s: float = 30.0
    quiet_s: float = 20.0
    hot_at_once: bool = True
    # A snapshot that has waited this long is backlog, sent in a batch; None: never batch.
    batch_min_age_s: float | None = None


def policy_for(settings: Settings) -> ExtractionPolicy | None:
    """The policy the settings ask for; None for the offline extractors."""
    extractor = settings.resolved_extractor()
    if extractor in ("rules", "noop"):
        return None
    batching = settings.llm_batch and extractor == "anthropic"
    return ExtractionPolicy(
        first_within_s=settings.extract_first_within_s,
        interval_s=settings.extract_interval_s,
        quiet_s=settings.extract_quiet_s,
        hot_at_once=settings.extract_hot_at_once,
        batch_min_age_s=settings.llm_batch_min_age_s if batching else None,
    )


@dataclass(frozen=True)
class SnapshotFacts:
    """What the decision needs to know about a snapshot and its session."""

    received_at: datetime  # when the producer queued this snapshot
    session_started_at: datetime  # when the producer queued the session's first snapshot
    last_extracted_at: datetime | None  # when the session was last extracted; None: never
    turned_hot: bool  # hot now, and not at that extraction (`turned_hot`)


@dataclass(frozen=True)
class ExtractNow:
    """Call the extractor on this snapshot now."""

    reason: Reason


@dataclass(frozen=True)
class ExtractInBatch:
    """Send this snapshot in a Message Batch: it has waited long enough that minutes more
    cost nothing, and the batch costs half."""

    reason: Reason = "backlog"


@dataclass(frozen=True)
class Defer:
    """Hide this snapshot until `until`, then decide again (unless a newer one came)."""

    until: datetime
    reason: Reason


Decision = ExtractNow | ExtractInBatch | Defer


def decide(facts: SnapshotFacts, now: datetime, policy: ExtractionPolicy) -> Decision:
    """Extract now, in a batch, or later; see the module's docstring for the rules."""
    backlog = policy.batch_min_age_s
    if backlog is not None and now - facts.received_at >= timedelta(seconds=backlog):
        return ExtractInBatch()
    if policy.hot_at_once and facts.turned_hot:
        return ExtractNow("hot")
    reason, due = due_at(facts, policy)
    return ExtractNow(reason) if now >= due else Defer(due, reason)


def due_at(facts: SnapshotFacts, policy: ExtractionPolicy) -> tuple[Reason, datetime]:
    """When this snapshot is to be extracted if nothing newer comes, and why then."""
    if facts.last_extracted_at is None:
        return "first", facts.session_started_at + timedelta(seconds=policy.first_within_s)
    paced = facts.last_extracted_at + timedelta(seconds=policy.interval_s)
    quiet = facts.received_at + timedelta(seconds=policy.quiet_s)
    return ("paced", paced) if paced <= quiet else ("quiet", quiet)


def is_hot(messages: Sequence[ChatMessage]) -> bool:
    """Whether the chat, as the offline rules read it, gives contact details or shows a
    purchase, demo or price intent (interest 7 or more)."""
    prospect = extract_prospect(messages)
    buying = prospect.intencion == "compra" or (prospect.nivel_interes or 0) >= HOT_INTEREST
    return bool(prospect.email or prospect.telefono or buying)


def turned_hot(messages: Sequence[ChatMessage], extracted_turns: int | None) -> bool:
    """Whether the chat is hot now but was not in the first `extracted_turns` turns, those the
    session's last extraction read (None: never extracted). Once hot, later signals wait for
    the paced or final extraction."""
    if extracted_turns and is_hot(messages[:extracted_turns]):
        return False
    return is_hot(messages)
