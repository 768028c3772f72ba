"""OpenTelemetry export, when configured: spans for enqueue and processing, joined by traceparent.

Configured by the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) variable; the
SDK is an optional extra (`pip install nexus-ingest[otel]`). Without it, Nexus still carries a
W3C `traceparent` in every message so its own logs join up.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog

log = structlog.get_logger("nexus")
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_enabled = False


def configure_tracing(service: str) -> bool:
    """Export spans over OTLP/HTTP when an endpoint is configured; returns whether it is on."""
    global _enabled
    if _enabled or not any(os.environ.get(v) for v in _ENDPOINT_VARIABLES):
        return _enabled
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning(
            "telemetry.sdk_missing",
            detail="OTLP endpoint set but the OpenTelemetry SDK is missing: "
            "pip install 'nexus-ingest[otel]'",
        )
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(), schedule_delay_millis=200))
    trace.set_tracer_provider(provider)
    _enabled = True
    return True


def tracing() -> bool:
    """Whether spans are exported (`span` is then more than a no-op)."""
    return _enabled


def shutdown_tracing() -> None:
    """Flush spans still buffered."""
    if _enabled:
        from opentelemetry import trace

        provider: Any = trace.get_tracer_provider()
        provider.shutdown()


@contextmanager
def span(name: str, parent: Mapping[str, str], **attributes: Any) -> Iterator[dict[str, str]]:
    """A span under the `traceparent` in `parent`; yields headers carrying its own context."""
    if not _enabled:
        yield {}
        return
    from opentelemetry import propagate, trace

    context = propagate.extract(dict(parent))
    tracer = trace.get_tracer("nexus")
    with tracer.start_as_current_span(name, context=context, attributes=_clean(attributes)):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield carrier


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if isinstance(v, str | int | float | bool)}
