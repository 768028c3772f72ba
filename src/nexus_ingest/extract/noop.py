"""An extractor that extracts nothing, instantly: the pipeline's cost without any model."""

from __future__ import annotations

from collections.abc import Sequence

from nexus_ingest.extract.base import Extraction
from nexus_ingest.models import ChatMessage, Prospect


class NoopExtractor:
    """Returns an empty prospect for every snapshot; benchmarks use it to time the queue alone."""

    name = "noop"
    in_process = True

    def __init__(self) -> None:
        self._empty = Extraction(prospect=Prospect(), extractor=self.name)

    async def extract(self, messages: Sequence[ChatMessage]) -> Extraction:
        """An empty prospect, without looking at `messages`."""
        return self._empty

    async def aclose(self) -> None:
        """Nothing to close."""
