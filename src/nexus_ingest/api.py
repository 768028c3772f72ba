"""The HTTP service: the producer endpoint, the seed's consumer endpoint, metrics."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError

from nexus_ingest import QUEUE_NAME, __version__, contract, queue
from nexus_ingest.dashboard import install as install_dashboard
from nexus_ingest.db import open_pool
from nexus_ingest.errors import DatabaseUnavailable
from nexus_ingest.extract import build_extractor
from nexus_ingest.metrics import (
    ENQUEUED,
    REJECTED,
    RequestTimer,
)
from nexus_ingest.models import QueuedSnapshot, SnapshotIn
from nexus_ingest.probes import api_readiness, liveness
from nexus_ingest.ratelimit import RateLimiter, retry_after_header
from nexus_ingest.settings import Settings
from nexus_ingest.telemetry import span
from nexus_ingest.traceparent import continue_traceparent, trace_id
from nexus_ingest.validation import Limits, Problem, check_snapshot
from nexus_ingest.web import (
    CLIENT_CLOSED_REQUEST,
    BodyTooLarge,
    BodyTooSlow,
    ClientGone,
    QueueMetricsCache,
    bearer_matches,
    health_reasons,
    queue_gauges_exposition,
    read_body,
)
from nexus_ingest.worker import consume_once, worker_config

log = structlog.get_logger("nexus.producer")

PRODUCER_PATH = "/api/nexus/producer"
CONSUMER_PATHS = ("/functions/v1/nexus-consumer", "/api/nexus/consumer")
_MAX_IDEMPOTENCY_KEY = 255
_DB_RETRY_AFTER_S = "2"


def create_app(settings: Settings, database_url: str) -> FastAPI:
    """Build the service; the pool opens with the app and closes with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await open_pool(
            database_url,
            min_size=settings.db_pool_min,
            max_size=settings.db_pool_max,
            application_name="nexus api",
        )
        app.state.extractor = None
        app.state.queue_metrics = QueueMetricsCache(
            app.state.pool, ttl_s=settings.metrics_cache_s, timeout=settings.db_timeout_s
        )
        app.state.batcher = queue.EnqueueBatcher(app.state.pool, timeout=settings.db_timeout_s)
        try:
            yield
        finally:
            await app.state.pool.close()
            if app.state.extractor is not None:
                await app.state.extractor.aclose()

    app = FastAPI(title="Nexus", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.limits = Limits(
        settings.max_messages, settings.max_content_chars, settings.max_id_chars
    )
    app.state.ip_limiter = RateLimiter(
        settings.rate_limit_ip_per_minute, settings.rate_limit_ip_burst
    )
    app.state.fp_limiter = RateLimiter(
        settings.rate_limit_fingerprint_per_minute, settings.rate_limit_fingerprint_burst
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "Idempotency-Key", "traceparent"],
            # A browser hides every other response header from a page on another origin, and
            # the client waits as long as Retry-After says before retrying a 429 or 503.
            expose_headers=["Retry-After", "traceparent"],
        )
    app.add_exception_handler(DatabaseUnavailable, _database_unavailable)
    _add_routes(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    install_dashboard(app)
    app.add_middleware(RequestTimer)  # added last: outermost, so it times everything inside
    return app


def _add_routes(app: FastAPI) -> None:
    app.add_api_route(
        PRODUCER_PATH,
        health,
        methods=["GET"],
        summary="Producer health and queue metrics",
        responses=contract.HEALTH_RESPONSES,
    )
    app.add_api_route(
        PRODUCER_PATH,
        post_snapshot,
        methods=["POST"],
        status_code=202,
        summary="Queue a conversation snapshot",
        responses=contract.PRODUCER_RESPONSES,
        openapi_extra=contract.PRODUCER_EXTRA,
    )
    for path in CONSUMER_PATHS:
        app.add_api_route(
            path,
            consume,
            methods=["POST"],
            summary="Process queued snapshots now",
            responses=contract.CONSUMER_RESPONSES,
            openapi_extra=contract.CONSUMER_EXTRA,
        )
    app.add_api_route(
        "/metrics",
        prometheus_metrics,
        methods=["GET"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
    )
    # Probes for an orchestrator, kept out of the API's public schema.
    app.add_api_route("/healthz", liveness, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", api_readiness, methods=["GET"], include_in_schema=False)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _reject(status: int, reason: str, message: str, **extra: Any) -> Response:
    REJECTED.labels(reason=reason).inc()
    headers = extra.pop("headers", None)
    return _json(status, {"status": "error", "error": reason, "message": message, **extra}, headers)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning("request.database_unavailable", path=request.url.path)
    return _reject(
        503,
        "database_unavailable",
        "The database is unavailable; retry shortly.",
        headers={"Retry-After": _DB_RETRY_AFTER_S},
    )


async def health(request: Request) -> Response:
    """The seed's health check: status, version, role and queue metrics."""
    settings: Settings = request.app.state.settings
    try:
        m = await request.app.state.queue_metrics.get()
    except DatabaseUnavailable:
        return _json(
            503,
            {
                "status": "unhealthy",
                "version": f"{__version__}-producer",
                "role": "message-producer",
                "reasons": ["database unreachable"],
            },
            {"Retry-After": _DB_RETRY_AFTER_S},
        )
    reasons = health_reasons(m, settings)
    return _json(
        200,
        {
            "status": "degraded" if reasons else "healthy",
            "version": f"{__version__}-producer",
            "role": "message-producer",
            "reasons": reasons,
            "queue": {"name": QUEUE_NAME, "metrics": _metrics_body(m)},
        },
    )


def _metrics_body(m: queue.QueueMetrics) -> dict[str, Any]:
    return {
        "queue_length": m.queue_length,
        "oldest_msg_age_sec": m.oldest_msg_age_sec,
        "newest_msg_age_sec": m.newest_msg_age_sec,
        "total_messages": m.total_messages,
    }


async def post_snapshot(request: Request) -> Response:
    """Validate a snapshot and queue it; 202 once it is durably in PGMQ."""
    state = request.app.state
    settings: Settings = state.settings
    client_ip = request.client.host if request.client else "unknown"
    if wait := state.ip_limiter.acquire(client_ip):
        return _too_many(wait)
    if not _is_json(request.headers.get("content-type")):
        return _reject(415, "unsupported_media_type", "Send the snapshot as application/json.")
    try:
        body = await read_body(request, settings.max_body_bytes, settings.request_timeout_s)
    except BodyTooLarge:
        return _reject(
            413, "payload_too_large", f"The body exceeds {settings.max_body_bytes} bytes."
        )
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    except BodyTooSlow:
        return _reject(
            408,
            "request_timeout",
            f"The body did not arrive within {settings.request_timeout_s:g} seconds.",
            headers={"Connection": "close"},
        )
    parsed = _parse_snapshot(body, state.limits)
    if isinstance(parsed, Response):
        return parsed
    if wait := state.fp_limiter.acquire(parsed.fingerprint):
        return _too_many(wait)
    key = request.headers.get("idempotency-key")
    if key is not None and not _valid_key(key):
        return _reject(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1-{_MAX_IDEMPOTENCY_KEY} printable ASCII characters "
            "(letters, digits, punctuation, spaces).",
        )
    return await _enqueue(request, parsed, body, key)


async def _enqueue(
    request: Request, snapshot: SnapshotIn, body: bytes, key: str | None
) -> Response:
    settings: Settings = request.app.state.settings
    traceparent = continue_traceparent(request.headers.get("traceparent"))
    with span(
        "nexus.enqueue", {"traceparent": traceparent}, session_id=snapshot.session_id
    ) as carrier:
        traceparent = carrier.get("traceparent", traceparent)
        result = await request.app.state.batcher.submit(
            queue.Snapshot(
                session_id=snapshot.session_id,
                fingerprint_id=snapshot.fingerprint,
                message=QueuedSnapshot.body_of(snapshot),
                headers={"traceparent": traceparent},
                idempotency_key=key,
                request_hash=hashlib.sha256(body).hexdigest() if key else None,
                delay_ms=round(settings.resolved_coalesce_window() * 1000),
            )
        )
    if result.conflict:
        return _reject(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different body.",
        )
    if result.session_taken:
        log.info(
            "snapshot.refused",
            reason="session_of_another_visitor",
            session_id=snapshot.session_id,
            bytes=len(body),
        )
        return _reject(
            422,
            "session_of_another_visitor",
            "This sessionId is already in use under another fingerprint; give every chat a "
            "sessionId of its own.",
            detail=[{"loc": ["sessionId"], "msg": "already in use under another fingerprint"}],
        )
    if not result.duplicate:
        ENQUEUED.inc()
    log.info(
        "snapshot.queued",
        msg_id=result.msg_id,
        session_id=snapshot.session_id,
        seq=result.seq,
        turns=len(snapshot.messages),
        bytes=len(body),
        duplicate=result.duplicate,
        trace_id=trace_id(traceparent),
    )
    return _json(
        202,
        {
            "status": "accepted",
            "messageId": result.msg_id,
            "message": "Your message has been queued for processing",
            "estimatedProcessingTime": _estimate(settings),
            "sessionId": snapshot.session_id,
            "sequence": result.seq,
            "duplicate": result.duplicate,
        },
        {"traceparent": traceparent},
    )


def _estimate(settings: Settings) -> str:
    window = settings.resolved_coalesce_window()
    if settings.resolved_extractor() in ("rules", "noop"):
        return "under 1 second" if window < 1 else f"{window:.0f}-{window + 1:.0f} seconds"
    return f"{window + 1:.0f}-{window + 4:.0f} seconds"


def _too_many(wait: float) -> Response:
    return _reject(
        429,
        "rate_limited",
        "Too many requests; slow down.",
        headers={"Retry-After": retry_after_header(wait)},
    )


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= _MAX_IDEMPOTENCY_KEY and key.isascii() and key.isprintable()


def _parse_snapshot(body: bytes, limits: Limits) -> SnapshotIn | Response:
    try:
        snapshot = SnapshotIn.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False, include_context=False)
        if any(e["type"] in ("json_invalid", "json_type") for e in errors):
            return _beyond_limits(errors) or _reject(
                400, "malformed_json", "The body is not valid JSON."
            )
        return _invalid([Problem(tuple(e["loc"]), e["msg"]) for e in errors])
    problems = check_snapshot(snapshot, limits)
    return _invalid(problems) if problems else snapshot


# Well-formed JSON that the parser still refuses: the snapshot is out of bounds, not malformed.
_PARSER_LIMITS = {
    "recursion limit exceeded": "nested too deeply",
    "number out of range": "a number too large",
}


def _beyond_limits(errors: list[Any]) -> Response | None:
    for error in errors:
        for says, problem in _PARSER_LIMITS.items():
            if says in error["msg"]:
                return _invalid([Problem((), f"{problem} to read")])
    return None


def _invalid(problems: list[Problem]) -> Response:
    detail = [{"loc": list(p.loc), "msg": p.msg} for p in problems]
    return _reject(
        422, "invalid_snapshot", "The snapshot does not match the schema.", detail=detail
    )


async def prometheus_metrics(request: Request) -> Response:
    """Every metric of this process, plus the queue's length and age read now."""
    body = await queue_gauges_exposition(request.app.state.queue_metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


async def consume(request: Request) -> Response:
    """The seed's consumer: process what is queued now (for cron or HTTP-driven deployments)."""
    settings: Settings = request.app.state.settings
    token = settings.consumer_token.get_secret_value() if settings.consumer_token else None
    if not bearer_matches(request, token):
        return _json(
            401,
            {
                "status": "error",
                "error": "unauthorized",
                "message": "Send Authorization: Bearer <NEXUS_CONSUMER_TOKEN>.",
            },
            {"WWW-Authenticate": "Bearer"},
        )
    if request.app.state.extractor is None:
        request.app.state.extractor = build_extractor(settings)
    result = await consume_once(
        request.app.state.pool, request.app.state.extractor, worker_config(settings)
    )
    return _json(200, result)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    app.openapi_schema = contract.complete(schema)
    return app.openapi_schema
