"""Batch planning, pure: which messages of a read to extract, which are superseded, which are poison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from pydantic import ValidationError

from nexus_ingest.models import QueuedSnapshot
from nexus_ingest.queue import QueuedMessage


class WorkItem(NamedTuple):
    """The newest snapshot of one session in a batch, decoded (a named tuple, as
    `queue.QueuedMessage` is: one is made for every message read)."""

    message: QueuedMessage
    snapshot: QueuedSnapshot


@dataclass(frozen=True)
class Deferral:
    """A snapshot the extraction policy holds back until `until`, and why (`policy.Reason`)."""

    item: WorkItem
    until: datetime
    reason: str


@dataclass(frozen=True)
class BatchPlan:
    """What to do with one read: extract some, acknowledge superseded ones, dead-letter poison."""

    work: list[WorkItem] = field(default_factory=list)
    superseded: list[QueuedMessage] = field(default_factory=list)
    undecodable: list[tuple[QueuedMessage, str]] = field(default_factory=list)
    exhausted: list[QueuedMessage] = field(default_factory=list)

    @property
    def size(self) -> int:
        """How many messages the read returned."""
        return len(self.work) + len(self.superseded) + len(self.undecodable) + len(self.exhausted)


def decode(message: QueuedMessage) -> QueuedSnapshot | str:
    """The snapshot in a message, or why it cannot be read."""
    try:
        return QueuedSnapshot.model_validate(message.body)
    except ValidationError as exc:
        return f"undecodable payload: {exc.error_count()} validation errors"


def plan_batch(messages: Sequence[QueuedMessage], *, max_reads: int | None = None) -> BatchPlan:
    """Keep only each session's newest snapshot; older ones are superseded without extraction.

    A snapshot holds the whole conversation so far, so a newer one of the same session (in
    this batch, or already queued behind it per the message's `last_seq`) makes it redundant.
    A snapshot read more than `max_reads` times is exhausted, whatever made the earlier reads
    fail (a crash, a lost save), and is dead-lettered before it reaches the extractor.
    """
    plan = BatchPlan()
    newest: dict[str, WorkItem] = {}
    for message in messages:
        snapshot = decode(message)
        if isinstance(snapshot, str):
            plan.undecodable.append((message, snapshot))
            continue
        current = newest.get(snapshot.session_id)
        if current is None or _seq(snapshot) > _seq(current.snapshot):
            if current is not None:
                plan.superseded.append(current.message)
            newest[snapshot.session_id] = WorkItem(message, snapshot)
        else:
            plan.superseded.append(message)
    for item in newest.values():
        if _seq(item.snapshot) < (item.message.last_seq or 0):
            plan.superseded.append(item.message)
        elif max_reads is not None and item.message.read_ct > max_reads:
            plan.exhausted.append(item.message)
        else:
            plan.work.append(item)
    return plan


def _seq(snapshot: QueuedSnapshot) -> int:
    return snapshot.seq or 0
