"""Prometheus metrics of the producer and the worker."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
LLM_CALLS = Counter("nexus_llm_calls", "Extractor calls.", ["extractor", "result"])
LLM_TOKENS = Counter("nexus_llm_tokens", "Tokens used by extractors.", ["extractor", "kind"])
QUEUE_LENGTH = Gauge("nexus_queue_length", "Messages in the ingestion queue.")
QUEUE_OLDEST_AGE = Gauge("nexus_queue_oldest_age_seconds", "Age of the oldest queued message.")
