"""The PGMQ floor: the fastest a single consumer can empty the drain benchmark's backlog.

One connection (psycopg 3, autocommit) reads 200 messages with `pgmq.read` and deletes them with
one `pgmq.delete(queue, ids[])`, in a loop, until a read comes back empty. The backlog is the
drain benchmark's (same size, same bodies, same queue table and server), the session settings
the worker's (`synchronous_commit = off`), and the process is timed from its spawn exactly as
`nexus worker` is, so the two compare side by side: what Nexus does beyond read and delete
(session leases, the merge, history, its Python) is the gap between them.

`python -m bench.pgmqfloor URL` is the consumer process; it imports nothing of the harness.
"""

from __future__ import annotations

import sys

QUEUE = "nexus_prospect_ingestion"
BATCH = 200
VT_S = 60


def consume(url: str) -> int:
    """Read and delete until the queue is empty; returns how many messages were taken."""
    import orjson
    import psycopg
    from psycopg.types.json import set_json_loads

    set_json_loads(orjson.loads)  # as the worker decodes bodies
    taken = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        while rows := conn.execute(
            "SELECT * FROM pgmq.read(%s, %s, %s)", (QUEUE, VT_S, BATCH)
        ).fetchall():
            conn.execute("SELECT pgmq.delete(%s, %s::bigint[])", (QUEUE, [r[0] for r in rows]))
            taken += len(rows)
    return taken


def run(count: int) -> dict[str, object]:
    """Fill the drain benchmark's backlog in a fresh database; time the floor consumer on it."""
    import asyncio

    from bench.common import bench_env, fresh_database, process, watch_drain
    from bench.drain import fill

    with fresh_database() as url:
        asyncio.run(fill(url, count, count))
        argv = [sys.executable, "-m", "bench.pgmqfloor", url]
        with process(argv, bench_env(url)) as proc:
            drained = watch_drain(url, [proc], count)
    return {"queue": "pgmq floor", "messages": count, **drained.figures(count)}


if __name__ == "__main__":
    consume(sys.argv[1])
