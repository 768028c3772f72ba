"""The benchmark harness's pure parts: its Markdown tables and its met/missed verdicts."""

from __future__ import annotations

import bench.bursty
import bench.peers
from bench.__main__ import drain_medians, ratios, render, summary_rows, targets
from bench.common import table

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
    }
    assert {"not run"} == {row["result"] for row in targets({})}


def test_summary_ratios_and_report() -> None:
    """One summary row per figure, median-to-median ratios, and a report holding every section."""
    assert len(summary_rows(RESULTS)) == 8
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
    for heading in ("## Summary", "## Targets", "## Drain", "## Bursty", "## Failed"):
        assert heading in report
    assert "median of 3 (1000–2500)" in report
    assert set(bench.peers.PEERS) == {"pgqueuer", "procrastinate"}
    assert bench.bursty.SESSIONS == 200
