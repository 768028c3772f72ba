"""LLM calls per session when chats post their snapshots in bursts.

200 sessions x 5 snapshots are posted in bursts (every session's turn 1, then every session's
turn 2, ...) to `nexus serve`, drained by worker processes whose Anthropic extractor talks to
the fake Anthropic API on loopback (`tests.fakes.llm_server`, 0.3 s per answer). A worker
skips superseded snapshots, so the figure to watch is LLM calls per session (1.0 is ideal,
5.0 is one call per snapshot).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg

from bench.common import NEXUS, bench_env, free_port, fresh_database, nexus, wait_until_serving

SESSIONS = 200
TURNS = 5
WORKERS = 4
LLM_LATENCY_S = 0.3


def run(
    sessions: int = SESSIONS,
    turns: int = TURNS,
    workers: int = WORKERS,
    latency_s: float = LLM_LATENCY_S,
) -> dict[str, object]:
    """Post the bursts, wait until every snapshot is handled; count the fake model's calls."""
    from tests.fakes.llm_server import FakeLLMServer

    with (
        fresh_database() as url,
        FakeLLMServer("anthropic", latency_s=latency_s) as fake,
        tempfile.TemporaryDirectory(prefix="nexus-bursty-") as folder,
    ):
        port = free_port()
        env = _claude_env(url, port, fake.base_url)
        with ExitStack() as stack:
            stack.enter_context(nexus(["serve"], env))
            logs = [Path(folder) / f"worker{n}.log" for n in range(workers)]
            for log in logs:
                stack.enter_context(_logged_nexus(["worker"], env, log))
            base = f"http://127.0.0.1:{port}"
            wait_until_serving(f"{base}/api/nexus/producer")
            _wait_for_workers(logs)
            started = time.perf_counter()
            statuses = _post_bursts(base, sessions, turns)
            posted_s = time.perf_counter() - started
            _wait_settled(url, sessions)
            settled_s = time.perf_counter() - started
        calls = len(fake.calls)
        applied, dead = _history(url)
    return {
        "sessions": sessions,
        "snapshots": sessions * turns,
        "accepted": statuses.count(202),
        "workers": workers,
        "llm_latency_s": latency_s,
        "llm_calls": calls,
        "calls_per_session": round(calls / sessions, 2),
        "extractions": applied,
        "dead_letters": dead,
        "post_s": round(posted_s, 2),
        "settle_s": round(settled_s, 2),
    }


def _claude_env(url: str, port: int, llm_base_url: str) -> dict[str, str]:
    """`nexus` on the Anthropic extractor, pointed at the fake API; INFO logs show readiness."""
    return bench_env(
        url,
        port,
        NEXUS_EXTRACTOR="anthropic",
        ANTHROPIC_API_KEY="sk-ant-bench",
        ANTHROPIC_BASE_URL=llm_base_url,
        NEXUS_LOG_LEVEL="INFO",
    )


@contextmanager
def _logged_nexus(
    args: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Like `bench.common.nexus`, with the output kept in `log_path`."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen([NEXUS, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_workers(logs: list[Path], timeout: float = 30.0) -> None:
    """Start posting only once every worker listens, so no burst piles up before they run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all("worker.started" in log.read_text(errors="replace") for log in logs):
            return
        time.sleep(0.05)
    raise RuntimeError(f"the workers did not start within {timeout}s")


def conversation(session: int, turns: int) -> list[dict[str, str]]:
    """A sales chat in which the prospect gives one more detail each turn."""
    said = [
        "Hola, buenas tardes",
        f"Me llamo Cliente{session:03d}",
        f"Mi email es cliente{session:03d}@example.com",
        f"Mi teléfono es +34 600 {session:03d} 123",
        "Quiero comprar el plan anual, ¿cuál es el precio?",
    ]
    messages: list[dict[str, str]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": said[turn % len(said)]})
        messages.append({"role": "assistant", "content": "Perfecto, soy Sofía. ¿Algo más?"})
    return messages


def _post_bursts(base: str, sessions: int, turns: int) -> list[int]:
    """Every session's turn 1, then every session's turn 2, ...; returns the status codes."""
    statuses: list[int] = []
    with httpx.Client(base_url=base, timeout=30) as client, ThreadPoolExecutor(16) as pool:
        for turn in range(1, turns + 1):

            def post(session: int, turn: int = turn) -> int:
                body = {
                    "messages": conversation(session, turn),
                    "fingerprint": f"fp-{session}",
                    "sessionId": f"s-{session}",
                }
                return client.post("/api/nexus/producer", json=body).status_code

            statuses += pool.map(post, range(sessions))
    return statuses


def _wait_settled(url: str, sessions: int, timeout: float = 180.0) -> None:
    """Until the queue is empty and every session has its row."""
    statement = (
        "SELECT (SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion),"
        " (SELECT count(*) FROM prospect_data)"
    )
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(statement).fetchone()
            if row and row[0] == 0 and row[1] >= sessions:
                return
            time.sleep(0.1)
    raise RuntimeError(f"the snapshots were not all handled within {timeout}s")


def _history(url: str) -> tuple[int, int]:
    """Extractions recorded, and messages dead-lettered."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM prospect_extractions),"
            " (SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq)"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


if __name__ == "__main__":
    print(run())
