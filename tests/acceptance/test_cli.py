"""The `nexus` command as a user runs it: real processes, real database."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg

from tests.helpers import (
    NEXUS,
    SEED_CONVERSATION,
    free_port,
    nexus_env,
    nexus_process,
    wait_for,
    wait_healthy,
)


def nexus(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NEXUS, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def test_migrate_reports_nothing_to_do_on_a_migrated_database(db_url: str) -> None:
    """`nexus migrate` on an up-to-date database applies nothing and says so."""
    result = nexus("migrate", env=nexus_env(db_url))
    assert result.returncode == 0 and "migrations applied: none" in result.stdout


def test_send_extract_and_metrics(db_url: str, tmp_path: Path) -> None:
    """`nexus send` posts a file to a running service, the worker saves it, `nexus metrics` shows the queue."""
    port = free_port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")
    conversation = tmp_path / "chat.json"
    conversation.write_text(json.dumps(SEED_CONVERSATION))
    with nexus_process(["up"], env) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        sent = nexus("send", str(conversation), "--json", env=env)
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["answer"]["status"] == "accepted"
        with psycopg.connect(db_url) as conn:
            wait_for(
                lambda: conn.execute("SELECT nombre FROM prospect_data").fetchall(), what="row"
            )
        metrics = nexus("metrics", env=env)
    assert (
        metrics.returncode == 0
        and "queue_length" in metrics.stdout
        and "total_messages" in metrics.stdout
    )


def test_metrics_show_llm_spend_per_day_and_model(db_url: str) -> None:
    """`nexus metrics` prints what LLM extractions cost today per model, and their total."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for msg_id, model, cost in (
            (1, "claude-haiku-5-5", 0.0012),
            (2, "claude-haiku-5-5", 0.0008),
        ):
            conn.execute(
                "SELECT update_prospect_data('fp-m', 's-m', '{}', %s, NULL, 'anthropic', %s,"
                " 5000, 200, 4000, 900.0, NULL, 600, false, %s::numeric)",
                (msg_id, model, cost),
            )
    result = nexus("metrics", env=nexus_env(db_url))
    assert result.returncode == 0, result.stderr
    assert "LLM spend, last 7 days" in result.stdout
    haiku = [line for line in result.stdout.splitlines() if "claude-haiku-5-5" in line]
    assert len(haiku) == 1 and "$0.002000" in haiku[0] and "1,200" in haiku[0]
    assert any("total" in line and "$0.002000" in line for line in result.stdout.splitlines())


def test_extract_prints_the_prospect_json(db_url: str) -> None:
    """`nexus extract -` reads a conversation on stdin and prints the extracted JSON."""
    result = nexus(
        "extract",
        "-",
        env=nexus_env(db_url, NEXUS_EXTRACTOR="rules"),
        stdin=json.dumps(SEED_CONVERSATION),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nombre"] == "Carlos"


def test_eval_ends_with_overall_f1(db_url: str) -> None:
    """`nexus eval` scores the shipped dev set and its last line is overall_f1=<number>."""
    dataset = Path(__file__).parents[2] / "datasets" / "dev.jsonl"
    result = nexus("eval", str(dataset), env=nexus_env(db_url, NEXUS_EXTRACTOR="rules"))
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("overall_f1=") and 0.0 <= float(last.split("=")[1]) <= 1.0


def test_errors_are_one_line_without_traceback(db_url: str, tmp_path: Path) -> None:
    """Bad input or an unreachable service gives one clear line on stderr and a non-zero exit."""
    env = nexus_env(db_url, free_port(), NEXUS_EXTRACTOR="rules")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{oops\n')
    for result in (
        nexus("send", str(tmp_path / "missing.json"), env=env),
        nexus("send", str(bad), env=env),
        nexus("extract", "-", env=env, stdin="[1, 2]"),
        nexus("send", "-", env=env, stdin=json.dumps(SEED_CONVERSATION)),
        nexus(
            "migrate", env={**env, "DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/x"}
        ),
        nexus("up", env={**env, "NEXUS_PORT": "not-a-port"}),
    ):
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith("nexus: error:"), result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_up_stops_cleanly_on_sigint(db_url: str) -> None:
    """Ctrl-C (SIGINT) stops `nexus up` with exit code 0 within a few seconds."""
    port = free_port()
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")
    with nexus_process(["up"], env) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        proc.send_signal(2)
        assert proc.wait(timeout=15) == 0
