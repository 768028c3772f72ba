"""Run every benchmark in sequence, print the figures with their references, write docs/BENCHMARKS.md.

`python -m bench` (what `make bench` runs) measures the producer against the HTTP floor (the
same stack answering without the database), enqueue → row latency, the drain of
`nexus worker` against the PGMQ floor (read + delete on one connection) and two peers
(pgqueuer, procrastinate), a held transaction against the same run without it, LLM calls per
session in bursts, and the LLM spend of paced and bursty chats against a billing stand-in; then
checks each target, most of them ratios to a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import bursty, drain, held, latency, peers, pgmq_versions, pgmqfloor, producer, spend
from bench.common import machine, table
from bench.report import (
    SECTIONS,
    SUMMARY_COLUMNS,
    TARGET_COLUMNS,
    Results,
    Row,
    render,
    summary_rows,
    targets,
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


@dataclass(frozen=True)
class Plan:
    """How long and how big each benchmark runs."""

    rates: tuple[int, ...] = producer.RATES
    producer_s: float = 10.0
    producer_rounds: int = producer.ROUNDS
    naive_rate: int | None = producer.NAIVE_RATE
    latency_count: int = 500
    latency_rate: float = 50.0
    backlog: int = drain.BACKLOG
    drain_rounds: int = 5
    with_peers: bool = True
    held_rate: float = held.RATE
    hold_s: float = held.HOLD_S
    after_s: float = held.AFTER_S
    held_sample_s: float = held.SAMPLE_S
    bursty_sessions: int = bursty.SESSIONS
    spend_plan: spend.SpendPlan = spend.FULL


FULL = Plan()
QUICK = Plan(
    producer_s=2.0,
    producer_rounds=1,
    latency_count=100,
    backlog=2_000,
    drain_rounds=1,
    hold_s=5.0,
    after_s=5.0,
    held_sample_s=1.0,
    bursty_sessions=40,
    spend_plan=spend.QUICK,
)


def run_section(name: str, plan: Plan) -> list[Row]:
    """One benchmark's rows."""
    match name:
        case "producer":
            return producer.run(plan.rates, plan.producer_s, plan.producer_rounds, plan.naive_rate)
        case "latency":
            return [latency.run(plan.latency_count, plan.latency_rate, "rules")]
        case "drain":
            return run_drains(plan)
        case "held":
            return held.run(plan.held_rate, plan.hold_s, plan.after_s, plan.held_sample_s)
        case "bursty":
            return [bursty.run(sessions=plan.bursty_sessions)]
        case "spend":
            return spend.run(plan.spend_plan)
    raise ValueError(f"unknown benchmark {name!r}")


def run_drains(plan: Plan) -> list[Row]:
    """Every consumer drains the same backlog in alternation, round after round, so a change in
    the machine's speed (a shared VM's varies by tens of percent) hits all alike; the figures
    compared are medians. Every other round runs in reverse order, so no consumer always
    follows the same one. Procrastinate (about a minute a run) runs once, at the end.
    """
    rows: list[Row] = []
    one_core = drain.can_keep_to(1)
    for round_no in range(1, plan.drain_rounds + 1):
        drains = _round_of_drains(plan, one_core)
        for run in drains if round_no % 2 else reversed(drains):
            rows.append(run(round_no))
    if plan.with_peers:
        rows.append(_peer_drain(peers.run("procrastinate", plan.backlog), 1))
    return rows


def _round_of_drains(plan: Plan, one_core: bool = False) -> list[Callable[[int], Row]]:
    """One round's drains, each run when called with the round's number; with `one_core`, also
    one worker kept with its server to one core, what a second process adds a core to."""
    backlog = plan.backlog
    drains: list[Callable[[int], Row]] = [
        lambda n: _nexus_drain(drain.run("noop", backlog), n),
        lambda n: _floor_drain(pgmqfloor.run(backlog), n),
    ]
    if plan.with_peers:
        drains.append(lambda n: _peer_drain(peers.run("pgqueuer", backlog), n))
    drains += [
        lambda n: _nexus_drain(drain.run("noop", backlog, workers=2), n),
        lambda n: _nexus_drain(drain.run("rules", backlog), n),
    ]
    if one_core:
        drains.append(lambda n: _nexus_drain(drain.run("noop", backlog, cores=1), n))
    return drains


def _nexus_drain(row: Row, round_no: int) -> Row:
    work = f"{row['extractor']} extractor"
    if row.get("cores") == 1:
        work += ", worker and server on one core"
    return {"round": round_no, "queue": "nexus", "work": work, **row}


def _peer_drain(row: Row, round_no: int) -> Row:
    return {"round": round_no, "work": "no-op job", "workers": 1, **row}


def _floor_drain(row: Row, round_no: int) -> Row:
    return {"round": round_no, "work": "read 200 + delete", "workers": 1, **row}


def run_all(
    names: Sequence[str], plan: Plan, loads: dict[str, float] | None = None
) -> tuple[Results, dict[str, str]]:
    """Run the named benchmarks one at a time; a failure is recorded and the rest still run.

    `loads` gets the machine's 1-minute load average as each benchmark begins.
    """
    results: Results = {}
    errors: dict[str, str] = {}
    for name in names:
        print(f"== {name} ==", file=sys.stderr, flush=True)
        if loads is not None:
            loads[name] = os.getloadavg()[0]
        try:
            results[name] = run_section(name, plan)
        except Exception as exc:
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
    return results, errors


def _load_note(loads: dict[str, float]) -> str:
    """The machine's load as each benchmark began: other work on its cores skews the figures."""
    each = ", ".join(f"{name} {load:.2f}" for name, load in loads.items())
    return f"1-minute load average as each benchmark began ({os.cpu_count()} cores): {each}."


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs, smaller counts")
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, metavar="NAME", help=", ".join(SECTIONS)
    )
    parser.add_argument(
        "--output",
        type=Path,
        help=f"Markdown report path (default: {DOC.name} in docs/ on a full run; "
        "none with --quick or --only)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    names = [n for n in SECTIONS if not args.only or n in args.only]
    loads: dict[str, float] = {}
    results, errors = run_all(names, QUICK if args.quick else FULL, loads)
    load = _load_note(loads)
    print(load)
    print(table(summary_rows(results), SUMMARY_COLUMNS))
    print()
    print(table(targets(results), TARGET_COLUMNS))
    output = args.output or (None if args.quick or args.only else DOC)
    if output is not None:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        output.parent.mkdir(parents=True, exist_ok=True)
        text = render(results, errors, machine(), when, load)
        kept = pgmq_versions.section_of(output.read_text("utf-8")) if output.exists() else None
        if kept:  # measured on another server, by its own command: kept as it was
            text = pgmq_versions.with_section(text, kept)
        output.write_text(text, encoding="utf-8")
        print(f"\nwrote {output}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
