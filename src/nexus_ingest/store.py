"""The prospect tables: merging extractions into `prospect_data`, reading and forgetting visitors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, NamedTuple, cast
from uuid import UUID

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from nexus_ingest.db import bounded_count, connection, storable
from nexus_ingest.errors import SaveFailed, SaveRejected
from nexus_ingest.extract.base import Extraction
from nexus_ingest.models import Prospect
from nexus_ingest.queries import query
from nexus_ingest.spend import SpendRow

SaveOutcome = Literal["applied", "stale", "duplicate", "forgotten"]


class SaveRequest(NamedTuple):
    """One extraction to merge into `prospect_data`, and the queued message it came from (a
    named tuple, as `queue.QueuedMessage` is, for the same reason)."""

    msg_id: int
    fingerprint_id: str
    session_id: str
    seq: int | None
    extraction: Extraction
    enqueued_at: datetime | None = None
    lease: UUID | None = None
    received_at: datetime | None = None  # when the producer received the snapshot
    cost_usd: float | None = None  # None: the model has no price (or there is no model)
    turns: int | None = None  # how many turns the extraction read

    def as_item(self) -> dict[str, Any]:
        """The request as one item of `nexus.save_extractions`; absent keys read as null or 0.

        What the extractor returned is made storable here (no NUL, counts within an integer
        column), so a value no column holds never fails the batch it is in.
        """
        extraction = self.extraction
        item: dict[str, Any] = {
            "msg_id": self.msg_id,
            "fingerprint_id": self.fingerprint_id,
            "session_id": self.session_id,
            "data": _prospect_json(extraction.prospect),
            "extractor": storable(extraction.extractor),
            "latency_ms": extraction.latency_ms,
        }
        # Every byte is parsed again by the server, so nulls and zero counts are left out.
        for key, value in (
            ("seq", self.seq),
            ("lease", self.lease),
            ("turns", self.turns),
            ("enqueued_at", self.enqueued_at),
            ("received_at", self.received_at),
        ):
            if value:
                item[key] = value
        if extraction.billed:
            item.update(_bill(extraction, self.cost_usd))
        return item


def _prospect_json(prospect: Prospect) -> Any:
    """The prospect as a save item carries it: serialised by pydantic (the item's JSON embeds
    it as is), unless it holds a NUL, which jsonb refuses and `storable` removes."""
    text = prospect.model_dump_json(exclude_none=True)
    if "\\u0000" in text:  # how JSON writes a NUL (or a backslash before "u0000": rare, harmless)
        return storable(prospect.model_dump(mode="json", exclude_none=True))
    return orjson.Fragment(text)


def _bill(extraction: Extraction, cost_usd: float | None) -> dict[str, Any]:
    """An LLM extraction's model, tokens (within an integer column) and cost, for a save item."""
    bill: dict[str, Any] = {}
    if extraction.model:
        bill["model"] = storable(extraction.model)
    for key, count in (
        ("input_tokens", extraction.input_tokens),
        ("output_tokens", extraction.output_tokens),
        ("cached_tokens", extraction.cached_tokens),
        ("cache_write_tokens", extraction.cache_write_tokens),
    ):
        if bounded := bounded_count(count):
            bill[key] = bounded
    if extraction.batch:
        bill["batch"] = True
    if cost_usd is not None:  # a free model costs 0, which is not unknown
        bill["cost_usd"] = cost_usd
    return bill


async def save_extractions(
    conn: psycopg.AsyncConnection[Any],
    requests: Sequence[SaveRequest],
    *,
    queue: str,
    archive: bool,
) -> list[SaveOutcome]:
    """Merge extractions, record their history, acknowledge their messages and release their
    sessions, in one statement and the caller's transaction; one outcome per request, in order.
    """
    if not requests:
        return []
    params = {"queue": queue, "items": Jsonb([r.as_item() for r in requests]), "archive": archive}
    try:
        rows = await (await conn.execute(query("save_extractions"), params)).fetchall()
    except (psycopg.DataError, psycopg.IntegrityError, psycopg.errors.ProgramLimitExceeded) as exc:
        raise SaveRejected(f"the database refused the batch: {type(exc).__name__}") from exc
    except psycopg.OperationalError:
        raise  # the connection's own failure: the caller's `connection()` makes it ours
    except psycopg.Error as exc:
        raise SaveFailed(
            f"saving {len(requests)} extractions failed: {type(exc).__name__}"
        ) from exc
    outcomes = {msg_id: cast(SaveOutcome, outcome) for msg_id, outcome in rows}
    return [outcomes[r.msg_id] for r in requests]


async def spend(
    pool: AsyncConnectionPool, *, days: int, fingerprint_id: str | None = None
) -> list[SpendRow]:
    """What LLM extractions cost over the last `days` days (UTC): per day and model, newest day
    first; or, for one visitor, per session and model, oldest session first."""
    params = {"days": max(1, days), "fingerprint_id": fingerprint_id}
    async with connection(pool) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("llm_spend"), params)
        return [SpendRow(**row) for row in await cur.fetchall()]


async def fetch_prospect(
    pool: AsyncConnectionPool, fingerprint_id: str
) -> Mapping[str, Any] | None:
    """The merged prospect row of one visitor, or None."""
    async with connection(pool) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query("prospect_by_fingerprint"), {"fingerprint_id": fingerprint_id})
        return await cur.fetchone()


async def forget_prospect(pool: AsyncConnectionPool, fingerprint_id: str) -> dict[str, int]:
    """Erase one visitor everywhere; returns how many rows went from each place."""
    async with connection(pool) as conn, conn.transaction():
        row = await (
            await conn.execute(query("forget_prospect"), {"fingerprint_id": fingerprint_id})
        ).fetchone()
    return dict(row[0]) if row else {}
