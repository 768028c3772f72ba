"""What the dashboard reads: named queries of `sql/dashboard.sql` through the store's door."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from nexus_ingest.db import connection
from nexus_ingest.queries import query
from nexus_ingest.spend import SpendRow
from nexus_ingest.store import fetch_prospect, spend
from nexus_ingest.timeline import Moment

Sort = Literal["interest", "recent", "name"]

_PROSPECT_LIMIT = 200
_HISTORY_LIMIT = 200
_TRACE_LIMIT = 500
_TIMELINE_SESSIONS = 10
SPEND_DAYS = 14
_ALL_DAYS = 100_000  # every day the extraction history holds
# Beyond this many prospects the overview shows the planner's estimate instead of a count.
EXACT_COUNT_UP_TO = 10_000


@dataclass(frozen=True)
class MinuteCount:
    """Pipeline traffic in one minute."""

    minute: datetime
    received: int
    extracted: int
    dead_lettered: int


@dataclass(frozen=True)
class Totals:
    """How many prospects there are: exact while few, else estimated (`prospects_estimated`)."""

    prospects: int
    prospects_estimated: bool


@dataclass(frozen=True)
class ProspectFilter:
    """How the prospects table is searched, filtered and sorted."""

    pattern: str | None = None
    intent: str | None = None
    sort: Sort = "recent"
    limit: int = _PROSPECT_LIMIT


@dataclass(frozen=True)
class ProspectSummary:
    """One row of the prospects table."""

    fingerprint_id: str
    session_id: str | None
    nombre: str | None
    email: str | None
    telefono: str | None
    empresa: str | None
    productos_interes: list[str]
    nivel_interes: int | None
    intencion: str | None
    idioma: str | None
    extraction_count: int
    updated_at: datetime


@dataclass(frozen=True)
class ExtractionRow:
    """One entry of a prospect's extraction history."""

    id: int
    msg_id: int | None
    session_id: str
    seq: int | None
    outcome: str
    extractor: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    batch: bool
    cost_usd: float | None
    latency_ms: float | None
    result: Mapping[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class TraceRow:
    """Where one message of a prospect's sessions is now; never its text."""

    place: str
    msg_id: int
    session_id: str | None
    seq: int | None
    turns: int | None
    read_ct: int
    enqueued_at: datetime
    settled_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class ProspectDetail:
    """A prospect's merged row, its extraction history and its messages' trace."""

    row: Mapping[str, Any]
    sessions: list[str]
    extractions: list[ExtractionRow]
    spend: list[SpendRow]  # per session and model
    trace: list[TraceRow]
    timelines: dict[str, list[Moment]]


async def _rows(
    pool: AsyncConnectionPool, name: str, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    async with connection(pool) as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query(name), params)
        return await cur.fetchall()


async def throughput(pool: AsyncConnectionPool) -> list[MinuteCount]:
    """Received, extracted and dead-lettered messages per minute over the last hour."""
    return [MinuteCount(**r) for r in await _rows(pool, "dashboard_throughput", {})]


async def totals(pool: AsyncConnectionPool) -> Totals:
    """How many prospects there are, counted up to `EXACT_COUNT_UP_TO`, else estimated."""
    [row] = await _rows(pool, "dashboard_totals", {"exact_up_to": EXACT_COUNT_UP_TO})
    return Totals(**row)


async def spend_by_day(pool: AsyncConnectionPool, days: int = SPEND_DAYS) -> list[SpendRow]:
    """What LLM extractions cost per day and model over the last `days` days."""
    return await spend(pool, days=days)


def prospects_params(search: ProspectFilter) -> dict[str, Any]:
    """The parameters of `dashboard_prospects` for `search`."""
    return {
        "pattern": search.pattern,
        "intent": search.intent,
        "sort": search.sort,
        "limit": search.limit,
    }


async def prospects(pool: AsyncConnectionPool, search: ProspectFilter) -> list[ProspectSummary]:
    """The prospects matching `search`, in its order."""
    params = prospects_params(search)
    return [ProspectSummary(**r) for r in await _rows(pool, "dashboard_prospects", params)]


async def prospect_detail(pool: AsyncConnectionPool, fingerprint_id: str) -> ProspectDetail | None:
    """Everything the dashboard shows about one visitor, or None when unknown."""
    if "\x00" in fingerprint_id:  # Postgres text cannot hold NUL, so no visitor has one
        return None
    row = await fetch_prospect(pool, fingerprint_id)
    if row is None:
        return None
    by_visitor = {"fingerprint_id": fingerprint_id}
    sessions = [r["session_id"] for r in await _rows(pool, "dashboard_sessions", by_visitor)]
    history = await _rows(pool, "dashboard_extractions", {**by_visitor, "limit": _HISTORY_LIMIT})
    by_session = await spend(pool, days=_ALL_DAYS, fingerprint_id=fingerprint_id)
    return ProspectDetail(
        row=row,
        sessions=sessions,
        extractions=[ExtractionRow(**r) for r in history],
        spend=by_session,
        trace=await trace(pool, sessions),
        timelines=await timelines(pool, sessions[-_TIMELINE_SESSIONS:]),
    )


async def trace(pool: AsyncConnectionPool, session_ids: Sequence[str]) -> list[TraceRow]:
    """The queued, archived and dead-lettered messages of these sessions, oldest first."""
    if not session_ids:
        return []
    params = {"session_ids": list(session_ids), "limit": _TRACE_LIMIT}
    return [TraceRow(**r) for r in await _rows(pool, "dashboard_trace", params)]


async def timelines(
    pool: AsyncConnectionPool, session_ids: Sequence[str]
) -> dict[str, list[Moment]]:
    """Every recorded moment of these sessions' messages, as `nexus trace` shows them, by
    session in the order given; read in one statement (see `dashboard_timelines`)."""
    found: dict[str, list[Moment]] = {s: [] for s in session_ids}
    if not found:
        return found
    for r in await _rows(pool, "dashboard_timelines", {"session_ids": list(found)}):
        detail = {k: v for k, v in (r["detail"] or {}).items() if v is not None}
        found[r["session_id"]].append(Moment(r["at"], r["msg_id"], r["event"], detail))
    return found
