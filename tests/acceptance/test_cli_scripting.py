"""The `nexus` command in scripts and at a terminal: version, confirmation, JSON output, sending files."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

import nexus_ingest
from tests.acceptance.test_observability import samples
from tests.helpers import NEXUS, free_port, nexus_env, nexus_process, wait_healthy

DATASET = Path(__file__).parents[2] / "datasets" / "dev.jsonl"


def nexus(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEXUS, *args],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=90,
    )


def sql(db_url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def dead_letter(db_url: str, session: str, original_msg_id: int) -> int:
    body = {
        "original": {
            "sessionId": session,
            "fingerprint": f"fp-{session}",
            "messages": [{"role": "user", "content": "Hola"}],
            "seq": 1,
        },
        "originalMsgId": original_msg_id,
        "error": {"reason": "boom", "kind": "permanent", "attempts": 5},
    }
    [(msg_id,)] = sql(
        db_url,
        "SELECT pgmq.send('nexus_prospect_ingestion_dlq', %s, %s)",
        (Jsonb(body), Jsonb({"x-pgmq-group": session})),
    )
    return int(msg_id)


def conversation(session: str, text: str, fingerprint: str | None = None) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": text}],
        "fingerprint": fingerprint or f"fp-{session}",
        "sessionId": session,
    }


def jsonl(path: Path, *lines: object) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def queued(db_url: str) -> int:
    return int(sql(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion")[0][0])


@pytest.fixture
def serving(db_url: str) -> Iterator[dict[str, str]]:
    """`nexus serve` (no worker: what is queued stays queued) and the environment to reach it."""
    port = free_port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")
    with nexus_process(["serve"], env) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        yield env


def test_version_is_printed_on_stdout() -> None:
    """`nexus --version` prints its version on stdout, nothing on stderr, and exits 0."""
    result = subprocess.run([NEXUS, "--version"], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"nexus {nexus_ingest.__version__}\n",
        "",
    )


def test_purge_and_forget_need_yes_without_a_terminal(db_url: str) -> None:
    """Without a terminal, `dlq purge` and `forget` refuse unless --yes; with it they act and say so in JSON."""
    env = nexus_env(db_url)
    dead_letter(db_url, "s-1", 1)
    sql(db_url, "INSERT INTO prospect_data (fingerprint_id, nombre) VALUES ('fp-z', 'Zoe')")
    for args in (["dlq", "purge"], ["forget", "fp-z"]):
        refused = nexus(*args, env=env)
        assert refused.returncode == 1 and "--yes" in refused.stderr, refused.stderr
        assert refused.stderr.startswith("nexus: error:") and refused.stdout == ""
    assert sql(db_url, "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion_dlq") == [(1,)]
    assert sql(db_url, "SELECT count(*) FROM prospect_data") == [(1,)]
    purged = nexus("dlq", "purge", "--yes", "--json", env=env)
    forgot = nexus("forget", "fp-z", "-y", "--json", env=env)
    assert json.loads(purged.stdout) == {"purged": 1}, purged.stderr
    assert json.loads(forgot.stdout)["deleted"]["prospect_data"] == 1, forgot.stderr
    assert sql(db_url, "SELECT count(*) FROM prospect_data") == [(0,)]


def _at_a_terminal(args: list[str], env: dict[str, str], answer: str) -> tuple[int, str]:
    """Run `nexus ARGS` on a pseudo-terminal, type `answer` once it asks; returns (code, screen)."""
    main, side = os.openpty()
    proc = subprocess.Popen([NEXUS, *args], env=env, stdin=side, stdout=side, stderr=side)
    os.close(side)
    screen, deadline = b"", time.monotonic() + 60
    while b"?" not in screen and time.monotonic() < deadline:
        if select.select([main], [], [], 0.5)[0]:
            screen += os.read(main, 4096)
    os.write(main, answer.encode() + b"\r")
    code = proc.wait(timeout=60)
    while select.select([main], [], [], 0.2)[0]:
        try:
            screen += os.read(main, 4096)
        except OSError:
            break
    os.close(main)
    return code, screen.decode(errors="replace")


def test_forget_asks_at_a_terminal_and_respects_the_answer(db_url: str) -> None:
    """At a terminal, `forget` asks first: "n" leaves the visitor, "y" erases them."""
    env = nexus_env(db_url)
    sql(db_url, "INSERT INTO prospect_data (fingerprint_id, nombre) VALUES ('fp-t', 'Teo')")
    code, screen = _at_a_terminal(["forget", "fp-t"], env, "n")
    assert code == 1 and "Erase everything held about visitor 'fp-t'?" in screen, screen
    assert sql(db_url, "SELECT count(*) FROM prospect_data") == [(1,)]
    code, screen = _at_a_terminal(["forget", "fp-t"], env, "y")
    assert code == 0, screen
    assert sql(db_url, "SELECT count(*) FROM prospect_data") == [(0,)]


class FakeProducer:
    """A loopback HTTP/1.1 server that records each POST and answers from a script, then 202."""

    def __init__(self, script: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.script = list(script or [])
        self.requests: list[dict[str, Any]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.requests.append(
                    {
                        "port": self.client_address[1],
                        "key": self.headers.get("idempotency-key"),
                        "session": body.get("sessionId"),
                        "at": time.monotonic(),
                    }
                )
                status, headers = fake.script.pop(0) if fake.script else (202, {})
                answer = json.dumps({"status": "accepted" if status == 202 else "error"}).encode()
                self.send_response(status)
                for name, value in {**headers, "Content-Type": "application/json"}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/nexus/producer"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_send_keeps_one_connection_alive_honours_retry_after_and_keys_each_line(
    tmp_path: Path,
) -> None:
    """A JSON Lines file goes over one connection; a 503's Retry-After is waited; keys are stable per line."""
    fake = FakeProducer(script=[(202, {}), (503, {"Retry-After": "1"})])
    lines = [conversation("s-1", f"turn {n}") for n in range(4)]
    path = jsonl(tmp_path / "chats.jsonl", *lines)
    env = nexus_env("postgresql://unused@127.0.0.1:1/unused")  # `send` needs no database
    try:
        first = nexus("send", str(path), "--url", fake.url, "--json", env=env)
        second = nexus("send", str(path), "--url", fake.url, env=env)
    finally:
        fake.close()
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    run_one, run_two = fake.requests[:5], fake.requests[5:]
    assert len({r["port"] for r in run_one}) == 1, "one kept-alive connection for the whole file"
    assert run_one[2]["key"] == run_one[1]["key"], "the retry repeats the refused line's key"
    assert run_one[2]["at"] - run_one[1]["at"] >= 0.9, "the retry waited for Retry-After"
    keys = [r["key"] for r in run_one if r is not run_one[1]]
    assert len(set(keys)) == 4 and all(k and k.startswith("nexus-send-") for k in keys)
    assert [r["key"] for r in run_two] == keys, "a rerun sends the same keys"
    outcomes = [json.loads(line) for line in first.stdout.splitlines()]
    assert [(o["line"], o["httpStatus"], o["attempts"]) for o in outcomes] == [
        (1, 202, 1),
        (2, 202, 2),
        (3, 202, 1),
        (4, 202, 1),
    ]
    assert second.stdout.strip() == "4 queued, 0 already queued before, 0 refused"


def test_a_rerun_of_the_same_file_enqueues_nothing_twice(
    serving: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    """Sending a file again, concurrently, is answered as duplicates and adds nothing to the queue."""
    path = jsonl(
        tmp_path / "chats.jsonl",
        conversation("a", "Hola"),
        conversation("b", "Hola"),
        conversation("a", "Me llamo Ana"),
    )
    first = nexus("send", str(path), "--concurrency", "3", "--json", env=serving)
    at_a_terminal = {**serving, "TTY_COMPATIBLE": "1"}
    again = nexus("send", str(path), "--concurrency", "3", "--json", env=at_a_terminal)
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    assert first.stderr == "" and "sending" in again.stderr, "a progress bar only on a terminal"
    assert [json.loads(x)["answer"]["duplicate"] for x in first.stdout.splitlines()] == [False] * 3
    assert [json.loads(x)["answer"]["duplicate"] for x in again.stdout.splitlines()] == [True] * 3
    assert queued(db_url) == 3
    order = sql(
        db_url,
        "SELECT message->'messages'->0->>'content' FROM pgmq.q_nexus_prospect_ingestion"
        " WHERE message->>'sessionId' = 'a' ORDER BY (message->>'seq')::int",
    )
    assert order == [("Hola",), ("Me llamo Ana",)], "a session's lines are queued in file order"


def test_send_retries_after_the_rate_limits_retry_after(db_url: str, tmp_path: Path) -> None:
    """Lines over a fingerprint's rate limit get 429 + Retry-After; `send` waits and all are queued."""
    port = free_port()
    env = nexus_env(
        db_url,
        port,
        NEXUS_EXTRACTOR="rules",
        NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="60",
        NEXUS_RATE_LIMIT_FINGERPRINT_BURST="1",
    )
    path = jsonl(
        tmp_path / "chats.jsonl", *(conversation(f"r-{n}", "Hola", "fp-r") for n in range(3))
    )
    with nexus_process(["serve"], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        sent = nexus("send", str(path), "--json", env=env)
        rejected = samples(httpx.get(f"{base}/metrics").text)
    assert sent.returncode == 0, sent.stderr
    outcomes = [json.loads(line) for line in sent.stdout.splitlines()]
    assert [o["httpStatus"] for o in outcomes] == [202, 202, 202]
    assert sum(o["attempts"] for o in outcomes) > 3
    assert rejected[("nexus_messages_rejected_total", (("reason", "rate_limited"),))] >= 1
    assert queued(db_url) == 3


def test_send_names_every_bad_line_and_stops_or_keeps_going(
    serving: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    """Bad lines are named FILE:LINE; by default nothing is sent, with --keep-going the good lines are."""
    path = jsonl(
        tmp_path / "mixed.jsonl",
        conversation("k-1", "Hola"),
        "{oops",
        "[1, 2]",
        conversation("k-2", "Hola"),
    )
    stopped = nexus("send", str(path), env=serving)
    assert stopped.returncode == 1 and queued(db_url) == 0
    assert f"{path}:2: not valid JSON" in stopped.stderr
    assert f"{path}:3: not a JSON object" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    kept = nexus("send", str(path), "--keep-going", "--concurrency", "2", env=serving)
    assert kept.returncode == 1 and queued(db_url) == 2
    assert f"{path}:2:" in kept.stderr and f"{path}:3:" in kept.stderr
    assert kept.stdout.strip() == "2 queued, 0 already queued before, 0 refused"


def test_send_stops_at_the_first_refused_line_and_names_it(
    serving: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    """A line the producer refuses is named with its status and reason; later lines are not sent."""
    refused = {"messages": [], "fingerprint": "fp", "sessionId": "x-2"}
    path = jsonl(
        tmp_path / "chats.jsonl", conversation("x-1", "Hola"), refused, conversation("x-3", "Hola")
    )
    result = nexus("send", str(path), env=serving)
    assert result.returncode == 1
    assert f"{path}:2: refused (HTTP 422 invalid_snapshot): messages:" in result.stderr
    assert result.stdout.strip() == "1 queued, 0 already queued before, 1 refused, 1 not sent"
    assert queued(db_url) == 1


def test_eval_on_an_empty_dataset_fails_clearly(tmp_path: Path, db_url: str) -> None:
    """`nexus eval` on an empty file is an error, not a perfect score."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = nexus("eval", str(empty), env=nexus_env(db_url, NEXUS_EXTRACTOR="rules"))
    assert result.returncode == 1 and "overall_f1" not in result.stdout
    assert (
        result.stderr.strip()
        == f"nexus: error: {empty}: no examples to score (the dataset is empty)"
    )


def test_eval_json_is_the_same_at_any_concurrency_and_shows_progress(db_url: str) -> None:
    """`nexus eval --json` gives one report whatever --concurrency; a terminal gets a progress bar."""
    env = nexus_env(db_url, NEXUS_EXTRACTOR="rules")
    one = nexus("eval", str(DATASET), "--json", env=env)
    four = nexus(
        "eval", str(DATASET), "--json", "--concurrency", "4", env={**env, "TTY_COMPATIBLE": "1"}
    )
    assert one.returncode == 0 and four.returncode == 0, one.stderr + four.stderr
    assert json.loads(one.stdout) == json.loads(four.stdout)
    assert 0 < json.loads(one.stdout)["overall_f1"] <= 1
    examples = json.loads(one.stdout)["examples"]
    assert "extracting" in four.stderr and f"{examples}/{examples}" not in one.stderr
    assert one.stderr == ""


def test_replay_with_concurrency_and_json(db_url: str) -> None:
    """`dlq replay --all --concurrency 3 --json` replays each dead letter once, with a progress bar."""
    env = nexus_env(db_url)
    dead = [dead_letter(db_url, f"s-{n % 4}", n) for n in range(1, 251)]
    result = nexus(
        "dlq", "replay", "--all", "--concurrency", "3", "--json", env={**env, "TTY_COMPATIBLE": "1"}
    )
    assert result.returncode == 0, result.stderr
    assert "replaying" in result.stderr and "100%" in result.stderr
    replayed = json.loads(result.stdout)
    assert sorted(p["deadLetterId"] for p in replayed["replayed"]) == dead
    assert queued(db_url) == 250
    missing = nexus("dlq", "replay", "--id", str(dead[0]), "--json", env=env)
    assert missing.returncode == 1 and json.loads(missing.stdout)["missing"] == [dead[0]]


def test_migrate_and_metrics_print_json(db_url: str) -> None:
    """`migrate --json` and `metrics --json` print one JSON object a script can read."""
    env = nexus_env(db_url)
    migrated = json.loads(nexus("migrate", "--json", env=env).stdout)
    assert migrated["applied"] == [] and migrated["version"] >= 1
    metrics = json.loads(nexus("metrics", "--json", env=env).stdout)
    assert metrics["queue"] == "nexus-prospect-ingestion" and metrics["queue_length"] == 0
