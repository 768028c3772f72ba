"""A network partition: every connection to Postgres goes silent at once, without a reset or a
close, as when a failed-over primary or a dropped route leaves half-open sockets behind. New
connections pass. Nothing may wait for ever on a connection that will never answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.helpers import free_port, nexus_env, nexus_process, wait_for, wait_healthy
from tests.partition import PartitionProxy, partition_proxy

VT_S = 4  # the worker's lease: the longest any of its database calls may wait


@pytest.fixture
def proxy(pg_admin_url: str) -> Iterator[PartitionProxy]:
    with partition_proxy(pg_admin_url) as proxy:
        yield proxy


def enqueue(url: str, session: str) -> None:
    """Queue one snapshot through the producer's own SQL function, on a direct connection."""
    item = {
        "session_id": session,
        "fingerprint_id": session,
        "message": {
            "sessionId": session,
            "fingerprint": session,
            "messages": [{"role": "user", "content": "Me llamo Ana, quiero precios"}],
        },
        "headers": {},
    }
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT nexus.enqueue_snapshots('nexus_prospect_ingestion', %s::jsonb)",
            (json.dumps([item]),),
        )


def saved(url: str, session: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM prospect_data WHERE session_id = %s", (session,)
        ).fetchone()
    return bool(row and row[0])


def test_a_worker_gets_past_a_partition_within_its_lease(
    db_url: str, proxy: PartitionProxy, tmp_path: Path
) -> None:
    """Every connection the worker holds is cut while it idles: its next read waits on one of
    them. Within a lease it gives that connection up, opens new ones, and saves what came in."""
    env = nexus_env(proxy.url(db_url), NEXUS_EXTRACTOR="rules", NEXUS_WORKER_VT_S=str(VT_S))
    with nexus_process(["worker"], env, log_path=tmp_path / "worker.log") as worker:
        enqueue(db_url, "before-the-cut")
        wait_for(lambda: saved(db_url, "before-the-cut"), timeout=30, what="a first save")
        assert proxy.cut() > 0
        enqueue(db_url, "after-the-cut")
        wait_for(
            lambda: saved(db_url, "after-the-cut"),
            timeout=6 * VT_S,
            interval=0.2,
            what="a save after the partition, on new connections",
        )
        assert worker.poll() is None


def test_the_api_answers_503_then_202_across_a_partition(
    db_url: str, proxy: PartitionProxy, tmp_path: Path
) -> None:
    """The producer's pooled connections are cut: a request waits at most its database timeout
    and gets 503, and soon the producer queues again on new connections."""
    port = free_port()
    env = nexus_env(proxy.url(db_url), port, NEXUS_EXTRACTOR="rules")
    base = f"http://127.0.0.1:{port}"
    body = {
        "messages": [{"role": "user", "content": "Hola"}],
        "fingerprint": "partition-fp",
        "sessionId": "partition-session",
    }
    with nexus_process(["serve"], env, log_path=tmp_path / "serve.log") as api:
        wait_healthy(base, api)
        first = httpx.post(f"{base}/api/nexus/producer", json=body, timeout=10)
        assert first.status_code == 202, first.text
        assert proxy.cut() > 0
        statuses: list[int] = []

        def queued_again() -> bool:
            response = httpx.post(f"{base}/api/nexus/producer", json=body, timeout=10)
            statuses.append(response.status_code)
            assert response.status_code in (202, 503), response.text
            return response.status_code == 202

        wait_for(queued_again, timeout=30, interval=0.2, what="a 202 after the partition")
        assert api.poll() is None
