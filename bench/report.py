"""What the harness prints and writes: medians, ratios to the references, targets, the report.

Every figure that has a reference measured in the same run (the HTTP floor, the PGMQ floor,
the run without a held transaction, one worker process, the no-op drain) is given beside it
with the ratio; targets are judged on those ratios, which a drift in the machine's speed
moves far less than the figures themselves.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bench import peers, spend
from bench.common import table
from bench.held import SHOWN_FROM_DEAD, WINDOWS

Row = dict[str, object]
Results = dict[str, list[Row]]

SECTIONS = ("producer", "latency", "drain", "held", "bursty", "spend")
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
TARGET_COLUMNS = ["target", "measured", "reference", "ratio", "result"]
SERVER_NAMES = {
    "floor": "HTTP floor",
    "serve": "nexus serve",
    "up": "nexus up (worker busy)",
    "naive": "naive producer",
}
NOOP = ("nexus", "noop extractor", 1)
TWO_WORKERS = ("nexus", "noop extractor", 2)
RULES = ("nexus", "rules extractor", 1)
PGMQ_FLOOR = ("pgmq floor", "read 200 + delete", 1)
NOOP_ONE_CORE = ("nexus", "noop extractor, worker and server on one core", 1)


def num(row: Row | None, key: str) -> float:
    value = row.get(key) if row else None
    return float(value) if isinstance(value, int | float) else 0.0


def ratio(ours: float, reference: float) -> float:
    return ours / reference if reference else float("inf")


def _times(value: float) -> str:
    return f"{value:.2f}x"


def _first(rows: Iterable[Row], **match: object) -> Row | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _median(rows: list[Row], key: str) -> float:
    return round(statistics.median(num(r, key) for r in rows), 2)


# The producer against the HTTP floor


def producer_medians(results: Results) -> list[Row]:
    """One row per server and rate: median latencies over the rounds, errors summed."""
    groups: dict[tuple[object, object], list[Row]] = {}
    for row in results.get("producer", []):
        groups.setdefault((row["server"], row["target_rps"]), []).append(row)
    return [
        {
            "server": server,
            "target_rps": rate,
            "rounds": len(runs),
            "achieved_rps": _median(runs, "achieved_rps"),
            "requests": sum(int(num(r, "requests")) for r in runs),
            "errors": sum(int(num(r, "errors")) for r in runs),
            **{k: _median(runs, k) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")},
        }
        for (server, rate), runs in groups.items()
    ]


def floor_ratios(results: Results) -> list[Row]:
    """Each server's median latencies over the HTTP floor's, rate by rate."""
    medians = producer_medians(results)
    rows = []
    for row in medians:
        floor = _first(medians, server="floor", target_rps=row["target_rps"])
        if floor is None or row["server"] == "floor":
            continue
        rows.append(
            {
                "rate": f"{num(row, 'target_rps'):.0f} req/s",
                "server": SERVER_NAMES.get(str(row["server"]), row["server"]),
                **{f"{p}_ms": row[f"{p}_ms"] for p in ("p50", "p95", "p99")},
                "floor_p99_ms": floor["p99_ms"],
                "p50_over_floor": _times(ratio(num(row, "p50_ms"), num(floor, "p50_ms"))),
                "p99_over_floor": _times(ratio(num(row, "p99_ms"), num(floor, "p99_ms"))),
                "p99_by_round": ", ".join(
                    _times(r) for r in _p99_round_ratios(results, row["server"], row["target_rps"])
                ),
                "errors": row["errors"],
            }
        )
    return rows


def _p99_round_ratios(results: Results, server: object, rate: object) -> list[float]:
    """The server's p99 over the floor's in each round both ran at `rate`: the verdict's
    spread, which one ratio of medians hides."""
    runs = [r for r in results.get("producer", []) if r["target_rps"] == rate]
    ratios = []
    for ours in (r for r in runs if r["server"] == server):
        floor = _first(runs, server="floor", round=ours["round"])
        if floor is not None:
            ratios.append(ratio(num(ours, "p99_ms"), num(floor, "p99_ms")))
    return ratios


# Drains against the PGMQ floor, the peers, each other


def _drain_runs(results: Results) -> dict[tuple[object, object, object], list[Row]]:
    """Every drain run, by consumer (queue, work, workers)."""
    groups: dict[tuple[object, object, object], list[Row]] = {}
    for row in results.get("drain", []):
        groups.setdefault((row["queue"], row["work"], row.get("workers", 1)), []).append(row)
    return groups


def drain_medians(results: Results) -> list[Row]:
    """One row per consumer: the median run, and the spread of all runs."""
    medians: list[Row] = []
    for (queue, work, workers), runs in _drain_runs(results).items():
        steady = sorted(num(r, "steady_msgs_per_s") for r in runs)
        medians.append(
            {
                "queue": queue,
                "work": work,
                "workers": workers,
                "runs": len(runs),
                "steady_msgs_per_s": round(statistics.median(steady)),
                "slowest": round(steady[0]),
                "fastest": round(steady[-1]),
                "msgs_per_s": round(statistics.median(num(r, "msgs_per_s") for r in runs)),
                "startup_s": _median(runs, "startup_s"),
                "messages": runs[0]["messages"],
                "drain_s": _median(runs, "drain_s"),
                "peak_rss_mb": max(num(r, "peak_rss_mb") for r in runs),
            }
        )
    return medians


COST_KEYS = ("wal_bytes_per_msg", "consumer_cpu_us_per_msg", "postgres_cpu_us_per_msg")


def drain_costs(results: Results, cores: int | None = None) -> list[Row]:
    """What one message cost each consumer and its server (medians over runs), and the rate
    this machine's cores would allow at that cost, were nothing else running and every core
    busy: the ceiling a drain can approach, and what a second process can add."""
    cores = cores or os.cpu_count() or 1
    rows: list[Row] = []
    for (queue, work, workers), runs in _drain_runs(results).items():
        measured = [r for r in runs if all(r.get(k) is not None for k in COST_KEYS)]
        if not measured:
            continue
        consumer = _median(measured, "consumer_cpu_us_per_msg")
        postgres = _median(measured, "postgres_cpu_us_per_msg")
        kept_to = int(num(runs[0], "cores")) or cores  # a run kept to fewer has fewer
        ceiling = kept_to * 1e6 / (consumer + postgres) if consumer + postgres else float("inf")
        steady = statistics.median(num(r, "steady_msgs_per_s") for r in runs)
        rows.append(
            {
                "queue": queue,
                "work": work,
                "workers": workers,
                "wal_bytes_per_msg": round(_median(measured, "wal_bytes_per_msg")),
                "consumer_cpu_us": consumer,
                "postgres_cpu_us": postgres,
                "cpu_us_per_msg": round(consumer + postgres, 1),
                "cores": kept_to,
                "cpu_bound_msgs_per_s": round(ceiling),
                "steady_msgs_per_s": round(steady),
                "steady_over_bound": _times(ratio(steady, ceiling)),
            }
        )
    return rows


def _drain(results: Results, key: tuple[object, object, object]) -> Row | None:
    queue, work, workers = key
    return _first(drain_medians(results), queue=queue, work=work, workers=workers)


@dataclass(frozen=True)
class Comparison:
    """One drain over another, and the least ratio wanted; one that is not a target is shown
    beside the targets, to explain one of them."""

    name: str
    ours: tuple[object, object, object]
    reference: tuple[object, object, object]
    goal: float
    target: bool = True


DRAIN_COMPARISONS = [
    Comparison("no-op drain over the PGMQ floor", NOOP, PGMQ_FLOOR, 0.4),
    Comparison("no-op drain over pgqueuer", NOOP, ("pgqueuer", "no-op job", 1), 1.5),
    Comparison("no-op drain over procrastinate", NOOP, ("procrastinate", "no-op job", 1), 1.0),
    Comparison("two worker processes over one (no-op)", TWO_WORKERS, NOOP, 1.6),
    Comparison(
        "two worker processes over one kept with its server to one core (no-op)",
        TWO_WORKERS,
        NOOP_ONE_CORE,
        1.6,
        target=False,
    ),
    Comparison("rules drain over the no-op drain", RULES, NOOP, 0.5),
]


def drain_ratios(results: Results) -> list[Row]:
    """Every comparison both of whose sides ran: steady rates, start-up apart, and spawn to empty."""
    rows = []
    for c in DRAIN_COMPARISONS:
        ours, reference = _drain(results, c.ours), _drain(results, c.reference)
        if ours is None or reference is None:
            continue
        rows.append(
            {
                "comparison": c.name,
                "ours_msgs_per_s": ours["steady_msgs_per_s"],
                "reference_msgs_per_s": reference["steady_msgs_per_s"],
                "ratio": _times(_steady_ratio(ours, reference)),
                "goal": f"≥ {c.goal}x" if c.target else f"context (≥ {c.goal}x)",
                "spawn_to_empty_ratio": _times(
                    ratio(num(ours, "msgs_per_s"), num(reference, "msgs_per_s"))
                ),
                "by_round": ", ".join(_times(r) for r in round_ratios(results, c)),
            }
        )
    return rows


def round_ratios(results: Results, c: Comparison) -> list[float]:
    """The comparison's steady ratio within each round both sides ran in: a ratio of medians
    can pair one round's fast side with another's slow one, and these show the spread."""
    runs = _drain_runs(results)
    ours = {r.get("round"): r for r in runs.get(c.ours, [])}
    reference = {r.get("round"): r for r in runs.get(c.reference, [])}
    return [_steady_ratio(ours[n], reference[n]) for n in ours if n in reference]


def _steady_ratio(ours: Row, reference: Row) -> float:
    return ratio(num(ours, "steady_msgs_per_s"), num(reference, "steady_msgs_per_s"))


# The held transaction


def held_phases(results: Results) -> list[Row]:
    return [r for r in results.get("held", []) if r.get("kind") == "phase"]


def held_tables(results: Results) -> list[str]:
    """The tables whose dead row versions grew in either run, most first."""
    peaks: dict[str, int] = {}
    for row in results.get("held", []):
        if row.get("kind") == "dead":
            for key, value in row.items():
                if "." in key and isinstance(value, int):
                    peaks[key] = max(peaks.get(key, 0), value)
    return sorted((t for t, n in peaks.items() if n >= SHOWN_FROM_DEAD), key=lambda t: -peaks[t])


HELD_FIGURES = (("p99_ms", "producer p99"), ("e2r_p50_ms", "enqueue → row p50"))


def best_without(phases: list[Row], phase: str, key: str) -> Row | None:
    """Of the runs without the transaction, the one with the lowest `key` in window `phase`:
    the reference a noisy machine can only make stricter."""
    runs = [r for r in phases if r.get("variant") == "without" and r.get("phase") == phase]
    return min(runs, key=lambda r: num(r, key), default=None)


def held_ratios(results: Results) -> list[Row]:
    """Each window of the held run over the same window of the best run without it."""
    phases = held_phases(results)
    rows = []
    for phase in WINDOWS:
        held = _first(phases, variant="held", phase=phase)
        for key, name in HELD_FIGURES:
            without = best_without(phases, phase, key)
            if held is None or without is None:
                continue
            rows.append(
                {
                    "window": _window_name(phase),
                    "figure": name,
                    "held_ms": held[key],
                    "without_ms": without[key],
                    "without_run": without["run"],
                    "ratio": _times(ratio(num(held, key), num(without, key))),
                }
            )
    return rows


def _window_name(phase: str) -> str:
    return f"{phase} window ({'transaction open' if phase == 'first' else 'committed'})"


def dead_tuples_after_release(results: Results) -> list[Row]:
    """Per table of the held run: dead row versions at the release, at most and at least after."""
    samples = [r for r in results.get("held", []) if r.get("kind") == "dead"]
    held = [r for r in samples if r.get("variant") == "held"]
    during = [r for r in held if str(r.get("phase", "")).endswith("(held)")]
    after = [r for r in held if r.get("phase") in ("second", "drained")]
    if not during or not after:
        return []
    rows = []
    for name in held_tables(results):
        at_release = int(num(during[-1], name))
        later = [int(num(r, name)) for r in after]
        without = [int(num(r, name)) for r in samples if r.get("variant") == "without"]
        rows.append(
            {
                "table": name,
                "at_release": at_release,
                "highest_after": max(later),
                "lowest_after": min(later),
                "at_end": later[-1],
                "without_highest": max(without, default=0),
                "stops_growing": min(later) < at_release,
            }
        )
    return rows


# Targets


@dataclass(frozen=True)
class Check:
    """One target, what was measured against it, and whether it holds (None: not measured)."""

    target: str
    measured: str
    met: bool | None
    reference: str = ""
    ratio: str = ""
    why_not_measured: str = ""  # the verdict when `met` is None for a reason other than not run

    def row(self) -> Row:
        verdict = {True: "met", False: "missed", None: self.why_not_measured or "not run"}[self.met]
        return {
            "target": self.target,
            "measured": self.measured,
            "reference": self.reference,
            "ratio": self.ratio,
            "result": verdict,
        }


def targets(results: Results) -> list[Row]:
    """Every target with met / missed / not run."""
    checks: list[Callable[[Results], list[Check]]] = [
        _producer_checks,
        _latency_checks,
        _drain_checks,
        _held_checks,
        _memory_checks,
        _spend_checks,
    ]
    return [check.row() for make in checks for check in make(results)]


def _producer_checks(results: Results) -> list[Check]:
    medians = producer_medians(results)
    floor = _first(medians, server="floor", target_rps=500.0)
    checks = []
    for server in ("serve", "up"):
        name = SERVER_NAMES[server]
        at_500 = _first(medians, server=server, target_rps=500.0)
        checks.append(
            _ratio_check(
                f"{name}: p99 ≤ 3x the HTTP floor's at 500 req/s", at_500, floor, "p99_ms", 3.0
            )
        )
        at_1000 = _first(medians, server=server, target_rps=1000.0)
        checks.append(
            Check(
                f"{name}: no errors at 1,000 req/s",
                f"{at_1000['errors']} errors in {at_1000['requests']} (p99 {at_1000['p99_ms']} ms)"
                if at_1000
                else "-",
                num(at_1000, "errors") == 0 if at_1000 else None,
            )
        )
    return checks


def _ratio_check(
    target: str, ours: Row | None, reference: Row | None, key: str, most: float
) -> Check:
    """`ours[key]` over `reference[key]`, met when at most `most`."""
    if ours is None or reference is None:
        return Check(target, "-", None)
    value = ratio(num(ours, key), num(reference, key))
    return Check(target, f"{ours[key]} ms", value <= most, f"{reference[key]} ms", _times(value))


def _latency_checks(results: Results) -> list[Check]:
    row = _first(results.get("latency", []), extractor="rules")
    return [
        Check(
            f"enqueue → row {name} < {limit} ms (rules, 50/s)",
            f"{row[key]} ms" if row else "-",
            num(row, key) < limit if row else None,
        )
        for name, key, limit in (("p50", "p50_ms", 50), ("p99", "p99_ms", 250))
    ]


def _drain_checks(results: Results) -> list[Check]:
    checks = []
    for c in (c for c in DRAIN_COMPARISONS if c.target):
        ours, reference = _drain(results, c.ours), _drain(results, c.reference)
        target = f"{c.name} ≥ {c.goal}x"
        if ours is None or reference is None:
            checks.append(Check(target, "-", None))
            continue
        value = _steady_ratio(ours, reference)
        checks.append(
            Check(
                target,
                f"{ours['steady_msgs_per_s']} msgs/s",
                value >= c.goal,
                f"{reference['steady_msgs_per_s']} msgs/s",
                _times(value),
            )
        )
    return checks


def _held_checks(results: Results) -> list[Check]:
    phases = held_phases(results)
    held = _first(phases, variant="held", phase="first")
    checks = [
        _ratio_check(
            f"held transaction: {name} ≤ 1.5x without",
            held,
            best_without(phases, "first", key),
            key,
            1.5,
        )
        for key, name in HELD_FIGURES
    ]
    dead = dead_tuples_after_release(results)
    grown = [r for r in dead if num(r, "at_release") > 0]
    vacuumed = autovacuum_ran(results)
    checks.append(
        Check(
            "held transaction: dead tuples stop growing once it ends",
            ", ".join(f"{r['table']} {r['at_release']} → {r['lowest_after']}" for r in grown)
            or "-",
            all(r["stops_growing"] for r in grown) if grown and vacuumed else None,
            why_not_measured="" if vacuumed else "not measurable: autovacuum is off on this server",
        )
    )
    return checks


def autovacuum_ran(results: Results) -> bool:
    """Whether the held transaction's server ran autovacuum (reports from before this was
    recorded are taken to have)."""
    return all(
        r.get("autovacuum", True) for r in results.get("held", []) if r.get("kind") == "server"
    )


def _memory_checks(results: Results) -> list[Check]:
    rows = [r for r in drain_medians(results) if r["queue"] == "nexus"]
    if not rows:
        return [Check("worker peak RSS < 150 MB", "-", None)]
    measured = ", ".join(f"{r['peak_rss_mb']} MB ({_consumer(r)})" for r in rows)
    return [
        Check("worker peak RSS < 150 MB", measured, max(num(r, "peak_rss_mb") for r in rows) < 150)
    ]


def _spend_checks(results: Results) -> list[Check]:
    """LLM spend's targets, on the real pipeline's rows (all from one run)."""
    rows = [r for r in results.get("spend", []) if r.get("mode") == spend.PIPELINE]
    paced = _first(rows, case=spend.POLICY_CASE)
    bursts = _first(rows, case=spend.BURST_CASE)
    return [
        Check(
            "paced spend ≤ 0.33x the seed design (pipeline)",
            f"{paced['vs_seed']}x" if paced else "-",
            num(paced, "vs_seed") <= 0.33 if paced else None,
            "one uncached call per snapshot",
        ),
        _row_latency_check("first row ≤ 10 s after a session's first turn", paced, "first", 10),
        _row_latency_check("final row ≤ 60 s after a session's last turn", paced, "final", 60),
        Check(
            "bursts: about one call per session (pipeline)",
            f"{bursts['calls_per_session']} per session" if bursts else "-",
            num(bursts, "calls_per_session") <= 1.1 if bursts else None,
        ),
    ]


def _row_latency_check(target: str, row: Row | None, which: str, limit: float) -> Check:
    if row is None:
        return Check(f"{target} (pipeline)", "-", None)
    worst = num(row, f"{which}_row_max_s")
    return Check(f"{target} (pipeline)", f"{worst} s at worst", worst <= limit)


def _consumer(row: Row) -> str:
    workers = f", {row['workers']} processes" if num(row, "workers") > 1 else ""
    return f"{row['work']}{workers}"


# The summary: every figure once


def summary_rows(results: Results) -> list[Row]:
    """Every figure of every benchmark, one row each, in one set of columns."""
    return [
        *(_producer_summary(r) for r in producer_medians(results)),
        *(_latency_summary(r) for r in results.get("latency", [])),
        *(_drain_summary(r) for r in drain_medians(results)),
        *(_held_summary(r) for r in held_phases(results)),
        *(_bursty_summary(r) for r in results.get("bursty", [])),
        *(_spend_summary(r) for r in results.get("spend", [])),
    ]


def _producer_summary(r: Row) -> Row:
    rounds = f", median of {r['rounds']} rounds" if num(r, "rounds") > 1 else ""
    return {
        "benchmark": "producer",
        "case": f"{SERVER_NAMES.get(str(r['server']), r['server'])},"
        f" {num(r, 'target_rps'):.0f} req/s offered",
        "throughput": f"{r['achieved_rps']} req/s",
        **{k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
        "notes": f"{r['errors']} errors in {r['requests']} requests{rounds}",
    }


def _latency_summary(r: Row) -> Row:
    return {
        "benchmark": "enqueue → row",
        "case": f"{r['extractor']}, {r['snapshots']} snapshots at {num(r, 'rate_per_s'):.0f}/s",
        **{k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
        "notes": f"max {r['max_ms']} ms",
    }


def _drain_summary(r: Row) -> Row:
    worker = "nexus worker" if r["queue"] == "nexus" else r["queue"]
    spread = (
        f", median of {r['runs']} ({r['slowest']}–{r['fastest']})" if num(r, "runs") > 1 else ""
    )
    return {
        "benchmark": "drain",
        "case": f"{worker}, {_consumer(r)}",
        "throughput": f"{r['steady_msgs_per_s']} msgs/s",
        "peak_rss_mb": r["peak_rss_mb"],
        "notes": f"{r['messages']} messages, {r['msgs_per_s']} msgs/s from spawn to empty"
        f" ({r['drain_s']} s, start-up {r['startup_s']} s){spread}",
    }


def _held_summary(r: Row) -> Row:
    if r["variant"] == "held":
        case = f"held transaction, {_window_name(str(r['phase']))}"
    else:
        case = f"no held transaction (run {r['run']}), {r['phase']} window"
    return {
        "benchmark": "producer + enqueue → row",
        "case": f"nexus up, {num(r, 'target_rps'):.0f} req/s, {case}",
        "throughput": f"{r['achieved_rps']} req/s",
        **{k: r[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
        "notes": f"enqueue → row p50 {r['e2r_p50_ms']} ms, p99 {r['e2r_p99_ms']} ms;"
        f" {r['errors']} errors",
    }


def _bursty_summary(r: Row) -> Row:
    return {
        "benchmark": "LLM calls (bursty)",
        "case": f"{r['sessions']} sessions x {num(r, 'snapshots') / num(r, 'sessions'):.0f}"
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


# The report


RERUN = ".venv/bin/python -m bench --only {name}    # prints only; add --output FILE to keep it"

REPRODUCE = """```bash
make bench                                # installs the bench extras, runs all, rewrites this file
.venv/bin/python -m bench                 # the same, without the install step
.venv/bin/python -m bench --quick         # smoke run: shorter and smaller, prints only
.venv/bin/python -m bench --only drain    # one benchmark (repeatable), prints only
DATABASE_URL=postgresql://USER@HOST/DB make bench   # on another server (default: embedded)
DATABASE_URL=postgresql://USER@HOST/DB .venv/bin/python -m bench.pgmq_versions  # pgmq 1.5.1 vs 1.13
.venv/bin/python -m bench.revisions 3d5ff72   # this checkout against an earlier revision
.venv/bin/python -m bench.revisions 3d5ff72 --trickle-only --trickle-rate 2  # ... what a snapshot costs at 2/s
.venv/bin/python -m bench.revisions 3d5ff72 --up-only   # ... the producer's p99 under `nexus up`
```"""

PRODUCER_TEXT = (
    "The producer against the HTTP floor: the same `nexus serve` (settings, uvicorn "
    "configuration, app, middleware, body parsing and limits, 202 answer) with its enqueue "
    "batcher swapped for one that answers at once, without the database (`bench/httpfloor.py`). "
    "`nexus up` runs the API with the worker in a child process (niced 10), draining with the rules "
    "extractor what the load posts. Three servers side by side, each on its own database; every "
    "round drives each at each rate for the same time from a separate open-loop process "
    "(`bench/loadgen.py`; latency from each request's scheduled start, so falling behind "
    "shows), the floor right before or after `nexus serve`, the order reversed every other "
    "round; figures are medians over the rounds, and each p99 ratio is also given within every "
    "round (`p99_by_round`). The naive producer (one `pgmq.send` and commit "
    "per request, no shared commit) runs once at the end, as context."
)
DRAIN_TEXT = (
    "Drains: each consumer empties the same backlog (one snapshot per session) on a fresh "
    "database, timed from its processes' spawn; the queue's remainder and the processes' "
    "resident memory are sampled every 25 ms. The rate compared is the steady one, the slope "
    "while 95% to 5% of the backlog is left, so start-up (imports, connecting) and the tail "
    "stand apart; spawn-to-empty rates are given too. The PGMQ floor is one connection doing "
    "`pgmq.read(queue, 60, 200)` and `pgmq.delete(queue, ids)` in a loop (psycopg 3, "
    "autocommit, `synchronous_commit = off` as the worker's sessions; `bench/pgmqfloor.py`) on "
    "the very same queue table and bodies. Nexus's `noop` extractor still runs its whole save "
    "path per message (session lease, merge into a `prospect_data` row, extraction history, "
    "delete); a peer's no-op job only updates or deletes its own job row. Every consumer but "
    "procrastinate (about a minute a run) runs once per round, the consumers in alternation "
    "and every other round in reverse order; figures are medians, and each comparison also "
    "gives its ratio within every round (`by_round`), since a ratio of medians can pair one "
    "round's fast side with another round's slow one."
)
COST_TEXT = (
    "What one message cost, from the first message gone to the last (medians over runs): WAL "
    "the server wrote (`pg_current_wal_lsn()`, all of it: the server runs nothing else), and CPU "
    "time of the consumer's processes and of every process of the server but the watcher's "
    "own connection (psutil; a server on another host shows no CPU). Their sum bounds the "
    "rate: on this machine's cores, fully busy, no drain can go faster than the bound, and a "
    "second worker process can add at most what one leaves of it. One worker kept with its "
    "server to one core (CPU affinity of the worker and of every process of the server, where "
    "they run on this machine and may be changed) shows what a second process adds when it has "
    "a core of its own: the two-process target assumes a core to spare, which one process "
    "already half uses on a machine of two (its own work and its backend's overlap)."
)
HELD_TEXT = (
    "A held transaction: `nexus up` (rules extractor) under a steady open-loop load, first "
    "while another session sits idle in `BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1` "
    "(pinning the xmin horizon, checked in `pg_stat_activity`), then for as long again after it "
    "commits. The reference is the same run without that session, right before and right "
    "after it; each ratio is taken against the better of the two, so the machine's noise "
    "cannot make the held run look better than it is. Enqueue → row is each "
    "message's `enqueued_at` to its extraction's `created_at` (server clock), for the messages "
    "enqueued in the window. Dead row versions are `pg_stat_user_tables.n_dead_tup`, sampled "
    "throughout; tables shown are those that reached 100."
)
LATENCY_TEXT = (
    "Enqueue → row: from the start of a POST to the moment its `prospect_data` row exists, "
    "`nexus up` with the `rules` extractor. What a snapshot cost, from the first post to the "
    "last row: the CPU time of every process of the server and of `nexus up`'s (the API and "
    "its worker), and the WAL written; at this trickle a read and a save carry a snapshot or "
    "two, so their fixed costs are most of it."
)
BURSTY_TEXT = (
    "LLM calls per session: sessions post all their snapshots in bursts to `nexus serve`; "
    "worker processes use the Anthropic extractor against the fake Anthropic API on "
    "loopback (`tests.fakes.llm_server`)."
)

PRODUCER_COLUMNS = ["round", "server", "target_rps", "achieved_rps", "requests", "errors"]
PRODUCER_COLUMNS += ["p50_ms", "p95_ms", "p99_ms", "max_ms"]
DRAIN_COLUMNS = ["round", "queue", "work", "workers", "messages", "drain_s", "msgs_per_s"]
DRAIN_COLUMNS += ["startup_s", "steady_msgs_per_s", "peak_rss_mb", *COST_KEYS]
HELD_COLUMNS = ["run", "variant", "phase", "target_rps", "achieved_rps", "requests", "errors"]
HELD_COLUMNS += ["p50_ms", "p95_ms", "p99_ms", "saved", "e2r_p50_ms", "e2r_p95_ms"]
HELD_COLUMNS += ["e2r_p99_ms"]
LATENCY_COLUMNS = ["extractor", "snapshots", "rate_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"]
LATENCY_COLUMNS += [
    "postgres_cpu_us_per_snapshot",
    "nexus_cpu_us_per_snapshot",
    "wal_bytes_per_snapshot",
]
BURSTY_COLUMNS = ["sessions", "snapshots", "accepted", "workers", "llm_latency_s", "llm_calls"]
BURSTY_COLUMNS += ["calls_per_session", "extractions", "dead_letters", "post_s", "settle_s"]
SPEND_COLUMNS = ["mode", "case", "sessions", "snapshots", "calls", "calls_per_snapshot", "input"]
SPEND_COLUMNS += ["cache_write", "cache_read", "output", "usd", "vs_seed", "first_row_max_s"]
SPEND_COLUMNS += ["final_row_max_s", "late_fix_kept"]
SPEND_TEXT = (
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
)


def render(
    results: Results, errors: dict[str, str], machine_line: str, when: str, load: str = ""
) -> str:
    """The whole of docs/BENCHMARKS.md."""
    parts = [
        "# Benchmarks",
        f"Measured on **{machine_line}**, {when}, by `python -m bench` (bench/). "
        "Everything runs on loopback against one PostgreSQL server; one benchmark at a time. "
        "Each target compares Nexus with a reference measured in the same run on the same "
        "server, so the ratio counts, not the absolute figures (this machine's speed drifts "
        "by tens of percent within minutes). " + load,
        "## Reproduce",
        REPRODUCE,
        "## Targets",
        table(targets(results), TARGET_COLUMNS),
        "## Summary",
        table(summary_rows(results), SUMMARY_COLUMNS),
        *_producer_section(results),
        *_plain_section(results, "latency", "Enqueue → row", LATENCY_TEXT, LATENCY_COLUMNS),
        *_drain_section(results),
        *_held_section(results),
        *_plain_section(results, "bursty", "Bursty", BURSTY_TEXT, BURSTY_COLUMNS),
        *_plain_section(results, "spend", "Spend", SPEND_TEXT, SPEND_COLUMNS),
        *_error_section(errors),
    ]
    return "\n\n".join(parts) + "\n"


def _rerun(name: str) -> str:
    return f"Rerun: `{RERUN.format(name=name)}`"


def _plain_section(
    results: Results, name: str, title: str, text: str, columns: list[str]
) -> list[str]:
    if not results.get(name):
        return []
    return [f"## {title}", text, table(results[name], columns), _rerun(name)]


def _producer_section(results: Results) -> list[str]:
    if not results.get("producer"):
        return []
    ratios = floor_ratios(results)
    return [
        "## Producer against the HTTP floor",
        PRODUCER_TEXT,
        *([table(ratios, list(ratios[0]))] if ratios else []),
        "Every run:",
        table(results["producer"], PRODUCER_COLUMNS),
        _rerun("producer"),
    ]


def _drain_section(results: Results) -> list[str]:
    if not results.get("drain"):
        return []
    ratios = drain_ratios(results)
    medians = drain_medians(results)
    costs = drain_costs(results)
    return [
        "## Drain against the PGMQ floor and the peers",
        DRAIN_TEXT,
        *([table(ratios, list(ratios[0]))] if ratios else []),
        "Medians:",
        table(medians, list(medians[0])),
        *([COST_TEXT, table(costs, list(costs[0]))] if costs else []),
        "Every run:",
        table(results["drain"], DRAIN_COLUMNS),
        "How each peer ran:",
        "\n".join(f"- **{p.name}**: {p.settings}." for p in peers.PEERS.values()),
        _rerun("drain"),
    ]


def _held_section(results: Results) -> list[str]:
    phases = held_phases(results)
    if not phases:
        return []
    ratios = held_ratios(results)
    dead = dead_tuples_after_release(results)
    return [
        "## Held transaction",
        HELD_TEXT,
        *([table(ratios, list(ratios[0]))] if ratios else []),
        table(phases, HELD_COLUMNS),
        *(
            []
            if autovacuum_ran(results)
            else [
                "Autovacuum is off on this server, so nothing removes dead row versions, with "
                "or without the transaction: the figures below show that, not Nexus."
            ]
        ),
        "Dead row versions after the release (held run), and the most the run without the "
        "transaction reached:",
        *([table(dead, list(dead[0]))] if dead else ["(none grew)"]),
        "Dead row versions sampled over time:",
        _dead_series(results),
        _rerun("held"),
    ]


def _dead_series(results: Results) -> str:
    shown = held_tables(results)
    samples = [r for r in results.get("held", []) if r.get("kind") == "dead"]
    vacuums = [r for r in results.get("held", []) if r.get("kind") == "vacuums"]
    rows = [*samples, *({**v, "phase": "vacuums, by the end"} for v in vacuums)]
    return table(rows, ["run", "variant", "t_s", "phase", *shown])


def _error_section(errors: dict[str, str]) -> list[str]:
    if not errors:
        return []
    return ["## Failed", "\n".join(f"- `{name}`: {error}" for name, error in errors.items())]
