"""The one interface every extractor implements, and what it returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nexus_ingest.models import ChatMessage, Prospect


@dataclass(frozen=True)
class Extraction:
    """A prospect pulled out of one snapshot, with what it cost."""

    prospect: Prospect
    extractor: str
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float = 0.0


class Extractor(Protocol):
    """Turns a chat snapshot into a prospect.

    Raises `RetryLater` for passing failures (rate limits, timeouts, 5xx) and `Permanent` for
    failures that retrying cannot fix (output still invalid after one re-ask).
    """

    name: str
    # True when extraction is computation in this process, with no I/O to wait on: the worker
    # then runs it inline instead of in concurrent tasks.
    in_process: bool

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction: ...

    async def aclose(self) -> None: ...
