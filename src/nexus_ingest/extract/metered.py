"""Extraction metrics: a wrapper that times any extractor and counts its calls, tokens and spend."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from nexus_ingest.extract.base import (
    BatchExtractor,
    BatchProgress,
    BatchResult,
    Extraction,
    Extractor,
    spent_before,
)
from nexus_ingest.metrics import EXTRACTION_SECONDS, LLM_CALLS, LLM_TOKENS, record_spend
from nexus_ingest.models import ChatMessage
from nexus_ingest.spend import DEFAULT_BATCH_DISCOUNT, DEFAULT_PRICES, ModelPrices


class MeteredExtractor:
    """Records each call's latency, result, tokens and cost, then returns what `inner` returned."""

    def __init__(
        self,
        inner: Extractor,
        prices: Mapping[str, ModelPrices] = DEFAULT_PRICES,
        batch_discount: float = DEFAULT_BATCH_DISCOUNT,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.in_process = inner.in_process
        self.prices = prices
        self.batch_discount = batch_discount
        # Bound once: a label lookup per call would cost more than the no-op extractor itself.
        self._seconds: Any = EXTRACTION_SECONDS.labels(extractor=inner.name)
        self._ok: Any = LLM_CALLS.labels(extractor=inner.name, result="ok")
        self._error: Any = LLM_CALLS.labels(extractor=inner.name, result="error")
        self._tokens: dict[str, Any] = {
            kind: LLM_TOKENS.labels(extractor=inner.name, kind=kind)
            for kind in ("input", "output", "cached")
        }

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        """Run the inner extractor and record what the call took and cost."""
        started = time.perf_counter()
        try:
            extraction = await self.inner.extract(messages)
        except Exception as exc:
            self._error.inc()
            if (spent := spent_before(exc)) is not None:
                self._count_spend(spent)
            raise
        self._seconds.observe(time.perf_counter() - started)
        self._count(extraction)
        return extraction

    def _count(self, extraction: Extraction) -> None:
        self._ok.inc()
        if extraction.billed:  # an offline extractor's bills nothing
            self._count_spend(extraction)

    def _count_spend(self, extraction: Extraction) -> None:
        for kind, count in (
            ("input", extraction.input_tokens),
            ("output", extraction.output_tokens),
            ("cached", extraction.cached_tokens),
        ):
            if count:
                self._tokens[kind].inc(count)
        if extraction.model is not None:  # the offline extractors bill nothing
            record_spend(extraction, self.prices, self.batch_discount)

    async def aclose(self) -> None:
        """Close the inner extractor."""
        await self.inner.aclose()


# How many batches' ids are remembered as counted: far more than a worker has open at once.
_COUNTED_BATCHES_KEPT = 1_000


class MeteredBatchExtractor(MeteredExtractor):
    """A metered extractor whose inner one also answers Message Batches: each answer that comes
    back from a batch is counted like a direct call's, at the batch price, once.

    A batch's results can be fetched again (saving them failed, and the next poll collects the
    batch anew), but the provider billed its answers once, so they are counted only the first
    time this process fetches them.
    """

    def __init__(
        self,
        inner: BatchExtractor,
        prices: Mapping[str, ModelPrices] = DEFAULT_PRICES,
        batch_discount: float = DEFAULT_BATCH_DISCOUNT,
    ) -> None:
        super().__init__(inner, prices, batch_discount)
        self.batches = inner
        self._counted: OrderedDict[str, None] = OrderedDict()

    async def submit_batch(self, snapshots: Mapping[str, Sequence[ChatMessage]]) -> str:
        """Send snapshots as one batch; returns its id."""
        return await self.batches.submit_batch(snapshots)

    async def batch_progress(self, batch_id: str) -> BatchProgress:
        """Whether the batch has ended, and its request counts."""
        return await self.batches.batch_progress(batch_id)

    async def batch_results(self, batch_id: str) -> dict[str, BatchResult]:
        """Each snapshot's result, every answer counted as a call the first time only."""
        results = await self.batches.batch_results(batch_id)
        if batch_id in self._counted:
            return results
        self._counted[batch_id] = None
        if len(self._counted) > _COUNTED_BATCHES_KEPT:
            self._counted.popitem(last=False)
        self._count_results(results)
        return results

    def _count_results(self, results: Mapping[str, BatchResult]) -> None:
        for result in results.values():
            if isinstance(result, Extraction):
                self._count(result)
            else:
                self._error.inc()
                if (spent := spent_before(result)) is not None:  # an unusable answer, billed
                    self._count_spend(spent)

    async def cancel_batch(self, batch_id: str) -> None:
        """Ask the provider to stop the batch."""
        await self.batches.cancel_batch(batch_id)


def metered(
    inner: Extractor,
    prices: Mapping[str, ModelPrices] = DEFAULT_PRICES,
    batch_discount: float = DEFAULT_BATCH_DISCOUNT,
) -> MeteredExtractor:
    """`inner`, metered; its Message Batches too when it has them."""
    if isinstance(inner, BatchExtractor):
        return MeteredBatchExtractor(inner, prices, batch_discount)
    return MeteredExtractor(inner, prices, batch_discount)
