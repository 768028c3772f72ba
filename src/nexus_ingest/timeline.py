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
from nexus_ingest.validation import parse_bigint


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
    keeps only its own (a message put on the queue by hand may belong to no session). An
    all-digit key no message has is a session id: session ids may be numbers too."""
    msg_id = parse_bigint(key)  # the message id the key could be
    async with connection(pool) as conn:
        message = await _message_of(conn, msg_id) if msg_id is not None else None
        if message is None:
            session_id: str | None = key
            rows = await _rows(conn, "trace_timeline", {"session_id": key})
        else:
            session_id = message.session_id
            rows = await _rows(conn, *_message_query(message))
    moments = [
        Moment(at, mid, event, {k: v for k, v in detail.items() if v is not None})
        for at, mid, event, detail in rows
    ]
    if message is not None:
        moments = [m for m in moments if m.msg_id == message.msg_id]
    if not moments:
        raise InputError(f"nothing is known about {key!r} (no message or session has that id)")
    return session_id, moments


@dataclass(frozen=True)
class _Message:
    """A known message and its session (None: it was put on the queue without one)."""

    msg_id: int
    session_id: str | None


async def _message_of(conn: psycopg.AsyncConnection[Any], msg_id: int) -> _Message | None:
    """The message of that id, or None when no message has it."""
    row = await (
        await conn.execute(query("trace_session_of_message"), {"msg_id": msg_id})
    ).fetchone()
    return None if row is None else _Message(msg_id, cast(str | None, row[0]))


def _message_query(message: _Message) -> tuple[str, dict[str, Any]]:
    """A message's moments come from its session's timeline, or on their own without one."""
    if message.session_id is None:
        return "trace_message_timeline", {"msg_id": message.msg_id}
    return "trace_timeline", {"session_id": message.session_id}


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
