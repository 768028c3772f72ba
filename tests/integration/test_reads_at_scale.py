"""The read paths at scale: what the dashboard, `nexus trace`, `nexus metrics` and the retention
read stays within what they show, however big the tables grow.

No timings: each test fills the tables with enough rows (and ANALYZE) for the planner's choice
to mean something, then asserts the plan of the query the code runs (no sequential scan of a
big table) or the rows it touched. docs/PERFORMANCE.md has the timings at a year's scale.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from nexus_ingest.dashboard import data
from nexus_ingest.queries import query
from nexus_ingest.timeline import timeline
from tests.helpers import free_port, nexus_env, nexus_process, wait_healthy

PROSPECTS = 30_000

# A year of history (two extractions a prospect, the newest in the last hour), a week of
# archive, dead letters over a month, a small backlog and the message events of a year.
_FILL = """
INSERT INTO public.prospect_data (fingerprint_id, session_id, nombre, email, telefono, empresa,
    productos_interes, nivel_interes, intencion, created_at, updated_at)
SELECT 'fp-' || g, 'sess-' || g, 'Nombre ' || g, 'user' || g || '@example.com', '+34 600 ' || g,
       'Empresa ' || (g %% 500), ARRAY['producto-' || (g %% 50)], 1 + g %% 10,
       (ARRAY['compra', 'informacion', 'soporte', 'queja', 'otro'])[1 + (g / 7) %% 5],
       now() - make_interval(secs => g * 1000), now() - make_interval(secs => g * 1000)
FROM generate_series(1, %(n)s) g;

INSERT INTO nexus.sessions (session_id, fingerprint_id, created_at, updated_at)
SELECT 'sess-' || g, 'fp-' || g, now() - make_interval(secs => g * 1000),
       now() - make_interval(secs => g * 1000)
FROM generate_series(1, %(n)s) g;

INSERT INTO public.prospect_extractions (msg_id, fingerprint_id, session_id, seq, outcome,
    extractor, model, input_tokens, output_tokens, result, enqueued_at, created_at, cost_usd)
SELECT g, 'fp-' || (1 + g / 2), 'sess-' || (1 + g / 2), 1 + g %% 2, 'applied', 'anthropic',
       'claude-haiku', 900, 120, '{}'::jsonb, now() - make_interval(secs => g * 500 + 2),
       now() - make_interval(secs => g * 500), 0.001
FROM generate_series(1, 2 * %(n)s) g;

INSERT INTO nexus.message_events (msg_id, session_id, event, attempt, at)
SELECT g, 'sess-' || (1 + g / 2), 'retry', 1, now() - make_interval(secs => g * 1000)
FROM generate_series(1, %(n)s) g;

INSERT INTO pgmq.a_nexus_prospect_ingestion (msg_id, enqueued_at, archived_at, vt, message, headers)
SELECT 10 * %(n)s + g, now() - make_interval(secs => g * 20 + 1), now() - make_interval(secs => g * 20),
       now(), jsonb_build_object('sessionId', 'sess-' || g, 'seq', 3),
       jsonb_build_object('x-pgmq-group', 'sess-' || g)
FROM generate_series(1, %(n)s) g;

INSERT INTO pgmq.q_nexus_prospect_ingestion_dlq (enqueued_at, vt, message, headers)
SELECT now() - make_interval(secs => g * 100), now(),
       jsonb_build_object('original', jsonb_build_object('sessionId', 'sess-' || g, 'seq', 1),
                          'originalMsgId', 20 * %(n)s + g,
                          'error', jsonb_build_object('reason', 'poison')),
       jsonb_build_object('x-pgmq-group', 'sess-' || g)
FROM generate_series(1, %(n)s / 3) g;

INSERT INTO pgmq.q_nexus_prospect_ingestion (enqueued_at, vt, message, headers)
SELECT now() - make_interval(secs => g), now(),
       jsonb_build_object('sessionId', 'sess-' || g, 'seq', 4),
       jsonb_build_object('x-pgmq-group', 'sess-' || g)
FROM generate_series(1, 1000) g;
"""

_FILLS = [statement.strip() for statement in _FILL.split(";") if statement.strip()]

BIG_TABLES = {
    "prospect_data",
    "prospect_extractions",
    "message_events",
    "sessions",
    "a_nexus_prospect_ingestion",
    "q_nexus_prospect_ingestion_dlq",
}


def _fill(conn: psycopg.Connection, n: int) -> None:
    for statement in _FILLS:
        conn.execute(statement, {"n": n})


async def _fill_small(pool: AsyncConnectionPool, n: int) -> None:
    async with pool.connection() as conn:
        for statement in _FILLS:
            await conn.execute(statement, {"n": n})


@pytest.fixture
def big_db(db_url: str) -> str:
    """The test's database, filled and analyzed."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        _fill(conn, PROSPECTS)
        conn.execute("ANALYZE")
    return db_url


def _plan(
    url: str, name: str, params: Mapping[str, Any], *, nested_loops_only: bool = False
) -> dict[str, Any]:
    """The executed plan of a named query, as the code runs it (parameters bound apart); with
    `nested_loops_only`, as a planner would join tables far bigger than the test's."""
    with psycopg.connect(url, autocommit=True) as conn:
        # One process reads each table: parallel workers would split the rows counted.
        conn.execute("SET max_parallel_workers_per_gather = 0")
        if nested_loops_only:
            conn.execute("SET enable_hashjoin = off")
            conn.execute("SET enable_mergejoin = off")
        sql = "EXPLAIN (ANALYZE, FORMAT JSON) " + query(name)
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def _nodes(plan: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _seq_scanned(plan: Mapping[str, Any]) -> set[str]:
    """The big tables the plan reads whole."""
    return {
        n["Relation Name"]
        for n in _nodes(plan)
        if n["Node Type"] == "Seq Scan" and n["Relation Name"] in BIG_TABLES
    }


def _rows_touched(plan: Mapping[str, Any], table: str) -> int:
    """Rows of `table` the plan's scans read, kept or thrown away."""
    touched = 0
    for n in _nodes(plan):
        if n.get("Relation Name") == table:
            read = n["Actual Rows"] + n.get("Rows Removed by Filter", 0)
            read += n.get("Rows Removed by Index Recheck", 0)
            touched += read * n["Actual Loops"]
    return touched


def test_the_throughput_chart_reads_only_the_last_hour(big_db: str) -> None:
    """Polled every 5 s: it read the whole history and archive (3 s at a year's scale)."""
    plan = _plan(big_db, "dashboard_throughput", {})
    # The test's 10,000 dead letters are few enough for a hash join over them all to be the
    # planner's right choice for the ~1,200 messages of the hour; among millions it is not.
    assert _seq_scanned(plan) - {"q_nexus_prospect_ingestion_dlq"} == set()
    assert _rows_touched(plan, "prospect_extractions") < PROSPECTS // 10
    assert _rows_touched(plan, "a_nexus_prospect_ingestion") < PROSPECTS // 10
    # Joined as among millions, every look-up, the dead letters' included, has its index.
    assert _seq_scanned(_plan(big_db, "dashboard_throughput", {}, nested_loops_only=True)) == set()


@pytest.mark.parametrize("days", [7, 14])
def test_llm_spend_reads_only_its_days(big_db: str, days: int) -> None:
    """The dashboard's spend panel (14 days) and `nexus metrics` (7) read the whole history."""
    plan = _plan(big_db, "llm_spend", {"fingerprint_id": None, "days": days})
    assert "prospect_extractions" not in _seq_scanned(plan)
    # Two extractions every 1,000 s: 173 a day.
    assert _rows_touched(plan, "prospect_extractions") <= 200 * days


async def test_the_prospect_count_is_estimated_once_large(
    big_db: str, pool: AsyncConnectionPool
) -> None:
    """Polled every 5 s, the overview counted every prospect, history row and session."""
    params = {"exact_up_to": data.EXACT_COUNT_UP_TO}
    plan = _plan(big_db, "dashboard_totals", params)
    assert _rows_touched(plan, "prospect_data") <= data.EXACT_COUNT_UP_TO
    assert {"prospect_extractions", "sessions"}.isdisjoint(
        n.get("Relation Name") for n in _nodes(plan)
    )
    totals = await data.totals(pool)
    assert totals.prospects_estimated
    assert abs(totals.prospects - PROSPECTS) < PROSPECTS // 10


async def test_a_small_prospect_count_is_exact(pool: AsyncConnectionPool) -> None:
    await _fill_small(pool, 7)  # no ANALYZE: nothing to estimate from
    assert await data.totals(pool) == data.Totals(prospects=7, prospects_estimated=False)


@contextmanager
def _dashboard(db_url: str) -> Iterator[httpx.Client]:
    port = free_port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules", NEXUS_ADMIN_TOKEN="t0ken")
    with nexus_process(["serve"], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        headers = {"Authorization": "Bearer t0ken"}
        with httpx.Client(base_url=base, timeout=10, headers=headers) as client:
            yield client


def test_the_overview_says_when_the_count_is_an_estimate(big_db: str) -> None:
    with _dashboard(big_db) as client:
        page = client.get("/dashboard/partials/metrics")
    assert page.status_code == 200
    assert "Prospects (estimate)" in page.text
    shown = re.search(r'data-metric="prospects" data-estimate="true">≈ ([0-9,]+)<', page.text)
    assert shown is not None
    assert abs(int(shown[1].replace(",", "")) - PROSPECTS) < PROSPECTS // 10


@pytest.mark.parametrize("sort", ["recent", "interest"])
@pytest.mark.parametrize("intent", [None, "queja"])
def test_each_sort_reads_its_first_page_off_an_index(
    big_db: str, sort: str, intent: str | None
) -> None:
    """By interest, ten levels apart, a tenth of the table was sorted. (By name it still is:
    see migration 024.)"""
    search = data.ProspectFilter(intent=intent, sort=sort)  # type: ignore[arg-type]
    plan = _plan(big_db, "dashboard_prospects", data.prospects_params(search))
    assert _seq_scanned(plan) == set()
    # A fifth of the rows has each intent: the first page is within its first thousand.
    assert _rows_touched(plan, "prospect_data") <= 2_000


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("dashboard_trace", {"session_ids": ["sess-42", "sess-43"], "limit": 500}),
        ("dashboard_timelines", {"session_ids": ["sess-42", "sess-43"]}),
        ("trace_timeline", {"session_id": "sess-42"}),
        ("trace_session_of_message", {"msg_id": 987_654_321}),
        ("trace_message_timeline", {"msg_id": 987_654_321}),
    ],
)
def test_a_session_or_message_is_looked_up_not_searched_for(
    big_db: str, name: str, params: Mapping[str, Any]
) -> None:
    """The prospect page and `nexus trace` read the whole archive and dead-letter queue for
    each session (0.2 s a session at a year's scale, up to ten sessions a page). The work
    queue is read whole still: it holds no index by session (see migration 024)."""
    plan = _plan(big_db, name, params)
    assert _seq_scanned(plan) == set()


def test_the_prospect_page_reads_the_backlog_once_for_all_its_sessions(big_db: str) -> None:
    sessions = [f"sess-{g}" for g in range(1, 11)]
    plan = _plan(big_db, "dashboard_timelines", {"session_ids": sessions})
    queue_scans = [
        n for n in _nodes(plan) if n.get("Relation Name") == "q_nexus_prospect_ingestion"
    ]
    assert len(queue_scans) == 1


async def test_the_prospect_pages_timelines_are_nexus_traces(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """Read in one statement for all sessions, each is what `nexus trace SESSION` shows."""
    await _fill_small(pool, 40)
    async with pool.connection() as conn:
        # A second session of one visitor, with a history row and a dead letter.
        await conn.execute(
            "INSERT INTO public.prospect_extractions (msg_id, fingerprint_id, session_id, seq,"
            " outcome, result, enqueued_at) VALUES (9001, 'fp-3', 'sess-x3', 1, 'applied',"
            " '{}', now())"
        )
    detail = await data.prospect_detail(pool, "fp-3")
    assert detail is not None
    assert sorted(detail.timelines) == ["sess-3", "sess-x3"]
    for session_id, moments in detail.timelines.items():
        _, expected = await timeline(pool, session_id)
        assert moments == expected
        assert moments


def test_retention_finds_the_aged_history_by_index(big_db: str) -> None:
    """The nightly retention read the whole history to find the day or so that aged out."""
    with psycopg.connect(big_db) as conn:
        conn.execute("SET max_parallel_workers_per_gather = 0")
        # Two percent of the history is older than 340 days.
        conn.execute(
            query("run_maintenance"),
            {"archive_days": 7, "history_days": 340, "dead_letter_days": 30},
        )
        row = conn.execute(
            "SELECT seq_scan, n_tup_del FROM pg_stat_xact_user_tables"
            " WHERE relid = 'public.prospect_extractions'::regclass"
        ).fetchone()
        conn.rollback()
    assert row is not None
    seq_scans, deleted = row
    assert deleted > 0
    assert seq_scans == 0
