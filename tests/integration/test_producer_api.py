"""The producer over real HTTP: a `nexus serve` process on a fresh database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from nexus_ingest import contract
from nexus_ingest.web import QueueMetricsCache
from tests.helpers import (
    SEED_CONVERSATION,
    free_port,
    nexus_env,
    nexus_process,
    wait_for,
    wait_healthy,
)

URL = "/api/nexus/producer"


@pytest.fixture(scope="module")
def module_db(pg_admin_url: str, template_db: str) -> Iterator[str]:
    name = f"nexus_api_{free_port()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    yield psycopg.conninfo.make_conninfo(pg_admin_url, dbname=name)
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def _serve(database_url: str, **extra: str) -> Iterator[httpx.Client]:
    port = free_port()
    env = nexus_env(database_url, port, NEXUS_EXTRACTOR="rules", **extra)
    with nexus_process(["serve"], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, proc)
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client


@pytest.fixture(scope="module")
def client(module_db: str) -> Iterator[httpx.Client]:
    with _serve(
        module_db,
        NEXUS_MAX_BODY_BYTES="20000",
        NEXUS_MAX_MESSAGES="10",
        NEXUS_MAX_CONTENT_CHARS="500",
        NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="0",
    ) as serving:
        yield serving


def body(**overrides: Any) -> dict[str, Any]:
    return {**SEED_CONVERSATION, **overrides}


def queued(database_url: str, msg_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT message, headers FROM pgmq.q_nexus_prospect_ingestion WHERE msg_id = %s",
            (msg_id,),
        ).fetchone()
    assert row is not None, f"message {msg_id} is not in the queue"
    return row[0], row[1]


def test_health_has_the_seed_shape(client: httpx.Client) -> None:
    """GET answers 200 with status, version, role and the queue's name and metrics."""
    answer = client.get(URL)
    data = answer.json()
    assert answer.status_code == 200
    assert data["status"] == "healthy" and data["role"] == "message-producer"
    assert data["version"].endswith("-producer")
    assert data["queue"]["name"] == "nexus-prospect-ingestion"
    assert set(data["queue"]["metrics"]) >= {"queue_length", "oldest_msg_age_sec", "total_messages"}


def test_seed_test_2_is_accepted_and_queued(client: httpx.Client, module_db: str) -> None:
    """The seed's Test 2 body gets 202 with the seed's fields, and the queued message carries it all."""
    answer = client.post(URL, json=body(sessionId="seed-2"))
    data = answer.json()
    assert answer.status_code == 202
    assert (
        data["status"] == "accepted"
        and data["message"] == "Your message has been queued for processing"
    )
    assert isinstance(data["messageId"], int) and data["estimatedProcessingTime"]
    message, headers = queued(module_db, data["messageId"])
    assert message["messages"] == SEED_CONVERSATION["messages"]
    assert (message["sessionId"], message["fingerprint"], message["seq"]) == (
        "seed-2",
        "test-fingerprint-123",
        1,
    )
    assert message["receivedAt"]
    assert headers["x-pgmq-group"] == "seed-2"
    assert headers["traceparent"].startswith("00-")


def test_snapshots_of_a_session_are_numbered_in_order(client: httpx.Client, module_db: str) -> None:
    """Each snapshot of a session gets the next sequence number."""
    seqs = [client.post(URL, json=body(sessionId="numbered")).json()["sequence"] for _ in range(3)]
    assert seqs == [1, 2, 3]


def test_malformed_json_is_400(client: httpx.Client) -> None:
    """A body that is not JSON is refused with 400, not 500."""
    answer = client.post(
        URL, content=b'{"messages": [', headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "malformed_json"


@pytest.mark.parametrize(
    ("metadata", "says"),
    [("[" * 300 + "]" * 300, "nested too deeply"), ("1" + "0" * 5000, "a number too large")],
)
def test_valid_json_beyond_the_parsers_limits_is_422(
    client: httpx.Client, metadata: str, says: str
) -> None:
    """JSON that is well formed but nested deeper or holding a number larger than the parser
    takes is a snapshot out of bounds (422, as nesting past the limit is), not malformed JSON."""
    content = json.dumps(body())[:-1] + ', "metadata": {"a": ' + metadata + "}}"
    answer = client.post(URL, content=content, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "invalid_snapshot"
    assert says in answer.json()["detail"][0]["msg"]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_non_json_is_415(client: httpx.Client, content_type: str) -> None:
    """Anything but application/json is refused with 415."""
    answer = client.post(
        URL, content=json.dumps(body()).encode(), headers={"Content-Type": content_type}
    )
    assert answer.status_code == 415


def test_oversized_body_is_413(client: httpx.Client) -> None:
    """A body over the configured limit is refused with 413."""
    huge = body(metadata={"pad": "x" * 30_000})
    assert client.post(URL, json=huge).status_code == 413


def test_oversized_body_without_length_is_413(client: httpx.Client) -> None:
    """A chunked body with no Content-Length is cut off at the limit with 413."""

    def chunks() -> Iterator[bytes]:
        yield b'{"metadata": {"pad": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}}'

    answer = client.post(URL, content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"fingerprint": "f", "sessionId": "s"}, "messages"),
        (body(messages=[]), "messages"),
        (body(messages=[{"role": "robot", "content": "hi"}]), "messages"),
        (body(messages=[{"role": "user", "content": "   "}]), "messages"),
        (body(messages=[{"role": "user", "content": 42}]), "messages"),
        (body(messages=[{"role": "user", "content": "a\x00b"}]), "messages"),
        (body(messages=[{"role": "user", "content": "x" * 501}]), "messages"),
        (body(messages=[{"role": "user", "content": "hi"}] * 11), "messages"),
        (body(fingerprint=""), "fingerprint"),
        (body(fingerprint=123), "fingerprint"),
        (body(sessionId=None), "sessionId"),
        (body(sessionId="s" * 300), "sessionId"),
        (body(fingerprint="fp\u200b1"), "fingerprint"),  # zero-width space
        (body(fingerprint="\ufeffvisitor"), "fingerprint"),  # byte-order mark
        (body(sessionId="s-\u202eexe.txt"), "sessionId"),  # right-to-left override
        (body(sessionId="s\u2066x\u2069"), "sessionId"),  # bidi isolate
        (body(sessionId="s\u200dx"), "sessionId"),  # zero-width joiner
        (body(metadata=[1, 2]), "metadata"),
        (body(metadata={"n": 10**30}), "metadata"),
        (body(metadata={"n": "a\x00b"}), "metadata"),
        (body(metadata={"nested": {"a\x00b": 1}}), "metadata"),
        (body(surprise=True), "surprise"),
    ],
)
def test_schema_errors_are_422_naming_the_field(
    client: httpx.Client, payload: dict[str, Any], field: str
) -> None:
    """Every schema violation is a 422 whose detail names the offending field."""
    answer = client.post(URL, json=payload)
    assert answer.status_code == 422, answer.text
    assert any(d["loc"][0] == field for d in answer.json()["detail"])


def test_invisible_format_characters_are_welcome_in_chat_content(
    client: httpx.Client, module_db: str
) -> None:
    """Emoji joined by zero-width joiners and bidi marks in a message are queued as sent."""
    content = "Soy dev 👩\u200d💻, mi empresa es \u200fשלום\u200e Ltd"
    answer = client.post(URL, json=body(messages=[{"role": "user", "content": content}]))
    assert answer.status_code == 202, answer.text
    message, _ = queued(module_db, answer.json()["messageId"])
    assert message["messages"][0]["content"] == content


def test_422_does_not_echo_the_input(client: httpx.Client) -> None:
    """Validation errors never repeat what was sent (it may be personal data)."""
    answer = client.post(
        URL, json=body(messages=[{"role": "robot", "content": "my email is ana@example.com"}])
    )
    assert answer.status_code == 422
    assert "ana@example.com" not in answer.text


def test_idempotency_key_returns_the_first_message_id(client: httpx.Client, module_db: str) -> None:
    """A retried POST with the same Idempotency-Key returns the first messageId and enqueues once."""
    headers = {"Idempotency-Key": "retry-me-1"}
    first = client.post(URL, json=body(sessionId="idem"), headers=headers).json()
    second = client.post(URL, json=body(sessionId="idem"), headers=headers).json()
    assert first["messageId"] == second["messageId"]
    assert second["duplicate"] is True
    with psycopg.connect(module_db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pgmq.q_nexus_prospect_ingestion WHERE headers->>'x-pgmq-group' = 'idem'"
        ).fetchone()
    assert row == (1,)


def test_idempotency_key_reused_with_another_body_is_422(client: httpx.Client) -> None:
    """Reusing an Idempotency-Key for a different snapshot of the session is refused, not
    silently merged."""
    headers = {"Idempotency-Key": "retry-me-2"}
    assert client.post(URL, json=body(sessionId="idem-2"), headers=headers).status_code == 202
    other = [{"role": "user", "content": "something else entirely"}]
    answer = client.post(URL, json=body(sessionId="idem-2", messages=other), headers=headers)
    assert answer.status_code == 422
    assert answer.json()["error"] == "idempotency_key_reused"


def test_idempotency_keys_belong_to_one_visitor(client: httpx.Client) -> None:
    """A key claimed in one visitor's session (the widget's `sessionId:seq`) does not touch the
    same key in another visitor's session: both snapshots are queued."""
    headers = {"Idempotency-Key": "victim-session:2"}
    claimed = client.post(
        URL, json=body(sessionId="attacker", fingerprint="fp-attacker"), headers=headers
    )
    victim = client.post(
        URL, json=body(sessionId="victim-session", fingerprint="fp-victim"), headers=headers
    )
    assert claimed.status_code == 202 and victim.status_code == 202
    assert victim.json()["duplicate"] is False
    assert victim.json()["messageId"] != claimed.json()["messageId"]


def test_a_session_of_another_visitor_is_422(client: httpx.Client, module_db: str) -> None:
    """A sessionId posted under a second fingerprint is refused, naming the field, and nothing
    is queued for it: the first visitor's chat keeps the session."""
    first = client.post(URL, json=body(sessionId="one-chat", fingerprint="fp-first"))
    assert first.status_code == 202
    answer = client.post(URL, json=body(sessionId="one-chat", fingerprint="fp-second"))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"] == "session_of_another_visitor"
    assert answer.json()["detail"] == [
        {"loc": ["sessionId"], "msg": "already in use under another fingerprint"}
    ]
    again = client.post(URL, json=body(sessionId="one-chat", fingerprint="fp-first"))
    assert again.status_code == 202 and again.json()["sequence"] == 2
    with psycopg.connect(module_db) as conn:
        rows = conn.execute(
            "SELECT message ->> 'fingerprint' FROM pgmq.q_nexus_prospect_ingestion"
            " WHERE headers ->> 'x-pgmq-group' = 'one-chat'"
        ).fetchall()
    assert rows == [("fp-first",), ("fp-first",)]


def test_openapi_describes_the_producer(client: httpx.Client) -> None:
    """/openapi.json documents the POST body, its headers, every status and the consumer's bearer scheme."""
    spec = client.get("/openapi.json").json()
    post = spec["paths"][URL]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "SnapshotIn"
    )
    assert {"202", "400", "413", "415", "422", "429", "503"} <= set(post["responses"])
    assert {"Idempotency-Key", "traceparent"} <= {p["name"] for p in post["parameters"]}
    assert set(spec["paths"][URL]["get"]["responses"]) == {"200", "503"}
    assert "sessionId" in spec["components"]["schemas"]["SnapshotIn"]["properties"]
    consumer = spec["paths"]["/functions/v1/nexus-consumer"]["post"]
    [scheme] = consumer["security"][0]
    assert spec["components"]["securitySchemes"][scheme] == {
        "type": "http",
        "scheme": "bearer",
        "description": "NEXUS_CONSUMER_TOKEN",
    }


def assert_documented(spec: dict[str, Any], method: str, answer: httpx.Response) -> None:
    """The answer's body is valid (strictly, no undeclared field) for the model the document names."""
    path = answer.request.url.path
    documented = spec["paths"][path][method]["responses"][str(answer.status_code)]
    ref = documented["content"]["application/json"]["schema"]["$ref"]
    model = getattr(contract, ref.rsplit("/", 1)[1])
    model.model_validate(answer.json(), strict=True)


def test_every_answer_matches_its_documented_body(client: httpx.Client) -> None:
    """202, the duplicate 202, each 4xx, the health check and the consumer's 401 match /openapi.json."""
    spec = client.get("/openapi.json").json()
    key = {"Idempotency-Key": "documented-1"}
    as_json = {"Content-Type": "application/json"}
    answers = [
        client.get(URL),
        client.post(URL, json=body(sessionId="doc"), headers=key),
        client.post(URL, json=body(sessionId="doc"), headers=key),
        client.post(
            URL,
            json=body(sessionId="doc", messages=[{"role": "user", "content": "another body"}]),
            headers=key,
        ),
        client.post(URL, json=body(), headers={"Idempotency-Key": "x" * 256}),
        client.post(URL, content=b"{", headers=as_json),
        client.post(URL, content=b"{}", headers={"Content-Type": "text/plain"}),
        client.post(URL, json=body(metadata={"pad": "x" * 30_000})),
        client.post(URL, json=body(messages=[{"role": "robot", "content": " "}])),
        client.post("/api/nexus/consumer", headers={"Authorization": "Bearer wrong"}),
    ]
    statuses = [a.status_code for a in answers]
    assert statuses == [200, 202, 202, 422, 400, 400, 415, 413, 422, 401]
    assert answers[2].json()["duplicate"] is True
    for answer in answers:
        assert_documented(spec, answer.request.method.lower(), answer)


def test_metrics_count_enqueued_and_rejected(client: httpx.Client) -> None:
    """/metrics is Prometheus text and counts accepted and refused snapshots."""
    client.post(URL, json=body(sessionId="metrics"))
    client.post(URL, content=b"nope", headers={"Content-Type": "application/json"})
    text = client.get("/metrics").text
    assert "nexus_messages_enqueued_total" in text
    assert 'nexus_messages_rejected_total{reason="malformed_json"}' in text


def test_rate_limit_per_fingerprint_is_429_with_retry_after(module_db: str) -> None:
    """Past its burst, one fingerprint gets 429 with a Retry-After header."""
    with _serve(
        module_db,
        NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="6",
        NEXUS_RATE_LIMIT_FINGERPRINT_BURST="2",
    ) as client:
        statuses = [
            client.post(URL, json=body(sessionId="rl", fingerprint="greedy")).status_code
            for _ in range(4)
        ]
        limited = client.post(URL, json=body(sessionId="rl", fingerprint="greedy"))
        other = client.post(URL, json=body(sessionId="rl2", fingerprint="polite"))
        assert statuses[:2] == [202, 202] and 429 in statuses[2:]
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert_documented(client.get("/openapi.json").json(), "post", limited)
        assert other.status_code == 202


def test_a_page_on_an_allowed_origin_reads_retry_after(module_db: str) -> None:
    """With NEXUS_CORS_ORIGINS, a browser on that origin may post, and may read the headers the
    client acts on: Retry-After (when to retry a 429 or 503) and traceparent. Without
    Access-Control-Expose-Headers a browser hides them from the page."""
    origin = "https://shop.example"
    with _serve(
        module_db,
        NEXUS_CORS_ORIGINS=json.dumps([origin]),
        NEXUS_RATE_LIMIT_FINGERPRINT_PER_MINUTE="6",
        NEXUS_RATE_LIMIT_FINGERPRINT_BURST="1",
    ) as client:
        preflight = client.options(
            URL,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,idempotency-key",
            },
        )
        answers = [
            client.post(
                URL, json=body(sessionId="cors", fingerprint="cors"), headers={"Origin": origin}
            )
            for _ in range(2)
        ]
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert [a.status_code for a in answers] == [202, 429]
    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == origin
        exposed = {
            h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")
        }
        assert {"retry-after", "traceparent"} <= exposed
    assert int(answers[1].headers["retry-after"]) >= 1


def test_degraded_when_queue_crosses_threshold(module_db: str) -> None:
    """Health says degraded, with the reason, when queue_length passes the alert threshold."""
    with _serve(module_db, NEXUS_ALERT_QUEUE_LENGTH="0", NEXUS_METRICS_CACHE_S="0") as client:
        client.post(URL, json=body(sessionId="deg"))
        data = client.get(URL).json()
        assert data["status"] == "degraded"
        assert any("queue_length" in reason for reason in data["reasons"])


def test_database_down_gives_fast_503_and_recovery(pg_admin_url: str, template_db: str) -> None:
    """With the database refusing connections the producer answers 503 + Retry-After, then recovers."""
    name = f"nexus_down_{free_port()}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    url = psycopg.conninfo.make_conninfo(pg_admin_url, dbname=name)
    try:
        with _serve(url) as client:
            assert client.post(URL, json=body(sessionId="before")).status_code == 202
            _set_connections(pg_admin_url, name, allowed=False)
            answer = wait_for(
                lambda: _is_503(client.post(URL, json=body(sessionId="during"))),
                timeout=10,
                what="a 503",
            )
            assert answer.headers["Retry-After"] and answer.elapsed.total_seconds() < 2.5
            # Health reuses its count of the queue for up to NEXUS_METRICS_CACHE_S (1 s).
            wait_for(lambda: client.get(URL).status_code == 503, timeout=5, what="unhealthy")
            health = client.get(URL)
            assert health.status_code == 503
            spec = client.get("/openapi.json").json()
            assert_documented(spec, "post", answer)
            assert_documented(spec, "get", health)
            _set_connections(pg_admin_url, name, allowed=True)
            wait_for(
                lambda: client.post(URL, json=body(sessionId="after")).status_code == 202,
                timeout=15,
                interval=0.2,
                what="recovery",
            )
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _is_503(answer: httpx.Response) -> httpx.Response | None:
    assert answer.status_code in (202, 503), answer.text
    return answer if answer.status_code == 503 else None


def _set_connections(admin_url: str, name: str, *, allowed: bool) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
                sql.Identifier(name), sql.Literal(allowed)
            )
        )
        if not allowed:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )


COUNT_METRICS_READS = """
CREATE SEQUENCE IF NOT EXISTS public.test_metrics_reads;
CREATE OR REPLACE FUNCTION public.pgmq_metrics(queue_name text)
RETURNS TABLE (queue_name text, queue_length bigint, oldest_msg_age_sec integer,
               newest_msg_age_sec integer, total_messages bigint)
LANGUAGE sql AS $$
    SELECT nextval('public.test_metrics_reads');
    SELECT $1, m.queue_length, m.oldest_msg_age_sec, m.newest_msg_age_sec, m.total_messages
    FROM pgmq.metrics(nexus.stored_queue_name($1)) AS m;
$$;
"""


def count_metrics_reads(database_url: str) -> None:
    """Make every read of the queue's metrics in this test database bump a sequence."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(COUNT_METRICS_READS)


def metrics_reads(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.test_metrics_reads"
        ).fetchone()
    return int(row[0]) if row else 0


async def _burst(base: str, requests: list[tuple[str, dict[str, str]]]) -> list[int]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
        answers = await asyncio.gather(*(client.get(path, headers=h) for path, h in requests))
    return [answer.status_code for answer in answers]


def test_concurrent_health_metrics_and_dashboard_share_one_queue_count(db_url: str) -> None:
    """60 concurrent health checks, scrapes and dashboard polls count the queue once, not 60
    times: the metrics are read once, shared by every request in flight, and reused."""
    count_metrics_reads(db_url)
    port = free_port()
    env = nexus_env(
        db_url, port, NEXUS_EXTRACTOR="rules", NEXUS_ADMIN_TOKEN="t0k3n", NEXUS_METRICS_CACHE_S="30"
    )
    with nexus_process(["serve"], env) as proc:
        base = f"http://127.0.0.1:{port}"

        def serving() -> bool:
            assert proc.poll() is None, "nexus serve exited"
            try:  # the OpenAPI document, unlike health, reads nothing from the queue
                return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(serving, timeout=20, what="nexus serve")
        assert metrics_reads(db_url) == 0
        bearer = {"Authorization": "Bearer t0k3n"}
        requests = (
            [(URL, {})] * 40
            + [("/metrics", {})] * 10
            + [("/dashboard/partials/metrics", bearer)] * 10
        )
        assert asyncio.run(_burst(base, requests)) == [200] * len(requests)
        assert metrics_reads(db_url) == 1


async def test_callers_arriving_during_a_count_share_it(
    db_url: str, pool: AsyncConnectionPool
) -> None:
    """Even with no reuse over time, 20 concurrent callers share the count in flight; a caller
    after it has finished counts again."""
    count_metrics_reads(db_url)
    metrics = QueueMetricsCache(pool, ttl_s=0, timeout=5)
    shared = await asyncio.gather(*(metrics.get() for _ in range(20)))
    assert metrics_reads(db_url) == 1 and len(set(shared)) == 1
    await metrics.get()
    assert metrics_reads(db_url) == 2
