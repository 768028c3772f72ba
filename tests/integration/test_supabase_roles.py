"""The anon key's reach on a Supabase-like database: Supabase's default privileges in force
before migrating, Queues enabled (pgmq 1.5.1) and exposed via PostgREST. anon may enqueue a chat
snapshot to the ingestion queue, and nothing else."""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from nexus_ingest.db import open_pool
from nexus_ingest.extract.rules import RulesExtractor
from nexus_ingest.migrate import migrate
from nexus_ingest.models import SnapshotIn
from nexus_ingest.settings import Settings
from nexus_ingest.traceparent import trace_id
from nexus_ingest.validation import Limits, check_snapshot
from nexus_ingest.worker import WorkerConfig, consume_once
from tests.helpers import SEED_CONVERSATION, new_database
from tests.pgmq_versions import create_extension, offered
from tests.supabase_project import browser_grants, expose_queues, make_supabase_like, psql

BROWSER_ROLES = ["anon", "authenticated"]
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "SUPABASE.md"


@pytest.fixture(scope="module")
def supabase_db(pg_admin_url: str) -> Iterator[str]:
    """A database set up as a Supabase project is (roles, default privileges, pgmq 1.5.1 with
    its queues exposed via PostgREST), migrated."""
    with new_database(pg_admin_url, "nexus_roles") as (name, url), offered(pg_admin_url, name):
        make_supabase_like(url)
        create_extension(url, "1.5.1")
        expose_queues(url)
        migrate(url)
        yield url


def as_role(url: str, role: str, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement as `role` (as PostgREST does for a request) and return its rows."""
    with psycopg.connect(url) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        cursor = conn.execute(statement, params or None)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def snapshot(**overrides: Any) -> dict[str, Any]:
    session = f"s-{uuid.uuid4().hex[:8]}"
    return {**SEED_CONVERSATION, "fingerprint": f"fp-{session}", "sessionId": session, **overrides}


def send(url: str, role: str, queue: str, body: object) -> int:
    rows = as_role(url, role, "SELECT pgmq_send(%s, %s, 0)", queue, Jsonb(body))
    return int(rows[0][0])


def test_supabase_defaults_are_in_force(supabase_db: str) -> None:
    """The test database grants new objects in public to anon, as a Supabase project does."""
    with psycopg.connect(supabase_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.canary (id int)")
        row = conn.execute(
            "SELECT has_table_privilege('anon', 'public.canary', 'SELECT')"
        ).fetchone()
        conn.execute("DROP TABLE public.canary")
    assert row == (True,)


@pytest.mark.parametrize("role", BROWSER_ROLES)
def test_browsers_enqueue_snapshots_numbered_in_their_session(supabase_db: str, role: str) -> None:
    """A snapshot sent by anon or authenticated is queued as the producer queues it: seq and group."""
    body = snapshot()
    first = send(supabase_db, role, "nexus-prospect-ingestion", body)
    second = send(supabase_db, role, "nexus-prospect-ingestion", body)
    with psycopg.connect(supabase_db) as conn:
        rows = conn.execute(
            "SELECT msg_id, message ->> 'seq', headers ->> 'x-pgmq-group'"
            " FROM pgmq.q_nexus_prospect_ingestion WHERE msg_id IN (%s, %s) ORDER BY msg_id",
            (first, second),
        ).fetchall()
    assert rows == [(first, "1", body["sessionId"]), (second, "2", body["sessionId"])]
    # Each starts a trace of its own, as a POST does: the worker's lines about it carry its id.
    with psycopg.connect(supabase_db) as conn:
        traces = conn.execute(
            "SELECT headers ->> 'traceparent' FROM pgmq.q_nexus_prospect_ingestion"
            " WHERE msg_id IN (%s, %s)",
            (first, second),
        ).fetchall()
    ids = {trace_id(t) for (t,) in traces}
    assert None not in ids and len(ids) == 2, traces


async def test_a_snapshot_sent_by_anon_becomes_a_prospect(supabase_db: str) -> None:
    """The worker processes what anon sent through pgmq_send like a producer's snapshot."""
    body = snapshot()
    send(supabase_db, "anon", "nexus-prospect-ingestion", body)
    pool = await open_pool(supabase_db, min_size=1, max_size=2)
    try:
        answer: dict[str, Any] = {"status": "success"}
        while answer["status"] != "empty":
            answer = await consume_once(pool, RulesExtractor(), WorkerConfig(batch_size=50))
    finally:
        await pool.close()
    with psycopg.connect(supabase_db) as conn:
        row = conn.execute(
            "SELECT p.nombre, s.applied_seq FROM prospect_data p"
            " JOIN nexus.sessions s ON s.session_id = p.session_id WHERE p.fingerprint_id = %s",
            (body["fingerprint"],),
        ).fetchone()
    assert row == ("Carlos", 1)


@pytest.mark.parametrize("role", BROWSER_ROLES)
@pytest.mark.parametrize(
    "queue",
    [
        "nexus-prospect-ingestion-dlq",
        "nexus_prospect_ingestion_dlq",
        "orders",
        "NEXUS-PROSPECT-INGESTION",
    ],
)
def test_browsers_reach_no_other_queue(supabase_db: str, role: str, queue: str) -> None:
    """The dead-letter queue or any other queue is refused, saying which queue is open."""
    with pytest.raises(
        psycopg.errors.InsufficientPrivilege, match="may only send to nexus-prospect-ingestion"
    ):
        send(supabase_db, role, queue, snapshot())


def test_service_role_keeps_the_seeds_wrapper_for_any_queue(supabase_db: str) -> None:
    """service_role may still send to the dead-letter queue and read it back (the seed's contract)."""
    msg_id = send(supabase_db, "service_role", "nexus-prospect-ingestion-dlq", {"any": "body"})
    read = as_role(
        supabase_db,
        "service_role",
        "SELECT msg_id FROM pgmq_read('nexus-prospect-ingestion-dlq', 30, 10)",
    )
    assert (msg_id,) in read


# The producer's defaults, which the SQL checks mirror (whatever this environment sets).
LIMITS = Settings.model_construct()
TURN = {"role": "user", "content": "hola"}

MALFORMED: dict[str, tuple[object, str]] = {
    "not an object": (["hola"], "must be a JSON object"),
    "unknown field": (snapshot(seq=7), "seq: unknown field"),
    "no messages": ({"fingerprint": "f", "sessionId": "s"}, "messages: required"),
    "empty messages": (snapshot(messages=[]), "messages: required, a non-empty list"),
    "a turn is text": (snapshot(messages=["hola"]), r"messages\[0\]: must be"),
    "a turn has more": (snapshot(messages=[{**TURN, "name": "x"}]), r"messages\[0\]: must be"),
    "an unknown role": (
        snapshot(messages=[{"role": "bot", "content": "x"}]),
        r"messages\[0\]\.role",
    ),
    "blank content": (
        snapshot(messages=[{"role": "user", "content": "  "}]),
        r"messages\[0\]\.content",
    ),
    "content not text": (
        snapshot(messages=[{"role": "user", "content": 5}]),
        r"messages\[0\]\.content",
    ),
    "control characters": (
        snapshot(messages=[{"role": "user", "content": "a\u0007"}]),
        "control characters",
    ),
    "no fingerprint": ({"messages": [TURN], "sessionId": "s"}, "fingerprint: required"),
    "blank sessionId": (snapshot(sessionId="   "), "sessionId: must not be blank"),
    "padded sessionId": (snapshot(sessionId=" s1"), "surrounding spaces"),
    "fingerprint not text": (snapshot(fingerprint=123), "fingerprint: required, a string"),
    "metadata not an object": (snapshot(metadata=[1]), "metadata: must be an object"),
    "metadata too deep": (snapshot(metadata={"a": [[[[[[[[[1]]]]]]]]]}), "nested deeper than 8"),
    "too many turns": (
        snapshot(messages=[TURN] * (LIMITS.max_messages + 1)),
        f"at most {LIMITS.max_messages} messages",
    ),
    "too long a turn": (
        snapshot(messages=[{"role": "user", "content": "x" * (LIMITS.max_content_chars + 1)}]),
        f"at most {LIMITS.max_content_chars} characters",
    ),
    "too long an id": (
        snapshot(sessionId="s" * (LIMITS.max_id_chars + 1)),
        f"at most {LIMITS.max_id_chars} characters",
    ),
    "too large": (
        snapshot(messages=[{"role": "user", "content": "x" * LIMITS.max_content_chars}] * 33),
        f"larger than {LIMITS.max_body_bytes} bytes",
    ),
}


@pytest.mark.parametrize(("body", "says"), list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_body_that_is_no_chat_snapshot_is_refused_clearly(
    supabase_db: str, body: object, says: str
) -> None:
    """Shape and size are checked in SQL: a clear 22023 error (PostgREST's 400), nothing queued."""
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=f"not a chat snapshot: .*{says}"
    ) as raised:
        send(supabase_db, "anon", "nexus-prospect-ingestion", body)
    assert (
        raised.value.diag.message_hint is not None and "sessionId" in raised.value.diag.message_hint
    )


def test_a_session_of_another_visitor_is_refused_clearly(supabase_db: str) -> None:
    """As at the producer: a sessionId taken by another fingerprint is a clear 22023 error
    (PostgREST's 400) for the browser that sent it, and nothing is queued."""
    first = snapshot()
    send(supabase_db, "anon", "nexus-prospect-ingestion", first)
    second = {**first, "fingerprint": "fp-someone-else"}
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="sessionId: already in use under another"
    ):
        send(supabase_db, "anon", "nexus-prospect-ingestion", second)
    with psycopg.connect(supabase_db) as conn:
        rows = conn.execute(
            "SELECT message ->> 'fingerprint' FROM pgmq.q_nexus_prospect_ingestion"
            " WHERE headers ->> 'x-pgmq-group' = %s",
            (first["sessionId"],),
        ).fetchall()
    assert rows == [(first["fingerprint"],)]


def test_a_snapshot_is_held_back_a_minute_at_most(supabase_db: str) -> None:
    """The seed's `delay` stays, up to 60 s: beyond, one anonymous call could park a snapshot
    for weeks, aging the queue's oldest message (and so the producer's health) all that time."""
    kept = as_role(
        supabase_db,
        "anon",
        "SELECT pgmq_send('nexus-prospect-ingestion', %s, 60)",
        Jsonb(snapshot()),
    )
    with psycopg.connect(supabase_db) as conn:
        row = conn.execute(
            "SELECT vt - enqueued_at FROM pgmq.q_nexus_prospect_ingestion WHERE msg_id = %s",
            (kept[0][0],),
        ).fetchone()
    assert row is not None and 59 <= row[0].total_seconds() <= 61
    parked = snapshot()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="delay: at most 60 seconds"):
        as_role(
            supabase_db,
            "anon",
            "SELECT pgmq_send('nexus-prospect-ingestion', %s, 2147483)",
            Jsonb(parked),
        )
    with psycopg.connect(supabase_db) as conn:
        queued = conn.execute(
            "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion"
            " WHERE headers ->> 'x-pgmq-group' = %s",
            (parked["sessionId"],),
        ).fetchone()
    assert queued == (0,)


def test_the_producers_limits_themselves_are_accepted(supabase_db: str) -> None:
    """A snapshot exactly at each of the producer's limits is queued."""
    at_limits = snapshot(
        messages=[{"role": "assistant", "content": "y" * LIMITS.max_content_chars}]
        + [TURN] * (LIMITS.max_messages - 1),
        fingerprint="f" * LIMITS.max_id_chars,
        sessionId="s" * LIMITS.max_id_chars,
        metadata={"a": [[[[[[[1]]]]]]]},
    )
    assert send(supabase_db, "anon", "nexus-prospect-ingestion", at_limits) > 0


UNREADABLE = [
    "public.prospect_data",
    "public.prospect_extractions",
    "pgmq.q_nexus_prospect_ingestion",
    "pgmq.a_nexus_prospect_ingestion",
    "pgmq.q_nexus_prospect_ingestion_dlq",
    "pgmq.a_nexus_prospect_ingestion_dlq",
    "pgmq.meta",
    "nexus.sessions",
    "nexus.message_events",
    "nexus.idempotency_keys",
    "nexus.schema_migrations",
]


@pytest.mark.parametrize("role", BROWSER_ROLES)
@pytest.mark.parametrize("table", UNREADABLE)
def test_browsers_read_nothing(supabase_db: str, role: str, table: str) -> None:
    """Prospects, their history, queues, dead letters and Nexus's own tables are closed to anon."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_role(supabase_db, role, f"SELECT * FROM {table} LIMIT 1")


UNCALLABLE = [
    "SELECT * FROM pgmq_read('nexus-prospect-ingestion', 30, 10)",
    "SELECT pgmq_delete('nexus-prospect-ingestion', 1)",
    "SELECT pgmq_archive('nexus-prospect-ingestion', 1)",
    "SELECT * FROM pgmq_metrics('nexus-prospect-ingestion')",
    "SELECT update_prospect_data('fp', 's', '{\"nombre\": \"X\"}')",
    "SELECT * FROM nexus.read_snapshots('nexus_prospect_ingestion', 30, 10, gen_random_uuid())",
    "SELECT nexus.forget_prospect('fp')",
    "SELECT nexus.send_message('orders', '{}', 0)",
    "SELECT nexus.run_maintenance()",
    "SELECT nextval('public.prospect_data_id_seq')",
    # pgmq's own functions, which Studio's "Expose Queues via PostgREST" opens to anon.
    "SELECT * FROM pgmq.read('nexus_prospect_ingestion', 30, 10)",
    "SELECT * FROM pgmq.pop('nexus_prospect_ingestion')",
    "SELECT pgmq.send('nexus_prospect_ingestion', '{}', 0)",
    "SELECT pgmq.delete('nexus_prospect_ingestion', 1)",
    "SELECT pgmq.archive('nexus_prospect_ingestion', 1)",
    "SELECT * FROM pgmq.metrics('nexus_prospect_ingestion')",
    "SELECT * FROM pgmq.list_queues()",
    "SELECT pgmq.purge_queue('nexus_prospect_ingestion_dlq')",
    "SELECT pgmq.drop_queue('nexus_prospect_ingestion_dlq')",
    "SELECT pgmq.create('nexus_prospect_ingestion_copy')",
    # Not setval: were it allowed, it would break every later enqueue of this module's tests.
    "SELECT nextval('pgmq.q_nexus_prospect_ingestion_msg_id_seq')",
    "SELECT last_value FROM pgmq.q_nexus_prospect_ingestion_dlq_msg_id_seq",
]


@pytest.mark.parametrize("statement", UNCALLABLE)
def test_anon_calls_nothing_that_reads_or_changes_data(supabase_db: str, statement: str) -> None:
    """The reading wrappers, the merge and Nexus's internals refuse anon, despite Supabase's defaults."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        as_role(supabase_db, "anon", statement)


def test_the_only_definer_function_open_to_browsers_is_send_snapshot(supabase_db: str) -> None:
    """No function that runs with its owner's rights is executable by anon or authenticated but
    the validating enqueue (a later migration adding one must revoke it from PUBLIC)."""
    with psycopg.connect(supabase_db) as conn:
        rows = conn.execute(
            "SELECT DISTINCT p.oid::regprocedure::text FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace,"
            " unnest(ARRAY['anon', 'authenticated']) AS r(role)"
            " WHERE p.prosecdef AND n.nspname IN ('public', 'nexus', 'pgmq')"
            "   AND has_function_privilege(r.role, p.oid, 'EXECUTE')"
            "   AND has_schema_privilege(r.role, n.oid, 'USAGE')"
        ).fetchall()
    assert rows == [("nexus.send_snapshot(jsonb,integer)",)]


def test_browsers_hold_no_privilege_on_any_table_or_sequence(supabase_db: str) -> None:
    """Not a table, view or sequence of public, nexus or pgmq is open to anon or authenticated,
    not even the queues' id sequences that exposing Queues grants them (`setval` to the largest
    bigint would make every later enqueue fail)."""
    assert browser_grants(supabase_db) == []


def test_the_guides_statement_closes_queues_exposed_after_migrating(supabase_db: str) -> None:
    """Exposing Queues after `nexus migrate` grants the queues' id sequences again; the statement
    docs/SUPABASE.md gives for that case takes them back."""
    expose_queues(supabase_db)
    assert ("anon", "pgmq.q_nexus_prospect_ingestion_msg_id_seq") in browser_grants(supabase_db)
    statement = re.search(
        r"<!-- test: expose-queues -->\n```sql\n(.*?)```", GUIDE.read_text(), re.DOTALL
    )
    assert statement, "docs/SUPABASE.md has no block marked expose-queues"
    done = psql(supabase_db, script=statement[1])
    assert done.returncode == 0, done.stderr
    assert browser_grants(supabase_db) == []


def producer_refuses(body: dict[str, Any]) -> bool:
    limits = Limits(LIMITS.max_messages, LIMITS.max_content_chars, LIMITS.max_id_chars)
    return bool(check_snapshot(SnapshotIn.model_validate(body), limits))


# Every character that Python counts as a space or as a format character (zero-width, bidi),
# and some that it counts as neither.
ODD_CHARACTERS = [
    chr(c) for c in range(1, 0x110000) if chr(c).isspace() or unicodedata.category(chr(c)) == "Cf"
] + ["ñ", "用", "\U0001f44d", "\u00b7", "\u2800", "\u3164", "\u115f"]


def test_ids_and_turns_are_held_to_the_producers_characters(supabase_db: str) -> None:
    """The SQL check refuses an id or a turn exactly when the producer does, whatever spaces or
    invisible characters it holds, and whatever the database's locale takes for a space."""
    bodies = []
    for char in ODD_CHARACTERS:
        bodies += [
            snapshot(sessionId=f"s-{char}"),
            snapshot(fingerprint=f"{char}fp"),
            snapshot(messages=[{"role": "user", "content": char * 2}]),
            snapshot(messages=[{"role": "user", "content": f"hola{char}"}]),
        ]
    with psycopg.connect(supabase_db) as conn:
        refused = conn.execute(
            "SELECT nexus.snapshot_problem(b) IS NOT NULL FROM unnest(%s::jsonb[]) AS b",
            ([Jsonb(b) for b in bodies],),
        ).fetchall()
    differ = [
        (b, sql_refuses)
        for b, (sql_refuses,) in zip(bodies, refused, strict=True)
        if sql_refuses != producer_refuses(b)
    ]
    assert differ == []


@pytest.mark.parametrize("session_id", ["s-\u200b1", "s-1\u00a0", "\u202es-1"])
def test_an_id_the_producer_refuses_is_refused_to_anon(supabase_db: str, session_id: str) -> None:
    """A sessionId with an invisible or no-break character, which the producer refuses, is a
    clear 22023 error (PostgREST's 400) for anon too."""
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="sessionId: no "):
        send(supabase_db, "anon", "nexus-prospect-ingestion", snapshot(sessionId=session_id))
