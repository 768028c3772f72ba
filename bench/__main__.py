"""Run every benchmark in sequence, print one Markdown table, and write docs/BENCHMARKS.md.

`python -m bench` (what `make bench` runs) measures the producer at fixed rates, enqueue → row
latency, the drain rate of `nexus worker` and of two peers (pgqueuer, procrastinate) on the
same server, LLM calls per session in bursts, and the LLM spend of paced and bursty chats against
a billing stand-in; then checks the figures against the targets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import bursty, drain, latency, peers, pgmq_versions, producer, spend
from bench.common import machine, table

Row = dict[str, object]
Results = dict[str, list[Row]]

SECTIONS = ("producer", "latency", "drain", "bursty", "spend")
DOC = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
SUMMARY_COLUMNS = [
    "benchmark",
    "case",
    "throughput",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "peak_rss_mb",
    "notes",
]


@dataclass(frozen=True)
class Plan:
    """How long and how big each benchmark runs."""

    rates: tuple[int, ...] = (100, 500, 1000)
    producer_s: float = 10.0
    latency_count: int = 500
    latency_rate: float = 50.0
    backlog: int = drain.BACKLOG
    drain_rounds: int = 3
    bursty_sessions: int = bursty.SESSIONS
    spend_plan: spend.SpendPlan = spend.FULL


FULL = Plan()
QUICK = Plan(
    producer_s=2.0,
    latency_count=100,
    backlog=2_000,
    drain_rounds=1,
    bursty_sessions=40,
    spend_plan=spend.QUICK,
)


def run_section(name: str, plan: Plan) -> list[Row]:
    """One benchmark's rows."""
    match name:
        case "producer":
            return producer.run(plan.rates, plan.producer_s)
        case "latency":
            return [latency.run(plan.latency_count, plan.latency_rate, "rules")]
        case "drain":
            return run_drains(plan)
        case "bursty":
            return [bursty.run(sessions=plan.bursty_sessions)]
        case "spend":
            return spend.run(plan.spend_plan)
    raise ValueError(f"unknown benchmark {name!r}")


def run_drains(plan: Plan) -> list[Row]:
    """Nexus and pgqueuer drain the same backlog in alternation, round after round, so a change
    in the machine's speed (a shared VM's varies by tens of percent) hits both alike; the
    figures compared are medians. The rules drain and procrastinate (about a minute a run) run once.
    """
    rows: list[Row] = []
    for round_no in range(1, plan.drain_rounds + 1):
        rows.append(_nexus_drain(drain.run("noop", plan.backlog), round_no))
        rows.append(_peer_drain(peers.run("pgqueuer", plan.backlog), round_no))
    rows.append(_nexus_drain(drain.run("rules", plan.backlog), 1))
    rows.append(_peer_drain(peers.run("procrastinate", plan.backlog), 1))
    return rows


def _nexus_drain(row: Row, round_no: int) -> Row:
    return {"round": round_no, "queue": "nexus", "work": f"{row['extractor']} extractor", **row}


def _peer_drain(row: Row, round_no: int) -> Row:
    return {"round": round_no, "work": "no-op job", **row}


def drain_medians(results: Results) -> list[Row]:
    """One row per queue and kind of work: the median run, and the spread of all runs."""
    groups: dict[tuple[object, object], list[Row]] = {}
    for row in results.get("drain", []):
        groups.setdefault((row["queue"], row["work"]), []).append(row)
    medians: list[Row] = []
    for (queue, work), runs in groups.items():
        rates = sorted(_num(r, "msgs_per_s") for r in runs)
        medians.append(
            {
                "queue": queue,
                "work": work,
                "runs": len(runs),
                "msgs_per_s": round(statistics.median(rates)),
                "slowest": round(rates[0]),
                "fastest": round(rates[-1]),
                "messages": runs[0]["messages"],
                "drain_s": round(statistics.median(_num(r, "drain_s") for r in runs), 2),
                "peak_rss_mb": max(_num(r, "peak_rss_mb") for r in runs),
            }
        )
    return medians


def _nexus_noop(results: Results) -> Row | None:
    return _first(drain_medians(results), "work", "noop extractor")


def _peers(results: Results) -> list[Row]:
    return [r for r in drain_medians(results) if r["queue"] in peers.PEERS]


def run_all(names: Sequence[str], plan: Plan) -> tuple[Results, dict[str, str]]:
    """Run the named benchmarks one at a time; a failure is recorded and the rest still run."""
    results: Results = {}
    errors: dict[str, str] = {}
    for name in names:
        print(f"== {name} ==", file=sys.stderr, flush=True)
        try:
            results[name] = run_section(name, plan)
        except Exception as exc:
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
    return results, errors


def _num(row: Row, key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _first(rows: list[Row], key: str, value: object) -> Row | None:
    return next((r for r in rows if r.get(key) == value), None)


def _producer_row(results: Results, rate: int) -> Row | None:
    return next((r for r in results.get("producer", []) if _num(r, "target_rps") == rate), None)


def summary_rows(results: Results) -> list[Row]:
    """Every figure of every benchmark, one row each, in one set of columns."""
    return [
        *(_producer_summary(r) for r in results.get("producer", [])),
        *(_latency_summary(r) for r in results.get("latency", [])),
        *(_drain_summary(r) for r in drain_medians(results)),
        *(_bursty_summary(r) for r in results.get("bursty", [])),
        *(_spend_summary(r) for r in results.get("spend", [])),
    ]


def _producer_summary(r: Row) -> Row:
    notes = f"{r['errors']} errors in {r['requests']} requests"
    if r.get("errors"):
        notes += f" (statuses {r.get('statuses')}, failures {r.get('failures')})"
    return {
        "benchmark": "producer",
        "case": f"{_num(r, 'target_rps'):.0f} req/s offered",
        "throughput": f"{r['achieved_rps']} req/s",
        **{k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
        "notes": notes,
    }


def _latency_summary(r: Row) -> Row:
    return {
        "benchmark": "enqueue → row",
        "case": f"{r['extractor']}, {r['snapshots']} snapshots at {_num(r, 'rate_per_s'):.0f}/s",
        **{k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
        "notes": f"max {r['max_ms']} ms",
    }


def _drain_summary(r: Row) -> Row:
    worker = "nexus worker" if r["queue"] == "nexus" else r["queue"]
    spread = (
        f", median of {r['runs']} ({r['slowest']}–{r['fastest']})" if _num(r, "runs") > 1 else ""
    )
    return {
        "benchmark": "drain",
        "case": f"{worker}, {r['work']}",
        "throughput": f"{r['msgs_per_s']} msgs/s",
        "peak_rss_mb": r["peak_rss_mb"],
        "notes": f"{r['messages']} messages in {r['drain_s']} s{spread}",
    }


def _bursty_summary(r: Row) -> Row:
    return {
        "benchmark": "LLM calls (bursty)",
        "case": f"{r['sessions']} sessions x {_num(r, 'snapshots') / _num(r, 'sessions'):.0f}"
        f" snapshots, {r['workers']} workers",
        "notes": f"{r['llm_calls']} calls for {r['snapshots']} snapshots"
        f" ({r['calls_per_session']} per session)",
    }


def _spend_summary(r: Row) -> Row:
    return {
        "benchmark": f"LLM spend ({r['mode']})",
        "case": r["case"],
        "notes": f"{r['calls']} calls for {r['snapshots']} snapshots, {r['vs_seed']}x the seed"
        f" design's spend; first row ≤ {r['first_row_max_s']} s, final ≤ {r['final_row_max_s']} s",
    }


def ratios(results: Results) -> list[Row]:
    """Nexus's median no-op drain rate over each peer's."""
    nexus = _nexus_noop(results)
    if nexus is None:
        return []
    return [
        {
            "peer": peer["queue"],
            "nexus_msgs_per_s": nexus["msgs_per_s"],
            "peer_msgs_per_s": peer["msgs_per_s"],
            "nexus_over_peer": f"{_ratio(nexus, peer):.2f}x",
        }
        for peer in _peers(results)
    ]


def _ratio(nexus: Row, peer: Row) -> float:
    theirs = _num(peer, "msgs_per_s")
    return _num(nexus, "msgs_per_s") / theirs if theirs else float("inf")


@dataclass(frozen=True)
class Check:
    """One target, what was measured against it, and whether it holds (None: not measured)."""

    target: str
    measured: str
    met: bool | None

    def row(self) -> Row:
        verdict = {True: "met", False: "missed", None: "not run"}[self.met]
        return {"target": self.target, "measured": self.measured, "result": verdict}


def targets(results: Results) -> list[Row]:
    """Every target with met / missed / not run."""
    checks: list[Callable[[Results], list[Check]]] = [
        _producer_checks,
        _latency_checks,
        _drain_checks,
        _memory_checks,
        _spend_checks,
    ]
    return [check.row() for make in checks for check in make(results)]


def _producer_checks(results: Results) -> list[Check]:
    at_500, at_1000 = _producer_row(results, 500), _producer_row(results, 1000)
    return [
        Check(
            "producer p99 < 10 ms at 500 req/s",
            f"{at_500['p99_ms']} ms" if at_500 else "-",
            _num(at_500, "p99_ms") < 10 if at_500 else None,
        ),
        Check(
            "no errors at 1,000 req/s",
            f"{at_1000['errors']} errors" if at_1000 else "-",
            _num(at_1000, "errors") == 0 if at_1000 else None,
        ),
    ]


def _latency_checks(results: Results) -> list[Check]:
    row = _first(results.get("latency", []), "extractor", "rules")
    return [
        Check(
            f"enqueue → row {name} < {limit} ms (rules)",
            f"{row[key]} ms" if row else "-",
            _num(row, key) < limit if row else None,
        )
        for name, key, limit in (("p50", "p50_ms", 50), ("p99", "p99_ms", 250))
    ]


def _drain_checks(results: Results) -> list[Check]:
    nexus = _nexus_noop(results)
    peer_rows = _peers(results)
    return [_peer_check(nexus, _first(peer_rows, "queue", name), name) for name in peers.PEERS]


def _peer_check(nexus: Row | None, peer: Row | None, name: str) -> Check:
    target = f"no-op drain ≥ 1.0x {name}"
    if nexus is None or peer is None:
        return Check(target, "-", None)
    ratio = _ratio(nexus, peer)
    return Check(target, f"{ratio:.2f}x", ratio >= 1.0)


def _memory_checks(results: Results) -> list[Check]:
    rows = [r for r in drain_medians(results) if r["queue"] == "nexus"]
    if not rows:
        return [Check("worker peak RSS < 150 MB", "-", None)]
    measured = ", ".join(f"{r['peak_rss_mb']} MB ({r['work']})" for r in rows)
    return [
        Check("worker peak RSS < 150 MB", measured, max(_num(r, "peak_rss_mb") for r in rows) < 150)
    ]


def _spend_checks(results: Results) -> list[Check]:
    """The issue's targets, on the real pipeline's rows (all from one run)."""
    rows = [r for r in results.get("spend", []) if r.get("mode") == spend.PIPELINE]
    paced = _first(rows, "case", spend.POLICY_CASE)
    bursts = _first(rows, "case", spend.BURST_CASE)
    return [
        _spend_check("paced spend ≤ 0.33x seed design (pipeline)", paced),
        _latency_check("first row ≤ 10 s after a session's first turn", paced, "first", 10),
        _latency_check("final row ≤ 60 s after a session's last turn", paced, "final", 60),
        Check(
            "bursts: about one call per session (pipeline)",
            f"{bursts['calls_per_session']} per session" if bursts else "-",
            _num(bursts, "calls_per_session") <= 1.1 if bursts else None,
        ),
    ]


def _spend_check(target: str, row: Row | None) -> Check:
    if row is None:
        return Check(target, "-", None)
    return Check(target, f"{row['vs_seed']}x", _num(row, "vs_seed") <= 0.33)


def _latency_check(target: str, row: Row | None, which: str, limit: float) -> Check:
    if row is None:
        return Check(f"{target} (pipeline)", "-", None)
    worst = _num(row, f"{which}_row_max_s")
    return Check(f"{target} (pipeline)", f"{worst} s at worst", worst <= limit)


DETAIL_COLUMNS = {
    "producer": [
        "target_rps",
        "achieved_rps",
        "requests",
        "errors",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "max_ms",
    ],
    "latency": ["extractor", "snapshots", "rate_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"],
    "drain": ["round", "queue", "work", "messages", "drain_s", "msgs_per_s", "peak_rss_mb"],
    "bursty": [
        "sessions",
        "snapshots",
        "accepted",
        "workers",
        "llm_latency_s",
        "llm_calls",
        "calls_per_session",
        "extractions",
        "dead_letters",
        "post_s",
        "settle_s",
    ],
    "spend": [
        "mode",
        "case",
        "sessions",
        "snapshots",
        "calls",
        "calls_per_snapshot",
        "input",
        "cache_write",
        "cache_read",
        "output",
        "usd",
        "vs_seed",
        "first_row_max_s",
        "final_row_max_s",
        "late_fix_kept",
    ],
}

DETAIL_TEXT = {
    "producer": (
        "Producer (`nexus serve`, rules extractor) at fixed offered rates, the load from a "
        "separate open-loop process (`bench/loadgen.py`); latency counted from each request's "
        "scheduled start, so falling behind shows."
    ),
    "latency": (
        "Enqueue → row: from the start of a POST to the moment its `prospect_data` row exists, "
        "`nexus up` with the `rules` extractor."
    ),
    "drain": (
        "Drain: one worker process empties a 20,000-message backlog, timed from its spawn to an "
        "empty queue, peak RSS sampled every 50 ms. `nexus worker` drains one session per "
        "message; each peer drains the same number of no-op jobs on a fresh database with its "
        "own schema, its backlog enqueued in bulk beforehand (not counted). Nexus and pgqueuer "
        "run in alternation, round after round; the summary gives each one's median run."
    ),
    "bursty": (
        "LLM calls per session: sessions post all their snapshots in bursts to `nexus serve`; "
        "worker processes use the Anthropic extractor against the fake Anthropic API on "
        "loopback (`tests.fakes.llm_server`)."
    ),
    "spend": (
        "LLM spend: 12 chats of 8 turns, a turn every 4 s per chat, and bursts (200 sessions x "
        "5 snapshots), billed by the fake Anthropic API acting as a billing stand-in (tokens and "
        "prompt caching by Anthropic's documented rules, Claude Haiku 5.5 prices; "
        "`tests/fakes/billing.py`). `vs_seed` is the spend over one uncached call per snapshot "
        "(the seed's design). `pipeline` posts the chats in real time to `nexus serve`, and one "
        "`nexus worker` extracts them as built, pacing its calls by the extraction policy at "
        "its defaults (0.5 s per answer); first and final rows are measured in the database. "
        "`simulated` replays the extraction policy (`nexus_ingest.policy`) on a simulated "
        "clock, with the producer's 2 s coalescing window, each extraction a real request of "
        "the Anthropic extractor to the stand-in, rows counted 1.5 s after the call. Token "
        "columns are totals by kind; `late_fix_kept` counts chats whose merged row ends with "
        "the email the visitor corrected in turn 7. See [LLM_SPEND.md](LLM_SPEND.md)."
    ),
}

REPRODUCE = """```bash
make bench                                # installs the bench extras, runs all, rewrites this file
.venv/bin/python -m bench                 # the same, without the install step
.venv/bin/python -m bench --quick         # smoke run: shorter and smaller, prints only
.venv/bin/python -m bench --only drain    # one benchmark (repeatable), prints only
DATABASE_URL=postgresql://USER@HOST/DB make bench   # on another server (default: embedded)
DATABASE_URL=postgresql://USER@HOST/DB .venv/bin/python -m bench.pgmq_versions  # pgmq 1.5.1 vs 1.13
```"""


def render(
    results: Results, errors: dict[str, str], machine_line: str, when: str, load: str = ""
) -> str:
    """The whole of docs/BENCHMARKS.md."""
    parts = [
        "# Benchmarks",
        f"Measured on **{machine_line}**, {when}, by `python -m bench` (bench/). "
        "Everything runs on loopback against one PostgreSQL server; one benchmark at a time. "
        + load,
        "## Reproduce",
        REPRODUCE,
        "## Summary",
        table(summary_rows(results), SUMMARY_COLUMNS),
        "## Targets",
        table(targets(results), ["target", "measured", "result"]),
        *_detail_sections(results),
        *_error_section(errors),
    ]
    return "\n\n".join(parts) + "\n"


def _detail_sections(results: Results) -> list[str]:
    parts: list[str] = []
    for name in SECTIONS:
        if results.get(name):
            parts += [f"## {name.capitalize()}", DETAIL_TEXT[name]]
            parts.append(table(results[name], DETAIL_COLUMNS[name]))
        if name == "drain" and results.get(name):
            parts += ["How each peer ran:", _peer_settings(), *_ratio_table(results)]
    return parts


def _ratio_table(results: Results) -> list[str]:
    rows = ratios(results)
    if not rows:
        return []
    return [
        "Nexus's median no-op drain rate over each peer's. Nexus's `noop` extractor still runs "
        "its whole save path per message (session lease, merge into a `prospect_data` row, "
        "extraction history, delete); a peer's no-op job only updates or deletes its own job "
        "row.",
        table(rows, list(rows[0])),
    ]


def _peer_settings() -> str:
    return "\n".join(f"- **{p.name}**: {p.settings}." for p in peers.PEERS.values())


def _error_section(errors: dict[str, str]) -> list[str]:
    if not errors:
        return []
    return ["## Failed", "\n".join(f"- `{name}`: {error}" for name, error in errors.items())]


def _load_note(before: float) -> str:
    """The machine's load when the run began: other work on its cores skews the figures."""
    return f"1-minute load average when the run began: {before:.2f} (on {os.cpu_count()} cores)."


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
    load = _load_note(os.getloadavg()[0])
    results, errors = run_all(names, QUICK if args.quick else FULL)
    print(table(summary_rows(results), SUMMARY_COLUMNS))
    print()
    print(table(targets(results), ["target", "measured", "result"]))
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
