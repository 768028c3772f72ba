"""`nexus up`: the API in one process, the worker in a child process it supervises."""

from __future__ import annotations

import signal

import httpx
import psutil
import psycopg

from tests.acceptance.test_observability import samples
from tests.helpers import free_port, nexus_env, nexus_process, wait_for, wait_healthy

NAMES = ("Bruno", "Carla", "Diego", "Elena", "Fabio")


def _worker_children(pid: int) -> list[psutil.Process]:
    return [
        p
        for p in psutil.Process(pid).children()
        if "worker" in " ".join(p.cmdline()) and p.is_running()
    ]


def _post(base: str, session: str, name: str) -> httpx.Response:
    body = {
        "messages": [{"role": "user", "content": f"Me llamo {name} y quiero paquetes"}],
        "fingerprint": f"fp-{session}",
        "sessionId": session,
    }
    return httpx.post(f"{base}/api/nexus/producer", json=body, timeout=5)


def _names(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        return {r[0] for r in conn.execute("SELECT nombre FROM prospect_data")}


def _saved(base: str) -> float:
    metrics = samples(httpx.get(f"{base}/metrics", timeout=5).text)
    return metrics.get(("nexus_messages_processed_total", (("outcome", "saved"),)), 0.0)


def test_a_dead_worker_process_is_started_again_and_the_api_never_stops(db_url: str) -> None:
    """The worker runs in its own process; killed, it is started again while the API keeps
    answering 202, and /metrics counts what both processes did."""
    port = free_port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")
    with nexus_process(["up"], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        [first] = wait_for(lambda: _worker_children(proc.pid), what="the worker process")
        assert _post(base, "before", "Ana").status_code == 202
        wait_for(lambda: "Ana" in _names(db_url), what="Ana's row")
        # The counter moves just after the commit that made the row visible: a kill in between
        # would lose Ana's count, not her row.
        wait_for(lambda: _saved(base) == 1, what="Ana's count")

        first.send_signal(signal.SIGKILL)
        answers = [_post(base, f"during-{n}", name).status_code for n, name in enumerate(NAMES)]
        [second] = wait_for(
            lambda: [p for p in _worker_children(proc.pid) if p.pid != first.pid],
            timeout=20,
            what="a new worker process",
        )
        wait_for(lambda: set(NAMES) <= _names(db_url), timeout=20, what="every row")
        wait_for(lambda: _saved(base) >= 6, what="every count")
        metrics = samples(httpx.get(f"{base}/metrics").text)

    assert answers == [202] * 5
    assert second.pid != first.pid
    assert metrics[("nexus_messages_enqueued_total", ())] == 6
    assert metrics[("nexus_messages_processed_total", (("outcome", "saved"),))] == 6


def test_the_worker_process_yields_the_cores_to_the_api(db_url: str) -> None:
    """`nexus up` runs its worker niced by 10 (the API's niceness unchanged), unless the
    environment sets NEXUS_WORKER_NICE."""
    port = free_port()
    with nexus_process(["up"], nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        [worker] = wait_for(lambda: _worker_children(proc.pid), what="the worker process")
        api_nice = psutil.Process(proc.pid).nice()
        niced = wait_for(lambda: worker.nice() - api_nice or None, what="the worker's niceness")
    port = free_port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules", NEXUS_WORKER_NICE="3")
    with nexus_process(["up"], env) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        [worker] = wait_for(lambda: _worker_children(proc.pid), what="the worker process")
        chosen = wait_for(lambda: worker.nice() - api_nice or None, what="the worker's niceness")
    assert niced == 10
    assert chosen == 3


def _applications(db_url: str) -> set[str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT application_name FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {r[0] for r in rows}


def test_each_process_names_its_connections_for_the_database(db_url: str) -> None:
    """In `pg_stat_activity` a database administrator sees which of Nexus's processes holds a
    connection: the API's are `nexus api`, the worker's `nexus worker`."""
    port = free_port()
    with nexus_process(["up"], nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        names = wait_for(
            lambda: (seen := _applications(db_url)) >= {"nexus api", "nexus worker"} and seen,
            what="the API's and the worker's connections",
        )
    assert names == {"nexus api", "nexus worker"}
