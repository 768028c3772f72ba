"""Enqueue → row latency: from the moment a POST starts to the moment its prospect row exists."""

from __future__ import annotations

import time
import uuid

import httpx
import psycopg

from bench.common import (
    bench_env,
    free_port,
    fresh_database,
    metered,
    nexus,
    percentile,
    wait_until_serving,
)

MESSAGES = [
    {"role": "user", "content": "Hola"},
    {"role": "assistant", "content": "Hola, ¿en qué puedo ayudarte?"},
    {"role": "user", "content": "Me llamo Carlos y quiero información sobre los paquetes"},
]


def run(
    count: int = 500, rate: float = 50.0, extractor: str = "rules", pgmq: str | None = None
) -> dict[str, object]:
    """Post `count` one-snapshot sessions at `rate` per second to `nexus up`; latency per row
    (on PGMQ `pgmq`, see common.fresh_database)."""
    with fresh_database(pgmq) as url:
        return measure(url, bench_env(url, NEXUS_EXTRACTOR=extractor), count, rate)


def measure(url: str, env: dict[str, str], count: int, rate: float) -> dict[str, object]:
    """`nexus up` run with `env` on the migrated database `url`: `count` one-snapshot sessions
    posted at `rate` a second, each one's latency to its row, and what a snapshot cost the
    machine from the first post to the last row: at a trickle every read and save carries a
    few snapshots, so their fixed costs are most of it."""
    port = free_port()
    with nexus(["up"], {**env, "NEXUS_PORT": str(port)}) as proc:
        target = f"http://127.0.0.1:{port}/api/nexus/producer"
        wait_until_serving(target)
        # `nexus up` answers before its worker process has started (~0.5 s): what is posted
        # meanwhile waits in the queue. Measured is the pipeline running, so one snapshot
        # goes through first, outside the figures.
        _post_all(target, 1, rate, "warm-up")
        _wait_for_rows(url, 1)
        with metered(url, [proc]) as meter:
            started = _post_all(target, count, rate)
            _wait_for_rows(url, count + 1)
            cost = meter.cost(count)
    latencies = _latencies(url, started)
    return {
        "extractor": env.get("NEXUS_EXTRACTOR", ""),
        "snapshots": count,
        "rate_per_s": rate,
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": percentile(latencies, 1.0),
        **(cost.snapshot_figures() if cost else {}),
    }


def _post_all(target: str, count: int, rate: float, run_id: str = "") -> dict[str, float]:
    run_id = run_id or uuid.uuid4().hex[:8]
    started: dict[str, float] = {}
    with httpx.Client(timeout=10) as client:
        begin = time.monotonic()
        for i in range(count):
            pause = begin + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            fingerprint = f"lat-{run_id}-{i}"
            started[fingerprint] = time.time()
            body = {"messages": MESSAGES, "fingerprint": fingerprint, "sessionId": fingerprint}
            client.post(target, json=body).raise_for_status()
    return started


def _wait_for_rows(url: str, count: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM prospect_data").fetchone()
            if row and row[0] >= count:
                return
            time.sleep(0.05)
    raise RuntimeError(f"only some of {count} rows appeared within {timeout}s")


def _latencies(url: str, started: dict[str, float]) -> list[float]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT fingerprint_id, extract(epoch FROM created_at) FROM prospect_data"
        ).fetchall()
    return sorted((float(created) - started[fp]) * 1000 for fp, created in rows if fp in started)


if __name__ == "__main__":
    print(run())
