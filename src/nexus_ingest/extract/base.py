"""The one interface every extractor implements, and what it returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from nexus_ingest.errors import ExtractionError
from nexus_ingest.models import ChatMessage, Prospect


class Extraction(NamedTuple):
    """A prospect pulled out of one snapshot, with what it cost (a named tuple: an offline
    extractor makes one for every message, and a tuple is made in a quarter of the time).

    `input_tokens` is the whole prompt, whatever part of it the provider's cache served:
    `cached_tokens` were read from the cache, `cache_write_tokens` written to it, and the rest
    (`uncached_input_tokens`) billed as plain input. `batch` answers cost half.
    """

    prospect: Prospect
    extractor: str
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float = 0.0
    cache_write_tokens: int = 0
    batch: bool = False

    @property
    def cache_read_tokens(self) -> int:
        """Prompt tokens read from the provider's cache (the same as `cached_tokens`)."""
        return self.cached_tokens

    @property
    def billed(self) -> bool:
        """Whether a model or tokens were involved: not so for the offline extractors."""
        return self.model is not None or bool(
            self.input_tokens or self.output_tokens or self.cached_tokens or self.cache_write_tokens
        )

    @property
    def uncached_input_tokens(self) -> int:
        """Prompt tokens billed at the plain input price."""
        return max(0, self.input_tokens - self.cached_tokens - self.cache_write_tokens)


_SPENT = "nexus_spent"


def carry_spend(exc: BaseException, spent: Extraction) -> None:
    """Note on a failed extraction's error what its answers had already cost: an unusable
    answer is billed even when no extraction comes of it."""
    setattr(exc, _SPENT, spent)


def spent_before(exc: BaseException) -> Extraction | None:
    """What a failed extraction had cost before it failed, if anything."""
    spent = getattr(exc, _SPENT, None)
    return spent if isinstance(spent, Extraction) else None


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


@dataclass(frozen=True)
class BatchProgress:
    """Where a submitted Message Batch stands."""

    ended: bool
    succeeded: int
    errored: int
    processing: int


BatchResult = Extraction | ExtractionError


@runtime_checkable
class BatchExtractor(Extractor, Protocol):
    """An extractor that can also answer many snapshots in one Message Batch, at a discount.

    `submit_batch` takes snapshots by key (a message id) and returns the batch's id;
    `batch_results`, once `batch_progress` says it ended, gives each key its Extraction (marked
    `batch`) or the error that settles it: `RetryLater` for a passing failure, `Permanent` for
    a refused request or an unusable answer, which a direct `extract` may still rescue.
    """

    async def submit_batch(self, snapshots: Mapping[str, Sequence[ChatMessage]]) -> str: ...

    async def batch_progress(self, batch_id: str) -> BatchProgress: ...

    async def batch_results(self, batch_id: str) -> dict[str, BatchResult]: ...

    async def cancel_batch(self, batch_id: str) -> None: ...
