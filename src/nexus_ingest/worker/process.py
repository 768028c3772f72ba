"""Extracting one work item: traced, logged by ids only, its failure kept for settlement."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import structlog

from nexus_ingest.extract.base import Extraction, Extractor
from nexus_ingest.models import KeptExtraction
from nexus_ingest.queue import QueuedMessage
from nexus_ingest.telemetry import span, tracing
from nexus_ingest.traceparent import trace_id
from nexus_ingest.worker.plan import WorkItem

log = structlog.get_logger("nexus.worker")


class Extracted(NamedTuple):
    """A finished extraction waiting to be saved, and when work on it began (a named tuple:
    one is made for every message extracted)."""

    item: WorkItem
    extraction: Extraction
    started: float


class Failed(NamedTuple):
    """An extraction that raised: settled by retrying or dead-lettering its message."""

    item: WorkItem
    error: Exception


async def extract_item(extractor: Extractor, item: WorkItem) -> Extracted | Failed:
    """Extract one snapshot; never raises for the extractor's sake. A replayed snapshot whose
    extraction was kept is not extracted again."""
    (result,) = await extract_items(extractor, (item,))
    return result


async def extract_items(
    extractor: Extractor, items: Sequence[WorkItem]
) -> list[Extracted | Failed]:
    """Extract snapshots one after another, as `extract_item` does each; whether to log and
    trace is decided once for them all, since an offline extractor takes a read's hundreds of
    snapshots in a few milliseconds and these checks would cost more than the no-op extractor itself."""
    logged = log.is_enabled_for(logging.INFO)
    traced = tracing()
    results: list[Extracted | Failed] = []
    for item in items:
        started = time.perf_counter()
        if item.snapshot.kept_extraction is not None:
            results.append(Extracted(item, kept(item.snapshot.kept_extraction), started))
            continue
        message = item.message
        if logged:
            log.info(
                "message.processing",
                **log_ids(message),
                attempt=message.read_ct,
                turns=len(item.snapshot.messages),
            )
        try:
            if traced:
                headers = {"traceparent": str(message.headers.get("traceparent", ""))}
                with span(
                    "nexus.extract",
                    headers,
                    msg_id=message.msg_id,
                    attempt=message.read_ct,
                    extractor=extractor.name,
                ):
                    extraction = await extractor.extract(item.snapshot.messages)
            else:
                extraction = await extractor.extract(item.snapshot.messages)
        except Exception as exc:  # every failure is settled: retried or dead-lettered
            results.append(Failed(item, exc))
            continue
        results.append(Extracted(item, extraction, started))
    return results


def kept(extraction: KeptExtraction) -> Extraction:
    """An extraction kept in a dead letter, as the extractor first returned it."""
    return Extraction(
        prospect=extraction.prospect,
        extractor=extraction.extractor,
        model=extraction.model,
        input_tokens=extraction.input_tokens,
        output_tokens=extraction.output_tokens,
        cached_tokens=extraction.cached_tokens,
        cache_write_tokens=extraction.cache_write_tokens,
        batch=extraction.batch,
    )


def to_keep(extraction: Extraction) -> dict[str, Any]:
    """An extraction as a dead letter keeps it, for `kept` to restore on replay (its bill
    too: it was paid for but never recorded)."""
    return KeptExtraction(
        prospect=extraction.prospect,
        extractor=extraction.extractor,
        model=extraction.model,
        input_tokens=extraction.input_tokens,
        output_tokens=extraction.output_tokens,
        cached_tokens=extraction.cached_tokens,
        cache_write_tokens=extraction.cache_write_tokens,
        batch=extraction.batch,
    ).model_dump(mode="json", exclude_none=True)


def log_ids(message: QueuedMessage) -> dict[str, Any]:
    """What every log line about a message carries: ids only, never its content."""
    return {
        "msg_id": message.msg_id,
        "session_id": message.session_id,
        "trace_id": trace_id(message.headers.get("traceparent")),
    }
