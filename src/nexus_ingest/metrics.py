"""Prometheus metrics of the producer and the worker."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter, Gauge, Histogram

from nexus_ingest.extract.base import Extraction
from nexus_ingest.spend import (
    DEFAULT_BATCH_DISCOUNT,
    TOKEN_KINDS,
    ModelPrices,
    extraction_cost,
    token_counts,
)

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
QUEUE_LENGTH = Gauge("nexus_queue_length", "Messages in the ingestion queue.")
QUEUE_OLDEST_AGE = Gauge("nexus_queue_oldest_age_seconds", "Age of the oldest queued message.")
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
