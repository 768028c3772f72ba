"""Pacing: which snapshots of a read an LLM worker extracts now, sends in a Message Batch, or
holds back until the extraction policy's time for them (`nexus_ingest.policy`).

A held-back snapshot is hidden until its time and its session released; the read that found it
is given back, so however often a snapshot is deferred it never nears the dead-letter queue. A
newer snapshot of the session, read meanwhile, is paced on its own; when the older one comes
back, the planner sees it superseded and acknowledges it without a call. Offline extractors
are never paced: they cost nothing, and their path stays as fast as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from nexus_ingest.policy import (
    Defer,
    ExtractInBatch,
    ExtractionPolicy,
    ExtractNow,
    SnapshotFacts,
    decide,
    turned_hot,
)
from nexus_ingest.queue import SessionProgress
from nexus_ingest.worker.plan import Deferral, WorkItem
from nexus_ingest.worker.settle import Settler


@dataclass(frozen=True)
class Paced:
    """A read's work items, sorted by what the policy decided for each."""

    now: list[WorkItem] = field(default_factory=list)
    batch: list[WorkItem] = field(default_factory=list)
    deferred: list[Deferral] = field(default_factory=list)


def facts_of(item: WorkItem, progress: SessionProgress | None) -> SnapshotFacts | None:
    """What the policy weighs about one snapshot; None when its session is unknown (a message
    without a session), which is then extracted at once."""
    if progress is None or progress.created_at is None:
        return None
    received = item.snapshot.received_at or item.message.enqueued_at
    return SnapshotFacts(
        received_at=received,
        session_started_at=min(progress.created_at, received),
        last_extracted_at=progress.extracted_at,
        turned_hot=turned_hot(item.snapshot.messages, progress.extracted_turns),
    )


def sort_work(
    items: Sequence[WorkItem],
    progress: dict[str, SessionProgress],
    now: datetime,
    policy: ExtractionPolicy,
) -> Paced:
    """Decide for every item: extract now, in a batch, or later."""
    paced = Paced()
    for item in items:
        session = item.message.session_id
        facts = facts_of(item, progress.get(session) if session is not None else None)
        decision = ExtractNow("first") if facts is None else decide(facts, now, policy)
        match decision:
            case ExtractNow():
                paced.now.append(item)
            case ExtractInBatch():
                paced.batch.append(item)
            case Defer(until=until, reason=reason):
                paced.deferred.append(Deferral(item, until, reason))
    return paced


class Pacer:
    """Applies the extraction policy to what an LLM worker reads, at the database's time (or
    `clock`'s, when a test moves time by hand)."""

    def __init__(
        self,
        settler: Settler,
        policy: ExtractionPolicy,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settler = settler
        self.policy = policy
        self.clock = clock

    async def pace(self, work: Sequence[WorkItem]) -> Paced:
        """Sort a read's work items and hide the deferred ones until their time."""
        sessions = sorted({s for item in work if (s := item.message.session_id) is not None})
        if not sessions:
            return Paced(now=list(work))
        now, progress = await self.settler.session_progress(sessions)
        paced = sort_work(work, progress, self.clock() if self.clock else now, self.policy)
        if paced.deferred:
            await self.settler.defer(paced.deferred)
        return paced
