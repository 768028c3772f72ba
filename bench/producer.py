"""Producer latency against the HTTP floor, the load driven from a separate process.

Three servers run side by side, each on its own fresh database: the HTTP floor (`nexus serve`
answering without the database, `bench/httpfloor.py`), `nexus serve`, and `nexus up` (API and
worker in one process, the worker draining with the rules extractor what the load posts).
Each round drives every server at every rate, one at a time, the floor right before or after
`nexus serve` (the order is reversed every other round, so a drift in the machine's speed hits
all alike); the figures compared are medians over rounds. The naive producer (one `pgmq.send`
and commit per request) is driven once at the end, as context.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import psycopg

from bench.common import (
    NEXUS,
    PRODUCER_PATH,
    QUEUE_TABLE,
    bench_env,
    free_port,
    fresh_database,
    process,
    run_loadgen,
    wait_until_serving,
)

RATES = (500, 1000)
ROUNDS = 5
NAIVE_RATE = 500
FLOOR = [sys.executable, "-m", "bench.httpfloor", "floor"]
NAIVE = [sys.executable, "-m", "bench.httpfloor", "naive"]


@dataclass(frozen=True)
class Server:
    """One server under load, and how to start it."""

    name: str
    argv: list[str]
    description: str


SERVERS = {
    "floor": Server("floor", FLOOR, "HTTP floor: `nexus serve` answering 202 without the database"),
    "serve": Server("serve", [NEXUS, "serve"], "`nexus serve`"),
    "up": Server("up", [NEXUS, "up"], "`nexus up`, its worker draining (rules extractor)"),
    "naive": Server("naive", NAIVE, "naive producer: one `pgmq.send` and commit per request"),
}
ROUND_ORDER = ("floor", "serve", "up")


@dataclass(frozen=True)
class Running:
    """A started server: where to post, and its database."""

    url: str
    database_url: str


def run(
    rates: tuple[int, ...] = RATES,
    duration: float = 10.0,
    rounds: int = ROUNDS,
    naive_rate: int | None = NAIVE_RATE,
    warmup: float = 1.0,
) -> list[dict[str, object]]:
    """Every server at every rate, round after round; one row per server, rate and round."""
    names = [*ROUND_ORDER, *(["naive"] if naive_rate else [])]
    rows: list[dict[str, object]] = []
    with ExitStack() as stack:
        running = {name: stack.enter_context(_spawned(SERVERS[name])) for name in names}
        for server in running.values():
            wait_until_serving(server.url)
        for round_no in range(1, rounds + 1):
            order = ROUND_ORDER if round_no % 2 else ROUND_ORDER[::-1]
            for rate in rates:
                for name in order:
                    load = run_loadgen(running[name].url, rate, duration, warmup)
                    rows.append(_finished(name, running[name], round_no, load))
        if naive_rate:
            load = run_loadgen(running["naive"].url, naive_rate, duration, warmup)
            rows.append(_finished("naive", running["naive"], 1, load))
    return rows


@contextmanager
def _spawned(server: Server) -> Iterator[Running]:
    with fresh_database() as url:
        port = free_port()
        with process(server.argv, bench_env(url, port, NEXUS_EXTRACTOR="rules")):
            yield Running(f"http://127.0.0.1:{port}{PRODUCER_PATH}", url)


def _finished(
    name: str, server: Running, round_no: int, load: dict[str, object]
) -> dict[str, object]:
    if name == "up":  # the next server's turn starts once this worker has caught up
        wait_until_empty(server.database_url)
    return {"server": name, "round": round_no, **load}


def wait_until_empty(url: str, timeout: float = 120.0) -> None:
    """Until the work queue holds nothing."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(f"SELECT count(*) FROM {QUEUE_TABLE}").fetchone()  # type: ignore[arg-type]
            if row and row[0] == 0:
                return
            time.sleep(0.1)
    raise RuntimeError(f"the queue was not drained within {timeout}s")


if __name__ == "__main__":
    from bench.common import table

    print(table(run(), ["server", "round", "target_rps", "errors", "p50_ms", "p95_ms", "p99_ms"]))
