"""This checkout against an earlier revision, on one server, in alternation: did a change cost speed?

    python -m bench.revisions 3d5ff72              # ~10 minutes: no-op and rules drains, producer
    python -m bench.revisions 3d5ff72 --quick      # smoke run
    python -m bench.revisions 3d5ff72 --trickle-only   # only what a snapshot costs at 50/s
    python -m bench.revisions 3d5ff72 --trickle-only --trickle-rate 2   # ... at 2/s
    python -m bench.revisions 3d5ff72 --up-only    # only the producer's p99 under `nexus up`

The earlier revision is checked out into a temporary git worktree and run from this environment
(its `src/` first on PYTHONPATH), so both sides use the same libraries. Each side migrates and
fills its own fresh database with its own code, since a queue body or a SQL function may differ
between them; the drain is watched and the load driven by this checkout's harness, so both are
measured alike. Every round runs: both sides' no-op drain, pgqueuer's, both sides' rules drain,
both sides' `nexus up` at a trickle of 50 snapshots a second (what a snapshot costs the server
and Nexus), both sides' producer at 500 req/s; which side goes first swaps every round, and
medians over rounds are compared, as ratios to pgqueuer (the drains) and to each other, with the
rounds each side won. Each drain also gives the CPU its worker spent a message: on a machine whose speed
drifts by a third within a run, five rounds of rates can miss a 10% change that the CPU a
message shows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import NamedTuple

from bench import latency, peers
from bench.common import (
    bench_env,
    empty_database,
    free_port,
    nexus,
    run_loadgen,
    table,
    wait_until_serving,
    watch_drain,
)
from bench.drain import BACKLOG

ROOT = Path(__file__).resolve().parent.parent
# Run in a side's own code: migrate a fresh database, then queue a backlog with its queue module.
_PREPARE = """
import asyncio, sys, uuid
from nexus_ingest import queue
from nexus_ingest.migrate import migrate
try:
    from nexus_ingest.db import open_pool
except ImportError:  # before the worker became a package, the pool lived in store
    from nexus_ingest.store import open_pool

async def fill(url, count):
    pool = await open_pool(url, min_size=1, max_size=2)
    run = uuid.uuid4().hex[:6]
    try:
        for offset in range(0, count, 500):
            batch = []
            for i in range(offset, min(count, offset + 500)):
                sid = f"rev-{run}-{i}"
                text = f"Hola, me llamo Cliente{i} y quiero precios"
                body = {"sessionId": sid, "fingerprint": sid, "messages": [{"role": "user", "content": text}]}
                batch.append(queue.Snapshot(sid, sid, body, {}))
            await queue.enqueue_many(pool, batch)
    finally:
        await pool.close()

url, count = sys.argv[1], int(sys.argv[2])
migrate(url)
if count:
    asyncio.run(fill(url, count))
"""
Row = dict[str, object]
# Snapshots a second in the trickle: about one a read, as on a site with a few chats going.
TRICKLE_RATE = 50.0


@contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """`revision` checked out in a temporary folder, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="nexus-rev-") as folder:
        tree = Path(folder) / "tree"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", str(tree), revision], check=True)
        try:
            yield tree
        finally:
            subprocess.run([*git, "worktree", "remove", "--force", str(tree)], check=False)


def side_env(tree: Path | None, env: dict[str, str]) -> dict[str, str]:
    """`env` running the code of `tree` (None: this checkout)."""
    if tree is None:
        return env
    return {**env, "PYTHONPATH": os.pathsep.join([str(tree / "src"), env.get("PYTHONPATH", "")])}


@contextmanager
def side_database(tree: Path | None, backlog: int) -> Iterator[str]:
    """A fresh database migrated, and filled with `backlog` snapshots, by the code of `tree`."""
    with empty_database() as url:
        argv = [sys.executable, "-c", _PREPARE, url, str(backlog)]
        subprocess.run(argv, env=side_env(tree, dict(os.environ)), check=True, timeout=600)
        yield url


class SideDrain(NamedTuple):
    """One side's drain: its steady rate, and the CPU its worker spent a message, which drifts
    less with a shared machine's speed than the rate does."""

    msgs_per_s: float
    worker_cpu_us: float | None  # None when the drain could not measure it


def drain(tree: Path | None, extractor: str, backlog: int) -> SideDrain:
    """How one worker process of `tree` drains a backlog, in steady state (after start-up)."""
    with side_database(tree, backlog) as url:
        env = side_env(tree, bench_env(url, NEXUS_EXTRACTOR=extractor))
        with nexus(["worker"], env) as proc:
            drained = watch_drain(url, [proc], backlog)
    figures = drained.figures(backlog)
    cpu_us = figures.get("consumer_cpu_us_per_msg")
    return SideDrain(
        float(figures["steady_msgs_per_s"]),  # type: ignore[arg-type]
        None if cpu_us is None else float(cpu_us),  # type: ignore[arg-type]
    )


def producer_p99(tree: Path | None, rate: int, seconds: float, command: str = "serve") -> float:
    """`nexus serve` (or `nexus up`, its worker extracting what the load posts) of `tree`: p99
    in ms at `rate` requests a second."""
    with side_database(tree, 0) as url:
        port = free_port()
        env = side_env(tree, bench_env(url, port, NEXUS_EXTRACTOR="rules"))
        with nexus([command], env):
            target = f"http://127.0.0.1:{port}/api/nexus/producer"
            wait_until_serving(f"http://127.0.0.1:{port}/metrics")
            result = run_loadgen(target, rate, seconds)
    if result.get("errors"):
        print(f"   {result['errors']} errors", file=sys.stderr)
    return float(result["p99_ms"])  # type: ignore[arg-type]


def trickle(tree: Path | None, count: int, rate: float) -> dict[str, object]:
    """`nexus up` of `tree` at a trickle of one-snapshot sessions (see `latency.measure`)."""
    with side_database(tree, 0) as url:
        env = side_env(tree, bench_env(url, NEXUS_EXTRACTOR="rules"))
        return latency.measure(url, env, count, rate)


def run(
    revision: str,
    after: str | None,
    rounds: int,
    backlog: int,
    seconds: float,
    only: str | None = None,
    trickle_rate: float = TRICKLE_RATE,
) -> list[Row]:
    """One row per round: every figure of both sides, and pgqueuer's; `only` "noop",
    "trickle" or "up" (the producer's p99 under `nexus up`) runs that part alone."""
    rows = []
    with ExitStack() as trees:
        old = trees.enter_context(worktree(revision))
        new = trees.enter_context(worktree(after)) if after else None
        for round_no in range(1, rounds + 1):
            sides: list[tuple[str, Path | None]] = [("before", old), ("after", new)]
            if round_no % 2 == 0:
                sides.reverse()
            row: Row = {"round": round_no}
            for extractor in {None: ("noop", "rules"), "noop": ("noop",)}.get(only, ()):
                for name, tree in sides:
                    _say(f"round {round_no}: {name}, {extractor} drain")
                    drained = drain(tree, extractor, backlog)
                    row[f"{name} {extractor}"] = round(drained.msgs_per_s)
                    row[f"{name} {extractor} cpu µs"] = drained.worker_cpu_us
                if extractor == "noop":
                    _say(f"round {round_no}: pgqueuer")
                    row["pgqueuer"] = peers.run("pgqueuer", backlog)["steady_msgs_per_s"]
            for name, tree in sides if only in (None, "trickle") else []:
                _say(f"round {round_no}: {name}, trickle")
                # At least 40 snapshots: CPU time is counted in 10 ms clock ticks.
                count = max(40, round(trickle_rate * seconds))
                paced = trickle(tree, count, trickle_rate)
                row[f"{name} trickle pg µs"] = paced.get("postgres_cpu_us_per_snapshot")
                row[f"{name} trickle nexus µs"] = paced.get("nexus_cpu_us_per_snapshot")
            for name, tree in sides if only is None else []:
                _say(f"round {round_no}: {name}, producer")
                row[f"{name} p99 ms"] = round(producer_p99(tree, 500, seconds), 2)
            for name, tree in sides if only == "up" else []:
                _say(f"round {round_no}: {name}, nexus up")
                row[f"{name} up p99 ms"] = round(producer_p99(tree, 500, seconds, "up"), 2)
            rows.append(row)
    return rows


# Each figure: its name in the summary, and whether more of it is better.
_FIGURES = {
    "noop": ("noop drain, msgs/s", True),
    "noop cpu µs": ("noop worker CPU, µs a message", False),
    "rules": ("rules drain, msgs/s", True),
    "rules cpu µs": ("rules worker CPU, µs a message", False),
    "trickle pg µs": ("Postgres CPU a snapshot at a trickle (nexus up), µs", False),
    "trickle nexus µs": ("nexus up's CPU a snapshot at a trickle, µs", False),
    "p99 ms": ("producer p99, ms", False),
    "up p99 ms": ("producer p99 under nexus up, ms", False),
}


def summary(rows: list[Row]) -> list[Row]:
    """Medians over rounds, each side's drain over pgqueuer's, after over before, and in how
    many rounds the after side came out better."""

    def median(key: str) -> float | None:
        """Over the rounds that measured it; a figure no round measured is None, never 0."""
        known = [float(r[key]) for r in rows if r.get(key) is not None]  # type: ignore[arg-type]
        return statistics.median(known) if known else None

    pgqueuer = median("pgqueuer")
    out = []
    for figure, (name, more_is_better) in _FIGURES.items():
        if f"before {figure}" not in rows[0]:
            continue
        before, after = median(f"before {figure}"), median(f"after {figure}")
        better = _rounds_better(rows, figure, more_is_better)
        both = before is not None and after is not None
        out.append(
            {
                "figure": name,
                "before": "unknown" if before is None else round(before, 2),
                "after": "unknown" if after is None else round(after, 2),
                "after / before": f"{after / before:.2f}x" if both else "",  # type: ignore[operator]
                "after better in": f"{better} of {len(rows)} rounds",
                "before / pgqueuer": _over(before, pgqueuer) if figure == "noop" else "",
                "after / pgqueuer": _over(after, pgqueuer) if figure == "noop" else "",
            }
        )
    return out


def _over(value: float | None, reference: float | None) -> str:
    return "" if value is None or not reference else f"{value / reference:.2f}x"


def _rounds_better(rows: list[Row], figure: str, more_is_better: bool) -> int:
    """The rounds in which the after side beat the before side; a tie, or a round that did not
    measure both sides, counts for neither."""
    better = 0
    for row in rows:
        before_value, after_value = row.get(f"before {figure}"), row.get(f"after {figure}")
        if before_value is None or after_value is None:
            continue
        before, after = float(before_value), float(after_value)  # type: ignore[arg-type]
        better += after > before if more_is_better else after < before
    return better


def _say(what: str) -> None:
    print(f"== {what} ==", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.revisions", description=__doc__)
    parser.add_argument("revision", help="the earlier git revision (a commit, tag or branch)")
    parser.add_argument("--after", help="a later revision to compare (default: this checkout)")
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument(
        "--noop-only", dest="only", action="store_const", const="noop", help="only the no-op drains"
    )
    parts.add_argument(
        "--trickle-only",
        dest="only",
        action="store_const",
        const="trickle",
        help="only `nexus up` at a trickle",
    )
    parts.add_argument(
        "--up-only",
        dest="only",
        action="store_const",
        const="up",
        help="only the producer's p99 under `nexus up`",
    )
    parser.add_argument(
        "--trickle-rate", type=float, default=TRICKLE_RATE, help="snapshots a second"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="messages per drain")
    parser.add_argument("--quick", action="store_true", help="one round, small backlog")
    args = parser.parse_args(argv)
    rounds, backlog, seconds = (1, 2_000, 3.0) if args.quick else (args.rounds, args.backlog, 10.0)
    rows = run(args.revision, args.after, rounds, backlog, seconds, args.only, args.trickle_rate)
    print(table(rows, list(rows[0])))
    print()
    medians = summary(rows)
    print(table(medians, list(medians[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
