"""The same no-op backlog drained by two peers on the same server: pgqueuer and procrastinate.

Each peer gets a fresh database, its own schema installed through its own API and the backlog
enqueued in bulk (timed apart, not counted in the drain). Then one worker process is timed
from spawn to an empty queue while its resident memory is sampled, exactly as
`bench/drain.py` times `nexus worker`, so the figures compare side by side.

`python -m bench.peers` runs both; `python -m bench.peers worker NAME URL` is the worker
process itself. That process imports only the peer (not this harness), so its memory is the
peer's own.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

BACKLOG = 50_000  # as bench/drain.py's (not imported: the worker process imports no Nexus)
# pgqueuer's own benchmark (tools/benchmark.py, docs "Benchmarks") drains with five queue
# managers on their own asyncpg connections, batch size 10, under uvloop; its tuning guide
# says to raise the batch for sub-second jobs. Nexus reads 200 at a time, so pgqueuer gets the
# same batch, with the number of managers that drained fastest here (medians of 3 runs of
# 20,000 no-op jobs: 5 x 10: ~9,100/s, 5 x 50: 11,628, 5 x 200: 14,925, 3 x 100: 14,184,
# 1 x 200: 14,925, 1 x 500: 15,504, 2 x 200: 16,000). When Nexus went to reads of 400 the sweep
# was run again on a faster day (three rounds, medians): 2 x 200: 24,127, 2 x 400: 23,791,
# 1 x 400: 24,553, 3 x 400: 23,023; no setting beat 2 x 200 beyond the rounds' spread.
PGQUEUER_MANAGERS = 2
PGQUEUER_BATCH = 200
# Procrastinate fetches one job per round trip; for async jobs its docs say to raise
# `concurrency`. A no-op finishes at once, so a handful of slots keeps the fetch loop busy;
# more only adds lock contention on the same rows.
PROCRASTINATE_CONCURRENCY = 16


@dataclass(frozen=True)
class Peer:
    """How to install, fill and watch one peer's queue."""

    name: str
    settings: str
    remaining_sql: str


PEERS = {
    "pgqueuer": Peer(
        "pgqueuer",
        f"asyncpg + uvloop, {PGQUEUER_MANAGERS} QueueManagers x batch_size {PGQUEUER_BATCH}, "
        "durable tables (the default, as PGMQ's), `pgq autovac` settings",
        "SELECT count(*) FROM pgqueuer",
    ),
    "procrastinate": Peer(
        "procrastinate",
        f"PsycopgConnector (pool {PROCRASTINATE_CONCURRENCY + 2}), "
        f"worker concurrency {PROCRASTINATE_CONCURRENCY}, listen_notify on, jobs kept (default)",
        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    ),
}


def run(name: str, count: int = BACKLOG) -> dict[str, object]:
    """Fill a fresh database with `count` no-op jobs for peer `name`; time one worker draining it."""
    from bench.common import fresh_database, watch_drain

    peer = PEERS[name]
    with fresh_database() as url:
        enqueue_s = asyncio.run(_prepare(name, url, count))
        with _worker_process(name, url) as proc:
            drained = watch_drain(url, [proc], count, peer.remaining_sql)
    return {
        "queue": name,
        "messages": count,
        "enqueue_s": round(enqueue_s, 2),
        **drained.figures(count),
        "settings": peer.settings,
    }


def run_all(count: int = BACKLOG) -> list[dict[str, object]]:
    """Both peers, one after the other."""
    return [run(name, count) for name in PEERS]


async def _prepare(name: str, url: str, count: int) -> float:
    """Install the peer's schema, then enqueue the backlog; returns the enqueue seconds."""
    install, enqueue = _PREPARE[name]
    await install(url)
    started = time.perf_counter()
    await enqueue(url, count)
    return time.perf_counter() - started


@contextmanager
def _worker_process(name: str, url: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m bench.peers worker NAME URL`, terminated on exit."""
    args = [sys.executable, "-m", "bench.peers", "worker", name, url]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _asyncpg_params(url: str) -> dict[str, Any]:
    """asyncpg's keyword arguments for a libpq connection string."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(url)
    keys = {"host": "host", "port": "port", "user": "user", "password": "password"}
    found = {ours: params[theirs] for theirs, ours in keys.items() if params.get(theirs)}
    return {**found, "database": params.get("dbname")}


async def _pgqueuer_queries(url: str) -> Any:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    return Queries(AsyncpgDriver(await asyncpg.connect(**_asyncpg_params(url))))


async def _install_pgqueuer(url: str) -> None:
    queries = await _pgqueuer_queries(url)
    await queries.install()
    await queries.optimize_autovacuum()


async def _enqueue_pgqueuer(url: str, count: int) -> None:
    queries = await _pgqueuer_queries(url)
    await queries.enqueue(["noop"] * count, [None] * count, [0] * count)


def _procrastinate_app(url: str, pool_size: int = 2) -> Any:
    import procrastinate

    connector = procrastinate.PsycopgConnector(conninfo=url, min_size=pool_size, max_size=pool_size)
    app = procrastinate.App(connector=connector)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app


async def _install_procrastinate(url: str) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def _enqueue_procrastinate(url: str, count: int) -> None:
    app = _procrastinate_app(url)
    async with app.open_async():
        await app.tasks["noop"].batch_defer_async(*({} for _ in range(count)))


_PREPARE: dict[
    str,
    tuple[
        Callable[[str], Coroutine[Any, Any, None]],
        Callable[[str, int], Coroutine[Any, Any, None]],
    ],
] = {
    "pgqueuer": (_install_pgqueuer, _enqueue_pgqueuer),
    "procrastinate": (_install_procrastinate, _enqueue_procrastinate),
}


async def _pgqueuer_worker(url: str) -> None:
    """Several queue managers, each on its own connection, with a no-op entrypoint."""
    from pgqueuer import QueueManager
    from pgqueuer.models import Job

    async def manager() -> None:
        qm = QueueManager(await _pgqueuer_queries(url))

        @qm.entrypoint("noop")
        async def noop(job: Job) -> None:
            return None

        await qm.run(batch_size=PGQUEUER_BATCH)

    await asyncio.gather(*(manager() for _ in range(PGQUEUER_MANAGERS)))


async def _procrastinate_worker(url: str) -> None:
    app = _procrastinate_app(url, pool_size=PROCRASTINATE_CONCURRENCY + 2)
    async with app.open_async():
        await app.run_worker_async(concurrency=PROCRASTINATE_CONCURRENCY, wait=True)


_WORKERS: dict[str, Callable[[str], Coroutine[Any, Any, None]]] = {
    "pgqueuer": _pgqueuer_worker,
    "procrastinate": _procrastinate_worker,
}


def _serve(name: str, url: str) -> None:
    """Be the worker process: run peer `name` until terminated, on uvloop as `nexus worker` is."""
    import logging

    import uvloop

    logging.basicConfig(level=logging.WARNING)
    uvloop.run(_WORKERS[name](url))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command")
    worker = sub.add_parser("worker", help="run one peer's worker (used by the harness)")
    worker.add_argument("name", choices=sorted(PEERS))
    worker.add_argument("url")
    parser.add_argument("--count", type=int, default=BACKLOG)
    args = parser.parse_args(argv)
    if args.command == "worker":
        _serve(args.name, args.url)
        return
    from bench.common import table

    rows = run_all(args.count)
    print(table(rows, ["queue", "messages", "enqueue_s", "drain_s", "msgs_per_s", "peak_rss_mb"]))


if __name__ == "__main__":
    # Run as the importable `bench.peers`, not `__main__`: procrastinate warns about (and
    # cannot find tasks of) an app defined in the main module.
    from bench.peers import main as _main

    _main()
