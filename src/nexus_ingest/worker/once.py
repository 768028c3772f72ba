"""The seed's one-shot consumer (HTTP- or cron-driven): process what is queued now, once, with
the same planning, extraction and settlement as the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from psycopg_pool import AsyncConnectionPool

from nexus_ingest.extract.base import Extractor
from nexus_ingest.worker.config import WorkerConfig, read_size
from nexus_ingest.worker.process import Extracted, Failed, extract_item
from nexus_ingest.worker.settle import Settler


async def consume_once(
    pool: AsyncConnectionPool, extractor: Extractor, config: WorkerConfig
) -> dict[str, Any]:
    """Process what is queued now, once; answers in the seed's response shape."""
    settler = Settler(pool, config)
    plan = await settler.read(read_size(config, extractor))
    if plan is None:
        return {"status": "empty"}
    results = await asyncio.gather(*(extract_item(extractor, item) for item in plan.work))
    extracted = [r for r in results if isinstance(r, Extracted)]
    if extracted:
        await settler.save(extracted)
    for result in results:
        if isinstance(result, Failed):
            await settler.fail(result)
    return _seed_response(results, plan.size)


def _seed_response(results: Sequence[Extracted | Failed], read: int) -> dict[str, Any]:
    if not results:
        return {"status": "success", "processed": 0, "read": read}
    first = results[0]
    body: dict[str, Any] = {
        "status": "success" if isinstance(first, Extracted) else "error",
        "msgId": first.item.message.msg_id,
        "sessionId": first.item.snapshot.session_id,
        "processed": len(results),
        "read": read,
    }
    if isinstance(first, Extracted):
        body["extractedData"] = first.extraction.prospect.model_dump(mode="json")
    else:
        body["error"] = f"{type(first.error).__name__}: {first.error}"
    return body
