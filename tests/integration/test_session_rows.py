"""A session row's rewrites stay on its page (HOT updates, migration 017)."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from nexus_ingest import queue
from nexus_ingest.extract.noop import NoopExtractor
from tests.worker_kit import FAST, fetch, queue_length, until

SESSIONS = 2000


async def _pages(pool: AsyncConnectionPool) -> dict[str, int]:
    rows = await fetch(pool, "SELECT session_id, (ctid::text::point)[0]::int FROM nexus.sessions")
    return dict(rows)  # type: ignore[arg-type]


async def test_a_drained_session_row_is_still_on_the_page_it_was_written_to(
    pool: AsyncConnectionPool, running: Any
) -> None:
    """Numbered by the producer, then leased and advanced by a draining worker, a session row is
    rewritten in place: a rewrite that finds no room on its page moves the row to another one,
    with new entries in both indexes. At `fillfactor = 70` 37-42% of the rows moved here; at 40,
    0-15 of 2,000 (a page whose dead versions a concurrent read's snapshot still covers)."""
    snapshots = [
        queue.Snapshot(
            f"s-{i}",
            f"fp-{i}",
            {
                "sessionId": f"s-{i}",
                "fingerprint": f"fp-{i}",
                "messages": [{"role": "user", "content": "hola"}],
            },
            {},
        )
        for i in range(SESSIONS)
    ]
    for start in range(0, SESSIONS, 500):
        await queue.enqueue_many(pool, snapshots[start : start + 500])
    written = await _pages(pool)
    assert len(written) == SESSIONS

    await running(NoopExtractor(), FAST)
    await until(lambda: _drained(pool), timeout=60, what="the backlog drained")

    after = await _pages(pool)
    applied = await fetch(pool, "SELECT count(*) FROM nexus.sessions WHERE applied_seq = 1")
    assert applied == [(SESSIONS,)]  # every row was leased and advanced, so rewritten twice
    moved = [s for s, page in after.items() if page != written[s]]
    assert len(moved) < SESSIONS // 20, f"{len(moved)} of {SESSIONS} session rows left their page"


async def _drained(pool: AsyncConnectionPool) -> bool:
    return await queue_length(pool) == 0
