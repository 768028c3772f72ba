"""What the API and the dashboard both need from a request: bounded bodies, token checks, health."""

from __future__ import annotations

import asyncio
import hmac

from starlette.requests import Request

from nexus_ingest.queue import QueueMetrics
from nexus_ingest.settings import Settings


class BodyTooLarge(Exception):
    """The request body is larger than allowed."""


class BodyTooSlow(Exception):
    """The request body did not arrive in time."""


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused as soon as it is known to exceed `limit` bytes (before reading it all),
    or once it has taken more than `timeout` seconds, however steadily it trickles in."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow from None
    return b"".join(chunks)


def token_matches(supplied: str | None, expected: str | None) -> bool:
    """Constant-time comparison; no token configured (or none supplied) never matches."""
    if not supplied or not expected:
        return False
    return hmac.compare_digest(supplied.encode(), expected.encode())


def bearer_matches(request: Request, expected: str | None) -> bool:
    """Whether `Authorization: Bearer <token>` carries the expected token."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_matches(token.strip(), expected)


def health_reasons(m: QueueMetrics, settings: Settings) -> list[str]:
    """Which alert thresholds the queue crosses now."""
    reasons = []
    if m.queue_length > settings.alert_queue_length:
        reasons.append(f"queue_length {m.queue_length} > {settings.alert_queue_length}")
    if (m.oldest_msg_age_sec or 0) > settings.alert_oldest_age_s:
        reasons.append(f"oldest_msg_age_sec {m.oldest_msg_age_sec} > {settings.alert_oldest_age_s}")
    return reasons
