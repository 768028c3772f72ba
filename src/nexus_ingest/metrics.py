"""Prometheus metrics of the producer and the worker, and the timer of every HTTP request."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from nexus_ingest.extract.base import Extraction
from nexus_ingest.spend import (
    DEFAULT_BATCH_DISCOUNT,
    TOKEN_KINDS,
    ModelPrices,
    extraction_cost,
    token_counts,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

ENQUEUED = Counter("nexus_messages_enqueued", "Snapshots accepted and queued.")
REJECTED = Counter("nexus_messages_rejected", "Snapshots refused by the producer.", ["reason"])
PROCESSED = Counter("nexus_messages_processed", "Messages handled by workers.", ["outcome"])
PROCESSING_SECONDS = Histogram(
    "nexus_processing_seconds",
    "From read to acknowledged, per message.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
EXTRACTION_SECONDS = Histogram(
    "nexus_extraction_seconds",
    "Time spent in the extractor, per call.",
    ["extractor"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEFERRED = Counter(
    "nexus_messages_deferred",
    "Snapshots the extraction policy held back for later, by the rule that timed them.",
    ["reason"],
)
LLM_CALLS = Counter("nexus_llm_calls", "Extractor calls.", ["extractor", "result"])
LLM_TOKENS = Counter("nexus_llm_tokens", "Tokens used by extractors.", ["extractor", "kind"])
# Only the API sets these; when `nexus up` merges its processes' metrics, its figure is the one.
QUEUE_LENGTH = Gauge(
    "nexus_queue_length", "Messages in the ingestion queue.", multiprocess_mode="mostrecent"
)
QUEUE_OLDEST_AGE = Gauge(
    "nexus_queue_oldest_age_seconds",
    "Age of the oldest queued message.",
    multiprocess_mode="mostrecent",
)
LLM_BILLED_TOKENS = Counter(
    "nexus_llm_billed_tokens",
    "Tokens LLM providers billed, by model and kind (input, cache_write, cache_read, output).",
    ["model", "kind"],
)
LLM_COST_USD = Counter(
    "nexus_llm_cost_usd",
    "What LLM calls cost at the configured prices (NEXUS_LLM_PRICES), US dollars.",
    ["model", "kind"],
)


def record_spend(
    extraction: Extraction,
    prices: Mapping[str, ModelPrices],
    batch_discount: float = DEFAULT_BATCH_DISCOUNT,
) -> None:
    """Count an extraction's billed tokens and their cost; an extraction without a model (the
    offline extractors) costs nothing and is not counted."""
    if extraction.model is None:
        return
    tokens = token_counts(extraction)
    cost = extraction_cost(extraction, prices, batch_discount)
    for kind in TOKEN_KINDS:
        LLM_BILLED_TOKENS.labels(model=extraction.model, kind=kind).inc(tokens.of(kind))
        if cost is not None:
            LLM_COST_USD.labels(model=extraction.model, kind=kind).inc(cost.of(kind))


HTTP_SECONDS = Histogram(
    "nexus_http_request_duration_seconds",
    "From a request's arrival to its response's start, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

UNMATCHED_ROUTE = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_label(scope: Scope) -> str:
    """The template of the route that answered (`/dashboard/prospects/{fingerprint_id:path}`).

    Never the raw path: one label per route keeps the series few, whatever paths clients try;
    paths no route knows share one label.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    return _route_of_endpoint(scope)


def _route_of_endpoint(scope: Scope) -> str:
    """The router names the route that answered only for the framework's own kind (`APIRoute`);
    for the rest (the OpenAPI document and its pages, a mount of static files) it leaves the
    endpoint it called, which one of the application's routes holds."""
    endpoint = scope.get("endpoint")
    if endpoint is None:
        return UNMATCHED_ROUTE
    for route in getattr(scope.get("app"), "routes", ()):
        if getattr(route, "endpoint", None) is endpoint or getattr(route, "app", None) is endpoint:
            path = getattr(route, "path", None)
            return path if isinstance(path, str) and path else UNMATCHED_ROUTE
    return UNMATCHED_ROUTE


class RequestTimer:
    """Pure ASGI middleware: one histogram observation per HTTP request, nothing else."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # labels() takes a lock and builds a key on every call; a plain dict lookup does not.
        self._children: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = False

        async def timed_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = True
                self._observe(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            if not answered:  # the app failed before answering: the client gets a 500
                self._observe(scope, 500, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method = scope["method"] if scope["method"] in _METHODS else "other"
        key = (method, route_label(scope), status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = HTTP_SECONDS.labels(key[0], key[1], str(status))
        child.observe(seconds)


MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> bytes:
    """Every metric in Prometheus's text format: this process's, or, when processes share a
    metrics folder (`nexus up` runs its worker in a process of its own), all of theirs."""
    if not os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)
