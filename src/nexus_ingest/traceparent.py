"""W3C trace context: one trace id follows a snapshot from the producer to the worker."""

from __future__ import annotations

import re
import secrets

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent() -> str:
    """A fresh, sampled `traceparent` value."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def continue_traceparent(incoming: str | None) -> str:
    """Keep the caller's trace id with a span of our own, or start a new trace (W3C: a header
    that is not lower-case hex, or whose trace or parent id is all zeros, is ignored)."""
    match = _TRACEPARENT.match((incoming or "").strip())
    if not match or match[1] == "0" * 32 or match[2] == "0" * 16:
        return new_traceparent()
    return f"00-{match[1]}-{secrets.token_hex(8)}-{match[3]}"


def trace_id(traceparent: object) -> str | None:
    """The trace id inside a `traceparent`, if it is one (a header sent by hand may be anything)."""
    if not isinstance(traceparent, str):
        return None
    match = _TRACEPARENT.match(traceparent)
    return match[1] if match else None
