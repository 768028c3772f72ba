"""Extraction metrics: a wrapper that times any extractor and counts its calls and tokens."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from nexus_ingest.extract.base import Extraction, Extractor
from nexus_ingest.metrics import EXTRACTION_SECONDS, LLM_CALLS, LLM_TOKENS
from nexus_ingest.models import ChatMessage


class MeteredExtractor:
    """Records each call's latency, result and tokens, then returns what `inner` returned."""

    def __init__(self, inner: Extractor) -> None:
        self.inner = inner
        self.name = inner.name
        self.in_process = inner.in_process
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
        except Exception:
            self._error.inc()
            raise
        self._seconds.observe(time.perf_counter() - started)
        self._ok.inc()
        for kind, count in (
            ("input", extraction.input_tokens),
            ("output", extraction.output_tokens),
            ("cached", extraction.cached_tokens),
        ):
            if count:
                self._tokens[kind].inc(count)
        return extraction

    async def aclose(self) -> None:
        """Close the inner extractor."""
        await self.inner.aclose()
