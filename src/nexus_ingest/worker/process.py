"""Extracting one work item: traced, logged by ids only, its failure kept for settlement."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import structlog

from nexus_ingest.extract.base import Extraction, Extractor
from nexus_ingest.queue import QueuedMessage
from nexus_ingest.telemetry import span
from nexus_ingest.traceparent import trace_id
from nexus_ingest.worker.plan import WorkItem

log = structlog.get_logger("nexus.worker")


@dataclass(frozen=True, slots=True)
class Extracted:
    """A finished extraction waiting to be saved, and when work on it began."""

    item: WorkItem
    extraction: Extraction
    started: float


@dataclass(frozen=True, slots=True)
class Failed:
    """An extraction that raised: settled by retrying or dead-lettering its message."""

    item: WorkItem
    error: Exception


async def extract_item(extractor: Extractor, item: WorkItem) -> Extracted | Failed:
    """Extract one snapshot; never raises for the extractor's sake."""
    started = time.perf_counter()
    message = item.message
    if log.is_enabled_for(logging.INFO):
        log.info(
            "message.processing",
            **log_ids(message),
            attempt=message.read_ct,
            turns=len(item.snapshot.messages),
        )
    try:
        headers = {"traceparent": str(message.headers.get("traceparent", ""))}
        with span(
            "nexus.extract",
            headers,
            msg_id=message.msg_id,
            attempt=message.read_ct,
            extractor=extractor.name,
        ):
            extraction = await extractor.extract(item.snapshot.messages)
    except Exception as exc:  # every failure is settled: retried or dead-lettered
        return Failed(item, exc)
    return Extracted(item, extraction, started)


def log_ids(message: QueuedMessage) -> dict[str, Any]:
    """What every log line about a message carries: ids only, never its content."""
    return {
        "msg_id": message.msg_id,
        "session_id": message.session_id,
        "trace_id": trace_id(message.headers.get("traceparent")),
    }
