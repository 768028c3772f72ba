"""A held transaction: one idle-in-transaction session pins the xmin horizon under load.

`nexus up` (rules extractor) takes a steady open-loop load in two windows: for `hold_s`
seconds, during which another session sits idle in a `REPEATABLE READ` transaction (so no
row version deleted or updated since it began can be vacuumed away), then `after_s` more
seconds once it has committed. The same run without the session is the reference. Compared:
the producer's latency and enqueue → row (a message's `enqueued_at` to its extraction's
`created_at`, both from the server's clock) in each window, and the dead row versions of every
table that grows (`pg_stat_user_tables.n_dead_tup`), sampled every `sample_s` seconds
throughout, to see whether they stop growing once the transaction ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from bench.common import (
    PRODUCER_PATH,
    bench_env,
    free_port,
    fresh_database,
    nexus,
    run_loadgen,
    wait_until_serving,
)
from bench.producer import wait_until_empty

RATE = 300
HOLD_S = 60.0
AFTER_S = 60.0
SAMPLE_S = 5.0
# The reference runs right before and right after the held one, as a drift in the machine's
# speed over minutes would otherwise pass for an effect of the transaction.
RUNS = ("without", "held", "without")
WINDOWS = ("first", "second")  # the transaction, in the held run, is open during the first
# Tables shown: those whose dead row versions reached this many at some point.
SHOWN_FROM_DEAD = 100

DEAD_TUPLES = """
SELECT schemaname || '.' || relname, n_dead_tup, autovacuum_count + vacuum_count
FROM pg_stat_user_tables
"""
ENQUEUE_TO_ROW = """
SELECT count(*),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ms)
FROM (SELECT extract(epoch FROM created_at - enqueued_at) * 1000 AS ms
      FROM prospect_extractions
      WHERE enqueued_at >= %(start)s AND enqueued_at < %(end)s) AS waits
"""


@dataclass
class Sampler:
    """Samples dead row versions per table on its own connection and thread."""

    url: str
    every_s: float
    phase: str = "start-up"
    samples: list[dict[str, object]] = field(default_factory=list)
    vacuums: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.monotonic()
        with psycopg.connect(self.url, autocommit=True) as conn:
            while True:
                rows = conn.execute(DEAD_TUPLES).fetchall()
                sample: dict[str, object] = {"t_s": round(time.monotonic() - started, 1)}
                self.samples.append({**sample, "phase": self.phase, **{r[0]: r[1] for r in rows}})
                self.vacuums = {r[0]: r[2] for r in rows}
                if self._stop.wait(self.every_s):
                    return

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


@dataclass(frozen=True)
class Load:
    """The open-loop load of one run: its rate, and how long each window lasts."""

    rate: float
    windows: tuple[float, float]
    warmup: float


def run(
    rate: float = RATE,
    hold_s: float = HOLD_S,
    after_s: float = AFTER_S,
    sample_s: float = SAMPLE_S,
    warmup: float = 1.0,
    runs: tuple[str, ...] = RUNS,
) -> list[dict[str, object]]:
    """Each of `runs` ("held" or "without") in turn: its phase rows, samples and vacuum counts."""
    rows: list[dict[str, object]] = []
    for run_no, variant in enumerate(runs, 1):
        load = Load(rate, (hold_s, after_s), warmup)
        rows += [{"run": run_no, **row} for row in _one_run(variant, load, sample_s)]
    return rows


def _one_run(variant: str, load: Load, sample_s: float) -> list[dict[str, object]]:
    with fresh_database() as url:
        port = free_port()
        with nexus(["up"], bench_env(url, port, NEXUS_EXTRACTOR="rules")):
            target = f"http://127.0.0.1:{port}{PRODUCER_PATH}"
            wait_until_serving(target)
            with Sampler(url, sample_s).running() as sampler:
                phases = _load_in_two_windows(url, target, variant, load, sampler)
                sampler.phase = "drained"
                wait_until_empty(url)
                time.sleep(sample_s)  # one more sample once the worker is idle
        phase_rows = [{**p, **_enqueue_to_row(url, p)} for p in phases]
        server = {"kind": "server", "variant": variant, "autovacuum": _autovacuum_on(url)}
    samples = [{"kind": "dead", "variant": variant, **s} for s in sampler.samples]
    vacuums = {"kind": "vacuums", "variant": variant, **sampler.vacuums}
    return [*({"kind": "phase", **_public(p)} for p in phase_rows), *samples, vacuums, server]


def _autovacuum_on(url: str) -> bool:
    """Whether the server runs autovacuum: without it, nothing removes dead row versions."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT current_setting('autovacuum')::boolean").fetchone()
    return bool(row and row[0])


def _load_in_two_windows(
    url: str, target: str, variant: str, load: Load, sampler: Sampler
) -> list[dict[str, object]]:
    phases = []
    with psycopg.connect(url, autocommit=True) as clock, _holder(url, variant == "held") as holder:
        for name, seconds in zip(WINDOWS, load.windows, strict=True):
            if name == "second":
                holder.release()
            sampler.phase = f"{name}{' (held)' if holder.holding else ''}"
            start = _now(clock)
            holder.check()
            figures = run_loadgen(target, load.rate, seconds, load.warmup)
            phases.append(
                {"variant": variant, "phase": name, "held": holder.holding, "start": start,
                 "end": _now(clock), **figures}
            )  # fmt: skip
            holder.check()
    return phases


class Holder:
    """A session idle in a REPEATABLE READ transaction, or nothing at all."""

    def __init__(self, url: str, conn: psycopg.Connection | None) -> None:
        self.url, self.conn = url, conn
        self.holding = conn is not None

    def check(self) -> None:
        """Fail the benchmark if the session held no snapshot while it should have."""
        if self.holding and not self._pins_xmin():
            raise RuntimeError("the held transaction did not hold the xmin horizon")

    def release(self) -> None:
        if self.conn is not None and self.holding:
            self.conn.execute("COMMIT")
            self.holding = False

    def _pins_xmin(self) -> bool:
        assert self.conn is not None
        with psycopg.connect(self.url, autocommit=True) as other:
            row = other.execute(
                "SELECT state, backend_xmin IS NOT NULL FROM pg_stat_activity WHERE pid = %s",
                (self.conn.info.backend_pid,),
            ).fetchone()
        return row == ("idle in transaction", True)


@contextmanager
def _holder(url: str, hold: bool) -> Iterator[Holder]:
    if not hold:
        yield Holder(url, None)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SELECT 1")
        holder = Holder(url, conn)
        try:
            yield holder
        finally:
            holder.release()


def _now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _enqueue_to_row(url: str, phase: dict[str, object]) -> dict[str, object]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            ENQUEUE_TO_ROW, {"start": phase["start"], "end": phase["end"]}
        ).fetchone()
    count, quantiles = (row[0], row[1] or [0.0] * 3) if row else (0, [0.0] * 3)
    e2r = dict(zip(("e2r_p50_ms", "e2r_p95_ms", "e2r_p99_ms"), quantiles, strict=True))
    return {"saved": count, **{k: round(float(v), 2) for k, v in e2r.items()}}


def _public(phase: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in phase.items() if k not in ("start", "end", "failures")}


if __name__ == "__main__":
    for row in run(hold_s=10, after_s=10, sample_s=2):
        print(row)
