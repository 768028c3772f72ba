"""The benchmark harness's pure parts: its Markdown tables and its met/missed verdicts."""

from __future__ import annotations

import bench.bursty
import bench.peers
import bench.pgmq_versions
import bench.spend
from bench.__main__ import drain_medians, ratios, render, summary_rows, targets
from bench.common import table
from bench.spend import SpendPlan, simulated_rows

RESULTS: dict[str, list[dict[str, object]]] = {
    "producer": [
        {"target_rps": 500.0, "achieved_rps": 499.8, "requests": 5000, "errors": 0, "p50_ms": 2.1,
         "p95_ms": 4.0, "p99_ms": 8.5, "max_ms": 20.0},
        {"target_rps": 1000.0, "achieved_rps": 990.0, "requests": 10000, "errors": 3,
         "p50_ms": 3.0, "p95_ms": 9.0, "p99_ms": 30.0, "max_ms": 90.0},
    ],
    "latency": [
        {"extractor": "rules", "snapshots": 500, "rate_per_s": 50.0, "p50_ms": 40.0,
         "p95_ms": 120.0, "p99_ms": 300.0, "max_ms": 400.0},
    ],
    "drain": [
        {"round": 1, "queue": "nexus", "work": "noop extractor", "messages": 20000,
         "drain_s": 10.0, "msgs_per_s": 2000, "peak_rss_mb": 90.0},
        {"round": 1, "queue": "pgqueuer", "work": "no-op job", "messages": 20000,
         "drain_s": 2.5, "msgs_per_s": 8000, "peak_rss_mb": 58.0},
        {"round": 2, "queue": "nexus", "work": "noop extractor", "messages": 20000,
         "drain_s": 8.0, "msgs_per_s": 2500, "peak_rss_mb": 91.0},
        {"round": 2, "queue": "pgqueuer", "work": "no-op job", "messages": 20000,
         "drain_s": 2.0, "msgs_per_s": 10000, "peak_rss_mb": 58.0},
        {"round": 3, "queue": "nexus", "work": "noop extractor", "messages": 20000,
         "drain_s": 20.0, "msgs_per_s": 1000, "peak_rss_mb": 92.0},
        {"round": 3, "queue": "pgqueuer", "work": "no-op job", "messages": 20000,
         "drain_s": 2.2, "msgs_per_s": 9000, "peak_rss_mb": 58.0},
        {"round": 1, "queue": "nexus", "work": "rules extractor", "messages": 20000,
         "drain_s": 12.5, "msgs_per_s": 1600, "peak_rss_mb": 95.5},
        {"round": 1, "queue": "procrastinate", "work": "no-op job", "messages": 20000,
         "drain_s": 50.0, "msgs_per_s": 400, "peak_rss_mb": 40.0},
    ],
    "bursty": [
        {"sessions": 200, "snapshots": 1000, "workers": 4, "llm_calls": 210,
         "calls_per_session": 1.05},
    ],
    "spend": [
        {"mode": "pipeline", "case": "paced, policy", "snapshots": 96, "calls": 36,
         "calls_per_snapshot": 0.38, "vs_seed": 0.29, "first_row_max_s": 6.7,
         "final_row_max_s": 61.0},
        {"mode": "pipeline", "case": "bursts, policy", "snapshots": 1000, "calls": 230,
         "calls_per_session": 1.15, "vs_seed": 0.16, "first_row_max_s": 4.3,
         "final_row_max_s": 3.5},
        {"mode": "simulated", "case": "paced, policy", "snapshots": 96, "calls": 36,
         "calls_per_snapshot": 0.38, "vs_seed": 0.26, "first_row_max_s": 7.5,
         "final_row_max_s": 61.0},
        {"mode": "simulated", "case": "bursts, policy", "snapshots": 1000, "calls": 200,
         "calls_per_session": 1.0, "vs_seed": 0.15, "first_row_max_s": 4.3,
         "final_row_max_s": 3.5},
    ],
}  # fmt: skip


def test_table_is_markdown() -> None:
    """A header row, a separator, then one row per dict with blanks for missing columns."""
    expected = "| a | b |\n|---|---|\n| 1 | x |\n| 2 |  |"
    assert expected == table([{"a": 1, "b": "x"}, {"a": 2}], ["a", "b"])


def test_targets_say_met_missed_or_not_run() -> None:
    """Each target is judged on the made-up figures; a benchmark that did not run is 'not run'."""
    verdicts = {row["target"]: row["result"] for row in targets(RESULTS)}
    assert verdicts == {
        "producer p99 < 10 ms at 500 req/s": "met",
        "no errors at 1,000 req/s": "missed",
        "enqueue → row p50 < 50 ms (rules)": "met",
        "enqueue → row p99 < 250 ms (rules)": "missed",
        "no-op drain ≥ 1.0x pgqueuer": "missed",
        "no-op drain ≥ 1.0x procrastinate": "met",
        "worker peak RSS < 150 MB": "met",
        "paced spend ≤ 0.33x seed design (pipeline)": "met",
        "first row ≤ 10 s after a session's first turn (pipeline)": "met",
        "final row ≤ 60 s after a session's last turn (pipeline)": "missed",
        "bursts: about one call per session (pipeline)": "missed",
    }
    assert {"not run"} == {row["result"] for row in targets({})}


def test_summary_ratios_and_report() -> None:
    """One summary row per figure, median-to-median ratios, and a report holding every section."""
    assert len(summary_rows(RESULTS)) == 12
    medians = {(r["queue"], r["work"]): r for r in drain_medians(RESULTS)}
    noop = medians[("nexus", "noop extractor")]
    assert (noop["msgs_per_s"], noop["slowest"], noop["fastest"], noop["runs"]) == (
        2000,
        1000,
        2500,
        3,
    )
    assert noop["peak_rss_mb"] == 92.0
    assert [row["nexus_over_peer"] for row in ratios(RESULTS)] == ["0.22x", "5.00x"]
    report = render(RESULTS, {"bursty": "RuntimeError: boom"}, "box: 2 cores", "today")
    for heading in ("## Summary", "## Targets", "## Drain", "## Bursty", "## Spend", "## Failed"):
        assert heading in report
    assert "median of 3 (1000–2500)" in report
    assert set(bench.peers.PEERS) == {"pgqueuer", "procrastinate"}
    assert bench.bursty.SESSIONS == 200


def test_spend_simulation_runs_small_and_says_what_it_measured() -> None:
    """A small spend simulation bills fewer calls than snapshots, keeps late corrections, and
    spends less than the seed design; bursts cost one call per session."""
    plan = SpendPlan(sessions=3, long_sessions=1, long_turns=20, burst_sessions=10, pipeline=False)
    rows = {row["case"]: row for row in simulated_rows(plan)}
    policy, bursts = rows[bench.spend.POLICY_CASE], rows[bench.spend.BURST_CASE]
    assert 0 < float(str(policy["calls_per_snapshot"])) < 1
    assert policy["late_fix_kept"] == "3/3"
    assert all(0 < float(str(row["vs_seed"])) < 1 for row in rows.values())
    assert (bursts["sessions"], bursts["calls_per_session"]) == (10, 1.0)
    assert float(str(policy["first_row_max_s"])) <= 10


PGMQ_DRAINS: list[dict[str, object]] = [
    {"round": r, "pgmq": bench.pgmq_versions.CASES[case], "msgs_per_s": rate}
    for r, (case, rate) in enumerate(
        [("sql-only", 10000), ("1.5.1", 8500), ("sql-only", 9000), ("1.5.1", 7000),
         ("sql-only", 11000), ("1.5.1", 9500)]
    )
]  # fmt: skip
PGMQ_LATENCIES: list[dict[str, object]] = [
    {"pgmq": bench.pgmq_versions.CASES["sql-only"], "p50_ms": 14.0},
    {"pgmq": bench.pgmq_versions.CASES["1.5.1"], "p50_ms": 61.0},
]


def test_pgmq_versions_compares_medians_against_the_spec() -> None:
    """1.5.1's median drain over 1.13's must be ≥ 0.8 and its p50 under 50 ms, judged as such."""
    verdicts = {
        row["target"]: (row["measured"], row["result"])
        for row in bench.pgmq_versions.targets(PGMQ_DRAINS, PGMQ_LATENCIES)
    }
    assert verdicts == {
        "enqueue → row p50 < 50 ms (rules) on pgmq 1.5.1": ("61.0 ms", "missed"),
        "no-op drain on pgmq 1.5.1 within 20% of 1.13": ("0.85x", "met"),
    }


def test_pgmq_versions_section_is_replaced_in_place_and_kept() -> None:
    """Its section of BENCHMARKS.md is swapped between its markers, or appended when missing."""
    start, end = bench.pgmq_versions.START, bench.pgmq_versions.END
    doc = f"# Benchmarks\n\n{start}\nold figures\n{end}\n\n## Later\n"
    new = f"{start}\nnew figures\n{end}"

    assert bench.pgmq_versions.with_section(doc, new) == doc.replace("old", "new")
    assert bench.pgmq_versions.section_of(doc) == f"{start}\nold figures\n{end}"
    assert bench.pgmq_versions.with_section("# Benchmarks\n", new) == f"# Benchmarks\n\n{new}\n"
    assert bench.pgmq_versions.section_of("# Benchmarks\n") is None
