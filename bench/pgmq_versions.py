"""Nexus on Supabase's pgmq 1.5.1 against the 1.13 it bundles, on one server, back to back.

The server must offer the pgmq extension 1.5.1, as a Supabase project does (for a PostgreSQL of
your own, copy the upstream extension files into its extension folder):

    DATABASE_URL=postgresql://USER@HOST/DB python -m bench.pgmq_versions          # ~3 minutes
    DATABASE_URL=postgresql://USER@HOST/DB python -m bench.pgmq_versions --quick  # smoke run

The figures replace this benchmark's section of docs/BENCHMARKS.md (a full `python -m bench`
keeps it as it is).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from bench import drain, latency
from bench.common import SQL_ONLY, admin_url, machine, table

ABOUT = (
    "The no-op drain runs in alternation on the two, round after round (which goes first swaps "
    "every round), and the medians are compared: a shared machine's speed drifts, and "
    "alternation makes the drift hit both alike. Then enqueue → row latency with the rules "
    "extractor on each. The server offers the pgmq extension 1.5.1, as a Supabase project does."
)
SUPABASE = "1.5.1"
CASES = {SQL_ONLY: "1.13 (SQL-only, bundled)", SUPABASE: "1.5.1 (extension, Supabase)"}
DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
START = "<!-- bench.pgmq_versions: start -->"
END = "<!-- bench.pgmq_versions: end -->"
Row = dict[str, object]


def offers_1_5_1() -> bool:
    with psycopg.connect(admin_url()) as conn:
        row = conn.execute(
            "SELECT 1 FROM pg_available_extension_versions WHERE name = 'pgmq' AND version = %s",
            (SUPABASE,),
        ).fetchone()
    return row is not None


def run(rounds: int, backlog: int, latency_count: int) -> tuple[list[Row], list[Row]]:
    """Drains alternated over `rounds`, then the latency on each PGMQ."""
    drains = []
    for round_no in range(1, rounds + 1):
        # Which goes first swaps every round: the first one's database is dropped (files
        # unlinked, a checkpoint's worth of writes) just before the second one runs.
        for pgmq in list(CASES)[:: 1 if round_no % 2 else -1]:
            print(f"== drain round {round_no}, pgmq {pgmq} ==", file=sys.stderr, flush=True)
            row = drain.run("noop", backlog, pgmq=pgmq)
            drains.append({"round": round_no, "pgmq": CASES[pgmq], **row})
    latencies = []
    for pgmq in CASES:
        print(f"== latency, pgmq {pgmq} ==", file=sys.stderr, flush=True)
        latencies.append(
            {"pgmq": CASES[pgmq], **latency.run(latency_count, 50.0, "rules", pgmq=pgmq)}
        )
    return drains, latencies


def medians(drains: list[Row]) -> dict[str, float]:
    """The median no-op drain rate on each PGMQ."""
    rates: dict[str, list[float]] = {}
    for row in drains:
        rates.setdefault(str(row["pgmq"]), []).append(float(row["msgs_per_s"]))  # type: ignore[arg-type]
    return {name: statistics.median(values) for name, values in rates.items()}


def targets(drains: list[Row], latencies: list[Row]) -> list[Row]:
    """The SPEC's figures, held on 1.5.1 too."""
    rates = medians(drains)
    ratio = rates[CASES[SUPABASE]] / rates[CASES[SQL_ONLY]]
    on_supabase = next(r for r in latencies if r["pgmq"] == CASES[SUPABASE])
    p50 = float(on_supabase["p50_ms"])  # type: ignore[arg-type]
    return [
        {
            "target": "enqueue → row p50 < 50 ms (rules) on pgmq 1.5.1",
            "measured": f"{p50} ms",
            "result": "met" if p50 < 50 else "missed",
        },
        {
            "target": "no-op drain on pgmq 1.5.1 within 20% of 1.13",
            "measured": f"{ratio:.2f}x",
            "result": "met" if ratio >= 0.8 else "missed",
        },
    ]


def render(
    drains: list[Row], latencies: list[Row], machine_line: str, when: str, load: float
) -> str:
    """This benchmark's section of docs/BENCHMARKS.md, between its markers."""
    rates = medians(drains)
    return "\n\n".join(
        [
            START,
            "## pgmq 1.5.1 (Supabase) against 1.13",
            f"Measured on **{machine_line}**, {when}, by `python -m bench.pgmq_versions` "
            f"(1-minute load average when the run began: {load:.2f}). " + ABOUT,
            table(targets(drains, latencies), ["target", "measured", "result"]),
            table(
                [{"pgmq": name, "median_msgs_per_s": round(rate)} for name, rate in rates.items()],
                ["pgmq", "median_msgs_per_s"],
            ),
            table(drains, ["round", "pgmq", "messages", "drain_s", "msgs_per_s", "peak_rss_mb"]),
            table(
                latencies,
                ["pgmq", "snapshots", "rate_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"],
            ),
            END,
        ]
    )


def section_of(text: str) -> str | None:
    """This benchmark's section in a BENCHMARKS.md text, markers included, if it has one."""
    if START not in text or END not in text:
        return None
    return text[text.index(START) : text.index(END) + len(END)]


def with_section(text: str, section: str) -> str:
    """`text` with this benchmark's section replaced by `section` (appended when absent)."""
    old = section_of(text)
    if old is None:
        return text.rstrip("\n") + "\n\n" + section + "\n"
    return text.replace(old, section)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pgmq_versions", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one small round; prints only")
    parser.add_argument("--rounds", type=int, default=3, help="drain rounds (default 3)")
    args = parser.parse_args(argv)
    if not offers_1_5_1():
        print(
            "this server does not offer the pgmq extension 1.5.1; see `python -m bench.pgmq_versions --help`",
            file=sys.stderr,
        )
        return 2
    load = os.getloadavg()[0]
    rounds, backlog, count = (1, 2_000, 100) if args.quick else (args.rounds, drain.BACKLOG, 500)
    drains, latencies = run(rounds, backlog, count)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = render(drains, latencies, machine(), when, load)
    print(section)
    if not args.quick:
        DOC.write_text(with_section(DOC.read_text(encoding="utf-8"), section), encoding="utf-8")
        print(f"\nupdated {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
