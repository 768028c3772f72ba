"""Failure simulation: an extractor that fails on purpose, for drills and tests (off by default)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Literal

from nexus_ingest.errors import Permanent, RetryLater
from nexus_ingest.extract.base import Extraction, Extractor
from nexus_ingest.models import ChatMessage

FaultMode = Literal["mixed", "retryable", "permanent", "timeout"]


class FaultyExtractor:
    """Wraps an extractor and fails `rate` of its calls the way `mode` says."""

    def __init__(
        self, inner: Extractor, *, rate: float, mode: FaultMode = "mixed", seed: int | None = None
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.in_process = False  # it may hang on purpose
        self.rate = rate
        self.mode = mode
        self._rng = random.Random(seed)

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        if self._rng.random() < self.rate:
            await self._fail()
        return await self.inner.extract(messages)

    async def _fail(self) -> None:
        mode = (
            self.mode
            if self.mode != "mixed"
            else self._rng.choice(["retryable", "retryable", "permanent", "timeout"])
        )
        if mode == "permanent":
            raise Permanent("simulated failure: invalid output")
        if mode == "timeout":
            await asyncio.sleep(0.05)
            raise RetryLater("simulated failure: timeout")
        raise RetryLater("simulated failure: 429 rate limited", delay=1)

    async def aclose(self) -> None:
        await self.inner.aclose()
