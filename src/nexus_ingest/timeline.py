"""`nexus trace`: the timeline of a session's (or one message's) way from receipt to save."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

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


async def timeline(pool: AsyncConnectionPool, key: str) -> tuple[str, list[Moment]]:
    """The session a key names (a session id, or a message id) and its moments; a message id keeps only its own."""
    async with connection(pool) as conn:
        msg_id = int(key) if key.isdigit() else None
        session_id = key
        if msg_id is not None:
            row = await (
                await conn.execute(query("trace_session_of_message"), {"msg_id": msg_id})
            ).fetchone()
            if row is None:
                raise InputError(f"no message {msg_id} is known")
            session_id = row[0]
        rows = await (
            await conn.execute(query("trace_timeline"), {"session_id": session_id})
        ).fetchall()
    moments = [
        Moment(at, mid, event, {k: v for k, v in detail.items() if v is not None})
        for at, mid, event, detail in rows
    ]
    if msg_id is not None:
        moments = [m for m in moments if m.msg_id == msg_id]
    if not moments:
        raise InputError(f"nothing is known about {key!r}")
    return session_id, moments


def render(session_id: str, moments: list[Moment]) -> str:
    """A readable timeline, one line per moment, times relative to the first."""
    start = moments[0].at
    lines = [f"session {session_id}"]
    for m in moments:
        offset = (m.at - start).total_seconds() * 1000
        detail = " ".join(f"{k}={v}" for k, v in m.detail.items())
        lines.append(f"  +{offset:9.1f} ms  msg {m.msg_id:<8} {m.event:<22} {detail}".rstrip())
    return "\n".join(lines)
