"""The door to Postgres: the connection pool and the translation of driver errors into ours."""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from nexus_ingest.errors import ConfigError, DatabaseUnavailable
from nexus_ingest.queries import query

INT32_MAX = 2**31 - 1


class UnreadableJson:
    """Stands for a JSON value Python cannot hold (nested too deep): its row stays readable."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"<unreadable JSON, {self.size} bytes>"


def load_json(data: bytes | bytearray | memoryview | str) -> Any:
    """Decode one JSON value from the database, whatever it holds.

    orjson is several times faster than the standard library for the snapshots we move, but
    refuses what jsonb accepts: numbers beyond a double (`1e400`), very deep nesting. Such a
    value falls back to the standard library (numbers become inf), and failing that to an
    `UnreadableJson`, so one odd row never fails a whole read.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return UnreadableJson(len(text))


set_json_dumps(orjson.dumps)
set_json_loads(load_json)


def storable(value: Any) -> Any:
    """`value` with what Postgres cannot keep made keepable: no NUL in strings or keys (text and
    jsonb refuse it), no infinite or NaN numbers, no integers beyond 64 bits."""
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        return None
    return value


def bounded_count(value: Any) -> int:
    """A token count as an int32 column holds it: whole, not negative, at most 2**31 - 1."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0
    if math.isnan(number) or number <= 0:
        return 0
    return INT32_MAX if number >= INT32_MAX else round(number)


# psycopg prepares a statement server-side after this many uses; the hot queries run
# thousands of times, so preparing early saves parsing and planning on every call.
_PREPARE_THRESHOLD = 2


async def open_pool(
    url: str,
    *,
    min_size: int,
    max_size: int,
    timeout: float = 2.0,
    synchronous_commit: bool = True,
    application_name: str = "nexus",
) -> AsyncConnectionPool:
    """A connection pool that opens in the background, so a server starts even while Postgres is down.

    Its connections carry `application_name` unless the URL names them (see `named`).

    With `synchronous_commit` off, commits return before their WAL reaches the disk: a database
    crash may forget the last fraction of a second of them, each whole. Only for work that a
    redelivery repeats harmlessly (the worker's), never for what a client was told is stored.
    """
    pool = AsyncConnectionPool(
        named(kept_alive(url), application_name),
        min_size=min_size,
        max_size=max(min_size, max_size),
        timeout=timeout,
        open=False,
        reconnect_timeout=0,  # keep retrying for ever: an outage must not kill the pool
        kwargs={
            "autocommit": True,
            "connect_timeout": 3,
            "prepare_threshold": _PREPARE_THRESHOLD,
            # Whatever the database or role sets (`ALTER DATABASE ... SET client_encoding`):
            # conversations hold any script and emoji.
            "client_encoding": "UTF8",
        },
        configure=_configure_session if synchronous_commit else _configure_worker_session,
        name="nexus",
    )
    await pool.open(wait=False)
    return pool


def named(url: str, name: str) -> str:
    """`url` with `name` (`nexus api`, `nexus worker`, ...) as its `application_name`, shown in
    `pg_stat_activity` and the server's log, so whoever runs the database sees which process
    holds a connection; `url` as it is when it, or libpq's PGAPPNAME, already names one."""
    if "application_name" in conninfo_to_dict(url) or os.environ.get("PGAPPNAME"):
        return url
    return make_conninfo(url, application_name=name)


# TCP keepalives, so that a connection whose server vanished without a word (a failover, a
# dropped route) is found dead within about a minute instead of the kernel's two hours: idle
# for 30 s, then a probe every 10 s, given up after 3 unanswered. Unix sockets ignore them.
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


def kept_alive(url: str) -> str:
    """`url` with the keepalive parameters it leaves unset; those it sets are the user's."""
    given = conninfo_to_dict(url)
    missing = {name: value for name, value in _KEEPALIVES.items() if name not in given}
    return make_conninfo(url, **missing) if missing else url


async def _configure_session(conn: psycopg.AsyncConnection[Any]) -> None:
    """Dates in the one style psycopg reads, when the database or role set another; free when
    it did not (the server reports both styles when the connection opens)."""
    status = conn.info.parameter_status
    if not (status("DateStyle") or "ISO").startswith("ISO") or status("IntervalStyle") not in (
        None,
        "postgres",
    ):
        await conn.execute(query("readable_dates"))


async def _configure_worker_session(conn: psycopg.AsyncConnection[Any]) -> None:
    await _configure_session(conn)
    await conn.execute(query("commit_without_waiting"))


class UnsuitableDatabase(ConfigError):
    """The database at DATABASE_URL cannot hold Nexus's data safely."""


def check_usable(
    conn: psycopg.Connection[Any], connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    """Raise `UnsuitableDatabase`, saying what to change, unless the database behind `conn` can
    keep what Nexus acknowledges: UTF-8, writable, and one server session per connection.

    `connect` opens another connection the same way, to find a pooler in transaction mode."""
    encoding, read_only, pid = conn.execute(query("database_traits")).fetchone() or ("", False, 0)
    if encoding != "UTF8":
        # A snapshot with a character the encoding lacks (Cyrillic in LATIN1, anything but
        # ASCII in SQL_ASCII) would be accepted, then never stored.
        raise UnsuitableDatabase(
            f"the database's encoding is {encoding}; Nexus needs UTF8, since conversations hold "
            "any language and emoji: create a database with ENCODING 'UTF8' (e.g. CREATE DATABASE "
            "nexus ENCODING 'UTF8' TEMPLATE template0) and point DATABASE_URL at it"
        )
    if read_only:
        raise UnsuitableDatabase(
            "the database is read-only (a standby, or default_transaction_read_only is on for "
            "this database or role): point DATABASE_URL at the primary, or turn "
            "default_transaction_read_only off"
        )
    if _shares_server_sessions(conn, pid, connect):
        raise UnsuitableDatabase(
            "DATABASE_URL leads to a connection pooler in transaction mode (two of Nexus's "
            "connections were served by one server session): Nexus needs one server session per "
            "connection for its prepared statements, LISTEN and locks; connect directly, or "
            "through the pooler's session mode (PgBouncer pool_mode = session; Supabase: port "
            "5432 of the pooler, not 6543)"
        )


def _shares_server_sessions(
    conn: psycopg.Connection[Any], pid: int, connect: Callable[[], psycopg.Connection[Any]]
) -> bool:
    """Whether a pooler hands server sessions around between transactions (PgBouncer's or
    Supavisor's transaction mode).

    Directly or in session mode, a connection keeps its server session (its backend pid) for
    life, and no other open connection can have it. In transaction mode, the session `conn`
    just released goes to the next connection (PgBouncer reuses the latest freed first), and
    `conn`'s next transaction gets whichever is free: one of the two pids gives it away."""
    with connect() as other:
        row = other.execute(query("backend_pid")).fetchone()
    again = conn.execute(query("backend_pid")).fetchone()
    return (row is not None and row[0] == pid) or (again is not None and again[0] != pid)


@asynccontextmanager
async def connection(
    pool: AsyncConnectionPool, *, timeout: float | None = None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection; any failure to reach the database becomes `DatabaseUnavailable`."""
    try:
        async with asyncio.timeout(timeout), pool.connection() as conn:
            yield conn
    except (psycopg.OperationalError, PoolTimeout, TimeoutError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc


async def schema_version(pool: AsyncConnectionPool, *, timeout: float) -> int | None:
    """The newest migration applied to the database; None before the first `nexus migrate`."""
    async with connection(pool, timeout=timeout) as conn:
        try:
            row = await (await conn.execute(query("schema_version"))).fetchone()
        except psycopg.errors.UndefinedTable:
            return None
    return int(row[0]) if row and row[0] is not None else None


async def ping(pool: AsyncConnectionPool, *, timeout: float = 1.0) -> None:
    """Raise `DatabaseUnavailable` unless the database answers within `timeout` seconds."""
    async with connection(pool, timeout=timeout) as conn:
        await conn.execute(query("ping"))
