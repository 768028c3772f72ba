"""What `nexus` says when something is wrong: bad settings, bad input, a taken port, no database.

Each failure is one line on stderr starting `nexus: error:`, exit code 1 (2 for bad
configuration or a wrong argument), promptly, and never with a secret in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.helpers import (
    NEXUS,
    SEED_CONVERSATION,
    free_port,
    nexus_env,
    nexus_process,
    running_nexus,
    wait_for,
)

ENV_EXAMPLE = Path(__file__).parents[2] / ".env.example"
# A database nobody listens on: nothing here may need one before it fails.
NOWHERE = "postgresql://postgres@127.0.0.1:1/x"
CHAT = json.dumps(SEED_CONVERSATION)
# `{"messages":[{"role":"user","content":"\ud800"}],...}` as written in a file: the escape of a
# lone surrogate, which json.loads accepts but no UTF-8 encoder does.
SURROGATE_LINE = (
    '{"messages":[{"role":"user","content":"\\ud800"}],"fingerprint":"f","sessionId":"s"}'
)
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit lets json parse


def nexus(
    *args: str, env: dict[str, str], stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEXUS, *args], env=env, input=stdin, capture_output=True, text=True, timeout=90, cwd=cwd
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The only line on stderr, without its `nexus: error: ` prefix."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nexus: error: "), result.stderr
    return lines[0].removeprefix("nexus: error: ")


def offline_env(**settings: str) -> dict[str, str]:
    return nexus_env(NOWHERE, NEXUS_EXTRACTOR="rules", **settings)


# --- configuration -------------------------------------------------------------------------


def test_a_malformed_database_url_is_bad_configuration_and_keeps_its_password(
    tmp_path: Path,
) -> None:
    """A DATABASE_URL that cannot be parsed exits 2 naming the variable, never echoing it."""
    env = offline_env(DATABASE_URL="postgresql://postgres:hunter2@[::1")
    result = nexus("metrics", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert error_line(result).startswith("invalid configuration: DATABASE_URL: ")
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("NEXUS_CORS_ORIGINS", "not json", "JSON list"),
        ("NEXUS_CORS_ORIGINS", "http://a.com", "JSON list"),
        ("NEXUS_LLM_PRICES", "[1", "JSON object"),
        ("NEXUS_LOG_LEVEL", "bogus", "DEBUG, INFO, WARNING, ERROR"),
        ("NEXUS_PORT", "not-a-port", "integer"),
        ("NEXUS_COALESCE_WINDOW_S", "-1", "greater than or equal to 0"),
        ("NEXUS_PHONE_REGION", "Spain", "two letters"),
    ],
)
def test_a_bad_setting_exits_2_naming_its_variable(
    variable: str, value: str, reason: str, tmp_path: Path
) -> None:
    """Exit 2 and `invalid configuration: VARIABLE: reason`, whatever kind of value is wrong."""
    result = nexus("metrics", env=offline_env(**{variable: value}), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = error_line(result)
    assert message.startswith(f"invalid configuration: {variable}: "), message
    assert reason in message


def test_a_lower_case_phone_region_is_accepted(tmp_path: Path) -> None:
    """NEXUS_PHONE_REGION is upper-cased, so `es` is as good as `ES`."""
    result = nexus(
        "extract", "-", env=offline_env(NEXUS_PHONE_REGION="es"), stdin=CHAT, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr


def _env_example_uncommented() -> list[str]:
    return [
        line.removeprefix("# ")
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.startswith("# ") and "=" in line and line[2:].split("=")[0].isupper()
    ]


def test_env_example_uncommented_whole_is_the_defaults(tmp_path: Path) -> None:
    """Every line of .env.example uncommented, the empty ones too, still runs: empty is unset."""
    assignments = _env_example_uncommented()
    assert "NEXUS_COALESCE_WINDOW_S=" in assignments
    (tmp_path / ".env").write_text("\n".join(assignments) + "\n")
    env = offline_env()
    for name in [a.split("=", 1)[0] for a in assignments]:
        env.pop(name, None)
    result = nexus("extract", "-", env=env, stdin=CHAT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_an_empty_variable_is_unset(tmp_path: Path) -> None:
    """`NEXUS_WORKER_METRICS_PORT=` in the environment means the default, not a bad number."""
    env = offline_env(NEXUS_COALESCE_WINDOW_S="", NEXUS_WORKER_METRICS_PORT="")
    result = nexus("extract", "-", env=env, stdin=CHAT, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# --- bad input lines -----------------------------------------------------------------------


def test_send_names_a_line_no_encoder_can_send_and_sends_nothing(tmp_path: Path) -> None:
    """A lone-surrogate escape is a bad line, named FILE:LINE, found before anything is sent."""
    path = tmp_path / "chats.jsonl"
    path.write_text(f"{CHAT}\n{SURROGATE_LINE}\n")
    nobody = f"http://127.0.0.1:{free_port()}/api/nexus/producer"
    result = nexus("send", str(path), "--url", nobody, "--attempts", "1", env=offline_env())
    assert result.returncode == 1 and result.stdout == ""
    assert error_line(result).startswith(f"{path}:2: ")


def test_send_keeps_going_past_a_line_no_encoder_can_send(db_url: str, tmp_path: Path) -> None:
    """With --keep-going the good line is queued and the bad one reported."""
    path = tmp_path / "chats.jsonl"
    path.write_text(f"{CHAT}\n{SURROGATE_LINE}\n")
    with running_nexus(["serve"], db_url, NEXUS_EXTRACTOR="rules") as base:
        env = nexus_env(db_url, int(base.rsplit(":", 1)[1]), NEXUS_EXTRACTOR="rules")
        result = nexus("send", str(path), "--keep-going", env=env)
    assert result.returncode == 1
    assert result.stdout.strip() == "1 queued, 0 already queued before, 0 refused"
    assert error_line(result).startswith(f"{path}:2: ")


def test_input_nested_too_deep_is_a_bad_line_everywhere(tmp_path: Path) -> None:
    """`send`, `extract` and `eval` name a line nested deeper than they can read as FILE:LINE."""
    chats = tmp_path / "chats.jsonl"
    chats.write_text(f"{CHAT}\n{DEEP}\n")
    dataset = tmp_path / "dataset.jsonl"
    dataset.write_text(f"{DEEP}\n")
    nobody = f"http://127.0.0.1:{free_port()}/api/nexus/producer"
    env = offline_env()
    sent = nexus("send", str(chats), "--url", nobody, "--attempts", "1", env=env)
    assert sent.returncode == 1 and sent.stdout == ""
    assert error_line(sent).startswith(f"{chats}:2: ")
    extracted = nexus("extract", "-", env=env, stdin=DEEP)
    assert extracted.returncode == 1 and error_line(extracted).startswith("-:1: ")
    scored = nexus("eval", str(dataset), env=env)
    assert scored.returncode == 1 and error_line(scored).startswith(f"{dataset}:1: ")


# --- trace -----------------------------------------------------------------------------------


def test_trace_finds_a_session_whose_id_is_all_digits(db_url: str) -> None:
    """`nexus trace 777` is session 777's timeline when no message has id 777."""
    body = {"sessionId": "777", "fingerprint": "fp", "messages": [], "seq": 1}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pgmq.send('nexus_prospect_ingestion', %s, %s)",
            (Jsonb(body), Jsonb({"x-pgmq-group": "777"})),
        )
    result = nexus("trace", "777", env=nexus_env(db_url))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "session 777" and "enqueued" in result.stdout
    unknown = nexus("trace", "778", env=nexus_env(db_url))
    assert unknown.returncode == 1 and "778" in error_line(unknown)


# --- ports -----------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


@pytest.mark.parametrize("command", ["serve", "up"])
def test_a_port_in_use_is_one_clear_line(command: str, taken_port: int, db_url: str) -> None:
    """`nexus serve` and `nexus up` on a taken port say so and exit 1."""
    result = nexus(command, env=nexus_env(db_url, taken_port, NEXUS_EXTRACTOR="rules"))
    assert result.returncode == 1, result.stderr
    assert error_line(result) == f"port {taken_port} on 127.0.0.1 is already in use"


def test_a_worker_metrics_port_in_use_is_one_clear_line(taken_port: int, db_url: str) -> None:
    """A standalone worker whose probe port is taken says so and exits 1."""
    env = nexus_env(db_url, NEXUS_EXTRACTOR="rules", NEXUS_WORKER_METRICS_PORT=str(taken_port))
    result = nexus("worker", env=env)
    assert result.returncode == 1, result.stderr
    assert error_line(result) == f"port {taken_port} on 127.0.0.1 is already in use"


def test_a_port_taken_after_the_check_is_an_error_not_an_exit(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the port be taken between the check and uvicorn's bind, uvicorn's sys.exit
    becomes an error the command reports, not the event loop's end."""
    from nexus_ingest import runtime
    from nexus_ingest.errors import NexusError

    async def app(scope: Any, receive: Any, send: Any) -> None:
        """Starts and stops cleanly: only the bind can fail."""
        while scope["type"] == "lifespan":
            stage = (await receive())["type"].removeprefix("lifespan.")
            await send({"type": f"lifespan.{stage}.complete"})
            if stage == "shutdown":
                return

    monkeypatch.setattr(runtime, "ensure_port_free", lambda host, port: None)
    with pytest.raises(NexusError, match=f"could not serve on 127.0.0.1:{taken_port}"):
        asyncio.run(runtime._serve_http(app, "127.0.0.1", taken_port, asyncio.Event()))


def test_a_worker_with_a_metrics_port_leaves_no_coroutine_unawaited(
    db_url: str, tmp_path: Path
) -> None:
    """A standalone worker serving probes starts without a `never awaited` warning."""
    port = free_port()
    env = nexus_env(db_url, NEXUS_EXTRACTOR="rules", NEXUS_WORKER_METRICS_PORT=str(port))
    log = tmp_path / "worker.log"
    with nexus_process(["worker"], env, log_path=log):

        def alive() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(alive, timeout=20, what="the worker's probe")
    text = log.read_text()
    assert "worker" in text and "never awaited" not in text, text


# --- database ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [["metrics"], ["dlq", "list"], ["trace", "some-session"], ["forget", "fp", "--yes"]],
)
def test_an_unreachable_database_is_one_line_at_once(command: list[str]) -> None:
    """Commands that read the database fail promptly with one line when it cannot be reached."""
    env = nexus_env(f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    started = time.monotonic()
    result = nexus(*command, env=env)
    assert result.returncode == 1
    assert error_line(result).startswith("cannot connect to the database")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "command",
    [["metrics"], ["dlq", "list"], ["trace", "some-session"], ["forget", "fp", "--yes"]],
)
def test_a_database_without_the_schema_says_to_migrate(
    command: list[str], empty_db: tuple[str, str]
) -> None:
    """On a database `nexus migrate` never ran on, a command names what is missing and what to
    run, not an `unexpected UndefinedTable` with the query quoted."""
    _, url = empty_db
    result = nexus(*command, env=nexus_env(url))
    assert result.returncode == 1
    message = error_line(result)
    assert message.endswith("the database is missing migrations; run `nexus migrate`"), message
    assert "unexpected" not in message and "LINE" not in message, message


def test_a_closed_stdout_is_not_taken_by_a_database_socket(db_url: str) -> None:
    """Started with stdout closed (`nexus trace x >&-`), the command runs and exits as it would
    with stdout open, instead of the event loop aborting on a socket it finds at number 1."""
    result = subprocess.run(
        [NEXUS, "trace", "no-such-session"],
        env=nexus_env(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=90,
        # The child closes its own stdout before `nexus` starts.
        preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == 1, result.stderr
    assert "Assertion" not in result.stderr and "Aborted" not in result.stderr
    assert "no-such-session" in error_line(result)


def test_a_dead_letter_written_by_hand_is_listed_and_traced(db_url: str) -> None:
    """The dead-letter queue is a plain PGMQ queue: a letter sent there by another tool, with a
    string for its error and no number for its original id, is listed with that error as its
    reason, and its session traced, instead of failing either command."""
    body = {"original": {"sessionId": "s-odd"}, "originalMsgId": "x1", "error": "worker crashed"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pgmq.send('nexus_prospect_ingestion_dlq', %s, %s)",
            (Jsonb(body), Jsonb({"x-pgmq-group": "s-odd"})),
        )
    listed = nexus("dlq", "list", "--json", env=nexus_env(db_url))
    assert listed.returncode == 0, listed.stderr
    [letter] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert letter["originalMsgId"] is None
    assert letter["error"] == {"reason": "worker crashed"}
    table = nexus("dlq", "list", env=nexus_env(db_url))
    assert table.returncode == 0, table.stderr
    assert "worker crashed" in table.stdout
    traced = nexus("trace", "s-odd", "--json", env=nexus_env(db_url))
    assert traced.returncode == 0, traced.stderr
    assert "in_dead_letter_queue" in traced.stdout, traced.stdout


# --- arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["dlq", "list", "--limit", "-1"], "dlq list: argument --limit: must be from 1 to"),
        (["dlq", "list", "--limit", "99999999999999999999"], "must be from 1 to"),
        (["dlq", "replay", "--id", "99999999999999999999"], "dlq replay: argument --id:"),
        (["dlq", "replay", "--id", "x"], "'x' is not a whole number"),
        (["metrics", "--watch", "--interval", "nan"], "must be a number of seconds above 0"),
        (["send", "--concurrency", "0", "-"], "send: argument --concurrency: must be from 1"),
        (["send"], "send: the following arguments are required"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_a_wrong_argument_is_one_line_before_anything_runs(
    args: list[str], says: str, tmp_path: Path
) -> None:
    """Refused by the parser (exit 2, one line pointing at --help), not by the database or a
    traceback later: a negative or huge limit, an id no bigint holds, a NaN interval."""
    result = nexus(*args, env=offline_env(), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = error_line(result)
    assert says in message and "--help" in message, message


def test_metrics_watch_prints_each_refresh_to_a_pipe(db_url: str) -> None:
    """Not on a terminal, `metrics --watch` prints a table at every refresh instead of redrawing
    in place (which printed nothing until it was stopped)."""
    watching = subprocess.Popen(
        [NEXUS, "metrics", "--watch", "--interval", "0.2"],
        env=nexus_env(db_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    titles = 0
    try:
        assert watching.stdout is not None
        deadline = time.monotonic() + 30
        while titles < 2 and time.monotonic() < deadline:
            line = watching.stdout.readline()
            titles += "nexus-prospect-ingestion" in line
    finally:
        watching.terminate()
        watching.wait(timeout=30)
    assert titles == 2, "two refreshes, each printed"


def test_send_to_a_producer_that_does_not_answer_says_unanswered(tmp_path: Path) -> None:
    """A conversation the producer never answered (unreachable) is counted as unanswered, not
    as refused, and its line is named with the reason."""
    chats = tmp_path / "chats.jsonl"
    chats.write_text(CHAT + "\n")
    url = f"http://127.0.0.1:{free_port()}/api/nexus/producer"
    result = nexus("send", str(chats), "--url", url, "--attempts", "1", env=offline_env())
    assert result.returncode == 1
    assert result.stdout.strip() == "0 queued, 0 already queued before, 0 refused, 1 unanswered"
    assert error_line(result).startswith(f"{chats}:1: ")


@pytest.mark.parametrize("fingerprint", ["", "   "])
def test_forget_refuses_a_blank_fingerprint(db_url: str, fingerprint: str) -> None:
    """A blank fingerprint (an unset shell variable) names no visitor the producer ever took:
    `nexus forget` says so in one line and exits 2, instead of printing zero counts an operator
    reads as "erased", and leaves no tombstone."""
    result = subprocess.run(
        [NEXUS, "forget", fingerprint, "--yes"],
        env=nexus_env(db_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    assert result.stderr.startswith("nexus: error:") and "blank" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM nexus.forgotten").fetchone() == (0,)
