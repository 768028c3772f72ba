"""Drain rate: how fast `nexus worker` empties a backlog, and its peak memory doing it."""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import ExitStack

import psycopg

from bench.common import (
    admin_url,
    bench_env,
    first_cpus,
    fresh_database,
    keep_to,
    nexus,
    server_kept_to,
    watch_drain,
)
from nexus_ingest import queue
from nexus_ingest.db import open_pool

# Long enough that the fastest consumer (the PGMQ floor, ~70,000 msgs/s here) drains for most
# of a second between 95% and 5% of it left: with 20,000, its steady rate rested on ten samples.
BACKLOG = 50_000


async def fill(url: str, count: int, sessions: int) -> float:
    """Queue `count` snapshots over `sessions` sessions; returns seconds taken."""
    pool = await open_pool(url, min_size=1, max_size=2)
    run_id = uuid.uuid4().hex[:6]
    started = time.perf_counter()
    try:
        for offset in range(0, count, 500):
            batch = [
                _snapshot(run_id, i % sessions) for i in range(offset, min(count, offset + 500))
            ]
            await queue.enqueue_many(pool, batch)
    finally:
        await pool.close()
    return time.perf_counter() - started


def _snapshot(run_id: str, session: int) -> queue.Snapshot:
    sid = f"drain-{run_id}-{session}"
    messages = [{"role": "user", "content": f"Hola, me llamo Cliente{session} y quiero precios"}]
    return queue.Snapshot(
        sid, sid, {"sessionId": sid, "fingerprint": sid, "messages": messages}, {}
    )


def run(
    extractor: str = "noop",
    count: int = BACKLOG,
    sessions: int | None = None,
    workers: int = 1,
    pgmq: str | None = None,
    cores: int | None = None,
    **settings: str,
) -> dict[str, object]:
    """Fill a backlog, then time `workers` worker processes draining it (on PGMQ `pgmq`, see
    common.fresh_database); with `cores`, the workers and the server are kept to that many of
    the machine's cores (see `can_keep_to`)."""
    cpus = first_cpus(cores) if cores else None
    if cores and cpus is None:
        raise ValueError(f"this machine cannot keep processes to {cores} of its cores")
    with fresh_database(pgmq) as url:
        fill_s = asyncio.run(fill(url, count, sessions or count))
        env = bench_env(url, NEXUS_EXTRACTOR=extractor, **settings)
        with ExitStack() as stack:
            if cpus and not stack.enter_context(server_kept_to(url, cpus)):
                raise ValueError("the server's processes cannot be kept to some cores")
            procs = [stack.enter_context(nexus(["worker"], env)) for _ in range(workers)]
            if cpus:
                keep_to(procs, cpus)
            drained = watch_drain(url, procs, count)
        saved = _count(url, "SELECT count(*) FROM prospect_data")
    return {
        "extractor": extractor,
        "workers": workers,
        **({"cores": cores} if cores else {}),
        "messages": count,
        "sessions": sessions or count,
        **drained.figures(count),
        "rows": saved,
        "fill_msgs_per_s": round(count / fill_s),
    }


def can_keep_to(cores: int) -> bool:
    """Whether `run(cores=...)` can work here: the machine has more cores than that, and the
    benchmark server runs on it with processes this user may keep to some of them."""
    cpus = first_cpus(cores)
    if cpus is None:
        return False
    with server_kept_to(admin_url(), cpus) as kept:
        return kept


def _count(url: str, statement: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(statement).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row else 0


if __name__ == "__main__":
    print(run("noop"))
