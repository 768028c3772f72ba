"""What an orchestrator and Prometheus see: request durations by route, liveness, readiness."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg

from tests.acceptance.test_observability import samples
from tests.helpers import (
    SEED_CONVERSATION,
    free_port,
    nexus_env,
    nexus_process,
    wait_for,
    wait_healthy,
)

DURATION = "nexus_http_request_duration_seconds"


def _count(found: dict, route: str, status: int, method: str = "GET") -> float:
    labels = (("method", method), ("route", route), ("status", str(status)))
    return found.get((f"{DURATION}_count", labels), 0)


@contextmanager
def _newest_migration_missing(db_url: str) -> Iterator[None]:
    """The database as if the newest migration had not been applied (its ledger row only)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "DELETE FROM nexus.schema_migrations WHERE version ="
            " (SELECT max(version) FROM nexus.schema_migrations) RETURNING version, name, checksum"
        ).fetchone()
        try:
            yield
        finally:
            conn.execute(
                "INSERT INTO nexus.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                row,
            )


def test_request_durations_are_labelled_by_route_template_and_status(db_url: str) -> None:
    """/metrics times each request under its route's template and status; unknown paths share one label."""
    port = free_port()
    with nexus_process(["serve"], nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        with httpx.Client(base_url=base, timeout=10) as client:
            assert client.post("/api/nexus/producer", json=SEED_CONVERSATION).status_code == 202
            bad = client.post(
                "/api/nexus/producer", content=b"{", headers={"Content-Type": "application/json"}
            )
            assert bad.status_code == 400
            assert client.get("/no/such/path/1").status_code == 404
            assert client.get("/no/such/path/2").status_code == 404
            prospect = client.get("/dashboard/prospects/visitor-42", follow_redirects=False)
            # Routes and mounts of the framework's own kind, beside the application's.
            for path in ("/openapi.json", "/docs", "/static/dashboard.css"):
                assert client.get(path).status_code == 200, path
            found = samples(client.get("/metrics").text)
    assert _count(found, "/api/nexus/producer", 202, "POST") == 1
    assert _count(found, "/api/nexus/producer", 400, "POST") == 1
    assert _count(found, "unmatched", 404) == 2
    assert _count(found, "unmatched", 200) == 0
    for route in ("/openapi.json", "/docs", "/static"):
        assert _count(found, route, 200) == 1, route
    template = "/dashboard/prospects/{fingerprint_id:path}"
    assert _count(found, template, prospect.status_code) == 1
    routes = {dict(labels).get("route") for (name, labels) in found if name.startswith(DURATION)}
    assert not any("/no/such" in r or "visitor-42" in r for r in routes if r), routes
    bucket = (
        ("le", "0.1"),
        ("method", "POST"),
        ("route", "/api/nexus/producer"),
        ("status", "202"),
    )
    assert (f"{DURATION}_bucket", bucket) in found  # "202 in under 100 ms" is one bucket


def test_api_liveness_and_readiness_follow_the_migrations(db_url: str) -> None:
    """/healthz is 200 whatever the database; /readyz is 503 while a migration is missing, 200 after."""
    port = free_port()
    with nexus_process(["serve"], nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        assert httpx.get(f"{base}/healthz").json() == {"status": "alive"}
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready", "reasons": []}
        with _newest_migration_missing(db_url):
            pending = httpx.get(f"{base}/readyz")
            assert httpx.get(f"{base}/healthz").status_code == 200
        assert pending.status_code == 503 and pending.headers["Retry-After"]
        assert pending.json()["status"] == "not_ready"
        assert pending.json()["reasons"][0].startswith("migrations pending")
        assert httpx.get(f"{base}/readyz").status_code == 200


def test_a_standalone_worker_serves_metrics_liveness_and_readiness(db_url: str) -> None:
    """`nexus worker` with NEXUS_WORKER_METRICS_PORT answers /metrics, /healthz and /readyz on it."""
    port = free_port()
    with psycopg.connect(db_url, autocommit=True) as conn:  # queued, hidden for a minute
        for _ in range(3):
            conn.execute("SELECT pgmq.send('nexus_prospect_ingestion', '{}'::jsonb, 60)")
    env = nexus_env(db_url, NEXUS_EXTRACTOR="rules", NEXUS_WORKER_METRICS_PORT=str(port))
    with nexus_process(["worker"], env) as proc:
        base = f"http://127.0.0.1:{port}"

        def answer(path: str) -> httpx.Response | None:
            assert proc.poll() is None, "the worker exited"
            try:
                return httpx.get(f"{base}{path}", timeout=2)
            except httpx.TransportError:
                return None

        ready = wait_for(
            lambda: (r := answer("/readyz")) is not None and r.status_code == 200 and r,
            timeout=30,
            what="the worker ready",
        )
        assert ready.json() == {"status": "ready", "reasons": []}
        assert answer("/healthz").json() == {"status": "alive"}
        text = answer("/metrics").text
        assert "nexus_messages_processed" in text
        # The queue's figures are read from the database, as the API's are, not left at 0.
        assert samples(text)[("nexus_queue_length", ())] == 3
        with _newest_migration_missing(db_url):
            pending = wait_for(
                lambda: (r := answer("/readyz")) is not None and r.status_code == 503 and r,
                timeout=15,
                what="the worker not ready",
            )
        assert "migrations pending" in pending.json()["reasons"][0]
