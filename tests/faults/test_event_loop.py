"""The largest snapshots the producer accepts, extracted offline by `nexus up`, while small posts
are timed: the API and the worker share one event loop, so extraction must never stall it."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import httpx
import psycopg
from bench.extraction import largest_snapshot

from tests.helpers import running_nexus, wait_for

URL = "/api/nexus/producer"
BIG_COUNT = 6
BIG_EVERY_S = 0.5
SMALL_EVERY_S = 0.05


def big_snapshot(n: int) -> dict[str, object]:
    """A snapshot at the producer's size limits: 31 user turns of 8,000 characters."""
    messages = [turn.model_dump() for turn in largest_snapshot(seed=n)]
    return {"messages": messages, "fingerprint": f"big-{n}", "sessionId": f"big-{n}"}


class BigPoster(threading.Thread):
    """Posts BIG_COUNT maximum-size snapshots, one every BIG_EVERY_S seconds."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.statuses: list[int] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            for n in range(BIG_COUNT):
                try:
                    self.statuses.append(client.post(URL, json=big_snapshot(n)).status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)
                time.sleep(BIG_EVERY_S)


def _big_extracted(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            "SELECT count(DISTINCT session_id) FROM prospect_extractions "
            "WHERE session_id LIKE 'big-%%'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_largest_snapshots_do_not_stall_the_producer(db_url: str, tmp_path: Path) -> None:
    """While maximum-size snapshots are extracted, every small POST is answered within a second."""
    with running_nexus(
        ["up"],
        db_url,
        log_path=tmp_path / "up.log",
        NEXUS_EXTRACTOR="rules",
        NEXUS_RATE_LIMIT_IP_PER_MINUTE="0",
        NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0",
    ) as base:
        poster = BigPoster(base)
        answers: list[float] = []
        with httpx.Client(base_url=base, timeout=30) as client:
            poster.start()
            deadline = time.monotonic() + 120
            i = 0
            while (poster.is_alive() or _big_extracted(db_url) < BIG_COUNT) and (
                time.monotonic() < deadline
            ):
                i += 1
                body = {
                    "messages": [{"role": "user", "content": f"Me llamo Ana{i}"}],
                    "fingerprint": f"small-{i}",
                    "sessionId": f"small-{i}",
                }
                started = time.monotonic()
                assert client.post(URL, json=body).status_code == 202
                answers.append(time.monotonic() - started)
                time.sleep(SMALL_EVERY_S)
        poster.join(timeout=30)
        wait_for(
            lambda: _big_extracted(db_url) == BIG_COUNT, timeout=30, what="big snapshots saved"
        )
    assert poster.statuses == [202] * BIG_COUNT
    slowest, median = max(answers), statistics.median(answers)
    assert slowest < 1.0, f"slowest small POST {slowest:.2f}s (median {median * 1000:.0f} ms)"
    assert median < 0.2, f"median small POST {median * 1000:.0f} ms"
