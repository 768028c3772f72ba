"""Pacing a read, pure: the facts each snapshot is judged by, what the policy decides for each,
and the bill a save carries to the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import orjson

from nexus_ingest.extract.base import Extraction
from nexus_ingest.models import Prospect, QueuedSnapshot
from nexus_ingest.policy import ExtractionPolicy
from nexus_ingest.queue import GROUP_HEADER, MsgId, QueuedMessage, SessionProgress
from nexus_ingest.store import SaveRequest
from nexus_ingest.worker.pace import facts_of, sort_work
from nexus_ingest.worker.plan import WorkItem

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
POLICY = ExtractionPolicy(first_within_s=5, interval_s=30, quiet_s=20)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def item(session: str | None, said: list[str], received: float | None, msg_id: int = 1) -> WorkItem:
    """A snapshot of `session` read from the queue, received at `received` seconds."""
    body: dict[str, Any] = {
        "sessionId": session or "none",
        "fingerprint": "fp",
        "messages": [{"role": "user", "content": text} for text in said],
    }
    if received is not None:
        body["receivedAt"] = at(received).isoformat()
    headers = {GROUP_HEADER: session} if session else {}
    message = QueuedMessage(MsgId(msg_id), 1, at(-1), body, headers, uuid4(), 1)
    return WorkItem(message, QueuedSnapshot.model_validate(body))


def progress(
    started: float, extracted: float | None = None, turns: int | None = None
) -> SessionProgress:
    return SessionProgress(at(started), None if extracted is None else at(extracted), turns)


def test_facts_come_from_the_snapshot_and_its_session() -> None:
    """The receipt time is the producer's stamp (else the queue's), and the chat turned hot
    only when the turns after the last extraction made it so."""
    hot_now = item("s", ["hola", "mi email es a@b.example"], received=12)
    facts = facts_of(hot_now, progress(started=0, extracted=8, turns=1))
    assert facts is not None
    assert (facts.received_at, facts.session_started_at, facts.last_extracted_at) == (
        at(12),
        at(0),
        at(8),
    )
    assert facts.turned_hot
    was_hot = facts_of(hot_now, progress(started=0, extracted=8, turns=2))
    assert was_hot is not None and not was_hot.turned_hot
    unstamped = facts_of(item("s", ["hola"], received=None), progress(started=-5))
    assert unstamped is not None and unstamped.received_at == at(-1)


def test_a_message_without_a_known_session_is_extracted_at_once() -> None:
    """No session (a message put on the queue by hand), or none on record: no policy applies."""
    lone = item(None, ["hola"], received=0)
    paced = sort_work([lone], {}, at(0), POLICY)
    assert paced.now == [lone] and paced.deferred == [] and paced.batch == []
    assert facts_of(item("s", ["hola"], 0), SessionProgress(None, None, None)) is None


def test_a_read_is_sorted_into_now_later_and_batch() -> None:
    """A new session waits for its first deadline, a hot one goes at once, an overdue one
    goes now, and backlog goes in a batch when batching is on."""
    new = item("new", ["hola"], received=1, msg_id=1)
    hot = item("hot", ["quiero comprar"], received=1, msg_id=2)
    due = item("due", ["hola"], received=2, msg_id=3)
    sessions = {"new": progress(0), "hot": progress(0), "due": progress(-10)}
    paced = sort_work([new, hot, due], sessions, at(2), POLICY)
    assert paced.now == [hot, due] and paced.batch == []
    [deferral] = paced.deferred
    assert (deferral.item, deferral.until, deferral.reason) == (new, at(5), "first")
    batching = ExtractionPolicy(batch_min_age_s=600)
    old = sort_work([new], sessions, at(601), batching)
    assert old.batch == [new] and old.now == []


def test_a_save_carries_the_bill_and_the_turns_read() -> None:
    """The save item has the cache writes, the batch mark, the cost (a free model's 0 too) and
    the number of turns; offline extractions leave them out."""
    billed = Extraction(
        Prospect(), "anthropic", "m", 500, 20, 300, cache_write_tokens=100, batch=True
    )
    item = SaveRequest(1, "fp", "s", 1, billed, cost_usd=0.0, turns=4).as_item()
    assert (item["cache_write_tokens"], item["batch"], item["cost_usd"], item["turns"]) == (
        100,
        True,
        0.0,
        4,
    )
    offline = SaveRequest(2, "fp", "s", 2, Extraction(Prospect(), "rules")).as_item()
    assert not {"cache_write_tokens", "batch", "cost_usd", "turns"} & set(offline)


def test_a_save_item_carries_the_prospect_as_json_and_never_a_nul() -> None:
    """The prospect goes into the save as the JSON of its set fields; a NUL, which jsonb
    refuses, is removed, and a text that only looks like one stays as it is."""

    def saved(prospect: Prospect) -> Any:
        item = SaveRequest(1, "fp", "s", 1, Extraction(prospect, "rules")).as_item()
        return orjson.loads(orjson.dumps(item))["data"]

    assert saved(Prospect(nombre="Ana", nivel_interes=7, productos_interes=["CRM"])) == {
        "nombre": "Ana",
        "nivel_interes": 7,
        "productos_interes": ["CRM"],
    }
    assert saved(Prospect(nombre="Ro\x00sa", resumen="\x00")) == {
        "nombre": "Rosa",
        "resumen": "",
        "productos_interes": [],
    }
    assert saved(Prospect(nombre="a\\u0000b"))["nombre"] == "a\\u0000b"
