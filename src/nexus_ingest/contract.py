"""The HTTP contract: the bodies Nexus answers with, and how /openapi.json describes them.

The JavaScript client's types (clients/js/types) are checked against the TypeScript generated
from this document, so a field renamed here breaks that check rather than a user's app.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from nexus_ingest.models import Prospect, SnapshotIn

ErrorCode = Literal[
    "malformed_json",
    "invalid_idempotency_key",
    "unauthorized",
    "request_timeout",
    "payload_too_large",
    "unsupported_media_type",
    "invalid_snapshot",
    "idempotency_key_reused",
    "session_of_another_visitor",
    "rate_limited",
    "database_unavailable",
]


class _Body(BaseModel):
    # A field the server sends must be declared: the document lists every one.
    model_config = ConfigDict(extra="forbid")


class _CamelCase(_Body):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class Accepted(_CamelCase):
    """202: the snapshot is committed to the queue."""

    status: Literal["accepted"]
    message_id: int = Field(description="The PGMQ message id (the first one, for a repeated key).")
    message: str
    estimated_processing_time: str
    session_id: str
    sequence: int = Field(description="The snapshot's number within its session, by arrival.")
    duplicate: bool = Field(
        description="True when this Idempotency-Key was seen before: nothing new was queued."
    )


class FieldProblem(_Body):
    """Which field of a refused snapshot is wrong, and why."""

    loc: list[str | int]
    msg: str


class ApiError(_Body):
    """The body of every refusal (4xx) and of 503."""

    status: Literal["error"]
    error: ErrorCode
    message: str
    detail: list[FieldProblem] | None = Field(
        default=None, description="For invalid_snapshot: every problem found."
    )


class QueueMetrics(_Body):
    """The queue's figures, as the seed's `pgmq_metrics` gives them."""

    queue_length: int
    oldest_msg_age_sec: int | None
    newest_msg_age_sec: int | None
    total_messages: int


class QueueStatus(_Body):
    """The queue the producer writes to."""

    name: str
    metrics: QueueMetrics


class Health(_Body):
    """200: Postgres answers; `degraded` (with reasons) past an alert threshold."""

    status: Literal["healthy", "degraded"]
    version: str
    role: Literal["message-producer"]
    reasons: list[str]
    queue: QueueStatus


class Unhealthy(_Body):
    """503: Postgres does not answer."""

    status: Literal["unhealthy"]
    version: str
    role: Literal["message-producer"]
    reasons: list[str]


class ConsumerEmpty(_Body):
    """Nothing was waiting in the queue."""

    status: Literal["empty"]


class ConsumerProcessed(_CamelCase):
    """What one run of the consumer did; the first message's outcome in the seed's shape."""

    status: Literal["success", "error"]
    processed: int
    read: int
    msg_id: int | None = None
    session_id: str | None = None
    extracted_data: Prospect | None = None
    error: str | None = None


def _body(model: Any, description: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "description": description, **extra}


def _header(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "schema": schema}


_RETRY_AFTER = {"Retry-After": _header("Seconds to wait before retrying.", {"type": "string"})}
_TRACEPARENT = _header(
    "W3C trace context (version-traceid-parentid-flags); a malformed one is replaced by a new trace.",
    {"type": "string"},
)

HEALTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _body(Health, "Healthy or degraded, with the queue's metrics"),
    503: _body(Unhealthy, "Postgres is unreachable", headers=_RETRY_AFTER),
}

_ACCEPTED_EXAMPLE = {
    "status": "accepted",
    "messageId": 1,
    "message": "Your message has been queued for processing",
    "estimatedProcessingTime": "under 1 second",
    "sessionId": "test-session-456",
    "sequence": 1,
    "duplicate": False,
}

PRODUCER_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: _body(
        Accepted,
        "Queued. Repeating a request with the same Idempotency-Key and body answers 202 again "
        "with the first messageId and `duplicate: true`; it is queued once.",
        headers={"traceparent": _TRACEPARENT},
        content={
            "application/json": {
                "examples": {
                    "accepted": {"value": _ACCEPTED_EXAMPLE},
                    "duplicate": {"value": {**_ACCEPTED_EXAMPLE, "duplicate": True}},
                }
            }
        },
    ),
    400: _body(ApiError, "`malformed_json`, or `invalid_idempotency_key`"),
    408: _body(
        ApiError, "`request_timeout`: the body did not arrive within NEXUS_REQUEST_TIMEOUT_S"
    ),
    413: _body(ApiError, "`payload_too_large`: the body exceeds NEXUS_MAX_BODY_BYTES"),
    415: _body(ApiError, "`unsupported_media_type`: the body is not application/json"),
    422: _body(
        ApiError,
        "`invalid_snapshot` (every problem in `detail`), `idempotency_key_reused` "
        "(the key was used with a different body), or `session_of_another_visitor` (the "
        "sessionId is already in use under another fingerprint; nothing was queued)",
    ),
    429: _body(ApiError, "`rate_limited`, per client IP or per fingerprint", headers=_RETRY_AFTER),
    503: _body(ApiError, "`database_unavailable`", headers=_RETRY_AFTER),
}

CONSUMER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: _body(ConsumerEmpty | ConsumerProcessed, "What this run processed"),
    401: _body(
        ApiError,
        "`unauthorized`: no or a wrong bearer token (or NEXUS_CONSUMER_TOKEN is unset)",
        headers={"WWW-Authenticate": _header("Always `Bearer`.", {"type": "string"})},
    ),
    503: _body(ApiError, "`database_unavailable`", headers=_RETRY_AFTER),
}

PRODUCER_EXTRA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SnapshotIn"}}},
    },
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "1-255 printable ASCII characters; a retried POST with the same key "
            "and body returns the first messageId, queued once.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        },
        {"name": "traceparent", "in": "header", "required": False, **_TRACEPARENT},
    ],
}

_BEARER = "consumerToken"
CONSUMER_EXTRA: dict[str, Any] = {"security": [{_BEARER: []}]}


def complete(schema: dict[str, Any]) -> dict[str, Any]:
    """Add what the routes cannot declare themselves: the request body's schema, the bearer scheme."""
    snapshot = SnapshotIn.model_json_schema(
        ref_template="#/components/schemas/{model}", by_alias=True
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.update({**snapshot.pop("$defs", {}), "SnapshotIn": snapshot})
    components.setdefault("securitySchemes", {})[_BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "NEXUS_CONSUMER_TOKEN",
    }
    return schema
