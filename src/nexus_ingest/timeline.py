"""`nexus trace`: the timeline of a session's (or one message's) way from receipt to save."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg_pool import AsyncConnectionPool

from nexus_ingest.db import connection
from nexus_ingest.errors import InputError
from nexus_ingest.queries import query


@dataclass(frozen=True)
class Moment:
    """One step of a message's path."""

    at: datetime
    msg_id: int
    event: str
    detail: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "msgId": self.msg_id, "event": self.event, **self.detail}


async def timeline(pool: AsyncConnectionPool, key: str) -> tuple[str | None, list[Moment]]:
    """The session a key names (a session id, or a message id) and its moments; a message id
    keeps only its own (a message put on the queue by hand may belong to no session)."""
    msg_id = int(key) if key.isdigit() else None
    async with connection(pool) as conn:
        session_id: str | None = key
        if msg_id is not None:
            session_id = await _session_of(conn, msg_id)
        if session_id is None:
            rows = await _rows(conn, "trace_message_timeline", {"msg_id": msg_id})
        else:
            rows = await _rows(conn, "trace_timeline", {"session_id": session_id})
    moments = [
        Moment(at, mid, event, {k: v for k, v in detail.items() if v is not None})
        for at, mid, event, detail in rows
    ]
    if msg_id is not None:
        moments = [m for m in moments if m.msg_id == msg_id]
    if not moments:
        raise InputError(f"nothing is known about {key!r}")
    return session_id, moments


async def _session_of(conn: psycopg.AsyncConnection[Any], msg_id: int) -> str | None:
    row = await (
        await conn.execute(query("trace_session_of_message"), {"msg_id": msg_id})
    ).fetchone()
    if row is None:
        raise InputError(f"no message {msg_id} is known")
    return cast(str | None, row[0])


async def _rows(
    conn: psycopg.AsyncConnection[Any], name: str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    return await (await conn.execute(query(name), params)).fetchall()


def render(session_id: str | None, moments: list[Moment]) -> str:
    """A readable timeline, one line per moment, times relative to the first."""
    start = moments[0].at
    lines = [f"session {session_id}" if session_id else f"message {moments[0].msg_id} (no session)"]
    for m in moments:
        offset = (m.at - start).total_seconds() * 1000
        detail = " ".join(f"{k}={v}" for k, v in m.detail.items())
        lines.append(f"  +{offset:9.1f} ms  msg {m.msg_id:<8} {m.event:<22} {detail}".rstrip())
    return "\n".join(lines)
