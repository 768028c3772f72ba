"""Traceability: one trace id through producer and worker logs, /metrics, and `nexus trace`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.llm_server import Error, FakeLLMServer
from tests.helpers import (
    NEXUS,
    SEED_CONVERSATION,
    free_port,
    nexus_env,
    nexus_process,
    wait_for,
    wait_healthy,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_one_trace_id_joins_producer_and_worker_lines_and_metrics_move(
    db_url: str, tmp_path: Path
) -> None:
    """Filtering the JSON logs by the trace id of a POST shows producer then consumer lines; counters move."""
    port = free_port()
    log = tmp_path / "up.log"
    env = nexus_env(db_url, port, NEXUS_EXTRACTOR="rules")
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with nexus_process(["up"], env, log_path=log) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        before = samples(httpx.get(f"{base}/metrics").text)
        answer = httpx.post(
            f"{base}/api/nexus/producer",
            json=SEED_CONVERSATION,
            headers={"traceparent": traceparent},
        )
        assert answer.status_code == 202
        httpx.post(
            f"{base}/api/nexus/producer", content=b"{", headers={"Content-Type": "application/json"}
        )
        with psycopg.connect(db_url) as conn:
            wait_for(lambda: conn.execute("SELECT 1 FROM prospect_data").fetchall(), what="the row")
        wait_for(lambda: '"message.saved"' in log.read_text(), what="the saved line")
        after = samples(httpx.get(f"{base}/metrics").text)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    traced = [line for line in lines if line.get("trace_id") == "0af7651916cd43dd8448eb211c80319c"]
    events = [line["event"] for line in traced]
    # The producer's line and the worker's first may come in either order: the worker can read
    # the snapshot the moment it is committed, before the producer logs it.
    assert {"snapshot.queued", "message.processing"} <= set(events)
    assert events[-1] == "message.saved"
    assert all(
        line["msg_id"] == answer.json()["messageId"] and line["session_id"] for line in traced
    )
    assert (
        after[("nexus_messages_enqueued_total", ())]
        == before.get(("nexus_messages_enqueued_total", ()), 0) + 1
    )
    assert after[("nexus_messages_rejected_total", (("reason", "malformed_json"),))] >= 1
    assert after[("nexus_messages_processed_total", (("outcome", "saved"),))] >= 1
    assert after[("nexus_extraction_seconds_count", (("extractor", "rules"),))] >= 1
    assert ("nexus_queue_length", ()) in after


def test_trace_shows_every_attempt_of_a_retried_then_saved_message(
    db_url: str, tmp_path: Path
) -> None:
    """`nexus trace MSG_ID` lists enqueue, each failed attempt, and the save, in order; --json too."""
    with FakeLLMServer("anthropic") as fake:
        fake.script(Error(529), Error(429, retry_after="1"))
        port = free_port()
        env = nexus_env(
            db_url,
            port,
            NEXUS_EXTRACTOR="anthropic",
            ANTHROPIC_API_KEY="sk-ant-test",
            ANTHROPIC_BASE_URL=fake.base_url,
            NEXUS_COALESCE_WINDOW_S="0",
            NEXUS_EXTRACT_FIRST_WITHIN_S="0",  # extracted at once: no deferral in the trace
            NEXUS_RETRY_BASE_S="1",
            NEXUS_RETRY_CAP_S="1",
        )
        with nexus_process(["up"], env, log_path=tmp_path / "up.log") as proc:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, proc)
            msg_id = httpx.post(f"{base}/api/nexus/producer", json=SEED_CONVERSATION).json()[
                "messageId"
            ]
            with psycopg.connect(db_url) as conn:
                wait_for(
                    lambda: conn.execute("SELECT 1 FROM prospect_data").fetchall(),
                    timeout=20,
                    what="the row",
                )
    readable = subprocess.run(
        [NEXUS, "trace", str(msg_id)], env=env, capture_output=True, text=True, timeout=60
    )
    as_json = subprocess.run(
        [NEXUS, "trace", "test-session-456", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert readable.returncode == 0, readable.stderr
    events = [json.loads(line)["event"] for line in as_json.stdout.splitlines()]
    assert events == ["enqueued", "failed", "failed", "saved"]
    assert (
        readable.stdout.count("failed") == 2
        and "saved" in readable.stdout
        and "attempt=2" in readable.stdout
    )
    missing = subprocess.run(
        [NEXUS, "trace", "no-such-session"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1 and missing.stderr.startswith("nexus: error:")


class _OtlpReceiver:
    """A loopback OTLP/HTTP endpoint that keeps every span it is sent."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        spans: list[tuple[str, str]] = []
        self.spans = spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["content-length"])))
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        spans.extend((s.name, s.trace_id.hex()) for s in scope.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_spans_are_exported_over_otlp_with_the_callers_trace_id(
    db_url: str, tmp_path: Path
) -> None:
    """With an OTLP endpoint configured, enqueue and extraction spans arrive under the POST's trace id."""
    receiver = _OtlpReceiver()
    port = free_port()
    env = {
        **nexus_env(db_url, port, NEXUS_EXTRACTOR="rules"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
    }
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        with nexus_process(["up"], env, log_path=tmp_path / "up.log") as proc:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(base, proc)
            headers = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
            assert (
                httpx.post(
                    f"{base}/api/nexus/producer", json=SEED_CONVERSATION, headers=headers
                ).status_code
                == 202
            )
            wait_for(
                lambda: {"nexus.enqueue", "nexus.extract"} <= {n for n, _ in receiver.spans},
                timeout=20,
                what="both spans exported",
            )
    finally:
        receiver.server.shutdown()
    assert {t for n, t in receiver.spans if n in ("nexus.enqueue", "nexus.extract")} == {trace}
